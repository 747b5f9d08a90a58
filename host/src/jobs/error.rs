//! The errors jobs answer or end with, made by the error model and encoded by its OpenAI
//! encoder (`error::openai`), so a job's recorded error is the object a synchronous
//! request would have answered.

use std::time::Duration;

use http::Response;
use serde_json::Value;

use crate::error::{ErrorKind, RelayError, openai};
use crate::http::{Body, error_response};

use super::{Cause, StoreError};

/// The inner OpenAI error object of a relay error: what a job records.
pub(super) fn error_object(e: &RelayError) -> Value {
    openai::object(e)
}

/// A store failure as the client sees it: the cause in a phrase, no path or internals (the
/// store logged those).
pub(crate) fn store_error(e: StoreError) -> RelayError {
    let kind = if e.0 == Cause::OverBudget { ErrorKind::JobStoreFull } else { ErrorKind::JobStoreUnavailable };
    RelayError::new(
        kind,
        format!("async jobs are unavailable: {}; synchronous requests are not affected, retry later", e.0.phrase()),
    )
}

/// 429 with OpenAI's rate-limit error shape: the queue is full, try again later.
pub(super) fn queue_full(max: usize) -> Response<Body> {
    let e = RelayError::new(
        ErrorKind::JobQueueFull,
        format!("too many async jobs are waiting (jobs.max_queued = {max}); retry later"),
    )
    .with_retry_after(1);
    error_response(&e, None)
}

/// 429: the key holds `jobs.max_per_owner` jobs; a slot frees when one of them is purged.
pub(super) fn owner_quota(max: u64, sweep: Duration) -> Response<Body> {
    let e = RelayError::new(
        ErrorKind::JobQuotaExceeded,
        format!("this key holds the most async jobs it may (jobs.max_per_owner = {max}); finished jobs free their place when they are purged after jobs.retention"),
    )
    .with_retry_after(retry_after_secs(sweep));
    error_response(&e, None)
}

/// `Retry-After` in whole seconds, at least 1: the next purge is the earliest a place frees.
pub(super) fn retry_after_secs(d: Duration) -> u32 {
    u32::try_from(d.as_secs()).unwrap_or(u32::MAX).max(1)
}

/// The error of a job the relay stopped while shutting down (`limits.shutdown_grace` over),
/// `was` queued or running; the same code a job left unfinished by a crash gets at the next
/// start.
pub(super) fn interrupted_error(was: &str) -> Value {
    let e = RelayError::new(
        ErrorKind::JobInterrupted,
        format!(
            "the relay shut down while this job was {was} (limits.shutdown_grace passed); it did not finish and its output may be partial; submit it again"
        ),
    );
    error_object(&e)
}

/// The error of a job whose run ended inside the relay (a panic, a cancelled task).
pub(super) fn aborted_error() -> Value {
    let e = RelayError::new(
        ErrorKind::JobAborted,
        "the job stopped because of an internal error in the relay; submit it again",
    );
    error_object(&e)
}
