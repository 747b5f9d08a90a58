//! A hostile or broken vendor, spoken as raw TCP so that it can break HTTP itself: endless
//! or too many headers, an event past the bound, floods of line breaks, a one-byte drip,
//! invalid UTF-8, redirects, compressed bodies, bytes after the response, a close before
//! the head. Each answer is clean (the client's error shape, never a hang, never the
//! vendor's garbage), each vendor socket is closed by the relay, and every gauge and the
//! relay's file descriptors come back to their baseline.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::StatusCode;
use relay_tests::*;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// How long any scripted vendor keeps talking before it gives up by itself.
const VENDOR_LIFETIME: Duration = Duration::from_secs(30);

const SSE_HEAD: &str = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\r\n";

fn chunk(content: &str) -> String {
    serde_json::json!({
        "id": "chatcmpl-raw", "object": "chat.completion.chunk", "created": 1, "model": "raw",
        "choices": [{"index": 0, "delta": {"content": content}, "finish_reason": null}]
    })
    .to_string()
}

fn completion(content: &str) -> String {
    serde_json::json!({
        "id": "chatcmpl-raw", "object": "chat.completion", "created": 1, "model": "raw",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}
    })
    .to_string()
}

fn json_response(body: &str) -> String {
    format!("HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}", body.len())
}

/// A vendor that reads each request (head and body) and then runs its script on the socket.
struct RawVendor {
    addr: std::net::SocketAddr,
    accepted: Arc<AtomicUsize>,
    open: Arc<AtomicUsize>,
    heads: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for RawVendor {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl RawVendor {
    async fn start<F, Fut>(script: F) -> RawVendor
    where
        F: Fn(TcpStream) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (accepted, open, heads) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)), Arc::default());
        let script = Arc::new(script);
        let (a, o, h): (_, _, Arc<Mutex<Vec<String>>>) = (accepted.clone(), open.clone(), Arc::clone(&heads));
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut s, _)) = listener.accept().await else { return };
                a.fetch_add(1, Ordering::SeqCst);
                o.fetch_add(1, Ordering::SeqCst);
                let (o, h, script) = (o.clone(), h.clone(), script.clone());
                tokio::spawn(async move {
                    if let Some(head) = read_request(&mut s).await {
                        h.lock().unwrap().push(head);
                        let _ = tokio::time::timeout(VENDOR_LIFETIME, script(s)).await;
                    }
                    o.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        RawVendor { addr, accepted, open, heads, task }
    }

    fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Wait until the relay has closed every connection to this vendor.
    async fn assert_all_closed(&self) {
        let end = Instant::now() + Duration::from_secs(10);
        while self.open.load(Ordering::SeqCst) > 0 {
            assert!(Instant::now() < end, "the relay kept a connection to the vendor open");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// The request head (lower-cased) once the whole request is read; `None` if the peer left.
async fn read_request(s: &mut TcpStream) -> Option<String> {
    let mut buf = Vec::new();
    let mut tmp = [0u8; 8192];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = s.read(&mut tmp).await.ok().filter(|n| *n > 0)?;
        buf.extend_from_slice(&tmp[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let len: usize =
        head.lines().find_map(|l| l.strip_prefix("content-length:")).and_then(|v| v.trim().parse().ok()).unwrap_or(0);
    while buf.len() < head_end + len {
        let n = s.read(&mut tmp).await.ok().filter(|n| *n > 0)?;
        buf.extend_from_slice(&tmp[..n]);
    }
    Some(head)
}

/// Write until the relay stops reading or closes (or the vendor's lifetime ends).
async fn write_forever(s: &mut TcpStream, piece: &[u8], pause: Duration) {
    let end = Instant::now() + VENDOR_LIFETIME;
    while Instant::now() < end {
        if s.write_all(piece).await.is_err() {
            return;
        }
        if !pause.is_zero() {
            tokio::time::sleep(pause).await;
        }
    }
}

/// Hold the socket open until the relay closes it.
async fn until_closed(s: &mut TcpStream) {
    let mut tmp = [0u8; 1024];
    while let Ok(n) = s.read(&mut tmp).await {
        if n == 0 {
            return;
        }
    }
}

/// A relay with a well-behaved `ok` channel (for the baseline) and a `raw` channel on the
/// scripted vendor; `limits` are extra `[limits]` lines.
async fn relay_for(vendor: &RawVendor, raw_extra: &str, limits: &str) -> (TestRelay, Gauges, Mock, usize) {
    let ok = Mock::start(Options::default()).await.unwrap();
    let config = format!(
        "{limits}{}{}",
        channel("ok", &ok.base_url(), "ok", ""),
        channel("raw", &vendor.base_url(), "raw", raw_extra)
    );
    let (relay, baseline) = relay_with_baseline(&config, &["ok"]).await;
    let fd_baseline = relay.open_fds();
    (relay, baseline, ok, fd_baseline)
}

/// Every gauge and the relay's descriptors back to baseline, the vendor's sockets closed.
async fn assert_clean(relay: &TestRelay, baseline: Gauges, fd_baseline: usize, vendor: &RawVendor) {
    vendor.assert_all_closed().await;
    relay.assert_back_to(baseline, Duration::from_secs(10)).await;
    relay.assert_fds_back(fd_baseline, Duration::from_secs(10)).await;
}

fn stream_error(a: &Answer) -> String {
    let events = a.sse_data();
    assert!(!events.iter().any(|e| e == "[DONE]"), "a failed stream must not end with [DONE]: {events:?}");
    let v: Value = serde_json::from_str(events.last().expect("an error event")).expect("JSON error event");
    v["error"]["message"].as_str().unwrap_or_else(|| panic!("not an error event: {v}")).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endless_and_too_many_headers_are_a_clean_502() {
    let endless = RawVendor::start(|mut s| async move {
        if s.write_all(b"HTTP/1.1 200 OK\r\n").await.is_ok() {
            write_forever(
                &mut s,
                b"x-endless: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n",
                Duration::ZERO,
            )
            .await;
        }
    })
    .await;
    let (relay, baseline, _ok, fd0) = relay_for(&endless, "", "").await;
    let t = Instant::now();
    let a = relay.chat(&chat_body("raw", "hi", false)).await;
    assert!(t.elapsed() < Duration::from_secs(10), "endless headers answered in {:?}", t.elapsed());
    assert_eq!(a.status, StatusCode::BAD_GATEWAY, "{}", a.text());
    a.openai_error();
    assert_clean(&relay, baseline, fd0, &endless).await;

    let many = RawVendor::start(|mut s| async move {
        let mut head = String::from("HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n");
        for i in 0..200 {
            head.push_str(&format!("x-h{i}: v\r\n"));
        }
        let body = completion("hello");
        head.push_str(&format!("content-length: {}\r\n\r\n{body}", body.len()));
        let _ = s.write_all(head.as_bytes()).await;
        until_closed(&mut s).await;
    })
    .await;
    let (relay, baseline, _ok, fd0) = relay_for(&many, "", "").await;
    let a = relay.chat(&chat_body("raw", "hi", false)).await;
    assert_eq!(a.status, StatusCode::BAD_GATEWAY, "{}", a.text());
    a.openai_error();
    assert_clean(&relay, baseline, fd0, &many).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_past_the_bound_ends_the_stream() {
    let vendor = RawVendor::start(|mut s| async move {
        if s.write_all(SSE_HEAD.as_bytes()).await.is_err() {
            return;
        }
        let first = format!("data: {}\n\n", chunk("before"));
        if s.write_all(first.as_bytes()).await.is_ok() && s.write_all(b"data: ").await.is_ok() {
            // One line that never ends.
            write_forever(&mut s, &[b'a'; 16 * 1024], Duration::ZERO).await;
        }
    })
    .await;
    let (relay, baseline, _ok, fd0) = relay_for(&vendor, "", "max_stream_event = 65536\n").await;
    let a = relay.chat(&chat_body("raw", "hi", true)).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(joined_content(&a.sse_data()), "before");
    assert_eq!(stream_error(&a), "upstream stream event is larger than the limit of 65536 bytes on channel raw");
    assert_clean(&relay, baseline, fd0, &vendor).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn floods_of_line_breaks_and_comments_do_not_stop_the_answer() {
    let vendor = RawVendor::start(|mut s| async move {
        let mut body = Vec::from(SSE_HEAD.as_bytes());
        body.extend_from_slice(format!("data: {}\n\n", chunk("one ")).as_bytes());
        body.extend(std::iter::repeat_n(b'\n', 4 << 20));
        body.extend_from_slice(": keep-alive\r\n".repeat(100_000).as_bytes());
        body.extend(std::iter::repeat_n(b'\r', 1 << 20));
        body.extend_from_slice(format!("data: {}\r\n\r\ndata: [DONE]\n\n", chunk("two")).as_bytes());
        let _ = s.write_all(&body).await;
    })
    .await;
    let (relay, baseline, _ok, fd0) = relay_for(&vendor, "", "").await;
    // A second request runs beside the flood and is served meanwhile.
    let (flood, beside) = (chat_body("raw", "hi", true), chat_body("ok", "beside", false));
    let (a, b) = tokio::join!(relay.chat(&flood), relay.chat(&beside));
    assert_eq!(b.status, StatusCode::OK);
    let events = a.sse_data();
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"), "{events:?}");
    assert_eq!(joined_content(&events), "one two");
    assert_clean(&relay, baseline, fd0, &vendor).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_byte_drip_ends_at_the_total_deadline() {
    let vendor = RawVendor::start(|mut s| async move {
        if s.write_all(SSE_HEAD.as_bytes()).await.is_ok() {
            // Always just inside the idle bound: only the total deadline can end it.
            write_forever(&mut s, b":", Duration::from_millis(200)).await;
        }
    })
    .await;
    let extra = "[channel.timeouts]\nstream_idle = 1\ntotal = 3\n";
    let (relay, baseline, _ok, fd0) = relay_for(&vendor, extra, "").await;
    let t = Instant::now();
    let a = relay.chat(&chat_body("raw", "hi", true)).await;
    let took = t.elapsed();
    assert!(took >= Duration::from_millis(2700) && took < Duration::from_secs(8), "ended after {took:?}");
    assert_eq!(stream_error(&a), "total request timeout after 3 s on channel raw");
    assert_clean(&relay, baseline, fd0, &vendor).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_utf8_is_an_error_event_or_a_lossy_body() {
    let vendor = RawVendor::start(|mut s| async move {
        let mut body = Vec::from(SSE_HEAD.as_bytes());
        body.extend_from_slice(format!("data: {}\n\n", chunk("fine")).as_bytes());
        body.extend_from_slice(b"data: {\"broken\": \"\xff\xfe\"}\n\n");
        let _ = s.write_all(&body).await;
    })
    .await;
    let (relay, baseline, _ok, fd0) = relay_for(&vendor, "", "").await;
    let a = relay.chat(&chat_body("raw", "hi", true)).await;
    assert_eq!(joined_content(&a.sse_data()), "fine");
    assert_eq!(stream_error(&a), "upstream stream is not valid UTF-8 on channel raw");
    assert_clean(&relay, baseline, fd0, &vendor).await;

    let whole = RawVendor::start(|mut s| async move {
        let body = completion("caf\u{e9}").replace('\u{e9}', "\u{1}");
        let mut bytes = json_response(&body).into_bytes();
        // Replace the marker with a lone continuation byte: invalid UTF-8 inside a string.
        let at = bytes.iter().position(|b| *b == 1).unwrap();
        bytes[at] = 0x80;
        let _ = s.write_all(&bytes).await;
        until_closed(&mut s).await;
    })
    .await;
    let (relay, baseline, _ok, fd0) = relay_for(&whole, "", "").await;
    let a = relay.chat(&chat_body("raw", "hi", false)).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    assert_eq!(a.json()["choices"][0]["message"]["content"], "caf\u{fffd}", "decoded lossily, never raw bytes");
    assert_clean(&relay, baseline, fd0, &whole).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_are_not_followed_and_compressed_bodies_not_passed_on() {
    let elsewhere = RawVendor::start(|mut s| async move {
        let _ = s.write_all(json_response(&completion("followed")).as_bytes()).await;
    })
    .await;
    let target = format!("{}/v1/chat/completions", elsewhere.base_url());
    let redirect = RawVendor::start(move |mut s| {
        let target = target.clone();
        async move {
            let head = format!("HTTP/1.1 302 Found\r\nlocation: {target}\r\ncontent-length: 0\r\n\r\n");
            let _ = s.write_all(head.as_bytes()).await;
            until_closed(&mut s).await;
        }
    })
    .await;
    let (relay, baseline, _ok, fd0) = relay_for(&redirect, "", "").await;
    let a = relay.chat(&chat_body("raw", "hi", false)).await;
    assert_eq!(a.status, StatusCode::BAD_GATEWAY, "{}", a.text());
    assert!(a.headers.get("location").is_none(), "the vendor's Location reached the client");
    let (msg, _) = a.openai_error();
    assert!(msg.contains("redirect") && !msg.contains(&elsewhere.addr.to_string()), "{msg}");
    assert_eq!(elsewhere.accepted.load(Ordering::SeqCst), 0, "the redirect was followed");
    assert_clean(&relay, baseline, fd0, &redirect).await;

    let gzip = RawVendor::start(|mut s| async move {
        // A gzip member header and garbage: the relay asked for no encoding, and must not
        // hand the client bytes it cannot read as JSON.
        let body = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03\xab\xae\x05\x00\x43\xbf\xa6\xa3\x02\x00\x00\x00";
        let head = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-encoding: gzip\r\ncontent-length: {}\r\n\r\n",
            body.len()
        );
        let _ = s.write_all(head.as_bytes()).await;
        let _ = s.write_all(body).await;
        until_closed(&mut s).await;
    })
    .await;
    let (relay, baseline, _ok, fd0) = relay_for(&gzip, "", "").await;
    let a = relay.chat(&chat_body("raw", "hi", false)).await;
    assert_eq!(a.status, StatusCode::BAD_GATEWAY, "{}", a.text());
    assert!(a.openai_error().0.contains("content-encoding gzip"), "{}", a.text());
    let head = gzip.heads.lock().unwrap()[0].clone();
    assert!(!head.contains("accept-encoding"), "the relay asked for an encoding it does not decode: {head}");
    assert_clean(&relay, baseline, fd0, &gzip).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_after_the_response_are_never_read_as_the_next_answer() {
    let vendor = RawVendor::start(|mut s| async move {
        let mut bytes = json_response(&completion("first"));
        // A second, unrequested response right behind the first (response smuggling).
        bytes.push_str(&json_response(&completion("smuggled")));
        let _ = s.write_all(bytes.as_bytes()).await;
        // Were the connection reused, the next request would read the smuggled answer.
        if read_request(&mut s).await.is_some() {
            let _ = s.write_all(json_response(&completion("reused")).as_bytes()).await;
        }
        until_closed(&mut s).await;
    })
    .await;
    let (relay, baseline, _ok, fd0) = relay_for(&vendor, "", "").await;
    for _ in 0..2 {
        let a = relay.chat(&chat_body("raw", "hi", false)).await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.text());
        assert_eq!(a.json()["choices"][0]["message"]["content"], "first", "bytes after a response were read");
    }
    assert_clean(&relay, baseline, fd0, &vendor).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_close_before_the_head_and_a_protocol_switch_are_clean_errors() {
    let close = RawVendor::start(|s| async move { drop(s) }).await;
    let (relay, baseline, _ok, fd0) = relay_for(&close, "", "").await;
    let a = relay.chat(&chat_body("raw", "hi", false)).await;
    assert_eq!(a.status, StatusCode::BAD_GATEWAY, "{}", a.text());
    a.openai_error();
    assert_clean(&relay, baseline, fd0, &close).await;

    let switch = RawVendor::start(|mut s| async move {
        let _ =
            s.write_all(b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\n").await;
        until_closed(&mut s).await;
    })
    .await;
    let (relay, baseline, _ok, fd0) = relay_for(&switch, "[channel.timeouts]\ntotal = 5\n", "").await;
    let t = Instant::now();
    let a = relay.chat(&chat_body("raw", "hi", false)).await;
    assert!(t.elapsed() < Duration::from_secs(8), "a 101 hung the request for {:?}", t.elapsed());
    assert_eq!(a.status, StatusCode::BAD_GATEWAY, "{}", a.text());
    a.openai_error();
    assert_clean(&relay, baseline, fd0, &switch).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_over_the_response_limit_is_refused_with_or_without_a_length() {
    for declared in [true, false] {
        let vendor = RawVendor::start(move |mut s| async move {
            let head = if declared {
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 10000000\r\n\r\n"
            } else {
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\r\n"
            };
            if s.write_all(head.as_bytes()).await.is_ok() {
                write_forever(&mut s, &[b' '; 64 * 1024], Duration::ZERO).await;
            }
        })
        .await;
        let (relay, baseline, _ok, fd0) = relay_for(&vendor, "", "max_response_body = 100000\n").await;
        let a = relay.chat(&chat_body("raw", "hi", false)).await;
        assert_eq!(a.status, StatusCode::BAD_GATEWAY, "{}", a.text());
        assert_eq!(a.openai_error().0, "the response of channel raw is larger than the limit of 100000 bytes");
        assert_clean(&relay, baseline, fd0, &vendor).await;
    }
}

/// A name server on loopback: answers A queries for any name with 127.0.0.1 (TTL 60 s)
/// when `answer` is set, and swallows every query otherwise. Counts the queries.
async fn name_server(answer: bool) -> (std::net::SocketAddr, Arc<AtomicUsize>, tokio::task::JoinHandle<()>) {
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    let queries = Arc::new(AtomicUsize::new(0));
    let q = queries.clone();
    let task = tokio::spawn(async move {
        let mut buf = [0u8; 1500];
        while let Ok((n, peer)) = socket.recv_from(&mut buf).await {
            q.fetch_add(1, Ordering::SeqCst);
            if !answer || n < 12 {
                continue;
            }
            // The question: labels up to the root, then type and class.
            let mut end = 12;
            while end < n && buf[end] != 0 {
                end += buf[end] as usize + 1;
            }
            let question_end = end + 5;
            if question_end > n {
                continue;
            }
            let is_a = buf[end + 1..end + 3] == [0, 1];
            let mut reply = Vec::with_capacity(question_end + 16);
            reply.extend_from_slice(&buf[..2]);
            reply.extend_from_slice(&[0x81, 0x80, 0, 1, 0, u8::from(is_a), 0, 0, 0, 0]);
            reply.extend_from_slice(&buf[12..question_end]);
            if is_a {
                reply.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 127, 0, 0, 1]);
            }
            let _ = socket.send_to(&reply, peer).await;
        }
    });
    (addr, queries, task)
}

async fn relay_with_dns(server: std::net::SocketAddr, vendor: &Mock) -> TestRelay {
    let port = vendor.base_url().rsplit(':').next().unwrap().trim_end_matches('/').to_string();
    let base = format!("http://vendor.relay.test:{port}");
    let config = format!(
        "dns_servers = [\"{server}\"]\n{FAST_POOL}{}{}",
        channel("named", &base, "named", "[channel.timeouts]\ndns = 1\n"),
        token_block(CLIENT_KEY, "*")
    );
    TestRelay::start(Setup { config: &config, adapters: &["openai"], env: &[] }).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_names_resolve_through_a_cached_bounded_dns_stage() {
    let vendor = Mock::start(Options::default()).await.unwrap();

    // A name server that answers: the vendor is reached by name, and the answer is cached.
    let (server, queries, task) = name_server(true).await;
    let relay = relay_with_dns(server, &vendor).await;
    for _ in 0..3 {
        let a = relay.chat(&chat_body("named", "hi", false)).await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    }
    let m = relay.metrics().await;
    assert!(m.value("relay_dns_lookups_total", &[("result", "ok")]) >= 1.0);
    let asked = queries.load(Ordering::SeqCst);
    assert!((1..=2).contains(&asked), "the name server was asked {asked} times for one name (A, maybe AAAA)");
    task.abort();
    drop(relay);

    // A name server that never answers: the lookup is cut at `timeouts.dns`, as its own
    // stage. The resolver keeps one task of its own once used: the baseline is taken after
    // a first lookup, so a second shows that nothing piles up per lookup.
    let (server, queries, task) = name_server(false).await;
    let relay = relay_with_dns(server, &vendor).await;
    let (mut baseline, mut fd0) = (relay.gauges().await, relay.open_fds());
    for round in 1..=2 {
        let t = Instant::now();
        let a = relay.chat(&chat_body("named", "hi", false)).await;
        let took = t.elapsed();
        assert!(took >= Duration::from_millis(900) && took < Duration::from_secs(5), "answered after {took:?}");
        assert_eq!(a.status, StatusCode::GATEWAY_TIMEOUT, "{}", a.text());
        assert_eq!(a.openai_error().0, "upstream DNS lookup timeout after 1 s on channel named");
        assert!(queries.load(Ordering::SeqCst) >= 1, "the configured name server was asked");
        let m = relay.metrics().await;
        assert_eq!(m.value("relay_timeouts_total", &[("stage", "dns")]), f64::from(round));
        assert_eq!(m.value("relay_dns_lookups_total", &[("result", "timeout")]), f64::from(round));
        if round == 1 {
            // The resolver's query tasks end within its own bound (2 tries of 2 s).
            tokio::time::sleep(Duration::from_secs(5)).await;
            (baseline, fd0) = (relay.gauges().await, relay.open_fds());
            continue;
        }
        relay.assert_back_to(baseline, Duration::from_secs(10)).await;
        relay.assert_fds_back(fd0, Duration::from_secs(10)).await;
    }
    task.abort();
}
