//! The vendor request an adapter asks for, and the rules on what an adapter may send and read.

use bytes::Bytes;
use http::{HeaderValue, Method, Request, header};
use http_body_util::Full;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

use crate::adapter::Adapter;
use crate::config::Channel;
use crate::error::RelayError;
use crate::metrics::Metrics;
use crate::model::{AuthScheme, Header};

/// Headers an adapter may add to a vendor request: vendors need two or three.
pub const MAX_ADAPTER_HEADERS: usize = 64;
/// Longest adapter header (name and value): far above any real vendor header.
pub const MAX_ADAPTER_HEADER_BYTES: usize = 8 * 1024;

/// Vendor response headers an adapter may read: what a mapping could use (type, rate
/// limits, request ids), never ones that can carry a reflected credential or redirect
/// (`location`, `set-cookie`, `access-control-*`).
pub(crate) fn adapter_may_read(name: &str) -> bool {
    matches!(
        name,
        "content-type"
            | "retry-after"
            | "retry-after-ms"
            | "x-request-id"
            | "request-id"
            | "apim-request-id"
            | "x-ms-request-id"
            | "openai-processing-ms"
            | "openai-version"
    ) || ["x-ratelimit-", "anthropic-ratelimit-", "x-ms-ratelimit-"].iter().any(|p| name.starts_with(p))
}

/// Why an adapter's path is refused, if it is: it must stay under the channel's base URL.
fn unsafe_path(path: &str) -> Option<&'static str> {
    if !path.starts_with('/')
        || path.starts_with("//")
        || path.contains("://")
        || path.contains('#')
        || path.bytes().any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
    {
        return Some("must be a plain path starting with '/'");
    }
    let route = path.split('?').next().unwrap_or_default();
    if route.split('/').any(|seg| seg == "." || seg == "..") {
        return Some("must not contain '.' or '..' segments");
    }
    let lower = route.to_ascii_lowercase();
    if lower.contains("%2e") || lower.contains("%2f") || lower.contains("%5c") || route.contains('\\') {
        return Some("must not contain encoded dots or slashes, or backslashes");
    }
    None
}

/// The vendor request: the channel's base URL + the adapter's path, the adapter's headers
/// minus anything that could redirect or forge the connection, the channel's headers, and
/// the credential placed as the adapter's auth scheme says.
pub(crate) fn build_request(
    channel: &Channel,
    plugin: &Adapter,
    ureq: crate::model::UpstreamRequest,
    metrics: &Metrics,
) -> Result<Request<Full<Bytes>>, RelayError> {
    let bad = |why: String| {
        let why = crate::adapter::truncate(why, 512);
        RelayError::plugin(format!("adapter '{}' built an invalid request: {why}", plugin.name()))
    };
    let refuse = |limit: &str, why: String| {
        metrics.plugin_output_refused.inc([limit]);
        bad(why)
    };
    let path = ureq.path;
    if let Some(why) = unsafe_path(&path) {
        return Err(refuse("path", format!("path '{}' {why}", path.escape_debug())));
    }
    if ureq.method != "GET" && ureq.method != "POST" {
        return Err(refuse("method", format!("method '{}' (only GET and POST)", ureq.method.escape_debug())));
    }
    if ureq.headers.len() > MAX_ADAPTER_HEADERS {
        return Err(refuse(
            "headers",
            format!("{} headers, more than the limit of {MAX_ADAPTER_HEADERS}", ureq.headers.len()),
        ));
    }
    if let Some(h) = ureq.headers.iter().find(|h| h.name.len() + h.value.len() > MAX_ADAPTER_HEADER_BYTES) {
        return Err(refuse(
            "header_size",
            format!(
                "a header of {} bytes, more than the limit of {MAX_ADAPTER_HEADER_BYTES}",
                h.name.len() + h.value.len()
            ),
        ));
    }
    let mut url = String::with_capacity(channel.base_url.len() + path.len() + 64);
    url.push_str(&channel.base_url);
    url.push_str(&path);
    if let (AuthScheme::Query(param), Some(key)) = (&plugin.info.auth, &channel.api_key) {
        url.push(if path.contains('?') { '&' } else { '?' });
        url.push_str(&percent_encode(param));
        url.push('=');
        url.push_str(&percent_encode(key));
    }
    let uri: http::Uri = url.parse().map_err(|_| bad(format!("path '{path}' does not make a valid URL")))?;
    let method = if ureq.method == "GET" { Method::GET } else { Method::POST };

    let mut builder = Request::builder().method(method).uri(uri);
    let h = builder.headers_mut().expect("a fresh builder has headers");
    let auth_header = match &plugin.info.auth {
        AuthScheme::Header(name) => Some(name.to_ascii_lowercase()),
        _ => None,
    };
    for Header { name, value } in ureq.headers {
        let lower = name.to_ascii_lowercase();
        if is_reserved_header(&lower) || auth_header.as_deref() == Some(lower.as_str()) {
            continue;
        }
        let (Ok(n), Ok(v)) = (http::HeaderName::try_from(lower), HeaderValue::try_from(value)) else {
            return Err(bad(format!("header '{}'", name.escape_debug())));
        };
        // Never a panic on adapter output: the count is capped above, and this cannot fail
        // at 64 headers, but an error is still an answer.
        h.try_append(n, v).map_err(|_| bad("too many headers".into()))?;
    }
    for (n, v) in &channel.headers {
        h.insert(n.clone(), v.clone());
    }
    if !h.contains_key(header::CONTENT_TYPE) {
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    }
    h.insert(header::USER_AGENT, HeaderValue::from_static(concat!("relay/", env!("CARGO_PKG_VERSION"))));
    if let Some(key) = &channel.api_key {
        let credential = |v: String| {
            let mut v = HeaderValue::try_from(v).map_err(|_| {
                RelayError::unavailable(format!("the key of channel {} is not a valid header value", channel.name))
            })?;
            v.set_sensitive(true);
            Ok::<_, RelayError>(v)
        };
        match &plugin.info.auth {
            AuthScheme::Bearer => {
                h.insert(header::AUTHORIZATION, credential(format!("Bearer {key}"))?);
            }
            AuthScheme::Header(name) => {
                let n = http::HeaderName::try_from(name.as_str()).map_err(|_| bad(format!("auth header '{name}'")))?;
                h.insert(n, credential(key.clone())?);
            }
            AuthScheme::Query(_) | AuthScheme::None => {}
        }
    }
    builder.body(Full::new(Bytes::from(ureq.body))).map_err(|e| bad(e.to_string()))
}

/// Vendor answers the host refuses before an adapter sees them: redirects (never followed:
/// their target is not the configured vendor, and a `Location` may carry the key back),
/// protocol switches and other non-final heads, and bodies in an encoding the relay never
/// asked for (it sends no `Accept-Encoding`, and passes nothing it cannot read).
pub(crate) fn refused_answer(parts: &http::response::Parts, channel: &Channel) -> Option<RelayError> {
    let status = parts.status;
    if status.is_redirection() {
        return Some(RelayError::bad_upstream(format!(
            "channel {} answered a redirect ({status}), which the relay does not follow: check its base_url",
            channel.name
        )));
    }
    if status.is_informational() {
        return Some(RelayError::bad_upstream(format!(
            "channel {} answered {status} instead of a response",
            channel.name
        )));
    }
    let encoding = parts.headers.get(header::CONTENT_ENCODING).and_then(|v| v.to_str().ok()).unwrap_or("identity");
    if !encoding.eq_ignore_ascii_case("identity") {
        let encoding: String = encoding.chars().take(32).collect();
        return Some(RelayError::bad_upstream(format!(
            "channel {} answered with content-encoding {encoding}, which the relay did not ask for",
            channel.name
        )));
    }
    None
}

/// Headers an adapter may not set: they belong to the connection, or to the credential.
fn is_reserved_header(lower: &str) -> bool {
    matches!(
        lower,
        "host"
            | "content-length"
            | "transfer-encoding"
            | "connection"
            | "keep-alive"
            | "upgrade"
            | "te"
            | "trailer"
            | "proxy-authorization"
            | "proxy-connection"
            | "authorization"
            | "cookie"
    )
}

/// What a query-string name or value keeps as it is: the RFC 3986 unreserved characters.
/// Everything else, every byte of a non-ASCII character included, becomes `%XX` (upper-case hex).
pub(crate) const QUERY_COMPONENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~');

fn percent_encode(s: &str) -> String {
    utf8_percent_encode(s, QUERY_COMPONENT).to_string()
}

#[cfg(test)]
mod adapter_output_tests {
    use super::*;

    #[test]
    fn adapter_paths_stay_under_the_base_url() {
        for ok in ["/chat/completions", "/models/gemini-1.5:generateContent?alt=sse", "/a/b.c/d?x=../y"] {
            assert_eq!(unsafe_path(ok), None, "{ok}");
        }
        for bad in
            ["chat", "//evil/x", "/../admin", "/a/./b", "/a/..", "/%2e%2e/admin", "/a%2Fb", "/a%5cb", "/a\\b", "/a#b"]
        {
            assert!(unsafe_path(bad).is_some(), "{bad}");
        }
    }

    #[test]
    fn query_components_keep_only_unreserved_characters() {
        // The encoding the query auth scheme has always sent: byte by byte, upper-case hex.
        let reference = |s: &str| {
            s.bytes()
                .map(|b| {
                    if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
                        (b as char).to_string()
                    } else {
                        format!("%{b:02X}")
                    }
                })
                .collect::<String>()
        };
        let every_ascii: String = (0u8..=0x7f).map(char::from).collect();
        for s in [every_ascii.as_str(), "", "AIza-Sy_0.9~", "sk/a b+c=d&e?f#g%h", "clé☃", "\u{10FFFF}"] {
            assert_eq!(percent_encode(s), reference(s), "{s:?}");
        }
        assert_eq!(percent_encode("k/y +é"), "k%2Fy%20%2B%C3%A9");
    }

    #[test]
    fn adapters_read_only_harmless_response_headers() {
        for ok in ["content-type", "retry-after", "x-ratelimit-remaining-tokens", "anthropic-ratelimit-requests-limit"]
        {
            assert!(adapter_may_read(ok), "{ok}");
        }
        for bad in ["location", "set-cookie", "access-control-allow-origin", "x-echo", "www-authenticate"] {
            assert!(!adapter_may_read(bad), "{bad}");
        }
    }
}
