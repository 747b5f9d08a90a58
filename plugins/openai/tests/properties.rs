//! Properties of the OpenAI-compatible adapter: any request body passes through unchanged,
//! any vendor answer becomes a bounded OpenAI answer or a contract error, and any stream
//! is forwarded one JSON line per chunk. `PROPTEST_CASES` sets the cases.

#[path = "../../kit/tests/support/mod.rs"]
mod support;

use openai_adapter::OpenAi;
use proptest::prelude::*;
use relay_plugin_kit::{Adapter, Endpoint, UpstreamResponse};
use support::*;

fn endpoint() -> impl Strategy<Value = Endpoint> {
    prop_oneof![Just(Endpoint::ChatCompletions), Just(Endpoint::Embeddings)]
}

proptest! {
    #[test]
    fn requests_pass_through(
        ctx in (endpoint(), any::<bool>()).prop_flat_map(|(e, s)| context(e, s)),
        body in prop_oneof![body(chat_request()), body(embeddings_request())],
    ) {
        let r = OpenAi::transform_request(&ctx, &body).map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
        prop_assert_eq!(&r.body, &body);
        prop_assert!(r.path == "/chat/completions" || r.path == "/embeddings");
        prop_assert!(r.headers.len() <= 3);
        for h in &r.headers {
            prop_assert!(h.value.len() <= ctx.settings.iter().map(|(_, v)| v.len()).sum::<usize>() + 32);
        }
    }

    #[test]
    fn answers_are_bounded_openai_answers(
        ctx in context(Endpoint::ChatCompletions, false),
        status in status(),
        body in prop_oneof![body(openai_completion()), error_body()],
    ) {
        let resp = UpstreamResponse { status, headers: vec![], body: body.clone() };
        check_passthrough_answer(status, &body, OpenAi::transform_response(&ctx, resp))?;
    }

    #[test]
    fn streams_forward_one_line_per_chunk(
        ctx in context(Endpoint::ChatCompletions, true),
        events in events(openai_event_data(), 16),
    ) {
        let bound = StreamBound { chunks: |_| 1, envelope: 0, generated: false, computed_usage: false };
        run_stream::<<OpenAi as Adapter>::Stream>(&ctx, events, &bound)?;
    }

    #[test]
    fn streams_are_the_same_in_batches(
        ctx in context(Endpoint::ChatCompletions, true),
        events in events(openai_event_data(), 16),
        sizes in batch_sizes(),
    ) {
        check_batching::<<OpenAi as Adapter>::Stream>(&ctx, events, &sizes)?;
    }
}
