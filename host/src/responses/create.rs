//! `POST /v1/responses`: the conversation of `previous_response_id` put before the input,
//! then a background job, or the relay's answer (stored when `store`, the default).

use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::{Map, Value, json};

use crate::access::RequestLog;
use crate::answer::{Answer, Batch};
use crate::auth::authenticate;
use crate::bridge::responses::Meta;
use crate::encode::{StreamEncoder, respond_with, stream_encoder};
use crate::error::{ErrorKind, RelayError};
use crate::http::{Body, api_error_response, json_response, request_id, set_request_id};
use crate::jobs::{Jobs, Pending, Record, Status, now_ms, owner_of, store_error};
use crate::model::{Endpoint, OutputEvent, Usage};
use crate::route::Snapshot;
use crate::service::Relay;

use super::{chain, events, view};

const ENDPOINT: Endpoint = Endpoint::Responses;

pub async fn create(jobs: &Arc<Jobs>, req: Request<Incoming>) -> Response<Body> {
    let relay = jobs.relay.clone();
    let mut log = RequestLog::new(relay.metrics.clone(), request_id(req.headers()), ENDPOINT.as_str());
    let snap = relay.snapshot();
    match serve(jobs, &relay, req, &snap, &mut log).await {
        Ok(resp) => resp,
        Err(e) => {
            log.fail(&e);
            log.first_byte();
            api_error_response(ENDPOINT, &e, Some(&log.request_id))
        }
    }
}

/// A boolean field, `default` when absent or null.
fn flag(body: &Map<String, Value>, key: &str, default: bool) -> Result<bool, RelayError> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(default),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(RelayError::bad_request(format!("'{key}' must be a boolean")).with_param(key)),
    }
}

async fn serve(
    jobs: &Arc<Jobs>,
    relay: &Relay,
    req: Request<Incoming>,
    snap: &Snapshot,
    log: &mut RequestLog,
) -> Result<Response<Body>, RelayError> {
    let token = authenticate(req.headers(), snap)?;
    log.token = token.name.clone();
    let (body, share) = relay.read_body_held(req, snap).await?;
    let mut checked = Relay::check(token, ENDPOINT, &body, snap).inspect_err(|e| {
        if e.kind == ErrorKind::InvalidModel {
            relay.metrics.models_refused.inc();
        }
    })?;
    log.model = checked.model.clone();
    let mut map: Map<String, Value> = serde_json::from_slice(&body)
        .map_err(|e| RelayError::bad_request(format!("We could not parse the JSON body of your request: {e}")))?;
    let store = flag(&map, "store", true)?;
    let background = flag(&map, "background", false)?;
    let streamed = flag(&map, "stream", false)?;
    if background && !store {
        return Err(RelayError::bad_request("Background mode requires store=true.").with_param("background"));
    }
    // The body goes on as sent unless something in it changes.
    let mut rewritten = map.contains_key("previous_response_id");
    let previous = match map.remove("previous_response_id") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s),
        Some(_) => {
            return Err(
                RelayError::bad_request("'previous_response_id' must be a string").with_param("previous_response_id")
            );
        }
    };
    let owner = owner_of(&token.key);
    let id = checked.response.as_ref().map_or_else(crate::bridge::responses::new_id, |m| m.id.clone());
    let own = chain::items(map.get("input"));
    if let Some(prev) = &previous {
        let max = snap.config.limits.max_request_body;
        let input = chain::conversation::<RelayError>(prev, own.clone(), max, |link_id| link(jobs, &owner, link_id))?;
        map.insert("input".into(), Value::Array(input));
        checked.response =
            Some(Arc::new(Meta { id: id.clone(), previous_response_id: Some(prev.clone()), background: false }));
        rewritten = true;
    }
    let created = now_ms();
    let mut record = Record {
        id: id.clone(),
        owner: owner.clone(),
        token: token.name.clone(),
        endpoint: ENDPOINT.as_str().to_string(),
        model: checked.model.clone(),
        request_id: log.request_id.clone(),
        created_ms: created,
        previous: previous.clone(),
        input: Some(Value::Array(own)),
        ..Record::default()
    };
    if background {
        let skeleton = view::skeleton(&map, &id, previous.as_deref(), created);
        // The job runs a plain stream: `background` is the relay's, never a vendor's; its
        // Response objects still say `background: true` (`Meta`).
        map.remove("background");
        let previous_response_id = checked.response.as_ref().and_then(|m| m.previous_response_id.clone());
        checked.response = Some(Arc::new(Meta { id: id.clone(), previous_response_id, background: true }));
        map.insert("stream".into(), Value::Bool(true));
        checked.stream = true;
        let body = Bytes::from(Value::Object(map).to_string());
        record.status = Status::Queued;
        record.stored_bytes = json_len(record.input.as_ref()) + json_len(Some(&skeleton));
        record.response = Some(skeleton.clone());
        let pending = Pending {
            id: id.clone(),
            owner,
            endpoint: ENDPOINT,
            body,
            checked,
            request_id: log.request_id.clone(),
            _share: share,
        };
        // Admission runs as its own task: once the record is being written, a client that
        // hangs up cannot leave a reservation or a stored job outside the queue.
        let Some(me) = jobs.me.upgrade() else { return Err(RelayError::unavailable("the relay is shutting down")) };
        match tokio::spawn(async move { me.admit(record, pending).await }).await {
            Ok(Ok(())) => {}
            Ok(Err(refused)) => {
                log.finish(refused.status().as_u16());
                log.first_byte();
                return Ok(refused);
            }
            Err(_) => return Err(RelayError::unavailable("the response could not be queued")),
        }
        log.finish(200);
        log.first_byte();
        if streamed {
            return Ok(jobs.follow(&id, 0, true));
        }
        let mut resp = json_response(StatusCode::OK, skeleton.to_string());
        set_request_id(resp.headers_mut(), &log.request_id);
        return Ok(resp);
    }
    let body = if rewritten { Bytes::from(Value::Object(map).to_string()) } else { body };
    let request_id = log.request_id.clone();
    let answer = relay.serve_checked(token, ENDPOINT, checked, &body, snap, log).await?;
    drop(share);
    record.status = Status::Succeeded;
    record.foreground = true;
    if !store {
        return Ok(respond_with(answer, stream_encoder(ENDPOINT), &request_id));
    }
    if let Answer::Whole(w) = &answer
        && w.status.is_success()
        && let Ok(v) = serde_json::from_slice::<Value>(&w.body)
    {
        keep(jobs, record, v);
        return Ok(respond_with(answer, stream_encoder(ENDPOINT), &request_id));
    }
    let encoder = Keeper { inner: stream_encoder(ENDPOINT), jobs: jobs.clone(), record: Some(record), created: None };
    Ok(respond_with(answer, Box::new(encoder), &request_id))
}

fn json_len(v: Option<&Value>) -> u64 {
    v.and_then(|v| serde_json::to_string(v).ok()).map_or(0, |s| s.len() as u64)
}

/// One stored response of a chain, for the key that continues it.
fn link(jobs: &Jobs, owner: &str, id: &str) -> Result<chain::Link, RelayError> {
    let r = match jobs.store.get_now(id).map_err(store_error)? {
        Some(r) if r.endpoint == ENDPOINT.as_str() && r.owner == owner => r,
        _ => return Err(chain::ChainError::NotFound(id.to_string()).into()),
    };
    let Some(result) = r.result.filter(|_| r.status == Status::Succeeded) else {
        return Err(chain::ChainError::NotFinished(id.to_string()).into());
    };
    let output = match result.get("output") {
        Some(Value::Array(a)) => a.clone(),
        _ => Vec::new(),
    };
    let input = match r.input {
        Some(Value::Array(a)) => a,
        _ => Vec::new(),
    };
    Ok(chain::Link { input, output, previous: r.previous })
}

/// Store a foreground response's final Response object, without waiting: the answer is
/// already on its way. Past `jobs.max_store_bytes` it is not stored (counted and logged).
fn keep(jobs: &Jobs, mut record: Record, response: Value) {
    if response.get("status").and_then(Value::as_str) == Some("failed") {
        record.status = Status::Failed;
        record.error = response.get("error").cloned().filter(|e| !e.is_null());
    }
    record.finished_ms = Some(now_ms());
    record.stored_bytes = json_len(record.input.as_ref()) + json_len(Some(&response));
    record.result = Some(response);
    let cost = record.summary().cost();
    if jobs.store.bytes().saturating_add(cost) > jobs.cfg.max_store_bytes {
        jobs.refused_store_full();
        tracing::warn!(response = %record.id, "the job store is full (jobs.max_store_bytes); a response was answered but not stored");
        return;
    }
    let id = record.id.clone();
    if !jobs.store.put_detached(record) {
        tracing::warn!(response = %id, "the job store is down or busy; a response was answered but not stored");
    }
}

/// The Responses stream encoder, watching the events pass to store the final Response: the
/// terminal event's `response`, or the created one marked failed when the stream is cut.
/// Reads only the type of an event with no SSE name, and parses only two events.
struct Keeper {
    inner: Box<dyn StreamEncoder>,
    jobs: Arc<Jobs>,
    /// Taken when stored.
    record: Option<Record>,
    created: Option<Value>,
}

impl Keeper {
    fn watch(&mut self, event: &OutputEvent) {
        if self.record.is_none() {
            return;
        }
        let named = event.name.as_deref();
        let kind = match named {
            Some(n) => std::borrow::Cow::Borrowed(n),
            None => match events::kind_of(&event.data) {
                Some(k) => std::borrow::Cow::Owned(k),
                None => return,
            },
        };
        if kind == events::CREATED {
            self.created = events::response_in(&event.data);
        } else if events::is_terminal(&kind)
            && let Some(response) = events::response_in(&event.data)
            && let Some(record) = self.record.take()
        {
            keep(&self.jobs, record, response);
        }
    }
}

impl StreamEncoder for Keeper {
    fn event(&mut self, out: &mut Vec<u8>, event: &OutputEvent) {
        self.watch(event);
        self.inner.event(out, event);
    }

    fn done(&mut self, out: &mut Vec<u8>, usage: Option<&Usage>) {
        self.inner.done(out, usage);
    }

    fn error(&mut self, out: &mut Vec<u8>, error: &RelayError, sent: bool) {
        if let (Some(record), Some(mut response)) = (self.record.take(), self.created.take()) {
            response["status"] = json!("failed");
            let o = crate::error::openai::object(error);
            response["error"] = json!({"code": o["code"], "message": o["message"]});
            keep(&self.jobs, record, response);
        }
        self.inner.error(out, error, sent);
    }

    fn size(&self, batch: &Batch) -> usize {
        self.inner.size(batch)
    }
}
