//! Client headers that cross to the vendor. The host decides which (an allowlist per client
//! API, docs/security.md) and checks them; they go only to a channel whose adapter speaks
//! the client's API natively (a bridged vendor speaks another API, where they mean nothing).
//! The adapter never chooses them, and no credential is on any list: the client's key is the
//! relay's own, and the channel's key is added by the host after the adapter is done.
//!
//! Anthropic Messages: `anthropic-beta` (the features Claude Code and the SDKs turn on) and
//! `anthropic-version`. They replace the adapter's own header of that name; a channel's
//! `headers` table still has the last word.

use http::HeaderMap;

use crate::error::RelayError;
use crate::model::Header;

/// Longest `anthropic-beta` accepted (all its values joined): a few dozen feature names.
pub const MAX_ANTHROPIC_BETA: usize = 1024;
/// Feature names in one `anthropic-beta`.
pub const MAX_ANTHROPIC_BETAS: usize = 32;
/// Longest `anthropic-version` (they are dates, `2023-06-01`).
pub const MAX_ANTHROPIC_VERSION: usize = 32;

/// The Messages headers a native channel receives: `anthropic-beta` (its values joined by
/// `,`, each a token of letters, digits, `.`, `_`, `-`) and `anthropic-version` (one such
/// token), when the client sent them. Anything else is a 400 naming the header.
pub fn anthropic(headers: &HeaderMap) -> Result<Vec<Header>, RelayError> {
    let mut out = Vec::new();
    let mut betas = Vec::new();
    for v in headers.get_all("anthropic-beta") {
        let v = v.to_str().map_err(|_| bad("anthropic-beta", "must be ASCII text"))?;
        for name in v.split(',').map(str::trim) {
            if !is_token(name) {
                return Err(bad(
                    "anthropic-beta",
                    "must be a comma-separated list of beta names (letters, digits, '.', '_', '-')",
                ));
            }
            betas.push(name);
        }
    }
    if !betas.is_empty() {
        if betas.len() > MAX_ANTHROPIC_BETAS {
            return Err(bad("anthropic-beta", &format!("names more than {MAX_ANTHROPIC_BETAS} betas")));
        }
        let value = betas.join(",");
        if value.len() > MAX_ANTHROPIC_BETA {
            return Err(bad("anthropic-beta", &format!("is longer than {MAX_ANTHROPIC_BETA} bytes")));
        }
        out.push(Header { name: "anthropic-beta".into(), value });
    }
    let mut versions = headers.get_all("anthropic-version").iter();
    if let Some(v) = versions.next() {
        if versions.next().is_some() {
            return Err(bad("anthropic-version", "must be sent once"));
        }
        let v = v.to_str().map_err(|_| bad("anthropic-version", "must be ASCII text"))?.trim();
        if !is_token(v) || v.len() > MAX_ANTHROPIC_VERSION {
            return Err(bad(
                "anthropic-version",
                &format!("must be a version such as 2023-06-01 (at most {MAX_ANTHROPIC_VERSION} bytes)"),
            ));
        }
        out.push(Header { name: "anthropic-version".into(), value: v.into() });
    }
    Ok(out)
}

/// `forward` over the adapter's headers: a forwarded header replaces the adapter's of the
/// same name.
pub fn merge(headers: &mut Vec<Header>, forward: &[Header]) {
    for f in forward {
        headers.retain(|h| !h.name.eq_ignore_ascii_case(&f.name));
        headers.push(f.clone());
    }
}

fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

fn bad(header: &str, why: &str) -> RelayError {
    RelayError::bad_request(format!("{header}: header {why}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.append(*n, http::HeaderValue::from_static(v));
        }
        h
    }

    fn values(h: &[Header]) -> Vec<(&str, &str)> {
        h.iter().map(|h| (h.name.as_str(), h.value.as_str())).collect()
    }

    #[test]
    fn betas_are_joined_and_the_version_kept() {
        let h = headers(&[
            ("anthropic-beta", "interleaved-thinking-2025-05-14, fine-grained-tool-streaming-2025-05-14"),
            ("anthropic-beta", "context-1m-2025-08-07"),
            ("anthropic-version", "2023-06-01"),
            ("x-api-key", "sk-client"),
        ]);
        let got = anthropic(&h).unwrap();
        assert_eq!(
            values(&got),
            [
                (
                    "anthropic-beta",
                    "interleaved-thinking-2025-05-14,fine-grained-tool-streaming-2025-05-14,context-1m-2025-08-07"
                ),
                ("anthropic-version", "2023-06-01"),
            ]
        );
        assert!(anthropic(&HeaderMap::new()).unwrap().is_empty());
    }

    #[test]
    fn bad_headers_are_refused_by_name() {
        for (h, v) in [
            ("anthropic-beta", "a b"),
            ("anthropic-beta", "a,,b"),
            ("anthropic-beta", "x;y"),
            ("anthropic-version", "2023/06/01"),
            ("anthropic-version", "2023-06-01-2023-06-01-2023-06-01-x"),
        ] {
            let e = anthropic(&headers(&[(h, v)])).unwrap_err();
            assert!(e.message.starts_with(h), "{v}: {}", e.message);
        }
        let long: &'static str = Box::leak(vec!["b"; 40].join(",").into_boxed_str());
        assert!(anthropic(&headers(&[("anthropic-beta", long)])).is_err());
        let huge: &'static str = Box::leak("b".repeat(MAX_ANTHROPIC_BETA + 1).into_boxed_str());
        assert!(anthropic(&headers(&[("anthropic-beta", huge)])).is_err());
    }

    #[test]
    fn forwarded_headers_replace_the_adapters() {
        let mut h = vec![
            Header { name: "Anthropic-Version".into(), value: "2023-01-01".into() },
            Header { name: "accept".into(), value: "text/event-stream".into() },
        ];
        merge(&mut h, &[Header { name: "anthropic-version".into(), value: "2024-01-01".into() }]);
        assert_eq!(values(&h), [("accept", "text/event-stream"), ("anthropic-version", "2024-01-01")]);
    }
}
