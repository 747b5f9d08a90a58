//! The persisted job types: the record, its summary, its status and changes, and what a job costs.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::error::{ErrorKind, RelayError, openai};

/// Store bytes are an estimate from what the relay wrote: per job, its record and index
/// entries; per event, redb's key and page overhead; output bytes count twice, once as
/// events and once in the assembled result.
pub const JOB_OVERHEAD: u64 = 1024;
pub const EVENT_OVERHEAD: u64 = 32;

/// What a job costs in the store, by the estimate above.
pub fn job_cost(bytes: u64, events: u64) -> u64 {
    JOB_OVERHEAD + 2 * bytes + EVENT_OVERHEAD * events
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Queued,
    Running,
    Succeeded,
    /// Also what a record without a status reads as: nothing to resume.
    #[default]
    Failed,
    Cancelled,
}

impl Status {
    /// Position in `metrics::JOB_STATUSES`.
    pub fn index(self) -> usize {
        self as usize
    }

    pub fn as_str(self) -> &'static str {
        crate::metrics::JOB_STATUSES[self.index()]
    }

    pub fn finished(self) -> bool {
        matches!(self, Status::Succeeded | Status::Failed | Status::Cancelled)
    }
}

/// A stored job. `#[serde(default)]`: a record written by an older or newer release (a field
/// missing or added) still reads.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct Record {
    pub id: String,
    /// Hash of the client key that created the job.
    pub owner: String,
    /// The token's name, for logs.
    pub token: String,
    pub endpoint: String,
    pub model: String,
    pub request_id: String,
    pub status: Status,
    pub created_ms: u64,
    pub started_ms: Option<u64>,
    pub finished_ms: Option<u64>,
    pub events: u64,
    pub bytes: u64,
    pub completion_tokens: u64,
    pub last_event_ms: Option<u64>,
    pub result: Option<Value>,
    pub error: Option<Value>,
    /// A stored Responses answer that never was a job (`POST /v1/responses` in the
    /// foreground): not listed in `/v1/jobs`, not counted in the job gauges or the owner's
    /// job quota; bounded by retention and `max_store_bytes` like every record.
    pub foreground: bool,
    /// Bytes stored besides the output (a Responses request's input and its response
    /// skeleton), counted in the store's size.
    pub stored_bytes: u64,
    /// A Responses request's own input items (`GET /v1/responses/{id}/input_items`, and the
    /// conversation a later `previous_response_id` continues).
    pub input: Option<Value>,
    /// The stored response this one continued.
    pub previous: Option<String>,
    /// A background response's Response object as created (status `queued`): what `GET`
    /// answers until the job has a result.
    pub response: Option<Value>,
}

/// A job without its result and error: what lists, counts and the purge read. Decoding
/// one skips over the result without building it.
#[derive(Debug, Clone, Deserialize, Default, PartialEq)]
#[serde(default)]
pub struct Summary {
    pub id: String,
    pub owner: String,
    pub endpoint: String,
    pub model: String,
    pub request_id: String,
    pub status: Status,
    pub created_ms: u64,
    pub started_ms: Option<u64>,
    pub finished_ms: Option<u64>,
    pub events: u64,
    pub bytes: u64,
    pub completion_tokens: u64,
    pub last_event_ms: Option<u64>,
    pub foreground: bool,
    pub stored_bytes: u64,
}

impl Summary {
    /// What the record costs in the store, by the estimate above.
    pub fn cost(&self) -> u64 {
        job_cost(self.bytes, self.events) + self.stored_bytes
    }

    /// The job as lists show it: no result, no error (`GET /v1/jobs/{id}` has them).
    pub fn to_json(&self, now_ms: u64) -> Value {
        let elapsed = self.started_ms.map_or(0, |s| self.finished_ms.unwrap_or(now_ms).saturating_sub(s));
        json!({
            "id": self.id,
            "object": "relay.job",
            "endpoint": self.endpoint,
            "model": self.model,
            "status": self.status,
            "created_at": self.created_ms / 1000,
            "started_at": self.started_ms.map(|t| t / 1000),
            "finished_at": self.finished_ms.map(|t| t / 1000),
            "request_id": self.request_id,
            "progress": {
                "events": self.events,
                "completion_tokens": self.completion_tokens,
                "elapsed_seconds": elapsed as f64 / 1000.0,
                "last_event_at": self.last_event_ms.map(|t| t as f64 / 1000.0),
            },
        })
    }
}

impl Record {
    pub fn summary(&self) -> Summary {
        Summary {
            id: self.id.clone(),
            owner: self.owner.clone(),
            endpoint: self.endpoint.clone(),
            model: self.model.clone(),
            request_id: self.request_id.clone(),
            status: self.status,
            created_ms: self.created_ms,
            started_ms: self.started_ms,
            finished_ms: self.finished_ms,
            events: self.events,
            bytes: self.bytes,
            completion_tokens: self.completion_tokens,
            last_event_ms: self.last_event_ms,
            foreground: self.foreground,
            stored_bytes: self.stored_bytes,
        }
    }

    /// The job as clients see it.
    pub fn to_json(&self, now_ms: u64) -> Value {
        let mut v = self.summary().to_json(now_ms);
        if let Some(r) = &self.result {
            v["result"] = r.clone();
        }
        if let Some(e) = &self.error {
            v["error"] = e.clone();
        }
        v
    }
}

/// A change to a stored record: data, not a closure, so a change that failed while the store
/// was down can be written again after it reopens.
#[derive(Debug, Clone)]
pub enum Change {
    Start { at_ms: u64 },
    Progress { events: u64, bytes: u64, completion_tokens: u64, last_event_ms: u64 },
    End { status: Status, at_ms: u64, result: Option<Value>, error: Option<Value> },
}

impl Change {
    pub(super) fn apply(&self, r: &mut Record) {
        match self {
            Change::Start { at_ms } => {
                r.status = Status::Running;
                r.started_ms = Some(*at_ms);
            }
            Change::Progress { events, bytes, completion_tokens, last_event_ms } => {
                r.events = *events;
                r.bytes = *bytes;
                r.completion_tokens = *completion_tokens;
                r.last_event_ms = Some(*last_event_ms);
            }
            Change::End { status, at_ms, result, error } => {
                r.status = *status;
                r.finished_ms = Some(*at_ms);
                r.result.clone_from(result);
                r.error.clone_from(error);
            }
        }
    }

    /// The change as kept for a later replay: a result is not kept (it may be megabytes),
    /// so a job whose success could not be written is recorded as failed, saying why.
    pub(super) fn for_replay(&self) -> Change {
        match self {
            Change::End { status: Status::Succeeded, at_ms, .. } => Change::End {
                status: Status::Failed,
                at_ms: *at_ms,
                result: None,
                error: Some(openai::object(&RelayError::new(
                    ErrorKind::JobStoreFailed,
                    "the job finished, but the job store failed while saving its result",
                ))),
            },
            c => c.clone(),
        }
    }
}
