//! The OpenAI-compatible API end to end: real relay binary, real openai.wasm, a mock
//! vendor that validates what it receives.

use std::time::{Duration, Instant};

use http::{Method, StatusCode};
use relay_tests::*;
use serde_json::{Value, json};

async fn mock() -> Mock {
    Mock::start(Options::default()).await.expect("mock starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_stream_completion_through_the_adapter() {
    let m = mock().await;
    let relay =
        TestRelay::openai(&channel("main", &m.base_url(), "demo-gpt", "headers = { \"x-team\" = \"a\" }")).await;
    let body = json!({"model": "demo-gpt", "temperature": 0.2, "messages": [
        {"role": "system", "content": "be brief"}, {"role": "user", "content": "Hello there"}]});
    let a = relay.chat(&body).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    let v = a.json();
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["choices"][0]["message"]["content"], "Hello from the demo upstream! You said: Hello there");
    assert_eq!(v["usage"]["completion_tokens"], 9);
    assert_eq!(v["usage"]["total_tokens"], v["usage"]["prompt_tokens"].as_u64().unwrap() + 9);
    assert!(a.headers.get("x-request-id").is_some());

    // What the vendor got: its own key (never the client's), the body unchanged, the
    // channel's header, at the path under the channel's base_url.
    let got = m.stats.received();
    assert_eq!(got.len(), 1);
    let r = &got[0];
    assert_eq!((r.method.as_str(), r.path.as_str()), ("POST", "/v1/chat/completions"));
    assert_eq!(r.headers["authorization"], format!("Bearer {UPSTREAM_KEY}"));
    assert_eq!(r.headers["x-team"], "a");
    assert_eq!(r.body, body);

    // The access log line names the request and never a key.
    let logs = relay.wait_log("status=200").await;
    assert!(logs.contains("token=test") && logs.contains("channel=\"main\"") && logs.contains("status=200"), "{logs}");
    assert!(!logs.contains(UPSTREAM_KEY) && !logs.contains(CLIENT_KEY), "a key reached the log:\n{logs}");
    let metrics = relay.metrics().await;
    assert_eq!(metrics.value("relay_requests_total", &[("channel", "main"), ("status", "200")]), 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streaming_completion_ends_with_done_and_usage() {
    let m = mock().await;
    let relay = TestRelay::openai(&channel("main", &m.base_url(), "demo-gpt", "")).await;
    let mut body = chat_body("demo-gpt", "Stream me", true);
    body["stream_options"] = json!({"include_usage": true});
    let a = relay.chat(&body).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.headers["content-type"], "text/event-stream");
    let events = a.sse_data();
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"), "{}", a.text());
    assert_eq!(joined_content(&events), "Hello from the demo upstream! You said: Stream me");
    let first: Value = serde_json::from_str(&events[0]).unwrap();
    assert_eq!(first["choices"][0]["delta"]["role"], "assistant");
    let usage: Value = serde_json::from_str(&events[events.len() - 2]).unwrap();
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(usage["usage"]["completion_tokens"], 9);
    assert_eq!(m.stats.received()[0].body["stream_options"]["include_usage"], true);

    // Without include_usage there is no usage chunk, as with OpenAI.
    let a = relay.chat(&chat_body("demo-gpt", "again", true)).await;
    let events = a.sse_data();
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    assert!(events.iter().all(|e| !e.contains("\"usage\":{")), "{}", a.text());
    let metrics = relay.wait_metrics(Duration::from_secs(5), |m| m.gauge("relay_active_streams") == 0.0).await;
    assert_eq!(metrics.gauge("relay_active_streams"), 0.0);
    assert_eq!(metrics.value("relay_tokens_total", &[("kind", "completion")]), 9.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embeddings_and_models() {
    let m = mock().await;
    let config = format!(
        "{}{}{}",
        channel("main", &m.base_url(), "demo-gpt, demo-embedding", ""),
        channel("other", &m.base_url(), "secret-model", ""),
        token_block(CLIENT_KEY, "demo-gpt, demo-embedding"),
    );
    let relay = TestRelay::start(Setup { config: &config, adapters: &["openai"], env: &[] }).await;

    let a = relay
        .request(Method::POST, "/v1/embeddings", Some(CLIENT_KEY), r#"{"model":"demo-embedding","input":["a","b"]}"#)
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    let v = a.json();
    assert_eq!(v["data"].as_array().unwrap().len(), 2);
    assert_eq!(v["data"][1]["embedding"].as_array().unwrap().len(), 8);
    assert_eq!(m.stats.received()[0].path, "/v1/embeddings");

    let a = relay.request(Method::GET, "/v1/models", Some(CLIENT_KEY), "").await;
    assert_eq!(a.status, StatusCode::OK);
    let ids: Vec<String> =
        a.json()["data"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap().to_string()).collect();
    assert_eq!(ids, ["demo-embedding", "demo-gpt"], "only the token's models are listed");
    let a = relay.request(Method::GET, "/v1/models/demo-gpt", Some(CLIENT_KEY), "").await;
    assert_eq!(a.json()["id"], "demo-gpt");
    let a = relay.request(Method::GET, "/v1/models/secret-model", Some(CLIENT_KEY), "").await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);

    let a = relay.request(Method::GET, "/healthz", None, "").await;
    assert_eq!(a.status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_errors_are_openai_shaped() {
    let m = mock().await;
    let config = format!(
        "[limits]\nmax_request_body = 2048\n{}{}{}",
        channel("main", &m.base_url(), "demo-gpt", ""),
        channel("other", &m.base_url(), "premium", ""),
        token_block(CLIENT_KEY, "demo-gpt"),
    );
    let relay = TestRelay::start(Setup { config: &config, adapters: &["openai"], env: &[] }).await;
    let ok = chat_body("demo-gpt", "hi", false).to_string();
    let chat = "/v1/chat/completions";

    // (what, client key, body, expected status, expected error code)
    type Case<'a> = (&'a str, Option<&'a str>, String, StatusCode, Option<&'a str>);
    let cases: Vec<Case> = vec![
        ("no key", None, ok.clone(), StatusCode::UNAUTHORIZED, Some("invalid_api_key")),
        ("wrong key", Some("sk-nope"), ok.clone(), StatusCode::UNAUTHORIZED, Some("invalid_api_key")),
        (
            "model not allowed",
            Some(CLIENT_KEY),
            chat_body("premium", "hi", false).to_string(),
            StatusCode::FORBIDDEN,
            Some("model_not_allowed"),
        ),
        ("malformed JSON", Some(CLIENT_KEY), "{\"model\": ".into(), StatusCode::BAD_REQUEST, None),
        (
            "missing model",
            Some(CLIENT_KEY),
            r#"{"messages":[{"role":"user","content":"x"}]}"#.into(),
            StatusCode::BAD_REQUEST,
            None,
        ),
        ("missing messages", Some(CLIENT_KEY), r#"{"model":"demo-gpt"}"#.into(), StatusCode::BAD_REQUEST, None),
        (
            "body over the limit",
            Some(CLIENT_KEY),
            chat_body("demo-gpt", &"x".repeat(4096), false).to_string(),
            StatusCode::PAYLOAD_TOO_LARGE,
            Some("request_too_large"),
        ),
    ];
    for (what, key, body, status, code) in cases {
        let a = relay.request(Method::POST, chat, key, &body).await;
        assert_eq!(a.status, status, "{what}: {}", a.text());
        let (msg, c) = a.openai_error();
        assert!(!msg.is_empty(), "{what}");
        if let Some(code) = code {
            assert_eq!(c, code, "{what}: {}", a.text());
        }
    }
    // Unknown model: 404 model_not_found, for a token that may use any model.
    let all = TestRelay::openai(&channel("main", &m.base_url(), "demo-gpt", "")).await;
    let a = all.chat(&chat_body("gpt-nope", "hi", false)).await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    assert_eq!(a.openai_error().1, "model_not_found");
    let a = relay.request(Method::GET, "/v1/nothing", Some(CLIENT_KEY), "").await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    a.openai_error();

    // Nothing reached the vendor, and the relay still serves.
    assert!(m.stats.received().is_empty());
    let a = relay.request(Method::POST, chat, Some(CLIENT_KEY), &ok).await;
    assert_eq!(a.status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversize_body_is_refused_without_reading_it() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let m = mock().await;
    let config = format!("[limits]\nmax_request_body = 1024\n{}", channel("main", &m.base_url(), "demo-gpt", ""));
    let config = format!("{config}{}", token_block(CLIENT_KEY, "*"));
    let relay = TestRelay::start(Setup { config: &config, adapters: &["openai"], env: &[] }).await;
    // Declare 1 GiB and send none of it: the answer comes at once, from the header alone.
    let mut s = tokio::net::TcpStream::connect(relay.addr).await.unwrap();
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {CLIENT_KEY}\r\ncontent-length: 1073741824\r\n\r\n"
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await.expect("answered at once").unwrap();
    let text = String::from_utf8_lossy(&buf[..n]);
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vendor_errors_keep_status_and_message() {
    let m = mock().await;
    let config = [
        channel("limited", &m.base_url(), "limited", "headers = { \"x-mock-status\" = \"429\" }"),
        channel("broken", &m.base_url(), "broken", "headers = { \"x-mock-status\" = \"500\" }"),
        channel("html", &m.base_url(), "html", "headers = { \"x-mock-fault\" = \"not-json\" }"),
        channel("badkey", &m.base_url(), "badkey", ""),
    ]
    .concat()
    .replace(
        &format!(
            "name = \"badkey\"\nadapter = \"openai\"\nbase_url = \"{}\"\napi_key = \"{UPSTREAM_KEY}\"",
            m.base_url()
        ),
        &format!("name = \"badkey\"\nadapter = \"openai\"\nbase_url = \"{}\"\napi_key = \"sk-wrong\"", m.base_url()),
    );
    let relay = TestRelay::openai(&config).await;

    let a = relay.chat(&chat_body("limited", "hi", false)).await;
    assert_eq!(a.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(a.openai_error().0, "Mock vendor error 429");
    assert_eq!(a.headers["retry-after"], "7");

    let a = relay.chat(&chat_body("broken", "hi", false)).await;
    assert_eq!(a.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(a.openai_error().0, "Mock vendor error 500");

    let a = relay.chat(&chat_body("html", "hi", false)).await;
    assert_eq!(a.status, StatusCode::BAD_GATEWAY);
    let (msg, _) = a.openai_error();
    assert!(msg.contains("adapter 'openai'") && msg.contains("not JSON"), "{msg}");

    let a = relay.chat(&chat_body("badkey", "hi", false)).await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    assert!(a.openai_error().0.starts_with("Incorrect API key"));

    // A vendor's rejection of a field is relayed as the vendor said it.
    let mut body = chat_body("badkey", "hi", false);
    body["bogus_param"] = json!(1);
    let relay2 = TestRelay::openai(&channel("main", &m.base_url(), "demo-gpt", "")).await;
    body["model"] = json!("demo-gpt");
    let a = relay2.chat(&body).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert!(a.openai_error().0.contains("bogus_param"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_vendor_fails_fast_and_fails_over() {
    // A port with nothing listening: bind, note the port, close.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let m = mock().await;
    let config = [
        channel("dead", &format!("http://{dead}/v1"), "solo", ""),
        channel("dead-first", &format!("http://{dead}/v1"), "failover", "priority = 10"),
        channel("alive", &m.base_url(), "failover", "priority = 0"),
    ]
    .concat();
    let relay = TestRelay::openai(&config).await;

    let t = Instant::now();
    let a = relay.chat(&chat_body("solo", "hi", false)).await;
    assert_eq!(a.status, StatusCode::BAD_GATEWAY, "{}", a.text());
    let (msg, code) = a.openai_error();
    assert!(msg.contains("channel dead"), "{msg}");
    assert_eq!(code, "upstream_unreachable");
    assert!(t.elapsed() < Duration::from_secs(5), "a refused connection fails at once");

    let a = relay.chat(&chat_body("failover", "hi", false)).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    let logs = relay.wait_log("attempts=2").await;
    assert!(logs.contains("attempts=2") && logs.contains("channel=\"alive\""), "{logs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adapter_failures_answer_502_naming_the_adapter() {
    let m = mock().await;
    let mut config = String::new();
    for mode in ["panic", "error", "stream-panic", "fine"] {
        config.push_str(&format!(
            "[[channel]]\nname = \"{mode}\"\nadapter = \"misbehave\"\nbase_url = \"{}\"\napi_key = \"{UPSTREAM_KEY}\"\nmodels = [\"{mode}\"]\nsettings = {{ mode = \"{mode}\" }}\n",
            m.base_url()
        ));
    }
    config
        .push_str(&channel("gone", &m.base_url(), "gone", "").replace("adapter = \"openai\"", "adapter = \"missing\""));
    config.push_str(&token_block(CLIENT_KEY, "*"));
    let relay = TestRelay::start(Setup { config: &config, adapters: &["openai", "misbehave"], env: &[] }).await;

    for mode in ["panic", "error"] {
        let a = relay.chat(&chat_body(mode, "hi", false)).await;
        assert_eq!(a.status, StatusCode::BAD_GATEWAY, "{mode}: {}", a.text());
        let (msg, code) = a.openai_error();
        assert!(msg.contains("adapter 'misbehave'"), "{mode}: {msg}");
        assert_eq!(code, "adapter_error");
    }
    // A trap after the stream began: one error event, no [DONE].
    let a = relay.chat(&chat_body("stream-panic", "hi", true)).await;
    assert_eq!(a.status, StatusCode::OK);
    let events = a.sse_data();
    assert!(!events.iter().any(|e| e == "[DONE]"), "{}", a.text());
    let last: Value = serde_json::from_str(events.last().unwrap()).unwrap();
    assert!(last["error"]["message"].as_str().unwrap().contains("adapter 'misbehave'"), "{last}");

    let a = relay.chat(&chat_body("gone", "hi", false)).await;
    assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(a.openai_error().0.contains("adapter 'missing'"));

    // Every other request is untouched, at once.
    let a = relay.chat(&chat_body("fine", "hi", false)).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    let metrics = relay.metrics().await;
    assert!(metrics.value("relay_plugin_traps_total", &[("plugin", "misbehave"), ("reason", "panic")]) >= 2.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_config_stops_startup_naming_key_and_line() {
    let config = "[timeouts]\ntotal = \"soon\"\n";
    let err = TestRelay::try_start(Setup { config, adapters: &[], env: &[] }).await.err().expect("must not start");
    assert!(err.contains("total") && err.contains("line 4"), "{err}");
    let config = channel("c", "http://127.0.0.1:1/v1", "m", "")
        .replace(&format!("api_key = \"{UPSTREAM_KEY}\""), "api_key_env = \"RELAY_TEST_UNSET_KEY\"");
    let err =
        TestRelay::try_start(Setup { config: &config, adapters: &[], env: &[] }).await.err().expect("must not start");
    assert!(err.contains("RELAY_TEST_UNSET_KEY") && err.contains("line"), "{err}");
    let err = TestRelay::try_start(Setup { config: "", adapters: &[], env: &[("RELAY_TIMEOUT", "-3")] })
        .await
        .err()
        .expect("must not start");
    assert!(err.contains("RELAY_TIMEOUT"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_command_prints_the_live_gauges() {
    let m = mock().await;
    let relay = TestRelay::openai(&channel("main", &m.base_url(), "demo-gpt", "")).await;
    assert_eq!(relay.chat(&chat_body("demo-gpt", "hi", false)).await.status, StatusCode::OK);
    let url = format!("http://{}", relay.addr);
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(workspace_root().join("target/release/relay"))
            .args(["status", "--url", &url])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let line = String::from_utf8_lossy(&out.stdout);
    for key in ["inflight=0", "streams=0", "tasks=", "upstream_conns=", "rss_mib=", "requests=1"] {
        assert!(line.contains(key), "{key} missing: {line}");
    }
    assert!(line.contains("timeouts=0 ") && !line.contains("=-"), "{line}");
    // An unreachable relay is a clear error, not a hang.
    let out = std::process::Command::new(workspace_root().join("target/release/relay"))
        .args(["status", "--url", "http://127.0.0.1:1"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot reach"));
}
