//! Properties of the Anthropic adapter: any request body becomes a Messages request within
//! a bound of its size or a contract error; any vendor answer becomes a bounded OpenAI
//! answer whose usage adds up; any sequence of stream events becomes at most one chunk an
//! event, each one JSON line. `PROPTEST_CASES` sets the cases.

#[path = "../../kit/tests/support/mod.rs"]
mod support;

use anthropic_adapter::Anthropic;
use proptest::prelude::*;
use relay_plugin_kit::{Adapter, AdapterError, Endpoint, UpstreamResponse};
use serde_json::{Value, json};
use support::*;

/// Anthropic's usage object: every field optional, counts at their extremes.
fn usage() -> BoxedStrategy<Value> {
    (prop::option::of(tokens()), prop::option::of(tokens()), prop::option::of(tokens()), prop::option::of(tokens()))
        .prop_map(|(i, o, cc, cr)| {
            object(vec![
                ("input_tokens", i),
                ("output_tokens", o),
                ("cache_creation_input_tokens", cc),
                ("cache_read_input_tokens", cr),
            ])
        })
        .boxed()
}

fn stop_reason() -> BoxedStrategy<Value> {
    prop_oneof![
        prop::sample::select(&["end_turn", "max_tokens", "tool_use", "refusal", "stop_sequence", "pause_turn"][..])
            .prop_map(Value::from),
        text().prop_map(Value::from),
        Just(Value::Null),
    ]
    .boxed()
}

fn block() -> BoxedStrategy<Value> {
    or_any(
        prop_oneof![
            3 => text().prop_map(|t| json!({"type": "text", "text": t})),
            2 => (call_id(), function_name(), json_value())
                .prop_map(|(id, name, input)| json!({"type": "tool_use", "id": id, "name": name, "input": input})),
            1 => text().prop_map(|t| json!({"type": "thinking", "thinking": t, "signature": "s"})),
        ]
        .boxed(),
    )
}

/// A Messages API answer.
fn message() -> BoxedStrategy<Value> {
    (text(), prop::option::of(text()), prop::collection::vec(block(), 0..5), stop_reason(), prop::option::of(usage()))
        .prop_map(|(id, model, content, stop, usage)| {
            object(vec![
                ("id", Some(id.into())),
                ("type", Some("message".into())),
                ("role", Some("assistant".into())),
                ("model", model.map(Value::from)),
                ("content", Some(content.into())),
                ("stop_reason", Some(stop)),
                ("usage", usage),
            ])
        })
        .boxed()
}

fn message_start() -> BoxedStrategy<Value> {
    (text(), prop::option::of(text()), prop::option::of(usage()))
        .prop_map(|(id, model, usage)| {
            let message = object(vec![
                ("id", Some(id.into())),
                ("type", Some("message".into())),
                ("model", model.map(Value::from)),
                ("content", Some(json!([]))),
                ("usage", usage),
            ]);
            json!({"type": "message_start", "message": message})
        })
        .boxed()
}

/// Any event of the Messages stream, with block indexes that often refer to earlier blocks.
fn event() -> BoxedStrategy<Value> {
    let index = || prop_oneof![6 => (0u64..4).prop_map(Value::from), 1 => any::<u64>().prop_map(Value::from)];
    let start_block = prop_oneof![
        text().prop_map(|t| json!({"type": "text", "text": t})),
        (call_id(), function_name())
            .prop_map(|(id, name)| json!({"type": "tool_use", "id": id, "name": name, "input": {}})),
        Just(json!({"type": "thinking", "thinking": ""})),
    ];
    let delta = prop_oneof![
        text().prop_map(|t| json!({"type": "text_delta", "text": t})),
        text().prop_map(|t| json!({"type": "input_json_delta", "partial_json": t})),
        text().prop_map(|t| json!({"type": "thinking_delta", "thinking": t})),
        json_value(),
    ];
    or_any(
        prop_oneof![
            1 => message_start(),
            3 => (index(), start_block).prop_map(|(i, b)| json!({"type": "content_block_start", "index": i, "content_block": b})),
            5 => (index(), delta).prop_map(|(i, d)| json!({"type": "content_block_delta", "index": i, "delta": d})),
            2 => index().prop_map(|i| json!({"type": "content_block_stop", "index": i})),
            1 => (stop_reason(), prop::option::of(usage())).prop_map(|(r, u)| {
                json!({"type": "message_delta", "delta": {"stop_reason": r}, "usage": u})
            }),
            1 => Just(json!({"type": "message_stop"})),
            1 => Just(json!({"type": "ping"})),
            1 => (text(), text()).prop_map(|(k, m)| json!({"type": "error", "error": {"type": k, "message": m}})),
            1 => Just(json!({"type": "future_event", "x": 1})),
        ]
        .boxed(),
    )
}

proptest! {
    #[test]
    fn requests_map_within_a_bound_or_are_refused(
        ctx in any::<bool>().prop_flat_map(|s| context(Endpoint::ChatCompletions, s)),
        body in body(chat_request()),
    ) {
        let settings: usize = ctx.settings.iter().map(|(k, v)| k.len() + v.len()).sum();
        match Anthropic::transform_request(&ctx, &body) {
            Ok(r) => {
                prop_assert_eq!(&r.path, "/v1/messages");
                prop_assert!(r.headers.len() <= 2);
                let v: Value = serde_json::from_str(&r.body).map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert!(v["messages"].as_array().is_some_and(|m| !m.is_empty()), "{}", r.body);
                prop_assert!(v["max_tokens"].is_u64(), "{}", r.body);
                // Blocks are renamed and re-nested, never repeated.
                prop_assert!(r.body.len() <= 2 * body.len() + 256, "{} bytes from {}", r.body.len(), body.len());
            }
            Err(e) => {
                let channel = matches!(e, AdapterError::Internal(_));
                prop_assert!(!channel || ctx.settings.iter().any(|(k, _)| k == "max_tokens"), "{e:?}");
                check_error(&e, body.len() + settings)?;
            }
        }
    }

    #[test]
    fn answers_are_bounded_openai_answers(
        ctx in context(Endpoint::ChatCompletions, false),
        status in status(),
        body in prop_oneof![3 => body(message()), 1 => error_body()],
    ) {
        let resp = UpstreamResponse { status, headers: vec![], body: body.clone() };
        match Anthropic::transform_response(&ctx, resp) {
            Ok(r) => {
                check_answer(status, r.status, &r.body)?;
                check_class(status, r.error_class, None)?;
                if let Some(u) = &r.usage {
                    check_usage(u)?;
                }
                // Tool inputs become argument strings (quotes escaped: 2x); the model asked
                // for stands in for a missing one.
                let max = 2 * body.len() + 6 * ctx.model.len() + 6 * 515 + 512;
                prop_assert!(r.body.len() <= max, "{} bytes from {}", r.body.len(), body.len());
            }
            Err(e) => {
                prop_assert!((200..300).contains(&status) && matches!(e, AdapterError::InvalidUpstream(_)), "{e:?}");
                check_error(&e, body.len())?;
            }
        }
    }

    #[test]
    fn streams_make_at_most_one_chunk_an_event(
        ctx in context(Endpoint::ChatCompletions, true),
        start in prop::option::weighted(0.9, message_start()),
        events in events(event_data(event()), 20),
    ) {
        let mut all: Vec<_> = start.map(|s| relay_plugin_kit::StreamEvent { event: None, data: s.to_string() }).into_iter().collect();
        all.extend(events);
        let bound = StreamBound { chunks: |_| 1, envelope: 512, generated: true, computed_usage: true };
        run_stream::<<Anthropic as Adapter>::Stream>(&ctx, all, &bound)?;
    }

    #[test]
    fn streams_are_the_same_in_batches(
        ctx in context(Endpoint::ChatCompletions, true),
        start in prop::option::weighted(0.9, message_start()),
        events in events(event_data(event()), 20),
        sizes in batch_sizes(),
    ) {
        let mut all: Vec<_> = start.map(|s| relay_plugin_kit::StreamEvent { event: None, data: s.to_string() }).into_iter().collect();
        all.extend(events);
        check_batching::<<Anthropic as Adapter>::Stream>(&ctx, all, &sizes)?;
    }
}
