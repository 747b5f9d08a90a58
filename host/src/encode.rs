//! The client's framing: a typed answer written as the HTTP response of the client API that
//! asked. The stream path under it is one for every API; a client API adds an encoder here.

use bytes::Bytes;
use http::{HeaderValue, Response, header};
use http_body::Frame;
use http_body_util::BodyExt;

use crate::answer::{Answer, Batch, End, Whole};
use crate::error::RelayError;
use crate::http::{Body, json_response, set_request_id};
use crate::model::{Endpoint, OutputEvent, Usage};
use crate::stream::Translation;

/// How one client API frames a stream. One instance per response, so an encoder may keep
/// state across events (a sequence number, an open content block).
pub trait StreamEncoder: Send {
    fn event(&mut self, out: &mut Vec<u8>, event: &OutputEvent);
    /// The stream ended cleanly.
    fn done(&mut self, out: &mut Vec<u8>, usage: Option<&Usage>);
    /// The stream was cut after its head went out (`sent`: events reached the client too);
    /// the client must be able to tell it from a complete one.
    fn error(&mut self, out: &mut Vec<u8>, error: &RelayError, sent: bool);

    /// The bytes `batch` will take, to allocate them once. Exact when it can be: a buffer
    /// filled to its capacity becomes the body frame without another allocation. Less is
    /// only slower.
    fn size(&self, _batch: &Batch) -> usize {
        0
    }
}

/// Chat completions: `data: {chunk}` per chunk, `data: [DONE]` after the last; a cut stream
/// ends with the error object as one more `data:` event and no `[DONE]`.
pub struct Chat;

impl StreamEncoder for Chat {
    fn event(&mut self, out: &mut Vec<u8>, event: &OutputEvent) {
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(event.data.as_bytes());
        out.extend_from_slice(b"\n\n");
    }

    fn done(&mut self, out: &mut Vec<u8>, _usage: Option<&Usage>) {
        out.extend_from_slice(DONE);
    }

    fn error(&mut self, out: &mut Vec<u8>, error: &RelayError, _sent: bool) {
        out.extend_from_slice(&error_event(error));
    }

    fn size(&self, batch: &Batch) -> usize {
        let events: usize = batch.events.iter().map(|e| CHUNK_FRAMING.len() + e.data.len()).sum();
        events + if matches!(batch.end, Some(End::Done { .. })) { DONE.len() } else { 0 }
    }
}

/// What `Chat` writes around a chunk (`data: ` and the blank line after), and at the end.
const CHUNK_FRAMING: &str = "data: \n\n";
const DONE: &[u8] = b"data: [DONE]\n\n";

/// Anthropic Messages (and any API of named events): `event: <name>` and `data: <json>` per
/// event; the last events (`message_stop`) come from the stream itself, so a clean end adds
/// nothing; a cut stream ends with `event: error` in Anthropic's shape and no `message_stop`.
pub struct Messages;

impl StreamEncoder for Messages {
    fn event(&mut self, out: &mut Vec<u8>, event: &OutputEvent) {
        if let Some(name) = &event.name {
            out.extend_from_slice(b"event: ");
            out.extend_from_slice(name.as_bytes());
            out.push(b'\n');
        }
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(event.data.as_bytes());
        out.extend_from_slice(b"\n\n");
    }

    fn done(&mut self, _out: &mut Vec<u8>, _usage: Option<&Usage>) {}

    fn error(&mut self, out: &mut Vec<u8>, error: &RelayError, _sent: bool) {
        out.extend_from_slice(&crate::error::anthropic::sse_event(error));
    }
}

/// OpenAI Responses: `event: <type>` and `data: <json>` per event, no `[DONE]`. The stream
/// itself ends with its terminal event: `response.completed` / `.incomplete`, or on a cut
/// `response.failed` (added by the stream's bridge, `StreamBridge::failed`). Only a cut
/// stream without that event (none should be) gets Responses' `error` event here.
#[derive(Default)]
pub struct Responses {
    /// Events written: the next `sequence_number`.
    written: u64,
    /// The last event written was `response.failed`.
    failed: bool,
}

impl StreamEncoder for Responses {
    fn event(&mut self, out: &mut Vec<u8>, event: &OutputEvent) {
        Messages.event(out, event);
        self.written += 1;
        self.failed = event.name.as_deref() == Some("response.failed");
    }

    fn done(&mut self, _out: &mut Vec<u8>, _usage: Option<&Usage>) {}

    fn error(&mut self, out: &mut Vec<u8>, error: &RelayError, _sent: bool) {
        if self.failed {
            return;
        }
        let data = serde_json::json!({
            "type": "error",
            "code": crate::error::openai::code(error.kind),
            "message": error.message,
            "param": error.param,
            "sequence_number": self.written,
        });
        out.extend_from_slice(b"event: error\ndata: ");
        out.extend_from_slice(data.to_string().as_bytes());
        out.extend_from_slice(b"\n\n");
    }
}

/// A chat stream's error event: the one place its bytes are made.
fn error_event(e: &RelayError) -> Bytes {
    e.sse_event()
}

/// The stream encoder of a client API.
pub fn stream_encoder(endpoint: Endpoint) -> Box<dyn StreamEncoder> {
    match endpoint {
        // Embeddings never stream; their answers are whole.
        Endpoint::ChatCompletions | Endpoint::Embeddings => Box::new(Chat),
        Endpoint::Messages | Endpoint::MessagesCountTokens => Box::new(Messages),
        Endpoint::Responses => Box::new(Responses::default()),
    }
}

/// The answer as the HTTP response for `endpoint`'s client.
pub fn respond(answer: Answer, endpoint: Endpoint, request_id: &str) -> Response<Body> {
    match answer {
        Answer::Whole(whole) => whole_response(whole, request_id),
        Answer::Stream(stream) => stream_response(stream, stream_encoder(endpoint), request_id),
    }
}

/// `respond` with the given stream encoder (one that also watches the events pass).
pub fn respond_with(answer: Answer, encoder: Box<dyn StreamEncoder>, request_id: &str) -> Response<Body> {
    match answer {
        Answer::Whole(whole) => whole_response(whole, request_id),
        Answer::Stream(stream) => stream_response(stream, encoder, request_id),
    }
}

fn whole_response(w: Whole, request_id: &str) -> Response<Body> {
    let mut resp = json_response(w.status, w.body);
    let h = resp.headers_mut();
    if let Some(v) = w.retry_after {
        h.insert(header::RETRY_AFTER, v);
    }
    set_request_id(h, request_id);
    resp
}

fn stream_response(stream: Box<Translation>, encoder: Box<dyn StreamEncoder>, request_id: &str) -> Response<Body> {
    let mut resp = Response::new(stream_body(stream, encoder));
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    set_request_id(h, request_id);
    resp
}

/// The response body: one frame per batch. Hyper polls the stream through it and drops it
/// (and the upstream with it) when the client goes away.
fn stream_body(stream: Box<Translation>, encoder: Box<dyn StreamEncoder>) -> Body {
    let body = futures_util::stream::unfold((stream, encoder), |(mut stream, mut encoder)| async move {
        loop {
            let batch = stream.next().await?;
            let bytes = encode(encoder.as_mut(), &batch);
            if !bytes.is_empty() {
                return Some((Ok(Frame::data(bytes)), (stream, encoder)));
            }
        }
    });
    http_body_util::StreamBody::new(body).boxed_unsync()
}

/// One batch in the client's framing.
fn encode(encoder: &mut dyn StreamEncoder, batch: &Batch) -> Bytes {
    let mut out = Vec::with_capacity(encoder.size(batch));
    for ev in &batch.events {
        encoder.event(&mut out, ev);
    }
    match &batch.end {
        None => {}
        Some(End::Done { usage }) => encoder.done(&mut out, usage.as_ref()),
        Some(End::Failed { error, sent }) => encoder.error(&mut out, error, *sent),
    }
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(data: &str) -> OutputEvent {
        OutputEvent { name: None, data: data.into() }
    }

    #[test]
    fn chat_frames_chunks_done_and_errors_as_before() {
        let mut chat = Chat;
        let batch = Batch { events: vec![chunk("{\"a\":1}"), chunk("{}")], end: Some(End::Done { usage: None }) };
        assert_eq!(&encode(&mut chat, &batch)[..], b"data: {\"a\":1}\n\ndata: {}\n\ndata: [DONE]\n\n");
        let error = RelayError::bad_upstream("cut");
        let batch = Batch { events: vec![chunk("{}")], end: Some(End::Failed { error, sent: true }) };
        let expected = "data: {}\n\ndata: {\"error\":{\"code\":\"bad_upstream_response\",\"message\":\"cut\",\"param\":null,\"type\":\"upstream_error\"}}\n\n";
        assert_eq!(String::from_utf8_lossy(&encode(&mut chat, &batch)), expected);
        assert!(encode(&mut chat, &Batch::default()).is_empty());
    }

    /// A frame filled to its capacity becomes `Bytes` without another allocation.
    #[test]
    fn chat_sizes_its_frames_exactly() {
        let mut chat = Chat;
        let events = vec![chunk("{\"a\":1}"), chunk("{}")];
        for end in [None, Some(End::Done { usage: None })] {
            let batch = Batch { events: events.clone(), end };
            assert_eq!(chat.size(&batch), encode(&mut chat, &batch).len());
        }
        assert_eq!(chat.size(&Batch::default()), 0);
    }

    #[test]
    fn messages_frames_named_events_and_ends_a_cut_stream_with_event_error() {
        let mut m = Messages;
        let ev = OutputEvent { name: Some("message_stop".into()), data: r#"{"type":"message_stop"}"#.into() };
        let batch = Batch { events: vec![ev], end: Some(End::Done { usage: None }) };
        assert_eq!(&encode(&mut m, &batch)[..], b"event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n");
        let batch =
            Batch { events: vec![], end: Some(End::Failed { error: RelayError::bad_upstream("cut"), sent: true }) };
        let expected =
            "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"api_error\",\"message\":\"cut\"}}\n\n";
        assert_eq!(String::from_utf8_lossy(&encode(&mut m, &batch)), expected);
    }

    #[test]
    fn responses_frames_typed_events_and_adds_nothing_after_response_failed() {
        let mut r = Responses::default();
        let ev = |name: &str| OutputEvent { name: Some(name.into()), data: format!("{{\"type\":\"{name}\"}}") };
        let cut = || Some(End::Failed { error: RelayError::bad_upstream("cut"), sent: true });
        let batch = Batch { events: vec![ev("response.created"), ev("response.failed")], end: cut() };
        let expected = "event: response.created\ndata: {\"type\":\"response.created\"}\n\n\
                        event: response.failed\ndata: {\"type\":\"response.failed\"}\n\n";
        assert_eq!(String::from_utf8_lossy(&encode(&mut r, &batch)), expected);
        // A clean end adds nothing: the terminal event is the stream's own.
        let batch = Batch { events: vec![ev("response.completed")], end: Some(End::Done { usage: None }) };
        assert!(!String::from_utf8_lossy(&encode(&mut Responses::default(), &batch)).contains("[DONE]"));
        // A cut without `response.failed` still ends with an error event the SDK reads.
        let mut r = Responses::default();
        let batch = Batch { events: vec![ev("response.created")], end: cut() };
        let text = String::from_utf8_lossy(&encode(&mut r, &batch)).into_owned();
        assert!(text.ends_with("event: error\ndata: {\"code\":\"bad_upstream_response\",\"message\":\"cut\",\"param\":null,\"sequence_number\":1,\"type\":\"error\"}\n\n"), "{text}");
    }
}
