//! Properties of the Azure OpenAI adapter: any body passes through to a path whose
//! deployment and version stay one encoded segment each, any vendor answer becomes a
//! bounded OpenAI answer or a contract error, and any stream is forwarded one JSON line per
//! chunk. `PROPTEST_CASES` sets the cases.

#[path = "../../kit/tests/support/mod.rs"]
mod support;

use azure_adapter::Azure;
use proptest::prelude::*;
use relay_plugin_kit::{Adapter, Endpoint, UpstreamResponse};
use support::*;

fn endpoint() -> impl Strategy<Value = Endpoint> {
    prop_oneof![Just(Endpoint::ChatCompletions), Just(Endpoint::Embeddings)]
}

proptest! {
    #[test]
    fn requests_pass_through_to_one_deployment(
        ctx in (endpoint(), any::<bool>()).prop_flat_map(|(e, s)| context(e, s)),
        body in prop_oneof![body(chat_request()), body(embeddings_request())],
    ) {
        let r = Azure::transform_request(&ctx, &body).map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
        prop_assert_eq!(&r.body, &body);
        let rest = r.path.strip_prefix("/openai/deployments/").ok_or_else(|| TestCaseError::fail(r.path.clone()))?;
        let (deployment, rest) = rest.split_once('/').ok_or_else(|| TestCaseError::fail(r.path.clone()))?;
        let (operation, version) = rest.split_once("?api-version=").ok_or_else(|| TestCaseError::fail(r.path.clone()))?;
        prop_assert!(operation == "chat/completions" || operation == "embeddings", "{}", r.path);
        for segment in [deployment, version] {
            prop_assert!(!segment.is_empty(), "{}", r.path);
            prop_assert!(segment.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-%".contains(&b)), "{}", r.path);
        }
        let longest = ctx.settings.iter().map(|(_, v)| v.len()).chain([ctx.model.len()]).max().unwrap_or(0);
        prop_assert!(r.path.len() <= 6 * longest + 96, "{} bytes of path", r.path.len());
        prop_assert!(r.headers.len() <= 1);
    }

    #[test]
    fn answers_are_bounded_openai_answers(
        ctx in context(Endpoint::ChatCompletions, false),
        status in status(),
        body in prop_oneof![body(openai_completion()), error_body()],
    ) {
        let resp = UpstreamResponse { status, headers: vec![], body: body.clone() };
        check_passthrough_answer(status, &body, Azure::transform_response(&ctx, resp))?;
    }

    #[test]
    fn streams_forward_one_line_per_chunk(
        ctx in context(Endpoint::ChatCompletions, true),
        events in events(openai_event_data(), 16),
    ) {
        let bound = StreamBound { chunks: |_| 1, envelope: 0, generated: false, computed_usage: false };
        run_stream::<<Azure as Adapter>::Stream>(&ctx, events, &bound)?;
    }
}
