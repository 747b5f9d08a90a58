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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_then_ends_streams_and_exits_zero() {
    let m = Mock::start(Options::default()).await.unwrap();
    let config = format!(
        "[limits]\nshutdown_grace = 1.5\n{}{}{}",
        // Finishes within the grace period (10 x 50 ms).
        channel(
            "short",
            &m.base_url(),
            "short",
            "headers = { \"x-mock-chunks\" = \"10\", \"x-mock-chunk-delay-ms\" = \"50\" }"
        ),
        // Outlives it (200 x 100 ms).
        channel(
            "long",
            &m.base_url(),
            "long",
            "headers = { \"x-mock-chunks\" = \"200\", \"x-mock-chunk-delay-ms\" = \"100\" }"
        ),
        token_block(CLIENT_KEY, "*"),
    );
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
