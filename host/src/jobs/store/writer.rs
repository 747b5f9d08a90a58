//! The writer thread: the command queue, group commit, open and reopen with backoff, recovery and purge.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use redb::{Database, Durability, ReadableDatabase, ReadableTable};
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

use super::error::{Cause, Fail, StoreError};
use super::record::{Change, EVENT_OVERHEAD, Record, Status, Summary};
use super::{Accounts, BY_OWNER, EVENTS, FILE, JOBS, QUARANTINE, Shared};
use crate::error::{ErrorKind, RelayError, openai};

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

pub(super) enum Op {
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
    /// Remove one record and its events.
    Delete {
        id: String,
    },
    /// Make the writer check the database (a reader saw an I/O error).
    Check,
}

pub(super) enum Reply {
    Done,
    Purged(Vec<Status>),
    Deleted(Option<Summary>),
}

pub(super) struct Cmd {
    pub(super) op: Op,
    pub(super) reply: Option<oneshot::Sender<Result<Reply, StoreError>>>,
}

/// The writer thread's state: the only owner of write transactions.
pub(super) struct Writer {
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
    pub(super) fn new(shared: Arc<Shared>, open: Opener, rx: mpsc::Receiver<Cmd>) -> Writer {
        Writer {
            shared,
            open,
            rx,
            db: None,
            recovered: false,
            tried: false,
            backoff: REOPEN_FIRST,
            next_try: Instant::now(),
            replay: Vec::new(),
        }
    }

    pub(super) fn run(mut self) {
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
                    settled(&self.shared, &cmd);
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

    pub(super) fn try_open(&mut self) {
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
            batch.into_iter().partition(|c| matches!(c.op, Op::Purge { .. } | Op::Delete { .. } | Op::Check));
        if !writes.is_empty() {
            let result = commit_group(&self.shared, &db, &writes);
            for c in &writes {
                settled(&self.shared, c);
            }
            match result {
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
                (Some(db), Op::Delete { id }) => delete(&self.shared, db, id).map(Reply::Deleted),
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

/// A detached put is committed or refused: readers find it in the database from now on, or
/// not at all.
fn settled(s: &Shared, cmd: &Cmd) {
    if let (Op::Put(r), None) = (&cmd.op, &cmd.reply)
        && s.pending().remove(&r.id).is_some()
    {
        let mut a = s.accounts();
        a.pending = a.pending.saturating_sub(r.summary().cost());
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

fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>, Fail> {
    serde_json::to_vec(v).map_err(|e| Fail::Data(format!("cannot encode a job record: {e}")))
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
                    added += r.summary().cost();
                }
                Op::Change { id, change, .. } => update(s, &mut jobs, id, change)?,
                Op::Append { id, first, events: batch, change } => {
                    for (i, e) in batch.iter().enumerate() {
                        events.insert((id.as_str(), first + i as u64), e.as_bytes())?;
                        added += 2 * e.len() as u64 + EVENT_OVERHEAD;
                    }
                    update(s, &mut jobs, id, change)?;
                }
                Op::Purge { .. } | Op::Delete { .. } | Op::Check => {}
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
            accounts.bytes += r.cost();
            if r.foreground {
                continue;
            }
            *accounts.owners.entry(r.owner.clone()).or_insert(0) += 1;
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
            r.error = Some(openai::object(&RelayError::new(
                ErrorKind::JobInterrupted,
                format!(
                    "the relay restarted while this job was {was}; it did not finish and its output may be partial"
                ),
            )));
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

/// Remove one record, its index entry and its events; the summary of what went.
fn delete(s: &Shared, db: &Database, id: &str) -> Result<Option<Summary>, Fail> {
    let tx = db.begin_write()?;
    let gone = {
        let mut jobs = tx.open_table(JOBS)?;
        let found = jobs.remove(id)?.and_then(|v| s.decode::<Summary>(id, v.value()));
        if let Some(r) = &found {
            tx.open_table(BY_OWNER)?.remove((r.owner.as_str(), id))?;
            tx.open_table(EVENTS)?.retain_in((id, 0)..=(id, u64::MAX), |_, _| false)?;
        }
        found
    };
    tx.commit()?;
    if let Some(r) = &gone {
        forget(s, std::slice::from_ref(r));
    }
    Ok(gone)
}

/// Take removed records out of the accounts.
fn forget(s: &Shared, gone: &[Summary]) {
    let mut a = s.accounts();
    for r in gone {
        a.bytes = a.bytes.saturating_sub(r.cost());
        if r.foreground {
            continue;
        }
        if let Some(n) = a.owners.get_mut(&r.owner) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                a.owners.remove(&r.owner);
            }
        }
    }
    s.metrics.job_store_bytes.set(a.bytes as i64);
}

/// Delete finished records that ended before `cutoff_ms`, with their events; the statuses of
/// the jobs among them (foreground responses are not in the job gauges). Reads summaries
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
    forget(s, &expired);
    Ok(expired.iter().filter(|r| !r.foreground).map(|r| r.status).collect())
}
