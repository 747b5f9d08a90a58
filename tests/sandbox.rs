//! A hostile or buggy adapter hurts only the requests it serves, and only up to its
//! limits: loops are cut at the CPU bound, memory hogs at the memory cap, and it can reach
//! no file, no environment and no network. Everything else keeps being served, at once.

use std::time::{Duration, Instant};

use http::StatusCode;
use relay_tests::*;
use serde_json::Value;

async fn relay(m: &Mock) -> TestRelay {
    let mut config = String::from("[limits]\nplugin_call_timeout_ms = 200\nplugin_memory_mib = 32\n");
    for mode in ["loop", "hog", "escape", "stream-loop", "fine"] {
        config.push_str(&format!(
            "[[channel]]\nname = \"{mode}\"\nadapter = \"misbehave\"\nbase_url = \"{}\"\napi_key = \"{UPSTREAM_KEY}\"\nmodels = [\"{mode}\"]\nsettings = {{ mode = \"{mode}\" }}\n",
            m.base_url()
        ));
    }
    config.push_str(&channel("good", &m.base_url(), "good", ""));
    config.push_str(&token_block(CLIENT_KEY, "*"));
    TestRelay::start(Setup { config: &config, adapters: &["openai", "misbehave"], env: &[] }).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endless_loop_is_cut_at_the_cpu_bound() {
    let m = Mock::start(Options::default()).await.unwrap();
    let relay = relay(&m).await;
    let t = Instant::now();
    let looping_body = chat_body("loop", "hi", false);
    let (looping, good) = tokio::join!(relay.chat(&looping_body), async {
        // Another request, sent while the loop spins: served at once.
        tokio::time::sleep(Duration::from_millis(20)).await;
        let t = Instant::now();
        let a = relay.chat(&chat_body("good", "hi", false)).await;
        (a, t.elapsed())
    });
    let took = t.elapsed();
    assert_eq!(looping.status, StatusCode::BAD_GATEWAY, "{}", looping.text());
    let msg = looping.openai_error().0;
    assert!(msg.contains("adapter 'misbehave'") && msg.contains("CPU limit of 200 ms"), "{msg}");
    assert!(took >= Duration::from_millis(150) && took < Duration::from_secs(3), "{took:?}");
    assert_eq!(good.0.status, StatusCode::OK);
    assert!(good.1 < Duration::from_secs(1), "the other request waited {:?}", good.1);
    let metrics = relay.metrics().await;
    assert_eq!(metrics.value("relay_plugin_traps_total", &[("plugin", "misbehave"), ("reason", "cpu_limit")]), 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_memory_hog_is_stopped_at_the_cap() {
    let m = Mock::start(Options::default()).await.unwrap();
    let relay = relay(&m).await;
    let before = relay.metrics().await.gauge("process_resident_memory_bytes");
    let a = relay.chat(&chat_body("hog", "hi", false)).await;
    assert_eq!(a.status, StatusCode::BAD_GATEWAY, "{}", a.text());
    let msg = a.openai_error().0;
    assert!(msg.contains("adapter 'misbehave'") && msg.contains("memory"), "{msg}");
    let metrics = relay.metrics().await;
    assert_eq!(metrics.value("relay_plugin_traps_total", &[("plugin", "misbehave"), ("reason", "memory_limit")]), 1.0);
    // The hog could touch at most its 32 MiB cap, and that is given back with its store.
    let after = metrics.gauge("process_resident_memory_bytes");
    assert!(after - before < 48.0 * 1024.0 * 1024.0, "RSS grew by {} MiB", (after - before) / 1048576.0);
    assert_eq!(relay.chat(&chat_body("fine", "hi", false)).await.status, StatusCode::OK, "the same adapter serves on");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sandbox_has_no_files_no_environment_no_network() {
    let m = Mock::start(Options::default()).await.unwrap();
    let relay = relay(&m).await;
    let a = relay.chat(&chat_body("escape", "hi", false)).await;
    assert_eq!(a.status, StatusCode::BAD_GATEWAY);
    let report = a.openai_error().0;
    assert!(report.contains("files: denied"), "{report}");
    assert!(report.contains("env: 0 vars, 0 args"), "{report}");
    assert!(report.contains("net: denied"), "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_loop_mid_stream_ends_that_stream_only() {
    let m = Mock::start(Options::default()).await.unwrap();
    let relay = relay(&m).await;
    let (bad_body, good_body) = (chat_body("stream-loop", "hi", true), chat_body("good", "hi", true));
    let (bad, good) = tokio::join!(relay.chat(&bad_body), relay.chat(&good_body));
    let events = bad.sse_data();
    assert!(!events.iter().any(|e| e == "[DONE]"), "{}", bad.text());
    let last: Value = serde_json::from_str(events.last().unwrap()).unwrap();
    assert!(last["error"]["message"].as_str().unwrap().contains("CPU limit"), "{last}");
    assert_eq!(good.sse_data().last().map(String::as_str), Some("[DONE]"));
    relay.wait_metrics(Duration::from_secs(5), |m| m.gauge("relay_active_streams") == 0.0).await;
}
