//! The seed's failure, reproduced as load: normal streams mixed with client aborts,
//! stalls, header timeouts and vendor drops, many in flight. Afterwards live tasks and
//! vendor connections must be exactly back at their baseline.
//!
//! CI runs a short version (`cargo test`); `make soak` runs 20,000 requests after a warm-up,
//! prints the figures and also holds RSS growth under 10% (SOAK_REQUESTS, SOAK_WARMUP,
//! SOAK_CONCURRENCY, SOAK_STRICT).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use relay_tests::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[derive(Clone, Copy, Debug)]
enum Kind {
    Normal,
    Abort,
    Stall,
    HeaderTimeout,
    Drop,
}

/// Out of every 10 requests: 4 normal streams, 3 client aborts mid-stream, 1 stall,
/// 1 header timeout, 1 vendor drop.
const MIX: [Kind; 10] = [
    Kind::Normal,
    Kind::Abort,
    Kind::Normal,
    Kind::Stall,
    Kind::Abort,
    Kind::Normal,
    Kind::HeaderTimeout,
    Kind::Abort,
    Kind::Normal,
    Kind::Drop,
];

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// One request over its own connection; true when the answer is the one its kind must get.
async fn one(addr: std::net::SocketAddr, kind: Kind) -> bool {
    let (model, stream) = match kind {
        Kind::Normal | Kind::Abort => ("normal", true),
        Kind::Stall => ("stall", true),
        Kind::HeaderTimeout => ("head", false),
        Kind::Drop => ("drop", true),
    };
    let body = chat_body(model, "soak", stream).to_string();
    let req = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: relay\r\nauthorization: Bearer {CLIENT_KEY}\r\n\
         connection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let Ok(mut s) = TcpStream::connect(addr).await else { return false };
    if s.write_all(req.as_bytes()).await.is_err() {
        return false;
    }
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        let n = match tokio::time::timeout(Duration::from_secs(20), s.read(&mut buf)).await {
            Ok(Ok(n)) => n,
            _ => return false,
        };
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
        if matches!(kind, Kind::Abort) && out.windows(6).filter(|w| w == b"data: ").count() >= 2 {
            return true; // drop the socket mid-stream
        }
    }
    let text = String::from_utf8_lossy(&out);
    match kind {
        Kind::Normal => text.contains("data: [DONE]"),
        Kind::Abort => false,
        Kind::Stall => text.contains("stream idle timeout") && !text.contains("[DONE]"),
        Kind::HeaderTimeout => text.starts_with("HTTP/1.1 504") && text.contains("response header timeout"),
        Kind::Drop => text.contains("mid-stream") && !text.contains("[DONE]"),
    }
}

async fn run(addr: std::net::SocketAddr, total: usize, concurrency: usize) -> (usize, Duration) {
    let next = Arc::new(AtomicUsize::new(0));
    let wrong = Arc::new(AtomicUsize::new(0));
    let t = Instant::now();
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let (next, wrong) = (next.clone(), wrong.clone());
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= total {
                        break;
                    }
                    if !one(addr, MIX[i % MIX.len()]).await {
                        wrong.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for w in workers {
        w.await.unwrap();
    }
    (wrong.load(Ordering::Relaxed), t.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak_returns_to_baseline() {
    let total = env_usize("SOAK_REQUESTS", 2000);
    let concurrency = env_usize("SOAK_CONCURRENCY", 200);
    // RSS settles once allocator arenas and pools have grown to the load; growth is
    // measured after this many requests.
    let warmup = env_usize("SOAK_WARMUP", total / 10);
    let m = Mock::start(Options::default()).await.unwrap();
    let config = [
        channel("ok", &m.base_url(), "ok", ""),
        channel(
            "normal",
            &m.base_url(),
            "normal",
            "headers = { \"x-mock-chunks\" = \"10\", \"x-mock-chunk-delay-ms\" = \"10\" }",
        ),
        channel(
            "stall",
            &m.base_url(),
            "stall",
            "headers = { \"x-mock-fault\" = \"stall-after:2\" }\n[channel.timeouts]\nstream_idle = 0.3\n",
        ),
        channel(
            "head",
            &m.base_url(),
            "head",
            "headers = { \"x-mock-header-delay-ms\" = \"5000\" }\n[channel.timeouts]\nresponse_header = 0.3\n",
        ),
        channel(
            "drop",
            &m.base_url(),
            "drop",
            "headers = { \"x-mock-fault\" = \"drop-after:3\", \"x-mock-chunk-delay-ms\" = \"10\" }",
        ),
    ]
    .concat();
    let (relay, baseline) = relay_with_baseline(&config, &["ok"]).await;
    let rss = |m: &Metrics| m.gauge("process_resident_memory_bytes") / (1024.0 * 1024.0);
    let before = relay.metrics().await;

    // Warm-up (a tenth), then the measured run.
    let (wrong_warm, _) = run(relay.addr, warmup, concurrency).await;
    relay.assert_back_to(baseline, Duration::from_secs(10)).await;
    let warm = relay.metrics().await;
    let (wrong, took) = run(relay.addr, total, concurrency).await;
    relay.assert_back_to(baseline, Duration::from_secs(10)).await;
    let after = relay.metrics().await;

    println!("soak: {total} requests (+{warmup} warm-up), {concurrency} in flight, {took:.1?}");
    println!(
        "soak: before  tasks={} upstream_conns={} rss={:.1} MiB",
        before.gauge("relay_runtime_alive_tasks"),
        before.gauge("relay_upstream_connections_open"),
        rss(&before)
    );
    println!("soak: warm    rss={:.1} MiB", rss(&warm));
    println!(
        "soak: after   tasks={} upstream_conns={} rss={:.1} MiB (growth after warm-up {:+.1}%)",
        after.gauge("relay_runtime_alive_tasks"),
        after.gauge("relay_upstream_connections_open"),
        rss(&after),
        (rss(&after) / rss(&warm) - 1.0) * 100.0
    );
    println!(
        "soak: timeouts stream_idle={} response_header={} client_disconnects={}",
        after.value("relay_timeouts_total", &[("stage", "stream_idle")]),
        after.value("relay_timeouts_total", &[("stage", "response_header")]),
        after.gauge("relay_client_disconnects_total"),
    );
    assert_eq!(wrong_warm + wrong, 0, "requests that did not get the answer their kind must get");
    // Every abort was seen as a disconnect, none of the others were.
    let aborts = (total + warmup) as f64 * 0.3;
    let seen = after.gauge("relay_client_disconnects_total");
    assert!((seen - aborts).abs() <= 2.0, "{seen} disconnects for {aborts} aborts");
    if std::env::var("SOAK_STRICT").is_ok() {
        let growth = rss(&after) / rss(&warm) - 1.0;
        assert!(growth < 0.10, "RSS grew {:.1}% after warm-up", growth * 100.0);
    }
}
