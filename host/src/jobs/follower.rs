//! Following a job's events: replay from the store, then live until the job ends;
//! `Last-Event-ID` resumes. A Responses job's events go out as typed events
//! (`event: <type>`), ending with the terminal one, made from the record when the run did
//! not store it (a cut stream, a cancel, a restart).

use std::sync::Arc;

use bytes::Bytes;
use serde_json::Value;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::error::{RelayError, openai};
use crate::responses::{events, view};

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
    /// Frame the events as Responses events.
    pub(super) responses: bool,
    /// A terminal Responses event went out.
    pub(super) terminal: bool,
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
                    return Some(self.fault(&store_error(e)));
                }
            };
            if let Some((last, _)) = events.last() {
                self.cursor = *last;
                let mut out = Vec::new();
                for (seq, data) in &events {
                    out.extend_from_slice(format!("id: {seq}\n").as_bytes());
                    if self.responses
                        && let Some(kind) = events::kind_of(data)
                    {
                        self.terminal |= events::is_terminal(&kind);
                        out.extend_from_slice(format!("event: {kind}\n").as_bytes());
                    }
                    out.extend_from_slice(b"data: ");
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
                            return Some(self.fault(&e));
                        }
                        r = rx.changed() => if r.is_err() { self.live = None },
                    }
                }
                None => {
                    // No live sender: the job has ended and everything is stored.
                    self.ended = true;
                    return Some(match self.jobs.store.get(&self.id).await {
                        Ok(Some(r)) if self.responses => {
                            if self.terminal || self.stored_terminal(r.events).await {
                                return None;
                            }
                            let (kind, data) = events::terminal(view::response_of(&r), r.events);
                            Bytes::from(format!("id: {}\nevent: {kind}\ndata: {data}\n\n", r.events + 1))
                        }
                        Ok(Some(r)) if r.status == Status::Succeeded => Bytes::from_static(b"data: [DONE]\n\n"),
                        Ok(Some(r)) => {
                            let err = r.error.unwrap_or(Value::Null);
                            openai::sse_data(&openai::wrap(err))
                        }
                        Ok(None) => self.fault(&RelayError::not_found("the job was purged")),
                        Err(e) => self.fault(&store_error(e)),
                    });
                }
            }
        }
    }

    /// Whether the last of `count` stored events is a terminal Responses event (a reader
    /// that resumed after it has nothing more to get).
    async fn stored_terminal(&self, count: u64) -> bool {
        if count == 0 {
            return false;
        }
        match self.jobs.store.events_after(&self.id, count - 1, 1).await {
            Ok(ev) => ev.first().and_then(|(_, d)| events::kind_of(d)).is_some_and(|k| events::is_terminal(&k)),
            Err(_) => false,
        }
    }

    /// The event that ends a stream with an error: Responses' `error` event, or an error
    /// object as one `data:` event.
    fn fault(&self, e: &RelayError) -> Bytes {
        if !self.responses {
            return e.sse_event();
        }
        let o = openai::object(e);
        let data = serde_json::json!({
            "type": "error", "code": o["code"], "message": o["message"], "param": o["param"],
            "sequence_number": self.cursor,
        });
        Bytes::from(format!("event: error\ndata: {data}\n\n"))
    }
}
