//! Running one job: the relay call, storing its output as it comes, recording its end,
//! and the guard that records it whatever ends the task.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures_util::FutureExt;
use serde_json::Value;
use tokio::sync::oneshot;

use crate::access::RequestLog;
use crate::answer::{Answer, End};
use crate::error::{ErrorKind, Fault, RelayError};
use crate::model::Endpoint;
use crate::responses::events;
use crate::stream::Translation;

use super::assemble::Assembler;
use super::error::{aborted_error, error_object, interrupted_error, store_error};
use super::manager::{Jobs, Pending, Stop};
use super::{Cause, Change, Status, StoreError, now_ms, owner_of, store};

/// How a job ended.
pub(super) enum JobEnd {
    Succeeded(Value),
    Failed(Value),
    Cancelled,
}

impl Jobs {
    /// One job, from its run slot to its recorded end. Dropping `execute` on a stop drops
    /// the vendor call with it. A panic inside the job fails it; a panic or cancellation
    /// anywhere else is caught by the guard: either way the record ends and the slot frees.
    pub(super) async fn run(self: Arc<Self>, job: Pending, mut stop: oneshot::Receiver<Stop>) {
        let mut guard = RunGuard { jobs: self.clone(), id: job.id.clone(), done: false };
        self.moved(Some(Status::Queued), Some(Status::Running));
        if let Err(e) = self.store.change(&job.id, Change::Start { at_ms: now_ms() }, true).await {
            tracing::error!(job = %job.id, error = %e, "recording a job's start failed");
        }
        let end = tokio::select! {
            o = AssertUnwindSafe(self.execute(&job)).catch_unwind() => o.unwrap_or_else(|panic| {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                tracing::error!(job = %job.id, panic = %what, "a job panicked; recorded as failed");
                // The run's record skips this count while unwinding (see `access`): a job's
                // panic is counted here, as a server edge counts a request's.
                self.metrics.errors.inc(["jobs", Fault::Relay.name(), ErrorKind::Internal.name()]);
                JobEnd::Failed(aborted_error())
            }),
            s = &mut stop => match s {
                Ok(Stop::Cancelled) => JobEnd::Cancelled,
                // A dropped stop handle means shutdown took the job out of the map.
                Ok(Stop::Shutdown) | Err(_) => JobEnd::Failed(interrupted_error("running")),
            },
        };
        self.record_end(&job.id, Status::Running, end).await;
        guard.done = true;
        self.release(&job.id);
    }

    /// Write a job's end (durably) and move the status gauges.
    pub(super) async fn record_end(&self, id: &str, from: Status, end: JobEnd) {
        let finished = now_ms();
        let (status, result, error) = match end {
            JobEnd::Succeeded(v) => (Status::Succeeded, Some(v), None),
            JobEnd::Failed(e) => (Status::Failed, None, Some(e)),
            JobEnd::Cancelled => (
                Status::Cancelled,
                None,
                Some(error_object(&RelayError::new(ErrorKind::JobCancelled, "the job was cancelled"))),
            ),
        };
        let change = Change::End { status, at_ms: finished, result, error };
        if let Err(e) = self.store.change(id, change, true).await {
            tracing::error!(job = %id, error = %e, "recording the end of a job failed; it is written when the store is back");
        }
        self.moved(Some(from), Some(status));
        tracing::info!(job = %id, status = status.as_str(), "job ended");
    }

    /// Run the request through the relay and store its output as it comes.
    async fn execute(&self, job: &Pending) -> JobEnd {
        // Test jobs that end the way no real path should: by a panic, or never.
        #[cfg(test)]
        match job.body.as_ref() {
            b"test:panic" => panic!("a test job panics"),
            b"test:hang" => std::future::pending::<()>().await,
            _ => {}
        }
        let snap = self.relay.snapshot();
        let Some(token) = snap.config.tokens.iter().find(|t| owner_of(&t.key) == job.owner) else {
            let e = RelayError::unauthorized("the token that submitted this job is no longer configured");
            return JobEnd::Failed(error_object(&e));
        };
        let mut log = RequestLog::new(self.metrics.clone(), job.request_id.clone(), job.endpoint.as_str());
        let checked = job.checked.clone();
        let answer = match self.relay.serve_checked(token, job.endpoint, checked, &job.body, &snap, &mut log).await {
            Ok(a) => a,
            Err(e) => {
                log.fail(&e);
                return JobEnd::Failed(error_object(&e));
            }
        };
        let mut sink = Sink { jobs: self, id: &job.id, bytes: 0, seq: 0, tokens: 0 };
        let whole = match answer {
            Answer::Stream(stream) if job.endpoint == Endpoint::Responses => {
                return consume_responses(stream, &mut sink).await;
            }
            Answer::Stream(stream) => return consume_stream(stream, &mut sink).await,
            Answer::Whole(w) => w,
        };
        let v: Value = serde_json::from_slice(&whole.body).unwrap_or(Value::Null);
        if !whole.status.is_success() {
            return JobEnd::Failed(v.get("error").cloned().unwrap_or(v));
        }
        if job.endpoint == Endpoint::Responses {
            // The Response object is the result; its readers get it as the terminal event.
            return responses_end(v);
        }
        let text = String::from_utf8_lossy(&whole.body).into_owned();
        // Chat's usage names them completion tokens, Messages' output tokens.
        let tokens = ["/usage/completion_tokens", "/usage/output_tokens"].iter().find_map(|p| v.pointer(p)?.as_u64());
        if let Err(o) = sink.append(vec![text], tokens).await {
            return o;
        }
        JobEnd::Succeeded(v)
    }
}

/// The typed stream, batch by batch: chunks are stored and assembled; its end is the job's.
async fn consume_stream(mut stream: Box<Translation>, sink: &mut Sink<'_>) -> JobEnd {
    let mut assembler = Assembler::default();
    while let Some(batch) = stream.next().await {
        let mut chunks = Vec::with_capacity(batch.events.len());
        for ev in batch.events {
            assembler.push(&serde_json::from_str(&ev.data).unwrap_or(Value::Null));
            chunks.push(ev.data);
        }
        if let Err(o) = sink.append(chunks, assembler.completion_tokens()).await {
            return o;
        }
        match batch.end {
            None => {}
            Some(End::Done { .. }) => return JobEnd::Succeeded(assembler.finish()),
            Some(End::Failed { error, .. }) => return JobEnd::Failed(error_object(&error)),
        }
    }
    // A stream hands out its end before it stops.
    JobEnd::Failed(error_object(&RelayError::bad_upstream("the stream ended without completing")))
}

/// A Responses stream: each event stored with its `sequence_number` equal to its stored
/// position − 1 (so `starting_after` is exact); the result is the terminal event's
/// `response`. A stream cut before its terminal event fails the job; its readers get a
/// `response.failed` made from the record.
async fn consume_responses(mut stream: Box<Translation>, sink: &mut Sink<'_>) -> JobEnd {
    let mut last = None;
    while let Some(batch) = stream.next().await {
        let mut out = Vec::with_capacity(batch.events.len());
        let mut tokens = None;
        for ev in batch.events {
            let (data, kind) = events::numbered(ev.data, sink.seq + out.len() as u64);
            if kind.as_deref().is_some_and(events::is_terminal) {
                last = events::response_in(&data);
                tokens = last.as_ref().and_then(|r| r.pointer("/usage/output_tokens")).and_then(Value::as_u64);
            }
            out.push(data);
        }
        if let Err(o) = sink.append(out, tokens).await {
            return o;
        }
        match batch.end {
            None => {}
            Some(End::Done { .. }) => {
                return match last {
                    Some(r) => responses_end(r),
                    None => JobEnd::Failed(error_object(&RelayError::bad_upstream(
                        "the response stream ended without its terminal event",
                    ))),
                };
            }
            Some(End::Failed { error, .. }) => return JobEnd::Failed(error_object(&error)),
        }
    }
    JobEnd::Failed(error_object(&RelayError::bad_upstream("the stream ended without completing")))
}

/// A Response object as a job's end: a `failed` one (the vendor's own failure event) fails
/// the job with its error.
fn responses_end(r: Value) -> JobEnd {
    if r.get("status").and_then(Value::as_str) == Some("failed") {
        let e = r.get("error").cloned().filter(|e| !e.is_null());
        return JobEnd::Failed(e.unwrap_or_else(|| error_object(&RelayError::bad_upstream("the response failed"))));
    }
    JobEnd::Succeeded(r)
}

/// Ends a job's run whatever ends its task. `run` sets `done` after recording the end; a
/// guard dropped without it (a panic outside the caught part, the task cancelled) records
/// the job failed (without waiting), frees its slot and wakes its readers.
struct RunGuard {
    jobs: Arc<Jobs>,
    id: String,
    done: bool,
}

impl Drop for RunGuard {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        tracing::error!(job = %self.id, "a job's task ended without recording its end; recorded as failed");
        let change =
            Change::End { status: Status::Failed, at_ms: now_ms(), result: None, error: Some(aborted_error()) };
        self.jobs.store.change_detached(&self.id, change);
        self.jobs.moved(Some(Status::Running), Some(Status::Failed));
        self.jobs.release(&self.id);
    }
}

/// Where a running job's output goes: the store, batch by batch, then a wake-up for
/// event readers.
struct Sink<'a> {
    jobs: &'a Jobs,
    id: &'a str,
    bytes: u64,
    seq: u64,
    tokens: u64,
}

impl Sink<'_> {
    /// Store a batch; `Err` ends the job (the per-job byte bound, the store's size bound, or
    /// the store failing).
    async fn append(&mut self, batch: Vec<String>, completion_tokens: Option<u64>) -> Result<(), JobEnd> {
        if batch.is_empty() {
            return Ok(());
        }
        let size: u64 = batch.iter().map(|e| e.len() as u64).sum();
        let max = self.jobs.cfg.max_bytes_per_job;
        if self.bytes + size > max {
            let e = RelayError::new(
                ErrorKind::JobTooLarge,
                format!("the job's output passed the limit of {max} bytes (jobs.max_bytes_per_job)"),
            );
            return Err(JobEnd::Failed(error_object(&e)));
        }
        let cost = store::job_cost(size, batch.len() as u64) - store::JOB_OVERHEAD;
        if self.jobs.store.bytes().saturating_add(cost) > self.jobs.cfg.max_store_bytes {
            return Err(JobEnd::Failed(error_object(&store_error(StoreError(Cause::OverBudget)))));
        }
        let first = self.seq + 1;
        self.seq += batch.len() as u64;
        self.bytes += size;
        if let Some(t) = completion_tokens {
            self.tokens = t;
        }
        let count = self.seq;
        let change = Change::Progress {
            events: count,
            bytes: self.bytes,
            completion_tokens: self.tokens,
            last_event_ms: now_ms(),
        };
        if let Err(e) = self.jobs.store.append(self.id, first, batch, change).await {
            return Err(JobEnd::Failed(error_object(&store_error(e))));
        }
        if let Some(tx) = self.jobs.lock().live.get(self.id) {
            tx.send_replace(count);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::path::Path;
    use std::time::{Duration, Instant};

    use bytes::Bytes;
    use tokio_util::sync::CancellationToken;

    use crate::jobs::Record;
    use crate::metrics::Metrics;
    use crate::service::Relay;

    fn start(dir: &Path, max_running: usize) -> Arc<Jobs> {
        start_with(dir, max_running, "")
    }

    fn start_with(dir: &Path, max_running: usize, more: &str) -> Arc<Jobs> {
        let text = format!("[jobs]\npath = \"{}\"\nmax_running = {max_running}\n{more}", dir.display());
        let cfg = crate::config::Config::parse(&text, Path::new("."), &HashMap::new()).unwrap();
        let metrics = Arc::new(Metrics::default());
        let jobs_cfg = cfg.startup.jobs.clone();
        let snap = crate::route::Snapshot::new(cfg.live, crate::upstream::tls_config(), metrics.clone());
        let registry = Arc::new(crate::adapter::Registry::default());
        let relay = Arc::new(Relay::new(snap, registry, metrics.clone(), CancellationToken::new()));
        Jobs::start(relay, jobs_cfg, metrics)
    }

    async fn admit(jobs: &Jobs, id: &str, body: &'static [u8]) {
        admit_as(jobs, id, "o", body).await;
    }

    async fn admit_as(jobs: &Jobs, id: &str, owner: &str, body: &'static [u8]) {
        let record = Record { id: id.into(), owner: owner.into(), status: Status::Queued, ..Record::default() };
        let pending = Pending {
            id: id.into(),
            owner: owner.into(),
            endpoint: Endpoint::ChatCompletions,
            body: Bytes::from_static(body),
            checked: crate::probe::Checked { model: "m".into(), stream: true, include_usage: true, response: None },
            request_id: "r".into(),
            _share: crate::metrics::BodyPermit::empty(jobs.relay.metrics.clone()),
        };
        assert!(jobs.admit(record, pending).await.is_ok());
    }

    async fn wait_for(jobs: &Jobs, id: &str, status: Status) -> Record {
        let end = Instant::now() + Duration::from_secs(10);
        loop {
            let r = jobs.store.get(id).await.unwrap().unwrap();
            if r.status == status {
                return r;
            }
            assert!(Instant::now() < end, "{id} never reached {status:?}: {r:?}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_job_that_panics_or_is_cancelled_ends_failed_and_frees_its_slot() {
        let dir = tempfile::tempdir().unwrap();
        let jobs = start(dir.path(), 1);

        admit(&jobs, "job_a", b"test:panic").await;
        let r = wait_for(&jobs, "job_a", Status::Failed).await;
        assert_eq!(r.error.unwrap()["code"], "job_aborted");
        assert_eq!(jobs.metrics.errors.get(["jobs", "relay", "internal"]), 1, "a job's panic is the relay's fault");

        // A task cancelled from outside (as a panic outside the caught part would end it):
        // the guard records the end and hands the slot to the next job.
        admit(&jobs, "job_b", b"test:hang").await;
        wait_for(&jobs, "job_b", Status::Running).await;
        admit(&jobs, "job_c", b"test:hang").await;
        assert_eq!(jobs.store.get("job_c").await.unwrap().unwrap().status, Status::Queued);
        jobs.lock().running.get("job_b").unwrap().handle.abort();
        let r = wait_for(&jobs, "job_b", Status::Failed).await;
        assert_eq!(r.error.unwrap()["code"], "job_aborted");
        assert_eq!(jobs.metrics.errors.get(["jobs", "relay", "internal"]), 1, "a cancelled task is not a panic");
        wait_for(&jobs, "job_c", Status::Running).await;
        {
            let st = jobs.lock();
            assert_eq!(st.running.keys().collect::<Vec<_>>(), ["job_c"]);
            assert!(!st.live.contains_key("job_a") && !st.live.contains_key("job_b"));
        }
        let gauges: Vec<i64> = jobs.metrics.jobs.iter().map(|g| g.get()).collect();
        assert_eq!(gauges, [0, 1, 0, 2, 0]);

        jobs.shutdown().await;
        wait_for(&jobs, "job_c", Status::Failed).await;
        assert!(jobs.lock().running.is_empty() && jobs.lock().live.is_empty());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_job_runs_on_its_submission_probe_without_parsing_the_body_again() {
        let dir = tempfile::tempdir().unwrap();
        let key = "sk-job-owner-0123456789abcdef";
        let jobs = start_with(dir.path(), 1, &format!("[[token]]\nname = \"t\"\nkey = \"{key}\"\nmodels = [\"*\"]\n"));
        // Not JSON: a run that probed the body again would fail with a parse error (400).
        // On the submission's probe (model "m") it goes on to routing, where no channel serves "m".
        admit_as(&jobs, "job_p", &owner_of(key), b"{not json").await;
        let r = wait_for(&jobs, "job_p", Status::Failed).await;
        assert_eq!(r.error.unwrap()["code"], "model_not_found");
        jobs.shutdown().await;
    }
}
