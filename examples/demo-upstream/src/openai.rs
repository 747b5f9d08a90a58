//! OpenAI's API: chat completions (JSON and SSE), embeddings, models.

use bytes::Bytes;
use http::{Method, Response, StatusCode, header};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use serde_json::{Value, json};

use crate::{Body, Req, chunk_count, event_stream, json_response, knob_ms, not_json, pieces, words};

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

pub(crate) async fn handle(req: &Req<'_>) -> Response<Body> {
    let expected = format!("Bearer {}", req.options.api_key);
    if req.header("authorization") != Some(expected.as_str()) {
        return error(
            StatusCode::UNAUTHORIZED,
            "Incorrect API key provided. You can find your API key at https://platform.openai.com/account/api-keys.",
            "invalid_request_error",
            None,
            Some("invalid_api_key"),
        );
    }
    if let Some(status) = req.mock_status() {
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
    if req.fault() == "not-json" {
        return not_json();
    }
    match (req.method, req.path) {
        (&Method::POST, "/v1/chat/completions") => chat(req),
        (&Method::POST, "/v1/embeddings") => embeddings(req.body),
        (&Method::GET, "/v1/models") => json_response(
            StatusCode::OK,
            json!({"object": "list", "data": [{"id": "demo-gpt", "object": "model", "created": 1_700_000_000, "owned_by": "demo"}]})
                .to_string(),
        ),
        _ => {
            let query = req.query.map(|q| format!("?{q}")).unwrap_or_default();
            let msg = format!("Invalid URL ({} {}{query})", req.method, req.path);
            error(StatusCode::NOT_FOUND, &msg, "invalid_request_error", None, None)
        }
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

pub(crate) fn chat(req: &Req<'_>) -> Response<Body> {
    let (body, headers) = (req.body, req.headers);
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
    for piece in pieces(&reply, chunk_count(req)) {
        events.push(chunk(json!({"content": piece}), Value::Null));
    }
    events.push(chunk(json!({}), json!("stop")));
    if include_usage {
        let c = json!({"id": id, "object": "chat.completion.chunk", "created": created, "model": model,
            "system_fingerprint": "fp_demo", "choices": [], "usage": usage});
        events.push(format!("data: {c}\n\n"));
    }
    events.push("data: [DONE]\n\n".into());
    event_stream(req, events, "text/event-stream; charset=utf-8")
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
