//! The job store: one redb file, `<jobs.path>/jobs.redb`.
//!
//! Tables: `jobs` (id → the record as JSON), `events` ((id, seq) → one output event),
//! `by_owner` ((owner, id) → ()) for listing. Ids start with the creation time in hex, so
//! key order is creation order. Event batches commit without fsync; a job's start and end
//! commit durably, which also makes every batch before them durable.

use std::path::Path;

use anyhow::{Context, Result};
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

const JOBS: TableDefinition<&str, &[u8]> = TableDefinition::new("jobs");
const EVENTS: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("events");
const BY_OWNER: TableDefinition<(&str, &str), ()> = TableDefinition::new("by_owner");
const FILE: &str = "jobs.redb";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Queued,
    Running,
    Succeeded,
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

#[derive(Debug, Clone, Serialize, Deserialize)]
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

impl Record {
    /// The job as clients see it.
    pub fn to_json(&self, now_ms: u64) -> Value {
        let elapsed = self.started_ms.map_or(0, |s| self.finished_ms.unwrap_or(now_ms).saturating_sub(s));
        let mut v = json!({
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
        });
        if let Some(r) = &self.result {
            v["result"] = r.clone();
        }
        if let Some(e) = &self.error {
            v["error"] = e.clone();
        }
        v
    }
}

pub struct Store {
    db: Database,
}

fn decode(bytes: &[u8]) -> Result<Record> {
    serde_json::from_slice(bytes).context("a job record in the store is corrupt")
}

impl Store {
    pub fn open(dir: &Path) -> Result<Store> {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create the job store folder {}", dir.display()))?;
        let path = dir.join(FILE);
        let db = Database::create(&path).with_context(|| format!("cannot open the job store {}", path.display()))?;
        let tx = db.begin_write()?;
        tx.open_table(JOBS)?;
        tx.open_table(EVENTS)?;
        tx.open_table(BY_OWNER)?;
        tx.commit()?;
        Ok(Store { db })
    }

    /// Fail every job a previous process left queued or running (its request body was only
    /// in memory, its vendor call is gone); return the number of jobs by status.
    pub fn recover(&self, now_ms: u64) -> Result<[u64; 5]> {
        let mut counts = [0u64; 5];
        let tx = self.db.begin_write()?;
        {
            let mut jobs = tx.open_table(JOBS)?;
            let mut orphans = Vec::new();
            for entry in jobs.iter()? {
                let (_, v) = entry?;
                let r = decode(v.value())?;
                if r.status.finished() {
                    counts[r.status.index()] += 1;
                } else {
                    orphans.push(r);
                }
            }
            for mut r in orphans {
                let was = r.status.as_str();
                r.status = Status::Failed;
                r.finished_ms = Some(now_ms);
                r.error = Some(json!({
                    "message": format!("the relay restarted while this job was {was}; it did not finish and its output may be partial"),
                    "type": "service_unavailable",
                    "param": null,
                    "code": "job_interrupted",
                }));
                jobs.insert(r.id.as_str(), serde_json::to_vec(&r)?.as_slice())?;
                counts[Status::Failed.index()] += 1;
                tracing::warn!(job = %r.id, was, "job interrupted by a restart marked failed");
            }
        }
        tx.commit()?;
        Ok(counts)
    }

    pub fn put(&self, r: &Record, durable: bool) -> Result<()> {
        let mut tx = self.db.begin_write()?;
        if !durable {
            tx.set_durability(Durability::None)?;
        }
        {
            tx.open_table(JOBS)?.insert(r.id.as_str(), serde_json::to_vec(r)?.as_slice())?;
            tx.open_table(BY_OWNER)?.insert((r.owner.as_str(), r.id.as_str()), ())?;
        }
        tx.commit()?;
        Ok(())
    }

    pub fn get(&self, id: &str) -> Result<Option<Record>> {
        let tx = self.db.begin_read()?;
        let jobs = tx.open_table(JOBS)?;
        jobs.get(id)?.map(|v| decode(v.value())).transpose()
    }

    /// Change one record in one transaction.
    pub fn update(&self, id: &str, durable: bool, f: impl FnOnce(&mut Record)) -> Result<()> {
        let mut tx = self.db.begin_write()?;
        if !durable {
            tx.set_durability(Durability::None)?;
        }
        {
            let mut jobs = tx.open_table(JOBS)?;
            let Some(mut r) = jobs.get(id)?.map(|v| decode(v.value())).transpose()? else { return Ok(()) };
            f(&mut r);
            jobs.insert(id, serde_json::to_vec(&r)?.as_slice())?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Store events `first..` and the record's new progress together, so a reader never
    /// sees one without the other.
    pub fn append(&self, id: &str, first: u64, events: &[String], f: impl FnOnce(&mut Record)) -> Result<()> {
        let mut tx = self.db.begin_write()?;
        tx.set_durability(Durability::None)?;
        {
            let mut table = tx.open_table(EVENTS)?;
            for (i, e) in events.iter().enumerate() {
                table.insert((id, first + i as u64), e.as_bytes())?;
            }
            let mut jobs = tx.open_table(JOBS)?;
            let Some(mut r) = jobs.get(id)?.map(|v| decode(v.value())).transpose()? else { return Ok(()) };
            f(&mut r);
            jobs.insert(id, serde_json::to_vec(&r)?.as_slice())?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Events after `after`, in order, at most `limit`.
    pub fn events_after(&self, id: &str, after: u64, limit: usize) -> Result<Vec<(u64, String)>> {
        let tx = self.db.begin_read()?;
        let table = tx.open_table(EVENTS)?;
        let mut out = Vec::new();
        for entry in table.range((id, after.saturating_add(1))..=(id, u64::MAX))?.take(limit) {
            let (k, v) = entry?;
            out.push((k.value().1, String::from_utf8_lossy(v.value()).into_owned()));
        }
        Ok(out)
    }

    /// An owner's jobs, newest first, starting below `after`; and whether more follow.
    pub fn list(&self, owner: &str, after: Option<&str>, limit: usize) -> Result<(Vec<Record>, bool)> {
        let tx = self.db.begin_read()?;
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
            if out.len() == limit {
                more = true;
                break;
            }
            if let Some(v) = jobs.get(k.value().1)? {
                out.push(decode(v.value())?);
            }
        }
        Ok((out, more))
    }

    /// Delete finished jobs that ended before `cutoff_ms`, with their events; return the
    /// statuses of what went.
    pub fn purge(&self, cutoff_ms: u64) -> Result<Vec<Status>> {
        let expired: Vec<Record> = {
            let tx = self.db.begin_read()?;
            let jobs = tx.open_table(JOBS)?;
            let mut out = Vec::new();
            for entry in jobs.iter()? {
                let (_, v) = entry?;
                let r = decode(v.value())?;
                if r.status.finished() && r.finished_ms.is_some_and(|t| t < cutoff_ms) {
                    out.push(r);
                }
            }
            out
        };
        if expired.is_empty() {
            return Ok(Vec::new());
        }
        let tx = self.db.begin_write()?;
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
        Ok(expired.iter().map(|r| r.status).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
            started_ms: None,
            finished_ms: status.finished().then_some(10),
            events: 0,
            bytes: 0,
            completion_tokens: 0,
            last_event_ms: None,
            result: None,
            error: None,
        }
    }

    #[test]
    fn events_list_recover_purge() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        for (id, st) in [("job_1", Status::Succeeded), ("job_2", Status::Running), ("job_3", Status::Queued)] {
            s.put(&record(id, "a", st), true).unwrap();
        }
        s.put(&record("job_4", "b", Status::Succeeded), true).unwrap();
        s.append("job_2", 1, &["x".into(), "y".into()], |r| r.events = 2).unwrap();
        s.append("job_2", 3, &["z".into()], |r| r.events = 3).unwrap();
        assert_eq!(s.events_after("job_2", 1, 10).unwrap(), vec![(2, "y".into()), (3, "z".into())]);
        assert_eq!(s.events_after("job_2", 0, 1).unwrap(), vec![(1, "x".into())]);
        assert!(s.events_after("job_1", 0, 10).unwrap().is_empty());

        let (page, more) = s.list("a", None, 2).unwrap();
        assert_eq!(page.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(), ["job_3", "job_2"]);
        assert!(more);
        let (page, more) = s.list("a", Some("job_2"), 2).unwrap();
        assert_eq!(page.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(), ["job_1"]);
        assert!(!more);

        drop(s);
        let s = Store::open(dir.path()).unwrap();
        let counts = s.recover(20).unwrap();
        assert_eq!(counts, [0, 0, 2, 2, 0]);
        let r = s.get("job_2").unwrap().unwrap();
        assert_eq!(r.status, Status::Failed);
        assert_eq!(r.error.unwrap()["code"], "job_interrupted");

        // job_1 and job_4 finished at 10, the recovered ones at 20.
        assert_eq!(s.purge(15).unwrap().len(), 2);
        assert!(s.get("job_1").unwrap().is_none());
        assert_eq!(s.purge(25).unwrap().len(), 2);
        assert!(s.events_after("job_2", 0, 10).unwrap().is_empty());
        assert!(s.list("a", None, 10).unwrap().0.is_empty());
    }
}
