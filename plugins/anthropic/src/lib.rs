//! The Anthropic adapter: OpenAI chat completions ↔ Anthropic's Messages API
//! (`POST /v1/messages` under the channel's `base_url`, `https://api.anthropic.com`).
//!
//! The credential goes in `x-api-key` (applied by the host). Channel settings:
//! `anthropic_version` (the `anthropic-version` header, default
//! [`request::DEFAULT_ANTHROPIC_VERSION`]) and `max_tokens` (used when the client sends
//! none, default [`request::DEFAULT_MAX_TOKENS`]). The mapping is documented in
//! `docs/adapters.md` (the `anthropic` section).

mod request;
mod response;
mod stream;

use relay_plugin_kit::prelude::*;

pub use request::{DEFAULT_ANTHROPIC_VERSION, DEFAULT_MAX_TOKENS, PATH};

pub struct Anthropic;

impl Adapter for Anthropic {
    type Stream = stream::Stream;

    fn info() -> PluginInfo {
        // Messages clients still go through chat (the host converts them); passing them
        // through natively (`native: [messages]`) is for a later version of this adapter.
        PluginInfo {
            auth: AuthScheme::Header("x-api-key".into()),
            ..PluginInfo::new("anthropic", env!("CARGO_PKG_VERSION"), "Anthropic Messages API (Claude)")
        }
    }

    fn transform_request(ctx: &CallContext, body: &str) -> Result<UpstreamRequest, AdapterError> {
        request::transform(ctx, body)
    }

    fn transform_response(ctx: &CallContext, resp: UpstreamResponse) -> Result<RelayResponse, AdapterError> {
        response::transform(ctx, resp)
    }
}

relay_plugin_kit::export_adapter!(Anthropic);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_names_the_header_auth_and_chat_only() {
        let i = Anthropic::info();
        assert_eq!(i.name, "anthropic");
        assert!(matches!(i.auth, AuthScheme::Header(ref h) if h == "x-api-key"));
        assert!(matches!(i.endpoints.as_slice(), [Endpoint::ChatCompletions]));
        assert!(matches!(i.stream_format, StreamFormat::Sse));
        assert!(i.native.is_empty());
    }
}
