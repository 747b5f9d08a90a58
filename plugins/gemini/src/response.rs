//! Gemini `GenerateContentResponse` and Google error bodies → OpenAI shapes.

use relay_plugin_kit::error::{class_of_status, error_type, openai_error, openai_error_body};
use relay_plugin_kit::openai::{FunctionCall, ToolCall};
use relay_plugin_kit::prelude::*;
use serde::{Deserialize, Deserializer};
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
    /// reasoning tokens there too), and reported as reasoning.
    #[serde(deserialize_with = "present")]
    pub thoughts_token_count: Option<u64>,
    /// Tool-use prompt tokens: input, so counted as prompt tokens.
    pub tool_use_prompt_token_count: u64,
    /// Prompt tokens served from a context cache (part of `promptTokenCount`). Read
    /// leniently: a malformed count is no count, as before it was read at all.
    pub cached_content_token_count: Option<Value>,
}

/// A count that, when present, must be one (absent is `None` by the struct's default).
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    u64::deserialize(d).map(Some)
}

impl UsageMetadata {
    /// Sums saturate: the vendor's counts may be anything. The cached input is a part of
    /// the input, so never more than it.
    pub fn usage(&self) -> Usage {
        let prompt = self.prompt_token_count.saturating_add(self.tool_use_prompt_token_count);
        let completion = self.candidates_token_count.saturating_add(self.thoughts_token_count.unwrap_or(0));
        Usage {
            total_tokens: self.total_token_count.unwrap_or(prompt.saturating_add(completion)),
            cached_input_tokens: self
                .cached_content_token_count
                .as_ref()
                .and_then(Value::as_u64)
                .map(|c| c.min(prompt)),
            reasoning_tokens: self.thoughts_token_count,
            ..Usage::new(prompt, completion)
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
    // A blocked prompt or a filtered answer is still a 200 with its (empty or partial)
    // completion, as before; the class tells the host what it is.
    let error_class = (reason == "content_filter").then_some(ErrorClass::ContentFiltered);
    Ok(RelayResponse { status: 200, body, usage, error_class })
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
        return RelayResponse {
            status,
            body: openai_error_body(status, body),
            usage: None,
            error_class: class_of_status(status),
        };
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
    let error_class =
        class_of_status(status).map(|by_status| class_of(google, key_invalid, &message).unwrap_or(by_status));
    RelayResponse { status, body: openai_error(&message, kind, code), usage: None, error_class }
}

/// What Google's status (and, for a prompt over the context window, the message) says
/// beyond the HTTP status. Gemini reports a too-long prompt as INVALID_ARGUMENT: "The input
/// token count (1200000) exceeds the maximum number of tokens allowed (1048576)."
fn class_of(google: &str, key_invalid: bool, message: &str) -> Option<ErrorClass> {
    Some(match google {
        _ if key_invalid => ErrorClass::Authentication,
        "UNAUTHENTICATED" => ErrorClass::Authentication,
        "PERMISSION_DENIED" => ErrorClass::Permission,
        "NOT_FOUND" => ErrorClass::NotFound,
        "RESOURCE_EXHAUSTED" => ErrorClass::RateLimited,
        "UNAVAILABLE" => ErrorClass::Overloaded,
        "INTERNAL" | "UNKNOWN" | "DEADLINE_EXCEEDED" => ErrorClass::ServerError,
        "INVALID_ARGUMENT" if message.contains("exceeds the maximum number of tokens") => {
            ErrorClass::ContextLengthExceeded
        }
        "INVALID_ARGUMENT" | "FAILED_PRECONDITION" | "OUT_OF_RANGE" | "ALREADY_EXISTS" => ErrorClass::InvalidRequest,
        _ => return None,
    })
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
        let u = usage.unwrap();
        assert_eq!((u.input_tokens, u.output_tokens, u.total_tokens), (4, 5, 9), "thoughts are output");
        assert_eq!((u.reasoning_tokens, u.cached_input_tokens, u.cache_creation_input_tokens), (Some(3), None, None));
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

    #[test]
    fn cached_and_thinking_tokens_are_reported() {
        let (v, usage) = complete(json!({
            "candidates": [{"content": {"parts": [{"text": "x"}]}, "finishReason": "STOP"}],
            "usageMetadata": {"promptTokenCount": 1000, "cachedContentTokenCount": 800, "candidatesTokenCount": 20,
                "thoughtsTokenCount": 30, "totalTokenCount": 1050}}));
        let u = usage.unwrap();
        assert_eq!((u.input_tokens, u.output_tokens, u.total_tokens), (1000, 50, 1050), "cached input is input");
        assert_eq!((u.cached_input_tokens, u.reasoning_tokens), (Some(800), Some(30)));
        // The answer is unchanged: OpenAI's three counts.
        assert_eq!(v["usage"], json!({"prompt_tokens": 1000, "completion_tokens": 50, "total_tokens": 1050}));
        // A malformed cache count is no count; a cache count above the prompt is the prompt.
        let (_, usage) = complete(json!({
            "candidates": [{"content": {"parts": [{"text": "x"}]}, "finishReason": "STOP"}],
            "usageMetadata": {"promptTokenCount": 5, "cachedContentTokenCount": "800"}}));
        assert_eq!(usage.unwrap().cached_input_tokens, None);
        let (_, usage) = complete(json!({
            "candidates": [{"content": {"parts": [{"text": "x"}]}, "finishReason": "STOP"}],
            "usageMetadata": {"promptTokenCount": 5, "cachedContentTokenCount": 9}}));
        let u = usage.unwrap();
        assert_eq!((u.cached_input_tokens, u.reasoning_tokens), (Some(5), None));
        // A malformed thinking count still fails, as it did.
        let bad = json!({"candidates": [{"content": {"parts": [{"text": "x"}]}, "finishReason": "STOP"}],
            "usageMetadata": {"thoughtsTokenCount": null}});
        assert!(matches!(completion(&ctx(), &bad.to_string()), Err(AdapterError::InvalidUpstream(_))));
    }

    #[test]
    fn filtered_answers_are_classified() {
        let class = |body: Value| completion(&ctx(), &body.to_string()).unwrap().error_class;
        assert_eq!(class(json!({"promptFeedback": {"blockReason": "SAFETY"}})), Some(ErrorClass::ContentFiltered));
        for reason in ["SAFETY", "RECITATION", "PROHIBITED_CONTENT"] {
            let body = json!({"candidates": [{"content": {"parts": [{"text": "x"}]}, "finishReason": reason}]});
            assert_eq!(class(body), Some(ErrorClass::ContentFiltered), "{reason}");
        }
        for reason in ["STOP", "MAX_TOKENS"] {
            let body = json!({"candidates": [{"content": {"parts": [{"text": "x"}]}, "finishReason": reason}]});
            assert_eq!(class(body), None, "{reason}");
        }
    }

    #[test]
    fn google_errors_are_classified() {
        let google = |status: &str, message: &str| {
            json!({"error": {"code": 400, "message": message, "status": status}}).to_string()
        };
        let class = |http: u16, body: String| error(http, &body).error_class;
        let too_long = "The input token count (1200000) exceeds the maximum number of tokens allowed (1048576).";
        assert_eq!(class(400, google("INVALID_ARGUMENT", too_long)), Some(ErrorClass::ContextLengthExceeded));
        assert_eq!(class(400, google("INVALID_ARGUMENT", "Bad field")), Some(ErrorClass::InvalidRequest));
        assert_eq!(
            class(400, google("FAILED_PRECONDITION", "User location is not supported")),
            Some(ErrorClass::InvalidRequest)
        );
        assert_eq!(class(429, google("RESOURCE_EXHAUSTED", "Quota exceeded")), Some(ErrorClass::RateLimited));
        assert_eq!(class(503, google("UNAVAILABLE", "The model is overloaded.")), Some(ErrorClass::Overloaded));
        assert_eq!(class(500, google("INTERNAL", "Internal error")), Some(ErrorClass::ServerError));
        assert_eq!(class(504, google("DEADLINE_EXCEEDED", "Deadline")), Some(ErrorClass::ServerError));
        assert_eq!(class(403, google("PERMISSION_DENIED", "No access")), Some(ErrorClass::Permission));
        assert_eq!(class(404, google("NOT_FOUND", "models/x is not found")), Some(ErrorClass::NotFound));
        assert_eq!(class(401, google("UNAUTHENTICATED", "No key")), Some(ErrorClass::Authentication));
        let mut key: Value = serde_json::from_str(&google("INVALID_ARGUMENT", "API key not valid.")).unwrap();
        key["error"]["details"] = json!([{"reason": "API_KEY_INVALID"}]);
        let r = error(400, &key.to_string());
        assert_eq!((r.status, r.error_class), (401, Some(ErrorClass::Authentication)));
        // An unknown Google status, or a body that is not Google's, goes by the HTTP status.
        assert_eq!(class(409, google("ABORTED", "x")), Some(ErrorClass::InvalidRequest));
        assert_eq!(error(502, "<html>Bad Gateway</html>").error_class, Some(ErrorClass::ServerError));
        // A status that is no error is not classified.
        assert_eq!(class(302, google("RESOURCE_EXHAUSTED", "x")), None);
    }

    // Found by the property tests (tests/properties.rs): vendor counts near u64::MAX wrapped.
    #[test]
    fn usage_saturates() {
        let (_, usage) =
            complete(json!({"candidates": [{"content": {"parts": [{"text": "x"}]}, "finishReason": "STOP"}],
            "usageMetadata": {"promptTokenCount": u64::MAX, "toolUsePromptTokenCount": 2, "candidatesTokenCount": 1}}));
        let u = usage.unwrap();
        assert_eq!((u.input_tokens, u.output_tokens, u.total_tokens), (u64::MAX, 1, u64::MAX));
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
