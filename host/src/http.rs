//! Client-facing HTTP helpers: the response body type, JSON and error responses, request ids, bearer checks and the bounded client body read.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;

use crate::config::fmt_secs;
use crate::error::{ErrorKind, RelayError, openai};
use crate::metrics::{BodyPermit, Metrics};
use crate::model::Endpoint;

pub type Body = UnsyncBoxBody<Bytes, Infallible>;

/// The error as OpenAI's API answers it (status, body, `WWW-Authenticate`, `Retry-After`).
pub fn error_response(e: &RelayError, request_id: Option<&str>) -> Response<Body> {
    let mut resp = json_response(openai::status(e), openai::body(e));
    if let Some(id) = request_id {
        set_request_id(resp.headers_mut(), id);
    }
    if e.kind == ErrorKind::Authentication {
        resp.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    if let Some(secs) = e.retry_after {
        resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    resp
}

/// An error in the shape of the client API that was called (Anthropic's for Messages,
/// OpenAI's for every other route).
pub fn api_error_response(endpoint: Endpoint, e: &RelayError, request_id: Option<&str>) -> Response<Body> {
    if !matches!(endpoint, Endpoint::Messages | Endpoint::MessagesCountTokens) {
        return error_response(e, request_id);
    }
    let mut resp = json_response(e.status(), crate::error::anthropic::body(e));
    if let Some(id) = request_id {
        set_request_id(resp.headers_mut(), id);
    }
    if let Some(secs) = e.retry_after {
        resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    resp
}

/// Whether the request carries `Authorization: Bearer <secret>` (compared in constant time).
pub fn bearer_matches(headers: &HeaderMap, secret: &str) -> bool {
    let sent = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    constant_time_eq(sent.as_bytes(), secret.as_bytes())
}

pub fn json_response(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    let mut resp = Response::new(Full::new(body.into()).boxed_unsync());
    *resp.status_mut() = status;
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

/// Compare secrets without leaking where they differ through timing. Both sides are hashed
/// first, so the comparison runs over equal lengths and the secret's length does not leak either.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use sha2::{Digest, Sha256};
    use subtle::ConstantTimeEq;
    Sha256::digest(a).ct_eq(&Sha256::digest(b)).into()
}

pub(crate) fn set_request_id(h: &mut HeaderMap, id: &str) {
    if let Ok(v) = HeaderValue::from_str(id) {
        h.insert("x-request-id", v);
    }
}

/// A client-supplied `x-request-id` is kept when it is short and plain, so callers can
/// trace their own ids through; otherwise the relay makes one.
pub fn request_id(headers: &HeaderMap) -> String {
    if let Some(v) = headers.get("x-request-id").and_then(|v| v.to_str().ok())
        && !v.is_empty()
        && v.len() <= 64
        && v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
    {
        return v.to_string();
    }
    format!("req_{:016x}", rand::random::<u64>())
}

/// The global bound on buffered request bodies.
pub(crate) struct BodyBudget<'a> {
    pub(crate) max: u64,
    pub(crate) metrics: &'a Arc<Metrics>,
}

pub(crate) async fn read_client_body(
    req: Request<Incoming>,
    limit: u64,
    timeout: std::time::Duration,
    budget: BodyBudget<'_>,
) -> Result<(Bytes, BodyPermit), RelayError> {
    let metrics = budget.metrics;
    if req.method() != Method::POST {
        return Err(RelayError::method_not_allowed("use POST"));
    }
    let declared = req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    // Refuse a declared oversize body before reading a byte of it.
    if declared.is_some_and(|len| len > limit) {
        return Err(RelayError::payload_too_large(limit));
    }
    let mut share = BodyPermit::empty(metrics.clone());
    let refused = || {
        metrics.body_budget_refused.inc();
        RelayError::body_budget_exhausted(budget.max)
    };
    // A declared length is taken whole before reading; a chunked body grows its share as it comes.
    if let Some(len) = declared
        && !share.grow(len, budget.max)
    {
        return Err(refused());
    }
    let mut body = Limited::new(req.into_body(), usize::try_from(limit).unwrap_or(usize::MAX));
    let mut buf = bytes::BytesMut::with_capacity(declared.map_or(0, |n| usize::try_from(n).unwrap_or(0)));
    let read = async {
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| {
                if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() {
                    RelayError::payload_too_large(limit)
                } else {
                    RelayError::bad_request(format!("reading the request body failed: {e}"))
                }
            })?;
            if let Ok(data) = frame.into_data() {
                let total = (buf.len() + data.len()) as u64;
                if total > share.bytes() && !share.grow(total - share.bytes(), budget.max) {
                    return Err(refused());
                }
                buf.extend_from_slice(&data);
            }
        }
        Ok(())
    };
    let read = tokio::time::timeout(timeout, read).await;
    match read {
        Err(_) => {
            metrics.timeouts.inc(["client_body"]);
            Err(RelayError::client_timeout(format!("the request body was not received within {}", fmt_secs(timeout))))
        }
        Ok(Err(e)) => Err(e),
        Ok(Ok(())) => Ok((buf.freeze(), share)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_time_eq_is_plain_equality() {
        let secret = b"metrics-token-0123456789abcdef";
        assert!(constant_time_eq(secret, secret));
        assert!(constant_time_eq(b"", b""));
        for other in [
            &b""[..],
            b"metrics-token-0123456789abcde",
            b"metrics-token-0123456789abcdef0",
            b"metrics-token-0123456789abcdeF",
            b"Metrics-token-0123456789abcdef",
            b"xetrics-token-0123456789abcdef",
        ] {
            assert!(!constant_time_eq(other, secret), "{}", String::from_utf8_lossy(other));
            assert!(!constant_time_eq(secret, other), "{}", String::from_utf8_lossy(other));
        }
    }

    #[test]
    fn bearer_matches_needs_the_exact_secret() {
        let mut h = HeaderMap::new();
        assert!(!bearer_matches(&h, "admin-token-0123456789"));
        for (sent, ok) in [
            ("Bearer admin-token-0123456789", true),
            ("Bearer admin-token-012345678", false),
            ("Bearer admin-token-01234567890", false),
            ("Basic admin-token-0123456789", false),
            ("admin-token-0123456789", false),
        ] {
            h.insert(header::AUTHORIZATION, HeaderValue::from_static(sent));
            assert_eq!(bearer_matches(&h, "admin-token-0123456789"), ok, "{sent}");
        }
    }
}
