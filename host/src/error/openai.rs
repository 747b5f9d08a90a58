//! The OpenAI encoder: a `RelayError` in the shape OpenAI's clients parse,
//! `{"error": {"message", "type", "param", "code"}}`, as a body, as the SSE event that
//! ends a stream, and as the error object a job records. Every OpenAI-shaped error the
//! relay makes comes from here.

use bytes::Bytes;
use http::StatusCode;
use serde_json::{Value, json};

use super::{ErrorKind, Rejection, RelayError};

/// The HTTP status of the error on OpenAI's API.
pub fn status(e: &RelayError) -> StatusCode {
    e.kind.status()
}

/// OpenAI's `error.type`.
pub fn error_type(kind: ErrorKind) -> &'static str {
    use ErrorKind as K;
    match kind {
        K::InvalidRequest
        | K::InvalidModel
        | K::UnsupportedEndpoint
        | K::Authentication
        | K::Permission
        | K::ModelNotFound
        | K::NotFound
        | K::MethodNotAllowed
        | K::ClientTimeout
        | K::BodyTooLarge
        | K::AdapterRejected(_) => "invalid_request_error",
        K::UpstreamTimeout(_) | K::UpstreamConnect | K::BadUpstream | K::UpstreamStatus | K::JobTooLarge => {
            "upstream_error"
        }
        K::UpstreamCoolingDown => "rate_limit_error",
        K::AdapterFailed => "adapter_error",
        K::AdapterMissing
        | K::Capacity
        | K::BodyBudget
        | K::Unavailable
        | K::JobStoreUnavailable
        | K::JobStoreFull
        | K::JobStoreFailed
        | K::JobInterrupted
        | K::JobAborted => "service_unavailable",
        K::JobQueueFull | K::JobQuotaExceeded => "rate_limit_error",
        K::Internal => "server_error",
        K::JobCancelled => "cancelled",
    }
}

/// OpenAI's `error.code`.
pub fn code(kind: ErrorKind) -> Option<&'static str> {
    use ErrorKind as K;
    Some(match kind {
        K::InvalidRequest => return None,
        K::InvalidModel => "invalid_model",
        K::UnsupportedEndpoint => "unsupported_endpoint",
        K::Authentication => "invalid_api_key",
        K::Permission => "model_not_allowed",
        K::ModelNotFound => "model_not_found",
        K::NotFound => "not_found",
        K::MethodNotAllowed => "method_not_allowed",
        K::ClientTimeout => "request_timeout",
        K::BodyTooLarge => "request_too_large",
        K::AdapterRejected(Rejection::Invalid) => "invalid_request",
        K::AdapterRejected(Rejection::Unsupported) => "unsupported_parameter",
        K::UpstreamTimeout(_) => "upstream_timeout",
        K::UpstreamConnect => "upstream_unreachable",
        K::UpstreamCoolingDown => "upstream_rate_limited",
        K::BadUpstream => "bad_upstream_response",
        K::UpstreamStatus => "upstream_error",
        K::AdapterFailed => "adapter_error",
        K::AdapterMissing | K::Capacity | K::Unavailable => "service_unavailable",
        K::BodyBudget => "body_budget_exhausted",
        K::Internal => "internal_error",
        K::JobQueueFull => "job_queue_full",
        K::JobQuotaExceeded => "job_quota_exceeded",
        K::JobStoreUnavailable => "job_store_unavailable",
        K::JobStoreFull => "job_store_full",
        K::JobStoreFailed => "job_store_failed",
        K::JobInterrupted => "job_interrupted",
        K::JobAborted => "job_aborted",
        K::JobTooLarge => "job_too_large",
        K::JobCancelled => "job_cancelled",
    })
}

/// The inner error object, `{"message", "type", "param", "code"}`: what a job records.
pub fn object(e: &RelayError) -> Value {
    json!({
        "message": e.message,
        "type": error_type(e.kind),
        "param": e.param,
        "code": code(e.kind),
    })
}

/// `{"error": {...}}` with `error` as given (an object recorded earlier, e.g. a job's).
pub fn wrap(error: Value) -> Bytes {
    Bytes::from(json!({ "error": error }).to_string())
}

/// The response body: `{"error": {"message", "type", "param", "code"}}`.
pub fn body(e: &RelayError) -> Bytes {
    wrap(object(e))
}

/// The body as one SSE event, for failures after a stream has started.
pub fn sse_event(e: &RelayError) -> Bytes {
    sse_data(&body(e))
}

/// `data: <json>\n\n`.
pub fn sse_data(json: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(json.len() + 8);
    out.extend_from_slice(b"data: ");
    out.extend_from_slice(json);
    out.extend_from_slice(b"\n\n");
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Stage;

    #[test]
    fn body_is_openai_shaped() {
        let e = RelayError::model_not_found("gpt-x");
        let v: Value = serde_json::from_slice(&body(&e)).unwrap();
        assert_eq!(v["error"]["code"], "model_not_found");
        assert_eq!(v["error"]["type"], "invalid_request_error");
        assert_eq!(v["error"]["param"], "model");
        assert!(v["error"]["message"].as_str().unwrap().contains("gpt-x"));
        assert_eq!(status(&e), StatusCode::NOT_FOUND);
        let v: Value = serde_json::from_slice(&body(&RelayError::bad_request("x"))).unwrap();
        assert_eq!((v["error"]["code"].is_null(), v["error"]["param"].is_null()), (true, true));
    }

    #[test]
    fn sse_event_is_one_data_line() {
        let e = RelayError::bad_upstream("cut");
        let s = String::from_utf8(sse_event(&e).to_vec()).unwrap();
        assert!(s.starts_with("data: {"));
        assert!(s.ends_with("}\n\n"));
        assert_eq!(s.matches('\n').count(), 2);
    }

    /// The wire contract clients and the end-to-end tests rely on: status, type and code
    /// of every kind the relay answers.
    #[test]
    fn every_kind_keeps_its_status_type_and_code() {
        use ErrorKind as K;
        use Stage as S;
        let table: &[(ErrorKind, u16, &str, Option<&str>)] = &[
            (K::InvalidRequest, 400, "invalid_request_error", None),
            (K::InvalidModel, 400, "invalid_request_error", Some("invalid_model")),
            (K::UnsupportedEndpoint, 400, "invalid_request_error", Some("unsupported_endpoint")),
            (K::Authentication, 401, "invalid_request_error", Some("invalid_api_key")),
            (K::Permission, 403, "invalid_request_error", Some("model_not_allowed")),
            (K::ModelNotFound, 404, "invalid_request_error", Some("model_not_found")),
            (K::NotFound, 404, "invalid_request_error", Some("not_found")),
            (K::MethodNotAllowed, 405, "invalid_request_error", Some("method_not_allowed")),
            (K::ClientTimeout, 408, "invalid_request_error", Some("request_timeout")),
            (K::BodyTooLarge, 413, "invalid_request_error", Some("request_too_large")),
            (K::AdapterRejected(Rejection::Invalid), 400, "invalid_request_error", Some("invalid_request")),
            (K::AdapterRejected(Rejection::Unsupported), 400, "invalid_request_error", Some("unsupported_parameter")),
            (K::UpstreamTimeout(S::Connect), 504, "upstream_error", Some("upstream_timeout")),
            (K::UpstreamTimeout(S::Total), 504, "upstream_error", Some("upstream_timeout")),
            (K::UpstreamConnect, 502, "upstream_error", Some("upstream_unreachable")),
            (K::BadUpstream, 502, "upstream_error", Some("bad_upstream_response")),
            (K::AdapterFailed, 502, "adapter_error", Some("adapter_error")),
            (K::AdapterMissing, 503, "service_unavailable", Some("service_unavailable")),
            (K::Capacity, 503, "service_unavailable", Some("service_unavailable")),
            (K::BodyBudget, 503, "service_unavailable", Some("body_budget_exhausted")),
            (K::Unavailable, 503, "service_unavailable", Some("service_unavailable")),
            (K::Internal, 500, "server_error", Some("internal_error")),
            (K::JobQueueFull, 429, "rate_limit_error", Some("job_queue_full")),
            (K::JobQuotaExceeded, 429, "rate_limit_error", Some("job_quota_exceeded")),
            (K::JobStoreUnavailable, 503, "service_unavailable", Some("job_store_unavailable")),
            (K::JobStoreFull, 507, "service_unavailable", Some("job_store_full")),
            (K::JobStoreFailed, 503, "service_unavailable", Some("job_store_failed")),
            (K::JobInterrupted, 503, "service_unavailable", Some("job_interrupted")),
            (K::JobAborted, 503, "service_unavailable", Some("job_aborted")),
            (K::JobTooLarge, 502, "upstream_error", Some("job_too_large")),
            (K::JobCancelled, 499, "cancelled", Some("job_cancelled")),
        ];
        for &(kind, st, ty, c) in table {
            assert_eq!((kind.status().as_u16(), error_type(kind), code(kind)), (st, ty, c), "{kind:?}");
        }
    }
}
