//! Anthropic Messages through chat completions: the request to chat, the chat completion
//! back to a Message, and a chat chunk stream to Messages' event sequence.
//!
//! What maps, what is dropped and what is refused is listed in docs/apis.md.

use std::borrow::Cow;

use bytes::Bytes;
use http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::StreamBridge;
use super::chat;
use crate::answer::{Batch, End, Whole};
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
        function: chat::Function { name: &t.name, description: t.description.as_deref(), parameters },
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

/// Chat's `finish_reason` → Anthropic's `stop_reason`. Chat does not say whether a stop
/// sequence ended the text, so `stop` is always `end_turn`.
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
    let out = OutMessage {
        id: message_id(c.id.as_deref().unwrap_or("relay")),
        kind: "message",
        role: "assistant",
        model: c.model.as_deref().unwrap_or(model),
        content,
        stop_reason: stop_reason(choice.finish_reason.as_deref()),
        stop_sequence: None,
        usage: c.usage.as_ref().map(OutUsage::from_chat).unwrap_or_default(),
    };
    serde_json::to_vec(&out).map(Bytes::from).map_err(|e| e.to_string())
}

// ---- the stream ----

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Event<'a> {
    MessageStart { message: StartMessage<'a> },
    ContentBlockStart { index: u32, content_block: StartBlock<'a> },
    ContentBlockDelta { index: u32, delta: BlockDelta<'a> },
    ContentBlockStop { index: u32 },
    MessageDelta { delta: MessageDeltaBody, usage: OutUsage },
    MessageStop,
}

impl Event<'_> {
    fn name(&self) -> &'static str {
        match self {
            Event::MessageStart { .. } => "message_start",
            Event::ContentBlockStart { .. } => "content_block_start",
            Event::ContentBlockDelta { .. } => "content_block_delta",
            Event::ContentBlockStop { .. } => "content_block_stop",
            Event::MessageDelta { .. } => "message_delta",
            Event::MessageStop => "message_stop",
        }
    }
}

#[derive(Serialize)]
struct StartMessage<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    role: &'static str,
    model: &'a str,
    content: [(); 0],
    stop_reason: Option<&'static str>,
    stop_sequence: Option<&'static str>,
    usage: OutUsage,
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum StartBlock<'a> {
    Text { text: &'static str },
    ToolUse { id: &'a str, name: &'a str, input: EmptyObject },
}

#[derive(Serialize)]
struct EmptyObject {}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum BlockDelta<'a> {
    TextDelta { text: &'a str },
    InputJsonDelta { partial_json: &'a str },
}

#[derive(Serialize)]
struct MessageDeltaBody {
    stop_reason: &'static str,
    stop_sequence: Option<&'static str>,
}

/// The content block open in the stream.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Open {
    None,
    Text,
    /// A tool_use block, for chat's tool call at this index.
    Tool(u32),
}

/// One Messages stream from chat chunks: opens and closes content blocks as the chunks'
/// text and tool calls come, and ends with `message_delta` and `message_stop` only when the
/// chat stream ended cleanly.
pub struct Stream {
    model: String,
    id: String,
    started: bool,
    open: Open,
    /// The index of the open block (or of the next one, when none is open).
    index: u32,
    stop: Option<&'static str>,
    usage: Option<chat::Usage>,
}

impl Stream {
    pub fn new(model: &str) -> Stream {
        Stream {
            model: model.to_string(),
            id: String::new(),
            started: false,
            open: Open::None,
            index: 0,
            stop: None,
            usage: None,
        }
    }

    fn emit(out: &mut Vec<OutputEvent>, ev: &Event<'_>) {
        // Serialising these structs cannot fail (no maps with non-string keys, no floats).
        let data = serde_json::to_string(ev).unwrap_or_default();
        out.push(OutputEvent { name: Some(ev.name().to_string()), data });
    }

    fn start(&mut self, id: Option<&str>, model: Option<&str>, out: &mut Vec<OutputEvent>) {
        if self.started {
            return;
        }
        self.started = true;
        self.id = message_id(id.filter(|i| !i.is_empty()).unwrap_or("relay")).into_owned();
        if let Some(m) = model.filter(|m| !m.is_empty()) {
            self.model = m.to_string();
        }
        let message = StartMessage {
            id: &self.id,
            kind: "message",
            role: "assistant",
            model: &self.model,
            content: [],
            stop_reason: None,
            stop_sequence: None,
            usage: OutUsage::default(),
        };
        Self::emit(out, &Event::MessageStart { message });
    }

    fn close(&mut self, out: &mut Vec<OutputEvent>) {
        if self.open != Open::None {
            Self::emit(out, &Event::ContentBlockStop { index: self.index });
            self.open = Open::None;
            self.index += 1;
        }
    }

    fn text(&mut self, text: &str, out: &mut Vec<OutputEvent>) {
        if text.is_empty() {
            return;
        }
        if self.open != Open::Text {
            self.close(out);
            self.open = Open::Text;
            Self::emit(
                out,
                &Event::ContentBlockStart { index: self.index, content_block: StartBlock::Text { text: "" } },
            );
        }
        Self::emit(out, &Event::ContentBlockDelta { index: self.index, delta: BlockDelta::TextDelta { text } });
    }

    fn tool(&mut self, call: &chat::ToolCallDelta<'_>, out: &mut Vec<OutputEvent>) {
        let function = call.function.as_ref();
        let new_call = call.id.is_some() || self.open != Open::Tool(call.index);
        if new_call {
            self.close(out);
            self.open = Open::Tool(call.index);
            let fallback = format!("toolu_relay_{}", call.index);
            let id = call.id.as_deref().unwrap_or(&fallback);
            let name = function.and_then(|f| f.name.as_deref()).unwrap_or_default();
            let content_block = StartBlock::ToolUse { id, name, input: EmptyObject {} };
            Self::emit(out, &Event::ContentBlockStart { index: self.index, content_block });
        }
        if let Some(args) = function.and_then(|f| f.arguments.as_deref()).filter(|a| !a.is_empty()) {
            let delta = BlockDelta::InputJsonDelta { partial_json: args };
            Self::emit(out, &Event::ContentBlockDelta { index: self.index, delta });
        }
    }

    /// One chat chunk's events.
    pub fn chunk(&mut self, data: &str, out: &mut Vec<OutputEvent>) -> Result<(), String> {
        let chunk: chat::Chunk<'_> =
            serde_json::from_str(data).map_err(|e| format!("a chat chunk could not be read: {e}"))?;
        self.start(chunk.id.as_deref(), chunk.model.as_deref(), out);
        if let Some(u) = chunk.usage {
            self.usage = Some(u);
        }
        for choice in chunk.choices.iter().flatten() {
            if let Some(delta) = &choice.delta {
                if let Some(text) = delta.content.as_deref().or(delta.refusal.as_deref()) {
                    self.text(text, out);
                }
                for call in delta.tool_calls.iter().flatten() {
                    self.tool(call, out);
                }
            }
            if let Some(reason) = choice.finish_reason.as_deref() {
                self.stop = Some(stop_reason(Some(reason)));
            }
        }
        Ok(())
    }

    /// The closing events of a clean end; `usage` is the stream's, as the adapter counted it.
    pub fn done(&mut self, usage: Option<&Usage>, out: &mut Vec<OutputEvent>) {
        self.start(None, None, out);
        self.close(out);
        let usage = match (&self.usage, usage) {
            (Some(u), _) => OutUsage::from_chat(u),
            (None, Some(u)) => OutUsage::from_model(u),
            (None, None) => OutUsage::default(),
        };
        let delta = MessageDeltaBody { stop_reason: self.stop.unwrap_or("end_turn"), stop_sequence: None };
        Self::emit(out, &Event::MessageDelta { delta, usage });
        Self::emit(out, &Event::MessageStop);
    }
}

impl StreamBridge for Stream {
    fn apply(&mut self, batch: &mut Batch) -> Result<(), String> {
        let chunks = std::mem::take(&mut batch.events);
        let mut out = Vec::with_capacity(chunks.len() + 2);
        for c in &chunks {
            if let Err(e) = self.chunk(&c.data, &mut out) {
                batch.events = out;
                return Err(e);
            }
        }
        if let Some(End::Done { usage }) = &batch.end {
            self.done(usage.as_ref(), &mut out);
        }
        batch.events = out;
        Ok(())
    }
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

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn chat_of(req: Value) -> Value {
        serde_json::from_str(&request(&req.to_string()).unwrap()).unwrap()
    }

    #[test]
    fn a_request_maps_to_chat() {
        let req = json!({
            "model": "m", "max_tokens": 64, "system": [{"type": "text", "text": "be brief"}],
            "stop_sequences": ["END"], "temperature": 0.5, "top_p": 0.9, "metadata": {"user_id": "u1"},
            "stream": true, "thinking": {"type": "enabled", "budget_tokens": 10},
            "tools": [{"name": "get_weather", "description": "d", "input_schema": {"type": "object"}}],
            "tool_choice": {"type": "any", "disable_parallel_tool_use": true},
            "messages": [
                {"role": "user", "content": [
                    {"type": "text", "text": "look", "cache_control": {"type": "ephemeral"}},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}},
                    {"type": "image", "source": {"type": "url", "url": "https://x/y.png"}}]},
                {"role": "assistant", "content": [
                    {"type": "thinking", "thinking": "hm", "signature": "s"},
                    {"type": "text", "text": "calling"},
                    {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}}]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": "{\"temp_c\": 21}"}]},
                    {"type": "text", "text": "and now?"}]},
            ],
        });
        let chat = chat_of(req);
        assert_eq!(
            chat,
            json!({
                "model": "m", "max_tokens": 64, "temperature": 0.5, "top_p": 0.9, "stop": ["END"],
                "tools": [{"type": "function", "function": {"name": "get_weather", "description": "d", "parameters": {"type": "object"}}}],
                "tool_choice": "required", "parallel_tool_calls": false, "user": "u1",
                "stream": true, "stream_options": {"include_usage": true},
                "messages": [
                    {"role": "system", "content": "be brief"},
                    {"role": "user", "content": [
                        {"type": "text", "text": "look"},
                        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
                        {"type": "image_url", "image_url": {"url": "https://x/y.png"}}]},
                    {"role": "assistant", "content": "calling", "tool_calls": [
                        {"id": "toolu_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]},
                    {"role": "tool", "content": "{\"temp_c\": 21}", "tool_call_id": "toolu_1"},
                    {"role": "user", "content": "and now?"},
                ],
            })
        );
        let choice = |c: Value| {
            chat_of(json!({"model": "m", "max_tokens": 1, "messages": [{"role": "user", "content": "x"}],
            "tools": [{"name": "t", "input_schema": {"type": "object"}}], "tool_choice": c}))["tool_choice"]
                .clone()
        };
        assert_eq!(choice(json!({"type": "auto"})), json!("auto"));
        assert_eq!(choice(json!({"type": "none"})), json!("none"));
        assert_eq!(
            choice(json!({"type": "tool", "name": "t"})),
            json!({"type": "function", "function": {"name": "t"}})
        );
        // Refused: a server tool, a document block; a body that is no Messages request.
        let e = request(
            &json!({"model": "m", "max_tokens": 1, "messages": [{"role": "user", "content": "x"}],
            "tools": [{"type": "web_search_20250305", "name": "web_search"}]})
            .to_string(),
        )
        .unwrap_err();
        assert!(e.message.contains("web_search_20250305"), "{}", e.message);
        let e = request(
            &json!({"model": "m", "max_tokens": 1, "messages": [{"role": "user", "content": [
            {"type": "document", "source": {}}]}]})
            .to_string(),
        )
        .unwrap_err();
        assert_eq!(e.status(), StatusCode::BAD_REQUEST);
        assert!(request(r#"{"model":"m","max_tokens":1,"messages":"x"}"#).is_err());
    }

    fn whole(status: u16, body: Value) -> Whole {
        Whole {
            status: StatusCode::from_u16(status).unwrap(),
            body: Bytes::from(body.to_string()),
            usage: None,
            retry_after: None,
        }
    }

    fn answer(w: Whole) -> (u16, Value) {
        let w = response(w, "claude-x");
        (w.status.as_u16(), serde_json::from_slice(&w.body).unwrap())
    }

    #[test]
    fn a_completion_maps_to_a_message_and_errors_to_anthropics_shape() {
        let completion = json!({"id": "chatcmpl-1", "model": "m", "choices": [{"index": 0, "finish_reason": "tool_calls",
            "message": {"role": "assistant", "content": "calling", "tool_calls": [{"id": "call_1", "type": "function",
            "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]}}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15, "prompt_tokens_details": {"cached_tokens": 4}}});
        let (status, m) = answer(whole(200, completion));
        assert_eq!(status, 200);
        assert_eq!(
            m,
            json!({"id": "msg_chatcmpl-1", "type": "message", "role": "assistant", "model": "m",
                "content": [{"type": "text", "text": "calling"},
                    {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris"}}],
                "stop_reason": "tool_use", "stop_sequence": null,
                "usage": {"input_tokens": 6, "output_tokens": 5, "cache_creation_input_tokens": null, "cache_read_input_tokens": 4}})
        );
        for (finish, stop) in [("stop", "end_turn"), ("length", "max_tokens"), ("content_filter", "refusal")] {
            let c = json!({"choices": [{"finish_reason": finish, "message": {"content": "x"}}]});
            assert_eq!(answer(whole(200, c)).1["stop_reason"], stop);
        }
        let (status, e) = answer(whole(429, json!({"error": {"message": "slow down", "type": "rate_limit_error"}})));
        assert_eq!(
            (status, e),
            (429, json!({"type": "error", "error": {"type": "rate_limit_error", "message": "slow down"}}))
        );
        let (status, e) = answer(whole(200, json!({"choices": []})));
        assert_eq!((status, e["error"]["type"].as_str()), (502, Some("api_error")));
    }

    fn chunk(v: Value) -> OutputEvent {
        OutputEvent { name: None, data: v.to_string() }
    }

    fn run(chunks: Vec<OutputEvent>, end: End) -> Vec<(String, Value)> {
        let mut s = Stream::new("claude-x");
        let mut batch = Batch { events: chunks, end: Some(end) };
        s.apply(&mut batch).unwrap();
        batch.events.into_iter().map(|e| (e.name.unwrap(), serde_json::from_str(&e.data).unwrap())).collect()
    }

    fn text_and_tool_chunks() -> Vec<OutputEvent> {
        let base = |delta: Value, finish: Value| {
            chunk(
                json!({"id": "chatcmpl-9", "model": "m", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}),
            )
        };
        vec![
            base(json!({"role": "assistant", "content": ""}), Value::Null),
            base(json!({"content": "Hel"}), Value::Null),
            base(json!({"content": "lo"}), Value::Null),
            base(
                json!({"tool_calls": [{"index": 0, "id": "call_1", "type": "function", "function": {"name": "f", "arguments": ""}}]}),
                Value::Null,
            ),
            base(json!({"tool_calls": [{"index": 0, "function": {"arguments": "{\"a\":"}}]}), Value::Null),
            base(json!({"tool_calls": [{"index": 0, "function": {"arguments": "1}"}}]}), Value::Null),
            base(json!({}), json!("tool_calls")),
            chunk(
                json!({"id": "chatcmpl-9", "choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}}),
            ),
        ]
    }

    #[test]
    fn a_chunk_stream_becomes_messages_events() {
        let events = run(text_and_tool_chunks(), End::Done { usage: None });
        let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "message_start",
                "content_block_start",
                "content_block_delta",
                "content_block_delta",
                "content_block_stop",
                "content_block_start",
                "content_block_delta",
                "content_block_delta",
                "content_block_stop",
                "message_delta",
                "message_stop",
            ]
        );
        assert_eq!(events[0].1["message"]["id"], "msg_chatcmpl-9");
        assert_eq!(
            events[1].1,
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}})
        );
        assert_eq!(events[2].1["delta"], json!({"type": "text_delta", "text": "Hel"}));
        assert_eq!(
            events[5].1,
            json!({"type": "content_block_start", "index": 1, "content_block": {"type": "tool_use", "id": "call_1", "name": "f", "input": {}}})
        );
        assert_eq!(events[7].1["delta"], json!({"type": "input_json_delta", "partial_json": "1}"}));
        assert_eq!(events[8].1, json!({"type": "content_block_stop", "index": 1}));
        assert_eq!(
            events[9].1,
            json!({"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": null},
                "usage": {"input_tokens": 7, "output_tokens": 3, "cache_creation_input_tokens": null, "cache_read_input_tokens": null}})
        );
        // A cut stream gets no closing events: its consumer writes the error event.
        let cut = run(
            text_and_tool_chunks()[..3].to_vec(),
            End::Failed { error: RelayError::bad_upstream("x"), sent: false },
        );
        assert!(cut.iter().all(|(n, _)| n != "message_stop" && n != "message_delta"), "{cut:?}");
        // An empty clean stream is still a whole message.
        let empty = run(vec![], End::Done { usage: None });
        let names: Vec<&str> = empty.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["message_start", "message_delta", "message_stop"]);
        // What is no chunk ends the stream.
        let mut s = Stream::new("m");
        assert!(s.apply(&mut Batch { events: vec![OutputEvent { name: None, data: "[".into() }], end: None }).is_err());
    }

    /// The per-event cost of the stream conversion, printed (not asserted): run with
    /// `cargo test --release -p relay --lib bridge::messages::tests::per_event_cost -- --nocapture`.
    #[test]
    fn per_event_cost() {
        let text = |t: &str| {
            chunk(json!({"id": "chatcmpl-9", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o",
            "choices": [{"index": 0, "delta": {"content": t}, "finish_reason": null}]}))
        };
        let chunks: Vec<OutputEvent> = (0..20).map(|i| text(&format!("word{i} "))).collect();
        let rounds = 2_000;
        // The input is made before the clock starts: only the conversion is timed.
        let mut inputs: Vec<Vec<OutputEvent>> = (0..rounds).map(|_| chunks.clone()).collect();
        // CPU time of this thread: on a loaded machine wall time mostly measures the others.
        let cpu = || {
            let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
            std::time::Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
        };
        let started = cpu();
        let mut events = 0;
        for input in &mut inputs {
            let mut s = Stream::new("gpt-4o");
            let mut batch = Batch { events: std::mem::take(input), end: Some(End::Done { usage: None }) };
            s.apply(&mut batch).unwrap();
            events += batch.events.len();
        }
        let per_chunk = (cpu() - started).as_nanos() as f64 / (rounds * chunks.len()) as f64;
        println!(
            "messages bridge: {per_chunk:.0} ns of CPU per chat chunk ({events} events out of {} chunks)",
            rounds * chunks.len()
        );
    }
}
