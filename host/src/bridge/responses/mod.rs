//! The OpenAI Responses API through chat completions, and what the host decides about every
//! Responses call whatever its route.
//!
//! The request becomes a chat request (`request`), the chat completion a Response object
//! (`response`), a chat chunk stream Responses' typed events (`stream::Stream`). On the native
//! route the vendor's own Response keeps everything but its ids (`native_response`,
//! `stream::Native`). Every Response object the relay writes comes from one builder
//! (`Call::object`), fed by the request's echoed parameters. What maps, what is dropped and
//! what is refused is listed in docs/apis.md.

use std::sync::Arc;

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

mod request;
mod stream;
use request::not_a_request;
pub use request::request;
pub use stream::{Native, Stream};

#[cfg(test)]
mod tests;
