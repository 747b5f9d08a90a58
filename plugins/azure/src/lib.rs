//! The Azure OpenAI adapter: OpenAI's API served from a resource's deployments.
//!
//! Azure speaks OpenAI's request and response shapes, so bodies pass through unchanged; what
//! differs is the address (`/openai/deployments/{deployment}/...?api-version=...`, where the
//! deployment, not the body's `model`, decides the model), the credential (`api-key`
//! header), the error bodies (`{"error": {"code", "message"}}` without `type`, rebuilt in
//! OpenAI's shape) and the stream's content-filter chunk with no choices, which is dropped.
//!
//! Channel settings: `api_version` (default [`DEFAULT_API_VERSION`]), `deployment.<model>`
//! (the deployment serving one model), `deployment` (the deployment for every other model;
//! without either, the model name is the deployment name).

use relay_plugin_kit::error::{error_type, openai_error_class};
use relay_plugin_kit::prelude::*;
use serde_json::{Map, Value};

/// The API version sent when the channel sets none: the current GA version.
pub const DEFAULT_API_VERSION: &str = "2024-10-21";

pub struct Azure;

impl Adapter for Azure {
    // Azure streams OpenAI chunks; the kit's passthrough also drops Azure's content-filter
    // preamble (a chunk with neither choices nor usage).
    type Stream = openai::PassthroughStream;

    fn info() -> PluginInfo {
        // No native client API: the host serves Responses and Messages through chat.
        PluginInfo {
            endpoints: vec![Endpoint::ChatCompletions, Endpoint::Embeddings],
            auth: AuthScheme::Header("api-key".into()),
            ..PluginInfo::new("azure", env!("CARGO_PKG_VERSION"), "Azure OpenAI Service (deployments API)")
        }
    }

    fn transform_request(ctx: &CallContext, body: &str) -> Result<UpstreamRequest, AdapterError> {
        let operation = match ctx.endpoint {
            Endpoint::ChatCompletions => "chat/completions",
            Endpoint::Embeddings => "embeddings",
            other => return Err(relay_plugin_kit::not_mapped(other)),
        };
        let path = format!(
            "/openai/deployments/{}/{operation}?api-version={}",
            encode_segment(deployment(ctx)),
            encode_segment(api_version(ctx))
        );
        let mut headers = Vec::new();
        if ctx.stream {
            headers.push(Header { name: "accept".into(), value: "text/event-stream".into() });
        }
        // The body is already in Azure's language; its `model` is ignored by Azure, and
        // parameters an API version refuses come back as Azure's own 400.
        Ok(UpstreamRequest { method: "POST".into(), path, headers, body: body.into() })
    }

    fn transform_response(_ctx: &CallContext, resp: UpstreamResponse) -> Result<RelayResponse, AdapterError> {
        if (200..300).contains(&resp.status) {
            let usage = openai::usage_of(&resp.body)?;
            return Ok(RelayResponse { status: resp.status, body: resp.body, usage, error_class: None });
        }
        // Azure's codes (`content_filter`, `context_length_exceeded`) are OpenAI's; its
        // numeric codes ("429") say no more than the status.
        Ok(RelayResponse {
            status: resp.status,
            body: error_body(resp.status, &resp.body),
            usage: None,
            error_class: openai_error_class(resp.status, &resp.body),
        })
    }
}

/// The deployment serving the call's model: `deployment.<model>`, else `deployment`, else
/// the model name. Empty settings count as unset.
fn deployment(ctx: &CallContext) -> &str {
    let set = |key: &str| ctx.setting(key).filter(|v| !v.is_empty());
    set(&format!("deployment.{}", ctx.model)).or_else(|| set("deployment")).unwrap_or(&ctx.model)
}

fn api_version(ctx: &CallContext) -> &str {
    ctx.setting("api_version").filter(|v| !v.is_empty()).unwrap_or(DEFAULT_API_VERSION)
}

/// An Azure error body in OpenAI's shape. Azure's own errors carry `code` and `message`
/// but no `type` (content-filter errors carry `"type": null`), so the object is rebuilt
/// with the type the status implies; `param`, `code` and `innererror` (the content-filter
/// verdicts) are kept. Bodies without an error object go to the kit's generic mapping.
fn error_body(status: u16, body: &str) -> String {
    let Ok(Value::Object(mut top)) = serde_json::from_str::<Value>(body) else {
        return openai_error_body(status, body);
    };
    let Some(Value::Object(e)) = top.remove("error") else {
        return openai_error_body(status, body);
    };
    let Some(message) = e.get("message").and_then(Value::as_str) else {
        return openai_error_body(status, body);
    };
    let kind = match e.get("type") {
        Some(Value::String(t)) if !t.is_empty() => t.as_str(),
        _ => error_type(status),
    };
    let code = match e.get("code") {
        Some(Value::String(c)) => Value::String(c.clone()),
        Some(Value::Number(n)) => Value::String(n.to_string()),
        _ => Value::Null,
    };
    let mut out = Map::new();
    out.insert("message".into(), Value::String(message.into()));
    out.insert("type".into(), Value::String(kind.into()));
    out.insert("param".into(), e.get("param").cloned().unwrap_or(Value::Null));
    out.insert("code".into(), code);
    if let Some(inner) = e.get("innererror") {
        out.insert("innererror".into(), inner.clone());
    }
    serde_json::json!({ "error": out }).to_string()
}

relay_plugin_kit::export_adapter!(Azure);

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ctx(endpoint: Endpoint, model: &str, stream: bool, settings: &[(&str, &str)]) -> CallContext {
        CallContext {
            request_id: "r1".into(),
            endpoint,
            model: model.into(),
            stream,
            include_usage: false,
            settings: settings.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        }
    }

    fn chat_ctx(settings: &[(&str, &str)]) -> CallContext {
        ctx(Endpoint::ChatCompletions, "gpt-4o", false, settings)
    }

    fn response(status: u16, body: &str) -> Result<RelayResponse, AdapterError> {
        Azure::transform_response(&chat_ctx(&[]), UpstreamResponse { status, headers: vec![], body: body.into() })
    }

    fn event(data: &str) -> StreamEvent {
        StreamEvent { event: None, data: data.into() }
    }

    #[test]
    fn info_names_the_api_key_header() {
        let i = Azure::info();
        assert_eq!(i.name, "azure");
        assert!(matches!(i.auth, AuthScheme::Header(ref h) if h == "api-key"));
        assert_eq!(i.endpoints.len(), 2);
    }

    #[test]
    fn paths_pick_the_deployment_and_api_version() {
        let path = |c: CallContext| Azure::transform_request(&c, "{}").unwrap().path;
        let per_model = [("deployment.gpt-4o", "prod-gpt4o"), ("deployment", "shared"), ("api_version", "2024-06-01")];
        assert_eq!(
            path(chat_ctx(&per_model)),
            "/openai/deployments/prod-gpt4o/chat/completions?api-version=2024-06-01"
        );
        assert_eq!(
            path(chat_ctx(&[("deployment.other", "x"), ("deployment", "shared")])),
            "/openai/deployments/shared/chat/completions?api-version=2024-10-21"
        );
        assert_eq!(path(chat_ctx(&[])), "/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21");
        // An empty setting is no setting.
        assert_eq!(
            path(chat_ctx(&[("deployment.gpt-4o", ""), ("api_version", "")])),
            "/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21"
        );
        let embed = ctx(Endpoint::Embeddings, "text-embedding-3-small", false, &[("deployment", "emb")]);
        assert_eq!(path(embed), "/openai/deployments/emb/embeddings?api-version=2024-10-21");
    }

    #[test]
    fn deployment_and_version_are_percent_encoded() {
        let c = chat_ctx(&[("deployment.gpt-4o", "my dep/../x?y#z"), ("api_version", "2024-10-21&a=b")]);
        let r = Azure::transform_request(&c, "{}").unwrap();
        assert_eq!(
            r.path,
            "/openai/deployments/my%20dep%2F..%2Fx%3Fy%23z/chat/completions?api-version=2024-10-21%26a%3Db"
        );
        assert_eq!(encode_segment("Dep_1.a-b~é"), "Dep_1.a-b%7E%C3%A9");
    }

    #[test]
    fn request_body_passes_through_unchanged() {
        // Every OpenAI shape Azure speaks as is: roles, tool calls and results, images,
        // stop, token limits, sampling, tools and tool_choice, and the model name.
        let body = json!({
            "model": "gpt-4o",
            "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "developer", "content": "use metric units"},
                {"role": "user", "content": [
                    {"type": "text", "text": "what is this?"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA", "detail": "low"}}]},
                {"role": "assistant", "content": null, "tool_calls": [
                    {"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Oslo\"}"}}]},
                {"role": "tool", "tool_call_id": "call_1", "content": "12C"}],
            "stop": ["END"], "max_tokens": 50, "max_completion_tokens": 60, "temperature": 0.3, "top_p": 0.9,
            "tools": [{"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}],
            "tool_choice": {"type": "function", "function": {"name": "weather"}},
            "stream": true, "stream_options": {"include_usage": true}
        })
        .to_string();
        let r = Azure::transform_request(&ctx(Endpoint::ChatCompletions, "gpt-4o", true, &[]), &body).unwrap();
        assert_eq!(r.method, "POST");
        assert_eq!(r.body, body);
        assert_eq!(r.headers.len(), 1);
        assert_eq!((r.headers[0].name.as_str(), r.headers[0].value.as_str()), ("accept", "text/event-stream"));
        let r = Azure::transform_request(&chat_ctx(&[]), &body).unwrap();
        assert!(r.headers.is_empty(), "no credential or other header is set by the adapter");
    }

    #[test]
    fn response_passes_through_with_usage() {
        let ok = json!({
            "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "gpt-4o-2024-08-06",
            "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": {}}],
            "choices": [{"index": 0, "finish_reason": "tool_calls", "content_filter_results": {},
                "message": {"role": "assistant", "content": null, "tool_calls": [
                    {"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": "{}"}}]}}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8}
        })
        .to_string();
        let r = response(200, &ok).unwrap();
        assert_eq!((r.status, r.body.as_str()), (200, ok.as_str()));
        let u = r.usage.unwrap();
        assert_eq!((u.input_tokens, u.output_tokens, u.total_tokens), (3, 5, 8));

        // A filtered completion keeps its finish reason.
        let filtered = r#"{"id":"c","choices":[{"index":0,"finish_reason":"content_filter","message":{"role":"assistant","content":"Once"}}]}"#;
        let r = response(200, filtered).unwrap();
        assert_eq!((r.body.as_str(), r.usage.is_none()), (filtered, true));

        let embeddings = r#"{"object":"list","data":[],"usage":{"prompt_tokens":4,"total_tokens":4}}"#;
        assert_eq!(response(200, embeddings).unwrap().usage.unwrap().total_tokens, 4);
        assert!(matches!(response(200, "<html>"), Err(AdapterError::InvalidUpstream(_))));
    }

    fn error_of(status: u16, body: &str) -> (u16, Value) {
        let r = response(status, body).unwrap();
        (r.status, serde_json::from_str(&r.body).unwrap())
    }

    #[test]
    fn azure_errors_become_openai_shaped() {
        let msg = "Requests to the ChatCompletions_Create Operation under Azure OpenAI API version 2024-10-21 have exceeded token rate limit.";
        let (status, v) = error_of(429, &json!({"error": {"code": "429", "message": msg}}).to_string());
        assert_eq!(status, 429);
        assert_eq!(v, json!({"error": {"message": msg, "type": "rate_limit_error", "param": null, "code": "429"}}));

        let msg = "The API deployment for this resource does not exist.";
        let (status, v) = error_of(404, &json!({"error": {"code": "DeploymentNotFound", "message": msg}}).to_string());
        assert_eq!(status, 404);
        assert_eq!(
            (v["error"]["message"].as_str(), v["error"]["code"].as_str()),
            (Some(msg), Some("DeploymentNotFound"))
        );
        assert_eq!(v["error"]["type"], "invalid_request_error");

        let (status, v) =
            error_of(401, r#"{"error":{"code":"401","message":"Access denied due to invalid subscription key."}}"#);
        assert_eq!((status, v["error"]["type"].as_str()), (401, Some("authentication_error")));
        assert_eq!(v["error"]["message"], "Access denied due to invalid subscription key.");

        // A numeric code becomes a string, as OpenAI's codes are.
        let (_, v) = error_of(500, r#"{"error":{"code":500,"message":"boom"}}"#);
        assert_eq!((v["error"]["code"].as_str(), v["error"]["type"].as_str()), (Some("500"), Some("api_error")));
    }

    #[test]
    fn content_filter_errors_keep_status_message_and_verdicts() {
        let body = json!({"error": {
            "message": "The response was filtered due to the prompt triggering Azure OpenAI's content management policy.",
            "type": null, "param": "prompt", "code": "content_filter", "status": 400,
            "innererror": {"code": "ResponsibleAIPolicyViolation",
                "content_filter_result": {"violence": {"filtered": true, "severity": "high"}}}}});
        let (status, v) = error_of(400, &body.to_string());
        assert_eq!(status, 400);
        let e = &v["error"];
        assert_eq!(e["message"], body["error"]["message"]);
        assert_eq!((e["type"].as_str(), e["param"].as_str()), (Some("invalid_request_error"), Some("prompt")));
        assert_eq!(e["code"], "content_filter");
        assert_eq!(e["innererror"]["content_filter_result"]["violence"]["filtered"], true);
    }

    fn class_of(status: u16, body: &str) -> Option<ErrorClass> {
        response(status, body).unwrap().error_class
    }

    #[test]
    fn azure_errors_are_classified() {
        let filtered = json!({"error": {"message": "filtered", "type": null, "param": "prompt", "code": "content_filter",
            "status": 400, "innererror": {"code": "ResponsibleAIPolicyViolation"}}});
        assert_eq!(class_of(400, &filtered.to_string()), Some(ErrorClass::ContentFiltered));
        let long = json!({"error": {"message": "This model's maximum context length is 128000 tokens.",
            "type": "invalid_request_error", "param": "messages", "code": "context_length_exceeded"}});
        assert_eq!(class_of(400, &long.to_string()), Some(ErrorClass::ContextLengthExceeded));
        for (status, code, class) in [
            (429, "429", ErrorClass::RateLimited),
            (404, "DeploymentNotFound", ErrorClass::NotFound),
            (401, "401", ErrorClass::Authentication),
            (403, "AuthorizationFailed", ErrorClass::Permission),
            (400, "BadRequest", ErrorClass::InvalidRequest),
            (500, "InternalServerError", ErrorClass::ServerError),
            (503, "ServiceUnavailable", ErrorClass::Overloaded),
        ] {
            let body = json!({"error": {"code": code, "message": "m"}}).to_string();
            assert_eq!(class_of(status, &body), Some(class), "{status} {code}");
        }
        assert_eq!(class_of(502, "<html>Bad Gateway</html>"), Some(ErrorClass::ServerError));
        assert_eq!(class_of(200, r#"{"choices":[]}"#), None);
        // The answer the client sees is the same as without classes.
        let (status, v) = error_of(400, &filtered.to_string());
        assert_eq!((status, v["error"]["code"].as_str()), (400, Some("content_filter")));
    }

    #[test]
    fn info_has_no_native_api_and_other_apis_are_refused() {
        assert!(Azure::info().native.is_empty());
        for e in [Endpoint::Responses, Endpoint::Messages] {
            let c = ctx(e, "gpt-4o", false, &[]);
            assert!(matches!(Azure::transform_request(&c, "{}"), Err(AdapterError::Unsupported(_))));
        }
    }

    #[test]
    fn openai_shaped_and_other_errors() {
        let openai = json!({"error": {"message": "Unrecognized request argument supplied: foo", "type": "invalid_request_error", "param": null, "code": null}});
        let (status, v) = error_of(400, &openai.to_string());
        assert_eq!((status, v), (400, openai));
        // API Management's shape and non-JSON bodies go through the kit's mapping.
        let (_, v) = error_of(429, r#"{"statusCode":429,"message":"Rate limit is exceeded. Try again in 1 seconds."}"#);
        assert_eq!(v["error"]["message"], "Rate limit is exceeded. Try again in 1 seconds.");
        let (status, v) = error_of(502, "<html>Bad Gateway</html>");
        assert_eq!(status, 502);
        assert_eq!(v["error"]["message"], "the vendor answered 502: <html>Bad Gateway</html>");
        let (_, v) = error_of(400, r#"{"error":{"code":"BadRequest"}}"#);
        assert!(v["error"]["message"].as_str().unwrap().starts_with("the vendor answered 400"));
    }

    #[test]
    fn stream_drops_filter_chunks_and_reports_usage() {
        let mut t = openai::PassthroughStream::new(&ctx(Endpoint::ChatCompletions, "gpt-4o", true, &[]));
        let prompt_filter = r#"{"choices":[],"created":0,"id":"","model":"","object":"","prompt_filter_results":[{"prompt_index":0,"content_filter_results":{}}]}"#;
        let role = r#"{"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"content_filter_results":{},"delta":{"role":"assistant","content":""},"finish_reason":null}],"usage":null}"#;
        let call = r#"{"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"call_1","type":"function","function":{"name":"weather","arguments":""}}]},"finish_reason":null}],"usage":null}"#;
        let args = r#"{"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"city\":\"Oslo\"}"}}]},"finish_reason":null}],"usage":null}"#;
        let text = r#"{"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"content_filter_results":{"hate":{"filtered":false,"severity":"safe"}},"delta":{"content":"hi"},"finish_reason":null}],"usage":null}"#;
        let stop = r#"{"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}],"usage":null}"#;
        let usage = r#"{"id":"c","object":"chat.completion.chunk","choices":[],"usage":{"prompt_tokens":4,"completion_tokens":6,"total_tokens":10}}"#;

        let o = t.push(event(prompt_filter)).unwrap();
        assert!(o.events.is_empty() && !o.done && o.usage.is_none());
        for chunk in [role, call, args, text, stop] {
            let o = t.push(event(chunk)).unwrap();
            assert_eq!(o.data(), vec![chunk], "chunks pass unchanged");
            assert!(o.usage.is_none());
        }
        let o = t.push(event(usage)).unwrap();
        assert_eq!(o.data(), vec![usage], "the usage chunk has no choices but is kept");
        assert_eq!(o.usage.unwrap().total_tokens, 10);
        assert!(t.push(event("[DONE]")).unwrap().done);
        let end = t.finish().unwrap();
        assert!(end.events.is_empty());
        let u = end.usage.unwrap();
        assert_eq!((u.input_tokens, u.output_tokens, u.total_tokens), (4, 6, 10));
    }

    #[test]
    fn stream_without_done_fails_in_finish() {
        let mut t = openai::PassthroughStream::new(&ctx(Endpoint::ChatCompletions, "gpt-4o", true, &[]));
        let text = r#"{"id":"c","choices":[{"index":0,"delta":{"content":"hi"},"finish_reason":null}]}"#;
        assert_eq!(t.push(event(text)).unwrap().events.len(), 1);
        assert!(matches!(t.finish(), Err(AdapterError::InvalidUpstream(m)) if m.contains("[DONE]")));
    }

    #[test]
    fn stream_with_its_finish_reason_and_usage_is_complete_without_done() {
        let mut t = openai::PassthroughStream::new(&ctx(Endpoint::ChatCompletions, "gpt-4o", true, &[]));
        let text = r#"{"id":"c","choices":[{"index":0,"content_filter_results":{},"delta":{"content":"hi"},"finish_reason":null}]}"#;
        let stop = r#"{"id":"c","choices":[{"index":0,"delta":{},"finish_reason":"stop"}],"usage":null}"#;
        let usage = r#"{"id":"c","choices":[],"usage":{"prompt_tokens":4,"completion_tokens":6,"total_tokens":10}}"#;
        for chunk in [text, stop, usage] {
            assert!(!t.push(event(chunk)).unwrap().done);
        }
        assert_eq!(t.finish().unwrap().usage.map(|u| u.total_tokens), Some(10));
    }

    #[test]
    fn stream_errors() {
        let mut t = openai::PassthroughStream::new(&ctx(Endpoint::ChatCompletions, "gpt-4o", true, &[]));
        // An unreadable chunk is skipped (the host decides whether the stream goes on).
        let o = t.push(event("{not json")).unwrap();
        assert!(o.events.is_empty() && o.skipped.len() == 1);
        let err = t.push(event(r#"{"error":{"code":"server_error","message":"overloaded"}}"#));
        assert!(matches!(err, Err(AdapterError::InvalidUpstream(m)) if m.contains("overloaded")));
    }
}
