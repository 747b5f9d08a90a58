//! The gemini adapter end to end: the real relay binary, the real gemini.wasm, and a mock
//! that speaks the Gemini API as Google does (key in `x-goog-api-key`, `contents` of
//! `user`/`model` turns, SSE events that are whole responses, Google's error shape).

use demo_upstream::Vendor;
use http::{Method, StatusCode};
use relay_tests::*;
use serde_json::{Value, json};

const MODEL: &str = "gemini-2.0-flash";
/// The reply to "Hello there" has 9 words, the mock's token count.
const REPLY_TOKENS: u64 = 9;

async fn mock() -> Mock {
    Mock::start(Options { vendor: Vendor::Gemini, ..Options::default() }).await.expect("mock starts")
}

fn gemini_channel(name: &str, base_url: &str, models: &[&str], key: &str, extra: &str) -> String {
    let models: Vec<String> = models.iter().map(|m| format!("\"{m}\"")).collect();
    format!(
        "[[channel]]\nname = \"{name}\"\nadapter = \"gemini\"\nbase_url = \"{base_url}\"\napi_key = \"{key}\"\nmodels = [{}]\n{extra}\n",
        models.join(", ")
    )
}

/// A relay whose channels all point at `mock`: `main` serves the good models, the others
/// each carry one fault, chosen by model name.
async fn relay(m: &Mock) -> TestRelay {
    let url = m.root_url();
    let faults = [
        ("limited", "gemini-429", "headers = { \"x-mock-status\" = \"429\" }"),
        ("overloaded", "gemini-503", "headers = { \"x-mock-status\" = \"503\" }"),
        ("broken", "gemini-500", "headers = { \"x-mock-status\" = \"500\" }"),
        ("denied", "gemini-403", "headers = { \"x-mock-status\" = \"403\" }"),
        ("html", "gemini-html", "headers = { \"x-mock-fault\" = \"not-json\" }"),
        ("cut", "gemini-cut", "headers = { \"x-mock-fault\" = \"no-done\" }"),
        // Ends the stream at the unreadable event (by default it is skipped: tests/stream_end.rs).
        (
            "garbage",
            "gemini-garbage",
            "malformed_events = \"fail\"\nheaders = { \"x-mock-fault\" = \"garbage-chunk\" }",
        ),
        ("v1", "gemini-1.5-pro", "settings = { api_version = \"v1\" }"),
    ];
    let models = [MODEL, "gemini-3-flash-preview", "gemini-embedding-001", "palm-2"];
    let mut config = gemini_channel("main", &url, &models, UPSTREAM_KEY, "");
    for (name, model, extra) in faults {
        config.push_str(&gemini_channel(name, &url, &[model], UPSTREAM_KEY, extra));
    }
    config.push_str(&gemini_channel("badkey", &url, &["gemini-badkey"], "AIza-wrong", ""));
    config.push_str(&token_block(CLIENT_KEY, "*"));
    TestRelay::start(Setup { config: &config, adapters: &["gemini"], env: &[] }).await
}

fn chunks(a: &Answer) -> Vec<Value> {
    a.sse_data().iter().filter(|d| *d != "[DONE]").map(|d| serde_json::from_str(d).expect("chunk is JSON")).collect()
}

fn weather_tool() -> Value {
    json!([{"type": "function", "function": {"name": "get_weather", "description": "Weather for a city",
        "parameters": {"$schema": "http://json-schema.org/draft-07/schema#", "type": "object",
            "properties": {"city": {"type": "string"}}, "required": ["city"], "additionalProperties": false},
        "strict": true}}])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_stream_chat_is_mapped_both_ways() {
    let m = mock().await;
    let relay = relay(&m).await;
    let body = json!({"model": MODEL, "temperature": 0.2, "top_p": 0.9, "max_tokens": 64, "stop": ["END"],
        "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "Hello there"}]});
    let a = relay.chat(&body).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    let v = a.json();
    assert_eq!(v["object"], "chat.completion");
    assert_eq!((v["id"].as_str(), v["model"].as_str()), (Some("demoGeminiResp0001"), Some(MODEL)));
    assert_eq!(v["choices"][0]["message"]["role"], "assistant");
    assert_eq!(v["choices"][0]["message"]["content"], "Hello from the demo upstream! You said: Hello there");
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert_eq!(v["usage"], json!({"prompt_tokens": 2, "completion_tokens": REPLY_TOKENS, "total_tokens": 11}));

    // What Gemini got: its key in x-goog-api-key (no bearer, no query key), the model in
    // the path, and the request in its own shape.
    let got = m.stats.received();
    assert_eq!(got.len(), 1);
    let r = &got[0];
    assert_eq!((r.method.as_str(), r.path.as_str()), ("POST", "/v1beta/models/gemini-2.0-flash:generateContent"));
    assert_eq!(r.query, None);
    assert_eq!(r.headers["x-goog-api-key"], UPSTREAM_KEY);
    assert!(r.headers.get("authorization").is_none());
    assert_eq!(
        r.body,
        json!({
            "contents": [{"role": "user", "parts": [{"text": "Hello there"}]}],
            "systemInstruction": {"parts": [{"text": "be brief"}]},
            "generationConfig": {"maxOutputTokens": 64, "temperature": 0.2, "topP": 0.9, "stopSequences": ["END"]},
        })
    );
    let metrics = relay.metrics().await;
    assert_eq!(metrics.value("relay_tokens_total", &[("kind", "completion")]), REPLY_TOKENS as f64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_becomes_openai_chunks() {
    let m = mock().await;
    let relay = relay(&m).await;
    let a = relay.chat(&chat_body(MODEL, "Stream me", true)).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    assert_eq!(a.headers["content-type"], "text/event-stream");
    let events = a.sse_data();
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"), "{}", a.text());
    assert_eq!(joined_content(&events), "Hello from the demo upstream! You said: Stream me");
    let c = chunks(&a);
    assert_eq!(c[0]["choices"][0]["delta"]["role"], "assistant");
    assert!(c.iter().all(|c| c["object"] == "chat.completion.chunk" && c["id"] == "demoGeminiResp0001"));
    let last = c.last().unwrap();
    assert_eq!(last["choices"][0]["finish_reason"], "stop");
    assert!(c[..c.len() - 1].iter().all(|c| c["choices"][0]["finish_reason"].is_null()));
    assert!(c.iter().all(|c| c.get("usage").is_none()), "no usage unless asked: {}", a.text());

    let r = &m.stats.received()[0];
    assert_eq!(r.path, "/v1beta/models/gemini-2.0-flash:streamGenerateContent");
    assert_eq!(r.query.as_deref(), Some("alt=sse"));
    assert_eq!(r.headers["x-goog-api-key"], UPSTREAM_KEY);
    assert_eq!(r.body, json!({"contents": [{"role": "user", "parts": [{"text": "Stream me"}]}]}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_with_include_usage_ends_with_the_usage_chunk() {
    let m = mock().await;
    let relay = relay(&m).await;
    let mut body = chat_body(MODEL, "Hello there", true);
    body["stream_options"] = json!({"include_usage": true});
    let a = relay.chat(&body).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    assert_eq!(a.sse_data().last().map(String::as_str), Some("[DONE]"));
    let c = chunks(&a);
    let (usage, rest) = c.split_last().unwrap();
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(usage["usage"], json!({"prompt_tokens": 2, "completion_tokens": REPLY_TOKENS, "total_tokens": 11}));
    assert!(rest.iter().all(|c| c.get("usage").is_some_and(Value::is_null)), "usage: null before the last");
    assert_eq!(rest.last().unwrap()["choices"][0]["finish_reason"], "stop");
    // stream_options is the relay's business: Gemini has no such field and was not sent one.
    assert_eq!(m.stats.received()[0].body.as_object().unwrap().keys().collect::<Vec<_>>(), ["contents"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tool_calls_and_results_round_trip() {
    let m = mock().await;
    let relay = relay(&m).await;
    let ask = json!({"model": MODEL, "tools": weather_tool(), "tool_choice": "auto",
        "messages": [{"role": "user", "content": "Paris"}]});
    let a = relay.chat(&ask).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    let v = a.json();
    let msg = &v["choices"][0]["message"];
    assert!(msg["content"].is_null(), "{v}");
    assert_eq!(
        msg["tool_calls"],
        json!([{"id": "call_0", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}])
    );
    assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");
    // The schema reached Gemini without the fields it refuses (the mock refuses them too).
    let sent = &m.stats.received()[0].body;
    assert_eq!(
        sent["tools"],
        json!([{"functionDeclarations": [{"name": "get_weather", "description": "Weather for a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}]}])
    );
    assert_eq!(sent["toolConfig"], json!({"functionCallingConfig": {"mode": "AUTO"}}));

    // The client runs the tool and sends the result back under the call's id.
    let answer = json!({"model": MODEL, "tools": weather_tool(), "messages": [
        {"role": "user", "content": "Paris"},
        msg,
        {"role": "tool", "tool_call_id": "call_0", "content": "{\"temp\":21}"}]});
    let a = relay.chat(&answer).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    let v = a.json();
    assert_eq!(
        v["choices"][0]["message"]["content"],
        "Hello from the demo upstream! The function get_weather returned: {\"temp\":21}"
    );
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    let sent = &m.stats.received()[1].body;
    assert_eq!(
        sent["contents"][1],
        json!({"role": "model", "parts": [{"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}}]})
    );
    assert_eq!(
        sent["contents"][2],
        json!({"role": "user", "parts": [{"functionResponse": {"name": "get_weather", "response": {"temp": 21}}}]})
    );

    // A named tool_choice becomes ANY with that one function allowed.
    let mut named = ask.clone();
    named["tool_choice"] = json!({"type": "function", "function": {"name": "get_weather"}});
    assert_eq!(relay.chat(&named).await.status, StatusCode::OK);
    assert_eq!(
        m.stats.received()[2].body["toolConfig"],
        json!({"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["get_weather"]}})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tool_calls_stream_as_deltas() {
    let m = mock().await;
    let relay = relay(&m).await;
    let body = json!({"model": MODEL, "stream": true, "stream_options": {"include_usage": true},
        "tools": weather_tool(), "messages": [{"role": "user", "content": "Rome"}]});
    let a = relay.chat(&body).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    assert_eq!(a.sse_data().last().map(String::as_str), Some("[DONE]"), "{}", a.text());
    let c = chunks(&a);
    assert_eq!(c[0]["choices"][0]["delta"]["role"], "assistant");
    let calls: Vec<&Value> = c.iter().filter_map(|c| c.pointer("/choices/0/delta/tool_calls/0")).collect();
    assert_eq!(calls.len(), 2, "{}", a.text());
    assert_eq!(
        calls[0],
        &json!({"index": 0, "id": "call_0", "type": "function", "function": {"name": "get_weather", "arguments": ""}})
    );
    assert_eq!(calls[1], &json!({"index": 0, "function": {"arguments": "{\"city\":\"Rome\"}"}}));
    assert_eq!(c[c.len() - 2]["choices"][0]["finish_reason"], "tool_calls");
    assert!(c.last().unwrap()["usage"]["total_tokens"].as_u64().unwrap() > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gemini_3_tool_history_passes_signature_validation() {
    let m = mock().await;
    let relay = relay(&m).await;
    let model = "gemini-3-flash-preview";
    let a = relay
        .chat(&json!({"model": model, "tools": weather_tool(), "messages": [{"role": "user", "content": "Oslo"}]}))
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    let msg = a.json()["choices"][0]["message"].clone();
    let a = relay
        .chat(&json!({"model": model, "tools": weather_tool(), "messages": [
            {"role": "user", "content": "Oslo"}, msg,
            {"role": "tool", "tool_call_id": "call_0", "content": "cold"}]}))
        .await;
    // Gemini 3 refuses a replayed call without a thought signature; the adapter sends
    // Google's documented stand-in, as the history cannot carry the real one.
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    assert!(a.json()["choices"][0]["message"]["content"].as_str().unwrap().contains("{\"content\":\"cold\"}"));
    let sent = &m.stats.received()[1].body;
    assert_eq!(sent["contents"][1]["parts"][0]["thoughtSignature"], "skip_thought_signature_validator");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vendor_errors_keep_status_and_message() {
    let m = mock().await;
    let relay = relay(&m).await;
    let cases = [
        ("gemini-badkey", StatusCode::UNAUTHORIZED, "authentication_error", "INVALID_ARGUMENT", "API key not valid."),
        ("gemini-429", StatusCode::TOO_MANY_REQUESTS, "rate_limit_error", "RESOURCE_EXHAUSTED", "Resource has been"),
        ("gemini-503", StatusCode::SERVICE_UNAVAILABLE, "overloaded_error", "UNAVAILABLE", "The model is overloaded."),
        ("gemini-500", StatusCode::INTERNAL_SERVER_ERROR, "api_error", "INTERNAL", "An internal error has occurred."),
        ("gemini-403", StatusCode::FORBIDDEN, "permission_error", "PERMISSION_DENIED", "does not have permission"),
        ("palm-2", StatusCode::NOT_FOUND, "invalid_request_error", "NOT_FOUND", "models/palm-2 is not found"),
    ];
    for (model, status, kind, code, message) in cases {
        for stream in [false, true] {
            let a = relay.chat(&chat_body(model, "hi", stream)).await;
            assert_eq!(a.status, status, "{model} stream={stream}: {}", a.text());
            let (msg, c) = a.openai_error();
            assert!(msg.contains(message), "{model}: {msg}");
            assert_eq!(c, code, "{model}");
            assert_eq!(a.json()["error"]["type"], kind, "{model}");
        }
    }
    // A field value Gemini refuses: its 400 and its own message come back.
    let mut body = chat_body(MODEL, "hi", false);
    body["temperature"] = json!(2.5);
    let a = relay.chat(&body).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST, "{}", a.text());
    let (msg, code) = a.openai_error();
    assert!(msg.contains("temperature must be in the range [0.0, 2.0]"), "{msg}");
    assert_eq!(code, "INVALID_ARGUMENT");
    // Not JSON at all: the adapter cannot read it (502).
    let a = relay.chat(&chat_body("gemini-html", "hi", false)).await;
    assert_eq!(a.status, StatusCode::BAD_GATEWAY, "{}", a.text());
    assert!(a.openai_error().0.contains("not a response"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fields_gemini_cannot_take_are_refused_by_name() {
    let m = mock().await;
    let relay = relay(&m).await;
    let user = json!([{"role": "user", "content": "hi"}]);
    let cases = [
        (json!({"model": MODEL, "messages": user, "logit_bias": {"50256": -100}}), "logit_bias"),
        (json!({"model": MODEL, "messages": user, "logprobs": true}), "logprobs"),
        (json!({"model": MODEL, "messages": user, "n": 2}), "'n'"),
        (
            json!({"model": MODEL, "messages": [{"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}]}]}),
            "messages[0].content[0]",
        ),
        (
            json!({"model": MODEL, "messages": [{"role": "user", "content": "x"},
                {"role": "tool", "tool_call_id": "call_9", "content": "1"}]}),
            "'call_9'",
        ),
    ];
    for (body, named) in cases {
        let a = relay.chat(&body).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{body}: {}", a.text());
        let (msg, _) = a.openai_error();
        assert!(msg.contains(named), "{named}: {msg}");
    }
    assert!(m.stats.received().is_empty(), "nothing reached the vendor");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_stream_ends_with_an_error_event() {
    let m = mock().await;
    let relay = relay(&m).await;
    for model in ["gemini-cut", "gemini-garbage"] {
        let a = relay.chat(&chat_body(model, "Hello there", true)).await;
        assert_eq!(a.status, StatusCode::OK, "the stream had begun");
        let events = a.sse_data();
        assert!(!events.iter().any(|e| e == "[DONE]"), "{model}: {}", a.text());
        let last: Value = serde_json::from_str(events.last().unwrap()).unwrap();
        let msg = last["error"]["message"].as_str().unwrap_or_default();
        assert!(msg.contains("adapter 'gemini'"), "{model}: {last}");
        if model == "gemini-cut" {
            assert!(msg.contains("finishReason"), "{msg}");
            assert_eq!(chunks(&a)[0]["choices"][0]["delta"]["role"], "assistant", "chunks came before the cut");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_version_images_and_length() {
    let m = mock().await;
    let relay = relay(&m).await;
    let body = json!({"model": "gemini-1.5-pro", "max_completion_tokens": 3, "messages": [{"role": "user", "content": [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}]}]});
    let a = relay.chat(&body).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    let v = a.json();
    assert_eq!(v["choices"][0]["message"]["content"], "Hello from the");
    assert_eq!(v["choices"][0]["finish_reason"], "length");
    let r = &m.stats.received()[0];
    assert_eq!(r.path, "/v1/models/gemini-1.5-pro:generateContent", "the channel's api_version");
    assert_eq!(
        r.body["contents"][0]["parts"],
        json!([{"text": "What is this?"}, {"inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgo="}}])
    );
    assert_eq!(r.body["generationConfig"], json!({"maxOutputTokens": 3}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embeddings_go_through_batch_embed_contents() {
    async fn embed(relay: &TestRelay, body: Value) -> Answer {
        relay.request(Method::POST, "/v1/embeddings", Some(CLIENT_KEY), &body.to_string()).await
    }
    let m = mock().await;
    let relay = relay(&m).await;
    let a = embed(&relay, json!({"model": "gemini-embedding-001", "input": ["a cat", "a dog"], "dimensions": 4})).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    let v = a.json();
    assert_eq!((v["object"].as_str(), v["model"].as_str()), (Some("list"), Some("gemini-embedding-001")));
    let data = v["data"].as_array().unwrap();
    assert_eq!(data.len(), 2);
    assert_eq!((data[1]["object"].as_str(), data[1]["index"].as_u64()), (Some("embedding"), Some(1)));
    assert_eq!(data[0]["embedding"].as_array().unwrap().len(), 4);
    assert_ne!(data[0]["embedding"], data[1]["embedding"], "one vector per input, in order");
    let r = &m.stats.received()[0];
    assert_eq!(r.path, "/v1beta/models/gemini-embedding-001:batchEmbedContents");
    assert_eq!(r.headers["x-goog-api-key"], UPSTREAM_KEY);
    assert_eq!(
        r.body["requests"][0],
        json!({"model": "models/gemini-embedding-001", "content": {"parts": [{"text": "a cat"}]}, "outputDimensionality": 4})
    );
    let a = embed(&relay, json!({"model": "gemini-embedding-001", "input": "x", "encoding_format": "base64"})).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST, "{}", a.text());
    assert!(a.openai_error().0.contains("encoding_format"));
    // A chat model asked for embeddings: Gemini's 404, kept.
    let a = embed(&relay, json!({"model": MODEL, "input": "x"})).await;
    assert_eq!(a.status, StatusCode::NOT_FOUND, "{}", a.text());
    assert_eq!(a.openai_error().1, "NOT_FOUND");
}
