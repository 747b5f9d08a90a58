//! OpenAI Chat Completions shapes: what clients send, and builders for what they expect
//! back (completions, stream chunks, usage), so adapters map vendor shapes onto them.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::{AdapterError, RelayResponse, UpstreamResponse, Usage};
use crate::{CallContext, OutputEvent, StreamAdapter, StreamEnd, StreamEvent, StreamOutput};

/// A chat completions request as clients send it. Fields no adapter needs to read stay in
/// `extra`, so an adapter can refuse the ones its vendor cannot take, by name.
#[derive(Debug, Clone, Deserialize)]
pub struct ChatRequest {
    pub model: String,
    pub messages: Vec<Message>,
    #[serde(default)]
    pub stream: Option<bool>,
    #[serde(default)]
    pub stream_options: Option<Value>,
    #[serde(default)]
    pub temperature: Option<f64>,
    #[serde(default)]
    pub top_p: Option<f64>,
    #[serde(default)]
    pub max_tokens: Option<u64>,
    #[serde(default)]
    pub max_completion_tokens: Option<u64>,
    #[serde(default)]
    pub stop: Option<Stop>,
    #[serde(default)]
    pub tools: Option<Vec<Tool>>,
    #[serde(default)]
    pub tool_choice: Option<ToolChoice>,
    #[serde(default)]
    pub n: Option<u32>,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl ChatRequest {
    pub fn parse(body: &str) -> Result<ChatRequest, AdapterError> {
        serde_json::from_str(body).map_err(|e| AdapterError::InvalidRequest(format!("invalid chat request: {e}")))
    }

    /// `max_completion_tokens`, else the older `max_tokens`.
    pub fn max_output_tokens(&self) -> Option<u64> {
        self.max_completion_tokens.or(self.max_tokens)
    }

    /// Refuse any field in `extra` not listed in `tolerated`, naming it: a vendor that
    /// cannot honour a parameter must not silently ignore it.
    pub fn reject_extra(&self, tolerated: &[&str], vendor: &str) -> Result<(), AdapterError> {
        match self.extra.iter().find(|(k, v)| !v.is_null() && !tolerated.contains(&k.as_str())) {
            Some((k, _)) => Err(AdapterError::Unsupported(format!("'{k}' is not supported by {vendor}"))),
            None => Ok(()),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Message {
    pub role: String,
    #[serde(default)]
    pub content: Option<Content>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCall>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Content {
    Text(String),
    Parts(Vec<ContentPart>),
}

impl Content {
    /// The text of the content, parts joined; non-text parts are skipped.
    pub fn text(&self) -> String {
        match self {
            Content::Text(t) => t.clone(),
            Content::Parts(parts) => parts
                .iter()
                .filter_map(|p| match p {
                    ContentPart::Text { text } => Some(text.as_str()),
                    _ => None,
                })
                .collect::<Vec<_>>()
                .join("\n"),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ContentPart {
    Text {
        text: String,
    },
    ImageUrl {
        image_url: ImageUrl,
    },
    #[serde(other)]
    Other,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ImageUrl {
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// A `data:` URL split into media type and base64 data.
pub fn parse_data_url(url: &str) -> Option<(&str, &str)> {
    let rest = url.strip_prefix("data:")?;
    let (meta, data) = rest.split_once(',')?;
    let media = meta.strip_suffix(";base64")?;
    Some((media, data))
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Stop {
    One(String),
    Many(Vec<String>),
}

impl Stop {
    pub fn into_vec(self) -> Vec<String> {
        match self {
            Stop::One(s) => vec![s],
            Stop::Many(v) => v,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Tool {
    #[serde(rename = "type")]
    pub kind: String,
    pub function: FunctionDef,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FunctionDef {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strict: Option<bool>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ToolChoice {
    /// `"none"`, `"auto"` or `"required"`.
    Mode(String),
    Named(NamedToolChoice),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NamedToolChoice {
    #[serde(rename = "type")]
    pub kind: String,
    pub function: NamedFunction,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NamedFunction {
    pub name: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ToolCall {
    pub id: String,
    #[serde(rename = "type", default = "function_type")]
    pub kind: String,
    pub function: FunctionCall,
}

fn function_type() -> String {
    "function".into()
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FunctionCall {
    pub name: String,
    /// JSON text, as OpenAI sends it.
    pub arguments: String,
}

/// Usage in OpenAI's JSON shape: the three counts (the details are the contract's, for
/// accounting; an adapter that reports them to clients adds them itself).
pub fn usage_json(u: &Usage) -> Value {
    json!({"prompt_tokens": u.input_tokens, "completion_tokens": u.output_tokens, "total_tokens": u.total_tokens})
}

/// The `usage` of an OpenAI-shaped body, checking that the body is JSON.
pub fn usage_of(body: &str) -> Result<Option<Usage>, AdapterError> {
    #[derive(Deserialize)]
    struct Probe {
        usage: Option<WireUsage>,
    }
    let p: Probe = serde_json::from_str(body)
        .map_err(|e| AdapterError::InvalidUpstream(format!("the vendor's answer is not JSON: {e}")))?;
    Ok(p.usage.map(Into::into))
}

/// An OpenAI-shaped answer (the `Adapter::transform_response` default): a success passes
/// through with its usage read, a vendor error is kept in OpenAI's shape and classified from
/// the status and OpenAI's error `code`/`type`.
pub fn response(resp: UpstreamResponse) -> Result<RelayResponse, AdapterError> {
    if (200..300).contains(&resp.status) {
        let usage = usage_of(&resp.body)?;
        Ok(RelayResponse { status: resp.status, body: resp.body, usage, error_class: None })
    } else {
        Ok(RelayResponse {
            status: resp.status,
            body: crate::error::openai_error_body(resp.status, &resp.body),
            usage: None,
            error_class: crate::error::openai_error_class(resp.status, &resp.body),
        })
    }
}

/// OpenAI's `usage` object. The details are read leniently: a vendor whose details are
/// missing or malformed still has its counts read (the details were never checked before).
#[derive(Deserialize)]
pub struct WireUsage {
    #[serde(default)]
    pub prompt_tokens: u64,
    #[serde(default)]
    pub completion_tokens: u64,
    #[serde(default)]
    pub total_tokens: u64,
    #[serde(default)]
    pub prompt_tokens_details: Option<Value>,
    #[serde(default)]
    pub completion_tokens_details: Option<Value>,
}

/// A count inside a details object, when it is one.
fn detail(details: &Option<Value>, key: &str) -> Option<u64> {
    details.as_ref()?.get(key)?.as_u64()
}

impl From<WireUsage> for Usage {
    /// `prompt_tokens_details.cached_tokens` is the cached input, and
    /// `completion_tokens_details.reasoning_tokens` the reasoning (both already counted in
    /// OpenAI's prompt and completion tokens, as the contract counts them).
    fn from(u: WireUsage) -> Usage {
        Usage {
            input_tokens: u.prompt_tokens,
            output_tokens: u.completion_tokens,
            total_tokens: u.total_tokens,
            cached_input_tokens: detail(&u.prompt_tokens_details, "cached_tokens"),
            cache_creation_input_tokens: None,
            reasoning_tokens: detail(&u.completion_tokens_details, "reasoning_tokens"),
        }
    }
}

/// Usage from the two counts; the total saturates, as a vendor's counts may be anything.
pub fn usage(prompt: u64, completion: u64) -> Usage {
    Usage::new(prompt, completion)
}

/// A non-stream completion with one choice.
pub fn completion(
    id: &str,
    created: u64,
    model: &str,
    content: Option<&str>,
    tool_calls: &[ToolCall],
    finish_reason: &str,
    usage: Option<&Usage>,
) -> String {
    #[derive(Serialize)]
    struct Doc<'a> {
        id: &'a str,
        object: &'static str,
        created: u64,
        model: &'a str,
        choices: [Choice<'a>; 1],
        #[serde(skip_serializing_if = "Option::is_none")]
        usage: Option<UsageDoc>,
    }
    #[derive(Serialize)]
    struct Choice<'a> {
        index: u32,
        message: MessageDoc<'a>,
        logprobs: (),
        finish_reason: &'a str,
    }
    #[derive(Serialize)]
    struct MessageDoc<'a> {
        role: &'static str,
        content: Option<&'a str>,
        refusal: (),
        #[serde(skip_serializing_if = "<[ToolCall]>::is_empty")]
        tool_calls: &'a [ToolCall],
    }
    let doc = Doc {
        id,
        object: "chat.completion",
        created,
        model,
        choices: [Choice {
            index: 0,
            message: MessageDoc { role: "assistant", content, refusal: (), tool_calls },
            logprobs: (),
            finish_reason,
        }],
        usage: usage.map(UsageDoc::from),
    };
    // Serialising borrowed strings and numbers into a String cannot fail.
    serde_json::to_string(&doc).unwrap_or_default()
}

/// Usage in OpenAI's JSON shape, for typed documents.
#[derive(Serialize)]
struct UsageDoc {
    prompt_tokens: u64,
    completion_tokens: u64,
    total_tokens: u64,
}

impl From<&Usage> for UsageDoc {
    fn from(u: &Usage) -> UsageDoc {
        UsageDoc { prompt_tokens: u.input_tokens, completion_tokens: u.output_tokens, total_tokens: u.total_tokens }
    }
}

/// Builds `chat.completion.chunk` documents with one id, creation time and model, as
/// OpenAI streams them.
#[derive(Debug, Clone)]
pub struct ChunkBuilder {
    pub id: String,
    pub created: u64,
    pub model: String,
    /// With `include_usage`, OpenAI sets `"usage": null` on every chunk but the last.
    pub include_usage: bool,
}

/// A chunk document, serialised straight from borrowed fields in OpenAI's key order: a
/// stream event costs a few hundred nanoseconds here, where building a `Value` tree and
/// printing it cost microseconds.
#[derive(Serialize)]
struct ChunkDoc<'a, D> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: [ChunkChoice<'a, D>; 1],
    /// `Some(())` prints `"usage": null`.
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<()>,
}

#[derive(Serialize)]
struct ChunkChoice<'a, D> {
    index: u32,
    delta: D,
    logprobs: (),
    finish_reason: Option<&'a str>,
}

#[derive(Serialize)]
struct RoleDelta {
    role: &'static str,
    content: &'static str,
}

#[derive(Serialize)]
struct ContentDelta<'a> {
    content: &'a str,
}

#[derive(Serialize)]
struct ToolCallsDelta<T> {
    tool_calls: [T; 1],
}

#[derive(Serialize)]
struct ToolCallStart<'a> {
    index: u32,
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    function: FunctionStart<'a>,
}

#[derive(Serialize)]
struct FunctionStart<'a> {
    name: &'a str,
    arguments: &'static str,
}

#[derive(Serialize)]
struct ToolCallArguments<'a> {
    index: u32,
    function: FunctionArguments<'a>,
}

#[derive(Serialize)]
struct FunctionArguments<'a> {
    arguments: &'a str,
}

#[derive(Serialize)]
struct EmptyDelta {}

impl ChunkBuilder {
    fn chunk<D: Serialize>(&self, delta: D, finish_reason: Option<&str>) -> String {
        let doc = ChunkDoc {
            id: &self.id,
            object: "chat.completion.chunk",
            created: self.created,
            model: &self.model,
            choices: [ChunkChoice { index: 0, delta, logprobs: (), finish_reason }],
            usage: self.include_usage.then_some(()),
        };
        // Serialising borrowed strings and numbers into a String cannot fail.
        serde_json::to_string(&doc).unwrap_or_default()
    }

    /// The first chunk: the assistant role.
    pub fn role(&self) -> String {
        self.chunk(RoleDelta { role: "assistant", content: "" }, None)
    }

    pub fn content(&self, text: &str) -> String {
        self.chunk(ContentDelta { content: text }, None)
    }

    /// A tool call begins: its index, id and function name.
    pub fn tool_call_start(&self, index: u32, id: &str, name: &str) -> String {
        let call = ToolCallStart { index, id, kind: "function", function: FunctionStart { name, arguments: "" } };
        self.chunk(ToolCallsDelta { tool_calls: [call] }, None)
    }

    /// More of a tool call's JSON arguments.
    pub fn tool_call_arguments(&self, index: u32, fragment: &str) -> String {
        let call = ToolCallArguments { index, function: FunctionArguments { arguments: fragment } };
        self.chunk(ToolCallsDelta { tool_calls: [call] }, None)
    }

    pub fn finish(&self, reason: &str) -> String {
        self.chunk(EmptyDelta {}, Some(reason))
    }

    /// The final usage chunk (`choices: []`), sent when the client asked for usage.
    pub fn usage(&self, u: &Usage) -> String {
        json!({
            "id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
            "choices": [], "usage": usage_json(u),
        })
        .to_string()
    }
}

/// The stream of a vendor that already speaks OpenAI's chunks (OpenAI, Azure OpenAI, the
/// OpenAI-compatible APIs): each chunk is checked (it must be a JSON object; one that is not
/// is skipped), scanned for usage and finish reasons and forwarded as it is; `data: [DONE]`
/// is the terminal event, and a stream whose every choice carried a `finish_reason` is
/// complete without it ([`Ending`](crate::ending::Ending)); an `{"error": ...}` event ends the
/// stream with an error. Chunks with neither choices nor usage (Azure's content-filter
/// preamble) are dropped: OpenAI clients do not expect them.
#[derive(Default)]
pub struct PassthroughStream {
    ending: crate::ending::Ending,
    usage: Option<Usage>,
}

#[derive(Deserialize)]
struct ChunkProbe {
    #[serde(default)]
    choices: Option<Vec<ChoiceProbe>>,
    usage: Option<WireUsage>,
    error: Option<ErrorProbe>,
}

/// A choice's `index` and whether it carries a `finish_reason`; the rest (the delta) is
/// skipped unread. Anything that is not an object reads as a choice 0 without a finish
/// reason: the probe only looks, the chunk is forwarded as the vendor sent it.
#[derive(Default)]
struct ChoiceProbe {
    index: u64,
    finished: bool,
}

impl<'de> Deserialize<'de> for ChoiceProbe {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(field_identifier, rename_all = "snake_case")]
        enum Field {
            Index,
            FinishReason,
            #[serde(other)]
            Other,
        }
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = ChoiceProbe;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a choice")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<ChoiceProbe, A::Error> {
                let mut c = ChoiceProbe::default();
                while let Some(key) = map.next_key::<Field>()? {
                    match key {
                        Field::Index => c.index = map.next_value::<Value>()?.as_u64().unwrap_or(0),
                        Field::FinishReason => {
                            c.finished = matches!(map.next_value::<Value>()?, Value::String(r) if !r.is_empty());
                        }
                        Field::Other => {
                            map.next_value::<serde::de::IgnoredAny>()?;
                        }
                    }
                }
                Ok(c)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<ChoiceProbe, A::Error> {
                while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
                Ok(ChoiceProbe::default())
            }
            fn visit_bool<E>(self, _: bool) -> Result<ChoiceProbe, E> {
                Ok(ChoiceProbe::default())
            }
            fn visit_i64<E>(self, _: i64) -> Result<ChoiceProbe, E> {
                Ok(ChoiceProbe::default())
            }
            fn visit_u64<E>(self, _: u64) -> Result<ChoiceProbe, E> {
                Ok(ChoiceProbe::default())
            }
            fn visit_f64<E>(self, _: f64) -> Result<ChoiceProbe, E> {
                Ok(ChoiceProbe::default())
            }
            fn visit_str<E>(self, _: &str) -> Result<ChoiceProbe, E> {
                Ok(ChoiceProbe::default())
            }
            fn visit_unit<E>(self) -> Result<ChoiceProbe, E> {
                Ok(ChoiceProbe::default())
            }
        }
        d.deserialize_any(Visit)
    }
}

#[derive(Deserialize)]
struct ErrorProbe {
    message: Option<String>,
}

impl StreamAdapter for PassthroughStream {
    fn new(_ctx: &CallContext) -> Self {
        PassthroughStream::default()
    }

    fn push(&mut self, event: StreamEvent) -> Result<StreamOutput, AdapterError> {
        let data = event.data.trim();
        if data == "[DONE]" {
            self.ending.terminal();
            return Ok(StreamOutput { done: true, ..StreamOutput::empty() });
        }
        // A chunk is an object; serde would also read the probe from an array.
        if !data.starts_with('{') {
            return Ok(StreamOutput::skip("a stream chunk is not a JSON object"));
        }
        let probe: ChunkProbe = match serde_json::from_str(data) {
            Ok(p) => p,
            Err(e) => return Ok(StreamOutput::skip(format!("a stream chunk is not JSON: {e}"))),
        };
        for c in probe.choices.iter().flatten() {
            self.ending.choice(c.index, c.finished);
        }
        if let Some(err) = probe.error {
            let msg = err.message.unwrap_or_else(|| "the vendor sent an error event".into());
            return Err(AdapterError::InvalidUpstream(format!("the vendor ended the stream with an error: {msg}")));
        }
        let usage = probe.usage.map(Usage::from);
        if usage.is_some() {
            self.usage = usage;
        } else if probe.choices.as_ref().is_none_or(Vec::is_empty) {
            return Ok(StreamOutput::empty());
        }
        // Several `data:` lines arrive joined with `\n`; in valid JSON a line break can only
        // be whitespace between tokens, and the host sends each chunk as one `data:` line.
        // (A byte scan: a char pattern would decode every char of every chunk.)
        let chunk = if event.data.bytes().any(|b| b == b'\n' || b == b'\r') {
            event.data.replace(['\n', '\r'], " ")
        } else {
            event.data
        };
        Ok(StreamOutput { events: vec![OutputEvent::chunk(chunk)], usage, ..StreamOutput::empty() })
    }

    fn finish(&mut self) -> Result<StreamEnd, AdapterError> {
        self.ending.check("[DONE]")?;
        Ok(StreamEnd { events: vec![], usage: self.usage })
    }
}

/// Seconds since the epoch (the WASI wall clock), for `created` when the vendor gives none.
pub fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_common_request_shapes() {
        let body = r#"{"model":"m","messages":[
            {"role":"system","content":"s"},
            {"role":"user","content":[{"type":"text","text":"hi"},{"type":"image_url","image_url":{"url":"data:image/png;base64,AAAA"}}]},
            {"role":"assistant","content":null,"tool_calls":[{"id":"c1","type":"function","function":{"name":"f","arguments":"{}"}}]},
            {"role":"tool","tool_call_id":"c1","content":"42"}],
            "stop":"END","tool_choice":{"type":"function","function":{"name":"f"}},"logit_bias":{"1":2}}"#;
        let r = ChatRequest::parse(body).unwrap();
        assert_eq!(r.messages.len(), 4);
        assert_eq!(r.messages[1].content.as_ref().unwrap().text(), "hi");
        assert!(matches!(r.stop, Some(Stop::One(ref s)) if s == "END"));
        assert!(matches!(r.tool_choice, Some(ToolChoice::Named(ref n)) if n.function.name == "f"));
        let err = r.reject_extra(&[], "Vendor").unwrap_err();
        assert!(matches!(err, AdapterError::Unsupported(m) if m.contains("logit_bias")));
        assert_eq!(parse_data_url("data:image/png;base64,AAAA"), Some(("image/png", "AAAA")));
    }

    #[test]
    fn chunks_have_one_id_and_usage_nulls() {
        let b = ChunkBuilder { id: "c".into(), created: 1, model: "m".into(), include_usage: true };
        let v: Value = serde_json::from_str(&b.content("x")).unwrap();
        assert_eq!(v["choices"][0]["delta"]["content"], "x");
        assert!(v["usage"].is_null() && v.get("usage").is_some());
        let v: Value = serde_json::from_str(&b.usage(&usage(1, 2))).unwrap();
        assert_eq!(v["usage"]["total_tokens"], 3);
        assert_eq!(v["choices"], json!([]));
    }

    #[test]
    fn usage_details_are_read_leniently() {
        let body = r#"{"usage":{"prompt_tokens":10,"completion_tokens":7,"total_tokens":17,
            "prompt_tokens_details":{"cached_tokens":4,"audio_tokens":0},
            "completion_tokens_details":{"reasoning_tokens":5}}}"#;
        let u = usage_of(body).unwrap().unwrap();
        assert_eq!((u.input_tokens, u.output_tokens, u.total_tokens), (10, 7, 17), "cached and reasoning included");
        assert_eq!(
            (u.cached_input_tokens, u.reasoning_tokens, u.cache_creation_input_tokens),
            (Some(4), Some(5), None)
        );
        // Details that do not read are no details; the counts still are.
        let body = r#"{"usage":{"prompt_tokens":1,"completion_tokens":2,"total_tokens":3,
            "prompt_tokens_details":{"cached_tokens":"4"},"completion_tokens_details":null}}"#;
        let u = usage_of(body).unwrap().unwrap();
        assert_eq!((u.total_tokens, u.cached_input_tokens, u.reasoning_tokens), (3, None, None));
        let u = usage_of(r#"{"usage":{"prompt_tokens":1,"prompt_tokens_details":[1]}}"#).unwrap().unwrap();
        assert_eq!((u.input_tokens, u.cached_input_tokens), (1, None));
        // The usage chunk a client sees keeps OpenAI's three counts.
        let b = ChunkBuilder { id: "c".into(), created: 1, model: "m".into(), include_usage: true };
        let v: Value = serde_json::from_str(&b.usage(&Usage { cached_input_tokens: Some(1), ..usage(1, 2) })).unwrap();
        assert_eq!(v["usage"], json!({"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}));
    }

    // Found by the property tests (tests/properties.rs).
    #[test]
    fn usage_saturates() {
        let u = usage(u64::MAX - 1, 12839166859068977367);
        assert_eq!((u.input_tokens, u.total_tokens), (u64::MAX - 1, u64::MAX));
    }

    // Found by the property tests: a chunk sent over several `data:` lines, and an array
    // that serde read as a chunk.
    #[test]
    fn passthrough_chunks_are_one_line_json_objects() {
        let mut s = PassthroughStream::default();
        let data = "{\n  \"choices\": [{\"delta\": {\"content\": \"a\\nb\"}}],\r\n  \"id\": \"\"\n}";
        let o = s.push(StreamEvent { event: None, data: data.into() }).unwrap();
        assert_eq!(o.data(), vec!["{   \"choices\": [{\"delta\": {\"content\": \"a\\nb\"}}],    \"id\": \"\" }"]);
        assert_eq!(o.events[0].name, None, "a chat chunk has no event name");
        let o = s.push(StreamEvent { event: None, data: "[[],{},null]".into() }).unwrap();
        assert!(o.events.is_empty() && o.skipped.len() == 1 && o.skipped[0].contains("object"), "skipped, not sent");
    }

    fn chunk(choices: &str, usage: bool) -> StreamEvent {
        let usage = if usage { r#","usage":{"prompt_tokens":1,"completion_tokens":2,"total_tokens":3}"# } else { "" };
        StreamEvent { event: None, data: format!(r#"{{"id":"c","choices":{choices}{usage}}}"#) }
    }

    #[test]
    fn a_stream_whose_choices_finished_is_complete_without_done() {
        let mut s = PassthroughStream::default();
        s.push(chunk(r#"[{"index":0,"delta":{"content":"hi"},"finish_reason":null}]"#, false)).unwrap();
        assert!(s.ending.check("[DONE]").is_err(), "cut before the finish reason");
        s.push(chunk(r#"[{"index":0,"delta":{},"finish_reason":"stop"}]"#, false)).unwrap();
        // With include_usage the usage chunk follows the finish reason; then the body ends.
        s.push(chunk("[]", true)).unwrap();
        let end = s.finish().unwrap();
        assert_eq!(end.usage.map(|u| u.total_tokens), Some(3), "complete, with usage");
        // Two choices: complete only when both finished.
        let mut s = PassthroughStream::default();
        s.push(chunk(r#"[{"index":0,"delta":{"content":"a"}},{"index":1,"delta":{"content":"b"}}]"#, false)).unwrap();
        s.push(chunk(r#"[{"index":0,"delta":{},"finish_reason":"stop"}]"#, false)).unwrap();
        let e = s.finish().unwrap_err();
        assert!(matches!(e, AdapterError::InvalidUpstream(m) if m.contains("ended before [DONE]")));
        s.push(chunk(r#"[{"index":1,"delta":{},"finish_reason":"length"}]"#, false)).unwrap();
        assert!(s.finish().is_ok());
        // Odd choices are looked at, not refused: the chunk goes out as it came.
        let mut s = PassthroughStream::default();
        let o = s.push(chunk(r#"[7,"x",null,[1],{"index":"0","finish_reason":5}]"#, false)).unwrap();
        assert_eq!(o.events.len(), 1);
        assert!(s.finish().is_err(), "no finish reason came");
    }

    #[test]
    fn an_unreadable_chunk_is_skipped_and_the_stream_goes_on() {
        let mut s = batched();
        let out = s
            .push(vec![
                chunk(r#"[{"index":0,"delta":{"content":"a"}}]"#, false),
                StreamEvent { event: None, data: "{not json".into() },
                chunk(r#"[{"index":0,"delta":{},"finish_reason":"stop"}]"#, false),
                StreamEvent { event: None, data: "[DONE]".into() },
            ])
            .unwrap();
        assert_eq!(out.events.len(), 2, "the chunks around the bad one");
        assert!(out.done);
        assert_eq!(out.skipped.len(), 1);
        assert!(out.skipped[0].contains("not JSON"), "{:?}", out.skipped);
        assert!(s.finish().is_ok());
        // The vendor's own error event is no skip: it ends the stream.
        let mut s = batched();
        assert!(s.push(vec![StreamEvent { event: None, data: r#"{"error":{"message":"boom"}}"#.into() }]).is_err());
    }

    fn batched() -> crate::Batched<PassthroughStream> {
        let ctx = crate::CallContext {
            request_id: "r".into(),
            endpoint: crate::Endpoint::ChatCompletions,
            model: "m".into(),
            stream: true,
            include_usage: true,
            settings: vec![],
        };
        crate::Batched::new(&ctx)
    }
}
