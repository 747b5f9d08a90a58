//! Vendor cooldowns: how long a vendor asked the relay to stay away (`Retry-After` and
//! the vendors' rate-limit reset headers), and the channels cooling down meanwhile, which
//! failover skips. The state is this process's (`LocalCooldowns`); `Cooldowns` is the seam
//! where a store shared by a fleet of relays would go.

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::{Duration, SystemTime};

use http::HeaderMap;
use tokio::time::Instant;

/// Where cooldowns are kept: in this process now, shared across relays later.
pub trait Cooldowns: Send + Sync {
    /// `channel` is not to be called before `until` (a later cooldown is kept, never shortened).
    fn cool(&self, channel: &str, until: Instant);
    /// How long `channel` is still cooling down, if it is.
    fn remaining(&self, channel: &str, now: Instant) -> Option<Duration>;
}

/// Cooldowns of this process, by channel name (so they outlive a config reload that keeps
/// the channel). Every request reads it for each candidate channel, and writes are rare (a
/// vendor's 429): a read-write lock keeps the readers from queueing behind each other.
#[derive(Default)]
pub struct LocalCooldowns {
    until: RwLock<HashMap<String, Instant>>,
}

impl Cooldowns for LocalCooldowns {
    fn cool(&self, channel: &str, until: Instant) {
        let mut map = self.until.write().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        // Expired entries go here, so the map holds at most the channels cooling now.
        map.retain(|_, t| *t > now);
        let slot = map.entry(channel.to_string()).or_insert(until);
        *slot = (*slot).max(until);
    }

    fn remaining(&self, channel: &str, now: Instant) -> Option<Duration> {
        let map = self.until.read().unwrap_or_else(|e| e.into_inner());
        if map.is_empty() {
            return None;
        }
        map.get(channel).and_then(|t| t.checked_duration_since(now)).filter(|d| !d.is_zero())
    }
}

/// How long a vendor's error response asks the client to wait, from (first that says):
/// `retry-after-ms`, `Retry-After` (seconds or an HTTP date), or the rate-limit reset
/// headers of a limit that is spent: OpenAI's `x-ratelimit-reset-{requests,tokens}` (a Go
/// duration, `6m0s`) and Anthropic's `anthropic-ratelimit-*-reset` (an RFC 3339 time). A
/// reset header whose `remaining` twin is not 0 is about a limit that still has room.
pub fn requested(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim);
    if let Some(ms) = text("retry-after-ms").and_then(|v| v.parse::<f64>().ok()).filter(|v| v.is_finite() && *v >= 0.0)
    {
        return Some(Duration::from_secs_f64(ms / 1000.0));
    }
    if let Some(v) = text("retry-after") {
        if let Ok(secs) = v.parse::<f64>() {
            return (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs.min(1e9)));
        }
        if let Ok(at) = httpdate::parse_http_date(v) {
            return Some(at.duration_since(now).unwrap_or_default());
        }
    }
    let spent = |remaining: &str| text(remaining).is_none_or(|v| v == "0");
    let mut longest: Option<Duration> = None;
    let mut take = |d: Duration| longest = Some(longest.map_or(d, |l| l.max(d)));
    for kind in ["requests", "tokens"] {
        if spent(&format!("x-ratelimit-remaining-{kind}"))
            && let Some(d) = text(&format!("x-ratelimit-reset-{kind}")).and_then(go_duration)
        {
            take(d);
        }
    }
    for kind in ["requests", "tokens", "input-tokens", "output-tokens"] {
        if spent(&format!("anthropic-ratelimit-{kind}-remaining"))
            && let Some(at) =
                text(&format!("anthropic-ratelimit-{kind}-reset")).and_then(|v| humantime::parse_rfc3339_weak(v).ok())
        {
            take(at.duration_since(now).unwrap_or_default());
        }
    }
    longest
}

/// A Go duration as OpenAI writes its resets: `1s`, `6m0s`, `20ms`, `1h2m3.5s`.
fn go_duration(s: &str) -> Option<Duration> {
    let mut total = 0.0f64;
    let mut rest = s;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let num_end = rest.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
        let value: f64 = rest[..num_end].parse().ok()?;
        rest = &rest[num_end..];
        let unit_end = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let scale = match &rest[..unit_end] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 1e-3,
            "us" | "µs" => 1e-6,
            "ns" => 1e-9,
            _ => return None,
        };
        total += value * scale;
        rest = &rest[unit_end..];
    }
    (total.is_finite() && total < 1e9).then(|| Duration::from_secs_f64(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(http::HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap());
        }
        h
    }

    #[test]
    fn reads_every_vendor_header() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let secs = |s: f64| Some(Duration::from_secs_f64(s));
        assert_eq!(requested(&headers(&[("retry-after", "2")]), now), secs(2.0));
        assert_eq!(requested(&headers(&[("retry-after", "1.5")]), now), secs(1.5));
        // `retry-after-ms` is the more precise of the two when both are sent.
        assert_eq!(requested(&headers(&[("retry-after", "2"), ("retry-after-ms", "1250")]), now), secs(1.25));
        let date = httpdate::fmt_http_date(now + Duration::from_secs(30));
        assert_eq!(requested(&headers(&[("retry-after", &date)]), now), secs(30.0));
        let past = httpdate::fmt_http_date(now - Duration::from_secs(30));
        assert_eq!(requested(&headers(&[("retry-after", &past)]), now), secs(0.0));
        assert_eq!(requested(&headers(&[("retry-after", "soon")]), now), None);
        assert_eq!(requested(&headers(&[("retry-after", "-1")]), now), None);
        // OpenAI: the reset of the limit that is spent.
        let openai = [
            ("x-ratelimit-remaining-requests", "0"),
            ("x-ratelimit-reset-requests", "1m2.5s"),
            ("x-ratelimit-remaining-tokens", "900"),
            ("x-ratelimit-reset-tokens", "6m0s"),
        ];
        assert_eq!(requested(&headers(&openai), now), secs(62.5));
        assert_eq!(requested(&headers(&[("x-ratelimit-reset-tokens", "20ms")]), now), secs(0.02));
        // Anthropic: RFC 3339 times.
        let anthropic = [
            ("anthropic-ratelimit-tokens-remaining", "0"),
            ("anthropic-ratelimit-tokens-reset", "2023-11-14T22:13:40Z"),
            ("anthropic-ratelimit-requests-remaining", "5"),
            ("anthropic-ratelimit-requests-reset", "2023-11-14T23:13:20Z"),
        ];
        assert_eq!(requested(&headers(&anthropic), now), secs(20.0));
        assert_eq!(requested(&headers(&[]), now), None);
        assert_eq!(go_duration("1h2m3s"), secs(3723.0));
        assert_eq!(go_duration(""), None);
        assert_eq!(go_duration("3 days"), None);
    }

    #[tokio::test]
    async fn a_cooldown_is_kept_until_it_ends_and_never_shortened() {
        let c = LocalCooldowns::default();
        let now = Instant::now();
        c.cool("a", now + Duration::from_secs(5));
        c.cool("a", now + Duration::from_secs(1));
        assert!(c.remaining("a", now).is_some_and(|d| d > Duration::from_secs(4)));
        assert_eq!(c.remaining("b", now), None);
        assert_eq!(c.remaining("a", now + Duration::from_secs(6)), None);
    }
}
