//! Gemini `GenerateContentResponse` and Google error bodies → OpenAI shapes.

use relay_plugin_kit::error::{error_type, openai_error, openai_error_body};
use relay_plugin_kit::openai::{FunctionCall, ToolCall};
use relay_plugin_kit::prelude::*;
use serde::Deserialize;
use serde_json::Value;

/// One `GenerateContentResponse`: a whole answer, or one stream chunk.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GenerateResponse {
    #[serde(default)]
    pub candidates: Vec<Candidate>,
    pub prompt_feedback: Option<PromptFeedback>,
    pub usage_metadata: Option<UsageMetadata>,
    pub model_version: Option<String>,
    pub response_id: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Candidate {
    pub content: Option<CandidateContent>,
    pub finish_reason: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct CandidateContent {
    #[serde(default)]
    pub parts: Vec<Part>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Part {
    pub text: Option<String>,
    /// A thought summary (with `includeThoughts`), not part of the answer.
    #[serde(default)]
    pub thought: bool,
    pub function_call: Option<FunctionCallPart>,
}

#[derive(Debug, Deserialize)]
pub struct FunctionCallPart {
    pub id: Option<String>,
    pub name: String,
    pub args: Option<Value>,
}

impl FunctionCallPart {
    /// The call as an OpenAI tool call: Gemini's id when it gives one, else `call_<index>`.
    pub fn tool_call(&self, index: u32) -> ToolCall {
        ToolCall {
            id: self.id.clone().filter(|id| !id.is_empty()).unwrap_or_else(|| format!("call_{index}")),
            kind: "function".into(),
            function: FunctionCall {
                name: self.name.clone(),
                arguments: self.args.as_ref().map_or_else(|| "{}".into(), Value::to_string),
            },
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PromptFeedback {
    pub block_reason: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct UsageMetadata {
    pub prompt_token_count: u64,
    pub candidates_token_count: u64,
    pub total_token_count: Option<u64>,
    /// Thinking tokens: billed as output, so counted as completion tokens (OpenAI counts
    /// reasoning tokens there too).
    pub thoughts_token_count: u64,
    /// Tool-use prompt tokens: input, so counted as prompt tokens.
    pub tool_use_prompt_token_count: u64,
}

impl UsageMetadata {
    /// Sums saturate: the vendor's counts may be anything.
    pub fn usage(&self) -> Usage {
        let prompt = self.prompt_token_count.saturating_add(self.tool_use_prompt_token_count);
        let completion = self.candidates_token_count.saturating_add(self.thoughts_token_count);
        Usage {
            prompt_tokens: prompt,
            completion_tokens: completion,
            total_tokens: self.total_token_count.unwrap_or(prompt.saturating_add(completion)),
        }
    }
}

impl GenerateResponse {
    pub fn parse(body: &str) -> Result<GenerateResponse, AdapterError> {
        serde_json::from_str(body).map_err(|e| invalid_upstream(format!("Gemini's answer is not a response: {e}")))
    }

    /// The prompt was blocked: no candidates, and a block reason.
    pub fn blocked(&self) -> bool {
        self.candidates.is_empty() && self.prompt_feedback.as_ref().is_some_and(|f| f.block_reason.is_some())
    }

    /// The answer's parts (of the first candidate: one is ever asked for).
    pub fn parts(&self) -> &[Part] {
        self.candidates.first().and_then(|c| c.content.as_ref()).map_or(&[], |c| c.parts.as_slice())
    }

    pub fn finish_reason(&self) -> Option<&str> {
        self.candidates.first().and_then(|c| c.finish_reason.as_deref())
    }
}

/// Gemini's `finishReason` as OpenAI's `finish_reason`.
pub fn finish_reason(reason: &str, has_tool_calls: bool) -> &'static str {
    match reason {
        "MAX_TOKENS" => "length",
        "SAFETY" | "RECITATION" | "BLOCKLIST" | "PROHIBITED_CONTENT" | "SPII" | "IMAGE_SAFETY" => "content_filter",
        _ if has_tool_calls => "tool_calls",
        _ => "stop",
    }
}

/// A successful `generateContent` answer as a chat completion.
pub fn completion(ctx: &CallContext, body: &str) -> Result<RelayResponse, AdapterError> {
    let r = GenerateResponse::parse(body)?;
    let usage = r.usage_metadata.as_ref().map(UsageMetadata::usage);
    let id = r.response_id.clone().unwrap_or_else(|| synthesized_id(ctx));
    let model = r.model_version.as_deref().unwrap_or(&ctx.model);
    let (content, tool_calls, reason) = if r.blocked() {
        (Some(String::new()), vec![], "content_filter")
    } else {
        let Some(reason) = r.finish_reason() else {
            return Err(invalid_upstream("Gemini's answer has no candidate with a finishReason"));
        };
        let mut text = String::new();
        let mut calls = Vec::new();
        for p in r.parts() {
            if let Some(call) = &p.function_call {
                calls.push(call.tool_call(calls.len() as u32));
            } else if let Some(t) = p.text.as_deref().filter(|_| !p.thought) {
                text.push_str(t);
            }
        }
        let content = (!text.is_empty() || calls.is_empty()).then_some(text);
        let reason = finish_reason(reason, !calls.is_empty());
        (content, calls, reason)
    };
    let body = openai::completion(&id, openai::now(), model, content.as_deref(), &tool_calls, reason, usage.as_ref());
    Ok(RelayResponse { status: 200, body, usage })
}

/// An id for an answer Gemini gave none for, unique per relay request.
pub fn synthesized_id(ctx: &CallContext) -> String {
    format!("chatcmpl-{}", ctx.request_id)
}

#[derive(Deserialize)]
struct ErrorBody {
    error: GoogleError,
}

/// `{"error": {"code", "message", "status", "details"}}`, Google's error shape.
#[derive(Deserialize)]
pub struct GoogleError {
    pub message: Option<String>,
    pub status: Option<String>,
    #[serde(default)]
    pub details: Vec<Value>,
}

impl GoogleError {
    /// A Google error body: an object, or (from a JSON-array stream) a one-element array.
    pub fn parse(body: &str) -> Option<GoogleError> {
        let v: Value = serde_json::from_str(body).ok()?;
        let v = match v {
            Value::Array(mut items) if !items.is_empty() => items.swap_remove(0),
            v => v,
        };
        serde_json::from_value::<ErrorBody>(v).ok().map(|b| b.error)
    }

    /// A rejected API key comes as 400 INVALID_ARGUMENT with reason API_KEY_INVALID.
    fn key_invalid(&self) -> bool {
        self.details.iter().any(|d| d.get("reason").and_then(Value::as_str) == Some("API_KEY_INVALID"))
    }
}

/// A Gemini error answer in OpenAI's shape: the message kept, the status kept (but a
/// rejected key is 401, as OpenAI answers it), Google's status as `code`.
pub fn error(status: u16, body: &str) -> RelayResponse {
    let Some(e) = GoogleError::parse(body) else {
        return RelayResponse { status, body: openai_error_body(status, body), usage: None };
    };
    let google = e.status.as_deref().unwrap_or_default();
    let key_invalid = e.key_invalid();
    let status = if key_invalid || google == "UNAUTHENTICATED" { 401 } else { status };
    let kind = match google {
        _ if key_invalid => "authentication_error",
        "INVALID_ARGUMENT" | "FAILED_PRECONDITION" | "OUT_OF_RANGE" | "NOT_FOUND" | "ALREADY_EXISTS" => {
            "invalid_request_error"
        }
        "UNAUTHENTICATED" => "authentication_error",
        "PERMISSION_DENIED" => "permission_error",
        "RESOURCE_EXHAUSTED" => "rate_limit_error",
        "UNAVAILABLE" => "overloaded_error",
        _ => error_type(status),
    };
    let message = e.message.filter(|m| !m.is_empty()).unwrap_or_else(|| format!("Gemini answered {status}"));
    let code = (!google.is_empty()).then_some(google);
    RelayResponse { status, body: openai_error(&message, kind, code), usage: None }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ctx() -> CallContext {
        CallContext {
            request_id: "req_1".into(),
            endpoint: Endpoint::ChatCompletions,
            model: "gemini-2.0-flash".into(),
            stream: false,
            include_usage: false,
            settings: vec![],
        }
    }

    fn complete(body: Value) -> (Value, Option<Usage>) {
        let r = completion(&ctx(), &body.to_string()).unwrap();
        (serde_json::from_str(&r.body).unwrap(), r.usage)
    }

    #[test]
    fn text_answer_with_usage_and_id() {
        let (v, usage) = complete(json!({
            "candidates": [{"content": {"role": "model", "parts": [{"text": "thinking...", "thought": true},
                {"text": "Hello"}, {"text": " world"}]}, "finishReason": "STOP", "index": 0}],
            "usageMetadata": {"promptTokenCount": 4, "candidatesTokenCount": 2, "thoughtsTokenCount": 3, "totalTokenCount": 9},
            "modelVersion": "gemini-2.0-flash-001", "responseId": "resp-1"}));
        assert_eq!((v["id"].as_str(), v["model"].as_str()), (Some("resp-1"), Some("gemini-2.0-flash-001")));
        assert_eq!(v["object"], "chat.completion");
        assert_eq!(v["choices"][0]["message"], json!({"role": "assistant", "content": "Hello world", "refusal": null}));
        assert_eq!(v["choices"][0]["finish_reason"], "stop");
        assert_eq!(v["usage"], json!({"prompt_tokens": 4, "completion_tokens": 5, "total_tokens": 9}));
        assert_eq!(usage.unwrap().completion_tokens, 5);
    }

    #[test]
    fn function_calls_become_tool_calls() {
        let (v, _) = complete(json!({"candidates": [{"content": {"role": "model", "parts": [
            {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}},
            {"functionCall": {"id": "fc-9", "name": "now"}}]}, "finishReason": "STOP"}]}));
        assert!(v["id"].as_str().unwrap().starts_with("chatcmpl-"), "synthesized id");
        let m = &v["choices"][0]["message"];
        assert!(m["content"].is_null());
        assert_eq!(
            m["tool_calls"],
            json!([
                {"id": "call_0", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
                {"id": "fc-9", "type": "function", "function": {"name": "now", "arguments": "{}"}},
            ])
        );
        assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");
        assert!(v.get("usage").is_none(), "no usage invented");
    }

    #[test]
    fn finish_reasons_and_blocked_prompts() {
        for (gemini, openai) in [
            ("STOP", "stop"),
            ("MAX_TOKENS", "length"),
            ("SAFETY", "content_filter"),
            ("RECITATION", "content_filter"),
            ("BLOCKLIST", "content_filter"),
            ("PROHIBITED_CONTENT", "content_filter"),
            ("SPII", "content_filter"),
            ("OTHER", "stop"),
        ] {
            let (v, _) =
                complete(json!({"candidates": [{"content": {"parts": [{"text": "x"}]}, "finishReason": gemini}]}));
            assert_eq!(v["choices"][0]["finish_reason"], openai, "{gemini}");
        }
        let (v, _) = complete(json!({"promptFeedback": {"blockReason": "SAFETY"},
            "usageMetadata": {"promptTokenCount": 7, "totalTokenCount": 7}}));
        assert_eq!(v["choices"][0]["finish_reason"], "content_filter");
        assert_eq!(v["choices"][0]["message"]["content"], "");
        assert_eq!(v["usage"]["prompt_tokens"], 7);
        let bad = completion(&ctx(), "{\"candidates\": []}");
        assert!(matches!(bad, Err(AdapterError::InvalidUpstream(_))));
        assert!(matches!(completion(&ctx(), "<html>"), Err(AdapterError::InvalidUpstream(_))));
    }

    // Found by the property tests (tests/properties.rs): vendor counts near u64::MAX wrapped.
    #[test]
    fn usage_saturates() {
        let (_, usage) =
            complete(json!({"candidates": [{"content": {"parts": [{"text": "x"}]}, "finishReason": "STOP"}],
            "usageMetadata": {"promptTokenCount": u64::MAX, "toolUsePromptTokenCount": 2, "candidatesTokenCount": 1}}));
        let u = usage.unwrap();
        assert_eq!((u.prompt_tokens, u.completion_tokens, u.total_tokens), (u64::MAX, 1, u64::MAX));
    }

    #[test]
    fn google_errors_become_openai_errors() {
        let check = |status: u16, body: Value, want_status: u16, kind: &str, code: &str| {
            let r = error(status, &body.to_string());
            let v: Value = serde_json::from_str(&r.body).unwrap();
            assert_eq!(r.status, want_status, "{body}");
            assert_eq!(v["error"]["message"], body["error"]["message"]);
            assert_eq!((v["error"]["type"].as_str(), v["error"]["code"].as_str()), (Some(kind), Some(code)));
        };
        let google = |code: u16, status: &str, message: &str| json!({"error": {"code": code, "message": message, "status": status}});
        check(429, google(429, "RESOURCE_EXHAUSTED", "Quota exceeded"), 429, "rate_limit_error", "RESOURCE_EXHAUSTED");
        check(400, google(400, "INVALID_ARGUMENT", "Bad field"), 400, "invalid_request_error", "INVALID_ARGUMENT");
        check(403, google(403, "PERMISSION_DENIED", "No access"), 403, "permission_error", "PERMISSION_DENIED");
        check(404, google(404, "NOT_FOUND", "models/x is not found"), 404, "invalid_request_error", "NOT_FOUND");
        check(500, google(500, "INTERNAL", "Internal error"), 500, "api_error", "INTERNAL");
        check(503, google(503, "UNAVAILABLE", "The model is overloaded."), 503, "overloaded_error", "UNAVAILABLE");
        let mut key = google(400, "INVALID_ARGUMENT", "API key not valid. Please pass a valid API key.");
        key["error"]["details"] =
            json!([{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID"}]);
        check(400, key, 401, "authentication_error", "INVALID_ARGUMENT");
        // A JSON-array body, and a body that is not Google's at all.
        let r = error(429, &json!([google(429, "RESOURCE_EXHAUSTED", "slow down")]).to_string());
        assert!(r.body.contains("slow down"));
        let r = error(502, "<html>Bad Gateway</html>");
        assert_eq!(r.status, 502);
        assert!(r.body.contains("Bad Gateway"));
    }
}
