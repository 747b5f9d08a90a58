//! One structured log line and one set of metrics per request, emitted when the request's
//! record is dropped: whatever path the request took (answer, error, client gone, panic),
//! it is accounted exactly once. Keys are never part of it.

use std::sync::Arc;
use std::time::Instant;

use crate::metrics::{Metrics, OwnedGaugeGuard};

/// HTTP has no status for "the client went away"; nginx's 499 is what operators know.
pub const CLIENT_CLOSED: u16 = 499;

#[derive(Debug, Clone, Copy, Default)]
pub struct TokenUsage {
    pub prompt: u64,
    pub completion: u64,
    pub total: u64,
}

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
    pub usage: Option<TokenUsage>,
    pub error: Option<String>,
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
            usage: None,
            error: None,
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
            usage: self.usage.take(),
            error: self.error.take(),
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
}

impl Drop for RequestLog {
    fn drop(&mut self) {
        if self.inert {
            return;
        }
        if !self.done {
            self.status = CLIENT_CLOSED;
            self.metrics.client_disconnects.inc();
        }
        let latency = self.start.elapsed();
        let m = &self.metrics;
        m.request_duration.observe(latency);
        let status = self.status.to_string();
        let channel = if self.channel.is_empty() { "-" } else { &self.channel };
        let model = if self.model.is_empty() { "-" } else { &self.model };
        m.requests.inc([channel, model, &status]);
        let u = self.usage.unwrap_or_default();
        if let Some(u) = self.usage {
            m.tokens.add([channel, model, "prompt"], u.prompt);
            m.tokens.add([channel, model, "completion"], u.completion);
        }
        tracing::info!(
            target: "relay::access",
            request_id = %self.request_id,
            endpoint = self.endpoint,
            token = %self.token,
            model,
            channel,
            adapter = %self.adapter,
            status = self.status,
            stream = self.stream,
            attempts = self.attempts,
            latency_ms = latency.as_secs_f64() * 1000.0,
            prompt_tokens = u.prompt,
            completion_tokens = u.completion,
            total_tokens = u.total,
            error = self.error.as_deref().unwrap_or(""),
            "request"
        );
    }
}
