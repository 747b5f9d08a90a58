//! The conversation a `previous_response_id` continues: the stored responses walked back
//! from it, their inputs and outputs in order, then the new request's input. Pure: the
//! store is read through the `lookup` the caller gives.

use serde_json::{Value, json};

/// Stored responses one request may continue through; each is one store read.
pub const MAX_DEPTH: usize = 1000;

/// One stored response of the chain.
#[derive(Debug, Clone, Default)]
pub struct Link {
    /// Its request's own input items.
    pub input: Vec<Value>,
    /// Its Response's `output` items.
    pub output: Vec<Value>,
    /// The response it continued.
    pub previous: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChainError {
    /// No stored response by that id for this key (deleted, expired, another key's).
    NotFound(String),
    /// The response has no output to continue from (queued, running, failed, cancelled).
    NotFinished(String),
    TooDeep(usize),
    TooLarge {
        max: u64,
    },
}

impl std::fmt::Display for ChainError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ChainError::NotFound(id) => write!(f, "Previous response with id '{id}' not found."),
            ChainError::NotFinished(id) => {
                write!(
                    f,
                    "Previous response with id '{id}' has not completed; only a completed response can be continued."
                )
            }
            ChainError::TooDeep(n) => {
                write!(f, "the conversation continues through more than {n} stored responses; start a new one")
            }
            ChainError::TooLarge { max } => write!(
                f,
                "the conversation with its stored turns is larger than {max} bytes (limits.max_request_body); start a new one"
            ),
        }
    }
}

/// A request's `input` as items: a string is one user message; an absent input is none.
/// Anything else is left to the probe, which refuses it.
pub fn items(input: Option<&Value>) -> Vec<Value> {
    match input {
        Some(Value::String(s)) => vec![json!({"type": "message", "role": "user", "content": s})],
        Some(Value::Array(a)) => a.clone(),
        _ => Vec::new(),
    }
}

/// The input that continues `start`: every earlier turn's input and output, oldest first,
/// then `own`. Reasoning items are left out: they are the vendor's own and no route takes
/// them back. At most `MAX_DEPTH` responses and `max_bytes` bytes of items.
pub fn conversation<E: From<ChainError>>(
    start: &str,
    own: Vec<Value>,
    max_bytes: u64,
    mut lookup: impl FnMut(&str) -> Result<Link, E>,
) -> Result<Vec<Value>, E> {
    let mut bytes = size(&own);
    let mut links = Vec::new();
    let mut next = Some(start.to_string());
    while let Some(id) = next {
        if links.len() == MAX_DEPTH {
            return Err(ChainError::TooDeep(MAX_DEPTH).into());
        }
        let link = lookup(&id)?;
        bytes += size(&link.input) + size(&link.output);
        if bytes > max_bytes {
            return Err(ChainError::TooLarge { max: max_bytes }.into());
        }
        next = link.previous.clone();
        links.push(link);
    }
    let mut out = Vec::new();
    for link in links.into_iter().rev() {
        out.extend(link.input);
        out.extend(link.output.into_iter().filter(|i| i.get("type").and_then(Value::as_str) != Some("reasoning")));
    }
    out.extend(own);
    Ok(out)
}

/// Bytes of items as JSON.
fn size(items: &[Value]) -> u64 {
    items.iter().map(|i| serde_json::to_string(i).map_or(0, |s| s.len() as u64 + 1)).sum()
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn msg(role: &str, text: &str) -> Value {
        json!({"type": "message", "role": role, "content": text})
    }

    fn store() -> HashMap<&'static str, Link> {
        HashMap::from([
            ("r1", Link { input: vec![msg("user", "one")], output: vec![msg("assistant", "1")], previous: None }),
            (
                "r2",
                Link {
                    input: vec![msg("user", "two")],
                    output: vec![json!({"type": "reasoning", "id": "rs_1"}), msg("assistant", "2")],
                    previous: Some("r1".into()),
                },
            ),
            ("r3", Link { input: vec![msg("user", "three")], output: vec![], previous: Some("gone".into()) }),
        ])
    }

    fn lookup<'a>(s: &'a HashMap<&'static str, Link>) -> impl FnMut(&str) -> Result<Link, ChainError> + 'a {
        |id| s.get(id).cloned().ok_or_else(|| ChainError::NotFound(id.to_string()))
    }

    #[test]
    fn a_chain_is_its_turns_oldest_first_then_the_new_input() {
        let s = store();
        let out = conversation("r2", items(Some(&json!("now"))), 1 << 20, lookup(&s)).unwrap();
        let texts: Vec<&str> = out.iter().map(|i| i["content"].as_str().unwrap()).collect();
        assert_eq!(texts, ["one", "1", "two", "2", "now"], "reasoning items are dropped");
        assert_eq!(out[4]["role"], "user");
        let own = vec![json!({"type": "function_call_output", "call_id": "c", "output": "x"})];
        let out = conversation("r1", own.clone(), 1 << 20, lookup(&s)).unwrap();
        assert_eq!(out.len(), 3);
        assert_eq!(out[2], own[0]);
    }

    #[test]
    fn a_chain_is_bounded_and_a_missing_link_is_named() {
        let s = store();
        assert_eq!(conversation("r3", vec![], 1 << 20, lookup(&s)).unwrap_err(), ChainError::NotFound("gone".into()));
        assert_eq!(conversation("nope", vec![], 1 << 20, lookup(&s)).unwrap_err(), ChainError::NotFound("nope".into()));
        assert_eq!(conversation("r2", vec![], 40, lookup(&s)).unwrap_err(), ChainError::TooLarge { max: 40 });
        // A chain that loops (no real one can: ids are fresh) stops at the depth bound.
        let mut reads = 0;
        let looped = conversation::<ChainError>("a", vec![], u64::MAX, |_| {
            reads += 1;
            Ok(Link { previous: Some("a".into()), ..Link::default() })
        });
        assert_eq!(looped.unwrap_err(), ChainError::TooDeep(MAX_DEPTH));
        assert_eq!(reads, MAX_DEPTH);
    }

    #[test]
    fn input_as_items() {
        assert_eq!(items(Some(&json!("hi"))), [msg("user", "hi")]);
        assert_eq!(items(Some(&json!([msg("system", "s")]))), [msg("system", "s")]);
        assert!(items(None).is_empty() && items(Some(&json!(3))).is_empty());
    }
}
