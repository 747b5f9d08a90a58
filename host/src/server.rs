//! The HTTP server: accept loop, per-path dispatch, graceful shutdown.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::config::Limits;
use crate::conn::{ClientIo, ConnState, IoBounds, TrackedBody};
use crate::error::RelayError;
use crate::http::{Body, api_error_response, error_response, json_response};
use crate::jobs::{Jobs, wants_async};
use crate::metrics::{Metrics, OwnedGaugeGuard};
use crate::model::Endpoint;
use crate::responses;
use crate::service::Relay;

/// Connections past `limits.max_connections` still accepted, to answer `/healthz` (so a
/// probe does not restart a relay that is only full) and a 503 to everything else; past
/// these the relay closes new connections at once.
const RESERVE_CONNECTIONS: i64 = 64;
/// A reserve connection lives at most this long, answer and lingering close included.
const RESERVE_LIFETIME: Duration = Duration::from_secs(5);
/// A reserve connection's bound for its request head and for a stalled write.
const RESERVE_IO_BOUND: Duration = Duration::from_secs(2);
/// Seconds a client refused at the cap is told to wait (`Retry-After`).
const RETRY_AFTER_FULL: u32 = 1;
/// An HTTP/2 peer that does not answer a keep-alive ping within this is gone.
const HTTP2_KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(20);
/// TCP keepalive on client sockets: a peer that vanished (no FIN, no RST) is found in
/// about TIME + RETRIES * INTERVAL (~2 min) instead of the kernel's 2 hours.
const TCP_KEEPALIVE_TIME: Duration = Duration::from_secs(60);
const TCP_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(15);
const TCP_KEEPALIVE_RETRIES: u32 = 4;
/// After accept fails (e.g. out of file descriptors), pause instead of spinning.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(100);
/// After the grace period, streams are told to end; this is how long they get to send
/// their final error event before the process exits.
const FINAL_FLUSH: Duration = Duration::from_secs(2);

/// One client request, by path: the API routes, health, metrics, the admin API and the
/// async job routes.
pub async fn dispatch(relay: Arc<Relay>, jobs: Arc<Jobs>, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path();
    match (req.method(), path) {
        (&Method::POST, "/v1/chat/completions") if wants_async(req.headers()) => {
            jobs.submit(req, Endpoint::ChatCompletions).await
        }
        (&Method::POST, "/v1/embeddings") if wants_async(req.headers()) => jobs.submit(req, Endpoint::Embeddings).await,
        (&Method::POST, "/v1/chat/completions") => relay.handle(req, Endpoint::ChatCompletions).await,
        (&Method::POST, "/v1/embeddings") => relay.handle(req, Endpoint::Embeddings).await,
        // Anthropic Messages; `Prefer: respond-async` is not offered on it (answered in-line).
        (&Method::POST, "/v1/messages") if wants_async(req.headers()) => jobs.submit(req, Endpoint::Messages).await,
        (&Method::POST, "/v1/messages") => relay.handle(req, Endpoint::Messages).await,
        (&Method::POST, "/v1/messages/count_tokens") => relay.count_tokens(req).await,
        // OpenAI Responses: `Prefer: respond-async` makes a relay job as on chat; otherwise
        // the Responses state (stored responses, conversations, background mode) serves it.
        (&Method::POST, "/v1/responses") if wants_async(req.headers()) => jobs.submit(req, Endpoint::Responses).await,
        (&Method::POST, "/v1/responses") => responses::create(&jobs, req).await,
        (method, p) if p.starts_with("/v1/responses/") => {
            let rest = p.trim_start_matches("/v1/responses/");
            let (query, headers) = (req.uri().query(), req.headers());
            match (method, rest.split_once('/')) {
                (&Method::GET, None) => responses::get(&jobs, headers, rest, query),
                (&Method::DELETE, None) => responses::delete(&jobs, headers, rest).await,
                (&Method::GET, Some((id, "input_items"))) => responses::input_items(&jobs, headers, id, query),
                (&Method::POST, Some((id, "cancel"))) => responses::cancel(&jobs, headers, id).await,
                _ => error_response(&RelayError::not_found(format!("no route for {method} {p}")), None),
            }
        }
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
        (&Method::GET, "/metrics") => metrics_response(&relay, req.headers()),
        (_, "/v1/messages" | "/v1/messages/count_tokens") => api_error_response(
            Endpoint::Messages,
            &RelayError::method_not_allowed(format!("{} is not allowed here; use POST", req.method())),
            None,
        ),
        (_, "/v1/chat/completions" | "/v1/embeddings" | "/v1/responses") => error_response(
            &RelayError::method_not_allowed(format!("{} is not allowed here; use POST", req.method())),
            None,
        ),
        _ => error_response(&RelayError::not_found(format!("no route for {} {path}", req.method())), None),
    }
}

/// The `endpoint` label of a request in `relay_errors_total` (`metrics::ERROR_ENDPOINTS`).
fn route_name(method: &Method, path: &str) -> &'static str {
    match path {
        "/v1/chat/completions" if method == Method::POST => "chat_completions",
        "/v1/embeddings" if method == Method::POST => "embeddings",
        "/v1/messages" | "/v1/messages/count_tokens" if method == Method::POST => "messages",
        p if p == "/v1/responses" || p.starts_with("/v1/responses/") => "responses",
        p if p == "/v1/jobs" || p.starts_with("/v1/jobs/") => "jobs",
        p if p == "/v1/models" || p.starts_with("/v1/models/") => "models",
        p if p.starts_with("/admin/") => "admin",
        "/metrics" => "metrics",
        "/healthz" => "healthz",
        _ => "other",
    }
}

/// The server edge around one request's handler: a panic in it is answered 500 in OpenAI's
/// error shape, logged at error and counted as the relay's fault. Uncaught, it would end
/// the connection's task: the client would get a reset instead of an answer, and the
/// request's record would count a client that went away.
///
/// `AssertUnwindSafe`: the panicked handler future is dropped and never polled again, and
/// the state it shares (the relay, the jobs) is behind locks that are not left half-written
/// by a request (the request's own record is emitted as it unwinds, see `access`).
pub(crate) async fn guarded(
    metrics: &Metrics,
    endpoint: &'static str,
    handler: impl Future<Output = Response<Body>>,
) -> Response<Body> {
    match AssertUnwindSafe(handler).catch_unwind().await {
        Ok(resp) => resp,
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            let e = RelayError::internal();
            metrics.errors.inc([endpoint, e.fault.name(), e.kind.name()]);
            tracing::error!(endpoint, fault = e.fault.name(), kind = e.kind.name(), panic = %what, "a request handler panicked; answered 500");
            error_response(&e, None)
        }
    }
}

/// `GET /metrics`, behind `metrics_token` when one is configured.
fn metrics_response(relay: &Relay, headers: &http::HeaderMap) -> Response<Body> {
    if let Some(token) = &relay.snapshot().config.metrics_token
        && !crate::http::bearer_matches(headers, token.expose())
    {
        return error_response(&RelayError::unauthorized("/metrics needs the metrics token"), None);
    }
    let mut resp = Response::new(Full::new(relay.metrics.render().into()).boxed_unsync());
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8".parse().expect("static"));
    resp
}

/// Serve until `shutdown` resolves, then drain: stop accepting connections and jobs, let
/// in-flight requests and accepted jobs finish for `grace`, then interrupt the jobs left,
/// cancel `streams_stop` (streams end on it) and return.
pub async fn serve(
    listener: TcpListener,
    relay: Arc<Relay>,
    jobs: Arc<Jobs>,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
    streams_stop: CancellationToken,
) {
    let graceful = GracefulShutdown::new();
    let metrics = relay.metrics.clone();
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
        set_tcp_keepalive(&stream);
        // Read per connection, so a config reload applies to new connections.
        let limits = relay.snapshot().config.limits.clone();
        // The accept loop is the only place that adds connections: check-then-track is exact.
        if metrics.connections_open.get() >= i64::try_from(limits.max_connections).unwrap_or(i64::MAX) {
            metrics.connections_refused.inc();
            if metrics.connections_reserve_open.get() < RESERVE_CONNECTIONS {
                tokio::spawn(serve_reserve(stream, relay.clone(), limits.lingering_close));
            } else {
                tracing::debug!("connection refused: at limits.max_connections and the reserve is full");
            }
            continue;
        }
        let open = OwnedGaugeGuard::new(metrics.clone(), |m| &m.connections_open);
        let state = ConnState::new();
        let bounds = IoBounds {
            header: limits.client_header_timeout,
            idle: limits.client_idle_timeout,
            write: limits.client_write_timeout,
            linger: limits.lingering_close,
        };
        let io = ClientIo::new(stream, state.clone(), bounds, metrics.clone());
        let (relay, jobs) = (relay.clone(), jobs.clone());
        let svc = service_fn(move |req| {
            // Busy from here until the answer's body ends or is dropped.
            let busy = state.begin();
            let (relay, jobs) = (relay.clone(), jobs.clone());
            async move {
                let endpoint = route_name(req.method(), req.uri().path());
                let metrics = relay.metrics.clone();
                // Boxed: hyper keeps a slot the size of this future for the connection's
                // whole life (a held stream's too), and the handler's future is ~5 KB.
                let resp = guarded(&metrics, endpoint, Box::pin(dispatch(relay, jobs, req))).await;
                Ok::<_, std::convert::Infallible>(resp.map(|b| TrackedBody::new(b, busy)))
            }
        });
        let builder = connection_builder(&limits);
        let conn = builder.serve_connection(TokioIo::new(io), svc).into_owned();
        let conn = graceful.watch(conn);
        // One task per connection, owned by the graceful watcher: it ends when the
        // connection closes, and shutdown waits for it.
        tokio::spawn(async move {
            let _open = open;
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    // Async jobs have no connection to wait on: the grace is for them as much as for
    // requests in flight, so the drain waits for both. Submissions are refused before the
    // line below says so.
    jobs.drain();
    tracing::info!(grace_s = grace.as_secs_f64(), "shutting down: no new connections or jobs; draining");
    let all_closed = graceful.shutdown();
    tokio::pin!(all_closed);
    let deadline = tokio::time::sleep(grace);
    tokio::pin!(deadline);
    let (mut conns_closed, mut jobs_idle) = (false, false);
    while !(conns_closed && jobs_idle) {
        tokio::select! {
            _ = &mut all_closed, if !conns_closed => conns_closed = true,
            _ = jobs.idle(), if !jobs_idle => jobs_idle = true,
            _ = &mut deadline => break,
        }
    }
    if conns_closed && jobs_idle {
        return;
    }
    tracing::warn!("grace period over: interrupting the remaining jobs and ending the remaining streams");
    // Jobs first, so each records `job_interrupted` rather than the error event its
    // stream would end with.
    jobs.shutdown().await;
    streams_stop.cancel();
    if !conns_closed {
        let _ = tokio::time::timeout(FINAL_FLUSH, &mut all_closed).await;
    }
}

/// The protocol settings of one client connection, from the limits in force at accept.
fn connection_builder(l: &Limits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // HTTP/1: the head timer also runs while a keep-alive connection waits for its next request.
    builder.http1().timer(TokioTimer::new()).header_read_timeout(l.client_header_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(l.http2_keep_alive_interval))
        .keep_alive_timeout(HTTP2_KEEP_ALIVE_TIMEOUT)
        .max_concurrent_streams(l.http2_max_concurrent_streams);
    builder
}

fn set_tcp_keepalive(stream: &TcpStream) {
    let ka = socket2::TcpKeepalive::new()
        .with_time(TCP_KEEPALIVE_TIME)
        .with_interval(TCP_KEEPALIVE_INTERVAL)
        .with_retries(TCP_KEEPALIVE_RETRIES);
    if let Err(e) = socket2::SockRef::from(stream).set_tcp_keepalive(&ka) {
        tracing::debug!(error = %e, "cannot set TCP keepalive on a client socket");
    }
}

/// A connection past `limits.max_connections`: HTTP/1 only, one request, a short life.
/// `/healthz` and `/metrics` answer as usual (monitoring sees a full relay); everything else
/// gets 503 with `Retry-After`.
async fn serve_reserve(stream: TcpStream, relay: Arc<Relay>, linger: Duration) {
    let metrics = relay.metrics.clone();
    let _reserve = OwnedGaugeGuard::new(metrics.clone(), |m| &m.connections_reserve_open);
    let bounds = IoBounds { header: RESERVE_IO_BOUND, idle: RESERVE_IO_BOUND, write: RESERVE_IO_BOUND, linger };
    let io = ClientIo::new(stream, ConnState::new(), bounds, metrics);
    let svc = service_fn(move |req: Request<Incoming>| {
        let relay = relay.clone();
        async move {
            let mut resp = if req.method() == Method::GET && req.uri().path() == "/healthz" {
                json_response(StatusCode::OK, r#"{"status":"ok"}"#)
            } else if req.method() == Method::GET && req.uri().path() == "/metrics" {
                metrics_response(&relay, req.headers())
            } else {
                let e = RelayError::unavailable(
                    "the relay is at its connection limit (limits.max_connections); retry shortly",
                )
                .with_retry_after(RETRY_AFTER_FULL);
                error_response(&e, None)
            };
            resp.headers_mut().insert(header::CONNECTION, http::HeaderValue::from_static("close"));
            Ok::<_, std::convert::Infallible>(resp)
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(RESERVE_IO_BOUND).keep_alive(false);
    let conn = builder.serve_connection(TokioIo::new(io), svc);
    let _ = tokio::time::timeout(RESERVE_LIFETIME, conn).await;
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;
    use crate::access::RequestLog;

    /// A handler that panics, behind the same edge and the same hyper connection as a real
    /// one: the client gets a 500 in OpenAI's shape on a connection that stays usable, the
    /// failure is the relay's, and the request's record is not a client that went away.
    /// (No request path panics on purpose, so the handler here is the only way to make one.)
    #[tokio::test]
    async fn a_panicking_handler_is_answered_500_as_the_relays_fault() {
        let metrics = Arc::new(Metrics::default());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let m = metrics.clone();
        let server = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let svc = service_fn(move |req: Request<Incoming>| {
                let m = m.clone();
                async move {
                    let endpoint = route_name(req.method(), req.uri().path());
                    let handler = async {
                        let mut log = RequestLog::new(m.clone(), "req_panic".into(), endpoint);
                        // The record lives in the handler's state across an await, as in `handle`.
                        tokio::task::yield_now().await;
                        if req.uri().path() == "/v1/chat/completions" {
                            panic!("a test handler panics");
                        }
                        log.finish(200);
                        json_response(StatusCode::OK, "{}")
                    };
                    Ok::<_, std::convert::Infallible>(guarded(&m, endpoint, handler).await)
                }
            });
            let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
        });
        let mut client = TcpStream::connect(addr).await.unwrap();
        let head = "POST /v1/chat/completions HTTP/1.1\r\nhost: relay\r\ncontent-length: 0\r\n\r\n";
        client.write_all(head.as_bytes()).await.unwrap();
        let mut buf = vec![0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(5), client.read(&mut buf)).await.unwrap().unwrap();
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        assert!(text.starts_with("HTTP/1.1 500 "), "{text}");
        let body = text.split("\r\n\r\n").nth(1).unwrap_or_default();
        let v: serde_json::Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {text}"));
        assert_eq!(
            (v["error"]["type"].as_str(), v["error"]["code"].as_str()),
            (Some("server_error"), Some("internal_error"))
        );
        assert!(v["error"]["message"].as_str().is_some_and(|m| !m.contains("test handler")), "{v}");
        assert_eq!(metrics.errors.get(["chat_completions", "relay", "internal"]), 1);
        assert_eq!(metrics.client_disconnects.get(), 0, "a panic is not a client that went away");
        assert_eq!(metrics.requests.get(["-", "-", "500"]), 1, "the record is emitted as a 500");
        // The connection survived: the next request on it is answered.
        client.write_all(b"GET /healthz HTTP/1.1\r\nhost: relay\r\n\r\n").await.unwrap();
        let n = tokio::time::timeout(Duration::from_secs(5), client.read(&mut buf)).await.unwrap().unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200 "));
        assert_eq!(metrics.client_disconnects.get(), 0);
        drop(client);
        let _ = server.await;
    }

    #[test]
    fn route_names_are_error_endpoints() {
        for (m, p) in [
            (Method::POST, "/v1/chat/completions"),
            (Method::GET, "/v1/chat/completions"),
            (Method::POST, "/v1/embeddings"),
            (Method::POST, "/v1/messages"),
            (Method::POST, "/v1/responses"),
            (Method::GET, "/v1/responses/resp_1"),
            (Method::GET, "/v1/jobs/job_1/events"),
            (Method::GET, "/v1/responses/resp_1/input_items"),
            (Method::GET, "/v1/models"),
            (Method::GET, "/admin/plugins"),
            (Method::GET, "/metrics"),
            (Method::GET, "/healthz"),
            (Method::GET, "/nope"),
        ] {
            assert!(crate::metrics::ERROR_ENDPOINTS.contains(&route_name(&m, p)), "{m} {p}");
        }
    }
}
