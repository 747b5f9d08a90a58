//! Google Gemini's `generateContent` API, as the vendor speaks it: the key in
//! `x-goog-api-key`, `contents` of `user`/`model` turns made of parts, Google's error shape
//! (`{"error": {"code", "message", "status", "details"}}`) with Gemini's own messages, and
//! `streamGenerateContent?alt=sse`, whose events are whole responses (the last one carries
//! `finishReason`; there is no `[DONE]`).
//!
//! The reply echoes the last user text. With function declarations and a last user turn
//! that is not a function response, the model calls the first declared (or allowed)
//! function instead; after a function response it answers with text quoting the result.

use bytes::Bytes;
use http::{Method, Response, StatusCode, header};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use serde_json::{Map, Value, json};

use crate::{Body, End, Req, chunk_count, event_stream, json_response, knob_ms, not_json, pieces, words};

/// The fields `GenerateContentRequest` has (in the JSON names the adapter sends).
const REQUEST_FIELDS: &[&str] =
    &["contents", "systemInstruction", "generationConfig", "tools", "toolConfig", "safetySettings", "cachedContent"];
const GENERATION_FIELDS: &[&str] = &[
    "stopSequences",
    "responseMimeType",
    "responseSchema",
    "responseJsonSchema",
    "responseModalities",
    "candidateCount",
    "maxOutputTokens",
    "temperature",
    "topP",
    "topK",
    "seed",
    "presencePenalty",
    "frequencyPenalty",
    "responseLogprobs",
    "logprobs",
    "enableEnhancedCivicAnswers",
    "speechConfig",
    "thinkingConfig",
    "mediaResolution",
];
/// A part holds exactly one of these (the `data` oneof) ...
const PART_DATA: &[&str] = &["text", "inlineData", "functionCall", "functionResponse"];
/// ... and may carry these beside it.
const PART_META: &[&str] = &["thought", "thoughtSignature"];
const TOOL_FIELDS: &[&str] =
    &["functionDeclarations", "googleSearch", "googleSearchRetrieval", "codeExecution", "urlContext"];
const DECLARATION_FIELDS: &[&str] =
    &["name", "description", "parameters", "parametersJsonSchema", "response", "responseJsonSchema", "behavior"];
/// The OpenAPI subset Gemini's `Schema` takes.
const SCHEMA_FIELDS: &[&str] = &[
    "type",
    "format",
    "title",
    "description",
    "nullable",
    "enum",
    "maxItems",
    "minItems",
    "properties",
    "required",
    "minProperties",
    "maxProperties",
    "minLength",
    "maxLength",
    "pattern",
    "example",
    "anyOf",
    "propertyOrdering",
    "default",
    "items",
    "minimum",
    "maximum",
];
const SCHEMA_TYPES: &[&str] = &["STRING", "NUMBER", "INTEGER", "BOOLEAN", "ARRAY", "OBJECT", "NULL"];
const MIME_TYPES: &[&str] = &["text/plain", "application/json", "text/x.enum"];
const MODES: &[&str] = &["MODE_UNSPECIFIED", "AUTO", "ANY", "NONE", "VALIDATED"];
/// Gemini accepts at most this many stop sequences.
const MAX_STOP_SEQUENCES: usize = 5;
/// Gemini function names are at most this long.
const MAX_FUNCTION_NAME: usize = 64;
/// Model name prefixes served by the embedding methods (and only by them).
const EMBEDDING_MODELS: &[&str] = &["gemini-embedding-", "text-embedding-", "embedding-"];
const EMBED_FIELDS: &[&str] = &["model", "content", "taskType", "title", "outputDimensionality"];
/// The mock's embedding size when the request names none.
const EMBEDDING_DIMENSIONS: u64 = 8;
/// The API versions served.
const API_VERSIONS: &[&str] = &["v1", "v1beta", "v1alpha"];
/// The mock's fixed response id (Gemini's are opaque strings like this).
const RESPONSE_ID: &str = "demoGeminiResp0001";
/// What Gemini 3 models put on a function call for the caller to send back.
const MOCK_SIGNATURE: &str = "ZGVtby10aG91Z2h0LXNpZ25hdHVyZQ==";

type Reject = Box<Response<Body>>;

fn google_error(status: StatusCode, google: &str, message: &str, details: Option<Value>) -> Response<Body> {
    let mut error = json!({"code": status.as_u16(), "message": message, "status": google});
    if let Some(d) = details {
        error["details"] = d;
    }
    json_response(status, json!({ "error": error }).to_string())
}

/// 400 INVALID_ARGUMENT, Gemini's answer to every malformed request.
fn invalid(message: impl Into<String>) -> Reject {
    Box::new(google_error(StatusCode::BAD_REQUEST, "INVALID_ARGUMENT", &message.into(), None))
}

fn unknown_name(name: &str, at: Option<&str>) -> Reject {
    let at = at.map(|a| format!(" at '{a}'")).unwrap_or_default();
    let message = format!("Invalid JSON payload received. Unknown name \"{name}\"{at}: Cannot find field.");
    let details = json!([{"@type": "type.googleapis.com/google.rpc.BadRequest",
        "fieldViolations": [{"description": message}]}]);
    Box::new(google_error(StatusCode::BAD_REQUEST, "INVALID_ARGUMENT", &message, Some(details)))
}

fn check_fields(obj: &Map<String, Value>, allowed: &[&str], at: Option<&str>) -> Result<(), Reject> {
    match obj.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(k) => Err(unknown_name(k, at)),
        None => Ok(()),
    }
}

pub(crate) async fn handle(req: &Req<'_>) -> Response<Body> {
    if let Err(r) = authenticate(req) {
        return *r;
    }
    if let Some(status) = req.mock_status() {
        return mock_error(status);
    }
    if req.fault() == "not-json" {
        return not_json();
    }
    let Some((version, model, method)) = route(req.path) else {
        return google_error(StatusCode::NOT_FOUND, "NOT_FOUND", "Requested entity was not found.", None);
    };
    let (stream, embed) = match method {
        "generateContent" => (false, false),
        "streamGenerateContent" => (true, false),
        "embedContent" | "batchEmbedContents" => (false, true),
        _ => return google_error(StatusCode::NOT_FOUND, "NOT_FOUND", "Method not found.", None),
    };
    if req.method != Method::POST {
        return google_error(StatusCode::NOT_FOUND, "NOT_FOUND", "Method not found.", None);
    }
    let embedding_model = EMBEDDING_MODELS.iter().any(|p| model.starts_with(p));
    if embed != embedding_model || !(embedding_model || model.starts_with("gemini-")) {
        let message = format!(
            "models/{model} is not found for API version {version}, or is not supported for {method}. \
             Call ListModels to see the list of available models and their supported methods."
        );
        return google_error(StatusCode::NOT_FOUND, "NOT_FOUND", &message, None);
    }
    if embed {
        return match embeddings(req.body, model, method == "batchEmbedContents") {
            Ok(body) => json_response(StatusCode::OK, body.to_string()),
            Err(r) => *r,
        };
    }
    if stream && !query_has(req.query, "alt", "sse") {
        return *invalid("demo upstream: streamGenerateContent is served only with alt=sse (no JSON-array streams)");
    }
    let turn = match validate(req.body, model) {
        Ok(t) => t,
        Err(r) => return *r,
    };
    let answer = Answer::for_turn(&turn, model);
    if stream { answer.stream(req, model) } else { answer.complete(req, model) }
}

/// The key only in `x-goog-api-key`; Gemini reads a bearer token as an OAuth token.
fn authenticate(req: &Req<'_>) -> Result<(), Reject> {
    if req.header("authorization").is_some() {
        return Err(Box::new(google_error(
            StatusCode::UNAUTHORIZED,
            "UNAUTHENTICATED",
            "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other \
             valid authentication credential. See https://developers.google.com/identity/sign-in/web/devconsole-project.",
            None,
        )));
    }
    if req.query.is_some_and(|q| q.split('&').any(|kv| kv.starts_with("key="))) {
        return Err(invalid(
            "demo upstream: send the API key in the x-goog-api-key header, not the key query parameter",
        ));
    }
    match req.header("x-goog-api-key") {
        None => Err(Box::new(google_error(
            StatusCode::FORBIDDEN,
            "PERMISSION_DENIED",
            "Method doesn't allow unregistered callers (callers without established identity). Please use API Key \
             or other form of API consumer identity to call this API.",
            None,
        ))),
        Some(k) if k == req.options.api_key => Ok(()),
        Some(_) => {
            let message = "API key not valid. Please pass a valid API key.";
            let details = json!([
                {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID",
                 "domain": "googleapis.com", "metadata": {"service": "generativelanguage.googleapis.com"}},
                {"@type": "type.googleapis.com/google.rpc.LocalizedMessage", "locale": "en-US", "message": message},
            ]);
            Err(Box::new(google_error(StatusCode::BAD_REQUEST, "INVALID_ARGUMENT", message, Some(details))))
        }
    }
}

/// `x-mock-status`: that status with the error Gemini gives for it.
fn mock_error(status: StatusCode) -> Response<Body> {
    let (google, message, details) = match status.as_u16() {
        429 => (
            "RESOURCE_EXHAUSTED",
            "Resource has been exhausted (e.g. check quota).",
            Some(json!([{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "7s"}])),
        ),
        503 => ("UNAVAILABLE", "The model is overloaded. Please try again later.", None),
        400 => ("INVALID_ARGUMENT", "Request contains an invalid argument.", None),
        403 => ("PERMISSION_DENIED", "The caller does not have permission", None),
        404 => ("NOT_FOUND", "Requested entity was not found.", None),
        504 => ("DEADLINE_EXCEEDED", "Deadline expired before operation could complete.", None),
        _ => (
            "INTERNAL",
            "An internal error has occurred. Please retry or report in \
             https://developers.generativeai.google/guide/troubleshooting",
            None,
        ),
    };
    google_error(status, google, message, details)
}

/// `/{version}/models/{model}:{method}` → (version, model, method).
fn route(path: &str) -> Option<(&str, &str, &str)> {
    let (version, rest) = path.strip_prefix('/')?.split_once('/')?;
    if !API_VERSIONS.contains(&version) {
        return None;
    }
    let (model, method) = rest.strip_prefix("models/")?.rsplit_once(':')?;
    (!model.is_empty() && !model.contains('/')).then_some((version, model, method))
}

fn query_has(query: Option<&str>, key: &str, value: &str) -> bool {
    query.is_some_and(|q| q.split('&').filter_map(|kv| kv.split_once('=')).any(|(k, v)| k == key && v == value))
}

/// What the request asks of the model.
struct Turn {
    /// The text of the last user turn.
    user_text: String,
    /// The first function response of the last user turn: (name, response).
    function_response: Option<(String, Value)>,
    /// The function to call: (name, parameters).
    call: Option<(String, Value)>,
    max_output_tokens: Option<u64>,
}

fn validate(body: &Value, model: &str) -> Result<Turn, Reject> {
    let Some(obj) = body.as_object() else {
        return Err(invalid("Invalid JSON payload received. Expected an object."));
    };
    check_fields(obj, REQUEST_FIELDS, None)?;
    let contents = match obj.get("contents") {
        Some(Value::Array(c)) if !c.is_empty() => c,
        _ => return Err(invalid("* GenerateContentRequest.contents: contents is not specified\n")),
    };
    let mut prev: Option<(&str, usize, usize)> = None; // (role, function calls, function responses)
    let mut last_user = None;
    for (i, c) in contents.iter().enumerate() {
        let Some(c) = c.as_object() else { return Err(invalid(format!("Invalid value at 'contents[{i}]'"))) };
        check_fields(c, &["role", "parts"], Some(&format!("contents[{i}]")))?;
        let role = c.get("role").and_then(Value::as_str).unwrap_or_default();
        if role != "user" && role != "model" {
            return Err(invalid("Please use a valid role: user, model."));
        }
        let parts = match c.get("parts") {
            Some(Value::Array(p)) if !p.is_empty() => p,
            _ => {
                return Err(invalid(format!(
                    "* GenerateContentRequest.contents[{i}].parts: contents.parts must not be empty.\n"
                )));
            }
        };
        let mut calls = 0;
        let mut responses = 0;
        for (j, p) in parts.iter().enumerate() {
            match validate_part(p, i, j)? {
                "functionCall" => {
                    if calls == 0 && model.starts_with("gemini-3") && p.get("thoughtSignature").is_none() {
                        let name = p["functionCall"]["name"].as_str().unwrap_or_default();
                        return Err(invalid(format!(
                            "Function call is missing a thought_signature in functionCall parts. This is required \
                             for tools to work correctly, and missing thought_signature may lead to degraded model \
                             performance. Additional data, function call `default_api:{name}` , position {}. Please \
                             refer to https://ai.google.dev/gemini-api/docs/thought-signatures for more details.",
                            i + 1
                        )));
                    }
                    calls += 1;
                }
                "functionResponse" => responses += 1,
                _ => {}
            }
        }
        if calls > 0 && prev.is_none_or(|(r, _, _)| r != "user") {
            return Err(invalid(
                "Please ensure that function call turn comes immediately after a user turn or after a function \
                 response turn.",
            ));
        }
        if responses > 0 {
            match prev {
                Some(("model", n, _)) if n > 0 => {
                    if n != responses {
                        return Err(invalid(
                            "Please ensure that the number of function response parts is equal to the number of \
                             function call parts of the function call turn.",
                        ));
                    }
                }
                _ => {
                    return Err(invalid(
                        "Please ensure that function response turn comes immediately after a function call turn.",
                    ));
                }
            }
        }
        if role == "user" {
            last_user = Some(parts);
        }
        prev = Some((role, calls, responses));
    }
    if let Some(s) = obj.get("systemInstruction") {
        validate_system(s)?;
    }
    let max_output_tokens = match obj.get("generationConfig") {
        Some(g) => validate_generation(g)?,
        None => None,
    };
    let declarations = match obj.get("tools") {
        Some(t) => validate_tools(t)?,
        None => vec![],
    };
    let (mode, allowed) = match obj.get("toolConfig") {
        Some(t) => validate_tool_config(t, &declarations)?,
        None => ("AUTO".to_string(), vec![]),
    };
    obj.get("safetySettings")
        .map_or(Ok(()), |s| if s.is_array() { Ok(()) } else { Err(invalid("Invalid value at 'safety_settings'")) })?;

    let parts = last_user.map(Vec::as_slice).unwrap_or_default();
    let user_text = parts.iter().filter_map(|p| p.get("text").and_then(Value::as_str)).collect::<Vec<_>>().join(" ");
    let function_response = parts.iter().find_map(|p| {
        let r = p.get("functionResponse")?;
        Some((r["name"].as_str()?.to_string(), r["response"].clone()))
    });
    let call = if function_response.is_none() && mode != "NONE" {
        let wanted = allowed.first().or_else(|| declarations.first().map(|(n, _)| n));
        wanted.and_then(|w| declarations.iter().find(|(n, _)| n == w).cloned())
    } else {
        None
    };
    Ok(Turn { user_text, function_response, call, max_output_tokens })
}

/// One part: exactly one data field, of the right shape. Returns the data field's name.
fn validate_part(p: &Value, i: usize, j: usize) -> Result<&'static str, Reject> {
    let at = format!("contents[{i}].parts[{j}]");
    let Some(obj) = p.as_object() else { return Err(invalid(format!("Invalid value at '{at}'"))) };
    for k in obj.keys() {
        if !PART_DATA.contains(&k.as_str()) && !PART_META.contains(&k.as_str()) {
            return Err(unknown_name(k, Some(&at)));
        }
    }
    // An empty string is an unset field in proto3.
    let set: Vec<&'static str> =
        PART_DATA.iter().copied().filter(|k| obj.get(*k).is_some_and(|v| !v.is_null() && v != "")).collect();
    let field = match set.as_slice() {
        [] => {
            return Err(invalid(format!(
                "* GenerateContentRequest.contents[{i}].parts[{j}].data: required oneof field 'data' must have one \
                 initialized field\n"
            )));
        }
        [one] => *one,
        [_, second, ..] => {
            return Err(invalid(format!(
                "Invalid value at '{at}' (oneof), oneof field 'data' is already set. Cannot set '{second}'"
            )));
        }
    };
    let v = &obj[field];
    match field {
        "text" if !v.is_string() => Err(invalid(format!("Invalid value at '{at}.text' (TYPE_STRING), {v}"))),
        "inlineData" => {
            let mime = v.get("mimeType").and_then(Value::as_str).unwrap_or_default();
            let data = v.get("data").and_then(Value::as_str).unwrap_or_default();
            if mime.is_empty() {
                return Err(invalid(format!(
                    "* GenerateContentRequest.contents[{i}].parts[{j}].inline_data.mime_type: mime_type is not specified\n"
                )));
            }
            let base64 = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'=' | b'-' | b'_');
            if data.is_empty() || !data.bytes().all(base64) {
                return Err(invalid(format!(
                    "Invalid value at '{at}.inline_data.data' (TYPE_BYTES), Base64 decoding failed for \"{data}\""
                )));
            }
            Ok(field)
        }
        "functionCall" | "functionResponse" => {
            let snake = if field == "functionCall" { "function_call" } else { "function_response" };
            if v.get("name").and_then(Value::as_str).is_none_or(str::is_empty) {
                return Err(invalid(format!(
                    "* GenerateContentRequest.contents[{i}].parts[{j}].{snake}.name: Name cannot be empty.\n"
                )));
            }
            let payload = if field == "functionCall" { "args" } else { "response" };
            match v.get(payload) {
                None if field == "functionCall" => Ok(field),
                Some(Value::Object(_)) => Ok(field),
                _ => Err(invalid(format!(
                    "Invalid value at '{at}.{snake}.{payload}' (type.googleapis.com/google.protobuf.Struct)"
                ))),
            }
        }
        _ => Ok(field),
    }
}

fn validate_system(s: &Value) -> Result<(), Reject> {
    let Some(obj) = s.as_object() else { return Err(invalid("Invalid value at 'system_instruction'")) };
    check_fields(obj, &["role", "parts"], Some("system_instruction"))?;
    let parts = obj.get("parts").and_then(Value::as_array).filter(|p| !p.is_empty());
    let Some(parts) = parts else {
        return Err(invalid("* GenerateContentRequest.system_instruction.parts: contents.parts must not be empty.\n"));
    };
    for (j, p) in parts.iter().enumerate() {
        let at = format!("system_instruction.parts[{j}]");
        let Some(p) = p.as_object() else { return Err(invalid(format!("Invalid value at '{at}'"))) };
        check_fields(p, PART_DATA, Some(&at))?;
        if p.get("text").and_then(Value::as_str).is_none_or(str::is_empty) {
            return Err(invalid(format!(
                "* GenerateContentRequest.{at}.data: required oneof field 'data' must have one initialized field\n"
            )));
        }
    }
    Ok(())
}

/// The generation config; returns `maxOutputTokens`.
fn validate_generation(g: &Value) -> Result<Option<u64>, Reject> {
    let Some(obj) = g.as_object() else { return Err(invalid("Invalid value at 'generation_config'")) };
    check_fields(obj, GENERATION_FIELDS, Some("generation_config"))?;
    let number = |k: &str| {
        obj.get(k).map(|v| v.as_f64().ok_or_else(|| invalid(format!("Invalid value at 'generation_config.{k}'"))))
    };
    if let Some(t) = number("temperature").transpose()?
        && !(0.0..=2.0).contains(&t)
    {
        return Err(invalid(format!(
            "* GenerateContentRequest.generation_config.temperature: temperature must be in the range [0.0, 2.0], got {t}\n"
        )));
    }
    if let Some(p) = number("topP").transpose()?
        && !(0.0..=1.0).contains(&p)
    {
        return Err(invalid(
            "* GenerateContentRequest.generation_config.top_p: top_p must be in the range [0.0, 1.0]\n",
        ));
    }
    for k in ["presencePenalty", "frequencyPenalty"] {
        number(k).transpose()?;
    }
    for k in ["candidateCount", "seed", "topK"] {
        if obj.get(k).is_some_and(|v| !v.is_i64()) {
            return Err(invalid(format!("Invalid value at 'generation_config.{k}' (TYPE_INT32)")));
        }
    }
    if let Some(c) = obj.get("candidateCount").and_then(Value::as_i64)
        && c != 1
    {
        return Err(invalid("demo upstream: only candidateCount 1 is served"));
    }
    let max = match obj.get("maxOutputTokens") {
        None => None,
        Some(v) => match v.as_u64() {
            Some(n) if n > 0 => Some(n),
            _ => {
                return Err(invalid(
                    "* GenerateContentRequest.generation_config.max_output_tokens: max_output_tokens must be positive.\n",
                ));
            }
        },
    };
    if let Some(stop) = obj.get("stopSequences") {
        let Some(list) = stop.as_array().filter(|l| l.iter().all(Value::is_string)) else {
            return Err(invalid("Invalid value at 'generation_config.stop_sequences' (TYPE_STRING)"));
        };
        if list.len() > MAX_STOP_SEQUENCES {
            return Err(invalid(format!(
                "* GenerateContentRequest.generation_config.stop_sequences: Only up to {MAX_STOP_SEQUENCES} stop \
                 sequences are supported\n"
            )));
        }
    }
    if obj.get("responseMimeType").is_some_and(|m| !m.as_str().is_some_and(|m| MIME_TYPES.contains(&m))) {
        return Err(invalid(
            "* GenerateContentRequest.generation_config.response_mime_type: allowed mimetypes are `text/plain`, \
             `application/json` and `text/x.enum`.\n",
        ));
    }
    if let Some(s) = obj.get("responseSchema") {
        validate_schema(s, "generation_config.response_schema")?;
    }
    Ok(max)
}

/// The declared functions: (name, parameters).
fn validate_tools(t: &Value) -> Result<Vec<(String, Value)>, Reject> {
    let Some(tools) = t.as_array() else { return Err(invalid("Invalid value at 'tools'")) };
    let mut out = Vec::new();
    for (i, tool) in tools.iter().enumerate() {
        let at = format!("tools[{i}]");
        let Some(tool) = tool.as_object() else { return Err(invalid(format!("Invalid value at '{at}'"))) };
        check_fields(tool, TOOL_FIELDS, Some(&at))?;
        let decls = tool.get("functionDeclarations").map(|d| d.as_array().cloned().unwrap_or_default());
        for (j, d) in decls.iter().flatten().enumerate() {
            let at = format!("tools[{i}].function_declarations[{j}]");
            let Some(d) = d.as_object() else { return Err(invalid(format!("Invalid value at '{at}'"))) };
            check_fields(d, DECLARATION_FIELDS, Some(&at))?;
            let name = d.get("name").and_then(Value::as_str).unwrap_or_default();
            let valid_name = name.len() <= MAX_FUNCTION_NAME
                && name.bytes().next().is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
                && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-'));
            if !valid_name {
                return Err(invalid(format!(
                    "* GenerateContentRequest.{at}.name: Invalid function name. Must start with a letter or an \
                     underscore. Must be a-z, A-Z, 0-9, or contain underscores, dots, colons and dashes, with a \
                     maximum length of {MAX_FUNCTION_NAME}.\n"
                )));
            }
            let params = d.get("parameters").cloned().unwrap_or(Value::Null);
            if !params.is_null() {
                validate_schema(&params, &format!("{at}.parameters"))?;
            }
            out.push((name.to_string(), params));
        }
    }
    Ok(out)
}

/// A `Schema`: only its known fields, a known single `type`, and properties for an OBJECT.
fn validate_schema(s: &Value, at: &str) -> Result<(), Reject> {
    let Some(obj) = s.as_object() else { return Err(invalid(format!("Invalid value at '{at}'"))) };
    check_fields(obj, SCHEMA_FIELDS, Some(at))?;
    let kind = match obj.get("type") {
        None => None,
        Some(Value::Array(_)) => {
            return Err(invalid(format!(
                "Invalid JSON payload received. Unknown name \"type\" at '{at}': Proto field is not repeating, cannot \
                 start list."
            )));
        }
        Some(t) => match t.as_str().map(str::to_ascii_uppercase) {
            Some(t) if SCHEMA_TYPES.contains(&t.as_str()) => Some(t),
            _ => {
                return Err(invalid(format!(
                    "Invalid value at '{at}.type' (type.googleapis.com/google.ai.generativelanguage.v1beta.Type), {t}"
                )));
            }
        },
    };
    let properties = obj.get("properties").and_then(Value::as_object);
    if kind.as_deref() == Some("OBJECT") && properties.is_none_or(Map::is_empty) {
        return Err(invalid(format!(
            "* GenerateContentRequest.{at}.properties: should be non-empty for OBJECT type\n"
        )));
    }
    for (k, (_, p)) in properties.into_iter().flatten().enumerate() {
        validate_schema(p, &format!("{at}.properties[{k}].value"))?;
    }
    if let Some(items) = obj.get("items") {
        validate_schema(items, &format!("{at}.items"))?;
    }
    for (k, s) in obj.get("anyOf").and_then(Value::as_array).into_iter().flatten().enumerate() {
        validate_schema(s, &format!("{at}.any_of[{k}]"))?;
    }
    Ok(())
}

/// The calling mode and allowed function names.
fn validate_tool_config(t: &Value, declared: &[(String, Value)]) -> Result<(String, Vec<String>), Reject> {
    let Some(obj) = t.as_object() else { return Err(invalid("Invalid value at 'tool_config'")) };
    check_fields(obj, &["functionCallingConfig", "retrievalConfig"], Some("tool_config"))?;
    let Some(f) = obj.get("functionCallingConfig") else { return Ok(("AUTO".into(), vec![])) };
    let Some(f) = f.as_object() else { return Err(invalid("Invalid value at 'tool_config.function_calling_config'")) };
    check_fields(f, &["mode", "allowedFunctionNames"], Some("tool_config.function_calling_config"))?;
    let mode = f.get("mode").and_then(Value::as_str).unwrap_or("AUTO");
    if !MODES.contains(&mode) {
        return Err(invalid(format!(
            "Invalid value at 'tool_config.function_calling_config.mode' \
             (type.googleapis.com/google.ai.generativelanguage.v1beta.FunctionCallingConfig.Mode), \"{mode}\""
        )));
    }
    let allowed: Vec<String> = f
        .get("allowedFunctionNames")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).map(str::to_owned).collect())
        .unwrap_or_default();
    if !allowed.is_empty() && mode != "ANY" {
        return Err(invalid(
            "* GenerateContentRequest.tool_config.function_calling_config.allowed_function_names: \
             allowed_function_names can only be set when mode is ANY.\n",
        ));
    }
    if let Some(missing) = allowed.iter().find(|a| !declared.iter().any(|(n, _)| n == *a)) {
        return Err(invalid(format!(
            "* GenerateContentRequest.tool_config.function_calling_config.allowed_function_names: function {missing} \
             is not declared.\n"
        )));
    }
    Ok((mode.to_string(), allowed))
}

/// The model's answer: its parts, finish reason and token counts.
struct Answer {
    text: Option<String>,
    call: Option<Value>,
    finish_reason: &'static str,
    prompt_tokens: u64,
    output_tokens: u64,
}

impl Answer {
    fn for_turn(turn: &Turn, model: &str) -> Answer {
        let prompt_tokens = words(&turn.user_text);
        if let Some((name, params)) = &turn.call {
            // One string argument, from the first required (else first) string property.
            let props = params.get("properties").and_then(Value::as_object);
            let first = params
                .get("required")
                .and_then(Value::as_array)
                .and_then(|r| r.first())
                .and_then(Value::as_str)
                .or_else(|| props.and_then(|p| p.keys().next().map(String::as_str)));
            let mut args = Map::new();
            if let Some(arg) = first
                && props.and_then(|p| p.get(arg)).and_then(|s| s.get("type")).and_then(Value::as_str) == Some("string")
            {
                args.insert(arg.to_string(), Value::String(turn.user_text.clone()));
            }
            let mut call = json!({"functionCall": {"name": name, "args": args}});
            if model.starts_with("gemini-3") {
                call["thoughtSignature"] = json!(MOCK_SIGNATURE);
            }
            let output_tokens = words(&call["functionCall"].to_string());
            return Answer { text: None, call: Some(call), finish_reason: "STOP", prompt_tokens, output_tokens };
        }
        let reply = match &turn.function_response {
            Some((name, response)) => format!("Hello from the demo upstream! The function {name} returned: {response}"),
            None => format!("Hello from the demo upstream! You said: {}", turn.user_text),
        };
        let (reply, finish_reason) = match turn.max_output_tokens {
            Some(max) if words(&reply) > max => {
                (reply.split_whitespace().take(max as usize).collect::<Vec<_>>().join(" "), "MAX_TOKENS")
            }
            _ => (reply, "STOP"),
        };
        let output_tokens = words(&reply);
        Answer { text: Some(reply), call: None, finish_reason, prompt_tokens, output_tokens }
    }

    fn usage(&self, done: bool) -> Value {
        let details = json!([{"modality": "TEXT", "tokenCount": self.prompt_tokens}]);
        if done {
            json!({"promptTokenCount": self.prompt_tokens, "candidatesTokenCount": self.output_tokens,
                   "totalTokenCount": self.prompt_tokens + self.output_tokens, "promptTokensDetails": details})
        } else {
            // Interim stream chunks count the prompt only, as Gemini's do.
            json!({"promptTokenCount": self.prompt_tokens, "totalTokenCount": self.prompt_tokens,
                   "promptTokensDetails": details})
        }
    }

    fn response(&self, parts: Vec<Value>, finish: bool, model: &str) -> Value {
        let mut candidate = json!({"content": {"parts": parts, "role": "model"}, "index": 0});
        if finish {
            candidate["finishReason"] = json!(self.finish_reason);
        }
        json!({"candidates": [candidate], "usageMetadata": self.usage(finish), "modelVersion": model,
               "responseId": RESPONSE_ID})
    }

    fn parts(&self) -> Vec<Value> {
        match (&self.call, &self.text) {
            (Some(call), _) => vec![call.clone()],
            (None, Some(t)) => vec![json!({ "text": t })],
            (None, None) => vec![],
        }
    }

    fn complete(&self, req: &Req<'_>, model: &str) -> Response<Body> {
        let body = self.response(self.parts(), true, model).to_string();
        if let Some(delay) = knob_ms(req.headers, "x-mock-body-delay-ms") {
            // The head now, the body later: a vendor slow to finish a non-stream answer.
            let bytes = Bytes::from(body);
            let body = futures_util::stream::once(async move {
                tokio::time::sleep(delay).await;
                Ok::<_, std::io::Error>(Frame::data(bytes))
            });
            let mut r = Response::new(StreamBody::new(body).boxed_unsync());
            r.headers_mut().insert(header::CONTENT_TYPE, "application/json; charset=UTF-8".parse().expect("static"));
            return r;
        }
        json_response(StatusCode::OK, body)
    }

    /// Each event a whole response with the next piece; the last carries the finish
    /// reason and the full usage.
    fn stream(&self, req: &Req<'_>, model: &str) -> Response<Body> {
        let parts: Vec<Vec<Value>> = match &self.text {
            Some(t) if self.call.is_none() => {
                pieces(t, chunk_count(req)).into_iter().map(|p| vec![json!({ "text": p })]).collect()
            }
            _ => vec![self.parts()],
        };
        let last = parts.len() - 1;
        // The last event carries the finish reason, and Gemini sends no terminator after it.
        let end = End { finish: last, terminator: false };
        let events = parts
            .into_iter()
            .enumerate()
            .map(|(i, p)| format!("data: {}\r\n\r\n", self.response(p, i == last, model)))
            .collect();
        event_stream(req, events, end, "text/event-stream")
    }
}

/// `embedContent` (`{content, ...}` → `{embedding}`) and `batchEmbedContents`
/// (`{requests: [...]}` → `{embeddings: [...]}`), with deterministic, text-dependent vectors.
fn embeddings(body: &Value, model: &str, batch: bool) -> Result<Value, Reject> {
    let Some(obj) = body.as_object() else { return Err(invalid("Invalid JSON payload received. Expected an object.")) };
    let single;
    let requests: &[Value] = if batch {
        check_fields(obj, &["requests"], None)?;
        match obj.get("requests") {
            Some(Value::Array(r)) if !r.is_empty() => r,
            _ => return Err(invalid("* BatchEmbedContentsRequest.requests: requests is not specified\n")),
        }
    } else {
        single = [body.clone()];
        &single
    };
    let mut vectors = Vec::new();
    for (i, r) in requests.iter().enumerate() {
        let at = if batch { format!("requests[{i}]") } else { String::new() };
        let Some(r) = r.as_object() else { return Err(invalid(format!("Invalid value at '{at}'"))) };
        check_fields(r, EMBED_FIELDS, (!at.is_empty()).then_some(at.as_str()))?;
        if batch && r.get("model").and_then(Value::as_str) != Some(&format!("models/{model}")) {
            return Err(invalid(format!(
                "* BatchEmbedContentsRequest.model: Model in the batch request does not match the model in \
                 requests[{i}]: models/{model}\n"
            )));
        }
        let parts = r.get("content").and_then(|c| c.get("parts")).and_then(Value::as_array).filter(|p| !p.is_empty());
        let Some(parts) = parts else {
            return Err(invalid("* EmbedContentRequest.content: content is not specified\n"));
        };
        let text: String = parts.iter().filter_map(|p| p.get("text").and_then(Value::as_str)).collect();
        if text.is_empty() {
            return Err(invalid(
                "* EmbedContentRequest.content.parts[0].data: required oneof field 'data' must have one initialized field\n",
            ));
        }
        let dims = match r.get("outputDimensionality") {
            None => EMBEDDING_DIMENSIONS,
            Some(d) => match d.as_u64() {
                Some(d) if d > 0 => d,
                _ => return Err(invalid("* EmbedContentRequest.output_dimensionality: must be positive\n")),
            },
        };
        let seed = text.bytes().fold(7u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)));
        let values: Vec<f64> = (0..dims).map(|k| ((seed >> ((k % 16) * 4)) & 0xf) as f64 / 15.0 - 0.5).collect();
        vectors.push(json!({ "values": values }));
    }
    Ok(if batch { json!({ "embeddings": vectors }) } else { json!({ "embedding": vectors[0] }) })
}
