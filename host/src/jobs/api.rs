//! The jobs HTTP API: submit, get, list, cancel and events, their request parsing and
//! their responses.

use std::convert::Infallible;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, header};
use http_body::Frame;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::auth::{authenticate, authenticate_anthropic};
use crate::error::{ErrorKind, RelayError};
use crate::http::{Body, api_error_response, error_response, json_response, request_id};
use crate::model::Endpoint;
use crate::service::Relay;

use super::error::store_error;
use super::follower::Follow;
use super::manager::{Jobs, Pending, Refusal};
use super::{Record, Status, now_ms, owner_of};

/// OpenAI list pages: 20 items unless asked, 100 at most.
const DEFAULT_PAGE: usize = 20;
const MAX_PAGE: usize = 100;

/// Does the request ask for async mode (RFC 7240 `Prefer: respond-async`)?
pub fn wants_async(headers: &HeaderMap) -> bool {
    headers.get_all("prefer").iter().filter_map(|v| v.to_str().ok()).any(|v| {
        v.split(',').any(|p| p.split(';').next().is_some_and(|t| t.trim().eq_ignore_ascii_case("respond-async")))
    })
}

fn endpoint_name(e: Endpoint) -> &'static str {
    match e {
        Endpoint::ChatCompletions => "chat.completions",
        Endpoint::Embeddings => "embeddings",
        Endpoint::Responses => "responses",
        Endpoint::Messages => "messages",
        Endpoint::MessagesCountTokens => "messages.count_tokens",
    }
}

impl Jobs {
    /// `POST /v1/chat/completions`, `/v1/embeddings`, `/v1/responses` or `/v1/messages`
    /// with `Prefer: respond-async`; refusals in the client API's error shape.
    pub async fn submit(&self, req: Request<Incoming>, endpoint: Endpoint) -> Response<Body> {
        match self.try_submit(req, endpoint).await {
            Ok(r) => r,
            Err(e) => api_error_response(endpoint, &e, None),
        }
    }

    async fn try_submit(&self, req: Request<Incoming>, endpoint: Endpoint) -> Result<Response<Body>, RelayError> {
        let snap = self.relay.snapshot();
        let token = match endpoint {
            Endpoint::Messages => authenticate_anthropic(req.headers(), &snap)?,
            _ => authenticate(req.headers(), &snap)?,
        };
        // Before reading the body: no need to take 32 MiB to answer 503.
        if let Err(e) = self.store.health() {
            return Err(self.refused(Refusal::StoreDown, store_error(e)));
        }
        let owner = owner_of(&token.key);
        let request_id = request_id(req.headers());
        let (body, share) = self.relay.read_body_held(req, &snap).await?;
        let mut checked = Relay::check(token, endpoint, &body, &snap).inspect_err(|e| {
            if e.kind == ErrorKind::InvalidModel {
                self.relay.metrics.models_refused.inc();
            }
        })?;
        let body = match endpoint {
            Endpoint::ChatCompletions => {
                // What the probe of the rewritten body would read.
                (checked.stream, checked.include_usage) = (true, true);
                stream_body(&body)?
            }
            Endpoint::Messages => {
                // Run whole: the job's result is the Message (the job store's progress
                // events are chat chunks, which a Messages stream does not make).
                checked.stream = false;
                whole_body(&body)?
            }
            Endpoint::Embeddings | Endpoint::Responses | Endpoint::MessagesCountTokens => body,
        };
        let created = now_ms();
        let id = format!("job_{:016x}{:08x}", created * 1000, rand::random::<u32>());
        let record = Record {
            id: id.clone(),
            owner: owner.clone(),
            token: token.name.clone(),
            endpoint: endpoint_name(endpoint).to_string(),
            model: checked.model.clone(),
            request_id: request_id.clone(),
            status: Status::Queued,
            created_ms: created,
            ..Record::default()
        };
        let pending = Pending { id: id.clone(), owner, endpoint, body, checked, request_id, _share: share };
        // Admission runs as its own task: once the record is being written, a client that
        // hangs up cannot leave a reservation or a stored job outside the queue.
        let Some(me) = self.me.upgrade() else { return Err(RelayError::unavailable("the relay is shutting down")) };
        match tokio::spawn(async move { me.admit(record, pending).await }).await {
            Ok(Ok(())) => {}
            Ok(Err(resp)) => return Ok(resp),
            Err(_) => return Err(RelayError::unavailable("the job could not be queued")),
        }
        let mut resp = json_response(
            StatusCode::ACCEPTED,
            json!({"id": id, "object": "relay.job", "status": "queued", "created_at": created / 1000}).to_string(),
        );
        if let Ok(v) = HeaderValue::from_str(&format!("/v1/jobs/{id}")) {
            resp.headers_mut().insert(header::LOCATION, v);
        }
        Ok(resp)
    }

    /// The job `id` if `headers` carry its owner's key; 404 for anyone else.
    fn owned(&self, headers: &HeaderMap, id: &str) -> Result<Record, RelayError> {
        let snap = self.relay.snapshot();
        let token = authenticate(headers, &snap)?;
        match self.store.get_now(id).map_err(store_error)? {
            Some(r) if r.owner == owner_of(&token.key) => Ok(r),
            _ => Err(RelayError::not_found(format!("No job found with id '{id}'"))),
        }
    }

    /// `GET /v1/jobs/{id}`.
    pub fn get(&self, headers: &HeaderMap, id: &str) -> Response<Body> {
        match self.owned(headers, id) {
            Ok(r) => json_response(StatusCode::OK, r.to_json(now_ms()).to_string()),
            Err(e) => error_response(&e, None),
        }
    }

    /// `DELETE /v1/jobs/{id}`: cancel; a finished job is answered as it is.
    pub async fn cancel(&self, headers: &HeaderMap, id: &str) -> Response<Body> {
        let record = match self.owned(headers, id) {
            Ok(r) => r,
            Err(e) => return error_response(&e, None),
        };
        if !record.status.finished() {
            self.stop(id).await;
        }
        match self.store.get(id).await {
            Ok(Some(r)) => json_response(StatusCode::OK, r.to_json(now_ms()).to_string()),
            Ok(None) => error_response(&RelayError::not_found(format!("No job found with id '{id}'")), None),
            Err(e) => error_response(&store_error(e), None),
        }
    }

    /// `GET /v1/jobs?limit=&after=`: the caller's jobs, newest first, as summaries (no
    /// result or error: `GET /v1/jobs/{id}` has them).
    pub fn list(&self, headers: &HeaderMap, query: Option<&str>) -> Response<Body> {
        let snap = self.relay.snapshot();
        let token = match authenticate(headers, &snap) {
            Ok(t) => t,
            Err(e) => return error_response(&e, None),
        };
        let mut limit = DEFAULT_PAGE;
        let mut after = None;
        for (k, v) in query.unwrap_or("").split('&').filter_map(|kv| kv.split_once('=')) {
            match k {
                "limit" => match v.parse::<usize>() {
                    Ok(n) if (1..=MAX_PAGE).contains(&n) => limit = n,
                    _ => {
                        let e = RelayError::bad_request(format!("limit must be an integer from 1 to {MAX_PAGE}"))
                            .with_param("limit");
                        return error_response(&e, None);
                    }
                },
                "after" => after = Some(v.to_string()),
                _ => {}
            }
        }
        let (records, has_more) = match self.store.list_now(&owner_of(&token.key), after.as_deref(), limit) {
            Ok(r) => r,
            Err(e) => return error_response(&store_error(e), None),
        };
        let now = now_ms();
        let data: Vec<Value> = records.iter().map(|r| r.to_json(now)).collect();
        let body = json!({
            "object": "list",
            "first_id": records.first().map(|r| r.id.clone()),
            "last_id": records.last().map(|r| r.id.clone()),
            "has_more": has_more,
            "data": data,
        });
        json_response(StatusCode::OK, body.to_string())
    }

    /// `GET /v1/jobs/{id}/events`: the output so far, then live until the end; each event
    /// has an `id:`, and `Last-Event-ID` resumes after it. The body polls the store and a
    /// watch channel; it spawns nothing and ends with the job or at shutdown.
    pub fn events(&self, headers: &HeaderMap, id: &str) -> Response<Body> {
        let record = match self.owned(headers, id) {
            Ok(r) => r,
            Err(e) => return error_response(&e, None),
        };
        let cursor = headers
            .get("last-event-id")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0);
        self.follow(id, cursor, record.endpoint == "responses")
    }

    /// The events of job `id` after stored event `cursor` as an SSE body: replay, then live,
    /// to the end. The body polls the store and a watch channel; it spawns nothing and ends
    /// with the job or at shutdown.
    pub(crate) fn follow(&self, id: &str, cursor: u64, responses: bool) -> Response<Body> {
        let Some(me) = self.me.upgrade() else {
            return error_response(&RelayError::unavailable("the relay is shutting down"), None);
        };
        let live = self.lock().live.get(id).map(watch::Sender::subscribe);
        let follow = Follow {
            jobs: me,
            id: id.to_string(),
            cursor,
            live,
            shutdown: self.relay.shutdown_signal(),
            ended: false,
            responses,
            terminal: false,
        };
        let stream = futures_util::stream::unfold(follow, |mut f| async move {
            let bytes = f.next().await?;
            Some((Ok::<_, Infallible>(Frame::data(bytes)), f))
        });
        let mut resp = Response::new(http_body_util::StreamBody::new(stream).boxed_unsync());
        let h = resp.headers_mut();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        h.insert("x-accel-buffering", HeaderValue::from_static("no"));
        resp
    }
}

/// A Messages request made to answer whole (`stream` removed); everything else is kept.
fn whole_body(body: &[u8]) -> Result<Bytes, RelayError> {
    let mut v: serde_json::Map<String, Value> = serde_json::from_slice(body)
        .map_err(|e| RelayError::bad_request(format!("We could not parse the JSON body of your request: {e}")))?;
    v.remove("stream");
    Ok(Bytes::from(Value::Object(v).to_string()))
}

/// A chat request made to stream with usage, so the job's progress is live and its
/// result can be assembled; everything else in the body is kept as sent. The body itself
/// is rewritten (not only the call's flags) because adapters read `stream` and
/// `stream_options` from it, and pass-through adapters send it to the vendor as it is.
fn stream_body(body: &[u8]) -> Result<Bytes, RelayError> {
    let mut v: serde_json::Map<String, Value> = serde_json::from_slice(body)
        .map_err(|e| RelayError::bad_request(format!("We could not parse the JSON body of your request: {e}")))?;
    v.insert("stream".into(), Value::Bool(true));
    let opts = v.entry("stream_options").or_insert_with(|| json!({}));
    if let Some(o) = opts.as_object_mut() {
        o.insert("include_usage".into(), Value::Bool(true));
    }
    Ok(Bytes::from(Value::Object(v).to_string()))
}
