//! The Anthropic adapter end to end: the real relay binary, the real anthropic.wasm, and a
//! mock that validates requests as Anthropic's Messages API does, so a mapping bug fails
//! here as it would against the vendor.

use bytes::Bytes;
use demo_upstream::Vendor;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use relay_tests::*;
use serde_json::{Value, json};

const MODEL: &str = "claude-demo";

async fn mock() -> Mock {
    Mock::start(Options { vendor: Vendor::Anthropic, ..Default::default() }).await.expect("mock starts")
}

/// A `[[channel]]` for the anthropic adapter serving `model`, with extra lines
/// (`headers = {...}`, `settings = {...}`).
fn channel(mock: &Mock, model: &str, api_key: &str, extra: &str) -> String {
    format!(
        "[[channel]]\nname = \"{model}\"\nadapter = \"anthropic\"\nbase_url = \"{}\"\napi_key = \"{api_key}\"\nmodels = [\"{model}\"]\n{extra}\n",
        mock.root_url()
    )
}

async fn relay(channels: &str) -> TestRelay {
    let config = format!("{channels}{}", token_block(CLIENT_KEY, "*"));
    TestRelay::start(Setup { config: &config, adapters: &["anthropic"], env: &[] }).await
}

async fn one_channel(mock: &Mock, extra: &str) -> TestRelay {
    relay(&channel(mock, MODEL, UPSTREAM_KEY, extra)).await
}

fn chunks(a: &Answer) -> Vec<Value> {
    a.sse_data().iter().filter(|d| *d != "[DONE]").map(|d| serde_json::from_str(d).expect("chunk JSON")).collect()
}

fn weather_tools() -> Value {
    json!([
        {"type": "function", "function": {"name": "get_weather", "description": "Weather by city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}},
        {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object", "properties": {}}}}
    ])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_stream_request_and_answer_are_mapped() {
    let m = mock().await;
    let relay = one_channel(&m, "").await;
    let body = json!({"model": MODEL, "temperature": 0.5, "top_p": 0.9, "stop": ["END"], "user": "user-42",
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "developer", "content": "answer in English"},
            {"role": "user", "content": "Hello there"},
            {"role": "user", "content": [
                {"type": "text", "text": "look at these"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
                {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}}]}]});
    let a = relay.chat(&body).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    let v = a.json();
    assert_eq!(v["object"], "chat.completion");
    assert!(v["id"].as_str().unwrap().starts_with("msg_"), "{v}");
    assert_eq!(v["model"], MODEL);
    let choice = &v["choices"][0];
    assert_eq!(choice["message"]["role"], "assistant");
    assert_eq!(choice["message"]["content"], "Hello from the demo upstream! You said: Hello there look at these");
    assert_eq!(choice["finish_reason"], "stop");
    assert_eq!(v["usage"]["prompt_tokens"], 5);
    assert_eq!(v["usage"]["completion_tokens"], 12);
    assert_eq!(v["usage"]["total_tokens"], 17);

    // What the vendor got: its key in x-api-key and no bearer header, the version header,
    // and the body in Anthropic's shape (system on top, the two user turns merged).
    let got = m.stats.received();
    assert_eq!(got.len(), 1);
    let r = &got[0];
    assert_eq!((r.method.as_str(), r.path.as_str(), r.query.as_deref()), ("POST", "/v1/messages", None));
    assert_eq!(r.headers["x-api-key"], UPSTREAM_KEY);
    assert!(r.headers.get("authorization").is_none(), "{:?}", r.headers);
    assert_eq!(r.headers["anthropic-version"], "2023-06-01");
    assert_eq!(
        r.body,
        json!({"model": MODEL, "max_tokens": 4096, "system": "be brief\n\nanswer in English",
            "messages": [{"role": "user", "content": [
                {"type": "text", "text": "Hello there"},
                {"type": "text", "text": "look at these"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
                {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}}]}],
            "temperature": 0.5, "top_p": 0.9, "stop_sequences": ["END"], "metadata": {"user_id": "user-42"}})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channel_settings_and_max_tokens() {
    let m = mock().await;
    let relay = one_channel(&m, "settings = { max_tokens = 64, anthropic_version = \"2023-01-01\" }").await;
    let a = relay.chat(&chat_body(MODEL, "hi", false)).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    let got = m.stats.received();
    assert_eq!(got[0].headers["anthropic-version"], "2023-01-01");
    assert_eq!(got[0].body["max_tokens"], 64);

    // The client's own limit wins, and running into it is finish_reason "length".
    let mut body = chat_body(MODEL, "a long question", false);
    body["max_completion_tokens"] = json!(3);
    let a = relay.chat(&body).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    let v = a.json();
    assert_eq!(v["choices"][0]["message"]["content"], "Hello from the");
    assert_eq!(v["choices"][0]["finish_reason"], "length");
    assert_eq!(m.stats.received()[1].body["max_tokens"], 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_is_mapped_to_openai_chunks() {
    let m = mock().await;
    let relay = one_channel(&m, "").await;
    let a = relay.chat(&chat_body(MODEL, "Stream me", true)).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    assert_eq!(a.headers["content-type"], "text/event-stream");
    let data = a.sse_data();
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"), "{}", a.text());
    assert_eq!(joined_content(&data), "Hello from the demo upstream! You said: Stream me");
    let c = chunks(&a);
    assert_eq!(c[0]["choices"][0]["delta"]["role"], "assistant");
    let id = c[0]["id"].as_str().unwrap();
    assert!(id.starts_with("msg_"));
    assert!(c.iter().all(|c| c["id"] == id && c["object"] == "chat.completion.chunk" && c["model"] == MODEL));
    let last = c.last().unwrap();
    assert_eq!(last["choices"][0]["finish_reason"], "stop");
    assert!(c[..c.len() - 1].iter().all(|c| c["choices"][0]["finish_reason"].is_null()));
    assert!(c.iter().all(|c| c.get("usage").is_none()), "no usage unless asked: {}", a.text());
    let got = m.stats.received();
    assert_eq!(got[0].body["stream"], true);
    assert!(got[0].body.get("stream_options").is_none());

    // With include_usage: "usage": null on every chunk, then one usage chunk before [DONE].
    let mut body = chat_body(MODEL, "Count me", true);
    body["stream_options"] = json!({"include_usage": true});
    let a = relay.chat(&body).await;
    let data = a.sse_data();
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"), "{}", a.text());
    let c = chunks(&a);
    let (usage, rest) = c.split_last().unwrap();
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(usage["usage"]["prompt_tokens"], 2);
    assert_eq!(usage["usage"]["completion_tokens"], 9);
    assert_eq!(usage["usage"]["total_tokens"], 11);
    assert!(rest.iter().all(|c| c.get("usage") == Some(&Value::Null)), "{}", a.text());
    assert_eq!(rest.last().unwrap()["choices"][0]["finish_reason"], "stop");
    let metrics = relay
        .expect_metrics("the stream gauge back to 0", std::time::Duration::from_secs(5), |m| {
            m.gauge("relay_active_streams") == 0.0
        })
        .await;
    assert_eq!(metrics.value("relay_tokens_total", &[("kind", "completion")]), 18.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tool_call_round_trip_non_stream() {
    let m = mock().await;
    let relay = one_channel(&m, "").await;
    let mut messages = vec![json!({"role": "user", "content": "Weather in Paris?"})];
    let body = json!({"model": MODEL, "messages": messages, "tools": weather_tools(), "tool_choice": "auto",
        "parallel_tool_calls": false});
    let a = relay.chat(&body).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    let v = a.json();
    let msg = &v["choices"][0]["message"];
    assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(msg["content"], "I'll call get_weather.");
    let call = &msg["tool_calls"][0];
    assert!(call["id"].as_str().unwrap().starts_with("toolu_"));
    assert_eq!((call["type"].as_str(), call["function"]["name"].as_str()), (Some("function"), Some("get_weather")));
    let args: Value = serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(args, json!({"query": "Weather in Paris?"}));
    let sent = &m.stats.received()[0].body;
    assert_eq!(
        sent["tools"],
        json!([
            {"name": "get_weather", "description": "Weather by city", "input_schema":
                {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}},
            {"name": "lookup", "input_schema": {"type": "object", "properties": {}}}])
    );
    assert_eq!(sent["tool_choice"], json!({"type": "auto", "disable_parallel_tool_use": true}));

    // The client runs the tool and sends the result back; the mock checks the pairing.
    messages.push(msg.clone());
    messages.push(json!({"role": "tool", "tool_call_id": call["id"], "content": "sunny, 21C"}));
    let a = relay.chat(&json!({"model": MODEL, "messages": messages, "tools": weather_tools()})).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    let v = a.json();
    assert_eq!(v["choices"][0]["message"]["content"], "Hello from the demo upstream! The tool said: sunny, 21C");
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    let sent = &m.stats.received()[1].body;
    assert_eq!(
        sent["messages"][1],
        json!({"role": "assistant", "content": [
            {"type": "text", "text": "I'll call get_weather."},
            {"type": "tool_use", "id": call["id"], "name": "get_weather", "input": {"query": "Weather in Paris?"}}]})
    );
    assert_eq!(
        sent["messages"][2],
        json!({"role": "user", "content": [{"type": "tool_result", "tool_use_id": call["id"], "content": "sunny, 21C"}]})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tool_call_stream() {
    let m = mock().await;
    let relay = one_channel(&m, "").await;
    let body = json!({"model": MODEL, "stream": true, "messages": [{"role": "user", "content": "Find cats"}],
        "tools": weather_tools(), "tool_choice": {"type": "function", "function": {"name": "lookup"}}});
    let a = relay.chat(&body).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    assert_eq!(a.sse_data().last().map(String::as_str), Some("[DONE]"), "{}", a.text());
    assert_eq!(m.stats.received()[0].body["tool_choice"], json!({"type": "tool", "name": "lookup"}));
    let c = chunks(&a);
    assert_eq!(c[0]["choices"][0]["delta"]["role"], "assistant");
    assert_eq!(joined_content(&a.sse_data()), "I'll call lookup.");
    let calls: Vec<&Value> = c.iter().filter_map(|c| c["choices"][0]["delta"]["tool_calls"].get(0)).collect();
    assert!(calls.len() > 2, "the arguments arrive in pieces: {}", a.text());
    assert!(calls.iter().all(|t| t["index"] == 0));
    assert!(calls[0]["id"].as_str().unwrap().starts_with("toolu_"));
    assert_eq!(calls[0]["function"]["name"], "lookup");
    assert!(calls[1..].iter().all(|t| t.get("id").is_none()));
    let args: String = calls.iter().filter_map(|t| t["function"]["arguments"].as_str()).collect();
    assert_eq!(serde_json::from_str::<Value>(&args).unwrap(), json!({"query": "Find cats"}));
    assert_eq!(c.last().unwrap()["choices"][0]["finish_reason"], "tool_calls");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vendor_errors_keep_their_message() {
    let m = mock().await;
    let channels = [
        channel(&m, "bad-key", "sk-wrong", ""),
        channel(&m, "limited", UPSTREAM_KEY, "headers = { \"x-mock-status\" = \"429\" }"),
        channel(&m, "overloaded", UPSTREAM_KEY, "headers = { \"x-mock-status\" = \"529\" }"),
        channel(&m, "broken", UPSTREAM_KEY, "headers = { \"x-mock-status\" = \"500\" }"),
        channel(&m, "html", UPSTREAM_KEY, "headers = { \"x-mock-fault\" = \"not-json\" }"),
        channel(&m, "fine", UPSTREAM_KEY, ""),
    ]
    .concat();
    let relay = relay(&channels).await;
    let cases = [
        ("bad-key", StatusCode::UNAUTHORIZED, "authentication_error", "invalid x-api-key"),
        ("limited", StatusCode::TOO_MANY_REQUESTS, "rate_limit_error", "Mock vendor error 429"),
        ("overloaded", StatusCode::SERVICE_UNAVAILABLE, "overloaded_error", "Overloaded"),
        ("broken", StatusCode::INTERNAL_SERVER_ERROR, "api_error", "Mock vendor error 500"),
    ];
    for (model, status, kind, message) in cases {
        let a = relay.chat(&chat_body(model, "hi", false)).await;
        assert_eq!(a.status, status, "{model}: {}", a.text());
        let (msg, _) = a.openai_error();
        assert_eq!(msg, message, "{model}");
        assert_eq!(a.json()["error"]["type"], kind, "{model}");
    }
    let a = relay.chat(&chat_body("limited", "hi", false)).await;
    assert_eq!(a.headers["retry-after"], "7");
    // The vendor's own validation errors come back as they are.
    let a =
        relay.chat(&json!({"model": "fine", "temperature": 1.5, "messages": [{"role": "user", "content": "x"}]})).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST, "{}", a.text());
    assert_eq!(a.openai_error().0, "temperature: Input should be less than or equal to 1");
    assert_eq!(a.json()["error"]["type"], "invalid_request_error");
    // A 200 that is not a Message is the vendor's fault: 502.
    let a = relay.chat(&chat_body("html", "hi", false)).await;
    assert_eq!(a.status, StatusCode::BAD_GATEWAY, "{}", a.text());
    assert!(a.openai_error().0.contains("not an Anthropic message"), "{}", a.text());
    // The wrong key was really sent as x-api-key.
    assert_eq!(m.stats.received()[0].headers["x-api-key"], "sk-wrong");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fields_anthropic_cannot_honour_are_refused() {
    let m = mock().await;
    let relay = one_channel(&m, "").await;
    let user = json!([{"role": "user", "content": "hi"}]);
    let cases = [
        (json!({"model": MODEL, "messages": user, "logit_bias": {"50256": -100}}), "logit_bias"),
        (json!({"model": MODEL, "messages": user, "n": 2}), "'n'"),
        (json!({"model": MODEL, "messages": user, "seed": 7}), "seed"),
        (
            json!({"model": MODEL, "messages": user,
                "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {}}}}),
            "response_format",
        ),
        (
            json!({"model": MODEL, "messages": [
                {"role": "user", "content": "hi"},
                {"role": "assistant", "tool_calls": [{"id": "call_bad", "type": "function",
                    "function": {"name": "f", "arguments": "{not json"}}]},
                {"role": "tool", "tool_call_id": "call_bad", "content": "x"}]}),
            "call_bad",
        ),
    ];
    for (body, needle) in cases {
        let a = relay.chat(&body).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{needle}: {}", a.text());
        let (msg, _) = a.openai_error();
        assert!(msg.contains(needle), "{needle}: {msg}");
    }
    assert!(m.stats.received().is_empty(), "nothing refused may reach the vendor");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_streams_end_with_an_error_event() {
    let m = mock().await;
    let channels = [
        channel(&m, "cut", UPSTREAM_KEY, "headers = { \"x-mock-fault\" = \"no-done\" }"),
        channel(&m, "overloaded", UPSTREAM_KEY, "headers = { \"x-mock-fault\" = \"overloaded-mid-stream\" }"),
        // Ends the stream at the unreadable event (by default it is skipped: tests/stream_end.rs).
        channel(
            &m,
            "garbage",
            UPSTREAM_KEY,
            "malformed_events = \"fail\"\nheaders = { \"x-mock-fault\" = \"garbage-chunk\" }",
        ),
    ]
    .concat();
    let relay = relay(&channels).await;
    for (model, needle) in [("cut", "message_stop"), ("overloaded", "Overloaded"), ("garbage", "not readable")] {
        let a = relay.chat(&chat_body(model, "hi", true)).await;
        assert_eq!(a.status, StatusCode::OK, "{model}");
        let data = a.sse_data();
        assert!(!data.iter().any(|d| d == "[DONE]"), "{model}: {}", a.text());
        let last: Value = serde_json::from_str(data.last().unwrap()).unwrap();
        let msg = last["error"]["message"].as_str().unwrap_or_default();
        assert!(msg.contains(needle), "{model}: {}", a.text());
        if model == "cut" {
            // Everything before the cut (before message_delta's stop_reason) was delivered.
            assert_eq!(joined_content(&data), "Hello from the demo upstream! You said: hi");
        }
    }
}

/// A request straight to the mock, as the relay would send it.
async fn raw(mock: &Mock, headers: &[(&str, &str)], body: Value) -> (StatusCode, Value) {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let mut b = Request::post(format!("{}/v1/messages", mock.root_url())).header("content-type", "application/json");
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let resp = client.request(b.body(Full::new(Bytes::from(body.to_string()))).unwrap()).await.expect("mock answers");
    let status = resp.status();
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    (status, serde_json::from_slice(&bytes).expect("JSON"))
}

/// The mock refuses what Anthropic refuses, in Anthropic's error shape; that is what makes
/// the tests above able to catch a mapping bug.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mock_refuses_what_anthropic_refuses() {
    let m = mock().await;
    let good = [("x-api-key", UPSTREAM_KEY), ("anthropic-version", "2023-06-01")];
    let base = |messages: Value| json!({"model": MODEL, "max_tokens": 10, "messages": messages});
    let hi = json!([{"role": "user", "content": "hi"}]);
    let (status, v) = raw(&m, &good, base(hi.clone())).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!((v["type"].as_str(), v["stop_reason"].as_str()), (Some("message"), Some("end_turn")));

    let (status, v) = raw(&m, &good[1..], base(hi.clone())).await;
    assert_eq!((status, v["error"]["type"].as_str()), (StatusCode::UNAUTHORIZED, Some("authentication_error")));
    let (status, v) = raw(&m, &good[..1], base(hi.clone())).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("anthropic-version"));

    let mut extra = base(hi.clone());
    extra["n"] = json!(1);
    let mut no_max = base(hi.clone());
    no_max.as_object_mut().unwrap().remove("max_tokens");
    let cases = [
        (extra, "n: Extra inputs are not permitted"),
        (no_max, "max_tokens: Field required"),
        (base(json!([{"role": "system", "content": "s"}, {"role": "user", "content": "hi"}])), "Unexpected role"),
        (base(json!([{"role": "user", "content": "a"}, {"role": "user", "content": "b"}])), "must alternate"),
        (base(json!([{"role": "assistant", "content": "a"}])), "first message"),
        (base(json!([{"role": "user", "content": ""}])), "non-empty"),
        (
            base(
                json!([{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_x", "content": "r"}]}]),
            ),
            "unexpected `tool_use_id`",
        ),
        (
            base(json!([{"role": "user", "content": "a"},
                {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "f", "input": {}}]},
                {"role": "user", "content": "no result"}])),
            "without `tool_result`",
        ),
        (
            base(
                json!([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://x/y.png"}}]}]),
            ),
            "does not match",
        ),
        (
            base(json!([{"role": "user", "content": [{"type": "image",
                "source": {"type": "base64", "media_type": "image/bmp", "data": "AAAA"}}]}])),
            "media_type",
        ),
    ];
    for (body, needle) in cases {
        let (status, v) = raw(&m, &good, body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {v}");
        assert_eq!((v["type"].as_str(), v["error"]["type"].as_str()), (Some("error"), Some("invalid_request_error")));
        let msg = v["error"]["message"].as_str().unwrap();
        assert!(msg.contains(needle), "{needle}: {msg}");
    }
}
