//! Config behaviours at their edges, through the real binary: a live reload that applies
//! `[timeouts]` and `[limits]` to new requests while start-up-only keys are kept and named
//! in the log; keys and tokens from the environment; the admin API off without a token;
//! `max_request_body`, `max_response_body`, `max_stream_event`, `plugin_instances` and
//! `pool_max_idle_per_host` exactly at their limit and one past it. Every test that ran
//! traffic ends with the gauges back at their baseline.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use http::{Method, StatusCode};
use relay_tests::*;
use serde_json::Value;

async fn mock() -> Mock {
    Mock::start(Options::default()).await.unwrap()
}

/// A chat body of exactly `len` bytes of JSON.
fn body_of_len(model: &str, len: usize) -> String {
    let base = chat_body(model, "", false).to_string().len();
    let body = chat_body(model, &"x".repeat(len - base), false).to_string();
    assert_eq!(body.len(), len);
    body
}

/// Replace the config file the way an editor does (write aside, rename over).
fn rewrite(path: &std::path::Path, text: &str) {
    let tmp = path.with_extension("toml.part");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// The last log line holding `needle`.
fn log_line(logs: &str, needle: &str) -> String {
    logs.lines().rev().find(|l| l.contains(needle)).unwrap_or_default().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_applies_timeouts_and_limits_and_keeps_start_up_keys_naming_each() {
    let m = mock().await;
    let config = format!(
        "data_dir = \"data\"\n{FAST_POOL}max_request_body = 100000\nplugin_call_timeout_ms = 100\nplugin_instances = 1000\nshutdown_grace = 5\n\
         [timeouts]\ntotal = 30\n[jobs]\nmax_running = 4\n{}{}{}{}",
        channel("main", &m.base_url(), "demo-gpt", ""),
        channel(
            "slow",
            &m.base_url(),
            "slow",
            "headers = { \"x-mock-header-delay-ms\" = \"1500\" }\ntimeouts = { response_header = 30 }"
        ),
        channel("long", &m.base_url(), "long", "headers = { \"x-mock-body-delay-ms\" = \"2000\" }"),
        token_block(CLIENT_KEY, "*"),
    );
    let relay = TestRelay::start(Setup { config: &config, adapters: &["openai"], env: &[] }).await;
    let baseline = warm_baseline(&relay, &["demo-gpt"]).await;
    let chat = "/v1/chat/completions";
    // Before: 3001 bytes pass, and both slow answers arrive within the old bounds.
    let a = relay.request(Method::POST, chat, Some(CLIENT_KEY), &body_of_len("demo-gpt", 3001)).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    let (slow_body, long_body) = (chat_body("slow", "hi", false), chat_body("long", "hi", false));
    let (slow, long) = tokio::join!(relay.chat(&slow_body), relay.chat(&long_body));
    assert_eq!((slow.status, long.status), (StatusCode::OK, StatusCode::OK), "{} / {}", slow.text(), long.text());

    // One edit: live keys and start-up-only keys together.
    std::fs::create_dir_all(relay.dir.path().join("plugins-elsewhere")).unwrap();
    let path = relay.config_path();
    let original = std::fs::read_to_string(&path).unwrap();
    let mut edited = format!("dns_servers = [\"127.0.0.1:5353\"]\n{original}");
    for (from, to) in [
        ("listen = \"127.0.0.1:0\"", "listen = \"127.0.0.1:1\""),
        ("plugin_dir = \"plugins\"", "plugin_dir = \"plugins-elsewhere\""),
        ("data_dir = \"data\"", "data_dir = \"data-elsewhere\""),
        ("plugin_call_timeout_ms = 100", "plugin_call_timeout_ms = 300"),
        ("plugin_instances = 1000", "plugin_instances = 2000"),
        ("shutdown_grace = 5", "shutdown_grace = 6"),
        ("max_running = 4", "max_running = 8"),
        ("max_request_body = 100000", "max_request_body = 3000"),
        ("total = 30", "total = 1.2"),
        ("response_header = 30", "response_header = 0.6"),
    ] {
        assert!(edited.contains(from), "{from} not in the config:\n{edited}");
        edited = edited.replace(from, to);
    }
    rewrite(&path, &edited);
    let reloads = |outcome: &'static str| {
        let relay = &relay;
        async move { relay.metrics().await.value("relay_config_reloads_total", &[("outcome", outcome)]) }
    };
    wait_until("the edit to apply", Duration::from_secs(20), async || reloads("applied").await >= 1.0).await;

    // Each start-up-only key is named in one warning; no live key is.
    let logs = relay.wait_log("kept as they run until the next restart").await;
    let line = log_line(&logs, "kept as they run until the next restart");
    for key in [
        "listen",
        "plugin_dir",
        "data_dir",
        "dns_servers",
        "limits.plugin_call_timeout_ms",
        "limits.plugin_instances",
        "limits.shutdown_grace",
        "jobs.max_running",
    ] {
        assert!(line.contains(key), "{key} not named: {line}");
    }
    for live in ["max_request_body", "timeouts", "total", "response_header"] {
        assert!(!line.contains(live), "{live} is live, not kept: {line}");
    }

    // The kept keys run as before: the same listener, the same adapters (the new plugin
    // folder is empty), the same data folder.
    assert_eq!(relay.chat(&chat_body("demo-gpt", "hi", false)).await.status, StatusCode::OK);
    assert!(!relay.dir.path().join("data-elsewhere").exists(), "data_dir was not kept");

    // The live keys apply to new requests, at their edge.
    let check_live = async || {
        let a = relay.request(Method::POST, chat, Some(CLIENT_KEY), &body_of_len("demo-gpt", 3000)).await;
        assert_eq!(a.status, StatusCode::OK, "a body of exactly max_request_body: {}", a.text());
        let a = relay.request(Method::POST, chat, Some(CLIENT_KEY), &body_of_len("demo-gpt", 3001)).await;
        assert_eq!(a.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", a.text());
        assert_eq!(a.openai_error().0, "request body is larger than the limit of 3000 bytes");
        let (slow, long) = tokio::join!(relay.chat(&slow_body), relay.chat(&long_body));
        assert_eq!(slow.status, StatusCode::GATEWAY_TIMEOUT, "{}", slow.text());
        assert_eq!(slow.openai_error().0, "upstream response header timeout after 0.6 s on channel slow");
        assert_eq!(long.status, StatusCode::GATEWAY_TIMEOUT, "{}", long.text());
        assert_eq!(long.openai_error().0, "total request timeout after 1.2 s on channel long");
    };
    check_live().await;

    // An invalid edit is refused, and the config it would have replaced keeps serving.
    rewrite(&path, &edited.replace("total = 1.2", "total = -1"));
    wait_until("the refusal", Duration::from_secs(20), async || reloads("refused").await >= 1.0).await;
    let logs = relay.wait_log("config reload refused").await;
    assert!(log_line(&logs, "config reload refused").contains("timeouts.total"), "{logs}");
    check_live().await;
    assert_eq!(reloads("applied").await, 1.0);
    relay.assert_back_to(baseline, Duration::from_secs(15)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_and_keys_come_from_the_environment_and_an_unset_variable_is_named() {
    let m = mock().await;
    let admin = "adm-from-env-0123456789";
    let config = format!(
        "admin_token_env = \"RELAY_EDGE_ADMIN\"\n{FAST_POOL}{}[[token]]\nname = \"env\"\nkey_env = \"RELAY_EDGE_CLIENT\"\nmodels = [\"*\"]\n",
        channel("main", &m.base_url(), "demo-gpt", "")
            .replace(&format!("api_key = \"{UPSTREAM_KEY}\""), "api_key_env = \"RELAY_EDGE_VENDOR\""),
    );
    let env = [("RELAY_EDGE_ADMIN", admin), ("RELAY_EDGE_CLIENT", CLIENT_KEY), ("RELAY_EDGE_VENDOR", UPSTREAM_KEY)];
    let relay = TestRelay::start(Setup { config: &config, adapters: &["openai"], env: &env }).await;
    let baseline = warm_baseline(&relay, &["demo-gpt"]).await;
    // The client key from the environment works; the variable's name is not a key.
    let body = chat_body("demo-gpt", "hi", false).to_string();
    let chat = "/v1/chat/completions";
    assert_eq!(relay.request(Method::POST, chat, Some(CLIENT_KEY), &body).await.status, StatusCode::OK);
    let a = relay.request(Method::POST, chat, Some("RELAY_EDGE_CLIENT"), &body).await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    // The admin API: the token from the environment, nothing else.
    for (key, want) in [
        (Some(admin), StatusCode::OK),
        (Some("adm-from-env-012345678"), StatusCode::UNAUTHORIZED),
        (Some("RELAY_EDGE_ADMIN"), StatusCode::UNAUTHORIZED),
        (Some(CLIENT_KEY), StatusCode::UNAUTHORIZED),
        (None, StatusCode::UNAUTHORIZED),
    ] {
        let a = relay.request(Method::GET, "/admin/plugins", key, "").await;
        assert_eq!(a.status, want, "admin with {key:?}: {}", a.text());
    }
    relay.assert_back_to(baseline, Duration::from_secs(15)).await;
    drop(relay);

    // Each `*_env` whose variable is unset (or empty) stops start-up naming it and its line.
    let metrics = format!("metrics_token_env = \"RELAY_EDGE_METRICS\"\n{}", token_block(CLIENT_KEY, "*"));
    let token = "[[token]]\nname = \"env\"\nkey_env = \"RELAY_EDGE_CLIENT\"\nmodels = [\"*\"]\n";
    let admin_cfg = format!("admin_token_env = \"RELAY_EDGE_ADMIN\"\n{}", token_block(CLIENT_KEY, "*"));
    // (config, variable, key, its line in the generated file)
    for (config, var, key, line) in [
        (admin_cfg.as_str(), "RELAY_EDGE_ADMIN", "admin_token_env", 3),
        (metrics.as_str(), "RELAY_EDGE_METRICS", "metrics_token_env", 3),
        (token, "RELAY_EDGE_CLIENT", "key_env", 5),
    ] {
        for value in [None, Some("")] {
            let env: Vec<(&str, &str)> = value.map(|v| (var, v)).into_iter().collect();
            let err = TestRelay::try_start(Setup { config, adapters: &[], env: &env })
                .await
                .err()
                .unwrap_or_else(|| panic!("{var} unset: the relay started"));
            let err = log_line(&err, var);
            assert!(
                err.contains(key) && err.contains(&format!("line {line}")) && err.contains("is not set"),
                "{key} with {var}={value:?}: {err}"
            );
        }
    }
    // A set metrics token from the environment guards /metrics.
    let metrics_token = "metrics-from-env-0123456789";
    let relay =
        TestRelay::start(Setup { config: &metrics, adapters: &[], env: &[("RELAY_EDGE_METRICS", metrics_token)] })
            .await;
    assert_eq!(relay.request(Method::GET, "/metrics", None, "").await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(relay.request(Method::GET, "/metrics", Some(CLIENT_KEY), "").await.status, StatusCode::UNAUTHORIZED);
    let a = relay.request(Method::GET, "/metrics", Some(metrics_token), "").await;
    assert_eq!(a.status, StatusCode::OK);
    assert!(a.text().contains("relay_inflight_requests 0"), "{}", a.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_is_off_without_a_token_whatever_is_sent() {
    let relay = TestRelay::openai("").await;
    for key in [None, Some(CLIENT_KEY), Some(""), Some("adm-0123456789abcdef")] {
        let a = relay.request(Method::GET, "/admin/plugins", key, "").await;
        assert_eq!(a.status, StatusCode::NOT_FOUND, "with {key:?}: {}", a.text());
        let (msg, _) = a.openai_error();
        assert!(msg.contains("admin API is off"), "{msg}");
        assert!(!a.text().contains("openai"), "no adapter listed: {}", a.text());
    }
}

/// A relay on one recording vendor with a channel per `(model, extra)`.
async fn relay_on(vendor: &RecordingVendor, limits: &str, channels: &[(&str, &str)]) -> (TestRelay, Gauges) {
    let mut config = format!("{FAST_POOL}{limits}");
    for (model, extra) in channels {
        config.push_str(&channel(model, &vendor.base_url(), model, extra));
    }
    config.push_str(&token_block(CLIENT_KEY, "*"));
    let relay = TestRelay::start(Setup { config: &config, adapters: &["openai"], env: &[] }).await;
    let baseline = warm_baseline(&relay, &["ok"]).await;
    (relay, baseline)
}

/// The `x-size` a channel asks its vendor for, from a recorded head.
fn asked_size(head: &str) -> usize {
    head_header(head, "x-size").first().and_then(|v| v.parse().ok()).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_body_of_exactly_max_response_body_passes_and_one_byte_more_is_502() {
    const LIMIT: usize = 20_000;
    // A completion padded with spaces to the size the channel asks for (0: unpadded).
    let vendor = RecordingVendor::start(|head| async move {
        let mut body = completion_json("padded");
        let size = asked_size(&head);
        if size > 0 {
            body.push_str(&" ".repeat(size - body.len()));
        }
        vec![json_response(200, &body)]
    })
    .await;
    let at = format!("headers = {{ \"x-size\" = \"{LIMIT}\" }}");
    let over = format!("headers = {{ \"x-size\" = \"{}\" }}", LIMIT + 1);
    let limits = format!("max_response_body = {LIMIT}\n");
    let (relay, baseline) = relay_on(&vendor, &limits, &[("ok", ""), ("at", &at), ("over", &over)]).await;

    let a = relay.chat(&chat_body("at", "hi", false)).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    assert_eq!(a.json()["choices"][0]["message"]["content"], "padded");
    let a = relay.chat(&chat_body("over", "hi", false)).await;
    assert_eq!(a.status, StatusCode::BAD_GATEWAY, "{}", a.text());
    assert_eq!(a.openai_error().0, format!("the response of channel over is larger than the limit of {LIMIT} bytes"));
    relay.assert_back_to(baseline, Duration::from_secs(15)).await;
    vendor.close_all().await;
}

/// An SSE answer: one content chunk whose `data:` value is exactly the size the channel asks
/// for (padded with spaces after the JSON), its line sent in two pieces (the line end
/// comes 200 ms after the rest), then `[DONE]`.
fn padded_stream(head: String) -> Vec<Vec<u8>> {
    let mut data = serde_json::json!({
        "id": "chatcmpl-rec", "object": "chat.completion.chunk", "created": 1, "model": "rec",
        "choices": [{"index": 0, "delta": {"content": "padded"}, "finish_reason": null}]
    })
    .to_string();
    let size = asked_size(&head);
    if size > 0 {
        data.push_str(&" ".repeat(size - data.len()));
    }
    let (first, rest) = (format!("data: {data}"), "\n\ndata: [DONE]\n\n".to_string());
    let head = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncontent-length: {}\r\n\r\n",
        first.len() + rest.len()
    );
    vec![format!("{head}{first}").into_bytes(), rest.into_bytes()]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_event_of_exactly_max_stream_event_passes_and_one_byte_more_ends_the_stream() {
    const LIMIT: usize = 4096;
    let vendor = RecordingVendor::start(|head| async move {
        // The warm-up channel has no `x-size` and is asked without `stream`.
        if head_header(&head, "x-size").is_empty() {
            return vec![json_response(200, &completion_json("ok"))];
        }
        padded_stream(head)
    })
    .await;
    let at = format!("headers = {{ \"x-size\" = \"{LIMIT}\" }}");
    let over = format!("headers = {{ \"x-size\" = \"{}\" }}", LIMIT + 1);
    let limits = format!("max_stream_event = {LIMIT}\n");
    let (relay, baseline) = relay_on(&vendor, &limits, &[("ok", ""), ("at", &at), ("over", &over)]).await;

    let a = relay.chat(&chat_body("at", "hi", true)).await;
    let events = a.sse_data();
    assert_eq!(joined_content(&events), "padded", "{}", a.text());
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"), "{}", a.text());

    let a = relay.chat(&chat_body("over", "hi", true)).await;
    let events = a.sse_data();
    assert!(!events.iter().any(|e| e == "[DONE]"), "{}", a.text());
    let last: Value = serde_json::from_str(events.last().expect("an error event")).unwrap();
    assert_eq!(
        last["error"]["message"],
        format!("upstream stream event is larger than the limit of {LIMIT} bytes on channel over"),
        "{last}"
    );
    relay.assert_back_to(baseline, Duration::from_secs(15)).await;
    vendor.close_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_plugin_instances_requests_are_served_and_past_it_they_get_503() {
    // Three instances: the warm transform instance and two stream hosts (one stream each).
    let m = Mock::start(Options { chunks: 12, chunk_delay: Duration::from_millis(250), ..Options::default() })
        .await
        .unwrap();
    let config = format!(
        "{FAST_POOL}plugin_instances = 3\nplugin_streams_per_instance = 1\n{}{}",
        channel("main", &m.base_url(), "demo-gpt", ""),
        token_block(CLIENT_KEY, "*")
    );
    let relay = TestRelay::start(Setup { config: &config, adapters: &["openai"], env: &[] }).await;
    let baseline = warm_baseline(&relay, &["demo-gpt"]).await;
    let instances = |m: &Metrics| m.gauge("relay_plugin_instances");
    let streams = |m: &Metrics| m.value("relay_plugin_instances", &[("use", "stream")]);
    let stream = chat_body("demo-gpt", "one two three four five six seven eight nine ten eleven twelve", true);
    let peak = AtomicUsize::new(0);
    // Each stream starts once the ones before hold their instances.
    let after = async |n: f64| {
        let m = relay.wait_metrics(Duration::from_secs(10), |m| streams(m) >= n).await;
        assert!(streams(&m) >= n, "stream hosts: {}", streams(&m));
        peak.fetch_max(instances(&m) as usize, Ordering::SeqCst);
    };
    let (first, second, third) = tokio::join!(
        relay.chat(&stream),
        async {
            after(1.0).await;
            relay.chat(&stream).await
        },
        async {
            after(2.0).await;
            relay.chat(&stream).await
        }
    );
    for (what, a) in [("first", &first), ("second", &second)] {
        assert_eq!(a.status, StatusCode::OK, "{what}: {}", a.text());
        assert_eq!(a.sse_data().last().map(String::as_str), Some("[DONE]"), "{what}: {}", a.text());
    }
    assert_eq!(third.status, StatusCode::SERVICE_UNAVAILABLE, "{}", third.text());
    let (msg, _) = third.openai_error();
    assert!(msg.contains("adapter 'openai' is at capacity"), "{msg}");
    assert_eq!(peak.load(Ordering::SeqCst), 3, "instances alive at the peak");
    // Once the streams are done, a stream is served again.
    let a = relay.chat(&stream).await;
    assert_eq!(a.sse_data().last().map(String::as_str), Some("[DONE]"), "{}", a.text());
    relay.assert_back_to(baseline, Duration::from_secs(15)).await;
    // The spent hosts are retired; the newest one stays in place until a stream replaces it.
    let m = relay.wait_metrics(Duration::from_secs(10), |m| streams(m) <= 1.0).await;
    assert_eq!((streams(&m), instances(&m)), (1.0, 2.0), "instances alive after the streams");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_burst_the_pool_keeps_exactly_pool_max_idle_per_host_connections() {
    const BURST: usize = 6;
    const KEEP: usize = 2;
    // Every answer waits until the whole burst has arrived: BURST connections at once.
    let arrived = Arc::new(AtomicUsize::new(0));
    let a = arrived.clone();
    let vendor = RecordingVendor::start(move |head| {
        let a = a.clone();
        async move {
            if !head_header(&head, "x-burst").is_empty() {
                a.fetch_add(1, Ordering::SeqCst);
                let end = Instant::now() + Duration::from_secs(10);
                while a.load(Ordering::SeqCst) < BURST && Instant::now() < end {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
            vec![json_response(200, &completion_json("ok"))]
        }
    })
    .await;
    // A long idle time: what closes here is the pool's cap, not its idle timer.
    let config = format!(
        "[limits]\npool_idle_timeout = 60\npool_max_idle_per_host = {KEEP}\n{}{}{}",
        channel("ok", &vendor.base_url(), "ok", ""),
        channel("burst", &vendor.base_url(), "burst", "headers = { \"x-burst\" = \"1\" }"),
        token_block(CLIENT_KEY, "*"),
    );
    let relay = TestRelay::start(Setup { config: &config, adapters: &["openai"], env: &[] }).await;
    // Warm both channels up (the burst barrier open for it); the pooled connections are
    // closed to take the baseline at zero.
    arrived.store(BURST - 1, Ordering::SeqCst);
    for model in ["ok", "burst"] {
        assert_eq!(relay.chat(&chat_body(model, "warm up", false)).await.status, StatusCode::OK);
    }
    arrived.store(0, Ordering::SeqCst);
    vendor.close_all().await;
    let baseline = warm_baseline(&relay, &[]).await;
    let accepted = vendor.accepted();

    let body = chat_body("burst", "hi", false);
    let answers = futures_util::future::join_all((0..BURST).map(|_| relay.chat(&body))).await;
    for a in &answers {
        assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    }
    assert_eq!(vendor.accepted() - accepted, BURST, "one connection per request of the burst");
    let open = |m: &Metrics| m.gauge("relay_upstream_connections_open");
    let m = relay.wait_metrics(Duration::from_secs(10), |m| open(m) <= KEEP as f64).await;
    assert_eq!(open(&m), KEEP as f64, "idle connections the relay keeps");
    wait_until("the vendor to see the extra sockets close", Duration::from_secs(10), async || vendor.open() <= KEEP)
        .await;
    assert_eq!(vendor.open(), KEEP, "sockets open at the vendor");
    // The kept ones serve the next requests on this channel: no new connection.
    for _ in 0..KEEP {
        assert_eq!(relay.chat(&body).await.status, StatusCode::OK);
    }
    assert_eq!(vendor.accepted() - accepted, BURST, "the pooled connections were reused");
    assert_eq!(open(&relay.metrics().await), KEEP as f64);
    vendor.close_all().await;
    relay.assert_back_to(baseline, Duration::from_secs(15)).await;
}
