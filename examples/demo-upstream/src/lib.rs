//! A small upstream that speaks a vendor's API the way the vendor does (OpenAI by default;
//! see [`Vendor`]): it validates what it receives (credential, required fields, roles,
//! unknown parameters) and answers with the real response, stream and error shapes.
//! `make run` serves the demo with it; tests and benchmarks use it as the vendor.
//!
//! Faults are chosen per request by headers (a relay channel can add them with its
//! `headers` table), so one mock serves every scenario:
//! - `x-mock-status: 429` answers that status with an OpenAI error body;
//! - `x-mock-header-delay-ms: N` waits before the response head;
//! - `x-mock-body-delay-ms: N` sends a non-stream head at once and its body N ms later;
//! - `x-mock-chunks: N`, `x-mock-chunk-delay-ms: N` shape a stream;
//! - `x-mock-fault: stall-after:N | drop-after:N | no-done | no-terminator | not-json |
//!   garbage-chunk`, whatever the vendor: `no-done` cuts a stream before its end (the event
//!   carrying the finish reason, and all after it, are left out: a truncated answer);
//!   `no-terminator` sends the whole answer, finish reason and usage included, and leaves
//!   out only the vendor's terminal event (`[DONE]`, `message_stop`, `response.completed`;
//!   Gemini has none, so its stream is whole); `garbage-chunk` puts an unparseable event second.
//! - `x-mock-fault: response-failed` (OpenAI's Responses API) ends a stream with the
//!   vendor's own `response.failed` event where the answer's end would be;
//! - `x-mock-fault: reset` reads the request and closes the connection without answering
//!   (a vendor that dies after the request was sent, before its response head);
//! - `x-mock-retry-after: V` is the `Retry-After` of an error status (seconds or an HTTP
//!   date; a 429 sends `7` without it), `x-mock-retry-after-ms: N` adds `retry-after-ms`;
//! - `x-mock-error-code: C` is the `code` of an OpenAI-shaped 4xx error (e.g.
//!   `context_length_exceeded`, `content_filter`), with type `invalid_request_error`;
//! - `x-mock-fail-first: N` applies the fault knobs above (status, fault, header delay)
//!   only to the first N requests that carry it, and `x-mock-fail-every: K` only to every
//!   K-th (the 1st, the K+1-th, ...): a vendor that fails once and recovers, or flaps.
//!   Each mock counts these requests apart from the others (`Stats::knobbed`).

mod anthropic;
mod azure;
mod gemini;
mod openai;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode, header};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

pub(crate) type Body = UnsyncBoxBody<Bytes, std::io::Error>;

pub(crate) fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).map_err(|never: Infallible| match never {}).boxed_unsync()
}

/// Which vendor's API the mock speaks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Vendor {
    #[default]
    OpenAi,
    Anthropic,
    Gemini,
    Azure,
}

#[derive(Debug, Clone)]
pub struct Options {
    pub vendor: Vendor,
    /// The key clients must send, in the vendor's own way (`Authorization: Bearer` for
    /// OpenAI, `x-api-key` for Anthropic, ...).
    pub api_key: String,
    /// Content chunks in a stream (the reply is split across them).
    pub chunks: usize,
    pub chunk_delay: Duration,
    pub header_delay: Duration,
    /// Keep every request for `Stats::received` (tests); off for long-running demos and
    /// benchmarks, where it would grow without end.
    pub record: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            vendor: Vendor::OpenAi,
            api_key: "sk-demo-upstream".into(),
            chunks: 8,
            chunk_delay: Duration::from_millis(0),
            header_delay: Duration::from_millis(0),
            record: true,
        }
    }
}

/// What the mock received, for tests to check what the relay sent.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    pub headers: HeaderMap,
    pub body: Value,
}

#[derive(Default)]
pub struct Stats {
    pub open_connections: AtomicI64,
    pub requests: AtomicU64,
    /// Requests that carried `x-mock-fail-first` or `x-mock-fail-every`.
    pub knobbed: AtomicU64,
    received: Mutex<Vec<Received>>,
}

impl Stats {
    pub fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn open_connections(&self) -> i64 {
        self.open_connections.load(Ordering::SeqCst)
    }
}

/// A running mock; it stops accepting when dropped.
pub struct Mock {
    pub addr: SocketAddr,
    pub stats: Arc<Stats>,
    accept: JoinHandle<()>,
}

impl Drop for Mock {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

impl Mock {
    pub async fn start(options: Options) -> std::io::Result<Mock> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        Ok(Self::serve(listener, options))
    }

    pub fn serve(listener: TcpListener, options: Options) -> Mock {
        let addr = listener.local_addr().expect("bound listener has an address");
        let stats = Arc::new(Stats::default());
        let options = Arc::new(options);
        let st = stats.clone();
        let accept = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let (st, options) = (st.clone(), options.clone());
                tokio::spawn(async move {
                    st.open_connections.fetch_add(1, Ordering::SeqCst);
                    let svc_st = st.clone();
                    let svc = service_fn(move |req| {
                        let (st, options) = (svc_st.clone(), options.clone());
                        // No response: the service fails, and hyper closes the connection.
                        async move { handle(req, &st, &options).await.ok_or_else(|| std::io::Error::other("mock reset")) }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                    st.open_connections.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        Mock { addr, stats, accept }
    }

    /// The base URL as OpenAI's SDK writes it (with `/v1`).
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// The base URL as Anthropic's, Gemini's and Azure's SDKs write it (the bare origin).
    pub fn root_url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// One request as a vendor module sees it.
pub(crate) struct Req<'a> {
    pub method: &'a Method,
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub headers: &'a HeaderMap,
    pub body: &'a Value,
    pub options: &'a Options,
}

impl Req<'_> {
    /// A request header as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The `x-mock-fault` knob, empty when unset.
    pub fn fault(&self) -> String {
        knob(self.headers, "x-mock-fault").unwrap_or_default()
    }

    /// The `x-mock-status` knob.
    pub fn mock_status(&self) -> Option<StatusCode> {
        knob(self.headers, "x-mock-status")
            .and_then(|s| s.parse::<u16>().ok())
            .and_then(|s| StatusCode::from_u16(s).ok())
    }
}

pub(crate) fn json_response(status: StatusCode, body: String) -> Response<Body> {
    let mut r = Response::new(full(body));
    *r.status_mut() = status;
    r.headers_mut().insert(header::CONTENT_TYPE, "application/json".parse().expect("static"));
    r
}

pub(crate) fn knob(headers: &HeaderMap, name: &str) -> Option<String> {
    headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned)
}

pub(crate) fn knob_ms(headers: &HeaderMap, name: &str) -> Option<Duration> {
    knob(headers, name).and_then(|v| v.parse().ok()).map(Duration::from_millis)
}

/// Whitespace-separated words, at least 1: the mock's token count.
pub(crate) fn words(s: &str) -> u64 {
    s.split_whitespace().count().max(1) as u64
}

/// A body that is plainly not JSON, as a proxy in front of a vendor might send.
pub(crate) fn not_json() -> Response<Body> {
    let mut r = Response::new(full(Bytes::from_static(b"<html>not json</html>")));
    r.headers_mut().insert(header::CONTENT_TYPE, "text/html".parse().expect("static"));
    r
}

/// The number of content pieces a streamed reply is split into (`x-mock-chunks`).
pub(crate) fn chunk_count(req: &Req<'_>) -> usize {
    knob(req.headers, "x-mock-chunks").and_then(|v| v.parse().ok()).unwrap_or(req.options.chunks).max(1)
}

/// Split `text` into `n` pieces (the last ones may be shorter).
pub(crate) fn pieces(text: &str, n: usize) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    let per = chars.len().div_ceil(n.max(1)).max(1);
    chars.chunks(per).map(|c| c.iter().collect()).collect()
}

/// Where a stream's end lies among its events, for the faults that cut it there.
pub(crate) struct End {
    /// The index of the event that carries the finish reason (`events.len()` if none does);
    /// the usage and the terminal event, if any, follow it.
    pub finish: usize,
    /// The last event is the vendor's terminal one (`[DONE]`, `message_stop`).
    pub terminator: bool,
}

/// A streaming response of already-framed events (each a complete SSE event or NDJSON
/// line), paced by `x-mock-chunk-delay-ms` and broken as `x-mock-fault` says:
/// `stall-after:N` goes silent before event N, `drop-after:N` aborts the connection there
/// (`drop-after:0` just after the response head),
/// `no-done` leaves out the events from the finish reason on, `no-terminator` only the
/// terminal event, `garbage-chunk` puts an unparseable event second.
pub(crate) fn event_stream(
    req: &Req<'_>,
    mut events: Vec<String>,
    end: End,
    content_type: &'static str,
) -> Response<Body> {
    let fault = req.fault();
    let delay = knob_ms(req.headers, "x-mock-chunk-delay-ms").unwrap_or(req.options.chunk_delay);
    let parse = |prefix: &str| fault.strip_prefix(prefix).and_then(|n| n.parse::<usize>().ok());
    let (stall_after, drop_after) = (parse("stall-after:"), parse("drop-after:"));
    if fault == "no-done" {
        events.truncate(end.finish);
    }
    if fault == "no-terminator" && end.terminator {
        events.pop();
    }
    if fault == "garbage-chunk" {
        let garbage = if content_type.contains("ndjson") { "{not json\n" } else { "data: {not json\n\n" };
        events.insert(1.min(events.len()), garbage.into());
    }
    let stream =
        futures_util::stream::unfold((events.into_iter().enumerate(), delay), move |(mut it, delay)| async move {
            let (i, ev) = it.next()?;
            if i > 0 && !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            if stall_after == Some(i) {
                // Hold the connection open and silent: the relay's idle bound must end it.
                std::future::pending::<()>().await;
            }
            if drop_after == Some(i) {
                if i == 0 {
                    // Let the head go out first: a vendor that dies right after its head.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                return Some((Err(std::io::Error::other("mock drops the connection")), (it, delay)));
            }
            Some((Ok(Frame::data(Bytes::from(ev))), (it, delay)))
        });
    // A body error makes hyper abort the connection mid-stream, like a vendor that dies.
    let mut r = Response::new(StreamBody::new(stream).boxed_unsync());
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, content_type.parse().expect("static"));
    h.insert(header::CACHE_CONTROL, "no-cache".parse().expect("static"));
    r
}

/// The knobs that make a request fail, which `x-mock-fail-first` / `x-mock-fail-every` gate.
const FAULT_KNOBS: [&str; 6] = [
    "x-mock-status",
    "x-mock-fault",
    "x-mock-header-delay-ms",
    "x-mock-retry-after",
    "x-mock-retry-after-ms",
    "x-mock-error-code",
];

/// Whether this request's fault knobs apply, by `x-mock-fail-first` / `x-mock-fail-every`
/// (always, without either).
fn faulty(headers: &HeaderMap, stats: &Stats) -> bool {
    let num = |name: &str| knob(headers, name).and_then(|v| v.parse::<u64>().ok());
    let (first, every) = (num("x-mock-fail-first"), num("x-mock-fail-every"));
    if first.is_none() && every.is_none() {
        return true;
    }
    let n = stats.knobbed.fetch_add(1, Ordering::SeqCst) + 1;
    first.is_none_or(|f| n <= f) && every.is_none_or(|k| k > 0 && (n - 1).is_multiple_of(k))
}

async fn handle(req: Request<Incoming>, stats: &Stats, options: &Options) -> Option<Response<Body>> {
    stats.requests.fetch_add(1, Ordering::Relaxed);
    let (mut parts, body) = req.into_parts();
    let Ok(body) = body.collect().await.map(|c| c.to_bytes()) else {
        return Some(json_response(StatusCode::BAD_REQUEST, r#"{"error":"could not read body"}"#.into()));
    };
    if !faulty(&parts.headers, stats) {
        for k in FAULT_KNOBS {
            parts.headers.remove(k);
        }
    }
    let json: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    if options.record {
        stats.received.lock().unwrap_or_else(|e| e.into_inner()).push(Received {
            method: parts.method.to_string(),
            path: parts.uri.path().to_string(),
            query: parts.uri.query().map(str::to_owned),
            headers: parts.headers.clone(),
            body: json.clone(),
        });
    }
    if let Some(d) = knob_ms(&parts.headers, "x-mock-header-delay-ms").or(Some(options.header_delay))
        && !d.is_zero()
    {
        tokio::time::sleep(d).await;
    }
    if knob(&parts.headers, "x-mock-fault").as_deref() == Some("reset") {
        return None;
    }
    let req = Req {
        method: &parts.method,
        path: parts.uri.path(),
        query: parts.uri.query(),
        headers: &parts.headers,
        body: &json,
        options,
    };
    let mut r = match options.vendor {
        Vendor::OpenAi => openai::handle(&req).await,
        Vendor::Anthropic => anthropic::handle(&req).await,
        Vendor::Gemini => gemini::handle(&req).await,
        Vendor::Azure => azure::handle(&req).await,
    };
    if !r.status().is_success() {
        for (name, knob_name) in [("retry-after", "x-mock-retry-after"), ("retry-after-ms", "x-mock-retry-after-ms")] {
            if let Some(v) = knob(&parts.headers, knob_name).and_then(|v| http::HeaderValue::from_str(&v).ok()) {
                r.headers_mut().insert(name, v);
            }
        }
    }
    Some(r)
}

/// Small tool-call arguments a model might fill in from the tool's JSON schema: strings get
/// the user's words, numbers 1, booleans true. Shared by the OpenAI-shaped mocks.
pub(crate) fn tool_arguments(schema: &Value, last_user: &str) -> String {
    let mut args = serde_json::Map::new();
    if let Some(props) = schema.get("properties").and_then(Value::as_object) {
        for (name, p) in props {
            let v = match p.get("type").and_then(Value::as_str) {
                Some("string") => Value::String(last_user.to_string()),
                Some("number") | Some("integer") => Value::from(1),
                Some("boolean") => Value::Bool(true),
                _ => Value::Null,
            };
            args.insert(name.clone(), v);
        }
    }
    Value::Object(args).to_string()
}
