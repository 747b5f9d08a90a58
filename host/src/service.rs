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

    /// `POST /v1/messages/count_tokens`: the prompt's tokens, estimated by the host (see
    /// `bridge::messages::estimate_tokens`); the model must be one the token may use.
    pub async fn count_tokens(&self, req: Request<Incoming>) -> Response<Body> {
        let endpoint = Endpoint::Messages;
        let mut log = RequestLog::new(self.metrics.clone(), request_id(req.headers()), endpoint.as_str());
        let snap = self.snapshot();
        let counted = async {
            let token = authenticate_anthropic(req.headers(), &snap)?;
            log.token = token.name.clone();
            let (body, _share) = self.read_body_held(req, &snap).await?;
            let checked = Self::probe_count(&body)?;
            Self::admit(token, &checked, &snap)?;
            log.model = checked;
            crate::bridge::messages::estimate_tokens(&body)
        };
        match counted.await {
            Ok(n) => {
                log.finish(200);
                log.first_byte();
                let mut resp = json_response(http::StatusCode::OK, format!("{{\"input_tokens\":{n}}}"));
                crate::http::set_request_id(resp.headers_mut(), &log.request_id);
                resp
            }
            Err(e) => fail(&mut log, e, endpoint),
        }
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
        // The body's share of the in-flight budget is held until the answer is made.
        let (body, _share) = self.read_body_held(req, snap).await?;
        // A stream's record moves into the stream: keep the id for the response head.
        let request_id = log.request_id.clone();
        let answer = self.serve_body(token, endpoint, &body, snap, log).await?;
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
