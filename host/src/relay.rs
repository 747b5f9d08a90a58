//! The request path: authenticate, parse just enough of the body, route to a channel,
//! let the adapter translate, call the vendor under the host's bounds, answer.

use std::sync::Arc;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use serde::Deserialize;
use serde::de::IgnoredAny;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::access::RequestLog;
use crate::auth::authenticate;
use crate::config::{Channel, Limits, Token, fmt_secs};
use crate::error::RelayError;
use crate::http::{
    Body, BodyBudget, constant_time_eq, error_response, json_response, read_client_body, request_id, set_request_id,
};
use crate::metrics::{BodyPermit, Metrics};
use crate::plugin::{CallContext, Endpoint, Header, Registry, StreamFormat, UpstreamResponse};
use crate::route::Snapshot;
use crate::sse::{Format, Framer};
use crate::stream::{Bounds, Redactor, Translation, usage};
use crate::upstream::{ConnectError, HttpClient, connect_error};
use crate::vendor_request::{adapter_may_read, build_request, refused_answer};

pub struct Relay {
    pub metrics: Arc<Metrics>,
    pub registry: Arc<Registry>,
    snapshot: ArcSwap<Snapshot>,
    shutdown: CancellationToken,
    /// Unix time of start-up, the `created` of every listed model.
    started: u64,
}

/// What one channel attempt came to.
enum Attempt {
    Answer(Response<Body>),
    /// A vendor error (5xx, 429) that another channel may not have.
    RetryableAnswer(Response<Body>),
    Failed(RelayError),
}

/// What `Relay::check` learnt from a request body.
pub struct Checked {
    pub model: String,
    pub stream: bool,
    pub include_usage: bool,
}

#[derive(Deserialize)]
struct ChatProbe {
    model: Option<serde_json::Value>,
    messages: Option<Vec<IgnoredAny>>,
    input: Option<IgnoredAny>,
    stream: Option<bool>,
    stream_options: Option<StreamOptions>,
}

#[derive(Deserialize)]
struct StreamOptions {
    include_usage: Option<bool>,
}

impl Relay {
    pub fn new(
        snapshot: Snapshot,
        registry: Arc<Registry>,
        metrics: Arc<Metrics>,
        shutdown: CancellationToken,
    ) -> Self {
        let started = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        configured(&metrics, &snapshot);
        Self { metrics, registry, snapshot: ArcSwap::from_pointee(snapshot), shutdown, started }
    }

    /// Cancelled when shutdown's grace period is over; long-lived bodies end on it.
    pub fn shutdown_signal(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    /// Swap in a new configuration; requests already running keep the one they started with.
    pub fn apply(&self, snapshot: Snapshot) {
        configured(&self.metrics, &snapshot);
        self.snapshot.store(Arc::new(snapshot));
    }

    /// `GET /admin/plugins`: the adapters in service, behind the admin token.
    pub fn admin_plugins(&self, headers: &HeaderMap) -> Response<Body> {
        let snap = self.snapshot();
        let Some(admin) = &snap.config.admin_token else {
            return error_response(&RelayError::not_found("the admin API is off (no admin_token configured)"), None);
        };
        let sent = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        if !constant_time_eq(sent.as_bytes(), admin.expose().as_bytes()) {
            return error_response(&RelayError::unauthorized("the admin API needs the admin token"), None);
        }
        let data: Vec<_> = self
            .registry
            .all()
            .iter()
            .map(|p| {
                let loaded = p.loaded_at.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
                serde_json::json!({
                    "name": p.info.name,
                    "version": p.info.version,
                    "description": p.info.description,
                    "file": p.path.display().to_string(),
                    "sha256": p.sha256,
                    "loaded_at": loaded,
                    "endpoints": p.info.endpoints.iter().map(|e| match e {
                        Endpoint::ChatCompletions => "chat_completions",
                        Endpoint::Embeddings => "embeddings",
                    }).collect::<Vec<_>>(),
                    "stream_format": match p.info.stream_format { StreamFormat::Sse => "sse", StreamFormat::Ndjson => "ndjson" },
                    "channels": snap.config.channels.iter().filter(|c| c.adapter == p.info.name).map(|c| c.name.clone()).collect::<Vec<_>>(),
                })
            })
            .collect();
        json_response(StatusCode::OK, serde_json::json!({"object": "list", "data": data}).to_string())
    }

    /// `POST /v1/chat/completions` and `POST /v1/embeddings`.
    pub async fn handle(&self, req: Request<Incoming>, endpoint: Endpoint) -> Response<Body> {
        let name = match endpoint {
            Endpoint::ChatCompletions => "chat_completions",
            Endpoint::Embeddings => "embeddings",
        };
        let mut log = RequestLog::new(self.metrics.clone(), request_id(req.headers()), name);
        let snapshot = self.snapshot();
        match self.serve(req, endpoint, &snapshot, &mut log).await {
            Ok(resp) => resp,
            Err(e) => fail(&mut log, e),
        }
    }

    async fn serve(
        &self,
        req: Request<Incoming>,
        endpoint: Endpoint,
        snap: &Snapshot,
        log: &mut RequestLog,
    ) -> Result<Response<Body>, RelayError> {
        let token = authenticate(req.headers(), snap)?;
        log.token = token.name.clone();
        // The body's share of the in-flight budget is held until the answer is made.
        let (body, _share) = self.read_body_held(req, snap).await?;
        self.serve_body(token, endpoint, &body, snap, log).await
    }

    /// Read a client's body under the request-body bounds (size, time, in-flight budget).
    pub async fn read_body(&self, req: Request<Incoming>, snap: &Snapshot) -> Result<Bytes, RelayError> {
        self.read_body_held(req, snap).await.map(|(b, _)| b)
    }

    /// `read_body`, and the body's share of `limits.max_inflight_body_bytes`: keep it for as
    /// long as the body stays in memory.
    pub async fn read_body_held(
        &self,
        req: Request<Incoming>,
        snap: &Snapshot,
    ) -> Result<(Bytes, BodyPermit), RelayError> {
        let limits = &snap.config.limits;
        let budget = BodyBudget { max: limits.max_inflight_body_bytes, metrics: &self.metrics };
        read_client_body(req, limits.max_request_body, snap.config.timeouts.client_body, budget).await
    }

    /// Everything that can be refused before any channel is tried: the body's JSON shape,
    /// the model, the token's right to it, a channel serving it.
    pub fn check(token: &Token, endpoint: Endpoint, body: &[u8], snap: &Snapshot) -> Result<Checked, RelayError> {
        let checked = Self::probe(endpoint, body)?;
        Self::admit(token, &checked.model, snap)?;
        Ok(checked)
    }

    fn probe(endpoint: Endpoint, body: &[u8]) -> Result<Checked, RelayError> {
        let text =
            std::str::from_utf8(body).map_err(|_| RelayError::bad_request("the request body is not valid UTF-8"))?;
        let probe: ChatProbe = serde_json::from_str(text)
            .map_err(|e| RelayError::bad_request(format!("We could not parse the JSON body of your request: {e}")))?;
        let model = match probe.model {
            Some(serde_json::Value::String(m)) if m.len() > MAX_MODEL_LEN => {
                return Err(RelayError::bad_request(format!(
                    "'model' is {} bytes long; the limit is {MAX_MODEL_LEN}",
                    m.len()
                ))
                .with_param("model")
                .with_code("invalid_model"));
            }
            Some(serde_json::Value::String(m)) if !m.is_empty() && !model_is_plain(&m) => {
                return Err(RelayError::bad_request("'model' may only contain letters, digits and . _ : / @ + - =")
                    .with_param("model")
                    .with_code("invalid_model"));
            }
            Some(serde_json::Value::String(m)) if !m.is_empty() => m,
            Some(_) => {
                return Err(RelayError::bad_request("'model' must be a non-empty string").with_param("model"));
            }
            None => {
                return Err(RelayError::bad_request("you must provide a model parameter").with_param("model"));
            }
        };
        match endpoint {
            Endpoint::ChatCompletions => match &probe.messages {
                None => {
                    return Err(RelayError::bad_request("'messages' is a required property").with_param("messages"));
                }
                Some(m) if m.is_empty() => {
                    return Err(RelayError::bad_request("'messages' must not be empty").with_param("messages"));
                }
                Some(_) => {}
            },
            Endpoint::Embeddings => {
                if probe.input.is_none() {
                    return Err(RelayError::bad_request("'input' is a required property").with_param("input"));
                }
            }
        }
        let stream = endpoint == Endpoint::ChatCompletions && probe.stream.unwrap_or(false);
        let include_usage = probe.stream_options.and_then(|o| o.include_usage).unwrap_or(false);
        Ok(Checked { model, stream, include_usage })
    }

    fn admit(token: &Token, model: &str, snap: &Snapshot) -> Result<(), RelayError> {
        if !token.allows(model) {
            return Err(RelayError::model_forbidden(model, &token.name));
        }
        if !snap.serves(model) {
            return Err(RelayError::model_not_found(model));
        }
        Ok(())
    }

    /// One relay request whose body is already read: the HTTP handler and the async job
    /// runner both come through here, so they share routing, adapters, bounds and failover.
    pub async fn serve_body(
        &self,
        token: &Token,
        endpoint: Endpoint,
        body: &[u8],
        snap: &Snapshot,
        log: &mut RequestLog,
    ) -> Result<Response<Body>, RelayError> {
        log.token = token.name.clone();
        let Checked { model, stream, include_usage } = Self::probe(endpoint, body).inspect_err(|e| {
            if e.code == Some("invalid_model") {
                self.metrics.models_refused.inc();
            }
        })?;
        log.stream = stream;
        Self::admit(token, &model, snap)?;
        // Only an admitted model becomes a log field and a metrics label; refused ones count as "-".
        log.model = model.clone();
        // `probe` proved the body is UTF-8.
        let text = std::str::from_utf8(body).unwrap_or_default();
        let limits = &snap.config.limits;
        let candidates = snap.candidates(&model);

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
            match self.attempt(channel, client, &ctx, text, limits, log).await {
                Attempt::Answer(resp) => return Ok(resp),
                Attempt::RetryableAnswer(resp) if last => {
                    log.finish(resp.status().as_u16());
                    log.first_byte();
                    return Ok(resp);
                }
                Attempt::Failed(e) if last || !e.retryable => return Err(e),
                Attempt::RetryableAnswer(resp) => {
                    // Not the client's answer: the request's record keeps only the attempt count.
                    log.error = None;
                    log.usage = None;
                    tracing::warn!(request_id = %log.request_id, channel = %channel.name, status = resp.status().as_u16(), "vendor error, trying the next channel");
                }
                Attempt::Failed(e) => {
                    tracing::warn!(request_id = %log.request_id, channel = %channel.name, error = %e.message, "channel failed, trying the next channel");
                }
            }
        }
        unreachable!("the last candidate always returns")
    }

    async fn attempt(
        &self,
        channel: &Channel,
        client: &HttpClient,
        ctx: &CallContext,
        body: &str,
        limits: &Limits,
        log: &mut RequestLog,
    ) -> Attempt {
        let Some(plugin) = self.registry.get(&channel.adapter) else {
            return Attempt::Failed(
                RelayError::unavailable(format!(
                    "adapter '{}' of channel {} is not loaded",
                    channel.adapter, channel.name
                ))
                .retryable(),
            );
        };
        if !plugin.supports(ctx.endpoint) {
            return Attempt::Failed(
                RelayError::bad_request(format!("adapter '{}' does not serve this endpoint", plugin.name()))
                    .with_code("unsupported_endpoint")
                    .retryable(),
            );
        }
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
                return Attempt::Failed(RelayError::upstream_timeout(format!(
                    "{what} timeout after {} on channel {}",
                    fmt_secs(bound),
                    channel.name
                )));
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
            let translation = Translation::new(
                incoming,
                framer,
                session,
                bounds,
                channel.name.clone(),
                stream_log,
                self.metrics.clone(),
                self.shutdown.clone(),
                redactor,
            );
            let mut resp = Response::new(translation.into_body());
            let h = resp.headers_mut();
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
            h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            h.insert("x-accel-buffering", HeaderValue::from_static("no"));
            set_request_id(h, &ctx.request_id);
            return Attempt::Answer(resp);
        }

        let limit = limits.max_response_body;
        let bytes = match tokio::time::timeout_at(deadline, Limited::new(incoming, limit as usize).collect()).await {
            Err(_) => {
                self.metrics.timeouts.inc(["total"]);
                return Attempt::Failed(RelayError::upstream_timeout(format!(
                    "total request timeout after {} on channel {}",
                    fmt_secs(t.total),
                    channel.name
                )));
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
        if let Some(u) = answer.usage {
            log.usage = Some(usage(u));
        }
        let mut resp = Response::new(Full::new(Bytes::from(answer.body)).boxed_unsync());
        *resp.status_mut() = status;
        let h = resp.headers_mut();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if let Some(v) = parts.headers.get(header::RETRY_AFTER) {
            h.insert(header::RETRY_AFTER, v.clone());
        }
        set_request_id(h, &ctx.request_id);
        if upstream_status.is_server_error() || upstream_status == StatusCode::TOO_MANY_REQUESTS {
            // Finished (and timed) by `serve_body` only if no channel is left to try.
            log.error = Some(format!("vendor answered {upstream_status}"));
            Attempt::RetryableAnswer(resp)
        } else {
            log.finish(status.as_u16());
            log.first_byte();
            Attempt::Answer(resp)
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
                RelayError::upstream_timeout(format!(
                    "upstream {what} timeout after {} on channel {}",
                    fmt_secs(*after),
                    channel.name
                ))
                .retryable()
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

    /// `GET /v1/models`: the models this token may use.
    pub fn models(&self, headers: &HeaderMap) -> Response<Body> {
        let snap = self.snapshot();
        let token = match authenticate(headers, &snap) {
            Ok(t) => t,
            Err(e) => return error_response(&e, None),
        };
        let data: Vec<_> = snap
            .models_for(token)
            .into_iter()
            .map(|(id, owner)| serde_json::json!({"id": id, "object": "model", "created": self.started, "owned_by": owner}))
            .collect();
        json_response(StatusCode::OK, serde_json::json!({"object": "list", "data": data}).to_string())
    }

    /// `GET /v1/models/{id}`.
    pub fn model(&self, headers: &HeaderMap, id: &str) -> Response<Body> {
        let snap = self.snapshot();
        let token = match authenticate(headers, &snap) {
            Ok(t) => t,
            Err(e) => return error_response(&e, None),
        };
        match snap.models_for(token).into_iter().find(|(m, _)| *m == id) {
            Some((id, owner)) => json_response(
                StatusCode::OK,
                serde_json::json!({"id": id, "object": "model", "created": self.started, "owned_by": owner})
                    .to_string(),
            ),
            None => error_response(&RelayError::model_not_found(id), None),
        }
    }
}

/// A configuration goes into service: zero samples for its channels, its pools' idle bound.
fn configured(metrics: &Metrics, snap: &Snapshot) {
    let channels = snap.config.channels.iter().map(|c| c.name.as_str());
    metrics.channels_configured(channels, snap.config.limits.pool_max_idle_per_host);
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

fn fail(log: &mut RequestLog, e: RelayError) -> Response<Body> {
    log.error = Some(e.message.clone());
    log.finish(e.status.as_u16());
    log.first_byte();
    error_response(&e, Some(&log.request_id))
}

/// Longest `model` accepted: real ids are under 100 bytes (`accounts/fireworks/models/...`
/// is among the longest); the string becomes a log field and a metrics label.
pub const MAX_MODEL_LEN: usize = 256;

/// Whether a `model` may be logged and labelled: not empty, at most `MAX_MODEL_LEN` bytes, and
/// only the characters real ids use (`gpt-4o-2024-08-06`, `models/gemini-1.5-pro`,
/// `claude-3-5-sonnet@20240620`, `ft:gpt-4o:org:x:id`, `meta-llama/Llama-3.1-8B-Instruct`,
/// `anthropic.claude-3-sonnet-20240229-v1:0`, `llama3.1:8b`).
pub fn model_is_plain(model: &str) -> bool {
    !model.is_empty()
        && model.len() <= MAX_MODEL_LEN
        && model
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'/' | b'@' | b'+' | b'-' | b'='))
}

/// Chunk bytes one stream call may return, per byte of `limits.max_stream_event`: a
/// translation is about the size of the event it came from, and 4x leaves room for an
/// adapter that splits one vendor event into several chunks.
const MAX_OUTPUT_PER_EVENT: usize = 4;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn real_model_ids_are_plain_and_floods_are_not() {
        for id in [
            "gpt-4o-2024-08-06",
            "models/gemini-1.5-pro",
            "claude-3-5-sonnet@20240620",
            "ft:gpt-4o:org:x:id",
            "meta-llama/Llama-3.1-8B-Instruct",
            "anthropic.claude-3-sonnet-20240229-v1:0",
            "accounts/fireworks/models/llama-v3p1-70b-instruct",
            "llama3.1:8b",
            "text_embedding_3",
        ] {
            assert!(model_is_plain(id), "{id}");
        }
        for bad in ["", "a b", "gpt\n", "m\"}", "é", "x{y}"] {
            assert!(!model_is_plain(bad), "{bad:?}");
        }
        assert!(model_is_plain(&"m".repeat(MAX_MODEL_LEN)));
        assert!(!model_is_plain(&"m".repeat(MAX_MODEL_LEN + 1)));
    }

    #[test]
    fn probe_refuses_unfit_models_with_400() {
        let long = serde_json::json!({"model": "m".repeat(1 << 20), "messages": [{"role": "user", "content": "hi"}]});
        let Err(e) = Relay::probe(Endpoint::ChatCompletions, long.to_string().as_bytes()) else { panic!("accepted") };
        assert_eq!((e.status, e.code), (StatusCode::BAD_REQUEST, Some("invalid_model")));
        assert!(e.message.len() < 100, "{}", e.message);
        let odd = serde_json::json!({"model": "a\nb", "messages": [{"role": "user", "content": "hi"}]});
        assert!(Relay::probe(Endpoint::ChatCompletions, odd.to_string().as_bytes()).is_err());
    }
}
