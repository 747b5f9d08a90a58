use serde_json::json;

use super::stream::*;
use super::*;
use crate::answer::{Batch, End};
use crate::bridge::StreamBridge;
use crate::model::OutputEvent;

fn chat_of(req: Value) -> Value {
    serde_json::from_str(&request(&req.to_string()).unwrap()).unwrap()
}

fn refused(req: Value) -> RelayError {
    request(&req.to_string()).unwrap_err()
}

fn call_of(req: Value) -> Arc<Call> {
    let meta = Arc::new(Meta { id: "resp_1".into(), previous_response_id: Some("resp_0".into()), background: false });
    Arc::new(Call::new(meta, &req.to_string()).unwrap())
}

#[test]
fn a_request_maps_to_chat() {
    let req = json!({
        "model": "m", "instructions": "be brief", "max_output_tokens": 64, "temperature": 0.5, "top_p": 0.9,
        "parallel_tool_calls": false, "user": "u1", "metadata": {"k": "v"}, "store": false, "stream": true,
        "reasoning": {"effort": "low"}, "include": ["reasoning.encrypted_content"], "truncation": "auto",
        "tools": [{"type": "function", "name": "get_weather", "description": "d",
                   "parameters": {"type": "object"}, "strict": true}],
        "tool_choice": {"type": "function", "name": "get_weather"},
        "text": {"format": {"type": "json_schema", "name": "w", "schema": {"type": "object"}, "strict": true}},
        "input": [
            {"role": "developer", "content": "use metric units"},
            {"type": "message", "role": "user", "content": [
                {"type": "input_text", "text": "look"},
                {"type": "input_image", "image_url": "data:image/png;base64,AAAA", "detail": "auto"},
                {"type": "input_image", "image_url": {"url": "https://x/y.png"}}]},
            {"type": "reasoning", "id": "rs_1", "summary": []},
            {"type": "message", "role": "assistant", "id": "msg_1", "status": "completed", "content": [
                {"type": "output_text", "text": "calling", "annotations": []}]},
            {"type": "function_call", "id": "fc_1", "call_id": "call_1", "name": "get_weather",
             "arguments": "{\"city\":\"Paris\"}", "status": "completed"},
            {"type": "function_call", "call_id": "call_2", "name": "get_weather", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "call_1", "output": "{\"temp_c\": 21}"},
            {"type": "function_call_output", "call_id": "call_2", "output": [{"type": "input_text", "text": "n/a"}]},
            {"role": "user", "content": "and now?"},
        ],
    });
    assert_eq!(
        chat_of(req),
        json!({
            "model": "m", "max_tokens": 64, "temperature": 0.5, "top_p": 0.9,
            "tools": [{"type": "function", "function": {"name": "get_weather", "description": "d",
                       "parameters": {"type": "object"}, "strict": true}}],
            "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
            "parallel_tool_calls": false, "user": "u1",
            "stream": true, "stream_options": {"include_usage": true},
            "response_format": {"type": "json_schema",
                                "json_schema": {"name": "w", "schema": {"type": "object"}, "strict": true}},
            "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "system", "content": "use metric units"},
                {"role": "user", "content": [
                    {"type": "text", "text": "look"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
                    {"type": "image_url", "image_url": {"url": "https://x/y.png"}}]},
                {"role": "assistant", "content": "calling", "tool_calls": [
                    {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
                    {"id": "call_2", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}]},
                {"role": "tool", "content": "{\"temp_c\": 21}", "tool_call_id": "call_1"},
                {"role": "tool", "content": "n/a", "tool_call_id": "call_2"},
                {"role": "user", "content": "and now?"},
            ],
        })
    );
    // The simplest request: text in, no stream, the vendor's defaults.
    assert_eq!(
        chat_of(json!({"model": "m", "input": "hi"})),
        json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]})
    );
    let choice = |c: Value| chat_of(json!({"model": "m", "input": "x", "tool_choice": c}))["tool_choice"].clone();
    for mode in ["auto", "none", "required"] {
        assert_eq!(choice(json!(mode)), json!(mode));
    }
    let format =
        |f: Value| chat_of(json!({"model": "m", "input": "x", "text": {"format": f}}))["response_format"].clone();
    assert_eq!(format(json!({"type": "text"})), Value::Null);
    assert_eq!(format(json!({"type": "json_object"})), json!({"type": "json_object"}));
    // A function call with nothing before it is an assistant message of its own; a tool
    // without a schema gets an empty one.
    let chat = chat_of(json!({"model": "m", "tools": [{"type": "function", "name": "t"}], "input": [
        {"type": "function_call", "call_id": "c", "name": "t", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c", "output": "ok"}]}));
    assert_eq!(
        chat["messages"][0],
        json!({"role": "assistant", "content": null, "tool_calls": [
        {"id": "c", "type": "function", "function": {"name": "t", "arguments": "{}"}}]})
    );
    assert_eq!(chat["tools"][0]["function"]["parameters"], json!({"type": "object", "properties": {}}));
}

#[test]
fn what_chat_cannot_carry_is_refused_with_400_naming_it() {
    let cases = [
        (json!({"model": "m", "input": "x", "tools": [{"type": "web_search"}]}), "web_search", "tools[0].type"),
        (
            json!({"model": "m", "input": "x", "tools": [{"type": "function", "name": "f"}, {"type": "file_search", "vector_store_ids": []}]}),
            "file_search",
            "tools[1].type",
        ),
        (
            json!({"model": "m", "input": "x", "tool_choice": {"type": "web_search_preview"}}),
            "web_search_preview",
            "tool_choice",
        ),
        (json!({"model": "m", "input": "x", "tool_choice": "sometimes"}), "sometimes", "tool_choice"),
        (
            json!({"model": "m", "input": [{"type": "item_reference", "id": "msg_1"}]}),
            "item_reference",
            "input[0].type",
        ),
        (json!({"model": "m", "input": [{"role": "tool", "content": "x"}]}), "tool", "input[0].role"),
        (
            json!({"model": "m", "input": [{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}]}),
            "content part",
            "input[0].content[0]",
        ),
        (json!({"model": "m", "input": [{"role": "user"}]}), "content", "input[0].content"),
        (json!({"model": "m", "input": "x", "text": {"format": {"type": "yaml"}}}), "yaml", "text.format.type"),
        (
            json!({"model": "m", "input": "x", "previous_response_id": "resp_0"}),
            "previous_response_id",
            "previous_response_id",
        ),
        (json!({"model": "m", "input": []}), "no input", "input"),
        (json!({"model": "m", "prompt": {"id": "pmpt_1"}}), "prompt", "prompt"),
    ];
    for (req, named, param) in cases {
        let e = refused(req.clone());
        assert_eq!(e.status(), StatusCode::BAD_REQUEST, "{req}");
        assert!(e.message.contains(named), "{req}: {}", e.message);
        assert_eq!(e.param.as_deref(), Some(param), "{req}");
    }
    // A body that is not a Responses request at all.
    let e = refused(json!({"model": "m", "input": 3}));
    assert_eq!(e.status(), StatusCode::BAD_REQUEST);
    assert!(Call::new(Meta::new(), r#"{"model":"m","temperature":"hot"}"#).is_err());
}

fn whole(body: Value) -> Whole {
    Whole { status: StatusCode::OK, body: Bytes::from(body.to_string()), usage: None, retry_after: None }
}

fn answer(call: &Call, completion: Value) -> Value {
    let w = response(whole(completion), call, "m");
    assert_eq!(w.status, StatusCode::OK);
    serde_json::from_slice(&w.body).unwrap()
}

#[test]
fn a_chat_completion_becomes_a_response_object() {
    let call = call_of(json!({"model": "m", "instructions": "be brief", "temperature": 0.5,
        "tools": [{"type": "function", "name": "f", "parameters": {"type": "object"}}], "tool_choice": "auto"}));
    let r = answer(
        &call,
        json!({"id": "chatcmpl-1", "model": "gpt-x", "choices": [{"index": 0, "finish_reason": "tool_calls",
            "message": {"role": "assistant", "content": "calling", "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{\"a\":1}"}}]}}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 5, "prompt_tokens_details": {"cached_tokens": 4},
                      "completion_tokens_details": {"reasoning_tokens": 2}}}),
    );
    assert_eq!(r["id"], "resp_1");
    assert_eq!(r["object"], "response");
    assert_eq!(r["status"], "completed");
    assert_eq!(r["model"], "gpt-x");
    assert_eq!(r["previous_response_id"], "resp_0");
    assert_eq!((r["error"].clone(), r["incomplete_details"].clone()), (Value::Null, Value::Null));
    assert_eq!(r["instructions"], "be brief");
    assert_eq!(r["temperature"], 0.5);
    assert_eq!(r["tool_choice"], "auto");
    assert_eq!(r["tools"][0]["name"], "f");
    assert_eq!(
        (r["parallel_tool_calls"].clone(), r["store"].clone(), r["background"].clone()),
        (json!(true), json!(true), json!(false))
    );
    assert_eq!(r["text"], json!({"format": {"type": "text"}}));
    assert_eq!((r["truncation"].clone(), r["metadata"].clone()), (json!("disabled"), json!({})));
    assert!(r["created_at"].as_u64().unwrap() > 1_700_000_000);
    let out = r["output"].as_array().unwrap();
    assert_eq!(out.len(), 2);
    assert!(out[0]["id"].as_str().unwrap().starts_with("msg_"));
    assert_eq!(out[0]["type"], "message");
    assert_eq!(out[0]["status"], "completed");
    assert_eq!(out[0]["role"], "assistant");
    assert_eq!(
        out[0]["content"],
        json!([{"type": "output_text", "text": "calling", "annotations": [], "logprobs": []}])
    );
    assert!(out[1]["id"].as_str().unwrap().starts_with("fc_"));
    assert_eq!(
        (
            out[1]["type"].clone(),
            out[1]["call_id"].clone(),
            out[1]["name"].clone(),
            out[1]["arguments"].clone(),
            out[1]["status"].clone()
        ),
        (json!("function_call"), json!("call_1"), json!("f"), json!("{\"a\":1}"), json!("completed"))
    );
    assert_eq!(
        r["usage"],
        json!({"input_tokens": 10, "input_tokens_details": {"cached_tokens": 4, "cache_write_tokens": 0}, "output_tokens": 5,
               "output_tokens_details": {"reasoning_tokens": 2}, "total_tokens": 15})
    );
    // Cut by the token limit: incomplete, and why.
    let r = answer(
        &call,
        json!({"choices": [{"finish_reason": "length", "message": {"role": "assistant", "content": "abc"}}]}),
    );
    assert_eq!(
        (r["status"].clone(), r["incomplete_details"].clone()),
        (json!("incomplete"), json!({"reason": "max_output_tokens"}))
    );
    assert_eq!((r["model"].clone(), r["output"][0]["status"].clone()), (json!("m"), json!("incomplete")));
    // A refusal is its own content part.
    let r = answer(
        &call,
        json!({"choices": [{"finish_reason": "stop", "message": {"role": "assistant", "content": null, "refusal": "no"}}]}),
    );
    assert_eq!(r["output"][0]["content"], json!([{"type": "refusal", "refusal": "no"}]));
    // A vendor error passes in OpenAI's shape; an unreadable completion is a 502 in it.
    let error = Whole { status: StatusCode::TOO_MANY_REQUESTS, ..whole(json!({"error": {"message": "slow down"}})) };
    assert_eq!(response(error, &call, "m").status, StatusCode::TOO_MANY_REQUESTS);
    let bad = response(whole(json!({"choices": []})), &call, "m");
    assert_eq!(bad.status, StatusCode::BAD_GATEWAY);
    let v: Value = serde_json::from_slice(&bad.body).unwrap();
    assert!(v["error"]["message"].as_str().unwrap().contains("no choices"), "{v}");
}

#[test]
fn a_native_response_gets_the_relays_id() {
    let call = call_of(json!({"model": "m"}));
    let vendor = json!({"id": "resp_vendor", "object": "response", "status": "completed", "output": [], "previous_response_id": null});
    let w = native_response(whole(vendor), &call);
    let v: Value = serde_json::from_slice(&w.body).unwrap();
    assert_eq!(
        (v["id"].clone(), v["previous_response_id"].clone(), v["status"].clone()),
        (json!("resp_1"), json!("resp_0"), json!("completed"))
    );
    let error = Whole { status: StatusCode::BAD_REQUEST, ..whole(json!({"error": {"message": "bad"}})) };
    assert_eq!(native_response(error, &call).body, Bytes::from(json!({"error": {"message": "bad"}}).to_string()));
}

fn chunk(v: Value) -> OutputEvent {
    OutputEvent { name: None, data: v.to_string() }
}

fn text_and_tool_chunks() -> Vec<OutputEvent> {
    let c = |delta: Value, finish: Value| {
        chunk(json!({"id": "chatcmpl-9", "object": "chat.completion.chunk", "model": "gpt-x",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}))
    };
    vec![
        c(json!({"role": "assistant", "content": ""}), Value::Null),
        c(json!({"content": "Hel"}), Value::Null),
        c(json!({"content": "lo"}), Value::Null),
        c(
            json!({"tool_calls": [{"index": 0, "id": "call_1", "type": "function", "function": {"name": "f", "arguments": ""}}]}),
            Value::Null,
        ),
        c(json!({"tool_calls": [{"index": 0, "function": {"arguments": "{\"a\":"}}]}), Value::Null),
        c(json!({"tool_calls": [{"index": 0, "function": {"arguments": "1}"}}]}), Value::Null),
        c(json!({}), json!("tool_calls")),
        chunk(json!({"id": "chatcmpl-9", "choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": 3}})),
    ]
}

/// The events of a stream of `chunks` ending with `end` (in one batch), with the closing
/// events a cut stream gets (`StreamBridge::failed`), as (name, JSON).
fn run(s: &mut dyn StreamBridge, chunks: Vec<OutputEvent>, end: End) -> Vec<(String, Value)> {
    let mut batch = Batch { events: chunks, end: Some(end) };
    s.apply(&mut batch).unwrap();
    if let Some(End::Failed { error, .. }) = &batch.end {
        s.failed(error, &mut batch.events);
    }
    batch.events.into_iter().map(|e| (e.name.unwrap(), serde_json::from_str(&e.data).unwrap())).collect()
}

fn names(events: &[(String, Value)]) -> Vec<&str> {
    events.iter().map(|(n, _)| n.as_str()).collect()
}

/// Every event: `type` is its name, `sequence_number` counts from 0 by 1, and every
/// `response` it carries is the call's.
fn well_formed(events: &[(String, Value)]) {
    for (i, (name, v)) in events.iter().enumerate() {
        assert_eq!(v["type"], name.as_str());
        assert_eq!(v["sequence_number"], i as u64, "{name}");
        if let Some(r) = v.get("response") {
            assert_eq!(r["id"], "resp_1", "{name}");
        }
    }
}

#[test]
fn a_chat_stream_becomes_the_typed_event_sequence() {
    let call = call_of(json!({"model": "m", "stream": true}));
    let events = run(&mut Stream::new(call.clone(), "m"), text_and_tool_chunks(), End::Done { usage: None });
    well_formed(&events);
    assert_eq!(
        names(&events),
        [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.content_part.added",
            "response.output_text.delta",
            "response.output_text.delta",
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.output_item.added",
            "response.function_call_arguments.delta",
            "response.function_call_arguments.delta",
            "response.function_call_arguments.done",
            "response.output_item.done",
            "response.completed",
        ]
    );
    let created = &events[0].1["response"];
    assert_eq!(
        (created["status"].clone(), created["output"].clone(), created["model"].clone()),
        (json!("in_progress"), json!([]), json!("gpt-x"))
    );
    let msg_id = events[2].1["item"]["id"].as_str().unwrap().to_string();
    assert_eq!(
        events[2].1["item"],
        json!({"type": "message", "id": msg_id, "status": "in_progress", "role": "assistant", "content": []})
    );
    assert_eq!(events[3].1["part"], json!({"type": "output_text", "text": "", "annotations": [], "logprobs": []}));
    assert_eq!(
        (events[4].1["delta"].clone(), events[4].1["item_id"].clone(), events[4].1["content_index"].clone()),
        (json!("Hel"), json!(msg_id), json!(0))
    );
    assert_eq!(events[6].1["text"], "Hello");
    assert_eq!(events[8].1["item"]["content"][0]["text"], "Hello");
    assert_eq!(events[8].1["item"]["status"], "completed");
    let fc = &events[9].1["item"];
    assert_eq!(
        (
            fc["type"].clone(),
            fc["call_id"].clone(),
            fc["name"].clone(),
            fc["arguments"].clone(),
            events[9].1["output_index"].clone()
        ),
        (json!("function_call"), json!("call_1"), json!("f"), json!(""), json!(1))
    );
    assert_eq!(events[12].1["arguments"], "{\"a\":1}");
    let done = &events[14].1["response"];
    assert_eq!(done["status"], "completed");
    assert_eq!(done["output"][0]["content"][0]["text"], "Hello");
    assert_eq!(done["output"][1]["arguments"], "{\"a\":1}");
    assert_eq!(done["usage"]["total_tokens"], 10);
    // The token limit: `response.incomplete`, with why.
    let c = |delta: Value, finish: Value| {
        chunk(json!({"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}))
    };
    let cut = vec![c(json!({"content": "ab"}), Value::Null), c(json!({}), json!("length"))];
    let events = run(&mut Stream::new(call.clone(), "m"), cut, End::Done { usage: None });
    well_formed(&events);
    let (name, last) = events.last().unwrap();
    assert_eq!(name, "response.incomplete");
    assert_eq!(last["response"]["incomplete_details"]["reason"], "max_output_tokens");
    assert_eq!(last["response"]["output"][0]["status"], "incomplete");
    // An empty clean stream is still a whole response; what is no chunk ends the stream.
    let empty = run(&mut Stream::new(call.clone(), "m"), vec![], End::Done { usage: None });
    assert_eq!(names(&empty), ["response.created", "response.in_progress", "response.completed"]);
    let mut s = Stream::new(call, "m");
    assert!(s.apply(&mut Batch { events: vec![OutputEvent { name: None, data: "[".into() }], end: None }).is_err());
}

#[test]
fn a_cut_stream_ends_with_response_failed_never_completed() {
    let call = call_of(json!({"model": "m", "stream": true}));
    let error = || RelayError::bad_upstream("the vendor cut the stream");
    let events = run(
        &mut Stream::new(call.clone(), "m"),
        text_and_tool_chunks()[..5].to_vec(),
        End::Failed { error: error(), sent: true },
    );
    well_formed(&events);
    assert!(names(&events).iter().all(|n| *n != "response.completed"), "{events:?}");
    let (name, last) = events.last().unwrap();
    assert_eq!(name, "response.failed");
    let r = &last["response"];
    assert_eq!(r["status"], "failed");
    assert_eq!(r["error"], json!({"code": "server_error", "message": "the vendor cut the stream"}));
    assert_eq!(r["output"][0]["status"], "completed");
    assert_eq!(
        (r["output"][1]["status"].clone(), r["output"][1]["arguments"].clone()),
        (json!("incomplete"), json!("{\"a\":"))
    );
    // Cut before any chunk: the client still sees `response.created` first.
    let events = run(&mut Stream::new(call.clone(), "m"), vec![], End::Failed { error: error(), sent: false });
    assert_eq!(names(&events), ["response.created", "response.in_progress", "response.failed"]);
    // After the terminal event nothing more is added.
    let mut s = Stream::new(call, "m");
    let done = run(&mut s, vec![], End::Done { usage: None });
    let mut more = Vec::new();
    s.failed(&error(), &mut more);
    assert!(more.is_empty() && done.len() == 3);
}

#[test]
fn native_events_get_the_relays_id_and_a_cut_gets_response_failed() {
    let call = call_of(json!({"model": "m", "stream": true}));
    let ev = |v: Value| OutputEvent { name: v["type"].as_str().map(str::to_string), data: v.to_string() };
    let vendor = |status: &str| json!({"id": "resp_vendor", "object": "response", "status": status, "output": [], "model": "gpt-x"});
    let events = vec![
        ev(json!({"type": "response.created", "sequence_number": 0, "response": vendor("in_progress")})),
        ev(
            json!({"type": "response.output_text.delta", "sequence_number": 1, "item_id": "msg_1", "output_index": 0, "content_index": 0, "delta": "\"response\":{", "logprobs": []}),
        ),
    ];
    let mut native = Native::new(call.clone());
    let out = run(&mut native, events.clone(), End::Failed { error: RelayError::bad_upstream("cut"), sent: true });
    well_formed(&out);
    assert_eq!(out[0].1["response"]["previous_response_id"], "resp_0");
    assert_eq!(out[1].1, serde_json::from_str::<Value>(&events[1].data).unwrap(), "passed as sent");
    let (name, failed) = out.last().unwrap();
    assert_eq!(name, "response.failed");
    assert_eq!(
        (failed["response"]["status"].clone(), failed["response"]["error"]["code"].clone()),
        (json!("failed"), json!("server_error"))
    );
    assert_eq!(failed["response"]["model"], "gpt-x");
    // The vendor's own terminal event is the end: nothing is added after it.
    let mut with_end = events;
    with_end.push(ev(json!({"type": "response.failed", "sequence_number": 2, "response": vendor("failed")})));
    let out =
        run(&mut Native::new(call.clone()), with_end, End::Failed { error: RelayError::bad_upstream("x"), sent: true });
    assert_eq!(out.len(), 3);
    assert_eq!(out[2].1["response"]["id"], "resp_1");
    // Cut before any event: `response.created` from the request, then `response.failed`.
    let out = run(&mut Native::new(call), vec![], End::Failed { error: RelayError::bad_upstream("x"), sent: false });
    well_formed(&out);
    assert_eq!(names(&out), ["response.created", "response.failed"]);
    assert_eq!(out[0].1["response"]["model"], "m");
}

/// The per-event cost of the stream conversion, printed (not asserted): run with
/// `cargo test --release -p relay --lib bridge::responses::tests::per_event_cost -- --nocapture`.
#[test]
fn per_event_cost() {
    let text = |t: &str| {
        chunk(json!({"id": "chatcmpl-9", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o",
        "choices": [{"index": 0, "delta": {"content": t}, "finish_reason": null}]}))
    };
    let chunks: Vec<OutputEvent> = (0..20).map(|i| text(&format!("word{i} "))).collect();
    let rounds = 2_000;
    let call = call_of(json!({"model": "gpt-4o", "stream": true}));
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
        let mut s = Stream::new(call.clone(), "gpt-4o");
        let mut batch = Batch { events: std::mem::take(input), end: Some(End::Done { usage: None }) };
        s.apply(&mut batch).unwrap();
        events += batch.events.len();
    }
    let per_chunk = (cpu() - started).as_nanos() as f64 / (rounds * chunks.len()) as f64;
    println!(
        "responses bridge: {per_chunk:.0} ns of CPU per chat chunk ({events} events out of {} chunks)",
        rounds * chunks.len()
    );
}
