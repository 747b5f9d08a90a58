//! Retrieve, delete, list input items, cancel: a stored response, for the key that made it.

use http::{HeaderMap, Response, StatusCode};
use serde_json::{Value, json};

use crate::auth::authenticate;
use crate::error::RelayError;
use crate::http::{Body, error_response, json_response};
use crate::jobs::{Jobs, Record, owner_of, store_error};

use super::{not_found, view};

/// OpenAI list pages: 20 items unless asked, 100 at most.
const DEFAULT_PAGE: usize = 20;
const MAX_PAGE: usize = 100;

/// The stored response `id` if `headers` carry the key that made it; 404 for anyone else.
fn owned(jobs: &Jobs, headers: &HeaderMap, id: &str) -> Result<Record, RelayError> {
    let snap = jobs.relay.snapshot();
    let token = authenticate(headers, &snap)?;
    match jobs.store.get_now(id).map_err(store_error)? {
        Some(r) if r.endpoint == "responses" && r.owner == owner_of(&token.key) => Ok(r),
        _ => Err(not_found(id)),
    }
}

fn answer(r: Result<Response<Body>, RelayError>) -> Response<Body> {
    r.unwrap_or_else(|e| error_response(&e, None))
}

fn query_pairs(query: Option<&str>) -> impl Iterator<Item = (&str, &str)> {
    query.unwrap_or("").split('&').filter_map(|kv| kv.split_once('=').or(Some((kv, "")))).filter(|(k, _)| !k.is_empty())
}

/// `GET /v1/responses/{id}`: the Response object; with `?stream=true` a background
/// response's events (after `starting_after`, a sequence number), then live to the end.
pub fn get(jobs: &Jobs, headers: &HeaderMap, id: &str, query: Option<&str>) -> Response<Body> {
    answer((|| {
        let r = owned(jobs, headers, id)?;
        let (mut stream, mut after) = (false, None);
        for (k, v) in query_pairs(query) {
            match k {
                "stream" => stream = v == "true",
                "starting_after" => {
                    let n = v.parse::<u64>().map_err(|_| {
                        RelayError::bad_request("starting_after must be a non-negative integer")
                            .with_param("starting_after")
                    })?;
                    after = Some(n);
                }
                _ => {}
            }
        }
        if !stream {
            return Ok(json_response(StatusCode::OK, view::response_of(&r).to_string()));
        }
        if r.foreground {
            return Err(RelayError::bad_request(
                "This response was not created with background=true; only a background response can be streamed again.",
            )
            .with_param("stream"));
        }
        // Event n (from 0) is stored at position n + 1.
        Ok(jobs.follow(id, after.map_or(0, |n| n.saturating_add(1)), true))
    })())
}

/// `DELETE /v1/responses/{id}`: a running background response is cancelled first.
pub async fn delete(jobs: &Jobs, headers: &HeaderMap, id: &str) -> Response<Body> {
    let r = match owned(jobs, headers, id) {
        Ok(r) => r,
        Err(e) => return error_response(&e, None),
    };
    if !r.status.finished() {
        jobs.stop(id).await;
    }
    match jobs.store.delete(id).await {
        Ok(Some(gone)) => {
            if !gone.foreground {
                jobs.moved(Some(gone.status), None);
            }
            json_response(StatusCode::OK, json!({"id": id, "object": "response", "deleted": true}).to_string())
        }
        Ok(None) => error_response(&not_found(id), None),
        Err(e) => error_response(&store_error(e), None),
    }
}

/// `POST /v1/responses/{id}/cancel`: a background response stops; a finished one is
/// answered as it is, so a second cancel answers what the first did.
pub async fn cancel(jobs: &Jobs, headers: &HeaderMap, id: &str) -> Response<Body> {
    let r = match owned(jobs, headers, id) {
        Ok(r) => r,
        Err(e) => return error_response(&e, None),
    };
    if r.foreground {
        let e = RelayError::bad_request("Only a response created with background=true can be cancelled.");
        return error_response(&e, None);
    }
    if !r.status.finished() {
        jobs.stop(id).await;
    }
    match jobs.store.get(id).await {
        Ok(Some(r)) => json_response(StatusCode::OK, view::response_of(&r).to_string()),
        Ok(None) => error_response(&not_found(id), None),
        Err(e) => error_response(&store_error(e), None),
    }
}

/// `GET /v1/responses/{id}/input_items?limit=&order=&after=`: the request's own input, as
/// items with ids, in OpenAI's list shape (newest first unless `order=asc`).
pub fn input_items(jobs: &Jobs, headers: &HeaderMap, id: &str, query: Option<&str>) -> Response<Body> {
    answer((|| {
        let r = owned(jobs, headers, id)?;
        let (mut limit, mut asc, mut after) = (DEFAULT_PAGE, false, None);
        for (k, v) in query_pairs(query) {
            match k {
                "limit" => {
                    limit = v.parse().ok().filter(|n| (1..=MAX_PAGE).contains(n)).ok_or_else(|| {
                        RelayError::bad_request(format!("limit must be an integer from 1 to {MAX_PAGE}"))
                            .with_param("limit")
                    })?;
                }
                "order" => {
                    asc = match v {
                        "asc" => true,
                        "desc" => false,
                        _ => return Err(RelayError::bad_request("order must be 'asc' or 'desc'").with_param("order")),
                    }
                }
                "after" => after = Some(v.to_string()),
                _ => {}
            }
        }
        let mut items = listed(&r);
        if !asc {
            items.reverse();
        }
        let start = match &after {
            Some(a) => items.iter().position(|i| i["id"].as_str() == Some(a.as_str())).map_or(items.len(), |p| p + 1),
            None => 0,
        };
        let page: Vec<Value> = items.iter().skip(start).take(limit).cloned().collect();
        let has_more = start + page.len() < items.len();
        let body = json!({
            "object": "list",
            "data": page,
            "first_id": page.first().map(|i| i["id"].clone()),
            "last_id": page.last().map(|i| i["id"].clone()),
            "has_more": has_more,
        });
        Ok(json_response(StatusCode::OK, body.to_string()))
    })())
}

/// A record's input items as OpenAI lists them: each with an id (the client's, or one made
/// from the response id and its position, so it is the same on every call), a message's
/// text content as `input_text` parts.
fn listed(r: &Record) -> Vec<Value> {
    let Some(Value::Array(items)) = &r.input else { return Vec::new() };
    let stem = r.id.strip_prefix("resp_").unwrap_or(&r.id);
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let mut item = item.clone();
            if let Value::Object(m) = &mut item {
                let is_message = m.get("type").is_none_or(|t| t == "message");
                if !m.contains_key("id") {
                    let prefix = if is_message { "msg" } else { "item" };
                    m.insert("id".into(), json!(format!("{prefix}_{stem}{i:04x}")));
                }
                if is_message {
                    m.entry("type").or_insert(json!("message"));
                    m.entry("status").or_insert(json!("completed"));
                    if let Some(Value::String(text)) = m.get("content") {
                        let part =
                            if m.get("role").is_some_and(|r| r == "assistant") { "output_text" } else { "input_text" };
                        let parts = json!([{"type": part, "text": text}]);
                        m.insert("content".into(), parts);
                    }
                }
            }
            item
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_items_have_stable_ids_and_typed_parts() {
        let r = Record {
            id: "resp_ab".into(),
            input: Some(json!([
                {"role": "user", "content": "hi"},
                {"type": "function_call_output", "call_id": "c", "output": "x"},
                {"type": "message", "id": "msg_mine", "role": "user", "content": [{"type": "input_text", "text": "t"}]},
            ])),
            ..Record::default()
        };
        let items = listed(&r);
        assert_eq!(items[0]["id"], "msg_ab0000");
        assert_eq!(items[0]["content"], json!([{"type": "input_text", "text": "hi"}]));
        assert_eq!((items[0]["type"].as_str(), items[0]["status"].as_str()), (Some("message"), Some("completed")));
        assert_eq!(items[1]["id"], "item_ab0001");
        assert_eq!(items[2]["id"], "msg_mine");
        assert_eq!(listed(&r), items, "ids are the same on every call");
    }
}
