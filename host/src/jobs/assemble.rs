//! `chat.completion.chunk`s back into the `chat.completion` the same request would have
//! answered without streaming: content joined, tool calls merged by index, the finish
//! reason, the usage chunk.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

#[derive(Default)]
pub struct Assembler {
    /// id, created, model, system_fingerprint, service_tier: from the first chunk that has them.
    head: Map<String, Value>,
    choices: BTreeMap<u64, Choice>,
    usage: Option<Value>,
    /// Chunks that carried generated text or tool-call arguments.
    deltas: u64,
}

#[derive(Default)]
struct Choice {
    content: Option<String>,
    refusal: Option<String>,
    tool_calls: BTreeMap<u64, ToolCall>,
    finish_reason: Option<Value>,
}

#[derive(Default)]
struct ToolCall {
    id: Option<Value>,
    kind: Option<Value>,
    name: String,
    arguments: String,
}

const HEAD_FIELDS: [&str; 5] = ["id", "created", "model", "system_fingerprint", "service_tier"];

impl Assembler {
    pub fn push(&mut self, chunk: &Value) {
        for k in HEAD_FIELDS {
            if let Some(v) = chunk.get(k).filter(|v| !v.is_null())
                && !self.head.contains_key(k)
            {
                self.head.insert(k.into(), v.clone());
            }
        }
        if let Some(u) = chunk.get("usage").filter(|u| u.is_object()) {
            self.usage = Some(u.clone());
        }
        for c in chunk.get("choices").and_then(Value::as_array).into_iter().flatten() {
            let choice = self.choices.entry(c["index"].as_u64().unwrap_or(0)).or_default();
            let delta = &c["delta"];
            let grew = delta["content"].as_str().is_some_and(|s| !s.is_empty())
                || delta["tool_calls"].as_array().is_some_and(|a| !a.is_empty());
            self.deltas += u64::from(grew);
            if let Some(s) = delta["content"].as_str() {
                choice.content.get_or_insert_default().push_str(s);
            }
            if let Some(s) = delta["refusal"].as_str() {
                choice.refusal.get_or_insert_default().push_str(s);
            }
            for tc in delta["tool_calls"].as_array().into_iter().flatten() {
                let call = choice.tool_calls.entry(tc["index"].as_u64().unwrap_or(0)).or_default();
                if call.id.is_none() && tc["id"].is_string() {
                    call.id = Some(tc["id"].clone());
                }
                if call.kind.is_none() && tc["type"].is_string() {
                    call.kind = Some(tc["type"].clone());
                }
                if let Some(s) = tc["function"]["name"].as_str() {
                    call.name.push_str(s);
                }
                if let Some(s) = tc["function"]["arguments"].as_str() {
                    call.arguments.push_str(s);
                }
            }
            if !c["finish_reason"].is_null() {
                choice.finish_reason = Some(c["finish_reason"].clone());
            }
        }
    }

    /// Completion tokens so far: the vendor's count once its usage arrived; before that an
    /// estimate of one per generated delta, as vendors stream about a token per chunk.
    pub fn completion_tokens(&self) -> Option<u64> {
        Some(self.usage.as_ref().and_then(|u| u["completion_tokens"].as_u64()).unwrap_or(self.deltas))
    }

    pub fn finish(self) -> Value {
        let choices: Vec<Value> = self
            .choices
            .into_iter()
            .map(|(index, c)| {
                let mut message = json!({"role": "assistant", "content": c.content, "refusal": c.refusal});
                if !c.tool_calls.is_empty() {
                    let calls: Vec<Value> = c
                        .tool_calls
                        .into_values()
                        .map(|t| {
                            json!({
                                "id": t.id,
                                "type": t.kind.unwrap_or_else(|| Value::from("function")),
                                "function": {"name": t.name, "arguments": t.arguments},
                            })
                        })
                        .collect();
                    message["tool_calls"] = Value::Array(calls);
                }
                json!({"index": index, "message": message, "logprobs": null, "finish_reason": c.finish_reason})
            })
            .collect();
        let mut v = json!({
            "id": self.head.get("id"),
            "object": "chat.completion",
            "created": self.head.get("created"),
            "model": self.head.get("model"),
            "choices": choices,
        });
        if let Some(u) = self.usage {
            v["usage"] = u;
        }
        for k in ["system_fingerprint", "service_tier"] {
            if let Some(x) = self.head.get(k) {
                v[k] = x.clone();
            }
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_tool_calls_and_usage() {
        let mut a = Assembler::default();
        let chunks = [
            json!({"id": "c1", "object": "chat.completion.chunk", "created": 7, "model": "m", "system_fingerprint": "fp",
                "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": null}]}),
            json!({"id": "c1", "choices": [{"index": 0, "delta": {"content": "Hel"}, "finish_reason": null}]}),
            json!({"id": "c1", "choices": [{"index": 0, "delta": {"content": "lo", "tool_calls": [
                {"index": 0, "id": "call_1", "type": "function", "function": {"name": "get", "arguments": ""}}]}}]}),
            json!({"id": "c1", "choices": [{"index": 0, "delta": {"tool_calls": [
                {"index": 0, "function": {"arguments": "{\"a\":"}}, {"index": 1, "id": "call_2", "function": {"name": "put", "arguments": "{}"}}]}}]}),
            json!({"id": "c1", "choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": "1}"}}]}}]}),
            json!({"id": "c1", "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]}),
            json!({"id": "c1", "choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}}),
        ];
        for c in &chunks {
            a.push(c);
        }
        assert_eq!(a.completion_tokens(), Some(4));
        let v = a.finish();
        assert_eq!(v["object"], "chat.completion");
        assert_eq!((v["id"].as_str(), v["created"].as_u64(), v["model"].as_str()), (Some("c1"), Some(7), Some("m")));
        assert_eq!(v["system_fingerprint"], "fp");
        let m = &v["choices"][0]["message"];
        assert_eq!(m["content"], "Hello");
        assert_eq!(m["tool_calls"][0]["function"], json!({"name": "get", "arguments": "{\"a\":1}"}));
        assert_eq!(m["tool_calls"][1]["id"], "call_2");
        assert_eq!(m["tool_calls"][1]["type"], "function");
        assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(v["usage"]["total_tokens"], 7);
    }
}
