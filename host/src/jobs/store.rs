//! The job store: one redb file, `<jobs.path>/jobs.redb`, behind one writer thread.
//!
//! Tables: `jobs` (id → the record as JSON), `events` ((id, seq) → one output event),
//! `by_owner` ((owner, id) → ()) for listing, `quarantine` (id → the raw bytes of a record
//! that did not decode). Ids start with the creation time in hex, so key order is creation
//! order.
//!
//! Writes go to one thread that owns the write side, fed by a bounded channel: the commands
//! waiting when it wakes commit in one transaction (group commit, one fsync when any of them
//! asks for durability). Event batches alone commit without fsync; a job's start and end
//! commit durably, which also makes every batch before them durable. Reads run on the
//! blocking pool. No store I/O runs on a runtime worker or under a lock a request needs.
//!
//! When the file cannot be opened (damaged, not writable, locked) or an I/O error latched it
//! (after one, redb refuses every call with `PreviousIo` until the database is reopened), the
//! store is *down*: calls fail at once with the cause, and the writer closes and reopens it
//! with backoff, so the store comes back once the disk is fixed, without a restart.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};

use crate::metrics::Metrics;

const JOBS: TableDefinition<&str, &[u8]> = TableDefinition::new("jobs");
const EVENTS: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("events");
const BY_OWNER: TableDefinition<(&str, &str), ()> = TableDefinition::new("by_owner");
const QUARANTINE: TableDefinition<&str, &[u8]> = TableDefinition::new("quarantine");
pub const FILE: &str = "jobs.redb";

/// Commands waiting for the writer. When the disk falls behind, submitters and running
/// jobs wait for room (backpressure from the disk) instead of queueing without bound.
const WRITE_QUEUE: usize = 1024;
/// Commands committed in one transaction at most, so one commit stays short.
const GROUP_MAX: usize = 128;
/// Reopen backoff after a failure: from a quarter second (a transient error clears fast),
/// doubling to 30 s (a full disk or a damaged file waits for an operator).
const REOPEN_FIRST: Duration = Duration::from_millis(250);
const REOPEN_MAX: Duration = Duration::from_secs(30);
/// While down, commands that raced the health check are answered this often.
const DOWN_POLL: Duration = Duration::from_millis(50);
/// Job starts and ends that failed while the store was down, written after it reopens so no
/// job stays `running` on disk. Each is a few hundred bytes (results are not kept).
const REPLAY_MAX: usize = 4096;
/// Bad record ids remembered so that each is reported once.
const REPORTED_MAX: usize = 10_000;
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
}

impl Summary {
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
    fn apply(&self, r: &mut Record) {
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
    fn for_replay(&self) -> Change {
        match self {
            Change::End { status: Status::Succeeded, at_ms, .. } => Change::End {
                status: Status::Failed,
                at_ms: *at_ms,
                result: None,
                error: Some(json!({
                    "message": "the job finished, but the job store failed while saving its result",
                    "type": "service_unavailable", "param": null, "code": "job_store_failed",
                })),
            },
            c => c.clone(),
        }
    }
}

/// Why the store is down or a call failed; says nothing about paths or internals, so it
/// may go into a client's error (the log has the details).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    Damaged,
    Denied,
    Full,
    Locked,
    Io,
    /// The store refused more data: `jobs.max_store_bytes`.
    OverBudget,
    Closed,
}

impl Cause {
    pub fn phrase(self) -> &'static str {
        match self {
            Cause::Damaged => "the job store file is damaged",
            Cause::Denied => "the relay is not permitted to use the job store",
            Cause::Full => "the disk holding the job store is full",
            Cause::Locked => "the job store is in use by another process",
            Cause::Io => "the job store had an I/O error",
            Cause::OverBudget => "the job store is full (jobs.max_store_bytes)",
            Cause::Closed => "the job store is closed",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreError(pub Cause);

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0.phrase())
    }
}

/// An error inside the writer or a read: redb's (which may latch the store), or bad data.
#[derive(Debug)]
enum Fail {
    Db(redb::Error),
    Data(String),
}

macro_rules! from_redb {
    ($($t:ty),*) => {$(impl From<$t> for Fail {
        fn from(e: $t) -> Fail {
            Fail::Db(e.into())
        }
    })*};
}
from_redb!(
    redb::Error,
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    redb::SetDurabilityError
);

impl std::fmt::Display for Fail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Fail::Db(e) => write!(f, "{e}"),
            Fail::Data(e) => f.write_str(e),
        }
    }
}

impl Fail {
    /// Does this error leave the database unusable until it is reopened?
    fn latches(&self) -> bool {
        use redb::Error as E;
        matches!(
            self,
            Fail::Db(
                E::Io(_)
                    | E::PreviousIo
                    | E::Corrupted(_)
                    | E::Backend(_)
                    | E::DatabaseClosed
                    | E::LockPoisoned(_)
                    | E::DatabaseAlreadyOpen
                    | E::LockProtocolMismatch
                    | E::RepairAborted
                    | E::UpgradeRequired(_)
            )
        )
    }

    fn cause(&self) -> Cause {
        use redb::Error as E;
        let Fail::Db(e) = self else { return Cause::Damaged };
        match e {
            E::Io(io) => match io.kind() {
                std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded => Cause::Full,
                std::io::ErrorKind::PermissionDenied | std::io::ErrorKind::ReadOnlyFilesystem => Cause::Denied,
                // redb's "Not a redb database" and short files.
                std::io::ErrorKind::InvalidData | std::io::ErrorKind::UnexpectedEof => Cause::Damaged,
                _ => Cause::Io,
            },
            E::Corrupted(_) | E::RepairAborted | E::UpgradeRequired(_) => Cause::Damaged,
            E::DatabaseAlreadyOpen | E::LockProtocolMismatch => Cause::Locked,
            E::DatabaseClosed => Cause::Closed,
            _ => Cause::Io,
        }
    }
}

fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>, Fail> {
    serde_json::to_vec(v).map_err(|e| Fail::Data(format!("cannot encode a job record: {e}")))
}

/// Opens (creates) the database; called again for every reopen.
pub type Opener = Box<dyn Fn() -> Result<Database, redb::Error> + Send>;

/// The production opener: the folder 0700 and the file 0600 when they are created (job
/// records name tokens and hold model output).
pub fn file_opener(dir: PathBuf) -> Opener {
    Box::new(move || {
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(&dir)?;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(dir.join(FILE))?;
        Ok(Database::builder().create_with_backend(redb::backends::FileBackend::new(file)?)?)
    })
}

/// What the store holds, by owner, and its estimated size; kept in memory so quotas are
/// checked without I/O.
#[derive(Default)]
struct Accounts {
    owners: HashMap<String, u64>,
    bytes: u64,
}

/// The part of the store the writer and the readers share.
struct Shared {
    /// The open database, for readers; `None` while down.
    db: RwLock<Option<Arc<Database>>>,
    /// `Err(cause)` while down.
    health: Mutex<Result<(), Cause>>,
    accounts: Mutex<Accounts>,
    reported: Mutex<HashSet<String>>,
    metrics: Arc<Metrics>,
    /// For logs only.
    place: String,
}

impl Shared {
    fn db(&self) -> Result<Arc<Database>, StoreError> {
        self.health()?;
        self.db.read().unwrap_or_else(|e| e.into_inner()).clone().ok_or(StoreError(Cause::Closed))
    }

    fn health(&self) -> Result<(), StoreError> {
        (*self.health.lock().unwrap_or_else(|e| e.into_inner())).map_err(StoreError)
    }

    fn set_health(&self, h: Result<(), Cause>) {
        *self.health.lock().unwrap_or_else(|e| e.into_inner()) = h;
        self.metrics.job_store_up.set(i64::from(h.is_ok()));
    }

    fn accounts(&self) -> std::sync::MutexGuard<'_, Accounts> {
        self.accounts.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn add_bytes(&self, delta: i64) {
        let mut a = self.accounts();
        a.bytes = a.bytes.saturating_add_signed(delta);
        self.metrics.job_store_bytes.set(a.bytes as i64);
    }

    /// A record that does not decode: counted and logged once, never fatal.
    fn report_bad(&self, id: &str, error: &str) {
        let mut seen = self.reported.lock().unwrap_or_else(|e| e.into_inner());
        if seen.contains(id) {
            return;
        }
        if seen.len() < REPORTED_MAX {
            seen.insert(id.to_string());
        }
        self.metrics.job_store_bad_records.inc();
        tracing::error!(job = %id, error, store = %self.place, "a job record in the store does not decode; it is skipped");
    }

    /// Decode a record, reporting it when it is bad.
    fn decode<T: serde::de::DeserializeOwned>(&self, id: &str, bytes: &[u8]) -> Option<T> {
        match serde_json::from_slice(bytes) {
            Ok(r) => Some(r),
            Err(e) => {
                self.report_bad(id, &e.to_string());
                None
            }
        }
    }
}

enum Op {
    Put(Box<Record>),
    Change {
        id: String,
        change: Change,
        durable: bool,
    },
    Append {
        id: String,
        first: u64,
        events: Vec<String>,
        change: Change,
    },
    Purge {
        cutoff_ms: u64,
    },
    /// Make the writer check the database (a reader saw an I/O error).
    Check,
}

enum Reply {
    Done,
    Purged(Vec<Status>),
}

struct Cmd {
    op: Op,
    reply: Option<oneshot::Sender<Result<Reply, StoreError>>>,
}

pub struct Store {
    shared: Arc<Shared>,
    tx: Option<mpsc::Sender<Cmd>>,
    writer: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Store {
    /// Close the channel and wait for the writer to finish its last commit, so the file is
    /// closed (and its lock released) when the store is gone.
    fn drop(&mut self) {
        self.tx.take();
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
    }
}

/// Run blocking store work from a synchronous handler: off the worker's queue when on the
/// multi-thread runtime, inline elsewhere (tests, start-up).
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}

impl Store {
    /// Open the store in `dir`, fail what a previous process left unfinished, and start the
    /// writer. Never fails: a store that cannot open is down, and the writer keeps trying.
    pub fn start(dir: &Path, metrics: Arc<Metrics>) -> Store {
        Self::start_with(file_opener(dir.to_path_buf()), dir.join(FILE).display().to_string(), metrics)
    }

    pub fn start_with(open: Opener, place: String, metrics: Arc<Metrics>) -> Store {
        let shared = Arc::new(Shared {
            db: RwLock::new(None),
            health: Mutex::new(Err(Cause::Closed)),
            accounts: Mutex::new(Accounts::default()),
            reported: Mutex::new(HashSet::new()),
            metrics,
            place,
        });
        shared.metrics.job_store_up.set(0);
        let (tx, rx) = mpsc::channel(WRITE_QUEUE);
        let mut w = Writer {
            shared: shared.clone(),
            open,
            rx,
            db: None,
            recovered: false,
            tried: false,
            backoff: REOPEN_FIRST,
            next_try: Instant::now(),
            replay: Vec::new(),
        };
        // The first open and the recovery run before the relay serves, as they always did;
        // what happens next runs on the writer thread.
        w.try_open();
        let writer = std::thread::Builder::new().name("job-store".into()).spawn(move || w.run());
        let writer = match writer {
            Ok(h) => Some(h),
            Err(e) => {
                tracing::error!(error = %e, "cannot start the job store writer thread; async jobs are off");
                shared.set_health(Err(Cause::Closed));
                None
            }
        };
        Store { shared, tx: Some(tx), writer }
    }

    /// `Err(cause)` while the store is down.
    pub fn health(&self) -> Result<(), StoreError> {
        self.shared.health()
    }

    async fn send(&self, op: Op) -> Result<Reply, StoreError> {
        self.shared.health()?;
        let tx = self.tx.as_ref().ok_or(StoreError(Cause::Closed))?;
        let (reply, rx) = oneshot::channel();
        tx.send(Cmd { op, reply: Some(reply) }).await.map_err(|_| StoreError(Cause::Closed))?;
        rx.await.map_err(|_| StoreError(Cause::Closed))?
    }

    /// Send without waiting for the answer, for paths that cannot wait (a drop guard).
    pub fn change_detached(&self, id: &str, change: Change) {
        let cmd = Cmd { op: Op::Change { id: id.to_string(), change, durable: true }, reply: None };
        if let Some(tx) = &self.tx
            && tx.try_send(cmd).is_err()
        {
            tracing::error!(job = %id, "the job store queue is full; a job's end was not recorded");
        }
    }

    /// Store a new job (durably).
    pub async fn put(&self, r: Record) -> Result<(), StoreError> {
        self.send(Op::Put(Box::new(r))).await.map(|_| ())
    }

    /// Change one record in one transaction.
    pub async fn change(&self, id: &str, change: Change, durable: bool) -> Result<(), StoreError> {
        self.send(Op::Change { id: id.to_string(), change, durable }).await.map(|_| ())
    }

    /// Store events `first..` and the record's new progress together, so a reader never
    /// sees one without the other.
    pub async fn append(&self, id: &str, first: u64, events: Vec<String>, change: Change) -> Result<(), StoreError> {
        self.send(Op::Append { id: id.to_string(), first, events, change }).await.map(|_| ())
    }

    /// Delete finished jobs that ended before `cutoff_ms`, with their events; return the
    /// statuses of what went.
    pub async fn purge(&self, cutoff_ms: u64) -> Result<Vec<Status>, StoreError> {
        match self.send(Op::Purge { cutoff_ms }).await? {
            Reply::Purged(p) => Ok(p),
            Reply::Done => Ok(Vec::new()),
        }
    }

    /// Count a job for `owner` if it has fewer than `max`; the caller stores it or calls
    /// `unreserve`.
    pub fn reserve(&self, owner: &str, max: u64) -> bool {
        let mut a = self.shared.accounts();
        let n = a.owners.entry(owner.to_string()).or_insert(0);
        if *n >= max {
            return false;
        }
        *n += 1;
        true
    }

    pub fn unreserve(&self, owner: &str) {
        let mut a = self.shared.accounts();
        if let Some(n) = a.owners.get_mut(owner) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                a.owners.remove(owner);
            }
        }
    }

    /// Estimated bytes the store holds.
    pub fn bytes(&self) -> u64 {
        self.shared.accounts().bytes
    }

    /// A read on the blocking pool. An I/O error also tells the writer to check the file.
    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Shared, &Database) -> Result<T, Fail> + Send + 'static,
    ) -> Result<T, StoreError> {
        let db = self.shared.db()?;
        let shared = self.shared.clone();
        let res = tokio::task::spawn_blocking(move || f(&shared, &db)).await.map_err(|_| StoreError(Cause::Io))?;
        self.read_result(res)
    }

    /// A read from a synchronous handler.
    fn read_now<T>(&self, f: impl FnOnce(&Shared, &Database) -> Result<T, Fail>) -> Result<T, StoreError> {
        let db = self.shared.db()?;
        let res = blocking(|| f(&self.shared, &db));
        self.read_result(res)
    }

    fn read_result<T>(&self, res: Result<T, Fail>) -> Result<T, StoreError> {
        res.map_err(|e| {
            tracing::error!(error = %e, store = %self.shared.place, "reading the job store failed");
            if e.latches()
                && let Some(tx) = &self.tx
            {
                let _ = tx.try_send(Cmd { op: Op::Check, reply: None });
            }
            StoreError(e.cause())
        })
    }

    pub async fn get(&self, id: &str) -> Result<Option<Record>, StoreError> {
        let id = id.to_string();
        self.read(move |s, db| get(s, db, &id)).await
    }

    pub fn get_now(&self, id: &str) -> Result<Option<Record>, StoreError> {
        self.read_now(|s, db| get(s, db, id))
    }

    /// Events after `after`, in order, at most `limit`.
    pub async fn events_after(&self, id: &str, after: u64, limit: usize) -> Result<Vec<(u64, String)>, StoreError> {
        let id = id.to_string();
        self.read(move |_, db| {
            let tx = db.begin_read()?;
            let table = tx.open_table(EVENTS)?;
            let mut out = Vec::new();
            for entry in table.range((id.as_str(), after.saturating_add(1))..=(id.as_str(), u64::MAX))?.take(limit) {
                let (k, v) = entry?;
                out.push((k.value().1, String::from_utf8_lossy(v.value()).into_owned()));
            }
            Ok(out)
        })
        .await
    }

    /// An owner's jobs, newest first, starting below `after`, as summaries; and whether
    /// more follow. Records that do not decode are skipped (and reported).
    pub fn list_now(&self, owner: &str, after: Option<&str>, limit: usize) -> Result<(Vec<Summary>, bool), StoreError> {
        self.read_now(|s, db| {
            let tx = db.begin_read()?;
            let index = tx.open_table(BY_OWNER)?;
            let jobs = tx.open_table(JOBS)?;
            let ids = match after {
                Some(a) => index.range((owner, "")..(owner, a))?,
                None => index.range((owner, "")..(owner, "\u{10ffff}"))?,
            };
            let mut out = Vec::new();
            let mut more = false;
            for entry in ids.rev() {
                let (k, _) = entry?;
                let id = k.value().1;
                let Some(v) = jobs.get(id)? else { continue };
                let Some(summary) = s.decode::<Summary>(id, v.value()) else { continue };
                if out.len() == limit {
                    more = true;
                    break;
                }
                out.push(summary);
            }
            Ok((out, more))
        })
    }
}

fn get(s: &Shared, db: &Database, id: &str) -> Result<Option<Record>, Fail> {
    let tx = db.begin_read()?;
    let jobs = tx.open_table(JOBS)?;
    Ok(jobs.get(id)?.and_then(|v| s.decode(id, v.value())))
}

/// The writer thread's state: the only owner of write transactions.
struct Writer {
    shared: Arc<Shared>,
    open: Opener,
    rx: mpsc::Receiver<Cmd>,
    db: Option<Arc<Database>>,
    /// Whether a recovery ran in this process (it runs once: later reopens happen while jobs
    /// run here, and those are not orphans).
    recovered: bool,
    tried: bool,
    backoff: Duration,
    next_try: Instant,
    replay: Vec<(String, Change)>,
}

impl Writer {
    fn run(mut self) {
        loop {
            if self.db.is_none() {
                if Instant::now() >= self.next_try {
                    self.try_open();
                }
                if self.db.is_none() && !self.wait_down() {
                    break;
                }
                continue;
            }
            let Some(first) = self.rx.blocking_recv() else { break };
            let mut batch = vec![first];
            while batch.len() < GROUP_MAX
                && let Ok(c) = self.rx.try_recv()
            {
                batch.push(c);
            }
            self.execute(batch);
        }
        self.close();
        self.shared.set_health(Err(Cause::Closed));
    }

    /// Down: answer commands with the cause until the next reopen is due; `false` when the
    /// store is being dropped.
    fn wait_down(&mut self) -> bool {
        let cause = self.shared.health().err().map_or(Cause::Closed, |e| e.0);
        loop {
            match self.rx.try_recv() {
                Ok(cmd) => {
                    self.keep_for_replay(&cmd.op);
                    if let Some(r) = cmd.reply {
                        let _ = r.send(Err(StoreError(cause)));
                    }
                    continue;
                }
                Err(mpsc::error::TryRecvError::Disconnected) => return false,
                Err(mpsc::error::TryRecvError::Empty) => {}
            }
            let now = Instant::now();
            if now >= self.next_try {
                return true;
            }
            std::thread::sleep((self.next_try - now).min(DOWN_POLL));
        }
    }

    fn keep_for_replay(&mut self, op: &Op) {
        if let Op::Change { id, change, durable: true } = op
            && self.replay.len() < REPLAY_MAX
        {
            self.replay.push((id.clone(), change.for_replay()));
        }
    }

    fn close(&mut self) {
        *self.shared.db.write().unwrap_or_else(|e| e.into_inner()) = None;
        self.db = None;
    }

    fn try_open(&mut self) {
        let was_open = self.recovered;
        let first_try = !std::mem::replace(&mut self.tried, true);
        let res = (self.open)().map_err(Fail::Db).and_then(|db| {
            init(&db)?;
            Ok(db)
        });
        let db = match res {
            Ok(db) => Arc::new(db),
            Err(e) => return self.failed(e, "cannot open the job store"),
        };
        if !self.recovered {
            match recover(&self.shared, &db, crate::jobs::now_ms()) {
                Ok(()) => self.recovered = true,
                Err(e) => return self.failed(e, "recovering the job store failed"),
            }
        }
        if !self.replay.is_empty() {
            let replay = std::mem::take(&mut self.replay);
            let n = replay.len();
            let res = (|| -> Result<(), Fail> {
                let tx = db.begin_write()?;
                {
                    let mut jobs = tx.open_table(JOBS)?;
                    for (id, change) in &replay {
                        update(&self.shared, &mut jobs, id, change)?;
                    }
                }
                tx.commit()?;
                Ok(())
            })();
            if let Err(e) = res {
                self.replay = replay;
                return self.failed(e, "writing job ends after a reopen failed");
            }
            tracing::info!(jobs = n, "job starts and ends held while the store was down are written");
        }
        *self.shared.db.write().unwrap_or_else(|e| e.into_inner()) = Some(db.clone());
        self.db = Some(db);
        self.backoff = REOPEN_FIRST;
        self.shared.set_health(Ok(()));
        if was_open {
            self.shared.metrics.job_store_reopens.inc();
        }
        if !first_try {
            tracing::warn!(store = %self.shared.place, "the job store is open again; async jobs are back");
        }
    }

    /// Mark the store down (closing the database) and schedule the next open.
    fn failed(&mut self, e: Fail, what: &str) {
        let cause = e.cause();
        let was_up = self.shared.health().is_ok();
        self.close();
        self.shared.set_health(Err(cause));
        if was_up || self.backoff == REOPEN_FIRST {
            tracing::error!(
                error = %e, store = %self.shared.place, cause = cause.phrase(),
                retry_in = ?self.backoff,
                "{what}: async jobs answer 503 until it opens; synchronous requests are not affected"
            );
        } else {
            tracing::warn!(error = %e, store = %self.shared.place, retry_in = ?self.backoff, "{what}");
        }
        self.next_try = Instant::now() + self.backoff;
        self.backoff = (self.backoff * 2).min(REOPEN_MAX);
    }

    fn execute(&mut self, batch: Vec<Cmd>) {
        let Some(db) = self.db.clone() else { return };
        let (purges, writes): (Vec<Cmd>, Vec<Cmd>) =
            batch.into_iter().partition(|c| matches!(c.op, Op::Purge { .. } | Op::Check));
        if !writes.is_empty() {
            match commit_group(&self.shared, &db, &writes) {
                Ok(added) => {
                    self.shared.add_bytes(added as i64);
                    let events: u64 = writes
                        .iter()
                        .map(|c| if let Op::Append { events, .. } = &c.op { events.len() as u64 } else { 0 })
                        .sum();
                    self.shared.metrics.job_events.add(events);
                    for c in writes {
                        if let Some(r) = c.reply {
                            let _ = r.send(Ok(Reply::Done));
                        }
                    }
                }
                Err(e) => {
                    let cause = e.cause();
                    if e.latches() {
                        for c in &writes {
                            self.keep_for_replay(&c.op);
                        }
                        self.failed(e, "writing to the job store failed");
                    } else {
                        tracing::error!(error = %e, "a job store write failed");
                    }
                    for c in writes {
                        if let Some(r) = c.reply {
                            let _ = r.send(Err(StoreError(cause)));
                        }
                    }
                }
            }
        }
        for c in purges {
            let res = match (&self.db, &c.op) {
                (Some(db), Op::Purge { cutoff_ms }) => purge(&self.shared, db, *cutoff_ms).map(Reply::Purged),
                // An empty durable commit: writes the header, so a latched file shows itself.
                (Some(db), _) => (|| {
                    let tx = db.begin_write()?;
                    tx.commit()?;
                    Ok(Reply::Done)
                })(),
                (None, _) => Err(Fail::Db(redb::Error::DatabaseClosed)),
            };
            let res = res.map_err(|e| {
                let cause = e.cause();
                if e.latches() && self.db.is_some() {
                    self.failed(e, "the job store failed");
                } else {
                    tracing::error!(error = %e, "purging expired jobs failed");
                }
                StoreError(cause)
            });
            if let Some(r) = c.reply {
                let _ = r.send(res);
            }
        }
    }
}

fn init(db: &Database) -> Result<(), Fail> {
    let tx = db.begin_write()?;
    tx.open_table(JOBS)?;
    tx.open_table(EVENTS)?;
    tx.open_table(BY_OWNER)?;
    tx.open_table(QUARANTINE)?;
    tx.commit()?;
    Ok(())
}

/// Change one record in an open write transaction; a missing record is left alone, a bad
/// one is reported and left alone.
fn update(
    s: &Shared,
    jobs: &mut redb::Table<'_, &'static str, &'static [u8]>,
    id: &str,
    change: &Change,
) -> Result<(), Fail> {
    let Some(mut r) = jobs.get(id)?.and_then(|v| s.decode::<Record>(id, v.value())) else { return Ok(()) };
    change.apply(&mut r);
    jobs.insert(id, encode(&r)?.as_slice())?;
    Ok(())
}

/// Every waiting write in one transaction; returns the store bytes they added.
fn commit_group(s: &Shared, db: &Database, cmds: &[Cmd]) -> Result<u64, Fail> {
    let mut tx = db.begin_write()?;
    let durable = cmds.iter().any(|c| matches!(c.op, Op::Put(_) | Op::Change { durable: true, .. }));
    if !durable {
        tx.set_durability(Durability::None)?;
    }
    let mut added = 0u64;
    {
        let mut jobs = tx.open_table(JOBS)?;
        let mut events = tx.open_table(EVENTS)?;
        let mut index = tx.open_table(BY_OWNER)?;
        for c in cmds {
            match &c.op {
                Op::Put(r) => {
                    jobs.insert(r.id.as_str(), encode(r)?.as_slice())?;
                    index.insert((r.owner.as_str(), r.id.as_str()), ())?;
                    added += JOB_OVERHEAD;
                }
                Op::Change { id, change, .. } => update(s, &mut jobs, id, change)?,
                Op::Append { id, first, events: batch, change } => {
                    for (i, e) in batch.iter().enumerate() {
                        events.insert((id.as_str(), first + i as u64), e.as_bytes())?;
                        added += 2 * e.len() as u64 + EVENT_OVERHEAD;
                    }
                    update(s, &mut jobs, id, change)?;
                }
                Op::Purge { .. } | Op::Check => {}
            }
        }
    }
    tx.commit()?;
    Ok(added)
}

/// Fail every job a previous process left queued or running (its request body was only in
/// memory, its vendor call is gone); move records that do not decode to `quarantine`;
/// count what the store holds (status gauges, owners, bytes).
fn recover(s: &Shared, db: &Database, now_ms: u64) -> Result<(), Fail> {
    let mut counts = [0i64; 5];
    let mut accounts = Accounts::default();
    let tx = db.begin_write()?;
    {
        let mut jobs = tx.open_table(JOBS)?;
        let mut orphans = Vec::new();
        let mut bad = Vec::new();
        for entry in jobs.iter()? {
            let (k, v) = entry?;
            let id = k.value();
            let Some(r) = s.decode::<Summary>(id, v.value()) else {
                bad.push((id.to_string(), v.value().to_vec()));
                continue;
            };
            *accounts.owners.entry(r.owner.clone()).or_insert(0) += 1;
            accounts.bytes += job_cost(r.bytes, r.events);
            if r.status.finished() {
                counts[r.status.index()] += 1;
            } else {
                orphans.push(r.id);
            }
        }
        for id in orphans {
            let Some(mut r) = jobs.get(id.as_str())?.and_then(|v| s.decode::<Record>(&id, v.value())) else {
                continue;
            };
            let was = r.status.as_str();
            r.status = Status::Failed;
            r.finished_ms = Some(now_ms);
            r.error = Some(json!({
                "message": format!("the relay restarted while this job was {was}; it did not finish and its output may be partial"),
                "type": "service_unavailable",
                "param": null,
                "code": "job_interrupted",
            }));
            jobs.insert(r.id.as_str(), encode(&r)?.as_slice())?;
            counts[Status::Failed.index()] += 1;
            tracing::warn!(job = %r.id, was, "job interrupted by a restart marked failed");
        }
        if !bad.is_empty() {
            let mut quarantine = tx.open_table(QUARANTINE)?;
            let mut events = tx.open_table(EVENTS)?;
            let ids: HashSet<&str> = bad.iter().map(|(id, _)| id.as_str()).collect();
            for (id, raw) in &bad {
                quarantine.insert(id.as_str(), raw.as_slice())?;
                jobs.remove(id.as_str())?;
                events.retain_in((id.as_str(), 0)..=(id.as_str(), u64::MAX), |_, _| false)?;
            }
            tx.open_table(BY_OWNER)?.retain(|k, _| !ids.contains(k.1))?;
            tracing::warn!(records = bad.len(), "job records that do not decode were moved to the quarantine table");
        }
    }
    tx.commit()?;
    for (g, n) in s.metrics.jobs.iter().zip(counts) {
        g.set(n);
    }
    s.metrics.job_store_bytes.set(accounts.bytes as i64);
    *s.accounts() = accounts;
    Ok(())
}

/// Delete finished jobs that ended before `cutoff_ms`, with their events. Reads summaries
/// only; records that do not decode are skipped.
fn purge(s: &Shared, db: &Database, cutoff_ms: u64) -> Result<Vec<Status>, Fail> {
    let expired: Vec<Summary> = {
        let tx = db.begin_read()?;
        let jobs = tx.open_table(JOBS)?;
        let mut out = Vec::new();
        for entry in jobs.iter()? {
            let (k, v) = entry?;
            let Some(r) = s.decode::<Summary>(k.value(), v.value()) else { continue };
            if r.status.finished() && r.finished_ms.is_some_and(|t| t < cutoff_ms) {
                out.push(r);
            }
        }
        out
    };
    if expired.is_empty() {
        return Ok(Vec::new());
    }
    let tx = db.begin_write()?;
    {
        let mut jobs = tx.open_table(JOBS)?;
        let mut events = tx.open_table(EVENTS)?;
        let mut index = tx.open_table(BY_OWNER)?;
        for r in &expired {
            jobs.remove(r.id.as_str())?;
            index.remove((r.owner.as_str(), r.id.as_str()))?;
            events.retain_in((r.id.as_str(), 0)..=(r.id.as_str(), u64::MAX), |_, _| false)?;
        }
    }
    tx.commit()?;
    let mut a = s.accounts();
    for r in &expired {
        a.bytes = a.bytes.saturating_sub(job_cost(r.bytes, r.events));
        if let Some(n) = a.owners.get_mut(&r.owner) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                a.owners.remove(&r.owner);
            }
        }
    }
    s.metrics.job_store_bytes.set(a.bytes as i64);
    Ok(expired.iter().map(|r| r.status).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};

    fn record(id: &str, owner: &str, status: Status) -> Record {
        Record {
            id: id.into(),
            owner: owner.into(),
            token: "t".into(),
            endpoint: "chat.completions".into(),
            model: "m".into(),
            request_id: "r".into(),
            status,
            created_ms: 1,
            finished_ms: status.finished().then_some(10),
            ..Record::default()
        }
    }

    fn progress(events: u64) -> Change {
        Change::Progress { events, bytes: events, completion_tokens: 0, last_event_ms: 5 }
    }

    fn ids(page: &[Summary]) -> Vec<&str> {
        page.iter().map(|r| r.id.as_str()).collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn events_list_recover_purge() {
        let dir = tempfile::tempdir().unwrap();
        let m = Arc::new(Metrics::default());
        let s = Store::start(dir.path(), m.clone());
        assert!(s.health().is_ok());
        assert_eq!(m.job_store_up.get(), 1);
        for (id, st) in [("job_1", Status::Succeeded), ("job_2", Status::Running), ("job_3", Status::Queued)] {
            s.put(record(id, "a", st)).await.unwrap();
        }
        s.put(record("job_4", "b", Status::Succeeded)).await.unwrap();
        s.append("job_2", 1, vec!["x".into(), "y".into()], progress(2)).await.unwrap();
        s.append("job_2", 3, vec!["z".into()], progress(3)).await.unwrap();
        assert_eq!(s.events_after("job_2", 1, 10).await.unwrap(), vec![(2, "y".into()), (3, "z".into())]);
        assert_eq!(s.events_after("job_2", 0, 1).await.unwrap(), vec![(1, "x".into())]);
        assert!(s.events_after("job_1", 0, 10).await.unwrap().is_empty());
        assert_eq!(s.bytes(), 4 * JOB_OVERHEAD + 2 * 3 + 3 * EVENT_OVERHEAD);

        let (page, more) = s.list_now("a", None, 2).unwrap();
        assert_eq!(ids(&page), ["job_3", "job_2"]);
        assert!(more);
        let (page, more) = s.list_now("a", Some("job_2"), 2).unwrap();
        assert_eq!(ids(&page), ["job_1"]);
        assert!(!more);

        drop(s);
        let s = Store::start(dir.path(), m.clone());
        let counts: Vec<i64> = m.jobs.iter().map(|g| g.get()).collect();
        assert_eq!(counts, [0, 0, 2, 2, 0]);
        let r = s.get("job_2").await.unwrap().unwrap();
        assert_eq!(r.status, Status::Failed);
        assert_eq!(r.error.unwrap()["code"], "job_interrupted");
        assert_eq!(s.bytes(), 4 * JOB_OVERHEAD + job_cost(3, 3) - JOB_OVERHEAD);

        // job_1 and job_4 finished at 10, the recovered ones now.
        assert_eq!(s.purge(15).await.unwrap().len(), 2);
        assert!(s.get("job_1").await.unwrap().is_none());
        assert_eq!(s.purge(u64::MAX).await.unwrap().len(), 2);
        assert!(s.events_after("job_2", 0, 10).await.unwrap().is_empty());
        assert!(s.list_now("a", None, 10).unwrap().0.is_empty());
        assert_eq!(s.bytes(), 0);
        assert_eq!(m.job_store_bytes.get(), 0);
    }

    /// Write a raw value for `id` (and its index entry) as another program would.
    fn write_raw(dir: &Path, id: &str, owner: &str, raw: &[u8]) {
        let db = Database::create(dir.join(FILE)).unwrap();
        let tx = db.begin_write().unwrap();
        tx.open_table(JOBS).unwrap().insert(id, raw).unwrap();
        tx.open_table(BY_OWNER).unwrap().insert((owner, id), ()).unwrap();
        tx.open_table(EVENTS).unwrap().insert((id, 1), b"e".as_slice()).unwrap();
        tx.commit().unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn undecodable_records_are_quarantined_and_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let m = Arc::new(Metrics::default());
        let s = Store::start(dir.path(), m.clone());
        s.put(record("job_1", "a", Status::Succeeded)).await.unwrap();
        s.put(record("job_3", "a", Status::Succeeded)).await.unwrap();
        drop(s);
        write_raw(dir.path(), "job_2", "a", b"{not json");
        // A record from a later release with a field this one does not know, and one
        // missing fields: both read.
        write_raw(
            dir.path(),
            "job_4",
            "a",
            br#"{"id":"job_4","owner":"a","status":"succeeded","finished_ms":10,"new_field":[1]}"#,
        );

        let s = Store::start(dir.path(), m.clone());
        assert!(s.health().is_ok());
        assert_eq!(m.job_store_bad_records.get(), 1);
        let (page, _) = s.list_now("a", None, 10).unwrap();
        assert_eq!(ids(&page), ["job_4", "job_3", "job_1"]);
        assert!(s.get("job_2").await.unwrap().is_none());
        assert!(s.events_after("job_2", 0, 10).await.unwrap().is_empty());
        {
            let db = s.shared.db().unwrap();
            let tx = db.begin_read().unwrap();
            assert_eq!(tx.open_table(QUARANTINE).unwrap().get("job_2").unwrap().unwrap().value(), b"{not json");
        }
        assert_eq!(s.purge(u64::MAX).await.unwrap().len(), 3);
        drop(s);

        // A record that goes bad while the relay runs is skipped by list, get and purge,
        // and reported once.
        let s = Store::start(dir.path(), m.clone());
        s.put(record("job_5", "a", Status::Succeeded)).await.unwrap();
        {
            let db = s.shared.db().unwrap();
            let tx = db.begin_write().unwrap();
            tx.open_table(JOBS).unwrap().insert("job_6", b"\xff".as_slice()).unwrap();
            tx.open_table(BY_OWNER).unwrap().insert(("a", "job_6"), ()).unwrap();
            tx.commit().unwrap();
        }
        assert_eq!(ids(&s.list_now("a", None, 10).unwrap().0), ["job_5"]);
        assert!(s.get("job_6").await.unwrap().is_none());
        assert_eq!(s.purge(u64::MAX).await.unwrap(), [Status::Succeeded]);
        assert_eq!(m.job_store_bad_records.get(), 2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_damaged_file_leaves_the_store_down_until_it_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FILE), vec![0x5a; 8192]).unwrap();
        let m = Arc::new(Metrics::default());
        let s = Store::start(dir.path(), m.clone());
        assert_eq!(s.health(), Err(StoreError(Cause::Damaged)));
        assert_eq!(m.job_store_up.get(), 0);
        assert_eq!(s.put(record("job_1", "a", Status::Queued)).await, Err(StoreError(Cause::Damaged)));
        assert!(s.list_now("a", None, 10).is_err());
        // The operator moves the file away: the writer opens a fresh store by itself.
        std::fs::rename(dir.path().join(FILE), dir.path().join("jobs.redb.damaged")).unwrap();
        let end = Instant::now() + Duration::from_secs(10);
        while s.health().is_err() {
            assert!(Instant::now() < end, "the store did not reopen");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        s.put(record("job_1", "a", Status::Queued)).await.unwrap();
        assert_eq!(m.job_store_up.get(), 1);
    }

    /// A memory backend that fails writes and syncs while `fail` is set, as a full disk does.
    #[derive(Debug)]
    struct Flaky {
        inner: Arc<redb::backends::InMemoryBackend>,
        fail: Arc<AtomicBool>,
    }

    impl Flaky {
        fn check(&self) -> std::io::Result<()> {
            if self.fail.load(Ordering::SeqCst) {
                return Err(std::io::Error::from(std::io::ErrorKind::StorageFull));
            }
            Ok(())
        }
    }

    impl redb::StorageBackend for Flaky {
        fn len(&self) -> std::io::Result<u64> {
            self.inner.len()
        }
        fn read(&self, offset: u64, out: &mut [u8]) -> std::io::Result<()> {
            self.inner.read(offset, out)
        }
        fn set_len(&self, len: u64) -> std::io::Result<()> {
            self.check()?;
            self.inner.set_len(len)
        }
        fn sync_data(&self) -> std::io::Result<()> {
            self.check()?;
            self.inner.sync_data()
        }
        fn write(&self, offset: u64, data: &[u8]) -> std::io::Result<()> {
            self.check()?;
            self.inner.write(offset, data)
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_io_error_latches_and_the_store_reopens_when_it_clears() {
        let inner = Arc::new(redb::backends::InMemoryBackend::new());
        let fail = Arc::new(AtomicBool::new(false));
        let (i, f) = (inner.clone(), fail.clone());
        let open: Opener =
            Box::new(move || Ok(Database::builder().create_with_backend(Flaky { inner: i.clone(), fail: f.clone() })?));
        let m = Arc::new(Metrics::default());
        let s = Store::start_with(open, "memory".into(), m.clone());
        s.put(record("job_1", "a", Status::Queued)).await.unwrap();
        s.change("job_1", Change::Start { at_ms: 2 }, true).await.unwrap();

        // The disk fills: the job's (durable) end fails, the store is down, and what comes
        // next is answered at once with the cause.
        fail.store(true, Ordering::SeqCst);
        let end = Change::End { status: Status::Succeeded, at_ms: 3, result: Some(json!({"big": true})), error: None };
        assert_eq!(s.change("job_1", end, true).await, Err(StoreError(Cause::Full)));
        assert_eq!(s.health(), Err(StoreError(Cause::Full)));
        assert_eq!(m.job_store_up.get(), 0);
        assert_eq!(s.put(record("job_2", "a", Status::Queued)).await, Err(StoreError(Cause::Full)));

        fail.store(false, Ordering::SeqCst);
        let deadline = Instant::now() + Duration::from_secs(10);
        while s.health().is_err() {
            assert!(Instant::now() < deadline, "the store did not reopen");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(m.job_store_reopens.get(), 1);
        let r = s.get("job_1").await.unwrap().unwrap();
        assert_eq!(r.status, Status::Failed, "{r:?}");
        assert_eq!(r.error.unwrap()["code"], "job_store_failed");
        s.append("job_1", 1, vec!["y".into()], progress(1)).await.unwrap();
        assert_eq!(s.events_after("job_1", 0, 10).await.unwrap(), vec![(1, "y".into())]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn owner_quota_counts_stored_jobs_until_purged() {
        let dir = tempfile::tempdir().unwrap();
        let m = Arc::new(Metrics::default());
        let s = Store::start(dir.path(), m.clone());
        for i in 0..3 {
            assert!(s.reserve("a", 3));
            s.put(record(&format!("job_{i}"), "a", Status::Succeeded)).await.unwrap();
        }
        assert!(!s.reserve("a", 3), "a fourth job passes the quota of 3");
        assert!(s.reserve("b", 3), "another owner has its own quota");
        s.unreserve("b");
        drop(s);
        // Counts survive a restart (they are rebuilt from the store) and drop with the purge.
        let s = Store::start(dir.path(), m.clone());
        assert!(!s.reserve("a", 3));
        assert_eq!(s.purge(u64::MAX).await.unwrap().len(), 3);
        assert!(s.reserve("a", 3));
    }
}
