//! What the native Messages route adds over the bridge: `/v1/messages/count_tokens` counted
//! by the vendor when a channel of the model speaks it (the anthropic adapter), the relay's
//! estimate otherwise, told apart by `x-relay-token-count`; failover and cooldowns among the
//! counting channels; the client's `anthropic-beta` and `anthropic-version` crossing to a
//! native channel (checked, and never to a bridged one), and the bridged stream's `ping`.
//! The mocks record what they got.

use std::time::Duration;

use demo_upstream::{Received, Vendor};
use http::{Method, StatusCode};
use relay_tests::*;
use serde_json::{Value, json};

const VERSION: &str = "2023-06-01";

/// A `[[channel]]` on the anthropic adapter; `anthropic_version` is the channel's own, so
/// a test can see whether the client's replaced it.
fn claude_channel(name: &str, base_url: &str, models: &str, extra: &str) -> String {
    let models: Vec<String> = models.split(',').map(|m| format!("\"{}\"", m.trim())).collect();
    format!(
        "[[channel]]\nname = \"{name}\"\nadapter = \"anthropic\"\nbase_url = \"{base_url}\"\napi_key = \"{UPSTREAM_KEY}\"\nmodels = [{}]\nsettings = {{ anthropic_version = \"2099-01-01\" }}\n{extra}\n",
        models.join(", ")
    )
}

async fn start(channels: &str, warm: &[&str]) -> (TestRelay, Gauges) {
    let config = format!("{FAST_POOL}{channels}{}", token_block(CLIENT_KEY, "*"));
    let relay = TestRelay::start(Setup { config: &config, adapters: &["anthropic", "openai"], env: &[] }).await;
    let baseline = warm_baseline(&relay, warm).await;
    (relay, baseline)
}

async fn post(relay: &TestRelay, path: &str, extra: &[(&str, &str)], body: &Value) -> Answer {
    let mut headers = vec![("x-api-key", CLIENT_KEY)];
    headers.extend_from_slice(extra);
    relay.request_with(Method::POST, path, None, &headers, &body.to_string()).await
}

async fn count(relay: &TestRelay, body: &Value) -> Answer {
    post(relay, "/v1/messages/count_tokens", &[("anthropic-version", VERSION)], body).await
}

fn counted_by(a: &Answer) -> &str {
    a.headers.get("x-relay-token-count").and_then(|v| v.to_str().ok()).unwrap_or("(none)")
}

/// `(status, error.type, error.message)` of an Anthropic-shaped error answer.
fn anthropic_error(a: &Answer) -> (StatusCode, String, String) {
    let v = a.json();
    assert_eq!(v["type"], "error", "not an Anthropic error: {v}");
    let (Some(ty), Some(msg)) = (v["error"]["type"].as_str(), v["error"]["message"].as_str()) else {
        panic!("not an Anthropic error: {v}")
    };
    (a.status, ty.to_string(), msg.to_string())
}

fn to_path<'a>(received: &'a [Received], path: &str) -> Vec<&'a Received> {
    received.iter().filter(|r| r.path == path).collect()
}

fn header<'a>(r: &'a Received, name: &str) -> Option<&'a str> {
    r.headers.get(name).and_then(|v| v.to_str().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn count_tokens_is_the_vendors_through_an_anthropic_channel_and_estimated_otherwise() {
    let claude = Mock::start(Options { vendor: Vendor::Anthropic, ..Default::default() }).await.unwrap();
    let gpt = Mock::start(Options::default()).await.unwrap();
    let channels = format!(
        "{}{}",
        claude_channel("claude", &claude.root_url(), "claude-demo", ""),
        channel("gpt", &gpt.base_url(), "demo-gpt", "")
    );
    let (relay, baseline) = start(&channels, &["claude-demo", "demo-gpt"]).await;

    // `thinking` is a field the relay's own types do not read: it reaches the vendor.
    let body = json!({"model": "claude-demo", "system": "Be brief.", "thinking": {"type": "enabled", "budget_tokens": 1024},
        "messages": [{"role": "user", "content": "one two three four five"}]});
    let a = count(&relay, &body).await;
    assert_eq!((a.status, counted_by(&a)), (StatusCode::OK, "exact"), "{}", a.text());
    // The mock's count: 2 + 6 words, 3 for the message, doubled, plus 1.
    assert_eq!(a.json(), json!({"input_tokens": 23}));
    let got = claude.stats.received();
    let sent = to_path(&got, "/v1/messages/count_tokens");
    assert_eq!(sent.len(), 1, "{:?}", got.iter().map(|r| &r.path).collect::<Vec<_>>());
    assert_eq!(sent[0].body, body, "the body goes to the counter as sent");
    assert_eq!(header(sent[0], "x-api-key"), Some(UPSTREAM_KEY), "the channel's key, never the client's");

    // The same prompt on a channel whose vendor does not count: the relay's estimate, and
    // no vendor call.
    let before = gpt.stats.received().len();
    let body = json!({"model": "demo-gpt", "system": "Be brief.", "messages": [{"role": "user", "content": "one two three four five"}]});
    let a = count(&relay, &body).await;
    assert_eq!((a.status, counted_by(&a)), (StatusCode::OK, "estimate"), "{}", a.text());
    let n = a.json()["input_tokens"].as_u64().expect("a count");
    assert!(n > 0 && n != 23, "{n}");
    assert_eq!(gpt.stats.received().len(), before, "an estimate calls no vendor");

    // The vendor's refusal comes back as it said it, in Anthropic's shape (`max_tokens` is
    // a Messages field the counter does not take).
    let bad = json!({"model": "claude-demo", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]});
    let headers = [("anthropic-version", VERSION), ("x-request-id", "count-refused")];
    let a = post(&relay, "/v1/messages/count_tokens", &headers, &bad).await;
    let (status, ty, msg) = anthropic_error(&a);
    assert_eq!((status, ty.as_str(), counted_by(&a)), (StatusCode::BAD_REQUEST, "invalid_request_error", "exact"));
    assert_eq!(msg, "max_tokens: Extra inputs are not permitted");
    // The relay's own checks come first: no vendor call for a body without messages.
    let calls = claude.stats.received().len();
    let a = count(&relay, &json!({"model": "claude-demo"})).await;
    assert_eq!(anthropic_error(&a).0, StatusCode::BAD_REQUEST);
    assert_eq!(claude.stats.received().len(), calls);

    // Counted as vendor calls of the channel, and in the access log.
    let m = relay.metrics().await;
    assert!(m.value("relay_upstream_attempts_total", &[("channel", "claude"), ("outcome", "ok")]) >= 2.0);
    assert_eq!(m.value("relay_upstream_attempts_total", &[("channel", "claude"), ("outcome", "status_4xx")]), 1.0);
    let line = relay.access_line("request_id=count-refused ").await;
    for want in [" channel=\"claude\"", " adapter=anthropic ", " status=400 ", " model=\"claude-demo\""] {
        assert!(line.contains(want), "expected `{want}` in the access line: {line}");
    }
    relay.assert_back_to(baseline, Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn count_tokens_fails_over_among_counting_channels_and_skips_cooling_ones() {
    let claude = Mock::start(Options { vendor: Vendor::Anthropic, ..Default::default() }).await.unwrap();
    let url = claude.root_url();
    let channels = [
        claude_channel(
            "down",
            &url,
            "claude-demo, claude-solo",
            "priority = 1\nheaders = { \"x-mock-status\" = \"500\" }",
        ),
        claude_channel("up", &url, "claude-demo", ""),
        claude_channel("limited", &url, "claude-cool", "headers = { \"x-mock-status\" = \"429\" }"),
    ]
    .concat();
    let (relay, baseline) = start(&channels, &["claude-demo"]).await;
    let prompt = |model: &str| json!({"model": model, "messages": [{"role": "user", "content": "hi"}]});
    let moved =
        |m: &Metrics| m.value("relay_failovers_total", &[("from", "down"), ("to", "up"), ("reason", "status_5xx")]);
    let before = moved(&relay.metrics().await);

    // The first channel fails: the next one that counts answers.
    let a = count(&relay, &prompt("claude-demo")).await;
    assert_eq!((a.status, counted_by(&a)), (StatusCode::OK, "exact"), "{}", a.text());
    assert_eq!(moved(&relay.metrics().await), before + 1.0);

    // Every counting channel failed: the last failure, in Anthropic's shape (no silent estimate).
    let a = count(&relay, &prompt("claude-solo")).await;
    let (status, ty, _) = anthropic_error(&a);
    assert_eq!((status, ty.as_str(), counted_by(&a)), (StatusCode::INTERNAL_SERVER_ERROR, "api_error", "exact"));

    // A vendor's 429 (Retry-After: 7) cools its channel; while it cools, the relay estimates.
    let a = count(&relay, &prompt("claude-cool")).await;
    assert_eq!(anthropic_error(&a).1, "rate_limit_error");
    let calls = claude.stats.received().len();
    let a = count(&relay, &prompt("claude-cool")).await;
    assert_eq!((a.status, counted_by(&a)), (StatusCode::OK, "estimate"), "{}", a.text());
    assert_eq!(claude.stats.received().len(), calls, "a cooling channel is not called");
    relay.assert_back_to(baseline, Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anthropic_beta_and_version_cross_to_a_native_channel_only_and_are_checked() {
    let claude = Mock::start(Options { vendor: Vendor::Anthropic, ..Default::default() }).await.unwrap();
    let gpt = Mock::start(Options::default()).await.unwrap();
    let channels = format!(
        "{}{}",
        claude_channel("claude", &claude.root_url(), "claude-demo", ""),
        channel("gpt", &gpt.base_url(), "demo-gpt", "")
    );
    let (relay, baseline) = start(&channels, &["claude-demo", "demo-gpt"]).await;
    let beta = "interleaved-thinking-2025-05-14, fine-grained-tool-streaming-2025-05-14";
    let joined = "interleaved-thinking-2025-05-14,fine-grained-tool-streaming-2025-05-14";
    let client = [("anthropic-beta", beta), ("anthropic-version", "2024-10-22")];
    let ask = |model: &str, stream: bool| json!({"model": model, "max_tokens": 32, "stream": stream, "messages": [{"role": "user", "content": "hi"}]});

    // Native: plain, streamed and counted, the vendor gets the client's headers.
    let warm_up = claude.stats.received().len();
    for stream in [false, true] {
        let a = post(&relay, "/v1/messages", &client, &ask("claude-demo", stream)).await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    }
    let a = post(
        &relay,
        "/v1/messages/count_tokens",
        &client,
        &json!({"model": "claude-demo", "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!((a.status, counted_by(&a)), (StatusCode::OK, "exact"), "{}", a.text());
    let got = claude.stats.received();
    let native: Vec<&Received> = got[warm_up..].iter().collect();
    assert_eq!(native.len(), 3);
    for r in &native {
        assert_eq!(header(r, "anthropic-beta"), Some(joined), "{}", r.path);
        assert_eq!(header(r, "anthropic-version"), Some("2024-10-22"), "{}", r.path);
        assert_eq!(header(r, "x-api-key"), Some(UPSTREAM_KEY));
    }
    // Without them, the channel's own version and no beta.
    let a = post(&relay, "/v1/messages", &[], &ask("claude-demo", false)).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    let got = claude.stats.received();
    let last = got.last().expect("a call");
    assert_eq!((header(last, "anthropic-version"), header(last, "anthropic-beta")), (Some("2099-01-01"), None));

    // Bridged: an OpenAI vendor never sees them. The bridged stream pings after its start,
    // as Anthropic's does.
    for stream in [false, true] {
        let a = post(&relay, "/v1/messages", &client, &ask("demo-gpt", stream)).await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.text());
        let got = gpt.stats.received();
        let last = got.last().expect("a call");
        assert_eq!(last.path, "/v1/chat/completions");
        assert!(last.headers.keys().all(|k| !k.as_str().starts_with("anthropic-")), "{:?}", last.headers);
        if stream {
            let text = a.text();
            let names: Vec<&str> = text.lines().filter_map(|l| l.strip_prefix("event: ")).collect();
            assert_eq!(names[..2], ["message_start", "ping"], "{text}");
            assert_eq!(names.last(), Some(&"message_stop"), "{text}");
        }
    }

    // Bad headers: 400 naming the header, on every Messages route, and no vendor call.
    let calls = (claude.stats.received().len(), gpt.stats.received().len());
    let long = vec!["beta-2025-01-01"; 80].join(",");
    let bad: [(&str, &str); 4] = [
        ("anthropic-beta", "two words"),
        ("anthropic-beta", "a,,b"),
        ("anthropic-beta", &long),
        ("anthropic-version", "2023/06/01"),
    ];
    for (name, value) in bad {
        for (path, body) in [
            ("/v1/messages", ask("claude-demo", false)),
            ("/v1/messages", ask("demo-gpt", true)),
            (
                "/v1/messages/count_tokens",
                json!({"model": "claude-demo", "messages": [{"role": "user", "content": "hi"}]}),
            ),
        ] {
            let a = post(&relay, path, &[(name, value)], &body).await;
            let (status, ty, msg) = anthropic_error(&a);
            assert_eq!(
                (status, ty.as_str()),
                (StatusCode::BAD_REQUEST, "invalid_request_error"),
                "{path} {name}: {msg}"
            );
            assert!(msg.starts_with(&format!("{name}: header")), "{path} {name}: {msg}");
        }
    }
    assert_eq!((claude.stats.received().len(), gpt.stats.received().len()), calls);
    relay.assert_back_to(baseline, Duration::from_secs(5)).await;
}
