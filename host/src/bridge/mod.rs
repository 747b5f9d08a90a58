//! Client APIs served through an adapter's chat completions: the host converts the request
//! to chat, and the chat answer (whole, or a stream of chunks) back, so no adapter author
//! writes cross-API mapping. One module per client API (`messages`, `responses`), over
//! what they share here and in `chat` (the chat wire types, read and written typed).
//!
//! The choice is made per channel attempt (`Route::of`): an adapter that lists the client
//! API in `native` receives the body as the client sent it, unless the channel's `native`
//! key leaves the API out; any other adapter that maps chat completions is bridged. A stream is converted inside the typed stream
//! (`stream::Translation` holds a `StreamBridge`), so every consumer sees the client API's
//! events.

pub mod chat;
pub mod messages;
pub mod responses;

use std::sync::Arc;

use crate::answer::{Batch, End, Whole};
use crate::error::RelayError;
use crate::model::{AdapterInfo, Endpoint, OutputEvent, Usage};

/// How one channel attempt serves the client's API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// The adapter maps the client's API itself (chat completions, embeddings), or speaks
    /// it natively (`native`): the body goes to it as sent.
    Direct,
    /// Through the adapter's chat completions, converted by the host.
    Chat,
    /// Neither: the adapter cannot serve this API.
    Unsupported,
}

impl Route {
    /// `channel_native` is the channel's `native` key: it narrows the adapter's own list
    /// (`native = []` bridges every client API); unset, the adapter's list stands.
    pub fn of(endpoint: Endpoint, info: &AdapterInfo, channel_native: Option<&[Endpoint]>) -> Route {
        let native = info.native.contains(&endpoint) && channel_native.is_none_or(|n| n.contains(&endpoint));
        if info.endpoints.contains(&endpoint) || native {
            Route::Direct
        } else if bridged(endpoint) && info.endpoints.contains(&Endpoint::ChatCompletions) {
            Route::Chat
        } else {
            Route::Unsupported
        }
    }
}

/// The client APIs the host can convert through chat completions.
fn bridged(endpoint: Endpoint) -> bool {
    matches!(endpoint, Endpoint::Messages | Endpoint::Responses)
}

/// The chat completions request for a client body in `endpoint`'s API.
pub fn request(endpoint: Endpoint, body: &str) -> Result<String, RelayError> {
    match endpoint {
        Endpoint::Messages => messages::request(body),
        Endpoint::Responses => responses::request(body),
        _ => Err(RelayError::bad_request("this API is not served through chat completions")),
    }
}

/// A whole answer of `route` in `endpoint`'s API: a bridged chat answer (success or a vendor
/// error the adapter mapped to OpenAI's shape) converted; a native Responses answer renamed
/// to the relay's id. `call` is the Responses call (`None` for other APIs).
pub fn response(endpoint: Endpoint, route: Route, whole: Whole, model: &str, call: Option<&responses::Call>) -> Whole {
    match (endpoint, route, call) {
        (Endpoint::Messages, Route::Chat, _) => messages::response(whole, model),
        (Endpoint::Responses, Route::Chat, Some(call)) => responses::response(whole, call, model),
        (Endpoint::Responses, Route::Direct, Some(call)) => responses::native_response(whole, call),
        _ => whole,
    }
}

/// The per-stream state that turns `route`'s stream into `endpoint`'s events: chat chunks
/// converted, or a native Responses stream renamed; `None` when it passes as it is.
pub fn stream(
    endpoint: Endpoint,
    route: Route,
    model: &str,
    call: Option<&Arc<responses::Call>>,
) -> Option<Box<dyn StreamBridge>> {
    match (endpoint, route, call) {
        (Endpoint::Messages, Route::Chat, _) => Some(Box::new(messages::Stream::new(model))),
        (Endpoint::Responses, Route::Chat, Some(call)) => Some(Box::new(responses::Stream::new(call.clone(), model))),
        (Endpoint::Responses, Route::Direct, Some(call)) => Some(Box::new(responses::Native::new(call.clone()))),
        _ => None,
    }
}

/// A stream's conversion, applied to each batch before any consumer sees it. The batch's
/// chat chunks are replaced by the client API's events; a clean end adds the closing
/// events (a cut stream gets none: its consumer writes the API's error event instead).
pub trait StreamBridge: Send {
    /// Convert `batch` in place; an error is a chunk the bridge cannot read (the stream
    /// then ends with it, after the events converted before it).
    fn apply(&mut self, batch: &mut Batch) -> Result<(), String>;

    /// The stream was cut (after `apply`, or by it): the API's own closing events for a cut
    /// stream, when it has them (Responses' `response.failed`), go to `out`. By default
    /// none: the encoder writes the API's error event.
    fn failed(&mut self, _error: &RelayError, _out: &mut Vec<OutputEvent>) {}
}

/// The `apply` of a bridge made chunk by chunk: each chat chunk of `batch` becomes what
/// `chunk` writes (up to `per_chunk` events each), a clean end adds what `done` writes. A
/// chunk `chunk` cannot read ends the stream after the events made before it.
pub(crate) fn convert<S>(
    state: &mut S,
    batch: &mut Batch,
    per_chunk: usize,
    chunk: fn(&mut S, &str, &mut Vec<OutputEvent>) -> Result<(), String>,
    done: fn(&mut S, Option<&Usage>, &mut Vec<OutputEvent>),
) -> Result<(), String> {
    let chunks = std::mem::take(&mut batch.events);
    let mut out = Vec::with_capacity(chunks.len() * per_chunk + 2);
    for c in &chunks {
        if let Err(e) = chunk(state, &c.data, &mut out) {
            batch.events = out;
            return Err(e);
        }
    }
    if let Some(End::Done { usage }) = &batch.end {
        done(state, usage.as_ref(), &mut out);
    }
    batch.events = out;
    Ok(())
}

#[cfg(test)]
mod route_tests {
    use super::*;
    use crate::model::{AuthScheme, StreamFormat};

    fn info(native: &[Endpoint]) -> AdapterInfo {
        AdapterInfo {
            name: "a".into(),
            version: "1".into(),
            description: String::new(),
            endpoints: vec![Endpoint::ChatCompletions, Endpoint::Embeddings],
            native: native.to_vec(),
            auth: AuthScheme::Bearer,
            stream_format: StreamFormat::Sse,
        }
    }

    #[test]
    fn a_channels_native_key_narrows_the_adapters_list() {
        let both = info(&[Endpoint::Messages]);
        assert_eq!(Route::of(Endpoint::Messages, &both, None), Route::Direct, "unset: the adapter's list");
        assert_eq!(Route::of(Endpoint::Messages, &both, Some(&[Endpoint::Messages])), Route::Direct);
        assert_eq!(Route::of(Endpoint::Messages, &both, Some(&[])), Route::Chat, "native = [] bridges");
        // A channel cannot make an adapter speak what it does not.
        assert_eq!(Route::of(Endpoint::Messages, &info(&[]), Some(&[Endpoint::Messages])), Route::Chat);
        // Chat completions is the adapter's own API whatever `native` says.
        assert_eq!(Route::of(Endpoint::ChatCompletions, &both, Some(&[])), Route::Direct);
    }
}
