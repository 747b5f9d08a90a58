//! What the adapters' property tests share: strategies for arbitrary JSON biased toward the
//! shapes clients and vendors really send, and the checks every mapping must pass (no
//! panic, a result or a contract error, output within a bound of the input).
//!
//! The kit's `tests/properties.rs` uses it as `mod support`; each adapter's
//! `tests/properties.rs` includes this file by path. Inputs stay small (a few KiB) so every
//! case ends quickly; `PROPTEST_CASES` raises the case count (`make fuzz`).

// Each test crate uses a subset.
#![allow(dead_code)]

use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use relay_plugin_kit::{
    AdapterError, Batched, CallContext, Endpoint, ErrorClass, OutputEvent, RelayResponse, StreamAdapter, StreamEnd,
    StreamEvent, StreamOutput, Usage,
};
use serde_json::{Map, Value, json};

/// Field names of OpenAI's, Anthropic's and Gemini's shapes, so random objects hit the
/// fields the mappings read.
#[rustfmt::skip]
const KEYS: &[&str] = &[
    "model", "messages", "role", "content", "type", "text", "tool_calls", "tool_call_id", "id", "function", "name",
    "arguments", "choices", "delta", "usage", "error", "message", "index", "finish_reason", "candidates", "parts",
    "functionCall", "args", "finishReason", "usageMetadata", "promptFeedback", "blockReason", "responseId",
    "modelVersion", "content_block", "partial_json", "stop_reason", "input", "properties", "items", "anyOf",
    "additionalProperties", "$schema", "required", "code", "status", "details", "innererror", "prompt_tokens",
    "completion_tokens", "total_tokens", "input_tokens", "output_tokens", "embeddings", "values", "thought",
];

/// Short strings with what matters to JSON, SSE and URLs: quotes, backslashes, control
/// characters, line breaks, `%`, `/`, non-ASCII.
pub fn text() -> BoxedStrategy<String> {
    prop_oneof![
        4 => "[a-z0-9_]{0,8}",
        2 => "\\PC{0,12}",
        2 => "[\"\\\\\n\r\t\u{0}\u{1f}/%?#& é\u{2028}\u{10ffff}]{0,8}",
        1 => Just(String::new()),
    ]
    .boxed()
}

/// A field name: usually one the vendors use, sometimes anything.
pub fn key() -> BoxedStrategy<String> {
    prop_oneof![3 => prop::sample::select(KEYS).prop_map(String::from), 1 => text()].boxed()
}

fn leaf() -> BoxedStrategy<Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        prop_oneof![Just(0u64), Just(1), Just(u64::MAX), any::<u64>()].prop_map(Value::from),
        any::<f64>()
            .prop_filter_map("JSON has no NaN or infinity", |f| serde_json::Number::from_f64(f).map(Value::Number)),
        text().prop_map(Value::String),
    ]
    .boxed()
}

/// Any JSON value: at most 4 levels deep, ~48 nodes, 6 items per array or object.
pub fn json_value() -> BoxedStrategy<Value> {
    leaf()
        .prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::vec((key(), inner), 0..6).prop_map(|kv| Value::Object(kv.into_iter().collect())),
            ]
        })
        .boxed()
}

/// Mostly the realistic value, sometimes anything in its place (rarely enough that a
/// request with a dozen such fields still gets past parsing often).
pub fn or_any(real: BoxedStrategy<Value>) -> BoxedStrategy<Value> {
    prop_oneof![24 => real, 1 => json_value()].boxed()
}

/// `real`, or when `noisy` sometimes anything in its place: a clean request reaches the
/// mapping itself, a noisy one its refusals.
fn maybe_any(noisy: bool, real: BoxedStrategy<Value>) -> BoxedStrategy<Value> {
    if noisy { or_any(real) } else { real }
}

/// A JSON object from optional fields: absent fields are left out.
pub fn object(fields: Vec<(&'static str, Option<Value>)>) -> Value {
    Value::Object(fields.into_iter().filter_map(|(k, v)| Some((k.to_string(), v?))).collect::<Map<_, _>>())
}

/// A token count, with the extremes that overflow careless sums.
pub fn tokens() -> BoxedStrategy<Value> {
    prop_oneof![
        6 => (0u64..100_000).prop_map(Value::from),
        2 => prop_oneof![Just(u64::MAX), Just(u64::MAX - 1), Just(1u64 << 63)].prop_map(Value::from),
        1 => prop_oneof![Just(json!(-1)), Just(json!(1.5)), Just(Value::Null), Just(json!("7"))],
    ]
    .boxed()
}

/// A tool-call or tool-result id from a small set, so results often answer earlier calls.
pub fn call_id() -> BoxedStrategy<String> {
    prop_oneof![4 => prop::sample::select(&["call_1", "call_2", "c"][..]).prop_map(String::from), 1 => text()].boxed()
}

/// A function name, occasionally long (names are echoed in every result that answers them).
pub fn function_name() -> BoxedStrategy<String> {
    prop_oneof![
        6 => prop::sample::select(&["get_weather", "now", "f"][..]).prop_map(String::from),
        2 => text(),
        1 => "[a-z]{200,400}",
    ]
    .boxed()
}

/// A JSON Schema as clients send them for tool parameters and structured output.
pub fn schema() -> BoxedStrategy<Value> {
    let leaf = prop_oneof![
        prop::sample::select(&["string", "number", "integer", "boolean", "object", "array"][..])
            .prop_map(|t| json!({"type": t})),
        Just(json!({"type": ["string", "null"]})),
        Just(json!({"type": ["null", "integer"], "description": "maybe"})),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(("[a-z]{1,6}", inner.clone()), 0..4).prop_map(|props| {
                let props: Map<String, Value> = props.into_iter().collect();
                json!({"type": "object", "properties": props, "additionalProperties": false,
                    "$schema": "https://json-schema.org/draft/2020-12/schema"})
            }),
            inner.clone().prop_map(|i| json!({"type": "array", "items": i})),
            prop::collection::vec(inner, 1..3).prop_map(|s| json!({"anyOf": s})),
        ]
    })
    .boxed()
}

fn image_url() -> BoxedStrategy<String> {
    prop_oneof![
        Just("data:image/png;base64,iVBORw0KGgo=".to_string()),
        Just("data:image/png,notbase64".to_string()),
        Just("https://example.com/cat.jpg".to_string()),
        Just("ftp://example.com/x".to_string()),
        text(),
    ]
    .boxed()
}

fn content_part(noisy: bool) -> BoxedStrategy<Value> {
    let real = prop_oneof![
        12 => text().prop_map(|t| json!({"type": "text", "text": t})),
        4 => image_url().prop_map(|u| json!({"type": "image_url", "image_url": {"url": u, "detail": "low"}})),
        1 => Just(json!({"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}})),
    ];
    maybe_any(noisy, real.boxed())
}

fn content(noisy: bool) -> BoxedStrategy<Value> {
    let real = prop_oneof![
        12 => text().prop_map(Value::String),
        8 => prop::collection::vec(content_part(noisy), 0..4).prop_map(Value::Array),
        2 => Just(Value::Null),
    ];
    maybe_any(noisy, real.boxed())
}

/// Tool-call arguments: a JSON object as text, empty, or something that is not an object.
fn arguments() -> BoxedStrategy<String> {
    prop_oneof![
        3 => json_value().prop_map(|v| json!({"v": v}).to_string()),
        1 => Just(String::new()),
        1 => Just("{\"city\":\"Paris\"}".to_string()),
        1 => text(),
        1 => json_value().prop_map(|v| v.to_string()),
    ]
    .boxed()
}

fn tool_call(noisy: bool) -> BoxedStrategy<Value> {
    let kind = prop_oneof![5 => Just("function".to_string()), 1 => text()];
    maybe_any(
        noisy,
        (call_id(), kind, function_name(), arguments())
            .prop_map(
                |(id, kind, name, args)| json!({"id": id, "type": kind, "function": {"name": name, "arguments": args}}),
            )
            .boxed(),
    )
}

fn role() -> BoxedStrategy<String> {
    prop_oneof![
        // Mostly user and assistant turns, as conversations are.
        24 => prop::sample::select(&["user", "user", "user", "assistant", "assistant", "system", "developer", "tool"][..])
            .prop_map(String::from),
        1 => prop::sample::select(&["function", "model", ""][..]).prop_map(String::from),
        1 => text(),
    ]
    .boxed()
}

/// One chat message, in any of the roles' shapes (and sometimes not a message at all).
pub fn message(noisy: bool) -> BoxedStrategy<Value> {
    let real = (
        role(),
        prop::option::weighted(0.9, content(noisy)),
        prop::option::weighted(0.3, prop::collection::vec(tool_call(noisy), 0..3)),
        prop::option::weighted(0.3, call_id()),
    )
        .prop_map(|(role, content, calls, call_id)| {
            object(vec![
                ("role", Some(role.into())),
                ("content", content),
                ("tool_calls", calls.map(Value::Array)),
                ("tool_call_id", call_id.map(Value::String)),
            ])
        })
        .boxed();
    maybe_any(noisy, real)
}

fn tool(noisy: bool) -> BoxedStrategy<Value> {
    let kind = prop_oneof![5 => Just("function".to_string()), 1 => text()];
    maybe_any(
        noisy,
        (kind, function_name(), prop::option::of(text()), prop::option::of(maybe_any(noisy, schema())))
            .prop_map(|(kind, name, description, parameters)| {
                let f = object(vec![
                    ("name", Some(name.into())),
                    ("description", description.map(Value::String)),
                    ("parameters", parameters),
                ]);
                json!({"type": kind, "function": f})
            })
            .boxed(),
    )
}

fn tool_choice(noisy: bool) -> BoxedStrategy<Value> {
    let real = prop_oneof![
        prop::sample::select(&["auto", "none", "required", "sometimes"][..]).prop_map(Value::from),
        function_name().prop_map(|n| json!({"type": "function", "function": {"name": n}})),
        Just(json!({"type": "allowed_tools", "function": {"name": "f"}})),
    ];
    maybe_any(noisy, real.boxed())
}

fn response_format() -> BoxedStrategy<Value> {
    prop_oneof![
        Just(json!({"type": "text"})),
        Just(json!({"type": "json_object"})),
        schema().prop_map(|s| json!({"type": "json_schema", "json_schema": {"name": "out", "schema": s}})),
        Just(json!({"type": "json_schema", "json_schema": {"name": "out"}})),
        json_value(),
    ]
    .boxed()
}

/// Extra request fields: the ones adapters map or refuse by name, and unknown ones.
fn extra() -> BoxedStrategy<Vec<(String, Value)>> {
    let name = prop_oneof![
        4 => prop::sample::select(
            &[
                "logprobs", "store", "logit_bias", "presence_penalty", "frequency_penalty", "seed",
                "parallel_tool_calls", "top_k", "metadata", "top_logprobs", "functions", "stream_options",
            ][..]
        )
        .prop_map(String::from),
        1 => text(),
    ];
    let value = prop_oneof![
        Just(Value::Bool(false)),
        Just(Value::Bool(true)),
        Just(json!(0)),
        Just(json!(0.5)),
        Just(json!({})),
        Just(Value::Null),
        json_value(),
    ];
    prop::option::weighted(0.3, (name, value)).prop_map(|kv| kv.into_iter().collect()).boxed()
}

/// An OpenAI chat completions request body, valid or a near miss.
pub fn chat_request() -> BoxedStrategy<Value> {
    prop_oneof![2 => chat_request_with(false), 1 => chat_request_with(true)].boxed()
}

fn chat_request_with(noisy: bool) -> BoxedStrategy<Value> {
    let near = move |real: BoxedStrategy<Value>| maybe_any(noisy, real);
    let number = || near(prop_oneof![(0.0..2.0f64).prop_map(Value::from), Just(json!(1))].boxed());
    let limit = || near(prop_oneof![(0u64..100_000).prop_map(Value::from), Just(Value::from(u64::MAX))].boxed());
    let stop = near(
        prop_oneof![text().prop_map(Value::from), prop::collection::vec(text(), 0..4).prop_map(Value::from)].boxed(),
    );
    let head = (
        near(prop_oneof![3 => "[a-z0-9.-]{1,20}".prop_map(Value::from), 1 => text().prop_map(Value::from)].boxed()),
        near(prop::collection::vec(message(noisy), 1..6).prop_map(Value::Array).boxed()),
        prop::option::of(any::<bool>().prop_map(Value::Bool)),
        prop::option::of(number()),
        prop::option::of(number()),
        prop::option::of(limit()),
        prop::option::of(limit()),
    );
    let tail = (
        prop::option::of(stop),
        prop::option::weighted(0.4, near(prop::collection::vec(tool(noisy), 0..4).prop_map(Value::Array).boxed())),
        prop::option::weighted(0.3, tool_choice(noisy)),
        prop::option::weighted(0.2, near(prop_oneof![Just(json!(1)), Just(json!(0)), Just(json!(2))].boxed())),
        prop::option::weighted(0.2, text().prop_map(Value::String)),
        prop::option::weighted(0.2, response_format()),
        extra(),
    );
    (head, tail)
        .prop_map(|((model, messages, stream, temperature, top_p, max_tokens, max_completion), tail)| {
            let (stop, tools, choice, n, user, format, extra) = tail;
            let mut v = object(vec![
                ("model", Some(model)),
                ("messages", Some(messages)),
                ("stream", stream),
                ("temperature", temperature),
                ("top_p", top_p),
                ("max_tokens", max_tokens),
                ("max_completion_tokens", max_completion),
                ("stop", stop),
                ("tools", tools),
                ("tool_choice", choice),
                ("n", n),
                ("user", user),
                ("response_format", format),
            ]);
            if let Value::Object(m) = &mut v {
                m.extend(extra);
            }
            v
        })
        .boxed()
}

/// An OpenAI embeddings request body.
pub fn embeddings_request() -> BoxedStrategy<Value> {
    let input = or_any(
        prop_oneof![
            text().prop_map(Value::from),
            prop::collection::vec(text(), 0..8).prop_map(Value::from),
            Just(json!([[1, 2, 3]])),
        ]
        .boxed(),
    );
    (
        "[a-z0-9.-]{1,20}",
        input,
        prop::option::of(or_any((0u64..4096).prop_map(Value::from).boxed())),
        prop::option::of(prop::sample::select(&["float", "base64"][..]).prop_map(Value::from)),
        extra(),
    )
        .prop_map(|(model, input, dimensions, format, extra)| {
            let mut v = object(vec![
                ("model", Some(model.into())),
                ("input", Some(input)),
                ("dimensions", dimensions),
                ("encoding_format", format),
            ]);
            if let Value::Object(m) = &mut v {
                m.extend(extra);
            }
            v
        })
        .boxed()
}

/// A body as text: the shaped value compact or pretty-printed, cut short, any JSON, or
/// any bytes (made UTF-8, as the contract's strings are).
pub fn body(shaped: BoxedStrategy<Value>) -> BoxedStrategy<String> {
    prop_oneof![
        12 => shaped.clone().prop_map(|v| v.to_string()),
        2 => shaped.clone().prop_map(|v| serde_json::to_string_pretty(&v).unwrap_or_default()),
        1 => (shaped, any::<prop::sample::Index>()).prop_map(|(v, at)| {
            let s = v.to_string();
            let mut cut = at.index(s.len() + 1);
            while !s.is_char_boundary(cut) {
                cut -= 1;
            }
            s[..cut].to_string()
        }),
        1 => json_value().prop_map(|v| v.to_string()),
        1 => prop::collection::vec(any::<u8>(), 0..256).prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
    ]
    .boxed()
}

/// A vendor error body: OpenAI's, Anthropic's, Google's, Azure's shapes, or a proxy's page.
pub fn error_body() -> BoxedStrategy<String> {
    let shaped = prop_oneof![
        (text(), prop::option::of(text()), prop::option::of(text())).prop_map(|(m, t, c)| {
            json!({"error": object(vec![("message", Some(m.into())), ("type", t.map(Value::from)), ("code", c.map(Value::from))])})
        }),
        (text(), text()).prop_map(|(kind, m)| json!({"type": "error", "error": {"type": kind, "message": m}})),
        (text(), prop::sample::select(&["RESOURCE_EXHAUSTED", "INVALID_ARGUMENT", "UNAUTHENTICATED", "UNAVAILABLE", ""][..]))
            .prop_map(|(m, s)| json!({"error": {"code": 429, "message": m, "status": s,
                "details": [{"reason": "API_KEY_INVALID"}]}})),
        (text(), json_value()).prop_map(|(m, inner)| json!({"error": {"code": 500, "message": m, "innererror": inner}})),
        text().prop_map(|m| json!({"error": m})),
        text().prop_map(|m| json!({"message": m})),
        json_value().prop_map(|e| json!([{"error": e}])),
        json_value().prop_map(|e| json!({"error": e})),
    ]
    .boxed();
    prop_oneof![
        4 => body(shaped),
        1 => text().prop_map(|t| format!("<html><body>{t}</body></html>")),
        1 => "\\PC{500,700}",
    ]
    .boxed()
}

/// An upstream status: the usual ones, and any.
pub fn status() -> BoxedStrategy<u16> {
    prop_oneof![
        6 => Just(200u16),
        4 => prop::sample::select(&[201u16, 204, 400, 401, 403, 404, 422, 429, 500, 502, 503, 529][..]),
        1 => 100u16..600,
        1 => any::<u16>(),
    ]
    .boxed()
}

/// A call context for `endpoint`: any (non-empty) model name, `include_usage` or not, a
/// few settings.
pub fn context(endpoint: Endpoint, stream: bool) -> BoxedStrategy<CallContext> {
    let setting = (
        prop_oneof![
            prop::sample::select(
                &[
                    "api_version",
                    "deployment",
                    "deployment.m",
                    "organization",
                    "project",
                    "max_tokens",
                    "anthropic_version"
                ][..]
            )
            .prop_map(String::from),
            text(),
        ],
        prop_oneof!["[a-z0-9-]{0,12}", text()],
    );
    let model = prop_oneof![
        3 => "[a-z0-9.-]{1,24}",
        1 => prop::sample::select(&["m", "gemini-3-pro", "models/gemini-3.1-flash"][..]).prop_map(String::from),
        // The host routes only non-empty model names a channel serves.
        1 => "\\PC{1,12}",
    ];
    (model, any::<bool>(), prop::collection::vec(setting, 0..3))
        .prop_map(move |(model, include_usage, settings)| CallContext {
            request_id: "req_1".into(),
            endpoint,
            model,
            stream,
            include_usage,
            settings,
        })
        .boxed()
}

/// A sequence of stream events whose data comes from `data`.
pub fn events(data: BoxedStrategy<String>, max: usize) -> BoxedStrategy<Vec<StreamEvent>> {
    let event = (prop::option::weighted(0.3, text()), data).prop_map(|(event, data)| StreamEvent { event, data });
    prop::collection::vec(event, 0..max).boxed()
}

/// Any of a stream's event data, from `shaped`: compact, pretty-printed across lines (as
/// several SSE `data:` lines joined with `\n`), cut short, or anything.
pub fn event_data(shaped: BoxedStrategy<Value>) -> BoxedStrategy<String> {
    prop_oneof![
        24 => shaped.clone().prop_map(|v| v.to_string()),
        3 => shaped.prop_map(|v| serde_json::to_string_pretty(&v).unwrap_or_default()),
        1 => json_value().prop_map(|v| v.to_string()),
        1 => prop::collection::vec(any::<u8>(), 0..64).prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
    ]
    .boxed()
}

/// A usage object in OpenAI's shape, with extreme and malformed counts.
pub fn openai_usage() -> BoxedStrategy<Value> {
    (tokens(), tokens(), tokens())
        .prop_map(|(p, c, t)| json!({"prompt_tokens": p, "completion_tokens": c, "total_tokens": t}))
        .boxed()
}

/// A `chat.completion.chunk` as OpenAI-compatible vendors stream it, Azure's filter
/// preamble, an error event, or anything.
pub fn openai_chunk() -> BoxedStrategy<Value> {
    let delta = prop_oneof![
        text().prop_map(|t| json!({"content": t})),
        Just(json!({"role": "assistant", "content": ""})),
        (0u32..3, call_id(), function_name()).prop_map(|(i, id, n)| {
            json!({"tool_calls": [{"index": i, "id": id, "type": "function", "function": {"name": n, "arguments": ""}}]})
        }),
        arguments().prop_map(|a| json!({"tool_calls": [{"index": 0, "function": {"arguments": a}}]})),
        Just(json!({})),
    ];
    let finish = prop::option::of(prop::sample::select(&["stop", "length", "tool_calls", "content_filter"][..]));
    let choice = (delta, finish).prop_map(|(d, f)| json!({"index": 0, "delta": d, "finish_reason": f}));
    let chunk =
        (text(), prop::collection::vec(or_any(choice.boxed()), 0..3), prop::option::weighted(0.2, openai_usage()))
            .prop_map(|(id, choices, usage)| {
                object(vec![
                    ("id", Some(id.into())),
                    ("object", Some("chat.completion.chunk".into())),
                    ("choices", Some(Value::Array(choices))),
                    ("usage", usage),
                ])
            });
    prop_oneof![
        8 => chunk,
        1 => text().prop_map(|m| json!({"error": {"message": m}})),
        1 => Just(json!({"choices": [], "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": {}}]})),
        1 => json_value(),
    ]
    .boxed()
}

/// One event of an OpenAI-compatible stream: a chunk (in any of `event_data`'s forms) or
/// the terminal `[DONE]`.
pub fn openai_event_data() -> BoxedStrategy<String> {
    prop_oneof![
        9 => event_data(openai_chunk()),
        1 => prop::sample::select(&["[DONE]", " [DONE]", "[DONE]\n"][..]).prop_map(String::from),
    ]
    .boxed()
}

/// A complete `chat.completion` (or an embeddings list) as OpenAI-compatible vendors answer.
pub fn openai_completion() -> BoxedStrategy<Value> {
    let message = (prop::option::of(text()), prop::option::weighted(0.3, prop::collection::vec(tool_call(true), 0..3)))
        .prop_map(|(content, calls)| {
            object(vec![
                ("role", Some("assistant".into())),
                ("content", Some(content.map_or(Value::Null, Value::from))),
                ("tool_calls", calls.map(Value::Array)),
            ])
        });
    let completion = (text(), prop::collection::vec(message, 0..2), prop::option::of(openai_usage())).prop_map(
        |(id, messages, usage)| {
            let choices: Vec<Value> = messages
                .into_iter()
                .enumerate()
                .map(|(i, m)| json!({"index": i, "message": m, "finish_reason": "stop"}))
                .collect();
            object(vec![
                ("id", Some(id.into())),
                ("object", Some("chat.completion".into())),
                ("choices", Some(choices.into())),
                ("usage", usage),
            ])
        },
    );
    let embeddings = (prop::collection::vec(prop::collection::vec(-1.0f64..1.0, 0..4), 0..3), openai_usage()).prop_map(
        |(vectors, usage)| {
            let data: Vec<Value> = vectors
                .into_iter()
                .enumerate()
                .map(|(i, v)| json!({"object": "embedding", "index": i, "embedding": v}))
                .collect();
            json!({"object": "list", "data": data, "usage": usage})
        },
    );
    or_any(prop_oneof![3 => completion, 1 => embeddings].boxed())
}

// ---- Checks ----

/// An error's message: short enough to log and to quote to a client (what it quotes
/// comes from the input; the rest is a sentence).
pub fn check_error(e: &AdapterError, input_len: usize) -> Result<(), TestCaseError> {
    let m = match e {
        AdapterError::InvalidRequest(m)
        | AdapterError::Unsupported(m)
        | AdapterError::InvalidUpstream(m)
        | AdapterError::Internal(m) => m,
    };
    prop_assert!(!m.is_empty(), "an error says what went wrong");
    prop_assert!(m.len() <= 2 * input_len + 1024, "error message of {} bytes for {input_len} bytes in", m.len());
    Ok(())
}

/// Usage that adds up: the total never wraps below its parts.
pub fn check_usage(u: &Usage) -> Result<(), TestCaseError> {
    prop_assert!(u.total_tokens >= u.input_tokens && u.total_tokens >= u.output_tokens, "usage wrapped: {u:?}");
    // Details are parts of the counts they detail.
    prop_assert!(u.cached_input_tokens.is_none_or(|c| c <= u.input_tokens), "cached input above input: {u:?}");
    prop_assert!(
        u.cache_creation_input_tokens.is_none_or(|c| c <= u.input_tokens),
        "cache creation above input: {u:?}"
    );
    prop_assert!(u.reasoning_tokens.is_none_or(|r| r <= u.output_tokens), "reasoning above output: {u:?}");
    Ok(())
}

/// A chunk the host can send as one SSE `data:` line: a JSON object on a single line.
pub fn check_chunk(c: &str) -> Result<Value, TestCaseError> {
    prop_assert!(!c.contains(['\n', '\r']), "a chunk spans lines, breaking SSE framing: {c:?}");
    let v: Value = serde_json::from_str(c).map_err(|e| TestCaseError::fail(format!("chunk is not JSON ({e}): {c}")))?;
    prop_assert!(v.is_object(), "a chunk is a JSON object: {c}");
    Ok(v)
}

/// How a stream's output may grow with its input.
pub struct StreamBound {
    /// Chunks one event may become (the first chunks of a stream may add the role chunk).
    pub chunks: fn(&StreamEvent) -> usize,
    /// Bytes per chunk beyond twice the event's own size and what earlier events said (the
    /// id and model every chunk repeats): the chunk's fixed fields.
    pub envelope: usize,
    /// Chunks are generated documents (`chat.completion.chunk`), not forwarded ones.
    pub generated: bool,
    /// Usage is computed by the adapter (so it must add up), not the vendor's as it is.
    pub computed_usage: bool,
}

/// Runs `events` through a fresh stream as the host does (stopping at an error or at
/// `done`, then `finish`), checking every output against `bound`.
pub fn run_stream<S: StreamAdapter>(
    ctx: &CallContext,
    events: Vec<StreamEvent>,
    bound: &StreamBound,
) -> Result<(), TestCaseError> {
    let mut s = S::new(ctx);
    // What every chunk may repeat: the model asked for (raw, so up to 6 bytes a character
    // once escaped) or the vendor's id and model, which came in one earlier event.
    let mut carried = 6 * ctx.model.len();
    let mut started = false;
    for ev in events {
        let len = ev.data.len() + ev.event.as_ref().map_or(0, String::len);
        let max_chunks = (bound.chunks)(&ev) + usize::from(!started);
        match s.push(ev) {
            Ok(out) => {
                check_output(&out.events, max_chunks, 2 * len + carried + bound.envelope, bound.generated)?;
                started |= !out.events.is_empty();
                if let Some(u) = out.usage.as_ref().filter(|_| bound.computed_usage) {
                    check_usage(u)?;
                }
                carried = carried.max(6 * ctx.model.len() + len);
                if out.done {
                    break;
                }
            }
            Err(e) => return check_error(&e, len),
        }
    }
    match s.finish() {
        Ok(end) => {
            check_output(&end.events, 1, carried + bound.envelope, bound.generated)?;
            if let Some(u) = end.usage.as_ref().filter(|_| bound.computed_usage) {
                check_usage(u)?;
            }
            Ok(())
        }
        Err(e) => check_error(&e, carried),
    }
}

fn check_output(
    events: &[OutputEvent],
    max_chunks: usize,
    max_bytes: usize,
    generated: bool,
) -> Result<(), TestCaseError> {
    prop_assert!(events.len() <= max_chunks, "{} chunks, at most {max_chunks} expected", events.len());
    for e in events {
        prop_assert!(e.name.is_none(), "a chat chunk has no event name: {e:?}");
        let c = &e.data;
        prop_assert!(c.len() <= max_bytes, "a chunk of {} bytes, at most {max_bytes} expected", c.len());
        let v = check_chunk(c)?;
        if generated {
            prop_assert_eq!(&v["object"], "chat.completion.chunk");
        }
    }
    Ok(())
}

/// `transform_response`'s answer: a status still in the HTTP range, and an OpenAI error
/// body for every failure status.
pub fn check_answer(in_status: u16, out_status: u16, body: &str) -> Result<(), TestCaseError> {
    if (100..600).contains(&in_status) {
        prop_assert!((100..600).contains(&out_status), "status {in_status} became {out_status}");
    }
    if !(200..300).contains(&out_status) {
        let v: Value = serde_json::from_str(body)
            .map_err(|e| TestCaseError::fail(format!("error body not JSON ({e}): {body}")))?;
        prop_assert!(v["error"]["message"].is_string(), "not an OpenAI error body: {body}");
    } else {
        prop_assert!(serde_json::from_str::<Value>(body).is_ok(), "success body not JSON: {body}");
    }
    Ok(())
}

/// The answer of an OpenAI-compatible adapter (OpenAI, Azure) to a vendor response of
/// `status` and `body`: a bounded OpenAI answer in which a success passes through unchanged
/// (an error is rebuilt: its fields once each, in a fixed envelope), or, for a success that
/// does not read, `invalid-upstream`.
pub fn check_passthrough_answer(
    status: u16,
    body: &str,
    out: Result<RelayResponse, AdapterError>,
) -> Result<(), TestCaseError> {
    match out {
        Ok(r) => {
            check_answer(status, r.status, &r.body)?;
            check_class(r.status, r.error_class, None)?;
            if (200..300).contains(&status) {
                prop_assert_eq!(&r.body, body, "a success passes through");
            }
            prop_assert!(r.body.len() <= body.len() + 6 * 515 + 256, "{} bytes from {}", r.body.len(), body.len());
        }
        Err(e) => {
            prop_assert!((200..300).contains(&status) && matches!(e, AdapterError::InvalidUpstream(_)), "{e:?}");
            check_error(&e, body.len())?;
        }
    }
    Ok(())
}

/// Error classes: an error status always has one (the vendor's meaning, or the status's),
/// a status that is no error never has one, and a success has one only when `success_class`
/// allows it (a vendor that reports a filtered answer as a success).
pub fn check_class(
    status: u16,
    class: Option<ErrorClass>,
    success_class: Option<ErrorClass>,
) -> Result<(), TestCaseError> {
    match status {
        400..=599 => prop_assert!(class.is_some(), "error status {status} without a class"),
        200..=299 => prop_assert!(
            class.is_none() || format!("{class:?}") == format!("{success_class:?}"),
            "success {status} classified {class:?}"
        ),
        _ => prop_assert!(class.is_none(), "status {status} is no error but is classified {class:?}"),
    }
    Ok(())
}

/// What a client receives from a stream, as the host drives it: the events, the last usage,
/// and how it ended (the error, or the end's usage).
#[derive(Debug)]
pub struct Sent {
    pub events: Vec<OutputEvent>,
    pub usage: Option<Usage>,
    pub error: Option<String>,
    /// Upstream events the adapter could not read and left out.
    pub skipped: usize,
}

impl Sent {
    fn new() -> Sent {
        Sent { events: vec![], usage: None, error: None, skipped: 0 }
    }

    /// Take one output; whether the stream goes on.
    fn output(&mut self, out: StreamOutput) -> bool {
        self.events.extend(out.events);
        self.skipped += out.skipped.len();
        if out.usage.is_some() {
            self.usage = out.usage;
        }
        !out.done
    }

    fn end(&mut self, end: Result<StreamEnd, AdapterError>) {
        match end {
            Ok(end) => {
                self.events.extend(end.events);
                if end.usage.is_some() {
                    self.usage = end.usage;
                }
            }
            Err(e) => self.error = Some(format!("{e:?}")),
        }
    }

    /// The same bytes for the client (and the same usage for accounting), but for the
    /// `created` time generated chunks take from the clock when their stream starts.
    pub fn same_as(&self, other: &Sent) -> bool {
        let created = blank_created(&format!("{self:?}"));
        created == blank_created(&format!("{other:?}"))
    }
}

/// `text` with the digits after every `created` key (`\"created\":` in a Debug string) blanked.
fn blank_created(text: &str) -> String {
    const KEY: &str = "\\\"created\\\":";
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(KEY) {
        out.push_str(&rest[..at + KEY.len()]);
        rest = rest[at + KEY.len()..].trim_start_matches(|c: char| c.is_ascii_digit());
    }
    out.push_str(rest);
    out
}

/// `events` pushed one at a time (the per-event method, as a 0.1 host drove streams).
pub fn sent_one_by_one<S: StreamAdapter>(ctx: &CallContext, events: Vec<StreamEvent>) -> Sent {
    let mut s = S::new(ctx);
    let mut sent = Sent::new();
    for ev in events {
        match s.push(ev) {
            Ok(out) => {
                if !sent.output(out) {
                    break;
                }
            }
            Err(e) => {
                sent.error = Some(format!("{e:?}"));
                return sent;
            }
        }
    }
    sent.end(s.finish());
    sent
}

/// `events` pushed in batches of the given sizes (the rest in a last batch), through the
/// kit's glue, as the host drives a stream.
pub fn sent_in_batches<S: StreamAdapter>(ctx: &CallContext, mut events: Vec<StreamEvent>, sizes: &[usize]) -> Sent {
    let mut s = Batched::<S>::new(ctx);
    let mut sent = Sent::new();
    let mut batches = Vec::new();
    for &n in sizes {
        if events.is_empty() {
            break;
        }
        let rest = events.split_off(n.clamp(1, events.len()));
        batches.push(std::mem::replace(&mut events, rest));
    }
    if !events.is_empty() {
        batches.push(events);
    }
    for batch in batches {
        match s.push(batch) {
            Ok(out) => {
                if !sent.output(out) {
                    break;
                }
            }
            Err(e) => {
                sent.error = Some(format!("{e:?}"));
                return sent;
            }
        }
    }
    sent.end(s.finish());
    sent
}

/// Batch sizes for [`sent_in_batches`].
pub fn batch_sizes() -> BoxedStrategy<Vec<usize>> {
    prop::collection::vec(1usize..6, 0..12).boxed()
}

/// Batching is invisible: whatever the split of a stream's events into reads, the client
/// receives what it receives when they come one at a time.
pub fn check_batching<S: StreamAdapter>(
    ctx: &CallContext,
    events: Vec<StreamEvent>,
    sizes: &[usize],
) -> Result<(), TestCaseError> {
    let one = sent_one_by_one::<S>(ctx, events.clone());
    let batched = sent_in_batches::<S>(ctx, events, sizes);
    prop_assert!(one.same_as(&batched), "one by one: {one:?}\nin batches {sizes:?}: {batched:?}");
    Ok(())
}
