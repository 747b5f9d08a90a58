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

mod error;
mod record;
mod writer;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};

use redb::{Database, ReadableDatabase, TableDefinition};
use tokio::sync::{mpsc, oneshot};

use crate::metrics::Metrics;

use error::Fail;
pub use error::{Cause, StoreError};
pub use record::{Change, JOB_OVERHEAD, Record, Status, Summary, job_cost};
use writer::{Cmd, Op, Opener, Reply, Writer, file_opener};

const JOBS: TableDefinition<&str, &[u8]> = TableDefinition::new("jobs");
const EVENTS: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("events");
const BY_OWNER: TableDefinition<(&str, &str), ()> = TableDefinition::new("by_owner");
const QUARANTINE: TableDefinition<&str, &[u8]> = TableDefinition::new("quarantine");
pub const FILE: &str = "jobs.redb";

/// Commands waiting for the writer. When the disk falls behind, submitters and running
/// jobs wait for room (backpressure from the disk) instead of queueing without bound.
const WRITE_QUEUE: usize = 1024;
/// Bad record ids remembered so that each is reported once.
const REPORTED_MAX: usize = 10_000;

/// What the store holds, by owner, and its estimated size; kept in memory so quotas are
/// checked without I/O.
#[derive(Default)]
struct Accounts {
    owners: HashMap<String, u64>,
    bytes: u64,
    /// What the detached puts not yet committed will add.
    pending: u64,
}

/// The part of the store the writer and the readers share.
struct Shared {
    /// The open database, for readers; `None` while down.
    db: RwLock<Option<Arc<Database>>>,
    /// `Err(cause)` while down.
    health: Mutex<Result<(), Cause>>,
    accounts: Mutex<Accounts>,
    reported: Mutex<HashSet<String>>,
    /// Records sent by `put_detached` and not yet committed (or refused): reads see them at
    /// once, so a response is there for the next request as soon as its answer has ended.
    /// At most `WRITE_QUEUE` (each is a queued command).
    pending: Mutex<HashMap<String, Record>>,
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

    fn pending(&self) -> std::sync::MutexGuard<'_, HashMap<String, Record>> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
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
            pending: Mutex::new(HashMap::new()),
            metrics,
            place,
        });
        shared.metrics.job_store_up.set(0);
        let (tx, rx) = mpsc::channel(WRITE_QUEUE);
        let mut w = Writer::new(shared.clone(), open, rx);
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
            Reply::Done | Reply::Deleted(_) => Ok(Vec::new()),
        }
    }

    /// Remove a record and its events; the summary of what was removed, `None` if nothing was.
    pub async fn delete(&self, id: &str) -> Result<Option<Summary>, StoreError> {
        match self.send(Op::Delete { id: id.to_string() }).await? {
            Reply::Deleted(r) => Ok(r),
            Reply::Done | Reply::Purged(_) => Ok(None),
        }
    }

    /// Store a finished record without waiting, for an answer already on its way to the
    /// client; `false` when the write queue is full or the store is down (it is not stored).
    pub fn put_detached(&self, r: Record) -> bool {
        let Some(tx) = self.tx.as_ref().filter(|_| self.shared.health().is_ok()) else { return false };
        let id = r.id.clone();
        // In the map (and its bytes counted) before the writer can take it out.
        let cost = r.summary().cost();
        self.shared.pending().insert(id.clone(), r.clone());
        self.shared.accounts().pending += cost;
        if tx.try_send(Cmd { op: Op::Put(Box::new(r)), reply: None }).is_err() {
            self.shared.pending().remove(&id);
            let mut a = self.shared.accounts();
            a.pending = a.pending.saturating_sub(cost);
            return false;
        }
        true
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

    /// Estimated bytes the store holds, with the detached puts on their way.
    pub fn bytes(&self) -> u64 {
        let a = self.shared.accounts();
        a.bytes + a.pending
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
        if let Some(r) = self.shared.pending().get(id) {
            return Ok(Some(r.clone()));
        }
        let id = id.to_string();
        self.read(move |s, db| get(s, db, &id)).await
    }

    pub fn get_now(&self, id: &str) -> Result<Option<Record>, StoreError> {
        if let Some(r) = self.shared.pending().get(id) {
            return Ok(Some(r.clone()));
        }
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

    /// An owner's jobs (not its foreground responses), newest first, starting below `after`, as summaries; and whether
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
                if summary.foreground {
                    continue;
                }
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

#[cfg(test)]
mod tests {
    use super::record::EVENT_OVERHEAD;
    use super::*;
    use serde_json::json;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::{Duration, Instant};

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
    async fn foreground_responses_are_stored_but_not_jobs_and_delete_frees_them() {
        let dir = tempfile::tempdir().unwrap();
        let m = Arc::new(Metrics::default());
        let s = Store::start(dir.path(), m.clone());
        let fg = Record { foreground: true, stored_bytes: 500, ..record("resp_1", "a", Status::Succeeded) };
        assert!(s.put_detached(fg));
        s.put(record("job_2", "a", Status::Succeeded)).await.unwrap();
        s.append("job_2", 1, vec!["x".into()], progress(1)).await.unwrap();
        assert!(s.get("resp_1").await.unwrap().is_some_and(|r| r.foreground));
        assert_eq!(s.bytes(), JOB_OVERHEAD + 500 + job_cost(1, 1));
        assert_eq!(ids(&s.list_now("a", None, 10).unwrap().0), ["job_2"], "the job list skips responses");
        drop(s);
        // After a restart: counted in bytes, not in the job gauges or the owner's quota.
        let s = Store::start(dir.path(), m.clone());
        assert_eq!(s.bytes(), JOB_OVERHEAD + 500 + job_cost(1, 1));
        assert_eq!(m.jobs[Status::Succeeded.index()].get(), 1);
        assert!(s.reserve("a", 2) && !s.reserve("a", 2), "one job and one reservation fill a quota of 2");
        s.unreserve("a");

        let gone = s.delete("job_2").await.unwrap().unwrap();
        assert_eq!((gone.id.as_str(), gone.status, gone.foreground), ("job_2", Status::Succeeded, false));
        assert!(s.get("job_2").await.unwrap().is_none());
        assert!(s.events_after("job_2", 0, 10).await.unwrap().is_empty());
        assert!(s.delete("job_2").await.unwrap().is_none());
        assert!(s.reserve("a", 1), "a deleted job frees its place");
        s.unreserve("a");
        // The purge takes the response and reports no job status for it.
        assert!(s.purge(u64::MAX).await.unwrap().is_empty());
        assert!(s.get("resp_1").await.unwrap().is_none());
        assert_eq!(s.bytes(), 0);
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
