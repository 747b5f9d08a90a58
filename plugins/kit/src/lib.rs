//! The kit for writing relay adapters in Rust, against the contract `relay:adapter@0.2.0`
//! (`wit/adapter.wit`).
//!
//! An adapter implements [`Adapter`] (and [`StreamAdapter`] for streams) with plain Rust
//! signatures and calls [`export_adapter!`]; the kit supplies the WIT bindings, the glue to
//! the component ABI, OpenAI's request and response types ([`openai`]), and helpers for
//! errors and logging. The adapter is then mostly its mapping:
//!
//! ```ignore
//! use relay_plugin_kit::prelude::*;
//!
//! struct MyVendor;
//!
//! impl Adapter for MyVendor {
//!     type Stream = MyStream;
//!     fn info() -> PluginInfo { PluginInfo { auth: AuthScheme::Header("x-api-key".into()), ..PluginInfo::new("myvendor", "1.0.0", "My vendor") } }
//!     fn transform_request(ctx: &CallContext, body: &str) -> Result<UpstreamRequest, AdapterError> { ... }
//!     fn transform_response(ctx: &CallContext, resp: UpstreamResponse) -> Result<RelayResponse, AdapterError> { ... }
//! }
//! relay_plugin_kit::export_adapter!(MyVendor);
//! ```
//!
//! See `examples/plugin-template` and `docs/writing-a-plugin.md`.

pub mod ending;
pub mod error;
pub mod log;
pub mod native;
pub mod openai;

#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "adapter-plugin",
        pub_export_macro: true,
        export_macro_name: "export_guest",
        default_bindings_module: "relay_plugin_kit::bindings",
    });
}

pub use bindings::relay::adapter::types::{
    AdapterError, AuthScheme, CallContext, Endpoint, ErrorClass, Header, OutputEvent, PluginInfo, RelayResponse,
    StreamEnd, StreamEvent, StreamFormat, StreamOutput, UpstreamRequest, UpstreamResponse, Usage,
};

/// Everything an adapter usually needs, in one import.
pub mod prelude {
    pub use crate::ending::Ending;
    pub use crate::error::{invalid_request, invalid_upstream, openai_error_body, unsupported};
    pub use crate::openai;
    pub use crate::{
        Adapter, AdapterError, AuthScheme, CallContext, ContextExt, Endpoint, ErrorClass, Header, OutputEvent,
        PluginInfo, RelayResponse, StreamAdapter, StreamEnd, StreamEvent, StreamFormat, StreamOutput, UpstreamRequest,
        UpstreamResponse, Usage, encode_segment,
    };
}

/// A vendor adapter. Calls are independent: the host runs them on reused instances (shared
/// with other requests and streams) or on fresh ones, so keep no state between calls
/// outside a [`StreamAdapter`].
pub trait Adapter: 'static {
    /// The per-stream state machine; use [`NoStream`] for adapters without streaming.
    type Stream: StreamAdapter;

    /// Start from [`PluginInfo::new`]: it speaks no client API natively (`native` empty), so
    /// the host serves Responses and Messages clients through chat completions.
    fn info() -> PluginInfo;

    /// The client's JSON body (in `ctx.endpoint`'s API: chat completions or embeddings
    /// unless the adapter names native APIs) → the vendor request (path relative to the
    /// channel's `base_url`).
    fn transform_request(ctx: &CallContext, body: &str) -> Result<UpstreamRequest, AdapterError>;

    /// A complete vendor response, any status → the client's answer. The default passes a
    /// success body through (reading its usage) and keeps vendor errors in OpenAI's shape,
    /// classified from the status and OpenAI's error `code`/`type`.
    fn transform_response(_ctx: &CallContext, resp: UpstreamResponse) -> Result<RelayResponse, AdapterError> {
        openai::response(resp)
    }
}

impl PluginInfo {
    /// An adapter's info with the usual defaults: the chat completions endpoint, no native
    /// client API, bearer credential, SSE streams. Override fields with struct update
    /// syntax: `PluginInfo { auth: AuthScheme::None, ..PluginInfo::new(name, version, description) }`.
    pub fn new(name: &str, version: &str, description: &str) -> PluginInfo {
        PluginInfo {
            name: name.into(),
            version: version.into(),
            description: description.into(),
            endpoints: vec![Endpoint::ChatCompletions],
            native: vec![],
            auth: AuthScheme::Bearer,
            stream_format: StreamFormat::Sse,
        }
    }
}

impl Usage {
    /// Usage from input and output counts, the total saturating (a vendor's counts may be
    /// anything) and no detail known.
    pub fn new(input: u64, output: u64) -> Usage {
        Usage {
            input_tokens: input,
            output_tokens: output,
            total_tokens: input.saturating_add(output),
            cached_input_tokens: None,
            cache_creation_input_tokens: None,
            reasoning_tokens: None,
        }
    }
}

impl OutputEvent {
    /// A chat completions chunk: an event without a name.
    pub fn chunk(data: String) -> OutputEvent {
        OutputEvent { name: None, data }
    }

    /// An event with an SSE `event:` name (Responses and Messages streams).
    pub fn named(name: &str, data: String) -> OutputEvent {
        OutputEvent { name: Some(name.into()), data }
    }
}

impl StreamOutput {
    /// Nothing to send, not done, no usage.
    pub fn empty() -> StreamOutput {
        StreamOutput { events: vec![], done: false, usage: None, skipped: vec![] }
    }

    /// Chat chunks to send (not done, no usage).
    pub fn chunks(chunks: Vec<String>) -> StreamOutput {
        StreamOutput { events: chunks.into_iter().map(OutputEvent::chunk).collect(), ..StreamOutput::empty() }
    }

    /// An upstream event the adapter cannot read (not JSON, or JSON it cannot map), left
    /// out: the host counts it and goes on, or ends the stream with `reason`, as the
    /// channel's `malformed_events` setting says. Not for the vendor's own error events:
    /// those are errors.
    pub fn skip(reason: impl Into<String>) -> StreamOutput {
        StreamOutput { skipped: vec![reason.into()], ..StreamOutput::empty() }
    }

    /// Add what one event became to what its batch became so far: its events (and skips)
    /// follow, a later usage replaces an earlier one, and `done` stays. Returns whether the
    /// batch is done (what follows the terminal event is ignored).
    pub fn absorb(&mut self, next: StreamOutput) -> bool {
        // The first output of a batch (most batches are one event) is taken as it is:
        // extending an empty list would allocate a second one and copy into it.
        if self.events.is_empty() {
            self.events = next.events;
        } else {
            self.events.extend(next.events);
        }
        self.skipped.extend(next.skipped);
        if next.usage.is_some() {
            self.usage = next.usage;
        }
        self.done |= next.done;
        self.done
    }

    /// The data of the events, in order (what a test of a chat stream compares).
    pub fn data(&self) -> Vec<&str> {
        self.events.iter().map(|e| e.data.as_str()).collect()
    }
}

impl StreamEnd {
    /// Chat chunks to send last, and the stream's usage.
    pub fn chunks(chunks: Vec<String>, usage: Option<Usage>) -> StreamEnd {
        StreamEnd { events: chunks.into_iter().map(OutputEvent::chunk).collect(), usage }
    }

    /// The data of the events, in order.
    pub fn data(&self) -> Vec<&str> {
        self.events.iter().map(|e| e.data.as_str()).collect()
    }
}

/// One stream's translation: upstream events in, client events out.
///
/// The host hands over every event framed from one upstream read in one call. Implement
/// [`push`](Self::push) to see one event at a time (the kit runs the batch through it,
/// concatenating the outputs, stopping at the first `done` and keeping the last usage), or
/// override [`push_batch`](Self::push_batch) to see the whole batch.
pub trait StreamAdapter: Sized + 'static {
    fn new(ctx: &CallContext) -> Self;

    /// One upstream event → what it becomes. Required unless `push_batch` is overridden.
    fn push(&mut self, _event: StreamEvent) -> Result<StreamOutput, AdapterError> {
        Err(AdapterError::Internal("the adapter implements neither push nor push_batch".into()))
    }

    /// The events of one upstream read, in order, written into `out` (empty on entry).
    /// Events after the terminal one must be ignored. On an error, what is already in `out`
    /// is still sent, and the error ends the stream after it (as when the events came one
    /// by one).
    fn push_batch(&mut self, events: Vec<StreamEvent>, out: &mut StreamOutput) -> Result<(), AdapterError> {
        for event in events {
            if out.absorb(self.push(event)?) {
                break;
            }
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<StreamEnd, AdapterError>;
}

/// For adapters that do not stream: every stream call is refused as unsupported.
pub struct NoStream;

impl StreamAdapter for NoStream {
    fn new(_ctx: &CallContext) -> Self {
        NoStream
    }
    fn push(&mut self, _event: StreamEvent) -> Result<StreamOutput, AdapterError> {
        Err(AdapterError::Unsupported("this adapter does not stream".into()))
    }
    fn finish(&mut self) -> Result<StreamEnd, AdapterError> {
        Err(AdapterError::Unsupported("this adapter does not stream".into()))
    }
}

/// A stream as the host drives it: batches in, one output per batch. An error after some
/// events of a batch already became output is held back: the output goes out marked done,
/// and the error comes from `finish`, so the client receives the same events and the same
/// error as when the events came one by one. Nothing is pushed to the adapter after `done`.
pub struct Batched<S> {
    inner: S,
    held: Option<AdapterError>,
    done: bool,
}

impl<S: StreamAdapter> Batched<S> {
    pub fn new(ctx: &CallContext) -> Self {
        Batched { inner: S::new(ctx), held: None, done: false }
    }

    pub fn push(&mut self, events: Vec<StreamEvent>) -> Result<StreamOutput, AdapterError> {
        if self.done {
            return Ok(StreamOutput { done: true, ..StreamOutput::empty() });
        }
        let mut out = StreamOutput::empty();
        match self.inner.push_batch(events, &mut out) {
            Ok(()) => {
                self.done = out.done;
                Ok(out)
            }
            // Nothing to deliver first: the error is the answer now.
            Err(e) if out.events.is_empty() && out.usage.is_none() && out.skipped.is_empty() => Err(e),
            Err(e) => {
                self.held = Some(e);
                self.done = true;
                out.done = true;
                Ok(out)
            }
        }
    }

    pub fn finish(&mut self) -> Result<StreamEnd, AdapterError> {
        match self.held.take() {
            Some(e) => Err(e),
            None => self.inner.finish(),
        }
    }
}

/// The endpoint as the contract names it, for messages.
pub fn endpoint_name(endpoint: Endpoint) -> &'static str {
    match endpoint {
        Endpoint::ChatCompletions => "chat-completions",
        Endpoint::Embeddings => "embeddings",
        Endpoint::Responses => "responses",
        Endpoint::Messages => "messages",
        Endpoint::MessagesCountTokens => "messages-count-tokens",
    }
}

/// The refusal of a call in a client API the adapter does not map (the host converts the
/// non-native ones through chat completions, so this is only reached by a host bug).
pub fn not_mapped(endpoint: Endpoint) -> AdapterError {
    AdapterError::Unsupported(format!("this adapter does not map the {} API", endpoint_name(endpoint)))
}

/// Percent-encode everything outside `[A-Za-z0-9._-]`, so a model name or a setting can only
/// ever be one path segment or one query value of the vendor URL.
pub fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Reading channel settings.
pub trait ContextExt {
    /// The channel setting `key`, if set.
    fn setting(&self, key: &str) -> Option<&str>;
}

impl ContextExt for CallContext {
    fn setting(&self, key: &str) -> Option<&str> {
        self.settings.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
}

#[doc(hidden)]
pub struct StreamCell<S>(pub std::cell::RefCell<Batched<S>>);

impl<S: StreamAdapter> bindings::exports::relay::adapter::adapter::GuestStreamTransformer for StreamCell<S> {
    fn new(ctx: CallContext) -> Self {
        StreamCell(std::cell::RefCell::new(Batched::new(&ctx)))
    }
    fn push(&self, events: Vec<StreamEvent>) -> Result<StreamOutput, AdapterError> {
        self.0.borrow_mut().push(events)
    }
    fn finish(&self) -> Result<StreamEnd, AdapterError> {
        self.0.borrow_mut().finish()
    }
}

/// Export an [`Adapter`] as the component's `relay:adapter/adapter` implementation.
#[macro_export]
macro_rules! export_adapter {
    ($adapter:ty) => {
        #[doc(hidden)]
        pub struct __RelayAdapterGuest;

        impl $crate::bindings::exports::relay::adapter::adapter::Guest for __RelayAdapterGuest {
            type StreamTransformer = $crate::StreamCell<<$adapter as $crate::Adapter>::Stream>;

            fn info() -> $crate::PluginInfo {
                <$adapter as $crate::Adapter>::info()
            }

            fn transform_request(
                ctx: $crate::CallContext,
                body: String,
            ) -> Result<$crate::UpstreamRequest, $crate::AdapterError> {
                <$adapter as $crate::Adapter>::transform_request(&ctx, &body)
            }

            fn transform_response(
                ctx: $crate::CallContext,
                resp: $crate::UpstreamResponse,
            ) -> Result<$crate::RelayResponse, $crate::AdapterError> {
                <$adapter as $crate::Adapter>::transform_response(&ctx, resp)
            }
        }

        // The component ABI exists only in the wasm build; native builds run unit tests.
        #[cfg(target_arch = "wasm32")]
        $crate::bindings::export_guest!(__RelayAdapterGuest with_types_in $crate::bindings);
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> CallContext {
        CallContext {
            request_id: "r1".into(),
            endpoint: Endpoint::ChatCompletions,
            model: "m".into(),
            stream: true,
            include_usage: false,
            settings: vec![],
        }
    }

    fn event(data: &str) -> StreamEvent {
        StreamEvent { event: None, data: data.into() }
    }

    /// One chunk per event, its data; `u<n>` reports usage n, `done` ends, `fail` errs,
    /// `quiet` is nothing. Counts the events it was given.
    struct Echo {
        seen: usize,
    }

    impl StreamAdapter for Echo {
        fn new(_ctx: &CallContext) -> Self {
            Echo { seen: 0 }
        }
        fn push(&mut self, event: StreamEvent) -> Result<StreamOutput, AdapterError> {
            self.seen += 1;
            let d = event.data.as_str();
            if d == "done" {
                return Ok(StreamOutput { done: true, ..StreamOutput::empty() });
            }
            if d == "fail" {
                return Err(AdapterError::InvalidUpstream("failed".into()));
            }
            if d == "quiet" {
                return Ok(StreamOutput::empty());
            }
            let usage = d.strip_prefix('u').and_then(|n| n.parse().ok()).map(|n| Usage::new(n, 1));
            Ok(StreamOutput { usage, ..StreamOutput::chunks(vec![d.to_string()]) })
        }
        fn finish(&mut self) -> Result<StreamEnd, AdapterError> {
            Ok(StreamEnd::chunks(vec![format!("end after {}", self.seen)], None))
        }
    }

    #[test]
    fn a_batch_is_its_events_in_order_up_to_done() {
        let mut s = Batched::<Echo>::new(&ctx());
        let out = s.push(vec![event("a"), event("u3"), event("b"), event("u5"), event("c")]).unwrap();
        assert_eq!(out.data(), ["a", "u3", "b", "u5", "c"], "several events in one push");
        assert!(out.events.iter().all(|e| e.name.is_none()));
        assert_eq!(out.usage.map(|u| u.input_tokens), Some(5), "the last usage reported");
        assert!(!out.done);
        let out = s.push(vec![event("quiet")]).unwrap();
        assert!(out.events.is_empty() && out.usage.is_none() && !out.done);
        let out = s.push(vec![event("d"), event("done"), event("after"), event("u9"), event("fail")]).unwrap();
        assert_eq!(out.data(), ["d"], "events after done are ignored");
        assert!(out.done && out.usage.is_none());
        // Nothing reaches the adapter once done.
        assert!(s.push(vec![event("late")]).unwrap().events.is_empty());
        assert_eq!(s.finish().unwrap().data(), ["end after 8"]);
    }

    #[test]
    fn an_error_in_a_batch_comes_after_the_events_before_it() {
        let mut s = Batched::<Echo>::new(&ctx());
        let out = s.push(vec![event("a"), event("fail"), event("b")]).unwrap();
        assert_eq!(out.data(), ["a"]);
        assert!(out.done, "the stream ends");
        assert!(matches!(s.finish(), Err(AdapterError::InvalidUpstream(m)) if m == "failed"));
        // An error with nothing before it is the push's answer.
        let mut s = Batched::<Echo>::new(&ctx());
        assert!(s.push(vec![event("fail"), event("a")]).is_err());
        // A batch may end the stream without a single event to send.
        let mut s = Batched::<Echo>::new(&ctx());
        let out = s.push(vec![event("quiet"), event("done")]).unwrap();
        assert!(out.done && out.events.is_empty());
        // Usage before the error is still reported.
        let mut s = Batched::<Echo>::new(&ctx());
        let out = s.push(vec![event("u2"), event("fail")]).unwrap();
        assert_eq!(out.usage.map(|u| u.input_tokens), Some(2));
        assert!(s.finish().is_err());
    }

    #[test]
    fn an_adapter_may_take_the_whole_batch() {
        struct Count;
        impl StreamAdapter for Count {
            fn new(_ctx: &CallContext) -> Self {
                Count
            }
            fn push_batch(&mut self, events: Vec<StreamEvent>, out: &mut StreamOutput) -> Result<(), AdapterError> {
                out.events.push(OutputEvent::named("count", events.len().to_string()));
                Ok(())
            }
            fn finish(&mut self) -> Result<StreamEnd, AdapterError> {
                Ok(StreamEnd { events: vec![], usage: None })
            }
        }
        let out = Batched::<Count>::new(&ctx()).push(vec![event("a"), event("b")]).unwrap();
        assert_eq!((out.events[0].name.as_deref(), out.data()), (Some("count"), vec!["2"]));
        // One that implements neither method says so instead of looping.
        struct Neither;
        impl StreamAdapter for Neither {
            fn new(_ctx: &CallContext) -> Self {
                Neither
            }
            fn finish(&mut self) -> Result<StreamEnd, AdapterError> {
                Ok(StreamEnd { events: vec![], usage: None })
            }
        }
        assert!(matches!(Batched::<Neither>::new(&ctx()).push(vec![event("a")]), Err(AdapterError::Internal(_))));
    }

    #[test]
    fn info_defaults_to_no_native_api() {
        let i = PluginInfo { auth: AuthScheme::None, ..PluginInfo::new("x", "1.0.0", "d") };
        assert!(i.native.is_empty());
        assert!(matches!(i.endpoints.as_slice(), [Endpoint::ChatCompletions]));
        assert!(matches!((i.auth, i.stream_format), (AuthScheme::None, StreamFormat::Sse)));
    }

    #[test]
    fn the_default_response_classifies_vendor_errors() {
        struct P;
        impl Adapter for P {
            type Stream = NoStream;
            fn info() -> PluginInfo {
                PluginInfo::new("p", "1", "p")
            }
            fn transform_request(_: &CallContext, _: &str) -> Result<UpstreamRequest, AdapterError> {
                Err(not_mapped(Endpoint::Responses))
            }
        }
        let answer = |status: u16, body: &str| {
            P::transform_response(&ctx(), UpstreamResponse { status, headers: vec![], body: body.into() }).unwrap()
        };
        let ctx_err = r#"{"error":{"message":"too long","type":"invalid_request_error","param":"messages","code":"context_length_exceeded"}}"#;
        let r = answer(400, ctx_err);
        assert_eq!((r.status, r.body.as_str()), (400, ctx_err), "the answer is unchanged");
        assert!(matches!(r.error_class, Some(ErrorClass::ContextLengthExceeded)));
        assert!(matches!(answer(529, "busy").error_class, Some(ErrorClass::Overloaded)));
        assert!(matches!(answer(500, "{}").error_class, Some(ErrorClass::ServerError)));
        assert!(answer(200, r#"{"choices":[]}"#).error_class.is_none());
    }
}
