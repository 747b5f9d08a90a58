//! Client authentication: `Authorization: Bearer <key>` against the configured tokens.

use http::HeaderMap;

use crate::config::Token;
use crate::error::RelayError;
use crate::route::Snapshot;

pub fn authenticate<'a>(headers: &HeaderMap, snapshot: &'a Snapshot) -> Result<&'a Token, RelayError> {
    let Some(value) = headers.get(http::header::AUTHORIZATION) else {
        return Err(RelayError::unauthorized(
            "You didn't provide an API key. Send it as 'Authorization: Bearer <key>'.",
        ));
    };
    let key = value
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .ok_or_else(|| RelayError::unauthorized("The Authorization header must be 'Bearer <key>'."))?;
    // The key itself never goes into a message or a log line.
    snapshot.token(key).ok_or_else(|| RelayError::unauthorized("Incorrect API key provided."))
}
