//! Anthropic's Messages stream events → OpenAI `chat.completion.chunk`s.

use std::collections::BTreeMap;

use relay_plugin_kit::openai::{self, ChunkBuilder};
use relay_plugin_kit::prelude::*;
use serde::Deserialize;

use crate::response::{Tokens, VendorError, WireUsage, finish_reason, with_cached};

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Event {
    MessageStart {
        message: StartMessage,
    },
    ContentBlockStart {
        index: u64,
        content_block: StartBlock,
    },
    ContentBlockDelta {
        index: u64,
        delta: Delta,
    },
    ContentBlockStop {
        index: u64,
    },
    MessageDelta {
        #[serde(default)]
        delta: MessageDeltaBody,
        #[serde(default)]
        usage: Option<WireUsage>,
    },
    MessageStop,
    Ping,
    Error {
        error: VendorError,
    },
    /// Anthropic may add event types; the documented rule is to ignore unknown ones.
    #[serde(other)]
    Unknown,
}

#[derive(Deserialize)]
struct StartMessage {
    id: String,
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    usage: Option<WireUsage>,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum StartBlock {
    Text {
        #[serde(default)]
        text: String,
    },
    ToolUse {
        id: String,
        name: String,
    },
    #[serde(other)]
    Other,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Delta {
    #[serde(rename = "text_delta")]
    Text { text: String },
    #[serde(rename = "input_json_delta")]
    InputJson { partial_json: String },
    /// Thinking, signature and citation deltas have no OpenAI chunk.
    #[serde(other)]
    Other,
}

#[derive(Deserialize, Default)]
struct MessageDeltaBody {
    #[serde(default)]
    stop_reason: Option<String>,
}

/// A tool_use block being streamed: its OpenAI tool-call index and whether any argument
/// text was sent yet.
struct ToolBlock {
    index: u32,
    sent_arguments: bool,
}

pub struct Stream {
    chunks: ChunkBuilder,
    include_usage: bool,
    started: bool,
    /// `message_stop`, or a `stop_reason` before the body ended, makes the stream complete.
    ending: Ending,
    tokens: Tokens,
    /// Anthropic content-block index → the tool call it carries.
    tools: BTreeMap<u64, ToolBlock>,
    next_tool: u32,
}

impl Stream {
    fn usage_output(&self, chunks: Vec<String>) -> StreamOutput {
        StreamOutput { usage: Some(self.tokens.usage()), ..StreamOutput::chunks(chunks) }
    }
}

fn output(chunks: Vec<String>) -> StreamOutput {
    StreamOutput::chunks(chunks)
}

impl StreamAdapter for Stream {
    fn new(ctx: &CallContext) -> Self {
        Stream {
            // The id and model are replaced by message_start's.
            chunks: ChunkBuilder {
                id: String::new(),
                created: openai::now(),
                model: ctx.model.clone(),
                include_usage: ctx.include_usage,
            },
            include_usage: ctx.include_usage,
            started: false,
            ending: Ending::default(),
            tokens: Tokens::default(),
            tools: BTreeMap::new(),
            next_tool: 0,
        }
    }

    fn push(&mut self, event: StreamEvent) -> Result<StreamOutput, AdapterError> {
        let ev: Event = match serde_json::from_str(&event.data) {
            Ok(ev) => ev,
            Err(e) => {
                let name = event.event.as_deref().unwrap_or("(unnamed)");
                let why = format!("the vendor's '{name}' stream event is not readable: {e}");
                // An error event ends the stream even when its body is garbled.
                return if name == "error" { Err(invalid_upstream(why)) } else { Ok(StreamOutput::skip(why)) };
            }
        };
        if !self.started && !matches!(ev, Event::MessageStart { .. } | Event::Ping | Event::Error { .. }) {
            return Err(invalid_upstream("the vendor's stream did not begin with message_start"));
        }
        match ev {
            Event::MessageStart { message } => {
                self.started = true;
                self.chunks.id = message.id;
                if let Some(m) = message.model {
                    self.chunks.model = m;
                }
                if let Some(u) = &message.usage {
                    self.tokens.update(u);
                }
                Ok(self.usage_output(vec![self.chunks.role()]))
            }
            Event::ContentBlockStart { index, content_block } => match content_block {
                StartBlock::Text { text } if !text.is_empty() => Ok(output(vec![self.chunks.content(&text)])),
                StartBlock::ToolUse { id, name } => {
                    let tool = self.next_tool;
                    self.next_tool += 1;
                    self.tools.insert(index, ToolBlock { index: tool, sent_arguments: false });
                    Ok(output(vec![self.chunks.tool_call_start(tool, &id, &name)]))
                }
                _ => Ok(output(vec![])),
            },
            Event::ContentBlockDelta { index, delta } => match delta {
                Delta::Text { text } => Ok(output(vec![self.chunks.content(&text)])),
                Delta::InputJson { partial_json } => {
                    let tool = self.tools.get_mut(&index).ok_or_else(|| {
                        invalid_upstream(format!("the vendor sent tool input for block {index}, which is no tool_use"))
                    })?;
                    if partial_json.is_empty() {
                        return Ok(output(vec![]));
                    }
                    tool.sent_arguments = true;
                    Ok(output(vec![self.chunks.tool_call_arguments(tool.index, &partial_json)]))
                }
                Delta::Other => Ok(output(vec![])),
            },
            Event::ContentBlockStop { index } => match self.tools.get(&index) {
                // A call without parameters streams no input; OpenAI clients expect "{}".
                Some(t) if !t.sent_arguments => Ok(output(vec![self.chunks.tool_call_arguments(t.index, "{}")])),
                _ => Ok(output(vec![])),
            },
            Event::MessageDelta { delta, usage } => {
                if let Some(u) = &usage {
                    self.tokens.update(u);
                }
                let chunks = match delta.stop_reason.as_deref() {
                    Some(r) => {
                        self.ending.finish_reason();
                        vec![self.chunks.finish(finish_reason(Some(r)))]
                    }
                    None => vec![],
                };
                Ok(self.usage_output(chunks))
            }
            Event::MessageStop => {
                self.ending.terminal();
                Ok(StreamOutput { done: true, usage: Some(self.tokens.usage()), ..StreamOutput::empty() })
            }
            Event::Ping | Event::Unknown => Ok(output(vec![])),
            Event::Error { error } => {
                let kind = error.kind.as_deref().unwrap_or("error");
                Err(invalid_upstream(format!("the vendor ended the stream with {kind}: {}", error.message)))
            }
        }
    }

    fn finish(&mut self) -> Result<StreamEnd, AdapterError> {
        self.ending.check("message_stop")?;
        let usage = self.tokens.usage();
        let chunks =
            if self.include_usage { vec![with_cached(&self.tokens, self.chunks.usage(&usage))] } else { vec![] };
        Ok(StreamEnd::chunks(chunks, Some(usage)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn stream_ctx() -> CallContext {
        CallContext {
            request_id: "r1".into(),
            endpoint: Endpoint::ChatCompletions,
            model: "claude-x".into(),
            stream: true,
            include_usage: false,
            settings: vec![],
        }
    }

    fn stream(include_usage: bool) -> Stream {
        Stream::new(&CallContext { include_usage, ..stream_ctx() })
    }

    fn push(s: &mut Stream, data: Value) -> Result<StreamOutput, AdapterError> {
        let name = data["type"].as_str().map(str::to_owned);
        s.push(StreamEvent { event: name, data: data.to_string() })
    }

    fn parsed(chunks: &[String]) -> Vec<Value> {
        chunks.iter().map(|c| serde_json::from_str(c).unwrap()).collect()
    }

    /// A whole stream as Anthropic sends it: text, then two tool calls (one without input).
    fn events() -> Vec<Value> {
        vec![
            json!({"type": "message_start", "message": {"id": "msg_9", "type": "message", "role": "assistant",
                "model": "claude-real", "content": [], "stop_reason": null, "stop_sequence": null,
                "usage": {"input_tokens": 12, "cache_read_input_tokens": 3, "output_tokens": 1}}}),
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
            json!({"type": "ping"}),
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Let me "}}),
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "check."}}),
            json!({"type": "content_block_stop", "index": 0}),
            json!({"type": "content_block_start", "index": 1,
                "content_block": {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {}}}),
            json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": ""}}),
            json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": "{\"city\":"}}),
            json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": "\"Paris\"}"}}),
            json!({"type": "content_block_stop", "index": 1}),
            json!({"type": "content_block_start", "index": 2,
                "content_block": {"type": "tool_use", "id": "toolu_2", "name": "now", "input": {}}}),
            json!({"type": "content_block_stop", "index": 2}),
            json!({"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": null},
                "usage": {"output_tokens": 30}}),
            json!({"type": "message_stop"}),
        ]
    }

    #[test]
    fn full_stream_with_tool_calls_and_usage() {
        let mut s = stream(true);
        let mut chunks = Vec::new();
        let mut last = None;
        for (i, e) in events().into_iter().enumerate() {
            let o = push(&mut s, e).unwrap();
            assert_eq!(o.done, i == 14, "event {i}");
            chunks.extend(o.data().into_iter().map(String::from));
            last = o.usage.or(last);
        }
        assert_eq!(last.map(|u| (u.input_tokens, u.output_tokens)), Some((15, 30)));
        let end = s.finish().unwrap();
        let u = end.usage.as_ref().unwrap();
        assert_eq!((u.total_tokens, u.cached_input_tokens, u.cache_creation_input_tokens), (45, Some(3), None));
        chunks.extend(end.data().into_iter().map(String::from));
        let c = parsed(&chunks);
        assert!(c.iter().all(|c| c["id"] == "msg_9" && c["model"] == "claude-real"));
        assert!(c.iter().all(|c| c["object"] == "chat.completion.chunk"));
        assert_eq!(c[0]["choices"][0]["delta"]["role"], "assistant");
        let deltas: Vec<&Value> = c.iter().map(|c| &c["choices"][0]["delta"]).collect();
        assert_eq!(deltas[1]["content"], "Let me ");
        assert_eq!(deltas[2]["content"], "check.");
        assert_eq!(
            deltas[3]["tool_calls"],
            json!([{"index": 0, "id": "toolu_1", "type": "function", "function": {"name": "get_weather", "arguments": ""}}])
        );
        assert_eq!(deltas[4]["tool_calls"], json!([{"index": 0, "function": {"arguments": "{\"city\":"}}]));
        assert_eq!(deltas[5]["tool_calls"], json!([{"index": 0, "function": {"arguments": "\"Paris\"}"}}]));
        assert_eq!(deltas[6]["tool_calls"][0]["index"], 1);
        assert_eq!(deltas[6]["tool_calls"][0]["id"], "toolu_2");
        assert_eq!(deltas[7]["tool_calls"], json!([{"index": 1, "function": {"arguments": "{}"}}]));
        assert_eq!(c[8]["choices"][0]["finish_reason"], "tool_calls");
        assert!(c[..9].iter().all(|c| c.get("usage") == Some(&Value::Null)));
        assert_eq!(c.len(), 10);
        assert_eq!(c[9]["choices"], json!([]));
        assert_eq!(
            c[9]["usage"],
            json!({"prompt_tokens": 15, "completion_tokens": 30, "total_tokens": 45,
                "prompt_tokens_details": {"cached_tokens": 3}})
        );
    }

    #[test]
    fn one_batch_is_the_same_stream() {
        let ctx = CallContext { include_usage: true, ..stream_ctx() };
        let mut one = stream(true);
        let mut expected = Vec::new();
        for e in events() {
            expected.extend(push(&mut one, e).unwrap().data().into_iter().map(String::from));
        }
        let mut batched = relay_plugin_kit::Batched::<Stream>::new(&ctx);
        let mut all: Vec<StreamEvent> = events()
            .into_iter()
            .map(|v| StreamEvent { event: v["type"].as_str().map(str::to_owned), data: v.to_string() })
            .collect();
        all.push(StreamEvent { event: Some("ping".into()), data: "not even JSON".into() });
        let out = batched.push(all).unwrap();
        assert!(out.done, "message_stop ends the batch; what follows it is ignored");
        let u = out.usage.unwrap();
        assert_eq!((u.input_tokens, u.output_tokens, u.cached_input_tokens), (15, 30, Some(3)));
        // `created` is the clock's: compare all but it.
        let strip = |c: &str| {
            let mut v: Value = serde_json::from_str(c).unwrap();
            v["created"] = Value::Null;
            v
        };
        let got: Vec<Value> = out.data().into_iter().map(strip).collect();
        let want: Vec<Value> = expected.iter().map(|c| strip(c)).collect();
        assert_eq!(got, want);
        assert_eq!(batched.finish().unwrap().events.len(), 1, "the usage chunk");
    }

    #[test]
    fn without_include_usage_there_is_no_usage_chunk() {
        let mut s = stream(false);
        let mut chunks = Vec::new();
        for e in events() {
            chunks.extend(push(&mut s, e).unwrap().data().into_iter().map(String::from));
        }
        let end = s.finish().unwrap();
        assert!(end.events.is_empty());
        assert_eq!(end.usage.map(|u| u.output_tokens), Some(30));
        assert!(parsed(&chunks).iter().all(|c| c.get("usage").is_none()));
    }

    #[test]
    fn a_stream_without_message_stop_fails_in_finish() {
        // Cut before message_delta's stop_reason: the answer is truncated.
        let mut s = stream(false);
        let all = events();
        for e in &all[..all.len() - 2] {
            push(&mut s, e.clone()).unwrap();
        }
        let e = s.finish().unwrap_err();
        assert!(matches!(e, AdapterError::InvalidUpstream(m) if m.contains("message_stop")));
        assert!(stream(false).finish().is_err());
    }

    #[test]
    fn a_stream_with_its_stop_reason_is_complete_without_message_stop() {
        let mut s = stream(true);
        let all = events();
        for e in &all[..all.len() - 1] {
            push(&mut s, e.clone()).unwrap();
        }
        let end = s.finish().unwrap();
        assert_eq!(end.usage.map(|u| (u.input_tokens, u.output_tokens)), Some((15, 30)), "with usage");
        assert_eq!(end.events.len(), 1, "the usage chunk the client asked for");
    }

    #[test]
    fn an_unreadable_event_is_skipped() {
        let mut s = relay_plugin_kit::Batched::<Stream>::new(&stream_ctx());
        let mut all: Vec<StreamEvent> = events()
            .into_iter()
            .map(|v| StreamEvent { event: v["type"].as_str().map(str::to_owned), data: v.to_string() })
            .collect();
        let whole = all.len();
        all.insert(4, StreamEvent { event: Some("content_block_delta".into()), data: "{not json".into() });
        let out = s.push(all).unwrap();
        assert!(out.done, "the stream went on to message_stop");
        assert_eq!(out.skipped.len(), 1);
        assert!(out.skipped[0].contains("'content_block_delta' stream event is not readable"), "{:?}", out.skipped);
        assert_eq!(out.events.len(), 9, "every chunk of the {whole} good events");
        assert!(s.finish().is_ok());
    }

    #[test]
    fn error_events_and_bad_events() {
        let mut s = stream(false);
        push(&mut s, events()[0].clone()).unwrap();
        let e = push(&mut s, json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}))
            .unwrap_err();
        assert!(matches!(e, AdapterError::InvalidUpstream(m) if m.contains("overloaded_error: Overloaded")));
        let o = s.push(StreamEvent { event: None, data: "{not json".into() }).unwrap();
        assert!(o.events.is_empty() && o.skipped.len() == 1, "an unreadable event is skipped");
        // Content before message_start is out of order.
        let e = push(&mut stream(false), events()[3].clone()).unwrap_err();
        assert!(matches!(e, AdapterError::InvalidUpstream(m) if m.contains("message_start")));
        // Unknown event types are ignored, as Anthropic asks.
        let mut s = stream(false);
        push(&mut s, events()[0].clone()).unwrap();
        assert!(push(&mut s, json!({"type": "future_event", "x": 1})).unwrap().events.is_empty());
    }
}
