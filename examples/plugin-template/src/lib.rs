//! A complete, minimal adapter: Ollama's native chat API (`POST /api/chat`, NDJSON
//! streaming) behind the relay's OpenAI-compatible endpoint. Copy this crate, rename it,
//! and change the three mappings below to your vendor's shapes.
//!
//! Channel: `adapter = "ollama-native"`, `base_url = "http://127.0.0.1:11434"`, no key.
//! Settings: `keep_alive` (passed through, e.g. "5m").

use relay_plugin_kit::openai::{ChatRequest, ChunkBuilder};
use relay_plugin_kit::prelude::*;
use serde::Deserialize;
use serde_json::{Value, json};

pub struct OllamaNative;

impl Adapter for OllamaNative {
    type Stream = ChatStream;

    /// Who the adapter is and how the host should treat it. `PluginInfo::new` serves chat
    /// completions and speaks no client API natively (`native` empty): the host converts
    /// Responses and Messages clients through chat completions.
    fn info() -> PluginInfo {
        PluginInfo {
            // Local Ollama takes no key; a hosted vendor would say Bearer or Header("x-api-key").
            auth: AuthScheme::None,
            // Ollama streams one JSON object per line.
            stream_format: StreamFormat::Ndjson,
            ..PluginInfo::new(
                "ollama-native",
                env!("CARGO_PKG_VERSION"),
                "Ollama's native /api/chat (a plugin template)",
            )
        }
    }

    /// 1. The client's OpenAI request → the vendor's request.
    fn transform_request(ctx: &CallContext, body: &str) -> Result<UpstreamRequest, AdapterError> {
        let req = ChatRequest::parse(body)?;
        // Refuse, by name, what this vendor cannot honour instead of dropping it silently.
        req.reject_extra(&["stream_options"], "Ollama's native API")?;
        if req.tools.is_some() {
            return Err(unsupported("'tools' is not supported by this template adapter"));
        }
        let messages: Vec<Value> = req
            .messages
            .iter()
            .map(|m| {
                let role = if m.role == "developer" { "system" } else { m.role.as_str() };
                json!({"role": role, "content": m.content.as_ref().map(|c| c.text()).unwrap_or_default()})
            })
            .collect();
        let mut options = serde_json::Map::new();
        if let Some(t) = req.temperature {
            options.insert("temperature".into(), json!(t));
        }
        if let Some(p) = req.top_p {
            options.insert("top_p".into(), json!(p));
        }
        if let Some(n) = req.max_output_tokens() {
            options.insert("num_predict".into(), json!(n));
        }
        if let Some(stop) = req.stop {
            options.insert("stop".into(), json!(stop.into_vec()));
        }
        let mut out = json!({"model": req.model, "messages": messages, "stream": ctx.stream});
        if !options.is_empty() {
            out["options"] = Value::Object(options);
        }
        if let Some(k) = ctx.setting("keep_alive") {
            out["keep_alive"] = json!(k);
        }
        Ok(UpstreamRequest { method: "POST".into(), path: "/api/chat".into(), headers: vec![], body: out.to_string() })
    }

    /// 2. The vendor's complete answer (any status) → the client's OpenAI answer.
    fn transform_response(ctx: &CallContext, resp: UpstreamResponse) -> Result<RelayResponse, AdapterError> {
        if !(200..300).contains(&resp.status) {
            // Ollama errors are {"error": "..."}: the kit keeps the message, OpenAI-shaped,
            // and the status says what the error means (the host fails over on it).
            let body = relay_plugin_kit::error::openai_error_body(resp.status, &resp.body);
            let error_class = relay_plugin_kit::error::class_of_status(resp.status);
            return Ok(RelayResponse { status: resp.status, body, usage: None, error_class });
        }
        let r: Reply =
            serde_json::from_str(&resp.body).map_err(|e| invalid_upstream(format!("not an Ollama reply: {e}")))?;
        let usage = openai::usage(r.prompt_eval_count, r.eval_count);
        let body = openai::completion(
            &format!("chatcmpl-{}", ctx.request_id),
            openai::now(),
            &r.model,
            Some(&r.message.content),
            &[],
            finish_reason(r.done_reason.as_deref()),
            Some(&usage),
        );
        Ok(RelayResponse { status: 200, body, usage: Some(usage), error_class: None })
    }
}

#[derive(Deserialize)]
struct Reply {
    model: String,
    #[serde(default)]
    message: ReplyMessage,
    #[serde(default)]
    done: bool,
    done_reason: Option<String>,
    #[serde(default)]
    prompt_eval_count: u64,
    #[serde(default)]
    eval_count: u64,
}

#[derive(Deserialize, Default)]
struct ReplyMessage {
    #[serde(default)]
    content: String,
}

fn finish_reason(done_reason: Option<&str>) -> &'static str {
    match done_reason {
        Some("length") => "length",
        _ => "stop",
    }
}

/// 3. The vendor's stream, one event (here: one NDJSON line) at a time → OpenAI chunks.
///
/// The host hands over every line of one read at once; the kit runs them through `push` in
/// order and stops at the one that says `done`. A line the adapter cannot read is skipped
/// (`StreamOutput::skip`: the host counts it and goes on, or ends the stream, by the
/// channel's `malformed_events`); the vendor's own errors are returned as errors.
pub struct ChatStream {
    chunks: ChunkBuilder,
    include_usage: bool,
    started: bool,
    usage: Option<Usage>,
    /// Whether the stream got to its end: the kit's rule, the same in every adapter (the
    /// terminal event, or a finish reason on every choice; here the `done` line is both).
    ending: Ending,
}

impl StreamAdapter for ChatStream {
    fn new(ctx: &CallContext) -> Self {
        ChatStream {
            chunks: ChunkBuilder {
                id: format!("chatcmpl-{}", ctx.request_id),
                created: openai::now(),
                model: ctx.model.clone(),
                include_usage: ctx.include_usage,
            },
            include_usage: ctx.include_usage,
            started: false,
            usage: None,
            ending: Ending::default(),
        }
    }

    fn push(&mut self, event: StreamEvent) -> Result<StreamOutput, AdapterError> {
        let line: Reply = match serde_json::from_str(&event.data) {
            Ok(line) => line,
            Err(e) => return Ok(StreamOutput::skip(format!("not an Ollama stream line: {e}"))),
        };
        let mut chunks = Vec::new();
        if !self.started {
            self.started = true;
            chunks.push(self.chunks.role());
        }
        if !line.message.content.is_empty() {
            chunks.push(self.chunks.content(&line.message.content));
        }
        if line.done {
            self.ending.finish_reason();
            chunks.push(self.chunks.finish(finish_reason(line.done_reason.as_deref())));
            self.usage = Some(openai::usage(line.prompt_eval_count, line.eval_count));
        }
        Ok(StreamOutput { done: line.done, usage: self.usage, ..StreamOutput::chunks(chunks) })
    }

    fn finish(&mut self) -> Result<StreamEnd, AdapterError> {
        // A stream that ends before its `"done": true` line was cut: say so.
        let (true, Some(usage)) = (self.ending.is_complete(), self.usage) else {
            return Err(invalid_upstream("Ollama's stream ended before its final line"));
        };
        let chunks = if self.include_usage { vec![self.chunks.usage(&usage)] } else { vec![] };
        Ok(StreamEnd::chunks(chunks, Some(usage)))
    }
}

relay_plugin_kit::export_adapter!(OllamaNative);

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(stream: bool) -> CallContext {
        CallContext {
            request_id: "r1".into(),
            endpoint: Endpoint::ChatCompletions,
            model: "llama3.2".into(),
            stream,
            include_usage: true,
            settings: vec![("keep_alive".into(), "5m".into())],
        }
    }

    #[test]
    fn maps_the_request() {
        let body = r#"{"model":"llama3.2","messages":[{"role":"developer","content":"be brief"},{"role":"user","content":"hi"}],"max_tokens":9,"stop":"x"}"#;
        let r = OllamaNative::transform_request(&ctx(true), body).unwrap();
        let v: Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(r.path, "/api/chat");
        assert_eq!(v["messages"][0]["role"], "system");
        assert_eq!(v["options"]["num_predict"], 9);
        assert_eq!(v["options"]["stop"], json!(["x"]));
        assert_eq!((v["stream"].as_bool(), v["keep_alive"].as_str()), (Some(true), Some("5m")));
        let refused =
            OllamaNative::transform_request(&ctx(false), r#"{"model":"m","messages":[],"logit_bias":{"1":1}}"#);
        assert!(matches!(refused, Err(AdapterError::Unsupported(m)) if m.contains("logit_bias")));
    }

    #[test]
    fn maps_the_answer_and_the_stream() {
        let reply = r#"{"model":"llama3.2","message":{"role":"assistant","content":"Hello"},"done":true,"done_reason":"stop","prompt_eval_count":3,"eval_count":2}"#;
        let r = OllamaNative::transform_response(
            &ctx(false),
            UpstreamResponse { status: 200, headers: vec![], body: reply.into() },
        )
        .unwrap();
        let v: Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(v["choices"][0]["message"]["content"], "Hello");
        assert_eq!(v["usage"]["total_tokens"], 5);

        let mut s = ChatStream::new(&ctx(true));
        let first = s
            .push(StreamEvent { event: None, data: r#"{"model":"m","message":{"content":"He"},"done":false}"#.into() })
            .unwrap();
        assert_eq!(first.events.len(), 2, "role, then content");
        assert!(s.finish().is_err(), "no final line yet");
        let last = s
            .push(StreamEvent {
                event: None,
                data: r#"{"model":"m","message":{"content":""},"done":true,"prompt_eval_count":1,"eval_count":2}"#
                    .into(),
            })
            .unwrap();
        assert!(last.done);
        assert_eq!(s.finish().unwrap().events.len(), 1, "the usage chunk");
    }

    #[test]
    fn errors_are_classified_and_lines_of_one_read_go_together() {
        let r = OllamaNative::transform_response(
            &ctx(false),
            UpstreamResponse { status: 404, headers: vec![], body: r#"{"error":"model 'x' not found"}"#.into() },
        )
        .unwrap();
        assert_eq!((r.status, r.error_class), (404, Some(ErrorClass::NotFound)));
        let line = |content: &str, done: bool| StreamEvent {
            event: None,
            data: json!({"model": "m", "message": {"content": content}, "done": done}).to_string(),
        };
        let mut s = relay_plugin_kit::Batched::<ChatStream>::new(&ctx(true));
        let out = s.push(vec![line("a", false), line("b", false), line("", true), line("late", false)]).unwrap();
        assert!(out.done);
        assert_eq!(out.events.len(), 4, "role, a, b, finish; nothing after the last line");
        // A line that does not read is skipped, the answer goes on.
        let mut s = relay_plugin_kit::Batched::<ChatStream>::new(&ctx(true));
        let bad = StreamEvent { event: None, data: "{not json".into() };
        let out = s.push(vec![line("a", false), bad, line("b", true)]).unwrap();
        assert_eq!((out.events.len(), out.skipped.len(), out.done), (4, 1, true), "role, a, b, finish");
        assert!(s.finish().is_ok());
    }
}
