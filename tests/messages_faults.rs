//! The Messages API under faults, as chat is: bad input gets Anthropic's error shape with
//! the right status; a header timeout is a 504 `api_error`; a stream cut by an idle timeout
//! or a vendor that drops the connection ends with `event: error` and never `message_stop`
//! (bridged through chat and passed through natively alike); a client that goes away closes
//! the vendor connection. Every test ends with the gauges back at their baseline.

use std::time::{Duration, Instant};

use http::{Method, StatusCode};
use relay_tests::*;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn body(model: &str, stream: bool) -> String {
    json!({"model": model, "max_tokens": 64, "stream": stream, "messages": [{"role": "user", "content": "hello there"}]})
        .to_string()
}

async fn messages(relay: &TestRelay, body: &str) -> Answer {
    let headers = [("x-api-key", CLIENT_KEY), ("anthropic-version", "2023-06-01")];
    relay.request_with(Method::POST, "/v1/messages", None, &headers, body).await
}

async fn count_tokens(relay: &TestRelay, body: &str) -> Answer {
    relay.request_with(Method::POST, "/v1/messages/count_tokens", None, &[("x-api-key", CLIENT_KEY)], body).await
}

/// `(status, error.type, error.message)` of an Anthropic-shaped error answer.
fn anthropic_error(a: &Answer) -> (StatusCode, String, String) {
    let v = a.json();
    assert_eq!(v["type"], "error", "not an Anthropic error: {v}");
    let (ty, msg) = (v["error"]["type"].as_str(), v["error"]["message"].as_str());
    let (Some(ty), Some(msg)) = (ty, msg) else { panic!("not an Anthropic error: {v}") };
    (a.status, ty.to_string(), msg.to_string())
}

/// A stream that was cut: it began, it ends with Anthropic's error event, no message_stop.
fn assert_cut(a: &Answer, message_has: &str) {
    assert_eq!(a.status, StatusCode::OK);
    let evs = sse_events(&a.text());
    assert_eq!(evs.first().map(|e| e.0.as_str()), Some("message_start"), "{evs:?}");
    assert!(!evs.iter().any(|e| e.0 == "message_stop"), "a cut stream must not end with message_stop: {evs:?}");
    let (name, data) = evs.last().expect("events");
    assert_eq!(name, "error", "{evs:?}");
    assert_eq!(data["type"], "error");
    assert_eq!(data["error"]["type"], "api_error");
    let msg = data["error"]["message"].as_str().unwrap_or_default();
    assert!(msg.contains(message_has), "{msg}");
}

async fn openai_relay(m: &Mock, extra_channels: &[(&str, &str)]) -> (TestRelay, Gauges) {
    let mut config = channel("ok", &m.base_url(), "ok", "");
    for (name, extra) in extra_channels {
        config.push_str(&channel(name, &m.base_url(), name, extra));
    }
    relay_with_baseline(&config, &["ok"]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_anthropic_errors_with_the_right_status() {
    let m = Mock::start(Options::default()).await.unwrap();
    let (relay, baseline) = openai_relay(&m, &[("limited", "headers = { \"x-mock-status\" = \"429\" }")]).await;
    let no_max = json!({"model": "ok", "messages": [{"role": "user", "content": "x"}]}).to_string();
    let cases: Vec<(&str, String, StatusCode, &str, &str)> = vec![
        ("missing max_tokens", no_max, StatusCode::BAD_REQUEST, "invalid_request_error", "max_tokens: Field required"),
        ("bad JSON", "{\"model\":".into(), StatusCode::BAD_REQUEST, "invalid_request_error", "JSON"),
        ("unknown model", body("nope", false), StatusCode::NOT_FOUND, "not_found_error", "nope"),
        ("a vendor's 429 through chat", body("limited", false), StatusCode::TOO_MANY_REQUESTS, "rate_limit_error", ""),
    ];
    for (what, b, status, ty, has) in cases {
        let a = messages(&relay, &b).await;
        let (s, t, msg) = anthropic_error(&a);
        assert_eq!((s, t.as_str()), (status, ty), "{what}: {msg}");
        assert!(msg.contains(has), "{what}: {msg}");
    }
    // Wrong and missing keys, in either header.
    let wrong =
        relay.request_with(Method::POST, "/v1/messages", None, &[("x-api-key", "sk-wrong")], &body("ok", false)).await;
    assert_eq!(anthropic_error(&wrong).0, StatusCode::UNAUTHORIZED);
    assert_eq!(anthropic_error(&wrong).1, "authentication_error");
    let bearer = relay.request(Method::POST, "/v1/messages", Some("sk-wrong"), &body("ok", false)).await;
    assert_eq!(anthropic_error(&bearer).1, "authentication_error");
    let none = relay.request(Method::POST, "/v1/messages", None, &body("ok", false)).await;
    assert_eq!(anthropic_error(&none).0, StatusCode::UNAUTHORIZED);
    let get = relay.request(Method::GET, "/v1/messages", Some(CLIENT_KEY), "").await;
    assert_eq!(anthropic_error(&get).0, StatusCode::METHOD_NOT_ALLOWED);
    // count_tokens: refused the same way, answered without a vendor call.
    let a = count_tokens(&relay, &json!({"model": "ok"}).to_string()).await;
    assert_eq!(anthropic_error(&a).0, StatusCode::BAD_REQUEST);
    let a = count_tokens(
        &relay,
        &json!({"model": "ok", "messages": [{"role": "user", "content": "hello there"}]}).to_string(),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK);
    assert!(a.json()["input_tokens"].as_u64().is_some_and(|n| n > 0), "{}", a.text());
    let metrics = relay.metrics().await;
    assert_eq!(metrics.value("relay_errors_total", &[("endpoint", "messages"), ("kind", "invalid_request")]), 3.0);
    relay.assert_back_to(baseline, Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_header_timeout_is_a_504_api_error() {
    let m = Mock::start(Options::default()).await.unwrap();
    let slow = "headers = { \"x-mock-header-delay-ms\" = \"10000\" }\n[channel.timeouts]\nresponse_header = 0.5\n";
    let (relay, baseline) = openai_relay(&m, &[("slow", slow)]).await;
    for stream in [false, true] {
        let a = messages(&relay, &body("slow", stream)).await;
        let (status, ty, msg) = anthropic_error(&a);
        assert_eq!((status, ty.as_str()), (StatusCode::GATEWAY_TIMEOUT, "api_error"));
        assert_eq!(msg, "upstream response header timeout after 0.5 s on channel slow");
    }
    relay.assert_back_to(baseline, Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_stream_ends_with_event_error_never_message_stop() {
    let m = Mock::start(Options::default()).await.unwrap();
    let stall = "headers = { \"x-mock-fault\" = \"stall-after:2\" }\n[channel.timeouts]\nstream_idle = 0.5\n";
    let drop = "headers = { \"x-mock-fault\" = \"drop-after:3\", \"x-mock-chunk-delay-ms\" = \"20\" }\n";
    let (relay, baseline) = openai_relay(&m, &[("stall", stall), ("drop", drop)]).await;
    // A clean one first: the bridged sequence ends with message_stop.
    let a = messages(&relay, &body("ok", true)).await;
    let evs = sse_events(&a.text());
    assert_eq!(evs.last().map(|e| e.0.as_str()), Some("message_stop"), "{evs:?}");
    assert!(evs.iter().any(|e| e.0 == "content_block_delta"));
    assert_cut(&messages(&relay, &body("stall", true)).await, "upstream stream idle timeout after 0.5 s");
    assert_cut(&messages(&relay, &body("drop", true)).await, "");
    let metrics = relay.metrics().await;
    assert_eq!(metrics.value("relay_timeouts_total", &[("stage", "stream_idle")]), 1.0);
    relay.assert_back_to(baseline, Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_native_stream_cut_by_the_vendor_ends_with_event_error() {
    let m = Mock::start(Options { vendor: demo_upstream::Vendor::Anthropic, ..Default::default() }).await.unwrap();
    let channels = |name: &str, extra: &str| {
        format!(
            "[[channel]]\nname = \"{name}\"\nadapter = \"anthropic\"\nbase_url = \"{}\"\napi_key = \"{UPSTREAM_KEY}\"\nmodels = [\"{name}\"]\n{extra}\n",
            m.root_url()
        )
    };
    let config = format!(
        "{FAST_POOL}{}{}{}",
        channels("claude-ok", ""),
        channels(
            "claude-drop",
            "headers = { \"x-mock-fault\" = \"drop-after:3\", \"x-mock-chunk-delay-ms\" = \"20\" }"
        ),
        token_block(CLIENT_KEY, "*")
    );
    let relay = TestRelay::start(Setup { config: &config, adapters: &["anthropic"], env: &[] }).await;
    let baseline = warm_baseline(&relay, &[]).await;
    let a = messages(&relay, &body("claude-ok", true)).await;
    let evs = sse_events(&a.text());
    assert_eq!(evs.last().map(|e| e.0.as_str()), Some("message_stop"), "{evs:?}");
    assert!(evs.iter().any(|e| e.0 == "ping"), "the vendor's own events pass through: {evs:?}");
    assert_cut(&messages(&relay, &body("claude-drop", true)).await, "");
    relay.assert_back_to(baseline, Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_goes_away_closes_the_vendor_connection() {
    let m = Mock::start(Options::default()).await.unwrap();
    let slow = "headers = { \"x-mock-chunks\" = \"300\", \"x-mock-chunk-delay-ms\" = \"100\" }";
    let (relay, baseline) = openai_relay(&m, &[("slow-stream", slow)]).await;
    assert_eq!(m.stats.open_connections(), 0);
    let b = body("slow-stream", true);
    let req = format!(
        "POST /v1/messages HTTP/1.1\r\nhost: relay\r\nx-api-key: {CLIENT_KEY}\r\nanthropic-version: 2023-06-01\r\n\
         content-type: application/json\r\ncontent-length: {}\r\n\r\n{b}",
        b.len()
    );
    let mut s = TcpStream::connect(relay.addr).await.unwrap();
    s.write_all(req.as_bytes()).await.unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while seen.windows(26).filter(|w| w == b"event: content_block_delta").count() < 3 {
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf)).await.unwrap().unwrap();
        assert!(n > 0, "stream ended early: {}", String::from_utf8_lossy(&seen));
        seen.extend_from_slice(&buf[..n]);
    }
    let g = relay.gauges().await;
    assert_eq!((g.inflight, g.streams, g.upstream_connections), (1.0, 1.0, 1.0));
    let left = Instant::now();
    drop(s);
    while m.stats.open_connections() > 0 {
        assert!(left.elapsed() < Duration::from_secs(1), "the vendor connection is still open after the client left");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    relay.assert_back_to(baseline, Duration::from_secs(5)).await;
    assert_eq!(relay.metrics().await.gauge("relay_client_disconnects_total"), 1.0);
}

/// The choice between native and bridged is made per channel attempt: an Anthropic channel
/// that answers 529 hands the request to an OpenAI channel, which gets it as chat, and the
/// client still gets a Message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_moves_from_a_native_channel_to_a_bridged_one() {
    let claude = Mock::start(Options { vendor: demo_upstream::Vendor::Anthropic, ..Default::default() }).await.unwrap();
    let openai = Mock::start(Options::default()).await.unwrap();
    let config = format!(
        "{FAST_POOL}[[channel]]\nname = \"claude\"\nadapter = \"anthropic\"\nbase_url = \"{}\"\napi_key = \"{UPSTREAM_KEY}\"\n\
         models = [\"both\"]\npriority = 1\nheaders = {{ \"x-mock-status\" = \"529\" }}\n\n{}{}",
        claude.root_url(),
        channel("gpt", &openai.base_url(), "both", ""),
        token_block(CLIENT_KEY, "*")
    );
    let relay = TestRelay::start(Setup { config: &config, adapters: &["anthropic", "openai"], env: &[] }).await;
    let baseline = warm_baseline(&relay, &[]).await;
    for stream in [false, true] {
        let a = messages(&relay, &body("both", stream)).await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.text());
        let text = if stream {
            let evs = sse_events(&a.text());
            assert_eq!(evs.last().map(|e| e.0.as_str()), Some("message_stop"), "{evs:?}");
            evs.iter().filter_map(|(_, d)| d["delta"]["text"].as_str().map(str::to_string)).collect::<String>()
        } else {
            let v = a.json();
            assert_eq!(v["type"], "message", "{v}");
            v["content"][0]["text"].as_str().unwrap_or_default().to_string()
        };
        assert_eq!(text, "Hello from the demo upstream! You said: hello there");
    }
    let (native, bridged) = (claude.stats.received(), openai.stats.received());
    assert_eq!(native.len(), 2, "both attempts went to the Anthropic channel first");
    assert_eq!(native[0].path, "/v1/messages");
    assert_eq!(bridged.iter().map(|r| r.path.as_str()).collect::<Vec<_>>(), ["/v1/chat/completions"; 2]);
    assert_eq!(bridged[0].body["max_tokens"], 64, "the OpenAI channel got the request as chat");
    relay.assert_back_to(baseline, Duration::from_secs(5)).await;
}
