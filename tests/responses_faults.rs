//! The Responses API under faults, as chat is: bad input gets OpenAI's error shape with the
//! right status; a header timeout is a 504; a stream cut by an idle timeout or a vendor that
//! drops the connection ends with `response.failed` and never `response.completed` (bridged
//! through chat and passed through natively alike); a client that goes away closes the
//! vendor connection; a native channel's failure moves to a bridged one; a background
//! response whose vendor drops ends `failed`. Every test ends with the gauges back at their
//! baseline.

use std::time::{Duration, Instant};

use http::{Method, StatusCode};
use relay_tests::*;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const REPLY: &str = "Hello from the demo upstream! You said: hello there";

fn body(model: &str, stream: bool) -> String {
    json!({"model": model, "input": "hello there", "stream": stream}).to_string()
}

async fn responses(relay: &TestRelay, body: &str) -> Answer {
    relay.request(Method::POST, "/v1/responses", Some(CLIENT_KEY), body).await
}

/// The typed events of a Responses stream: `(event, data)`; each data's `type` is its name.
fn events(text: &str) -> Vec<(String, Value)> {
    let evs = sse_events(text);
    for (name, v) in &evs {
        assert_eq!(v["type"], name.as_str(), "an event's type is its name: {v}");
    }
    evs
}

/// A clean stream: numbered from 0 by one, ending `response.completed` with the reply.
fn assert_complete(a: &Answer) {
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    let evs = events(&a.text());
    let seqs: Vec<u64> = evs.iter().map(|(_, d)| d["sequence_number"].as_u64().expect("sequence_number")).collect();
    assert_eq!(seqs, (0..seqs.len() as u64).collect::<Vec<_>>(), "{evs:?}");
    let (name, last) = evs.last().expect("events");
    assert_eq!(name, "response.completed", "{evs:?}");
    let text: String = evs
        .iter()
        .filter_map(|(_, d)| d["delta"].as_str().filter(|_| d["type"] == "response.output_text.delta"))
        .collect();
    assert_eq!(text, REPLY);
    assert_eq!(last["response"]["status"], "completed");
}

/// A stream that was cut: it began, it ends `response.failed` with the reason, and it never
/// says `response.completed`.
fn assert_cut(a: &Answer, message_has: &str) {
    assert_eq!(a.status, StatusCode::OK);
    let evs = events(&a.text());
    assert_eq!(evs.first().map(|e| e.0.as_str()), Some("response.created"), "{evs:?}");
    assert!(!evs.iter().any(|e| e.0 == "response.completed"), "a cut stream must not complete: {evs:?}");
    let (name, data) = evs.last().expect("events");
    assert_eq!(name, "response.failed", "{evs:?}");
    assert_eq!(data["response"]["status"], "failed");
    let msg = data["response"]["error"]["message"].as_str().unwrap_or_default();
    assert!(msg.contains(message_has), "{msg}");
}

/// Channels of the openai adapter on `m`, one model each (named as the channel); `native`
/// false bridges Responses through the mock's chat completions.
async fn openai_relay(m: &Mock, channels: &[(&str, &str)]) -> (TestRelay, Gauges) {
    let mut config = channel("ok", &m.base_url(), "ok", "native = []");
    for (name, extra) in channels {
        config.push_str(&channel(name, &m.base_url(), name, extra));
    }
    relay_with_baseline(&config, &["ok"]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_openai_errors_with_the_right_status() {
    let m = Mock::start(Options::default()).await.unwrap();
    let limited = "native = []\nheaders = { \"x-mock-status\" = \"429\" }";
    let (relay, baseline) = openai_relay(&m, &[("limited", limited)]).await;
    let cases: Vec<(&str, String, StatusCode, &str)> = vec![
        ("no model", json!({"input": "x"}).to_string(), StatusCode::BAD_REQUEST, "model"),
        ("bad JSON", "{\"model\":".into(), StatusCode::BAD_REQUEST, "JSON"),
        ("input of the wrong type", json!({"model": "ok", "input": 7}).to_string(), StatusCode::BAD_REQUEST, "input"),
        ("unknown model", body("nope", false), StatusCode::NOT_FOUND, "nope"),
        (
            "a hosted tool on a bridged channel",
            json!({"model": "ok", "input": "x", "tools": [{"type": "web_search"}]}).to_string(),
            StatusCode::BAD_REQUEST,
            "web_search",
        ),
        (
            "background without store",
            json!({"model": "ok", "input": "x", "background": true, "store": false}).to_string(),
            StatusCode::BAD_REQUEST,
            "store",
        ),
        (
            "an unknown previous_response_id",
            json!({"model": "ok", "input": "x", "previous_response_id": "resp_nope"}).to_string(),
            StatusCode::NOT_FOUND,
            "resp_nope",
        ),
        ("a vendor's 429 through chat", body("limited", false), StatusCode::TOO_MANY_REQUESTS, ""),
    ];
    for (what, b, status, has) in cases {
        let a = responses(&relay, &b).await;
        let (msg, code) = a.openai_error();
        assert_eq!(a.status, status, "{what}: {msg} ({code})");
        assert!(msg.contains(has), "{what}: {msg}");
    }
    let wrong = relay.request(Method::POST, "/v1/responses", Some("sk-wrong"), &body("ok", false)).await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    let get = relay.request(Method::GET, "/v1/responses/resp_nope", Some(CLIENT_KEY), "").await;
    assert_eq!(get.status, StatusCode::NOT_FOUND, "{}", get.text());
    let cancel = relay.request(Method::POST, "/v1/responses/resp_nope/cancel", Some(CLIENT_KEY), "").await;
    assert_eq!(cancel.status, StatusCode::NOT_FOUND, "{}", cancel.text());
    let put = relay.request(Method::PUT, "/v1/responses", Some(CLIENT_KEY), "").await;
    assert_eq!(put.status, StatusCode::METHOD_NOT_ALLOWED, "{}", put.text());
    let metrics = relay.metrics().await;
    assert!(metrics.value("relay_errors_total", &[("endpoint", "responses"), ("kind", "invalid_request")]) >= 3.0);
    relay.assert_back_to(baseline, Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_header_timeout_is_a_504() {
    let m = Mock::start(Options::default()).await.unwrap();
    let slow = "headers = { \"x-mock-header-delay-ms\" = \"10000\" }\n[channel.timeouts]\nresponse_header = 0.5\n";
    let bridged = format!("native = []\n{slow}");
    let (relay, baseline) = openai_relay(&m, &[("slow", slow), ("slow-bridged", &bridged)]).await;
    for model in ["slow", "slow-bridged"] {
        for stream in [false, true] {
            let a = responses(&relay, &body(model, stream)).await;
            let (msg, _) = a.openai_error();
            assert_eq!(a.status, StatusCode::GATEWAY_TIMEOUT, "{model} {stream}: {msg}");
            assert_eq!(msg, format!("upstream response header timeout after 0.5 s on channel {model}"));
        }
    }
    relay.assert_back_to(baseline, Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_stream_ends_with_response_failed_never_completed() {
    let m = Mock::start(Options::default()).await.unwrap();
    let stall = "headers = { \"x-mock-fault\" = \"stall-after:2\" }\n[channel.timeouts]\nstream_idle = 0.5\n";
    let drop = "headers = { \"x-mock-fault\" = \"drop-after:3\", \"x-mock-chunk-delay-ms\" = \"20\" }\n";
    let (b_stall, b_drop) = (format!("native = []\n{stall}"), format!("native = []\n{drop}"));
    let channels =
        [("stall", stall), ("drop", drop), ("native-ok", ""), ("bridged-stall", &b_stall), ("bridged-drop", &b_drop)];
    let (relay, baseline) = openai_relay(&m, &channels).await;
    // Clean ones first: bridged and native alike.
    assert_complete(&responses(&relay, &body("ok", true)).await);
    assert_complete(&responses(&relay, &body("native-ok", true)).await);
    for prefix in ["", "bridged-"] {
        let stalled = responses(&relay, &body(&format!("{prefix}stall"), true)).await;
        assert_cut(&stalled, "upstream stream idle timeout after 0.5 s");
        assert_cut(&responses(&relay, &body(&format!("{prefix}drop"), true)).await, "");
    }
    let paths: Vec<String> = m.stats.received().iter().map(|r| r.path.clone()).collect();
    assert_eq!(paths.iter().filter(|p| *p == "/v1/responses").count(), 3, "native: {paths:?}");
    // The warm-up's chat, the clean bridged stream, the two cut ones.
    assert_eq!(paths.iter().filter(|p| *p == "/v1/chat/completions").count(), 4, "bridged: {paths:?}");
    let metrics = relay.metrics().await;
    assert_eq!(metrics.value("relay_timeouts_total", &[("stage", "stream_idle")]), 2.0);
    relay.assert_back_to(baseline, Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_goes_away_closes_the_vendor_connection() {
    let m = Mock::start(Options::default()).await.unwrap();
    let slow = "headers = { \"x-mock-chunks\" = \"300\", \"x-mock-chunk-delay-ms\" = \"100\" }";
    let bridged = format!("native = []\n{slow}");
    let (relay, baseline) = openai_relay(&m, &[("slow-native", slow), ("slow-bridged", &bridged)]).await;
    for model in ["slow-native", "slow-bridged"] {
        assert_eq!(m.stats.open_connections(), 0);
        let b = body(model, true);
        let req = format!(
            "POST /v1/responses HTTP/1.1\r\nhost: relay\r\nauthorization: Bearer {CLIENT_KEY}\r\n\
             content-type: application/json\r\ncontent-length: {}\r\n\r\n{b}",
            b.len()
        );
        let mut s = TcpStream::connect(relay.addr).await.unwrap();
        s.write_all(req.as_bytes()).await.unwrap();
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        let delta = b"event: response.output_text.delta";
        while seen.windows(delta.len()).filter(|w| w == delta).count() < 3 {
            let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf)).await.unwrap().unwrap();
            assert!(n > 0, "{model}: stream ended early: {}", String::from_utf8_lossy(&seen));
            seen.extend_from_slice(&buf[..n]);
        }
        let g = relay.gauges().await;
        assert_eq!((g.inflight, g.streams, g.upstream_connections), (1.0, 1.0, 1.0), "{model}");
        let left = Instant::now();
        drop(s);
        while m.stats.open_connections() > 0 {
            assert!(left.elapsed() < Duration::from_secs(1), "{model}: the vendor connection is still open");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        relay.assert_back_to(baseline, Duration::from_secs(5)).await;
    }
    assert_eq!(relay.metrics().await.gauge("relay_client_disconnects_total"), 2.0);
}

/// Native and bridged are chosen per channel attempt: an OpenAI channel that answers 500 to
/// `/v1/responses` hands the request to an Anthropic channel, which gets it as Messages
/// through the chat bridge, and the client still gets a Response with the relay's id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_moves_from_a_native_channel_to_a_bridged_one() {
    let openai = Mock::start(Options::default()).await.unwrap();
    let claude = Mock::start(Options { vendor: demo_upstream::Vendor::Anthropic, ..Default::default() }).await.unwrap();
    let config = format!(
        "{FAST_POOL}{}[[channel]]\nname = \"claude\"\nadapter = \"anthropic\"\nbase_url = \"{}\"\napi_key = \"{UPSTREAM_KEY}\"\n\
         models = [\"both\"]\n\n{}",
        channel("gpt", &openai.base_url(), "both", "priority = 1\nheaders = { \"x-mock-status\" = \"500\" }"),
        claude.root_url(),
        token_block(CLIENT_KEY, "*")
    );
    let relay = TestRelay::start(Setup { config: &config, adapters: &["anthropic", "openai"], env: &[] }).await;
    let baseline = warm_baseline(&relay, &[]).await;
    for stream in [false, true] {
        let a = responses(&relay, &body("both", stream)).await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.text());
        if stream {
            assert_complete(&a);
        } else {
            let v = a.json();
            assert_eq!((v["object"].as_str(), v["status"].as_str()), (Some("response"), Some("completed")), "{v}");
            assert!(v["id"].as_str().is_some_and(|id| id.starts_with("resp_")), "{v}");
            assert_eq!(v["output"][0]["content"][0]["text"], REPLY);
        }
    }
    let (native, bridged) = (openai.stats.received(), claude.stats.received());
    assert_eq!(native.iter().map(|r| r.path.as_str()).collect::<Vec<_>>(), ["/v1/responses"; 2]);
    assert_eq!(bridged.iter().map(|r| r.path.as_str()).collect::<Vec<_>>(), ["/v1/messages"; 2]);
    let metrics = relay.metrics().await;
    assert_eq!(metrics.value("relay_failovers_total", &[("from", "gpt"), ("to", "claude")]), 2.0);
    relay.assert_back_to(baseline, Duration::from_secs(5)).await;
}

/// A background response whose vendor drops mid-stream ends `failed`, with the reason, and
/// its stored events end with `response.failed`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_background_response_cut_by_its_vendor_ends_failed() {
    let m = Mock::start(Options::default()).await.unwrap();
    let drop = "headers = { \"x-mock-fault\" = \"drop-after:3\", \"x-mock-chunk-delay-ms\" = \"20\" }\n";
    let (relay, baseline) = openai_relay(&m, &[("drop", drop)]).await;
    let b = json!({"model": "drop", "input": "hello there", "background": true}).to_string();
    let created = responses(&relay, &b).await;
    assert_eq!(created.status, StatusCode::OK, "{}", created.text());
    let id = created.json()["id"].as_str().expect("id").to_string();
    let mut last = Value::Null;
    wait_until("the background response ends", Duration::from_secs(20), async || {
        last = relay.request(Method::GET, &format!("/v1/responses/{id}"), Some(CLIENT_KEY), "").await.json();
        !matches!(last["status"].as_str(), Some("queued" | "in_progress"))
    })
    .await;
    assert_eq!(last["status"], "failed", "{last}");
    assert!(last["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{last}");
    let replay = relay.request(Method::GET, &format!("/v1/responses/{id}?stream=true"), Some(CLIENT_KEY), "").await;
    let evs = events(&replay.text());
    assert_eq!(evs.last().map(|e| e.0.as_str()), Some("response.failed"), "{evs:?}");
    assert!(!evs.iter().any(|e| e.0 == "response.completed"));
    relay.assert_back_to(baseline, Duration::from_secs(5)).await;
}
