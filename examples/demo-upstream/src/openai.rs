//! OpenAI's API: chat completions (JSON and SSE), the Responses API ([`responses`]),
//! embeddings, models.
//!
//! The mock model echoes the last user message; offered tools, it calls one (the first, or
//! the one `tool_choice` names) when the user spoke last, and it quotes the tool results
//! that end a conversation.

mod responses;

use bytes::Bytes;
use http::{HeaderMap, Method, Response, StatusCode, header};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use serde_json::{Value, json};

use crate::{
    Body, End, Req, chunk_count, event_stream, json_response, knob, knob_ms, not_json, pieces, tool_arguments, words,
};

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

const RESPONSE_ID: &str = "chatcmpl-demo0001";
/// The id of the one tool call the mock model makes (OpenAI's `call_` and 24 characters).
const TOOL_CALL_ID: &str = "call_demo0001AbCdEfGhIjKlMn";
const CREATED: u64 = 1_700_000_000;
const FINGERPRINT: &str = "fp_demo";

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
        let custom = knob(req.headers, "x-mock-error-code");
        let (kind, code) = if status == StatusCode::TOO_MANY_REQUESTS {
            ("requests", "rate_limit_exceeded")
        } else if let Some(code) = custom.as_deref() {
            ("invalid_request_error", code)
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
        (&Method::POST, "/v1/responses") => responses::create(req),
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

/// The conversation the mock model answers, once validated.
struct Turn {
    /// The text of the last user message.
    last_user: String,
    /// The contents of the tool messages that end the conversation, if it ends with them.
    tool_results: Vec<String>,
    /// Whether the last message is the user's: only then does the model call a tool.
    ends_with_user: bool,
}

/// The text of a message's content: the string, or the `text` of its parts.
fn text_of(content: Option<&Value>) -> String {
    match content {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => {
            parts.iter().filter_map(|p| p.get("text").and_then(Value::as_str)).collect::<Vec<_>>().join(" ")
        }
        _ => String::new(),
    }
}

fn invalid(message: &str, param: &str) -> Box<Response<Body>> {
    boxed_error(StatusCode::BAD_REQUEST, message, "invalid_request_error", Some(param), None)
}

fn unanswered(pending: &[String], at: usize) -> Box<Response<Body>> {
    let msg = format!(
        "An assistant message with 'tool_calls' must be followed by tool messages responding to each 'tool_call_id'. The following tool_call_ids did not have response messages: {}",
        pending.join(", ")
    );
    invalid(&msg, &format!("messages.[{at}].role"))
}

/// The ids of an assistant message's tool calls, each checked for what OpenAI requires.
fn tool_call_ids(message: &Value, i: usize) -> Result<Vec<String>, Box<Response<Body>>> {
    let calls = message.get("tool_calls").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
    let mut ids = Vec::with_capacity(calls.len());
    for (j, call) in calls.iter().enumerate() {
        for field in ["/id", "/function/name", "/function/arguments"] {
            if call.pointer(field).and_then(Value::as_str).is_none() {
                let param = format!("messages[{i}].tool_calls[{j}]{}", field.replace('/', "."));
                return Err(invalid(&format!("Missing required parameter: '{param}'."), &param));
            }
        }
        ids.push(call["id"].as_str().unwrap_or_default().to_string());
    }
    Ok(ids)
}

/// Roles, contents and the tool-call/tool-result pairing, as OpenAI checks them.
fn validate_messages(body: &Value) -> Result<Turn, Box<Response<Body>>> {
    let Some(messages) = body.get("messages").and_then(Value::as_array) else {
        return Err(invalid("'messages' is a required property", "messages"));
    };
    if messages.is_empty() {
        return Err(invalid("[] is too short - 'messages'", "messages"));
    }
    let mut last_user = String::new();
    let mut tool_results = Vec::new();
    // Tool calls of the latest assistant message that still await their results.
    let mut pending: Vec<String> = Vec::new();
    let mut pending_from = 0;
    for (i, m) in messages.iter().enumerate() {
        let role = m.get("role").and_then(Value::as_str).unwrap_or("");
        if !ROLES.contains(&role) {
            let msg = format!("Invalid value: '{role}'. Supported values are: {ROLES:?}");
            return Err(invalid(&msg, &format!("messages[{i}].role")));
        }
        if role != "tool" && !pending.is_empty() {
            return Err(unanswered(&pending, pending_from));
        }
        let content = m.get("content");
        let has_tool_calls = m.get("tool_calls").is_some_and(Value::is_array);
        match content {
            Some(Value::String(_)) | Some(Value::Array(_)) => {}
            None | Some(Value::Null) if role == "assistant" && has_tool_calls => {}
            _ => {
                let msg = format!("messages[{i}].content is required for role '{role}'");
                return Err(invalid(&msg, &format!("messages[{i}].content")));
            }
        }
        match role {
            "user" => last_user = text_of(content),
            "assistant" => {
                pending = tool_call_ids(m, i)?;
                pending_from = i;
            }
            "tool" => {
                let Some(id) = m.get("tool_call_id").and_then(Value::as_str) else {
                    let msg = format!("messages[{i}].tool_call_id is required for role 'tool'");
                    return Err(invalid(&msg, &format!("messages[{i}].tool_call_id")));
                };
                let Some(at) = pending.iter().position(|p| p == id) else {
                    return Err(invalid(
                        "Invalid parameter: messages with role 'tool' must be a response to a preceeding message with 'tool_calls'.",
                        &format!("messages.[{i}].role"),
                    ));
                };
                pending.remove(at);
                tool_results.push(text_of(content));
            }
            _ => {}
        }
        if role != "tool" {
            tool_results.clear();
        }
    }
    if !pending.is_empty() {
        return Err(unanswered(&pending, pending_from));
    }
    let ends_with_user = messages.last().and_then(|m| m.get("role")).and_then(Value::as_str) == Some("user");
    Ok(Turn { last_user, tool_results, ends_with_user })
}

/// The tool the model calls, with its parameter schema, after checking every tool: none
/// when no tools are offered or `tool_choice` is "none", the named one when `tool_choice`
/// names one, else the first.
fn chosen_tool(body: &Value) -> Result<Option<(String, Value)>, Box<Response<Body>>> {
    let choice = body.get("tool_choice").filter(|c| !c.is_null());
    let Some(tools) = body.get("tools").filter(|t| !t.is_null()) else {
        if choice.is_some() {
            return Err(invalid(
                "Invalid value for 'tool_choice': 'tool_choice' is only allowed when 'tools' are specified.",
                "tool_choice",
            ));
        }
        return Ok(None);
    };
    let Some(tools) = tools.as_array() else {
        return Err(invalid("Invalid type for 'tools': expected an array.", "tools"));
    };
    let name = |t: &Value| t.pointer("/function/name").and_then(Value::as_str).unwrap_or_default().to_string();
    for (i, t) in tools.iter().enumerate() {
        let kind = t.get("type").and_then(Value::as_str).unwrap_or("");
        if kind != "function" {
            let msg = format!("Invalid value: '{kind}'. Supported values are: 'function'.");
            return Err(invalid(&msg, &format!("tools[{i}].type")));
        }
        if name(t).is_empty() {
            let param = format!("tools[{i}].function.name");
            return Err(invalid(&format!("Missing required parameter: '{param}'."), &param));
        }
    }
    let tool = match choice {
        Some(Value::String(s)) if s == "none" => None,
        Some(c) => match c.pointer("/function/name").and_then(Value::as_str) {
            Some(wanted) => tools.iter().find(|t| name(t) == wanted),
            None => tools.first(),
        },
        None => tools.first(),
    };
    Ok(tool.map(|t| (name(t), t.pointer("/function/parameters").cloned().unwrap_or(Value::Null))))
}

/// What the mock model answers.
enum Reply {
    Text(String),
    ToolCall { name: String, arguments: String },
}

pub(crate) fn chat(req: &Req<'_>) -> Response<Body> {
    answer(req).unwrap_or_else(|r| *r)
}

fn answer(req: &Req<'_>) -> Result<Response<Body>, Box<Response<Body>>> {
    let (body, headers) = (req.body, req.headers);
    check_params(body, CHAT_PARAMS)?;
    let turn = validate_messages(body)?;
    let tool = chosen_tool(body)?;
    let stream = body.get("stream").and_then(Value::as_bool).unwrap_or(false);
    if body.get("stream_options").is_some_and(|v| !v.is_null()) && !stream {
        return Err(invalid(
            "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
            "stream_options",
        ));
    }
    let model = body["model"].as_str().unwrap_or_default().to_string();
    let results = turn.tool_results.join(" ");
    let reply = match tool {
        _ if !turn.tool_results.is_empty() => {
            Reply::Text(format!("Hello from the demo upstream! The tool said: {results}"))
        }
        Some((name, schema)) if turn.ends_with_user => {
            Reply::ToolCall { arguments: tool_arguments(&schema, &turn.last_user), name }
        }
        _ => Reply::Text(format!("Hello from the demo upstream! You said: {}", turn.last_user)),
    };
    let prompt_tokens = words(&turn.last_user) + if results.is_empty() { 0 } else { words(&results) };
    let completion_tokens = match &reply {
        Reply::Text(text) => words(text),
        Reply::ToolCall { arguments, .. } => words(arguments),
    };
    let usage = json!({"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens, "total_tokens": prompt_tokens + completion_tokens});

    if !stream {
        let (message, finish) = match &reply {
            Reply::Text(text) => (json!({"role": "assistant", "content": text, "refusal": null}), "stop"),
            Reply::ToolCall { name, arguments } => (
                json!({"role": "assistant", "content": null, "refusal": null, "tool_calls": [
                    {"id": TOOL_CALL_ID, "type": "function", "function": {"name": name, "arguments": arguments}}]}),
                "tool_calls",
            ),
        };
        let body = json!({
            "id": RESPONSE_ID, "object": "chat.completion", "created": CREATED, "model": model,
            "choices": [{"index": 0, "message": message, "logprobs": null, "finish_reason": finish}],
            "usage": usage, "system_fingerprint": FINGERPRINT,
        });
        return Ok(delayed_json(headers, body.to_string()));
    }

    let include_usage = body.pointer("/stream_options/include_usage").and_then(Value::as_bool).unwrap_or(false);
    let chunk = |delta: Value, finish: Value| {
        let mut c = json!({"id": RESPONSE_ID, "object": "chat.completion.chunk", "created": CREATED, "model": model,
            "system_fingerprint": FINGERPRINT,
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]});
        if include_usage {
            c["usage"] = Value::Null;
        }
        format!("data: {c}\n\n")
    };
    let mut events = Vec::new();
    match &reply {
        Reply::Text(text) => {
            events.push(chunk(json!({"role": "assistant", "content": "", "refusal": null}), Value::Null));
            for piece in pieces(text, chunk_count(req)) {
                events.push(chunk(json!({"content": piece}), Value::Null));
            }
            events.push(chunk(json!({}), json!("stop")));
        }
        Reply::ToolCall { name, arguments } => {
            // As OpenAI streams a call: its index, id and name first, the arguments after.
            let start = json!({"role": "assistant", "content": null, "refusal": null, "tool_calls": [
                {"index": 0, "id": TOOL_CALL_ID, "type": "function", "function": {"name": name, "arguments": ""}}]});
            events.push(chunk(start, Value::Null));
            for piece in pieces(arguments, chunk_count(req)) {
                let delta = json!({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]});
                events.push(chunk(delta, Value::Null));
            }
            events.push(chunk(json!({}), json!("tool_calls")));
        }
    }
    // Both replies end with their finish chunk.
    let end = End { finish: events.len() - 1, terminator: true };
    if include_usage {
        let c = json!({"id": RESPONSE_ID, "object": "chat.completion.chunk", "created": CREATED, "model": model,
            "system_fingerprint": FINGERPRINT, "choices": [], "usage": usage});
        events.push(format!("data: {c}\n\n"));
    }
    events.push("data: [DONE]\n\n".into());
    Ok(event_stream(req, events, end, "text/event-stream; charset=utf-8"))
}

/// A 200 JSON answer; with `x-mock-body-delay-ms` its head goes at once and its body that
/// much later (a vendor slow to finish a non-stream answer).
fn delayed_json(headers: &HeaderMap, body: String) -> Response<Body> {
    let Some(delay) = knob_ms(headers, "x-mock-body-delay-ms") else {
        return json_response(StatusCode::OK, body);
    };
    let bytes = Bytes::from(body);
    let body = futures_util::stream::once(async move {
        tokio::time::sleep(delay).await;
        Ok::<_, std::io::Error>(Frame::data(bytes))
    });
    let mut r = Response::new(StreamBody::new(body).boxed_unsync());
    r.headers_mut().insert(header::CONTENT_TYPE, "application/json".parse().expect("static"));
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
