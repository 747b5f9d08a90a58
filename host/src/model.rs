//! The host's own model of a call: what the request path, streams, jobs and accounting speak.
//!
//! The adapter contract's generated types stay inside `adapter/` and are converted at its edge
//! (one conversion per contract version), so a new contract version, or a second one linked
//! beside it, touches only that layer.

/// A client API: the relay endpoint a call serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// OpenAI `POST /v1/chat/completions`, the canonical API every adapter maps from.
    ChatCompletions,
    /// OpenAI `POST /v1/embeddings`.
    Embeddings,
    /// OpenAI Responses `POST /v1/responses`.
    Responses,
    /// Anthropic Messages `POST /v1/messages`.
    Messages,
    /// Anthropic `POST /v1/messages/count_tokens`, sent only to adapters that speak it natively.
    MessagesCountTokens,
}

impl Endpoint {
    /// The name in logs, metrics labels and admin answers.
    pub fn as_str(self) -> &'static str {
        match self {
            Endpoint::ChatCompletions => "chat_completions",
            Endpoint::Embeddings => "embeddings",
            Endpoint::Responses => "responses",
            Endpoint::Messages => "messages",
            Endpoint::MessagesCountTokens => "messages_count_tokens",
        }
    }
}

/// How a vendor frames a streaming response body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamFormat {
    Sse,
    Ndjson,
}

/// Where the host puts the channel's credential; the adapter only names the place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthScheme {
    Bearer,
    Header(String),
    Query(String),
    None,
}

/// What an adapter says about itself when it loads.
#[derive(Debug, Clone)]
pub struct AdapterInfo {
    pub name: String,
    pub version: String,
    pub description: String,
    /// The canonical endpoints it maps (chat completions, embeddings).
    pub endpoints: Vec<Endpoint>,
    /// Client APIs the vendor speaks itself, passed through as the client sent them.
    pub native: Vec<Endpoint>,
    pub auth: AuthScheme,
    pub stream_format: StreamFormat,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub name: String,
    pub value: String,
}

/// What an adapter is told about a call. Credentials are never part of it.
#[derive(Debug, Clone)]
pub struct CallContext {
    pub request_id: String,
    /// The client API of the body the adapter receives and of every answer it writes.
    pub endpoint: Endpoint,
    pub model: String,
    pub stream: bool,
    pub include_usage: bool,
    pub settings: Vec<(String, String)>,
}

/// The vendor request an adapter built, before the host checks it and adds the credential.
#[derive(Debug, Clone)]
pub struct UpstreamRequest {
    pub method: String,
    pub path: String,
    pub headers: Vec<Header>,
    pub body: String,
}

/// A complete vendor response as an adapter is shown it (key redacted, headers allow-listed).
#[derive(Debug, Clone)]
pub struct UpstreamResponse {
    pub status: u16,
    pub headers: Vec<Header>,
    pub body: String,
}

/// Token counts. Input includes cached input; output includes reasoning.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub input: u64,
    pub output: u64,
    pub total: u64,
    pub cached_input: Option<u64>,
    pub cache_creation_input: Option<u64>,
    pub reasoning: Option<u64>,
}

/// What a vendor error means, as its adapter reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorClass {
    InvalidRequest,
    ContextLengthExceeded,
    ContentFiltered,
    Authentication,
    Permission,
    NotFound,
    RateLimited,
    Overloaded,
    ServerError,
}

/// An adapter's answer to a complete vendor response, in the call's client API.
#[derive(Debug, Clone)]
pub struct RelayResponse {
    pub status: u16,
    pub body: String,
    pub usage: Option<Usage>,
    /// For a vendor error, what it means (none: judged by the status).
    pub error_class: Option<ErrorClass>,
}

/// One vendor stream event, framed by the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamEvent {
    pub event: Option<String>,
    pub data: String,
}

/// One event for the client, in the call's client API (chat chunks have no name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputEvent {
    pub name: Option<String>,
    pub data: String,
}

/// What a batch of vendor events became.
#[derive(Debug, Clone, Default)]
pub struct StreamOutput {
    pub events: Vec<OutputEvent>,
    /// The vendor's terminal event was seen.
    pub done: bool,
    pub usage: Option<Usage>,
    /// Why each upstream event the adapter could not read was left out (0.2 adapters; a
    /// 0.1 adapter's unreadable event is its push's error).
    pub skipped: Vec<String>,
}

/// The end of a stream.
#[derive(Debug, Clone, Default)]
pub struct StreamEnd {
    pub events: Vec<OutputEvent>,
    pub usage: Option<Usage>,
}

/// An error of the contract, returned by an adapter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdapterError {
    /// The client's request cannot be expressed for this vendor (400).
    InvalidRequest(String),
    /// A feature the vendor or adapter does not support (400).
    Unsupported(String),
    /// The vendor answered something the adapter cannot read (502).
    InvalidUpstream(String),
    /// A bug in the adapter (502).
    Internal(String),
}
