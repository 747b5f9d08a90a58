//! Chat completions on the wire, as the bridges write requests and read answers: typed
//! structs borrowing from the text they come from, so a stream chunk is read without a
//! `Value` tree. Shared by every bridged client API.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use serde_json::Value;

// ---- the request a bridge writes ----

#[derive(Serialize, Default)]
pub struct Request<'a> {
    pub model: &'a str,
    pub messages: Vec<Message<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stop: Option<&'a [String]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tools: Option<Vec<Tool<'a>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_choice: Option<ToolChoice<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parallel_tool_calls: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream_options: Option<StreamOptions>,
    /// Structured output (`json_object`, `json_schema`), as the client API asked for it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response_format: Option<Value>,
}

#[derive(Serialize)]
pub struct StreamOptions {
    pub include_usage: bool,
}

#[derive(Serialize)]
pub struct Message<'a> {
    pub role: &'static str,
    /// `None` only for an assistant message that is all tool calls.
    pub content: Option<Content<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCall<'a>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<&'a str>,
}

#[derive(Serialize)]
#[serde(untagged)]
pub enum Content<'a> {
    Text(Cow<'a, str>),
    Parts(Vec<Part<'a>>),
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Part<'a> {
    Text { text: &'a str },
    ImageUrl { image_url: ImageUrl<'a> },
}

#[derive(Serialize)]
pub struct ImageUrl<'a> {
    pub url: Cow<'a, str>,
}

#[derive(Serialize)]
pub struct ToolCall<'a> {
    pub id: &'a str,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub function: FunctionCall<'a>,
}

#[derive(Serialize)]
pub struct FunctionCall<'a> {
    pub name: &'a str,
    pub arguments: String,
}

#[derive(Serialize)]
pub struct Tool<'a> {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub function: Function<'a>,
}

#[derive(Serialize)]
pub struct Function<'a> {
    pub name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<&'a str>,
    pub parameters: &'a Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub strict: Option<bool>,
}

#[derive(Serialize)]
#[serde(untagged)]
pub enum ToolChoice<'a> {
    /// `auto`, `required`, `none`.
    Mode(&'static str),
    Named {
        #[serde(rename = "type")]
        kind: &'static str,
        function: Named<'a>,
    },
}

#[derive(Serialize)]
pub struct Named<'a> {
    pub name: &'a str,
}

// ---- the answers a bridge reads ----

/// A whole `chat.completion`.
#[derive(Deserialize)]
pub struct Completion {
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default)]
    pub choices: Vec<Choice>,
    #[serde(default)]
    pub usage: Option<Usage>,
}

#[derive(Deserialize)]
pub struct Choice {
    pub message: AnswerMessage,
    #[serde(default)]
    pub finish_reason: Option<String>,
    /// vLLM's name for the stop string that ended the text (see [`matched_stop`]).
    #[serde(default, deserialize_with = "stop_text")]
    pub stop_reason: Option<String>,
    /// SGLang's name for it.
    #[serde(default, deserialize_with = "stop_text")]
    pub matched_stop: Option<String>,
}

#[derive(Deserialize)]
pub struct AnswerMessage {
    #[serde(default)]
    pub content: Option<String>,
    #[serde(default)]
    pub refusal: Option<String>,
    #[serde(default)]
    pub tool_calls: Option<Vec<AnswerToolCall>>,
}

#[derive(Deserialize)]
pub struct AnswerToolCall {
    pub id: String,
    pub function: AnswerFunction,
}

#[derive(Deserialize)]
pub struct AnswerFunction {
    pub name: String,
    #[serde(default)]
    pub arguments: String,
}

/// OpenAI's usage: prompt tokens include cached ones.
#[derive(Deserialize, Clone, Copy, Default, Debug)]
pub struct Usage {
    #[serde(default)]
    pub prompt_tokens: u64,
    #[serde(default)]
    pub completion_tokens: u64,
    #[serde(default)]
    pub prompt_tokens_details: Option<PromptDetails>,
    #[serde(default)]
    pub completion_tokens_details: Option<CompletionDetails>,
}

#[derive(Deserialize, Clone, Copy, Default, Debug)]
pub struct CompletionDetails {
    #[serde(default)]
    pub reasoning_tokens: Option<u64>,
}

#[derive(Deserialize, Clone, Copy, Default, Debug)]
pub struct PromptDetails {
    #[serde(default)]
    pub cached_tokens: Option<u64>,
}

impl Usage {
    pub fn cached(&self) -> Option<u64> {
        self.prompt_tokens_details.and_then(|d| d.cached_tokens)
    }

    pub fn reasoning(&self) -> Option<u64> {
        self.completion_tokens_details.and_then(|d| d.reasoning_tokens)
    }
}

/// One `chat.completion.chunk`, borrowing its strings from the event's text.
#[derive(Deserialize)]
pub struct Chunk<'a> {
    #[serde(borrow, default)]
    pub id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub model: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub choices: Option<Vec<ChunkChoice<'a>>>,
    #[serde(default)]
    pub usage: Option<Usage>,
}

#[derive(Deserialize)]
pub struct ChunkChoice<'a> {
    #[serde(borrow, default)]
    pub delta: Option<Delta<'a>>,
    #[serde(borrow, default)]
    pub finish_reason: Option<Cow<'a, str>>,
    /// vLLM's name for the stop string that ended the text (see [`matched_stop`]).
    #[serde(default, deserialize_with = "stop_text")]
    pub stop_reason: Option<String>,
    /// SGLang's name for it.
    #[serde(default, deserialize_with = "stop_text")]
    pub matched_stop: Option<String>,
}

#[derive(Deserialize)]
pub struct Delta<'a> {
    #[serde(borrow, default)]
    pub content: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub refusal: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub tool_calls: Option<Vec<ToolCallDelta<'a>>>,
}

#[derive(Deserialize)]
pub struct ToolCallDelta<'a> {
    #[serde(default)]
    pub index: u32,
    #[serde(borrow, default)]
    pub id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub function: Option<FunctionDelta<'a>>,
}

#[derive(Deserialize)]
pub struct FunctionDelta<'a> {
    #[serde(borrow, default)]
    pub name: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub arguments: Option<Cow<'a, str>>,
}

/// An OpenAI-shaped error body (what chat adapters answer a vendor error with).
#[derive(Deserialize)]
pub struct ErrorEnvelope {
    pub error: ErrorBody,
}

#[derive(Deserialize)]
pub struct ErrorBody {
    #[serde(default)]
    pub message: Option<String>,
}

/// The message of an OpenAI-shaped error body, or the body itself (cut) when it is not one.
pub fn error_message(body: &[u8]) -> String {
    match serde_json::from_slice::<ErrorEnvelope>(body) {
        Ok(ErrorEnvelope { error: ErrorBody { message: Some(m) } }) => m,
        _ => {
            let text = String::from_utf8_lossy(body);
            let cut: String = text.chars().take(512).collect();
            if cut.is_empty() { "the vendor answered an error".to_string() } else { cut }
        }
    }
}

/// The stop string that ended a choice's text. OpenAI does not say; vLLM (`stop_reason`) and
/// SGLang (`matched_stop`) do, as a string for a stop string and a number for a stop token
/// (no stop sequence, so read as none).
pub fn matched_stop<'a>(stop_reason: &'a Option<String>, matched_stop: &'a Option<String>) -> Option<&'a str> {
    stop_reason.as_deref().or(matched_stop.as_deref()).filter(|s| !s.is_empty())
}

/// A string, or nothing for any other JSON value (a stop token's number, null).
fn stop_text<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Text {
        Str(String),
        Other(serde::de::IgnoredAny),
    }
    Ok(match Option::<Text>::deserialize(d)? {
        Some(Text::Str(s)) => Some(s),
        _ => None,
    })
}
