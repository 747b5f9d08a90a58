//! OpenAI embeddings ↔ Gemini `models/{model}:batchEmbedContents` (one request per input,
//! so one call serves a single string and a list alike).

use relay_plugin_kit::prelude::*;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::request::api_version;

/// Embedding request fields this adapter maps or may drop; any other is refused by name.
const FIELDS: &[&str] = &["model", "input", "dimensions", "encoding_format", "user"];

pub fn path(ctx: &CallContext) -> Result<String, AdapterError> {
    Ok(format!("/{}/models/{}:batchEmbedContents", api_version(ctx)?, relay_plugin_kit::encode_segment(&ctx.model)))
}

pub fn body(ctx: &CallContext, body: &str) -> Result<Value, AdapterError> {
    let req: Map<String, Value> =
        serde_json::from_str(body).map_err(|e| invalid_request(format!("invalid embeddings request: {e}")))?;
    if let Some((k, _)) = req.iter().find(|(k, v)| !v.is_null() && !FIELDS.contains(&k.as_str())) {
        return Err(unsupported(format!("'{k}' is not supported by Gemini embeddings")));
    }
    match req.get("encoding_format").and_then(Value::as_str) {
        None | Some("float") => {}
        Some(other) => return Err(unsupported(format!("'encoding_format' '{other}': Gemini returns floats only"))),
    }
    let inputs: Vec<&str> = match req.get("input") {
        Some(Value::String(s)) => vec![s.as_str()],
        Some(Value::Array(items)) if !items.is_empty() => items
            .iter()
            .map(|i| i.as_str().ok_or_else(|| unsupported("'input' must be text: Gemini does not embed token arrays")))
            .collect::<Result<_, _>>()?,
        _ => return Err(invalid_request("'input' must be a string or a non-empty array of strings")),
    };
    let dimensions = match req.get("dimensions") {
        None | Some(Value::Null) => None,
        Some(d) => Some(
            d.as_u64().filter(|d| *d > 0).ok_or_else(|| invalid_request("'dimensions' must be a positive integer"))?,
        ),
    };
    // Each request names the batch's model, as Gemini requires.
    let model = format!("models/{}", ctx.model);
    let requests: Vec<Value> = inputs
        .into_iter()
        .map(|text| {
            let mut r = json!({"model": model, "content": {"parts": [{"text": text}]}});
            if let Some(d) = dimensions {
                r["outputDimensionality"] = json!(d);
            }
            r
        })
        .collect();
    Ok(json!({ "requests": requests }))
}

#[derive(Deserialize)]
struct BatchResponse {
    embeddings: Vec<Embedding>,
}

#[derive(Deserialize)]
struct Embedding {
    values: Vec<f64>,
}

/// `{"embeddings": [{"values": [...]}]}` as OpenAI's list. Gemini reports no token counts
/// for embeddings, so the answer carries no usage rather than an invented one.
pub fn response(ctx: &CallContext, body: &str) -> Result<RelayResponse, AdapterError> {
    let r: BatchResponse = serde_json::from_str(body)
        .map_err(|e| invalid_upstream(format!("Gemini's answer is not an embeddings response: {e}")))?;
    let data: Vec<Value> = r
        .embeddings
        .into_iter()
        .enumerate()
        .map(|(i, e)| json!({"object": "embedding", "index": i, "embedding": e.values}))
        .collect();
    let body = json!({"object": "list", "data": data, "model": ctx.model}).to_string();
    Ok(RelayResponse { status: 200, body, usage: None, error_class: None })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(settings: &[(&str, &str)]) -> CallContext {
        CallContext {
            request_id: "r1".into(),
            endpoint: Endpoint::Embeddings,
            model: "gemini-embedding-001".into(),
            stream: false,
            include_usage: false,
            settings: settings.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        }
    }

    #[test]
    fn inputs_become_one_batch() {
        assert_eq!(path(&ctx(&[])).unwrap(), "/v1beta/models/gemini-embedding-001:batchEmbedContents");
        assert_eq!(path(&ctx(&[("api_version", "v1")])).unwrap(), "/v1/models/gemini-embedding-001:batchEmbedContents");
        let v = body(&ctx(&[]), r#"{"model":"e","input":["a","b"],"dimensions":4,"encoding_format":"float"}"#).unwrap();
        assert_eq!(
            v,
            json!({"requests": [
                {"model": "models/gemini-embedding-001", "content": {"parts": [{"text": "a"}]}, "outputDimensionality": 4},
                {"model": "models/gemini-embedding-001", "content": {"parts": [{"text": "b"}]}, "outputDimensionality": 4}]})
        );
        let v = body(&ctx(&[]), r#"{"model":"e","input":"one"}"#).unwrap();
        assert_eq!(v["requests"].as_array().unwrap().len(), 1);
        assert!(v["requests"][0].get("outputDimensionality").is_none());
    }

    #[test]
    fn what_gemini_cannot_embed_is_refused() {
        for (b, named) in [
            (r#"{"model":"e","input":"a","encoding_format":"base64"}"#, "base64"),
            (r#"{"model":"e","input":[[1,2,3]]}"#, "token arrays"),
            (r#"{"model":"e","input":"a","extra_thing":1}"#, "extra_thing"),
        ] {
            let e = body(&ctx(&[]), b).unwrap_err();
            assert!(matches!(&e, AdapterError::Unsupported(m) if m.contains(named)), "{b}: {e:?}");
        }
        assert!(matches!(body(&ctx(&[]), r#"{"model":"e","input":[]}"#), Err(AdapterError::InvalidRequest(_))));
    }

    #[test]
    fn embeddings_become_an_openai_list() {
        let r = response(&ctx(&[]), r#"{"embeddings":[{"values":[0.5,-0.25]},{"values":[1.0,0.0]}]}"#).unwrap();
        let v: Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(v["object"], "list");
        assert_eq!(v["data"][1], json!({"object": "embedding", "index": 1, "embedding": [1.0, 0.0]}));
        assert_eq!(v["model"], "gemini-embedding-001");
        assert!(r.usage.is_none() && v.get("usage").is_none());
        assert!(matches!(response(&ctx(&[]), "{}"), Err(AdapterError::InvalidUpstream(_))));
    }
}
