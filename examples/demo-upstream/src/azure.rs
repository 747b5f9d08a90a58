//! Azure OpenAI's deployments API, as the vendor speaks it: `POST
//! /openai/deployments/{deployment}/chat/completions|embeddings?api-version=...` with an
//! `api-key` header, Azure's `{"error": {"code", "message"}}` errors for what the service
//! itself refuses (address, version, key, deployment, rate), OpenAI's error shape for what
//! the model refuses (the body), and OpenAI's answers with Azure's content-filter extras.
//!
//! Azure-only knobs, besides the shared ones: `x-mock-fault: filter-prompt` answers Azure's
//! 400 `content_filter` error; `x-mock-fault: filter-completion` ends the answer early with
//! `finish_reason: "content_filter"`.

use http::{Method, Response, StatusCode, header};
use serde_json::{Map, Value, json};

use crate::{Body, End, Req, chunk_count, event_stream, json_response, not_json, pieces, tool_arguments, words};

/// The API versions the mock serves (GA and preview versions Azure accepts).
const API_VERSIONS: &[&str] = &[
    "2024-02-01",
    "2024-06-01",
    "2024-10-21",
    "2024-08-01-preview",
    "2024-10-01-preview",
    "2024-12-01-preview",
    "2025-01-01-preview",
];

/// The resource's deployments and the model version each runs.
const DEPLOYMENTS: &[(&str, &str)] = &[("gpt-4o-prod", "gpt-4o-2024-08-06"), ("embed-prod", "text-embedding-3-small")];

/// Any deployment named `dep-<model>` exists too, running `<model>`.
const DEPLOYMENT_PREFIX: &str = "dep-";

/// The body parameters Azure's chat completions accept (OpenAI's, plus Azure's
/// `data_sources`); anything else is refused as OpenAI refuses it.
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
    "store",
    "metadata",
    "modalities",
    "audio",
    "prediction",
    "reasoning_effort",
    "functions",
    "function_call",
    "data_sources",
];
const EMBEDDING_PARAMS: &[&str] = &["model", "input", "encoding_format", "dimensions", "user", "input_type"];
const ROLES: &[&str] = &["system", "developer", "user", "assistant", "tool", "function"];

const RESPONSE_ID: &str = "chatcmpl-azure0001";
const TOOL_CALL_ID: &str = "call_azure0001";
const CREATED: u64 = 1_700_000_000;
const FINGERPRINT: &str = "fp_azure";
/// Seconds Azure's 429 asks the client to wait.
const RETRY_AFTER_SECS: u64 = 7;

type Refusal = Box<Response<Body>>;

/// Azure's own error shape: `code` and `message`, no `type`.
fn azure_error(status: StatusCode, code: &str, message: &str) -> Response<Body> {
    json_response(status, json!({"error": {"code": code, "message": message}}).to_string())
}

/// OpenAI's error shape, which Azure passes on for what the model side refuses.
fn openai_error(message: &str, param: Option<&str>) -> Refusal {
    let body = json!({"error": {"message": message, "type": "invalid_request_error", "param": param, "code": null}});
    Box::new(json_response(StatusCode::BAD_REQUEST, body.to_string()))
}

fn not_found() -> Response<Body> {
    azure_error(StatusCode::NOT_FOUND, "404", "Resource not found")
}

#[derive(Clone, Copy, PartialEq)]
enum Operation {
    Chat,
    Embeddings,
}

impl Operation {
    fn name(self) -> &'static str {
        match self {
            Operation::Chat => "ChatCompletions_Create",
            Operation::Embeddings => "Embeddings_Create",
        }
    }
}

pub(crate) async fn handle(req: &Req<'_>) -> Response<Body> {
    let route = req.path.strip_prefix("/openai/deployments/").and_then(|rest| rest.split_once('/'));
    let (deployment, operation) = match route {
        Some((d, "chat/completions")) if !d.is_empty() => (d, Operation::Chat),
        Some((d, "embeddings")) if !d.is_empty() => (d, Operation::Embeddings),
        _ => return not_found(),
    };
    if *req.method != Method::POST {
        return not_found();
    }
    let Some(version) = query_param(req.query, "api-version") else {
        return not_found();
    };
    if let Some(refusal) = check_key(req) {
        return refusal;
    }
    if !API_VERSIONS.contains(&version) {
        return azure_error(StatusCode::BAD_REQUEST, "BadRequest", "API version not supported");
    }
    if let Some(status) = req.mock_status() {
        return status_error(status, operation, version);
    }
    match req.fault().as_str() {
        "not-json" => return not_json(),
        "filter-prompt" => return prompt_filtered(),
        _ => {}
    }
    let Some(model) = deployed_model(deployment) else {
        return azure_error(
            StatusCode::NOT_FOUND,
            "DeploymentNotFound",
            "The API deployment for this resource does not exist. If you created the deployment within the last 5 minutes, please wait a moment and try again.",
        );
    };
    let embeds = model.starts_with("text-embedding");
    if embeds != (operation == Operation::Embeddings) {
        let op = if operation == Operation::Chat { "chatCompletion" } else { "embeddings" };
        let msg = format!(
            "The {op} operation does not work with the specified model, {model}. Please choose different model and try again. You can learn more about which models can be used with each operation here: https://go.microsoft.com/fwlink/?linkid=2197993."
        );
        return azure_error(StatusCode::BAD_REQUEST, "OperationNotSupported", &msg);
    }
    let answer = match operation {
        Operation::Chat => chat(req, &model),
        Operation::Embeddings => embeddings(req.body, &model),
    };
    answer.unwrap_or_else(|r| *r)
}

fn query_param<'a>(query: Option<&'a str>, name: &str) -> Option<&'a str> {
    query?.split('&').find_map(|pair| pair.split_once('=').filter(|(k, _)| *k == name).map(|(_, v)| v))
}

/// The key goes in `api-key`; a bearer header is read as an Entra ID token, which an API
/// key is not.
fn check_key(req: &Req<'_>) -> Option<Response<Body>> {
    match req.header("api-key") {
        Some(k) if k == req.options.api_key => None,
        None if req.header("authorization").is_some() => Some(azure_error(
            StatusCode::UNAUTHORIZED,
            "401",
            "Unauthorized. Access token is missing, invalid, audience is incorrect (https://cognitiveservices.azure.com), or have expired.",
        )),
        _ => Some(azure_error(
            StatusCode::UNAUTHORIZED,
            "401",
            "Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide a valid key for an active subscription and use a correct regional API endpoint for your resource.",
        )),
    }
}

fn status_error(status: StatusCode, operation: Operation, version: &str) -> Response<Body> {
    let n = status.as_u16();
    match n {
        429 => {
            let msg = format!(
                "Requests to the {} Operation under Azure OpenAI API version {version} have exceeded token rate limit of your current OpenAI S0 pricing tier. Please retry after {RETRY_AFTER_SECS} seconds. Please go here: https://aka.ms/oai/quotaincrease if you would like to further increase the default rate limit.",
                operation.name()
            );
            let mut r = azure_error(status, "429", &msg);
            r.headers_mut().insert(header::RETRY_AFTER, RETRY_AFTER_SECS.into());
            r
        }
        500 => azure_error(status, "InternalServerError", "The server had an error while processing your request."),
        503 => azure_error(
            status,
            "ServiceUnavailable",
            "The service is temporarily unable to process your request. Please try again later.",
        ),
        _ => azure_error(status, &n.to_string(), &format!("Mock vendor error {n}")),
    }
}

/// The content-filter verdicts of harmless text.
fn safe_verdicts() -> Value {
    let safe = json!({"filtered": false, "severity": "safe"});
    json!({"hate": safe, "self_harm": safe, "sexual": safe, "violence": safe})
}

fn prompt_filter_results() -> Value {
    let mut verdicts = safe_verdicts();
    verdicts["jailbreak"] = json!({"filtered": false, "detected": false});
    json!([{"prompt_index": 0, "content_filter_results": verdicts}])
}

fn prompt_filtered() -> Response<Body> {
    let mut verdicts = safe_verdicts();
    verdicts["violence"] = json!({"filtered": true, "severity": "high"});
    let body = json!({"error": {
        "message": "The response was filtered due to the prompt triggering Azure OpenAI's content management policy. Please modify your prompt and retry. To learn more about our content filtering policies please read our documentation: https://go.microsoft.com/fwlink/?linkid=2198766",
        "type": null, "param": "prompt", "code": "content_filter", "status": 400,
        "innererror": {"code": "ResponsibleAIPolicyViolation", "content_filter_result": verdicts}}});
    json_response(StatusCode::BAD_REQUEST, body.to_string())
}

fn deployed_model(deployment: &str) -> Option<String> {
    if let Some((_, model)) = DEPLOYMENTS.iter().find(|(d, _)| *d == deployment) {
        return Some((*model).to_string());
    }
    deployment.strip_prefix(DEPLOYMENT_PREFIX).filter(|m| !m.is_empty()).map(str::to_owned)
}

fn check_params<'a>(body: &'a Value, allowed: &[&str]) -> Result<&'a Map<String, Value>, Refusal> {
    let Some(obj) = body.as_object() else {
        return Err(openai_error("We could not parse the JSON body of your request.", None));
    };
    match obj.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(k) => Err(openai_error(&format!("Unrecognized request argument supplied: {k}"), None)),
        None => Ok(obj),
    }
}

/// Roles, contents and the tool-call/tool-result pairing, as OpenAI checks them; returns
/// the text of the last user message.
fn validate_messages(body: &Value) -> Result<String, Refusal> {
    let Some(messages) = body.get("messages").and_then(Value::as_array) else {
        return Err(openai_error("'messages' is a required property", Some("messages")));
    };
    if messages.is_empty() {
        return Err(openai_error("[] is too short - 'messages'", Some("messages")));
    }
    let mut last_user = String::new();
    // Tool calls of the latest assistant message that still await their results.
    let mut pending: Vec<String> = Vec::new();
    let mut pending_from = 0;
    for (i, m) in messages.iter().enumerate() {
        let role = m.get("role").and_then(Value::as_str).unwrap_or("");
        if !ROLES.contains(&role) {
            let msg = format!("Invalid value: '{role}'. Supported values are: {ROLES:?}");
            return Err(openai_error(&msg, Some(&format!("messages[{i}].role"))));
        }
        if role != "tool" && !pending.is_empty() {
            let msg = format!(
                "An assistant message with 'tool_calls' must be followed by tool messages responding to each 'tool_call_id'. The following tool_call_ids did not have response messages: {}",
                pending.join(", ")
            );
            return Err(openai_error(&msg, Some(&format!("messages.[{pending_from}].role"))));
        }
        let content = m.get("content");
        let tool_calls = m.get("tool_calls").and_then(Value::as_array);
        match content {
            Some(Value::String(s)) if role == "user" => last_user.clone_from(s),
            Some(Value::Array(parts)) if role == "user" => {
                last_user =
                    parts.iter().filter_map(|p| p.get("text").and_then(Value::as_str)).collect::<Vec<_>>().join(" ");
            }
            Some(Value::String(_)) | Some(Value::Array(_)) => {}
            None | Some(Value::Null) if role == "assistant" && tool_calls.is_some() => {}
            _ => {
                let msg = format!("messages[{i}].content is required for role '{role}'");
                return Err(openai_error(&msg, Some(&format!("messages[{i}].content"))));
            }
        }
        match role {
            "assistant" => {
                pending = tool_calls
                    .into_iter()
                    .flatten()
                    .filter_map(|c| c.get("id").and_then(Value::as_str).map(str::to_owned))
                    .collect();
                pending_from = i;
            }
            "tool" => {
                let Some(id) = m.get("tool_call_id").and_then(Value::as_str) else {
                    let msg = format!("messages[{i}].tool_call_id is required for role 'tool'");
                    return Err(openai_error(&msg, Some(&format!("messages[{i}].tool_call_id"))));
                };
                let Some(at) = pending.iter().position(|p| p == id) else {
                    return Err(openai_error(
                        "Invalid parameter: messages with role 'tool' must be a response to a preceeding message with 'tool_calls'.",
                        Some(&format!("messages.[{i}].role")),
                    ));
                };
                pending.remove(at);
            }
            _ => {}
        }
    }
    if !pending.is_empty() {
        let msg = format!(
            "An assistant message with 'tool_calls' must be followed by tool messages responding to each 'tool_call_id'. The following tool_call_ids did not have response messages: {}",
            pending.join(", ")
        );
        return Err(openai_error(&msg, Some(&format!("messages.[{pending_from}].role"))));
    }
    Ok(last_user)
}

/// The first tool's name and its function's parameter schema, after checking every tool.
fn validate_tools(body: &Value) -> Result<Option<(String, Value)>, Refusal> {
    let Some(tools) = body.get("tools").filter(|t| !t.is_null()) else {
        return Ok(None);
    };
    let Some(tools) = tools.as_array() else {
        return Err(openai_error("Invalid type for 'tools': expected an array.", Some("tools")));
    };
    for (i, t) in tools.iter().enumerate() {
        let kind = t.get("type").and_then(Value::as_str).unwrap_or("");
        if kind != "function" {
            let msg = format!("Invalid value: '{kind}'. Supported values are: 'function'.");
            return Err(openai_error(&msg, Some(&format!("tools[{i}].type"))));
        }
        if t.pointer("/function/name").and_then(Value::as_str).is_none_or(str::is_empty) {
            let msg = format!("Missing required parameter: 'tools[{i}].function.name'.");
            return Err(openai_error(&msg, Some(&format!("tools[{i}].function.name"))));
        }
    }
    Ok(tools.first().map(|t| {
        let name = t.pointer("/function/name").and_then(Value::as_str).unwrap_or_default().to_string();
        (name, t.pointer("/function/parameters").cloned().unwrap_or(Value::Null))
    }))
}

/// What the mock model answers.
enum Reply {
    Text { text: String, filtered: bool },
    ToolCall { name: String, arguments: String },
}

fn chat(req: &Req<'_>, model: &str) -> Result<Response<Body>, Refusal> {
    let body = req.body;
    check_params(body, CHAT_PARAMS)?;
    let last_user = validate_messages(body)?;
    let first_tool = validate_tools(body)?;
    let stream = body.get("stream").and_then(Value::as_bool).unwrap_or(false);
    if body.get("stream_options").is_some_and(|v| !v.is_null()) && !stream {
        return Err(openai_error(
            "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
            Some("stream_options"),
        ));
    }
    let last_role = body.pointer("/messages").and_then(Value::as_array).and_then(|m| m.last()?.get("role")?.as_str());
    let text = format!("Hello from the demo upstream! You said: {last_user}");
    let reply = match first_tool {
        Some((name, schema)) if last_role == Some("user") => {
            Reply::ToolCall { name, arguments: tool_arguments(&schema, &last_user) }
        }
        _ if req.fault() == "filter-completion" => {
            // The filter stops the answer after its first words.
            let cut: Vec<&str> = text.split_whitespace().take(2).collect();
            Reply::Text { text: cut.join(" "), filtered: true }
        }
        _ => Reply::Text { text, filtered: false },
    };
    let completion_tokens = match &reply {
        Reply::Text { text, .. } => words(text),
        Reply::ToolCall { arguments, .. } => words(arguments),
    };
    let prompt_tokens = words(&last_user);
    let usage = json!({"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens, "total_tokens": prompt_tokens + completion_tokens});
    if stream {
        let include_usage = body.pointer("/stream_options/include_usage").and_then(Value::as_bool).unwrap_or(false);
        Ok(chat_stream(req, model, &reply, include_usage.then_some(usage)))
    } else {
        Ok(json_response(StatusCode::OK, chat_body(model, &reply, usage).to_string()))
    }
}

fn filtered_verdicts() -> Value {
    let mut v = safe_verdicts();
    v["violence"] = json!({"filtered": true, "severity": "medium"});
    v
}

fn chat_body(model: &str, reply: &Reply, usage: Value) -> Value {
    let (message, finish, verdicts) = match reply {
        Reply::Text { text, filtered } => (
            json!({"role": "assistant", "content": text, "refusal": null}),
            if *filtered { "content_filter" } else { "stop" },
            if *filtered { filtered_verdicts() } else { safe_verdicts() },
        ),
        Reply::ToolCall { name, arguments } => (
            json!({"role": "assistant", "content": null, "refusal": null, "tool_calls": [
                {"id": TOOL_CALL_ID, "type": "function", "function": {"name": name, "arguments": arguments}}]}),
            "tool_calls",
            json!({}),
        ),
    };
    json!({
        "id": RESPONSE_ID, "object": "chat.completion", "created": CREATED, "model": model,
        "prompt_filter_results": prompt_filter_results(),
        "choices": [{"index": 0, "message": message, "logprobs": null, "finish_reason": finish,
                     "content_filter_results": verdicts}],
        "usage": usage, "system_fingerprint": FINGERPRINT,
    })
}

/// Azure's stream: a `prompt_filter_results` chunk without choices, OpenAI chunks with
/// `content_filter_results` in each choice, the usage chunk if asked, `[DONE]`.
fn chat_stream(req: &Req<'_>, model: &str, reply: &Reply, usage: Option<Value>) -> Response<Body> {
    let include_usage = usage.is_some();
    let chunk = |delta: Value, finish: Value, verdicts: Value| {
        let mut c = json!({"id": RESPONSE_ID, "object": "chat.completion.chunk", "created": CREATED, "model": model,
            "system_fingerprint": FINGERPRINT,
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish,
                         "content_filter_results": verdicts}]});
        if include_usage {
            c["usage"] = Value::Null;
        }
        format!("data: {c}\n\n")
    };
    let filter_chunk = json!({"choices": [], "created": 0, "id": "", "model": "", "object": "",
        "prompt_filter_results": prompt_filter_results()});
    let mut events = vec![format!("data: {filter_chunk}\n\n")];
    match reply {
        Reply::Text { text, filtered } => {
            events.push(chunk(json!({"role": "assistant", "content": "", "refusal": null}), Value::Null, json!({})));
            for piece in pieces(text, chunk_count(req)) {
                events.push(chunk(json!({"content": piece}), Value::Null, safe_verdicts()));
            }
            let (finish, verdicts) =
                if *filtered { ("content_filter", filtered_verdicts()) } else { ("stop", json!({})) };
            events.push(chunk(json!({}), json!(finish), verdicts));
        }
        Reply::ToolCall { name, arguments } => {
            let start = json!({"role": "assistant", "content": null, "refusal": null, "tool_calls": [
                {"index": 0, "id": TOOL_CALL_ID, "type": "function", "function": {"name": name, "arguments": ""}}]});
            events.push(chunk(start, Value::Null, json!({})));
            for piece in pieces(arguments, chunk_count(req)) {
                let delta = json!({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]});
                events.push(chunk(delta, Value::Null, json!({})));
            }
            events.push(chunk(json!({}), json!("tool_calls"), json!({})));
        }
    }
    // Both replies end with their finish chunk.
    let end = End { finish: events.len() - 1, terminator: true };
    if let Some(usage) = usage {
        let c = json!({"id": RESPONSE_ID, "object": "chat.completion.chunk", "created": CREATED, "model": model,
            "system_fingerprint": FINGERPRINT, "choices": [], "usage": usage});
        events.push(format!("data: {c}\n\n"));
    }
    events.push("data: [DONE]\n\n".into());
    event_stream(req, events, end, "text/event-stream")
}

fn embeddings(body: &Value, model: &str) -> Result<Response<Body>, Refusal> {
    check_params(body, EMBEDDING_PARAMS)?;
    let inputs: Vec<String> = match body.get("input") {
        Some(Value::String(s)) if !s.is_empty() => vec![s.clone()],
        Some(Value::Array(a)) if !a.is_empty() && a.iter().all(Value::is_string) => {
            a.iter().filter_map(Value::as_str).map(str::to_owned).collect()
        }
        _ => return Err(openai_error("'input' is a required property", Some("input"))),
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
    let body = json!({"object": "list", "data": data, "model": model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens}});
    Ok(json_response(StatusCode::OK, body.to_string()))
}
