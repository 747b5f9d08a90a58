//! The disk edge of async mode, through the real relay binary: a damaged job store leaves the
//! synchronous API serving and async answering 503 until the file is fixed; a record that
//! does not decode is skipped and reported; the per-key quota and the store's size bound
//! answer at their edge; lists carry summaries; a full disk latches the store and it comes
//! back by itself once space is freed.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use http::{Method, StatusCode};
use redb::{Database, ReadableTable, TableDefinition};
use relay_tests::*;
use serde_json::Value;

const JOBS: TableDefinition<&str, &[u8]> = TableDefinition::new("jobs");
const OTHER_KEY: &str = "sk-test-other";

async fn mock() -> Mock {
    Mock::start(Options::default()).await.expect("mock starts")
}

fn config(m: &Mock, jobs: &str) -> String {
    format!(
        "{FAST_POOL}{}{jobs}\n{}[[token]]\nname = \"other\"\nkey = \"{OTHER_KEY}\"\nmodels = [\"*\"]\n",
        channel("fast", &m.base_url(), "demo-gpt", ""),
        token_block(CLIENT_KEY, "*"),
    )
}

fn setup(config: &str) -> Setup<'_> {
    Setup { config, adapters: &["openai"], env: &[] }
}

/// Where the relay keeps its job store under a test folder (the default `data_dir`).
fn store_file(dir: &Path) -> PathBuf {
    dir.join(".relay/jobs/jobs.redb")
}

async fn submit(relay: &TestRelay, key: &str, content: &str) -> Answer {
    let body = chat_body("demo-gpt", content, false).to_string();
    relay.request_with(Method::POST, "/v1/chat/completions", Some(key), &[("prefer", "respond-async")], &body).await
}

async fn submit_ok(relay: &TestRelay, content: &str) -> String {
    let a = submit(relay, CLIENT_KEY, content).await;
    assert_eq!(a.status, StatusCode::ACCEPTED, "{}", a.text());
    a.json()["id"].as_str().expect("id").to_string()
}

async fn finished(relay: &TestRelay, id: &str) -> Value {
    let end = Instant::now() + Duration::from_secs(20);
    loop {
        let a = relay.request(Method::GET, &format!("/v1/jobs/{id}"), Some(CLIENT_KEY), "").await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.text());
        let v = a.json();
        if matches!(v["status"].as_str(), Some("succeeded" | "failed" | "cancelled")) {
            return v;
        }
        assert!(Instant::now() < end, "job never finished: {v}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// After a warm-up chat: the gauges once they hold still, and the open fd count.
async fn baseline(relay: &TestRelay) -> (Gauges, usize) {
    let a = relay.chat(&chat_body("demo-gpt", "warm up", false)).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    relay
        .expect_metrics("the warm-up's upstream connections to close", Duration::from_secs(10), |m| {
            m.gauge("relay_upstream_connections_open") == 0.0
        })
        .await;
    let mut g = relay.gauges().await;
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let again = relay.gauges().await;
        if again == g || Instant::now() > end {
            break;
        }
        g = again;
    }
    (g, relay.open_fds())
}

/// The gauges back at the baseline, and no fd left open (file handles of failed opens
/// included) beyond `extra`.
async fn back_to(relay: &TestRelay, (g, fd): (Gauges, usize), extra: usize) {
    relay.assert_back_to(g, Duration::from_secs(10)).await;
    relay.assert_fds_back(fd + extra, Duration::from_secs(10)).await;
}

async fn wait_store_up(relay: &TestRelay, within: Duration) {
    let m = relay.wait_metrics(within, |m| m.gauge("relay_job_store_up") == 1.0).await;
    assert_eq!(m.gauge("relay_job_store_up"), 1.0, "the job store did not come back:\n{}", relay.logs());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_store_leaves_chat_serving_and_async_answering_503_until_fixed() {
    let m = mock().await;
    let dir = tempfile::tempdir().unwrap();
    let file = store_file(dir.path());
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    std::fs::write(&file, vec![0x5a; 64 * 1024]).unwrap();
    let config = config(&m, "");
    let relay = TestRelay::start_in(dir, setup(&config)).await.expect("the relay starts with a damaged job store");
    let base = baseline(&relay).await;

    let metrics = relay.metrics().await;
    assert_eq!(metrics.gauge("relay_job_store_up"), 0.0);
    let a = submit(&relay, CLIENT_KEY, "async").await;
    assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE, "{}", a.text());
    let (message, code) = a.openai_error();
    assert_eq!(code, "job_store_unavailable");
    assert!(message.contains("damaged") && message.contains("synchronous"), "{message}");
    assert!(!message.contains("jobs.redb") && !message.contains('/'), "no path in the client body: {message}");
    for path in ["/v1/jobs", "/v1/jobs/job_00000000000000000000000"] {
        let a = relay.request(Method::GET, path, Some(CLIENT_KEY), "").await;
        assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE, "{path}: {}", a.text());
        assert_eq!(a.openai_error().1, "job_store_unavailable");
    }
    // Auth still comes first.
    assert_eq!(relay.request(Method::GET, "/v1/jobs", None, "").await.status, StatusCode::UNAUTHORIZED);
    let logs = relay.expect_log("cannot open the job store").await;
    assert!(logs.contains("Not a redb database"), "the log names the cause:\n{logs}");
    let a = relay.chat(&chat_body("demo-gpt", "still here", false)).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    assert_eq!(relay.metrics().await.value("relay_job_refusals_total", &[("reason", "store_down")]), 1.0);

    // The operator moves the damaged file aside: the store opens by itself, no restart.
    std::fs::rename(&file, file.with_extension("damaged")).unwrap();
    wait_store_up(&relay, Duration::from_secs(40)).await;
    let id = submit_ok(&relay, "after the fix").await;
    assert_eq!(finished(&relay, &id).await["status"], "succeeded");
    // The baseline was taken while the store was down: its file is open now.
    back_to(&relay, base, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undecodable_record_is_skipped_reported_and_purged_around() {
    let m = mock().await;
    // Long enough to list before the purge, short enough to see the purge.
    let config = config(&m, "[jobs]\nretention = 8\nsweep_interval = 0.2\n");
    let relay = TestRelay::start(setup(&config)).await;
    let bad = submit_ok(&relay, "one").await;
    assert_eq!(finished(&relay, &bad).await["status"], "succeeded");
    let good = submit_ok(&relay, "two").await;
    assert_eq!(finished(&relay, &good).await["status"], "succeeded");
    let dir = relay.stop();

    // Another program (or a bad sector) damages one record.
    {
        let db = Database::create(store_file(dir.path())).expect("open the store");
        let tx = db.begin_write().unwrap();
        {
            let mut jobs = tx.open_table(JOBS).unwrap();
            assert!(jobs.get(bad.as_str()).unwrap().is_some());
            jobs.insert(bad.as_str(), b"{\"id\": \"job_\x00 not json".as_slice()).unwrap();
        }
        tx.commit().unwrap();
    }

    let relay = TestRelay::start_in(dir, setup(&config)).await.expect("the relay starts past a bad record");
    let logs = relay.expect_log("does not decode").await;
    assert!(logs.lines().any(|l| l.contains("does not decode") && l.contains(&bad)), "{logs}");
    let metrics = relay.metrics().await;
    assert_eq!(metrics.gauge("relay_job_store_bad_records_total"), 1.0);
    assert_eq!(metrics.gauge("relay_job_store_up"), 1.0);
    assert_eq!(metrics.value("relay_jobs", &[("status", "succeeded")]), 1.0);
    let list = relay.request(Method::GET, "/v1/jobs", Some(CLIENT_KEY), "").await;
    assert_eq!(list.status, StatusCode::OK, "{}", list.text());
    let list = list.json();
    let ids: Vec<&str> = list["data"].as_array().unwrap().iter().filter_map(|j| j["id"].as_str()).collect();
    assert_eq!(ids, [good.as_str()], "the bad record is skipped: {list}");
    let a = relay.request(Method::GET, &format!("/v1/jobs/{bad}"), Some(CLIENT_KEY), "").await;
    assert_eq!(a.status, StatusCode::NOT_FOUND, "{}", a.text());

    // The purge goes on around it, and new jobs work.
    let end = Instant::now() + Duration::from_secs(30);
    while relay.request(Method::GET, &format!("/v1/jobs/{good}"), Some(CLIENT_KEY), "").await.status
        != StatusCode::NOT_FOUND
    {
        assert!(Instant::now() < end, "the good job was never purged:\n{}", relay.logs());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(relay.metrics().await.value("relay_jobs", &[("status", "succeeded")]), 0.0);
    let id = submit_ok(&relay, "three").await;
    assert_eq!(finished(&relay, &id).await["status"], "succeeded");
    assert_eq!(relay.metrics().await.gauge("relay_job_store_bad_records_total"), 1.0, "reported once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_owner_quota_answers_429_at_its_edge_and_lists_are_summaries() {
    let m = mock().await;
    let config = config(&m, "[jobs]\nmax_per_owner = 2\n");
    let relay = TestRelay::start(setup(&config)).await;
    let base = baseline(&relay).await;
    let first = submit_ok(&relay, "one").await;
    let second = submit_ok(&relay, "two").await;
    for id in [&first, &second] {
        let v = finished(&relay, id).await;
        assert_eq!(v["status"], "succeeded", "{v}");
        assert!(v["result"]["choices"].is_array(), "a job itself still carries its result: {v}");
    }
    // Finished jobs still count until they are purged.
    let a = submit(&relay, CLIENT_KEY, "three").await;
    assert_eq!(a.status, StatusCode::TOO_MANY_REQUESTS, "{}", a.text());
    let (message, code) = a.openai_error();
    assert_eq!(code, "job_quota_exceeded");
    assert!(message.contains("jobs.max_per_owner = 2"), "{message}");
    assert!(a.headers.get("retry-after").is_some());
    // Another key has its own quota.
    let a = submit(&relay, OTHER_KEY, "mine").await;
    assert_eq!(a.status, StatusCode::ACCEPTED, "{}", a.text());

    let list = relay.request(Method::GET, "/v1/jobs", Some(CLIENT_KEY), "").await.json();
    let data = list["data"].as_array().unwrap();
    assert_eq!(data.len(), 2, "{list}");
    for j in data {
        assert!(j.get("result").is_none() && j.get("error").is_none(), "a list item is a summary: {j}");
        assert_eq!(j["status"], "succeeded");
        assert!(j["progress"]["events"].as_u64().unwrap() > 0 && j["finished_at"].is_u64(), "{j}");
    }
    let metrics = relay.metrics().await;
    assert_eq!(metrics.value("relay_job_refusals_total", &[("reason", "owner_quota")]), 1.0);
    assert!(metrics.gauge("relay_job_store_bytes") > 0.0);
    back_to(&relay, base, 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_size_bound_fails_output_past_it_and_answers_507() {
    let m = mock().await;
    // One job's record fits (1 KiB each, estimated); no output does.
    let config = config(&m, "[jobs]\nmax_store_bytes = 1024\n");
    let relay = TestRelay::start(setup(&config)).await;
    let id = submit_ok(&relay, "no room for my answer").await;
    let v = finished(&relay, &id).await;
    assert_eq!(v["status"], "failed", "{v}");
    assert_eq!(v["error"]["code"], "job_store_full", "{v}");
    let a = submit(&relay, CLIENT_KEY, "and none for me").await;
    assert_eq!(a.status, StatusCode::INSUFFICIENT_STORAGE, "{}", a.text());
    assert_eq!(a.openai_error().1, "job_store_full");
    assert!(a.headers.get("retry-after").is_some());
    let metrics = relay.metrics().await;
    assert_eq!(metrics.value("relay_job_refusals_total", &[("reason", "store_full")]), 1.0);
    assert_eq!(metrics.gauge("relay_job_store_bytes"), 1024.0);
    // The synchronous API does not care.
    assert_eq!(relay.chat(&chat_body("demo-gpt", "sync", false)).await.status, StatusCode::OK);
}

/// A small tmpfs mounted for one test, unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Result<Tmpfs, String> {
        std::fs::create_dir_all(at).map_err(|e| e.to_string())?;
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .output()
            .map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
        }
        Ok(Tmpfs(at.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Fill the file system under `path` until a write fails; the filler file is returned.
fn fill(dir: &Path) -> PathBuf {
    use std::io::Write;
    let path = dir.join("filler");
    let mut f = std::fs::File::create(&path).unwrap();
    let block = vec![0u8; 64 * 1024];
    // Bounded: the tmpfs is a few MiB.
    for _ in 0..4096 {
        if f.write_all(&block).and_then(|_| f.sync_data()).is_err() {
            break;
        }
    }
    for _ in 0..4096 {
        if f.write_all(&block[..512]).and_then(|_| f.sync_data()).is_err() {
            break;
        }
    }
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_latches_the_store_and_it_reopens_once_space_is_freed() {
    let m = mock().await;
    let dir = tempfile::tempdir().unwrap();
    let jobs_dir = dir.path().join("jobs-tmpfs");
    let tmpfs = match Tmpfs::mount(&jobs_dir, "8m") {
        Ok(t) => t,
        Err(e) => {
            println!("skipped: cannot mount a tmpfs to fill ({e})");
            return;
        }
    };
    let config = config(&m, "[jobs]\npath = \"jobs-tmpfs\"\n");
    let relay = TestRelay::start_in(dir, setup(&config)).await.expect("relay starts");
    let base = baseline(&relay).await;
    let id = submit_ok(&relay, "before").await;
    assert_eq!(finished(&relay, &id).await["status"], "succeeded");

    let filler = fill(&jobs_dir);
    // Writes fail now: the first submission that needs new pages gets 503, and the store is
    // down until space comes back. (redb may still find room in pages it already holds, so
    // a few jobs may go through first.)
    let end = Instant::now() + Duration::from_secs(20);
    let mut n = 0;
    loop {
        n += 1;
        let a = submit(&relay, CLIENT_KEY, &"fill the disk ".repeat(200)).await;
        if a.status == StatusCode::SERVICE_UNAVAILABLE {
            let (message, code) = a.openai_error();
            assert_eq!(code, "job_store_unavailable");
            assert!(message.contains("full") || message.contains("I/O"), "{message}");
            break;
        }
        assert!(a.status == StatusCode::ACCEPTED, "{}", a.text());
        assert!(Instant::now() < end && n < 500, "the store never ran out of space");
    }
    let metrics = relay.metrics().await;
    assert_eq!(metrics.gauge("relay_job_store_up"), 0.0);
    let a = relay.chat(&chat_body("demo-gpt", "sync is fine", false)).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());

    std::fs::remove_file(&filler).unwrap();
    wait_store_up(&relay, Duration::from_secs(40)).await;
    assert!(relay.metrics().await.gauge("relay_job_store_reopens_total") >= 1.0);
    let id = submit_ok(&relay, "after").await;
    assert_eq!(finished(&relay, &id).await["status"], "succeeded");
    // No job is left running on disk or in the gauges.
    relay
        .expect_metrics("no job running or queued", Duration::from_secs(20), |m| {
            m.value("relay_jobs", &[("status", "running")]) == 0.0
                && m.value("relay_jobs", &[("status", "queued")]) == 0.0
        })
        .await;
    back_to(&relay, base, 0).await;
    // Stop the relay, unmount, then remove the folder.
    let dir = relay.stop();
    drop(tmpfs);
    drop(dir);
}
