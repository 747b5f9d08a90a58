//! Async mode: `Prefer: respond-async` turns a relay request into a job the relay runs
//! itself, through the same `Relay::serve_body` as a synchronous request, while the client
//! polls its status, follows its output as resumable SSE, or cancels it.
//!
//! Ownership: a job outlives the HTTP request that created it, so it cannot live in that
//! request's future. `Jobs` is the one owner of every job task: each running job's
//! `JoinHandle` and stop handle sit in a map and leave it when the job ends. There is one way
//! to stop a job, `Jobs::stop` (DELETE, and shutdown for all of them), and one sweeper task,
//! owned here too, ended by `Jobs::shutdown`.
//!
//! - `api`: the HTTP routes (submit, get, list, cancel, events) and their answers.
//! - `manager`: `Jobs`: admission, the queue, run slots, stop, the sweeper, drain/idle/shutdown.
//! - `runner`: one job's run: the relay call, storing its output, recording its end.
//! - `follower`: one reader of a job's events: replay, then live, resumable.
//! - `error`: the errors jobs answer or end with.
//! - `assemble`: the final `chat.completion` from the streamed chunks.
//! - `store`: the redb store of records and events.

mod api;
mod assemble;
mod error;
mod follower;
mod manager;
mod runner;
mod store;

use sha2::{Digest, Sha256};

pub use api::wants_async;
pub(crate) use error::store_error;
pub use manager::Jobs;
pub(crate) use manager::Pending;
pub use store::{Cause, Change, Record, Status, Store, StoreError, Summary};

/// The owner of a job: a hash of the client key, so a job stays with its key across
/// restarts and renames while the key itself is never stored.
pub(crate) fn owner_of(key: &str) -> String {
    let digest = Sha256::digest(key.as_bytes());
    digest[..16].iter().map(|b| format!("{b:02x}")).collect()
}

pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}
