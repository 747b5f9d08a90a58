//! The OpenAI Responses API through chat completions, and what the host decides about every
//! Responses call whatever its route.
//!
//! The request becomes a chat request (`request`), the chat completion a Response object
//! (`response`), a chat chunk stream Responses' typed events (`stream::Stream`). On the native
//! route the vendor's own Response keeps everything but its ids (`native_response`,
//! `stream::Native`). Every Response object the relay writes comes from one builder
//! (`Call::object`), fed by the request's echoed parameters. What maps, what is dropped and
//! what is refused is listed in docs/apis.md.

use std::borrow::Cow;
use std::sync::{Arc, LazyLock};

use bytes::Bytes;
use http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::chat;
use crate::answer::Whole;
use crate::error::{ErrorKind, RelayError, openai};
use crate::model::Usage;

/// What the host decides about one Responses call before any channel is tried. The relay
/// names every response itself, so the client, a background job and the stored record all
/// use one id, whichever channel (bridged or native) answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Meta {
    /// `resp_` and 48 hex digits: the Response object's `id`.
    pub id: String,
    /// The stored response this one continues; its conversation is put before `input` by
    /// the host, so no vendor is asked for it.
    pub previous_response_id: Option<String>,
    /// The relay runs this response in the background: the vendor is sent a plain stream
    /// (no `background`), and every Response object still says `background: true`.
    pub background: bool,
}

impl Meta {
    pub fn new() -> Arc<Meta> {
        Arc::new(Meta { id: new_id(), previous_response_id: None, background: false })
    }
}

/// A fresh response id: time-ordered, then random.
pub fn new_id() -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_micros());
    format!("resp_{:016x}{:032x}", now as u64, rand::random::<u128>())
}

/// An output item's id: `prefix` (`msg`, `fc`) and 32 random hex digits.
fn item_id(prefix: &str) -> String {
    format!("{prefix}_{:032x}", rand::random::<u128>())
}

fn now_secs() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

// ---- one call: its id and the parameters every Response object echoes ----

/// One Responses call as every Response object written for it sees it: the relay's id
/// (`Meta`), when it was made, and the request's parameters OpenAI echoes in the object.
/// Made once per request (`Call::new`), shared by every attempt and the stream.
#[derive(Debug)]
pub struct Call {
    pub meta: Arc<Meta>,
    pub created_at: u64,
    echo: Echo,
}

/// The request's parameters as the Response object shows them (OpenAI's defaults where
/// the request left them out). Read leniently: only the types are checked here; what a
/// route can serve is its own check.
#[derive(Debug, Deserialize, Serialize)]
struct Echo {
    /// The model asked for: a Response's `model` until a vendor names its own.
    #[serde(skip_serializing)]
    model: String,
    #[serde(default)]
    instructions: Option<Value>,
    #[serde(default)]
    max_output_tokens: Option<u64>,
    #[serde(default)]
    metadata: Option<Value>,
    #[serde(default = "yes")]
    parallel_tool_calls: bool,
    #[serde(default)]
    temperature: Option<f64>,
    #[serde(default)]
    top_p: Option<f64>,
    #[serde(default = "auto")]
    tool_choice: Value,
    #[serde(default)]
    tools: Vec<Value>,
    #[serde(default = "text_format")]
    text: Value,
    #[serde(default = "yes")]
    store: bool,
    #[serde(default)]
    background: bool,
    #[serde(default = "disabled")]
    truncation: Value,
    #[serde(default)]
    reasoning: Option<Value>,
    #[serde(default)]
    user: Option<String>,
}

fn yes() -> bool {
    true
}
fn auto() -> Value {
    Value::String("auto".into())
}
fn disabled() -> Value {
    Value::String("disabled".into())
}
fn text_format() -> Value {
    serde_json::json!({"format": {"type": "text"}})
}

impl Call {
    /// The call for a Responses body: its echoed parameters read (a wrong type is 400).
    pub fn new(meta: Arc<Meta>, body: &str) -> Result<Call, RelayError> {
        let mut echo: Echo = serde_json::from_str(body).map_err(not_a_request)?;
        echo.metadata.get_or_insert_with(|| Value::Object(Default::default()));
        echo.background |= meta.background;
        Ok(Call { meta, created_at: now_secs(), echo })
    }

    /// The Response object: the one builder of every Response the relay writes (a whole
    /// answer, the `response` of stream events, a stored or background response).
    pub fn object<'a>(&'a self, model: &'a str, status: Status, output: &'a [Item]) -> Object<'a> {
        Object {
            id: &self.meta.id,
            object: "response",
            created_at: self.created_at,
            status,
            error: None,
            incomplete_details: None,
            model,
            output,
            previous_response_id: self.meta.previous_response_id.as_deref(),
            usage: None,
            echo: &self.echo,
        }
    }

    /// The model the request asked for.
    pub fn model(&self) -> &str {
        &self.echo.model
    }

    /// The request's `background` flag.
    pub fn background(&self) -> bool {
        self.echo.background
    }

    /// The request's `store` flag (OpenAI's default: true).
    pub fn store(&self) -> bool {
        self.echo.store
    }
}

/// A Response's `status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Queued,
    InProgress,
    Completed,
    Incomplete,
    Failed,
    Cancelled,
}

/// A Response object, borrowing from its call and output; serialise it with `to_bytes`.
#[derive(Serialize)]
pub struct Object<'a> {
    pub id: &'a str,
    pub object: &'static str,
    pub created_at: u64,
    pub status: Status,
    pub error: Option<Failure>,
    pub incomplete_details: Option<Incomplete>,
    pub model: &'a str,
    pub output: &'a [Item],
    pub previous_response_id: Option<&'a str>,
    pub usage: Option<OutUsage>,
    #[serde(flatten)]
    echo: &'a Echo,
}

impl Object<'_> {
    pub fn to_bytes(&self) -> Bytes {
        // Serialising these structs cannot fail: every map has string keys.
        Bytes::from(serde_json::to_vec(self).unwrap_or_default())
    }
}

/// A failed Response's `error`: OpenAI's codes are the model's (`server_error`,
/// `rate_limit_exceeded`, ...); the relay's own kind is in the message.
#[derive(Serialize, Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub code: &'static str,
    pub message: String,
}

impl Failure {
    pub fn of(e: &RelayError) -> Failure {
        let code = match e.kind {
            ErrorKind::UpstreamCoolingDown | ErrorKind::JobQueueFull | ErrorKind::JobQuotaExceeded => {
                "rate_limit_exceeded"
            }
            _ => "server_error",
        };
        Failure { code, message: e.message.clone() }
    }
}

/// `incomplete_details`.
#[derive(Serialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct Incomplete {
    pub reason: &'static str,
}

/// An output item.
#[derive(Serialize, Debug, Clone, PartialEq, Eq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Item {
    Message { id: String, status: &'static str, role: &'static str, content: Vec<Part> },
    FunctionCall { id: String, call_id: String, name: String, arguments: String, status: &'static str },
}

/// A message item's content part.
#[derive(Serialize, Debug, Clone, PartialEq, Eq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Part {
    OutputText { text: String, annotations: [(); 0], logprobs: [(); 0] },
    Refusal { refusal: String },
}

impl Part {
    fn text(text: String) -> Part {
        Part::OutputText { text, annotations: [], logprobs: [] }
    }
}

/// Responses' usage: input tokens include the cached ones.
#[derive(Serialize, Default, Clone, Copy, Debug, PartialEq, Eq)]
pub struct OutUsage {
    pub input_tokens: u64,
    pub input_tokens_details: InputDetails,
    pub output_tokens: u64,
    pub output_tokens_details: OutputDetails,
    pub total_tokens: u64,
}

#[derive(Serialize, Default, Clone, Copy, Debug, PartialEq, Eq)]
pub struct InputDetails {
    pub cached_tokens: u64,
    /// Tokens written to the vendor's prompt cache (Anthropic's cache creation).
    pub cache_write_tokens: u64,
}

#[derive(Serialize, Default, Clone, Copy, Debug, PartialEq, Eq)]
pub struct OutputDetails {
    pub reasoning_tokens: u64,
}

impl OutUsage {
    fn from_chat(u: &chat::Usage) -> OutUsage {
        OutUsage {
            input_tokens: u.prompt_tokens,
            input_tokens_details: InputDetails { cached_tokens: u.cached().unwrap_or(0), cache_write_tokens: 0 },
            output_tokens: u.completion_tokens,
            output_tokens_details: OutputDetails { reasoning_tokens: u.reasoning().unwrap_or(0) },
            total_tokens: u.prompt_tokens + u.completion_tokens,
        }
    }

    pub fn from_model(u: &Usage) -> OutUsage {
        OutUsage {
            input_tokens: u.input,
            input_tokens_details: InputDetails {
                cached_tokens: u.cached_input.unwrap_or(0),
                cache_write_tokens: u.cache_creation_input.unwrap_or(0),
            },
            output_tokens: u.output,
            output_tokens_details: OutputDetails { reasoning_tokens: u.reasoning.unwrap_or(0) },
            total_tokens: if u.total > 0 { u.total } else { u.input + u.output },
        }
    }
}

/// Chat's `finish_reason` → the Response's status and why it is incomplete.
fn outcome(finish: Option<&str>) -> (Status, Option<Incomplete>) {
    match finish {
        Some("length") => (Status::Incomplete, Some(Incomplete { reason: "max_output_tokens" })),
        Some("content_filter") => (Status::Incomplete, Some(Incomplete { reason: "content_filter" })),
        _ => (Status::Completed, None),
    }
}

fn item_status(status: Status) -> &'static str {
    if status == Status::Incomplete { "incomplete" } else { "completed" }
}

// ---- the client's request ----

#[derive(Deserialize)]
struct Request {
    model: String,
    #[serde(default)]
    input: Option<Input>,
    #[serde(default)]
    instructions: Option<String>,
    #[serde(default)]
    tools: Option<Vec<InTool>>,
    #[serde(default)]
    tool_choice: Option<InToolChoice>,
    #[serde(default)]
    max_output_tokens: Option<u64>,
    #[serde(default)]
    temperature: Option<f64>,
    #[serde(default)]
    top_p: Option<f64>,
    #[serde(default)]
    parallel_tool_calls: Option<bool>,
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    text: Option<TextConfig>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    previous_response_id: Option<String>,
    #[serde(default)]
    conversation: Option<Value>,
    #[serde(default)]
    prompt: Option<Value>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Input {
    Text(String),
    Items(Vec<InItem>),
}

/// One input item. Read field by field rather than as a tagged enum: a message item may
/// come without its `type`, and a refusal names the item's place.
#[derive(Deserialize)]
struct InItem {
    #[serde(rename = "type", default)]
    kind: Option<String>,
    #[serde(default)]
    role: Option<String>,
    #[serde(default)]
    content: Option<InContent>,
    #[serde(default)]
    call_id: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    arguments: Option<String>,
    #[serde(default)]
    output: Option<InContent>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum InContent {
    Text(String),
    Parts(Vec<InPart>),
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum InPart {
    InputText {
        text: String,
    },
    OutputText {
        text: String,
    },
    Refusal {
        refusal: String,
    },
    InputImage {
        #[serde(default)]
        image_url: Option<ImageRef>,
    },
    #[serde(other)]
    Other,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum ImageRef {
    Url(String),
    Object { url: String },
}

#[derive(Deserialize)]
struct InTool {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    parameters: Option<Value>,
    #[serde(default)]
    strict: Option<bool>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum InToolChoice {
    Mode(String),
    Typed {
        #[serde(rename = "type")]
        kind: String,
        #[serde(default)]
        name: Option<String>,
    },
}

#[derive(Deserialize)]
struct TextConfig {
    #[serde(default)]
    format: Option<Format>,
}

#[derive(Deserialize)]
struct Format {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    schema: Option<Value>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    strict: Option<bool>,
}

fn invalid(message: impl Into<String>, param: impl Into<String>) -> RelayError {
    RelayError::bad_request(message).with_param(param)
}

fn not_a_request(e: serde_json::Error) -> RelayError {
    RelayError::bad_request(format!("the request is not a valid Responses request: {e}"))
}

/// A function tool's schema when it gives none.
static NO_PARAMETERS: LazyLock<Value> = LazyLock::new(|| serde_json::json!({"type": "object", "properties": {}}));

/// The chat completions request for a Responses request.
pub fn request(body: &str) -> Result<String, RelayError> {
    let req: Request = serde_json::from_str(body).map_err(not_a_request)?;
    if req.previous_response_id.is_some() {
        // The create path puts the stored conversation into `input` and takes the field out.
        return Err(invalid("previous_response_id: no stored response is available here", "previous_response_id"));
    }
    if req.conversation.is_some() {
        return Err(invalid("conversation: conversations are not supported on this relay", "conversation"));
    }
    if req.prompt.is_some() {
        return Err(invalid("prompt: prompt templates are not supported on this channel", "prompt"));
    }
    let mut messages = Vec::new();
    if let Some(s) = req.instructions.as_deref().filter(|s| !s.is_empty()) {
        messages.push(text_message("system", Cow::Borrowed(s)));
    }
    match &req.input {
        None => {}
        Some(Input::Text(s)) => messages.push(text_message("user", Cow::Borrowed(s))),
        Some(Input::Items(items)) => {
            for (i, item) in items.iter().enumerate() {
                input_item(i, item, &mut messages)?;
            }
        }
    }
    if messages.is_empty() {
        return Err(invalid("input: the request has no input", "input"));
    }
    let tools = match &req.tools {
        None => None,
        Some(t) if t.is_empty() => None,
        Some(tools) => Some(tools.iter().enumerate().map(|(i, t)| tool(i, t)).collect::<Result<Vec<_>, _>>()?),
    };
    let tool_choice = match &req.tool_choice {
        None => None,
        Some(InToolChoice::Mode(m)) => Some(chat::ToolChoice::Mode(match m.as_str() {
            "auto" => "auto",
            "none" => "none",
            "required" => "required",
            other => {
                return Err(invalid(
                    format!(
                        "tool_choice: Invalid value: '{other}'. Supported values are: 'auto', 'none' and 'required'."
                    ),
                    "tool_choice",
                ));
            }
        })),
        Some(InToolChoice::Typed { kind, name }) => match (kind.as_str(), name) {
            ("function", Some(name)) => {
                Some(chat::ToolChoice::Named { kind: "function", function: chat::Named { name } })
            }
            ("function", None) => return Err(invalid("tool_choice.name: Field required", "tool_choice.name")),
            (other, _) => {
                return Err(invalid(
                    format!(
                        "tool_choice: the tool choice type '{other}' is not supported on this channel (only function tools reach a chat completions vendor)"
                    ),
                    "tool_choice",
                ));
            }
        },
    };
    let response_format = match req.text.as_ref().and_then(|t| t.format.as_ref()) {
        None => None,
        Some(f) => format(f)?,
    };
    let stream = req.stream == Some(true);
    let out = chat::Request {
        model: &req.model,
        messages,
        max_tokens: req.max_output_tokens,
        temperature: req.temperature,
        top_p: req.top_p,
        stop: None,
        tools,
        tool_choice,
        parallel_tool_calls: req.parallel_tool_calls,
        user: req.user.as_deref(),
        stream: stream.then_some(true),
        stream_options: stream.then_some(chat::StreamOptions { include_usage: true }),
        response_format,
    };
    serde_json::to_string(&out).map_err(|e| RelayError::plugin(format!("the chat request could not be written: {e}")))
}

fn text_message<'a>(role: &'static str, text: Cow<'a, str>) -> chat::Message<'a> {
    chat::Message { role, content: Some(chat::Content::Text(text)), tool_calls: None, tool_call_id: None }
}

/// One input item as chat messages: messages by role, a `function_call` on the assistant
/// message before it (or a new one), a `function_call_output` as a `tool` message.
fn input_item<'a>(i: usize, item: &'a InItem, out: &mut Vec<chat::Message<'a>>) -> Result<(), RelayError> {
    match item.kind.as_deref() {
        None | Some("message") => {
            let Some(role) = item.role.as_deref() else {
                return Err(invalid(format!("input[{i}].role: Field required"), format!("input[{i}].role")));
            };
            let Some(content) = &item.content else {
                return Err(invalid(format!("input[{i}].content: Field required"), format!("input[{i}].content")));
            };
            match role {
                "user" => out.push(user_message(i, content)?),
                "assistant" => {
                    let text = joined_text(i, content, "input", true)?;
                    out.push(chat::Message {
                        role: "assistant",
                        content: Some(chat::Content::Text(text)),
                        tool_calls: None,
                        tool_call_id: None,
                    });
                }
                // `developer` is OpenAI's newer name for `system`; every chat vendor knows `system`.
                "system" | "developer" => out.push(text_message("system", joined_text(i, content, "input", false)?)),
                other => {
                    return Err(invalid(
                        format!(
                            "input[{i}].role: Invalid value: '{other}'. Supported values are: 'user', 'assistant', 'system' and 'developer'."
                        ),
                        format!("input[{i}].role"),
                    ));
                }
            }
        }
        Some("function_call") => {
            let (Some(call_id), Some(name)) = (&item.call_id, &item.name) else {
                return Err(invalid(
                    format!("input[{i}]: a function_call item needs call_id and name"),
                    format!("input[{i}]"),
                ));
            };
            let arguments = item.arguments.clone().unwrap_or_else(|| "{}".to_string());
            let call =
                chat::ToolCall { id: call_id, kind: "function", function: chat::FunctionCall { name, arguments } };
            match out.last_mut() {
                Some(m) if m.role == "assistant" => m.tool_calls.get_or_insert_with(Vec::new).push(call),
                _ => out.push(chat::Message {
                    role: "assistant",
                    content: None,
                    tool_calls: Some(vec![call]),
                    tool_call_id: None,
                }),
            }
        }
        Some("function_call_output") => {
            let Some(call_id) = &item.call_id else {
                return Err(invalid(format!("input[{i}].call_id: Field required"), format!("input[{i}].call_id")));
            };
            let text = match &item.output {
                None => Cow::Borrowed(""),
                Some(output) => joined_text(i, output, "input", false)?,
            };
            out.push(chat::Message {
                role: "tool",
                content: Some(chat::Content::Text(text)),
                tool_calls: None,
                tool_call_id: Some(call_id),
            });
        }
        // Earlier turns' reasoning: chat has no place for it.
        Some("reasoning") => {}
        Some(other) => {
            return Err(invalid(
                format!(
                    "input[{i}]: the item type '{other}' is not supported on this channel (only messages, function_call and function_call_output reach a chat completions vendor)"
                ),
                format!("input[{i}].type"),
            ));
        }
    }
    Ok(())
}

fn user_message(i: usize, content: &InContent) -> Result<chat::Message<'_>, RelayError> {
    let parts = match content {
        InContent::Text(s) => return Ok(text_message("user", Cow::Borrowed(s))),
        InContent::Parts(p) => p,
    };
    let mut out = Vec::with_capacity(parts.len());
    for (j, p) in parts.iter().enumerate() {
        match p {
            InPart::InputText { text } | InPart::OutputText { text } => out.push(chat::Part::Text { text }),
            InPart::InputImage { image_url: Some(ImageRef::Url(url) | ImageRef::Object { url }) } => {
                out.push(chat::Part::ImageUrl { image_url: chat::ImageUrl { url: Cow::Borrowed(url) } })
            }
            InPart::InputImage { image_url: None } => {
                return Err(invalid(
                    format!(
                        "input[{i}].content[{j}].image_url: an image by file_id is not supported on this channel; give image_url"
                    ),
                    format!("input[{i}].content[{j}].image_url"),
                ));
            }
            InPart::Refusal { .. } | InPart::Other => return Err(unsupported_part(i, j, "input")),
        }
    }
    Ok(match out.as_slice() {
        [chat::Part::Text { text }] => text_message("user", Cow::Borrowed(text)),
        _ => chat::Message {
            role: "user",
            content: Some(chat::Content::Parts(out)),
            tool_calls: None,
            tool_call_id: None,
        },
    })
}

fn unsupported_part(i: usize, j: usize, field: &str) -> RelayError {
    invalid(
        format!(
            "{field}[{i}].content[{j}]: this content part type is not supported here on this channel (text and image_url reach a chat completions vendor)"
        ),
        format!("{field}[{i}].content[{j}]"),
    )
}

/// Content that chat carries as text (assistant, system, tool output): its text parts
/// joined; `assistant` also takes its earlier refusals.
fn joined_text<'a>(i: usize, content: &'a InContent, field: &str, assistant: bool) -> Result<Cow<'a, str>, RelayError> {
    let parts = match content {
        InContent::Text(s) => return Ok(Cow::Borrowed(s)),
        InContent::Parts(p) => p,
    };
    let mut texts = Vec::with_capacity(parts.len());
    for (j, p) in parts.iter().enumerate() {
        match p {
            InPart::InputText { text } | InPart::OutputText { text } => texts.push(text.as_str()),
            InPart::Refusal { refusal } if assistant => texts.push(refusal.as_str()),
            _ => return Err(unsupported_part(i, j, field)),
        }
    }
    Ok(match texts.as_slice() {
        [one] => Cow::Borrowed(one),
        _ => Cow::Owned(texts.concat()),
    })
}

fn tool(i: usize, t: &InTool) -> Result<chat::Tool<'_>, RelayError> {
    if t.kind != "function" {
        return Err(invalid(
            format!(
                "tools[{i}]: the tool type '{}' is not supported on this channel (only function tools reach a chat completions vendor)",
                t.kind
            ),
            format!("tools[{i}].type"),
        ));
    }
    let Some(name) = t.name.as_deref() else {
        return Err(invalid(format!("tools[{i}].name: Field required"), format!("tools[{i}].name")));
    };
    let parameters = t.parameters.as_ref().filter(|p| !p.is_null()).unwrap_or(&NO_PARAMETERS);
    Ok(chat::Tool {
        kind: "function",
        function: chat::Function { name, description: t.description.as_deref(), parameters, strict: t.strict },
    })
}

fn format(f: &Format) -> Result<Option<Value>, RelayError> {
    Ok(match f.kind.as_str() {
        "text" => None,
        "json_object" => Some(serde_json::json!({"type": "json_object"})),
        "json_schema" => {
            let Some(name) = &f.name else {
                return Err(invalid("text.format.name: Field required", "text.format.name"));
            };
            let mut schema = serde_json::json!({"name": name, "schema": f.schema.clone().unwrap_or(Value::Null)});
            if let Some(d) = &f.description {
                schema["description"] = Value::String(d.clone());
            }
            if let Some(s) = f.strict {
                schema["strict"] = Value::Bool(s);
            }
            Some(serde_json::json!({"type": "json_schema", "json_schema": schema}))
        }
        other => {
            return Err(invalid(
                format!(
                    "text.format.type: Invalid value: '{other}'. Supported values are: 'text', 'json_object' and 'json_schema'."
                ),
                "text.format.type",
            ));
        }
    })
}

// ---- the answer ----

/// A whole chat answer as the Responses answer. A vendor error is already in OpenAI's shape
/// (chat adapters answer it so) and passes as it is.
pub fn response(whole: Whole, call: &Call, model: &str) -> Whole {
    if !whole.status.is_success() {
        return whole;
    }
    let completion: chat::Completion = match serde_json::from_slice(&whole.body) {
        Ok(c) => c,
        Err(e) => return bad_answer(whole, format!("the adapter's chat completion could not be read: {e}")),
    };
    let Some(choice) = completion.choices.first() else {
        return bad_answer(whole, "the adapter's chat completion has no choices".to_string());
    };
    let (status, incomplete) = outcome(choice.finish_reason.as_deref());
    let output = output_of(&choice.message, status);
    let mut object = call.object(completion.model.as_deref().unwrap_or(model), status, &output);
    object.incomplete_details = incomplete;
    object.usage = Some(match (&completion.usage, &whole.usage) {
        (Some(u), _) => OutUsage::from_chat(u),
        (None, Some(u)) => OutUsage::from_model(u),
        (None, None) => OutUsage::default(),
    });
    let body = object.to_bytes();
    Whole { body, ..whole }
}

fn bad_answer(whole: Whole, message: String) -> Whole {
    let e = RelayError::bad_upstream(message);
    Whole { status: StatusCode::BAD_GATEWAY, body: openai::body(&e), ..whole }
}

/// The output items of a chat answer's message: its text (or refusal) as one message item,
/// then one `function_call` item per tool call.
fn output_of(m: &chat::AnswerMessage, status: Status) -> Vec<Item> {
    let mut out = Vec::new();
    let mut content = Vec::new();
    if let Some(text) = m.content.as_deref().filter(|t| !t.is_empty()) {
        content.push(Part::text(text.to_string()));
    }
    if let Some(refusal) = m.refusal.as_deref().filter(|t| !t.is_empty()) {
        content.push(Part::Refusal { refusal: refusal.to_string() });
    }
    if !content.is_empty() {
        out.push(Item::Message { id: item_id("msg"), status: item_status(status), role: "assistant", content });
    }
    for call in m.tool_calls.iter().flatten() {
        out.push(Item::FunctionCall {
            id: item_id("fc"),
            call_id: call.id.clone(),
            name: call.function.name.clone(),
            arguments: call.function.arguments.clone(),
            status: "completed",
        });
    }
    out
}

/// A native channel's whole answer: the vendor's Response with the relay's `id` and
/// `previous_response_id`, so every route answers with the relay's names.
pub fn native_response(whole: Whole, call: &Call) -> Whole {
    if !whole.status.is_success() {
        return whole;
    }
    let mut object: serde_json::Map<String, Value> = match serde_json::from_slice(&whole.body) {
        Ok(o) => o,
        Err(e) => return bad_answer(whole, format!("the vendor's Response could not be read: {e}")),
    };
    name_response(&mut object, &call.meta);
    let body = Bytes::from(serde_json::to_vec(&object).unwrap_or_default());
    Whole { body, ..whole }
}

/// The relay's names on a vendor's Response object (and its `background`, which the relay
/// runs itself).
fn name_response(object: &mut serde_json::Map<String, Value>, meta: &Meta) {
    object.insert("id".into(), Value::String(meta.id.clone()));
    let previous = meta.previous_response_id.clone().map_or(Value::Null, Value::String);
    object.insert("previous_response_id".into(), previous);
    if meta.background {
        object.insert("background".into(), Value::Bool(true));
    }
}

mod stream;
pub use stream::{Native, Stream};

#[cfg(test)]
mod tests;
