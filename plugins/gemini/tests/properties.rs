//! Properties of the Gemini adapter: any chat or embeddings body becomes a Gemini request
//! within a bound of its size or a contract error; any vendor answer becomes a bounded
//! OpenAI answer whose computed usage adds up; any sequence of stream events becomes a
//! bounded number of chunks an event, each one JSON line. `PROPTEST_CASES` sets the cases.

#[path = "../../kit/tests/support/mod.rs"]
mod support;

use gemini_adapter::{Gemini, MAX_FUNCTION_NAME};
use proptest::prelude::*;
use relay_plugin_kit::{Adapter, AdapterError, Endpoint, StreamEvent, UpstreamResponse};
use serde_json::{Value, json};
use support::*;

/// `usageMetadata`; with `total` the vendor's total is sent (and passed on as it is).
fn usage_metadata(total: bool) -> BoxedStrategy<Value> {
    let total = if total { prop::option::of(tokens()).boxed() } else { Just(None).boxed() };
    (
        prop::option::of(tokens()),
        prop::option::of(tokens()),
        prop::option::of(tokens()),
        prop::option::of(tokens()),
        total,
        prop::option::of(tokens()),
    )
        .prop_map(|(p, c, th, tool, total, cached)| {
            object(vec![
                ("promptTokenCount", p),
                ("candidatesTokenCount", c),
                ("thoughtsTokenCount", th),
                ("toolUsePromptTokenCount", tool),
                ("totalTokenCount", total),
                ("cachedContentTokenCount", cached),
            ])
        })
        .boxed()
}

fn part() -> BoxedStrategy<Value> {
    or_any(
        prop_oneof![
            4 => text().prop_map(|t| json!({"text": t})),
            1 => text().prop_map(|t| json!({"text": t, "thought": true})),
            2 => (prop::option::of(call_id()), function_name(), prop::option::of(json_value())).prop_map(|(id, name, args)| {
                json!({"functionCall": object(vec![("id", id.map(Value::from)), ("name", Some(name.into())), ("args", args)])})
            }),
        ]
        .boxed(),
    )
}

/// A `GenerateContentResponse`: a whole answer or one stream event.
fn response(total: bool) -> BoxedStrategy<Value> {
    let finish = prop::option::of(
        prop_oneof![
            prop::sample::select(&["STOP", "MAX_TOKENS", "SAFETY", "RECITATION", "OTHER"][..]).prop_map(Value::from),
            text().prop_map(Value::from),
        ]
        .boxed(),
    );
    let candidate = (prop::collection::vec(part(), 0..5), finish)
        .prop_map(|(parts, finish)| {
            object(vec![("content", Some(json!({"role": "model", "parts": parts}))), ("finishReason", finish)])
        })
        .boxed();
    (
        prop::collection::vec(or_any(candidate), 0..2),
        prop::option::weighted(0.1, prop::sample::select(&["SAFETY", "OTHER"][..])),
        prop::option::weighted(0.5, usage_metadata(total)),
        prop::option::of(text()),
        prop::option::of(text()),
    )
        .prop_map(|(candidates, block, usage, model, id)| {
            object(vec![
                ("candidates", Some(candidates.into())),
                ("promptFeedback", block.map(|b| json!({"blockReason": b}))),
                ("usageMetadata", usage),
                ("modelVersion", model.map(Value::from)),
                ("responseId", id.map(Value::from)),
            ])
        })
        .boxed()
}

fn embeddings() -> BoxedStrategy<Value> {
    let values = prop::collection::vec(
        prop_oneof![(-1.0f64..1.0).prop_map(Value::from), Just(json!(0)), Just(json!(1e15)), Just(json!(-5e-324))],
        0..8,
    );
    prop::collection::vec(values.prop_map(|v| json!({"values": v})), 0..4)
        .prop_map(|e| json!({"embeddings": e}))
        .boxed()
}

/// The parts of an event's first candidate: each may become up to two chunks.
fn parts_in(ev: &StreamEvent) -> usize {
    let v: Value = serde_json::from_str(ev.data.trim()).unwrap_or_default();
    v.pointer("/candidates/0/content/parts").and_then(Value::as_array).map_or(0, Vec::len)
}

proptest! {
    #[test]
    fn chat_requests_map_within_a_bound_or_are_refused(
        ctx in any::<bool>().prop_flat_map(|s| context(Endpoint::ChatCompletions, s)),
        body in body(chat_request()),
    ) {
        let settings: usize = ctx.settings.iter().map(|(k, v)| k.len() + v.len()).sum();
        match Gemini::transform_request(&ctx, &body) {
            Ok(r) => {
                prop_assert!(r.path.starts_with('/') && !r.path.contains(['#', ' ', '\n']), "{}", r.path);
                let v: Value = serde_json::from_str(&r.body).map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert!(v["contents"].as_array().is_some_and(|c| !c.is_empty()), "{}", r.body);
                // Parts are renamed and re-nested; a tool result repeats the name of the
                // call it answers, and a Gemini 3 replay carries the signature stand-in.
                prop_assert!(r.body.len() <= 2 * body.len() + 256, "{} bytes from {}", r.body.len(), body.len());
            }
            Err(e) => {
                let channel = matches!(e, AdapterError::Internal(_));
                prop_assert!(!channel || ctx.settings.iter().any(|(k, _)| k == "api_version"), "{e:?}");
                check_error(&e, body.len() + settings)?;
            }
        }
    }

    /// Every result repeats the name of the call it answers: the name's length is bounded,
    /// so the request grows with the number of results, not with their product.
    #[test]
    fn tool_results_repeat_a_bounded_name(
        name in prop_oneof![function_name(), "[a-z]{250,260}", "[a-z]{1000,4000}"],
        results in 1usize..24,
        content in text(),
    ) {
        let call = json!({"id": "c", "type": "function", "function": {"name": name, "arguments": ""}});
        let result = json!({"role": "tool", "tool_call_id": "c", "content": content});
        let mut messages = vec![json!({"role": "user", "content": "x"}), json!({"role": "assistant", "tool_calls": [call]})];
        messages.extend(std::iter::repeat_n(result, results));
        let body = json!({"model": "m", "messages": messages}).to_string();
        let ctx = relay_plugin_kit::CallContext {
            request_id: "req_1".into(),
            endpoint: Endpoint::ChatCompletions,
            model: "gemini-2.5-flash".into(),
            stream: false,
            include_usage: false,
            settings: vec![],
        };
        match Gemini::transform_request(&ctx, &body) {
            Ok(r) => prop_assert!(
                r.body.len() <= 2 * body.len() + results * (MAX_FUNCTION_NAME + 64) + 256,
                "{} bytes from {}", r.body.len(), body.len()
            ),
            Err(e) => {
                prop_assert!(name.len() > MAX_FUNCTION_NAME, "{e:?}");
                check_error(&e, body.len())?;
            }
        }
    }

    #[test]
    fn embeddings_requests_map_within_a_bound_or_are_refused(
        ctx in context(Endpoint::Embeddings, false),
        body in body(embeddings_request()),
    ) {
        let settings: usize = ctx.settings.iter().map(|(k, v)| k.len() + v.len()).sum();
        match Gemini::transform_request(&ctx, &body) {
            Ok(r) => {
                let v: Value = serde_json::from_str(&r.body).map_err(|e| TestCaseError::fail(e.to_string()))?;
                let inputs = v["requests"].as_array().map_or(0, Vec::len);
                prop_assert!(inputs >= 1);
                // Gemini wants the model named in every input's request.
                let per_input = 6 * ctx.model.len() + 96;
                prop_assert!(r.body.len() <= 2 * body.len() + inputs * per_input + 64, "{} bytes from {}", r.body.len(), body.len());
            }
            Err(e) => {
                let channel = matches!(e, AdapterError::Internal(_));
                prop_assert!(!channel || ctx.settings.iter().any(|(k, _)| k == "api_version"), "{e:?}");
                check_error(&e, body.len() + settings)?;
            }
        }
    }

    #[test]
    fn answers_are_bounded_openai_answers(
        embeddings_call in any::<bool>(),
        ctx in context(Endpoint::ChatCompletions, false),
        status in status(),
        body in prop_oneof![2 => body(response(true)), 1 => body(embeddings()), 1 => error_body()],
    ) {
        let mut ctx = ctx;
        if embeddings_call {
            ctx.endpoint = Endpoint::Embeddings;
        }
        let resp = UpstreamResponse { status, headers: vec![], body: body.clone() };
        match Gemini::transform_response(&ctx, resp) {
            Ok(r) => {
                check_answer(status, r.status, &r.body)?;
                // A blocked prompt or filtered answer is a 200 classified content-filtered.
                check_class(r.status, r.error_class, Some(relay_plugin_kit::ErrorClass::ContentFiltered))?;
                if let Some(u) = r.usage.as_ref().filter(|_| !body.contains("totalTokenCount")) {
                    check_usage(u)?;
                }
                // Function arguments become strings (2x once escaped), a call without an
                // id gets `call_<n>`, numbers may print longer (`1e15` as
                // `1000000000000000.0`): at most 4x, with the model asked for as a fallback.
                let max = 4 * body.len() + 6 * ctx.model.len() + 6 * 515 + 512;
                prop_assert!(r.body.len() <= max, "{} bytes from {}", r.body.len(), body.len());
            }
            Err(e) => {
                prop_assert!((200..300).contains(&status) && matches!(e, AdapterError::InvalidUpstream(_)), "{e:?}");
                check_error(&e, body.len())?;
            }
        }
    }

    #[test]
    fn streams_make_a_bounded_number_of_chunks_an_event(
        ctx in context(Endpoint::ChatCompletions, true),
        events in events(event_data(response(false)), 12),
    ) {
        // A function call is a start and an arguments chunk; a finish reason adds one.
        let bound = StreamBound { chunks: |ev| 2 * parts_in(ev) + 1, envelope: 512, generated: true, computed_usage: true };
        run_stream::<<Gemini as Adapter>::Stream>(&ctx, events, &bound)?;
    }

    #[test]
    fn streams_are_the_same_in_batches(
        ctx in context(Endpoint::ChatCompletions, true),
        events in events(event_data(response(false)), 12),
        sizes in batch_sizes(),
    ) {
        check_batching::<<Gemini as Adapter>::Stream>(&ctx, events, &sizes)?;
    }
}
