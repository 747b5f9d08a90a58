//! Async mode: `Prefer: respond-async` turns a relay request into a job the relay runs
//! itself, through the same `Relay::serve_body` as a synchronous request, while the client
//! polls its status, follows its output as resumable SSE, or cancels it.
//!
//! Ownership: a job outlives the HTTP request that created it, so it cannot live in that
//! request's future. `Jobs` is the one owner of every job task: each running job's
//! `JoinHandle` and stop handle sit in a map and leave it when the job ends. There is one way
//! to stop a job, `Jobs::stop` (DELETE, and shutdown for all of them), and one sweeper task,
//! owned here too, ended by `Jobs::shutdown`.

mod assemble;
mod store;

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use bytes::Bytes;
use futures_util::FutureExt;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, header};
use http_body::Frame;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

use crate::access::RequestLog;
use crate::auth::authenticate;
use crate::config::JobsConfig;
use crate::error::RelayError;
use crate::http::{Body, error_response, json_response, request_id};
use crate::metrics::Metrics;
use crate::plugin::Endpoint;
use crate::relay::Relay;
use crate::sse::{Format, Framer};
use crate::stream::shutdown_requested;

use assemble::Assembler;
pub use store::{Cause, Change, Record, Status, Store, StoreError, Summary};

/// OpenAI list pages: 20 items unless asked, 100 at most.
const DEFAULT_PAGE: usize = 20;
const MAX_PAGE: usize = 100;
/// Events sent in one SSE frame when replaying; bounds one store read.
const REPLAY_BATCH: usize = 256;
/// Shutdown waits this long for stopped jobs to record how they ended.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(2);
/// DELETE waits this long for a running job to record its cancellation before answering.
const CANCEL_WAIT: Duration = Duration::from_secs(1);

/// Why a running job is being stopped.
#[derive(Debug, Clone, Copy)]
enum Stop {
    Cancelled,
    Shutdown,
}

/// How a job ended.
enum Outcome {
    Succeeded(Value),
    Failed(Value),
    Cancelled,
}

/// A job waiting for a run slot; its body lives only in memory.
struct Pending {
    id: String,
    owner: String,
    endpoint: Endpoint,
    body: Bytes,
    request_id: String,
    /// The body's share of `limits.max_inflight_body_bytes`, held while it waits and runs.
    _share: crate::metrics::BodyPermit,
}

struct Running {
    /// Taken by the first stop.
    stop: Option<oneshot::Sender<Stop>>,
    handle: JoinHandle<()>,
}

#[derive(Default)]
struct State {
    queue: VecDeque<Pending>,
    running: HashMap<String, Running>,
    /// The last stored event of each unfinished job; dropped when the job has ended, which
    /// tells event readers to read the rest and stop.
    live: HashMap<String, watch::Sender<u64>>,
    sweeper: Option<JoinHandle<()>>,
    closed: bool,
    /// Set at SIGTERM: new submissions are refused, while queued jobs still start as run
    /// slots free and running ones go on until `shutdown`.
    draining: bool,
    /// Submissions admitted whose record is being written: they count against the queue.
    reserving: usize,
}

pub struct Jobs {
    relay: Arc<Relay>,
    store: Store,
    cfg: JobsConfig,
    metrics: Arc<Metrics>,
    state: Mutex<State>,
    /// Woken whenever a job's run ends, for `idle` to look again.
    ended: tokio::sync::Notify,
    me: Weak<Jobs>,
}

/// The owner of a job: a hash of the client key, so a job stays with its key across
/// restarts and renames while the key itself is never stored.
fn owner_of(key: &str) -> String {
    let digest = Sha256::digest(key.as_bytes());
    digest[..16].iter().map(|b| format!("{b:02x}")).collect()
}

pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

fn endpoint_name(e: Endpoint) -> &'static str {
    match e {
        Endpoint::ChatCompletions => "chat.completions",
        Endpoint::Embeddings => "embeddings",
    }
}

/// The inner OpenAI error object of a relay error.
fn error_object(e: &RelayError) -> Value {
    serde_json::from_slice::<Value>(&e.body()).map(|mut v| v["error"].take()).unwrap_or(Value::Null)
}

/// A store failure as the client sees it: the cause in a phrase, no path or internals (the
/// store logged those).
fn store_error(e: StoreError) -> RelayError {
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

/// Why a submission is refused before it becomes a job; index into `JOB_REFUSALS`.
#[derive(Clone, Copy)]
enum Refusal {
    QueueFull = 0,
    OwnerQuota = 1,
    StoreFull = 2,
    StoreDown = 3,
}

/// Does the request ask for async mode (RFC 7240 `Prefer: respond-async`)?
pub fn wants_async(headers: &HeaderMap) -> bool {
    headers.get_all("prefer").iter().filter_map(|v| v.to_str().ok()).any(|v| {
        v.split(',').any(|p| p.split(';').next().is_some_and(|t| t.trim().eq_ignore_ascii_case("respond-async")))
    })
}

impl Jobs {
    /// Open the store, fail what a previous process left unfinished, start the sweeper.
    /// Never fails: a store that cannot open leaves async mode answering 503 (the store
    /// logs why and keeps trying), and everything else serves.
    pub fn start(relay: Arc<Relay>, cfg: JobsConfig, metrics: Arc<Metrics>) -> Arc<Jobs> {
        let store = Store::start(&cfg.path, metrics.clone());
        let jobs = Arc::new_cyclic(|me| Jobs {
            relay,
            store,
            cfg,
            metrics,
            state: Mutex::new(State::default()),
            ended: tokio::sync::Notify::new(),
            me: me.clone(),
        });
        let sweeper = tokio::spawn(Self::sweep(Arc::downgrade(&jobs), jobs.cfg.sweep_interval));
        jobs.lock().sweeper = Some(sweeper);
        jobs
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn moved(&self, from: Option<Status>, to: Option<Status>) {
        if let Some(s) = from {
            self.metrics.jobs[s.index()].add(-1);
        }
        if let Some(s) = to {
            self.metrics.jobs[s.index()].add(1);
        }
    }

    /// The sweeper: purge finished jobs past retention. Holds only a weak handle, so it
    /// never keeps the manager alive; `shutdown` aborts it.
    async fn sweep(jobs: Weak<Jobs>, every: Duration) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(jobs) = jobs.upgrade() else { return };
            let cutoff = now_ms().saturating_sub(jobs.cfg.retention.as_millis() as u64);
            if jobs.store.health().is_err() {
                continue;
            }
            match jobs.store.purge(cutoff).await {
                Ok(purged) => {
                    for s in &purged {
                        jobs.moved(Some(*s), None);
                    }
                    if !purged.is_empty() {
                        tracing::info!(purged = purged.len(), "expired jobs purged");
                    }
                }
                Err(e) => tracing::error!(error = %e, "purging expired jobs failed"),
            }
        }
    }

    /// The start of a graceful stop: refuse new submissions; jobs already accepted keep
    /// running, and queued ones keep starting, until `idle` or `shutdown`.
    pub fn drain(&self) {
        self.lock().draining = true;
    }

    /// Resolves once no job is queued, being admitted or running.
    pub async fn idle(&self) {
        loop {
            let ended = self.ended.notified();
            {
                let st = self.lock();
                if st.queue.is_empty() && st.running.is_empty() && st.reserving == 0 {
                    return;
                }
            }
            ended.await;
        }
    }

    /// Stop everything: the sweeper, queued jobs and running ones (through the same stop
    /// as DELETE). Both end `failed` with `job_interrupted`: a queued job's body was only in
    /// memory, and a running job's vendor call is dropped.
    pub async fn shutdown(&self) {
        let (running, queued) = {
            let mut st = self.lock();
            st.closed = true;
            if let Some(s) = st.sweeper.take() {
                s.abort();
            }
            let running: Vec<_> = st.running.drain().collect();
            let queued: Vec<_> = st.queue.drain(..).collect();
            for p in &queued {
                st.live.remove(&p.id);
            }
            (running, queued)
        };
        for p in queued {
            self.record_end(&p.id, Status::Queued, Outcome::Failed(interrupted_error("queued"))).await;
        }
        let mut handles = Vec::new();
        for (_, r) in running {
            if let Some(tx) = r.stop {
                let _ = tx.send(Stop::Shutdown);
            }
            handles.push(r.handle);
        }
        let _ = tokio::time::timeout(SHUTDOWN_WAIT, futures_util::future::join_all(handles)).await;
    }

    /// `POST /v1/chat/completions` or `/v1/embeddings` with `Prefer: respond-async`.
    pub async fn submit(&self, req: Request<Incoming>, endpoint: Endpoint) -> Response<Body> {
        match self.try_submit(req, endpoint).await {
            Ok(r) => r,
            Err(e) => error_response(&e, None),
        }
    }

    async fn try_submit(&self, req: Request<Incoming>, endpoint: Endpoint) -> Result<Response<Body>, RelayError> {
        let snap = self.relay.snapshot();
        let token = authenticate(req.headers(), &snap)?;
        // Before reading the body: no need to take 32 MiB to answer 503.
        if let Err(e) = self.store.health() {
            return Err(self.refused(Refusal::StoreDown, store_error(e)));
        }
        let owner = owner_of(&token.key);
        let request_id = request_id(req.headers());
        let (body, share) = self.relay.read_body_held(req, &snap).await?;
        let checked = Relay::check(token, endpoint, &body, &snap).inspect_err(|e| {
            if e.code == Some("invalid_model") {
                self.relay.metrics.models_refused.inc();
            }
        })?;
        let body = match endpoint {
            Endpoint::ChatCompletions => stream_body(&body)?,
            Endpoint::Embeddings => body,
        };
        let created = now_ms();
        let id = format!("job_{:016x}{:08x}", created * 1000, rand::random::<u32>());
        let record = Record {
            id: id.clone(),
            owner: owner.clone(),
            token: token.name.clone(),
            endpoint: endpoint_name(endpoint).to_string(),
            model: checked.model,
            request_id: request_id.clone(),
            status: Status::Queued,
            created_ms: created,
            ..Record::default()
        };
        let pending = Pending { id: id.clone(), owner, endpoint, body, request_id, _share: share };
        // Admission runs as its own task: once the record is being written, a client that
        // hangs up cannot leave a reservation or a stored job outside the queue.
        let Some(me) = self.me.upgrade() else { return Err(RelayError::unavailable("the relay is shutting down")) };
        match tokio::spawn(async move { me.admit(record, pending).await }).await {
            Ok(Ok(())) => {}
            Ok(Err(resp)) => return Ok(resp),
            Err(_) => return Err(RelayError::unavailable("the job could not be queued")),
        }
        let mut resp = json_response(
            StatusCode::ACCEPTED,
            json!({"id": id, "object": "relay.job", "status": "queued", "created_at": created / 1000}).to_string(),
        );
        if let Ok(v) = HeaderValue::from_str(&format!("/v1/jobs/{id}")) {
            resp.headers_mut().insert(header::LOCATION, v);
        }
        Ok(resp)
    }

    fn refused(&self, why: Refusal, e: RelayError) -> RelayError {
        self.metrics.job_refusals[why as usize].inc();
        e
    }

    /// Check the bounds and reserve a place under the state lock, write the record outside
    /// it, then queue the job. `Err` is the refusal to send.
    async fn admit(&self, record: Record, pending: Pending) -> Result<(), Response<Body>> {
        let owner = record.owner.clone();
        {
            let mut st = self.lock();
            if st.closed || st.draining {
                let e = RelayError::unavailable("the relay is shutting down; submit the job again shortly");
                let mut resp = error_response(&e, None);
                resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
                return Err(resp);
            }
            if st.running.len() + st.queue.len() + st.reserving >= self.cfg.max_running + self.cfg.max_queued {
                self.metrics.job_refusals[Refusal::QueueFull as usize].inc();
                return Err(queue_full(self.cfg.max_queued));
            }
            if !self.store.reserve(&owner, self.cfg.max_per_owner) {
                self.metrics.job_refusals[Refusal::OwnerQuota as usize].inc();
                return Err(owner_quota(self.cfg.max_per_owner, self.cfg.sweep_interval));
            }
            if self.store.bytes() >= self.cfg.max_store_bytes {
                self.store.unreserve(&owner);
                let e = self.refused(Refusal::StoreFull, store_error(StoreError(Cause::OverBudget)));
                let mut resp = error_response(&e, None);
                resp.headers_mut().insert(header::RETRY_AFTER, retry_after(self.cfg.sweep_interval));
                return Err(resp);
            }
            st.reserving += 1;
        }
        if let Err(e) = self.store.put(record).await {
            self.lock().reserving -= 1;
            self.ended.notify_waiters();
            self.store.unreserve(&owner);
            tracing::error!(job = %pending.id, error = %e, "storing a new job failed");
            return Err(error_response(&store_error(e), None));
        }
        self.moved(None, Some(Status::Queued));
        let refused = {
            let mut st = self.lock();
            st.reserving -= 1;
            if st.closed {
                Some(pending)
            } else {
                st.live.insert(pending.id.clone(), watch::channel(0).0);
                st.queue.push_back(pending);
                self.pump(&mut st);
                None
            }
        };
        self.ended.notify_waiters();
        if let Some(p) = refused {
            self.record_end(&p.id, Status::Queued, Outcome::Failed(interrupted_error("queued"))).await;
            let e = RelayError::unavailable("the relay shut down before the job started; submit it again shortly");
            return Err(error_response(&e, None));
        }
        Ok(())
    }

    /// Start queued jobs while there are run slots.
    fn pump(&self, st: &mut State) {
        let Some(me) = self.me.upgrade() else { return };
        while st.running.len() < self.cfg.max_running
            && let Some(p) = st.queue.pop_front()
        {
            let (tx, rx) = oneshot::channel();
            let id = p.id.clone();
            let handle = tokio::spawn(me.clone().run(p, rx));
            st.running.insert(id, Running { stop: Some(tx), handle });
        }
    }

    /// One job, from its run slot to its recorded end. Dropping `execute` on a stop drops
    /// the vendor call with it. A panic inside the job fails it; a panic or cancellation
    /// anywhere else is caught by the guard: either way the record ends and the slot frees.
    async fn run(self: Arc<Self>, job: Pending, mut stop: oneshot::Receiver<Stop>) {
        let mut guard = RunGuard { jobs: self.clone(), id: job.id.clone(), done: false };
        self.moved(Some(Status::Queued), Some(Status::Running));
        if let Err(e) = self.store.change(&job.id, Change::Start { at_ms: now_ms() }, true).await {
            tracing::error!(job = %job.id, error = %e, "recording a job's start failed");
        }
        let outcome = tokio::select! {
            o = AssertUnwindSafe(self.execute(&job)).catch_unwind() => o.unwrap_or_else(|panic| {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                tracing::error!(job = %job.id, panic = %what, "a job panicked; recorded as failed");
                Outcome::Failed(aborted_error())
            }),
            s = &mut stop => match s {
                Ok(Stop::Cancelled) => Outcome::Cancelled,
                // A dropped stop handle means shutdown took the job out of the map.
                Ok(Stop::Shutdown) | Err(_) => Outcome::Failed(interrupted_error("running")),
            },
        };
        self.record_end(&job.id, Status::Running, outcome).await;
        guard.done = true;
        self.release(&job.id);
    }

    /// A job's run has ended: free its slot, tell its readers, start the next.
    fn release(&self, id: &str) {
        let mut st = self.lock();
        st.running.remove(id);
        st.live.remove(id);
        if !st.closed {
            self.pump(&mut st);
        }
        self.ended.notify_waiters();
    }

    /// Write a job's end (durably) and move the status gauges.
    async fn record_end(&self, id: &str, from: Status, outcome: Outcome) {
        let finished = now_ms();
        let (status, result, error) = match outcome {
            Outcome::Succeeded(v) => (Status::Succeeded, Some(v), None),
            Outcome::Failed(e) => (Status::Failed, None, Some(e)),
            Outcome::Cancelled => (
                Status::Cancelled,
                None,
                Some(
                    json!({"message": "the job was cancelled", "type": "cancelled", "param": null, "code": "job_cancelled"}),
                ),
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
    async fn execute(&self, job: &Pending) -> Outcome {
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
            return Outcome::Failed(error_object(&e));
        };
        let name = match job.endpoint {
            Endpoint::ChatCompletions => "chat_completions",
            Endpoint::Embeddings => "embeddings",
        };
        let mut log = RequestLog::new(self.metrics.clone(), job.request_id.clone(), name);
        let resp = match self.relay.serve_body(token, job.endpoint, &job.body, &snap, &mut log).await {
            Ok(r) => r,
            Err(e) => {
                log.error = Some(e.message.clone());
                log.finish(e.status.as_u16());
                return Outcome::Failed(error_object(&e));
            }
        };
        let (parts, body) = resp.into_parts();
        let is_stream = parts.headers.get(header::CONTENT_TYPE).is_some_and(|v| v.as_bytes() == b"text/event-stream");
        let mut sink = Sink { jobs: self, id: &job.id, bytes: 0, seq: 0, tokens: 0 };
        if !is_stream {
            let bytes = match body.collect().await {
                Ok(c) => c.to_bytes(),
                Err(never) => match never {},
            };
            let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            if !parts.status.is_success() {
                return Outcome::Failed(v.get("error").cloned().unwrap_or(v));
            }
            let text = String::from_utf8_lossy(&bytes).into_owned();
            if let Err(o) = sink.append(vec![text], v.pointer("/usage/completion_tokens").and_then(Value::as_u64)).await
            {
                return o;
            }
            return Outcome::Succeeded(v);
        }
        self.consume_stream(body, &mut sink).await
    }

    /// The relay's own SSE answer, read back event by event: chunks are stored and
    /// assembled; `[DONE]` is success, an error event is the job's error.
    async fn consume_stream(&self, mut body: Body, sink: &mut Sink<'_>) -> Outcome {
        let mut framer = Framer::new(Format::Sse, usize::MAX);
        let mut assembler = Assembler::default();
        loop {
            let Some(frame) = body.frame().await else {
                let e = RelayError::bad_upstream("the stream ended without completing");
                return Outcome::Failed(error_object(&e));
            };
            let Ok(data) = (match frame {
                Ok(f) => f.into_data(),
                Err(never) => match never {},
            }) else {
                continue;
            };
            framer.push(&data);
            let mut batch = Vec::new();
            let mut done = false;
            let mut failed = None;
            while let Ok(Some(ev)) = framer.next_event() {
                if ev.data == "[DONE]" {
                    done = true;
                    break;
                }
                let v: Value = serde_json::from_str(&ev.data).unwrap_or(Value::Null);
                if let Some(err) = v.get("error").filter(|_| v.get("choices").is_none()) {
                    failed = Some(Outcome::Failed(err.clone()));
                    break;
                }
                assembler.push(&v);
                batch.push(ev.data);
            }
            if let Err(o) = sink.append(batch, assembler.completion_tokens()).await {
                return o;
            }
            if let Some(o) = failed {
                return o;
            }
            if done {
                return Outcome::Succeeded(assembler.finish());
            }
        }
    }

    /// The job `id` if `headers` carry its owner's key; 404 for anyone else.
    fn owned(&self, headers: &HeaderMap, id: &str) -> Result<Record, RelayError> {
        let snap = self.relay.snapshot();
        let token = authenticate(headers, &snap)?;
        match self.store.get_now(id).map_err(store_error)? {
            Some(r) if r.owner == owner_of(&token.key) => Ok(r),
            _ => Err(RelayError::not_found(format!("No job found with id '{id}'"))),
        }
    }

    /// `GET /v1/jobs/{id}`.
    pub fn get(&self, headers: &HeaderMap, id: &str) -> Response<Body> {
        match self.owned(headers, id) {
            Ok(r) => json_response(StatusCode::OK, r.to_json(now_ms()).to_string()),
            Err(e) => error_response(&e, None),
        }
    }

    /// `DELETE /v1/jobs/{id}`: cancel; a finished job is answered as it is.
    pub async fn cancel(&self, headers: &HeaderMap, id: &str) -> Response<Body> {
        let record = match self.owned(headers, id) {
            Ok(r) => r,
            Err(e) => return error_response(&e, None),
        };
        if !record.status.finished() {
            self.stop(id).await;
        }
        match self.store.get(id).await {
            Ok(Some(r)) => json_response(StatusCode::OK, r.to_json(now_ms()).to_string()),
            Ok(None) => error_response(&RelayError::not_found(format!("No job found with id '{id}'")), None),
            Err(e) => error_response(&store_error(e), None),
        }
    }

    /// The one way to stop a job: a queued one leaves the queue, a running one is told to
    /// stop and drops its vendor call; waits (bounded) until the end is recorded.
    async fn stop(&self, id: &str) {
        let (pending, mut live) = {
            let mut st = self.lock();
            let pending = st.queue.iter().position(|p| p.id == id).and_then(|i| st.queue.remove(i));
            if pending.is_some() {
                st.live.remove(id);
            } else if let Some(tx) = st.running.get_mut(id).and_then(|r| r.stop.take()) {
                let _ = tx.send(Stop::Cancelled);
            }
            (pending, st.live.get(id).map(watch::Sender::subscribe))
        };
        if let Some(p) = pending {
            self.record_end(&p.id, Status::Queued, Outcome::Cancelled).await;
            return;
        }
        if let Some(rx) = live.as_mut() {
            // The sender drops once the job's end is stored.
            let _ = tokio::time::timeout(CANCEL_WAIT, async { while rx.changed().await.is_ok() {} }).await;
        }
    }

    /// `GET /v1/jobs?limit=&after=`: the caller's jobs, newest first, as summaries (no
    /// result or error: `GET /v1/jobs/{id}` has them).
    pub fn list(&self, headers: &HeaderMap, query: Option<&str>) -> Response<Body> {
        let snap = self.relay.snapshot();
        let token = match authenticate(headers, &snap) {
            Ok(t) => t,
            Err(e) => return error_response(&e, None),
        };
        let mut limit = DEFAULT_PAGE;
        let mut after = None;
        for (k, v) in query.unwrap_or("").split('&').filter_map(|kv| kv.split_once('=')) {
            match k {
                "limit" => match v.parse::<usize>() {
                    Ok(n) if (1..=MAX_PAGE).contains(&n) => limit = n,
                    _ => {
                        let e = RelayError::bad_request(format!("limit must be an integer from 1 to {MAX_PAGE}"))
                            .with_param("limit");
                        return error_response(&e, None);
                    }
                },
                "after" => after = Some(v.to_string()),
                _ => {}
            }
        }
        let (records, has_more) = match self.store.list_now(&owner_of(&token.key), after.as_deref(), limit) {
            Ok(r) => r,
            Err(e) => return error_response(&store_error(e), None),
        };
        let now = now_ms();
        let data: Vec<Value> = records.iter().map(|r| r.to_json(now)).collect();
        let body = json!({
            "object": "list",
            "first_id": records.first().map(|r| r.id.clone()),
            "last_id": records.last().map(|r| r.id.clone()),
            "has_more": has_more,
            "data": data,
        });
        json_response(StatusCode::OK, body.to_string())
    }

    /// `GET /v1/jobs/{id}/events`: the output so far, then live until the end; each event
    /// has an `id:`, and `Last-Event-ID` resumes after it. The body polls the store and a
    /// watch channel; it spawns nothing and ends with the job or at shutdown.
    pub fn events(&self, headers: &HeaderMap, id: &str) -> Response<Body> {
        if let Err(e) = self.owned(headers, id) {
            return error_response(&e, None);
        }
        let cursor = headers
            .get("last-event-id")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0);
        let Some(me) = self.me.upgrade() else {
            return error_response(&RelayError::unavailable("the relay is shutting down"), None);
        };
        let live = self.lock().live.get(id).map(watch::Sender::subscribe);
        let follow =
            Follow { jobs: me, id: id.to_string(), cursor, live, shutdown: self.relay.shutdown_signal(), ended: false };
        let stream = futures_util::stream::unfold(follow, |mut f| async move {
            let bytes = f.next().await?;
            Some((Ok::<_, Infallible>(Frame::data(bytes)), f))
        });
        let mut resp = Response::new(http_body_util::StreamBody::new(stream).boxed_unsync());
        let h = resp.headers_mut();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        h.insert("x-accel-buffering", HeaderValue::from_static("no"));
        resp
    }
}

/// 429 with OpenAI's rate-limit error shape: the queue is full, try again later.
fn queue_full(max: usize) -> Response<Body> {
    let body = json!({"error": {
        "message": format!("too many async jobs are waiting (jobs.max_queued = {max}); retry later"),
        "type": "rate_limit_error", "param": null, "code": "job_queue_full",
    }});
    let mut resp = json_response(StatusCode::TOO_MANY_REQUESTS, body.to_string());
    resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    resp
}

/// 429: the key holds `jobs.max_per_owner` jobs; a slot frees when one of them is purged.
fn owner_quota(max: u64, sweep: Duration) -> Response<Body> {
    let body = json!({"error": {
        "message": format!("this key holds the most async jobs it may (jobs.max_per_owner = {max}); finished jobs free their place when they are purged after jobs.retention"),
        "type": "rate_limit_error", "param": null, "code": "job_quota_exceeded",
    }});
    let mut resp = json_response(StatusCode::TOO_MANY_REQUESTS, body.to_string());
    resp.headers_mut().insert(header::RETRY_AFTER, retry_after(sweep));
    resp
}

/// `Retry-After` in whole seconds, at least 1: the next purge is the earliest a place frees.
fn retry_after(d: Duration) -> HeaderValue {
    HeaderValue::from(d.as_secs().max(1))
}

/// The error of a job the relay stopped while shutting down (`limits.shutdown_grace` over),
/// `was` queued or running; the same code a job left unfinished by a crash gets at the next
/// start.
fn interrupted_error(was: &str) -> Value {
    let e = RelayError::unavailable(format!(
        "the relay shut down while this job was {was} (limits.shutdown_grace passed); it did not finish and its output may be partial; submit it again"
    ))
    .with_code("job_interrupted");
    error_object(&e)
}

/// The error of a job whose run ended inside the relay (a panic, a cancelled task).
fn aborted_error() -> Value {
    let e = RelayError::unavailable("the job stopped because of an internal error in the relay; submit it again")
        .with_code("job_aborted");
    error_object(&e)
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

/// A chat request made to stream with usage, so the job's progress is live and its
/// result can be assembled; everything else in the body is kept as sent.
fn stream_body(body: &[u8]) -> Result<Bytes, RelayError> {
    let mut v: serde_json::Map<String, Value> = serde_json::from_slice(body)
        .map_err(|e| RelayError::bad_request(format!("We could not parse the JSON body of your request: {e}")))?;
    v.insert("stream".into(), Value::Bool(true));
    let opts = v.entry("stream_options").or_insert_with(|| json!({}));
    if let Some(o) = opts.as_object_mut() {
        o.insert("include_usage".into(), Value::Bool(true));
    }
    Ok(Bytes::from(Value::Object(v).to_string()))
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
    async fn append(&mut self, batch: Vec<String>, completion_tokens: Option<u64>) -> Result<(), Outcome> {
        if batch.is_empty() {
            return Ok(());
        }
        let size: u64 = batch.iter().map(|e| e.len() as u64).sum();
        let max = self.jobs.cfg.max_bytes_per_job;
        if self.bytes + size > max {
            let e = RelayError::bad_upstream(format!(
                "the job's output passed the limit of {max} bytes (jobs.max_bytes_per_job)"
            ))
            .with_code("job_too_large");
            return Err(Outcome::Failed(error_object(&e)));
        }
        let cost = store::job_cost(size, batch.len() as u64) - store::JOB_OVERHEAD;
        if self.jobs.store.bytes().saturating_add(cost) > self.jobs.cfg.max_store_bytes {
            return Err(Outcome::Failed(error_object(&store_error(StoreError(Cause::OverBudget)))));
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
            return Err(Outcome::Failed(error_object(&store_error(e))));
        }
        if let Some(tx) = self.jobs.lock().live.get(self.id) {
            tx.send_replace(count);
        }
        Ok(())
    }
}

/// One reader of a job's events.
struct Follow {
    jobs: Arc<Jobs>,
    id: String,
    cursor: u64,
    live: Option<watch::Receiver<u64>>,
    shutdown: watch::Receiver<bool>,
    ended: bool,
}

impl Follow {
    async fn next(&mut self) -> Option<Bytes> {
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
                        _ = shutdown_requested(&mut self.shutdown) => {
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
                            Bytes::from(format!("data: {}\n\n", json!({"error": err})))
                        }
                        Ok(None) => RelayError::not_found("the job was purged").sse_event(),
                        Err(e) => store_error(e).sse_event(),
                    });
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;
    use std::time::Instant;

    fn start(dir: &Path, max_running: usize) -> Arc<Jobs> {
        let text = format!("[jobs]\npath = \"{}\"\nmax_running = {max_running}\n", dir.display());
        let cfg = crate::config::Config::parse(&text, Path::new("."), &HashMap::new()).unwrap();
        let metrics = Arc::new(Metrics::default());
        let jobs_cfg = cfg.jobs.clone();
        let snap = crate::route::Snapshot::new(cfg, crate::upstream::tls_config(), metrics.clone());
        let (_, rx) = watch::channel(false);
        let relay = Arc::new(Relay::new(snap, Arc::new(crate::plugin::Registry::default()), metrics.clone(), rx));
        Jobs::start(relay, jobs_cfg, metrics)
    }

    async fn admit(jobs: &Jobs, id: &str, body: &'static [u8]) {
        let record = Record { id: id.into(), owner: "o".into(), status: Status::Queued, ..Record::default() };
        let pending = Pending {
            id: id.into(),
            owner: "o".into(),
            endpoint: Endpoint::ChatCompletions,
            body: Bytes::from_static(body),
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

        // A task cancelled from outside (as a panic outside the caught part would end it):
        // the guard records the end and hands the slot to the next job.
        admit(&jobs, "job_b", b"test:hang").await;
        wait_for(&jobs, "job_b", Status::Running).await;
        admit(&jobs, "job_c", b"test:hang").await;
        assert_eq!(jobs.store.get("job_c").await.unwrap().unwrap().status, Status::Queued);
        jobs.lock().running.get("job_b").unwrap().handle.abort();
        let r = wait_for(&jobs, "job_b", Status::Failed).await;
        assert_eq!(r.error.unwrap()["code"], "job_aborted");
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
}
