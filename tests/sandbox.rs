//! A hostile or buggy adapter hurts only the requests it serves, and only up to its
//! limits: loops are cut at the CPU bound, memory hogs at the memory cap, and it can reach
//! no file, no environment and no network. Everything else keeps being served, at once.

use std::time::{Duration, Instant};

use http::StatusCode;
use relay_tests::*;
use serde_json::Value;

async fn relay(m: &Mock) -> TestRelay {
    relay_with(m, "").await
}

/// `limits`: more `[limits]` lines.
async fn relay_with(m: &Mock, limits: &str) -> TestRelay {
    let mut config = format!("[limits]\nplugin_call_timeout_ms = 200\nplugin_memory_mib = 32\n{limits}");
    for mode in ["loop", "hog", "escape", "stream-loop", "fine", "panic", "grow"] {
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
        // Another request, sent once the looping one is in flight: served at once.
        relay
            .expect_metrics("the looping request in flight", Duration::from_secs(5), |m| {
                m.gauge("relay_inflight_requests") == 1.0
            })
            .await;
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
    relay
        .expect_metrics("the stream gauge back to 0 after the trap", Duration::from_secs(5), |m| {
            m.gauge("relay_active_streams") == 0.0
        })
        .await;
}

/// A vendor that streams 10 chunks 150 ms apart.
async fn slow_vendor() -> Mock {
    Mock::start(Options { chunks: 10, chunk_delay: Duration::from_millis(150), ..Options::default() }).await.unwrap()
}

/// Sends a slow `fine` stream on the misbehave adapter, and while it is open a stream whose
/// adapter loops mid-stream; returns the slow stream's events.
async fn slow_stream_beside_a_trap(relay: &TestRelay) -> Vec<String> {
    let slow_body = chat_body("fine", "one two three four five six seven eight nine ten", true);
    let (slow, bad) = tokio::join!(relay.chat(&slow_body), async {
        relay
            .expect_metrics("the slow stream open", Duration::from_secs(5), |m| m.gauge("relay_active_streams") == 1.0)
            .await;
        relay.chat(&chat_body("stream-loop", "hi", true)).await
    });
    assert!(bad.text().contains("CPU limit"), "{}", bad.text());
    assert_eq!(slow.status, StatusCode::OK);
    slow.sse_data()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trap_ends_the_streams_sharing_its_instance_then_a_fresh_one_serves() {
    let m = slow_vendor().await;
    let relay = relay(&m).await;
    // Streams share an instance (plugin_streams_per_instance = 32): the slow stream's state
    // lived in the instance that trapped, so it ends with an error event, not a wrong answer.
    let events = slow_stream_beside_a_trap(&relay).await;
    assert!(!events.iter().any(|e| e == "[DONE]"), "{events:?}");
    let last: Value = serde_json::from_str(events.last().unwrap()).unwrap();
    assert!(last["error"]["message"].as_str().unwrap().contains("instance_lost"), "{last}");
    // The next stream gets a fresh instance.
    let next = relay.chat(&chat_body("fine", "hi", true)).await;
    assert_eq!(next.sse_data().last().map(String::as_str), Some("[DONE]"), "{}", next.text());
    let metrics = relay.metrics().await;
    assert_eq!(metrics.value("relay_plugin_traps_total", &[("plugin", "misbehave"), ("reason", "cpu_limit")]), 1.0);
    relay
        .expect_metrics("the stream gauge back to 0 after the trap", Duration::from_secs(5), |m| {
            m.gauge("relay_active_streams") == 0.0
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_an_instance_per_stream_a_trap_ends_only_its_own_stream() {
    let m = slow_vendor().await;
    let relay = relay_with(&m, "plugin_streams_per_instance = 1\n").await;
    let events = slow_stream_beside_a_trap(&relay).await;
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"), "{events:?}");
    assert!(events.len() >= 11, "ten chunks and [DONE]: {events:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_are_reused_up_to_their_bound_and_replaced_after_a_trap() {
    let m = Mock::start(Options::default()).await.unwrap();
    // Three calls per instance: a request is two calls (transform-request and -response).
    let bounded = relay_with(&m, "plugin_instance_uses = 3\n").await;
    let made = |m: &Metrics| m.value("relay_plugin_instantiations_total", &[("plugin", "misbehave")]);
    let before = made(&bounded.metrics().await);
    for _ in 0..9 {
        assert_eq!(bounded.chat(&chat_body("fine", "hi", false)).await.status, StatusCode::OK);
    }
    // 18 calls, one after another, three per instance.
    assert_eq!(made(&bounded.metrics().await) - before, 6.0);
    drop(bounded);

    let relay = relay(&m).await;
    let before = made(&relay.metrics().await);
    for _ in 0..9 {
        assert_eq!(relay.chat(&chat_body("fine", "hi", false)).await.status, StatusCode::OK);
    }
    assert_eq!(made(&relay.metrics().await) - before, 1.0, "one warm instance serves them all");
    // A panic retires its instance; the next request is served by a fresh one.
    assert_eq!(relay.chat(&chat_body("panic", "hi", false)).await.status, StatusCode::BAD_GATEWAY);
    assert_eq!(relay.chat(&chat_body("fine", "hi", false)).await.status, StatusCode::OK);
    assert_eq!(made(&relay.metrics().await) - before, 2.0);
    assert!(relay.metrics().await.gauge("relay_plugin_instances") >= 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_that_grew_past_8_mib_is_replaced_not_reused() {
    let m = Mock::start(Options::default()).await.unwrap();
    let relay = relay(&m).await;
    let made = |m: &Metrics| m.value("relay_plugin_instantiations_total", &[("plugin", "misbehave")]);
    let before = made(&relay.metrics().await);
    assert_eq!(relay.chat(&chat_body("fine", "hi", false)).await.status, StatusCode::OK);
    assert_eq!(made(&relay.metrics().await) - before, 1.0);
    // transform-request grows the instance to 12 MiB and succeeds: it is dropped after the
    // call, so transform-response and the next request run on fresh instances.
    assert_eq!(relay.chat(&chat_body("grow", "hi", false)).await.status, StatusCode::OK);
    assert_eq!(made(&relay.metrics().await) - before, 2.0);
    assert_eq!(relay.chat(&chat_body("fine", "hi", false)).await.status, StatusCode::OK);
    assert_eq!(made(&relay.metrics().await) - before, 2.0, "the small instance is reused");
}
