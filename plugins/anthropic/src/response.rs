//! Anthropic Message and error bodies → OpenAI completion and error bodies.

use relay_plugin_kit::error::{class_of_status, error_type, openai_error};
use relay_plugin_kit::native::messages;
pub use relay_plugin_kit::native::messages::{Tokens, WireUsage};
use relay_plugin_kit::openai::{self, FunctionCall, ToolCall};
use relay_plugin_kit::prelude::*;
use serde::Deserialize;
use serde_json::Value;

/// Anthropic's "overloaded" status, which is not standard HTTP; clients get 503 for it.
const OVERLOADED: u16 = 529;
const SERVICE_UNAVAILABLE: u16 = 503;

#[derive(Deserialize)]
struct Message {
    id: String,
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    content: Vec<Block>,
    #[serde(default)]
    stop_reason: Option<String>,
    #[serde(default)]
    usage: Option<WireUsage>,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Block {
    Text {
        text: String,
    },
    ToolUse {
        id: String,
        name: String,
        input: Value,
    },
    /// Thinking and server-tool blocks have no place in an OpenAI message.
    #[serde(other)]
    Other,
}

/// Add `usage.prompt_tokens_details.cached_tokens` to an OpenAI document when the vendor
/// reported cache reads.
pub fn with_cached(tokens: &Tokens, doc: String) -> String {
    let Some(cached) = tokens.cache_read() else { return doc };
    match serde_json::from_str::<Value>(&doc) {
        Ok(mut v) if v["usage"].is_object() => {
            v["usage"]["prompt_tokens_details"] = serde_json::json!({"cached_tokens": cached});
            v.to_string()
        }
        _ => doc,
    }
}

/// Anthropic `stop_reason` → OpenAI `finish_reason`.
pub fn finish_reason(stop_reason: Option<&str>) -> &'static str {
    match stop_reason {
        Some("max_tokens") | Some("model_context_window_exceeded") => "length",
        Some("tool_use") => "tool_calls",
        Some("refusal") => "content_filter",
        // end_turn, stop_sequence, pause_turn (the turn is over for this call)
        _ => "stop",
    }
}

pub fn transform(ctx: &CallContext, resp: UpstreamResponse) -> Result<RelayResponse, AdapterError> {
    if !(200..300).contains(&resp.status) {
        return Ok(error_response(resp.status, &resp.body));
    }
    let msg: Message = serde_json::from_str(&resp.body)
        .map_err(|e| invalid_upstream(format!("the vendor's answer is not an Anthropic message: {e}")))?;
    let mut text: Option<String> = None;
    let mut calls = Vec::new();
    for block in msg.content {
        match block {
            Block::Text { text: t } => text.get_or_insert_with(String::new).push_str(&t),
            Block::ToolUse { id, name, input } => calls.push(ToolCall {
                id,
                kind: "function".into(),
                function: FunctionCall { name, arguments: input.to_string() },
            }),
            Block::Other => {}
        }
    }
    if text.is_none() && calls.is_empty() {
        text = Some(String::new());
    }
    let mut tokens = Tokens::default();
    if let Some(u) = &msg.usage {
        tokens.update(u);
    }
    let usage = msg.usage.is_some().then(|| tokens.usage());
    let model = msg.model.as_deref().unwrap_or(&ctx.model);
    let body = openai::completion(
        &msg.id,
        openai::now(),
        model,
        text.as_deref(),
        &calls,
        finish_reason(msg.stop_reason.as_deref()),
        usage.as_ref(),
    );
    Ok(RelayResponse { status: resp.status, body: with_cached(&tokens, body), usage, error_class: None })
}

#[derive(Deserialize)]
struct ErrorEnvelope {
    error: VendorError,
}

#[derive(Deserialize)]
pub struct VendorError {
    #[serde(rename = "type", default)]
    pub kind: Option<String>,
    pub message: String,
}

/// An Anthropic error answer in OpenAI's shape, the message and type kept; 529 becomes 503.
pub fn error_response(status: u16, body: &str) -> RelayResponse {
    let error_class = class_of_status(status);
    let status = if status == OVERLOADED { SERVICE_UNAVAILABLE } else { status };
    let (body, error_class) = match serde_json::from_str::<ErrorEnvelope>(body) {
        Ok(ErrorEnvelope { error: e }) => {
            let class =
                error_class.map(|by_status| messages::class_of(e.kind.as_deref(), &e.message).unwrap_or(by_status));
            (openai_error(&e.message, e.kind.as_deref().unwrap_or(error_type(status)), None), class)
        }
        Err(_) => (openai_error_body(status, body), error_class),
    };
    RelayResponse { status, body, usage: None, error_class }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ctx() -> CallContext {
        CallContext {
            request_id: "r1".into(),
            endpoint: Endpoint::ChatCompletions,
            model: "claude-x".into(),
            stream: false,
            include_usage: false,
            settings: vec![],
        }
    }

    fn answer(status: u16, body: Value) -> (RelayResponse, Value) {
        let r = transform(&ctx(), UpstreamResponse { status, headers: vec![], body: body.to_string() }).unwrap();
        let v = serde_json::from_str(&r.body).unwrap();
        (r, v)
    }

    #[test]
    fn text_message() {
        let (r, v) = answer(
            200,
            json!({"id": "msg_01", "type": "message", "role": "assistant", "model": "claude-real",
                "content": [{"type": "text", "text": "Hello"}, {"type": "thinking", "thinking": "hm", "signature": "s"},
                    {"type": "text", "text": " world"}],
                "stop_reason": "end_turn", "stop_sequence": null,
                "usage": {"input_tokens": 10, "output_tokens": 4}}),
        );
        assert_eq!(r.status, 200);
        let u = r.usage.unwrap();
        assert_eq!((u.input_tokens, u.output_tokens, u.total_tokens), (10, 4, 14));
        assert_eq!((u.cached_input_tokens, u.cache_creation_input_tokens, u.reasoning_tokens), (None, None, None));
        assert_eq!(
            (v["id"].as_str(), v["object"].as_str(), v["model"].as_str()),
            (Some("msg_01"), Some("chat.completion"), Some("claude-real"))
        );
        assert_eq!(v["choices"][0]["message"], json!({"role": "assistant", "content": "Hello world", "refusal": null}));
        assert_eq!(v["choices"][0]["finish_reason"], "stop");
        assert_eq!(v["usage"], json!({"prompt_tokens": 10, "completion_tokens": 4, "total_tokens": 14}));
    }

    #[test]
    fn tool_use_message_with_cache_usage() {
        let (r, v) = answer(
            200,
            json!({"id": "msg_02", "type": "message", "role": "assistant", "model": "claude-real",
                "content": [{"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}},
                    {"type": "tool_use", "id": "toolu_2", "name": "now", "input": {}}],
                "stop_reason": "tool_use", "stop_sequence": null,
                "usage": {"input_tokens": 5, "cache_creation_input_tokens": 20, "cache_read_input_tokens": 100, "output_tokens": 7}}),
        );
        let u = r.usage.unwrap();
        assert_eq!((u.input_tokens, u.output_tokens, u.total_tokens), (125, 7, 132), "cached input is input");
        assert_eq!((u.cached_input_tokens, u.cache_creation_input_tokens), (Some(100), Some(20)));
        let m = &v["choices"][0]["message"];
        assert_eq!(m["content"], Value::Null);
        assert_eq!(
            m["tool_calls"],
            json!([
                {"id": "toolu_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
                {"id": "toolu_2", "type": "function", "function": {"name": "now", "arguments": "{}"}}])
        );
        assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(v["usage"]["prompt_tokens"], 125);
        assert_eq!(v["usage"]["prompt_tokens_details"], json!({"cached_tokens": 100}));
    }

    #[test]
    fn stop_reasons() {
        for (stop, finish) in [
            ("end_turn", "stop"),
            ("stop_sequence", "stop"),
            ("max_tokens", "length"),
            ("tool_use", "tool_calls"),
            ("refusal", "content_filter"),
        ] {
            let (_, v) = answer(
                200,
                json!({"id": "m", "content": [{"type": "text", "text": "x"}], "stop_reason": stop, "usage": {"input_tokens": 1, "output_tokens": 1}}),
            );
            assert_eq!(v["choices"][0]["finish_reason"], finish, "{stop}");
        }
        let bad = transform(&ctx(), UpstreamResponse { status: 200, headers: vec![], body: "<html>".into() });
        assert!(matches!(bad, Err(AdapterError::InvalidUpstream(_))));
    }

    #[test]
    fn vendor_errors() {
        let err = |kind: &str, msg: &str| json!({"type": "error", "error": {"type": kind, "message": msg}});
        let (r, v) = answer(429, err("rate_limit_error", "Number of requests has exceeded your rate limit"));
        assert_eq!(r.status, 429);
        assert_eq!(v["error"]["message"], "Number of requests has exceeded your rate limit");
        assert_eq!(v["error"]["type"], "rate_limit_error");
        let (r, v) = answer(529, err("overloaded_error", "Overloaded"));
        assert_eq!((r.status, v["error"]["message"].as_str()), (503, Some("Overloaded")));
        assert_eq!(v["error"]["type"], "overloaded_error");
        let (r, v) = answer(401, err("authentication_error", "invalid x-api-key"));
        assert_eq!((r.status, v["error"]["type"].as_str()), (401, Some("authentication_error")));
        let r = error_response(502, "<html>Bad Gateway</html>");
        let v: Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(v["error"]["message"], "the vendor answered 502: <html>Bad Gateway</html>");
        assert!(r.usage.is_none());
    }

    #[test]
    fn vendor_errors_are_classified() {
        let err = |kind: &str, msg: &str| json!({"type": "error", "error": {"type": kind, "message": msg}});
        let too_long = err("invalid_request_error", "prompt is too long: 208310 tokens > 200000 maximum");
        let (r, v) = answer(400, too_long.clone());
        assert_eq!(r.error_class, Some(ErrorClass::ContextLengthExceeded));
        assert_eq!(r.status, 400, "the answer is unchanged");
        assert_eq!(
            v,
            json!({"error": {"message": "prompt is too long: 208310 tokens > 200000 maximum",
            "type": "invalid_request_error", "param": null, "code": null}})
        );
        let window = "input length and `max_tokens` exceed context limit: 197879 + 8192 > 200000, decrease input length or `max_tokens` and try again";
        for (status, body, class) in [
            (400, err("invalid_request_error", window), ErrorClass::ContextLengthExceeded),
            (400, err("invalid_request_error", "messages: roles must alternate"), ErrorClass::InvalidRequest),
            (401, err("authentication_error", "invalid x-api-key"), ErrorClass::Authentication),
            (403, err("permission_error", "no access"), ErrorClass::Permission),
            (404, err("not_found_error", "model: claude-x"), ErrorClass::NotFound),
            (413, err("request_too_large", "Request exceeds the maximum size"), ErrorClass::InvalidRequest),
            (429, err("rate_limit_error", "slow down"), ErrorClass::RateLimited),
            (500, err("api_error", "Internal server error"), ErrorClass::ServerError),
            (529, err("overloaded_error", "Overloaded"), ErrorClass::Overloaded),
            // The type decides where the status is less precise.
            (500, err("overloaded_error", "Overloaded"), ErrorClass::Overloaded),
        ] {
            let (r, _) = answer(status, body.clone());
            assert_eq!(r.error_class, Some(class), "{status} {body}");
        }
        assert_eq!(error_response(502, "<html>Bad Gateway</html>").error_class, Some(ErrorClass::ServerError));
        assert_eq!(error_response(529, "").error_class, Some(ErrorClass::Overloaded));
        // A status that is no error is not classified, whatever the body says.
        assert_eq!(error_response(302, &err("overloaded_error", "x").to_string()).error_class, None);
        let (r, _) = answer(200, json!({"id": "m", "content": [], "usage": {"input_tokens": 1, "output_tokens": 1}}));
        assert_eq!(r.error_class, None);
    }

    // Found by the property tests (tests/properties.rs): vendor counts near u64::MAX wrapped.
    #[test]
    fn usage_saturates() {
        let (r, v) = answer(
            200,
            json!({"id": "m", "content": [], "usage": {"input_tokens": 1, "cache_read_input_tokens": u64::MAX,
                "output_tokens": u64::MAX}}),
        );
        let u = r.usage.unwrap();
        assert_eq!((u.input_tokens, u.output_tokens, u.total_tokens), (u64::MAX, u64::MAX, u64::MAX));
        assert_eq!(v["usage"]["total_tokens"], u64::MAX);
    }
}
