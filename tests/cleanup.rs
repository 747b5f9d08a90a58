//! A client that goes away at any point takes its upstream call with it: the vendor
//! connection is closed within a second, and every gauge returns to its baseline.

use std::time::{Duration, Instant};

use relay_tests::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Raw HTTP/1.1 request, so the test controls exactly when the socket closes.
async fn send(relay: &TestRelay, model: &str, stream: bool) -> TcpStream {
    let body = chat_body(model, "hello", stream).to_string();
    let req = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: relay\r\nauthorization: Bearer {CLIENT_KEY}\r\n\
         content-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut s = TcpStream::connect(relay.addr).await.unwrap();
    s.write_all(req.as_bytes()).await.unwrap();
    s
}

/// Wait until the vendor saw `n` requests.
async fn vendor_received(m: &Mock, n: usize) {
    let end = Instant::now() + Duration::from_secs(10);
    while m.stats.received().len() < n {
        assert!(Instant::now() < end, "the vendor never got the request");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The vendor's own count of open connections drops to zero within `bound` of `since`.
async fn vendor_closed_within(m: &Mock, since: Instant, bound: Duration) {
    while m.stats.open_connections() > 0 {
        assert!(
            since.elapsed() < bound,
            "the vendor connection is still open {:?} after the client left",
            since.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn setup(m: &Mock) -> (TestRelay, Gauges) {
    let config = [
        channel("ok", &m.base_url(), "ok", ""),
        channel("slow-head", &m.base_url(), "slow-head", "headers = { \"x-mock-header-delay-ms\" = \"30000\" }"),
        channel("slow-body", &m.base_url(), "slow-body", "headers = { \"x-mock-body-delay-ms\" = \"30000\" }"),
        channel(
            "slow-stream",
            &m.base_url(),
            "slow-stream",
            "headers = { \"x-mock-chunks\" = \"300\", \"x-mock-chunk-delay-ms\" = \"100\" }",
        ),
    ]
    .concat();
    let (relay, baseline) = relay_with_baseline(&config, &["ok"]).await;
    // The warm-up's pooled connection is gone once the baseline is taken.
    assert_eq!(m.stats.open_connections(), 0);
    (relay, baseline)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disconnect_before_upstream_headers() {
    let m = Mock::start(Options::default()).await.unwrap();
    let (relay, baseline) = setup(&m).await;
    let s = send(&relay, "slow-head", false).await;
    vendor_received(&m, 2).await;
    assert_eq!(relay.gauges().await.inflight, 1.0);
    let left = Instant::now();
    drop(s);
    vendor_closed_within(&m, left, Duration::from_secs(1)).await;
    relay.assert_back_to(baseline, Duration::from_secs(5)).await;
    let metrics = relay.metrics().await;
    assert_eq!(metrics.gauge("relay_client_disconnects_total"), 1.0);
    assert_eq!(metrics.value("relay_requests_total", &[("channel", "slow-head"), ("status", "499")]), 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disconnect_while_waiting_for_a_non_stream_body() {
    let m = Mock::start(Options::default()).await.unwrap();
    let (relay, baseline) = setup(&m).await;
    let s = send(&relay, "slow-body", false).await;
    vendor_received(&m, 2).await;
    // The mock sends the head at once; nothing outside the relay shows it has read it, so
    // this gives it the time to (were it not read, this would test the case above again).
    tokio::time::sleep(Duration::from_millis(200)).await;
    let left = Instant::now();
    drop(s);
    vendor_closed_within(&m, left, Duration::from_secs(1)).await;
    relay.assert_back_to(baseline, Duration::from_secs(5)).await;
    assert_eq!(relay.metrics().await.gauge("relay_client_disconnects_total"), 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disconnect_mid_stream() {
    let m = Mock::start(Options::default()).await.unwrap();
    let (relay, baseline) = setup(&m).await;
    let mut s = send(&relay, "slow-stream", true).await;
    // Read until a few chunks have arrived: the stream is live.
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while seen.windows(6).filter(|w| w == b"data: ").count() < 3 {
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf)).await.unwrap().unwrap();
        assert!(n > 0, "stream ended early");
        seen.extend_from_slice(&buf[..n]);
    }
    let g = relay.gauges().await;
    assert_eq!((g.inflight, g.streams, g.upstream_connections), (1.0, 1.0, 1.0));
    let left = Instant::now();
    drop(s);
    vendor_closed_within(&m, left, Duration::from_secs(1)).await;
    relay.assert_back_to(baseline, Duration::from_secs(5)).await;
    assert_eq!(relay.metrics().await.gauge("relay_client_disconnects_total"), 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_disconnects_leave_nothing_behind() {
    let m = Mock::start(Options::default()).await.unwrap();
    let (relay, baseline) = setup(&m).await;
    let mut sockets = Vec::new();
    for i in 0..60 {
        let model = ["slow-head", "slow-body", "slow-stream"][i % 3];
        sockets.push(send(&relay, model, model == "slow-stream").await);
    }
    vendor_received(&m, 61).await;
    relay
        .expect_metrics("60 requests in flight", Duration::from_secs(5), |m| m.gauge("relay_inflight_requests") == 60.0)
        .await;
    let left = Instant::now();
    drop(sockets);
    vendor_closed_within(&m, left, Duration::from_secs(2)).await;
    relay.assert_back_to(baseline, Duration::from_secs(5)).await;
    assert_eq!(relay.metrics().await.gauge("relay_client_disconnects_total"), 60.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_instances_are_given_back_when_their_streams_end() {
    let m = Mock::start(Options::default()).await.unwrap();
    let (relay, baseline) = setup(&m).await;
    let instances = |m: &Metrics| m.value("relay_plugin_instances", &[("use", "stream")]);
    let before = instances(&relay.metrics().await);
    assert_eq!(before, 0.0, "no stream yet");
    let mut sockets = Vec::new();
    for _ in 0..70 {
        sockets.push(send(&relay, "slow-stream", true).await);
    }
    vendor_received(&m, 71).await;
    let open = relay
        .expect_metrics("70 open streams", Duration::from_secs(5), |m| m.gauge("relay_active_streams") == 70.0)
        .await;
    // 32 streams share an instance (the default): 70 streams need 3, not 70 (one more at
    // each of the two boundaries where two requests find the open one full at once).
    assert!((3.0..=5.0).contains(&instances(&open)), "{} instances for 70 streams", instances(&open));
    drop(sockets);
    relay.assert_back_to(baseline, Duration::from_secs(5)).await;
    // What stays: the one new streams join, kept warm.
    let after =
        relay.expect_metrics("stream instances given back", Duration::from_secs(5), |m| instances(m) <= 1.0).await;
    assert_eq!(instances(&after), 1.0, "instances left after the streams ended");
}
