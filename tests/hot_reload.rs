//! Adapters and config change under a running relay: drop-in files are picked up, invalid
//! ones are refused while the previous version keeps serving, removed ones answer 503, and
//! requests already running finish on the version they started with.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use http::{Method, StatusCode};
use relay_tests::*;
use serde_json::Value;

fn tagged_channel(m: &Mock, extra: &str) -> String {
    format!(
        "[[channel]]\nname = \"t\"\nadapter = \"tagged\"\nbase_url = \"{}\"\napi_key = \"{UPSTREAM_KEY}\"\nmodels = [\"t\"]\n{extra}\n",
        m.base_url()
    )
}

/// The tag of the adapter version that produced an answer or chunk.
fn tag_of(json: &str) -> String {
    let v: Value = serde_json::from_str(json).unwrap_or(Value::Null);
    v["system_fingerprint"].as_str().unwrap_or("?").to_string()
}

async fn served_tag(relay: &TestRelay) -> String {
    let a = relay.chat(&chat_body("t", "which version?", false)).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    tag_of(&a.text())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swapping_an_adapter_twenty_times_under_load_fails_nothing() {
    let m = Mock::start(Options::default()).await.unwrap();
    let config = format!(
        "{}{}",
        tagged_channel(&m, "headers = { \"x-mock-chunks\" = \"8\", \"x-mock-chunk-delay-ms\" = \"25\" }"),
        token_block(CLIENT_KEY, "*")
    );
    let relay = Arc::new(TestRelay::start(Setup { config: &config, adapters: &["tagged-a"], env: &[] }).await);
    assert_eq!(served_tag(&relay).await, "tag-a");

    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (ok, failed, streams) =
        (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut clients = Vec::new();
    for i in 0..6 {
        let (relay, stop, ok, failed, streams) =
            (relay.clone(), stop.clone(), ok.clone(), failed.clone(), streams.clone());
        clients.push(tokio::spawn(async move {
            let mut problems = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let stream = i % 2 == 0;
                let a = relay.chat(&chat_body("t", "under load", stream)).await;
                if a.status != StatusCode::OK {
                    failed.fetch_add(1, Ordering::Relaxed);
                    problems.push(a.text());
                    continue;
                }
                if stream {
                    let events = a.sse_data();
                    let tags: std::collections::BTreeSet<String> =
                        events.iter().filter(|e| *e != "[DONE]").map(|e| tag_of(e)).collect();
                    if events.last().map(String::as_str) != Some("[DONE]") || tags.len() != 1 {
                        failed.fetch_add(1, Ordering::Relaxed);
                        problems.push(format!("stream mixed versions or was cut: {tags:?}\n{}", a.text()));
                        continue;
                    }
                    streams.fetch_add(1, Ordering::Relaxed);
                }
                ok.fetch_add(1, Ordering::Relaxed);
            }
            problems
        }));
    }

    let (a, b) = (adapter_wasm("tagged-a"), adapter_wasm("tagged-b"));
    for swap in 1..=20 {
        let (file, tag) = if swap % 2 == 1 { (&b, "tag-b") } else { (&a, "tag-a") };
        relay.install_adapter(file, "tagged");
        wait_until(&format!("swap {swap} to {tag}"), Duration::from_secs(20), async || served_tag(&relay).await == tag)
            .await;
    }
    stop.store(true, Ordering::Relaxed);
    let mut problems = Vec::new();
    for c in clients {
        problems.extend(c.await.unwrap());
    }
    assert!(problems.is_empty(), "{} failed requests, first: {}", problems.len(), problems[0]);
    assert_eq!(failed.load(Ordering::Relaxed), 0);
    assert!(streams.load(Ordering::Relaxed) >= 20, "too few streams ran across the swaps: {streams:?}");
    let metrics = relay.metrics().await;
    // The start-up load and the twenty swaps.
    assert_eq!(metrics.value("relay_plugin_reloads_total", &[("plugin", "tagged"), ("outcome", "loaded")]), 21.0);
    assert!(metrics.0.contains("relay_plugin_info{plugin=\"tagged\",version=\"1.0.0-a\""), "{}", metrics.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_finishes_on_the_version_it_began_with() {
    let m = Mock::start(Options::default()).await.unwrap();
    let config = format!(
        "{}{}",
        tagged_channel(&m, "headers = { \"x-mock-chunks\" = \"20\", \"x-mock-chunk-delay-ms\" = \"50\" }"),
        token_block(CLIENT_KEY, "*")
    );
    let relay = Arc::new(TestRelay::start(Setup { config: &config, adapters: &["tagged-a"], env: &[] }).await);
    let r = relay.clone();
    let long = tokio::spawn(async move { r.chat(&chat_body("t", "long", true)).await });
    wait_until("the stream to start", Duration::from_secs(5), async || m.stats.received().len() == 1).await;
    relay.install_adapter(&adapter_wasm("tagged-b"), "tagged");
    wait_until("the new version", Duration::from_secs(20), async || served_tag(&relay).await == "tag-b").await;
    let a = long.await.unwrap();
    let events = a.sse_data();
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    assert!(events.iter().filter(|e| *e != "[DONE]").all(|e| tag_of(e) == "tag-a"), "{}", a.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_files_are_refused_and_the_old_version_keeps_serving() {
    let m = Mock::start(Options::default()).await.unwrap();
    let config = format!("{}{}", tagged_channel(&m, ""), token_block(CLIENT_KEY, "*"));
    let relay = TestRelay::start(Setup { config: &config, adapters: &["tagged-a"], env: &[] }).await;
    let good = std::fs::read(adapter_wasm("tagged-a")).unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let bad: Vec<(&str, Vec<u8>, &str)> = vec![
        ("truncated", good[..good.len() / 2].to_vec(), "not a valid adapter component"),
        ("not wasm", b"#!/bin/sh\necho not a plugin\n".to_vec(), "not a WebAssembly file"),
        ("core module", b"\0asm\x01\0\0\0".to_vec(), "not a valid adapter component"),
        ("newer contract", std::fs::read(adapter_wasm("future-contract")).unwrap(), "relay:adapter/adapter@0.1.0"),
        ("info() traps", std::fs::read(adapter_wasm("tagged-trap")).unwrap(), "info() failed"),
        ("empty", Vec::new(), "not a WebAssembly file"),
    ];
    for (i, (what, bytes, reason)) in bad.iter().enumerate() {
        let src = scratch.path().join(format!("{i}.wasm"));
        std::fs::write(&src, bytes).unwrap();
        relay.install_adapter(&src, "tagged");
        let n = (i + 1) as f64;
        wait_until(&format!("{what} to be refused"), Duration::from_secs(20), async || {
            relay.metrics().await.value("relay_plugin_reloads_total", &[("outcome", "refused")]) >= n
        })
        .await;
        let logs = relay.wait_log(reason).await;
        assert!(logs.contains(reason), "{what}: the log must say why ({reason}):\n{logs}");
        assert_eq!(served_tag(&relay).await, "tag-a", "{what}: the previous version keeps serving");
    }
    // A bad file under a new name is refused too, and touches nothing else.
    relay.install_adapter(&scratch.path().join("0.wasm"), "newcomer");
    relay
        .expect_metrics("the newcomer to be refused", Duration::from_secs(20), |m| {
            m.value("relay_plugin_reloads_total", &[("plugin", "newcomer"), ("outcome", "refused")]) == 1.0
        })
        .await;
    let logs = relay.expect_log("newcomer.wasm").await;
    assert!(logs.lines().any(|l| l.contains("newcomer.wasm") && l.contains("adapter refused")), "{logs}");
    assert_eq!(served_tag(&relay).await, "tag-a");
    // Fixing the file brings the adapter back to a fresh load.
    relay.install_adapter(&adapter_wasm("tagged-b"), "tagged");
    wait_until("the repaired file", Duration::from_secs(20), async || served_tag(&relay).await == "tag-b").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removed_adapter_answers_503_and_in_flight_streams_finish() {
    let m = Mock::start(Options::default()).await.unwrap();
    let config = format!(
        "{}{}",
        tagged_channel(&m, "headers = { \"x-mock-chunks\" = \"20\", \"x-mock-chunk-delay-ms\" = \"50\" }"),
        token_block(CLIENT_KEY, "*")
    );
    let relay = Arc::new(TestRelay::start(Setup { config: &config, adapters: &["tagged-a"], env: &[] }).await);
    let r = relay.clone();
    let long = tokio::spawn(async move { r.chat(&chat_body("t", "long", true)).await });
    wait_until("the stream to start", Duration::from_secs(5), async || m.stats.received().len() == 1).await;
    std::fs::remove_file(relay.plugin_dir().join("tagged.wasm")).unwrap();
    wait_until("the removal", Duration::from_secs(20), async || {
        relay.chat(&chat_body("t", "hi", false)).await.status == StatusCode::SERVICE_UNAVAILABLE
    })
    .await;
    let a = relay.chat(&chat_body("t", "hi", false)).await;
    assert!(a.openai_error().0.contains("adapter 'tagged'"), "{}", a.text());
    let a = long.await.unwrap();
    assert_eq!(a.sse_data().last().map(String::as_str), Some("[DONE]"), "the in-flight stream finishes");
    // Dropping the file back in serves again, without a restart.
    relay.install_adapter(&adapter_wasm("tagged-a"), "tagged");
    wait_until("the new file", Duration::from_secs(20), async || {
        relay.chat(&chat_body("t", "hi", false)).await.status == StatusCode::OK
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_edits_apply_live_and_invalid_ones_are_refused() {
    let m = Mock::start(Options::default()).await.unwrap();
    let base = format!("{}{}", channel("main", &m.base_url(), "demo-gpt", ""), token_block(CLIENT_KEY, "*"));
    let relay = TestRelay::start(Setup { config: &base, adapters: &["openai"], env: &[] }).await;
    let path = relay.config_path();
    let original = std::fs::read_to_string(&path).unwrap();
    assert_eq!(relay.chat(&chat_body("new-model", "hi", false)).await.status, StatusCode::NOT_FOUND);

    // Add a model, a channel header and a second token.
    let edited = original.replace(
        "models = [\"demo-gpt\"]",
        "models = [\"demo-gpt\", \"new-model\"]\nheaders = { \"x-edited\" = \"yes\" }",
    ) + "[[token]]\nname = \"second\"\nkey = \"sk-second\"\nmodels = [\"new-model\"]\n";
    let tmp = path.with_extension("toml.part");
    std::fs::write(&tmp, &edited).unwrap();
    std::fs::rename(&tmp, &path).unwrap();
    wait_until("the edit to apply", Duration::from_secs(20), async || {
        relay.chat(&chat_body("new-model", "hi", false)).await.status == StatusCode::OK
    })
    .await;
    let a = relay
        .request(
            Method::POST,
            "/v1/chat/completions",
            Some("sk-second"),
            &chat_body("new-model", "hi", false).to_string(),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(m.stats.received().last().unwrap().headers["x-edited"], "yes");

    // An invalid edit is refused; the running config stays.
    std::fs::write(&path, edited.replace("[timeouts]", "") + "\n[timeouts]\ntotal = -5\n").unwrap();
    wait_until("the refusal", Duration::from_secs(20), async || {
        relay.metrics().await.value("relay_config_reloads_total", &[("outcome", "refused")]) >= 1.0
    })
    .await;
    assert!(relay.wait_log("config reload refused").await.contains("timeouts.total"));
    assert_eq!(relay.chat(&chat_body("new-model", "hi", false)).await.status, StatusCode::OK);
}

/// `check` stays true for all of `window`: the one place a test waits out a span of time,
/// since what it shows is that something does not happen.
async fn holds_for(what: &str, window: Duration, mut check: impl AsyncFnMut() -> bool) {
    let end = Instant::now() + window;
    while Instant::now() < end {
        assert!(check().await, "{what}: broken {:?} into the window", window - (end - Instant::now()));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_watch_off_only_sighup_reloads_the_config_and_the_adapters() {
    let m = Mock::start(Options::default()).await.unwrap();
    let config = format!("watch = false\n{}{}", tagged_channel(&m, ""), token_block(CLIENT_KEY, "*"));
    let relay = TestRelay::start(Setup { config: &config, adapters: &["tagged-a"], env: &[] }).await;
    let applied = |m: &Metrics| m.value("relay_config_reloads_total", &[("outcome", "applied")]);
    let loaded = |m: &Metrics| m.value("relay_plugin_reloads_total", &[("plugin", "tagged"), ("outcome", "loaded")]);
    let before = relay.metrics().await;
    assert_eq!((applied(&before), loaded(&before)), (0.0, 1.0));
    assert_eq!(served_tag(&relay).await, "tag-a");

    // A new model in the config, a new version of the adapter: written in place, the way a
    // watcher would notice at once.
    let path = relay.config_path();
    let original = std::fs::read_to_string(&path).unwrap();
    let edited = original.replace("models = [\"t\"]", "models = [\"t\", \"t2\"]");
    assert_ne!(edited, original);
    std::fs::write(&path, &edited).unwrap();
    relay.install_adapter(&adapter_wasm("tagged-b"), "tagged");
    let t2 = chat_body("t2", "hi", false);
    // Eight times the relay's 250 ms debounce, after which a watched change has applied:
    // nothing is, until the signal.
    holds_for("no reload without SIGHUP", Duration::from_secs(2), async || {
        let m = relay.metrics().await;
        relay.chat(&t2).await.status == StatusCode::NOT_FOUND
            && served_tag(&relay).await == "tag-a"
            && applied(&m) == 0.0
            && loaded(&m) == 1.0
    })
    .await;

    relay.signal("HUP");
    wait_until("the config reload on SIGHUP", Duration::from_secs(20), async || {
        relay.chat(&t2).await.status == StatusCode::OK
    })
    .await;
    wait_until("the adapter reload on SIGHUP", Duration::from_secs(20), async || served_tag(&relay).await == "tag-b")
        .await;
    let after = relay.metrics().await;
    assert_eq!((applied(&after), loaded(&after)), (1.0, 2.0), "one reload of each, on the signal");
    let logs = relay.expect_log("SIGHUP: reloading the config").await;
    assert!(logs.contains("SIGHUP: reloading the adapters"), "{logs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_with_unchanged_adapters_skips_compilation() {
    let config = token_block(CLIENT_KEY, "*");
    let relay = TestRelay::start(Setup { config: &config, adapters: &["openai", "tagged-a"], env: &[] }).await;
    let logs = relay.expect_log("plugin=tagged").await;
    assert!(logs.contains("cached=false"), "{logs}");
    let dir = relay.stop();
    let cache = dir.path().join(".relay/cache");
    assert_eq!(std::fs::read_dir(&cache).unwrap().count(), 2, "one entry per adapter");
    let relay =
        TestRelay::start_in(dir, Setup { config: &config, adapters: &["openai", "tagged-a"], env: &[] }).await.unwrap();
    let logs = relay.expect_log("plugin=tagged").await;
    assert!(logs.contains("cached=true") && !logs.contains("cached=false"), "{logs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_lists_plugins_behind_its_token() {
    let config = format!("admin_token = \"adm-0123456789abcdef\"\n{}", token_block(CLIENT_KEY, "*"));
    let relay = TestRelay::start(Setup { config: &config, adapters: &["openai", "tagged-a"], env: &[] }).await;
    let a = relay.request(Method::GET, "/admin/plugins", None, "").await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    let a = relay.request(Method::GET, "/admin/plugins", Some(CLIENT_KEY), "").await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED, "a client token is not an admin token");
    let a = relay.request(Method::GET, "/admin/plugins", Some("adm-0123456789abcdef"), "").await;
    assert_eq!(a.status, StatusCode::OK);
    let v = a.json();
    let names: Vec<&str> = v["data"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["openai", "tagged"]);
    assert_eq!(v["data"][1]["version"], "1.0.0-a");
    assert_eq!(v["data"][1]["sha256"].as_str().unwrap().len(), 64);
}

/// One ConfigMap update as kubelet makes it in `dir`: the new data in a new timestamped
/// folder, a `..data_tmp` symlink to it renamed over `..data`, then the old folder deleted.
fn configmap_update(dir: &std::path::Path, version: u32, text: &str) {
    let stamp = format!("..2026_11_30_04_00_{version:02}.{version}");
    std::fs::create_dir(dir.join(&stamp)).unwrap();
    std::fs::write(dir.join(&stamp).join("relay.toml"), text).unwrap();
    let old = std::fs::read_link(dir.join("..data")).ok();
    std::os::unix::fs::symlink(&stamp, dir.join("..data_tmp")).unwrap();
    std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
    if let Some(old) = old {
        std::fs::remove_dir_all(dir.join(old)).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configmap_mount_swapped_under_the_relay_reloads_each_time() {
    let m = Mock::start(Options::default()).await.unwrap();
    // The mount: `relay.toml -> ..data/relay.toml`, `..data -> ..<timestamp>`. The relay's
    // config is written through that link at start.
    let dir = tempfile::tempdir().unwrap();
    configmap_update(dir.path(), 1, "");
    std::os::unix::fs::symlink("..data/relay.toml", dir.path().join("relay.toml")).unwrap();
    let config = format!("{}{}", channel("main", &m.base_url(), "demo-gpt", ""), token_block(CLIENT_KEY, "*"));
    // The watcher's debug line says when an event changed nothing.
    let env = [("RELAY_LOG", "info,relay::reload=debug")];
    let relay = TestRelay::start_in(dir, Setup { config: &config, adapters: &["openai"], env: &env }).await.unwrap();
    let original = std::fs::read_to_string(relay.config_path()).unwrap();
    let applied = |m: &Metrics| m.value("relay_config_reloads_total", &[("outcome", "applied")]);
    let status_with = async |key: &str| {
        let body = chat_body("demo-gpt", "hi", false).to_string();
        relay.request(Method::POST, "/v1/chat/completions", Some(key), &body).await.status
    };
    assert_eq!(status_with("sk-cm-one").await, StatusCode::UNAUTHORIZED);

    // Two updates in a row, each a new token: each applies once, and the folder the
    // previous one resolved into is gone.
    let with_token = |key: &str| format!("{original}[[token]]\nname = \"cm\"\nkey = \"{key}\"\nmodels = [\"*\"]\n");
    for (version, key, gone) in [(2, "sk-cm-one", None), (3, "sk-cm-two", Some("sk-cm-one"))] {
        configmap_update(relay.dir.path(), version, &with_token(key));
        wait_until(&format!("update {version} to apply"), Duration::from_secs(20), async || {
            status_with(key).await == StatusCode::OK
        })
        .await;
        if let Some(gone) = gone {
            assert_eq!(status_with(gone).await, StatusCode::UNAUTHORIZED, "update {version} replaced the token");
        }
        let m = relay.metrics().await;
        assert_eq!(applied(&m), f64::from(version - 1), "one reload per update\n{}", relay.logs());
    }

    // An update with the same content (the file's target changes, its text does not)
    // reloads nothing.
    configmap_update(relay.dir.path(), 4, &with_token("sk-cm-two"));
    let logs = relay.wait_log("changed on disk but not in content").await;
    assert!(logs.contains("changed on disk but not in content"), "{logs}");
    let m = relay.metrics().await;
    assert_eq!((applied(&m), m.value("relay_config_reloads_total", &[("outcome", "refused")])), (2.0, 0.0));
    assert_eq!(status_with("sk-cm-two").await, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_keeps_a_channels_pool_unless_its_connection_settings_change() {
    let answer = |_head: String| async move { vec![json_response(200, &completion_json("pooled"))] };
    let (first, second) = (RecordingVendor::start(answer).await, RecordingVendor::start(answer).await);
    let config = format!("{}{}", channel("main", &first.base_url(), "demo-gpt", ""), token_block(CLIENT_KEY, "*"));
    let relay = TestRelay::start(Setup { config: &config, adapters: &["openai"], env: &[] }).await;
    let path = relay.config_path();
    let original = std::fs::read_to_string(&path).unwrap();
    let applied = async || relay.metrics().await.value("relay_config_reloads_total", &[("outcome", "applied")]);
    let chat_with = async |key: &str| {
        let body = chat_body("demo-gpt", "hi", false).to_string();
        let a = relay.request(Method::POST, "/v1/chat/completions", Some(key), &body).await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    };
    let rewrite = |text: &str| {
        let tmp = path.with_extension("toml.part");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, &path).unwrap();
    };
    chat_with(CLIENT_KEY).await;
    assert_eq!(first.accepted(), 1, "the warm-up's connection");

    // A reload that changes a token only: the channel's pooled connection serves on.
    let edited = format!("{original}[[token]]\nname = \"second\"\nkey = \"sk-second\"\nmodels = [\"*\"]\n");
    rewrite(&edited);
    wait_until("the token edit to apply", Duration::from_secs(20), async || applied().await >= 1.0).await;
    chat_with("sk-second").await;
    chat_with(CLIENT_KEY).await;
    assert_eq!(first.accepted(), 1, "a reload that left the channel's connection settings alone reconnected");

    // The channel's base URL moves to another port: a new pool connects there, and the old
    // one closes its idle connection once nothing uses it.
    rewrite(&edited.replace(&first.base_url(), &second.base_url()));
    wait_until("the base_url edit to apply", Duration::from_secs(20), async || applied().await >= 2.0).await;
    chat_with(CLIENT_KEY).await;
    assert_eq!((first.accepted(), second.accepted()), (1, 1));
    wait_until("the old pool to drain", Duration::from_secs(20), async || first.open() == 0).await;
    relay
        .expect_metrics("only the new pool's connection open", Duration::from_secs(10), |m| {
            m.gauge("relay_upstream_connections_open") == 1.0
        })
        .await;
    second.close_all().await;
    relay
        .expect_metrics("no upstream connection left", Duration::from_secs(10), |m| {
            m.gauge("relay_upstream_connections_open") == 0.0
        })
        .await;
}
