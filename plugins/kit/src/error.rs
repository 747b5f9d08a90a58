//! Errors: the contract's `adapter-error` constructors and OpenAI error bodies.

use serde_json::{Value, json};

use crate::AdapterError;

/// How much of a non-JSON vendor error body is quoted back to the client.
const MAX_QUOTED_BODY: usize = 512;

/// The client asked for something this vendor cannot do (answered 400).
pub fn invalid_request(message: impl Into<String>) -> AdapterError {
    AdapterError::InvalidRequest(message.into())
}

/// A parameter or feature this adapter does not carry over (answered 400).
pub fn unsupported(message: impl Into<String>) -> AdapterError {
    AdapterError::Unsupported(message.into())
}

/// The vendor answered something unreadable (answered 502).
pub fn invalid_upstream(message: impl Into<String>) -> AdapterError {
    AdapterError::InvalidUpstream(message.into())
}

/// The OpenAI `error.type` conventionally used for an HTTP status.
pub fn error_type(status: u16) -> &'static str {
    match status {
        400 | 404 | 409 | 413 | 422 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        429 => "rate_limit_error",
        503 | 529 => "overloaded_error",
        _ => "api_error",
    }
}

/// An OpenAI error object: `{"error": {"message", "type", "param", "code"}}`.
pub fn openai_error(message: &str, kind: &str, code: Option<&str>) -> String {
    json!({"error": {"message": message, "type": kind, "param": Value::Null, "code": code}}).to_string()
}

/// Any vendor error body in OpenAI's shape: an OpenAI-shaped body is kept as it is, a
/// `{"error": "..."}` or `{"message": "..."}` body is wrapped with its message, anything
/// else (an HTML page from a proxy) is quoted, shortened.
pub fn openai_error_body(status: u16, body: &str) -> String {
    if let Ok(v) = serde_json::from_str::<Value>(body) {
        match v.get("error") {
            Some(e) if e.is_object() && e.get("message").is_some_and(Value::is_string) => return body.to_string(),
            Some(Value::String(m)) => return openai_error(m, error_type(status), None),
            _ => {}
        }
        if let Some(m) = v.get("message").and_then(Value::as_str) {
            return openai_error(m, error_type(status), None);
        }
    }
    let quoted = truncate(body.trim(), MAX_QUOTED_BODY);
    let message = if quoted.is_empty() {
        format!("the vendor answered {status} with an empty body")
    } else {
        format!("the vendor answered {status}: {quoted}")
    };
    openai_error(&message, error_type(status), None)
}

/// At most `max` bytes of `s`, cut on a character boundary, with "..." when cut.
pub fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut cut = max;
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}...", &s[..cut])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vendor_errors_become_openai_shaped() {
        let openai =
            r#"{"error":{"message":"Rate limit","type":"requests","param":null,"code":"rate_limit_exceeded"}}"#;
        assert_eq!(openai_error_body(429, openai), openai);
        let v: Value = serde_json::from_str(&openai_error_body(400, r#"{"error":"bad thing"}"#)).unwrap();
        assert_eq!(
            (v["error"]["message"].as_str(), v["error"]["type"].as_str()),
            (Some("bad thing"), Some("invalid_request_error"))
        );
        let v: Value = serde_json::from_str(&openai_error_body(502, "<html>Bad Gateway</html>")).unwrap();
        assert_eq!(v["error"]["message"], "the vendor answered 502: <html>Bad Gateway</html>");
        let long = "é".repeat(600);
        let v: Value = serde_json::from_str(&openai_error_body(500, &long)).unwrap();
        assert!(v["error"]["message"].as_str().unwrap().ends_with("..."));
    }
}
