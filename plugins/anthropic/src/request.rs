//! OpenAI chat request → Anthropic Messages request.

use relay_plugin_kit::openai::{ChatRequest, Content, ContentPart, Message, Tool, ToolChoice, parse_data_url};
use relay_plugin_kit::prelude::*;
use serde_json::{Map, Value, json};

/// The Messages endpoint, appended to the channel's `base_url` (`https://api.anthropic.com`).
pub const PATH: &str = "/v1/messages";
/// Anthropic's token counter for a Messages body (no `max_tokens`), under the same base URL.
pub const COUNT_TOKENS_PATH: &str = "/v1/messages/count_tokens";
/// The `anthropic-version` header when the channel sets no `anthropic_version`.
pub const DEFAULT_ANTHROPIC_VERSION: &str = "2023-06-01";
/// `max_tokens` when neither the client nor the channel's `max_tokens` setting gives one:
/// Anthropic requires the field, OpenAI does not.
pub const DEFAULT_MAX_TOKENS: u64 = 4096;

const VENDOR: &str = "Anthropic";

/// Extra OpenAI fields this adapter maps (`parallel_tool_calls`, `top_k`) or accepts only
/// at their neutral value (checked in [`check_neutral`]); all others are refused.
const TOLERATED: &[&str] = &[
    "parallel_tool_calls",
    "top_k",
    "store",
    "logprobs",
    "logit_bias",
    "presence_penalty",
    "frequency_penalty",
    "response_format",
];

/// The Anthropic request for an OpenAI chat request, with its headers.
pub fn transform(ctx: &CallContext, body: &str) -> Result<UpstreamRequest, AdapterError> {
    let req = ChatRequest::parse(body)?;
    check_neutral(&req)?;
    req.reject_extra(TOLERATED, VENDOR)?;
    if req.n.is_some_and(|n| n > 1) {
        return Err(unsupported("'n' > 1 is not supported by Anthropic: it answers with one choice"));
    }

    let mut out = Map::new();
    out.insert("model".into(), req.model.clone().into());
    out.insert("max_tokens".into(), max_tokens(ctx, &req)?.into());
    let (system, messages) = map_messages(&req.messages)?;
    if let Some(s) = system {
        out.insert("system".into(), s.into());
    }
    out.insert("messages".into(), messages.into());
    if let Some(t) = req.temperature {
        out.insert("temperature".into(), t.into());
    }
    if let Some(p) = req.top_p {
        out.insert("top_p".into(), p.into());
    }
    if let Some(k) = req.extra.get("top_k").filter(|v| !v.is_null()) {
        out.insert("top_k".into(), k.clone());
    }
    if let Some(stop) = req.stop.clone() {
        out.insert("stop_sequences".into(), stop.into_vec().into());
    }
    if let Some(tools) = &req.tools {
        let mapped = tools.iter().enumerate().map(|(i, t)| map_tool(i, t)).collect::<Result<Vec<_>, _>>()?;
        out.insert("tools".into(), mapped.into());
    }
    if let Some(choice) = tool_choice(&req)? {
        out.insert("tool_choice".into(), choice);
    }
    if let Some(user) = &req.user {
        out.insert("metadata".into(), json!({"user_id": user}));
    }
    if req.stream == Some(true) {
        out.insert("stream".into(), true.into());
    }

    Ok(UpstreamRequest {
        method: "POST".into(),
        path: PATH.into(),
        headers: headers(ctx),
        body: Value::Object(out).to_string(),
    })
}

/// The headers of every Messages call: the channel's `anthropic-version` and, for a
/// stream, `accept: text/event-stream`.
pub fn headers(ctx: &CallContext) -> Vec<Header> {
    let version = ctx.setting("anthropic_version").unwrap_or(DEFAULT_ANTHROPIC_VERSION);
    let mut headers = vec![Header { name: "anthropic-version".into(), value: version.into() }];
    if ctx.stream {
        headers.push(Header { name: "accept".into(), value: "text/event-stream".into() });
    }
    headers
}

/// Fields Anthropic has no equivalent for, accepted only when they ask for nothing.
fn check_neutral(req: &ChatRequest) -> Result<(), AdapterError> {
    for (key, v) in req.extra.iter().filter(|(_, v)| !v.is_null()) {
        let neutral = match key.as_str() {
            "logprobs" | "store" => v == &Value::Bool(false),
            "presence_penalty" | "frequency_penalty" => v.as_f64() == Some(0.0),
            "logit_bias" => v.as_object().is_some_and(Map::is_empty),
            "response_format" => v.get("type").and_then(Value::as_str) == Some("text"),
            _ => continue,
        };
        if !neutral {
            let what = match key.as_str() {
                "response_format" => {
                    let kind = v.get("type").and_then(Value::as_str).unwrap_or("?");
                    format!("'response_format' of type '{kind}'")
                }
                _ => format!("'{key}'"),
            };
            return Err(unsupported(format!("{what} is not supported by {VENDOR}")));
        }
    }
    Ok(())
}

fn max_tokens(ctx: &CallContext, req: &ChatRequest) -> Result<u64, AdapterError> {
    if let Some(n) = req.max_output_tokens() {
        return Ok(n);
    }
    match ctx.setting("max_tokens") {
        None => Ok(DEFAULT_MAX_TOKENS),
        Some(s) => s.parse::<u64>().ok().filter(|n| *n > 0).ok_or_else(|| {
            AdapterError::Internal(format!("the channel setting max_tokens must be a positive integer, not '{s}'"))
        }),
    }
}

/// One Anthropic turn being built; consecutive messages of one role share a turn.
struct Turn {
    role: &'static str,
    blocks: Vec<Value>,
}

/// The top-level `system` text and the alternating user/assistant turns.
fn map_messages(messages: &[Message]) -> Result<(Option<String>, Vec<Value>), AdapterError> {
    let mut system = Vec::new();
    let mut turns: Vec<Turn> = Vec::new();
    for (i, m) in messages.iter().enumerate() {
        let (role, blocks) = match m.role.as_str() {
            "system" | "developer" => {
                system.push(system_text(i, m)?);
                continue;
            }
            "user" => ("user", user_blocks(i, m.content.as_ref())?),
            "assistant" => ("assistant", assistant_blocks(i, m)?),
            "tool" => ("user", vec![tool_result(i, m)?]),
            "function" => {
                return Err(unsupported(format!(
                    "messages[{i}]: the legacy 'function' role is not supported by {VENDOR}; use tools"
                )));
            }
            other => return Err(invalid_request(format!("messages[{i}]: unknown role '{other}'"))),
        };
        match turns.last_mut() {
            Some(last) if last.role == role => last.blocks.extend(blocks),
            _ => turns.push(Turn { role, blocks }),
        }
    }
    if turns.is_empty() {
        return Err(invalid_request(format!("{VENDOR} needs at least one user or assistant message")));
    }
    let system = system.join("\n\n");
    let turns = turns.into_iter().map(turn_json).collect();
    Ok(((!system.is_empty()).then_some(system), turns))
}

fn turn_json(mut turn: Turn) -> Value {
    // Anthropic wants a user turn's tool results before anything else in it.
    turn.blocks.sort_by_key(|b| b["type"] != "tool_result");
    let content = match turn.blocks.as_slice() {
        [only] if only["type"] == "text" => only["text"].clone(),
        _ => Value::Array(turn.blocks),
    };
    json!({"role": turn.role, "content": content})
}

fn system_text(i: usize, m: &Message) -> Result<String, AdapterError> {
    match &m.content {
        None => Ok(String::new()),
        Some(Content::Text(t)) => Ok(t.clone()),
        Some(c @ Content::Parts(parts)) => {
            if parts.iter().any(|p| !matches!(p, ContentPart::Text { .. })) {
                return Err(invalid_request(format!(
                    "messages[{i}]: a {} message may only hold text for {VENDOR}",
                    m.role
                )));
            }
            Ok(c.text())
        }
    }
}

fn text_block(text: &str) -> Value {
    json!({"type": "text", "text": text})
}

fn user_blocks(i: usize, content: Option<&Content>) -> Result<Vec<Value>, AdapterError> {
    match content {
        None => Err(invalid_request(format!("messages[{i}]: content is required"))),
        Some(Content::Text(t)) => Ok(vec![text_block(t)]),
        Some(Content::Parts(parts)) => parts.iter().map(|p| part_block(i, p)).collect(),
    }
}

fn part_block(i: usize, part: &ContentPart) -> Result<Value, AdapterError> {
    match part {
        ContentPart::Text { text } => Ok(text_block(text)),
        ContentPart::ImageUrl { image_url } => image_block(i, &image_url.url),
        ContentPart::Other => {
            Err(unsupported(format!("messages[{i}]: only text and image_url content parts are supported by {VENDOR}")))
        }
    }
}

fn image_block(i: usize, url: &str) -> Result<Value, AdapterError> {
    if url.starts_with("data:") {
        let (media_type, data) = parse_data_url(url).ok_or_else(|| {
            invalid_request(format!("messages[{i}]: an image data URL must be base64 (data:<media type>;base64,...)"))
        })?;
        Ok(json!({"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}}))
    } else if url.starts_with("https://") || url.starts_with("http://") {
        Ok(json!({"type": "image", "source": {"type": "url", "url": url}}))
    } else {
        Err(invalid_request(format!("messages[{i}]: an image URL must be an http(s) or base64 data: URL")))
    }
}

fn assistant_blocks(i: usize, m: &Message) -> Result<Vec<Value>, AdapterError> {
    let mut blocks = Vec::new();
    match &m.content {
        None => {}
        Some(Content::Text(t)) => blocks.push(text_block(t)),
        Some(Content::Parts(parts)) => {
            for p in parts {
                match p {
                    ContentPart::Text { text } => blocks.push(text_block(text)),
                    _ => {
                        return Err(invalid_request(format!("messages[{i}]: assistant content parts must be text")));
                    }
                }
            }
        }
    }
    // OpenAI clients echo `"content": ""` beside tool calls; Anthropic refuses empty text.
    blocks.retain(|b| b["text"] != "");
    for (j, call) in m.tool_calls.iter().flatten().enumerate() {
        if call.kind != "function" {
            return Err(unsupported(format!(
                "messages[{i}].tool_calls[{j}]: tool call type '{}' is not supported by {VENDOR}",
                call.kind
            )));
        }
        let args = call.function.arguments.trim();
        // A call without parameters may carry empty arguments; Anthropic needs an object.
        let input: Value = if args.is_empty() {
            json!({})
        } else {
            serde_json::from_str(args).map_err(|e| {
                invalid_request(format!(
                    "messages[{i}].tool_calls[{j}] (id '{}'): the arguments are not valid JSON: {e}",
                    call.id
                ))
            })?
        };
        if !input.is_object() {
            return Err(invalid_request(format!(
                "messages[{i}].tool_calls[{j}] (id '{}'): the arguments must be a JSON object",
                call.id
            )));
        }
        blocks.push(json!({"type": "tool_use", "id": call.id, "name": call.function.name, "input": input}));
    }
    if blocks.is_empty() {
        return Err(invalid_request(format!("messages[{i}]: an assistant message needs content or tool_calls")));
    }
    Ok(blocks)
}

fn tool_result(i: usize, m: &Message) -> Result<Value, AdapterError> {
    let id = m
        .tool_call_id
        .as_deref()
        .ok_or_else(|| invalid_request(format!("messages[{i}]: a tool message needs tool_call_id")))?;
    let mut block = json!({"type": "tool_result", "tool_use_id": id});
    match &m.content {
        None => {}
        Some(Content::Text(t)) => block["content"] = t.as_str().into(),
        Some(Content::Parts(parts)) => {
            let parts = parts.iter().map(|p| part_block(i, p)).collect::<Result<Vec<_>, _>>()?;
            block["content"] = parts.into();
        }
    }
    Ok(block)
}

fn map_tool(i: usize, t: &Tool) -> Result<Value, AdapterError> {
    if t.kind != "function" {
        return Err(unsupported(format!("tools[{i}]: tool type '{}' is not supported by {VENDOR}", t.kind)));
    }
    // OpenAI allows a function without parameters; Anthropic requires a schema.
    let schema = t.function.parameters.clone().unwrap_or_else(|| json!({"type": "object", "properties": {}}));
    let mut v = json!({"name": t.function.name, "input_schema": schema});
    if let Some(d) = &t.function.description {
        v["description"] = d.as_str().into();
    }
    Ok(v)
}

/// `tool_choice`, with `parallel_tool_calls: false` carried as `disable_parallel_tool_use`.
fn tool_choice(req: &ChatRequest) -> Result<Option<Value>, AdapterError> {
    let mut choice = match &req.tool_choice {
        None => None,
        Some(ToolChoice::Mode(mode)) => Some(match mode.as_str() {
            "auto" => json!({"type": "auto"}),
            "required" => json!({"type": "any"}),
            "none" => json!({"type": "none"}),
            other => return Err(invalid_request(format!("tool_choice: unknown value '{other}'"))),
        }),
        Some(ToolChoice::Named(named)) => {
            if named.kind != "function" {
                return Err(unsupported(format!("tool_choice: type '{}' is not supported by {VENDOR}", named.kind)));
            }
            Some(json!({"type": "tool", "name": named.function.name}))
        }
    };
    let serial = req.extra.get("parallel_tool_calls") == Some(&Value::Bool(false));
    if serial && req.tools.as_ref().is_some_and(|t| !t.is_empty()) {
        // Auto is Anthropic's default choice, so making it explicit changes nothing else.
        let c = choice.get_or_insert_with(|| json!({"type": "auto"}));
        if c["type"] != "none" {
            c["disable_parallel_tool_use"] = true.into();
        }
    }
    Ok(choice)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(settings: &[(&str, &str)]) -> CallContext {
        CallContext {
            request_id: "r1".into(),
            endpoint: Endpoint::ChatCompletions,
            model: "claude-x".into(),
            stream: false,
            include_usage: false,
            settings: settings.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        }
    }

    fn map(body: Value) -> Value {
        map_with(&[], body)
    }

    fn map_with(settings: &[(&str, &str)], body: Value) -> Value {
        let r = transform(&ctx(settings), &body.to_string()).unwrap();
        serde_json::from_str(&r.body).unwrap()
    }

    fn refused(body: Value) -> AdapterError {
        transform(&ctx(&[]), &body.to_string()).unwrap_err()
    }

    #[test]
    fn system_user_and_parameters() {
        let r = transform(
            &ctx(&[]),
            &json!({"model": "claude-x", "temperature": 0.3, "top_p": 0.9, "stop": "END", "user": "u-1",
                "messages": [
                    {"role": "system", "content": "be brief"},
                    {"role": "developer", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
                    {"role": "user", "content": "hi"}]})
            .to_string(),
        )
        .unwrap();
        assert_eq!((r.method.as_str(), r.path.as_str()), ("POST", "/v1/messages"));
        assert_eq!(r.headers.len(), 1);
        assert_eq!((r.headers[0].name.as_str(), r.headers[0].value.as_str()), ("anthropic-version", "2023-06-01"));
        let v: Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(
            v,
            json!({"model": "claude-x", "max_tokens": DEFAULT_MAX_TOKENS, "system": "be brief\n\na\nb",
                "messages": [{"role": "user", "content": "hi"}], "temperature": 0.3, "top_p": 0.9,
                "stop_sequences": ["END"], "metadata": {"user_id": "u-1"}})
        );
    }

    #[test]
    fn max_tokens_from_client_then_channel_then_default() {
        let base = json!({"model": "m", "messages": [{"role": "user", "content": "x"}]});
        assert_eq!(map(base.clone())["max_tokens"], DEFAULT_MAX_TOKENS);
        assert_eq!(map_with(&[("max_tokens", "1000")], base.clone())["max_tokens"], 1000);
        let mut b = base.clone();
        b["max_tokens"] = 50.into();
        assert_eq!(map_with(&[("max_tokens", "1000")], b.clone())["max_tokens"], 50);
        b["max_completion_tokens"] = 70.into();
        assert_eq!(map(b)["max_tokens"], 70);
        let e = transform(&ctx(&[("max_tokens", "lots")]), &base.to_string()).unwrap_err();
        assert!(matches!(e, AdapterError::Internal(m) if m.contains("max_tokens")));
        let mut s = base.clone();
        s["stream"] = true.into();
        s["stream_options"] = json!({"include_usage": true});
        let v = map_with(&[("anthropic_version", "2024-01-01")], s.clone());
        assert_eq!((v["stream"].clone(), v.get("stream_options")), (json!(true), None));
        let mut c = ctx(&[("anthropic_version", "2024-01-01")]);
        c.stream = true;
        let r = transform(&c, &s.to_string()).unwrap();
        assert_eq!(r.headers[0].value, "2024-01-01");
        assert_eq!(r.headers[1].value, "text/event-stream");
    }

    #[test]
    fn consecutive_roles_merge_and_images_map() {
        let v = map(json!({"model": "m", "messages": [
            {"role": "user", "content": "first"},
            {"role": "user", "content": [
                {"type": "text", "text": "look"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBOR", "detail": "high"}},
                {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}}]},
            {"role": "assistant", "content": "ok"},
            {"role": "assistant", "content": "more"},
            {"role": "user", "content": "bye"}]}));
        assert_eq!(
            v["messages"],
            json!([
                {"role": "user", "content": [
                    {"type": "text", "text": "first"}, {"type": "text", "text": "look"},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBOR"}},
                    {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}}]},
                {"role": "assistant", "content": [{"type": "text", "text": "ok"}, {"type": "text", "text": "more"}]},
                {"role": "user", "content": "bye"}])
        );
        let e = refused(json!({"model": "m", "messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "ftp://x/y.png"}}]}]}));
        assert!(matches!(e, AdapterError::InvalidRequest(m) if m.contains("messages[0]")));
        let e = refused(json!({"model": "m", "messages": [{"role": "user", "content": [
            {"type": "input_audio", "input_audio": {"data": "x", "format": "wav"}}]}]}));
        assert!(matches!(e, AdapterError::Unsupported(_)));
    }

    #[test]
    fn tool_calls_and_results() {
        let v = map(json!({"model": "m", "messages": [
            {"role": "user", "content": "weather?"},
            {"role": "assistant", "content": "", "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
                {"id": "call_2", "type": "function", "function": {"name": "now", "arguments": ""}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
            {"role": "tool", "tool_call_id": "call_2", "content": [{"type": "text", "text": "noon"}]},
            {"role": "user", "content": "thanks"}]}));
        assert_eq!(
            v["messages"],
            json!([
                {"role": "user", "content": "weather?"},
                {"role": "assistant", "content": [
                    {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris"}},
                    {"type": "tool_use", "id": "call_2", "name": "now", "input": {}}]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "call_1", "content": "sunny"},
                    {"type": "tool_result", "tool_use_id": "call_2", "content": [{"type": "text", "text": "noon"}]},
                    {"type": "text", "text": "thanks"}]}])
        );
        let e = refused(json!({"model": "m", "messages": [
            {"role": "user", "content": "x"},
            {"role": "assistant", "tool_calls": [{"id": "call_9", "type": "function",
                "function": {"name": "f", "arguments": "{oops"}}]}]}));
        assert!(matches!(e, AdapterError::InvalidRequest(m) if m.contains("call_9") && m.contains("not valid JSON")));
        let e = refused(json!({"model": "m", "messages": [{"role": "tool", "content": "x"}]}));
        assert!(matches!(e, AdapterError::InvalidRequest(m) if m.contains("tool_call_id")));
    }

    #[test]
    fn tools_and_tool_choice() {
        let tools = json!([
            {"type": "function", "function": {"name": "get_weather", "description": "Weather by city",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}, "strict": true}},
            {"type": "function", "function": {"name": "now"}}]);
        let with = |choice: Value| {
            let mut b = json!({"model": "m", "messages": [{"role": "user", "content": "x"}], "tools": tools});
            if !choice.is_null() {
                b["tool_choice"] = choice;
            }
            map(b)
        };
        let v = with(Value::Null);
        assert_eq!(
            v["tools"],
            json!([
                {"name": "get_weather", "description": "Weather by city",
                    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}},
                {"name": "now", "input_schema": {"type": "object", "properties": {}}}])
        );
        assert_eq!(v.get("tool_choice"), None);
        assert_eq!(with(json!("auto"))["tool_choice"], json!({"type": "auto"}));
        assert_eq!(with(json!("required"))["tool_choice"], json!({"type": "any"}));
        assert_eq!(with(json!("none"))["tool_choice"], json!({"type": "none"}));
        assert_eq!(
            with(json!({"type": "function", "function": {"name": "now"}}))["tool_choice"],
            json!({"type": "tool", "name": "now"})
        );
        let v = map(json!({"model": "m", "messages": [{"role": "user", "content": "x"}], "tools": tools,
            "parallel_tool_calls": false}));
        assert_eq!(v["tool_choice"], json!({"type": "auto", "disable_parallel_tool_use": true}));
        assert!(matches!(
            refused(json!({"model": "m", "messages": [{"role": "user", "content": "x"}], "tool_choice": "sometimes"})),
            AdapterError::InvalidRequest(_)
        ));
    }

    #[test]
    fn fields_anthropic_cannot_honour_are_refused_by_name() {
        let base = json!({"model": "m", "messages": [{"role": "user", "content": "x"}]});
        for (field, value) in [
            ("n", json!(2)),
            ("logprobs", json!(true)),
            ("logit_bias", json!({"50256": -100})),
            ("presence_penalty", json!(0.5)),
            ("frequency_penalty", json!(1)),
            ("response_format", json!({"type": "json_schema", "json_schema": {"name": "x", "schema": {}}})),
            ("seed", json!(7)),
            ("functions", json!([])),
        ] {
            let mut b = base.clone();
            b[field] = value;
            let e = refused(b);
            assert!(matches!(&e, AdapterError::Unsupported(m) if m.contains(field)), "{field}: {e:?}");
        }
        // Neutral values ask for nothing Anthropic lacks.
        let mut b = base.clone();
        for (field, value) in [
            ("n", json!(1)),
            ("logprobs", json!(false)),
            ("presence_penalty", json!(0)),
            ("response_format", json!({"type": "text"})),
            ("store", json!(false)),
            ("logit_bias", json!({})),
        ] {
            b[field] = value;
        }
        let v = map(b);
        assert_eq!(v.as_object().unwrap().len(), 3, "{v}");
        let e = refused(json!({"model": "m", "messages": [{"role": "system", "content": "only"}]}));
        assert!(matches!(e, AdapterError::InvalidRequest(_)));
    }
}
