//! Failover: the admitted request tried channel by channel, one attempt each (adapter,
//! vendor call under the host's bounds, the answer or stream built for the client).

use bytes::Bytes;
use http::{StatusCode, header};
use http_body_util::{BodyExt, Limited};
use tokio::time::Instant;

use crate::access::RequestLog;
use crate::answer::{Answer, Whole};
use crate::bridge::{self, Route};
use crate::config::{Channel, Limits, Token, fmt_secs};
use crate::error::{ErrorKind, Failure, Fault, RelayError, Retry, Stage, policy};
use crate::model::{CallContext, Endpoint, Header, StreamFormat, UpstreamResponse};
use crate::probe::Checked;
use crate::route::Snapshot;
use crate::service::Relay;
use crate::sse::{Format, Framer};
use crate::stream::{Bounds, Redactor, Translation};
use crate::upstream::{ConnectError, HttpClient, connect_error};
use crate::vendor_request::{adapter_may_read, build_request, refused_answer};

/// What one channel attempt came to. Whether the next channel is tried instead is the
/// retry policy's decision (`error::policy`), carried by both outcomes.
enum Attempt {
    /// An answer for the client: a success, or a vendor error its adapter mapped.
    Answer {
        answer: Answer,
        retry: Retry,
    },
    Failed(RelayError),
}

impl Attempt {
    fn retry(&self) -> Retry {
        match self {
            Attempt::Answer { retry, .. } => *retry,
            Attempt::Failed(e) => e.retry,
        }
    }
}

impl Relay {
    /// One relay request whose body is already read: the HTTP handler and the async job
    /// runner both come through here, so they share routing, adapters, bounds and failover.
    pub async fn serve_body(
        &self,
        token: &Token,
        endpoint: Endpoint,
        body: &[u8],
        snap: &Snapshot,
        log: &mut RequestLog,
    ) -> Result<Answer, RelayError> {
        log.token = token.name.clone();
        let checked = Self::probe(endpoint, body).inspect_err(|e| {
            if e.kind == ErrorKind::InvalidModel {
                self.metrics.models_refused.inc();
            }
        })?;
        self.serve_checked(token, endpoint, checked, body, snap, log).await
    }

    /// `serve_body` for a body `probe` has already read (a job's, at submission): the body
    /// is not parsed again; the token's right to the model is checked against `snap`.
    pub async fn serve_checked(
        &self,
        token: &Token,
        endpoint: Endpoint,
        checked: Checked,
        body: &[u8],
        snap: &Snapshot,
        log: &mut RequestLog,
    ) -> Result<Answer, RelayError> {
        log.token = token.name.clone();
        let Checked { model, stream, include_usage } = checked;
        log.stream = stream;
        Self::admit(token, &model, snap)?;
        // Only an admitted model becomes a log field and a metrics label; refused ones count as "-".
        log.model = model.clone();
        // `probe` proved the body is UTF-8.
        let text = std::str::from_utf8(body).unwrap_or_default();
        let limits = &snap.config.limits;
        let candidates = snap.candidates(&model);

        // A bridged channel's chat body, made once for every channel that needs it.
        let mut chat_body = None;
        let mut ctx = CallContext {
            request_id: log.request_id.clone(),
            endpoint,
            model,
            stream,
            include_usage,
            settings: Vec::new(),
        };
        let count = candidates.len();
        for (i, (channel, client)) in candidates.into_iter().enumerate() {
            let last = i + 1 == count;
            log.channel = channel.name.clone();
            log.adapter = channel.adapter.clone();
            log.attempts += 1;
            ctx.settings.clone_from(&channel.settings);
            let attempt = self.attempt(channel, client, &ctx, text, &mut chat_body, limits, log).await;
            let moving_on = !last && attempt.retry() == Retry::NextChannel;
            match attempt {
                Attempt::Answer { answer, retry: Retry::Never } => return Ok(answer),
                Attempt::Answer { answer, .. } if !moving_on => {
                    log.finish(answer.status().as_u16());
                    log.first_byte();
                    return Ok(answer);
                }
                Attempt::Failed(e) if !moving_on => return Err(e),
                Attempt::Answer { answer, .. } => {
                    // Not the client's answer: the request's record keeps only the attempt count.
                    log.clear_error();
                    log.usage = None;
                    tracing::warn!(request_id = %log.request_id, channel = %channel.name, status = answer.status().as_u16(), fault = Fault::Upstream.name(), "vendor error, trying the next channel");
                }
                Attempt::Failed(e) => moving_on_after(&e, &log.request_id, &channel.name),
            }
        }
        unreachable!("the last candidate always returns")
    }

    #[allow(clippy::too_many_arguments)]
    async fn attempt(
        &self,
        channel: &Channel,
        client: &HttpClient,
        ctx: &CallContext,
        body: &str,
        chat_body: &mut Option<String>,
        limits: &Limits,
        log: &mut RequestLog,
    ) -> Attempt {
        let Some(plugin) = self.registry.get(&channel.adapter) else {
            return Attempt::Failed(RelayError::new(
                ErrorKind::AdapterMissing,
                format!("adapter '{}' of channel {} is not loaded", channel.adapter, channel.name),
            ));
        };
        // Per attempt: the client's API as sent to an adapter that speaks it, or bridged
        // through the adapter's chat completions (failover may cross from one to the other).
        let client_api = ctx.endpoint;
        let route = Route::of(client_api, &plugin.info);
        let bridged_ctx;
        let (ctx, body) = match route {
            Route::Unsupported => {
                return Attempt::Failed(RelayError::new(
                    ErrorKind::UnsupportedEndpoint,
                    format!("adapter '{}' does not serve this endpoint", plugin.name()),
                ));
            }
            Route::Direct => (ctx, body),
            Route::Chat => {
                if chat_body.is_none() {
                    match bridge::request(ctx.endpoint, body) {
                        Ok(b) => *chat_body = Some(b),
                        Err(e) => return Attempt::Failed(e),
                    }
                }
                bridged_ctx = CallContext { endpoint: Endpoint::ChatCompletions, include_usage: true, ..ctx.clone() };
                (&bridged_ctx, chat_body.as_deref().unwrap_or_default())
            }
        };

        let t = &channel.timeouts;
        let deadline = Instant::from_std(log.start) + t.total;

        let ureq = match plugin.transform_request(ctx, body).await {
            Ok(r) => r,
            Err(e) => return Attempt::Failed(e.into_relay(plugin.name())),
        };
        let request = match build_request(channel, &plugin, ureq, &self.metrics) {
            Ok(r) => r,
            Err(e) => return Attempt::Failed(e),
        };
        // Upstream data reaches the adapter only with the channel key taken out, so an
        // upstream that reflects it cannot hand it over; errors lose it the same way.
        let redactor = Redactor::new(channel.api_key.as_deref(), self.metrics.clone());

        let header_at = (Instant::now() + t.response_header).min(deadline);
        let resp = match tokio::time::timeout_at(header_at, client.request(request)).await {
            Err(_) => {
                self.metrics.upstream_attempts.inc([&channel.name, "timeout"]);
                let (stage, what, bound) = if header_at >= deadline {
                    ("total", "total request", t.total)
                } else {
                    ("response_header", "upstream response header", t.response_header)
                };
                self.metrics.timeouts.inc([stage]);
                return Attempt::Failed(RelayError::upstream_timeout(
                    Stage::from_name(stage),
                    format!("{what} timeout after {} on channel {}", fmt_secs(bound), channel.name),
                ));
            }
            Ok(Err(e)) => return Attempt::Failed(redactor.error(self.send_error(&e, channel))),
            Ok(Ok(r)) => r,
        };

        let (parts, incoming) = resp.into_parts();
        if let Some(e) = refused_answer(&parts, channel) {
            self.metrics.upstream_attempts.inc([&channel.name, "error"]);
            return Attempt::Failed(e);
        }
        self.metrics.upstream_attempts.inc([&channel.name, status_outcome(parts.status)]);
        if ctx.stream && parts.status.is_success() {
            let session = match plugin.open_stream(ctx).await {
                Ok(s) => s,
                Err(e) => return Attempt::Failed(e.into_relay(plugin.name())),
            };
            let format = match plugin.info.stream_format {
                StreamFormat::Sse => Format::Sse,
                StreamFormat::Ndjson => Format::Ndjson,
            };
            let framer = Framer::new(format, limits.max_stream_event);
            let bounds = Bounds {
                idle: t.stream_idle,
                deadline,
                total: t.total,
                max_output: limits.max_stream_event.saturating_mul(MAX_OUTPUT_PER_EVENT),
            };
            // The stream body owns the request's record from here: it is logged when the
            // stream ends or the client drops it.
            let mut stream_log = log.hand_over();
            stream_log.first_byte();
            let mut translation = Translation::new(
                incoming,
                framer,
                session,
                bounds,
                channel.name.clone(),
                stream_log,
                self.metrics.clone(),
                self.shutdown_signal(),
                redactor,
            );
            if route == Route::Chat
                && let Some(b) = bridge::stream(client_api, &ctx.model)
            {
                translation.set_bridge(b);
            }
            return Attempt::Answer { answer: Answer::Stream(Box::new(translation)), retry: Retry::Never };
        }

        let limit = limits.max_response_body;
        let bytes = match tokio::time::timeout_at(deadline, Limited::new(incoming, limit as usize).collect()).await {
            Err(_) => {
                self.metrics.timeouts.inc(["total"]);
                return Attempt::Failed(RelayError::upstream_timeout(
                    Stage::Total,
                    format!("total request timeout after {} on channel {}", fmt_secs(t.total), channel.name),
                ));
            }
            Ok(Err(e)) if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() => {
                return Attempt::Failed(RelayError::bad_upstream(format!(
                    "the response of channel {} is larger than the limit of {limit} bytes",
                    channel.name
                )));
            }
            Ok(Err(e)) => {
                return Attempt::Failed(redactor.error(RelayError::bad_upstream(format!(
                    "reading the response of channel {} failed: {e}",
                    channel.name
                ))));
            }
            Ok(Ok(c)) => c.to_bytes(),
        };
        let upstream_status = parts.status;
        let uresp = UpstreamResponse {
            status: upstream_status.as_u16(),
            headers: parts
                .headers
                .iter()
                .filter(|(k, _)| adapter_may_read(k.as_str()))
                .filter_map(|(k, v)| {
                    v.to_str()
                        .ok()
                        .map(|v| Header { name: k.as_str().to_string(), value: redactor.redact(v.to_string()) })
                })
                .collect(),
            body: redactor.redact(String::from_utf8_lossy(&bytes).into_owned()),
        };
        let answer = match plugin.transform_response(ctx, &uresp).await {
            Ok(a) => a,
            Err(e) => return Attempt::Failed(redactor.error(e.into_relay(plugin.name()))),
        };
        let Ok(status) = StatusCode::from_u16(answer.status) else {
            return Attempt::Failed(RelayError::plugin(format!(
                "adapter '{}' answered an invalid status {}",
                plugin.name(),
                answer.status
            )));
        };
        if answer.usage.is_some() {
            log.usage = answer.usage;
        }
        // A vendor error the adapter mapped: the same policy decides as for the relay's own
        // errors, with the adapter's reading of it (`class`).
        let retry = if upstream_status.is_success() {
            Retry::Never
        } else {
            policy(Failure::Vendor { status: upstream_status, class: answer.error_class })
        };
        let whole = Whole {
            status,
            body: Bytes::from(answer.body),
            usage: answer.usage,
            retry_after: parts.headers.get(header::RETRY_AFTER).cloned(),
        };
        let whole = if route == Route::Chat { bridge::response(client_api, whole, &ctx.model) } else { whole };
        if upstream_status.is_client_error() || upstream_status.is_server_error() {
            log.vendor_error(format!("vendor answered {upstream_status}"));
        }
        if retry == Retry::Never {
            log.finish(status.as_u16());
            log.first_byte();
        }
        // Otherwise finished (and timed) by `serve_body` only if no channel is left to try.
        Attempt::Answer { answer: Answer::Whole(whole), retry }
    }

    fn send_error(&self, e: &hyper_util::client::legacy::Error, channel: &Channel) -> RelayError {
        let outcome = match connect_error(e) {
            Some(ConnectError::Timeout { .. }) => "timeout",
            Some(_) => "connect_error",
            None if e.is_connect() => "connect_error",
            None => "error",
        };
        self.metrics.upstream_attempts.inc([&channel.name, outcome]);
        match connect_error(e) {
            Some(ConnectError::Timeout { stage, after }) => {
                self.metrics.timeouts.inc([stage]);
                let what = match *stage {
                    "connect" => "connect",
                    "dns" => "DNS lookup",
                    _ => "TLS handshake",
                };
                RelayError::upstream_timeout(
                    Stage::from_name(stage),
                    format!("upstream {what} timeout after {} on channel {}", fmt_secs(*after), channel.name),
                )
            }
            Some(c) => RelayError::upstream_unreachable(format!("cannot reach channel {}: {c}", channel.name)),
            None if e.is_connect() => {
                RelayError::upstream_unreachable(format!("cannot reach channel {}: {e}", channel.name))
            }
            None => {
                let cause = std::error::Error::source(e).map_or_else(|| e.to_string(), |s| s.to_string());
                RelayError::bad_upstream(format!("channel {} failed before answering: {cause}", channel.name))
            }
        }
    }
}

/// A failed attempt that failover absorbs: logged at the level its fault calls for (the
/// request's own record says how it ended).
fn moving_on_after(e: &RelayError, request_id: &str, channel: &str) {
    let fault = e.fault.name();
    let kind = e.kind.name();
    match e.fault {
        Fault::Client => {
            tracing::info!(request_id, channel, fault, kind, error = %e.message, "channel refused the request, trying the next channel")
        }
        Fault::Upstream => {
            tracing::warn!(request_id, channel, fault, kind, error = %e.message, "channel failed, trying the next channel")
        }
        Fault::Adapter | Fault::Relay => {
            tracing::error!(request_id, channel, fault, kind, error = %e.message, "channel failed, trying the next channel")
        }
    }
}

/// The `relay_upstream_attempts_total` outcome of a vendor's final response head.
fn status_outcome(status: StatusCode) -> &'static str {
    match status.as_u16() {
        429 => "status_429",
        400..=499 => "status_4xx",
        500..=599 => "status_5xx",
        _ => "ok",
    }
}

/// Chunk bytes one stream call may return, per byte of `limits.max_stream_event`: a
/// translation is about the size of the event it came from, and 4x leaves room for an
/// adapter that splits one vendor event into several chunks.
const MAX_OUTPUT_PER_EVENT: usize = 4;
