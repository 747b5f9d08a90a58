//! The Anthropic encoder: a `RelayError` in the shape Anthropic's clients parse,
//! `{"type": "error", "error": {"type", "message"}}`, as a body and as the `event: error`
//! that ends a Messages stream. Every Anthropic-shaped error the relay makes comes from
//! here; the status is the kind's, as for every client API.

use bytes::Bytes;
use http::StatusCode;
use serde::Serialize;

use super::{ErrorKind, RelayError};

/// Anthropic's `error.type` for a kind.
pub fn error_type(kind: ErrorKind) -> &'static str {
    use ErrorKind as K;
    match kind {
        K::InvalidRequest
        | K::InvalidModel
        | K::UnsupportedEndpoint
        | K::MethodNotAllowed
        | K::ClientTimeout
        | K::AdapterRejected(_)
        | K::JobTooLarge
        | K::JobCancelled => "invalid_request_error",
        K::Authentication => "authentication_error",
        K::Permission => "permission_error",
        K::ModelNotFound | K::NotFound => "not_found_error",
        K::BodyTooLarge => "request_too_large",
        K::JobQueueFull | K::JobQuotaExceeded | K::UpstreamCoolingDown => "rate_limit_error",
        K::Capacity | K::BodyBudget | K::Unavailable | K::AdapterMissing => "overloaded_error",
        K::UpstreamTimeout(_)
        | K::UpstreamConnect
        | K::BadUpstream
        | K::UpstreamStatus
        | K::AdapterFailed
        | K::Internal
        | K::JobStoreUnavailable
        | K::JobStoreFull
        | K::JobStoreFailed
        | K::JobInterrupted
        | K::JobAborted => "api_error",
    }
}

/// Anthropic's `error.type` for a vendor error's status (a bridged channel's vendor answered
/// it in another API's shape: the status is what both agree on).
pub fn type_for_status(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 | 422 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        503 | 529 => "overloaded_error",
        _ => "api_error",
    }
}

#[derive(Serialize)]
struct Envelope<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    error: Inner<'a>,
}

#[derive(Serialize)]
struct Inner<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    message: &'a str,
}

fn envelope(kind: &'static str, message: &str) -> Bytes {
    let e = Envelope { kind: "error", error: Inner { kind, message } };
    Bytes::from(serde_json::to_vec(&e).unwrap_or_default())
}

/// The response body: `{"type": "error", "error": {"type", "message"}}`.
pub fn body(e: &RelayError) -> Bytes {
    envelope(error_type(e.kind), &e.message)
}

/// The body for a vendor error of `status` with `message`.
pub fn body_for_status(status: StatusCode, message: &str) -> Bytes {
    envelope(type_for_status(status), message)
}

/// The error as the `event: error` that ends a Messages stream.
pub fn sse_event(e: &RelayError) -> Bytes {
    let json = body(e);
    let mut out = Vec::with_capacity(json.len() + 24);
    out.extend_from_slice(b"event: error\ndata: ");
    out.extend_from_slice(&json);
    out.extend_from_slice(b"\n\n");
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Stage;

    #[test]
    fn body_is_anthropic_shaped_with_the_kinds_status() {
        let e = RelayError::bad_request("max_tokens: Field required");
        let v: serde_json::Value = serde_json::from_slice(&body(&e)).unwrap();
        assert_eq!(v["type"], "error");
        assert_eq!(v["error"]["type"], "invalid_request_error");
        assert_eq!(v["error"]["message"], "max_tokens: Field required");
        let table: &[(ErrorKind, u16, &str)] = &[
            (ErrorKind::InvalidRequest, 400, "invalid_request_error"),
            (ErrorKind::Authentication, 401, "authentication_error"),
            (ErrorKind::Permission, 403, "permission_error"),
            (ErrorKind::ModelNotFound, 404, "not_found_error"),
            (ErrorKind::BodyTooLarge, 413, "request_too_large"),
            (ErrorKind::JobQueueFull, 429, "rate_limit_error"),
            (ErrorKind::UpstreamTimeout(Stage::ResponseHeader), 504, "api_error"),
            (ErrorKind::BadUpstream, 502, "api_error"),
            (ErrorKind::Unavailable, 503, "overloaded_error"),
            (ErrorKind::Internal, 500, "api_error"),
        ];
        for &(kind, status, ty) in table {
            assert_eq!((kind.status().as_u16(), error_type(kind)), (status, ty), "{kind:?}");
        }
        for k in ErrorKind::ALL {
            assert!(!error_type(k).is_empty());
        }
    }

    #[test]
    fn sse_event_is_one_named_event() {
        let s = String::from_utf8(sse_event(&RelayError::bad_upstream("cut")).to_vec()).unwrap();
        assert!(s.starts_with("event: error\ndata: {\"type\":\"error\""), "{s}");
        assert!(s.ends_with("}\n\n"));
        assert_eq!(s.matches('\n').count(), 3);
        assert_eq!(type_for_status(StatusCode::TOO_MANY_REQUESTS), "rate_limit_error");
    }
}
