//! The azure adapter end to end: the real relay binary and azure.wasm against the mock
//! speaking Azure OpenAI's deployments API (which checks the path, api-version, api-key,
//! deployment and body as Azure does).

use bytes::Bytes;
use demo_upstream::Vendor;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use relay_tests::*;
use serde_json::{Value, json};

/// The settings of the main test channel: one deployment per model, the GA API version.
const SETTINGS: &str = r#""deployment.gpt-4o" = "gpt-4o-prod", "deployment.text-embedding-3-small" = "embed-prod", api_version = "2024-10-21""#;
const REPLY: &str = "Hello from the demo upstream! You said: ";

async fn mock() -> Mock {
    Mock::start(Options { vendor: Vendor::Azure, ..Default::default() }).await.expect("mock starts")
}

/// A `[[channel]]` for the azure adapter; `extra` adds keys such as `headers`.
fn azure_channel(name: &str, m: &Mock, models: &[&str], settings: &str, extra: &str) -> String {
    let models: Vec<String> = models.iter().map(|m| format!("\"{m}\"")).collect();
    format!(
        "[[channel]]\nname = \"{name}\"\nadapter = \"azure\"\nbase_url = \"{}\"\napi_key = \"{UPSTREAM_KEY}\"\nmodels = [{}]\nsettings = {{ {settings} }}\n{extra}\n",
        m.root_url(),
        models.join(", ")
    )
}

async fn relay(channels: &str) -> TestRelay {
    let config = format!("{channels}\n{}", token_block(CLIENT_KEY, "*"));
    TestRelay::start(Setup { config: &config, adapters: &["azure"], env: &[] }).await
}

/// A relay with the main channel for gpt-4o and text-embedding-3-small.
async fn main_relay(m: &Mock) -> TestRelay {
    relay(&azure_channel("azure-main", m, &["gpt-4o", "text-embedding-3-small"], SETTINGS, "")).await
}

fn chunks(events: &[String]) -> Vec<Value> {
    events.iter().filter(|e| e.as_str() != "[DONE]").map(|e| serde_json::from_str(e).expect("chunk is JSON")).collect()
}

fn weather_tool() -> Value {
    json!([{"type": "function", "function": {"name": "get_weather", "description": "Current weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_goes_to_the_deployment_with_the_api_key() {
    let m = mock().await;
    let relay = main_relay(&m).await;
    let body = json!({"model": "gpt-4o", "temperature": 0.2, "max_tokens": 64, "stop": ["END"], "messages": [
        {"role": "system", "content": "be brief"}, {"role": "user", "content": "Hello there"}]});
    let a = relay.chat(&body).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    let v = a.json();
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["model"], "gpt-4o-2024-08-06", "the deployment decides the model");
    assert_eq!(v["choices"][0]["message"]["content"], format!("{REPLY}Hello there"));
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert_eq!(v["usage"]["completion_tokens"], 9);
    assert_eq!(v["usage"]["prompt_tokens"], 2);

    let got = m.stats.received();
    assert_eq!(got.len(), 1);
    let r = &got[0];
    assert_eq!((r.method.as_str(), r.path.as_str()), ("POST", "/openai/deployments/gpt-4o-prod/chat/completions"));
    assert_eq!(r.query.as_deref(), Some("api-version=2024-10-21"));
    assert_eq!(r.headers["api-key"], UPSTREAM_KEY);
    assert!(r.headers.get("authorization").is_none(), "the key goes only in api-key");
    assert_eq!(r.body, body, "the OpenAI body passes through unchanged");

    let metrics = relay.metrics().await;
    assert_eq!(metrics.value("relay_requests_total", &[("channel", "azure-main"), ("status", "200")]), 1.0);
}

/// The mock's own stream, read directly: what the adapter is given.
async fn raw_stream(m: &Mock) -> String {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let body = chat_body("gpt-4o", "raw", true).to_string();
    let req = Request::builder()
        .method(Method::POST)
        .uri(format!("{}/openai/deployments/gpt-4o-prod/chat/completions?api-version=2024-10-21", m.root_url()))
        .header("api-key", UPSTREAM_KEY)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .expect("request");
    let resp = client.request(req).await.expect("mock answers");
    String::from_utf8_lossy(&resp.into_body().collect().await.expect("body").to_bytes()).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_drops_the_prompt_filter_chunk() {
    let m = mock().await;
    let raw = sse_data(&raw_stream(&m).await);
    let first: Value = serde_json::from_str(&raw[0]).unwrap();
    assert_eq!(first["choices"], json!([]), "Azure's stream starts with a filter chunk");
    assert!(first["prompt_filter_results"].is_array());

    let relay = main_relay(&m).await;
    let a = relay.chat(&chat_body("gpt-4o", "Stream me", true)).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    assert_eq!(a.headers["content-type"], "text/event-stream");
    let events = a.sse_data();
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"), "{}", a.text());
    assert_eq!(events.iter().filter(|e| *e == "[DONE]").count(), 1);
    assert_eq!(joined_content(&events), format!("{REPLY}Stream me"));
    let chunks = chunks(&events);
    assert!(!a.text().contains("prompt_filter_results"), "{}", a.text());
    assert!(chunks.iter().all(|c| c["choices"].as_array().is_some_and(|ch| !ch.is_empty())), "{}", a.text());
    assert!(chunks.iter().all(|c| c["id"] == chunks[0]["id"] && c["object"] == "chat.completion.chunk"));
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    assert_eq!(chunks.last().unwrap()["choices"][0]["finish_reason"], "stop");
    assert!(chunks.iter().all(|c| c.get("usage").is_none()), "no usage unless asked");
    // Azure's per-choice verdicts pass unchanged.
    assert!(chunks[1]["choices"][0]["content_filter_results"]["hate"].is_object());

    let r = &m.stats.received()[1];
    assert_eq!(r.path, "/openai/deployments/gpt-4o-prod/chat/completions");
    assert_eq!(r.headers["accept"], "text/event-stream");
    assert_eq!(r.body["stream"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_with_include_usage_ends_with_the_usage_chunk() {
    let m = mock().await;
    let relay = main_relay(&m).await;
    let mut body = chat_body("gpt-4o", "Count me", true);
    body["stream_options"] = json!({"include_usage": true});
    let a = relay.chat(&body).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    let events = a.sse_data();
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let chunks = chunks(&events);
    let usage = chunks.last().unwrap();
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(usage["usage"], json!({"prompt_tokens": 2, "completion_tokens": 9, "total_tokens": 11}));
    let rest = &chunks[..chunks.len() - 1];
    assert!(rest.iter().all(|c| c.get("usage") == Some(&Value::Null)), "{}", a.text());
    assert_eq!(rest.last().unwrap()["choices"][0]["finish_reason"], "stop");
    assert_eq!(m.stats.received()[0].body["stream_options"]["include_usage"], true);
    let metrics = relay
        .expect_metrics("the stream gauge back to 0", std::time::Duration::from_secs(5), |m| {
            m.gauge("relay_active_streams") == 0.0
        })
        .await;
    assert_eq!(metrics.value("relay_tokens_total", &[("kind", "completion")]), 9.0);
    assert_eq!(metrics.value("relay_tokens_total", &[("kind", "prompt")]), 2.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tool_calls_and_tool_results() {
    let m = mock().await;
    let relay = main_relay(&m).await;
    let question = json!({"role": "user", "content": "Oslo"});
    let body = json!({"model": "gpt-4o", "messages": [question], "tools": weather_tool(), "tool_choice": "auto"});
    let a = relay.chat(&body).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    let v = a.json();
    let choice = &v["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls");
    let call = &choice["message"]["tool_calls"][0];
    assert_eq!((call["type"].as_str(), call["function"]["name"].as_str()), (Some("function"), Some("get_weather")));
    let args: Value = serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(args, json!({"city": "Oslo"}));
    assert_eq!(m.stats.received()[0].body["tools"], weather_tool());

    // The same as a stream: the call's start with its index and id, then its arguments.
    let mut streamed = body.clone();
    streamed["stream"] = json!(true);
    let a = relay.chat(&streamed).await;
    let events = a.sse_data();
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"), "{}", a.text());
    let chunks = chunks(&events);
    let first = &chunks[0]["choices"][0]["delta"];
    assert_eq!(first["role"], "assistant");
    assert_eq!(first["tool_calls"][0]["index"], 0);
    assert_eq!(first["tool_calls"][0]["id"], call["id"]);
    assert_eq!(first["tool_calls"][0]["function"]["name"], "get_weather");
    let arguments: String = chunks
        .iter()
        .filter_map(|c| c.pointer("/choices/0/delta/tool_calls/0/function/arguments")?.as_str().map(str::to_owned))
        .collect();
    assert_eq!(serde_json::from_str::<Value>(&arguments).unwrap(), args);
    assert_eq!(chunks.last().unwrap()["choices"][0]["finish_reason"], "tool_calls");

    // The tool's result goes back; the model answers in text.
    let follow_up = json!({"model": "gpt-4o", "tools": weather_tool(), "messages": [
        question, choice["message"], {"role": "tool", "tool_call_id": call["id"], "content": "12C, cloudy"}]});
    let a = relay.chat(&follow_up).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    let v = a.json();
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert_eq!(v["choices"][0]["message"]["content"], format!("{REPLY}Oslo"));
    assert_eq!(m.stats.received()[2].body["messages"][2]["tool_call_id"], call["id"]);

    // A result for a call that was never made is refused by Azure, and comes back as is.
    let mut orphan = follow_up.clone();
    orphan["messages"][2]["tool_call_id"] = json!("call_unknown");
    let a = relay.chat(&orphan).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    let (message, _) = a.openai_error();
    assert!(message.contains("role 'tool' must be a response"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embeddings_use_their_deployment() {
    let m = mock().await;
    let relay = main_relay(&m).await;
    let body = json!({"model": "text-embedding-3-small", "input": ["a", "b"]});
    let a = relay.request(Method::POST, "/v1/embeddings", Some(CLIENT_KEY), &body.to_string()).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    let v = a.json();
    assert_eq!(v["data"].as_array().unwrap().len(), 2);
    assert_eq!(v["data"][1]["embedding"].as_array().unwrap().len(), 8);
    assert_eq!(v["model"], "text-embedding-3-small");
    assert_eq!(v["usage"]["total_tokens"], 2);
    let r = &m.stats.received()[0];
    assert_eq!(r.path, "/openai/deployments/embed-prod/embeddings");
    assert_eq!(r.query.as_deref(), Some("api-version=2024-10-21"));
    assert_eq!(r.headers["api-key"], UPSTREAM_KEY);
    assert_eq!(r.body, body);

    // Chat on an embeddings deployment: Azure's 400, in OpenAI's shape.
    let a = relay.chat(&chat_body("text-embedding-3-small", "hi", false)).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST, "{}", a.text());
    let (message, code) = a.openai_error();
    assert!(message.starts_with("The chatCompletion operation does not work with the specified model"), "{message}");
    assert_eq!(code, "OperationNotSupported");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deployment_fallbacks_api_version_and_not_found() {
    let m = mock().await;
    let channels = [
        // `deployment` for every model of the channel; the API version defaults.
        azure_channel("shared", &m, &["gpt-4o-mini"], r#"deployment = "dep-gpt-4o-mini""#, ""),
        // No deployment setting: the model name is the deployment name.
        azure_channel("by-name", &m, &["dep-o3", "gpt-missing"], "", ""),
        azure_channel("old", &m, &["gpt-old"], r#"deployment = "gpt-4o-prod", api_version = "2023-03-15""#, ""),
    ]
    .concat();
    let relay = relay(&channels).await;

    let a = relay.chat(&chat_body("gpt-4o-mini", "hi", false)).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    assert_eq!(a.json()["model"], "gpt-4o-mini");
    let a = relay.chat(&chat_body("dep-o3", "hi", false)).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    assert_eq!(a.json()["model"], "o3");

    let a = relay.chat(&chat_body("gpt-missing", "hi", false)).await;
    assert_eq!(a.status, StatusCode::NOT_FOUND, "{}", a.text());
    let (message, code) = a.openai_error();
    assert!(message.starts_with("The API deployment for this resource does not exist."), "{message}");
    assert_eq!(code, "DeploymentNotFound");
    assert_eq!(a.json()["error"]["type"], "invalid_request_error");

    let a = relay.chat(&chat_body("gpt-old", "hi", false)).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST, "{}", a.text());
    assert_eq!(a.openai_error(), ("API version not supported".to_string(), json!("BadRequest")));

    let got: Vec<(String, Option<String>)> = m.stats.received().into_iter().map(|r| (r.path, r.query)).collect();
    let v = |s: &str| Some(format!("api-version={s}"));
    assert_eq!(
        got,
        [
            ("/openai/deployments/dep-gpt-4o-mini/chat/completions".to_string(), v("2024-10-21")),
            ("/openai/deployments/dep-o3/chat/completions".to_string(), v("2024-10-21")),
            ("/openai/deployments/gpt-missing/chat/completions".to_string(), v("2024-10-21")),
            ("/openai/deployments/gpt-4o-prod/chat/completions".to_string(), v("2023-03-15")),
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vendor_errors_keep_status_and_message() {
    let m = mock().await;
    let deploy = r#""deployment.gpt-4o" = "gpt-4o-prod""#;
    let fault = |f: &str| format!("headers = {{ \"x-mock-fault\" = \"{f}\" }}");
    let channels = [
        azure_channel("main", &m, &["gpt-4o"], SETTINGS, ""),
        azure_channel(
            "limited",
            &m,
            &["limited"],
            r#"deployment = "gpt-4o-prod""#,
            r#"headers = { "x-mock-status" = "429" }"#,
        ),
        azure_channel(
            "filtered-prompt",
            &m,
            &["filter-prompt"],
            r#"deployment = "gpt-4o-prod""#,
            &fault("filter-prompt"),
        ),
        azure_channel("filtered", &m, &["filter-out"], r#"deployment = "gpt-4o-prod""#, &fault("filter-completion")),
        azure_channel("html", &m, &["html"], r#"deployment = "gpt-4o-prod""#, &fault("not-json")),
    ]
    .concat();
    // One channel with a wrong key.
    let bad_key = azure_channel("bad-key", &m, &["bad-key"], deploy, "").replace(UPSTREAM_KEY, "wrong-key");
    let relay = relay(&format!("{channels}{bad_key}")).await;

    let a = relay.chat(&chat_body("bad-key", "hi", false)).await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED, "{}", a.text());
    let (message, code) = a.openai_error();
    assert!(message.starts_with("Access denied due to invalid subscription key or wrong API endpoint."), "{message}");
    assert_eq!((code, &a.json()["error"]["type"]), (json!("401"), &json!("authentication_error")));
    assert_eq!(m.stats.received().last().unwrap().headers["api-key"], "wrong-key");

    let a = relay.chat(&chat_body("limited", "hi", false)).await;
    assert_eq!(a.status, StatusCode::TOO_MANY_REQUESTS, "{}", a.text());
    let (message, code) = a.openai_error();
    assert!(
        message.starts_with(
            "Requests to the ChatCompletions_Create Operation under Azure OpenAI API version 2024-10-21 have exceeded"
        ),
        "{message}"
    );
    assert_eq!((code, &a.json()["error"]["type"]), (json!("429"), &json!("rate_limit_error")));
    assert_eq!(a.headers["retry-after"], "7");

    // Azure's content filter on the prompt: its 400, message, code and verdicts kept.
    let a = relay.chat(&chat_body("filter-prompt", "hi", false)).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST, "{}", a.text());
    let (message, code) = a.openai_error();
    assert!(message.starts_with("The response was filtered due to the prompt triggering"), "{message}");
    assert_eq!(code, "content_filter");
    let e = a.json()["error"].clone();
    assert_eq!((e["type"].as_str(), e["param"].as_str()), (Some("invalid_request_error"), Some("prompt")));
    assert_eq!(e["innererror"]["content_filter_result"]["violence"]["filtered"], true);

    // ... and on the completion: the finish reason passes through, streamed or not.
    let a = relay.chat(&chat_body("filter-out", "hi", false)).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    assert_eq!(a.json()["choices"][0]["finish_reason"], "content_filter");
    assert_eq!(a.json()["choices"][0]["message"]["content"], "Hello from");
    let a = relay.chat(&chat_body("filter-out", "hi", true)).await;
    let events = a.sse_data();
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"), "{}", a.text());
    let chunks = chunks(&events);
    assert_eq!(chunks.last().unwrap()["choices"][0]["finish_reason"], "content_filter");
    assert_eq!(joined_content(&events), "Hello from");

    // A vendor error on a stream request is answered as an error, not a stream.
    let a = relay.chat(&chat_body("limited", "hi", true)).await;
    assert_eq!(a.status, StatusCode::TOO_MANY_REQUESTS);
    a.openai_error();

    let a = relay.chat(&chat_body("html", "hi", false)).await;
    assert_eq!(a.status, StatusCode::BAD_GATEWAY, "{}", a.text());
    let (message, _) = a.openai_error();
    assert!(message.contains("not JSON"), "{message}");

    // The main channel still works: nothing above was a mapping error.
    assert_eq!(relay.chat(&chat_body("gpt-4o", "hi", false)).await.status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_parameters_come_back_named() {
    let m = mock().await;
    let relay = main_relay(&m).await;
    let mut body = chat_body("gpt-4o", "hi", false);
    body["frobnicate"] = json!(true);
    let a = relay.chat(&body).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST, "{}", a.text());
    let (message, _) = a.openai_error();
    assert_eq!(message, "Unrecognized request argument supplied: frobnicate");
    assert_eq!(a.json()["error"]["type"], "invalid_request_error");
    assert_eq!(m.stats.received()[0].body["frobnicate"], true, "passed through for Azure to judge");

    let bad_role = json!({"model": "gpt-4o", "messages": [{"role": "robot", "content": "hi"}]});
    let a = relay.chat(&bad_role).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST, "{}", a.text());
    assert!(a.openai_error().0.starts_with("Invalid value: 'robot'"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_cut_before_done_is_an_error_event() {
    let m = mock().await;
    let deploy = r#"deployment = "gpt-4o-prod""#;
    let channels = [
        azure_channel("no-done", &m, &["no-done"], deploy, r#"headers = { "x-mock-fault" = "no-done" }"#),
        // Ends the stream at the unreadable event (by default it is skipped: tests/stream_end.rs).
        azure_channel(
            "garbage",
            &m,
            &["garbage"],
            deploy,
            "malformed_events = \"fail\"\nheaders = { \"x-mock-fault\" = \"garbage-chunk\" }",
        ),
    ]
    .concat();
    let relay = relay(&channels).await;

    let a = relay.chat(&chat_body("no-done", "cut me", true)).await;
    assert_eq!(a.status, StatusCode::OK);
    let events = a.sse_data();
    assert!(!events.iter().any(|e| e == "[DONE]"), "{}", a.text());
    assert_eq!(joined_content(&events), format!("{REPLY}cut me"), "the content before the cut arrives");
    let last: Value = serde_json::from_str(events.last().unwrap()).unwrap();
    assert!(last["error"]["message"].as_str().unwrap().contains("ended before [DONE]"), "{last}");

    let a = relay.chat(&chat_body("garbage", "hi", true)).await;
    let events = a.sse_data();
    assert!(!events.iter().any(|e| e == "[DONE]"), "{}", a.text());
    let last: Value = serde_json::from_str(events.last().unwrap()).unwrap();
    assert!(last["error"]["message"].as_str().unwrap().contains("not JSON"), "{last}");
}
