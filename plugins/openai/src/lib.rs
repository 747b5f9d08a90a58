//! The OpenAI-compatible adapter: OpenAI itself, and every vendor that speaks its API
//! (DeepSeek, Groq, OpenRouter, vLLM, Ollama's OpenAI API) by `base_url`.
//!
//! Requests pass through unchanged (the client already speaks this API); responses are
//! checked, usage is read for accounting, and vendor errors are kept in OpenAI's shape.
//!
//! The Responses API passes through natively (`native: [responses]`): the body goes to
//! `{base_url}/responses` as the client sent it and the answer and stream events come back
//! as the vendor sent them, usage read for accounting (`relay_plugin_kit::native::responses`).
//! A channel whose OpenAI-compatible vendor has no `/responses` sets `native = []`, and the
//! host bridges Responses through chat completions.
//!
//! Channel settings: `organization` (OpenAI-Organization header), `project`
//! (OpenAI-Project header).

use relay_plugin_kit::native;
use relay_plugin_kit::prelude::*;

pub struct OpenAi;

impl Adapter for OpenAi {
    // Chunks are already OpenAI chunks: the kit checks them, reads usage and forwards them;
    // Responses events pass through, read for usage and their end.
    type Stream = native::Split<openai::PassthroughStream, native::responses::Stream>;

    fn info() -> PluginInfo {
        // Messages is served by the host through chat.
        PluginInfo {
            endpoints: vec![Endpoint::ChatCompletions, Endpoint::Embeddings],
            native: vec![Endpoint::Responses],
            ..PluginInfo::new(
                "openai",
                env!("CARGO_PKG_VERSION"),
                "OpenAI and OpenAI-compatible APIs (DeepSeek, Groq, OpenRouter, vLLM, Ollama)",
            )
        }
    }

    fn transform_request(ctx: &CallContext, body: &str) -> Result<UpstreamRequest, AdapterError> {
        let path = match ctx.endpoint {
            Endpoint::ChatCompletions => "/chat/completions",
            Endpoint::Embeddings => "/embeddings",
            Endpoint::Responses => "/responses",
            other => return Err(relay_plugin_kit::not_mapped(other)),
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
        Ok(native::request(path, headers, body))
    }

    fn transform_response(ctx: &CallContext, resp: UpstreamResponse) -> Result<RelayResponse, AdapterError> {
        match ctx.endpoint {
            Endpoint::Responses => native::responses::response(resp),
            // Pass success through, keep errors OpenAI-shaped, classify them by OpenAI's
            // code and the status.
            _ => openai::response(resp),
        }
    }
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
        assert_eq!(r.error_class, Some(ErrorClass::RateLimited));
    }

    fn answer(status: u16, body: &str) -> RelayResponse {
        let c = ctx(Endpoint::ChatCompletions, false, &[]);
        OpenAi::transform_response(&c, UpstreamResponse { status, headers: vec![], body: body.into() }).unwrap()
    }

    #[test]
    fn vendor_errors_are_classified_and_unchanged() {
        let err = |code: &str, kind: &str| {
            format!(r#"{{"error":{{"message":"m","type":"{kind}","param":null,"code":"{code}"}}}}"#)
        };
        for (status, body, class) in [
            (400, err("context_length_exceeded", "invalid_request_error"), ErrorClass::ContextLengthExceeded),
            (400, err("content_policy_violation", "invalid_request_error"), ErrorClass::ContentFiltered),
            (400, err("content_filter", "invalid_request_error"), ErrorClass::ContentFiltered),
            (400, err("invalid_value", "invalid_request_error"), ErrorClass::InvalidRequest),
            (401, err("invalid_api_key", "invalid_request_error"), ErrorClass::Authentication),
            (403, err("unsupported_country_region_territory", "request_forbidden"), ErrorClass::Permission),
            (404, err("model_not_found", "invalid_request_error"), ErrorClass::NotFound),
            (429, err("insufficient_quota", "insufficient_quota"), ErrorClass::RateLimited),
            (500, err("server_error", "server_error"), ErrorClass::ServerError),
            (503, err("", "server_error"), ErrorClass::Overloaded),
            (502, "<html>Bad Gateway</html>".to_string(), ErrorClass::ServerError),
        ] {
            let r = answer(status, &body);
            assert_eq!(r.error_class, Some(class), "{status} {body}");
            assert_eq!(r.status, status);
            if body.starts_with('{') {
                assert_eq!(r.body, body, "the answer is the vendor's");
            }
        }
        assert_eq!(answer(200, r#"{"choices":[]}"#).error_class, None);
    }

    #[test]
    fn usage_details_are_read() {
        let ok = r#"{"id":"x","choices":[],"usage":{"prompt_tokens":30,"completion_tokens":50,"total_tokens":80,
            "prompt_tokens_details":{"cached_tokens":20},"completion_tokens_details":{"reasoning_tokens":40}}}"#;
        let r = answer(200, ok);
        assert_eq!(r.body, ok);
        let u = r.usage.unwrap();
        assert_eq!((u.input_tokens, u.output_tokens, u.total_tokens), (30, 50, 80));
        assert_eq!(
            (u.cached_input_tokens, u.reasoning_tokens, u.cache_creation_input_tokens),
            (Some(20), Some(40), None)
        );
        let mut t = openai::PassthroughStream::new(&ctx(Endpoint::ChatCompletions, true, &[]));
        let chunk = r#"{"id":"c","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":5,"total_tokens":8,"prompt_tokens_details":{"cached_tokens":2},"completion_tokens_details":{"reasoning_tokens":4}}}"#;
        let o = t.push(StreamEvent { event: None, data: chunk.into() }).unwrap();
        assert_eq!(o.data(), vec![chunk]);
        let u = o.usage.unwrap();
        assert_eq!((u.cached_input_tokens, u.reasoning_tokens), (Some(2), Some(4)));
    }

    #[test]
    fn info_has_native_responses_and_messages_is_refused() {
        let i = OpenAi::info();
        assert!(matches!(i.native.as_slice(), [Endpoint::Responses]));
        assert!(matches!(i.endpoints.as_slice(), [Endpoint::ChatCompletions, Endpoint::Embeddings]));
        assert!(matches!((i.auth, i.stream_format), (AuthScheme::Bearer, StreamFormat::Sse)));
        assert!(matches!(
            OpenAi::transform_request(&ctx(Endpoint::Messages, false, &[]), "{}"),
            Err(AdapterError::Unsupported(_))
        ));
    }

    #[test]
    fn a_responses_request_passes_through_unchanged_with_its_headers() {
        let c = ctx(Endpoint::Responses, true, &[("organization", "org-1"), ("project", "proj-1")]);
        let body = r#"{"model":"gpt-5","input":"hi","stream":true,"reasoning":{"effort":"high"},"include":["reasoning.encrypted_content"],"new_param":{"x":1}}"#;
        let r = OpenAi::transform_request(&c, body).unwrap();
        assert_eq!((r.method.as_str(), r.path.as_str(), r.body.as_str()), ("POST", "/responses", body));
        let h: Vec<(&str, &str)> = r.headers.iter().map(|h| (h.name.as_str(), h.value.as_str())).collect();
        assert_eq!(
            h,
            [("openai-organization", "org-1"), ("openai-project", "proj-1"), ("accept", "text/event-stream")]
        );
        // The answer and the stream are the Responses API's, read for usage.
        let ok = r#"{"id":"resp_1","object":"response","status":"completed","usage":{"input_tokens":2,"output_tokens":3,"total_tokens":5}}"#;
        let a =
            OpenAi::transform_response(&c, UpstreamResponse { status: 200, headers: vec![], body: ok.into() }).unwrap();
        assert_eq!((a.body.as_str(), a.usage.unwrap().total_tokens), (ok, 5));
        let mut t = <OpenAi as Adapter>::Stream::new(&c);
        let done = r#"{"type":"response.completed","sequence_number":0,"response":{"usage":{"input_tokens":1,"output_tokens":1,"total_tokens":2}}}"#;
        let o = t.push(StreamEvent { event: Some("response.completed".into()), data: done.into() }).unwrap();
        assert!(o.done && o.events[0].name.as_deref() == Some("response.completed"));
        assert_eq!(t.finish().unwrap().usage.unwrap().total_tokens, 2);
    }

    #[test]
    fn stream_needs_done() {
        let mut t = openai::PassthroughStream::new(&ctx(Endpoint::ChatCompletions, true, &[]));
        let chunk = r#"{"id":"c","choices":[{"index":0,"delta":{"content":"hi"}}]}"#;
        let o = t.push(StreamEvent { event: None, data: chunk.into() }).unwrap();
        assert_eq!(o.data(), vec![chunk]);
        assert!(!o.done);
        assert!(t.finish().is_err());
        let usage = r#"{"id":"c","choices":[],"usage":{"prompt_tokens":1,"completion_tokens":2,"total_tokens":3}}"#;
        assert_eq!(t.push(StreamEvent { event: None, data: usage.into() }).unwrap().usage.unwrap().total_tokens, 3);
        assert!(t.push(StreamEvent { event: None, data: "[DONE]".into() }).unwrap().done);
        assert_eq!(t.finish().unwrap().usage.unwrap().output_tokens, 2);
        let err = t.push(StreamEvent { event: None, data: r#"{"error":{"message":"overloaded"}}"#.into() });
        assert!(matches!(err, Err(AdapterError::InvalidUpstream(m)) if m.contains("overloaded")));
    }
}
