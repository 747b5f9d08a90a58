//! OpenAI chat request → Gemini `GenerateContentRequest`, and the vendor path.

use relay_plugin_kit::openai::{ChatRequest, Content, ContentPart, Message, ToolChoice};
use relay_plugin_kit::prelude::*;
use serde_json::{Map, Value, json};

/// The Gemini API version in the path when the channel sets no `api_version`.
pub const DEFAULT_API_VERSION: &str = "v1beta";

/// Google's documented stand-in for a thought signature the history cannot carry: Gemini 3
/// models refuse replayed function calls without one, and OpenAI's message shape has no
/// place to keep the real signature.
pub const SKIP_SIGNATURE: &str = "skip_thought_signature_validator";

/// The first Gemini major version that requires thought signatures on replayed calls.
const SIGNATURE_MAJOR: u32 = 3;

/// Request fields outside `ChatRequest`'s own that this adapter maps; every other extra
/// field is refused by name.
const MAPPED_EXTRA: &[&str] =
    &["response_format", "seed", "presence_penalty", "frequency_penalty", "parallel_tool_calls"];

const VENDOR: &str = "Gemini";

/// The longest function name a tool result may repeat. Every result carries the name of the
/// call it answers, so a long name times many results would multiply a small request; OpenAI
/// and Gemini take names of 64 (newer Gemini models 128) characters at most, so this refuses
/// nothing either accepts.
pub const MAX_FUNCTION_NAME: usize = 256;

/// `/{version}/models/{model}:generateContent`, or `:streamGenerateContent?alt=sse`.
pub fn path(ctx: &CallContext) -> Result<String, AdapterError> {
    let version = api_version(ctx)?;
    let model = relay_plugin_kit::encode_segment(&ctx.model);
    Ok(if ctx.stream {
        format!("/{version}/models/{model}:streamGenerateContent?alt=sse")
    } else {
        format!("/{version}/models/{model}:generateContent")
    })
}

/// The channel's `api_version` setting, checked to be one plain path segment.
pub fn api_version(ctx: &CallContext) -> Result<&str, AdapterError> {
    let version = ctx.setting("api_version").unwrap_or(DEFAULT_API_VERSION);
    if version.is_empty() || !version.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(AdapterError::Internal(format!(
            "the channel setting api_version = '{version}' is not an API version like 'v1beta'"
        )));
    }
    Ok(version)
}

/// The Gemini request body for the client's chat request (`raw` is the same body as JSON,
/// read only to name content parts the typed request cannot represent).
pub fn body(ctx: &CallContext, req: &ChatRequest, raw: &Value) -> Result<Value, AdapterError> {
    let neutral = req.extra.iter().filter(|(k, v)| is_neutral(k, v)).map(|(k, _)| k.as_str());
    let tolerated: Vec<&str> = MAPPED_EXTRA.iter().copied().chain(neutral).collect();
    req.reject_extra(&tolerated, VENDOR)?;
    let mut system = Vec::new();
    let mut contents: Vec<(&'static str, Vec<Value>)> = Vec::new();
    for (i, m) in req.messages.iter().enumerate() {
        let (role, parts) = match m.role.as_str() {
            "system" | "developer" => {
                system.extend(text_parts(i, m, raw)?);
                continue;
            }
            "user" => ("user", user_parts(i, m, raw)?),
            "assistant" => ("model", assistant_parts(i, m, raw)?),
            "tool" => ("user", vec![function_response(i, m, &req.messages[..i])?]),
            "function" => {
                return Err(unsupported(format!(
                    "messages[{i}]: the legacy 'function' role is not supported; use 'tool' messages"
                )));
            }
            other => return Err(invalid_request(format!("messages[{i}].role '{other}' is not a valid role"))),
        };
        if parts.is_empty() {
            return Err(invalid_request(format!("messages[{i}] has no content for {VENDOR} to take")));
        }
        // Gemini wants alternating turns: consecutive messages of one role become one turn
        // (several tool results answer one model turn together).
        match contents.last_mut() {
            Some((last, prev)) if *last == role => prev.extend(parts),
            _ => contents.push((role, parts)),
        }
    }
    if contents.is_empty() {
        return Err(invalid_request(format!("{VENDOR} needs at least one user or assistant message")));
    }
    if needs_signature(&ctx.model) {
        for (role, parts) in &mut contents {
            if *role == "model"
                && let Some(call) = parts.iter_mut().find(|p| p.get("functionCall").is_some())
            {
                call["thoughtSignature"] = json!(SKIP_SIGNATURE);
            }
        }
    }

    let mut out = Map::new();
    out.insert(
        "contents".into(),
        contents.into_iter().map(|(role, parts)| json!({"role": role, "parts": parts})).collect(),
    );
    if !system.is_empty() {
        out.insert("systemInstruction".into(), json!({ "parts": system }));
    }
    let config = generation_config(req)?;
    if !config.is_empty() {
        out.insert("generationConfig".into(), Value::Object(config));
    }
    tools(req, &mut out)?;
    Ok(Value::Object(out))
}

/// A field Gemini cannot honour, sent at the value that asks for nothing
/// (`logprobs: false`, `logit_bias: {}`), is harmless to drop.
fn is_neutral(key: &str, value: &Value) -> bool {
    match key {
        "logprobs" | "store" => value == &Value::Bool(false),
        "logit_bias" | "metadata" => value.as_object().is_some_and(Map::is_empty),
        "top_logprobs" => value.as_u64() == Some(0),
        _ => false,
    }
}

/// Whether the model is Gemini 3 or later (`gemini-3-flash`, `models/gemini-3.1-pro`).
fn needs_signature(model: &str) -> bool {
    let name = model.strip_prefix("models/").unwrap_or(model);
    let Some(rest) = name.strip_prefix("gemini-") else { return false };
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse::<u32>().is_ok_and(|major| major >= SIGNATURE_MAJOR)
}

/// The `type` of a raw content part, for naming it in an error.
fn part_type(raw: &Value, i: usize, j: usize) -> String {
    raw.pointer(&format!("/messages/{i}/content/{j}/type")).and_then(Value::as_str).unwrap_or("unknown").to_string()
}

/// Text-only content (system, developer, assistant) as Gemini text parts. Empty text is
/// left out: Gemini reads an empty string as an unset part and refuses it.
fn text_parts(i: usize, m: &Message, raw: &Value) -> Result<Vec<Value>, AdapterError> {
    match &m.content {
        None => Ok(vec![]),
        Some(Content::Text(t)) => Ok(text_part(t).into_iter().collect()),
        Some(Content::Parts(parts)) => {
            let mut out = Vec::new();
            for (j, p) in parts.iter().enumerate() {
                match p {
                    ContentPart::Text { text } => out.extend(text_part(text)),
                    _ => {
                        return Err(unsupported(format!(
                            "messages[{i}].content[{j}]: a '{}' part is not supported in a {} message",
                            part_type(raw, i, j),
                            m.role
                        )));
                    }
                }
            }
            Ok(out)
        }
    }
}

fn text_part(text: &str) -> Option<Value> {
    (!text.is_empty()).then(|| json!({ "text": text }))
}

fn user_parts(i: usize, m: &Message, raw: &Value) -> Result<Vec<Value>, AdapterError> {
    let Some(Content::Parts(parts)) = &m.content else { return text_parts(i, m, raw) };
    let mut out = Vec::new();
    for (j, p) in parts.iter().enumerate() {
        match p {
            ContentPart::Text { text } => out.extend(text_part(text)),
            ContentPart::ImageUrl { image_url } => {
                let Some((mime, data)) = openai::parse_data_url(&image_url.url) else {
                    return Err(unsupported(format!(
                        "messages[{i}].content[{j}]: {VENDOR} takes images inline only; send a base64 data: URL \
                         (image URLs are not fetched)"
                    )));
                };
                out.push(json!({"inlineData": {"mimeType": mime, "data": data}}));
            }
            ContentPart::Other => {
                return Err(unsupported(format!(
                    "messages[{i}].content[{j}]: a '{}' part is not supported by this adapter",
                    part_type(raw, i, j)
                )));
            }
        }
    }
    Ok(out)
}

fn assistant_parts(i: usize, m: &Message, raw: &Value) -> Result<Vec<Value>, AdapterError> {
    let mut out = text_parts(i, m, raw)?;
    for (k, call) in m.tool_calls.iter().flatten().enumerate() {
        let args = call.function.arguments.trim();
        let args: Value = if args.is_empty() {
            json!({})
        } else {
            serde_json::from_str(args).map_err(|e| {
                invalid_request(format!("messages[{i}].tool_calls[{k}].function.arguments is not JSON: {e}"))
            })?
        };
        if !args.is_object() {
            return Err(invalid_request(format!(
                "messages[{i}].tool_calls[{k}].function.arguments must be a JSON object for {VENDOR}"
            )));
        }
        out.push(json!({"functionCall": {"name": call.function.name, "args": args}}));
    }
    Ok(out)
}

/// A tool result as a `functionResponse` part: Gemini matches results by function name,
/// found from the nearest earlier assistant tool call with this id.
fn function_response(i: usize, m: &Message, earlier: &[Message]) -> Result<Value, AdapterError> {
    let Some(id) = m.tool_call_id.as_deref() else {
        return Err(invalid_request(format!("messages[{i}].tool_call_id is required for role 'tool'")));
    };
    let name = earlier
        .iter()
        .rev()
        .filter(|e| e.role == "assistant")
        .flat_map(|e| e.tool_calls.iter().flatten())
        .find(|c| c.id == id)
        .map(|c| c.function.name.clone())
        .ok_or_else(|| {
            invalid_request(format!("messages[{i}].tool_call_id '{id}' matches no earlier assistant tool call"))
        })?;
    if name.len() > MAX_FUNCTION_NAME {
        return Err(invalid_request(format!(
            "messages[{i}]: the function name of the tool call it answers is longer than {MAX_FUNCTION_NAME} bytes"
        )));
    }
    let text = m.content.as_ref().map(Content::text).unwrap_or_default();
    let response = match serde_json::from_str::<Value>(&text) {
        Ok(v @ Value::Object(_)) => v,
        _ => json!({ "content": text }),
    };
    Ok(json!({"functionResponse": {"name": name, "response": response}}))
}

fn generation_config(req: &ChatRequest) -> Result<Map<String, Value>, AdapterError> {
    let mut c = Map::new();
    if let Some(n) = req.max_output_tokens() {
        c.insert("maxOutputTokens".into(), json!(n));
    }
    if let Some(t) = req.temperature {
        c.insert("temperature".into(), json!(t));
    }
    if let Some(p) = req.top_p {
        c.insert("topP".into(), json!(p));
    }
    if let Some(stop) = req.stop.clone() {
        let stop = stop.into_vec();
        if !stop.is_empty() {
            c.insert("stopSequences".into(), json!(stop));
        }
    }
    match req.n {
        None => {}
        Some(1) => {
            c.insert("candidateCount".into(), json!(1));
        }
        Some(0) => return Err(invalid_request("'n' must be at least 1")),
        Some(_) => {
            return Err(unsupported(format!("'n' above 1 is not supported: this adapter maps one {VENDOR} candidate")));
        }
    }
    let number = |key: &str| -> Result<Option<Value>, AdapterError> {
        match req.extra.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v @ Value::Number(_)) => Ok(Some(v.clone())),
            Some(_) => Err(invalid_request(format!("'{key}' must be a number"))),
        }
    };
    for (key, field) in [("presence_penalty", "presencePenalty"), ("frequency_penalty", "frequencyPenalty")] {
        if let Some(v) = number(key)? {
            c.insert(field.into(), v);
        }
    }
    if let Some(v) = number("seed")? {
        if !v.is_i64() {
            return Err(invalid_request("'seed' must be an integer"));
        }
        c.insert("seed".into(), v);
    }
    match req.extra.get("response_format") {
        None | Some(Value::Null) => {}
        Some(f) => match f.get("type").and_then(Value::as_str) {
            Some("text") => {}
            Some("json_object") => {
                c.insert("responseMimeType".into(), json!("application/json"));
            }
            Some("json_schema") => {
                let Some(schema) = f.pointer("/json_schema/schema") else {
                    return Err(invalid_request("'response_format.json_schema.schema' is required"));
                };
                c.insert("responseMimeType".into(), json!("application/json"));
                c.insert("responseSchema".into(), clean_schema(schema));
            }
            _ => return Err(invalid_request("'response_format.type' must be text, json_object or json_schema")),
        },
    }
    Ok(c)
}

/// `tools` → `tools[].functionDeclarations`, `tool_choice` → `toolConfig`.
fn tools(req: &ChatRequest, out: &mut Map<String, Value>) -> Result<(), AdapterError> {
    if req.extra.get("parallel_tool_calls") == Some(&Value::Bool(false)) {
        return Err(unsupported(format!(
            "'parallel_tool_calls': false is not supported by {VENDOR}: the model may call several functions at once"
        )));
    }
    let tools = req.tools.as_deref().unwrap_or_default();
    if tools.is_empty() {
        return match &req.tool_choice {
            Some(ToolChoice::Mode(m)) if m == "auto" || m == "none" => Ok(()),
            Some(_) => Err(invalid_request("'tool_choice' needs 'tools'")),
            None => Ok(()),
        };
    }
    let mut declarations = Vec::new();
    for (k, t) in tools.iter().enumerate() {
        if t.kind != "function" {
            return Err(unsupported(format!("tools[{k}]: tools of type '{}' are not supported", t.kind)));
        }
        let f = &t.function;
        let mut d = json!({ "name": f.name });
        if let Some(desc) = &f.description {
            d["description"] = json!(desc);
        }
        if let Some(params) = f.parameters.as_ref().filter(|p| !is_empty_object_schema(p)) {
            d["parameters"] = clean_schema(params);
        }
        declarations.push(d);
    }
    out.insert("tools".into(), json!([{ "functionDeclarations": declarations }]));
    let config = match &req.tool_choice {
        None => return Ok(()),
        Some(ToolChoice::Mode(m)) => match m.as_str() {
            "auto" => json!({"mode": "AUTO"}),
            "required" => json!({"mode": "ANY"}),
            "none" => json!({"mode": "NONE"}),
            other => {
                return Err(invalid_request(format!("'tool_choice' '{other}' is not one of none, auto, required")));
            }
        },
        Some(ToolChoice::Named(n)) => json!({"mode": "ANY", "allowedFunctionNames": [n.function.name]}),
    };
    out.insert("toolConfig".into(), json!({ "functionCallingConfig": config }));
    Ok(())
}

/// `{"type": "object"}` with no properties: Gemini refuses an OBJECT schema without
/// properties, and a function without parameters means the same.
fn is_empty_object_schema(p: &Value) -> bool {
    let Some(o) = p.as_object() else { return false };
    let no_props = o.get("properties").is_none_or(|v| v.as_object().is_some_and(Map::is_empty));
    o.get("type").and_then(Value::as_str) == Some("object")
        && no_props
        && o.keys()
            .all(|k| matches!(k.as_str(), "type" | "properties" | "additionalProperties" | "$schema" | "required"))
}

/// A JSON Schema as Gemini's OpenAPI-subset `Schema` takes it: `additionalProperties` and
/// `$schema`, which Gemini refuses as unknown fields, are removed at every level, and a
/// `type: [T, "null"]` becomes `type: T, nullable: true`. Property names are never touched.
pub fn clean_schema(schema: &Value) -> Value {
    match schema {
        Value::Object(map) => {
            let mut out = Map::new();
            for (k, v) in map {
                let cleaned = match k.as_str() {
                    "additionalProperties" | "$schema" => continue,
                    // Maps from names to schemas.
                    "properties" | "$defs" | "definitions" | "patternProperties" => match v {
                        Value::Object(m) => {
                            Value::Object(m.iter().map(|(n, s)| (n.clone(), clean_schema(s))).collect())
                        }
                        other => other.clone(),
                    },
                    // A schema, or a list of schemas.
                    "items" | "not" | "anyOf" | "oneOf" | "allOf" | "prefixItems" => clean_schema(v),
                    "type" => match nullable_type(v) {
                        Some(t) => {
                            out.insert("nullable".into(), Value::Bool(true));
                            Value::String(t)
                        }
                        None => v.clone(),
                    },
                    _ => v.clone(),
                };
                out.insert(k.clone(), cleaned);
            }
            Value::Object(out)
        }
        Value::Array(items) => Value::Array(items.iter().map(clean_schema).collect()),
        other => other.clone(),
    }
}

/// `["T", "null"]` (either order) → `T`.
fn nullable_type(v: &Value) -> Option<String> {
    let types = v.as_array()?;
    if types.len() != 2 || !types.iter().any(|t| t == "null") {
        return None;
    }
    types.iter().find(|t| *t != "null").and_then(Value::as_str).map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(model: &str, stream: bool, settings: &[(&str, &str)]) -> CallContext {
        CallContext {
            request_id: "r1".into(),
            endpoint: Endpoint::ChatCompletions,
            model: model.into(),
            stream,
            include_usage: false,
            settings: settings.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        }
    }

    fn map(body: Value) -> Result<Value, AdapterError> {
        map_for("gemini-2.0-flash", body)
    }

    fn map_for(model: &str, body: Value) -> Result<Value, AdapterError> {
        let req = ChatRequest::parse(&body.to_string())?;
        super::body(&ctx(model, false, &[]), &req, &body)
    }

    fn err_text(e: AdapterError) -> String {
        match e {
            AdapterError::InvalidRequest(m)
            | AdapterError::Unsupported(m)
            | AdapterError::InvalidUpstream(m)
            | AdapterError::Internal(m) => m,
        }
    }

    #[test]
    fn paths_encode_the_model_and_follow_the_version_setting() {
        assert_eq!(
            path(&ctx("gemini-2.0-flash", false, &[])).unwrap(),
            "/v1beta/models/gemini-2.0-flash:generateContent"
        );
        assert_eq!(
            path(&ctx("gemini-1.5-pro", true, &[("api_version", "v1")])).unwrap(),
            "/v1/models/gemini-1.5-pro:streamGenerateContent?alt=sse"
        );
        assert_eq!(
            path(&ctx("tuned/my model?x", false, &[])).unwrap(),
            "/v1beta/models/tuned%2Fmy%20model%3Fx:generateContent"
        );
        assert!(matches!(path(&ctx("m", false, &[("api_version", "../x")])), Err(AdapterError::Internal(_))));
    }

    #[test]
    fn system_developer_user_and_assistant_become_turns() {
        let v = map(json!({"model": "m", "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "developer", "content": [{"type": "text", "text": "Use metric units."}]},
            {"role": "user", "content": "Hi"},
            {"role": "user", "content": [{"type": "text", "text": "there"}]},
            {"role": "assistant", "content": "Hello!"},
            {"role": "user", "content": "Weather?"}]}))
        .unwrap();
        assert_eq!(v["systemInstruction"], json!({"parts": [{"text": "Be brief."}, {"text": "Use metric units."}]}));
        assert_eq!(
            v["contents"],
            json!([
                {"role": "user", "parts": [{"text": "Hi"}, {"text": "there"}]},
                {"role": "model", "parts": [{"text": "Hello!"}]},
                {"role": "user", "parts": [{"text": "Weather?"}]},
            ])
        );
        assert!(v.get("generationConfig").is_none() && v.get("tools").is_none(), "nothing invented: {v}");
    }

    #[test]
    fn images_become_inline_data_and_urls_are_refused() {
        let v = map(json!({"model": "m", "messages": [{"role": "user", "content": [
            {"type": "text", "text": "What is this?"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}]}]}))
        .unwrap();
        assert_eq!(
            v["contents"][0]["parts"][1],
            json!({"inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgo="}})
        );
        let e = map(json!({"model": "m", "messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}]}]}))
        .unwrap_err();
        assert!(matches!(&e, AdapterError::Unsupported(m) if m.contains("messages[0].content[0]")), "{e:?}");
        let e = map(json!({"model": "m", "messages": [{"role": "user", "content": [
            {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}}]}]}))
        .unwrap_err();
        assert!(err_text(e).contains("'input_audio'"));
    }

    #[test]
    fn tool_calls_and_results_map_to_function_parts() {
        let v = map(json!({"model": "m", "messages": [
            {"role": "user", "content": "Weather in Paris and Rome?"},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "call_0", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
                {"id": "call_1", "type": "function", "function": {"name": "get_time", "arguments": ""}}]},
            {"role": "tool", "tool_call_id": "call_0", "content": "{\"temp\":21}"},
            {"role": "tool", "tool_call_id": "call_1", "content": "noon"}]}))
        .unwrap();
        assert_eq!(
            v["contents"][1],
            json!({"role": "model", "parts": [
                {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}},
                {"functionCall": {"name": "get_time", "args": {}}}]})
        );
        assert_eq!(
            v["contents"][2],
            json!({"role": "user", "parts": [
                {"functionResponse": {"name": "get_weather", "response": {"temp": 21}}},
                {"functionResponse": {"name": "get_time", "response": {"content": "noon"}}}]})
        );
        let e = map(json!({"model": "m", "messages": [
            {"role": "user", "content": "x"}, {"role": "tool", "tool_call_id": "nope", "content": "1"}]}))
        .unwrap_err();
        assert!(matches!(&e, AdapterError::InvalidRequest(m) if m.contains("'nope'")), "{e:?}");
        let e = map(json!({"model": "m", "messages": [{"role": "assistant", "tool_calls": [
            {"id": "c", "type": "function", "function": {"name": "f", "arguments": "[1]"}}]}]}))
        .unwrap_err();
        assert!(err_text(e).contains("must be a JSON object"));
    }

    // Each result repeats its call's name, so a long name answered many times multiplied the
    // request (tests/properties.rs: tool_results_repeat_a_bounded_name).
    #[test]
    fn results_repeat_only_short_function_names() {
        let body = |name: &str| {
            let result = json!({"role": "tool", "tool_call_id": "c", "content": ""});
            json!({"model": "m", "messages": [
                {"role": "user", "content": "x"},
                {"role": "assistant", "tool_calls": [{"id": "c", "type": "function", "function": {"name": name, "arguments": ""}}]},
                result, result, result]})
        };
        let v = map(body(&"f".repeat(MAX_FUNCTION_NAME))).unwrap();
        assert_eq!(v["contents"][2]["parts"].as_array().unwrap().len(), 3);
        let e = map(body(&"f".repeat(MAX_FUNCTION_NAME + 1))).unwrap_err();
        assert!(matches!(&e, AdapterError::InvalidRequest(m) if m.contains("longer than 256 bytes")), "{e:?}");
    }

    #[test]
    fn gemini_3_replays_carry_the_signature_stand_in() {
        let body = json!({"model": "m", "messages": [
            {"role": "user", "content": "x"},
            {"role": "assistant", "tool_calls": [
                {"id": "a", "type": "function", "function": {"name": "f", "arguments": "{}"}},
                {"id": "b", "type": "function", "function": {"name": "g", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "a", "content": "1"},
            {"role": "tool", "tool_call_id": "b", "content": "2"}]});
        let v = map_for("gemini-3-flash-preview", body.clone()).unwrap();
        let parts = &v["contents"][1]["parts"];
        assert_eq!(parts[0]["thoughtSignature"], SKIP_SIGNATURE, "the first call of the turn carries it");
        assert!(parts[1].get("thoughtSignature").is_none());
        let v = map_for("gemini-2.5-flash", body).unwrap();
        assert!(v["contents"][1]["parts"][0].get("thoughtSignature").is_none());
        assert!(needs_signature("models/gemini-10-pro") && !needs_signature("gemma-3-27b"));
    }

    #[test]
    fn sampling_fields_map_to_generation_config() {
        let v = map(json!({"model": "m", "messages": [{"role": "user", "content": "x"}],
            "max_tokens": 50, "max_completion_tokens": 100, "temperature": 0.3, "top_p": 0.9, "stop": "END",
            "n": 1, "seed": 7, "presence_penalty": 0.5, "frequency_penalty": 0.25,
            "response_format": {"type": "json_object"}, "user": "u-1"}))
        .unwrap();
        assert_eq!(
            v["generationConfig"],
            json!({"maxOutputTokens": 100, "temperature": 0.3, "topP": 0.9, "stopSequences": ["END"],
                   "candidateCount": 1, "seed": 7, "presencePenalty": 0.5, "frequencyPenalty": 0.25,
                   "responseMimeType": "application/json"})
        );
        let v = map(json!({"model": "m", "messages": [{"role": "user", "content": "x"}], "stop": ["a", "b"],
            "response_format": {"type": "json_schema", "json_schema": {"name": "r", "schema":
                {"type": "object", "properties": {"a": {"type": "string"}}, "additionalProperties": false}}}}))
        .unwrap();
        assert_eq!(v["generationConfig"]["stopSequences"], json!(["a", "b"]));
        assert_eq!(
            v["generationConfig"]["responseSchema"],
            json!({"type": "object", "properties": {"a": {"type": "string"}}})
        );
    }

    #[test]
    fn fields_gemini_cannot_honour_are_refused_by_name() {
        for (field, value) in [
            ("logit_bias", json!({"50256": -100})),
            ("logprobs", json!(true)),
            ("top_logprobs", json!(2)),
            ("n", json!(2)),
            ("parallel_tool_calls", json!(false)),
            ("reasoning_effort", json!("low")),
        ] {
            let mut body = json!({"model": "m", "messages": [{"role": "user", "content": "x"}]});
            body[field] = value;
            let e = map(body).unwrap_err();
            assert!(matches!(&e, AdapterError::Unsupported(m) if m.contains(field)), "{field}: {e:?}");
        }
        let v = map(json!({"model": "m", "messages": [{"role": "user", "content": "x"}],
            "logprobs": false, "logit_bias": {}, "store": false, "top_logprobs": 0}));
        assert_eq!(v.unwrap().as_object().unwrap().len(), 1, "neutral values ask for nothing");
        let e = map(json!({"model": "m", "messages": [{"role": "system", "content": "only a system prompt"}]}));
        assert!(matches!(e, Err(AdapterError::InvalidRequest(_))));
    }

    #[test]
    fn tools_and_tool_choice() {
        let tools = json!([
            {"type": "function", "function": {"name": "get_weather", "description": "Weather for a city",
             "parameters": {"$schema": "http://json-schema.org/draft-07/schema#", "type": "object",
                "properties": {"city": {"type": "string"}, "unit": {"type": ["string", "null"], "enum": ["c", "f"]},
                   "additionalProperties": {"type": "object", "properties": {"x": {"type": "integer"}}, "additionalProperties": false}},
                "required": ["city"], "additionalProperties": false}, "strict": true}},
            {"type": "function", "function": {"name": "now", "parameters": {"type": "object", "properties": {}}}}]);
        let cases = [
            (json!("auto"), json!({"mode": "AUTO"})),
            (json!("required"), json!({"mode": "ANY"})),
            (json!("none"), json!({"mode": "NONE"})),
            (
                json!({"type": "function", "function": {"name": "now"}}),
                json!({"mode": "ANY", "allowedFunctionNames": ["now"]}),
            ),
        ];
        for (choice, want) in cases {
            let v = map(json!({"model": "m", "messages": [{"role": "user", "content": "x"}],
                "tools": tools, "tool_choice": choice}))
            .unwrap();
            assert_eq!(v["toolConfig"], json!({ "functionCallingConfig": want }));
            let decls = &v["tools"][0]["functionDeclarations"];
            assert_eq!(
                decls[0],
                json!({"name": "get_weather", "description": "Weather for a city", "parameters": {"type": "object",
                    "properties": {"city": {"type": "string"}, "unit": {"type": "string", "nullable": true, "enum": ["c", "f"]},
                        "additionalProperties": {"type": "object", "properties": {"x": {"type": "integer"}}}},
                    "required": ["city"]}})
            );
            assert_eq!(decls[1], json!({"name": "now"}), "an empty object schema is left out");
        }
        let v = map(json!({"model": "m", "messages": [{"role": "user", "content": "x"}], "tools": tools})).unwrap();
        assert!(v.get("toolConfig").is_none());
        let e = map(json!({"model": "m", "messages": [{"role": "user", "content": "x"}], "tool_choice": "required"}));
        assert!(matches!(e, Err(AdapterError::InvalidRequest(_))));
    }
}
