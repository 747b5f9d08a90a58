//! The Anthropic Messages API (`POST /v1/messages`) through every shipped adapter, driven by
//! the official Anthropic Python SDK (tests/sdk/anthropic_check.py): create, stream, tools
//! both ways, count_tokens, both ways of sending the key. The anthropic adapter passes the
//! body through natively (the vendor gets what the client sent, fields the relay does not
//! know included); every other adapter is bridged through chat completions by the host. The
//! mocks check what each vendor received. The SDK's venv is made as for tests/sdk.rs (set
//! `RELAY_SKIP_SDK=1` to skip on a machine without Python; never honoured under CI).

use std::path::PathBuf;
use std::process::Command;

use demo_upstream::{Received, Vendor};
use relay_tests::*;

const PROMPT: &str = "Hello there";
const REPLY: &str = "Hello from the demo upstream! You said: Hello there";
/// Vendor calls the script makes: create, stream, two per tool flow (plain, streamed), the
/// bearer-key create. count_tokens is answered by the relay (an estimate) except through a
/// channel that counts natively, where it is one more call, before the bearer-key create;
/// the wrong key never reaches a vendor.
const VENDOR_CALLS: usize = 7;
/// The calls among them that carry a tool result.
const TOOL_RESULT_CALLS: [usize; 2] = [3, 5];
fn python() -> Option<PathBuf> {
    sdk_python("Anthropic SDK")
}

struct Case<'a> {
    vendor: Vendor,
    adapter: &'a str,
    base_with_v1: bool,
    model: &'a str,
    settings: &'a str,
    tool_reply_quotes: &'a str,
    native: bool,
}

async fn sdk_check(python: PathBuf, case: Case<'_>) -> Vec<Received> {
    let mock = Mock::start(Options { vendor: case.vendor, ..Default::default() }).await.expect("mock starts");
    let base_url = if case.base_with_v1 { mock.base_url() } else { mock.root_url() };
    let settings =
        if case.settings.is_empty() { String::new() } else { format!("settings = {{ {} }}\n", case.settings) };
    let config = format!(
        "[[channel]]\nname = \"{adapter}\"\nadapter = \"{adapter}\"\nbase_url = \"{base_url}\"\napi_key = \"{UPSTREAM_KEY}\"\nmodels = [\"{model}\"]\n{settings}\n{token}",
        adapter = case.adapter,
        model = case.model,
        token = token_block(CLIENT_KEY, "*"),
    );
    let relay = TestRelay::start(Setup { config: &config, adapters: &[case.adapter], env: &[] }).await;
    let mut cmd = Command::new(python);
    cmd.arg(workspace_root().join("tests/sdk/anthropic_check.py"))
        .args(["--base-url", &relay.url(""), "--api-key", CLIENT_KEY, "--model", case.model])
        .args(["--prompt", PROMPT, "--expect-reply", REPLY, "--tool-reply-quotes", case.tool_reply_quotes]);
    if case.native {
        cmd.arg("--native");
    }
    run_sdk_check(cmd, &format!("the Anthropic SDK check through the {} adapter", case.adapter), &relay).await;
    let metrics = relay.metrics().await;
    assert_eq!(
        metrics.value("relay_errors_total", &[("endpoint", "messages"), ("kind", "authentication")]),
        1.0,
        "the wrong key is counted under the messages endpoint"
    );
    mock.stats.received()
}

fn paths(received: &[Received]) -> Vec<String> {
    received.iter().map(|r| r.query.as_ref().map_or(r.path.clone(), |q| format!("{}?{q}", r.path))).collect()
}

fn assert_tool_results_reached(received: &[Received]) {
    for i in TOOL_RESULT_CALLS {
        let body = &received[i].body;
        assert!(body.to_string().contains("temp_c"), "call {i} did not carry the tool result: {body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anthropic_sdk_through_the_openai_adapter() {
    let Some(python) = python() else { return };
    let case = Case {
        vendor: Vendor::OpenAi,
        adapter: "openai",
        base_with_v1: true,
        model: "demo-gpt",
        settings: "",
        tool_reply_quotes: "result",
        native: false,
    };
    let got = sdk_check(python, case).await;
    assert_eq!(paths(&got), vec!["/v1/chat/completions".to_string(); VENDOR_CALLS]);
    assert_tool_results_reached(&got);
    // The bridge's chat request: system first, max_tokens, the stream with usage.
    let plain = &got[0].body;
    assert_eq!(plain["messages"][0], serde_json::json!({"role": "system", "content": "Be brief."}));
    assert_eq!(plain["max_tokens"], 256);
    assert_eq!(got[1].body["stream_options"]["include_usage"], true);
    // The tool_result turn: the assistant's call and the tool message under one id.
    let sent = &got[TOOL_RESULT_CALLS[0]].body["messages"];
    assert_eq!(sent[1]["tool_calls"][0]["id"], sent[2]["tool_call_id"]);
    assert_eq!(sent[2]["role"], "tool");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anthropic_sdk_through_the_anthropic_adapter_passes_through() {
    let Some(python) = python() else { return };
    let case = Case {
        vendor: Vendor::Anthropic,
        adapter: "anthropic",
        base_with_v1: false,
        model: "claude-demo",
        settings: "",
        tool_reply_quotes: "result",
        native: true,
    };
    let got = sdk_check(python, case).await;
    let mut expected = vec!["/v1/messages".to_string(); VENDOR_CALLS];
    expected.insert(VENDOR_CALLS - 1, "/v1/messages/count_tokens".to_string());
    assert_eq!(paths(&got), expected);
    assert_tool_results_reached(&got);
    // Native: the body the SDK sent, with what the relay's types do not know intact.
    let plain = &got[0].body;
    assert_eq!(plain["thinking"], serde_json::json!({"type": "enabled", "budget_tokens": 1024}), "{plain}");
    assert_eq!(
        plain["messages"][0]["content"][0]["cache_control"],
        serde_json::json!({"type": "ephemeral"}),
        "{plain}"
    );
    assert_eq!(plain["system"], "Be brief.");
    assert!(got[0].headers.get("anthropic-version").is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anthropic_sdk_through_the_gemini_adapter() {
    let Some(python) = python() else { return };
    let case = Case {
        vendor: Vendor::Gemini,
        adapter: "gemini",
        base_with_v1: false,
        model: "gemini-2.0-flash",
        settings: "",
        tool_reply_quotes: "result",
        native: false,
    };
    let got = sdk_check(python, case).await;
    let (plain, streamed) = (
        "/v1beta/models/gemini-2.0-flash:generateContent",
        "/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse",
    );
    assert_eq!(paths(&got), [plain, streamed, plain, plain, streamed, streamed, plain]);
    assert_tool_results_reached(&got);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anthropic_sdk_through_the_azure_adapter() {
    let Some(python) = python() else { return };
    let case = Case {
        vendor: Vendor::Azure,
        adapter: "azure",
        base_with_v1: false,
        model: "gpt-4o",
        settings: r#""deployment.gpt-4o" = "gpt-4o-prod", api_version = "2024-10-21""#,
        tool_reply_quotes: "prompt",
        native: false,
    };
    let got = sdk_check(python, case).await;
    let path = "/openai/deployments/gpt-4o-prod/chat/completions?api-version=2024-10-21".to_string();
    assert_eq!(paths(&got), vec![path; VENDOR_CALLS]);
    assert_tool_results_reached(&got);
}
