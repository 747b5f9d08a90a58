//! Anthropic's Messages API, as the vendor speaks it: `x-api-key` and `anthropic-version`
//! headers, strict validation of the body (unknown fields, required fields, role
//! alternation, content blocks, tool_use/tool_result pairing), Message answers, the named
//! SSE event sequence, and `{"type":"error","error":{...}}` errors.
//!
//! Besides the shared knobs, `x-mock-fault: overloaded-mid-stream` sends an `error` event
//! (overloaded_error) after `message_start`, as Anthropic does under load.
//!
//! `POST /v1/messages/count_tokens` validates its body as Anthropic does (no `max_tokens`,
//! no `stream`) and counts deterministically, so a test can tell its answer from the
//! relay's estimate: [`count_tokens`].

use http::{Method, Response, StatusCode, header};
use serde_json::{Value, json};

use crate::{Body, End, Req, chunk_count, event_stream, json_response, not_json, pieces, words};

/// The top-level fields the Messages API accepts; others are "Extra inputs are not permitted".
const MESSAGE_PARAMS: &[&str] = &[
    "model",
    "messages",
    "system",
    "max_tokens",
    "metadata",
    "stop_sequences",
    "stream",
    "temperature",
    "top_p",
    "top_k",
    "tools",
    "tool_choice",
    "thinking",
    "service_tier",
];
/// The top-level fields `count_tokens` accepts (a Messages body without the output ones).
const COUNT_PARAMS: &[&str] = &["model", "messages", "system", "tools", "tool_choice", "thinking", "mcp_servers"];
const BAD_TOOL_CHOICE: &str =
    "tool_choice: Input tag does not match any of the expected tags: 'auto', 'any', 'tool', 'none'";
const IMAGE_TYPES: &[&str] = &["image/jpeg", "image/png", "image/gif", "image/webp"];
const MESSAGE_ID: &str = "msg_demo01AbCdEfGhIjKlMnOp";
const TOOL_USE_ID: &str = "toolu_demo01AbCdEfGhIjKlMn";

/// Anthropic's error `type` for an HTTP status.
fn error_kind(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        529 => "overloaded_error",
        _ => "api_error",
    }
}

fn error(status: StatusCode, message: &str) -> Response<Body> {
    let body = json!({"type": "error", "error": {"type": error_kind(status), "message": message},
        "request_id": "req_demo01"});
    json_response(status, body.to_string())
}

fn invalid(message: impl AsRef<str>) -> Response<Body> {
    error(StatusCode::BAD_REQUEST, message.as_ref())
}

pub(crate) async fn handle(req: &Req<'_>) -> Response<Body> {
    match req.header("x-api-key") {
        None => return error(StatusCode::UNAUTHORIZED, "x-api-key header is required"),
        Some(k) if k != req.options.api_key => return error(StatusCode::UNAUTHORIZED, "invalid x-api-key"),
        Some(_) => {}
    }
    if let Some(status) = req.mock_status() {
        let message = match status.as_u16() {
            529 => "Overloaded".to_string(),
            s => format!("Mock vendor error {s}"),
        };
        let mut r = error(status, &message);
        if status == StatusCode::TOO_MANY_REQUESTS {
            r.headers_mut().insert(header::RETRY_AFTER, "7".parse().expect("static"));
        }
        return r;
    }
    if req.fault() == "not-json" {
        return not_json();
    }
    match (req.method, req.path) {
        (&Method::POST, "/v1/messages") => messages(req),
        (&Method::POST, "/v1/messages/count_tokens") => count_tokens(req),
        _ => error(StatusCode::NOT_FOUND, "Not Found"),
    }
}

/// What the request asks the model to do, once validated.
struct Ask {
    model: String,
    max_tokens: u64,
    /// The text of the last user turn.
    last_user: String,
    /// The text of the tool results in the last user turn, when it carries any.
    tool_results: Option<String>,
    /// The tool to call, when tools are offered and the choice allows one.
    tool: Option<String>,
    stream: bool,
}

fn messages(req: &Req<'_>) -> Response<Body> {
    if req.header("anthropic-version").is_none() {
        return invalid("anthropic-version: header is required");
    }
    let ask = match validate(req.body) {
        Ok(a) => a,
        Err(message) => return invalid(message),
    };
    let prompt_tokens = words(&ask.last_user) + ask.tool_results.as_deref().map_or(0, words);
    let (blocks, stop_reason) = reply(&ask);
    let output_tokens: u64 = blocks.iter().map(|b| b["text"].as_str().map_or(1, words)).sum();
    if !ask.stream {
        let body = json!({
            "id": MESSAGE_ID, "type": "message", "role": "assistant", "model": ask.model,
            "content": blocks, "stop_reason": stop_reason, "stop_sequence": null,
            "usage": {"input_tokens": prompt_tokens, "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 0, "output_tokens": output_tokens, "service_tier": "standard"},
        });
        return json_response(StatusCode::OK, body.to_string());
    }

    let event = |name: &str, data: Value| format!("event: {name}\ndata: {data}\n\n");
    let mut events = vec![event(
        "message_start",
        json!({"type": "message_start", "message": {"id": MESSAGE_ID, "type": "message", "role": "assistant",
            "model": ask.model, "content": [], "stop_reason": null, "stop_sequence": null,
            "usage": {"input_tokens": prompt_tokens, "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 0, "output_tokens": 1, "service_tier": "standard"}}}),
    )];
    if req.fault() == "overloaded-mid-stream" {
        events.push(event(
            "error",
            json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}),
        ));
        let end = End { finish: events.len(), terminator: false };
        return event_stream(req, events, end, "text/event-stream; charset=utf-8");
    }
    let n = chunk_count(req);
    for (index, block) in blocks.iter().enumerate() {
        let (start, deltas) = match block["type"].as_str() {
            Some("tool_use") => {
                let input = block["input"].to_string();
                let start = json!({"type": "tool_use", "id": block["id"], "name": block["name"], "input": {}});
                let deltas: Vec<Value> = pieces(&input, n)
                    .into_iter()
                    .map(|p| json!({"type": "input_json_delta", "partial_json": p}))
                    .collect();
                (start, deltas)
            }
            _ => {
                let text = block["text"].as_str().unwrap_or_default();
                let deltas = pieces(text, n).into_iter().map(|p| json!({"type": "text_delta", "text": p})).collect();
                (json!({"type": "text", "text": ""}), deltas)
            }
        };
        events.push(event(
            "content_block_start",
            json!({"type": "content_block_start", "index": index, "content_block": start}),
        ));
        if index == 0 {
            events.push(event("ping", json!({"type": "ping"})));
        }
        for delta in deltas {
            events.push(event(
                "content_block_delta",
                json!({"type": "content_block_delta", "index": index, "delta": delta}),
            ));
        }
        events.push(event("content_block_stop", json!({"type": "content_block_stop", "index": index})));
    }
    let end = End { finish: events.len(), terminator: true };
    events.push(event(
        "message_delta",
        json!({"type": "message_delta", "delta": {"stop_reason": stop_reason, "stop_sequence": null},
            "usage": {"output_tokens": output_tokens}}),
    ));
    events.push(event("message_stop", json!({"type": "message_stop"})));
    event_stream(req, events, end, "text/event-stream; charset=utf-8")
}

/// `{"input_tokens": N}`: the whitespace-separated words of every string in `system`,
/// `messages` and `tools` (names, descriptions, schemas) plus 3 per message, then doubled
/// plus 1 (odd, so it never equals a count that happens to be even, and far from the
/// relay's estimate of a quarter of the bytes).
fn count_tokens(req: &Req<'_>) -> Response<Body> {
    if req.header("anthropic-version").is_none() {
        return invalid("anthropic-version: header is required");
    }
    let Some(obj) = req.body.as_object() else { return invalid("The request body is not valid JSON.") };
    if let Some(k) = obj.keys().find(|k| !COUNT_PARAMS.contains(&k.as_str())) {
        return invalid(format!("{k}: Extra inputs are not permitted"));
    }
    match obj.get("model") {
        Some(Value::String(m)) if !m.is_empty() => {}
        Some(_) => return invalid("model: Input should be a valid string"),
        None => return invalid("model: Field required"),
    }
    let checked = validate_system(obj.get("system"))
        .and_then(|()| validate_tools(obj.get("tools")))
        .and_then(|tools| validate_tool_choice(obj.get("tool_choice"), &tools))
        .and_then(|_| validate_messages(obj.get("messages")));
    if let Err(message) = checked {
        return invalid(message);
    }
    fn words_in(v: &Value) -> u64 {
        match v {
            Value::String(s) => s.split_whitespace().count() as u64,
            Value::Array(a) => a.iter().map(words_in).sum(),
            Value::Object(o) => o.iter().map(|(k, v)| if k == "type" { 0 } else { words_in(v) }).sum(),
            _ => 0,
        }
    }
    let messages = obj.get("messages").and_then(Value::as_array).map_or(0, Vec::len) as u64;
    let words: u64 = ["system", "messages", "tools"].iter().filter_map(|k| obj.get(*k)).map(words_in).sum();
    let n = (words + 3 * messages) * 2 + 1;
    json_response(StatusCode::OK, json!({"input_tokens": n}).to_string())
}

/// The content blocks and stop reason of the answer.
fn reply(ask: &Ask) -> (Vec<Value>, &'static str) {
    if let Some(results) = &ask.tool_results {
        let text = format!("Hello from the demo upstream! The tool said: {results}");
        return (vec![json!({"type": "text", "text": text})], "end_turn");
    }
    if let Some(tool) = &ask.tool {
        // As Claude does: a sentence, then the call.
        let blocks = vec![
            json!({"type": "text", "text": format!("I'll call {tool}.")}),
            json!({"type": "tool_use", "id": TOOL_USE_ID, "name": tool, "input": {"query": ask.last_user}}),
        ];
        return (blocks, "tool_use");
    }
    let text = format!("Hello from the demo upstream! You said: {}", ask.last_user);
    let all: Vec<&str> = text.split_whitespace().collect();
    if all.len() as u64 > ask.max_tokens {
        // One word per token: the answer stops at max_tokens, as a real model's would.
        let cut = all[..ask.max_tokens as usize].join(" ");
        return (vec![json!({"type": "text", "text": cut})], "max_tokens");
    }
    (vec![json!({"type": "text", "text": text})], "end_turn")
}

fn validate(body: &Value) -> Result<Ask, String> {
    let Some(obj) = body.as_object() else {
        return Err("The request body is not valid JSON.".into());
    };
    if let Some(k) = obj.keys().find(|k| !MESSAGE_PARAMS.contains(&k.as_str())) {
        return Err(format!("{k}: Extra inputs are not permitted"));
    }
    let model = match obj.get("model") {
        Some(Value::String(m)) if !m.is_empty() => m.clone(),
        Some(_) => return Err("model: Input should be a valid string".into()),
        None => return Err("model: Field required".into()),
    };
    let max_tokens = match obj.get("max_tokens") {
        None => return Err("max_tokens: Field required".into()),
        Some(v) => match v.as_u64() {
            Some(n) if n >= 1 => n,
            Some(_) => return Err("max_tokens: Input should be greater than or equal to 1".into()),
            None => return Err("max_tokens: Input should be a valid integer".into()),
        },
    };
    for (key, max) in [("temperature", 1.0), ("top_p", 1.0)] {
        if let Some(v) = obj.get(key) {
            match v.as_f64() {
                Some(x) if (0.0..=max).contains(&x) => {}
                Some(_) => return Err(format!("{key}: Input should be less than or equal to {max}")),
                None => return Err(format!("{key}: Input should be a valid number")),
            }
        }
    }
    if let Some(v) = obj.get("stream")
        && !v.is_boolean()
    {
        return Err("stream: Input should be a valid boolean".into());
    }
    if let Some(v) = obj.get("stop_sequences")
        && !v.as_array().is_some_and(|a| a.iter().all(Value::is_string))
    {
        return Err("stop_sequences: Input should be a valid list of strings".into());
    }
    if let Some(m) = obj.get("metadata") {
        let Some(m) = m.as_object() else { return Err("metadata: Input should be a valid dictionary".into()) };
        if let Some(k) = m.keys().find(|k| *k != "user_id") {
            return Err(format!("metadata.{k}: Extra inputs are not permitted"));
        }
    }
    validate_system(obj.get("system"))?;
    let tools = validate_tools(obj.get("tools"))?;
    let tool = validate_tool_choice(obj.get("tool_choice"), &tools)?;
    let (last_user, tool_results) = validate_messages(obj.get("messages"))?;
    let stream = obj.get("stream").and_then(Value::as_bool).unwrap_or(false);
    Ok(Ask { model, max_tokens, last_user, tool_results, tool, stream })
}

fn validate_system(system: Option<&Value>) -> Result<(), String> {
    match system {
        None | Some(Value::String(_)) => Ok(()),
        Some(Value::Array(blocks)) => {
            for (i, b) in blocks.iter().enumerate() {
                if b["type"] != "text" {
                    return Err(format!("system.{i}.type: Input should be 'text'"));
                }
                check_block(b, &format!("system.{i}"))?;
            }
            Ok(())
        }
        Some(_) => Err("system: Input should be a valid string or list of text blocks".into()),
    }
}

/// The offered tools' names.
fn validate_tools(tools: Option<&Value>) -> Result<Vec<String>, String> {
    let Some(tools) = tools else { return Ok(vec![]) };
    let Some(tools) = tools.as_array() else { return Err("tools: Input should be a valid list".into()) };
    let mut names = Vec::new();
    for (i, t) in tools.iter().enumerate() {
        let Some(obj) = t.as_object() else { return Err(format!("tools.{i}: Input should be a valid dictionary")) };
        if let Some(k) =
            obj.keys().find(|k| !["name", "description", "input_schema", "cache_control", "type"].contains(&k.as_str()))
        {
            return Err(format!("tools.{i}.custom.{k}: Extra inputs are not permitted"));
        }
        let name = obj.get("name").and_then(Value::as_str).unwrap_or_default();
        let valid = !name.is_empty()
            && name.len() <= 64
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !valid {
            return Err(format!("tools.{i}.custom.name: String should match pattern '^[a-zA-Z0-9_-]{{1,64}}$'"));
        }
        match obj.get("input_schema") {
            None => return Err(format!("tools.{i}.custom.input_schema: Field required")),
            Some(s) if s["type"] != "object" => {
                return Err(format!("tools.{i}.custom.input_schema.type: Input should be 'object'"));
            }
            Some(_) => {}
        }
        names.push(name.to_string());
    }
    Ok(names)
}

/// The tool the mock model will call, if any.
fn validate_tool_choice(choice: Option<&Value>, tools: &[String]) -> Result<Option<String>, String> {
    let first = tools.first().cloned();
    let Some(choice) = choice else { return Ok(first) };
    let Some(obj) = choice.as_object() else { return Err("tool_choice: Input should be a valid dictionary".into()) };
    let kind = obj.get("type").and_then(Value::as_str).unwrap_or_default();
    let allowed: &[&str] = match kind {
        "auto" | "any" => &["type", "disable_parallel_tool_use"],
        "tool" => &["type", "name", "disable_parallel_tool_use"],
        "none" => &["type"],
        _ => return Err(BAD_TOOL_CHOICE.into()),
    };
    if let Some(k) = obj.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(format!("tool_choice.{kind}.{k}: Extra inputs are not permitted"));
    }
    if let Some(v) = obj.get("disable_parallel_tool_use")
        && !v.is_boolean()
    {
        return Err(format!("tool_choice.{kind}.disable_parallel_tool_use: Input should be a valid boolean"));
    }
    if kind != "none" && tools.is_empty() {
        return Err("tool_choice may only be specified while providing tools.".into());
    }
    match kind {
        "none" => Ok(None),
        "tool" => {
            let name = obj.get("name").and_then(Value::as_str).ok_or("tool_choice.tool.name: Field required")?;
            if !tools.iter().any(|t| t == name) {
                return Err(format!("Tool '{name}' not found in provided tools"));
            }
            Ok(Some(name.to_string()))
        }
        _ => Ok(first),
    }
}

/// The last user turn's text and tool results.
fn validate_messages(messages: Option<&Value>) -> Result<(String, Option<String>), String> {
    let Some(messages) = messages else { return Err("messages: Field required".into()) };
    let Some(messages) = messages.as_array() else { return Err("messages: Input should be a valid list".into()) };
    if messages.is_empty() {
        return Err("messages: at least one message is required".into());
    }
    let mut last_user = String::new();
    let mut tool_results = None;
    let mut previous_tool_uses: Vec<String> = Vec::new();
    for (i, m) in messages.iter().enumerate() {
        let Some(obj) = m.as_object() else { return Err(format!("messages.{i}: Input should be a valid dictionary")) };
        if let Some(k) = obj.keys().find(|k| *k != "role" && *k != "content") {
            return Err(format!("messages.{i}.{k}: Extra inputs are not permitted"));
        }
        let role = obj.get("role").and_then(Value::as_str).unwrap_or_default();
        match role {
            "user" | "assistant" => {}
            "system" => {
                return Err("messages: Unexpected role \"system\". The Messages API accepts a top-level `system` \
                            parameter, not \"system\" as an input message role."
                    .into());
            }
            _ => return Err(format!("messages.{i}.role: Input should be 'user' or 'assistant'")),
        }
        if i == 0 && role != "user" {
            return Err("messages: first message must use the \"user\" role".into());
        }
        if i > 0 && messages[i - 1]["role"] == role {
            return Err(format!(
                "messages: roles must alternate between \"user\" and \"assistant\", but found multiple \"{role}\" roles in a row"
            ));
        }
        let blocks = match obj.get("content") {
            None => return Err(format!("messages.{i}.content: Field required")),
            Some(Value::String(s)) => vec![json!({"type": "text", "text": s})],
            Some(Value::Array(a)) if !a.is_empty() => a.clone(),
            Some(Value::Array(_)) => {
                return Err(format!(
                    "messages.{i}: all messages must have non-empty content except for the optional final assistant message"
                ));
            }
            Some(_) => return Err(format!("messages.{i}.content: Input should be a valid list")),
        };
        let mut uses = Vec::new();
        let mut answered = Vec::new();
        let mut texts = Vec::new();
        let mut results = Vec::new();
        for (j, b) in blocks.iter().enumerate() {
            let at = format!("messages.{i}.content.{j}");
            check_block(b, &at)?;
            match (b["type"].as_str().unwrap_or_default(), role) {
                ("text", _) => texts.push(b["text"].as_str().unwrap_or_default().to_string()),
                ("image", "user") => {}
                ("tool_use", "assistant") => uses.push(b["id"].as_str().unwrap_or_default().to_string()),
                ("tool_result", "user") => {
                    if answered.len() != j {
                        return Err(format!("{at}: tool_result blocks must come before any other content"));
                    }
                    let id = b["tool_use_id"].as_str().unwrap_or_default().to_string();
                    if !previous_tool_uses.contains(&id) {
                        return Err(format!(
                            "messages.{i}.content.{j}: unexpected `tool_use_id` found in `tool_result` blocks: {id}. \
                             Each `tool_result` block must have a corresponding `tool_use` block in the previous message."
                        ));
                    }
                    answered.push(id);
                    results.push(result_text(&b["content"]));
                }
                (kind, _) => return Err(format!("{at}: a {kind} block is not allowed in a {role} message")),
            }
        }
        if role == "user" {
            if let Some(missing) = previous_tool_uses.iter().find(|id| !answered.contains(id)) {
                return Err(format!(
                    "messages.{i}: `tool_use` ids were found without `tool_result` blocks immediately after: {missing}. \
                     Each `tool_use` block must have a corresponding `tool_result` block in the next message."
                ));
            }
            last_user = texts.join(" ");
            tool_results = (!results.is_empty()).then(|| results.join(" "));
        }
        previous_tool_uses = uses;
    }
    Ok((last_user, tool_results))
}

fn result_text(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(a) => a.iter().filter_map(|b| b["text"].as_str()).collect::<Vec<_>>().join(" "),
        _ => String::new(),
    }
}

/// One content block's own shape: its type, its fields, nothing else.
fn check_block(b: &Value, at: &str) -> Result<(), String> {
    let Some(obj) = b.as_object() else { return Err(format!("{at}: Input should be a valid dictionary")) };
    let kind = obj.get("type").and_then(Value::as_str).unwrap_or_default();
    let allowed: &[&str] = match kind {
        "text" => &["type", "text", "cache_control", "citations"],
        "image" => &["type", "source", "cache_control"],
        "tool_use" => &["type", "id", "name", "input", "cache_control"],
        "tool_result" => &["type", "tool_use_id", "content", "is_error", "cache_control"],
        _ => {
            return Err(format!(
                "{at}: Input tag '{kind}' found using 'type' does not match any of the expected tags: 'text', 'image', 'tool_use', 'tool_result'"
            ));
        }
    };
    if let Some(k) = obj.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(format!("{at}.{kind}.{k}: Extra inputs are not permitted"));
    }
    let field = |k: &str| obj.get(k).filter(|v| !v.is_null());
    match kind {
        "text" => match field("text").and_then(Value::as_str) {
            None => Err(format!("{at}.text.text: Field required")),
            Some("") => Err("messages: text content blocks must be non-empty".into()),
            Some(_) => Ok(()),
        },
        "image" => check_image_source(field("source"), at),
        "tool_use" => {
            if field("id").and_then(Value::as_str).is_none() || field("name").and_then(Value::as_str).is_none() {
                return Err(format!("{at}.tool_use: id and name are required"));
            }
            match field("input") {
                Some(Value::Object(_)) => Ok(()),
                _ => Err(format!("{at}.tool_use.input: Input should be a valid dictionary")),
            }
        }
        _ => {
            if field("tool_use_id").and_then(Value::as_str).is_none() {
                return Err(format!("{at}.tool_result.tool_use_id: Field required"));
            }
            match field("content") {
                None | Some(Value::String(_)) => Ok(()),
                Some(Value::Array(parts)) => {
                    for (k, p) in parts.iter().enumerate() {
                        let inner = format!("{at}.tool_result.content.{k}");
                        if !matches!(p["type"].as_str(), Some("text" | "image")) {
                            return Err(format!("{inner}: Input tag does not match 'text' or 'image'"));
                        }
                        check_block(p, &inner)?;
                    }
                    Ok(())
                }
                Some(_) => Err(format!("{at}.tool_result.content: Input should be a valid string or list")),
            }
        }
    }
}

fn check_image_source(source: Option<&Value>, at: &str) -> Result<(), String> {
    let Some(src) = source.and_then(Value::as_object) else {
        return Err(format!("{at}.image.source: Field required"));
    };
    let keys = |allowed: &[&str]| src.keys().find(|k| !allowed.contains(&k.as_str())).cloned();
    match src.get("type").and_then(Value::as_str) {
        Some("base64") => {
            if let Some(k) = keys(&["type", "media_type", "data"]) {
                return Err(format!("{at}.image.source.base64.{k}: Extra inputs are not permitted"));
            }
            let media = src.get("media_type").and_then(Value::as_str).unwrap_or_default();
            if !IMAGE_TYPES.contains(&media) {
                return Err(format!(
                    "{at}.image.source.base64.media_type: Input should be 'image/jpeg', 'image/png', 'image/gif' or 'image/webp'"
                ));
            }
            match src.get("data").and_then(Value::as_str) {
                Some(d) if !d.is_empty() && d.bytes().all(|b| b.is_ascii_alphanumeric() || b"+/=".contains(&b)) => {
                    Ok(())
                }
                _ => Err(format!("{at}.image.source.base64.data: invalid base64 data")),
            }
        }
        Some("url") => {
            if let Some(k) = keys(&["type", "url"]) {
                return Err(format!("{at}.image.source.url.{k}: Extra inputs are not permitted"));
            }
            match src.get("url").and_then(Value::as_str) {
                Some(u) if u.starts_with("https://") || u.starts_with("http://") => Ok(()),
                _ => Err(format!("{at}.image.source.url.url: Input should be a valid URL")),
            }
        }
        _ => Err(format!("{at}.image.source: Input tag does not match any of the expected tags: 'base64', 'url'")),
    }
}
