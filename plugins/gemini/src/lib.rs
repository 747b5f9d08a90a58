//! The Google Gemini adapter: OpenAI chat completions over the Gemini API's
//! `models/{model}:generateContent` and `:streamGenerateContent?alt=sse`, and embeddings
//! over `models/{model}:batchEmbedContents`.
//!
//! The channel's `base_url` is the API origin (`https://generativelanguage.googleapis.com`);
//! the key goes in `x-goog-api-key`. Channel settings: `api_version` (default `v1beta`).
//! The mapping, both ways, is documented in docs/adapters.md (the `gemini` section).

mod embed;
mod request;
mod response;
mod stream;

use relay_plugin_kit::openai::ChatRequest;
use relay_plugin_kit::prelude::*;
use serde_json::Value;

pub use request::{DEFAULT_API_VERSION, MAX_FUNCTION_NAME, SKIP_SIGNATURE, clean_schema};
pub use stream::GeminiStream;

pub struct Gemini;

impl Adapter for Gemini {
    type Stream = GeminiStream;

    fn info() -> PluginInfo {
        // No native client API: the host serves Responses and Messages through chat.
        PluginInfo {
            endpoints: vec![Endpoint::ChatCompletions, Endpoint::Embeddings],
            auth: AuthScheme::Header("x-goog-api-key".into()),
            ..PluginInfo::new(
                "gemini",
                env!("CARGO_PKG_VERSION"),
                "Google Gemini API (generateContent, streamGenerateContent, batchEmbedContents)",
            )
        }
    }

    fn transform_request(ctx: &CallContext, body: &str) -> Result<UpstreamRequest, AdapterError> {
        if matches!(ctx.endpoint, Endpoint::Responses | Endpoint::Messages) {
            return Err(relay_plugin_kit::not_mapped(ctx.endpoint));
        }
        if ctx.endpoint == Endpoint::Embeddings {
            return Ok(UpstreamRequest {
                method: "POST".into(),
                path: embed::path(ctx)?,
                headers: vec![],
                body: embed::body(ctx, body)?.to_string(),
            });
        }
        let req = ChatRequest::parse(body)?;
        let raw: Value = serde_json::from_str(body).map_err(|e| invalid_request(format!("invalid JSON: {e}")))?;
        let gemini = request::body(ctx, &req, &raw)?;
        Ok(UpstreamRequest {
            method: "POST".into(),
            path: request::path(ctx)?,
            headers: vec![],
            body: gemini.to_string(),
        })
    }

    fn transform_response(ctx: &CallContext, resp: UpstreamResponse) -> Result<RelayResponse, AdapterError> {
        if !(200..300).contains(&resp.status) {
            Ok(response::error(resp.status, &resp.body))
        } else if ctx.endpoint == Endpoint::Embeddings {
            embed::response(ctx, &resp.body)
        } else {
            response::completion(ctx, &resp.body)
        }
    }
}

relay_plugin_kit::export_adapter!(Gemini);

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(stream: bool) -> CallContext {
        CallContext {
            request_id: "r1".into(),
            endpoint: Endpoint::ChatCompletions,
            model: "gemini-2.0-flash".into(),
            stream,
            include_usage: false,
            settings: vec![],
        }
    }

    #[test]
    fn info_names_the_key_header() {
        let i = Gemini::info();
        assert_eq!(i.name, "gemini");
        assert!(matches!(i.auth, AuthScheme::Header(ref h) if h == "x-goog-api-key"));
        assert!(matches!(i.stream_format, StreamFormat::Sse));
        assert!(i.native.is_empty());
        let other = CallContext { endpoint: Endpoint::Responses, ..ctx(false) };
        assert!(matches!(Gemini::transform_request(&other, "{}"), Err(AdapterError::Unsupported(_))));
    }

    #[test]
    fn request_and_response_round() {
        let body = r#"{"model":"gemini-2.0-flash","stream":true,"messages":[{"role":"user","content":"Hi"}]}"#;
        let r = Gemini::transform_request(&ctx(true), body).unwrap();
        assert_eq!(
            (r.method.as_str(), r.path.as_str()),
            ("POST", "/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse")
        );
        let v: Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(v, serde_json::json!({"contents": [{"role": "user", "parts": [{"text": "Hi"}]}]}));
        assert!(matches!(Gemini::transform_request(&ctx(false), "{"), Err(AdapterError::InvalidRequest(_))));

        let ok = r#"{"candidates":[{"content":{"role":"model","parts":[{"text":"Hello"}]},"finishReason":"STOP"}]}"#;
        let r =
            Gemini::transform_response(&ctx(false), UpstreamResponse { status: 200, headers: vec![], body: ok.into() })
                .unwrap();
        assert_eq!(r.status, 200);
        assert!(r.body.contains("\"Hello\""));
        let err = r#"{"error":{"code":429,"message":"Resource exhausted","status":"RESOURCE_EXHAUSTED"}}"#;
        let r = Gemini::transform_response(
            &ctx(false),
            UpstreamResponse { status: 429, headers: vec![], body: err.into() },
        )
        .unwrap();
        assert_eq!(r.status, 429);
        assert!(r.body.contains("Resource exhausted") && r.body.contains("RESOURCE_EXHAUSTED"));
        assert_eq!(r.error_class, Some(ErrorClass::RateLimited));
    }
}
