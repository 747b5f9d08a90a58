//! Failover: the admitted request tried channel by channel (adapter, vendor call under the
//! host's bounds, the answer or stream built for the client). `error::policy` decides what
//! a failed attempt comes to; `[retry]` bounds how often a channel is tried again and how
//! long a request may wait between tries; channels a vendor asked to stay away from
//! (`cooldown`) are skipped.

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{StatusCode, header};
use http_body_util::{BodyExt, Limited};
use tokio::time::Instant;

use crate::access::RequestLog;
use crate::answer::{Answer, Whole};
use crate::bridge::{self, Route};
use crate::config::{Channel, Limits, RetryConfig, Token, fmt_secs};
use crate::cooldown;
use crate::error::{ErrorKind, Failure, Fault, RelayError, Retry, Stage, policy, retry_reason};
use crate::model::{CallContext, Endpoint, Header, StreamFormat, UpstreamResponse};
use crate::probe::Checked;
use crate::route::Snapshot;
use crate::service::Relay;
use crate::sse::{Format, Framer};
use crate::stream::{Bounds, Primed, Redactor, Translation};
use crate::upstream::{ConnectError, HttpClient, connect_error};
use crate::vendor_request::{adapter_may_read, build_request, refused_answer};

/// What the attempts of one request share for the bridges: the chat body, made once for
/// every bridged channel, and a Responses call's id and echo.
struct Bridged<'a> {
    chat_body: &'a mut Option<String>,
    call: Option<&'a std::sync::Arc<bridge::responses::Call>>,
}

/// What one channel attempt came to. What follows it is the retry policy's decision
/// (`error::policy`), carried by both outcomes with the failure it judged.
enum Attempt {
    /// An answer for the client: a success, or a vendor error its adapter mapped.
    Answer {
        answer: Answer,
        retry: Retry,
        failure: Option<Failure>,
    },
    Failed {
        error: RelayError,
        failure: Failure,
    },
}

impl Attempt {
    fn failed(error: RelayError) -> Attempt {
        let failure = Failure::Error(error.kind);
        Attempt::Failed { error, failure }
    }

    fn retry(&self) -> Retry {
        match self {
            Attempt::Answer { retry, .. } => *retry,
            Attempt::Failed { error, .. } => error.retry,
        }
    }

    /// Why it was not the answer (`error::retry_reason`).
    fn reason(&self) -> &'static str {
        match self {
            Attempt::Answer { failure: Some(f), .. } | Attempt::Failed { failure: f, .. } => retry_reason(*f),
            Attempt::Answer { failure: None, .. } => "error",
        }
    }
}

/// The wait before try `failed + 1` of a channel: `backoff` doubled per failed try up to
/// `backoff_max`, drawn between half and all of that, so the retries of many requests do
/// not arrive together and none comes at once.
fn backoff(r: &RetryConfig, failed: u32) -> Duration {
    let cap = r.backoff.saturating_mul(1u32 << failed.saturating_sub(1).min(16)).min(r.backoff_max);
    let half = cap / 2;
    half + half.mul_f64(rand::random::<f64>())
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
        self.serve_body_with(token, endpoint, body, snap, log, &[]).await
    }

    /// `serve_body` with client headers that cross to a native channel (`forward`).
    pub async fn serve_body_with(
        &self,
        token: &Token,
        endpoint: Endpoint,
        body: &[u8],
        snap: &Snapshot,
        log: &mut RequestLog,
        forward: &[Header],
    ) -> Result<Answer, RelayError> {
        log.token = token.name.clone();
        let checked = Self::probe(endpoint, body).inspect_err(|e| {
            if e.kind == ErrorKind::InvalidModel {
                self.metrics.models_refused.inc();
            }
        })?;
        self.serve_checked_with(token, endpoint, checked, body, snap, log, forward).await
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
        self.serve_checked_with(token, endpoint, checked, body, snap, log, &[]).await
    }

    /// `serve_checked` with client headers that cross to a channel whose adapter speaks the
    /// client's API natively (`forward::anthropic`); a bridged channel never gets them.
    #[allow(clippy::too_many_arguments)]
    pub async fn serve_checked_with(
        &self,
        token: &Token,
        endpoint: Endpoint,
        checked: Checked,
        body: &[u8],
        snap: &Snapshot,
        log: &mut RequestLog,
        forward: &[Header],
    ) -> Result<Answer, RelayError> {
        log.token = token.name.clone();
        let Checked { model, stream, include_usage, response } = checked;
        log.stream = stream;
        Self::admit(token, &model, snap)?;
        // Only an admitted model becomes a log field and a metrics label; refused ones count as "-".
        log.model = model.clone();
        // `probe` proved the body is UTF-8.
        let text = std::str::from_utf8(body).unwrap_or_default();
        let limits = &snap.config.limits;
        // A Responses call: its id and the parameters every Response object echoes.
        let call = match response {
            Some(meta) => Some(std::sync::Arc::new(bridge::responses::Call::new(meta, text)?)),
            None => None,
        };
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
        // The failed attempt that is the answer unless a later channel does better.
        let mut pending: Option<(Attempt, &str, &'static str)> = None;
        // Waiting between attempts so far (`[retry] budget`).
        let mut waited = Duration::ZERO;
        let mut soonest_cool: Option<Duration> = None;
        for (i, (channel, client)) in candidates.into_iter().enumerate() {
            // An API no channel may bridge (count_tokens) goes only to those that speak it.
            if endpoint == Endpoint::MessagesCountTokens && !self.speaks(channel, endpoint) {
                continue;
            }
            if let Some(left) = self.cooldowns.remaining(&channel.name, Instant::now()) {
                soonest_cool = Some(soonest_cool.map_or(left, |s| s.min(left)));
                log.tried.push(format!("{}:cooling", channel.name));
                continue;
            }
            if let Some((prev, from, reason)) = pending.take() {
                self.absorb(prev, log, from, reason, false);
                self.metrics.failovers.inc([from, &channel.name, reason]);
            }
            let later = i + 1 < count;
            let r = &channel.retry;
            let deadline = Instant::from_std(log.start) + channel.timeouts.total;
            let mut tries = 0;
            loop {
                tries += 1;
                log.channel = channel.name.clone();
                log.adapter = channel.adapter.clone();
                log.attempts += 1;
                ctx.settings.clone_from(&channel.settings);
                let again = tries < r.attempts;
                let bridged = Bridged { chat_body: &mut chat_body, call: call.as_ref() };
                let attempt =
                    self.attempt(channel, client, &ctx, text, bridged, limits, log, later || again, forward).await;
                let retry = attempt.retry();
                if retry == Retry::Never {
                    return commit(attempt, log);
                }
                let reason = attempt.reason();
                if retry == Retry::SameChannel && again {
                    // A vendor's cooldown is a floor under the backoff: the retry waits it out.
                    let cooling = self.cooldowns.remaining(&channel.name, Instant::now()).unwrap_or_default();
                    let wait = backoff(r, tries).max(cooling);
                    if waited + wait <= r.budget && Instant::now() + wait < deadline {
                        self.absorb(attempt, log, &channel.name, reason, true);
                        self.metrics.retries.inc([&channel.name, reason]);
                        tokio::time::sleep(wait).await;
                        waited += wait;
                        continue;
                    }
                }
                pending = Some((attempt, &channel.name, reason));
                break;
            }
        }
        match pending {
            Some((attempt, ..)) => commit(attempt, log),
            None => {
                // Every candidate is cooling down: no vendor is called (that would be the
                // hammering the vendors asked to stop); the client learns when to come back.
                let left = soonest_cool.unwrap_or_default();
                let secs = u32::try_from(left.as_millis().div_ceil(1000)).unwrap_or(u32::MAX).max(1);
                self.metrics.cooling_refused.inc();
                Err(RelayError::new(
                    ErrorKind::UpstreamCoolingDown,
                    format!(
                        "every channel for the model '{}' is cooling down after its vendor's rate limit; retry after {secs} s",
                        ctx.model
                    ),
                )
                .with_retry_after(secs))
            }
        }
    }

    /// Whether `channel`'s adapter is loaded and speaks `endpoint` natively.
    pub(crate) fn speaks(&self, channel: &Channel, endpoint: Endpoint) -> bool {
        self.registry.get(&channel.adapter).is_some_and(|p| p.info.native.contains(&endpoint))
    }

    /// A failed attempt that is not the answer: its traces leave the request's record (which
    /// keeps the attempt count and `tried`), and it is logged at the level its fault calls for.
    fn absorb(&self, attempt: Attempt, log: &mut RequestLog, channel: &str, reason: &'static str, same: bool) {
        log.clear_error();
        log.usage = None;
        log.done = false;
        log.status = 0;
        log.tried.push(format!("{channel}:{reason}"));
        let request_id = log.request_id.as_str();
        match attempt {
            Attempt::Answer { answer, .. } => {
                let status = answer.status().as_u16();
                let fault = Fault::Upstream.name();
                if same {
                    tracing::warn!(request_id = %request_id, channel = %channel, status, fault, reason, "vendor error, retrying the channel");
                } else {
                    tracing::warn!(request_id = %request_id, channel = %channel, status, fault, reason, "vendor error, trying the next channel");
                }
            }
            Attempt::Failed { error, .. } => moving_on_after(&error, request_id, channel, reason, same),
        }
    }

    /// One try of `channel`. `can_move_on`: another try may follow a failure, so a stream
    /// is read up to its first event before it is committed (`Translation::prime`).
    #[allow(clippy::too_many_arguments)]
    async fn attempt(
        &self,
        channel: &Channel,
        client: &HttpClient,
        ctx: &CallContext,
        body: &str,
        bridged: Bridged<'_>,
        limits: &Limits,
        log: &mut RequestLog,
        can_move_on: bool,
        forward: &[Header],
    ) -> Attempt {
        let Some(plugin) = self.registry.get(&channel.adapter) else {
            return Attempt::failed(RelayError::new(
                ErrorKind::AdapterMissing,
                format!("adapter '{}' of channel {} is not loaded", channel.adapter, channel.name),
            ));
        };
        // Per attempt: the client's API as sent to an adapter that speaks it, or bridged
        // through the adapter's chat completions (failover may cross from one to the other).
        let client_api = ctx.endpoint;
        let Bridged { chat_body, call } = bridged;
        let route = Route::of(client_api, &plugin.info, channel.native.as_ref().map(|n| n.apis.as_slice()));
        let bridged_ctx;
        let (ctx, body) = match route {
            Route::Unsupported => {
                return Attempt::failed(RelayError::new(
                    ErrorKind::UnsupportedEndpoint,
                    format!("adapter '{}' does not serve this endpoint", plugin.name()),
                ));
            }
            Route::Direct => (ctx, body),
            Route::Chat => {
                if chat_body.is_none() {
                    match bridge::request(ctx.endpoint, body) {
                        Ok(b) => *chat_body = Some(b),
                        Err(e) => return Attempt::failed(e),
                    }
                }
                bridged_ctx = CallContext { endpoint: Endpoint::ChatCompletions, include_usage: true, ..ctx.clone() };
                (&bridged_ctx, chat_body.as_deref().unwrap_or_default())
            }
        };
        let t = &channel.timeouts;
        let deadline = Instant::from_std(log.start) + t.total;
        // `timeouts.first_token` counts from the attempt's start: no token comes before the head either.
        let first_token_at = t.first_token.filter(|_| ctx.stream).map(|ft| Instant::now() + ft);

        let mut ureq = match plugin.transform_request(ctx, body).await {
            Ok(r) => r,
            Err(e) => return Attempt::failed(e.into_relay(plugin.name())),
        };
        if route == Route::Direct {
            crate::forward::merge(&mut ureq.headers, forward);
        }
        let request = match build_request(channel, &plugin, ureq, &self.metrics) {
            Ok(r) => r,
            Err(e) => return Attempt::failed(e),
        };
        // Upstream data reaches the adapter only with the channel key taken out, so an
        // upstream that reflects it cannot hand it over; errors lose it the same way.
        let redactor = Redactor::new(channel.api_key.as_deref(), self.metrics.clone());

        let header_at = (Instant::now() + t.response_header).min(deadline);
        let header_at = first_token_at.map_or(header_at, |ft| header_at.min(ft));
        let resp = match tokio::time::timeout_at(header_at, client.request(request)).await {
            Err(_) => {
                self.metrics.upstream_attempts.inc([&channel.name, "timeout"]);
                let (stage, what, bound) = if header_at >= deadline {
                    ("total", "total request", t.total)
                } else if first_token_at == Some(header_at) {
                    ("first_token", "first token", t.first_token.unwrap_or_default())
                } else {
                    ("response_header", "upstream response header", t.response_header)
                };
                self.metrics.timeouts.inc([stage]);
                return Attempt::failed(RelayError::upstream_timeout(
                    Stage::from_name(stage),
                    format!("{what} timeout after {} on channel {}", fmt_secs(bound), channel.name),
                ));
            }
            Ok(Err(e)) => {
                let error = redactor.error(self.send_error(&e, channel));
                // Not a connect failure: the connection broke after the request was sent.
                if error.kind == ErrorKind::BadUpstream {
                    return Attempt::Failed { error: error.with_retry(Failure::Dropped), failure: Failure::Dropped };
                }
                return Attempt::failed(error);
            }
            Ok(Ok(r)) => r,
        };

        let (parts, incoming) = resp.into_parts();
        if let Some(e) = refused_answer(&parts, channel) {
            self.metrics.upstream_attempts.inc([&channel.name, "error"]);
            return Attempt::failed(e);
        }
        self.metrics.upstream_attempts.inc([&channel.name, status_outcome(parts.status)]);
        if parts.status == StatusCode::TOO_MANY_REQUESTS || parts.status.is_server_error() {
            self.cool_down(channel, &parts.headers);
        }
        if ctx.stream && parts.status.is_success() {
            let session = match plugin.open_stream(ctx).await {
                Ok(s) => s,
                Err(e) => return Attempt::failed(e.into_relay(plugin.name())),
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
                malformed: channel.malformed_events,
            };
            // The stream body owns the request's record from here: it is logged when the
            // stream ends or the client drops it (or handed back, if failover moves on).
            let stream_log = log.hand_over();
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
            if let Some(b) = bridge::stream(client_api, route, &ctx.model, call) {
                translation.set_bridge(b);
            }
            if can_move_on || first_token_at.is_some() {
                match translation.prime(first_token_at.map(|ft| ft.min(deadline))).await {
                    Primed::TimedOut => {
                        *log = translation.into_log();
                        self.metrics.timeouts.inc(["first_token"]);
                        let bound = fmt_secs(t.first_token.unwrap_or_default());
                        return Attempt::failed(RelayError::upstream_timeout(
                            Stage::FirstToken,
                            format!("first token timeout after {bound} on channel {}", channel.name),
                        ));
                    }
                    Primed::Ready => {
                        if let Some(e) = translation.failed_at_start().filter(|_| can_move_on) {
                            let failure = Failure::StreamStart { fault: e.fault };
                            if policy(failure) != Retry::Never {
                                let error = e.clone().with_retry(failure);
                                *log = translation.into_log();
                                return Attempt::Failed { error, failure };
                            }
                        }
                    }
                }
            }
            translation.first_byte();
            return Attempt::Answer {
                answer: Answer::Stream(Box::new(translation)),
                retry: Retry::Never,
                failure: None,
            };
        }

        let limit = limits.max_response_body;
        let bytes = match tokio::time::timeout_at(deadline, Limited::new(incoming, limit as usize).collect()).await {
            Err(_) => {
                self.metrics.timeouts.inc(["total"]);
                return Attempt::failed(RelayError::upstream_timeout(
                    Stage::Total,
                    format!("total request timeout after {} on channel {}", fmt_secs(t.total), channel.name),
                ));
            }
            Ok(Err(e)) if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() => {
                return Attempt::failed(RelayError::bad_upstream(format!(
                    "the response of channel {} is larger than the limit of {limit} bytes",
                    channel.name
                )));
            }
            Ok(Err(e)) => {
                return Attempt::failed(redactor.error(RelayError::bad_upstream(format!(
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
            Err(e) => return Attempt::failed(redactor.error(e.into_relay(plugin.name()))),
        };
        let Ok(status) = StatusCode::from_u16(answer.status) else {
            return Attempt::failed(RelayError::plugin(format!(
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
        let failure = (!upstream_status.is_success())
            .then_some(Failure::Vendor { status: upstream_status, class: answer.error_class });
        let retry = failure.map_or(Retry::Never, policy);
        let whole = Whole {
            status,
            body: Bytes::from(answer.body),
            usage: answer.usage,
            retry_after: parts.headers.get(header::RETRY_AFTER).cloned(),
        };
        let whole = bridge::response(client_api, route, whole, &ctx.model, call.map(|c| &**c));
        if upstream_status.is_client_error() || upstream_status.is_server_error() {
            log.vendor_error(format!("vendor answered {upstream_status}"));
        }
        if retry == Retry::Never {
            log.finish(status.as_u16());
            log.first_byte();
        }
        // Otherwise finished (and timed) by `serve_body` only if no channel is left to try.
        Attempt::Answer { answer: Answer::Whole(whole), retry, failure }
    }

    /// A vendor's error head asked for a pause (`Retry-After`, rate-limit resets): the
    /// channel is skipped for that long, at most `[retry] max_cooldown`.
    fn cool_down(&self, channel: &Channel, headers: &http::HeaderMap) {
        if let Some(asked) = cooldown::requested(headers, SystemTime::now()) {
            let d = asked.min(channel.retry.max_cooldown);
            if !d.is_zero() {
                self.cooldowns.cool(&channel.name, Instant::now() + d);
                tracing::info!(channel = %channel.name, cooldown_s = d.as_secs_f64(), "the vendor asked for a pause: the channel cools down");
            }
        }
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

/// The attempt that is the request's answer: a vendor error the policy would have moved
/// on from is finished (and timed) here, as no other try is left.
fn commit(attempt: Attempt, log: &mut RequestLog) -> Result<Answer, RelayError> {
    match attempt {
        Attempt::Answer { answer, retry: Retry::Never, .. } => Ok(answer),
        Attempt::Answer { answer, .. } => {
            log.finish(answer.status().as_u16());
            log.first_byte();
            Ok(answer)
        }
        Attempt::Failed { error, .. } => Err(error),
    }
}

/// A failed attempt that failover absorbs: logged at the level its fault calls for (the
/// request's own record says how it ended).
fn moving_on_after(e: &RelayError, request_id: &str, channel: &str, reason: &str, same: bool) {
    let fault = e.fault.name();
    let kind = e.kind.name();
    let next = if same { "retrying the channel" } else { "trying the next channel" };
    match e.fault {
        Fault::Client => {
            tracing::info!(request_id, channel, fault, kind, reason, error = %e.message, "channel refused the request, {next}")
        }
        Fault::Upstream => {
            tracing::warn!(request_id, channel, fault, kind, reason, error = %e.message, "channel failed, {next}")
        }
        Fault::Adapter | Fault::Relay => {
            tracing::error!(request_id, channel, fault, kind, reason, error = %e.message, "channel failed, {next}")
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
