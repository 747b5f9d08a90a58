//! The job manager: `Jobs` owns every job task (admission, the queue, run slots, stop),
//! the sweeper, and the graceful stop (drain, idle, shutdown).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use bytes::Bytes;
use http::Response;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

use crate::config::JobsConfig;
use crate::error::RelayError;
use crate::http::{Body, error_response};
use crate::metrics::Metrics;
use crate::model::Endpoint;
use crate::probe::Checked;
use crate::service::Relay;

use super::error::{interrupted_error, owner_quota, queue_full, retry_after_secs, store_error};
use super::now_ms;
use super::runner::JobEnd;
use super::{Cause, Record, Status, Store, StoreError};

/// Shutdown waits this long for stopped jobs to record how they ended.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(2);
/// DELETE waits this long for a running job to record its cancellation before answering.
const CANCEL_WAIT: Duration = Duration::from_secs(1);

/// Why a running job is being stopped.
#[derive(Debug, Clone, Copy)]
pub(super) enum Stop {
    Cancelled,
    Shutdown,
}

/// A job waiting for a run slot; its body lives only in memory.
pub(crate) struct Pending {
    pub(crate) id: String,
    pub(crate) owner: String,
    pub(crate) endpoint: Endpoint,
    pub(crate) body: Bytes,
    /// The submission's probe of `body`: the run does not parse the body again.
    pub(crate) checked: Checked,
    pub(crate) request_id: String,
    /// The body's share of `limits.max_inflight_body_bytes`, held while it waits and runs.
    pub(crate) _share: crate::metrics::BodyPermit,
}

pub(super) struct Running {
    /// Taken by the first stop.
    pub(super) stop: Option<oneshot::Sender<Stop>>,
    pub(super) handle: JoinHandle<()>,
}

#[derive(Default)]
pub(super) struct State {
    pub(super) queue: VecDeque<Pending>,
    pub(super) running: HashMap<String, Running>,
    /// The last stored event of each unfinished job; dropped when the job has ended, which
    /// tells event readers to read the rest and stop.
    pub(super) live: HashMap<String, watch::Sender<u64>>,
    pub(super) sweeper: Option<JoinHandle<()>>,
    pub(super) closed: bool,
    /// Set at SIGTERM: new submissions are refused, while queued jobs still start as run
    /// slots free and running ones go on until `shutdown`.
    pub(super) draining: bool,
    /// Submissions admitted whose record is being written: they count against the queue.
    pub(super) reserving: usize,
}

pub struct Jobs {
    pub(crate) relay: Arc<Relay>,
    pub(crate) store: Store,
    pub(crate) cfg: JobsConfig,
    pub(super) metrics: Arc<Metrics>,
    pub(super) state: Mutex<State>,
    /// Woken whenever a job's run ends, for `idle` to look again.
    pub(super) ended: tokio::sync::Notify,
    pub(crate) me: Weak<Jobs>,
}

/// Why a submission is refused before it becomes a job; index into `JOB_REFUSALS`.
#[derive(Clone, Copy)]
pub(super) enum Refusal {
    QueueFull = 0,
    OwnerQuota = 1,
    StoreFull = 2,
    StoreDown = 3,
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

    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn moved(&self, from: Option<Status>, to: Option<Status>) {
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
            self.record_end(&p.id, Status::Queued, JobEnd::Failed(interrupted_error("queued"))).await;
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

    /// A foreground response answered but not stored: the store is past its size bound.
    pub(crate) fn refused_store_full(&self) {
        self.metrics.job_refusals[Refusal::StoreFull as usize].inc();
    }

    pub(super) fn refused(&self, why: Refusal, e: RelayError) -> RelayError {
        self.metrics.job_refusals[why as usize].inc();
        e
    }

    /// Check the bounds and reserve a place under the state lock, write the record outside
    /// it, then queue the job. `Err` is the refusal to send.
    pub(crate) async fn admit(&self, record: Record, pending: Pending) -> Result<(), Response<Body>> {
        let owner = record.owner.clone();
        {
            let mut st = self.lock();
            if st.closed || st.draining {
                let e = RelayError::unavailable("the relay is shutting down; submit the job again shortly")
                    .with_retry_after(1);
                return Err(error_response(&e, None));
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
                let e = self
                    .refused(Refusal::StoreFull, store_error(StoreError(Cause::OverBudget)))
                    .with_retry_after(retry_after_secs(self.cfg.sweep_interval));
                return Err(error_response(&e, None));
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
            self.record_end(&p.id, Status::Queued, JobEnd::Failed(interrupted_error("queued"))).await;
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

    /// A job's run has ended: free its slot, tell its readers, start the next.
    pub(super) fn release(&self, id: &str) {
        let mut st = self.lock();
        st.running.remove(id);
        st.live.remove(id);
        if !st.closed {
            self.pump(&mut st);
        }
        self.ended.notify_waiters();
    }

    /// The one way to stop a job: a queued one leaves the queue, a running one is told to
    /// stop and drops its vendor call; waits (bounded) until the end is recorded.
    pub(crate) async fn stop(&self, id: &str) {
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
            self.record_end(&p.id, Status::Queued, JobEnd::Cancelled).await;
            return;
        }
        if let Some(rx) = live.as_mut() {
            // The sender drops once the job's end is stored.
            let _ = tokio::time::timeout(CANCEL_WAIT, async { while rx.changed().await.is_ok() {} }).await;
        }
    }
}
