//! The official OpenAI Python SDK, unchanged, as a client of the relay in front of each
//! adapter and its vendor mock: tests/sdk/sdk_check.py lists models, chats (plain and
//! streamed), calls a tool and sends its result back (plain and streamed) and, where the
//! vendor has them, asks for embeddings, checking every answer's content.
//!
//! The SDK lives in a virtualenv under target/sdk-venv, made from tests/sdk/requirements.txt
//! on first use. Without python3 or a reachable package index these tests fail, saying why;
//! someone without Python can set `RELAY_SKIP_SDK=1` to skip them with a loud notice (not
//! honoured when `CI` is set: CI always runs them).

use std::path::PathBuf;
use std::process::Command;

use demo_upstream::{Received, Vendor};
use relay_tests::*;

/// The plain chat's question, and the answer every mock gives it.
const PROMPT: &str = "Hello there";
const REPLY: &str = "Hello from the demo upstream! You said: Hello there";
/// Chat requests the script makes, in order: one plain, one streamed, then two per tool
/// flow (the call, then the result sent back), plain and streamed.
const CHAT_REQUESTS: usize = 6;
/// The requests among them that send a tool result back.
const TOOL_RESULT_REQUESTS: [usize; 2] = [3, 5];
/// A field of the tool result the script sends (TOOL_RESULT there), to find it in what the
/// vendor got.
const TOOL_RESULT_FIELD: &str = "temp_c";

fn python() -> Option<PathBuf> {
    sdk_python("OpenAI SDK")
}

/// One adapter behind the relay, with the mock of its vendor.
struct Case<'a> {
    vendor: Vendor,
    adapter: &'a str,
    /// Whether the channel's base_url has OpenAI's `/v1`, or is the bare origin.
    base_with_v1: bool,
    model: &'a str,
    embedding_model: Option<&'a str>,
    /// The channel's `settings` table, inline.
    settings: &'a str,
    /// What the mock's answer to a tool result quotes: the `result` or the user's `prompt`.
    tool_reply_quotes: &'a str,
}

/// Run the SDK check through a relay for `case`; returns what the vendor mock received.
async fn sdk_check(python: PathBuf, case: Case<'_>) -> Vec<Received> {
    let mock = Mock::start(Options { vendor: case.vendor, ..Default::default() }).await.expect("mock starts");
    let base_url = if case.base_with_v1 { mock.base_url() } else { mock.root_url() };
    let models: Vec<String> =
        [Some(case.model), case.embedding_model].into_iter().flatten().map(|m| format!("\"{m}\"")).collect();
    let settings =
        if case.settings.is_empty() { String::new() } else { format!("settings = {{ {} }}\n", case.settings) };
    let config = format!(
        "[[channel]]\nname = \"{adapter}\"\nadapter = \"{adapter}\"\nbase_url = \"{base_url}\"\napi_key = \"{UPSTREAM_KEY}\"\nmodels = [{models}]\n{settings}\n{token}",
        adapter = case.adapter,
        models = models.join(", "),
        token = token_block(CLIENT_KEY, "*"),
    );
    let relay = TestRelay::start(Setup { config: &config, adapters: &[case.adapter], env: &[] }).await;

    let mut cmd = Command::new(python);
    cmd.arg(workspace_root().join("tests/sdk/sdk_check.py"))
        .args(["--base-url", &relay.url("/v1"), "--api-key", CLIENT_KEY, "--model", case.model])
        .args(["--prompt", PROMPT, "--expect-reply", REPLY, "--tool-reply-quotes", case.tool_reply_quotes]);
    if let Some(m) = case.embedding_model {
        cmd.args(["--embedding-model", m]);
    }
    // The script blocks; the mock needs the runtime's workers meanwhile.
    run_sdk_check(cmd, &format!("the SDK check through the {} adapter", case.adapter), &relay).await;
    mock.stats.received()
}

/// The paths the vendor got (with the query when there is one), in order.
fn paths(received: &[Received]) -> Vec<String> {
    received.iter().map(|r| r.query.as_ref().map_or(r.path.clone(), |q| format!("{}?{q}", r.path))).collect()
}

/// The tool result reached the vendor, in whatever shape the adapter gave it.
fn assert_tool_results_reached(received: &[Received]) {
    for i in TOOL_RESULT_REQUESTS {
        let body = &received[i].body;
        assert!(body.to_string().contains(TOOL_RESULT_FIELD), "request {i} did not carry the tool result: {body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_sdk_through_the_openai_adapter() {
    let Some(python) = python() else { return };
    let case = Case {
        vendor: Vendor::OpenAi,
        adapter: "openai",
        base_with_v1: true,
        model: "demo-gpt",
        embedding_model: Some("demo-embedding"),
        settings: "",
        tool_reply_quotes: "result",
    };
    let got = sdk_check(python, case).await;
    let mut expected = vec!["/v1/chat/completions".to_string(); CHAT_REQUESTS];
    expected.push("/v1/embeddings".into());
    assert_eq!(paths(&got), expected);
    assert_tool_results_reached(&got);
    // The assistant message went back as the SDK sent it: the call under the vendor's own id.
    let sent = &got[TOOL_RESULT_REQUESTS[0]].body["messages"];
    assert_eq!(sent[1]["tool_calls"][0]["id"], sent[2]["tool_call_id"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_sdk_through_the_anthropic_adapter() {
    let Some(python) = python() else { return };
    let case = Case {
        vendor: Vendor::Anthropic,
        adapter: "anthropic",
        base_with_v1: false,
        model: "claude-demo",
        embedding_model: None,
        settings: "",
        tool_reply_quotes: "result",
    };
    let got = sdk_check(python, case).await;
    assert_eq!(paths(&got), vec!["/v1/messages".to_string(); CHAT_REQUESTS]);
    assert_tool_results_reached(&got);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_sdk_through_the_gemini_adapter() {
    let Some(python) = python() else { return };
    let case = Case {
        vendor: Vendor::Gemini,
        adapter: "gemini",
        base_with_v1: false,
        model: "gemini-2.0-flash",
        embedding_model: None,
        settings: "",
        tool_reply_quotes: "result",
    };
    let got = sdk_check(python, case).await;
    let (plain, streamed) = (
        "/v1beta/models/gemini-2.0-flash:generateContent",
        "/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse",
    );
    assert_eq!(paths(&got), [plain, streamed, plain, plain, streamed, streamed]);
    assert_tool_results_reached(&got);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_sdk_through_the_azure_adapter() {
    let Some(python) = python() else { return };
    let case = Case {
        vendor: Vendor::Azure,
        adapter: "azure",
        base_with_v1: false,
        model: "gpt-4o",
        embedding_model: Some("text-embedding-3-small"),
        settings: r#""deployment.gpt-4o" = "gpt-4o-prod", "deployment.text-embedding-3-small" = "embed-prod", api_version = "2024-10-21""#,
        // Azure's mock answers a tool result by echoing the user's question.
        tool_reply_quotes: "prompt",
    };
    let got = sdk_check(python, case).await;
    let mut expected =
        vec!["/openai/deployments/gpt-4o-prod/chat/completions?api-version=2024-10-21".to_string(); CHAT_REQUESTS];
    expected.push("/openai/deployments/embed-prod/embeddings?api-version=2024-10-21".into());
    assert_eq!(paths(&got), expected);
    assert_tool_results_reached(&got);
}
