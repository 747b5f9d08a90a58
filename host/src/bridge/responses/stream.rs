//! Responses' typed event sequence: from chat chunks (`Stream`, the bridged route), and the
//! vendor's own events renamed to the relay's id (`Native`). Both end a cut stream with
//! `response.failed`, so every consumer (the client's encoder, a background job) sees the
//! same terminal event whatever cut it.

use std::fmt::Write as _;

use super::*;
use crate::answer::Batch;
use crate::bridge::StreamBridge;
use crate::model::OutputEvent;

#[derive(Serialize)]
#[serde(tag = "type")]
enum Event<'a> {
    #[serde(rename = "response.created")]
    Created { response: &'a Object<'a> },
    #[serde(rename = "response.in_progress")]
    InProgress { response: &'a Object<'a> },
    #[serde(rename = "response.completed")]
    Completed { response: &'a Object<'a> },
    #[serde(rename = "response.incomplete")]
    Incomplete { response: &'a Object<'a> },
    #[serde(rename = "response.failed")]
    Failed { response: &'a Object<'a> },
    #[serde(rename = "response.output_item.added")]
    ItemAdded { output_index: usize, item: &'a Item },
    #[serde(rename = "response.output_item.done")]
    ItemDone { output_index: usize, item: &'a Item },
    #[serde(rename = "response.content_part.added")]
    PartAdded { item_id: &'a str, output_index: usize, content_index: usize, part: &'a Part },
    #[serde(rename = "response.content_part.done")]
    PartDone { item_id: &'a str, output_index: usize, content_index: usize, part: &'a Part },
    #[serde(rename = "response.output_text.delta")]
    TextDelta { item_id: &'a str, output_index: usize, content_index: usize, delta: &'a str, logprobs: [(); 0] },
    #[serde(rename = "response.output_text.done")]
    TextDone { item_id: &'a str, output_index: usize, content_index: usize, text: &'a str, logprobs: [(); 0] },
    #[serde(rename = "response.refusal.delta")]
    RefusalDelta { item_id: &'a str, output_index: usize, content_index: usize, delta: &'a str },
    #[serde(rename = "response.refusal.done")]
    RefusalDone { item_id: &'a str, output_index: usize, content_index: usize, refusal: &'a str },
    #[serde(rename = "response.function_call_arguments.delta")]
    ArgumentsDelta { item_id: &'a str, output_index: usize, delta: &'a str },
    #[serde(rename = "response.function_call_arguments.done")]
    ArgumentsDone { item_id: &'a str, output_index: usize, arguments: &'a str },
}

impl Event<'_> {
    fn name(&self) -> &'static str {
        match self {
            Event::Created { .. } => "response.created",
            Event::InProgress { .. } => "response.in_progress",
            Event::Completed { .. } => "response.completed",
            Event::Incomplete { .. } => "response.incomplete",
            Event::Failed { .. } => "response.failed",
            Event::ItemAdded { .. } => "response.output_item.added",
            Event::ItemDone { .. } => "response.output_item.done",
            Event::PartAdded { .. } => "response.content_part.added",
            Event::PartDone { .. } => "response.content_part.done",
            Event::TextDelta { .. } => "response.output_text.delta",
            Event::TextDone { .. } => "response.output_text.done",
            Event::RefusalDelta { .. } => "response.refusal.delta",
            Event::RefusalDone { .. } => "response.refusal.done",
            Event::ArgumentsDelta { .. } => "response.function_call_arguments.delta",
            Event::ArgumentsDone { .. } => "response.function_call_arguments.done",
        }
    }
}

/// Append `ev` as the next event: its JSON with `sequence_number` last.
fn emit(seq: &mut u64, out: &mut Vec<OutputEvent>, ev: &Event<'_>) {
    // Serialising these structs cannot fail (string keys only); each is a JSON object.
    let mut data = serde_json::to_string(ev).unwrap_or_else(|_| "{}".into());
    data.pop();
    let _ = write!(data, ",\"sequence_number\":{seq}}}");
    *seq += 1;
    out.push(OutputEvent { name: Some(ev.name().to_string()), data });
}

/// What is open in the stream: the message item (and which of its parts), or a function
/// call item for chat's tool call at this index.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Open {
    None,
    Text,
    Refusal,
    Tool(u32),
}

/// One Responses stream from chat chunks: `response.created` and `response.in_progress`
/// first, output items opened and closed as the chunks' text and tool calls come, and
/// `response.completed` (or `.incomplete`) only when the chat stream ended cleanly; a cut
/// stream ends with `response.failed` (`StreamBridge::failed`).
pub struct Stream {
    call: Arc<Call>,
    model: String,
    seq: u64,
    started: bool,
    /// Every item so far; the open one is the last.
    items: Vec<Item>,
    open: Open,
    finish: Option<String>,
    usage: Option<chat::Usage>,
    /// A terminal event went out: nothing follows it.
    ended: bool,
}

impl Stream {
    pub fn new(call: Arc<Call>, model: &str) -> Stream {
        Stream {
            call,
            model: model.to_string(),
            seq: 0,
            started: false,
            items: Vec::new(),
            open: Open::None,
            finish: None,
            usage: None,
            ended: false,
        }
    }

    fn start(&mut self, model: Option<&str>, out: &mut Vec<OutputEvent>) {
        if self.started {
            return;
        }
        self.started = true;
        if let Some(m) = model.filter(|m| !m.is_empty()) {
            self.model = m.to_string();
        }
        let response = self.call.object(&self.model, Status::InProgress, &[]);
        emit(&mut self.seq, out, &Event::Created { response: &response });
        emit(&mut self.seq, out, &Event::InProgress { response: &response });
    }

    /// Close the open part (text or refusal) of the message item.
    fn close_part(&mut self, out: &mut Vec<OutputEvent>) {
        let Some(Item::Message { id, content, .. }) = self.items.last() else { return };
        let (output_index, content_index) = (self.items.len() - 1, content.len() - 1);
        let Some(part) = content.last() else { return };
        let item_id = id.as_str();
        match (self.open, part) {
            (Open::Text, Part::OutputText { text, .. }) => {
                let ev = Event::TextDone { item_id, output_index, content_index, text, logprobs: [] };
                emit(&mut self.seq, out, &ev);
            }
            (Open::Refusal, Part::Refusal { refusal }) => {
                emit(&mut self.seq, out, &Event::RefusalDone { item_id, output_index, content_index, refusal });
            }
            _ => return,
        }
        emit(&mut self.seq, out, &Event::PartDone { item_id, output_index, content_index, part });
    }

    /// Close the open item with `status`.
    fn close(&mut self, status: &'static str, out: &mut Vec<OutputEvent>) {
        if self.open == Open::None {
            return;
        }
        self.close_part(out);
        let output_index = self.items.len().saturating_sub(1);
        if let Some(Item::FunctionCall { id, arguments, .. }) = self.items.last() {
            emit(&mut self.seq, out, &Event::ArgumentsDone { item_id: id, output_index, arguments });
        }
        if let Some(Item::Message { status: s, .. } | Item::FunctionCall { status: s, .. }) = self.items.last_mut() {
            *s = status;
        }
        if let Some(item) = self.items.last() {
            emit(&mut self.seq, out, &Event::ItemDone { output_index, item });
        }
        self.open = Open::None;
    }

    /// Message text (`refusal`: its refusal): in the open message item, a new part when the
    /// kind changes.
    fn text(&mut self, delta: &str, refusal: bool, out: &mut Vec<OutputEvent>) {
        if delta.is_empty() {
            return;
        }
        let want = if refusal { Open::Refusal } else { Open::Text };
        if !matches!(self.open, Open::Text | Open::Refusal) {
            self.close("completed", out);
            let item = Item::Message { id: item_id("msg"), status: "in_progress", role: "assistant", content: vec![] };
            emit(&mut self.seq, out, &Event::ItemAdded { output_index: self.items.len(), item: &item });
            self.items.push(item);
        } else if self.open != want {
            self.close_part(out);
        }
        let output_index = self.items.len() - 1;
        let Some(Item::Message { id, content, .. }) = self.items.last_mut() else { return };
        if self.open != want {
            self.open = want;
            let empty = if refusal { Part::Refusal { refusal: String::new() } } else { Part::text(String::new()) };
            let ev = Event::PartAdded { item_id: id, output_index, content_index: content.len(), part: &empty };
            emit(&mut self.seq, out, &ev);
            content.push(empty);
        }
        let content_index = content.len() - 1;
        match content.last_mut() {
            Some(Part::OutputText { text, .. }) => text.push_str(delta),
            Some(Part::Refusal { refusal }) => refusal.push_str(delta),
            None => {}
        }
        let item_id = id.as_str();
        let ev = if refusal {
            Event::RefusalDelta { item_id, output_index, content_index, delta }
        } else {
            Event::TextDelta { item_id, output_index, content_index, delta, logprobs: [] }
        };
        emit(&mut self.seq, out, &ev);
    }

    fn tool(&mut self, call: &chat::ToolCallDelta<'_>, out: &mut Vec<OutputEvent>) {
        let function = call.function.as_ref();
        if call.id.is_some() || self.open != Open::Tool(call.index) {
            self.close("completed", out);
            self.open = Open::Tool(call.index);
            let call_id = call.id.as_deref().map_or_else(|| format!("call_relay_{}", call.index), str::to_string);
            let name = function.and_then(|f| f.name.as_deref()).unwrap_or_default().to_string();
            let item = Item::FunctionCall {
                id: item_id("fc"),
                call_id,
                name,
                arguments: String::new(),
                status: "in_progress",
            };
            emit(&mut self.seq, out, &Event::ItemAdded { output_index: self.items.len(), item: &item });
            self.items.push(item);
        }
        let Some(delta) = function.and_then(|f| f.arguments.as_deref()).filter(|a| !a.is_empty()) else { return };
        let output_index = self.items.len() - 1;
        if let Some(Item::FunctionCall { id, arguments, .. }) = self.items.last_mut() {
            arguments.push_str(delta);
            emit(&mut self.seq, out, &Event::ArgumentsDelta { item_id: id, output_index, delta });
        }
    }

    /// One chat chunk's events.
    pub fn chunk(&mut self, data: &str, out: &mut Vec<OutputEvent>) -> Result<(), String> {
        let chunk: chat::Chunk<'_> =
            serde_json::from_str(data).map_err(|e| format!("a chat chunk could not be read: {e}"))?;
        self.start(chunk.model.as_deref(), out);
        if let Some(u) = chunk.usage {
            self.usage = Some(u);
        }
        for choice in chunk.choices.iter().flatten() {
            if let Some(delta) = &choice.delta {
                if let Some(text) = delta.content.as_deref() {
                    self.text(text, false, out);
                }
                if let Some(refusal) = delta.refusal.as_deref() {
                    self.text(refusal, true, out);
                }
                for call in delta.tool_calls.iter().flatten() {
                    self.tool(call, out);
                }
            }
            if let Some(reason) = choice.finish_reason.as_deref() {
                self.finish = Some(reason.to_string());
            }
        }
        Ok(())
    }

    /// The closing events of a clean end; `usage` is the stream's, as the adapter counted it.
    pub fn done(&mut self, usage: Option<&Usage>, out: &mut Vec<OutputEvent>) {
        self.start(None, out);
        let (status, incomplete) = outcome(self.finish.as_deref());
        self.close(item_status(status), out);
        let usage = match (&self.usage, usage) {
            (Some(u), _) => OutUsage::from_chat(u),
            (None, Some(u)) => OutUsage::from_model(u),
            (None, None) => OutUsage::default(),
        };
        let mut response = self.call.object(&self.model, status, &self.items);
        response.incomplete_details = incomplete;
        response.usage = Some(usage);
        let ev = if status == Status::Incomplete {
            Event::Incomplete { response: &response }
        } else {
            Event::Completed { response: &response }
        };
        emit(&mut self.seq, out, &ev);
        self.ended = true;
    }

    /// The stream was cut: `response.failed` with what was made so far (the open item
    /// `incomplete`), after `response.created` if nothing went out before.
    pub fn fail(&mut self, error: &RelayError, out: &mut Vec<OutputEvent>) {
        if self.ended {
            return;
        }
        self.start(None, out);
        if let Some(Item::Message { status, .. } | Item::FunctionCall { status, .. }) =
            self.items.last_mut().filter(|_| self.open != Open::None)
        {
            *status = "incomplete";
        }
        self.open = Open::None;
        let mut response = self.call.object(&self.model, Status::Failed, &self.items);
        response.error = Some(Failure::of(error));
        response.usage = self.usage.as_ref().map(OutUsage::from_chat);
        emit(&mut self.seq, out, &Event::Failed { response: &response });
        self.ended = true;
    }
}

impl StreamBridge for Stream {
    fn apply(&mut self, batch: &mut Batch) -> Result<(), String> {
        crate::bridge::convert(self, batch, 2, Self::chunk, Self::done)
    }

    fn failed(&mut self, error: &RelayError, out: &mut Vec<OutputEvent>) {
        self.fail(error, out);
    }
}

/// A native channel's Responses events: passed as the vendor sent them, but every
/// `response` they carry renamed to the relay's id (`name_response`); a cut stream ends
/// with `response.failed` made from the last `response` seen, unless the vendor's own
/// terminal event went out.
pub struct Native {
    call: Arc<Call>,
    /// Events passed: the next `sequence_number` (OpenAI numbers its events from 0).
    seen: u64,
    /// The last non-terminal `response` the vendor sent, renamed.
    last: Option<Value>,
    ended: bool,
}

/// Only an event holding this (outside any string: a quote inside one is escaped) carries
/// a `response` to rename; the others pass without being parsed.
const RESPONSE_KEY: &[u8] = b"\"response\":{";

impl Native {
    pub fn new(call: Arc<Call>) -> Native {
        Native { call, seen: 0, last: None, ended: false }
    }

    fn rename(&mut self, ev: &mut OutputEvent) -> Result<(), String> {
        if memchr::memmem::find(ev.data.as_bytes(), RESPONSE_KEY).is_none() {
            return Ok(());
        }
        let mut event: serde_json::Map<String, Value> =
            serde_json::from_str(&ev.data).map_err(|e| format!("a vendor event could not be read: {e}"))?;
        let terminal = matches!(
            event.get("type").and_then(Value::as_str),
            Some("response.completed" | "response.incomplete" | "response.failed")
        );
        let Some(Value::Object(response)) = event.get_mut("response") else { return Ok(()) };
        name_response(response, &self.call.meta);
        if terminal {
            self.ended = true;
        } else {
            self.last = Some(Value::Object(response.clone()));
        }
        ev.data = serde_json::to_string(&event).unwrap_or_default();
        Ok(())
    }

    fn emit(&mut self, kind: &'static str, response: Value, out: &mut Vec<OutputEvent>) {
        let data = serde_json::json!({"type": kind, "response": response, "sequence_number": self.seen});
        self.seen += 1;
        out.push(OutputEvent { name: Some(kind.to_string()), data: data.to_string() });
    }
}

impl StreamBridge for Native {
    fn apply(&mut self, batch: &mut Batch) -> Result<(), String> {
        for ev in &mut batch.events {
            self.rename(ev)?;
            self.seen += 1;
        }
        Ok(())
    }

    fn failed(&mut self, error: &RelayError, out: &mut Vec<OutputEvent>) {
        if self.ended {
            return;
        }
        self.ended = true;
        let mut response = match self.last.take() {
            Some(r) => r,
            None => {
                let created = self.call.object(self.call.model(), Status::InProgress, &[]);
                let created = serde_json::to_value(&created).unwrap_or_default();
                self.emit("response.created", created.clone(), out);
                created
            }
        };
        response["status"] = Value::String("failed".into());
        response["error"] = serde_json::to_value(Failure::of(error)).unwrap_or_default();
        self.emit("response.failed", response, out);
    }
}
