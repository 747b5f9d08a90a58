//! Following a job's events: replay from the store, then live until the job ends;
//! `Last-Event-ID` resumes.

use std::sync::Arc;

use bytes::Bytes;
use serde_json::Value;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::error::{RelayError, openai};

use super::Status;
use super::error::store_error;
use super::manager::Jobs;

/// Events sent in one SSE frame when replaying; bounds one store read.
const REPLAY_BATCH: usize = 256;

/// One reader of a job's events.
pub(super) struct Follow {
    pub(super) jobs: Arc<Jobs>,
    pub(super) id: String,
    pub(super) cursor: u64,
    pub(super) live: Option<watch::Receiver<u64>>,
    pub(super) shutdown: CancellationToken,
    pub(super) ended: bool,
}

impl Follow {
    pub(super) async fn next(&mut self) -> Option<Bytes> {
        loop {
            if self.ended {
                return None;
            }
            let events = match self.jobs.store.events_after(&self.id, self.cursor, REPLAY_BATCH).await {
                Ok(e) => e,
                Err(e) => {
                    self.ended = true;
                    return Some(store_error(e).sse_event());
                }
            };
            if let Some((last, _)) = events.last() {
                self.cursor = *last;
                let mut out = Vec::new();
                for (seq, data) in &events {
                    out.extend_from_slice(format!("id: {seq}\ndata: ").as_bytes());
                    out.extend_from_slice(data.as_bytes());
                    out.extend_from_slice(b"\n\n");
                }
                return Some(Bytes::from(out));
            }
            match self.live.as_mut() {
                Some(rx) => {
                    tokio::select! {
                        biased;
                        _ = self.shutdown.cancelled() => {
                            self.ended = true;
                            let e = RelayError::unavailable("the relay is shutting down; reconnect with Last-Event-ID to resume");
                            return Some(e.sse_event());
                        }
                        r = rx.changed() => if r.is_err() { self.live = None },
                    }
                }
                None => {
                    // No live sender: the job has ended and everything is stored.
                    self.ended = true;
                    return Some(match self.jobs.store.get(&self.id).await {
                        Ok(Some(r)) if r.status == Status::Succeeded => Bytes::from_static(b"data: [DONE]\n\n"),
                        Ok(Some(r)) => {
                            let err = r.error.unwrap_or(Value::Null);
                            openai::sse_data(&openai::wrap(err))
                        }
                        Ok(None) => RelayError::not_found("the job was purged").sse_event(),
                        Err(e) => store_error(e).sse_event(),
                    });
                }
            }
        }
    }
}
