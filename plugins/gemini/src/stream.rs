//! `streamGenerateContent?alt=sse` → `chat.completion.chunk`s. Every SSE event is a whole
//! `GenerateContentResponse` holding the next piece of the answer; the one that carries a
//! `finishReason` is the last (Gemini sends no `[DONE]`: the finish reason is its end). An
//! event that is not JSON, or not a response, is skipped.

use relay_plugin_kit::openai::ChunkBuilder;
use relay_plugin_kit::prelude::*;
use serde_json::Value;

use crate::response::{GenerateResponse, GoogleError, finish_reason, synthesized_id};

pub struct GeminiStream {
    ctx: CallContext,
    /// Made from the first event, which names the response id and model version.
    chunks: Option<ChunkBuilder>,
    /// The next OpenAI tool-call index.
    next_tool: u32,
    usage: Option<Usage>,
    ending: Ending,
}

impl StreamAdapter for GeminiStream {
    fn new(ctx: &CallContext) -> Self {
        GeminiStream { ctx: ctx.clone(), chunks: None, next_tool: 0, usage: None, ending: Ending::default() }
    }

    fn push(&mut self, event: StreamEvent) -> Result<StreamOutput, AdapterError> {
        let data = event.data.trim();
        if data.is_empty() {
            return Ok(StreamOutput::empty());
        }
        let v: Value = match serde_json::from_str(data) {
            Ok(v) => v,
            Err(e) => return Ok(StreamOutput::skip(format!("a Gemini stream event is not JSON: {e}"))),
        };
        if v.get("error").is_some() {
            let msg = GoogleError::parse(data).and_then(|e| e.message).unwrap_or_else(|| v["error"].to_string());
            return Err(invalid_upstream(format!("Gemini ended the stream with an error: {msg}")));
        }
        let r: GenerateResponse = match serde_json::from_value(v) {
            Ok(r) => r,
            Err(e) => return Ok(StreamOutput::skip(format!("a Gemini stream event is not a response: {e}"))),
        };

        let mut out = Vec::new();
        let b = self.chunks.get_or_insert_with(|| {
            let b = ChunkBuilder {
                id: r.response_id.clone().unwrap_or_else(|| synthesized_id(&self.ctx)),
                created: openai::now(),
                model: r.model_version.clone().unwrap_or_else(|| self.ctx.model.clone()),
                include_usage: self.ctx.include_usage,
            };
            out.push(b.role());
            b
        });
        for p in r.parts() {
            if let Some(call) = &p.function_call {
                let tc = call.tool_call(self.next_tool);
                out.push(b.tool_call_start(self.next_tool, &tc.id, &tc.function.name));
                out.push(b.tool_call_arguments(self.next_tool, &tc.function.arguments));
                self.next_tool += 1;
            } else if let Some(t) = p.text.as_deref().filter(|t| !p.thought && !t.is_empty()) {
                out.push(b.content(t));
            }
        }
        let usage = r.usage_metadata.as_ref().map(|u| u.usage());
        if usage.is_some() {
            self.usage = usage;
        }
        let reason = if r.blocked() {
            Some("content_filter")
        } else {
            r.finish_reason().map(|f| finish_reason(f, self.next_tool > 0))
        };
        if let Some(reason) = reason {
            out.push(b.finish(reason));
            self.ending.finish_reason();
        }
        Ok(StreamOutput { done: self.ending.is_complete(), usage, ..StreamOutput::chunks(out) })
    }

    fn finish(&mut self) -> Result<StreamEnd, AdapterError> {
        if !self.ending.is_complete() {
            return Err(invalid_upstream("Gemini's stream ended before a chunk with a finishReason"));
        }
        let chunks = match (&self.chunks, &self.usage) {
            (Some(b), Some(u)) if self.ctx.include_usage => vec![b.usage(u)],
            _ => vec![],
        };
        Ok(StreamEnd::chunks(chunks, self.usage))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn stream(include_usage: bool) -> GeminiStream {
        GeminiStream::new(&CallContext {
            request_id: "req_9".into(),
            endpoint: Endpoint::ChatCompletions,
            model: "gemini-2.0-flash".into(),
            stream: true,
            include_usage,
            settings: vec![],
        })
    }

    fn push(s: &mut GeminiStream, v: Value) -> StreamOutput {
        s.push(StreamEvent { event: None, data: v.to_string() }).unwrap()
    }

    fn parse(events: &[OutputEvent]) -> Vec<Value> {
        assert!(events.iter().all(|e| e.name.is_none()), "chat chunks have no event name");
        events.iter().map(|e| serde_json::from_str(&e.data).unwrap()).collect()
    }

    #[test]
    fn text_stream_with_usage() {
        let mut s = stream(true);
        let o = push(
            &mut s,
            json!({"candidates": [{"content": {"role": "model", "parts": [{"text": "Hel"}]}, "index": 0}],
                "usageMetadata": {"promptTokenCount": 3, "totalTokenCount": 3}, "modelVersion": "gemini-2.0-flash", "responseId": "r-1"}),
        );
        let c = parse(&o.events);
        assert_eq!(c.len(), 2);
        assert_eq!(c[0]["choices"][0]["delta"], json!({"role": "assistant", "content": ""}));
        assert_eq!(c[1]["choices"][0]["delta"]["content"], "Hel");
        assert!(c[1].get("usage").is_some_and(Value::is_null), "usage: null on every chunk with include_usage");
        assert!(!o.done);
        assert_eq!(o.usage.unwrap().input_tokens, 3);
        let o = push(
            &mut s,
            json!({"candidates": [{"content": {"role": "model", "parts": [{"text": "lo"}]}, "finishReason": "STOP", "index": 0}],
                "usageMetadata": {"promptTokenCount": 3, "candidatesTokenCount": 2, "totalTokenCount": 5}, "responseId": "r-1"}),
        );
        let c = parse(&o.events);
        assert_eq!(c[0]["choices"][0]["delta"]["content"], "lo");
        assert_eq!(c[1]["choices"][0]["finish_reason"], "stop");
        assert!(c.iter().all(|c| c["id"] == "r-1" && c["object"] == "chat.completion.chunk"));
        assert!(o.done);
        let end = s.finish().unwrap();
        let u = parse(&end.events);
        assert_eq!(u[0]["choices"], json!([]));
        assert_eq!(u[0]["usage"], json!({"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}));
        assert_eq!(end.usage.unwrap().total_tokens, 5);
    }

    #[test]
    fn function_calls_stream_as_tool_call_deltas() {
        let mut s = stream(false);
        let o =
            push(&mut s, json!({"candidates": [{"content": {"role": "model", "parts": [{"text": "Let me check."}]}}]}));
        assert_eq!(o.events.len(), 2);
        let o = push(
            &mut s,
            json!({"candidates": [{"content": {"role": "model", "parts": [
                {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}},
                {"functionCall": {"name": "get_time", "args": {}}}]}, "finishReason": "STOP"}],
                "usageMetadata": {"promptTokenCount": 5, "candidatesTokenCount": 4, "totalTokenCount": 9}}),
        );
        let c = parse(&o.events);
        assert_eq!(c.len(), 5);
        assert_eq!(
            c[0]["choices"][0]["delta"]["tool_calls"][0],
            json!({"index": 0, "id": "call_0", "type": "function", "function": {"name": "get_weather", "arguments": ""}})
        );
        assert_eq!(c[1]["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"], "{\"city\":\"Paris\"}");
        assert_eq!(c[2]["choices"][0]["delta"]["tool_calls"][0]["index"], 1);
        assert_eq!(c[2]["choices"][0]["delta"]["tool_calls"][0]["id"], "call_1");
        assert_eq!(c[4]["choices"][0]["finish_reason"], "tool_calls");
        assert!(c.iter().all(|c| c["id"] == "chatcmpl-req_9" && c.get("usage").is_none()));
        assert!(o.done);
        let end = s.finish().unwrap();
        assert!(end.events.is_empty(), "no usage chunk unless asked");
        assert_eq!(end.usage.unwrap().output_tokens, 4);
    }

    #[test]
    fn a_stream_without_finish_reason_fails() {
        let mut s = stream(true);
        push(&mut s, json!({"candidates": [{"content": {"parts": [{"text": "partial"}]}}]}));
        assert!(matches!(s.finish(), Err(AdapterError::InvalidUpstream(m)) if m.contains("finishReason")));
        assert!(stream(false).finish().is_err(), "an empty stream fails too");
    }

    #[test]
    fn errors_blocks_and_garbage() {
        let mut s = stream(false);
        let e = s.push(StreamEvent {
            event: None,
            data: r#"{"error":{"code":503,"message":"The model is overloaded.","status":"UNAVAILABLE"}}"#.into(),
        });
        assert!(matches!(e, Err(AdapterError::InvalidUpstream(m)) if m.contains("The model is overloaded.")));
        let o = stream(false).push(StreamEvent { event: None, data: "{not json".into() }).unwrap();
        assert!(o.events.is_empty() && o.skipped[0].contains("not JSON"), "skipped");
        let o = stream(false).push(StreamEvent { event: None, data: r#"{"candidates":7}"#.into() }).unwrap();
        assert!(o.events.is_empty() && o.skipped[0].contains("not a response"), "skipped");
        let mut s = stream(false);
        let o = push(&mut s, json!({"promptFeedback": {"blockReason": "PROHIBITED_CONTENT"}}));
        let c = parse(&o.events);
        assert_eq!(c.last().unwrap()["choices"][0]["finish_reason"], "content_filter");
        assert!(o.done && s.finish().is_ok());
        let mut s = stream(false);
        let o = push(
            &mut s,
            json!({"candidates": [{"content": {"parts": [{"text": "x"}]}, "finishReason": "MAX_TOKENS"}]}),
        );
        assert_eq!(parse(&o.events).last().unwrap()["choices"][0]["finish_reason"], "length");
    }
}
