//! The OpenAI-compatible adapter: OpenAI itself, and every vendor that speaks its API
//! (DeepSeek, Groq, OpenRouter, vLLM, Ollama's OpenAI API) by `base_url`.
//!
//! Requests pass through unchanged (the client already speaks this API); responses are
//! checked, usage is read for accounting, and vendor errors are kept in OpenAI's shape.
//!
//! Channel settings: `organization` (OpenAI-Organization header), `project`
//! (OpenAI-Project header).

use relay_plugin_kit::prelude::*;

pub struct OpenAi;

impl Adapter for OpenAi {
    // Chunks are already OpenAI chunks: the kit checks them, reads usage and forwards them.
    type Stream = openai::PassthroughStream;

    fn info() -> PluginInfo {
        PluginInfo {
            name: "openai".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "OpenAI and OpenAI-compatible APIs (DeepSeek, Groq, OpenRouter, vLLM, Ollama)".into(),
            endpoints: vec![Endpoint::ChatCompletions, Endpoint::Embeddings],
            auth: AuthScheme::Bearer,
            stream_format: StreamFormat::Sse,
        }
    }

    fn transform_request(ctx: &CallContext, body: &str) -> Result<UpstreamRequest, AdapterError> {
        let path = match ctx.endpoint {
            Endpoint::ChatCompletions => "/chat/completions",
            Endpoint::Embeddings => "/embeddings",
        };
        let mut headers = Vec::new();
        for (key, name) in [("organization", "openai-organization"), ("project", "openai-project")] {
            if let Some(v) = ctx.setting(key) {
                headers.push(Header { name: name.into(), value: v.into() });
            }
        }
        if ctx.stream {
            headers.push(Header { name: "accept".into(), value: "text/event-stream".into() });
        }
        Ok(UpstreamRequest { method: "POST".into(), path: path.into(), headers, body: body.into() })
    }
    // transform_response: the kit's default (pass success through, keep errors OpenAI-shaped).
}

relay_plugin_kit::export_adapter!(OpenAi);

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(endpoint: Endpoint, stream: bool, settings: &[(&str, &str)]) -> CallContext {
        CallContext {
            request_id: "r1".into(),
            endpoint,
            model: "gpt-4o".into(),
            stream,
            include_usage: false,
            settings: settings.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        }
    }

    #[test]
    fn request_passes_through_with_paths_and_headers() {
        let body = r#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}"#;
        let r = OpenAi::transform_request(&ctx(Endpoint::ChatCompletions, false, &[("organization", "org-1")]), body)
            .unwrap();
        assert_eq!(r.path, "/chat/completions");
        assert_eq!(r.body, body);
        assert_eq!(r.headers.len(), 1);
        assert_eq!((r.headers[0].name.as_str(), r.headers[0].value.as_str()), ("openai-organization", "org-1"));
        let r = OpenAi::transform_request(&ctx(Endpoint::Embeddings, false, &[]), "{}").unwrap();
        assert_eq!(r.path, "/embeddings");
    }

    #[test]
    fn response_usage_and_errors() {
        let c = ctx(Endpoint::ChatCompletions, false, &[]);
        let ok = r#"{"id":"x","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":5,"total_tokens":8}}"#;
        let r =
            OpenAi::transform_response(&c, UpstreamResponse { status: 200, headers: vec![], body: ok.into() }).unwrap();
        assert_eq!(r.usage.unwrap().total_tokens, 8);
        assert_eq!(r.body, ok);
        let bad =
            OpenAi::transform_response(&c, UpstreamResponse { status: 200, headers: vec![], body: "<html>".into() });
        assert!(matches!(bad, Err(AdapterError::InvalidUpstream(_))));
        let vendor =
            r#"{"error":{"message":"Rate limit reached","type":"requests","param":null,"code":"rate_limit_exceeded"}}"#;
        let r = OpenAi::transform_response(&c, UpstreamResponse { status: 429, headers: vec![], body: vendor.into() })
            .unwrap();
        assert_eq!((r.status, r.body.as_str()), (429, vendor));
    }

    #[test]
    fn stream_needs_done() {
        let mut t = openai::PassthroughStream::new(&ctx(Endpoint::ChatCompletions, true, &[]));
        let chunk = r#"{"id":"c","choices":[{"index":0,"delta":{"content":"hi"}}]}"#;
        let o = t.push(StreamEvent { event: None, data: chunk.into() }).unwrap();
        assert_eq!(o.chunks, vec![chunk.to_string()]);
        assert!(!o.done);
        assert!(t.finish().is_err());
        let usage = r#"{"id":"c","choices":[],"usage":{"prompt_tokens":1,"completion_tokens":2,"total_tokens":3}}"#;
        assert_eq!(t.push(StreamEvent { event: None, data: usage.into() }).unwrap().usage.unwrap().total_tokens, 3);
        assert!(t.push(StreamEvent { event: None, data: "[DONE]".into() }).unwrap().done);
        assert_eq!(t.finish().unwrap().usage.unwrap().completion_tokens, 2);
        let err = t.push(StreamEvent { event: None, data: r#"{"error":{"message":"overloaded"}}"#.into() });
        assert!(matches!(err, Err(AdapterError::InvalidUpstream(m)) if m.contains("overloaded")));
    }
}
