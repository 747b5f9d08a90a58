//! Responses events as the job engine stores and replays them: the type of an event, its
//! `sequence_number` made equal to its stored position, the terminal events.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::{Value, json};

pub const CREATED: &str = "response.created";
pub const IN_PROGRESS: &str = "response.in_progress";
pub const COMPLETED: &str = "response.completed";
pub const INCOMPLETE: &str = "response.incomplete";
pub const FAILED: &str = "response.failed";

/// The event ends the stream and carries the whole Response object.
pub fn is_terminal(kind: &str) -> bool {
    matches!(kind, COMPLETED | INCOMPLETE | FAILED)
}

/// The fields of an event read without building its tree.
#[derive(Deserialize)]
struct Head<'a> {
    #[serde(borrow, rename = "type")]
    kind: Option<Cow<'a, str>>,
    sequence_number: Option<u64>,
}

/// The `type` of an event's JSON; `None` when it has none or is not JSON.
pub fn kind_of(data: &str) -> Option<String> {
    serde_json::from_str::<Head<'_>>(data).ok()?.kind.map(Cow::into_owned)
}

/// The event with `sequence_number` = `seq`, so that a reader resuming with
/// `starting_after` gets exactly the events after it; rewritten only when it differs.
/// Returns the event and its type.
pub fn numbered(data: String, seq: u64) -> (String, Option<String>) {
    let (kind, same) = match serde_json::from_str::<Head<'_>>(&data) {
        Ok(h) => (h.kind.map(Cow::into_owned), h.sequence_number == Some(seq)),
        Err(_) => return (data, None),
    };
    if same {
        return (data, kind);
    }
    match serde_json::from_str::<Value>(&data) {
        Ok(Value::Object(mut m)) => {
            m.insert("sequence_number".into(), json!(seq));
            (Value::Object(m).to_string(), kind)
        }
        _ => (data, kind),
    }
}

/// The `response` an event carries (created, in_progress and the terminal ones).
pub fn response_in(data: &str) -> Option<Value> {
    match serde_json::from_str::<Value>(data) {
        Ok(Value::Object(mut m)) => m.remove("response"),
        _ => None,
    }
}

/// The terminal event for a Response object, by its status.
pub fn terminal(response: Value, seq: u64) -> (&'static str, String) {
    let kind = match response.get("status").and_then(Value::as_str) {
        Some("completed") => COMPLETED,
        Some("incomplete") => INCOMPLETE,
        _ => FAILED,
    };
    (kind, json!({"type": kind, "sequence_number": seq, "response": response}).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbering_rewrites_only_what_differs() {
        let e = r#"{"type":"response.output_text.delta","sequence_number":3,"delta":"hi"}"#.to_string();
        let (same, kind) = numbered(e.clone(), 3);
        assert_eq!((same.as_str(), kind.as_deref()), (e.as_str(), Some("response.output_text.delta")));
        let (moved, _) = numbered(e, 7);
        let v: Value = serde_json::from_str(&moved).unwrap();
        assert_eq!((v["sequence_number"].as_u64(), v["delta"].as_str()), (Some(7), Some("hi")));
        let (added, kind) = numbered(r#"{"type":"response.created","response":{}}"#.into(), 0);
        assert_eq!(serde_json::from_str::<Value>(&added).unwrap()["sequence_number"], 0);
        assert_eq!(kind.as_deref(), Some(CREATED));
        assert_eq!(numbered("not json".into(), 1), ("not json".to_string(), None));
    }

    #[test]
    fn terminal_event_follows_the_status() {
        for (status, kind) in
            [("completed", COMPLETED), ("incomplete", INCOMPLETE), ("failed", FAILED), ("cancelled", FAILED)]
        {
            let (k, data) = terminal(json!({"id": "resp_1", "status": status}), 4);
            assert_eq!(k, kind);
            let v: Value = serde_json::from_str(&data).unwrap();
            assert_eq!((v["type"].as_str(), v["sequence_number"].as_u64()), (Some(kind), Some(4)));
            assert_eq!(response_in(&data).unwrap()["id"], "resp_1");
            assert!(is_terminal(&kind_of(&data).unwrap()));
        }
    }
}
