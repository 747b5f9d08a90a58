//! OpenAI's Responses API (`POST /v1/responses`), plain and streamed, in OpenAI's wire
//! format: the Response object, and the typed events (`event: <type>` and a JSON `data`
//! with `type` and `sequence_number` from 0), ending with `response.completed` and no
//! `[DONE]`. The model answers as the chat endpoint's does (an echo, a function call when
//! offered a function tool, a quote of the function outputs that end the input).
//!
//! It checks what it receives as OpenAI does (parameters, input items, function tools and
//! the call each function output answers), and answers any `previous_response_id` with the
//! 400 OpenAI gives for an unknown one: the mock stores nothing, and a relay that keeps the
//! conversation itself must never send one on. Beside the knobs of every endpoint,
//! `x-mock-fault: response-failed` ends a stream with the vendor's own `response.failed`
//! where the answer's end would be.

use http::{Response, StatusCode};
use serde_json::{Value, json};

use super::{delayed_json, invalid};
use crate::{Body, End, Req, chunk_count, event_stream, pieces, tool_arguments, words};

/// The parameters OpenAI's Responses endpoint accepts; anything else is refused with
/// `unknown_parameter`, as OpenAI does.
const PARAMS: &[&str] = &[
    "model",
    "input",
    "instructions",
    "stream",
    "stream_options",
    "temperature",
    "top_p",
    "top_logprobs",
    "max_output_tokens",
    "max_tool_calls",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "text",
    "reasoning",
    "include",
    "metadata",
    "store",
    "background",
    "previous_response_id",
    "conversation",
    "prompt",
    "prompt_cache_key",
    "safety_identifier",
    "service_tier",
    "truncation",
    "user",
];
const MESSAGE_ROLES: &[&str] = &["user", "assistant", "system", "developer"];
const PART_TYPES: &[&str] = &["input_text", "input_image", "input_file", "input_audio", "output_text", "refusal"];
const ITEM_TYPES: &[&str] = &["message", "function_call", "function_call_output", "reasoning", "item_reference"];

/// The mock's ids, in OpenAI's prefixes.
pub(crate) const RESPONSE_ID: &str = "resp_demo00000000000000000000000000000000000000000001";
const MESSAGE_ID: &str = "msg_demo00000000000000000000000000000000000000000001";
const REASONING_ID: &str = "rs_demo00000000000000000000000000000000000000000001";
const FUNCTION_CALL_ID: &str = "fc_demo00000000000000000000000000000000000000000001";
const CALL_ID: &str = "call_demo0001AbCdEfGhIjKlMn";
const CREATED: u64 = 1_700_000_000;
/// What OpenAI adds to each delta event to pad its size (`stream_options.include_obfuscation`).
const OBFUSCATION: &str = "dEmO0bf";

type Refusal = Box<Response<Body>>;

fn error(message: &str, param: Option<&str>, code: Option<&str>) -> Refusal {
    let body = json!({"error": {"message": message, "type": "invalid_request_error", "param": param, "code": code}});
    Box::new(crate::json_response(StatusCode::BAD_REQUEST, body.to_string()))
}

/// What the input asks of the model, once validated.
struct Turn {
    last_user: String,
    /// The outputs of the function calls that end the input, if it ends with them.
    outputs: Vec<String>,
    ends_with_user: bool,
}

/// The text of a message's content: the string, or the `text` of its parts.
fn text_of(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(parts) => {
            parts.iter().filter_map(|p| p.get("text").and_then(Value::as_str)).collect::<Vec<_>>().join(" ")
        }
        _ => String::new(),
    }
}

fn required_str<'v>(item: &'v Value, field: &str, at: &str) -> Result<&'v str, Refusal> {
    item.get(field).and_then(Value::as_str).ok_or_else(|| {
        let param = format!("{at}.{field}");
        error(&format!("Missing required parameter: '{param}'."), Some(&param), Some("missing_required_parameter"))
    })
}

fn validate_input(body: &Value) -> Result<Turn, Refusal> {
    let items = match body.get("input") {
        Some(Value::String(s)) => {
            return Ok(Turn { last_user: s.clone(), outputs: vec![], ends_with_user: true });
        }
        Some(Value::Array(items)) => items,
        None | Some(Value::Null) => {
            return Err(error(
                "Missing required parameter: 'input'.",
                Some("input"),
                Some("missing_required_parameter"),
            ));
        }
        Some(other) => {
            let got = match other {
                Value::Object(_) => "an object",
                Value::Number(_) => "a number",
                Value::Bool(_) => "a boolean",
                _ => "something else",
            };
            return Err(error(
                &format!(
                    "Invalid type for 'input': expected one of a string or array of input items, but got {got} instead."
                ),
                Some("input"),
                Some("invalid_type"),
            ));
        }
    };
    let mut turn = Turn { last_user: String::new(), outputs: vec![], ends_with_user: false };
    let mut calls: Vec<String> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let at = format!("input[{i}]");
        // A message may leave out its `type` (the "easy" input message).
        let kind = match item.get("type") {
            None if item.get("role").is_some() => "message",
            None => {
                return Err(error(
                    &format!("Missing required parameter: '{at}.type'."),
                    Some(&format!("{at}.type")),
                    Some("missing_required_parameter"),
                ));
            }
            Some(t) => t.as_str().unwrap_or_default(),
        };
        if !ITEM_TYPES.contains(&kind) {
            let msg = format!("Invalid value: '{kind}'. Supported values are: {ITEM_TYPES:?}.");
            return Err(error(&msg, Some(&format!("{at}.type")), Some("invalid_value")));
        }
        if kind != "function_call_output" {
            turn.outputs.clear();
        }
        turn.ends_with_user = false;
        match kind {
            "message" => {
                let role = required_str(item, "role", &at)?;
                if !MESSAGE_ROLES.contains(&role) {
                    let msg = format!("Invalid value: '{role}'. Supported values are: {MESSAGE_ROLES:?}.");
                    return Err(error(&msg, Some(&format!("{at}.role")), Some("invalid_value")));
                }
                let content = item.get("content").unwrap_or(&Value::Null);
                match content {
                    Value::String(_) => {}
                    Value::Array(parts) => {
                        for (j, p) in parts.iter().enumerate() {
                            let t = p.get("type").and_then(Value::as_str).unwrap_or_default();
                            if !PART_TYPES.contains(&t) {
                                let msg = format!("Invalid value: '{t}'. Supported values are: {PART_TYPES:?}.");
                                return Err(error(
                                    &msg,
                                    Some(&format!("{at}.content[{j}].type")),
                                    Some("invalid_value"),
                                ));
                            }
                        }
                    }
                    _ => {
                        return Err(error(
                            &format!("Missing required parameter: '{at}.content'."),
                            Some(&format!("{at}.content")),
                            Some("missing_required_parameter"),
                        ));
                    }
                }
                if role == "user" {
                    turn.last_user = text_of(content);
                    turn.ends_with_user = true;
                }
            }
            "function_call" => {
                required_str(item, "name", &at)?;
                required_str(item, "arguments", &at)?;
                calls.push(required_str(item, "call_id", &at)?.to_string());
            }
            "function_call_output" => {
                let id = required_str(item, "call_id", &at)?;
                if !calls.iter().any(|c| c == id) {
                    return Err(error(
                        &format!("No tool call found for function call output with call_id {id}."),
                        Some("input"),
                        None,
                    ));
                }
                let output = item.get("output").ok_or_else(|| {
                    let param = format!("{at}.output");
                    error(
                        &format!("Missing required parameter: '{param}'."),
                        Some(&param),
                        Some("missing_required_parameter"),
                    )
                })?;
                turn.outputs.push(output.as_str().map_or_else(|| text_of(output), str::to_owned));
            }
            _ => {}
        }
    }
    Ok(turn)
}

/// The function the model calls, with its parameter schema: tools are checked (a function
/// tool needs its `name`, in the flat Responses shape), then the one `tool_choice` names,
/// else the first function tool, unless `tool_choice` is "none".
fn chosen_function(body: &Value) -> Result<Option<(String, Value)>, Refusal> {
    let Some(tools) = body.get("tools").filter(|t| !t.is_null()) else { return Ok(None) };
    let Some(tools) = tools.as_array() else {
        return Err(error("Invalid type for 'tools': expected an array.", Some("tools"), Some("invalid_type")));
    };
    for (i, t) in tools.iter().enumerate() {
        if t.get("type").and_then(Value::as_str).is_none() {
            let param = format!("tools[{i}].type");
            return Err(error(&format!("Missing required parameter: '{param}'."), Some(&param), None));
        }
        if t["type"] == "function" && t.get("name").and_then(Value::as_str).is_none_or(str::is_empty) {
            let param = format!("tools[{i}].name");
            return Err(error(&format!("Missing required parameter: '{param}'."), Some(&param), None));
        }
    }
    let mut functions = tools.iter().filter(|t| t["type"] == "function");
    let tool = match body.get("tool_choice") {
        Some(Value::String(s)) if s == "none" => None,
        Some(c) if c.get("type").and_then(Value::as_str) == Some("function") => {
            let wanted = c.get("name").and_then(Value::as_str).unwrap_or_default();
            let found = functions.find(|t| t["name"] == wanted);
            if found.is_none() {
                return Err(error(
                    &format!("Tool choice '{wanted}' not found in 'tools' parameter."),
                    Some("tool_choice"),
                    None,
                ));
            }
            found
        }
        _ => functions.next(),
    };
    Ok(tool.map(|t| {
        (t["name"].as_str().unwrap_or_default().to_string(), t.get("parameters").cloned().unwrap_or(Value::Null))
    }))
}

enum Reply {
    Text(String),
    Call { name: String, arguments: String },
}

pub(crate) fn create(req: &Req<'_>) -> Response<Body> {
    answer(req).unwrap_or_else(|r| *r)
}

fn answer(req: &Req<'_>) -> Result<Response<Body>, Refusal> {
    let body = req.body;
    let Some(obj) = body.as_object() else {
        return Err(error("We could not parse the JSON body of your request.", None, None));
    };
    if let Some(k) = obj.keys().find(|k| !PARAMS.contains(&k.as_str())) {
        return Err(error(&format!("Unknown parameter: '{k}'."), Some(k), Some("unknown_parameter")));
    }
    if !matches!(obj.get("model"), Some(Value::String(m)) if !m.is_empty()) {
        return Err(error("Missing required parameter: 'model'.", Some("model"), Some("missing_required_parameter")));
    }
    if let Some(id) = obj.get("previous_response_id").filter(|v| !v.is_null()) {
        let id = id.as_str().map_or_else(|| id.to_string(), str::to_owned);
        return Err(error(
            &format!("Previous response with id '{id}' not found."),
            Some("previous_response_id"),
            Some("previous_response_not_found"),
        ));
    }
    if let Some(n) = obj.get("max_output_tokens").and_then(Value::as_i64).filter(|n| *n < 16) {
        return Err(error(
            &format!(
                "Invalid 'max_output_tokens': integer below minimum value. Expected a value >= 16, but got {n} instead."
            ),
            Some("max_output_tokens"),
            Some("integer_below_min_value"),
        ));
    }
    let stream = obj.get("stream").and_then(Value::as_bool).unwrap_or(false);
    if obj.get("stream_options").is_some_and(|v| !v.is_null()) && !stream {
        return Err(invalid(
            "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
            "stream_options",
        ));
    }
    let turn = validate_input(body)?;
    let function = chosen_function(body)?;
    let outputs = turn.outputs.join(" ");
    let reply = match function {
        _ if !turn.outputs.is_empty() => Reply::Text(format!("Hello from the demo upstream! The tool said: {outputs}")),
        Some((name, schema)) if turn.ends_with_user => {
            Reply::Call { arguments: tool_arguments(&schema, &turn.last_user), name }
        }
        _ => Reply::Text(format!("Hello from the demo upstream! You said: {}", turn.last_user)),
    };
    // A reasoning request gets a reasoning item first (encrypted content when included).
    let reasoning = obj.get("reasoning").is_some_and(|r| !r.is_null());
    let reasoning_tokens: u64 = if reasoning { 2 } else { 0 };
    let input_tokens = words(&turn.last_user) + if outputs.is_empty() { 0 } else { words(&outputs) };
    let output_tokens = reasoning_tokens
        + match &reply {
            Reply::Text(t) => words(t),
            Reply::Call { arguments, .. } => words(arguments),
        };
    let usage = json!({
        "input_tokens": input_tokens, "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": output_tokens, "output_tokens_details": {"reasoning_tokens": reasoning_tokens},
        "total_tokens": input_tokens + output_tokens,
    });
    let encrypted = obj
        .get("include")
        .and_then(Value::as_array)
        .is_some_and(|i| i.iter().any(|v| v == "reasoning.encrypted_content"));
    let reasoning_item = reasoning.then(|| {
        let mut item = json!({"id": REASONING_ID, "type": "reasoning", "summary": []});
        if encrypted {
            item["encrypted_content"] = json!("gAAAAdemo-encrypted");
        }
        item
    });
    let done_item = match &reply {
        Reply::Text(text) => json!({"id": MESSAGE_ID, "type": "message", "status": "completed", "role": "assistant",
            "content": [{"type": "output_text", "annotations": [], "logprobs": [], "text": text}]}),
        Reply::Call { name, arguments } => {
            json!({"id": FUNCTION_CALL_ID, "type": "function_call", "status": "completed",
            "arguments": arguments, "call_id": CALL_ID, "name": name})
        }
    };
    let output: Vec<Value> = reasoning_item.iter().cloned().chain([done_item.clone()]).collect();
    let whole = response_object(body, "completed", Value::Array(output), usage);
    if !stream {
        return Ok(delayed_json(req.headers, whole.to_string()));
    }

    let mut events = Vec::new();
    let mut head = whole.clone();
    head["status"] = json!("in_progress");
    head["output"] = json!([]);
    head["usage"] = Value::Null;
    push(&mut events, "response.created", json!({"response": head.clone()}));
    push(&mut events, "response.in_progress", json!({"response": head.clone()}));
    let mut index = 0;
    if let Some(item) = &reasoning_item {
        push(&mut events, "response.output_item.added", json!({"output_index": index, "item": item}));
        push(&mut events, "response.output_item.done", json!({"output_index": index, "item": item}));
        index += 1;
    }
    let n = chunk_count(req);
    let finish;
    match &reply {
        Reply::Text(text) => {
            let added = json!({"id": MESSAGE_ID, "type": "message", "status": "in_progress", "role": "assistant", "content": []});
            push(&mut events, "response.output_item.added", json!({"output_index": index, "item": added}));
            let at = json!({"item_id": MESSAGE_ID, "output_index": index, "content_index": 0});
            let with = |extra: Value| {
                let mut v = at.clone();
                if let (Some(v), Value::Object(extra)) = (v.as_object_mut(), extra) {
                    v.extend(extra);
                }
                v
            };
            let part = |text: &str| json!({"type": "output_text", "annotations": [], "logprobs": [], "text": text});
            push(&mut events, "response.content_part.added", with(json!({"part": part("")})));
            for piece in pieces(text, n) {
                push(
                    &mut events,
                    "response.output_text.delta",
                    with(json!({"delta": piece, "logprobs": [], "obfuscation": OBFUSCATION})),
                );
            }
            finish = events.len();
            push(&mut events, "response.output_text.done", with(json!({"text": text, "logprobs": []})));
            push(&mut events, "response.content_part.done", with(json!({"part": part(text)})));
        }
        Reply::Call { name, arguments } => {
            let added = json!({"id": FUNCTION_CALL_ID, "type": "function_call", "status": "in_progress",
                "arguments": "", "call_id": CALL_ID, "name": name});
            push(&mut events, "response.output_item.added", json!({"output_index": index, "item": added}));
            for piece in pieces(arguments, n) {
                push(
                    &mut events,
                    "response.function_call_arguments.delta",
                    json!({"item_id": FUNCTION_CALL_ID, "output_index": index, "delta": piece, "obfuscation": OBFUSCATION}),
                );
            }
            finish = events.len();
            push(
                &mut events,
                "response.function_call_arguments.done",
                json!({"item_id": FUNCTION_CALL_ID, "output_index": index, "arguments": arguments}),
            );
        }
    }
    if req.fault() == "response-failed" {
        events.truncate(finish);
        let mut failed = head;
        failed["status"] = json!("failed");
        failed["error"] = json!({"code": "server_error", "message": "The model failed to generate a response."});
        push(&mut events, "response.failed", json!({"response": failed}));
        // Nothing for the faults that cut at the answer's end to cut.
        let end = End { finish: events.len(), terminator: false };
        return Ok(event_stream(req, events, end, SSE));
    }
    push(&mut events, "response.output_item.done", json!({"output_index": index, "item": done_item}));
    push(&mut events, "response.completed", json!({"response": whole}));
    // `no-done` cuts from the event that ends the answer's text (or arguments) on;
    // `no-terminator` leaves out only `response.completed`, the terminal event.
    Ok(event_stream(req, events, End { finish, terminator: true }, SSE))
}

const SSE: &str = "text/event-stream; charset=utf-8";

/// One event as OpenAI frames it: its `type` as the SSE name and in the data, with the
/// next `sequence_number`.
fn push(events: &mut Vec<String>, kind: &str, mut data: Value) {
    data["type"] = json!(kind);
    data["sequence_number"] = json!(events.len());
    events.push(format!("event: {kind}\ndata: {data}\n\n"));
}

/// The Response object, echoing the request's parameters as OpenAI does.
fn response_object(body: &Value, status: &str, output: Value, usage: Value) -> Value {
    let get = |k: &str, default: Value| body.get(k).filter(|v| !v.is_null()).cloned().unwrap_or(default);
    json!({
        "id": RESPONSE_ID,
        "object": "response",
        "created_at": CREATED,
        "status": status,
        "background": get("background", json!(false)),
        "error": null,
        "incomplete_details": null,
        "instructions": get("instructions", Value::Null),
        "max_output_tokens": get("max_output_tokens", Value::Null),
        "max_tool_calls": get("max_tool_calls", Value::Null),
        "model": body["model"],
        "output": output,
        "parallel_tool_calls": get("parallel_tool_calls", json!(true)),
        "previous_response_id": null,
        "prompt_cache_key": get("prompt_cache_key", Value::Null),
        "reasoning": get("reasoning", json!({"effort": null, "summary": null})),
        "safety_identifier": get("safety_identifier", Value::Null),
        "service_tier": "default",
        "store": get("store", json!(true)),
        "temperature": get("temperature", json!(1.0)),
        "text": get("text", json!({"format": {"type": "text"}, "verbosity": "medium"})),
        "tool_choice": get("tool_choice", json!("auto")),
        "tools": get("tools", json!([])),
        "top_logprobs": get("top_logprobs", json!(0)),
        "top_p": get("top_p", json!(1.0)),
        "truncation": get("truncation", json!("disabled")),
        "usage": usage,
        "user": get("user", Value::Null),
        "metadata": get("metadata", json!({})),
    })
}
