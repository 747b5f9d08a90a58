//! The kit for writing relay adapters in Rust.
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
//!     fn info() -> PluginInfo { /* name, endpoints, auth scheme, stream format */ }
//!     fn transform_request(ctx: &CallContext, body: &str) -> Result<UpstreamRequest, AdapterError> { ... }
//!     fn transform_response(ctx: &CallContext, resp: UpstreamResponse) -> Result<RelayResponse, AdapterError> { ... }
//! }
//! relay_plugin_kit::export_adapter!(MyVendor);
//! ```
//!
//! See `examples/plugin-template` and `docs/writing-a-plugin.md`.

pub mod error;
pub mod log;
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
    AdapterError, AuthScheme, CallContext, Endpoint, Header, PluginInfo, RelayResponse, StreamEnd, StreamEvent,
    StreamFormat, StreamOutput, UpstreamRequest, UpstreamResponse, Usage,
};

/// Everything an adapter usually needs, in one import.
pub mod prelude {
    pub use crate::error::{invalid_request, invalid_upstream, openai_error_body, unsupported};
    pub use crate::openai;
    pub use crate::{
        Adapter, AdapterError, AuthScheme, CallContext, ContextExt, Endpoint, Header, PluginInfo, RelayResponse,
        StreamAdapter, StreamEnd, StreamEvent, StreamFormat, StreamOutput, UpstreamRequest, UpstreamResponse, Usage,
        encode_segment,
    };
}

/// A vendor adapter. Calls are independent: the host runs them on reused instances (shared
/// with other requests and streams) or on fresh ones, so keep no state between calls
/// outside a [`StreamAdapter`].
pub trait Adapter: 'static {
    /// The per-stream state machine; use [`NoStream`] for adapters without streaming.
    type Stream: StreamAdapter;

    fn info() -> PluginInfo;

    /// The client's OpenAI-shaped JSON body → the vendor request (path relative to the
    /// channel's `base_url`).
    fn transform_request(ctx: &CallContext, body: &str) -> Result<UpstreamRequest, AdapterError>;

    /// A complete vendor response, any status → the client's answer. The default passes a
    /// success body through and keeps vendor errors in OpenAI's shape.
    fn transform_response(_ctx: &CallContext, resp: UpstreamResponse) -> Result<RelayResponse, AdapterError> {
        if (200..300).contains(&resp.status) {
            let usage = openai::usage_of(&resp.body)?;
            Ok(RelayResponse { status: resp.status, body: resp.body, usage })
        } else {
            Ok(RelayResponse {
                status: resp.status,
                body: error::openai_error_body(resp.status, &resp.body),
                usage: None,
            })
        }
    }
}

/// One stream's translation: events in, OpenAI chunks out.
pub trait StreamAdapter: Sized + 'static {
    fn new(ctx: &CallContext) -> Self;
    fn push(&mut self, event: StreamEvent) -> Result<StreamOutput, AdapterError>;
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
pub struct StreamCell<S>(pub std::cell::RefCell<S>);

impl<S: StreamAdapter> bindings::exports::relay::adapter::adapter::GuestStreamTransformer for StreamCell<S> {
    fn new(ctx: CallContext) -> Self {
        StreamCell(std::cell::RefCell::new(S::new(&ctx)))
    }
    fn push(&self, event: StreamEvent) -> Result<StreamOutput, AdapterError> {
        self.0.borrow_mut().push(event)
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
