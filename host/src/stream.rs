//! A streaming answer: upstream body → framer → adapter → client SSE, all inside the
//! response body hyper polls. No task is spawned: when the client goes away hyper drops
//! the body, and with it the upstream connection, the adapter instance and the timers.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body::Frame;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::access::{RequestLog, TokenUsage};
use crate::config::fmt_secs;
use crate::error::{RelayError, Stage};
use crate::metrics::{Metrics, OwnedGaugeGuard};
use crate::plugin::{AdapterError, CallError, StreamEvent, StreamSession, Usage};
use crate::sse::Framer;

pub struct Bounds {
    pub idle: Duration,
    /// The request's total deadline, shared with everything before the stream.
    pub deadline: Instant,
    pub total: Duration,
    /// Bytes of chunks one adapter call (push or finish) may hand back.
    pub max_output: usize,
}

/// Chunks one adapter call may hand back: a vendor event maps to one or two chunks, a
/// finish to a few; an adapter answering thousands is broken or hostile.
pub const MAX_CHUNKS_PER_CALL: usize = 1024;
/// Output bytes that make the stream send what it has before it reads on: a frame full
/// of small upstream events must not pile up their translations unsent.
const FLUSH_AT: usize = 64 * 1024;

/// Chunks one adapter call returned, checked against the output caps before any is sent:
/// a chunk holding a line break could end the SSE event early and forge one (`data: [DONE]`).
fn check_output(chunks: &[String], max_bytes: usize, metrics: &Metrics) -> Result<(), String> {
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
    let bytes: usize = chunks.iter().map(String::len).sum();
    if bytes > max_bytes {
        return refuse("bytes", format!("{bytes} bytes of chunks from one call, more than the limit of {max_bytes}"));
    }
    if chunks.iter().any(|c| c.contains(['\r', '\n'])) {
        return refuse("line_break", "a chunk contains a line break (CR or LF)".to_string());
    }
    Ok(())
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
    finished: bool,
    _active: OwnedGaugeGuard,
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
            finished: false,
            _active: active,
        }
    }

    /// The response body: one frame per batch of chunks ready at once.
    pub fn into_body(self) -> http_body_util::combinators::UnsyncBoxBody<Bytes, Infallible> {
        let stream = futures_util::stream::unfold(self, |mut t| async move {
            let bytes = t.next().await?;
            Some((Ok::<_, Infallible>(Frame::data(bytes)), t))
        });
        http_body_util::StreamBody::new(stream).boxed_unsync()
    }

    async fn next(&mut self) -> Option<Bytes> {
        if self.finished {
            return None;
        }
        let mut out = Vec::new();
        loop {
            match self.framer.next_event() {
                Err(e) => {
                    return Some(self.fail(out, RelayError::bad_upstream(format!("{e} on channel {}", self.channel))));
                }
                Ok(Some(ev)) => {
                    if let Some(done) = self.push(&mut out, ev.event, ev.data).await {
                        return Some(done);
                    }
                    if out.len() >= FLUSH_AT {
                        return Some(Bytes::from(out));
                    }
                    continue;
                }
                Ok(None) => {}
            }
            // Flush what is ready before waiting on the upstream again.
            if !out.is_empty() {
                return Some(Bytes::from(out));
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
                            if let Some(done) = self.push(&mut out, ev.event, ev.data).await {
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

    /// One event through the adapter; `Some` when the stream is over.
    async fn push(&mut self, out: &mut Vec<u8>, event: Option<String>, data: String) -> Option<Bytes> {
        let (event, data) = (event.map(|e| self.redactor.redact(e)), self.redactor.redact(data));
        let pushed = self.session.push(&StreamEvent { event, data }).await;
        let pushed = pushed.and_then(|o| self.checked(o.chunks.as_slice()).map(|()| o));
        match pushed {
            Ok(o) => {
                write_chunks(out, &o.chunks);
                if let Some(u) = o.usage {
                    self.log.usage = Some(usage(u));
                }
                if o.done { Some(self.end(std::mem::take(out)).await) } else { None }
            }
            Err(e) => {
                let e = e.into_relay(self.session.plugin().name());
                Some(self.fail(std::mem::take(out), e))
            }
        }
    }

    /// The output caps, as an adapter error of the stream's adapter.
    fn checked(&self, chunks: &[String]) -> Result<(), CallError> {
        check_output(chunks, self.bounds.max_output, &self.metrics).map_err(|why| {
            CallError::Adapter(AdapterError::Internal(format!("the adapter's stream output was refused: {why}")))
        })
    }

    async fn end(&mut self, mut out: Vec<u8>) -> Bytes {
        let finished = self.session.finish().await;
        match finished.and_then(|end| self.checked(end.chunks.as_slice()).map(|()| end)) {
            Ok(end) => {
                write_chunks(&mut out, &end.chunks);
                if let Some(u) = end.usage {
                    self.log.usage = Some(usage(u));
                }
                out.extend_from_slice(b"data: [DONE]\n\n");
                self.finished = true;
                self.log.finish(200);
                Bytes::from(out)
            }
            Err(e) => {
                let e = e.into_relay(self.session.plugin().name());
                self.fail(out, e)
            }
        }
    }

    /// End the stream with one error event and no `[DONE]`, so clients can tell a cut
    /// stream from a complete one.
    fn fail(&mut self, mut out: Vec<u8>, e: RelayError) -> Bytes {
        let e = self.redactor.error(e);
        tracing::warn!(request_id = %self.log.request_id, channel = %self.channel, error = %e.message, "stream ended with an error");
        out.extend_from_slice(&e.sse_event());
        self.finished = true;
        self.log.fail(&e);
        Bytes::from(out)
    }
}

fn write_chunks(out: &mut Vec<u8>, chunks: &[String]) {
    for c in chunks {
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(c.as_bytes());
        out.extend_from_slice(b"\n\n");
    }
}

pub fn usage(u: Usage) -> TokenUsage {
    TokenUsage { prompt: u.prompt_tokens, completion: u.completion_tokens, total: u.total_tokens }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_caps() {
        let m = Metrics::default();
        assert!(check_output(&["{}".into(), "{}".into()], 16, &m).is_ok());
        assert!(check_output(&vec![String::new(); MAX_CHUNKS_PER_CALL + 1], 16, &m).unwrap_err().contains("chunks"));
        assert!(check_output(&["x".repeat(17)], 16, &m).unwrap_err().contains("bytes"));
        assert!(check_output(&["{}\n\ndata: [DONE]".into()], 64, &m).unwrap_err().contains("line break"));
        assert!(check_output(&["{}\r".into()], 64, &m).is_err());
        assert_eq!(m.plugin_output_refused.get(["line_break"]), 2);
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
