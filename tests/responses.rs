//! The OpenAI Responses API (`/v1/responses`) through every shipped adapter, driven by the
//! official OpenAI Python SDK (tests/sdk/responses_check.py): create plain and streamed, tools
//! and a tool-output turn, previous_response_id, retrieve, input_items, delete, background
//! mode (poll, a cut stream resumed with starting_after, cancel twice). The openai adapter
//! passes the body through natively (the vendor gets what the client sent, fields the relay
//! does not know included); every other adapter is bridged through chat completions by the
//! host. The mocks check what each vendor received. The SDK's venv is made as for
//! tests/sdk.rs (set `RELAY_SKIP_SDK=1` to skip on a machine without Python; never honoured
//! under CI).

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use demo_upstream::{Received, Vendor};
use relay_tests::*;

const PROMPT: &str = "Hello there";
const REPLY: &str = "Hello from the demo upstream! You said: Hello there";
/// Vendor calls the script makes for the main model, in order: create, stream, the stream
/// helper, two per tool flow (plain, streamed), the two turns of previous_response_id, one
/// background create. Resume and cancel use the slow model; refusals reach no vendor.
const VENDOR_CALLS: usize = 10;
/// The calls among them that carry a tool output.
const TOOL_RESULT_CALLS: [usize; 2] = [4, 6];
/// The second turn of the previous_response_id pair.
const SECOND_TURN: usize = 8;
/// The slow channel: a stream of this many pieces, this far apart (long enough to cut and
/// cancel, short enough for the suite).
const SLOW_KNOBS: &str = r#"headers = { "x-mock-chunks" = "10", "x-mock-chunk-delay-ms" = "150" }"#;

fn python() -> Option<PathBuf> {
    sdk_python("OpenAI SDK (Responses)")
}

struct Case<'a> {
    vendor: Vendor,
    adapter: &'a str,
    base_with_v1: bool,
    model: &'a str,
    slow_model: &'a str,
    settings: &'a str,
    tool_reply_quotes: &'a str,
    native: bool,
}

async fn sdk_check(python: PathBuf, case: Case<'_>) -> Vec<Received> {
    let mock = Mock::start(Options { vendor: case.vendor, ..Default::default() }).await.expect("mock starts");
    let base_url = if case.base_with_v1 { mock.base_url() } else { mock.root_url() };
    let settings =
        if case.settings.is_empty() { String::new() } else { format!("settings = {{ {} }}\n", case.settings) };
    let channel = |name: &str, model: &str, extra: &str| {
        format!(
            "[[channel]]\nname = \"{name}\"\nadapter = \"{adapter}\"\nbase_url = \"{base_url}\"\napi_key = \"{UPSTREAM_KEY}\"\nmodels = [\"{model}\"]\n{settings}{extra}\n",
            adapter = case.adapter,
        )
    };
    let config = format!(
        "{FAST_POOL}{}{}{}",
        channel("main", case.model, ""),
        channel("slow", case.slow_model, SLOW_KNOBS),
        token_block(CLIENT_KEY, "*"),
    );
    let relay = TestRelay::start(Setup { config: &config, adapters: &[case.adapter], env: &[] }).await;
    let baseline = warm_baseline(&relay, &[]).await;
    let mut cmd = Command::new(python);
    cmd.arg(workspace_root().join("tests/sdk/responses_check.py"))
        .args(["--base-url", &relay.url("/v1"), "--api-key", CLIENT_KEY, "--model", case.model])
        .args(["--slow-model", case.slow_model, "--prompt", PROMPT, "--expect-reply", REPLY])
        .args(["--tool-reply-quotes", case.tool_reply_quotes]);
    if case.native {
        cmd.arg("--native");
    }
    run_sdk_check(cmd, &format!("the Responses SDK check through the {} adapter", case.adapter), &relay).await;
    let metrics = relay.metrics().await;
    assert_eq!(
        metrics.value("relay_errors_total", &[("endpoint", "responses"), ("kind", "authentication")]),
        1.0,
        "the wrong key is counted under the responses endpoint"
    );
    assert!(
        metrics.value("relay_requests_total", &[("channel", "main"), ("status", "200")]) >= VENDOR_CALLS as f64,
        "every call to the main model is counted"
    );
    // The cut background stream's job ran on; nothing it held outlives it.
    relay.assert_back_to(baseline, Duration::from_secs(20)).await;
    mock.stats.received()
}

/// What the vendor got for the main model, in order (the slow channel's calls left out).
fn main_calls(received: Vec<Received>, slow_model: &str) -> Vec<Received> {
    // Where a vendor carries the model: the body, or the path (Gemini, Azure's deployment).
    let main: Vec<Received> =
        received.into_iter().filter(|r| !format!("{} {}", r.path, r.body).contains(slow_model)).collect();
    assert_eq!(main.len(), VENDOR_CALLS, "{:?}", paths(&main));
    main
}

fn paths(received: &[Received]) -> Vec<String> {
    received.iter().map(|r| r.query.as_ref().map_or(r.path.clone(), |q| format!("{}?{q}", r.path))).collect()
}

fn assert_tool_results_reached(received: &[Received]) {
    for i in TOOL_RESULT_CALLS {
        let body = &received[i].body;
        assert!(body.to_string().contains("temp_c"), "call {i} did not carry the tool output: {body}");
    }
}

/// The second turn carried the first: its prompt and its answer, before this turn's prompt;
/// no vendor is ever sent `previous_response_id`.
fn assert_conversation_carried(received: &[Received]) {
    let body = &received[SECOND_TURN].body;
    let text = body.to_string();
    let (first, answer, now) =
        (text.find("My name is Ada."), text.find("You said: My name is Ada."), text.rfind(PROMPT));
    assert!(
        matches!((first, answer, now), (Some(a), Some(b), Some(c)) if a < b && b < c),
        "the second turn did not carry the first in order: {body}"
    );
    for r in received {
        assert!(r.body.get("previous_response_id").is_none(), "a vendor was sent previous_response_id: {}", r.body);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_sdk_responses_through_the_openai_adapter_passes_through() {
    let Some(python) = python() else { return };
    let case = Case {
        vendor: Vendor::OpenAi,
        adapter: "openai",
        base_with_v1: true,
        model: "demo-gpt",
        slow_model: "demo-gpt-slow",
        settings: "",
        tool_reply_quotes: "result",
        native: true,
    };
    let got = main_calls(sdk_check(python, case).await, "demo-gpt-slow");
    assert_eq!(paths(&got), vec!["/v1/responses".to_string(); VENDOR_CALLS]);
    assert_tool_results_reached(&got);
    assert_conversation_carried(&got);
    // Native: the body the SDK sent, with what the relay's types do not know intact.
    let plain = &got[0].body;
    assert_eq!(plain["reasoning"], serde_json::json!({"effort": "low"}), "{plain}");
    assert_eq!(plain["prompt_cache_key"], "relay-check", "{plain}");
    assert_eq!(plain["instructions"], "Be brief.");
    assert_eq!(plain["input"], PROMPT);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_sdk_responses_through_the_anthropic_adapter() {
    let Some(python) = python() else { return };
    let case = Case {
        vendor: Vendor::Anthropic,
        adapter: "anthropic",
        base_with_v1: false,
        model: "claude-demo",
        slow_model: "claude-demo-slow",
        settings: "",
        tool_reply_quotes: "result",
        native: false,
    };
    let got = main_calls(sdk_check(python, case).await, "claude-demo-slow");
    assert_eq!(paths(&got), vec!["/v1/messages".to_string(); VENDOR_CALLS]);
    assert_tool_results_reached(&got);
    assert_conversation_carried(&got);
    // Bridged: instructions became the system prompt, max_output_tokens the token bound.
    let plain = &got[0].body;
    assert_eq!(plain["system"], "Be brief.", "{plain}");
    assert_eq!(plain["max_tokens"], 256, "{plain}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_sdk_responses_through_the_gemini_adapter() {
    let Some(python) = python() else { return };
    let case = Case {
        vendor: Vendor::Gemini,
        adapter: "gemini",
        base_with_v1: false,
        model: "gemini-2.0-flash",
        slow_model: "gemini-2.0-flash-slow",
        settings: "",
        tool_reply_quotes: "result",
        native: false,
    };
    let got = main_calls(sdk_check(python, case).await, "gemini-2.0-flash-slow");
    let (plain, streamed) = (
        "/v1beta/models/gemini-2.0-flash:generateContent",
        "/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse",
    );
    // Background runs stream (its progress is stored event by event).
    assert_eq!(paths(&got), [plain, streamed, streamed, plain, plain, streamed, streamed, plain, plain, streamed]);
    assert_tool_results_reached(&got);
    assert_conversation_carried(&got);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_sdk_responses_through_the_azure_adapter() {
    let Some(python) = python() else { return };
    let case = Case {
        vendor: Vendor::Azure,
        adapter: "azure",
        base_with_v1: false,
        model: "gpt-4o",
        slow_model: "gpt-4o-slow",
        settings: r#""deployment.gpt-4o" = "gpt-4o-prod", "deployment.gpt-4o-slow" = "dep-gpt-4o-slow", api_version = "2024-10-21""#,
        tool_reply_quotes: "prompt",
        native: false,
    };
    let got = main_calls(sdk_check(python, case).await, "gpt-4o-slow");
    let path = "/openai/deployments/gpt-4o-prod/chat/completions?api-version=2024-10-21".to_string();
    assert_eq!(paths(&got), vec![path; VENDOR_CALLS]);
    assert_tool_results_reached(&got);
    assert_conversation_carried(&got);
    let plain = &got[0].body;
    assert_eq!(plain["messages"][0], serde_json::json!({"role": "system", "content": "Be brief."}), "{plain}");
}
