//! The OpenAI-compatible adapter: OpenAI itself, and every vendor that speaks its API
//! (DeepSeek, Groq, OpenRouter, vLLM, Ollama's OpenAI API) by `base_url`.
//!
//! Requests pass through unchanged (the client already speaks this API); responses are
//! checked, usage is read for accounting, and vendor errors are kept in OpenAI's shape.
//!
//! Channel settings: `organization` (OpenAI-Organization header), `project`
//! (OpenAI-Project header).

use std::cell::RefCell;

use serde::Deserialize;
use serde::de::IgnoredAny;

wit_bindgen::generate!({
    path: "../../wit",
    world: "adapter-plugin",
});

use exports::relay::adapter::adapter::{Guest, GuestStreamTransformer};
use relay::adapter::types::{
    AdapterError, AuthScheme, CallContext, Endpoint, Header, PluginInfo, RelayResponse, StreamEnd, StreamEvent,
    StreamFormat, StreamOutput, UpstreamRequest, UpstreamResponse, Usage,
};

/// How much of a non-JSON vendor error body is quoted back to the client.
const MAX_QUOTED_BODY: usize = 512;

pub struct OpenAi;

impl Guest for OpenAi {
    type StreamTransformer = Transformer;

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

    fn transform_request(ctx: CallContext, body: String) -> Result<UpstreamRequest, AdapterError> {
        let path = match ctx.endpoint {
            Endpoint::ChatCompletions => "/chat/completions",
            Endpoint::Embeddings => "/embeddings",
        };
        let mut headers = Vec::new();
        for (key, name) in [("organization", "openai-organization"), ("project", "openai-project")] {
            if let Some((_, v)) = ctx.settings.iter().find(|(k, _)| k == key) {
                headers.push(Header { name: name.into(), value: v.clone() });
            }
        }
        if ctx.stream {
            headers.push(Header { name: "accept".into(), value: "text/event-stream".into() });
        }
        Ok(UpstreamRequest { method: "POST".into(), path: path.into(), headers, body })
    }

    fn transform_response(_ctx: CallContext, resp: UpstreamResponse) -> Result<RelayResponse, AdapterError> {
        if (200..300).contains(&resp.status) {
            let probe: UsageProbe = serde_json::from_str(&resp.body).map_err(|e| {
                AdapterError::InvalidUpstream(format!(
                    "the vendor answered {} with a body that is not JSON: {e}",
                    resp.status
                ))
            })?;
            return Ok(RelayResponse { status: resp.status, usage: probe.usage.map(Into::into), body: resp.body });
        }
        Ok(RelayResponse { status: resp.status, body: error_body(resp.status, &resp.body), usage: None })
    }
}

/// Vendor errors stay in OpenAI's shape: kept as they are when they already are, wrapped
/// when the vendor (or a proxy in front of it) sent something else.
pub fn error_body(status: u16, body: &str) -> String {
    if let Ok(v) = serde_json::from_str::<serde_json::Value>(body) {
        match v.get("error") {
            Some(e) if e.is_object() && e.get("message").is_some() => return body.to_string(),
            Some(serde_json::Value::String(m)) => return wrap_error(status, m),
            _ => {}
        }
        if let Some(m) = v.get("message").and_then(|m| m.as_str()) {
            return wrap_error(status, m);
        }
    }
    let mut quoted = body.trim().to_string();
    if quoted.len() > MAX_QUOTED_BODY {
        let mut cut = MAX_QUOTED_BODY;
        while !quoted.is_char_boundary(cut) {
            cut -= 1;
        }
        quoted.truncate(cut);
        quoted.push_str("...");
    }
    let msg = if quoted.is_empty() {
        format!("the vendor answered {status} with an empty body")
    } else {
        format!("the vendor answered {status}: {quoted}")
    };
    wrap_error(status, &msg)
}

fn wrap_error(status: u16, message: &str) -> String {
    let kind = match status {
        400 | 404 | 413 | 422 => "invalid_request_error",
        401 | 403 => "authentication_error",
        429 => "rate_limit_error",
        _ => "api_error",
    };
    serde_json::json!({"error": {"message": message, "type": kind, "param": null, "code": null}}).to_string()
}

#[derive(Deserialize)]
struct UsageProbe {
    usage: Option<WireUsage>,
}

#[derive(Deserialize)]
struct WireUsage {
    #[serde(default)]
    prompt_tokens: u64,
    #[serde(default)]
    completion_tokens: u64,
    #[serde(default)]
    total_tokens: u64,
}

impl From<WireUsage> for Usage {
    fn from(u: WireUsage) -> Usage {
        Usage { prompt_tokens: u.prompt_tokens, completion_tokens: u.completion_tokens, total_tokens: u.total_tokens }
    }
}

#[derive(Deserialize)]
struct ChunkProbe {
    usage: Option<WireUsage>,
    error: Option<ErrorProbe>,
    #[serde(rename = "choices")]
    _choices: Option<IgnoredAny>,
}

#[derive(Deserialize)]
struct ErrorProbe {
    message: Option<String>,
}

/// Chunks are already OpenAI chunks: each is checked, scanned for usage and forwarded.
pub struct Transformer {
    state: RefCell<State>,
}

#[derive(Default)]
struct State {
    done: bool,
    usage: Option<(u64, u64, u64)>,
}

impl GuestStreamTransformer for Transformer {
    fn new(_ctx: CallContext) -> Self {
        Transformer { state: RefCell::new(State::default()) }
    }

    fn push(&self, event: StreamEvent) -> Result<StreamOutput, AdapterError> {
        let mut st = self.state.borrow_mut();
        let data = event.data.trim();
        if data == "[DONE]" {
            st.done = true;
            return Ok(StreamOutput { chunks: vec![], done: true, usage: None });
        }
        let probe: ChunkProbe = serde_json::from_str(data)
            .map_err(|e| AdapterError::InvalidUpstream(format!("a stream chunk is not JSON: {e}")))?;
        if let Some(err) = probe.error {
            let msg = err.message.unwrap_or_else(|| "the vendor sent an error event".into());
            return Err(AdapterError::InvalidUpstream(format!("the vendor ended the stream with an error: {msg}")));
        }
        let usage = probe.usage.map(Usage::from);
        if let Some(u) = &usage {
            st.usage = Some((u.prompt_tokens, u.completion_tokens, u.total_tokens));
        }
        Ok(StreamOutput { chunks: vec![event.data], done: false, usage })
    }

    fn finish(&self) -> Result<StreamEnd, AdapterError> {
        let st = self.state.borrow();
        if !st.done {
            return Err(AdapterError::InvalidUpstream("the vendor's stream ended before [DONE]".into()));
        }
        let usage = st.usage.map(|(p, c, t)| Usage { prompt_tokens: p, completion_tokens: c, total_tokens: t });
        Ok(StreamEnd { chunks: vec![], usage })
    }
}

// Exported symbols only mean something in the component; native builds run the unit tests.
#[cfg(target_arch = "wasm32")]
export!(OpenAi);

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
        let r =
            OpenAi::transform_request(ctx(Endpoint::ChatCompletions, false, &[("organization", "org-1")]), body.into())
                .unwrap();
        assert_eq!(r.path, "/chat/completions");
        assert_eq!(r.body, body);
        assert_eq!(r.headers.len(), 1);
        assert_eq!((r.headers[0].name.as_str(), r.headers[0].value.as_str()), ("openai-organization", "org-1"));
        let r = OpenAi::transform_request(ctx(Endpoint::Embeddings, false, &[]), "{}".into()).unwrap();
        assert_eq!(r.path, "/embeddings");
    }

    #[test]
    fn response_usage_and_errors() {
        let ok = r#"{"id":"x","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":5,"total_tokens":8}}"#;
        let r = OpenAi::transform_response(
            ctx(Endpoint::ChatCompletions, false, &[]),
            UpstreamResponse { status: 200, headers: vec![], body: ok.into() },
        )
        .unwrap();
        assert_eq!(r.usage.unwrap().total_tokens, 8);
        assert_eq!(r.body, ok);

        let bad = OpenAi::transform_response(
            ctx(Endpoint::ChatCompletions, false, &[]),
            UpstreamResponse { status: 200, headers: vec![], body: "<html>".into() },
        );
        assert!(matches!(bad, Err(AdapterError::InvalidUpstream(_))));

        let vendor =
            r#"{"error":{"message":"Rate limit reached","type":"requests","param":null,"code":"rate_limit_exceeded"}}"#;
        let r = OpenAi::transform_response(
            ctx(Endpoint::ChatCompletions, false, &[]),
            UpstreamResponse { status: 429, headers: vec![], body: vendor.into() },
        )
        .unwrap();
        assert_eq!((r.status, r.body.as_str()), (429, vendor));

        let html = error_body(502, "<html>Bad Gateway</html>");
        let v: serde_json::Value = serde_json::from_str(&html).unwrap();
        assert!(v["error"]["message"].as_str().unwrap().contains("Bad Gateway"));
        let v: serde_json::Value = serde_json::from_str(&error_body(400, r#"{"error":"bad thing"}"#)).unwrap();
        assert_eq!(v["error"]["message"], "bad thing");
        assert_eq!(v["error"]["type"], "invalid_request_error");
    }

    #[test]
    fn stream_needs_done() {
        let t = Transformer::new(ctx(Endpoint::ChatCompletions, true, &[]));
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
