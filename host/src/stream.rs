//! A streaming answer as a typed stream: upstream body → framer → adapter → batches of
//! output events, ending cleanly or with an error. No task is spawned: the consumer (the
//! HTTP encoder's body, or a job's run) polls it, and dropping it drops the upstream
//! connection, the adapter instance and the timers. Every bound and the request's
//! accounting live here, so every consumer gets them.

use std::sync::Arc;
use std::time::Duration;

use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::access::RequestLog;
use crate::adapter::{CallError, MAX_ADAPTER_ERROR, StreamSession, truncate};
use crate::bridge::StreamBridge;
use crate::config::{MalformedEvents, fmt_secs};
use crate::error::{RelayError, Stage};
use crate::metrics::{Metrics, OwnedGaugeGuard};
use crate::model::{AdapterError, OutputEvent, StreamEvent, Usage};
use crate::sse::Framer;

/// The output events ready at once, and the stream's end if it came with them.
#[derive(Debug, Default)]
pub struct Batch {
    pub events: Vec<OutputEvent>,
    /// Set on the last batch; nothing follows it.
    pub end: Option<End>,
}

/// How a stream ended.
#[derive(Debug)]
pub enum End {
    /// The adapter finished the stream.
    Done { usage: Option<Usage> },
    /// The stream was cut: a bound, the upstream, the adapter or shutdown.
    Failed {
        error: RelayError,
        /// Events reached the consumer before the error (this batch's included).
        sent: bool,
    },
}

pub struct Bounds {
    pub idle: Duration,
    /// The request's total deadline, shared with everything before the stream.
    pub deadline: Instant,
    pub total: Duration,
    /// Bytes of chunks one adapter call (push or finish) may hand back.
    pub max_output: usize,
    /// What a vendor event the adapter could not read does to the stream.
    pub malformed: MalformedEvents,
}

/// Chunks one adapter call may hand back: a vendor event maps to one or two chunks, a
/// finish to a few; an adapter answering thousands is broken or hostile.
pub const MAX_CHUNKS_PER_CALL: usize = 1024;
/// Events one push hands the adapter (all those framed from one read, up to this many and
/// about `max_stream_event` bytes): the output caps above were sized for one event's
/// translation and still leave room for a batch this size.
const MAX_EVENTS_PER_PUSH: usize = 256;
/// Output bytes that make the stream send what it has before it reads on: a frame full
/// of small upstream events must not pile up their translations unsent.
const FLUSH_AT: usize = 64 * 1024;

/// Events one adapter call returned, checked against the output caps before any is sent:
/// an event holding a line break could end the SSE event early and forge one (`data: [DONE]`).
fn check_output(chunks: &[OutputEvent], max_bytes: usize, metrics: &Metrics) -> Result<(), String> {
    let refuse = |limit: &str, why: String| {
        metrics.plugin_output_refused.inc([limit]);
        Err(why)
    };
    if chunks.len() > MAX_CHUNKS_PER_CALL {
        return refuse(
            "chunks",
            format!("{} chunks from one call, more than the limit of {MAX_CHUNKS_PER_CALL}", chunks.len()),
        );
    }
    let bytes: usize = chunks.iter().map(event_len).sum();
    if bytes > max_bytes {
        return refuse("bytes", format!("{bytes} bytes of chunks from one call, more than the limit of {max_bytes}"));
    }
    // A byte search: `contains` with a char pattern decodes every char, and this runs over
    // every byte the stream sends.
    let line_break = |s: &str| memchr::memchr2(b'\r', b'\n', s.as_bytes()).is_some();
    if chunks.iter().any(|c| line_break(&c.data) || c.name.as_deref().is_some_and(line_break)) {
        return refuse("line_break", "a chunk contains a line break (CR or LF)".to_string());
    }
    Ok(())
}

fn event_len(ev: &OutputEvent) -> usize {
    ev.data.len() + ev.name.as_ref().map_or(0, String::len)
}

/// `events` after `out`; taken as they are when `out` is empty (most reads are one event).
fn append(out: &mut Vec<OutputEvent>, events: Vec<OutputEvent>) {
    if out.is_empty() {
        *out = events;
    } else {
        out.extend(events);
    }
}

pub struct Translation {
    body: Incoming,
    framer: Framer,
    session: StreamSession,
    bounds: Bounds,
    channel: String,
    log: RequestLog,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
    redactor: Redactor,
    /// The last usage the adapter reported.
    usage: Option<Usage>,
    finished: bool,
    /// Events were handed out: an error now cuts an answer the consumer has begun.
    sent: bool,
    /// The first batch, read by `prime` before the answer was committed; `next` hands it out.
    primed: Option<Batch>,
    /// The client API's conversion when the channel is bridged through chat completions.
    bridge: Option<Box<dyn StreamBridge>>,
    _active: OwnedGaugeGuard,
}

/// What waiting for a stream's first batch came to (`Translation::prime`).
#[derive(Debug, PartialEq, Eq)]
pub enum Primed {
    /// The first batch is held for `next`: output events, or the stream's end.
    Ready,
    /// No output event came within the bound.
    TimedOut,
}

/// Takes a channel key out of upstream data before an adapter sees it, and out of error
/// messages: the key as sent (raw) and percent-encoded (as in a query string).
pub struct Redactor {
    needles: Vec<String>,
    metrics: Arc<Metrics>,
}

/// What a key is replaced with.
const REDACTED: &str = "[redacted]";

impl Redactor {
    pub fn new(key: Option<&str>, metrics: Arc<Metrics>) -> Redactor {
        let mut needles = Vec::new();
        if let Some(key) = key.filter(|k| !k.is_empty()) {
            // The key as the query auth scheme encodes it, in both hex cases: vendors and
            // proxies write either. The encoder yields each `%XX` as its own piece.
            let encoded = percent_encoding::utf8_percent_encode(key, crate::vendor_request::QUERY_COMPONENT);
            let lower: String = encoded
                .clone()
                .map(|piece| if piece.starts_with('%') { piece.to_ascii_lowercase() } else { piece.to_string() })
                .collect();
            for n in [key.to_string(), encoded.to_string(), lower] {
                if !needles.contains(&n) {
                    needles.push(n);
                }
            }
        }
        Redactor { needles, metrics }
    }

    /// `s` with every occurrence of the key replaced.
    pub fn redact(&self, mut s: String) -> String {
        for n in &self.needles {
            if s.contains(n.as_str()) {
                self.metrics.upstream_key_redactions.add(s.matches(n.as_str()).count() as u64);
                s = s.replace(n.as_str(), REDACTED);
            }
        }
        s
    }

    /// The error with the key taken out of its message.
    pub fn error(&self, mut e: RelayError) -> RelayError {
        e.message = self.redact(std::mem::take(&mut e.message));
        e
    }
}

impl Translation {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        body: Incoming,
        framer: Framer,
        session: StreamSession,
        bounds: Bounds,
        channel: String,
        log: RequestLog,
        metrics: Arc<Metrics>,
        shutdown: CancellationToken,
        redactor: Redactor,
    ) -> Self {
        let active = OwnedGaugeGuard::new(metrics.clone(), |m| &m.active_streams);
        Self {
            body,
            framer,
            session,
            bounds,
            channel,
            log,
            metrics,
            shutdown,
            redactor,
            usage: None,
            finished: false,
            sent: false,
            primed: None,
            bridge: None,
            _active: active,
        }
    }

    /// Convert every batch with `bridge` before any consumer sees it.
    pub fn set_bridge(&mut self, bridge: Box<dyn StreamBridge>) {
        self.bridge = Some(bridge);
    }

    /// The next batch: the events ready at once; the last one carries the end. `None` once
    /// the end was handed out.
    pub async fn next(&mut self) -> Option<Batch> {
        let mut batch = match self.primed.take() {
            Some(b) => b,
            None => self.next_batch().await?,
        };
        if let Some(bridge) = self.bridge.as_mut()
            && let Err(why) = bridge.apply(&mut batch)
        {
            let events = std::mem::take(&mut batch.events);
            let e = RelayError::plugin(format!(
                "the adapter's stream on channel {} could not be converted: {why}",
                self.channel
            ));
            batch = self.fail(events, e);
        }
        // A cut stream's closing events in the client's API, for every consumer alike.
        if let (Some(bridge), Some(End::Failed { error, .. })) = (self.bridge.as_mut(), &batch.end) {
            bridge.failed(error, &mut batch.events);
        }
        self.sent |= !batch.events.is_empty();
        Some(batch)
    }

    /// Read the first batch before the answer is committed, so failover can still try
    /// another channel when it is late (`by`, `timeouts.first_token`) or the stream fails
    /// before its first event. After `TimedOut` the translation is only good for
    /// `into_log`: a read was cut.
    pub async fn prime(&mut self, by: Option<Instant>) -> Primed {
        let batch = match by {
            Some(at) => match tokio::time::timeout_at(at, self.next_batch()).await {
                Ok(b) => b,
                Err(_) => return Primed::TimedOut,
            },
            None => self.next_batch().await,
        };
        self.primed = batch;
        Primed::Ready
    }

    /// The response head is leaving: the request's time to first byte.
    pub fn first_byte(&mut self) {
        self.log.first_byte();
    }

    /// The error the stream failed with before any output event, once primed.
    pub fn failed_at_start(&self) -> Option<&RelayError> {
        match &self.primed {
            Some(Batch { events, end: Some(End::Failed { error, .. }) }) if events.is_empty() => Some(error),
            _ => None,
        }
    }

    /// The request's record back, for the next attempt; the rest is dropped here: the
    /// upstream connection (closed, not pooled: its body was not read to the end), the
    /// adapter's stream instance, the stream gauge.
    pub fn into_log(mut self) -> RequestLog {
        self.log.hand_over()
    }

    async fn next_batch(&mut self) -> Option<Batch> {
        if self.finished {
            return None;
        }
        let mut out = Vec::new();
        let mut size = 0;
        loop {
            // Every event framed from what was read so far, in one adapter call (bounded).
            let mut batch = Vec::new();
            let mut batch_bytes = 0;
            let framed = loop {
                if batch.len() >= MAX_EVENTS_PER_PUSH || batch_bytes >= self.framer.max_event() {
                    break Ok(());
                }
                match self.framer.next_event() {
                    Ok(Some(ev)) => {
                        batch_bytes += ev.data.len();
                        batch.push(ev);
                    }
                    Ok(None) => break Ok(()),
                    Err(e) => break Err(e),
                }
            };
            let pushed = !batch.is_empty();
            if pushed {
                let before = out.len();
                if let Some(done) = self.push(&mut out, batch).await {
                    return Some(done);
                }
                size += out[before..].iter().map(event_len).sum::<usize>();
                if size >= FLUSH_AT {
                    return Some(Batch { events: out, end: None });
                }
            }
            if let Err(e) = framed {
                return Some(self.fail(out, RelayError::bad_upstream(format!("{e} on channel {}", self.channel))));
            }
            if pushed {
                // A batch cut at its bound: frame the rest before reading on.
                continue;
            }
            // Flush what is ready before waiting on the upstream again.
            if !out.is_empty() {
                return Some(Batch { events: out, end: None });
            }
            let idle_at = (Instant::now() + self.bounds.idle).min(self.bounds.deadline);
            let frame = tokio::select! {
                biased;
                _ = self.shutdown.cancelled() => {
                    return Some(self.fail(out, RelayError::unavailable("the relay is shutting down; the stream was ended")));
                }
                r = tokio::time::timeout_at(idle_at, self.body.frame()) => r,
            };
            match frame {
                Err(_) => {
                    let (stage, what, bound) = if idle_at >= self.bounds.deadline {
                        ("total", "total request", self.bounds.total)
                    } else {
                        ("stream_idle", "upstream stream idle", self.bounds.idle)
                    };
                    self.metrics.timeouts.inc([stage]);
                    let msg = format!("{what} timeout after {} on channel {}", fmt_secs(bound), self.channel);
                    return Some(self.fail(out, RelayError::upstream_timeout(Stage::from_name(stage), msg)));
                }
                Ok(None) => {
                    match self.framer.finish() {
                        Err(e) => {
                            return Some(
                                self.fail(out, RelayError::bad_upstream(format!("{e} on channel {}", self.channel))),
                            );
                        }
                        Ok(Some(ev)) => {
                            if let Some(done) = self.push(&mut out, vec![ev]).await {
                                return Some(done);
                            }
                        }
                        Ok(None) => {}
                    }
                    return Some(self.end(out).await);
                }
                Ok(Some(Err(e))) => {
                    let msg = format!("upstream connection failed mid-stream on channel {}: {e}", self.channel);
                    return Some(self.fail(out, RelayError::bad_upstream(msg)));
                }
                Ok(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data() {
                        self.framer.push(&data);
                    }
                }
            }
        }
    }

    /// Events framed from one read through the adapter, in one call; `Some` when the
    /// stream is over.
    async fn push(&mut self, out: &mut Vec<OutputEvent>, batch: Vec<crate::sse::Event>) -> Option<Batch> {
        let events = batch
            .into_iter()
            .map(|ev| StreamEvent {
                event: ev.event.map(|e| self.redactor.redact(e)),
                data: self.redactor.redact(ev.data),
            })
            .collect();
        // Boxed: an adapter call's future is ~2 KB, and held inline it would make every
        // stream's state that much larger while it waits on the upstream.
        let pushed = Box::pin(self.session.push(events)).await;
        let pushed = pushed.and_then(|o| self.checked(&o.events).map(|()| o));
        match pushed {
            Ok(o) => {
                append(out, o.events);
                self.used(o.usage);
                if let Some(e) = self.skipped(o.skipped) {
                    return Some(self.fail(std::mem::take(out), e));
                }
                if o.done { Some(self.end(std::mem::take(out)).await) } else { None }
            }
            Err(e) => {
                let e = e.into_relay(self.session.plugin().name());
                Some(self.fail(std::mem::take(out), e))
            }
        }
    }

    /// Vendor events the adapter could not read and left out: under `skip` counted and
    /// logged, the answer goes on; under `fail` the error that ends the stream (the
    /// adapter's first reason, as its push error would have said it).
    fn skipped(&mut self, reasons: Vec<String>) -> Option<RelayError> {
        let n = reasons.len() as u64;
        let reason = truncate(reasons.into_iter().next()?, MAX_ADAPTER_ERROR);
        let plugin = self.session.plugin().name();
        match self.bounds.malformed {
            MalformedEvents::Skip => {
                self.metrics.stream_events_skipped.add([&self.channel], n);
                self.log.skipped_events += n;
                tracing::warn!(
                    request_id = %self.log.request_id, channel = %self.channel, adapter = %plugin, skipped = n,
                    reason = %reason, "skipped vendor stream events the adapter could not read"
                );
                None
            }
            MalformedEvents::Fail => Some(CallError::Adapter(AdapterError::InvalidUpstream(reason)).into_relay(plugin)),
        }
    }

    /// The output caps, as an adapter error of the stream's adapter.
    fn checked(&self, events: &[OutputEvent]) -> Result<(), CallError> {
        check_output(events, self.bounds.max_output, &self.metrics).map_err(|why| {
            CallError::Adapter(AdapterError::Internal(format!("the adapter's stream output was refused: {why}")))
        })
    }

    fn used(&mut self, usage: Option<Usage>) {
        if let Some(u) = usage {
            self.log.usage = Some(u);
            self.usage = Some(u);
        }
    }

    async fn end(&mut self, mut out: Vec<OutputEvent>) -> Batch {
        let finished = Box::pin(self.session.finish()).await;
        match finished.and_then(|end| self.checked(&end.events).map(|()| end)) {
            Ok(end) => {
                append(&mut out, end.events);
                self.used(end.usage);
                self.finished = true;
                self.log.finish(200);
                Batch { events: out, end: Some(End::Done { usage: self.usage }) }
            }
            Err(e) => {
                let e = e.into_relay(self.session.plugin().name());
                self.fail(out, e)
            }
        }
    }

    /// End the stream with an error, so consumers can tell a cut stream from a complete one.
    fn fail(&mut self, out: Vec<OutputEvent>, e: RelayError) -> Batch {
        let error = self.redactor.error(e);
        tracing::warn!(request_id = %self.log.request_id, channel = %self.channel, error = %error.message, "stream ended with an error");
        self.finished = true;
        self.log.fail(&error);
        let sent = self.sent || !out.is_empty();
        Batch { events: out, end: Some(End::Failed { error, sent }) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_caps() {
        let m = Metrics::default();
        let ev = |data: &str| OutputEvent { name: None, data: data.to_string() };
        assert!(check_output(&[ev("{}"), ev("{}")], 16, &m).is_ok());
        assert!(check_output(&vec![ev(""); MAX_CHUNKS_PER_CALL + 1], 16, &m).unwrap_err().contains("chunks"));
        assert!(check_output(&[ev(&"x".repeat(17))], 16, &m).unwrap_err().contains("bytes"));
        assert!(check_output(&[ev("{}\n\ndata: [DONE]")], 64, &m).unwrap_err().contains("line break"));
        assert!(check_output(&[ev("{}\r")], 64, &m).is_err());
        assert_eq!(m.plugin_output_refused.get(["line_break"]), 2);
        // A named event (the next client APIs) is bounded the same way, name included.
        let named = OutputEvent { name: Some("a\nb".into()), data: "{}".into() };
        assert!(check_output(&[named], 64, &m).unwrap_err().contains("line break"));
        let named = OutputEvent { name: Some("x".repeat(10)), data: "x".repeat(10) };
        assert!(check_output(&[named], 16, &m).unwrap_err().contains("bytes"));
    }

    #[test]
    fn redacts_the_key_raw_and_percent_encoded() {
        let m = Arc::new(Metrics::default());
        let r = Redactor::new(Some("sk/a b"), m.clone());
        let s = r.redact("origin: sk/a b; url ?key=sk%2Fa%20b and sk%2fa%20b".into());
        assert_eq!(s, "origin: [redacted]; url ?key=[redacted] and [redacted]");
        assert_eq!(m.upstream_key_redactions.get(), 3);
        assert_eq!(Redactor::new(None, m.clone()).redact("sk/a b".into()), "sk/a b");
        // Letters of the key keep their case; only the hex digits of `%XX` change.
        let r = Redactor::new(Some("Key/é"), m.clone());
        assert_eq!(r.needles, ["Key/é", "Key%2F%C3%A9", "Key%2f%c3%a9"]);
        assert_eq!(r.redact("Key%2f%c3%a9 key%2f%c3%a9".into()), "[redacted] key%2f%c3%a9");
        assert_eq!(Redactor::new(Some("plain-key_1.0~"), m).needles, ["plain-key_1.0~"]);
    }
}
