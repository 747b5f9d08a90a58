//! The OpenAI Responses API (`POST /v1/responses`) bridged through chat completions, at the
//! HTTP level through the real binary and the vendor mocks (openai, anthropic, gemini,
//! azure): plain and streamed create, a tool call and the tool result's turn, the typed
//! event sequence (names, `sequence_number`, one response id); a stream the vendor cuts
//! ends with `response.failed`, never `response.completed`; bad input gets OpenAI's error
//! shape. What the relay writes is also read with the OpenAI SDK's own pydantic types
//! (strictly: a field of the wrong shape fails). Every test ends with the gauges back at
//! their baseline.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use demo_upstream::{Received, Vendor};
use http::{Method, StatusCode};
use relay_tests::*;
use serde_json::{Value, json};

const PROMPT: &str = "Hello there";
const REPLY: &str = "Hello from the demo upstream! You said: Hello there";

async fn responses(relay: &TestRelay, body: &Value) -> Answer {
    relay.request(Method::POST, "/v1/responses", Some(CLIENT_KEY), &body.to_string()).await
}

/// What every Responses stream keeps: each event's `type` is its SSE name, sequence numbers
/// count from 0 by 1, `response.created` comes first, and every `response` carried is the
/// same response (the relay's id). Returns that id.
fn well_formed(evs: &[(String, Value)]) -> String {
    assert_eq!(evs.first().map(|e| e.0.as_str()), Some("response.created"), "{evs:?}");
    let id = evs[0].1["response"]["id"].as_str().expect("an id").to_string();
    assert!(id.starts_with("resp_") && id.len() == 53, "{id}");
    for (i, (name, v)) in evs.iter().enumerate() {
        assert_eq!(v["type"], name.as_str(), "{v}");
        assert_eq!(v["sequence_number"], i as u64, "{name}");
        if let Some(r) = v.get("response") {
            assert_eq!(r["id"], id.as_str(), "{name}");
        }
    }
    id
}

/// The text of a stream's deltas.
fn streamed_text(evs: &[(String, Value)]) -> String {
    evs.iter().filter(|e| e.0 == "response.output_text.delta").filter_map(|e| e.1["delta"].as_str()).collect()
}

/// The OpenAI SDK's interpreter, if the SDK checks run.
fn python() -> Option<PathBuf> {
    sdk_python("OpenAI SDK")
}

/// Read `responses` (Response objects) and `events` (stream events) with the SDK's pydantic
/// models, strictly; the check fails naming the field when one does not fit.
fn sdk_reads(python: &PathBuf, objects: &[Value], stream_events: &[Value]) {
    let script = r#"
import json, sys
from pydantic import TypeAdapter
from openai.types.responses import Response, ResponseStreamEvent
data = json.load(sys.stdin)
for r in data["objects"]:
    Response.model_validate(r)
events = TypeAdapter(ResponseStreamEvent)
for e in data["events"]:
    events.validate_python(e)
print("read", len(data["objects"]), "responses and", len(data["events"]), "events")
"#;
    let input = json!({"objects": objects, "events": stream_events}).to_string();
    let mut child = Command::new(python)
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python starts");
    std::io::Write::write_all(child.stdin.as_mut().expect("stdin"), input.as_bytes()).expect("stdin written");
    let out = child.wait_with_output().expect("python ends");
    assert!(
        out.status.success(),
        "the SDK's types do not read what the relay wrote:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The SDK's own client: `responses.create`, and `responses.stream` whose reader checks the
/// sequence (it begins with `response.created`, every `response` has one id) and builds the
/// final Response from the events.
async fn sdk_client(python: PathBuf, relay: &TestRelay, model: &str) {
    let script = r#"
import sys
from openai import OpenAI
base, key, model, reply = sys.argv[1:5]
client = OpenAI(base_url=base, api_key=key, max_retries=0)
r = client.responses.create(model=model, input="Hello there")
assert r.output_text == reply, r
with client.responses.stream(model=model, input="Hello there") as stream:
    final = stream.get_final_response()
assert final.output_text == reply, final
assert final.id.startswith("resp_") and final.status == "completed", final
print("the SDK client read", r.id, "and", final.id)
"#;
    let mut cmd = Command::new(python);
    cmd.args(["-c", script, &relay.url("/v1"), CLIENT_KEY, model, REPLY]);
    run_sdk_check(cmd, "the SDK client", relay).await;
}

struct Case<'a> {
    vendor: Vendor,
    adapter: &'a str,
    base_with_v1: bool,
    model: &'a str,
    settings: &'a str,
}

const TOOLS: &str = r#"[{"type": "function", "name": "get_weather", "description": "The weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}]"#;

/// Plain and streamed create, a tool call, the tool result's turn (plain and streamed)
/// through one bridged adapter; what the vendor received is returned.
async fn bridged_flow(case: Case<'_>) -> Vec<Received> {
    let mock = Mock::start(Options { vendor: case.vendor, ..Default::default() }).await.expect("mock starts");
    let base_url = if case.base_with_v1 { mock.base_url() } else { mock.root_url() };
    let mut settings =
        if case.settings.is_empty() { String::new() } else { format!("settings = {{ {} }}\n", case.settings) };
    if case.adapter == "openai" {
        // The openai adapter passes Responses through natively unless the channel bridges it.
        settings.push_str("native = []\n");
    }
    let config = format!(
        "{FAST_POOL}[[channel]]\nname = \"{adapter}\"\nadapter = \"{adapter}\"\nbase_url = \"{base_url}\"\napi_key = \"{UPSTREAM_KEY}\"\nmodels = [\"{model}\"]\n{settings}\n{token}",
        adapter = case.adapter,
        model = case.model,
        token = token_block(CLIENT_KEY, "*"),
    );
    let relay = TestRelay::start(Setup { config: &config, adapters: &[case.adapter], env: &[] }).await;
    let baseline = warm_baseline(&relay, &[]).await;
    let model = case.model;
    let mut objects = Vec::new();
    let mut all_events = Vec::new();

    // Plain create: the Response object, the request's parameters echoed.
    let a = responses(
        &relay,
        &json!({"model": model, "input": PROMPT, "instructions": "Be brief.", "max_output_tokens": 256,
                "temperature": 0.5, "metadata": {"k": "v"}}),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    let r = a.json();
    assert_eq!((r["object"].clone(), r["status"].clone()), (json!("response"), json!("completed")), "{r}");
    assert!(r["id"].as_str().is_some_and(|id| id.starts_with("resp_")), "{r}");
    assert_eq!(r["output"][0]["type"], "message");
    assert_eq!(r["output"][0]["content"][0]["text"], REPLY, "{r}");
    assert_eq!((r["instructions"].clone(), r["temperature"].clone()), (json!("Be brief."), json!(0.5)));
    assert_eq!((r["max_output_tokens"].clone(), r["metadata"].clone()), (json!(256), json!({"k": "v"})));
    let usage = &r["usage"];
    assert!(usage["input_tokens"].as_u64().is_some_and(|n| n > 0), "{r}");
    assert_eq!(
        usage["total_tokens"].as_u64(),
        Some(usage["input_tokens"].as_u64().unwrap_or(0) + usage["output_tokens"].as_u64().unwrap_or(0))
    );
    objects.push(r);

    // Streamed create: the typed sequence, ending in response.completed with the same text.
    let a = responses(&relay, &json!({"model": model, "input": PROMPT, "stream": true})).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    assert!(!a.text().contains("[DONE]"));
    let evs = sse_events(&a.text());
    well_formed(&evs);
    assert_eq!(streamed_text(&evs), REPLY, "{evs:?}");
    let names: Vec<&str> = evs.iter().map(|e| e.0.as_str()).collect();
    for name in [
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
    ] {
        assert!(names.contains(&name), "{name} missing: {names:?}");
    }
    let (last, done) = evs.last().expect("events");
    assert_eq!(last, "response.completed");
    assert_eq!(done["response"]["output"][0]["content"][0]["text"], REPLY);
    assert!(done["response"]["usage"]["output_tokens"].as_u64().is_some_and(|n| n > 0), "{done}");
    all_events.extend(evs.into_iter().map(|e| e.1));

    // A tool call, plain and streamed: a function_call item with the vendor's call id.
    let tools: Value = serde_json::from_str(TOOLS).expect("tools");
    let ask = json!({"model": model, "input": [{"role": "user", "content": "Weather in Paris?"}], "tools": tools});
    let a = responses(&relay, &ask).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    let r = a.json();
    let call = r["output"].as_array().and_then(|o| o.iter().find(|i| i["type"] == "function_call")).cloned();
    let call = call.unwrap_or_else(|| panic!("no function_call: {r}"));
    assert_eq!((call["name"].clone(), call["status"].clone()), (json!("get_weather"), json!("completed")));
    assert!(call["id"].as_str().is_some_and(|id| id.starts_with("fc_")), "{call}");
    let call_id = call["call_id"].as_str().expect("call_id").to_string();
    serde_json::from_str::<Value>(call["arguments"].as_str().unwrap_or_default()).expect("arguments are JSON");
    objects.push(r);
    let mut streamed_ask = ask.clone();
    streamed_ask["stream"] = json!(true);
    let a = responses(&relay, &streamed_ask).await;
    let evs = sse_events(&a.text());
    well_formed(&evs);
    let added = evs.iter().find(|e| e.0 == "response.output_item.added" && e.1["item"]["type"] == "function_call");
    assert!(added.is_some(), "{evs:?}");
    let args_done = evs.iter().find(|e| e.0 == "response.function_call_arguments.done").expect("arguments done");
    let final_call = &evs.last().expect("events").1["response"]["output"];
    let final_call = final_call.as_array().and_then(|o| o.iter().find(|i| i["type"] == "function_call")).cloned();
    assert_eq!(final_call.map(|c| c["arguments"].clone()), Some(args_done.1["arguments"].clone()));
    all_events.extend(evs.into_iter().map(|e| e.1));

    // The tool result's turn: the call and its output go back; the vendor gets them paired.
    let turn = |stream: bool| {
        json!({"model": model, "stream": stream, "tools": tools, "input": [
            {"role": "user", "content": "Weather in Paris?"},
            {"type": "function_call", "call_id": call_id, "name": "get_weather", "arguments": "{\"city\":\"Paris\"}"},
            {"type": "function_call_output", "call_id": call_id, "output": "{\"temp_c\": 21}"}]})
    };
    let a = responses(&relay, &turn(false)).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    let r = a.json();
    assert_eq!((r["status"].clone(), r["output"][0]["type"].clone()), (json!("completed"), json!("message")), "{r}");
    objects.push(r);
    let a = responses(&relay, &turn(true)).await;
    let evs = sse_events(&a.text());
    well_formed(&evs);
    assert_eq!(evs.last().map(|e| e.0.as_str()), Some("response.completed"));
    all_events.extend(evs.into_iter().map(|e| e.1));

    if let Some(python) = python() {
        sdk_reads(&python, &objects, &all_events);
        sdk_client(python, &relay, model).await;
    }
    relay.assert_back_to(baseline, Duration::from_secs(5)).await;
    let received = mock.stats.received();
    // Six creates, and the SDK client's two when the SDK checks run.
    assert!(matches!(received.len(), 6 | 8), "one vendor call per create: {}", received.len());
    for i in [4, 5] {
        let body = received[i].body.to_string();
        assert!(body.contains("temp_c"), "call {i} did not carry the tool result: {body}");
    }
    received
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_through_the_openai_adapter_as_chat() {
    let got = bridged_flow(Case {
        vendor: Vendor::OpenAi,
        adapter: "openai",
        base_with_v1: true,
        model: "demo-gpt",
        settings: "",
    })
    .await;
    assert!(
        got.iter().all(|r| r.path == "/v1/chat/completions"),
        "{:?}",
        got.iter().map(|r| &r.path).collect::<Vec<_>>()
    );
    // The chat request: instructions first, the token limit, the stream with usage.
    let plain = &got[0].body;
    assert_eq!(plain["messages"][0], json!({"role": "system", "content": "Be brief."}));
    assert_eq!((plain["max_tokens"].clone(), plain.get("metadata")), (json!(256), None), "{plain}");
    assert_eq!(got[1].body["stream_options"]["include_usage"], true);
    assert_eq!(got[2].body["tools"][0]["function"]["name"], "get_weather");
    // The tool result's turn: the assistant's call and the tool message under one id.
    let sent = &got[4].body["messages"];
    assert_eq!(sent[1]["tool_calls"][0]["id"], sent[2]["tool_call_id"], "{sent}");
    assert_eq!(sent[2]["role"], "tool");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_through_the_anthropic_adapter() {
    let got = bridged_flow(Case {
        vendor: Vendor::Anthropic,
        adapter: "anthropic",
        base_with_v1: false,
        model: "claude-demo",
        settings: "",
    })
    .await;
    assert!(got.iter().all(|r| r.path == "/v1/messages"));
    assert_eq!(got[0].body["system"], "Be brief.", "{}", got[0].body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_through_the_gemini_adapter() {
    let got = bridged_flow(Case {
        vendor: Vendor::Gemini,
        adapter: "gemini",
        base_with_v1: false,
        model: "gemini-2.0-flash",
        settings: "",
    })
    .await;
    assert!(got[1].path.ends_with(":streamGenerateContent"), "{}", got[1].path);
    assert!(got[0].path.ends_with(":generateContent"), "{}", got[0].path);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_through_the_azure_adapter() {
    let got = bridged_flow(Case {
        vendor: Vendor::Azure,
        adapter: "azure",
        base_with_v1: false,
        model: "gpt-4o",
        settings: r#""deployment.gpt-4o" = "gpt-4o-prod", api_version = "2024-10-21""#,
    })
    .await;
    assert!(got.iter().all(|r| r.path == "/openai/deployments/gpt-4o-prod/chat/completions"));
}

/// A cut stream: it began, it ends with `response.failed` carrying the error, and never
/// with `response.completed`.
fn assert_failed(a: &Answer, message_has: &str) -> Value {
    assert_eq!(a.status, StatusCode::OK);
    let evs = sse_events(&a.text());
    well_formed(&evs);
    assert!(!evs.iter().any(|e| e.0 == "response.completed"), "a cut stream must not complete: {evs:?}");
    let (name, data) = evs.last().expect("events");
    assert_eq!(name, "response.failed", "{evs:?}");
    let r = &data["response"];
    assert_eq!((r["status"].clone(), r["error"]["code"].clone()), (json!("failed"), json!("server_error")), "{r}");
    let msg = r["error"]["message"].as_str().unwrap_or_default();
    assert!(msg.contains(message_has), "{msg}");
    data.clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_cut_by_the_vendor_ends_with_response_failed() {
    let m = Mock::start(Options::default()).await.unwrap();
    // Bridged: the openai adapter passes Responses through natively unless `native = []`.
    let stall =
        "native = []\nheaders = { \"x-mock-fault\" = \"stall-after:2\" }\n[channel.timeouts]\nstream_idle = 0.5\n";
    let drop = "native = []\nheaders = { \"x-mock-fault\" = \"drop-after:3\", \"x-mock-chunk-delay-ms\" = \"20\" }\n";
    let garbage = "native = []\nheaders = { \"x-mock-fault\" = \"garbage-chunk\" }\n";
    let mut config = channel("ok", &m.base_url(), "ok", "native = []");
    for (name, extra) in [("stall", stall), ("drop", drop), ("garbage", garbage)] {
        config.push_str(&channel(name, &m.base_url(), name, extra));
    }
    let (relay, baseline) = relay_with_baseline(&config, &["ok"]).await;
    let body = |model: &str| json!({"model": model, "input": "hello there", "stream": true});
    let failed = [
        assert_failed(&responses(&relay, &body("stall")).await, "upstream stream idle timeout after 0.5 s"),
        assert_failed(&responses(&relay, &body("drop")).await, ""),
    ];
    // The text that came before the cut is in the failed response's output.
    assert!(failed[1]["response"]["output"][0]["content"][0]["text"].as_str().is_some_and(|t| !t.is_empty()));
    // A vendor event nobody can read: the stream still ends as a Responses stream.
    let a = responses(&relay, &body("garbage")).await;
    let evs = sse_events(&a.text());
    well_formed(&evs);
    let last = evs.last().map(|e| e.0.as_str());
    assert!(matches!(last, Some("response.failed" | "response.completed")), "{evs:?}");
    if let Some(python) = python() {
        let evs: Vec<Value> = failed.into_iter().collect();
        sdk_reads(&python, &[], &evs);
    }
    let metrics = relay.metrics().await;
    assert_eq!(metrics.value("relay_timeouts_total", &[("stage", "stream_idle")]), 1.0);
    relay.assert_back_to(baseline, Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_openai_errors_with_the_right_status() {
    let m = Mock::start(Options::default()).await.unwrap();
    let mut config = channel("ok", &m.base_url(), "ok", "native = []");
    config.push_str(&channel(
        "limited",
        &m.base_url(),
        "limited",
        "native = []\nheaders = { \"x-mock-status\" = \"429\" }",
    ));
    let (relay, baseline) = relay_with_baseline(&config, &["ok"]).await;
    let cases: Vec<(&str, String, StatusCode, &str, Value)> = vec![
        ("no model", json!({"input": "x"}).to_string(), StatusCode::BAD_REQUEST, "model", json!("model")),
        (
            "input of a wrong type",
            json!({"model": "ok", "input": 3}).to_string(),
            StatusCode::BAD_REQUEST,
            "input",
            json!("input"),
        ),
        ("bad JSON", "{\"model\":".into(), StatusCode::BAD_REQUEST, "JSON", Value::Null),
        (
            "a hosted tool",
            json!({"model": "ok", "input": "x", "tools": [{"type": "web_search"}]}).to_string(),
            StatusCode::BAD_REQUEST,
            "web_search",
            json!("tools[0].type"),
        ),
        (
            "an unknown item",
            json!({"model": "ok", "input": [{"type": "computer_call_output", "call_id": "c"}]}).to_string(),
            StatusCode::BAD_REQUEST,
            "computer_call_output",
            json!("input[0].type"),
        ),
        (
            "a parameter of a wrong type",
            json!({"model": "ok", "input": "x", "temperature": "hot"}).to_string(),
            StatusCode::BAD_REQUEST,
            "hot",
            Value::Null,
        ),
        (
            "unknown model",
            json!({"model": "nope", "input": "x"}).to_string(),
            StatusCode::NOT_FOUND,
            "nope",
            Value::Null,
        ),
        (
            "a vendor's 429",
            json!({"model": "limited", "input": "x"}).to_string(),
            StatusCode::TOO_MANY_REQUESTS,
            "",
            Value::Null,
        ),
    ];
    let mut invalid = 0.0;
    for (what, body, status, has, param) in cases {
        for stream in [false, true] {
            let mut b: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
            let body = if b.is_object() && stream {
                b["stream"] = json!(true);
                b.to_string()
            } else {
                body.clone()
            };
            let a = relay.request(Method::POST, "/v1/responses", Some(CLIENT_KEY), &body).await;
            assert_eq!(a.status, status, "{what}: {}", a.text());
            let (msg, _) = a.openai_error();
            assert!(msg.contains(has), "{what}: {msg}");
            if !param.is_null() {
                assert_eq!(a.json()["error"]["param"], param, "{what}");
            }
            if status == StatusCode::BAD_REQUEST {
                invalid += 1.0;
            }
        }
    }
    let wrong = relay.request(Method::POST, "/v1/responses", Some("sk-wrong"), "{}").await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    wrong.openai_error();
    let get = relay.request(Method::GET, "/v1/responses", Some(CLIENT_KEY), "").await;
    assert_eq!(get.status, StatusCode::METHOD_NOT_ALLOWED);
    get.openai_error();
    let metrics = relay.metrics().await;
    assert_eq!(metrics.value("relay_errors_total", &[("endpoint", "responses"), ("kind", "invalid_request")]), invalid);
    assert_eq!(metrics.value("relay_errors_total", &[("endpoint", "responses"), ("kind", "authentication")]), 1.0);
    relay.assert_back_to(baseline, Duration::from_secs(5)).await;
}
