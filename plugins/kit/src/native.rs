//! Passing through a client API the vendor speaks itself (`PluginInfo.native`): the request
//! body as the client sent it, the answer and every stream event (names included) as the
//! vendor sent them, with unknown fields intact. The adapter only reads what the host needs:
//! usage for accounting, the terminal event, a vendor error's class.
//!
//! [`messages`] reads Anthropic's Messages API, for any vendor that speaks it;
//! [`responses`] reads OpenAI's Responses API.
//!
//! An adapter with a native API still maps chat completions: [`Split`] is the stream type
//! that takes either, by the call's endpoint.

use serde::Deserialize;

use crate::{
    AdapterError, CallContext, Endpoint, ErrorClass, Header, OutputEvent, RelayResponse, StreamAdapter, StreamEnd,
    StreamEvent, StreamOutput, UpstreamRequest, UpstreamResponse, Usage,
};

/// The client's body, unchanged, to `path` with `headers`.
pub fn request(path: &str, headers: Vec<Header>, body: &str) -> UpstreamRequest {
    UpstreamRequest { method: "POST".into(), path: path.into(), headers, body: body.into() }
}

/// The vendor's answer, unchanged: its status and body; usage read from a success, a
/// vendor error classified by `class`.
pub fn response(
    resp: UpstreamResponse,
    usage: impl Fn(&str) -> Result<Option<Usage>, AdapterError>,
    class: impl Fn(u16, &str) -> Option<ErrorClass>,
) -> Result<RelayResponse, AdapterError> {
    if (200..300).contains(&resp.status) {
        let usage = usage(&resp.body)?;
        Ok(RelayResponse { status: resp.status, body: resp.body, usage, error_class: None })
    } else {
        let error_class = class(resp.status, &resp.body);
        Ok(RelayResponse { status: resp.status, body: resp.body, usage: None, error_class })
    }
}

/// What a reader learnt from one native stream event.
#[derive(Default)]
pub struct Seen {
    /// The usage so far, when the event reports any.
    pub usage: Option<Usage>,
    /// The vendor's terminal event.
    pub done: bool,
    /// The event cannot be read (why): it is left out and reported as skipped, and the
    /// host's `malformed_events` decides whether the stream goes on.
    pub skip: Option<String>,
}

/// Reads a native stream's events for the host; the events themselves pass unchanged.
pub trait EventReader: Default + 'static {
    /// One event (its SSE name and data). An error ends the stream with the client API's
    /// error event (a vendor's own error event, an unreadable event).
    fn read(&mut self, name: Option<&str>, data: &str) -> Result<Seen, AdapterError>;

    /// The stream's end: an error when the terminal event never came.
    fn finish(&mut self, done: bool) -> Result<(), AdapterError>;
}

/// A native stream: every event forwarded with its name, read by `R`.
pub struct Passthrough<R> {
    reader: R,
    done: bool,
    usage: Option<Usage>,
}

impl<R: EventReader> StreamAdapter for Passthrough<R> {
    fn new(_ctx: &CallContext) -> Self {
        Passthrough { reader: R::default(), done: false, usage: None }
    }

    fn push(&mut self, event: StreamEvent) -> Result<StreamOutput, AdapterError> {
        let seen = self.reader.read(event.event.as_deref(), &event.data)?;
        if let Some(why) = seen.skip {
            return Ok(StreamOutput::skip(why));
        }
        if seen.usage.is_some() {
            self.usage = seen.usage;
        }
        self.done |= seen.done;
        // The host sends each event's data as one `data:` line: joined lines of JSON become
        // whitespace.
        let data = if event.data.contains(['\n', '\r']) { event.data.replace(['\n', '\r'], " ") } else { event.data };
        let out = OutputEvent { name: event.event, data };
        Ok(StreamOutput { events: vec![out], done: seen.done, usage: seen.usage, skipped: vec![] })
    }

    fn finish(&mut self) -> Result<StreamEnd, AdapterError> {
        self.reader.finish(self.done)?;
        Ok(StreamEnd { events: vec![], usage: self.usage })
    }
}

/// A stream that maps chat completions with `C` and passes a native API through with `N`,
/// chosen by the call's endpoint.
pub enum Split<C, N> {
    Chat(C),
    Native(N),
}

impl<C: StreamAdapter, N: StreamAdapter> StreamAdapter for Split<C, N> {
    fn new(ctx: &CallContext) -> Self {
        match ctx.endpoint {
            Endpoint::ChatCompletions | Endpoint::Embeddings => Split::Chat(C::new(ctx)),
            Endpoint::Responses | Endpoint::Messages | Endpoint::MessagesCountTokens => Split::Native(N::new(ctx)),
        }
    }

    fn push(&mut self, event: StreamEvent) -> Result<StreamOutput, AdapterError> {
        match self {
            Split::Chat(c) => c.push(event),
            Split::Native(n) => n.push(event),
        }
    }

    fn push_batch(&mut self, events: Vec<StreamEvent>, out: &mut StreamOutput) -> Result<(), AdapterError> {
        match self {
            Split::Chat(c) => c.push_batch(events, out),
            Split::Native(n) => n.push_batch(events, out),
        }
    }

    fn finish(&mut self) -> Result<StreamEnd, AdapterError> {
        match self {
            Split::Chat(c) => c.finish(),
            Split::Native(n) => n.finish(),
        }
    }
}

/// Anthropic's Messages API, read for the host: usage (input counts cache reads and writes,
/// as the contract counts input), `message_stop`, `error` events, error classes.
pub mod messages {
    use super::*;

    /// Anthropic's usage object; every field may be absent or null depending on the event.
    #[derive(Deserialize, Default, Clone, Copy)]
    pub struct WireUsage {
        #[serde(default)]
        pub input_tokens: Option<u64>,
        #[serde(default)]
        pub output_tokens: Option<u64>,
        #[serde(default)]
        pub cache_creation_input_tokens: Option<u64>,
        #[serde(default)]
        pub cache_read_input_tokens: Option<u64>,
    }

    /// Counts as reported so far (Anthropic's are cumulative: later values replace).
    #[derive(Default, Clone, Copy, Debug)]
    pub struct Tokens {
        input: u64,
        cache_creation: Option<u64>,
        cache_read: Option<u64>,
        output: u64,
    }

    impl Tokens {
        /// Cache reads, when the vendor reported them.
        pub fn cache_read(&self) -> Option<u64> {
            self.cache_read
        }

        pub fn update(&mut self, u: &WireUsage) {
            if let Some(n) = u.input_tokens {
                self.input = n;
            }
            if let Some(n) = u.cache_creation_input_tokens {
                self.cache_creation = Some(n);
            }
            if let Some(n) = u.cache_read_input_tokens {
                self.cache_read = Some(n);
            }
            if let Some(n) = u.output_tokens {
                self.output = n;
            }
        }

        /// The contract's usage: input is every prompt token, cached or not (saturating).
        pub fn usage(&self) -> Usage {
            let prompt = self
                .input
                .saturating_add(self.cache_creation.unwrap_or(0))
                .saturating_add(self.cache_read.unwrap_or(0));
            Usage {
                cached_input_tokens: self.cache_read,
                cache_creation_input_tokens: self.cache_creation,
                ..Usage::new(prompt, self.output)
            }
        }
    }

    /// The usage of a Message body, checking that it is JSON.
    pub fn usage_of(body: &str) -> Result<Option<Usage>, AdapterError> {
        #[derive(Deserialize)]
        struct Probe {
            #[serde(default)]
            usage: Option<WireUsage>,
        }
        let p: Probe = serde_json::from_str(body)
            .map_err(|e| AdapterError::InvalidUpstream(format!("the vendor's answer is not JSON: {e}")))?;
        Ok(p.usage.map(|u| {
            let mut t = Tokens::default();
            t.update(&u);
            t.usage()
        }))
    }

    #[derive(Deserialize)]
    struct ErrorEnvelope {
        error: VendorError,
    }

    #[derive(Deserialize)]
    struct VendorError {
        #[serde(rename = "type", default)]
        kind: Option<String>,
        #[serde(default)]
        message: String,
    }

    /// The class of an Anthropic error body: by its `type` (and, for a too-long prompt, its
    /// message), then by the status.
    pub fn error_class(status: u16, body: &str) -> Option<ErrorClass> {
        let by_status = crate::error::class_of_status(status)?;
        let named = serde_json::from_str::<ErrorEnvelope>(body)
            .ok()
            .and_then(|e| class_of(e.error.kind.as_deref(), &e.error.message));
        Some(named.unwrap_or(by_status))
    }

    /// What an Anthropic error `type` says; a prompt over the context window is an
    /// `invalid_request_error` whose message says so.
    pub fn class_of(kind: Option<&str>, message: &str) -> Option<ErrorClass> {
        match kind? {
            "overloaded_error" => Some(ErrorClass::Overloaded),
            "rate_limit_error" => Some(ErrorClass::RateLimited),
            "authentication_error" => Some(ErrorClass::Authentication),
            "permission_error" => Some(ErrorClass::Permission),
            "not_found_error" => Some(ErrorClass::NotFound),
            "api_error" => Some(ErrorClass::ServerError),
            "invalid_request_error" => {
                let m = message.to_ascii_lowercase();
                let too_long = m.contains("prompt is too long") || m.contains("exceed context limit");
                Some(if too_long { ErrorClass::ContextLengthExceeded } else { ErrorClass::InvalidRequest })
            }
            _ => None,
        }
    }

    /// The fields of a stream event the host needs; the rest passes through unread.
    #[derive(Deserialize)]
    struct Event {
        #[serde(rename = "type", default)]
        kind: String,
        #[serde(default)]
        message: Option<StartMessage>,
        #[serde(default)]
        usage: Option<WireUsage>,
        #[serde(default)]
        error: Option<VendorError>,
        #[serde(default)]
        delta: Option<MessageDelta>,
    }

    #[derive(Deserialize)]
    struct MessageDelta {
        #[serde(default)]
        stop_reason: Option<String>,
    }

    #[derive(Deserialize)]
    struct StartMessage {
        #[serde(default)]
        usage: Option<WireUsage>,
    }

    /// Reads a Messages stream: usage from `message_start` and `message_delta`, the end at
    /// `message_stop` (or, when the vendor leaves it out, a `message_delta` that carried the
    /// `stop_reason`), an `error` event as the stream's error; an event that is not JSON is
    /// skipped (the vendor's own `error` event stays an error).
    #[derive(Default)]
    pub struct Reader {
        tokens: Tokens,
        ending: crate::ending::Ending,
    }

    impl EventReader for Reader {
        fn read(&mut self, name: Option<&str>, data: &str) -> Result<Seen, AdapterError> {
            let ev: Event = match serde_json::from_str(data) {
                Ok(ev) => ev,
                Err(e) => {
                    let why =
                        format!("the vendor's '{}' stream event is not readable: {e}", name.unwrap_or("(unnamed)"));
                    if name == Some("error") {
                        return Err(AdapterError::InvalidUpstream(why));
                    }
                    return Ok(Seen { skip: Some(why), ..Seen::default() });
                }
            };
            match ev.kind.as_str() {
                "message_start" => {
                    if let Some(u) = ev.message.and_then(|m| m.usage) {
                        self.tokens.update(&u);
                    }
                    Ok(Seen { usage: Some(self.tokens.usage()), ..Seen::default() })
                }
                "message_delta" => {
                    if let Some(u) = &ev.usage {
                        self.tokens.update(u);
                    }
                    if ev.delta.is_some_and(|d| d.stop_reason.is_some()) {
                        self.ending.finish_reason();
                    }
                    Ok(Seen { usage: Some(self.tokens.usage()), ..Seen::default() })
                }
                "message_stop" => {
                    self.ending.terminal();
                    Ok(Seen { usage: Some(self.tokens.usage()), done: true, skip: None })
                }
                "error" => {
                    let e = ev.error.unwrap_or(VendorError { kind: None, message: String::new() });
                    let kind = e.kind.as_deref().unwrap_or("error");
                    Err(AdapterError::InvalidUpstream(format!(
                        "the vendor ended the stream with {kind}: {}",
                        e.message
                    )))
                }
                _ => Ok(Seen::default()),
            }
        }

        fn finish(&mut self, done: bool) -> Result<(), AdapterError> {
            if done {
                return Ok(());
            }
            self.ending.check("message_stop")
        }
    }

    /// A Messages stream passed through.
    pub type Stream = Passthrough<Reader>;

    /// A Messages answer passed through (any status).
    pub fn response(resp: UpstreamResponse) -> Result<RelayResponse, AdapterError> {
        super::response(resp, usage_of, error_class)
    }
}

/// OpenAI's Responses API, read for the host: usage from the Response object (a whole
/// answer, or the `response` of a stream's terminal event), the terminal events, the
/// vendor's error events, error classes (OpenAI's codes).
pub mod responses {
    use serde_json::Value;

    use super::*;

    /// The Responses `usage` object; the details are read leniently, as chat's are.
    #[derive(Deserialize, Default)]
    pub struct WireUsage {
        #[serde(default)]
        pub input_tokens: u64,
        #[serde(default)]
        pub output_tokens: u64,
        #[serde(default)]
        pub total_tokens: Option<u64>,
        #[serde(default)]
        pub input_tokens_details: Option<Value>,
        #[serde(default)]
        pub output_tokens_details: Option<Value>,
    }

    fn detail(details: &Option<Value>, key: &str) -> Option<u64> {
        details.as_ref()?.get(key)?.as_u64()
    }

    impl From<WireUsage> for Usage {
        /// `input_tokens` count the cached ones and `output_tokens` the reasoning ones, as
        /// the contract counts them; a missing total is their (saturating) sum.
        fn from(u: WireUsage) -> Usage {
            let base = Usage::new(u.input_tokens, u.output_tokens);
            Usage {
                total_tokens: u.total_tokens.unwrap_or(base.total_tokens),
                cached_input_tokens: detail(&u.input_tokens_details, "cached_tokens"),
                reasoning_tokens: detail(&u.output_tokens_details, "reasoning_tokens"),
                ..base
            }
        }
    }

    /// The part of a Response object the host needs.
    #[derive(Deserialize)]
    struct ResponseProbe {
        #[serde(default)]
        usage: Option<WireUsage>,
        #[serde(default)]
        error: Option<Value>,
    }

    /// The usage of a Response body, checking that it is JSON.
    pub fn usage_of(body: &str) -> Result<Option<Usage>, AdapterError> {
        let p: ResponseProbe = serde_json::from_str(body)
            .map_err(|e| AdapterError::InvalidUpstream(format!("the vendor's answer is not JSON: {e}")))?;
        Ok(p.usage.map(Into::into))
    }

    /// A Responses answer passed through: a success as sent (usage read), an error kept
    /// in OpenAI's shape and classified by its `code` and the status.
    pub fn response(resp: UpstreamResponse) -> Result<RelayResponse, AdapterError> {
        if (200..300).contains(&resp.status) {
            return super::response(resp, usage_of, |_, _| None);
        }
        let error_class = crate::error::openai_error_class(resp.status, &resp.body);
        let body = crate::error::openai_error_body(resp.status, &resp.body);
        Ok(RelayResponse { status: resp.status, body, usage: None, error_class })
    }

    /// The fields of a stream event the host needs; the rest passes through unread.
    #[derive(Deserialize)]
    struct Event {
        #[serde(rename = "type", default)]
        kind: String,
        #[serde(default)]
        response: Option<ResponseProbe>,
        /// An `error` event's own fields.
        #[serde(default)]
        code: Option<Value>,
        #[serde(default)]
        message: Option<Value>,
    }

    /// A JSON value as text for a message: a string without its quotes.
    fn text(v: Option<&Value>) -> String {
        match v {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Null) | None => String::new(),
            Some(other) => other.to_string(),
        }
    }

    /// The vendor's own failure event (its Response has `status: "failed"` and `error`).
    const FAILED: &str = "response.failed";

    /// Reads a Responses stream: usage from any event that carries a Response with usage
    /// (the terminal one does), the end at `response.completed` / `response.incomplete`;
    /// `response.failed` and `error` end the stream with the vendor's error (the host then
    /// sends the client its own `response.failed`, with the relay's id). An event that is
    /// not JSON is skipped (one named `error` or `response.failed` stays an error).
    #[derive(Default)]
    pub struct Reader {
        usage: Option<Usage>,
        ending: crate::ending::Ending,
    }

    impl EventReader for Reader {
        fn read(&mut self, name: Option<&str>, data: &str) -> Result<Seen, AdapterError> {
            let ev: Event = match serde_json::from_str(data) {
                Ok(ev) => ev,
                Err(e) => {
                    let name = name.unwrap_or("(unnamed)");
                    let why = format!("the vendor's '{name}' stream event is not readable: {e}");
                    if name == "error" || name == FAILED {
                        return Err(AdapterError::InvalidUpstream(why));
                    }
                    return Ok(Seen { skip: Some(why), ..Seen::default() });
                }
            };
            let (usage, error) = match ev.response {
                Some(r) => (r.usage.map(Usage::from), r.error),
                None => (None, None),
            };
            if usage.is_some() {
                self.usage = usage;
            }
            match ev.kind.as_str() {
                "response.completed" | "response.incomplete" => {
                    self.ending.terminal();
                    Ok(Seen { usage: self.usage, done: true, skip: None })
                }
                FAILED => {
                    let e = error.unwrap_or(Value::Null);
                    Err(AdapterError::InvalidUpstream(format!(
                        "the vendor ended the stream with {FAILED} ({}): {}",
                        text(e.get("code")),
                        text(e.get("message"))
                    )))
                }
                "error" => Err(AdapterError::InvalidUpstream(format!(
                    "the vendor ended the stream with an error event ({}): {}",
                    text(ev.code.as_ref()),
                    text(ev.message.as_ref())
                ))),
                _ => Ok(Seen { usage, ..Seen::default() }),
            }
        }

        fn finish(&mut self, done: bool) -> Result<(), AdapterError> {
            if done {
                return Ok(());
            }
            self.ending.check("response.completed")
        }
    }

    /// A Responses stream passed through.
    pub type Stream = Passthrough<Reader>;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(endpoint: Endpoint) -> CallContext {
        CallContext {
            request_id: "r".into(),
            endpoint,
            model: "m".into(),
            stream: true,
            include_usage: false,
            settings: vec![],
        }
    }

    fn ev(name: &str, data: &str) -> StreamEvent {
        StreamEvent { event: Some(name.into()), data: data.into() }
    }

    #[test]
    fn messages_events_pass_through_with_names_and_usage() {
        let mut s = messages::Stream::new(&ctx(Endpoint::Messages));
        let start = r#"{"type":"message_start","message":{"id":"m","usage":{"input_tokens":5,"cache_read_input_tokens":2,"output_tokens":1},"x_new":1}}"#;
        let out = s.push(ev("message_start", start)).unwrap();
        assert_eq!((out.events[0].name.as_deref(), out.events[0].data.as_str()), (Some("message_start"), start));
        let u = out.usage.unwrap();
        assert_eq!((u.input_tokens, u.cached_input_tokens, u.output_tokens), (7, Some(2), 1));
        let thinking = r#"{"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":"hm"}}"#;
        assert_eq!(s.push(ev("content_block_delta", thinking)).unwrap().data(), [thinking]);
        let out =
            s.push(ev("message_delta", r#"{"type":"message_delta","delta":{},"usage":{"output_tokens":9}}"#)).unwrap();
        assert_eq!(out.usage.unwrap().output_tokens, 9);
        assert!(s.finish().is_err(), "no message_stop yet");
        let out = s.push(ev("message_stop", r#"{"type":"message_stop"}"#)).unwrap();
        assert!(out.done);
        assert_eq!(s.finish().unwrap().usage.unwrap().total_tokens, 16);
        let mut s = messages::Stream::new(&ctx(Endpoint::Messages));
        let err = r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#;
        assert!(
            matches!(s.push(ev("error", err)), Err(AdapterError::InvalidUpstream(m)) if m.contains("overloaded_error"))
        );
    }

    #[test]
    fn a_native_messages_stream_ends_by_the_stream_end_rules() {
        // Complete without message_stop once a message_delta carried the stop_reason.
        let mut s = messages::Stream::new(&ctx(Endpoint::Messages));
        let delta = r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"hi"}}"#;
        s.push(ev("content_block_delta", delta)).unwrap();
        assert!(s.finish().is_err(), "cut before the stop_reason");
        let stop = r#"{"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":2}}"#;
        s.push(ev("message_delta", stop)).unwrap();
        assert_eq!(s.finish().unwrap().usage.unwrap().output_tokens, 2);
        // An unreadable event is skipped, with the reason; the vendor's own error event is not.
        let out = s.push(ev("content_block_delta", "{not json")).unwrap();
        assert!(out.events.is_empty() && out.skipped.len() == 1, "{:?}", out.skipped);
        assert!(out.skipped[0].contains("not readable"), "{:?}", out.skipped);
        assert!(s.push(ev("error", "{not json")).is_err());
    }

    #[test]
    fn messages_answers_pass_through_and_errors_are_classified() {
        let body = r#"{"id":"msg_1","content":[{"type":"thinking","thinking":"x"}],"usage":{"input_tokens":3,"output_tokens":4}}"#;
        let r = messages::response(UpstreamResponse { status: 200, headers: vec![], body: body.into() }).unwrap();
        assert_eq!((r.status, r.body.as_str(), r.usage.unwrap().total_tokens), (200, body, 7));
        let err = r#"{"type":"error","error":{"type":"invalid_request_error","message":"prompt is too long: 3 > 2"}}"#;
        let r = messages::response(UpstreamResponse { status: 400, headers: vec![], body: err.into() }).unwrap();
        assert_eq!(r.body, err);
        assert!(matches!(r.error_class, Some(ErrorClass::ContextLengthExceeded)));
        assert!(messages::response(UpstreamResponse { status: 200, headers: vec![], body: "nope".into() }).is_err());
    }

    #[test]
    fn responses_events_pass_through_with_names_and_usage_from_the_terminal_event() {
        let mut s = responses::Stream::new(&ctx(Endpoint::Responses));
        let created = r#"{"type":"response.created","sequence_number":0,"response":{"id":"resp_v","status":"in_progress","usage":null,"x_new":1}}"#;
        let out = s.push(ev("response.created", created)).unwrap();
        assert_eq!((out.events[0].name.as_deref(), out.events[0].data.as_str()), (Some("response.created"), created));
        assert!(out.usage.is_none() && !out.done);
        // Vendor events the relay never heard of pass as sent, names included.
        let reasoning = r#"{"type":"response.reasoning_summary_text.delta","sequence_number":1,"item_id":"rs_1","delta":"hm","x":[1]}"#;
        let out = s.push(ev("response.reasoning_summary_text.delta", reasoning)).unwrap();
        assert_eq!(out.events[0].name.as_deref(), Some("response.reasoning_summary_text.delta"));
        assert_eq!(out.data(), [reasoning]);
        assert!(s.finish().is_err(), "no terminal event yet");
        let done = r#"{"type":"response.completed","sequence_number":2,"response":{"id":"resp_v","status":"completed",
            "usage":{"input_tokens":30,"input_tokens_details":{"cached_tokens":20},"output_tokens":50,
            "output_tokens_details":{"reasoning_tokens":40},"total_tokens":80}}}"#;
        let out = s.push(ev("response.completed", done)).unwrap();
        assert!(out.done);
        assert!(!out.events[0].data.contains('\n'), "one data line");
        let u = out.usage.unwrap();
        assert_eq!((u.input_tokens, u.output_tokens, u.total_tokens), (30, 50, 80));
        assert_eq!((u.cached_input_tokens, u.reasoning_tokens), (Some(20), Some(40)));
        assert_eq!(s.finish().unwrap().usage.unwrap().total_tokens, 80);
        // `response.incomplete` is a normal end too.
        let mut s = responses::Stream::new(&ctx(Endpoint::Responses));
        let inc = r#"{"type":"response.incomplete","sequence_number":5,"response":{"status":"incomplete","usage":{"input_tokens":1,"output_tokens":2}}}"#;
        assert!(s.push(ev("response.incomplete", inc)).unwrap().done);
        assert_eq!(s.finish().unwrap().usage.unwrap().total_tokens, 3);
    }

    #[test]
    fn a_native_responses_stream_fails_on_the_vendors_failure_and_on_a_cut() {
        let failed = r#"{"type":"response.failed","sequence_number":3,"response":{"status":"failed","error":{"code":"server_error","message":"boom"}}}"#;
        let mut s = responses::Stream::new(&ctx(Endpoint::Responses));
        let err = s.push(ev("response.failed", failed));
        assert!(
            matches!(&err, Err(AdapterError::InvalidUpstream(m)) if m.contains("response.failed (server_error): boom")),
            "{err:?}"
        );
        let error =
            r#"{"type":"error","sequence_number":1,"code":"rate_limit_exceeded","message":"slow down","param":null}"#;
        let err = s.push(ev("error", error));
        assert!(
            matches!(&err, Err(AdapterError::InvalidUpstream(m)) if m.contains("(rate_limit_exceeded): slow down")),
            "{err:?}"
        );
        // Text done, item done: without response.completed the answer was cut.
        let mut s = responses::Stream::new(&ctx(Endpoint::Responses));
        let delta = r#"{"type":"response.output_text.done","sequence_number":4,"item_id":"msg_1","text":"hi"}"#;
        s.push(ev("response.output_text.done", delta)).unwrap();
        let err = s.finish();
        assert!(
            matches!(&err, Err(AdapterError::InvalidUpstream(m)) if m.contains("ended before response.completed")),
            "{err:?}"
        );
        // An unreadable event is skipped with the reason; an unreadable failure is an error.
        let out = s.push(ev("response.output_text.delta", "{not json")).unwrap();
        assert!(out.events.is_empty() && out.skipped.len() == 1, "{:?}", out.skipped);
        assert!(out.skipped[0].contains("not readable"), "{:?}", out.skipped);
        assert!(s.push(ev("response.failed", "{not json")).is_err());
        assert!(s.push(ev("error", "{not json")).is_err());
    }

    #[test]
    fn responses_answers_pass_through_and_errors_are_classified() {
        let body = r#"{"id":"resp_v","object":"response","status":"completed","output":[{"type":"reasoning","id":"rs_1","summary":[]}],"usage":{"input_tokens":3,"output_tokens":4,"total_tokens":7},"x_new":true}"#;
        let r = responses::response(UpstreamResponse { status: 200, headers: vec![], body: body.into() }).unwrap();
        assert_eq!((r.status, r.body.as_str(), r.usage.unwrap().total_tokens), (200, body, 7));
        assert!(r.error_class.is_none());
        let err =
            r#"{"error":{"message":"Rate limit reached","type":"requests","param":null,"code":"rate_limit_exceeded"}}"#;
        let r = responses::response(UpstreamResponse { status: 429, headers: vec![], body: err.into() }).unwrap();
        assert_eq!((r.status, r.body.as_str()), (429, err));
        assert!(matches!(r.error_class, Some(ErrorClass::RateLimited)));
        let r = responses::response(UpstreamResponse { status: 502, headers: vec![], body: "<html>".into() }).unwrap();
        assert!(r.body.contains("\"error\"") && r.body.contains("<html>"), "{}", r.body);
        assert!(matches!(r.error_class, Some(ErrorClass::ServerError)));
        assert!(responses::response(UpstreamResponse { status: 200, headers: vec![], body: "nope".into() }).is_err());
    }
}
