//! OpenAI's Responses API passed through natively by the `openai` adapter: the OpenAI mock's
//! `POST /v1/responses` (checked straight, so the tests through the relay can trust it), and
//! through the real relay binary: the body reaches the vendor as sent, unknown fields
//! included; the answer and every stream event (names, vendor fields) come back as the
//! vendor sent them, under the relay's response id; usage is accounted; a cut native stream
//! ends failed; a vendor error fails over to a bridged channel; `native = []` bridges.

use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
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
    let evs = sse_events(&text);
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
    let evs = sse_events(&text);
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

    let names = |text: &str| sse_events(text).into_iter().map(|(n, _)| n).collect::<Vec<_>>();
    let (_, _, text) = raw(&m, &[("x-mock-fault", "no-terminator")], &body(true)).await;
    let n = names(&text);
    assert_eq!(n.last().map(String::as_str), Some("response.output_item.done"), "{n:?}");
    let (_, _, text) = raw(&m, &[("x-mock-fault", "no-done")], &body(true)).await;
    let n = names(&text);
    assert_eq!(n.last().map(String::as_str), Some("response.output_text.delta"), "{n:?}");
    let (_, _, text) = raw(&m, &[("x-mock-fault", "response-failed")], &body(true)).await;
    let evs = sse_events(&text);
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

// ---- Through the relay ----

/// A relay with an `openai` channel (`extra` appended to it) on `openai`, and `more` config.
async fn relay(openai: &Mock, extra: &str, more: &str, adapters: &[&str]) -> TestRelay {
    let config = format!(
        "{FAST_POOL}{}{more}\n{}",
        channel("native", &openai.base_url(), MODEL, extra),
        token_block(CLIENT_KEY, "*")
    );
    TestRelay::start(Setup { config: &config, adapters, env: &[] }).await
}

async fn create(relay: &TestRelay, id: &str, body: &Value) -> Answer {
    let headers = [("x-request-id", id)];
    relay.request_with(Method::POST, "/v1/responses", Some(CLIENT_KEY), &headers, &body.to_string()).await
}

/// The access line of request `id`, once logged.
async fn access_line(relay: &TestRelay, id: &str) -> String {
    let needle = format!("request_id={id} ");
    let mut line = String::new();
    wait_until(&format!("the access line of {id}"), Duration::from_secs(10), async || {
        let logs = relay.logs();
        match logs.lines().find(|l| l.contains("relay::access") && l.contains(&needle)) {
            Some(l) => {
                line = l.to_string();
                true
            }
            None => false,
        }
    })
    .await;
    line
}

/// The Response ids an answer carries: the whole answer's, or those of a stream's events.
fn response_ids(evs: &[(String, Value)]) -> Vec<String> {
    evs.iter().filter_map(|(_, d)| d["response"]["id"].as_str().map(str::to_owned)).collect()
}

/// The relay's id for a response: `resp_` and 48 hex digits, never the vendor's.
fn assert_relay_id(id: &str) {
    assert!(id.starts_with("resp_") && id.len() == 53, "{id}");
    assert!(id[5..].bytes().all(|b| b.is_ascii_hexdigit()), "{id}");
    assert_ne!(id, demo_upstream_response_id(), "the vendor's id leaked");
}

fn demo_upstream_response_id() -> &'static str {
    "resp_demo00000000000000000000000000000000000000000001"
}

/// What the relay does not know reaches OpenAI as sent, and what OpenAI sends back (a
/// reasoning item, events the relay has no type for, fields like `obfuscation`) reaches the
/// client as sent, under the relay's response id; usage is accounted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_body_and_the_answer_pass_through_intact() {
    let m = mock().await;
    let relay = relay(&m, "headers = { \"x-mock-chunks\" = \"3\" }", "", &["openai"]).await;
    let baseline = warm_baseline(&relay, &[MODEL]).await;
    let sent = json!({
        "model": MODEL, "input": [{"role": "user", "content": [{"type": "input_text", "text": "Hello there"}]}],
        "reasoning": {"effort": "low", "summary": "auto"}, "include": ["reasoning.encrypted_content"],
        "prompt_cache_key": "cache-1", "safety_identifier": "user-1", "service_tier": "flex",
        "tools": [{"type": "web_search"}], "text": {"format": {"type": "text"}, "verbosity": "low"},
        "metadata": {"k": "v"}, "store": false,
    });
    let a = create(&relay, "native-whole", &sent).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    let got = m.stats.received();
    let last = got.last().unwrap();
    assert_eq!((last.method.as_str(), last.path.as_str()), ("POST", "/v1/responses"));
    assert_eq!(last.body, sent, "the vendor got the body as sent");
    assert_eq!(last.headers["authorization"], format!("Bearer {UPSTREAM_KEY}").as_str());
    // The vendor's answer, but for its id.
    let (_, _, direct) = raw(&m, &[], &sent).await;
    let mut direct: Value = serde_json::from_str(&direct).unwrap();
    let mut v = a.json();
    assert_relay_id(v["id"].as_str().unwrap());
    v["id"] = Value::Null;
    direct["id"] = Value::Null;
    assert_eq!(v, direct, "the vendor's answer, renamed only");
    assert_eq!(v["output"][0]["encrypted_content"], "gAAAAdemo-encrypted");
    let line = access_line(&relay, "native-whole").await;
    for want in ["endpoint=\"responses\"", "channel=\"native\"", "status=200", "prompt_tokens=2", "total_tokens=13"] {
        assert!(line.contains(want), "{want} in {line}");
    }

    // Streamed: every event as the vendor sent it, numbered as it numbered them, with the
    // relay's id in each Response.
    let mut sent = sent;
    sent["stream"] = json!(true);
    let a = create(&relay, "native-stream", &sent).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    assert_eq!(m.stats.received().last().unwrap().body, sent);
    let evs = sse_events(&a.text());
    let (_, _, direct) = raw(&m, &[("x-mock-chunks", "3")], &sent).await;
    let direct = sse_events(&direct);
    assert_eq!(evs.len(), direct.len(), "{}", a.text());
    let ids = response_ids(&evs);
    assert_eq!(ids.len(), 3, "created, in_progress, completed");
    assert!(ids.iter().all(|id| *id == ids[0]), "{ids:?}");
    assert_relay_id(&ids[0]);
    for ((name, mut data), (want_name, mut want)) in evs.into_iter().zip(direct) {
        assert_eq!(name, want_name);
        if data.get("response").is_some() {
            data["response"]["id"] = Value::Null;
            want["response"]["id"] = Value::Null;
        }
        assert_eq!(data, want, "{name}");
    }
    assert!(a.text().contains("\"obfuscation\":\"dEmO0bf\""));
    let line = access_line(&relay, "native-stream").await;
    assert!(line.contains("prompt_tokens=2") && line.contains("total_tokens=13"), "{line}");
    let metrics = relay.metrics().await;
    let tokens = |kind| metrics.value("relay_tokens_total", &[("channel", "native"), ("model", MODEL), ("kind", kind)]);
    // The warm-up's chat (2 + 9), then 2 + 11 twice (the reply's 9 and 2 of reasoning).
    assert_eq!((tokens("prompt"), tokens("completion")), (6.0, 31.0), "{}", metrics.0);
    relay.assert_back_to(baseline, Duration::from_secs(10)).await;
}

/// A native stream that ends without `response.completed` (cut, its terminal event lost,
/// or the vendor's own `response.failed`) ends with one `response.failed` from the relay,
/// under the relay's id, and never a completion.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_native_stream_ends_with_response_failed() {
    let m = mock().await;
    let more = ["no-terminator", "no-done", "drop-after:5", "response-failed"]
        .iter()
        .map(|f| {
            // Paced, so the events before a dropped connection leave the mock first.
            let h = format!("headers = {{ \"x-mock-fault\" = \"{f}\", \"x-mock-chunk-delay-ms\" = \"5\" }}");
            channel(&format!("fault-{f}"), &m.base_url(), &format!("fault-{f}"), &h)
        })
        .collect::<String>();
    let relay = relay(&m, "", &more, &["openai"]).await;
    let baseline = warm_baseline(&relay, &[MODEL]).await;
    for (fault, says) in [
        ("no-terminator", "ended before response.completed"),
        ("no-done", "ended before response.completed"),
        ("drop-after:5", ""),
        ("response-failed", "The model failed to generate a response."),
    ] {
        let model = format!("fault-{fault}");
        let id = format!("cut-{}", fault.replace(':', "-"));
        let a = create(&relay, &id, &json!({"model": model, "input": "Hello there", "stream": true})).await;
        assert_eq!(a.status, StatusCode::OK, "{fault}: {}", a.text());
        let evs = sse_events(&a.text());
        assert_well_formed(&evs);
        let failed: Vec<_> = evs.iter().filter(|(n, _)| n == "response.failed").collect();
        assert_eq!(failed.len(), 1, "{fault}: one response.failed: {}", a.text());
        let (name, last) = evs.last().unwrap();
        assert_eq!(name, "response.failed", "{fault}: {}", a.text());
        assert!(!evs.iter().any(|(n, _)| n == "response.completed"), "{fault}: {}", a.text());
        let r = &last["response"];
        assert_eq!(r["status"], "failed", "{fault}");
        assert_relay_id(r["id"].as_str().unwrap());
        let message = r["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(says), "{fault}: {message}");
        // What came before the cut came as the vendor sent it.
        assert_eq!(evs[0].0, "response.created", "{fault}");
        if fault != "drop-after:5" {
            assert_eq!(text_deltas(&evs), REPLY, "{fault}");
        }
        let line = access_line(&relay, &id).await;
        for want in ["endpoint=\"responses\"", "status=502", "fault=\"upstream\"", "kind=\"bad_upstream\""] {
            assert!(line.contains(want), "{fault}: {want} in {line}");
        }
    }
    relay.assert_back_to(baseline, Duration::from_secs(10)).await;
}

/// A vendor 429 or 500 before the head fails over, as for chat, to the next channel for the
/// model, which may bridge the request (here an Anthropic channel).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vendor_error_fails_over_to_a_bridged_channel() {
    let openai = mock().await;
    let claude = Mock::start(Options { vendor: demo_upstream::Vendor::Anthropic, ..Default::default() }).await.unwrap();
    for status in ["429", "500"] {
        let bridged = format!(
            "[[channel]]\nname = \"claude\"\nadapter = \"anthropic\"\nbase_url = \"{}\"\napi_key = \"{UPSTREAM_KEY}\"\nmodels = [\"{MODEL}\"]\npriority = -1\n",
            claude.root_url()
        );
        // No cooldown from the 429 (the mock's Retry-After is 7 s): each request tries the
        // native channel first.
        let extra = format!("headers = {{ \"x-mock-status\" = \"{status}\", \"x-mock-retry-after\" = \"0\" }}");
        let relay = relay(&openai, &extra, &bridged, &["openai", "anthropic"]).await;
        for stream in [false, true] {
            let id = format!("failover-{status}-{stream}");
            let (before_openai, before_claude) = (openai.stats.received().len(), claude.stats.received().len());
            let a = create(&relay, &id, &json!({"model": MODEL, "input": "Hello there", "stream": stream})).await;
            assert_eq!(a.status, StatusCode::OK, "{id}: {}", a.text());
            let (o, c) = (openai.stats.received(), claude.stats.received());
            assert_eq!(o.len(), before_openai + 1, "{id}: the native channel was tried once");
            assert_eq!(o.last().unwrap().path, "/v1/responses");
            assert_eq!(c.len(), before_claude + 1, "{id}: then the bridged one");
            assert_eq!(c.last().unwrap().path, "/v1/messages");
            let r = if stream {
                let evs = sse_events(&a.text());
                assert_well_formed(&evs);
                assert_eq!(evs.last().unwrap().0, "response.completed", "{id}: {}", a.text());
                evs.last().unwrap().1["response"].clone()
            } else {
                a.json()
            };
            assert_relay_id(r["id"].as_str().unwrap());
            assert_eq!((r["object"].as_str(), r["status"].as_str()), (Some("response"), Some("completed")), "{r}");
            let text = r["output"][0]["content"][0]["text"].as_str().unwrap_or_default();
            assert!(text.contains("You said: Hello there"), "{r}");
            let line = access_line(&relay, &id).await;
            assert!(line.contains("channel=\"claude\"") && line.contains("attempts=2"), "{line}");
            assert!(line.contains("tried=\"native:"), "{line}");
        }
    }
}

/// `native = []` serves Responses through the channel's chat completions: the vendor gets a
/// chat request, the client a Response.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn native_empty_bridges_responses_through_chat() {
    let m = mock().await;
    let relay = relay(&m, "native = []", "", &["openai"]).await;
    for stream in [false, true] {
        let sent = json!({"model": MODEL, "input": "Hello there", "instructions": "Be brief.", "stream": stream});
        let a = create(&relay, &format!("bridged-{stream}"), &sent).await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.text());
        let got = m.stats.received();
        let last = got.last().unwrap();
        assert_eq!(last.path, "/v1/chat/completions");
        assert_eq!(last.body["messages"][0], json!({"role": "system", "content": "Be brief."}), "{}", last.body);
        assert!(last.body.get("input").is_none(), "{}", last.body);
        let r = if stream { sse_events(&a.text()).last().unwrap().1["response"].clone() } else { a.json() };
        assert_relay_id(r["id"].as_str().unwrap());
        assert_eq!(r["output"][0]["content"][0]["text"], REPLY, "{r}");
    }
    assert!(!m.stats.received().iter().any(|r| r.path == "/v1/responses"));
}

/// A channel naming a client API its adapter does not speak natively does not start, and
/// the error names the key and its line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_native_name_the_adapter_does_not_speak_is_refused() {
    let m = mock().await;
    let config = format!(
        "{}{}",
        channel("native", &m.base_url(), MODEL, "native = [\"messages\"]"),
        token_block(CLIENT_KEY, "*")
    );
    let err = TestRelay::try_start(Setup { config: &config, adapters: &["openai"], env: &[] })
        .await
        .err()
        .expect("the relay refuses the config");
    assert!(
        err.contains("native (line") && err.contains("adapter 'openai' does not speak \"messages\" natively"),
        "{err}"
    );
}
