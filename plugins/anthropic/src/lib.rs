//! The Anthropic adapter: OpenAI chat completions ↔ Anthropic's Messages API
//! (`POST /v1/messages` under the channel's `base_url`, `https://api.anthropic.com`).
//!
//! Anthropic Messages clients pass through natively (`native: [messages,
//! messages-count-tokens]`): the body goes to `/v1/messages` (or `/v1/messages/count_tokens`)
//! as the client sent it (unknown fields, `cache_control` and thinking blocks included) and
//! the answer and stream events come back unchanged, usage read for accounting
//! (`relay_plugin_kit::native::messages`).
//!
//! The credential goes in `x-api-key` (applied by the host). Channel settings:
//! `anthropic_version` (the `anthropic-version` header, default
//! [`request::DEFAULT_ANTHROPIC_VERSION`]) and `max_tokens` (used when the client sends
//! none, default [`request::DEFAULT_MAX_TOKENS`]). The mapping is documented in
//! `docs/adapters.md` (the `anthropic` section).

mod request;
mod response;
mod stream;

use relay_plugin_kit::native;
use relay_plugin_kit::prelude::*;

pub use request::{COUNT_TOKENS_PATH, DEFAULT_ANTHROPIC_VERSION, DEFAULT_MAX_TOKENS, PATH};

pub struct Anthropic;

impl Adapter for Anthropic {
    type Stream = native::Split<stream::Stream, native::messages::Stream>;

    fn info() -> PluginInfo {
        PluginInfo {
            auth: AuthScheme::Header("x-api-key".into()),
            native: vec![Endpoint::Messages, Endpoint::MessagesCountTokens],
            ..PluginInfo::new("anthropic", env!("CARGO_PKG_VERSION"), "Anthropic Messages API (Claude)")
        }
    }

    fn transform_request(ctx: &CallContext, body: &str) -> Result<UpstreamRequest, AdapterError> {
        match ctx.endpoint {
            Endpoint::ChatCompletions => request::transform(ctx, body),
            Endpoint::Messages => Ok(native::request(PATH, request::headers(ctx), body)),
            Endpoint::MessagesCountTokens => Ok(native::request(COUNT_TOKENS_PATH, request::headers(ctx), body)),
            other => Err(relay_plugin_kit::not_mapped(other)),
        }
    }

    fn transform_response(ctx: &CallContext, resp: UpstreamResponse) -> Result<RelayResponse, AdapterError> {
        match ctx.endpoint {
            // A count (`{"input_tokens": N}`) carries no usage: it is not billed.
            Endpoint::Messages | Endpoint::MessagesCountTokens => native::messages::response(resp),
            _ => response::transform(ctx, resp),
        }
    }
}

relay_plugin_kit::export_adapter!(Anthropic);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_names_the_header_auth_chat_and_native_messages() {
        let i = Anthropic::info();
        assert_eq!(i.name, "anthropic");
        assert!(matches!(i.auth, AuthScheme::Header(ref h) if h == "x-api-key"));
        assert!(matches!(i.endpoints.as_slice(), [Endpoint::ChatCompletions]));
        assert!(matches!(i.stream_format, StreamFormat::Sse));
        assert!(matches!(i.native.as_slice(), [Endpoint::Messages, Endpoint::MessagesCountTokens]));
    }

    #[test]
    fn a_count_tokens_request_passes_through_to_the_counter() {
        let ctx = CallContext {
            request_id: "r".into(),
            endpoint: Endpoint::MessagesCountTokens,
            model: "claude".into(),
            stream: false,
            include_usage: false,
            settings: vec![],
        };
        let body = r#"{"model":"claude","messages":[{"role":"user","content":"hi"}],"thinking":{"type":"enabled","budget_tokens":1024}}"#;
        let r = Anthropic::transform_request(&ctx, body).unwrap();
        assert_eq!((r.path.as_str(), r.body.as_str()), (COUNT_TOKENS_PATH, body));
        assert!(r.headers.iter().any(|h| h.name == "anthropic-version" && h.value == DEFAULT_ANTHROPIC_VERSION));
        let answer = UpstreamResponse { status: 200, headers: vec![], body: r#"{"input_tokens":14}"#.into() };
        let out = Anthropic::transform_response(&ctx, answer).unwrap();
        assert_eq!((out.status, out.body.as_str(), out.usage.is_none()), (200, r#"{"input_tokens":14}"#, true));
    }

    #[test]
    fn a_messages_request_passes_through_unchanged() {
        let ctx = CallContext {
            request_id: "r".into(),
            endpoint: Endpoint::Messages,
            model: "claude".into(),
            stream: true,
            include_usage: false,
            settings: vec![("anthropic_version".into(), "2099-01-01".into())],
        };
        let body = r#"{"model":"claude","max_tokens":5,"messages":[{"role":"user","content":[{"type":"text","text":"hi","cache_control":{"type":"ephemeral"}}]}],"new_param":{"x":1}}"#;
        let r = Anthropic::transform_request(&ctx, body).unwrap();
        assert_eq!((r.path.as_str(), r.body.as_str()), (PATH, body));
        assert!(r.headers.iter().any(|h| h.name == "anthropic-version" && h.value == "2099-01-01"));
        assert!(r.headers.iter().any(|h| h.name == "accept" && h.value == "text/event-stream"));
    }
}
