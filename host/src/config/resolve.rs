//! Resolution rules: raw file values into resolved ones, with errors naming the key and its line.

use std::path::Path;
use std::time::Duration;

use anyhow::{Result, anyhow, bail};
use http::Uri;
use toml::Spanned;

use super::raw::{RawConfig, RawJobs, RawLimits, RawRetry, RawTimeouts};
use super::{
    AdapterLimits, DEFAULT_JOB_MAX_BYTES, DEFAULT_JOB_MAX_STORE_BYTES, DEFAULT_JOB_RETENTION,
    DEFAULT_JOB_SWEEP_INTERVAL, DEFAULT_JOBS_DIR, DEFAULT_JOBS_MAX_PER_OWNER, DEFAULT_JOBS_MAX_QUEUED,
    DEFAULT_JOBS_MAX_RUNNING, DEFAULT_PLUGIN_WALL_TIMEOUT_FACTOR, DEFAULT_SHUTDOWN_GRACE, ENV_TIMEOUTS, Env,
    JobsConfig, Limits, MAX_RETENTION_SECS, MAX_RETRY_ATTEMPTS, MAX_TIMEOUT_SECS, MIN_DURATION_SECS, RetryConfig,
    Timeouts,
};

/// True when a config text holds a secret inline (not through `*_env`) and `mode` lets
/// the file's group or others read it.
pub(super) fn readable_secrets(text: &str, mode: u32) -> bool {
    let Ok(raw) = toml::from_str::<RawConfig>(text) else { return false };
    let inline = raw.admin_token.is_some()
        || raw.channels.iter().any(|c| c.get_ref().api_key.is_some())
        || raw.tokens.iter().any(|t| t.get_ref().key.is_some());
    inline && mode & 0o044 != 0
}

pub(super) fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())].iter().filter(|&&b| b == b'\n').count() + 1
}

fn seconds(v: &Spanned<f64>, key: &str, text: &str) -> Result<Duration> {
    let secs = *v.get_ref();
    to_duration(secs).map_err(|e| anyhow!("{key} (line {}): {e}", line_of(text, v.span().start)))
}

fn to_duration(secs: f64) -> Result<Duration, String> {
    if !secs.is_finite() || secs <= 0.0 {
        return Err(format!("must be a positive number of seconds, got {secs}"));
    }
    // Below a millisecond a bound rounds to zero in timers (and `interval(0)` panics).
    if secs < MIN_DURATION_SECS {
        return Err(format!("{secs} s is less than the minimum of {MIN_DURATION_SECS} s"));
    }
    if secs > MAX_TIMEOUT_SECS {
        return Err(format!("{secs} s is more than the maximum of {MAX_TIMEOUT_SECS} s"));
    }
    Ok(Duration::from_secs_f64(secs))
}

pub(super) fn resolve_timeouts(raw: &RawTimeouts, base: Timeouts, table: &str, text: &str) -> Result<Timeouts> {
    let mut t = base;
    let fields: [(&Option<Spanned<f64>>, &mut Duration, &str); 7] = [
        (&raw.dns, &mut t.dns, "dns"),
        (&raw.connect, &mut t.connect, "connect"),
        (&raw.tls_handshake, &mut t.tls_handshake, "tls_handshake"),
        (&raw.response_header, &mut t.response_header, "response_header"),
        (&raw.stream_idle, &mut t.stream_idle, "stream_idle"),
        (&raw.total, &mut t.total, "total"),
        (&raw.client_body, &mut t.client_body, "client_body"),
    ];
    for (value, slot, key) in fields {
        if let Some(v) = value {
            *slot = seconds(v, &format!("{table}.{key}"), text)?;
        }
    }
    if let Some(v) = &raw.first_token {
        t.first_token = Some(seconds(v, &format!("{table}.first_token"), text)?);
    }
    Ok(t)
}

/// `[retry]` (or `[channel.retry]` over the top-level one as `base`).
pub(super) fn resolve_retry(raw: &RawRetry, base: RetryConfig, table: &str, text: &str) -> Result<RetryConfig> {
    let mut r = base;
    if let Some(v) = &raw.attempts {
        let n = *v.get_ref();
        if !(1..=i64::from(MAX_RETRY_ATTEMPTS)).contains(&n) {
            bail!(
                "{table}.attempts (line {}): must be from 1 to {MAX_RETRY_ATTEMPTS}, got {n}",
                line_of(text, v.span().start)
            );
        }
        r.attempts = u32::try_from(n).unwrap_or(1);
    }
    let fields: [(&Option<Spanned<f64>>, &mut Duration, &str); 4] = [
        (&raw.backoff, &mut r.backoff, "backoff"),
        (&raw.backoff_max, &mut r.backoff_max, "backoff_max"),
        (&raw.budget, &mut r.budget, "budget"),
        (&raw.max_cooldown, &mut r.max_cooldown, "max_cooldown"),
    ];
    for (value, slot, key) in fields {
        if let Some(v) = value {
            *slot = seconds(v, &format!("{table}.{key}"), text)?;
        }
    }
    if r.backoff_max < r.backoff {
        let line = raw.backoff_max.as_ref().or(raw.backoff.as_ref()).map_or(0, |v| line_of(text, v.span().start));
        bail!("{table}.backoff_max (line {line}): must be at least backoff ({})", crate::config::fmt_secs(r.backoff));
    }
    Ok(r)
}

pub(super) fn apply_env_timeouts(t: &mut Timeouts, env: &dyn Env) -> Result<()> {
    let slots: [&mut Duration; 5] =
        [&mut t.connect, &mut t.tls_handshake, &mut t.response_header, &mut t.stream_idle, &mut t.total];
    for (name, slot) in ENV_TIMEOUTS.iter().zip(slots) {
        if let Some(v) = env.var(name) {
            let secs: f64 = v
                .trim()
                .parse()
                .map_err(|_| anyhow!("environment variable {name}: '{v}' is not a number of seconds"))?;
            *slot = to_duration(secs).map_err(|e| anyhow!("environment variable {name}: {e}"))?;
        }
    }
    Ok(())
}

fn positive_limit(v: &Spanned<u64>, key: &str, text: &str) -> Result<u64> {
    if *v.get_ref() == 0 {
        bail!("limits.{key} (line {}): must be greater than 0", line_of(text, v.span().start));
    }
    Ok(*v.get_ref())
}

/// The `[limits]` keys a reload applies.
pub(super) fn resolve_limits(raw: &RawLimits, text: &str) -> Result<Limits> {
    let mut l = Limits::default();
    let positive = |v: &Spanned<u64>, key: &str| positive_limit(v, key, text);
    if let Some(v) = &raw.max_request_body {
        l.max_request_body = positive(v, "max_request_body")?;
    }
    if let Some(v) = &raw.max_response_body {
        l.max_response_body = positive(v, "max_response_body")?;
    }
    if let Some(v) = &raw.max_stream_event {
        l.max_stream_event = usize::try_from(positive(v, "max_stream_event")?).unwrap_or(usize::MAX);
    }
    if let Some(v) = &raw.pool_idle_timeout {
        l.pool_idle_timeout = seconds(v, "limits.pool_idle_timeout", text)?;
    }
    if let Some(v) = raw.pool_max_idle_per_host {
        l.pool_max_idle_per_host = v;
    }
    let durations: [(&Option<Spanned<f64>>, &mut Duration, &str); 5] = [
        (&raw.client_header_timeout, &mut l.client_header_timeout, "limits.client_header_timeout"),
        (&raw.client_idle_timeout, &mut l.client_idle_timeout, "limits.client_idle_timeout"),
        (&raw.client_write_timeout, &mut l.client_write_timeout, "limits.client_write_timeout"),
        (&raw.lingering_close, &mut l.lingering_close, "limits.lingering_close"),
        (&raw.http2_keep_alive_interval, &mut l.http2_keep_alive_interval, "limits.http2_keep_alive_interval"),
    ];
    for (v, slot, key) in durations {
        if let Some(v) = v {
            *slot = seconds(v, key, text)?;
        }
    }
    if let Some(v) = &raw.max_connections {
        l.max_connections = usize::try_from(positive(v, "max_connections")?).unwrap_or(usize::MAX);
    }
    if let Some(v) = &raw.http2_max_concurrent_streams {
        l.http2_max_concurrent_streams =
            u32::try_from(positive(v, "http2_max_concurrent_streams")?).unwrap_or(u32::MAX);
    }
    if let Some(v) = &raw.max_inflight_body_bytes {
        l.max_inflight_body_bytes = positive(v, "max_inflight_body_bytes")?;
    }
    if l.max_inflight_body_bytes < l.max_request_body {
        bail!(
            "limits.max_inflight_body_bytes ({}) must be at least limits.max_request_body ({}): no body could ever be read",
            l.max_inflight_body_bytes,
            l.max_request_body
        );
    }
    Ok(l)
}

/// The `[limits]` keys the process starts with: the adapter engine's bounds and
/// `shutdown_grace`.
pub(super) fn resolve_startup_limits(raw: &RawLimits, text: &str) -> Result<(AdapterLimits, Duration)> {
    let mut a = AdapterLimits::default();
    let mut shutdown_grace = DEFAULT_SHUTDOWN_GRACE;
    let positive = |v: &Spanned<u64>, key: &str| positive_limit(v, key, text);
    if let Some(v) = &raw.plugin_memory_mib {
        a.memory = positive(v, "plugin_memory_mib")?.saturating_mul(1024 * 1024);
    }
    if let Some(v) = &raw.plugin_call_timeout_ms {
        a.call_timeout = Duration::from_millis(positive(v, "plugin_call_timeout_ms")?);
    }
    if let Some(v) = &raw.plugin_instances {
        a.instances = u32::try_from(positive(v, "plugin_instances")?).unwrap_or(u32::MAX);
    }
    if let Some(v) = &raw.plugin_instance_uses {
        a.instance_uses = u32::try_from(positive(v, "plugin_instance_uses")?).unwrap_or(u32::MAX);
    }
    if let Some(v) = &raw.plugin_streams_per_instance {
        a.streams_per_instance = u32::try_from(positive(v, "plugin_streams_per_instance")?).unwrap_or(u32::MAX);
    }
    a.wall_timeout = a.call_timeout.saturating_mul(DEFAULT_PLUGIN_WALL_TIMEOUT_FACTOR);
    if let Some(v) = &raw.plugin_wall_timeout_ms {
        a.wall_timeout = Duration::from_millis(positive(v, "plugin_wall_timeout_ms")?);
        if a.wall_timeout < a.call_timeout {
            bail!(
                "limits.plugin_wall_timeout_ms (line {}): must be at least plugin_call_timeout_ms ({} ms)",
                line_of(text, v.span().start),
                a.call_timeout.as_millis()
            );
        }
    }
    if let Some(v) = &raw.shutdown_grace {
        shutdown_grace = seconds(v, "limits.shutdown_grace", text)?;
    }
    Ok((a, shutdown_grace))
}

pub(super) fn resolve_jobs(raw: &RawJobs, base: &Path, data_dir: &Path, text: &str) -> Result<JobsConfig> {
    let at = |v: &std::ops::Range<usize>| line_of(text, v.start);
    let span_secs = |v: &Spanned<f64>, key: &str| -> Result<Duration> {
        let secs = *v.get_ref();
        if !secs.is_finite() || !(MIN_DURATION_SECS..=MAX_RETENTION_SECS).contains(&secs) {
            bail!(
                "jobs.{key} (line {}): must be from {MIN_DURATION_SECS} to {MAX_RETENTION_SECS} seconds, got {secs}",
                at(&v.span())
            );
        }
        Ok(Duration::from_secs_f64(secs))
    };
    let count = |v: &Spanned<u64>, key: &str| -> Result<u64> {
        if *v.get_ref() == 0 {
            bail!("jobs.{key} (line {}): must be greater than 0", at(&v.span()));
        }
        Ok(*v.get_ref())
    };
    let as_usize = |n: u64| usize::try_from(n).unwrap_or(usize::MAX);
    Ok(JobsConfig {
        path: raw.path.as_ref().map_or_else(|| data_dir.join(DEFAULT_JOBS_DIR), |p| base.join(p)),
        retention: raw
            .retention
            .as_ref()
            .map(|v| span_secs(v, "retention"))
            .transpose()?
            .unwrap_or(DEFAULT_JOB_RETENTION),
        sweep_interval: raw
            .sweep_interval
            .as_ref()
            .map(|v| span_secs(v, "sweep_interval"))
            .transpose()?
            .unwrap_or(DEFAULT_JOB_SWEEP_INTERVAL),
        max_running: raw
            .max_running
            .as_ref()
            .map(|v| count(v, "max_running"))
            .transpose()?
            .map_or(DEFAULT_JOBS_MAX_RUNNING, as_usize),
        max_queued: raw
            .max_queued
            .as_ref()
            .map(|v| count(v, "max_queued"))
            .transpose()?
            .map_or(DEFAULT_JOBS_MAX_QUEUED, as_usize),
        max_bytes_per_job: raw
            .max_bytes_per_job
            .as_ref()
            .map(|v| count(v, "max_bytes_per_job"))
            .transpose()?
            .unwrap_or(DEFAULT_JOB_MAX_BYTES),
        max_per_owner: raw
            .max_per_owner
            .as_ref()
            .map(|v| count(v, "max_per_owner"))
            .transpose()?
            .unwrap_or(DEFAULT_JOBS_MAX_PER_OWNER),
        max_store_bytes: raw
            .max_store_bytes
            .as_ref()
            .map(|v| count(v, "max_store_bytes"))
            .transpose()?
            .unwrap_or(DEFAULT_JOB_MAX_STORE_BYTES),
    })
}

/// `base_url` follows each vendor SDK's convention (OpenAI's includes `/v1`); the adapter's
/// path is appended to it. No query or fragment: those would make the join ambiguous.
pub(super) fn validate_base_url(s: &str) -> Result<String, String> {
    let trimmed = s.trim_end_matches('/');
    let uri: Uri = trimmed.parse().map_err(|e| format!("'{s}' is not a URL: {e}"))?;
    match uri.scheme_str() {
        Some("http") | Some("https") => {}
        _ => return Err(format!("'{s}' must start with http:// or https://")),
    }
    if uri.authority().is_none_or(|a| a.host().is_empty()) {
        return Err(format!("'{s}' has no host"));
    }
    if uri.query().is_some() || trimmed.contains('#') {
        return Err(format!("'{s}' must not have a query or fragment"));
    }
    if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
        return Err(format!("'{s}' must not carry credentials; use api_key or api_key_env"));
    }
    Ok(trimmed.to_string())
}
