//! The relay's typed answer to one call, before any client framing: a whole body, or a
//! stream of output events that ends cleanly or with an error. The HTTP handler encodes it
//! for the client's API (`encode`); the job runner consumes it directly.

use bytes::Bytes;
use http::{HeaderValue, StatusCode};

use crate::model::Usage;
pub use crate::stream::{Batch, End, Translation};

/// What `Relay::serve_body` answers.
pub enum Answer {
    Whole(Whole),
    /// Bounds, accounting and shutdown live inside the stream, so every consumer gets them.
    /// Boxed: the stream's state is large beside a whole answer.
    Stream(Box<Translation>),
}

impl Answer {
    /// The HTTP status it answers with (a stream's head is always 200).
    pub fn status(&self) -> StatusCode {
        match self {
            Answer::Whole(w) => w.status,
            Answer::Stream(_) => StatusCode::OK,
        }
    }
}

/// A complete answer (success or a vendor's error), in the call's client API.
pub struct Whole {
    pub status: StatusCode,
    pub body: Bytes,
    pub usage: Option<Usage>,
    /// The vendor's `Retry-After`, passed on.
    pub retry_after: Option<HeaderValue>,
}
