//! Every bound the host owns fires at its edge, answers the right way (504 before the
//! first byte, an SSE error event without [DONE] after it), is counted by stage, and
//! leaves nothing behind.

use std::time::{Duration, Instant};

use http::StatusCode;
use relay_tests::*;
use serde_json::Value;

/// Generous slack for a loaded 2-core machine: a bound must fire after its value and well
/// before this much more.
const SLACK: Duration = Duration::from_secs(3);

fn assert_within(elapsed: Duration, bound: Duration) {
    assert!(elapsed >= bound.mul_f64(0.9), "fired early: {elapsed:?} < {bound:?}");
    assert!(elapsed < bound + SLACK, "fired late: {elapsed:?} for a bound of {bound:?}");
}

fn last_error(events: &[String]) -> String {
    assert!(!events.iter().any(|e| e == "[DONE]"), "a cut stream must not end with [DONE]: {events:?}");
    let v: Value = serde_json::from_str(events.last().expect("an error event")).expect("JSON error event");
    v["error"]["message"].as_str().unwrap_or_else(|| panic!("not an error event: {v}")).to_string()
}

async fn mock() -> Mock {
    Mock::start(Options::default()).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn response_header_timeout_answers_504() {
    let m = mock().await;
    let slow = "headers = { \"x-mock-header-delay-ms\" = \"10000\" }\n[channel.timeouts]\nresponse_header = 0.5\n";
    let config = [channel("ok", &m.base_url(), "ok", ""), channel("slow", &m.base_url(), "slow", slow)].concat();
    let (relay, baseline) = relay_with_baseline(&config, &["ok"]).await;

    let t = Instant::now();
    let a = relay.chat(&chat_body("slow", "hi", false)).await;
    assert_within(t.elapsed(), Duration::from_millis(500));
    assert_eq!(a.status, StatusCode::GATEWAY_TIMEOUT);
    let (msg, code) = a.openai_error();
    assert_eq!(msg, "upstream response header timeout after 0.5 s on channel slow");
    assert_eq!(code, "upstream_timeout");
    let metrics = relay.metrics().await;
    assert_eq!(metrics.value("relay_timeouts_total", &[("stage", "response_header")]), 1.0);
    // The vendor connection is closed, not left waiting for the late answer.
    relay.assert_back_to(baseline, Duration::from_secs(5)).await;
    let end = Instant::now() + Duration::from_secs(2);
    while m.stats.open_connections() > 0 && Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(m.stats.open_connections(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn total_timeout_before_and_after_the_first_byte() {
    let m = mock().await;
    let before = "headers = { \"x-mock-header-delay-ms\" = \"10000\" }\n[channel.timeouts]\ntotal = 0.8\n";
    let after = "headers = { \"x-mock-chunks\" = \"100\", \"x-mock-chunk-delay-ms\" = \"100\" }\n[channel.timeouts]\ntotal = 1\n";
    let config = [
        channel("ok", &m.base_url(), "ok", ""),
        channel("head", &m.base_url(), "head", before),
        channel("long", &m.base_url(), "long", after),
    ]
    .concat();
    let (relay, baseline) = relay_with_baseline(&config, &["ok"]).await;

    let t = Instant::now();
    let a = relay.chat(&chat_body("head", "hi", false)).await;
    assert_within(t.elapsed(), Duration::from_millis(800));
    assert_eq!(a.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(a.openai_error().0, "total request timeout after 0.8 s on channel head");

    let t = Instant::now();
    let a = relay.chat(&chat_body("long", "a long answer", true)).await;
    assert_within(t.elapsed(), Duration::from_secs(1));
    assert_eq!(a.status, StatusCode::OK);
    let events = a.sse_data();
    assert!(events.len() > 2, "some chunks arrived before the cut: {events:?}");
    assert_eq!(last_error(&events), "total request timeout after 1 s on channel long");
    let metrics = relay.metrics().await;
    assert_eq!(metrics.value("relay_timeouts_total", &[("stage", "total")]), 2.0);
    relay.assert_back_to(baseline, Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_stream_hits_the_idle_bound() {
    let m = mock().await;
    let stall = "headers = { \"x-mock-fault\" = \"stall-after:3\" }\n[channel.timeouts]\nstream_idle = 0.5\n";
    let config = [channel("ok", &m.base_url(), "ok", ""), channel("stall", &m.base_url(), "stall", stall)].concat();
    let (relay, baseline) = relay_with_baseline(&config, &["ok"]).await;

    let t = Instant::now();
    let a = relay.chat(&chat_body("stall", "hi", true)).await;
    assert_within(t.elapsed(), Duration::from_millis(500));
    let events = a.sse_data();
    assert_eq!(events.len(), 4, "three chunks, then the error: {events:?}");
    assert_eq!(last_error(&events), "upstream stream idle timeout after 0.5 s on channel stall");
    assert_eq!(relay.metrics().await.value("relay_timeouts_total", &[("stage", "stream_idle")]), 1.0);
    relay.assert_back_to(baseline, Duration::from_secs(5)).await;
    assert_eq!(m.stats.open_connections(), 0, "the stalled vendor connection is closed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vendor_dropping_mid_stream_is_an_error_not_a_finish() {
    let m = mock().await;
    let config = [
        channel("ok", &m.base_url(), "ok", ""),
        channel(
            "drop",
            &m.base_url(),
            "drop",
            "headers = { \"x-mock-fault\" = \"drop-after:3\", \"x-mock-chunk-delay-ms\" = \"50\" }",
        ),
        channel("nodone", &m.base_url(), "nodone", "headers = { \"x-mock-fault\" = \"no-done\" }"),
        // Ends the stream at the unreadable event (by default it is skipped: tests/stream_end.rs).
        channel(
            "garbage",
            &m.base_url(),
            "garbage",
            "malformed_events = \"fail\"\nheaders = { \"x-mock-fault\" = \"garbage-chunk\" }",
        ),
    ]
    .concat();
    let (relay, baseline) = relay_with_baseline(&config, &["ok"]).await;

    let a = relay.chat(&chat_body("drop", "hi", true)).await;
    assert_eq!(a.status, StatusCode::OK, "the stream had started: {}", a.text());
    let msg = last_error(&a.sse_data());
    assert!(msg.contains("mid-stream on channel drop"), "{msg}");
    let a = relay.chat(&chat_body("nodone", "hi", true)).await;
    let msg = last_error(&a.sse_data());
    assert!(msg.contains("before [DONE]"), "{msg}");
    let a = relay.chat(&chat_body("garbage", "hi", true)).await;
    let msg = last_error(&a.sse_data());
    assert!(msg.contains("adapter 'openai'") && msg.contains("not JSON"), "{msg}");
    relay.assert_back_to(baseline, Duration::from_secs(5)).await;
    let logs = relay.expect_log("channel=\"garbage\"").await;
    assert!(logs.contains("channel=\"drop\"") && logs.contains("status=502"), "{logs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_that_never_completes_fails_at_the_tls_bound() {
    // Accepts TCP and says nothing: the handshake can only time out.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = silent.local_addr().unwrap();
    let held = tokio::spawn(async move {
        let mut socks = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            socks.push(s);
        }
    });
    let m = mock().await;
    let tls = "[channel.timeouts]\ntls_handshake = 0.5\n";
    let config =
        [channel("ok", &m.base_url(), "ok", ""), channel("tls", &format!("https://{addr}/v1"), "tls", tls)].concat();
    let (relay, baseline) = relay_with_baseline(&config, &["ok"]).await;

    let t = Instant::now();
    let a = relay.chat(&chat_body("tls", "hi", false)).await;
    assert_within(t.elapsed(), Duration::from_millis(500));
    assert_eq!(a.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(a.openai_error().0, "upstream TLS handshake timeout after 0.5 s on channel tls");
    assert_eq!(relay.metrics().await.value("relay_timeouts_total", &[("stage", "tls_handshake")]), 1.0);
    relay.assert_back_to(baseline, Duration::from_secs(5)).await;
    held.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_that_never_completes_fails_at_the_connect_bound() {
    let (full, _fillers) = unconnectable().await;
    let addr = full.local_addr().unwrap();
    let m = mock().await;
    let slow = "[channel.timeouts]\nconnect = 0.5\n";
    let config =
        [channel("ok", &m.base_url(), "ok", ""), channel("syn", &format!("http://{addr}/v1"), "syn", slow)].concat();
    let (relay, baseline) = relay_with_baseline(&config, &["ok"]).await;

    let t = Instant::now();
    let a = relay.chat(&chat_body("syn", "hi", false)).await;
    assert_within(t.elapsed(), Duration::from_millis(500));
    assert_eq!(a.status, StatusCode::GATEWAY_TIMEOUT, "{}", a.text());
    assert_eq!(a.openai_error().0, "upstream connect timeout after 0.5 s on channel syn");
    assert_eq!(relay.metrics().await.value("relay_timeouts_total", &[("stage", "connect")]), 1.0);
    relay.assert_back_to(baseline, Duration::from_secs(5)).await;
    drop(full);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_client_body_gets_408() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let m = mock().await;
    let config = format!("[timeouts]\nclient_body = 0.5\n{}", channel("ok", &m.base_url(), "ok", ""));
    let (relay, baseline) = relay_with_baseline(&config, &["ok"]).await;
    let mut s = tokio::net::TcpStream::connect(relay.addr).await.unwrap();
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {CLIENT_KEY}\r\ncontent-length: 100\r\n\r\n{{\"model\""
    );
    let t = Instant::now();
    s.write_all(head.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf)).await.unwrap().unwrap();
    assert_within(t.elapsed(), Duration::from_millis(500));
    let text = String::from_utf8_lossy(&buf[..n]);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("was not received within 0.5 s"), "{text}");
    drop(s);
    relay.assert_back_to(baseline, Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ten_minute_shaped_stream_completes_intact() {
    // Time-compressed: 40 chunks 150 ms apart span 6 s, twelve times the idle bound, and
    // stay inside the total bound; every chunk must arrive, then [DONE].
    let m = mock().await;
    let long = "headers = { \"x-mock-chunks\" = \"40\", \"x-mock-chunk-delay-ms\" = \"150\" }\n\
                [channel.timeouts]\nstream_idle = 0.5\ntotal = 30\n";
    let config = [channel("ok", &m.base_url(), "ok", ""), channel("long", &m.base_url(), "long", long)].concat();
    let (relay, baseline) = relay_with_baseline(&config, &["ok"]).await;
    let text = "a long answer that arrives slowly but steadily over many chunks";
    let t = Instant::now();
    let a = relay.chat(&chat_body("long", text, true)).await;
    assert!(t.elapsed() >= Duration::from_secs(5), "{:?}", t.elapsed());
    let events = a.sse_data();
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"), "{}", a.text());
    assert_eq!(joined_content(&events), format!("Hello from the demo upstream! You said: {text}"));
    assert!(events.len() >= 30, "{}", events.len());
    relay.assert_back_to(baseline, Duration::from_secs(5)).await;
}

/// A listener that never accepts, with its queue already full: the kernel drops new SYNs,
/// so a connect to it hangs. The fillers must live as long as the listener.
async fn unconnectable() -> (tokio::net::TcpListener, Vec<tokio::net::TcpStream>) {
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let full = sock.listen(0).unwrap();
    let addr = full.local_addr().unwrap();
    let mut fillers = Vec::new();
    for _ in 0..4 {
        if let Ok(Ok(s)) = tokio::time::timeout(Duration::from_millis(200), tokio::net::TcpStream::connect(addr)).await
        {
            fillers.push(s);
        }
    }
    (full, fillers)
}

/// Each `RELAY_*_TIMEOUT` with a value of its own, so a variable wired to another stage's
/// bound shows up in the message.
const ENV_TIMEOUTS: [(&str, &str); 5] = [
    ("RELAY_CONNECT_TIMEOUT", "0.4"),
    ("RELAY_TLS_HANDSHAKE_TIMEOUT", "0.5"),
    ("RELAY_RESPONSE_HEADER_TIMEOUT", "0.6"),
    ("RELAY_STREAM_IDLE_TIMEOUT", "0.7"),
    ("RELAY_TIMEOUT", "1.8"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_env_timeout_bounds_its_stage_over_the_file_and_under_a_channel_table() {
    let (full, _fillers) = unconnectable().await;
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_addr = silent.local_addr().unwrap();
    let held = tokio::spawn(async move {
        let mut socks = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            socks.push(s);
        }
    });
    let m = mock().await;
    let slow_head = "headers = { \"x-mock-header-delay-ms\" = \"10000\" }\n";
    // The file sets every bound to 20 s: the environment must win over all of them.
    let file = "[timeouts]\nconnect = 20\ntls_handshake = 20\nresponse_header = 20\nstream_idle = 20\ntotal = 20\n";
    let config = [
        file.to_string(),
        channel("ok", &m.base_url(), "ok", ""),
        channel("syn", &format!("http://{}/v1", full.local_addr().unwrap()), "syn", ""),
        channel("tls", &format!("https://{silent_addr}/v1"), "tls", ""),
        channel("head", &m.base_url(), "head", slow_head),
        channel("stall", &m.base_url(), "stall", "headers = { \"x-mock-fault\" = \"stall-after:3\" }"),
        channel(
            "long",
            &m.base_url(),
            "long",
            "headers = { \"x-mock-chunks\" = \"100\", \"x-mock-chunk-delay-ms\" = \"100\" }",
        ),
        // The channel's own table wins over the environment for its key...
        channel("own", &m.base_url(), "own", &format!("{slow_head}[channel.timeouts]\nresponse_header = 0.45\n")),
        // ...and only for its key: the rest still comes from the environment, not the file.
        channel("inherit", &m.base_url(), "inherit", &format!("{slow_head}[channel.timeouts]\ntotal = 5\n")),
    ]
    .concat();
    let (relay, baseline) = relay_with_baseline_env(&config, &["ok"], &ENV_TIMEOUTS).await;

    // Every answer read first, then compared at once: a failure shows every stage wrong.
    let mut got = Vec::new();
    for model in ["syn", "tls", "head", "own", "inherit"] {
        let a = relay.chat(&chat_body(model, "hi", false)).await;
        assert_eq!(a.status, StatusCode::GATEWAY_TIMEOUT, "{model}: {}", a.text());
        got.push(a.openai_error().0);
    }
    for model in ["stall", "long"] {
        let a = relay.chat(&chat_body(model, "hi", true)).await;
        assert_eq!(a.status, StatusCode::OK, "{model}: the stream had started: {}", a.text());
        got.push(last_error(&a.sse_data()));
    }
    assert_eq!(
        got,
        [
            "upstream connect timeout after 0.4 s on channel syn",
            "upstream TLS handshake timeout after 0.5 s on channel tls",
            "upstream response header timeout after 0.6 s on channel head",
            "upstream response header timeout after 0.45 s on channel own",
            "upstream response header timeout after 0.6 s on channel inherit",
            "upstream stream idle timeout after 0.7 s on channel stall",
            "total request timeout after 1.8 s on channel long",
        ]
    );
    let metrics = relay.metrics().await;
    let by_stage = |stage: &str| metrics.value("relay_timeouts_total", &[("stage", stage)]);
    assert_eq!(
        ["connect", "tls_handshake", "response_header", "stream_idle", "total"].map(by_stage),
        [1.0, 1.0, 3.0, 1.0, 1.0]
    );
    relay.assert_back_to(baseline, Duration::from_secs(5)).await;
    held.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_env_timeout_stops_start_up_naming_the_variable() {
    let env = [("RELAY_STREAM_IDLE_TIMEOUT", "5m")];
    let err = TestRelay::try_start(Setup { config: "", adapters: &[], env: &env })
        .await
        .err()
        .expect("the relay must not start with RELAY_STREAM_IDLE_TIMEOUT=5m");
    assert!(err.contains("environment variable RELAY_STREAM_IDLE_TIMEOUT: '5m' is not a number of seconds"), "{err}");
}
