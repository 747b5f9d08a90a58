//! OpenAI's Responses API passed through natively by the `openai` adapter: the OpenAI mock's
//! `POST /v1/responses` (checked straight, so the tests through the relay can trust it), and
//! through the real relay binary: the body reaches the vendor as sent, unknown fields
//! included; the answer and every stream event (names, vendor fields) come back as the
//! vendor sent them, under the relay's response id; usage is accounted; a cut native stream
//! ends failed; a vendor error fails over to a bridged channel; `native = []` bridges.

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use relay_tests::*;
use serde_json::{Value, json};

const MODEL: &str = "gpt-demo";
const REPLY: &str = "Hello from the demo upstream! You said: Hello there";

async fn mock() -> Mock {
    Mock::start(Options::default()).await.expect("mock starts")
}

/// A request straight to the mock, as the relay sends it: (status, headers, body text).
async fn raw(mock: &Mock, headers: &[(&str, &str)], body: &Value) -> (StatusCode, http::HeaderMap, String) {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let mut b = Request::post(format!("{}/responses", mock.base_url()))
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {UPSTREAM_KEY}"));
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let resp = client.request(b.body(Full::new(Bytes::from(body.to_string()))).unwrap()).await.expect("mock answers");
    let (parts, body) = resp.into_parts();
    let bytes = body.collect().await.map(|c| c.to_bytes()).unwrap_or_default();
    (parts.status, parts.headers, String::from_utf8_lossy(&bytes).into_owned())
}

/// An SSE body's events: (the `event:` name, the data as JSON).
fn events(text: &str) -> Vec<(String, Value)> {
    text.split("\n\n")
        .filter(|e| !e.trim().is_empty())
        .map(|e| {
            let name = e.lines().find_map(|l| l.strip_prefix("event: ")).unwrap_or_default().to_string();
            let data: Vec<&str> = e.lines().filter_map(|l| l.strip_prefix("data: ")).collect();
            let data =
                serde_json::from_str(&data.join("\n")).unwrap_or_else(|e| panic!("event not JSON ({e}): {text}"));
            (name, data)
        })
        .collect()
}

/// Every event named by its `type`, numbered from 0 by one.
fn assert_well_formed(evs: &[(String, Value)]) {
    for (i, (name, data)) in evs.iter().enumerate() {
        assert_eq!(data["type"].as_str(), Some(name.as_str()), "event {i}: {data}");
        assert_eq!(data["sequence_number"].as_u64(), Some(i as u64), "event {i}: {data}");
    }
}

fn text_deltas(evs: &[(String, Value)]) -> String {
    evs.iter().filter(|(n, _)| n == "response.output_text.delta").filter_map(|(_, d)| d["delta"].as_str()).collect()
}

fn body(stream: bool) -> Value {
    json!({"model": MODEL, "input": "Hello there", "stream": stream})
}

fn error_of(text: &str) -> (String, Value, Value) {
    let v: Value = serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"));
    let e = &v["error"];
    assert_eq!(e["type"], "invalid_request_error", "{v}");
    (e["message"].as_str().unwrap_or_default().to_string(), e["param"].clone(), e["code"].clone())
}

/// The mock answers as OpenAI does, whole and streamed, with a function call, and records
/// what it received.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mock_answers_in_openais_responses_format() {
    let m = mock().await;
    let (status, _, text) = raw(&m, &[], &body(false)).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!((v["object"].as_str(), v["status"].as_str()), (Some("response"), Some("completed")));
    assert!(v["id"].as_str().unwrap().starts_with("resp_"), "{v}");
    let msg = &v["output"][0];
    assert_eq!((msg["type"].as_str(), msg["role"].as_str()), (Some("message"), Some("assistant")));
    assert_eq!(msg["content"][0], json!({"type": "output_text", "annotations": [], "logprobs": [], "text": REPLY}));
    let u = &v["usage"];
    assert_eq!(u["total_tokens"], u["input_tokens"].as_u64().unwrap() + u["output_tokens"].as_u64().unwrap());
    assert!(
        u["input_tokens_details"]["cached_tokens"].is_u64() && u["output_tokens_details"]["reasoning_tokens"].is_u64()
    );
    assert_eq!(m.stats.received()[0].path, "/v1/responses");

    // Streamed: typed events in order, numbered, no [DONE], the Response in the terminal one.
    let (status, headers, text) = raw(&m, &[("x-mock-chunks", "3")], &body(true)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(headers["content-type"].to_str().unwrap().starts_with("text/event-stream"));
    assert!(!text.contains("[DONE]"), "{text}");
    let evs = events(&text);
    assert_well_formed(&evs);
    let names: Vec<&str> = evs.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.content_part.added",
            "response.output_text.delta",
            "response.output_text.delta",
            "response.output_text.delta",
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.completed"
        ]
    );
    assert_eq!(text_deltas(&evs), REPLY);
    assert_eq!(evs[0].1["response"]["status"], "in_progress");
    assert_eq!(evs[4].1["obfuscation"].as_str().map(str::is_empty), Some(false), "OpenAI pads its deltas");
    let done = &evs[10].1["response"];
    assert_eq!((done["status"].as_str(), &done["usage"]), (Some("completed"), &v["usage"]));

    // A function tool (flat shape) is called; its output is quoted on the next turn.
    let tools = json!([{"type": "function", "name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}]);
    let (_, _, text) = raw(&m, &[], &json!({"model": MODEL, "input": "Paris", "tools": tools, "stream": true})).await;
    let evs = events(&text);
    assert_well_formed(&evs);
    let call = &evs.last().unwrap().1["response"]["output"][0];
    assert_eq!((call["type"].as_str(), call["name"].as_str()), (Some("function_call"), Some("get_weather")));
    assert_eq!(call["arguments"], r#"{"city":"Paris"}"#);
    let args: String = evs
        .iter()
        .filter(|(n, _)| n == "response.function_call_arguments.delta")
        .filter_map(|(_, d)| d["delta"].as_str())
        .collect();
    assert_eq!(args, r#"{"city":"Paris"}"#);
    let input = json!([
        {"role": "user", "content": [{"type": "input_text", "text": "Paris"}]},
        {"type": "function_call", "call_id": call["call_id"], "name": "get_weather", "arguments": call["arguments"]},
        {"type": "function_call_output", "call_id": call["call_id"], "output": "sunny"}
    ]);
    let (status, _, text) = raw(&m, &[], &json!({"model": MODEL, "input": input, "tools": tools})).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["output"][0]["content"][0]["text"], "Hello from the demo upstream! The tool said: sunny");

    // Reasoning: an item first, with the encrypted content when included.
    let b = json!({"model": MODEL, "input": "hi", "reasoning": {"effort": "low"}, "include": ["reasoning.encrypted_content"]});
    let (_, _, text) = raw(&m, &[], &b).await;
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        (v["output"][0]["type"].as_str(), v["output"][1]["type"].as_str()),
        (Some("reasoning"), Some("message"))
    );
    assert!(v["output"][0]["encrypted_content"].is_string() && v["reasoning"]["effort"] == "low", "{v}");
}

/// The mock refuses what OpenAI refuses, above all a `previous_response_id` (it stores
/// nothing; the relay must never send one), so the tests through the relay catch a relay
/// that sends what it should not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mock_refuses_what_openai_refuses() {
    let m = mock().await;
    let with = |k: &str, v: Value| {
        let mut b = body(false);
        b[k] = v;
        b
    };
    let cases = [
        (
            with("previous_response_id", json!("resp_abc")),
            "Previous response with id 'resp_abc' not found.",
            json!("previous_response_id"),
            json!("previous_response_not_found"),
        ),
        (
            with("frobnicate", json!(1)),
            "Unknown parameter: 'frobnicate'.",
            json!("frobnicate"),
            json!("unknown_parameter"),
        ),
        (
            json!({"input": "hi"}),
            "Missing required parameter: 'model'.",
            json!("model"),
            json!("missing_required_parameter"),
        ),
        (with("input", json!({"role": "user"})), "Invalid type for 'input'", json!("input"), json!("invalid_type")),
        (
            with("input", json!([{"role": "robot", "content": "hi"}])),
            "Invalid value: 'robot'",
            json!("input[0].role"),
            json!("invalid_value"),
        ),
        (
            with("input", json!([{"role": "user", "content": [{"type": "text", "text": "hi"}]}])),
            "Invalid value: 'text'",
            json!("input[0].content[0].type"),
            json!("invalid_value"),
        ),
        (
            with("input", json!([{"type": "function_call_output", "call_id": "call_x", "output": "1"}])),
            "No tool call found for function call output with call_id call_x.",
            json!("input"),
            Value::Null,
        ),
        (
            with("tools", json!([{"type": "function", "function": {"name": "chat_shape"}}])),
            "Missing required parameter: 'tools[0].name'.",
            json!("tools[0].name"),
            Value::Null,
        ),
        (
            with("max_output_tokens", json!(5)),
            "Expected a value >= 16, but got 5",
            json!("max_output_tokens"),
            json!("integer_below_min_value"),
        ),
        (
            with("stream_options", json!({"include_obfuscation": false})),
            "only allowed when 'stream' is enabled",
            json!("stream_options"),
            Value::Null,
        ),
    ];
    for (b, says, param, code) in cases {
        let (status, _, text) = raw(&m, &[], &b).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{b}: {text}");
        let (message, p, c) = error_of(&text);
        assert!(message.contains(says), "{b}: {text}");
        assert_eq!((p, c), (param, code), "{b}: {text}");
    }
    // Newer parameters OpenAI takes are taken.
    let newer = json!({"model": MODEL, "input": "hi", "prompt_cache_key": "k", "safety_identifier": "u1",
        "include": ["reasoning.encrypted_content"], "truncation": "auto", "service_tier": "flex"});
    assert_eq!(raw(&m, &[], &newer).await.0, StatusCode::OK);
}

/// The fault knobs of the chat endpoint work here, with the Responses API's own end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mock_faults_on_the_responses_endpoint() {
    let m = mock().await;
    let (status, headers, text) = raw(&m, &[("x-mock-status", "429")], &body(true)).await;
    assert_eq!(
        (status, headers.get("retry-after").map(|v| v.to_str().unwrap())),
        (StatusCode::TOO_MANY_REQUESTS, Some("7"))
    );
    assert!(text.contains("rate_limit_exceeded"), "{text}");
    let (status, headers, _) = raw(&m, &[("x-mock-status", "503"), ("x-mock-retry-after", "2")], &body(false)).await;
    assert_eq!(
        (status, headers.get("retry-after").map(|v| v.to_str().unwrap())),
        (StatusCode::SERVICE_UNAVAILABLE, Some("2"))
    );

    let names = |text: &str| events(text).into_iter().map(|(n, _)| n).collect::<Vec<_>>();
    let (_, _, text) = raw(&m, &[("x-mock-fault", "no-terminator")], &body(true)).await;
    let n = names(&text);
    assert_eq!(n.last().map(String::as_str), Some("response.output_item.done"), "{n:?}");
    let (_, _, text) = raw(&m, &[("x-mock-fault", "no-done")], &body(true)).await;
    let n = names(&text);
    assert_eq!(n.last().map(String::as_str), Some("response.output_text.delta"), "{n:?}");
    let (_, _, text) = raw(&m, &[("x-mock-fault", "response-failed")], &body(true)).await;
    let evs = events(&text);
    assert_well_formed(&evs);
    let (name, last) = evs.last().unwrap();
    assert_eq!((name.as_str(), last["response"]["status"].as_str()), ("response.failed", Some("failed")));
    assert_eq!(last["response"]["error"]["code"], "server_error");
    assert!(!evs.iter().any(|(n, _)| n == "response.completed"));
    // Unauthenticated: OpenAI's 401; `reset`: the connection closes without an answer.
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let post = |h: Option<(&str, &str)>| {
        let mut b = Request::post(format!("{}/responses", m.base_url()));
        if let Some((k, v)) = h {
            b = b.header(k, v).header("authorization", format!("Bearer {UPSTREAM_KEY}"));
        }
        b.body(Full::new(Bytes::from(body(false).to_string()))).unwrap()
    };
    assert!(client.request(post(Some(("x-mock-fault", "reset")))).await.is_err(), "reset answers nothing");
    let resp = client.request(post(None)).await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(m.stats.received().len(), 7, "every request is recorded");
}
