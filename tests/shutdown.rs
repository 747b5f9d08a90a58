//! SIGTERM: stop accepting, let in-flight work finish within the grace period, end what
//! is still running with an error event, exit 0.

use std::time::{Duration, Instant};

use relay_tests::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn open_stream(relay: &TestRelay, model: &str) -> TcpStream {
    let body = chat_body(model, "hello", true).to_string();
    let req = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: relay\r\nauthorization: Bearer {CLIENT_KEY}\r\n\
         connection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut s = TcpStream::connect(relay.addr).await.unwrap();
    s.write_all(req.as_bytes()).await.unwrap();
    s
}

async fn read_all(mut s: TcpStream) -> String {
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut out)).await.expect("stream ends").ok();
    String::from_utf8_lossy(&out).into_owned()
}

/// Two channels on the mock and a token: `short` streams 0.5 s of output (10 x 50 ms), well
/// within the grace periods used here; `long` 20 s (200 x 100 ms), which outlives them.
fn short_and_long(m: &Mock) -> String {
    let chunks = |n, ms| format!("headers = {{ \"x-mock-chunks\" = \"{n}\", \"x-mock-chunk-delay-ms\" = \"{ms}\" }}");
    format!(
        "{}{}{}",
        channel("short", &m.base_url(), "short", &chunks(10, 50)),
        channel("long", &m.base_url(), "long", &chunks(200, 100)),
        token_block(CLIENT_KEY, "*"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_then_ends_streams_and_exits_zero() {
    let m = Mock::start(Options::default()).await.unwrap();
    let config = format!("[limits]\nshutdown_grace = 1.5\n{}", short_and_long(&m));
    let mut relay = TestRelay::start(Setup { config: &config, adapters: &["openai"], env: &[] }).await;
    let short = open_stream(&relay, "short").await;
    let long = open_stream(&relay, "long").await;
    while m.stats.received().len() < 2 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let t = Instant::now();
    relay.signal("TERM");
    let short = tokio::spawn(read_all(short));
    let long = tokio::spawn(read_all(long));
    // New connections are refused soon after the signal.
    let end = Instant::now() + Duration::from_secs(3);
    loop {
        if TcpStream::connect(relay.addr).await.is_err() {
            break;
        }
        assert!(Instant::now() < end, "still accepting after SIGTERM");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let short = short.await.unwrap();
    assert!(short.contains("data: [DONE]"), "an in-flight stream within the grace period completes:\n{short}");
    let long = long.await.unwrap();
    let events = sse_data(long.split("\r\n\r\n").nth(1).unwrap_or(""));
    let joined = events.join("\n");
    assert!(!joined.contains("[DONE]"), "{long}");
    assert!(joined.contains("shutting down"), "the long stream ends with an error event:\n{long}");

    let status = relay.wait_exit(Duration::from_secs(10)).await.expect("the relay exits");
    assert!(status.success(), "exit status {status:?}");
    let took = t.elapsed();
    assert!(took >= Duration::from_millis(1400) && took < Duration::from_secs(8), "{took:?}");
}

/// Submit an async chat job; its id.
async fn submit_job(relay: &TestRelay, model: &str) -> String {
    let body = chat_body(model, "a job", false).to_string();
    let a = relay
        .request_with(
            http::Method::POST,
            "/v1/chat/completions",
            Some(CLIENT_KEY),
            &[("prefer", "respond-async")],
            &body,
        )
        .await;
    assert_eq!(a.status, http::StatusCode::ACCEPTED, "{}", a.text());
    a.json()["id"].as_str().expect("job id").to_string()
}

async fn job(relay: &TestRelay, id: &str) -> serde_json::Value {
    let a = relay.request(http::Method::GET, &format!("/v1/jobs/{id}"), Some(CLIENT_KEY), "").await;
    assert_eq!(a.status, http::StatusCode::OK, "{}", a.text());
    a.json()
}

/// Poll a job until `done` holds on it.
async fn wait_job(relay: &TestRelay, id: &str, done: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
    let end = Instant::now() + Duration::from_secs(15);
    loop {
        let v = job(relay, id).await;
        if done(&v) {
            return v;
        }
        assert!(Instant::now() < end, "job {id} never reached the state: {v}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn assert_interrupted(v: &serde_json::Value, was: &str) {
    assert_eq!(v["status"], "failed", "{v}");
    assert_eq!(v["error"]["code"], "job_interrupted", "{v}");
    let msg = v["error"]["message"].as_str().unwrap_or_default();
    assert!(msg.contains(&format!("shut down while this job was {was}")), "{v}");
}

/// Async jobs have no client connection to keep the process up: with none open, SIGTERM
/// still gives them `limits.shutdown_grace`. Jobs that finish within it succeed (queued ones
/// start as slots free); what is left at the end ends `job_interrupted`, and a submission
/// arriving after the signal is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_gives_running_and_queued_jobs_the_grace() {
    const GRACE: f64 = 4.0;
    let m = Mock::start(Options::default()).await.unwrap();
    let config = format!("[limits]\nshutdown_grace = {GRACE}\n[jobs]\nmax_running = 2\n{}", short_and_long(&m));
    let setup = || Setup { config: &config, adapters: &["openai"], env: &[] };
    let mut relay = TestRelay::start(setup()).await;
    // Two run slots: `a` and `b` run; `c`, `d`, `e` queue. `c` starts when `a` ends and
    // finishes; `d` starts when `c` ends and is cut at the grace; `e` never gets a slot.
    let a = submit_job(&relay, "short").await;
    let b = submit_job(&relay, "long").await;
    let c = submit_job(&relay, "short").await;
    let d = submit_job(&relay, "long").await;
    let e = submit_job(&relay, "short").await;
    wait_job(&relay, &b, |v| v["status"] == "running").await;
    assert_eq!(job(&relay, &e).await["status"], "queued");

    // A submission whose body is still arriving when the signal comes: it is refused.
    let body = chat_body("short", "too late", false).to_string();
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: relay\r\nauthorization: Bearer {CLIENT_KEY}\r\n\
         prefer: respond-async\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    let mut late = TcpStream::connect(relay.addr).await.unwrap();
    late.write_all(head.as_bytes()).await.unwrap();
    late.write_all(&body.as_bytes()[..body.len() - 1]).await.unwrap();

    let t = Instant::now();
    relay.signal("TERM");
    let logs = relay.wait_log("draining").await;
    assert!(logs.contains("draining"), "no drain log line:\n{logs}");
    late.write_all(&body.as_bytes()[body.len() - 1..]).await.unwrap();
    let answer = read_all(late).await;
    assert!(answer.starts_with("HTTP/1.1 503"), "a submission after SIGTERM is refused:\n{answer}");
    assert!(answer.contains("shutting down"), "{answer}");

    let status = relay.wait_exit(Duration::from_secs(GRACE as u64 + 10)).await.expect("the relay exits");
    let took = t.elapsed();
    assert!(status.success(), "exit status {status:?}");
    assert!(took >= Duration::from_secs_f64(GRACE - 0.2), "the jobs did not get the grace: exited after {took:?}");
    assert!(took < Duration::from_secs_f64(GRACE + 8.0), "{took:?}");

    // Restarted on the same data dir: every job has its final state.
    let dir = relay.stop();
    let relay = TestRelay::start_in(dir, setup()).await.unwrap();
    for id in [&a, &c] {
        let v = job(&relay, id).await;
        assert_eq!(v["status"], "succeeded", "a job that finishes within the grace completes: {v}");
        assert_eq!(v["result"]["object"], "chat.completion", "{v}");
        assert!(v["result"]["choices"][0]["message"]["content"].as_str().is_some_and(|s| !s.is_empty()), "{v}");
    }
    let vb = job(&relay, &b).await;
    assert_interrupted(&vb, "running");
    // It ran, and was stored, until the grace ended (100 ms a chunk: about 40 by then).
    let events = vb["progress"]["events"].as_u64().unwrap_or(0);
    assert!(events >= 15, "the long job was cut before the grace ended: {vb}");
    let vd = job(&relay, &d).await;
    assert_interrupted(&vd, "running");
    let ve = job(&relay, &e).await;
    assert_interrupted(&ve, "queued");
    assert!(ve["started_at"].is_null(), "{ve}");
    let metrics = relay.metrics().await;
    assert_eq!(metrics.value("relay_jobs", &[("status", "succeeded")]), 2.0);
    assert_eq!(metrics.value("relay_jobs", &[("status", "failed")]), 3.0);
}
