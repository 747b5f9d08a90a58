//! One structured log line and one set of metrics per request, emitted when the request's
//! record is dropped: whatever path the request took (answer, error, client gone, panic),
//! it is accounted exactly once. Keys are never part of it. A request that ended in an
//! error is logged at the level its fault calls for and counted in `relay_errors_total`.

use std::sync::Arc;
use std::time::Instant;

use crate::error::{ErrorKind, Fault, RelayError};
use crate::metrics::{Metrics, OwnedGaugeGuard};
use crate::model::Usage;

/// HTTP has no status for "the client went away"; nginx's 499 is what operators know.
pub const CLIENT_CLOSED: u16 = 499;

pub struct RequestLog {
    metrics: Arc<Metrics>,
    pub start: Instant,
    pub request_id: String,
    pub endpoint: &'static str,
    pub token: String,
    pub model: String,
    pub channel: String,
    pub adapter: String,
    pub status: u16,
    pub stream: bool,
    pub attempts: u32,
    /// The attempts that were not the answer, and channels skipped while cooling down, in
    /// order: `channel:reason` (`error::retry_reason`, or `cooling`).
    pub tried: Vec<String>,
    pub usage: Option<Usage>,
    pub error: Option<String>,
    /// Vendor stream events the adapter could not read and left out.
    pub skipped_events: u64,
    /// What the error was and whose fault, when the request ended in one.
    failure: Option<(ErrorKind, Fault)>,
    /// Set when the answer was handed over whole; a record dropped without it is a
    /// client that went away.
    pub done: bool,
    first_byte: bool,
    /// Handed over to another record: this one logs nothing.
    inert: bool,
    _inflight: Option<OwnedGaugeGuard>,
}

impl RequestLog {
    pub fn new(metrics: Arc<Metrics>, request_id: String, endpoint: &'static str) -> Self {
        let inflight = OwnedGaugeGuard::new(metrics.clone(), |m| &m.inflight_requests);
        Self {
            metrics,
            start: Instant::now(),
            request_id,
            endpoint,
            token: String::new(),
            model: String::new(),
            channel: String::new(),
            adapter: String::new(),
            status: 0,
            stream: false,
            attempts: 0,
            tried: Vec::new(),
            usage: None,
            error: None,
            skipped_events: 0,
            failure: None,
            done: false,
            first_byte: false,
            inert: false,
            _inflight: Some(inflight),
        }
    }

    /// Move the record into a new owner (a stream body); this one becomes inert.
    pub fn hand_over(&mut self) -> RequestLog {
        self.inert = true;
        RequestLog {
            metrics: self.metrics.clone(),
            start: self.start,
            request_id: std::mem::take(&mut self.request_id),
            endpoint: self.endpoint,
            token: std::mem::take(&mut self.token),
            model: std::mem::take(&mut self.model),
            channel: std::mem::take(&mut self.channel),
            adapter: std::mem::take(&mut self.adapter),
            status: self.status,
            stream: self.stream,
            attempts: self.attempts,
            tried: std::mem::take(&mut self.tried),
            usage: self.usage.take(),
            error: self.error.take(),
            skipped_events: self.skipped_events,
            failure: self.failure.take(),
            done: self.done,
            first_byte: self.first_byte,
            inert: false,
            _inflight: self._inflight.take(),
        }
    }

    /// The response head is leaving: time to first byte.
    pub fn first_byte(&mut self) {
        if !self.first_byte {
            self.first_byte = true;
            self.metrics.time_to_first_byte.observe(self.start.elapsed());
        }
    }

    pub fn finish(&mut self, status: u16) {
        self.status = status;
        self.done = true;
    }

    /// The request ends with this error, answered with its status.
    pub fn fail(&mut self, e: &RelayError) {
        self.error = Some(e.message.clone());
        self.failure = Some((e.kind, e.fault));
        self.finish(e.status().as_u16());
    }

    /// The vendor answered an error, which goes to the client unless another channel is
    /// tried (`clear_error`). The status is the adapter's, set by `finish`.
    pub fn vendor_error(&mut self, message: String) {
        self.error = Some(message);
        self.failure = Some((ErrorKind::UpstreamStatus, Fault::Upstream));
    }

    /// A failed attempt was absorbed by failover: it is not how the request ended.
    pub fn clear_error(&mut self) {
        self.error = None;
        self.failure = None;
    }
}

impl Drop for RequestLog {
    fn drop(&mut self) {
        if self.inert {
            return;
        }
        if std::thread::panicking() {
            // Dropped while a panic unwinds through the handler: the relay's fault, answered
            // 500 by the server edge (which also counts it in `relay_errors_total`), never a
            // client that went away.
            self.status = 500;
            self.done = true;
            self.error = Some("the request's handler panicked".into());
            self.failure = Some((ErrorKind::Internal, Fault::Relay));
        } else if !self.done {
            self.status = CLIENT_CLOSED;
            self.metrics.client_disconnects.inc();
        }
        let latency = self.start.elapsed();
        let tried = self.tried.join(",");
        let m = &self.metrics;
        m.request_duration.observe(latency);
        let status = self.status.to_string();
        let channel = if self.channel.is_empty() { "-" } else { &self.channel };
        let model = if self.model.is_empty() { "-" } else { &self.model };
        m.requests.inc([channel, model, &status]);
        let u = self.usage.unwrap_or_default();
        if let Some(u) = self.usage {
            m.tokens.add([channel, model, "prompt"], u.input);
            m.tokens.add([channel, model, "completion"], u.output);
        }
        let (fault, kind) = match self.failure {
            Some((kind, fault)) => {
                if !std::thread::panicking() {
                    m.errors.inc([self.endpoint, fault.name(), kind.name()]);
                }
                (fault.name(), kind.name())
            }
            None => ("", ""),
        };
        macro_rules! access {
            ($level:expr) => {
                tracing::event!(
                    target: "relay::access",
                    $level,
                    request_id = %self.request_id,
                    endpoint = self.endpoint,
                    token = %self.token,
                    model,
                    channel,
                    adapter = %self.adapter,
                    status = self.status,
                    stream = self.stream,
                    attempts = self.attempts,
                    tried = tried.as_str(),
                    latency_ms = latency.as_secs_f64() * 1000.0,
                    prompt_tokens = u.input,
                    completion_tokens = u.output,
                    total_tokens = u.total,
                    skipped_events = self.skipped_events,
                    error = self.error.as_deref().unwrap_or(""),
                    fault,
                    kind,
                    "request"
                )
            };
        }
        match self.failure.map(|(kind, fault)| level(kind, fault)) {
            Some(tracing::Level::ERROR) => access!(tracing::Level::ERROR),
            Some(tracing::Level::WARN) => access!(tracing::Level::WARN),
            _ => access!(tracing::Level::INFO),
        }
    }
}

/// The level of a request's line, by whose fault its error was: a client's mistake is
/// routine (info, like a success), a vendor's failure is worth a look (warn), an adapter's
/// or the relay's is a defect (error) unless it is a refusal under load or while stopping.
pub fn level(kind: ErrorKind, fault: Fault) -> tracing::Level {
    match fault {
        Fault::Client => tracing::Level::INFO,
        Fault::Upstream => tracing::Level::WARN,
        Fault::Adapter | Fault::Relay if kind.is_refusal() => tracing::Level::WARN,
        Fault::Adapter | Fault::Relay => tracing::Level::ERROR,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_counted_once_by_fault_and_kind() {
        let m = Arc::new(Metrics::default());
        let mut log = RequestLog::new(m.clone(), "r1".into(), "chat_completions");
        log.fail(&RelayError::upstream_unreachable("cannot reach channel a"));
        drop(log);
        // A vendor error failover absorbed, then a success: no error.
        let mut log = RequestLog::new(m.clone(), "r2".into(), "embeddings");
        log.vendor_error("vendor answered 503".into());
        log.clear_error();
        log.finish(200);
        drop(log);
        // A client that went away is counted as such, not as an error.
        drop(RequestLog::new(m.clone(), "r3".into(), "embeddings"));
        assert_eq!(m.errors.get(["chat_completions", "upstream", "upstream_connect"]), 1);
        assert_eq!(m.client_disconnects.get(), 1);
        let text = m.render();
        let counted: Vec<&str> =
            text.lines().filter(|l| l.starts_with("relay_errors_total{") && !l.ends_with(" 0")).collect();
        assert_eq!(counted.len(), 1, "{counted:?}");
    }

    #[test]
    fn the_level_follows_the_fault() {
        use tracing::Level;
        assert_eq!(level(ErrorKind::InvalidRequest, Fault::Client), Level::INFO);
        assert_eq!(level(ErrorKind::UpstreamStatus, Fault::Upstream), Level::WARN);
        assert_eq!(level(ErrorKind::AdapterFailed, Fault::Adapter), Level::ERROR);
        assert_eq!(level(ErrorKind::Internal, Fault::Relay), Level::ERROR);
        // Refusing under load or while stopping is operation, not a defect.
        assert_eq!(level(ErrorKind::Unavailable, Fault::Relay), Level::WARN);
        assert_eq!(level(ErrorKind::BodyBudget, Fault::Relay), Level::WARN);
    }
}
