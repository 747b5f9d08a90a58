//! Responses state: stored responses, conversations (`previous_response_id`) and background
//! mode, on the job store and engine (`jobs`), not a second store.
//!
//! A response is a job record with `endpoint = "responses"` and the relay's response id
//! (`bridge::responses::Meta`). A foreground response is stored when its answer ends (the
//! whole body, or the terminal event's `response` seen as the stream passes) and is marked
//! `foreground`: no job lists, gauges or owner quota see it. A background response is a job
//! that runs the request as a stream and stores each event; `GET ?stream=true` follows it.
//!
//! - `create`: `POST /v1/responses`: the chain expanded, then stored, background or relayed.
//! - `api`: retrieve, delete, input items, cancel.
//! - `chain`: the conversation a `previous_response_id` continues (pure).
//! - `view`: the Response object of a record, whatever its state.
//! - `events`: stored events: their type, their numbering, the terminal ones.

mod api;
pub mod chain;
mod create;
pub mod events;
pub mod view;

pub use api::{cancel, delete, get, input_items};
pub use create::create;

use crate::error::RelayError;

/// The id of a stored response's record, and the OpenAI answer for one this key cannot see.
fn not_found(id: &str) -> RelayError {
    RelayError::not_found(format!("Response with id '{id}' not found."))
}

impl From<chain::ChainError> for RelayError {
    fn from(e: chain::ChainError) -> RelayError {
        let param = "previous_response_id";
        match e {
            chain::ChainError::NotFound(_) => RelayError::not_found(e.to_string()).with_param(param),
            _ => RelayError::bad_request(e.to_string()).with_param(param),
        }
    }
}
