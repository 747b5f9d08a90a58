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
use tokio::sync::watch;
use tokio::time::Instant;

use crate::access::{RequestLog, TokenUsage};
use crate::config::fmt_secs;
use crate::error::RelayError;
use crate::metrics::{Metrics, OwnedGaugeGuard};
use crate::plugin::{StreamEvent, StreamSession, Usage};
use crate::sse::Framer;

pub struct Bounds {
    pub idle: Duration,
    /// The request's total deadline, shared with everything before the stream.
    pub deadline: Instant,
    pub total: Duration,
}

pub struct Translation {
    body: Incoming,
    framer: Framer,
    session: StreamSession,
    bounds: Bounds,
    channel: String,
    log: RequestLog,
    metrics: Arc<Metrics>,
    shutdown: watch::Receiver<bool>,
    finished: bool,
    _active: OwnedGaugeGuard,
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
        shutdown: watch::Receiver<bool>,
    ) -> Self {
        let active = OwnedGaugeGuard::new(metrics.clone(), |m| &m.active_streams);
        Self { body, framer, session, bounds, channel, log, metrics, shutdown, finished: false, _active: active }
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
                _ = shutdown_requested(&mut self.shutdown) => {
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
                    return Some(self.fail(out, RelayError::upstream_timeout(msg)));
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
        match self.session.push(&StreamEvent { event, data }).await {
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

    async fn end(&mut self, mut out: Vec<u8>) -> Bytes {
        match self.session.finish().await {
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
        tracing::warn!(request_id = %self.log.request_id, channel = %self.channel, error = %e.message, "stream ended with an error");
        out.extend_from_slice(&e.sse_event());
        self.finished = true;
        self.log.error = Some(e.message.clone());
        self.log.finish(e.status.as_u16());
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

/// Resolves once shutdown's grace period is over; never, if no shutdown is coming.
pub async fn shutdown_requested(rx: &mut watch::Receiver<bool>) {
    if rx.wait_for(|v| *v).await.is_err() {
        std::future::pending::<()>().await;
    }
}
