//! Anthropic Messages through chat completions: the request to chat, the chat completion
//! back to a Message, and a chat chunk stream to Messages' event sequence.
//!
//! What maps, what is dropped and what is refused is listed in docs/apis.md. The stream's
//! state machine is in `stream`; the request and the whole answer are here.

use std::borrow::Cow;

use bytes::Bytes;
use http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::chat;
use crate::answer::{Batch, Whole};
use crate::error::{RelayError, anthropic};
use crate::model::{OutputEvent, Usage};

// ---- the client's request ----

#[derive(Deserialize)]
struct Request {
    model: String,
    max_tokens: u64,
    messages: Vec<InMessage>,
    #[serde(default)]
    system: Option<System>,
    #[serde(default)]
    stop_sequences: Option<Vec<String>>,
    #[serde(default)]
    temperature: Option<f64>,
    #[serde(default)]
    top_p: Option<f64>,
    #[serde(default)]
    metadata: Option<Metadata>,
    #[serde(default)]
    tools: Option<Vec<InTool>>,
    #[serde(default)]
    tool_choice: Option<InToolChoice>,
    #[serde(default)]
    stream: Option<bool>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum System {
    Text(String),
    Blocks(Vec<TextBlock>),
}

#[derive(Deserialize)]
struct TextBlock {
    text: String,
}

#[derive(Deserialize)]
struct Metadata {
    #[serde(default)]
    user_id: Option<String>,
}

#[derive(Deserialize)]
struct InMessage {
    role: String,
    content: InContent,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum InContent {
    Text(String),
    Blocks(Vec<Block>),
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Block {
    Text {
        text: String,
    },
    Image {
        source: ImageSource,
    },
    ToolUse {
        id: String,
        name: String,
        #[serde(default)]
        input: Value,
    },
    ToolResult {
        tool_use_id: String,
        #[serde(default)]
        content: Option<ToolResultContent>,
        #[serde(default)]
        is_error: Option<bool>,
    },
    /// Earlier turns' reasoning: chat has no place for it, and it is dropped.
    Thinking {},
    RedactedThinking {},
    #[serde(other)]
    Other,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ImageSource {
    Base64 { media_type: String, data: String },
    Url { url: String },
}

#[derive(Deserialize)]
#[serde(untagged)]
enum ToolResultContent {
    Text(String),
    Blocks(Vec<Block>),
}

#[derive(Deserialize)]
struct InTool {
    name: String,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    input_schema: Option<Value>,
    /// Server tools (`web_search_...`) name a type; client tools have none or `custom`.
    #[serde(rename = "type", default)]
    kind: Option<String>,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum InToolChoice {
    Auto {
        #[serde(default)]
        disable_parallel_tool_use: Option<bool>,
    },
    Any {
        #[serde(default)]
        disable_parallel_tool_use: Option<bool>,
    },
    Tool {
        name: String,
        #[serde(default)]
        disable_parallel_tool_use: Option<bool>,
    },
    None,
}

fn invalid(message: impl Into<String>) -> RelayError {
    RelayError::bad_request(message)
}

/// The chat completions request for a Messages request.
pub fn request(body: &str) -> Result<String, RelayError> {
    let req: Request =
        serde_json::from_str(body).map_err(|e| invalid(format!("the request is not a valid Messages request: {e}")))?;
    let mut messages = Vec::with_capacity(req.messages.len() + 1);
    match &req.system {
        Some(System::Text(s)) if !s.is_empty() => messages.push(text_message("system", Cow::Borrowed(s))),
        Some(System::Blocks(blocks)) if !blocks.is_empty() => {
            let text: Vec<&str> = blocks.iter().map(|b| b.text.as_str()).collect();
            messages.push(text_message("system", Cow::Owned(text.join("\n"))));
        }
        _ => {}
    }
    for (i, m) in req.messages.iter().enumerate() {
        match m.role.as_str() {
            "user" => user_turn(i, &m.content, &mut messages)?,
            "assistant" => messages.push(assistant_turn(i, &m.content)?),
            other => {
                return Err(invalid(format!(
                    "messages.{i}.role: Input should be 'user' or 'assistant', not '{other}'"
                )));
            }
        }
    }
    let tools = match &req.tools {
        None => None,
        Some(tools) => Some(tools.iter().enumerate().map(|(i, t)| tool(i, t)).collect::<Result<Vec<_>, _>>()?),
    };
    let (tool_choice, parallel) = match &req.tool_choice {
        None => (None, None),
        Some(InToolChoice::Auto { disable_parallel_tool_use: d }) => (Some(chat::ToolChoice::Mode("auto")), *d),
        Some(InToolChoice::Any { disable_parallel_tool_use: d }) => (Some(chat::ToolChoice::Mode("required")), *d),
        Some(InToolChoice::Tool { name, disable_parallel_tool_use: d }) => {
            (Some(chat::ToolChoice::Named { kind: "function", function: chat::Named { name } }), *d)
        }
        Some(InToolChoice::None) => (Some(chat::ToolChoice::Mode("none")), None),
    };
    let stream = req.stream == Some(true);
    let out = chat::Request {
        model: &req.model,
        messages,
        max_tokens: Some(req.max_tokens),
        temperature: req.temperature,
        top_p: req.top_p,
        stop: req.stop_sequences.as_deref().filter(|s| !s.is_empty()),
        tools,
        tool_choice,
        // Only ever sent to turn parallel calls off: the default is the vendor's.
        parallel_tool_calls: parallel.filter(|d| *d).map(|_| false),
        user: req.metadata.as_ref().and_then(|m| m.user_id.as_deref()),
        stream: stream.then_some(true),
        stream_options: stream.then_some(chat::StreamOptions { include_usage: true }),
        response_format: None,
    };
    serde_json::to_string(&out).map_err(|e| RelayError::plugin(format!("the chat request could not be written: {e}")))
}

fn text_message<'a>(role: &'static str, text: Cow<'a, str>) -> chat::Message<'a> {
    chat::Message { role, content: Some(chat::Content::Text(text)), tool_calls: None, tool_call_id: None }
}

/// A user turn: its tool results become `tool` messages (first, as chat wants them right
/// after the assistant's calls), its text and images one user message.
fn user_turn<'a>(i: usize, content: &'a InContent, out: &mut Vec<chat::Message<'a>>) -> Result<(), RelayError> {
    let blocks = match content {
        InContent::Text(s) => {
            out.push(text_message("user", Cow::Borrowed(s)));
            return Ok(());
        }
        InContent::Blocks(b) => b,
    };
    let mut parts = Vec::new();
    for (j, b) in blocks.iter().enumerate() {
        match b {
            Block::Text { text } => parts.push(chat::Part::Text { text }),
            Block::Image { source } => {
                parts.push(chat::Part::ImageUrl { image_url: chat::ImageUrl { url: image_url(source) } })
            }
            Block::ToolResult { tool_use_id, content, is_error } => {
                let text = tool_result_text(i, j, content.as_ref())?;
                let text = if *is_error == Some(true) { Cow::Owned(format!("Error: {text}")) } else { text };
                out.push(chat::Message {
                    role: "tool",
                    content: Some(chat::Content::Text(text)),
                    tool_calls: None,
                    tool_call_id: Some(tool_use_id),
                });
            }
            Block::Thinking {} | Block::RedactedThinking {} => {}
            Block::ToolUse { .. } => {
                return Err(invalid(format!(
                    "messages.{i}.content.{j}: a tool_use block is not allowed in a user message"
                )));
            }
            Block::Other => return Err(unsupported_block(i, j)),
        }
    }
    match parts.as_slice() {
        [] => {}
        [chat::Part::Text { text }] => out.push(text_message("user", Cow::Borrowed(text))),
        _ => out.push(chat::Message {
            role: "user",
            content: Some(chat::Content::Parts(parts)),
            tool_calls: None,
            tool_call_id: None,
        }),
    }
    Ok(())
}

fn unsupported_block(i: usize, j: usize) -> RelayError {
    invalid(format!(
        "messages.{i}.content.{j}: this content block type is not supported on this channel (only text, image, tool_use and tool_result reach a chat completions vendor)"
    ))
}

fn image_url(source: &ImageSource) -> Cow<'_, str> {
    match source {
        ImageSource::Base64 { media_type, data } => Cow::Owned(format!("data:{media_type};base64,{data}")),
        ImageSource::Url { url } => Cow::Borrowed(url),
    }
}

fn tool_result_text<'a>(
    i: usize,
    j: usize,
    content: Option<&'a ToolResultContent>,
) -> Result<Cow<'a, str>, RelayError> {
    match content {
        None => Ok(Cow::Borrowed("")),
        Some(ToolResultContent::Text(s)) => Ok(Cow::Borrowed(s)),
        Some(ToolResultContent::Blocks(blocks)) => {
            let mut texts = Vec::with_capacity(blocks.len());
            for b in blocks {
                match b {
                    Block::Text { text } => texts.push(text.as_str()),
                    _ => {
                        return Err(invalid(format!(
                            "messages.{i}.content.{j}: a tool_result may only hold text on this channel (chat completions tool messages are text)"
                        )));
                    }
                }
            }
            Ok(Cow::Owned(texts.join("\n")))
        }
    }
}

fn assistant_turn(i: usize, content: &InContent) -> Result<chat::Message<'_>, RelayError> {
    let blocks = match content {
        InContent::Text(s) => return Ok(text_message("assistant", Cow::Borrowed(s))),
        InContent::Blocks(b) => b,
    };
    let mut text = String::new();
    let mut calls = Vec::new();
    for (j, b) in blocks.iter().enumerate() {
        match b {
            Block::Text { text: t } => text.push_str(t),
            Block::ToolUse { id, name, input } => {
                let arguments = if input.is_null() { "{}".to_string() } else { input.to_string() };
                calls.push(chat::ToolCall { id, kind: "function", function: chat::FunctionCall { name, arguments } });
            }
            Block::Thinking {} | Block::RedactedThinking {} => {}
            Block::Image { .. } | Block::ToolResult { .. } => {
                return Err(invalid(format!(
                    "messages.{i}.content.{j}: this block is not allowed in an assistant message"
                )));
            }
            Block::Other => return Err(unsupported_block(i, j)),
        }
    }
    let content = if text.is_empty() && !calls.is_empty() { None } else { Some(chat::Content::Text(Cow::Owned(text))) };
    Ok(chat::Message {
        role: "assistant",
        content,
        tool_calls: (!calls.is_empty()).then_some(calls),
        tool_call_id: None,
    })
}

fn tool(i: usize, t: &InTool) -> Result<chat::Tool<'_>, RelayError> {
    if let Some(kind) = t.kind.as_deref().filter(|k| *k != "custom") {
        return Err(invalid(format!(
            "tools.{i}: the server tool '{kind}' is not supported on this channel (only client tools reach a chat completions vendor)"
        )));
    }
    let Some(parameters) = &t.input_schema else {
        return Err(invalid(format!("tools.{i}.input_schema: Field required")));
    };
    Ok(chat::Tool {
        kind: "function",
        function: chat::Function { name: &t.name, description: t.description.as_deref(), parameters, strict: None },
    })
}

// ---- the answer ----

#[derive(Serialize)]
struct OutMessage<'a> {
    id: Cow<'a, str>,
    #[serde(rename = "type")]
    kind: &'static str,
    role: &'static str,
    model: &'a str,
    content: Vec<OutBlock<'a>>,
    stop_reason: &'static str,
    stop_sequence: Option<&'a str>,
    usage: OutUsage,
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum OutBlock<'a> {
    Text { text: &'a str },
    ToolUse { id: &'a str, name: &'a str, input: Value },
}

/// Anthropic's usage: `input_tokens` are the uncached ones; cache reads are apart.
#[derive(Serialize, Default, Clone, Copy, Debug, PartialEq, Eq)]
struct OutUsage {
    input_tokens: u64,
    output_tokens: u64,
    cache_creation_input_tokens: Option<u64>,
    cache_read_input_tokens: Option<u64>,
}

impl OutUsage {
    fn from_chat(u: &chat::Usage) -> OutUsage {
        let cached = u.cached();
        OutUsage {
            input_tokens: u.prompt_tokens.saturating_sub(cached.unwrap_or(0)),
            output_tokens: u.completion_tokens,
            cache_creation_input_tokens: None,
            cache_read_input_tokens: cached,
        }
    }

    fn from_model(u: &Usage) -> OutUsage {
        OutUsage {
            input_tokens: u.input.saturating_sub(u.cached_input.unwrap_or(0)),
            output_tokens: u.output,
            cache_creation_input_tokens: u.cache_creation_input,
            cache_read_input_tokens: u.cached_input,
        }
    }
}

/// Chat's `finish_reason` (and the stop string, when the vendor names it) → Anthropic's
/// `stop_reason` and `stop_sequence`: `stop` with a named stop string is `stop_sequence`;
/// OpenAI itself does not name it, so there `stop` is `end_turn`.
fn stop_of<'a>(finish: Option<&str>, matched: Option<&'a str>) -> (&'static str, Option<&'a str>) {
    match (finish, matched) {
        (Some("stop"), Some(seq)) => ("stop_sequence", Some(seq)),
        _ => (stop_reason(finish), None),
    }
}

/// Chat's `finish_reason` → Anthropic's `stop_reason`, without a stop string.
fn stop_reason(finish: Option<&str>) -> &'static str {
    match finish {
        Some("length") => "max_tokens",
        Some("tool_calls" | "function_call") => "tool_use",
        Some("content_filter") => "refusal",
        _ => "end_turn",
    }
}

/// `msg_` ids, as Anthropic's clients show them; the vendor's id is kept after the prefix.
fn message_id(id: &str) -> Cow<'_, str> {
    if id.starts_with("msg_") { Cow::Borrowed(id) } else { Cow::Owned(format!("msg_{id}")) }
}

/// A tool call's arguments as the `input` object; what is not a JSON object is kept as
/// text under `arguments` rather than dropped.
fn tool_input(arguments: &str) -> Value {
    if arguments.trim().is_empty() {
        return Value::Object(serde_json::Map::new());
    }
    match serde_json::from_str::<Value>(arguments) {
        Ok(v @ Value::Object(_)) => v,
        _ => serde_json::json!({ "arguments": arguments }),
    }
}

/// A whole chat answer as the Messages answer: a completion becomes a Message, a vendor
/// error (OpenAI-shaped, as chat adapters answer it) Anthropic's error shape.
pub fn response(whole: Whole, model: &str) -> Whole {
    if !whole.status.is_success() {
        let message = chat::error_message(&whole.body);
        return Whole { body: anthropic::body_for_status(whole.status, &message), ..whole };
    }
    let completion: chat::Completion = match serde_json::from_slice(&whole.body) {
        Ok(c) => c,
        Err(e) => {
            let status = StatusCode::BAD_GATEWAY;
            let message = format!("the adapter's chat completion could not be read: {e}");
            return Whole { status, body: anthropic::body_for_status(status, &message), ..whole };
        }
    };
    let body = match message_of(&completion, model) {
        Ok(b) => b,
        Err(e) => {
            let status = StatusCode::BAD_GATEWAY;
            return Whole { status, body: anthropic::body_for_status(status, &e), ..whole };
        }
    };
    Whole { body, ..whole }
}

fn message_of(c: &chat::Completion, model: &str) -> Result<Bytes, String> {
    let choice = c.choices.first().ok_or("the adapter's chat completion has no choices")?;
    let mut content = Vec::new();
    let m = &choice.message;
    if let Some(text) = m.content.as_deref().or(m.refusal.as_deref()).filter(|t| !t.is_empty()) {
        content.push(OutBlock::Text { text });
    }
    for call in m.tool_calls.iter().flatten() {
        content.push(OutBlock::ToolUse {
            id: &call.id,
            name: &call.function.name,
            input: tool_input(&call.function.arguments),
        });
    }
    let (stop_reason, stop_sequence) =
        stop_of(choice.finish_reason.as_deref(), chat::matched_stop(&choice.stop_reason, &choice.matched_stop));
    let out = OutMessage {
        id: message_id(c.id.as_deref().unwrap_or("relay")),
        kind: "message",
        role: "assistant",
        model: c.model.as_deref().unwrap_or(model),
        content,
        stop_reason,
        stop_sequence,
        usage: c.usage.as_ref().map(OutUsage::from_chat).unwrap_or_default(),
    };
    serde_json::to_vec(&out).map(Bytes::from).map_err(|e| e.to_string())
}

/// `POST /v1/messages/count_tokens` when no channel counts exactly: an estimate of the
/// prompt's tokens, a quarter of the bytes of its text fields (system, messages, tools),
/// plus a few per message. Documented as an estimate in docs/apis.md.
pub fn estimate_tokens(body: &[u8]) -> Result<u64, RelayError> {
    #[derive(Deserialize)]
    struct Count {
        messages: Vec<Value>,
        #[serde(default)]
        system: Option<Value>,
        #[serde(default)]
        tools: Option<Value>,
    }
    let c: Count = serde_json::from_slice(body)
        .map_err(|e| invalid(format!("the request is not a valid count_tokens request: {e}")))?;
    let mut bytes = 0usize;
    let mut count = |v: &Value| bytes += text_bytes(v);
    for m in &c.messages {
        count(m);
    }
    if let Some(s) = &c.system {
        count(s);
    }
    if let Some(t) = &c.tools {
        count(t);
    }
    let per_message = 4 * c.messages.len() as u64;
    Ok((bytes as u64).div_ceil(4) + per_message)
}

/// The bytes of the strings in `v` (keys of tool schemas included: they reach the model).
fn text_bytes(v: &Value) -> usize {
    match v {
        Value::String(s) => s.len(),
        Value::Array(a) => a.iter().map(text_bytes).sum(),
        Value::Object(o) => o
            .iter()
            // An image's data is not text the model reads as tokens of that size.
            .filter(|(k, _)| k.as_str() != "data" && k.as_str() != "type")
            .map(|(k, v)| k.len() + text_bytes(v))
            .sum(),
        _ => 0,
    }
}

mod stream;
pub use stream::Stream;

#[cfg(test)]
mod tests;
