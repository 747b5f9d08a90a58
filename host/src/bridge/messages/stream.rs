//! A chat chunk stream to Messages' event sequence: one state machine per stream, applied
//! to each batch inside the typed stream.

use super::*;
use crate::bridge::StreamBridge;

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Event<'a> {
    MessageStart { message: StartMessage<'a> },
    ContentBlockStart { index: u32, content_block: StartBlock<'a> },
    ContentBlockDelta { index: u32, delta: BlockDelta<'a> },
    ContentBlockStop { index: u32 },
    MessageDelta { delta: MessageDeltaBody<'a>, usage: OutUsage },
    MessageStop,
    Ping,
}

impl Event<'_> {
    fn name(&self) -> &'static str {
        match self {
            Event::MessageStart { .. } => "message_start",
            Event::ContentBlockStart { .. } => "content_block_start",
            Event::ContentBlockDelta { .. } => "content_block_delta",
            Event::ContentBlockStop { .. } => "content_block_stop",
            Event::MessageDelta { .. } => "message_delta",
            Event::MessageStop => "message_stop",
            Event::Ping => "ping",
        }
    }
}

#[derive(Serialize)]
struct StartMessage<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    role: &'static str,
    model: &'a str,
    content: [(); 0],
    stop_reason: Option<&'static str>,
    stop_sequence: Option<&'static str>,
    usage: OutUsage,
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum StartBlock<'a> {
    Text { text: &'static str },
    ToolUse { id: &'a str, name: &'a str, input: EmptyObject },
}

#[derive(Serialize)]
struct EmptyObject {}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum BlockDelta<'a> {
    TextDelta { text: &'a str },
    InputJsonDelta { partial_json: &'a str },
}

#[derive(Serialize)]
struct MessageDeltaBody<'a> {
    stop_reason: &'static str,
    stop_sequence: Option<&'a str>,
}

/// The content block open in the stream.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Open {
    None,
    Text,
    /// A tool_use block, for chat's tool call at this index.
    Tool(u32),
}

/// One Messages stream from chat chunks: opens and closes content blocks as the chunks'
/// text and tool calls come, and ends with `message_delta` and `message_stop` only when the
/// chat stream ended cleanly.
pub struct Stream {
    model: String,
    id: String,
    started: bool,
    open: Open,
    /// The index of the open block (or of the next one, when none is open).
    index: u32,
    stop: Option<&'static str>,
    /// The stop string that ended the text, when the vendor named it.
    stop_sequence: Option<String>,
    usage: Option<chat::Usage>,
}

impl Stream {
    pub fn new(model: &str) -> Stream {
        Stream {
            model: model.to_string(),
            id: String::new(),
            started: false,
            open: Open::None,
            index: 0,
            stop: None,
            stop_sequence: None,
            usage: None,
        }
    }

    fn emit(out: &mut Vec<OutputEvent>, ev: &Event<'_>) {
        // Serialising these structs cannot fail (no maps with non-string keys, no floats).
        let data = serde_json::to_string(ev).unwrap_or_default();
        out.push(OutputEvent { name: Some(ev.name().to_string()), data });
    }

    fn start(&mut self, id: Option<&str>, model: Option<&str>, out: &mut Vec<OutputEvent>) {
        if self.started {
            return;
        }
        self.started = true;
        self.id = message_id(id.filter(|i| !i.is_empty()).unwrap_or("relay")).into_owned();
        if let Some(m) = model.filter(|m| !m.is_empty()) {
            self.model = m.to_string();
        }
        let message = StartMessage {
            id: &self.id,
            kind: "message",
            role: "assistant",
            model: &self.model,
            content: [],
            stop_reason: None,
            stop_sequence: None,
            usage: OutUsage::default(),
        };
        Self::emit(out, &Event::MessageStart { message });
        // As Anthropic does: a keep-alive right after the start (clients ignore it).
        Self::emit(out, &Event::Ping);
    }

    fn close(&mut self, out: &mut Vec<OutputEvent>) {
        if self.open != Open::None {
            Self::emit(out, &Event::ContentBlockStop { index: self.index });
            self.open = Open::None;
            self.index += 1;
        }
    }

    fn text(&mut self, text: &str, out: &mut Vec<OutputEvent>) {
        if text.is_empty() {
            return;
        }
        if self.open != Open::Text {
            self.close(out);
            self.open = Open::Text;
            Self::emit(
                out,
                &Event::ContentBlockStart { index: self.index, content_block: StartBlock::Text { text: "" } },
            );
        }
        Self::emit(out, &Event::ContentBlockDelta { index: self.index, delta: BlockDelta::TextDelta { text } });
    }

    fn tool(&mut self, call: &chat::ToolCallDelta<'_>, out: &mut Vec<OutputEvent>) {
        let function = call.function.as_ref();
        let new_call = call.id.is_some() || self.open != Open::Tool(call.index);
        if new_call {
            self.close(out);
            self.open = Open::Tool(call.index);
            let fallback = format!("toolu_relay_{}", call.index);
            let id = call.id.as_deref().unwrap_or(&fallback);
            let name = function.and_then(|f| f.name.as_deref()).unwrap_or_default();
            let content_block = StartBlock::ToolUse { id, name, input: EmptyObject {} };
            Self::emit(out, &Event::ContentBlockStart { index: self.index, content_block });
        }
        if let Some(args) = function.and_then(|f| f.arguments.as_deref()).filter(|a| !a.is_empty()) {
            let delta = BlockDelta::InputJsonDelta { partial_json: args };
            Self::emit(out, &Event::ContentBlockDelta { index: self.index, delta });
        }
    }

    /// One chat chunk's events.
    pub fn chunk(&mut self, data: &str, out: &mut Vec<OutputEvent>) -> Result<(), String> {
        let chunk: chat::Chunk<'_> =
            serde_json::from_str(data).map_err(|e| format!("a chat chunk could not be read: {e}"))?;
        self.start(chunk.id.as_deref(), chunk.model.as_deref(), out);
        if let Some(u) = chunk.usage {
            self.usage = Some(u);
        }
        for choice in chunk.choices.iter().flatten() {
            if let Some(delta) = &choice.delta {
                if let Some(text) = delta.content.as_deref().or(delta.refusal.as_deref()) {
                    self.text(text, out);
                }
                for call in delta.tool_calls.iter().flatten() {
                    self.tool(call, out);
                }
            }
            if let Some(reason) = choice.finish_reason.as_deref() {
                let (stop, seq) = stop_of(Some(reason), chat::matched_stop(&choice.stop_reason, &choice.matched_stop));
                self.stop = Some(stop);
                self.stop_sequence = seq.map(str::to_owned);
            }
        }
        Ok(())
    }

    /// The closing events of a clean end; `usage` is the stream's, as the adapter counted it.
    pub fn done(&mut self, usage: Option<&Usage>, out: &mut Vec<OutputEvent>) {
        self.start(None, None, out);
        self.close(out);
        let usage = match (&self.usage, usage) {
            (Some(u), _) => OutUsage::from_chat(u),
            (None, Some(u)) => OutUsage::from_model(u),
            (None, None) => OutUsage::default(),
        };
        let delta = MessageDeltaBody {
            stop_reason: self.stop.unwrap_or("end_turn"),
            stop_sequence: self.stop_sequence.as_deref(),
        };
        Self::emit(out, &Event::MessageDelta { delta, usage });
        Self::emit(out, &Event::MessageStop);
    }
}

impl StreamBridge for Stream {
    fn apply(&mut self, batch: &mut Batch) -> Result<(), String> {
        crate::bridge::convert(self, batch, 1, Self::chunk, Self::done)
    }
}
