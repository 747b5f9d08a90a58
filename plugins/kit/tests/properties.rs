//! Properties of the kit's helpers every adapter builds on: URL segments, error bodies,
//! request parsing, chunk building and the OpenAI passthrough stream. Arbitrary input never
//! panics and output stays within a bound of the input. `PROPTEST_CASES` sets the cases.

mod support;

use proptest::prelude::*;
use relay_plugin_kit::error::{openai_error_body, truncate};
use relay_plugin_kit::openai::{ChatRequest, ChunkBuilder, PassthroughStream, usage};
use relay_plugin_kit::{AdapterError, Endpoint, encode_segment};
use serde_json::Value;
use support::*;

/// How much of a non-JSON vendor body an error quotes (the kit's `MAX_QUOTED_BODY`), each
/// byte at most 6 once escaped (`\u0001`).
const QUOTED: usize = 6 * (512 + 3);

proptest! {
    #[test]
    fn segments_are_one_encoded_segment(s in "\\PC{0,40}|.{0,40}") {
        let e = encode_segment(&s);
        prop_assert!(e.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-%".contains(&b)), "{e}");
        prop_assert!(e.len() <= 3 * s.len());
        // It decodes back to the input.
        let mut bytes = Vec::new();
        let mut it = e.bytes();
        while let Some(b) = it.next() {
            if b == b'%' {
                let hex: String = it.by_ref().take(2).map(char::from).collect();
                bytes.push(u8::from_str_radix(&hex, 16).map_err(|e| TestCaseError::fail(e.to_string()))?);
            } else {
                bytes.push(b);
            }
        }
        prop_assert_eq!(String::from_utf8(bytes).ok(), Some(s));
    }

    #[test]
    fn truncation_is_a_prefix_on_a_char_boundary(s in "\\PC{0,64}", max in 0usize..80) {
        let t = truncate(&s, max);
        prop_assert!(t.len() <= max + 3);
        let kept = t.strip_suffix("...").filter(|_| s.len() > max).unwrap_or(t.as_str());
        prop_assert!(s.starts_with(kept));
    }

    #[test]
    fn vendor_errors_become_bounded_openai_errors(status in status(), body in error_body()) {
        let out = openai_error_body(status, &body);
        let v: Value = serde_json::from_str(&out).map_err(|e| TestCaseError::fail(format!("{e}: {out}")))?;
        prop_assert!(v["error"]["message"].is_string(), "{out}");
        prop_assert!(out.len() <= body.len() + QUOTED + 256, "{} bytes from {}", out.len(), body.len());
    }

    #[test]
    fn chat_requests_parse_or_are_refused(body in body(chat_request())) {
        match ChatRequest::parse(&body) {
            Ok(r) => {
                // Every refusal names a field, never more than the body holds.
                if let Err(e) = r.reject_extra(&[], "Vendor") {
                    check_error(&e, body.len())?;
                }
            }
            Err(e) => {
                prop_assert!(matches!(e, AdapterError::InvalidRequest(_)), "{e:?}");
                check_error(&e, body.len())?;
            }
        }
    }

    #[test]
    fn chunks_are_single_line_json_within_their_fields(
        id in text(), model in text(), content in text(), index in any::<u32>(), include_usage in any::<bool>(),
        prompt in any::<u64>(), completion in any::<u64>(),
    ) {
        let b = ChunkBuilder { id: id.clone(), created: u64::MAX, model: model.clone(), include_usage };
        // Each field at most 6 bytes a byte once escaped, in a fixed envelope.
        let max = 6 * (id.len() + model.len() + 2 * content.len()) + 512;
        let u = usage(prompt, completion);
        check_usage(&u)?;
        for c in [
            b.role(),
            b.content(&content),
            b.tool_call_start(index, &content, &content),
            b.tool_call_arguments(index, &content),
            b.finish(&content),
            b.usage(&u),
        ] {
            let v = check_chunk(&c)?;
            prop_assert_eq!(&v["object"], "chat.completion.chunk");
            prop_assert!(c.len() <= max, "{} bytes, at most {max}", c.len());
        }
    }

    #[test]
    fn the_passthrough_stream_forwards_chunks_as_one_line_each(
        ctx in context(Endpoint::ChatCompletions, true),
        events in events(openai_event_data(), 12),
    ) {
        let bound = StreamBound { chunks: |_| 1, envelope: 0, generated: false, computed_usage: false };
        run_stream::<PassthroughStream>(&ctx, events.clone(), &bound)?;
        // Forwarded chunks are the vendor's documents, unchanged as JSON.
        let mut s = <PassthroughStream as relay_plugin_kit::StreamAdapter>::new(&ctx);
        for ev in events {
            let data = ev.data.clone();
            let Ok(out) = relay_plugin_kit::StreamAdapter::push(&mut s, ev) else { break };
            for c in out.data() {
                let sent: Value = serde_json::from_str(c).map_err(|e| TestCaseError::fail(e.to_string()))?;
                let got: Value = serde_json::from_str(&data).map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert_eq!(sent, got);
            }
            if out.done {
                break;
            }
        }
    }

    #[test]
    fn an_unreadable_chunk_changes_nothing_but_the_skip_count(
        ctx in context(Endpoint::ChatCompletions, true),
        events in events(openai_event_data(), 12),
        at in any::<prop::sample::Index>(),
        garbage in prop::sample::select(&["{not json", "<html>", "[1,2]", "\"x\"", "{\"choices\": [", "null"][..]),
    ) {
        let clean = sent_one_by_one::<PassthroughStream>(&ctx, events.clone());
        let mut with = events;
        let i = at.index(with.len() + 1);
        with.insert(i, relay_plugin_kit::StreamEvent { event: None, data: garbage.to_string() });
        let mut got = sent_one_by_one::<PassthroughStream>(&ctx, with);
        prop_assert!(got.skipped <= clean.skipped + 1, "{got:?}");
        got.skipped = clean.skipped;
        prop_assert!(got.same_as(&clean), "with {garbage:?} at {i}: {got:?}\nwithout: {clean:?}");
    }

    #[test]
    fn the_passthrough_stream_is_the_same_in_batches(
        ctx in context(Endpoint::ChatCompletions, true),
        events in events(openai_event_data(), 16),
        sizes in batch_sizes(),
    ) {
        check_batching::<PassthroughStream>(&ctx, events, &sizes)?;
    }
}
