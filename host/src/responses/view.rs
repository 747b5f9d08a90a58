//! The Response object of a stored record: what `GET /v1/responses/{id}`, cancel and a
//! background create answer, whatever state the response is in.

use serde_json::{Map, Value, json};

use crate::jobs::{Record, Status};

/// The Response object of a background request before it has run (`status: queued`): the
/// request's parameters echoed, no output. `GET` answers it, with the status of the moment,
/// until the job has its result.
pub fn skeleton(body: &Map<String, Value>, id: &str, previous: Option<&str>, created_ms: u64) -> Value {
    let get = |k: &str, default: Value| body.get(k).cloned().unwrap_or(default);
    json!({
        "id": id,
        "object": "response",
        "created_at": created_ms / 1000,
        "status": "queued",
        "background": true,
        "error": null,
        "incomplete_details": null,
        "instructions": get("instructions", Value::Null),
        "max_output_tokens": get("max_output_tokens", Value::Null),
        "metadata": get("metadata", json!({})),
        "model": get("model", Value::Null),
        "output": [],
        "parallel_tool_calls": get("parallel_tool_calls", json!(true)),
        "previous_response_id": previous,
        "store": true,
        "temperature": get("temperature", json!(1.0)),
        "text": get("text", json!({"format": {"type": "text"}})),
        "tool_choice": get("tool_choice", json!("auto")),
        "tools": get("tools", json!([])),
        "top_p": get("top_p", json!(1.0)),
        "truncation": "disabled",
        "usage": null,
        "user": get("user", Value::Null),
    })
}

/// The Response object of a record: its result once it has one; otherwise its skeleton with
/// the status of the moment (`queued`, `in_progress`, `failed` or `cancelled` with `error`).
pub fn response_of(r: &Record) -> Value {
    if let Some(result) = &r.result {
        let mut v = result.clone();
        // A background run is sent to its channel as a plain stream; the answer is still the
        // background response the client created.
        if r.response.is_some() && v.is_object() {
            v["background"] = json!(true);
        }
        return v;
    }
    let mut v = r.response.clone().unwrap_or_else(
        || json!({"id": r.id, "object": "response", "created_at": r.created_ms / 1000, "model": r.model, "output": []}),
    );
    let status = match r.status {
        Status::Queued => "queued",
        Status::Running => "in_progress",
        Status::Succeeded => "completed",
        Status::Failed => "failed",
        Status::Cancelled => "cancelled",
    };
    v["status"] = json!(status);
    if let Some(e) = &r.error {
        // The Response's error is `{code, message}`; the job's is OpenAI's error object.
        let code = e.get("code").filter(|c| !c.is_null()).or_else(|| e.get("type")).cloned();
        v["error"] = json!({"code": code.unwrap_or(json!("server_error")), "message": e.get("message").cloned().unwrap_or(json!(""))});
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_answers_its_result_or_its_skeleton_in_its_state() {
        let body = json!({"model": "m", "input": "hi", "temperature": 0.5, "background": true});
        let sk = skeleton(body.as_object().unwrap(), "resp_1", Some("resp_0"), 5000);
        assert_eq!((sk["status"].as_str(), sk["created_at"].as_u64()), (Some("queued"), Some(5)));
        assert_eq!((sk["temperature"].as_f64(), sk["previous_response_id"].as_str()), (Some(0.5), Some("resp_0")));
        let mut r = Record { id: "resp_1".into(), status: Status::Queued, response: Some(sk), ..Record::default() };
        assert_eq!(response_of(&r)["status"], "queued");
        r.status = Status::Running;
        assert_eq!(response_of(&r)["status"], "in_progress");
        r.status = Status::Failed;
        r.error = Some(json!({"message": "gone", "type": "server_error", "param": null, "code": "job_interrupted"}));
        let v = response_of(&r);
        assert_eq!((v["status"].as_str(), v["error"]["code"].as_str()), (Some("failed"), Some("job_interrupted")));
        assert_eq!(v["error"]["message"], "gone");
        r.status = Status::Succeeded;
        r.result = Some(json!({"id": "resp_1", "status": "incomplete"}));
        assert_eq!(response_of(&r)["status"], "incomplete");
    }
}
