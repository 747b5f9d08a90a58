//! Routing and failover at their edges, as `docs/configuration.md` promises them: channels
//! by priority, weighted-random among equals; a request moves on to the next channel only
//! before any byte reached the client, when the vendor could not be reached, the adapter is
//! not loaded, or the vendor answered 5xx or 429; the last channel's answer is the client's.
//! Every vendor is its own mock, so each one's count of requests is the attempts it saw;
//! the access line of each request says which channel answered after how many attempts.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use http::{Method, StatusCode};
use relay_tests::*;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

async fn mock() -> Mock {
    Mock::start(Options::default()).await.unwrap()
}

/// Requests a mock has seen so far.
fn seen(m: &Mock) -> u64 {
    m.stats.requests.load(Ordering::SeqCst)
}

/// `headers` line that makes the mock answer `status` with an OpenAI error body.
fn failing(status: u16) -> String {
    format!("headers = {{ \"x-mock-status\" = \"{status}\" }}\n")
}

/// A chat request tagged with `id`, so its access line can be found.
async fn chat_as(relay: &TestRelay, id: &str, model: &str, stream: bool) -> Answer {
    let body = chat_body(model, "hello there", stream).to_string();
    relay.request_with(Method::POST, "/v1/chat/completions", Some(CLIENT_KEY), &[("x-request-id", id)], &body).await
}

/// An embeddings request tagged with `id`.
async fn embed_as(relay: &TestRelay, id: &str, model: &str) -> Answer {
    let body = format!(r#"{{"model":"{model}","input":["a","b"]}}"#);
    relay.request_with(Method::POST, "/v1/embeddings", Some(CLIENT_KEY), &[("x-request-id", id)], &body).await
}

/// Assert the access line's routing fields: who answered, after how many attempts.
async fn assert_access(relay: &TestRelay, id: &str, channel: &str, attempts: u32, status: u16) -> String {
    let line = relay.access_line(&format!("request_id={id} ")).await;
    for want in [format!(" channel=\"{channel}\""), format!(" attempts={attempts} "), format!(" status={status} ")] {
        assert!(line.contains(&want), "{id}: expected `{}` in the access line: {line}", want.trim());
    }
    line
}

/// The relay's gauges and file descriptors back where they were before the test's traffic.
async fn settle(relay: &TestRelay, baseline: Gauges, fds: usize) {
    relay.assert_back_to(baseline, Duration::from_secs(10)).await;
    relay.assert_fds_back(fds, Duration::from_secs(10)).await;
}

/// A relay on `config` (plus a `warm` channel on `warm`, for the baseline) and its baseline.
async fn relay_on(config: &str, warm: &Mock) -> (TestRelay, Gauges, usize) {
    let config = format!("{}{config}", channel("warm", &warm.base_url(), "warm", ""));
    let (relay, baseline) = relay_with_baseline(&config, &["warm"]).await;
    let fds = relay.open_fds();
    (relay, baseline, fds)
}

/// `relay_on` with other adapters than `openai` alone in the plugin directory.
async fn relay_with_adapters(config: &str, warm: &Mock, adapters: &[&str]) -> (TestRelay, Gauges, usize) {
    let config =
        format!("{FAST_POOL}{}{config}{}", channel("warm", &warm.base_url(), "warm", ""), token_block(CLIENT_KEY, "*"));
    let relay = TestRelay::start(Setup { config: &config, adapters, env: &[] }).await;
    let baseline = warm_baseline(&relay, &["warm"]).await;
    let fds = relay.open_fds();
    (relay, baseline, fds)
}

/// A vendor that accepts TCP and never says a word (a TLS handshake to it can only time
/// out); counts the connections it accepted.
struct Silent {
    addr: std::net::SocketAddr,
    accepted: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Silent {
    async fn start() -> Silent {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                held.push(s);
            }
        });
        Silent { addr, accepted, task }
    }
}

impl Drop for Silent {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// An address whose connect never completes, on loopback: a listener that never accepts,
/// its accept queue already full (backlog 0 holds one connection), so the kernel drops
/// every new SYN and the connecting side waits. The listener and the fillers are returned
/// to be held for the test's length.
async fn black_hole() -> (tokio::net::TcpListener, Vec<TcpStream>) {
    let sock = TcpSocket::new_v4().unwrap();
    sock.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = sock.listen(0).unwrap();
    let addr = listener.local_addr().unwrap();
    let mut fillers = Vec::new();
    for _ in 0..8 {
        match tokio::time::timeout(Duration::from_millis(200), TcpStream::connect(addr)).await {
            Ok(Ok(s)) => fillers.push(s),
            // The queue is full: this connect hangs, as the relay's will.
            Err(_) => return (listener, fillers),
            Ok(Err(e)) => panic!("filling the accept queue: {e}"),
        }
    }
    panic!("the accept queue of a backlog-0 listener never filled");
}

/// An address that refuses connections: a bound socket that does not listen (held, so no
/// one else can take the port meanwhile).
fn refusing() -> (TcpSocket, std::net::SocketAddr) {
    let sock = TcpSocket::new_v4().unwrap();
    sock.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = sock.local_addr().unwrap();
    (sock, addr)
}

/// For each status: a model `m<status>` served first (priority 1) by a vendor that always
/// answers that status, then by `good`. Returns `good`, the failing vendors and the config.
async fn first_failing_then_good(statuses: &[u16]) -> (Mock, Vec<Mock>, String) {
    let good = mock().await;
    let mut bad = Vec::new();
    let mut config = String::new();
    for &s in statuses {
        let m = mock().await;
        let model = format!("m{s}");
        config.push_str(&channel(
            &format!("first-{s}"),
            &m.base_url(),
            &model,
            &format!("priority = 1\n{}", failing(s)),
        ));
        config.push_str(&channel(&format!("second-{s}"), &good.base_url(), &model, ""));
        bad.push(m);
    }
    (good, bad, config)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vendor_5xx_and_429_move_on_to_the_next_channel() {
    let statuses = [500u16, 502, 503, 429];
    let (good, bad, config) = first_failing_then_good(&statuses).await;
    let (relay, baseline, fds) = relay_on(&config, &good).await;

    for (s, m) in statuses.iter().zip(&bad) {
        let before = seen(&good);
        let id = format!("fo-{s}");
        let a = chat_as(&relay, &id, &format!("m{s}"), false).await;
        assert_eq!(a.status, StatusCode::OK, "{s}: {}", a.text());
        assert!(a.json()["choices"][0]["message"]["content"].is_string(), "{}", a.text());
        assert!(a.headers.get("retry-after").is_none(), "the first vendor's Retry-After leaked: {:?}", a.headers);
        assert_eq!(seen(m), 1, "{s}: the failing vendor saw exactly one attempt");
        assert_eq!(seen(&good) - before, 1, "{s}: the second vendor answered once");
        let line = assert_access(&relay, &id, &format!("second-{s}"), 2, 200).await;
        // The line is the answer the client got; the absorbed 5xx has its own warn line.
        assert!(line.contains(" error=\"\""), "{s}: a 200 logged with an error: {line}");
    }
    let logs = relay.logs();
    assert!(
        logs.contains("vendor error, trying the next channel") && logs.contains("channel=first-503 status=503"),
        "{logs}"
    );

    // The same before a stream starts: the vendor's 503 is not a byte the client saw.
    let before = (seen(&bad[2]), seen(&good));
    let a = chat_as(&relay, "fo-503-stream", "m503", true).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    let events = a.sse_data();
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"), "{events:?}");
    assert!(!joined_content(&events).is_empty(), "{events:?}");
    assert_eq!((seen(&bad[2]) - before.0, seen(&good) - before.1), (1, 1));
    assert_access(&relay, "fo-503-stream", "second-503", 2, 200).await;
    settle(&relay, baseline, fds).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_vendors_move_on_to_the_next_channel() {
    let good = mock().await;
    let (_refusing, refused_addr) = refusing();
    let (hole, _fillers) = black_hole().await;
    let hole_addr = hole.local_addr().unwrap();
    let silent = Silent::start().await;
    let first = |name: &str, url: String, timeouts: &str| {
        channel(name, &url, name, &format!("priority = 1\n[channel.timeouts]\n{timeouts}\n"))
    };
    let config = [
        first("refused", format!("http://{refused_addr}/v1"), "connect = 5"),
        channel("second-refused", &good.base_url(), "refused", ""),
        first("syn", format!("http://{hole_addr}/v1"), "connect = 0.3"),
        channel("second-syn", &good.base_url(), "syn", ""),
        first("tls", format!("https://{}/v1", silent.addr), "tls_handshake = 0.3"),
        channel("second-tls", &good.base_url(), "tls", ""),
    ]
    .concat();
    let (relay, baseline, fds) = relay_on(&config, &good).await;

    for (model, stage) in [("refused", None), ("syn", Some("connect")), ("tls", Some("tls_handshake"))] {
        let before = seen(&good);
        let id = format!("fo-{model}");
        let t = Instant::now();
        let a = chat_as(&relay, &id, model, false).await;
        assert_eq!(a.status, StatusCode::OK, "{model}: {}", a.text());
        // Well under the first channel's `connect = 5` or the defaults of 10 s.
        assert!(t.elapsed() < Duration::from_secs(4), "{model}: {:?}", t.elapsed());
        assert_eq!(seen(&good) - before, 1, "{model}");
        assert_access(&relay, &id, &format!("second-{model}"), 2, 200).await;
        if let Some(stage) = stage {
            let m = relay.metrics().await;
            assert_eq!(m.value("relay_timeouts_total", &[("stage", stage)]), 1.0, "{model}");
        }
    }
    assert_eq!(silent.accepted.load(Ordering::SeqCst), 1, "the TLS vendor saw one connection");
    settle(&relay, baseline, fds).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_channel_whose_adapter_cannot_serve_is_skipped() {
    let good = mock().await;
    let unused = mock().await;
    let with_adapter = |adapter: &str, name: &str, model: &str, extra: &str| {
        channel(name, &unused.base_url(), model, extra)
            .replace("adapter = \"openai\"", &format!("adapter = \"{adapter}\""))
    };
    let config = [
        with_adapter("absent", "ghost", "m", "priority = 1"),
        channel("second", &good.base_url(), "m", ""),
        // The other way round: the missing adapter is the last channel, so its error is the answer.
        channel("first-down", &unused.base_url(), "last", &format!("priority = 1\n{}", failing(503))),
        with_adapter("absent", "ghost-last", "last", ""),
        // An adapter that is loaded but does not serve embeddings is skipped the same way.
        with_adapter("anthropic", "chat-only", "e", "priority = 1"),
        channel("second-e", &good.base_url(), "e", ""),
        with_adapter("anthropic", "chat-only-last", "e-last", ""),
    ]
    .concat();
    let (relay, baseline, fds) = relay_with_adapters(&config, &good, &["openai", "anthropic"]).await;

    let before = seen(&good);
    let a = chat_as(&relay, "fo-ghost", "m", false).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    assert_eq!(seen(&good) - before, 1);
    assert_access(&relay, "fo-ghost", "second", 2, 200).await;

    let a = chat_as(&relay, "fo-ghost-last", "last", false).await;
    assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE, "{}", a.text());
    assert_eq!(a.openai_error().0, "adapter 'absent' of channel ghost-last is not loaded");
    assert_eq!(seen(&unused), 1, "only first-down reached a vendor");
    assert_access(&relay, "fo-ghost-last", "ghost-last", 2, 503).await;

    let before = seen(&good);
    let a = embed_as(&relay, "fo-embed", "e").await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    assert_eq!(a.json()["object"], "list", "{}", a.text());
    assert_eq!(seen(&good) - before, 1);
    assert_access(&relay, "fo-embed", "second-e", 2, 200).await;
    let a = embed_as(&relay, "fo-embed-last", "e-last").await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST, "{}", a.text());
    assert_eq!(a.openai_error().1, "unsupported_endpoint");
    assert_eq!(seen(&unused), 1, "no vendor saw the refused request");
    settle(&relay, baseline, fds).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vendor_4xx_is_the_answer_without_failover() {
    let statuses = [400u16, 401, 404];
    let (good, bad, config) = first_failing_then_good(&statuses).await;
    let (relay, baseline, fds) = relay_on(&config, &good).await;

    let before = seen(&good);
    for (s, m) in statuses.iter().zip(&bad) {
        let id = format!("fo-{s}");
        let a = chat_as(&relay, &id, &format!("m{s}"), false).await;
        assert_eq!(a.status.as_u16(), *s, "{}", a.text());
        assert_eq!(a.openai_error().0, format!("Mock vendor error {s}"));
        assert_eq!(seen(m), 1, "{s}");
        assert_access(&relay, &id, &format!("first-{s}"), 1, *s).await;
    }
    assert_eq!(seen(&good), before, "the second vendor saw no attempt");
    settle(&relay, baseline, fds).await;
}

/// Send a stream request on a raw socket, read until the first chunk arrived, then leave.
async fn leave_after_first_chunk(relay: &TestRelay, id: &str, model: &str) {
    let body = chat_body(model, "a long answer that the client will not wait for", true).to_string();
    let mut s = TcpStream::connect(relay.addr).await.unwrap();
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: relay\r\nauthorization: Bearer {CLIENT_KEY}\r\n\
         content-type: application/json\r\nx-request-id: {id}\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let (mut got, mut buf) = (Vec::new(), [0u8; 4096]);
    let end = tokio::time::Instant::now() + Duration::from_secs(10);
    while !String::from_utf8_lossy(&got).contains("data: {") {
        let n = tokio::time::timeout_at(end, s.read(&mut buf)).await.expect("a first chunk within 10 s").unwrap();
        assert!(n > 0, "the relay closed before the first chunk: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    assert!(got.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&got));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_failover_once_a_byte_reached_the_client() {
    let good = mock().await;
    let cut = mock().await;
    let down = mock().await;
    let slow = "headers = { \"x-mock-chunks\" = \"40\", \"x-mock-chunk-delay-ms\" = \"100\" }";
    let config = [
        channel(
            "cut",
            &cut.base_url(),
            "cut",
            "priority = 1\nheaders = { \"x-mock-fault\" = \"drop-after:3\", \"x-mock-chunk-delay-ms\" = \"20\" }",
        ),
        channel("second-cut", &good.base_url(), "cut", ""),
        channel("down", &down.base_url(), "left", &format!("priority = 1\n{}", failing(502))),
        channel("slow", &good.base_url(), "left", slow),
    ]
    .concat();
    let (relay, baseline, fds) = relay_on(&config, &good).await;

    let before = seen(&good);
    let a = chat_as(&relay, "fo-cut", "cut", true).await;
    assert_eq!(a.status, StatusCode::OK, "the stream had started: {}", a.text());
    let events = a.sse_data();
    assert!(!events.iter().any(|e| e == "[DONE]"), "a cut stream must not end with [DONE]: {events:?}");
    assert!(!joined_content(&events).is_empty(), "chunks reached the client before the cut: {events:?}");
    let last: Value = serde_json::from_str(events.last().unwrap()).unwrap();
    let msg = last["error"]["message"].as_str().unwrap_or_else(|| panic!("not an error event: {last}"));
    assert!(msg.contains("mid-stream on channel cut"), "{msg}");
    assert_eq!(seen(&cut), 1);
    assert_eq!(seen(&good), before, "the second vendor saw no attempt");
    assert_access(&relay, "fo-cut", "cut", 1, 502).await;

    // A stream that starts on the second channel after a 502 and that the client leaves:
    // the record is the second attempt's, not the first's (499, not the absorbed 502).
    leave_after_first_chunk(&relay, "fo-left", "left").await;
    let line = assert_access(&relay, "fo-left", "slow", 2, 499).await;
    assert!(line.contains(" error=\"\""), "{line}");
    assert_eq!(seen(&down), 1);
    assert_eq!(relay.metrics().await.gauge("relay_client_disconnects_total"), 1.0);
    settle(&relay, baseline, fds).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_every_channel_fails_the_last_answer_is_the_clients() {
    let good = mock().await;
    let (a500, b503, c429, d404) = (mock().await, mock().await, mock().await, mock().await);
    let (_refusing, refused_addr) = refusing();
    let dead = format!("http://{refused_addr}/v1");
    let config = [
        // 500, refused, then 503: the client gets the 503.
        channel("a500", &a500.base_url(), "all", &format!("priority = 3\n{}", failing(500))),
        channel("dead", &dead, "all", "priority = 2"),
        channel("b503", &b503.base_url(), "all", &format!("priority = 1\n{}", failing(503))),
        // 429, then refused: the refusal, not the 429 (nor its Retry-After).
        channel("c429", &c429.base_url(), "refused-last", &format!("priority = 1\n{}", failing(429))),
        channel("dead-last", &dead, "refused-last", ""),
        // 503, then 404: the 404 from the second vendor, as it said it.
        channel("b503-again", &b503.base_url(), "not-found-last", &format!("priority = 1\n{}", failing(503))),
        channel("d404", &d404.base_url(), "not-found-last", &failing(404)),
    ]
    .concat();
    let (relay, baseline, fds) = relay_on(&config, &good).await;

    let a = chat_as(&relay, "fo-all", "all", false).await;
    assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE, "{}", a.text());
    assert_eq!(a.openai_error().0, "Mock vendor error 503");
    assert_eq!((seen(&a500), seen(&b503)), (1, 1));
    assert_access(&relay, "fo-all", "b503", 3, 503).await;

    let a = chat_as(&relay, "fo-refused-last", "refused-last", false).await;
    assert_eq!(a.status, StatusCode::BAD_GATEWAY, "{}", a.text());
    let (msg, code) = a.openai_error();
    assert!(msg.starts_with("cannot reach channel dead-last"), "{msg}");
    assert_eq!(code, "upstream_unreachable");
    assert!(a.headers.get("retry-after").is_none(), "{:?}", a.headers);
    assert_eq!(seen(&c429), 1);
    assert_access(&relay, "fo-refused-last", "dead-last", 2, 502).await;

    let a = chat_as(&relay, "fo-404-last", "not-found-last", false).await;
    assert_eq!(a.status, StatusCode::NOT_FOUND, "{}", a.text());
    assert_eq!(a.openai_error().0, "Mock vendor error 404");
    assert_eq!((seen(&b503), seen(&d404)), (2, 1));
    assert_access(&relay, "fo-404-last", "d404", 2, 404).await;
    settle(&relay, baseline, fds).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lower_priority_is_tried_only_when_the_higher_fails() {
    let good = mock().await;
    let (high, mid, low) = (mock().await, mock().await, mock().await);
    let (high_down, low2) = (mock().await, mock().await);
    let config = [
        // Three levels, negative allowed: the highest answers every time.
        channel("high", &high.base_url(), "p", "priority = 10"),
        channel("low", &low.base_url(), "p", "priority = -5"),
        channel("mid", &mid.base_url(), "p", "priority = 0"),
        // The highest fails: the next one down answers, the lowest is still never tried.
        channel("high-down", &high_down.base_url(), "q", &format!("priority = 10\n{}", failing(503))),
        channel("mid2", &good.base_url(), "q", "priority = 0"),
        channel("low2", &low2.base_url(), "q", "priority = -5"),
    ]
    .concat();
    let (relay, baseline, fds) = relay_on(&config, &good).await;

    const N: u64 = 40;
    let before = seen(&good);
    for i in 0..N {
        let a = relay.chat(&chat_body("p", "hi", false)).await;
        assert_eq!(a.status, StatusCode::OK, "p #{i}: {}", a.text());
        let a = relay.chat(&chat_body("q", "hi", false)).await;
        assert_eq!(a.status, StatusCode::OK, "q #{i}: {}", a.text());
    }
    assert_eq!((seen(&high), seen(&mid), seen(&low)), (N, 0, 0), "p: high, mid, low");
    assert_eq!((seen(&high_down), seen(&good) - before, seen(&low2)), (N, N, 0), "q: high-down, mid2, low2");
    settle(&relay, baseline, fds).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn equal_priorities_share_traffic_by_weight() {
    let good = mock().await;
    let (light, heavy) = (mock().await, mock().await);
    let config = [
        channel("light", &light.base_url(), "w", "weight = 1"),
        channel("heavy", &heavy.base_url(), "w", "weight = 3"),
        // A lower priority is outside the draw altogether.
        channel("backup", &good.base_url(), "w", "priority = -1\nweight = 1000"),
    ]
    .concat();
    let (relay, baseline, fds) = relay_on(&config, &good).await;

    const N: u64 = 400;
    let before = seen(&good);
    let results: Vec<StatusCode> = futures_util::stream::iter(0..N)
        .map(|_| async { relay.chat(&chat_body("w", "hi", false)).await.status })
        .buffer_unordered(4)
        .collect()
        .await;
    assert!(results.iter().all(|s| *s == StatusCode::OK), "{results:?}");
    let (l, h) = (seen(&light), seen(&heavy));
    assert_eq!(l + h, N, "every request went to exactly one of the two");
    assert_eq!(seen(&good), before, "the lower priority was never drawn");
    // Binomial(400, 1/4): mean 100, sigma 8.7; 61..=139 is 4.5 sigma either side.
    assert!((61..=139).contains(&l), "light got {l} of {N}, heavy {h}: expected about 100");
    settle(&relay, baseline, fds).await;

    // Weight 0 is refused, naming the key and its line: a channel is taken out of the draw
    // by removing it or lowering its priority, not by a weight that would never be drawn.
    let config = format!("{}{}", channel("zero", &light.base_url(), "w", "weight = 0"), token_block(CLIENT_KEY, "*"));
    let line = 2 + 1 + config.lines().position(|l| l == "weight = 0").unwrap();
    let err = TestRelay::try_start(Setup { config: &config, adapters: &["openai"], env: &[] })
        .await
        .err()
        .expect("weight = 0 must not start");
    assert!(err.contains(&format!("weight (line {line}): must be at least 1")), "{err}");
}
