//! Client authentication: `Authorization: Bearer <key>` against the configured tokens.

use std::collections::HashMap;

use http::HeaderMap;
use sha2::{Digest, Sha256};

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

/// Anthropic's clients send the key in `x-api-key` (Claude Code with `ANTHROPIC_AUTH_TOKEN`
/// sends `Authorization: Bearer`): either is accepted on the Messages routes.
pub fn authenticate_anthropic<'a>(headers: &HeaderMap, snapshot: &'a Snapshot) -> Result<&'a Token, RelayError> {
    if headers.contains_key(http::header::AUTHORIZATION) {
        return authenticate(headers, snapshot);
    }
    let Some(value) = headers.get("x-api-key") else {
        return Err(RelayError::unauthorized(
            "You didn't provide an API key. Send it as 'x-api-key: <key>' or 'Authorization: Bearer <key>'.",
        ));
    };
    let key = value
        .to_str()
        .ok()
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .ok_or_else(|| RelayError::unauthorized("The x-api-key header must hold your API key."))?;
    snapshot.token(key).ok_or_else(|| RelayError::unauthorized("invalid x-api-key"))
}

/// Client keys by their SHA-256 digest, to positions in the token list.
///
/// A map keyed by the key itself would end its lookup with an ordinary `==` on the stored key,
/// which stops at the first differing byte: a timing oracle for how much of a key is right.
/// Keyed by digest, that comparison runs on digests, and how many leading bytes of a digest
/// match says nothing an attacker can steer without a preimage. The lookup costs one SHA-256
/// of the presented key.
pub struct KeyIndex(HashMap<[u8; 32], usize>);

impl KeyIndex {
    /// A key listed twice resolves to its last position, as a map collected from the list would.
    pub fn new<'a>(keys: impl IntoIterator<Item = &'a str>) -> KeyIndex {
        KeyIndex(keys.into_iter().enumerate().map(|(i, k)| (digest(k), i)).collect())
    }

    pub fn get(&self, key: &str) -> Option<usize> {
        self.0.get(&digest(key)).copied()
    }
}

fn digest(s: &str) -> [u8; 32] {
    Sha256::digest(s.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_index_finds_exact_keys_only() {
        let keys = ["sk-relay-alpha-0123456789", "sk-relay-beta-0123456789", "sk-relay-alpha-0123456789"];
        let idx = KeyIndex::new(keys);
        assert_eq!(idx.get("sk-relay-alpha-0123456789"), Some(2), "a repeated key resolves to its last entry");
        assert_eq!(idx.get("sk-relay-beta-0123456789"), Some(1));
        for miss in [
            "",
            "sk-relay-alpha",
            "sk-relay-alpha-012345678",
            "sk-relay-alpha-01234567890",
            "sk-relay-alpha-0123456788",
            "SK-RELAY-ALPHA-0123456789",
            " sk-relay-alpha-0123456789",
        ] {
            assert_eq!(idx.get(miss), None, "{miss:?}");
        }
        assert_eq!(KeyIndex::new([]).get("sk-relay-alpha-0123456789"), None);
    }
}
