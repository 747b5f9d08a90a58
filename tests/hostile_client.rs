//! Clients that are not polite: idle sockets, floods of connections, clients that stop
//! reading, unbounded model strings, uploads refused early, bodies past the global budget.
//! Each test drives the real binary, asserts its bound with slack, and ends with the gauges
//! (and the relay's open descriptors) back at their baseline.

use std::time::{Duration, Instant};

use http::{Method, StatusCode};
use relay_tests::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn mock() -> Mock {
    Mock::start(Options::default()).await.expect("mock starts")
}

/// Send raw bytes and read what comes back until the peer closes (or `within` passes).
async fn raw_exchange(addr: std::net::SocketAddr, bytes: &[u8], within: Duration) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(within, s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_closed_by_the_first_request_deadline() {
    let m = mock().await;
    // relay_with_baseline opens a [limits] table; these keys land in it.
    let config = format!("client_header_timeout = 1\n{}", channel("ok", &m.base_url(), "ok", ""));
    let (relay, baseline) = relay_with_baseline(&config, &["ok"]).await;
    let fds = relay.open_fds();
    let base_conns = relay.metrics().await.gauge("relay_connections_open");

    // 1,000 sockets: a third send nothing, a third a lone `P`, a third the HTTP/2 preface.
    let t = Instant::now();
    let mut socks = Vec::with_capacity(1000);
    for i in 0..1000 {
        let mut s = TcpStream::connect(relay.addr).await.expect("connect");
        match i % 3 {
            1 => s.write_all(b"P").await.unwrap(),
            2 => s.write_all(H2_PREFACE).await.unwrap(),
            _ => {}
        }
        socks.push(s);
    }
    let m = relay.metrics().await;
    assert!(
        m.gauge("relay_connections_open") >= 900.0 || t.elapsed() > Duration::from_secs(1),
        "the sockets are open on the relay: {}",
        m.gauge("relay_connections_open")
    );
    // Every socket is closed by the relay: each read ends (EOF or reset) within the bound
    // plus generous slack.
    let reads = socks.into_iter().map(|mut s| {
        tokio::spawn(async move {
            let mut buf = [0u8; 256];
            loop {
                match tokio::time::timeout(Duration::from_secs(20), s.read(&mut buf)).await {
                    Ok(Ok(0)) | Ok(Err(_)) => return true,
                    Ok(Ok(_)) => continue, // an HTTP/2 SETTINGS frame or a 408: keep reading
                    Err(_) => return false,
                }
            }
        })
    });
    let closed = futures_util::future::join_all(reads).await.into_iter().filter(|r| matches!(r, Ok(true))).count();
    assert_eq!(closed, 1000, "every idle socket was closed by the relay");
    eprintln!("1,000 idle sockets closed by the relay {:?} after the first connect", t.elapsed());
    assert!(t.elapsed() < Duration::from_secs(25), "{:?}", t.elapsed());

    let m = relay.wait_metrics(Duration::from_secs(10), |m| m.gauge("relay_connections_open") <= base_conns).await;
    assert_eq!(m.gauge("relay_connections_open"), base_conns);
    assert!(
        m.value("relay_timeouts_total", &[("stage", "client_header")]) >= 900.0,
        "{}",
        m.value("relay_timeouts_total", &[("stage", "client_header")])
    );
    relay.assert_fds_back(fds + 2, Duration::from_secs(10)).await;
    relay.assert_back_to(baseline, Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_max_connections_new_clients_get_503_and_healthz_answers() {
    let m = mock().await;
    let config = format!("max_connections = 20\n{}", channel("ok", &m.base_url(), "ok", ""));
    let (relay, baseline) = relay_with_baseline(&config, &["ok"]).await;
    let fds = relay.open_fds();

    // 20 idle connections fill the relay (the default head bound keeps them 30 s).
    let mut idle = Vec::new();
    for _ in 0..20 {
        idle.push(TcpStream::connect(relay.addr).await.unwrap());
    }
    // Let the accept loop take all 20 (a descriptor each) before the first scrape needs a slot.
    wait_until("the relay to accept the 20 connections", Duration::from_secs(5), async || relay.open_fds() >= fds + 20)
        .await;
    let m = relay.wait_metrics(Duration::from_secs(5), |m| m.gauge("relay_connections_open") >= 20.0).await;
    assert_eq!(m.gauge("relay_connections_open"), 20.0, "/metrics itself came through the reserve");

    // A real request past the cap: a clean 503 with Retry-After, then the connection closes.
    let t = Instant::now();
    let text = raw_exchange(
        relay.addr,
        format!("GET /v1/models HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {CLIENT_KEY}\r\n\r\n").as_bytes(),
        Duration::from_secs(10),
    )
    .await;
    assert!(t.elapsed() < Duration::from_secs(8), "closed after the answer: {:?}", t.elapsed());
    assert!(text.starts_with("HTTP/1.1 503"), "{text}");
    let lower = text.to_ascii_lowercase();
    assert!(lower.contains("retry-after: 1") && lower.contains("connection: close"), "{text}");
    assert!(text.contains("max_connections"), "{text}");

    // The health check still answers.
    let text = raw_exchange(relay.addr, b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n", Duration::from_secs(10)).await;
    assert!(text.starts_with("HTTP/1.1 200") && text.contains(r#"{"status":"ok"}"#), "{text}");
    let m = relay.metrics().await;
    assert!(m.gauge("relay_connections_refused_total") >= 3.0, "{}", m.gauge("relay_connections_refused_total"));

    drop(idle);
    let m = relay
        .wait_metrics(Duration::from_secs(10), |m| {
            m.gauge("relay_connections_open") <= 1.0 && m.gauge("relay_connections_reserve_open") == 0.0
        })
        .await;
    assert_eq!(m.gauge("relay_connections_reserve_open"), 0.0);
    // Below the cap again: requests are served.
    let a = relay.chat(&chat_body("ok", "hi", false)).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    relay.assert_fds_back(fds + 2, Duration::from_secs(10)).await;
    relay.assert_back_to(baseline, Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_cut_at_the_write_bound() {
    let m = mock().await;
    // The mock echoes the prompt: 4 MB in 200,000 events make a ~40 MB stream, far larger
    // than every socket buffer on the way.
    let endless = "headers = { \"x-mock-chunks\" = \"200000\" }\n";
    let config = format!(
        "client_write_timeout = 1\n{}{}",
        channel("ok", &m.base_url(), "ok", ""),
        channel("big", &m.base_url(), "big", endless)
    );
    let (relay, baseline) = relay_with_baseline(&config, &["ok"]).await;
    let fds = relay.open_fds();

    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    let mut s = sock.connect(relay.addr).await.unwrap();
    let body = chat_body("big", &"x".repeat(4_000_000), true).to_string();
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {CLIENT_KEY}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let t = Instant::now();
    // The stream starts (the relay may fill the socket buffers and reach the bound before
    // the first scrape sees it).
    let started = |m: &Metrics| {
        m.gauge("relay_active_streams") >= 1.0 || m.value("relay_timeouts_total", &[("stage", "client_write")]) >= 1.0
    };
    let m = relay.wait_metrics(Duration::from_secs(10), started).await;
    assert!(started(&m), "the stream started: {}", m.0);
    // Never read: the relay's writes stall, and the bound (1 s) cuts the connection.
    let m = relay
        .wait_metrics(Duration::from_secs(30), |m| m.value("relay_timeouts_total", &[("stage", "client_write")]) >= 1.0)
        .await;
    assert_eq!(m.value("relay_timeouts_total", &[("stage", "client_write")]), 1.0);
    assert!(t.elapsed() < Duration::from_secs(30), "cut long before the total deadline: {:?}", t.elapsed());
    eprintln!("a client that stopped reading was cut {:?} after its request (client_write_timeout = 1 s)", t.elapsed());
    let m = relay
        .wait_metrics(Duration::from_secs(10), |m| {
            m.gauge("relay_active_streams") == 0.0 && m.gauge("relay_upstream_connections_open") == 0.0
        })
        .await;
    assert_eq!(m.gauge("relay_active_streams"), 0.0);
    assert_eq!(m.gauge("relay_upstream_connections_open"), 0.0, "the vendor connection was released");
    drop(s);
    relay.assert_fds_back(fds + 2, Duration::from_secs(10)).await;
    relay.assert_back_to(baseline, Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn model_strings_are_checked_before_they_become_labels() {
    let m = mock().await;
    let (relay, baseline) = relay_with_baseline(&channel("ok", &m.base_url(), "ok", ""), &["ok"]).await;
    let before = relay.metrics().await.0.len();

    // 10,000 distinct valid model names that nothing serves: each gets 404, none is a label.
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http();
    let url = relay.url("/v1/chat/completions");
    let send = |i: usize| {
        let (client, url) = (client.clone(), url.clone());
        async move {
            let body = chat_body(&format!("unknown-model-{i}"), "hi", false).to_string();
            let req = http::Request::post(url)
                .header("authorization", format!("Bearer {CLIENT_KEY}"))
                .header("content-type", "application/json")
                .body(http_body_util::Full::new(bytes::Bytes::from(body)))
                .unwrap();
            let resp = client.request(req).await.expect("answered");
            let status = resp.status();
            let _ = http_body_util::BodyExt::collect(resp.into_body()).await;
            status
        }
    };
    let t = Instant::now();
    for batch in (0..10_000).collect::<Vec<_>>().chunks(50) {
        let statuses = futures_util::future::join_all(batch.iter().map(|i| send(*i))).await;
        assert!(statuses.iter().all(|s| *s == StatusCode::NOT_FOUND), "{statuses:?}");
        assert!(t.elapsed() < Duration::from_secs(120), "bounded loop");
    }
    drop(client);
    let m = relay.metrics().await;
    assert!(m.0.len() < before + 4096, "/metrics stayed small: {} -> {} bytes", before, m.0.len());
    assert!(!m.0.contains("unknown-model-"), "a refused model is never a label");
    eprintln!("/metrics: {before} bytes before, {} after 10,000 unknown models ({:?})", m.0.len(), t.elapsed());
    assert!(m.value("relay_requests_total", &[("model", "-"), ("status", "404")]) >= 10_000.0);

    // A 1 MiB model name, and one with characters no model id has: 400, counted, not labelled.
    let long = "m".repeat(1024 * 1024);
    let a = relay.chat(&chat_body(&long, "hi", false)).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST, "{}", a.text());
    let (message, code) = a.openai_error();
    assert_eq!(code, "invalid_model");
    assert_eq!(a.json()["error"]["param"], "model");
    assert!(message.len() < 200, "the answer does not echo the name");
    let a = relay.chat(&chat_body("gpt-4o\n{status=\"200\"}", "hi", false)).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST, "{}", a.text());
    // Real ids in every vendor's shape pass the check (and are then refused as unknown).
    for id in ["models/gemini-1.5-pro", "claude-3-5-sonnet@20240620", "ft:gpt-4o:org:x:id", "llama3.1:8b"] {
        let a = relay.chat(&chat_body(id, "hi", false)).await;
        assert_eq!(a.status, StatusCode::NOT_FOUND, "{id}: {}", a.text());
    }
    let m = relay.metrics().await;
    assert_eq!(m.gauge("relay_models_refused_total"), 2.0);
    assert!(m.0.len() < before + 4096, "{} bytes", m.0.len());
    assert!(relay.logs().len() < 8 * 1024 * 1024, "the log did not take the 1 MiB name");
    relay.assert_back_to(baseline, Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_50_mb_upload_reads_its_413() {
    let m = mock().await;
    let (relay, baseline) = relay_with_baseline(&channel("ok", &m.base_url(), "ok", ""), &["ok"]).await;
    let fds = relay.open_fds();
    let len = 50 * 1000 * 1000;
    let s = TcpStream::connect(relay.addr).await.unwrap();
    let (mut rd, mut wr) = s.into_split();
    // Write the head and the whole body, as a client library does, while reading.
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {CLIENT_KEY}\r\ncontent-type: application/json\r\ncontent-length: {len}\r\n\r\n"
    );
    let writer = tokio::spawn(async move {
        wr.write_all(head.as_bytes()).await?;
        let chunk = vec![b' '; 64 * 1024];
        let mut sent = 0;
        while sent < len {
            let n = chunk.len().min(len - sent);
            wr.write_all(&chunk[..n]).await?;
            sent += n;
        }
        wr.shutdown().await?;
        Ok::<_, std::io::Error>(sent)
    });
    let mut out = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(30), rd.read_to_end(&mut out)).await.expect("read ends");
    let text = String::from_utf8_lossy(&out);
    assert!(read.is_ok(), "the client read the answer, not a reset: {read:?} after {text}");
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    assert!(text.contains("request_too_large"), "{text}");
    let written = writer.await.unwrap();
    assert!(written.is_ok(), "the upload was drained, not reset: {written:?}");

    // A refused token before the body: the same.
    let s = TcpStream::connect(relay.addr).await.unwrap();
    let (mut rd, mut wr) = s.into_split();
    let small = 4 * 1000 * 1000;
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer wrong\r\ncontent-length: {small}\r\n\r\n"
    );
    let writer = tokio::spawn(async move {
        wr.write_all(head.as_bytes()).await?;
        wr.write_all(&vec![b' '; small]).await
    });
    let mut out = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(30), rd.read_to_end(&mut out)).await.expect("read ends");
    let text = String::from_utf8_lossy(&out);
    assert!(read.is_ok() && text.starts_with("HTTP/1.1 401"), "{read:?} {text}");
    let _ = writer.await;
    relay.assert_fds_back(fds + 2, Duration::from_secs(10)).await;
    relay.assert_back_to(baseline, Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_inflight_body_budget_answers_503_at_its_edge() {
    let m = mock().await;
    let config = format!(
        "max_request_body = 100000\nmax_inflight_body_bytes = 100000\n{}",
        channel("ok", &m.base_url(), "ok", "")
    );
    let (relay, baseline) = relay_with_baseline(&config, &["ok"]).await;

    // A client declares 80,000 bytes and sends a few: its share is held while it uploads.
    let mut holder = TcpStream::connect(relay.addr).await.unwrap();
    holder
        .write_all(
            format!("POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {CLIENT_KEY}\r\ncontent-length: 80000\r\n\r\n{{\"model\"").as_bytes(),
        )
        .await
        .unwrap();
    let m = relay.wait_metrics(Duration::from_secs(5), |m| m.gauge("relay_inflight_body_bytes") >= 80000.0).await;
    assert_eq!(m.gauge("relay_inflight_body_bytes"), 80000.0);

    // 30,000 more would pass the budget: 503, Retry-After, the OpenAI error shape.
    let pad = "x".repeat(30000);
    let body = chat_body("ok", &pad, false).to_string();
    let a = relay.request(Method::POST, "/v1/chat/completions", Some(CLIENT_KEY), &body).await;
    assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE, "{}", a.text());
    assert_eq!(a.headers.get("retry-after").map(|v| v.to_str().unwrap()), Some("1"));
    assert_eq!(a.openai_error().1, "body_budget_exhausted");
    // Within the budget: served.
    let a = relay.chat(&chat_body("ok", &"y".repeat(10000), false)).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    // A chunked body (no length) grows its share as it arrives, and is refused the same way.
    let text = raw_exchange(
        relay.addr,
        format!(
            "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {CLIENT_KEY}\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n",
            body.len()
        )
        .as_bytes(),
        Duration::from_secs(10),
    )
    .await;
    assert!(text.starts_with("HTTP/1.1 503"), "{text}");
    assert_eq!(relay.metrics().await.gauge("relay_body_budget_refused_total"), 2.0);

    drop(holder);
    let m = relay.wait_metrics(Duration::from_secs(10), |m| m.gauge("relay_inflight_body_bytes") == 0.0).await;
    assert_eq!(m.gauge("relay_inflight_body_bytes"), 0.0, "the share is given back");
    relay.assert_back_to(baseline, Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_token_guards_metrics() {
    let m = mock().await;
    let config = format!(
        "metrics_token = \"metrics-secret-0123456789\"\n{}{}",
        channel("ok", &m.base_url(), "ok", ""),
        token_block(CLIENT_KEY, "*")
    );
    let relay = TestRelay::start(Setup { config: &config, adapters: &["openai"], env: &[] }).await;
    let a = relay.request(Method::GET, "/metrics", None, "").await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    let a = relay.request(Method::GET, "/metrics", Some("metrics-secret-0123456789"), "").await;
    assert_eq!(a.status, StatusCode::OK);
    assert!(a.text().contains("relay_connections_open"));
    let a = relay.request(Method::GET, "/healthz", None, "").await;
    assert_eq!(a.status, StatusCode::OK);
    // `relay status` sends the token it is given.
    let url = format!("http://{}", relay.addr);
    let run = |token: Option<&'static str>| {
        let url = url.clone();
        tokio::task::spawn_blocking(move || {
            let mut cmd = std::process::Command::new(workspace_root().join("target/release/relay"));
            cmd.args(["status", "--url", &url]).env_remove("RELAY_METRICS_TOKEN");
            if let Some(t) = token {
                cmd.args(["--metrics-token", t]);
            }
            cmd.output().unwrap()
        })
    };
    let out = run(Some("metrics-secret-0123456789")).await.unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("inflight=0"));
    let out = run(None).await.unwrap();
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("401"));
    // The open-file limit is raised and logged at start.
    assert!(relay.wait_log("RLIMIT_NOFILE").await.contains("RLIMIT_NOFILE"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_http2_connection_is_closed_after_its_last_stream() {
    let m = mock().await;
    let config = format!("client_idle_timeout = 1\n{}", channel("ok", &m.base_url(), "ok", ""));
    let (relay, baseline) = relay_with_baseline(&config, &["ok"]).await;
    let base_conns = relay.metrics().await.gauge("relay_connections_open");
    // HTTP/2 with prior knowledge; the client keeps its connection for reuse.
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build_http::<http_body_util::Full<bytes::Bytes>>();
    let req = http::Request::get(relay.url("/healthz")).body(http_body_util::Full::default()).unwrap();
    let resp = client.request(req).await.expect("h2 answer");
    assert_eq!((resp.status(), resp.version()), (StatusCode::OK, http::Version::HTTP_2));
    drop(resp);
    let t = Instant::now();
    let m = relay
        .wait_metrics(Duration::from_secs(15), |m| {
            m.gauge("relay_connections_open") <= base_conns
                && m.value("relay_timeouts_total", &[("stage", "client_idle")]) >= 1.0
        })
        .await;
    assert_eq!(m.value("relay_timeouts_total", &[("stage", "client_idle")]), 1.0, "{:?}", t.elapsed());
    assert_eq!(m.gauge("relay_connections_open"), base_conns);
    drop(client);
    relay.assert_back_to(baseline, Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_and_running_jobs_hold_their_body_share() {
    let m = mock().await;
    let slow = "headers = { \"x-mock-header-delay-ms\" = \"20000\" }\n";
    let config = format!(
        "max_request_body = 50000\nmax_inflight_body_bytes = 50000\n{}{}[jobs]\nmax_running = 1\n",
        channel("ok", &m.base_url(), "ok", ""),
        channel("slow", &m.base_url(), "slow", slow)
    );
    let (relay, baseline) = relay_with_baseline(&config, &["ok"]).await;
    let submit = |body: String| {
        let relay = &relay;
        async move {
            let a = relay
                .request_with(
                    Method::POST,
                    "/v1/chat/completions",
                    Some(CLIENT_KEY),
                    &[("prefer", "respond-async")],
                    &body,
                )
                .await;
            assert_eq!(a.status, StatusCode::ACCEPTED, "{}", a.text());
            a.json()["id"].as_str().unwrap().to_string()
        }
    };
    // One job runs (its vendor is slow), one waits in the queue: both keep their bodies.
    let running = submit(chat_body("slow", &"a".repeat(20000), false).to_string()).await;
    let queued = submit(chat_body("ok", &"b".repeat(20000), false).to_string()).await;
    let held = relay.metrics().await.gauge("relay_inflight_body_bytes");
    assert!(held >= 40000.0, "{held}");
    // What is left of the budget is too little for another 20 KB body.
    let a = relay.chat(&chat_body("ok", &"c".repeat(20000), false)).await;
    assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE, "{}", a.text());
    assert_eq!(a.openai_error().1, "body_budget_exhausted");
    for id in [&queued, &running] {
        let a = relay.request(Method::DELETE, &format!("/v1/jobs/{id}"), Some(CLIENT_KEY), "").await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    }
    let m = relay.wait_metrics(Duration::from_secs(10), |m| m.gauge("relay_inflight_body_bytes") == 0.0).await;
    assert_eq!(m.gauge("relay_inflight_body_bytes"), 0.0, "cancelled jobs gave their share back");
    relay.assert_back_to(baseline, Duration::from_secs(10)).await;
}
