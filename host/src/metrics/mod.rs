//! Prometheus metrics: what the seed's operators had to script by hand (goroutine counts,
//! docker stats, timeout probes), built in. Gauges move through RAII guards, so every
//! increment has its decrement on every path, panics and cancellations included.

mod primitives;

use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::Ordering;

use primitives::label_pairs;

use crate::error::{ErrorKind, Fault};
pub use primitives::{
    Counter, FOLDED_LABEL, Family, Gauge, GaugeGuard, Histogram, MAX_SERIES_PER_FAMILY, OwnedGaugeGuard,
};

/// The states of an async job, in the order of `Metrics::jobs`.
pub const JOB_STATUSES: [&str; 5] = ["queued", "running", "succeeded", "failed", "cancelled"];

/// Why a job submission was refused, in the order of `Metrics::job_refusals`: the queue
/// (`jobs.max_queued`), the key's quota (`jobs.max_per_owner`), the store's size
/// (`jobs.max_store_bytes`), the store being down.
pub const JOB_REFUSALS: [&str; 4] = ["queue_full", "owner_quota", "store_full", "store_down"];

/// What one vendor attempt came to, the `outcome` of `relay_upstream_attempts_total`: the
/// response head's status class, or why there was no head. A closed set, so the family
/// holds at most channels × 7 series.
pub const UPSTREAM_OUTCOMES: [&str; 7] =
    ["ok", "status_4xx", "status_429", "status_5xx", "timeout", "connect_error", "error"];

/// The `endpoint` labels of `relay_errors_total`: the relayed APIs (what the access record
/// names) and, for a panic caught at the server edge, the route it came from.
pub const ERROR_ENDPOINTS: [&str; 10] = [
    "chat_completions",
    "embeddings",
    "messages",
    "responses",
    "jobs",
    "models",
    "admin",
    "metrics",
    "healthz",
    "other",
];

/// The `reason` labels of `relay_plugin_traps_total` (see `adapter::engine::trap_reason`).
pub const PLUGIN_TRAP_REASONS: [&str; 8] =
    ["panic", "cpu_limit", "memory_limit", "stack_overflow", "wall_limit", "wasi_denied", "trap", "error"];

pub struct Metrics {
    pub inflight_requests: Gauge,
    pub active_streams: Gauge,
    pub upstream_connections_open: Gauge,
    /// Adapter instances alive for transforms (warm or in a call), and hosting streams.
    pub plugin_instances: Gauge,
    pub plugin_stream_instances: Gauge,
    pub client_disconnects: Counter,
    /// stage: connect, tls_handshake, response_header, stream_idle, total, client_body
    pub timeouts: Family<1>,
    /// result: ok, error, timeout (host names only; IP addresses need no lookup)
    pub dns_lookups: Family<1>,
    pub requests: Family<3>,
    /// Requests that ended in an error, by (endpoint, fault, kind): `error::Fault::name`
    /// and `error::ErrorKind::name`, both closed sets.
    pub errors: Family<3>,
    pub tokens: Family<3>,
    pub plugin_calls: Family<2>,
    pub plugin_errors: Family<2>,
    pub plugin_traps: Family<2>,
    /// Fresh adapter instances made (warm ones are reused; see `plugin_instance_uses`).
    pub plugin_instantiations: Family<1>,
    /// outcome: loaded, refused, removed
    pub plugin_reloads: Family<2>,
    /// outcome: applied, refused
    pub config_reloads: Family<1>,
    /// (name, version, sha256) of the adapters in service.
    plugins: Mutex<Vec<[String; 3]>>,
    pub request_duration: Histogram,
    pub time_to_first_byte: Histogram,
    /// Async jobs in the store, by `JOB_STATUSES` index.
    pub jobs: [Gauge; JOB_STATUSES.len()],
    pub job_events: Counter,
    /// 1 while the job store is open, 0 while it is down (async routes answer 503).
    pub job_store_up: Gauge,
    /// Estimated bytes the job store holds (what `jobs.max_store_bytes` bounds).
    pub job_store_bytes: Gauge,
    /// Job records that did not decode: skipped, reported once each.
    pub job_store_bad_records: Counter,
    /// Times the job store was opened again after a failure.
    pub job_store_reopens: Counter,
    /// Submissions refused, by `JOB_REFUSALS` index.
    pub job_refusals: [Counter; JOB_REFUSALS.len()],
    /// Client connections being served (below `limits.max_connections`).
    pub connections_open: Gauge,
    /// Connections past the cap held only to answer 503 or `/healthz`.
    pub connections_reserve_open: Gauge,
    /// Connections refused at the cap (answered 503 from the reserve, or closed at once).
    pub connections_refused: Counter,
    /// Request body bytes buffered now (requests being read or relayed, queued jobs).
    pub inflight_body_bytes: Gauge,
    /// Requests answered 503 because the in-flight body budget was spent.
    pub body_budget_refused: Counter,
    /// Requests refused because their `model` was too long or had characters outside the set.
    pub models_refused: Counter,
    /// Adapter calls cut at the host's wall-clock bound (`limits.plugin_wall_timeout_ms`).
    pub plugin_wall_timeouts: Counter,
    /// Adapter output refused by a host-side cap, by `PLUGIN_OUTPUT_LIMITS`.
    pub plugin_output_refused: Family<1>,
    /// Occurrences of a channel key removed from upstream data before an adapter saw it.
    pub upstream_key_redactions: Counter,
    /// Vendor attempts by (channel, `UPSTREAM_OUTCOMES`), failed-over ones included.
    pub upstream_attempts: Family<2>,
    /// The most idle vendor connections the pools keep: channels × `pool_max_idle_per_host`.
    pub upstream_idle_max: Gauge,
    /// Same-channel retries, by (channel, `error::retry_reason`).
    pub retries: Family<2>,
    /// Moves from one channel to the next within a request, by (from, to, reason).
    pub failovers: Family<3>,
    /// Requests answered 429 without calling a vendor: every channel was cooling down.
    pub cooling_refused: Counter,
    /// Vendor stream events an adapter could not read and left out, by channel.
    pub stream_events_skipped: Family<1>,
}

/// The reasons a channel is retried (`error::policy` answers `SameChannel`), for zero samples.
pub const RETRY_REASONS_SAME_CHANNEL: [&str; 4] = ["connect", "dropped", "status_429", "status_5xx"];
/// The reasons a request moves on to another channel, for zero samples.
pub const FAILOVER_REASONS: [&str; 9] = [
    "connect",
    "dropped",
    "status_429",
    "status_5xx",
    "timeout",
    "first_token",
    "stream_start",
    "context_length",
    "adapter",
];

/// The host-side caps on adapter output, the labels of `relay_plugin_output_refused_total`.
pub const PLUGIN_OUTPUT_LIMITS: [&str; 7] =
    ["chunks", "bytes", "line_break", "headers", "header_size", "path", "method"];

impl Default for Metrics {
    fn default() -> Self {
        let m = Self {
            inflight_requests: Gauge::default(),
            active_streams: Gauge::default(),
            upstream_connections_open: Gauge::default(),
            plugin_instances: Gauge::default(),
            plugin_stream_instances: Gauge::default(),
            client_disconnects: Counter::default(),
            timeouts: Family::new(["stage"]),
            dns_lookups: Family::new(["result"]),
            requests: Family::new(["channel", "model", "status"]),
            errors: Family::new(["endpoint", "fault", "kind"]),
            tokens: Family::new(["channel", "model", "kind"]),
            plugin_calls: Family::new(["plugin", "call"]),
            plugin_errors: Family::new(["plugin", "kind"]),
            plugin_traps: Family::new(["plugin", "reason"]),
            plugin_instantiations: Family::new(["plugin"]),
            plugin_reloads: Family::new(["plugin", "outcome"]),
            config_reloads: Family::new(["outcome"]),
            plugins: Mutex::new(Vec::new()),
            request_duration: Histogram::default(),
            time_to_first_byte: Histogram::default(),
            jobs: Default::default(),
            job_events: Counter::default(),
            job_store_up: Gauge::default(),
            job_store_bytes: Gauge::default(),
            job_store_bad_records: Counter::default(),
            job_store_reopens: Counter::default(),
            job_refusals: Default::default(),
            connections_open: Gauge::default(),
            connections_reserve_open: Gauge::default(),
            connections_refused: Counter::default(),
            inflight_body_bytes: Gauge::default(),
            body_budget_refused: Counter::default(),
            models_refused: Counter::default(),
            plugin_wall_timeouts: Counter::default(),
            plugin_output_refused: {
                let f = Family::new(["limit"]);
                for limit in PLUGIN_OUTPUT_LIMITS {
                    f.add([limit], 0);
                }
                f
            },
            upstream_key_redactions: Counter::default(),
            upstream_attempts: Family::new(["channel", "outcome"]),
            upstream_idle_max: Gauge::default(),
            retries: Family::new(["channel", "reason"]),
            failovers: Family::new(["from", "to", "reason"]),
            cooling_refused: Counter::default(),
            stream_events_skipped: Family::new(["channel"]),
        };
        // A zero sample from start, so `increase()` sees the first failure.
        for result in ["ok", "error", "timeout"] {
            m.dns_lookups.add([result], 0);
        }
        // The client-edge bounds are exported from the start, at 0.
        for stage in ["client_header", "client_idle", "client_write"] {
            m.timeouts.add([stage], 0);
        }
        for outcome in ["applied", "refused"] {
            m.config_reloads.add([outcome], 0);
        }
        // The relay's own defects, from start, so the first one is an increase.
        for endpoint in ERROR_ENDPOINTS {
            m.errors.add([endpoint, Fault::Relay.name(), ErrorKind::Internal.name()], 0);
        }
        m
    }
}

impl Metrics {
    /// A configuration is in service: zero samples for its channels' attempt outcomes (so
    /// the first vendor error is an increase, not a new series) and the pools' idle bound.
    pub fn channels_configured<'a>(&self, channels: impl IntoIterator<Item = &'a str>, idle_per_host: usize) {
        let mut n = 0usize;
        for channel in channels {
            n += 1;
            for outcome in UPSTREAM_OUTCOMES {
                self.upstream_attempts.add([channel, outcome], 0);
            }
            for reason in RETRY_REASONS_SAME_CHANNEL {
                self.retries.add([channel, reason], 0);
            }
            self.stream_events_skipped.add([channel], 0);
        }
        self.upstream_idle_max.set(i64::try_from(n.saturating_mul(idle_per_host)).unwrap_or(i64::MAX));
    }

    /// The channel pairs failover may move between (`route::Snapshot::failover_pairs`): zero
    /// samples for each reason, up to half the family's series bound (a larger mesh gets
    /// its series as they happen).
    pub fn failover_pairs_configured<'a>(&self, pairs: impl IntoIterator<Item = (&'a str, &'a str)>) {
        let mut n = 0;
        for (from, to) in pairs {
            n += FAILOVER_REASONS.len();
            if n > MAX_SERIES_PER_FAMILY / 2 {
                return;
            }
            for reason in FAILOVER_REASONS {
                self.failovers.add([from, to, reason], 0);
            }
        }
    }

    /// An adapter file was loaded: counted, and zero samples for its traps and later
    /// reload outcomes, so the first trap or refused upgrade after a start is an increase.
    pub fn plugin_loaded(&self, plugin: &str) {
        self.plugin_reloads.inc([plugin, "loaded"]);
        for outcome in ["refused", "removed"] {
            self.plugin_reloads.add([plugin, outcome], 0);
        }
        for reason in PLUGIN_TRAP_REASONS {
            self.plugin_traps.add([plugin, reason], 0);
        }
    }

    /// The adapters now in service, for `relay_plugin_info`.
    pub fn set_plugins(&self, mut plugins: Vec<[String; 3]>) {
        plugins.sort();
        *self.plugins.lock().unwrap_or_else(|e| e.into_inner()) = plugins;
    }

    /// Prometheus text exposition format, version 0.0.4.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(8 * 1024);
        let gauge = |out: &mut String, name: &str, help: &str, v: i64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        };
        gauge(&mut out, "relay_inflight_requests", "Requests being served now.", self.inflight_requests.get());
        gauge(&mut out, "relay_active_streams", "Streaming responses being sent now.", self.active_streams.get());
        gauge(
            &mut out,
            "relay_upstream_connections_open",
            "Upstream connections open now, in use or idle in the pool.",
            self.upstream_connections_open.get(),
        );
        let _ = writeln!(
            out,
            "# HELP relay_plugin_instances Adapter instances alive: for transforms (warm or in a call), hosting streams.\n\
             # TYPE relay_plugin_instances gauge\n\
             relay_plugin_instances{{use=\"transform\"}} {}\nrelay_plugin_instances{{use=\"stream\"}} {}",
            self.plugin_instances.get(),
            self.plugin_stream_instances.get()
        );
        let tasks = tokio::runtime::Handle::try_current().map(|h| h.metrics().num_alive_tasks()).unwrap_or(0);
        gauge(
            &mut out,
            "relay_runtime_alive_tasks",
            "Live tokio tasks: accept loop, connections, background owners.",
            tasks as i64,
        );
        gauge(
            &mut out,
            "process_resident_memory_bytes",
            "Resident memory of the relay.",
            resident_memory_bytes() as i64,
        );
        let _ = writeln!(
            out,
            "# HELP relay_client_disconnects_total Clients that went away before their answer was complete.\n\
             # TYPE relay_client_disconnects_total counter\nrelay_client_disconnects_total {}",
            self.client_disconnects.get()
        );
        gauge(
            &mut out,
            "relay_connections_open",
            "Client connections being served (limits.max_connections).",
            self.connections_open.get(),
        );
        gauge(
            &mut out,
            "relay_connections_reserve_open",
            "Connections past limits.max_connections held briefly to answer 503 or /healthz.",
            self.connections_reserve_open.get(),
        );
        gauge(
            &mut out,
            "relay_inflight_body_bytes",
            "Request body bytes buffered now: requests and queued jobs (limits.max_inflight_body_bytes).",
            self.inflight_body_bytes.get(),
        );
        let counter = |out: &mut String, name: &str, help: &str, v: u64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}");
        };
        counter(
            &mut out,
            "relay_connections_refused_total",
            "Connections refused at limits.max_connections.",
            self.connections_refused.get(),
        );
        counter(
            &mut out,
            "relay_body_budget_refused_total",
            "Requests answered 503 because limits.max_inflight_body_bytes was spent.",
            self.body_budget_refused.get(),
        );
        counter(
            &mut out,
            "relay_models_refused_total",
            "Requests refused for a model string too long or outside the allowed characters.",
            self.models_refused.get(),
        );
        let folded = self.timeouts.folded()
            + self.requests.folded()
            + self.errors.folded()
            + self.tokens.folded()
            + self.plugin_calls.folded()
            + self.plugin_errors.folded()
            + self.plugin_traps.folded()
            + self.plugin_instantiations.folded()
            + self.plugin_reloads.folded()
            + self.config_reloads.folded()
            + self.upstream_attempts.folded()
            + self.retries.folded()
            + self.failovers.folded()
            + self.stream_events_skipped.folded();
        counter(
            &mut out,
            "relay_metric_series_folded_total",
            "Metric updates counted under _other because their family was at its series bound.",
            folded,
        );
        self.timeouts.render(&mut out, "relay_timeouts_total", "Bounds that expired, by stage.", "counter");
        self.dns_lookups.render(
            &mut out,
            "relay_dns_lookups_total",
            "Upstream host name lookups, by result.",
            "counter",
        );
        self.requests.render(&mut out, "relay_requests_total", "Answered relay requests.", "counter");
        self.errors.render(
            &mut out,
            "relay_errors_total",
            "Requests that ended in an error, by endpoint, whose fault and what happened.",
            "counter",
        );
        self.tokens.render(&mut out, "relay_tokens_total", "Tokens reported by vendors.", "counter");
        self.plugin_calls.render(&mut out, "relay_plugin_calls_total", "Adapter calls.", "counter");
        self.plugin_errors.render(
            &mut out,
            "relay_plugin_errors_total",
            "Adapter calls that returned an error.",
            "counter",
        );
        self.plugin_traps.render(
            &mut out,
            "relay_plugin_traps_total",
            "Adapter calls that trapped or hit a limit.",
            "counter",
        );
        self.plugin_instantiations.render(
            &mut out,
            "relay_plugin_instantiations_total",
            "Fresh adapter instances made; warm instances are reused between calls.",
            "counter",
        );
        self.plugin_reloads.render(
            &mut out,
            "relay_plugin_reloads_total",
            "Adapter file loads, by outcome.",
            "counter",
        );
        self.config_reloads.render(&mut out, "relay_config_reloads_total", "Config reloads, by outcome.", "counter");
        let _ = writeln!(
            out,
            "# HELP relay_plugin_wall_timeouts_total Adapter calls cut at the host's wall-clock bound.\n\
             # TYPE relay_plugin_wall_timeouts_total counter\nrelay_plugin_wall_timeouts_total {}",
            self.plugin_wall_timeouts.get()
        );
        self.upstream_attempts.render(
            &mut out,
            "relay_upstream_attempts_total",
            "Vendor attempts by channel and outcome, including those failover absorbed.",
            "counter",
        );
        self.retries.render(
            &mut out,
            "relay_retries_total",
            "Same-channel retries after a failed attempt, by channel and reason ([retry] attempts).",
            "counter",
        );
        self.failovers.render(
            &mut out,
            "relay_failovers_total",
            "Moves to the next channel within a request, by the channel left, the one tried next and why.",
            "counter",
        );
        counter(
            &mut out,
            "relay_cooling_refused_total",
            "Requests answered 429 without a vendor call: every channel for the model was cooling down.",
            self.cooling_refused.get(),
        );
        gauge(
            &mut out,
            "relay_upstream_idle_connections_max",
            "Most idle upstream connections the pools keep: channels x limits.pool_max_idle_per_host.",
            self.upstream_idle_max.get(),
        );
        self.stream_events_skipped.render(
            &mut out,
            "relay_stream_events_skipped_total",
            "Vendor stream events an adapter could not read and left out, by channel.",
            "counter",
        );
        self.plugin_output_refused.render(
            &mut out,
            "relay_plugin_output_refused_total",
            "Adapter output refused by a host-side cap, by limit.",
            "counter",
        );
        let _ = writeln!(
            out,
            "# HELP relay_upstream_key_redactions_total Channel keys removed from upstream data before an adapter saw it.\n\
             # TYPE relay_upstream_key_redactions_total counter\nrelay_upstream_key_redactions_total {}",
            self.upstream_key_redactions.get()
        );
        let _ = writeln!(
            out,
            "# HELP relay_plugin_info Adapters in service (value 1), with version and content hash.\n# TYPE relay_plugin_info gauge"
        );
        let plugins = self.plugins.lock().unwrap_or_else(|e| e.into_inner()).clone();
        for p in &plugins {
            let _ = writeln!(out, "relay_plugin_info{{{}}} 1", label_pairs(&["plugin", "version", "sha256"], p));
        }
        self.request_duration.render(
            &mut out,
            "relay_request_duration_seconds",
            "From request received to the last byte of the answer.",
        );
        self.time_to_first_byte.render(
            &mut out,
            "relay_time_to_first_byte_seconds",
            "From request received to the first byte of the answer.",
        );
        let _ = writeln!(out, "# HELP relay_jobs Async jobs in the store, by status.\n# TYPE relay_jobs gauge");
        for (status, g) in JOB_STATUSES.iter().zip(&self.jobs) {
            let _ = writeln!(out, "relay_jobs{{status=\"{status}\"}} {}", g.get());
        }
        let _ = writeln!(
            out,
            "# HELP relay_job_events_total Output events stored for async jobs.\n\
             # TYPE relay_job_events_total counter\nrelay_job_events_total {}",
            self.job_events.get()
        );
        gauge(
            &mut out,
            "relay_job_store_up",
            "1 while the job store is open, 0 while it is down and async routes answer 503.",
            self.job_store_up.get(),
        );
        gauge(
            &mut out,
            "relay_job_store_bytes",
            "Estimated bytes held by the job store (bounded by jobs.max_store_bytes).",
            self.job_store_bytes.get(),
        );
        let _ = writeln!(
            out,
            "# HELP relay_job_store_bad_records_total Job records that did not decode, skipped and reported.\n\
             # TYPE relay_job_store_bad_records_total counter\nrelay_job_store_bad_records_total {}\n\
             # HELP relay_job_store_reopens_total Times the job store was opened again after a failure.\n\
             # TYPE relay_job_store_reopens_total counter\nrelay_job_store_reopens_total {}",
            self.job_store_bad_records.get(),
            self.job_store_reopens.get()
        );
        let _ = writeln!(
            out,
            "# HELP relay_job_refusals_total Async job submissions refused, by reason.\n# TYPE relay_job_refusals_total counter"
        );
        for (reason, c) in JOB_REFUSALS.iter().zip(&self.job_refusals) {
            let _ = writeln!(out, "relay_job_refusals_total{{reason=\"{reason}\"}} {}", c.get());
        }
        out
    }
}

/// Resident set size from /proc; 0 where there is no /proc.
pub fn resident_memory_bytes() -> u64 {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else { return 0 };
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// A share of `limits.max_inflight_body_bytes`, held while a body is buffered; given back
/// when dropped.
pub struct BodyPermit {
    metrics: std::sync::Arc<Metrics>,
    bytes: i64,
}

impl BodyPermit {
    /// An empty share, to grow as a body arrives.
    pub fn empty(metrics: std::sync::Arc<Metrics>) -> Self {
        Self { metrics, bytes: 0 }
    }

    /// Take `n` more bytes if the total stays within `max`; `false` leaves the share as it was.
    pub fn grow(&mut self, n: u64, max: u64) -> bool {
        let (Ok(n), Ok(max)) = (i64::try_from(n), i64::try_from(max)) else { return false };
        let cell = &self.metrics.inflight_body_bytes.0;
        let mut cur = cell.load(Ordering::Relaxed);
        loop {
            if cur.saturating_add(n) > max {
                return false;
            }
            match cell.compare_exchange_weak(cur, cur + n, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => {
                    self.bytes += n;
                    return true;
                }
                Err(now) => cur = now,
            }
        }
    }

    pub fn bytes(&self) -> u64 {
        self.bytes.unsigned_abs()
    }
}

impl Drop for BodyPermit {
    fn drop(&mut self) {
        self.metrics.inflight_body_bytes.0.fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn default_bound_keeps_metrics_small() {
        let m = Metrics::default();
        for i in 0..10_000 {
            m.requests.inc(["-", &format!("model-{i}"), "404"]);
        }
        let text = m.render();
        let series = text.lines().filter(|l| l.starts_with("relay_requests_total{")).count();
        assert_eq!(series, MAX_SERIES_PER_FAMILY + 1);
        assert!(text.contains("relay_metric_series_folded_total 9000"), "folded updates are counted");
        assert!(text.len() < 200 * 1024, "{} bytes", text.len());
    }

    #[test]
    fn body_permits_stay_within_the_budget_and_give_back() {
        let m = std::sync::Arc::new(Metrics::default());
        let mut a = BodyPermit::empty(m.clone());
        assert!(a.grow(600, 1000));
        let mut b = BodyPermit::empty(m.clone());
        assert!(!b.grow(500, 1000), "past the budget");
        assert!(b.grow(400, 1000));
        assert_eq!(m.inflight_body_bytes.get(), 1000);
        drop(a);
        assert_eq!(m.inflight_body_bytes.get(), 400);
        drop(b);
        assert_eq!(m.inflight_body_bytes.get(), 0);
    }

    #[test]
    fn skipped_stream_events_have_zero_samples_per_channel() {
        let m = Metrics::default();
        m.channels_configured(["main"], 1);
        m.stream_events_skipped.inc(["main"]);
        m.channels_configured(["main", "backup"], 1);
        let text = m.render();
        for line in [
            "relay_stream_events_skipped_total{channel=\"main\"} 1",
            "relay_stream_events_skipped_total{channel=\"backup\"} 0",
        ] {
            assert!(text.lines().any(|l| l == line), "missing `{line}` in\n{text}");
        }
    }

    #[test]
    fn counters_alerts_use_have_zero_samples_from_start() {
        let m = Metrics::default();
        m.plugin_loaded("openai");
        m.channels_configured(["main", "backup"], 64);
        let text = m.render();
        for line in [
            "relay_config_reloads_total{outcome=\"refused\"} 0",
            "relay_config_reloads_total{outcome=\"applied\"} 0",
            "relay_plugin_reloads_total{plugin=\"openai\",outcome=\"loaded\"} 1",
            "relay_plugin_reloads_total{plugin=\"openai\",outcome=\"refused\"} 0",
            "relay_plugin_traps_total{plugin=\"openai\",reason=\"panic\"} 0",
            "relay_plugin_traps_total{plugin=\"openai\",reason=\"wall_limit\"} 0",
            "relay_upstream_attempts_total{channel=\"backup\",outcome=\"status_5xx\"} 0",
            "relay_upstream_attempts_total{channel=\"main\",outcome=\"ok\"} 0",
            "relay_upstream_idle_connections_max 128",
            "relay_errors_total{endpoint=\"chat_completions\",fault=\"relay\",kind=\"internal\"} 0",
            "relay_errors_total{endpoint=\"other\",fault=\"relay\",kind=\"internal\"} 0",
        ] {
            assert!(text.lines().any(|l| l == line), "missing `{line}` in\n{text}");
        }
    }

    #[test]
    fn renders_families_and_histograms() {
        let m = Metrics::default();
        m.requests.inc(["c\"1", "m", "200"]);
        m.request_duration.observe(Duration::from_millis(20));
        let text = m.render();
        assert!(text.contains("relay_requests_total{channel=\"c\\\"1\",model=\"m\",status=\"200\"} 1"));
        assert!(text.contains("relay_request_duration_seconds_bucket{le=\"0.025\"} 1"));
        assert!(text.contains("relay_request_duration_seconds_count 1"));
        assert!(resident_memory_bytes() > 0);
    }
}
