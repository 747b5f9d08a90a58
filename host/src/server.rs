//! The HTTP server: accept loop, per-path dispatch, graceful shutdown.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::error::RelayError;
use crate::jobs::{Jobs, wants_async};
use crate::plugin::Endpoint;
use crate::relay::{Body, Relay, error_response, json_response};

/// Slow-loris bound: a client gets this long to send its request head.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// After accept fails (e.g. out of file descriptors), pause instead of spinning.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(100);
/// After the grace period, streams are told to end; this is how long they get to send
/// their final error event before the process exits.
const FINAL_FLUSH: Duration = Duration::from_secs(2);

pub async fn route(relay: Arc<Relay>, jobs: Arc<Jobs>, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path();
    match (req.method(), path) {
        (&Method::POST, "/v1/chat/completions") if wants_async(req.headers()) => {
            jobs.submit(req, Endpoint::ChatCompletions).await
        }
        (&Method::POST, "/v1/embeddings") if wants_async(req.headers()) => jobs.submit(req, Endpoint::Embeddings).await,
        (&Method::POST, "/v1/chat/completions") => relay.handle(req, Endpoint::ChatCompletions).await,
        (&Method::POST, "/v1/embeddings") => relay.handle(req, Endpoint::Embeddings).await,
        (&Method::GET, "/v1/jobs") => jobs.list(req.headers(), req.uri().query()),
        (&Method::GET, p) if p.starts_with("/v1/jobs/") && p.ends_with("/events") => {
            let id = p.trim_start_matches("/v1/jobs/").trim_end_matches("/events");
            jobs.events(req.headers(), id)
        }
        (&Method::GET, p) if p.starts_with("/v1/jobs/") => jobs.get(req.headers(), p.trim_start_matches("/v1/jobs/")),
        (&Method::DELETE, p) if p.starts_with("/v1/jobs/") => {
            jobs.cancel(req.headers(), p.trim_start_matches("/v1/jobs/")).await
        }
        (&Method::GET, "/v1/models") => relay.models(req.headers()),
        (&Method::GET, p) if p.starts_with("/v1/models/") => {
            let id = p.trim_start_matches("/v1/models/").to_string();
            relay.model(req.headers(), &id)
        }
        (&Method::GET, "/admin/plugins") => relay.admin_plugins(req.headers()),
        (&Method::GET, "/healthz") => json_response(StatusCode::OK, r#"{"status":"ok"}"#),
        (&Method::GET, "/metrics") => {
            let mut resp = Response::new(Full::new(relay.metrics.render().into()).boxed_unsync());
            resp.headers_mut()
                .insert(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8".parse().expect("static"));
            resp
        }
        (_, "/v1/chat/completions" | "/v1/embeddings") => error_response(
            &RelayError::method_not_allowed(format!("{} is not allowed here; use POST", req.method())),
            None,
        ),
        _ => error_response(&RelayError::not_found(format!("no route for {} {path}", req.method())), None),
    }
}

/// Serve until `shutdown` resolves, then drain: stop accepting, let in-flight requests
/// finish for `grace`, then tell streams to end (`streams_stop`) and return.
pub async fn serve(
    listener: TcpListener,
    relay: Arc<Relay>,
    jobs: Arc<Jobs>,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
    streams_stop: watch::Sender<bool>,
) {
    let graceful = GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(HEADER_READ_TIMEOUT);
    tokio::pin!(shutdown);
    loop {
        let (stream, _peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!(error = %e, "accept failed");
                    tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let (relay, jobs) = (relay.clone(), jobs.clone());
        let svc = service_fn(move |req| {
            let (relay, jobs) = (relay.clone(), jobs.clone());
            async move { Ok::<_, std::convert::Infallible>(route(relay, jobs, req).await) }
        });
        let conn = builder.serve_connection(TokioIo::new(stream), svc).into_owned();
        let conn = graceful.watch(conn);
        // One task per connection, owned by the graceful watcher: it ends when the
        // connection closes, and shutdown waits for it.
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    tracing::info!(grace_s = grace.as_secs_f64(), "shutting down: no new connections; draining");
    let all_closed = graceful.shutdown();
    tokio::pin!(all_closed);
    tokio::select! {
        _ = &mut all_closed => {}
        _ = tokio::time::sleep(grace) => {
            tracing::warn!("grace period over: ending the remaining streams");
            let _ = streams_stop.send(true);
            let _ = tokio::time::timeout(FINAL_FLUSH, &mut all_closed).await;
        }
    }
}
