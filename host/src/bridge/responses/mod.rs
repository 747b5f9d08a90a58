//! The OpenAI Responses API through chat completions, and what the host decides about every
//! Responses call whatever its route.

use std::sync::Arc;

/// What the host decides about one Responses call before any channel is tried. The relay
/// names every response itself, so the client, a background job and the stored record all
/// use one id, whichever channel (bridged or native) answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Meta {
    /// `resp_` and 48 hex digits: the Response object's `id`.
    pub id: String,
    /// The stored response this one continues; its conversation is put before `input` by
    /// the host, so no vendor is asked for it.
    pub previous_response_id: Option<String>,
}

impl Meta {
    pub fn new() -> Arc<Meta> {
        Arc::new(Meta { id: new_id(), previous_response_id: None })
    }
}

/// A fresh response id: time-ordered, then random.
pub fn new_id() -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_micros());
    format!("resp_{:016x}{:032x}", now as u64, rand::random::<u128>())
}
