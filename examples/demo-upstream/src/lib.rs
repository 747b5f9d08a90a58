//! A small upstream that speaks the OpenAI API the way OpenAI does: it validates what it
//! receives (credential, required fields, roles, unknown parameters) and answers with the
//! real response, stream and error shapes. `make run` serves the demo with it; tests and
//! benchmarks use it as the vendor, with fault knobs.
//!
//! Faults are chosen per request by headers (a relay channel can add them with its
//! `headers` table), so one mock serves every scenario:
//! - `x-mock-status: 429` answers that status with an OpenAI error body;
//! - `x-mock-header-delay-ms: N` waits before the response head;
//! - `x-mock-body-delay-ms: N` sends a non-stream head at once and its body N ms later;
//! - `x-mock-chunks: N`, `x-mock-chunk-delay-ms: N` shape a stream;
//! - `x-mock-fault: stall-after:N | drop-after:N | no-done | not-json | garbage-chunk`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode, header};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

type Body = UnsyncBoxBody<Bytes, std::io::Error>;

fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).map_err(|never: Infallible| match never {}).boxed_unsync()
}

/// The parameters OpenAI's chat completions endpoint accepts; anything else is refused
/// with "Unrecognized request argument supplied", as OpenAI does.
const CHAT_PARAMS: &[&str] = &[
    "model",
    "messages",
    "stream",
    "stream_options",
    "temperature",
    "top_p",
    "n",
    "stop",
    "max_tokens",
    "max_completion_tokens",
    "presence_penalty",
    "frequency_penalty",
    "logit_bias",
    "logprobs",
    "top_logprobs",
    "user",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "response_format",
    "seed",
    "service_tier",
    "store",
    "metadata",
    "modalities",
    "audio",
    "prediction",
    "reasoning_effort",
    "web_search_options",
    "functions",
    "function_call",
];
const EMBEDDING_PARAMS: &[&str] = &["model", "input", "encoding_format", "dimensions", "user"];
const ROLES: &[&str] = &["system", "developer", "user", "assistant", "tool", "function"];

#[derive(Debug, Clone)]
pub struct Options {
    /// The key clients must send as `Authorization: Bearer`.
    pub api_key: String,
    /// Content chunks in a stream (the reply is split across them).
    pub chunks: usize,
    pub chunk_delay: Duration,
    pub header_delay: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            api_key: "sk-demo-upstream".into(),
            chunks: 8,
            chunk_delay: Duration::from_millis(0),
            header_delay: Duration::from_millis(0),
        }
    }
}

/// What the mock received, for tests to check what the relay sent.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: String,
    pub path: String,
    pub headers: HeaderMap,
    pub body: Value,
}

#[derive(Default)]
pub struct Stats {
    pub open_connections: AtomicI64,
    pub requests: AtomicU64,
    received: Mutex<Vec<Received>>,
}

impl Stats {
    pub fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn open_connections(&self) -> i64 {
        self.open_connections.load(Ordering::SeqCst)
    }
}

/// A running mock; it stops accepting when dropped.
pub struct Mock {
    pub addr: SocketAddr,
    pub stats: Arc<Stats>,
    accept: JoinHandle<()>,
}

impl Drop for Mock {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

impl Mock {
    pub async fn start(options: Options) -> std::io::Result<Mock> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        Ok(Self::serve(listener, options))
    }

    pub fn serve(listener: TcpListener, options: Options) -> Mock {
        let addr = listener.local_addr().expect("bound listener has an address");
        let stats = Arc::new(Stats::default());
        let options = Arc::new(options);
        let st = stats.clone();
        let accept = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let (st, options) = (st.clone(), options.clone());
                tokio::spawn(async move {
                    st.open_connections.fetch_add(1, Ordering::SeqCst);
                    let svc_st = st.clone();
                    let svc = service_fn(move |req| {
                        let (st, options) = (svc_st.clone(), options.clone());
                        async move { Ok::<_, Infallible>(handle(req, &st, &options).await) }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                    st.open_connections.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        Mock { addr, stats, accept }
    }

    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }
}

fn error(status: StatusCode, message: &str, kind: &str, param: Option<&str>, code: Option<&str>) -> Response<Body> {
    let body = json!({"error": {"message": message, "type": kind, "param": param, "code": code}});
    json_response(status, body.to_string())
}

fn boxed_error(
    status: StatusCode,
    message: &str,
    kind: &str,
    param: Option<&str>,
    code: Option<&str>,
) -> Box<Response<Body>> {
    Box::new(error(status, message, kind, param, code))
}

fn json_response(status: StatusCode, body: String) -> Response<Body> {
    let mut r = Response::new(full(body));
    *r.status_mut() = status;
    r.headers_mut().insert(header::CONTENT_TYPE, "application/json".parse().expect("static"));
    r
}

fn knob(headers: &HeaderMap, name: &str) -> Option<String> {
    headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned)
}

fn knob_ms(headers: &HeaderMap, name: &str) -> Option<Duration> {
    knob(headers, name).and_then(|v| v.parse().ok()).map(Duration::from_millis)
}

async fn handle(req: Request<Incoming>, stats: &Stats, options: &Options) -> Response<Body> {
    stats.requests.fetch_add(1, Ordering::Relaxed);
    let (parts, body) = req.into_parts();
    let Ok(body) = body.collect().await.map(|c| c.to_bytes()) else {
        return error(StatusCode::BAD_REQUEST, "could not read body", "invalid_request_error", None, None);
    };
    let path = parts.uri.path().to_string();
    let json: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    stats.received.lock().unwrap_or_else(|e| e.into_inner()).push(Received {
        method: parts.method.to_string(),
        path: path.clone(),
        headers: parts.headers.clone(),
        body: json.clone(),
    });

    let expected = format!("Bearer {}", options.api_key);
    if parts.headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) != Some(expected.as_str()) {
        return error(
            StatusCode::UNAUTHORIZED,
            "Incorrect API key provided. You can find your API key at https://platform.openai.com/account/api-keys.",
            "invalid_request_error",
            None,
            Some("invalid_api_key"),
        );
    }
    if let Some(d) = knob_ms(&parts.headers, "x-mock-header-delay-ms").or(Some(options.header_delay)) {
        tokio::time::sleep(d).await;
    }
    if let Some(status) = knob(&parts.headers, "x-mock-status").and_then(|s| s.parse::<u16>().ok()) {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let (kind, code) = if status == StatusCode::TOO_MANY_REQUESTS {
            ("requests", "rate_limit_exceeded")
        } else {
            ("server_error", "server_error")
        };
        let mut r = error(status, &format!("Mock vendor error {}", status.as_u16()), kind, None, Some(code));
        if status == StatusCode::TOO_MANY_REQUESTS {
            r.headers_mut().insert(header::RETRY_AFTER, "7".parse().expect("static"));
        }
        return r;
    }
    let fault = knob(&parts.headers, "x-mock-fault").unwrap_or_default();
    if fault == "not-json" {
        let mut r = Response::new(full(Bytes::from_static(b"<html>not json</html>")));
        r.headers_mut().insert(header::CONTENT_TYPE, "text/html".parse().expect("static"));
        return r;
    }

    match (&parts.method, path.as_str()) {
        (&Method::POST, "/v1/chat/completions") => chat(&json, &parts.headers, &fault, options),
        (&Method::POST, "/v1/embeddings") => embeddings(&json),
        (&Method::GET, "/v1/models") => json_response(
            StatusCode::OK,
            json!({"object": "list", "data": [{"id": "demo-gpt", "object": "model", "created": 1_700_000_000, "owned_by": "demo"}]})
                .to_string(),
        ),
        _ => error(StatusCode::NOT_FOUND, &format!("Invalid URL ({} {path})", parts.method), "invalid_request_error", None, None),
    }
}

fn check_params(body: &Value, allowed: &[&str]) -> Result<(), Box<Response<Body>>> {
    let Some(obj) = body.as_object() else {
        return Err(boxed_error(
            StatusCode::BAD_REQUEST,
            "We could not parse the JSON body of your request.",
            "invalid_request_error",
            None,
            None,
        ));
    };
    if let Some(k) = obj.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(boxed_error(
            StatusCode::BAD_REQUEST,
            &format!("Unrecognized request argument supplied: {k}"),
            "invalid_request_error",
            None,
            None,
        ));
    }
    match obj.get("model") {
        Some(Value::String(m)) if !m.is_empty() => Ok(()),
        _ => Err(boxed_error(
            StatusCode::BAD_REQUEST,
            "you must provide a model parameter",
            "invalid_request_error",
            None,
            None,
        )),
    }
}

fn validate_messages(body: &Value) -> Result<String, Box<Response<Body>>> {
    let bad = |m: String, p: &str| boxed_error(StatusCode::BAD_REQUEST, &m, "invalid_request_error", Some(p), None);
    let Some(messages) = body.get("messages").and_then(Value::as_array) else {
        return Err(bad("'messages' is a required property".into(), "messages"));
    };
    if messages.is_empty() {
        return Err(bad("[] is too short - 'messages'".into(), "messages"));
    }
    let mut last_user = String::new();
    for (i, m) in messages.iter().enumerate() {
        let role = m.get("role").and_then(Value::as_str).unwrap_or("");
        if !ROLES.contains(&role) {
            return Err(bad(
                format!("Invalid value: '{role}'. Supported values are: {ROLES:?}"),
                &format!("messages[{i}].role"),
            ));
        }
        let content = m.get("content");
        let has_tool_calls = m.get("tool_calls").is_some_and(Value::is_array);
        match content {
            Some(Value::String(s)) if role == "user" => last_user.clone_from(s),
            Some(Value::Array(parts)) if role == "user" => {
                last_user =
                    parts.iter().filter_map(|p| p.get("text").and_then(Value::as_str)).collect::<Vec<_>>().join(" ");
            }
            Some(Value::String(_)) | Some(Value::Array(_)) => {}
            None | Some(Value::Null) if role == "assistant" && has_tool_calls => {}
            _ => {
                return Err(bad(
                    format!("messages[{i}].content is required for role '{role}'"),
                    &format!("messages[{i}].content"),
                ));
            }
        }
        if role == "tool" && m.get("tool_call_id").and_then(Value::as_str).is_none() {
            return Err(bad(
                format!("messages[{i}].tool_call_id is required for role 'tool'"),
                &format!("messages[{i}].tool_call_id"),
            ));
        }
    }
    Ok(last_user)
}

fn words(s: &str) -> u64 {
    s.split_whitespace().count().max(1) as u64
}

fn chat(body: &Value, headers: &HeaderMap, fault: &str, options: &Options) -> Response<Body> {
    if let Err(r) = check_params(body, CHAT_PARAMS) {
        return *r;
    }
    let last_user = match validate_messages(body) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let stream = body.get("stream").and_then(Value::as_bool).unwrap_or(false);
    if body.get("stream_options").is_some_and(|v| !v.is_null()) && !stream {
        return error(
            StatusCode::BAD_REQUEST,
            "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
            "invalid_request_error",
            Some("stream_options"),
            None,
        );
    }
    let model = body["model"].as_str().unwrap_or_default().to_string();
    let reply = format!("Hello from the demo upstream! You said: {last_user}");
    let prompt_tokens = words(&last_user);
    let completion_tokens = words(&reply);
    let usage = json!({"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens, "total_tokens": prompt_tokens + completion_tokens});
    let id = "chatcmpl-demo0001";
    let created = 1_700_000_000u64;

    if !stream {
        let body = json!({
            "id": id, "object": "chat.completion", "created": created, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": reply, "refusal": null},
                         "logprobs": null, "finish_reason": "stop"}],
            "usage": usage, "system_fingerprint": "fp_demo",
        });
        if let Some(delay) = knob_ms(headers, "x-mock-body-delay-ms") {
            // The head now, the body later: a vendor slow to finish a non-stream answer.
            let bytes = Bytes::from(body.to_string());
            let body = futures_util::stream::once(async move {
                tokio::time::sleep(delay).await;
                Ok::<_, std::io::Error>(Frame::data(bytes))
            });
            let mut r = Response::new(StreamBody::new(body).boxed_unsync());
            r.headers_mut().insert(header::CONTENT_TYPE, "application/json".parse().expect("static"));
            return r;
        }
        return json_response(StatusCode::OK, body.to_string());
    }

    let include_usage = body.pointer("/stream_options/include_usage").and_then(Value::as_bool).unwrap_or(false);
    let n = knob(headers, "x-mock-chunks").and_then(|v| v.parse().ok()).unwrap_or(options.chunks).max(1);
    let delay = knob_ms(headers, "x-mock-chunk-delay-ms").unwrap_or(options.chunk_delay);
    let chunk = |delta: Value, finish: Value| {
        let mut c = json!({"id": id, "object": "chat.completion.chunk", "created": created, "model": model,
            "system_fingerprint": "fp_demo",
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]});
        if include_usage {
            c["usage"] = Value::Null;
        }
        format!("data: {c}\n\n")
    };
    let mut events = vec![chunk(json!({"role": "assistant", "content": "", "refusal": null}), Value::Null)];
    let chars: Vec<char> = reply.chars().collect();
    let per = chars.len().div_ceil(n);
    for piece in chars.chunks(per.max(1)) {
        events.push(chunk(json!({"content": piece.iter().collect::<String>()}), Value::Null));
    }
    events.push(chunk(json!({}), json!("stop")));
    if include_usage {
        let c = json!({"id": id, "object": "chat.completion.chunk", "created": created, "model": model,
            "system_fingerprint": "fp_demo", "choices": [], "usage": usage});
        events.push(format!("data: {c}\n\n"));
    }
    events.push("data: [DONE]\n\n".into());

    let (stall_after, drop_after) = {
        let parse = |prefix: &str| fault.strip_prefix(prefix).and_then(|n| n.parse::<usize>().ok());
        (parse("stall-after:"), parse("drop-after:"))
    };
    if fault == "no-done" {
        events.pop();
    }
    if fault == "garbage-chunk" {
        events.insert(1, "data: {not json\n\n".into());
    }
    let stream =
        futures_util::stream::unfold((events.into_iter().enumerate(), delay), move |(mut it, delay)| async move {
            let (i, ev) = it.next()?;
            if i > 0 && !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            if stall_after == Some(i) {
                // Hold the connection open and silent: the relay's idle bound must end it.
                std::future::pending::<()>().await;
            }
            if drop_after == Some(i) {
                return Some((Err(std::io::Error::other("mock drops the connection")), (it, delay)));
            }
            Some((Ok(Frame::data(Bytes::from(ev))), (it, delay)))
        });
    // A body error makes hyper abort the connection mid-stream, like a vendor that dies.
    let mut r = Response::new(StreamBody::new(stream).boxed_unsync());
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, "text/event-stream; charset=utf-8".parse().expect("static"));
    h.insert(header::CACHE_CONTROL, "no-cache".parse().expect("static"));
    r
}

fn embeddings(body: &Value) -> Response<Body> {
    if let Err(r) = check_params(body, EMBEDDING_PARAMS) {
        return *r;
    }
    let inputs: Vec<String> = match body.get("input") {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) if !a.is_empty() => {
            a.iter().map(|v| v.as_str().unwrap_or_default().to_string()).collect()
        }
        _ => {
            return error(
                StatusCode::BAD_REQUEST,
                "'input' is a required property",
                "invalid_request_error",
                Some("input"),
                None,
            );
        }
    };
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(i, s)| {
            // Deterministic, input-dependent vectors: enough to check plumbing end to end.
            let seed = s.bytes().fold(7u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)));
            let v: Vec<f64> = (0..8).map(|k| ((seed >> (k * 4)) & 0xf) as f64 / 15.0 - 0.5).collect();
            json!({"object": "embedding", "index": i, "embedding": v})
        })
        .collect();
    let tokens: u64 = inputs.iter().map(|s| words(s)).sum();
    json_response(
        StatusCode::OK,
        json!({"object": "list", "data": data, "model": body["model"], "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})
            .to_string(),
    )
}
