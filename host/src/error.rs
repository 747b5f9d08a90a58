//! Every failure the relay can answer, in one type, mapped to an HTTP status and the
//! OpenAI error JSON in exactly one place.

use bytes::Bytes;
use http::StatusCode;
use serde_json::json;

/// Whose fault a failure is: it decides the status class, the log level and whether a
/// request may move on to the next channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The client sent something wrong (4xx).
    Client,
    /// The vendor or the path to it failed (5xx, or the vendor's own 4xx).
    Upstream,
    /// An adapter failed: trap, limit or adapter error.
    Plugin,
    /// The relay itself (missing adapter, shutting down).
    Internal,
}

/// An error on its way to the client.
#[derive(Debug, Clone)]
pub struct RelayError {
    pub status: StatusCode,
    pub source: Source,
    /// OpenAI `error.type`.
    pub kind: &'static str,
    /// OpenAI `error.code`.
    pub code: Option<&'static str>,
    pub param: Option<String>,
    pub message: String,
    /// Another channel may succeed where this one failed (only before the first byte).
    pub retryable: bool,
    /// Seconds the client should wait before retrying (`Retry-After`), for load refusals.
    pub retry_after: Option<u32>,
}

impl RelayError {
    fn new(status: StatusCode, source: Source, kind: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            source,
            kind,
            code: None,
            param: None,
            message: message.into(),
            retryable: false,
            retry_after: None,
        }
    }

    pub fn with_code(mut self, code: &'static str) -> Self {
        self.code = Some(code);
        self
    }

    pub fn with_param(mut self, param: impl Into<String>) -> Self {
        self.param = Some(param.into());
        self
    }

    pub fn retryable(mut self) -> Self {
        self.retryable = true;
        self
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, Source::Client, "invalid_request_error", message)
            .with_code("invalid_api_key")
    }

    pub fn model_forbidden(model: &str, token: &str) -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            Source::Client,
            "invalid_request_error",
            format!("the token '{token}' is not allowed to use the model '{model}'"),
        )
        .with_code("model_not_allowed")
        .with_param("model")
    }

    pub fn model_not_found(model: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            Source::Client,
            "invalid_request_error",
            format!("The model '{model}' does not exist or no channel serves it"),
        )
        .with_code("model_not_found")
        .with_param("model")
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, Source::Client, "invalid_request_error", message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, Source::Client, "invalid_request_error", message).with_code("not_found")
    }

    pub fn method_not_allowed(message: impl Into<String>) -> Self {
        Self::new(StatusCode::METHOD_NOT_ALLOWED, Source::Client, "invalid_request_error", message)
            .with_code("method_not_allowed")
    }

    pub fn payload_too_large(limit: u64) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            Source::Client,
            "invalid_request_error",
            format!("request body is larger than the limit of {limit} bytes"),
        )
        .with_code("request_too_large")
    }

    pub fn client_timeout(message: impl Into<String>) -> Self {
        Self::new(StatusCode::REQUEST_TIMEOUT, Source::Client, "invalid_request_error", message)
            .with_code("request_timeout")
    }

    /// A bound on the way to the vendor expired before any byte reached the client.
    pub fn upstream_timeout(message: impl Into<String>) -> Self {
        Self::new(StatusCode::GATEWAY_TIMEOUT, Source::Upstream, "upstream_error", message)
            .with_code("upstream_timeout")
    }

    /// The vendor could not be reached (refused, reset, DNS, TLS): another channel may do.
    pub fn upstream_unreachable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_GATEWAY, Source::Upstream, "upstream_error", message)
            .with_code("upstream_unreachable")
            .retryable()
    }

    /// The vendor answered something unusable (not JSON, too large, cut short).
    pub fn bad_upstream(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_GATEWAY, Source::Upstream, "upstream_error", message)
            .with_code("bad_upstream_response")
    }

    pub fn plugin(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_GATEWAY, Source::Plugin, "adapter_error", message).with_code("adapter_error")
    }

    pub fn plugin_rejected(message: impl Into<String>, code: &'static str) -> Self {
        Self::new(StatusCode::BAD_REQUEST, Source::Client, "invalid_request_error", message).with_code(code)
    }

    /// The in-flight body budget (`limits.max_inflight_body_bytes`) is spent: a load refusal
    /// the client may retry.
    pub fn body_budget_exhausted(limit: u64) -> Self {
        let mut e = Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            Source::Internal,
            "service_unavailable",
            format!(
                "the relay is holding its maximum of {limit} bytes of request bodies (limits.max_inflight_body_bytes); retry shortly"
            ),
        )
        .with_code("body_budget_exhausted");
        e.retry_after = Some(1);
        e
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, Source::Internal, "service_unavailable", message)
            .with_code("service_unavailable")
    }

    /// The OpenAI error object: `{"error": {"message", "type", "param", "code"}}`.
    pub fn body(&self) -> Bytes {
        let v = json!({
            "error": {
                "message": self.message,
                "type": self.kind,
                "param": self.param,
                "code": self.code,
            }
        });
        Bytes::from(v.to_string())
    }

    /// The same object as one SSE event, for failures after a stream has started.
    pub fn sse_event(&self) -> Bytes {
        let mut out = Vec::with_capacity(self.message.len() + 128);
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(&self.body());
        out.extend_from_slice(b"\n\n");
        Bytes::from(out)
    }
}

impl std::fmt::Display for RelayError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.message, self.status.as_u16())
    }
}

impl std::error::Error for RelayError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_is_openai_shaped() {
        let e = RelayError::model_not_found("gpt-x");
        let v: serde_json::Value = serde_json::from_slice(&e.body()).unwrap();
        assert_eq!(v["error"]["code"], "model_not_found");
        assert_eq!(v["error"]["type"], "invalid_request_error");
        assert_eq!(v["error"]["param"], "model");
        assert!(v["error"]["message"].as_str().unwrap().contains("gpt-x"));
        assert_eq!(e.status, StatusCode::NOT_FOUND);
    }

    #[test]
    fn sse_event_is_one_data_line() {
        let e = RelayError::bad_upstream("cut");
        let s = String::from_utf8(e.sse_event().to_vec()).unwrap();
        assert!(s.starts_with("data: {"));
        assert!(s.ends_with("}\n\n"));
        assert_eq!(s.matches('\n').count(), 2);
    }
}
