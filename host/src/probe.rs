//! The request probe: model, messages/input, stream and stream_options read from the body
//! without building a tree, and the token's right to the model.

use serde::Deserialize;
use serde::de::IgnoredAny;

use crate::config::Token;
use crate::error::RelayError;
use crate::model::Endpoint;
use crate::route::Snapshot;
use crate::service::Relay;

/// What `Relay::check` learnt from a request body: the rest of the path reads these
/// instead of parsing the body again.
#[derive(Debug, Clone)]
pub struct Checked {
    pub model: String,
    pub stream: bool,
    pub include_usage: bool,
    /// A Responses call's id and the conversation it continues; `None` for other APIs.
    pub response: Option<std::sync::Arc<crate::bridge::responses::Meta>>,
}

#[derive(Deserialize)]
struct ChatProbe {
    model: Option<serde_json::Value>,
    messages: Option<Vec<IgnoredAny>>,
    input: Option<Shape>,
    stream: Option<bool>,
    stream_options: Option<StreamOptions>,
    /// Messages: required (Anthropic answers 400 without it).
    max_tokens: Option<serde_json::Value>,
}

/// What kind of JSON value a field holds, read without keeping it.
#[derive(Debug, PartialEq, Eq)]
enum Shape {
    String,
    Array,
    Other,
}

impl<'de> Deserialize<'de> for Shape {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Shape, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Shape;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_str<E>(self, _: &str) -> Result<Shape, E> {
                Ok(Shape::String)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Shape, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Shape::Array)
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Shape, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Shape::Other)
            }
            fn visit_bool<E>(self, _: bool) -> Result<Shape, E> {
                Ok(Shape::Other)
            }
            fn visit_i64<E>(self, _: i64) -> Result<Shape, E> {
                Ok(Shape::Other)
            }
            fn visit_u64<E>(self, _: u64) -> Result<Shape, E> {
                Ok(Shape::Other)
            }
            fn visit_f64<E>(self, _: f64) -> Result<Shape, E> {
                Ok(Shape::Other)
            }
            fn visit_unit<E>(self) -> Result<Shape, E> {
                Ok(Shape::Other)
            }
        }
        d.deserialize_any(Visitor)
    }
}

#[derive(Deserialize)]
struct StreamOptions {
    include_usage: Option<bool>,
}

impl Relay {
    /// Everything that can be refused before any channel is tried: the body's JSON shape,
    /// the model, the token's right to it, a channel serving it.
    pub fn check(token: &Token, endpoint: Endpoint, body: &[u8], snap: &Snapshot) -> Result<Checked, RelayError> {
        let checked = Self::probe(endpoint, body)?;
        Self::admit(token, &checked.model, snap)?;
        Ok(checked)
    }

    pub(crate) fn probe(endpoint: Endpoint, body: &[u8]) -> Result<Checked, RelayError> {
        Self::probe_with(endpoint, body, true)
    }

    /// `POST /v1/messages/count_tokens`: a Messages body without `max_tokens`; the model.
    pub(crate) fn probe_count(body: &[u8]) -> Result<String, RelayError> {
        Self::probe_with(Endpoint::Messages, body, false).map(|c| c.model)
    }

    fn probe_with(endpoint: Endpoint, body: &[u8], max_tokens_required: bool) -> Result<Checked, RelayError> {
        let text =
            std::str::from_utf8(body).map_err(|_| RelayError::bad_request("the request body is not valid UTF-8"))?;
        let probe: ChatProbe = serde_json::from_str(text)
            .map_err(|e| RelayError::bad_request(format!("We could not parse the JSON body of your request: {e}")))?;
        let model = match probe.model {
            Some(serde_json::Value::String(m)) if m.len() > MAX_MODEL_LEN => {
                return Err(RelayError::invalid_model(format!(
                    "'model' is {} bytes long; the limit is {MAX_MODEL_LEN}",
                    m.len()
                )));
            }
            Some(serde_json::Value::String(m)) if !m.is_empty() && !model_is_plain(&m) => {
                return Err(RelayError::invalid_model("'model' may only contain letters, digits and . _ : / @ + - ="));
            }
            Some(serde_json::Value::String(m)) if !m.is_empty() => m,
            Some(_) => {
                return Err(RelayError::bad_request("'model' must be a non-empty string").with_param("model"));
            }
            None => {
                return Err(RelayError::bad_request("you must provide a model parameter").with_param("model"));
            }
        };
        match endpoint {
            Endpoint::ChatCompletions => match &probe.messages {
                None => {
                    return Err(RelayError::bad_request("'messages' is a required property").with_param("messages"));
                }
                Some(m) if m.is_empty() => {
                    return Err(RelayError::bad_request("'messages' must not be empty").with_param("messages"));
                }
                Some(_) => {}
            },
            Endpoint::Embeddings => {
                if probe.input.is_none() {
                    return Err(RelayError::bad_request("'input' is a required property").with_param("input"));
                }
            }
            Endpoint::Messages | Endpoint::MessagesCountTokens => {
                match &probe.messages {
                    None => return Err(RelayError::bad_request("messages: Field required").with_param("messages")),
                    Some(m) if m.is_empty() => {
                        return Err(RelayError::bad_request("messages: at least one message is required")
                            .with_param("messages"));
                    }
                    Some(_) => {}
                }
                match &probe.max_tokens {
                    None if max_tokens_required => {
                        return Err(RelayError::bad_request("max_tokens: Field required").with_param("max_tokens"));
                    }
                    Some(v) if v.as_u64().is_none_or(|n| n < 1) => {
                        return Err(RelayError::bad_request("max_tokens: Input should be an integer of at least 1")
                            .with_param("max_tokens"));
                    }
                    _ => {}
                }
            }
            // `input` may be left out (a prompt template, a continued conversation); when
            // given it is text or a list of items.
            Endpoint::Responses => match &probe.input {
                None | Some(Shape::String | Shape::Array) => {}
                Some(Shape::Other) => {
                    return Err(RelayError::bad_request("'input' must be a string or an array of input items")
                        .with_param("input"));
                }
            },
        }
        let streams = matches!(endpoint, Endpoint::ChatCompletions | Endpoint::Messages | Endpoint::Responses);
        let stream = streams && probe.stream.unwrap_or(false);
        let include_usage = probe.stream_options.and_then(|o| o.include_usage).unwrap_or(false);
        let response = (endpoint == Endpoint::Responses).then(crate::bridge::responses::Meta::new);
        Ok(Checked { model, stream, include_usage, response })
    }

    pub(crate) fn admit(token: &Token, model: &str, snap: &Snapshot) -> Result<(), RelayError> {
        if !token.allows(model) {
            return Err(RelayError::model_forbidden(model, &token.name));
        }
        if !snap.serves(model) {
            return Err(RelayError::model_not_found(model));
        }
        Ok(())
    }
}

/// Longest `model` accepted: real ids are under 100 bytes (`accounts/fireworks/models/...`
/// is among the longest); the string becomes a log field and a metrics label.
pub const MAX_MODEL_LEN: usize = 256;

/// Whether a `model` may be logged and labelled: not empty, at most `MAX_MODEL_LEN` bytes, and
/// only the characters real ids use (`gpt-4o-2024-08-06`, `models/gemini-1.5-pro`,
/// `claude-3-5-sonnet@20240620`, `ft:gpt-4o:org:x:id`, `meta-llama/Llama-3.1-8B-Instruct`,
/// `anthropic.claude-3-sonnet-20240229-v1:0`, `llama3.1:8b`).
pub fn model_is_plain(model: &str) -> bool {
    !model.is_empty()
        && model.len() <= MAX_MODEL_LEN
        && model
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'/' | b'@' | b'+' | b'-' | b'='))
}

#[cfg(test)]
mod tests {
    use http::StatusCode;

    use super::*;

    #[test]
    fn real_model_ids_are_plain_and_floods_are_not() {
        for id in [
            "gpt-4o-2024-08-06",
            "models/gemini-1.5-pro",
            "claude-3-5-sonnet@20240620",
            "ft:gpt-4o:org:x:id",
            "meta-llama/Llama-3.1-8B-Instruct",
            "anthropic.claude-3-sonnet-20240229-v1:0",
            "accounts/fireworks/models/llama-v3p1-70b-instruct",
            "llama3.1:8b",
            "text_embedding_3",
        ] {
            assert!(model_is_plain(id), "{id}");
        }
        for bad in ["", "a b", "gpt\n", "m\"}", "é", "x{y}"] {
            assert!(!model_is_plain(bad), "{bad:?}");
        }
        assert!(model_is_plain(&"m".repeat(MAX_MODEL_LEN)));
        assert!(!model_is_plain(&"m".repeat(MAX_MODEL_LEN + 1)));
    }

    #[test]
    fn probe_refuses_unfit_models_with_400() {
        let long = serde_json::json!({"model": "m".repeat(1 << 20), "messages": [{"role": "user", "content": "hi"}]});
        let Err(e) = Relay::probe(Endpoint::ChatCompletions, long.to_string().as_bytes()) else { panic!("accepted") };
        assert_eq!((e.status(), crate::error::openai::code(e.kind)), (StatusCode::BAD_REQUEST, Some("invalid_model")));
        assert!(e.message.len() < 100, "{}", e.message);
        let odd = serde_json::json!({"model": "a\nb", "messages": [{"role": "user", "content": "hi"}]});
        assert!(Relay::probe(Endpoint::ChatCompletions, odd.to_string().as_bytes()).is_err());
    }

    #[test]
    fn probe_checks_a_responses_body_and_names_the_response() {
        let probe = |body: serde_json::Value| Relay::probe(Endpoint::Responses, body.to_string().as_bytes());
        for input in [serde_json::json!("hi"), serde_json::json!([{"role": "user", "content": "hi"}])] {
            let c = probe(serde_json::json!({"model": "m", "input": input, "stream": true})).unwrap();
            let meta = c.response.expect("a Responses call is named");
            assert!(meta.id.starts_with("resp_") && meta.id.len() == 53, "{}", meta.id);
            assert!(c.stream);
        }
        assert!(probe(serde_json::json!({"model": "m"})).is_ok(), "input may be left out");
        for input in [serde_json::json!(3), serde_json::json!({"role": "user"})] {
            let e = probe(serde_json::json!({"model": "m", "input": input})).unwrap_err();
            assert_eq!((e.status(), e.param.as_deref()), (StatusCode::BAD_REQUEST, Some("input")), "{input}");
        }
        let e = probe(serde_json::json!({"input": "hi"})).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("model"));
    }
}
