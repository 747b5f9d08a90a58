//! Errors: the contract's `adapter-error` constructors, OpenAI error bodies, and the
//! classes of vendor errors (`error-class`) the host decides failover on.

use serde_json::{Value, json};

use crate::{AdapterError, ErrorClass};

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

/// The class an HTTP error status implies: 401 authentication, 403 permission, 404 not
/// found, 429 rate-limited, 503 and 529 overloaded, any other 5xx a server error, any other
/// 4xx an invalid request. None for a status that is no error.
pub fn class_of_status(status: u16) -> Option<ErrorClass> {
    Some(match status {
        401 => ErrorClass::Authentication,
        403 => ErrorClass::Permission,
        404 => ErrorClass::NotFound,
        429 => ErrorClass::RateLimited,
        503 | 529 => ErrorClass::Overloaded,
        500..=599 => ErrorClass::ServerError,
        400..=499 => ErrorClass::InvalidRequest,
        _ => return None,
    })
}

/// The class an OpenAI error `code` or `type` names, when it says more than the status:
/// the context window, and content filters (Azure's `content_filter`, OpenAI's
/// `content_policy_violation`).
pub fn class_of_openai_code(code: &str) -> Option<ErrorClass> {
    match code {
        "context_length_exceeded" => Some(ErrorClass::ContextLengthExceeded),
        "content_filter" | "content_policy_violation" => Some(ErrorClass::ContentFiltered),
        _ => None,
    }
}

/// The class of an OpenAI-shaped vendor error (OpenAI, Azure, the OpenAI-compatible APIs):
/// by the error's `code`, then its `type`, then the status. None for a status that is no
/// error (1xx to 3xx, or outside HTTP's range).
pub fn openai_error_class(status: u16, body: &str) -> Option<ErrorClass> {
    let by_status = class_of_status(status)?;
    let named = serde_json::from_str::<Value>(body).ok().and_then(|v| {
        let e = v.get("error")?;
        ["code", "type"].iter().find_map(|k| e.get(*k).and_then(Value::as_str).and_then(class_of_openai_code))
    });
    Some(named.unwrap_or(by_status))
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

    #[test]
    fn statuses_and_openai_codes_classify_errors() {
        use ErrorClass::*;
        for (status, class) in [
            (400, Some(InvalidRequest)),
            (401, Some(Authentication)),
            (403, Some(Permission)),
            (404, Some(NotFound)),
            (409, Some(InvalidRequest)),
            (413, Some(InvalidRequest)),
            (429, Some(RateLimited)),
            (500, Some(ServerError)),
            (502, Some(ServerError)),
            (503, Some(Overloaded)),
            (529, Some(Overloaded)),
            (599, Some(ServerError)),
            (200, None),
            (302, None),
            (600, None),
        ] {
            assert_eq!(class_of_status(status), class, "{status}");
            assert_eq!(openai_error_class(status, "<html>"), class, "{status}");
        }
        let err = |code: &str, kind: &str| {
            json!({"error": {"message": "m", "type": kind, "param": null, "code": code}}).to_string()
        };
        let cases = [
            (400, err("context_length_exceeded", "invalid_request_error"), ContextLengthExceeded),
            (400, err("content_policy_violation", "invalid_request_error"), ContentFiltered),
            (400, err("content_filter", ""), ContentFiltered),
            (400, err("invalid_value", "content_filter"), ContentFiltered),
            (400, err("invalid_value", "invalid_request_error"), InvalidRequest),
            (429, err("rate_limit_exceeded", "requests"), RateLimited),
            (401, err("invalid_api_key", "invalid_request_error"), Authentication),
        ];
        for (status, body, class) in cases {
            assert_eq!(openai_error_class(status, &body), Some(class), "{body}");
        }
        // A code that names a class does not make a success an error.
        assert_eq!(openai_error_class(200, &err("content_filter", "")), None);
    }
}
