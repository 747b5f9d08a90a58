//! The errors jobs answer or end with, in OpenAI's error shape.

use std::time::Duration;

use http::{HeaderValue, Response, StatusCode, header};
use serde_json::{Value, json};

use crate::error::RelayError;
use crate::http::{Body, json_response};

use super::{Cause, StoreError};

/// The inner OpenAI error object of a relay error.
pub(super) fn error_object(e: &RelayError) -> Value {
    serde_json::from_slice::<Value>(&e.body()).map(|mut v| v["error"].take()).unwrap_or(Value::Null)
}

/// A store failure as the client sees it: the cause in a phrase, no path or internals (the
/// store logged those).
pub(super) fn store_error(e: StoreError) -> RelayError {
    let mut r = RelayError::unavailable(format!(
        "async jobs are unavailable: {}; synchronous requests are not affected, retry later",
        e.0.phrase()
    ))
    .with_code("job_store_unavailable");
    if e.0 == Cause::OverBudget {
        r.status = StatusCode::INSUFFICIENT_STORAGE;
        r.code = Some("job_store_full");
    }
    r
}

/// 429 with OpenAI's rate-limit error shape: the queue is full, try again later.
pub(super) fn queue_full(max: usize) -> Response<Body> {
    let body = json!({"error": {
        "message": format!("too many async jobs are waiting (jobs.max_queued = {max}); retry later"),
        "type": "rate_limit_error", "param": null, "code": "job_queue_full",
    }});
    let mut resp = json_response(StatusCode::TOO_MANY_REQUESTS, body.to_string());
    resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    resp
}

/// 429: the key holds `jobs.max_per_owner` jobs; a slot frees when one of them is purged.
pub(super) fn owner_quota(max: u64, sweep: Duration) -> Response<Body> {
    let body = json!({"error": {
        "message": format!("this key holds the most async jobs it may (jobs.max_per_owner = {max}); finished jobs free their place when they are purged after jobs.retention"),
        "type": "rate_limit_error", "param": null, "code": "job_quota_exceeded",
    }});
    let mut resp = json_response(StatusCode::TOO_MANY_REQUESTS, body.to_string());
    resp.headers_mut().insert(header::RETRY_AFTER, retry_after(sweep));
    resp
}

/// `Retry-After` in whole seconds, at least 1: the next purge is the earliest a place frees.
pub(super) fn retry_after(d: Duration) -> HeaderValue {
    HeaderValue::from(d.as_secs().max(1))
}

/// The error of a job the relay stopped while shutting down (`limits.shutdown_grace` over),
/// `was` queued or running; the same code a job left unfinished by a crash gets at the next
/// start.
pub(super) fn interrupted_error(was: &str) -> Value {
    let e = RelayError::unavailable(format!(
        "the relay shut down while this job was {was} (limits.shutdown_grace passed); it did not finish and its output may be partial; submit it again"
    ))
    .with_code("job_interrupted");
    error_object(&e)
}

/// The error of a job whose run ended inside the relay (a panic, a cancelled task).
pub(super) fn aborted_error() -> Value {
    let e = RelayError::unavailable("the job stopped because of an internal error in the relay; submit it again")
        .with_code("job_aborted");
    error_object(&e)
}
