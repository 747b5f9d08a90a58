//! The plugin template, built the way authors build it, loads into the real host and
//! serves: a non-stream answer and an NDJSON stream, against a small Ollama-like vendor; the
//! host bridges Messages and Responses through it.

use std::convert::Infallible;

use bytes::Bytes;
use http::{Method, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use relay_tests::*;
use serde_json::{Value, json};

/// Ollama's `/api/chat`: one JSON reply, or NDJSON lines ending with `"done": true`.
async fn ollama() -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let svc = service_fn(|req: http::Request<hyper::body::Incoming>| async move {
                    let ok = req.method() == Method::POST && req.uri().path() == "/api/chat";
                    let body: Value = serde_json::from_slice(&req.into_body().collect().await.unwrap().to_bytes())
                        .unwrap_or(Value::Null);
                    let (status, text) = if !ok || body["messages"].as_array().is_none_or(|m| m.is_empty()) {
                        (StatusCode::BAD_REQUEST, json!({"error": "invalid request"}).to_string())
                    } else if body["stream"] == true {
                        let lines = ["Hel", "lo"]
                            .iter()
                            .map(|p| json!({"model": body["model"], "message": {"role": "assistant", "content": p}, "done": false}).to_string())
                            .chain([json!({"model": body["model"], "message": {"role": "assistant", "content": ""}, "done": true,
                                "done_reason": "stop", "prompt_eval_count": 4, "eval_count": 2}).to_string()])
                            .collect::<Vec<_>>()
                            .join("\n");
                        (StatusCode::OK, lines + "\n")
                    } else {
                        let reply = json!({"model": body["model"], "message": {"role": "assistant", "content": "Hello"},
                            "done": true, "done_reason": "stop", "prompt_eval_count": 4, "eval_count": 2});
                        (StatusCode::OK, reply.to_string())
                    };
                    let mut r = http::Response::new(Full::new(Bytes::from(text)));
                    *r.status_mut() = status;
                    Ok::<_, Infallible>(r)
                });
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(s), svc).await;
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_template_adapter_serves_through_the_host() {
    let addr = ollama().await;
    let config = format!(
        "[[channel]]\nname = \"local\"\nadapter = \"ollama-native\"\nbase_url = \"http://{addr}\"\nmodels = [\"llama3.2\"]\n{}",
        token_block(CLIENT_KEY, "*")
    );
    let relay = TestRelay::start(Setup { config: &config, adapters: &["plugin-template"], env: &[] }).await;

    let a = relay.chat(&chat_body("llama3.2", "hi", false)).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    let v = a.json();
    assert_eq!(v["choices"][0]["message"]["content"], "Hello");
    assert_eq!(v["usage"]["total_tokens"], 6);

    let mut body = chat_body("llama3.2", "hi", true);
    body["stream_options"] = json!({"include_usage": true});
    let a = relay.chat(&body).await;
    let events = a.sse_data();
    assert_eq!(joined_content(&events), "Hello");
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"), "{}", a.text());
    assert!(events.iter().any(|e| e.contains("\"total_tokens\":6")), "{}", a.text());

    let a =
        relay.chat(&json!({"model": "llama3.2", "messages": [{"role": "user", "content": "x"}], "tools": []})).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert!(a.openai_error().0.contains("tools"));
}

/// An adapter built from the template maps chat completions only; the host bridges the
/// other client APIs through it: Anthropic Messages and OpenAI Responses, whole and streamed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_template_adapter_serves_messages_and_responses_through_the_bridge() {
    let addr = ollama().await;
    let config = format!(
        "[[channel]]\nname = \"local\"\nadapter = \"ollama-native\"\nbase_url = \"http://{addr}\"\nmodels = [\"llama3.2\"]\n{}",
        token_block(CLIENT_KEY, "*")
    );
    let relay = TestRelay::start(Setup { config: &config, adapters: &["plugin-template"], env: &[] }).await;
    let anthropic = [("x-api-key", CLIENT_KEY), ("anthropic-version", "2023-06-01")];
    let message = |stream: bool| {
        json!({"model": "llama3.2", "max_tokens": 64, "stream": stream, "messages": [{"role": "user", "content": "hi"}]})
            .to_string()
    };

    let a = relay.request_with(Method::POST, "/v1/messages", None, &anthropic, &message(false)).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    let v = a.json();
    assert_eq!((v["type"].as_str(), v["content"][0]["text"].as_str()), (Some("message"), Some("Hello")), "{v}");
    assert_eq!((v["usage"]["input_tokens"].as_u64(), v["usage"]["output_tokens"].as_u64()), (Some(4), Some(2)));
    let a = relay.request_with(Method::POST, "/v1/messages", None, &anthropic, &message(true)).await;
    let evs = sse_events(&a.text());
    let text: String = evs.iter().filter_map(|(_, d)| d["delta"]["text"].as_str()).collect();
    assert_eq!(text, "Hello", "{evs:?}");
    assert_eq!(evs.last().map(|e| e.0.as_str()), Some("message_stop"), "{evs:?}");

    let response = |stream: bool| json!({"model": "llama3.2", "input": "hi", "stream": stream}).to_string();
    let a = relay.request(Method::POST, "/v1/responses", Some(CLIENT_KEY), &response(false)).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    let v = a.json();
    assert_eq!((v["object"].as_str(), v["status"].as_str()), (Some("response"), Some("completed")), "{v}");
    assert_eq!(v["output"][0]["content"][0]["text"], "Hello", "{v}");
    assert_eq!(v["usage"]["total_tokens"], 6, "{v}");
    let a = relay.request(Method::POST, "/v1/responses", Some(CLIENT_KEY), &response(true)).await;
    let evs = sse_events(&a.text());
    let text: String = evs
        .iter()
        .filter(|(n, _)| n == "response.output_text.delta")
        .filter_map(|(_, d)| d["delta"].as_str())
        .collect();
    assert_eq!(text, "Hello", "{evs:?}");
    assert_eq!(evs.last().map(|e| e.0.as_str()), Some("response.completed"), "{evs:?}");
}
