//! How a stream ends, through the real binary and each vendor's mock: a complete stream
//! whose vendor left out its terminator (`[DONE]`, `message_stop`) is complete; one
//! malformed event in the middle is skipped and counted (or, with `malformed_events =
//! "fail"`, ends the stream as before); a stream cut before its finish reason still ends
//! with an error event. The async job path consumes the same stream, with the same rules.

use std::time::{Duration, Instant};

use demo_upstream::Vendor;
use http::{Method, StatusCode};
use relay_tests::*;
use serde_json::{Value, json};

/// The vendors, each with its adapter, its mock and the channel lines it needs.
const VENDORS: [(&str, Vendor); 4] =
    [("oa", Vendor::OpenAi), ("an", Vendor::Anthropic), ("ge", Vendor::Gemini), ("az", Vendor::Azure)];

fn adapter(v: Vendor) -> &'static str {
    match v {
        Vendor::OpenAi => "openai",
        Vendor::Anthropic => "anthropic",
        Vendor::Gemini => "gemini",
        Vendor::Azure => "azure",
    }
}

/// The faults every vendor gets a channel for: `<vendor>-<name>` serves the model of that
/// name (Gemini's models are `gemini-<vendor>-<name>`: the mock serves `gemini-` models).
const FAULTS: [(&str, &str); 5] = [
    ("ok", ""),
    ("noterm", "headers = { \"x-mock-fault\" = \"no-terminator\" }"),
    ("cut", "headers = { \"x-mock-fault\" = \"no-done\" }"),
    ("garbage", "headers = { \"x-mock-fault\" = \"garbage-chunk\" }"),
    ("garbage-fail", "malformed_events = \"fail\"\nheaders = { \"x-mock-fault\" = \"garbage-chunk\" }"),
];

fn model(prefix: &str, fault: &str) -> String {
    if prefix == "ge" { format!("gemini-{prefix}-{fault}") } else { format!("{prefix}-{fault}") }
}

struct Setup {
    relay: TestRelay,
    baseline: Gauges,
    _mocks: Vec<Mock>,
}

async fn setup() -> Setup {
    let mut config = String::from(FAST_POOL);
    let mut mocks = Vec::new();
    for (prefix, vendor) in VENDORS {
        let m = Mock::start(Options { vendor, ..Options::default() }).await.expect("mock starts");
        let base = if vendor == Vendor::OpenAi { m.base_url() } else { m.root_url() };
        let settings = if vendor == Vendor::Azure { "settings = { deployment = \"gpt-4o-prod\" }\n" } else { "" };
        for (fault, extra) in FAULTS {
            config.push_str(&format!(
                "[[channel]]\nname = \"{prefix}-{fault}\"\nadapter = \"{}\"\nbase_url = \"{base}\"\napi_key = \"{UPSTREAM_KEY}\"\nmodels = [\"{}\"]\n{settings}{extra}\n",
                adapter(vendor),
                model(prefix, fault),
            ));
        }
        mocks.push(m);
    }
    config.push_str(&token_block(CLIENT_KEY, "*"));
    let relay = TestRelay::start(relay_tests::Setup {
        config: &config,
        adapters: &["openai", "anthropic", "gemini", "azure"],
        env: &[],
    })
    .await;
    let warm: Vec<String> = VENDORS.iter().map(|(p, _)| model(p, "ok")).collect();
    let warm: Vec<&str> = warm.iter().map(String::as_str).collect();
    let baseline = warm_baseline(&relay, &warm).await;
    Setup { relay, baseline, _mocks: mocks }
}

/// A streamed chat asking for the usage chunk.
async fn stream(relay: &TestRelay, model: &str) -> Answer {
    let mut body = chat_body(model, "tell me everything", true);
    body["stream_options"] = json!({"include_usage": true});
    relay.chat(&body).await
}

/// The request's access line, once logged (the stream's record is logged when it ends).
fn skipped(m: &Metrics, channel: &str) -> f64 {
    m.value("relay_stream_events_skipped_total", &[("channel", channel)])
}

/// The chunk that carries the usage, if any.
fn usage(data: &[String]) -> Option<Value> {
    data.iter()
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .find_map(|v| v.get("usage").filter(|u| u.is_object()).cloned())
}

/// A whole answer: ends with `[DONE]`, has no error event, carries the finish reason and
/// the usage; the same content and usage as the clean channel's `clean`.
fn assert_whole(what: &str, a: &Answer, clean: &Answer) {
    assert_eq!(a.status, StatusCode::OK, "{what}: {}", a.text());
    let data = a.sse_data();
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"), "{what}: the client's normal end: {}", a.text());
    assert!(!a.text().contains("\"error\""), "{what}: no error event: {}", a.text());
    assert!(a.text().contains("\"finish_reason\":\"stop\""), "{what}: {}", a.text());
    let clean_data = clean.sse_data();
    assert!(!joined_content(&clean_data).is_empty());
    assert_eq!(joined_content(&data), joined_content(&clean_data), "{what}: all the content");
    let u = usage(&data).unwrap_or_else(|| panic!("{what}: no usage chunk: {}", a.text()));
    assert!(u["total_tokens"].as_u64().is_some_and(|t| t > 0), "{what}: {u}");
    assert_eq!(Some(u), usage(&clean_data), "{what}: the usage the vendor reported");
}

/// The last event is an error whose message contains `needle`; no `[DONE]`.
fn assert_error_event(what: &str, a: &Answer, needle: &str) {
    assert_eq!(a.status, StatusCode::OK, "{what}: the stream had begun");
    let data = a.sse_data();
    assert!(!data.iter().any(|d| d == "[DONE]"), "{what}: {}", a.text());
    let last: Value = serde_json::from_str(data.last().expect("events")).expect("the last event is JSON");
    let msg = last["error"]["message"].as_str().unwrap_or_default();
    assert!(msg.contains(needle), "{what}: wanted {needle:?} in {}", a.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_complete_stream_without_its_terminator_is_complete() {
    let s = setup().await;
    for (prefix, _) in VENDORS {
        let clean = stream(&s.relay, &model(prefix, "ok")).await;
        let channel = format!("{prefix}-noterm");
        let a = stream(&s.relay, &model(prefix, "noterm")).await;
        assert_whole(&channel, &a, &clean);
        let line = s.relay.access_line(&format!("channel=\"{channel}\"")).await;
        assert!(line.contains("status=200") && line.contains("error=\"\""), "{line}");
        assert!(!line.contains("completion_tokens=0 "), "usage counted: {line}");
    }
    let m = s.relay.metrics().await;
    for (prefix, _) in VENDORS {
        let labels = [("channel", format!("{prefix}-noterm")), ("status", "200".into())];
        let labels: Vec<(&str, &str)> = labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
        assert_eq!(m.value("relay_requests_total", &labels), 1.0, "{prefix}: logged as 200");
    }
    s.relay.assert_back_to(s.baseline, Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_malformed_event_is_skipped_and_counted() {
    let s = setup().await;
    let text = s.relay.metrics().await.0;
    for (prefix, _) in VENDORS {
        for fault in ["garbage", "garbage-fail"] {
            let zero = format!("relay_stream_events_skipped_total{{channel=\"{prefix}-{fault}\"}} 0");
            assert!(text.lines().any(|l| l == zero), "a zero sample from start: {zero}");
        }
    }
    for (prefix, _) in VENDORS {
        let clean = stream(&s.relay, &model(prefix, "ok")).await;
        let channel = format!("{prefix}-garbage");
        let a = stream(&s.relay, &model(prefix, "garbage")).await;
        assert_whole(&channel, &a, &clean);
        let line = s.relay.access_line(&format!("channel=\"{channel}\"")).await;
        assert!(line.contains("status=200") && line.contains("skipped_events=1"), "{line}");
        assert_eq!(skipped(&s.relay.metrics().await, &channel), 1.0, "{channel}");
    }
    let logs = s.relay.logs();
    assert!(
        logs.lines().any(|l| l.contains("skipped vendor stream events") && l.contains("not JSON")),
        "the reason is logged:\n{logs}"
    );
    s.relay.assert_back_to(s.baseline, Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_fail_a_malformed_event_ends_the_stream() {
    let s = setup().await;
    for (prefix, needle) in [("oa", "not JSON"), ("an", "not readable"), ("ge", "not JSON"), ("az", "not JSON")] {
        let channel = format!("{prefix}-garbage-fail");
        let a = stream(&s.relay, &model(prefix, "garbage-fail")).await;
        assert_error_event(&channel, &a, needle);
        let line = s.relay.access_line(&format!("channel=\"{channel}\"")).await;
        assert!(line.contains("status=502") && line.contains("skipped_events=0"), "{line}");
        assert_eq!(skipped(&s.relay.metrics().await, &channel), 0.0, "{channel}: nothing was skipped");
    }
    s.relay.assert_back_to(s.baseline, Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_cut_before_its_finish_reason_ends_with_an_error_event() {
    let s = setup().await;
    for (prefix, needle) in [("oa", "before [DONE]"), ("an", "message_stop"), ("ge", "finishReason"), ("az", "[DONE]")]
    {
        let channel = format!("{prefix}-cut");
        let a = stream(&s.relay, &model(prefix, "cut")).await;
        assert_error_event(&channel, &a, needle);
        assert!(!a.text().contains("\"finish_reason\":\"stop\""), "{channel}: cut before it: {}", a.text());
        let line = s.relay.access_line(&format!("channel=\"{channel}\"")).await;
        assert!(line.contains("status=502"), "{line}");
    }
    s.relay.assert_back_to(s.baseline, Duration::from_secs(10)).await;
}

/// A job's status once it ended.
async fn job_result(relay: &TestRelay, model: &str) -> Value {
    let body = chat_body(model, "tell me everything", false).to_string();
    let path = "/v1/chat/completions";
    let a = relay.request_with(Method::POST, path, Some(CLIENT_KEY), &[("prefer", "respond-async")], &body).await;
    assert_eq!(a.status, StatusCode::ACCEPTED, "{}", a.text());
    let id = a.json()["id"].as_str().expect("job id").to_string();
    let end = Instant::now() + Duration::from_secs(20);
    loop {
        let v = relay.request(Method::GET, &format!("/v1/jobs/{id}"), Some(CLIENT_KEY), "").await.json();
        if matches!(v["status"].as_str(), Some("succeeded" | "failed" | "cancelled")) {
            return v;
        }
        assert!(Instant::now() < end, "the job never ended: {v}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_end_by_the_same_rules() {
    let s = setup().await;
    for prefix in ["oa", "an"] {
        let clean = job_result(&s.relay, &model(prefix, "ok")).await;
        assert_eq!(clean["status"], "succeeded", "{clean}");
        for fault in ["noterm", "garbage"] {
            let v = job_result(&s.relay, &model(prefix, fault)).await;
            assert_eq!(v["status"], "succeeded", "{prefix}-{fault}: {v}");
            let (r, c) = (&v["result"], &clean["result"]);
            assert_eq!(r["choices"][0]["message"], c["choices"][0]["message"], "{prefix}-{fault}");
            assert_eq!(r["choices"][0]["finish_reason"], "stop");
            assert_eq!(r["usage"], c["usage"], "{prefix}-{fault}: with usage");
        }
        let v = job_result(&s.relay, &model(prefix, "cut")).await;
        assert_eq!(v["status"], "failed", "{prefix}-cut: {v}");
    }
    s.relay.assert_back_to(s.baseline, Duration::from_secs(10)).await;
}
