//! The request path: authenticate, parse just enough of the body, route to a channel,
//! let the adapter translate, call the vendor under the host's bounds, answer.
//! `handle` reads the body here; `probe` checks it, `failover` tries the channels and
//! returns the typed answer, `encode` writes it for the client.

use std::sync::Arc;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{Request, Response};
use hyper::body::Incoming;
use tokio_util::sync::CancellationToken;

use crate::access::RequestLog;
use crate::adapter::Registry;
use crate::auth::{authenticate, authenticate_anthropic};
use crate::cooldown::{Cooldowns, LocalCooldowns};
use crate::encode::respond;
use crate::error::RelayError;
use crate::http::{Body, BodyBudget, api_error_response, json_response, read_client_body, request_id};
use crate::metrics::{BodyPermit, Metrics};
use crate::model::Endpoint;
use crate::probe::Checked;
use crate::route::Snapshot;

pub struct Relay {
    pub metrics: Arc<Metrics>,
    pub registry: Arc<Registry>,
    snapshot: ArcSwap<Snapshot>,
    shutdown: CancellationToken,
    /// Unix time of start-up, the `created` of every listed model.
    pub(crate) started: u64,
    /// Channels a vendor asked to stay away from (`Retry-After`), skipped by failover.
    pub cooldowns: Arc<dyn Cooldowns>,
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
        Self {
            metrics,
            registry,
            snapshot: ArcSwap::from_pointee(snapshot),
            shutdown,
            started,
            cooldowns: Arc::new(LocalCooldowns::default()),
        }
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

    /// `POST /v1/chat/completions`, `POST /v1/embeddings` and `POST /v1/messages`.
    pub async fn handle(&self, req: Request<Incoming>, endpoint: Endpoint) -> Response<Body> {
        let mut log = RequestLog::new(self.metrics.clone(), request_id(req.headers()), endpoint.as_str());
        let snapshot = self.snapshot();
        match self.serve(req, endpoint, &snapshot, &mut log).await {
            Ok(resp) => resp,
            Err(e) => fail(&mut log, e, endpoint),
        }
    }

    /// `POST /v1/messages/count_tokens`: the vendor's own count when a channel of the model
    /// speaks it natively (tried in failover order, cooling ones skipped, failing over among
    /// them as any call does), else the host's estimate (`bridge::messages::estimate_tokens`).
    /// `x-relay-token-count` says which answered. The model must be one the token may use.
    pub async fn count_tokens(&self, req: Request<Incoming>) -> Response<Body> {
        let endpoint = Endpoint::Messages;
        let mut log = RequestLog::new(self.metrics.clone(), request_id(req.headers()), endpoint.as_str());
        let snap = self.snapshot();
        let counted = async {
            let token = authenticate_anthropic(req.headers(), &snap)?;
            log.token = token.name.clone();
            let forward = crate::forward::anthropic(req.headers())?;
            let (body, _share) = self.read_body_held(req, &snap).await?;
            let model = Self::probe_count(&body)?;
            Self::admit(token, &model, &snap)?;
            log.model = model.clone();
            if self.counts_natively(&model, &snap) {
                let checked = Checked { model, stream: false, include_usage: false, response: None };
                let exact = Endpoint::MessagesCountTokens;
                let answer = self.serve_checked_with(token, exact, checked, &body, &snap, &mut log, &forward).await?;
                return Ok(Counted::Exact(answer));
            }
            crate::bridge::messages::estimate_tokens(&body).map(Counted::Estimate)
        };
        let (mut resp, how) = match counted.await {
            Ok(Counted::Exact(answer)) => (respond(answer, endpoint, &log.request_id), TOKEN_COUNT_EXACT),
            Ok(Counted::Estimate(n)) => {
                log.finish(200);
                log.first_byte();
                let mut resp = json_response(http::StatusCode::OK, format!("{{\"input_tokens\":{n}}}"));
                crate::http::set_request_id(resp.headers_mut(), &log.request_id);
                (resp, TOKEN_COUNT_ESTIMATE)
            }
            Err(e) => return fail(&mut log, e, endpoint),
        };
        resp.headers_mut().insert(TOKEN_COUNT_HEADER, http::HeaderValue::from_static(how));
        resp
    }

    /// Whether a channel of `model` that is not cooling down counts tokens itself.
    fn counts_natively(&self, model: &str, snap: &Snapshot) -> bool {
        let now = tokio::time::Instant::now();
        snap.candidates(model).into_iter().any(|(channel, _)| {
            self.speaks(channel, Endpoint::MessagesCountTokens)
                && self.cooldowns.remaining(&channel.name, now).is_none()
        })
    }

    async fn serve(
        &self,
        req: Request<Incoming>,
        endpoint: Endpoint,
        snap: &Snapshot,
        log: &mut RequestLog,
    ) -> Result<Response<Body>, RelayError> {
        let token = match endpoint {
            Endpoint::Messages => authenticate_anthropic(req.headers(), snap)?,
            _ => authenticate(req.headers(), snap)?,
        };
        log.token = token.name.clone();
        // Client headers a native channel receives, checked before the body is read.
        let forward = match endpoint {
            Endpoint::Messages => crate::forward::anthropic(req.headers())?,
            _ => Vec::new(),
        };
        // The body's share of the in-flight budget is held until the answer is made.
        let (body, _share) = self.read_body_held(req, snap).await?;
        // A stream's record moves into the stream: keep the id for the response head.
        let request_id = log.request_id.clone();
        let answer = self.serve_body_with(token, endpoint, &body, snap, log, &forward).await?;
        Ok(respond(answer, endpoint, &request_id))
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
}

/// Which counter answered a `count_tokens`: the vendor's (`exact`) or the relay's (`estimate`).
pub const TOKEN_COUNT_HEADER: &str = "x-relay-token-count";
const TOKEN_COUNT_EXACT: &str = "exact";
const TOKEN_COUNT_ESTIMATE: &str = "estimate";

/// A `count_tokens` answer: the channel's (its count, or its error), or the host's estimate.
enum Counted {
    Exact(crate::answer::Answer),
    Estimate(u64),
}

/// A configuration goes into service: zero samples for its channels, its pools' idle bound.
fn configured(metrics: &Metrics, snap: &Snapshot) {
    let channels = snap.config.channels.iter().map(|c| c.name.as_str());
    metrics.channels_configured(channels, snap.config.limits.pool_max_idle_per_host);
    metrics.failover_pairs_configured(snap.failover_pairs());
}

fn fail(log: &mut RequestLog, e: RelayError, endpoint: Endpoint) -> Response<Body> {
    log.fail(&e);
    log.first_byte();
    api_error_response(endpoint, &e, Some(&log.request_id))
}
