use serde_json::json;

use super::stream::*;
use super::*;
use crate::answer::End;
use crate::bridge::StreamBridge;

fn chat_of(req: Value) -> Value {
    serde_json::from_str(&request(&req.to_string()).unwrap()).unwrap()
}

#[test]
fn a_request_maps_to_chat() {
    let req = json!({
        "model": "m", "max_tokens": 64, "system": [{"type": "text", "text": "be brief"}],
        "stop_sequences": ["END"], "temperature": 0.5, "top_p": 0.9, "metadata": {"user_id": "u1"},
        "stream": true, "thinking": {"type": "enabled", "budget_tokens": 10},
        "tools": [{"name": "get_weather", "description": "d", "input_schema": {"type": "object"}}],
        "tool_choice": {"type": "any", "disable_parallel_tool_use": true},
        "messages": [
            {"role": "user", "content": [
                {"type": "text", "text": "look", "cache_control": {"type": "ephemeral"}},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}},
                {"type": "image", "source": {"type": "url", "url": "https://x/y.png"}}]},
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "hm", "signature": "s"},
                {"type": "text", "text": "calling"},
                {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}}]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": "{\"temp_c\": 21}"}]},
                {"type": "text", "text": "and now?"}]},
        ],
    });
    let chat = chat_of(req);
    assert_eq!(
        chat,
        json!({
            "model": "m", "max_tokens": 64, "temperature": 0.5, "top_p": 0.9, "stop": ["END"],
            "tools": [{"type": "function", "function": {"name": "get_weather", "description": "d", "parameters": {"type": "object"}}}],
            "tool_choice": "required", "parallel_tool_calls": false, "user": "u1",
            "stream": true, "stream_options": {"include_usage": true},
            "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": [
                    {"type": "text", "text": "look"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
                    {"type": "image_url", "image_url": {"url": "https://x/y.png"}}]},
                {"role": "assistant", "content": "calling", "tool_calls": [
                    {"id": "toolu_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]},
                {"role": "tool", "content": "{\"temp_c\": 21}", "tool_call_id": "toolu_1"},
                {"role": "user", "content": "and now?"},
            ],
        })
    );
    let choice = |c: Value| {
        chat_of(json!({"model": "m", "max_tokens": 1, "messages": [{"role": "user", "content": "x"}],
        "tools": [{"name": "t", "input_schema": {"type": "object"}}], "tool_choice": c}))["tool_choice"]
            .clone()
    };
    assert_eq!(choice(json!({"type": "auto"})), json!("auto"));
    assert_eq!(choice(json!({"type": "none"})), json!("none"));
    assert_eq!(choice(json!({"type": "tool", "name": "t"})), json!({"type": "function", "function": {"name": "t"}}));
    // Refused: a server tool, a document block; a body that is no Messages request.
    let e = request(
        &json!({"model": "m", "max_tokens": 1, "messages": [{"role": "user", "content": "x"}],
        "tools": [{"type": "web_search_20250305", "name": "web_search"}]})
        .to_string(),
    )
    .unwrap_err();
    assert!(e.message.contains("web_search_20250305"), "{}", e.message);
    let e = request(
        &json!({"model": "m", "max_tokens": 1, "messages": [{"role": "user", "content": [
        {"type": "document", "source": {}}]}]})
        .to_string(),
    )
    .unwrap_err();
    assert_eq!(e.status(), StatusCode::BAD_REQUEST);
    assert!(request(r#"{"model":"m","max_tokens":1,"messages":"x"}"#).is_err());
}

fn whole(status: u16, body: Value) -> Whole {
    Whole {
        status: StatusCode::from_u16(status).unwrap(),
        body: Bytes::from(body.to_string()),
        usage: None,
        retry_after: None,
    }
}

fn answer(w: Whole) -> (u16, Value) {
    let w = response(w, "claude-x");
    (w.status.as_u16(), serde_json::from_slice(&w.body).unwrap())
}

#[test]
fn a_completion_maps_to_a_message_and_errors_to_anthropics_shape() {
    let completion = json!({"id": "chatcmpl-1", "model": "m", "choices": [{"index": 0, "finish_reason": "tool_calls",
        "message": {"role": "assistant", "content": "calling", "tool_calls": [{"id": "call_1", "type": "function",
        "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]}}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15, "prompt_tokens_details": {"cached_tokens": 4}}});
    let (status, m) = answer(whole(200, completion));
    assert_eq!(status, 200);
    assert_eq!(
        m,
        json!({"id": "msg_chatcmpl-1", "type": "message", "role": "assistant", "model": "m",
            "content": [{"type": "text", "text": "calling"},
                {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris"}}],
            "stop_reason": "tool_use", "stop_sequence": null,
            "usage": {"input_tokens": 6, "output_tokens": 5, "cache_creation_input_tokens": null, "cache_read_input_tokens": 4}})
    );
    for (finish, stop) in [("stop", "end_turn"), ("length", "max_tokens"), ("content_filter", "refusal")] {
        let c = json!({"choices": [{"finish_reason": finish, "message": {"content": "x"}}]});
        assert_eq!(answer(whole(200, c)).1["stop_reason"], stop);
    }
    // A stop string the vendor names (vLLM's `stop_reason`, SGLang's `matched_stop`) is a
    // stop sequence; a stop token's number, or none, is the end of the turn.
    for (choice, stop, seq) in [
        (json!({"stop_reason": "END"}), "stop_sequence", json!("END")),
        (json!({"matched_stop": "###"}), "stop_sequence", json!("###")),
        (json!({"stop_reason": 128009}), "end_turn", Value::Null),
        (json!({"stop_reason": null}), "end_turn", Value::Null),
    ] {
        let mut c = json!({"finish_reason": "stop", "message": {"content": "x"}});
        c.as_object_mut().unwrap().extend(choice.as_object().unwrap().clone());
        let m = answer(whole(200, json!({"choices": [c]}))).1;
        assert_eq!((&m["stop_reason"], &m["stop_sequence"]), (&json!(stop), &seq), "{m}");
    }
    let (status, e) = answer(whole(429, json!({"error": {"message": "slow down", "type": "rate_limit_error"}})));
    assert_eq!(
        (status, e),
        (429, json!({"type": "error", "error": {"type": "rate_limit_error", "message": "slow down"}}))
    );
    let (status, e) = answer(whole(200, json!({"choices": []})));
    assert_eq!((status, e["error"]["type"].as_str()), (502, Some("api_error")));
}

fn chunk(v: Value) -> OutputEvent {
    OutputEvent { name: None, data: v.to_string() }
}

fn run(chunks: Vec<OutputEvent>, end: End) -> Vec<(String, Value)> {
    let mut s = Stream::new("claude-x");
    let mut batch = Batch { events: chunks, end: Some(end) };
    s.apply(&mut batch).unwrap();
    batch.events.into_iter().map(|e| (e.name.unwrap(), serde_json::from_str(&e.data).unwrap())).collect()
}

fn text_and_tool_chunks() -> Vec<OutputEvent> {
    let base = |delta: Value, finish: Value| {
        chunk(
            json!({"id": "chatcmpl-9", "model": "m", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}),
        )
    };
    vec![
        base(json!({"role": "assistant", "content": ""}), Value::Null),
        base(json!({"content": "Hel"}), Value::Null),
        base(json!({"content": "lo"}), Value::Null),
        base(
            json!({"tool_calls": [{"index": 0, "id": "call_1", "type": "function", "function": {"name": "f", "arguments": ""}}]}),
            Value::Null,
        ),
        base(json!({"tool_calls": [{"index": 0, "function": {"arguments": "{\"a\":"}}]}), Value::Null),
        base(json!({"tool_calls": [{"index": 0, "function": {"arguments": "1}"}}]}), Value::Null),
        base(json!({}), json!("tool_calls")),
        chunk(
            json!({"id": "chatcmpl-9", "choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}}),
        ),
    ]
}

#[test]
fn a_chunk_stream_becomes_messages_events() {
    let events = run(text_and_tool_chunks(), End::Done { usage: None });
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "message_start",
            "ping",
            "content_block_start",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "content_block_start",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop",
        ]
    );
    assert_eq!(events[0].1["message"]["id"], "msg_chatcmpl-9");
    assert_eq!(events[1].1, json!({"type": "ping"}));
    assert_eq!(
        events[2].1,
        json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}})
    );
    assert_eq!(events[3].1["delta"], json!({"type": "text_delta", "text": "Hel"}));
    assert_eq!(
        events[6].1,
        json!({"type": "content_block_start", "index": 1, "content_block": {"type": "tool_use", "id": "call_1", "name": "f", "input": {}}})
    );
    assert_eq!(events[8].1["delta"], json!({"type": "input_json_delta", "partial_json": "1}"}));
    assert_eq!(events[9].1, json!({"type": "content_block_stop", "index": 1}));
    assert_eq!(
        events[10].1,
        json!({"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": null},
            "usage": {"input_tokens": 7, "output_tokens": 3, "cache_creation_input_tokens": null, "cache_read_input_tokens": null}})
    );
    // A cut stream gets no closing events: its consumer writes the error event.
    let cut =
        run(text_and_tool_chunks()[..3].to_vec(), End::Failed { error: RelayError::bad_upstream("x"), sent: false });
    assert!(cut.iter().all(|(n, _)| n != "message_stop" && n != "message_delta"), "{cut:?}");
    // An empty clean stream is still a whole message.
    let empty = run(vec![], End::Done { usage: None });
    let names: Vec<&str> = empty.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["message_start", "ping", "message_delta", "message_stop"]);
    // A stream whose vendor names the stop string ends with it.
    let stopped = run(
        vec![
            chunk(json!({"id": "c", "choices": [{"index": 0, "delta": {"content": "a"}, "finish_reason": null}]})),
            chunk(
                json!({"id": "c", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop", "stop_reason": "END"}]}),
            ),
        ],
        End::Done { usage: None },
    );
    let delta = &stopped.iter().find(|(n, _)| n == "message_delta").expect("message_delta").1["delta"];
    assert_eq!(delta, &json!({"stop_reason": "stop_sequence", "stop_sequence": "END"}));
    // What is no chunk ends the stream.
    let mut s = Stream::new("m");
    assert!(s.apply(&mut Batch { events: vec![OutputEvent { name: None, data: "[".into() }], end: None }).is_err());
}

/// The per-event cost of the stream conversion, printed (not asserted): run with
/// `cargo test --release -p relay --lib bridge::messages::tests::per_event_cost -- --nocapture`.
#[test]
fn per_event_cost() {
    let text = |t: &str| {
        chunk(json!({"id": "chatcmpl-9", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o",
        "choices": [{"index": 0, "delta": {"content": t}, "finish_reason": null}]}))
    };
    let chunks: Vec<OutputEvent> = (0..20).map(|i| text(&format!("word{i} "))).collect();
    let rounds = 2_000;
    // The input is made before the clock starts: only the conversion is timed.
    let mut inputs: Vec<Vec<OutputEvent>> = (0..rounds).map(|_| chunks.clone()).collect();
    // CPU time of this thread: on a loaded machine wall time mostly measures the others.
    let cpu = || {
        let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
        std::time::Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
    };
    let started = cpu();
    let mut events = 0;
    for input in &mut inputs {
        let mut s = Stream::new("gpt-4o");
        let mut batch = Batch { events: std::mem::take(input), end: Some(End::Done { usage: None }) };
        s.apply(&mut batch).unwrap();
        events += batch.events.len();
    }
    let per_chunk = (cpu() - started).as_nanos() as f64 / (rounds * chunks.len()) as f64;
    println!(
        "messages bridge: {per_chunk:.0} ns of CPU per chat chunk ({events} events out of {} chunks)",
        rounds * chunks.len()
    );
}
