//! Contract versions end to end: the host links the current contract and the previous one,
//! so an adapter built against `relay:adapter@0.1.0` (target/fixtures/contract-v0-1.wasm,
//! an OpenAI pass-through without the kit) serves like any other, `/admin/plugins` tells
//! which contract each adapter speaks, and a component of neither version is refused with
//! the versions this host speaks.

use std::time::Duration;

use http::{Method, StatusCode};
use relay_tests::*;
use serde_json::{Value, json};

const ADMIN: &str = "adm-contract-0123456789";

fn config(m: &Mock) -> String {
    format!(
        "admin_token = \"{ADMIN}\"\n[[channel]]\nname = \"old\"\nadapter = \"contract-v0-1\"\nbase_url = \"{}\"\napi_key = \"{UPSTREAM_KEY}\"\nmodels = [\"demo-gpt\"]\n{}",
        m.base_url(),
        token_block(CLIENT_KEY, "*")
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_v0_1_adapter_serves_chat_completions() {
    let m = Mock::start(Options::default()).await.expect("mock starts");
    let relay = TestRelay::start(Setup { config: &config(&m), adapters: &["contract-v0-1"], env: &[] }).await;

    let a = relay.chat(&chat_body("demo-gpt", "Hello there", false)).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    let v = a.json();
    assert_eq!(v["choices"][0]["message"]["content"], "Hello from the demo upstream! You said: Hello there");
    assert_eq!(v["usage"]["completion_tokens"], 9);

    let mut body = chat_body("demo-gpt", "Stream me", true);
    body["stream_options"] = json!({"include_usage": true});
    let a = relay.chat(&body).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    let events = a.sse_data();
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"), "{}", a.text());
    assert_eq!(joined_content(&events), "Hello from the demo upstream! You said: Stream me");
    let usage: Value = serde_json::from_str(&events[events.len() - 2]).unwrap();
    assert_eq!(usage["usage"]["completion_tokens"], 9);
    // Chat chunks are unnamed events: no `event:` line reaches the client.
    assert!(!a.text().contains("event:"), "{}", a.text());

    let metrics = relay.wait_metrics(Duration::from_secs(5), |m| m.gauge("relay_active_streams") == 0.0).await;
    // Usage converts (0.1's prompt/completion tokens), for the non-stream and the stream.
    assert_eq!(metrics.value("relay_tokens_total", &[("kind", "completion")]), 18.0);
}

/// A vendor stream of 11 events (a role chunk, 8 content chunks, a finish chunk, `[DONE]`)
/// written in two reads, 200 ms apart.
fn two_read_stream() -> Vec<Vec<u8>> {
    let chunk = |delta: Value, finish: Value| {
        let c = json!({"id": "chatcmpl-b", "object": "chat.completion.chunk", "created": 1, "model": "demo-gpt",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]});
        format!("data: {c}\n\n")
    };
    let mut events = vec![chunk(json!({"role": "assistant", "content": ""}), Value::Null)];
    events.extend((0..8).map(|i| chunk(json!({"content": format!("w{i} ")}), Value::Null)));
    events.push(chunk(json!({}), json!("stop")));
    events.push("data: [DONE]\n\n".to_string());
    let (first, second) = (events[..5].concat(), events[5..].concat());
    let head = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncontent-length: {}\r\n\r\n",
        first.len() + second.len()
    );
    vec![format!("{head}{first}").into_bytes(), second.into_bytes()]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_events_of_one_read_reach_the_adapter_in_one_call() {
    // A 0.1 adapter (the host loops over the batch inside the call) and a 0.2 one (the
    // batch crosses the boundary once) give the same stream from the same reads.
    for adapter in ["contract-v0-1", "openai"] {
        events_of_one_read_in_one_call(adapter).await;
    }
}

async fn events_of_one_read_in_one_call(adapter: &str) {
    let vendor = RecordingVendor::start(|_| async { two_read_stream() }).await;
    let config = format!(
        "[[channel]]\nname = \"batch\"\nadapter = \"{adapter}\"\nbase_url = \"{}\"\napi_key = \"{UPSTREAM_KEY}\"\nmodels = [\"demo-gpt\"]\n{}",
        vendor.base_url(),
        token_block(CLIENT_KEY, "*")
    );
    let relay = TestRelay::start(Setup { config: &config, adapters: &[adapter], env: &[] }).await;
    let a = relay.chat(&chat_body("demo-gpt", "batch me", true)).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    let events = a.sse_data();
    assert_eq!(events.len(), 11, "{}", a.text());
    assert_eq!(joined_content(&events), "w0 w1 w2 w3 w4 w5 w6 w7 ");
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    // 11 events in two reads: a call per read (for a 0.1 adapter the host hands the events
    // over one by one inside that call), never one per event.
    let metrics = relay.wait_metrics(Duration::from_secs(5), |m| m.gauge("relay_active_streams") == 0.0).await;
    let pushes = metrics.value("relay_plugin_calls_total", &[("plugin", adapter), ("call", "stream_push")]);
    assert!((1.0..=3.0).contains(&pushes), "{adapter}: {pushes} push calls for 11 events in two reads");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_names_the_contract_of_each_adapter() {
    let m = Mock::start(Options::default()).await.expect("mock starts");
    let relay = TestRelay::start(Setup { config: &config(&m), adapters: &["contract-v0-1", "openai"], env: &[] }).await;
    let a = relay.request(Method::GET, "/admin/plugins", Some(ADMIN), "").await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    let v = a.json();
    let by_name = |name: &str| {
        v["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("{name}: {v}"))
    };
    let p = by_name("contract-v0-1");
    assert_eq!(p["contract"], "0.1.0");
    assert_eq!(p["endpoints"], json!(["chat_completions"]));
    assert_eq!(p["native"], json!([]), "0.1 has no native APIs");
    let p = by_name("openai");
    assert_eq!(p["contract"], "0.2.0", "the shipped adapters are built against the current contract");
    let logs = relay.expect_log("adapter loaded").await;
    assert!(logs.contains("contract=0.1.0"), "{logs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_component_of_neither_version_is_refused_naming_both() {
    let m = Mock::start(Options::default()).await.expect("mock starts");
    let relay = TestRelay::start(Setup { config: &config(&m), adapters: &["contract-v0-1"], env: &[] }).await;
    relay.install_adapter(&adapter_wasm("future-contract"), "future");
    let logs = relay.wait_log("adapter refused").await;
    for version in ["relay:adapter/adapter@0.2.0", "relay:adapter/adapter@0.1.0"] {
        assert!(logs.contains(version), "the refusal must name {version}:\n{logs}");
    }
    // The 0.1 adapter keeps serving.
    let a = relay.chat(&chat_body("demo-gpt", "still here", false)).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());

    // `relay plugin check` says the same before deploying, and names a 0.1 adapter's contract.
    let check = |file: &std::path::Path| {
        let out = std::process::Command::new(relay_bin()).args(["plugin", "check"]).arg(file).output().unwrap();
        (
            out.status.success(),
            format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)),
        )
    };
    let (ok, text) = check(&adapter_wasm("future-contract"));
    assert!(!ok && text.contains("relay:adapter/adapter@0.2.0 or relay:adapter/adapter@0.1.0"), "{text}");
    let (ok, text) = check(&adapter_wasm("contract-v0-1"));
    assert!(ok && text.contains("contract:      relay:adapter@0.1.0"), "{text}");
    let (ok, text) = check(&adapter_wasm("anthropic"));
    assert!(ok && text.contains("contract:      relay:adapter@0.2.0"), "{text}");
}
