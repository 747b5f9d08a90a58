//! A hostile adapter, against the real binary: one that sleeps (in a transform, mid-stream,
//! in `info()` at load), makes sockets in a loop, floods its output, sends 30,000 headers
//! or asks for the channel key in a header upstreams reflect, builds a path that would leave
//! the vendor's host, forges `Host`/`Authorization`/`Cookie`, or takes its key in the query.
//! Each is cut or refused at its bound; the relay serves on, and every gauge comes back to
//! its baseline.

use std::path::Path;
use std::time::{Duration, Instant};

use http::{Method, StatusCode};
use relay_tests::*;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The CPU budget of every relay here; the wall-clock bound is 20 times it.
const CALL_MS: u64 = 100;
/// The default wall-clock bound that follows from it.
const WALL: Duration = Duration::from_millis(CALL_MS * 20);
/// Slack for a loaded machine on top of any bound.
const SLACK: Duration = Duration::from_secs(8);

/// A misbehave channel per mode, a good OpenAI channel, and a token for all.
fn config(m: &Mock, modes: &[&str], limits: &str) -> String {
    let call = if limits.contains("plugin_call_timeout_ms") {
        String::new()
    } else {
        format!("plugin_call_timeout_ms = {CALL_MS}\n")
    };
    let mut config = format!("{FAST_POOL}{call}{limits}");
    for mode in modes {
        config.push_str(&format!(
            "[[channel]]\nname = \"{mode}\"\nadapter = \"misbehave\"\nbase_url = \"{}\"\napi_key = \"{UPSTREAM_KEY}\"\nmodels = [\"{mode}\"]\nsettings = {{ mode = \"{mode}\" }}\n",
            m.base_url()
        ));
    }
    config.push_str(&channel("good", &m.base_url(), "good", ""));
    config.push_str(&token_block(CLIENT_KEY, "*"));
    config
}

/// Everything that must come back after a fault: the shared gauges, the adapter
/// instances and the relay's open file descriptors.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Baseline {
    gauges: Gauges,
    transform_instances: f64,
    stream_instances: f64,
    fds: usize,
}

async fn reading(relay: &TestRelay) -> Baseline {
    let m = relay.metrics().await;
    Baseline {
        gauges: relay.gauges().await,
        transform_instances: m.value("relay_plugin_instances", &[("use", "transform")]),
        stream_instances: m.value("relay_plugin_instances", &[("use", "stream")]),
        fds: relay.open_fds(),
    }
}

/// Warm the relay up (a request and a stream on each adapter), then take the first reading
/// that holds still once the upstream pool has emptied.
async fn baseline(relay: &TestRelay) -> Baseline {
    for model in ["fine", "good"] {
        for stream in [false, true] {
            let a = relay.chat(&chat_body(model, "warm up", stream)).await;
            assert_eq!(a.status, StatusCode::OK, "warm-up on {model}: {}", a.text());
        }
    }
    relay
        .expect_metrics("the warm-up's upstream connections to close", Duration::from_secs(10), |m| {
            m.gauge("relay_upstream_connections_open") == 0.0
        })
        .await;
    let end = Instant::now() + Duration::from_secs(10);
    let mut base = reading(relay).await;
    loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let again = reading(relay).await;
        if again == base || Instant::now() > end {
            break;
        }
        base = again;
    }
    assert_eq!((base.gauges.inflight, base.gauges.streams, base.gauges.upstream_connections), (0.0, 0.0, 0.0));
    base
}

/// Wait until every reading is back at the baseline (instances and file descriptors at
/// or below it).
async fn assert_back(relay: &TestRelay, base: Baseline) {
    let end = Instant::now() + Duration::from_secs(15);
    loop {
        let now = reading(relay).await;
        // Instances are retired after a fault, never added: at or below the baseline.
        if now.gauges == base.gauges
            && now.transform_instances <= base.transform_instances
            && now.stream_instances <= base.stream_instances
            && now.fds <= base.fds
        {
            return;
        }
        assert!(Instant::now() < end, "not back to baseline: now {now:?}, baseline {base:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn traps(m: &Metrics) -> f64 {
    m.value("relay_plugin_traps_total", &[("plugin", "misbehave")])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sleeping_transform_is_cut_within_its_bound_and_the_relay_serves_on() {
    let m = Mock::start(Options::default()).await.unwrap();
    let relay = TestRelay::start(Setup {
        config: &config(&m, &["sleep", "fine"], ""),
        adapters: &["openai", "misbehave"],
        env: &[],
    })
    .await;
    let base = baseline(&relay).await;
    let t = Instant::now();
    let sleep_body = chat_body("sleep", "hi", false);
    let (slept, good) = tokio::join!(relay.chat(&sleep_body), async {
        tokio::time::sleep(Duration::from_millis(50)).await;
        relay.chat(&chat_body("good", "hi", false)).await
    });
    let took = t.elapsed();
    assert_eq!(slept.status, StatusCode::BAD_GATEWAY, "{}", slept.text());
    let (msg, code) = slept.openai_error();
    assert_eq!(code, "adapter_error");
    assert!(msg.contains("adapter 'misbehave'"), "{msg}");
    assert!(took < WALL + SLACK, "the sleeping call took {took:?}");
    assert_eq!(good.status, StatusCode::OK, "{}", good.text());
    let metrics = relay.metrics().await;
    assert!(traps(&metrics) >= 1.0, "{}", metrics.0);
    assert!(metrics.0.contains("relay_plugin_wall_timeouts_total "), "exported from the start");
    // The same adapter serves on, on a fresh instance.
    assert_eq!(relay.chat(&chat_body("fine", "hi", false)).await.status, StatusCode::OK);
    assert_back(&relay, base).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sleeping_push_ends_its_stream_and_its_neighbours_on_the_instance_never_hang() {
    // Ten chunks 150 ms apart: the neighbour is mid-stream when the other one sleeps.
    let m = Mock::start(Options { chunks: 10, chunk_delay: Duration::from_millis(150), ..Options::default() })
        .await
        .unwrap();
    let relay = TestRelay::start(Setup {
        config: &config(&m, &["stream-sleep", "fine"], ""),
        adapters: &["openai", "misbehave"],
        env: &[],
    })
    .await;
    let base = baseline(&relay).await;
    let t = Instant::now();
    let neighbour_body = chat_body("fine", "one two three four five six seven eight nine ten", true);
    let (neighbour, sleeper) = tokio::join!(relay.chat(&neighbour_body), async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        relay.chat(&chat_body("stream-sleep", "hi", true)).await
    });
    let took = t.elapsed();
    assert!(took < Duration::from_millis(1500) + WALL + SLACK, "the streams took {took:?}");
    // The sleeper ends with an error event and no [DONE].
    let events = sleeper.sse_data();
    assert!(!events.iter().any(|e| e == "[DONE]"), "{}", sleeper.text());
    let last: Value = serde_json::from_str(events.last().expect("an error event")).unwrap();
    assert!(last["error"]["message"].as_str().unwrap().contains("adapter 'misbehave'"), "{last}");
    // Its neighbour on the same instance either finished or ended with an error event
    // naming the lost instance: never a hang, never a wrong answer.
    let events = neighbour.sse_data();
    match events.last().map(String::as_str) {
        Some("[DONE]") => assert!(events.len() >= 11, "{events:?}"),
        Some(last) => {
            let last: Value = serde_json::from_str(last).unwrap();
            assert!(last["error"]["message"].as_str().unwrap().contains("instance_lost"), "{last}");
        }
        None => panic!("the neighbour got nothing: {}", neighbour.text()),
    }
    assert!(traps(&relay.metrics().await) >= 1.0);
    // A fresh instance serves the next stream.
    let next = relay.chat(&chat_body("fine", "hi", true)).await;
    assert_eq!(next.sse_data().last().map(String::as_str), Some("[DONE]"), "{}", next.text());
    assert_back(&relay, base).await;
}

async fn new_token(relay: &TestRelay) -> StatusCode {
    let body = chat_body("good", "hi", false).to_string();
    relay.request(Method::POST, "/v1/chat/completions", Some("sk-new-token"), &body).await.status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_edit_applies_while_an_adapter_load_hangs() {
    let m = Mock::start(Options::default()).await.unwrap();
    // A long wall bound, so the load hangs for longer than the edit may take to apply.
    let relay = TestRelay::start(Setup {
        config: &config(&m, &["fine"], "plugin_wall_timeout_ms = 20000\n"),
        adapters: &["openai", "misbehave"],
        env: &[],
    })
    .await;
    let base = baseline(&relay).await;
    assert_eq!(new_token(&relay).await, StatusCode::UNAUTHORIZED);

    // An adapter whose info() sleeps an hour, then a config edit adding a token.
    relay.install_adapter(&adapter_wasm("tagged-sleep"), "tagged");
    tokio::time::sleep(Duration::from_millis(600)).await;
    let path = relay.config_path();
    let edited = std::fs::read_to_string(&path).unwrap()
        + "[[token]]\nname = \"new\"\nkey = \"sk-new-token\"\nmodels = [\"*\"]\n";
    let tmp = path.with_extension("toml.part");
    std::fs::write(&tmp, edited).unwrap();
    std::fs::rename(&tmp, &path).unwrap();
    let t = Instant::now();
    wait_until("the new token to work", Duration::from_secs(10), async || new_token(&relay).await == StatusCode::OK)
        .await;
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    // The sleeping adapter is refused in the end (at the latest at its wall-clock bound).
    wait_until("the sleeping adapter to be refused", Duration::from_secs(20) + SLACK, async || {
        relay.metrics().await.value("relay_plugin_reloads_total", &[("plugin", "tagged"), ("outcome", "refused")])
            >= 1.0
    })
    .await;
    assert!(relay.wait_log("adapter refused").await.contains("tagged.wasm"));
    assert_eq!(relay.chat(&chat_body("fine", "hi", false)).await.status, StatusCode::OK);
    assert_back(&relay, base).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sockets_made_in_a_loop_are_refused_and_the_fd_count_stays_flat() {
    let m = Mock::start(Options::default()).await.unwrap();
    let relay = TestRelay::start(Setup {
        config: &config(&m, &["sockets", "fine"], ""),
        adapters: &["openai", "misbehave"],
        env: &[],
    })
    .await;
    let base = baseline(&relay).await;
    for _ in 0..10 {
        let a = relay.chat(&chat_body("sockets", "hi", false)).await;
        assert_eq!(a.status, StatusCode::BAD_GATEWAY, "{}", a.text());
        let report = a.openai_error().0;
        assert!(report.contains("sockets: 0 created"), "{report}");
        assert!(relay.open_fds() <= base.fds + 2, "fds {} after sockets, baseline {}", relay.open_fds(), base.fds);
    }
    assert_back(&relay, base).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_output_and_thirty_thousand_headers_are_adapter_errors_not_panics() {
    let m = Mock::start(Options::default()).await.unwrap();
    let modes = ["huge-error", "many-headers", "stream-many-chunks", "stream-forge", "fine"];
    // Room for the 60 MiB error string inside the instance, and CPU time to write it on a
    // loaded machine.
    let relay = TestRelay::start(Setup {
        config: &config(&m, &modes, "plugin_memory_mib = 128\nplugin_call_timeout_ms = 2000\n"),
        adapters: &["openai", "misbehave"],
        env: &[],
    })
    .await;
    let base = baseline(&relay).await;

    let a = relay.chat(&chat_body("huge-error", "hi", false)).await;
    assert_eq!(a.status, StatusCode::BAD_GATEWAY);
    assert!(a.body.len() < 16 * 1024, "a {} byte error body", a.body.len());
    assert!(a.openai_error().0.contains("truncated"), "{}", a.text());

    let a = relay.chat(&chat_body("many-headers", "hi", false)).await;
    assert_eq!(a.status, StatusCode::BAD_GATEWAY);
    let (msg, code) = a.openai_error();
    assert_eq!(code, "adapter_error");
    assert!(msg.contains("30000 headers"), "{msg}");

    let a = relay.chat(&chat_body("stream-many-chunks", "hi", true)).await;
    let events = a.sse_data();
    assert!(!events.iter().any(|e| e == "[DONE]"), "{}", a.text());
    assert!(a.text().contains("chunks from one call"), "{}", a.text());
    assert!(a.body.len() < 64 * 1024, "{} bytes", a.body.len());

    // A chunk carrying its own event end and a [DONE]: refused, so no forged [DONE].
    let a = relay.chat(&chat_body("stream-forge", "hi", true)).await;
    assert!(!a.sse_data().iter().any(|e| e == "[DONE]"), "{}", a.text());
    assert!(a.text().contains("line break"), "{}", a.text());

    let metrics = relay.metrics().await;
    for limit in ["headers", "chunks", "line_break"] {
        assert_eq!(metrics.value("relay_plugin_output_refused_total", &[("limit", limit)]), 1.0, "{limit}");
    }
    assert!(!relay.logs().contains("panicked"), "{}", relay.logs());
    assert_eq!(relay.chat(&chat_body("good", "hi", false)).await.status, StatusCode::OK);
    assert_eq!(relay.chat(&chat_body("fine", "hi", true)).await.sse_data().last().map(String::as_str), Some("[DONE]"));
    assert_back(&relay, base).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_adapter_asking_for_the_key_in_a_reflected_header_is_refused_at_load() {
    let m = Mock::start(Options::default()).await.unwrap();
    let relay = TestRelay::start(Setup {
        config: &config(&m, &["fine"], ""),
        adapters: &["openai", "misbehave", "tagged-reflect"],
        env: &[],
    })
    .await;
    let logs = relay.wait_log("auth header 'origin' is not allowed").await;
    assert!(logs.contains("auth header 'origin' is not allowed"), "{logs}");
    let metrics = relay.metrics().await;
    assert_eq!(metrics.value("relay_plugin_reloads_total", &[("plugin", "tagged"), ("outcome", "refused")]), 1.0);
    assert!(!metrics.0.contains("relay_plugin_info{plugin=\"tagged\""), "not served");

    // `relay plugin check` says why.
    let out = std::process::Command::new(workspace_root().join("target/release/relay"))
        .args(["plugin", "check"])
        .arg(adapter_wasm("tagged-reflect"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("auth header 'origin' is not allowed") && err.contains("x-api-key"), "{err}");
}

/// A vendor that reflects the credential it was sent, in a header and in the body.
async fn reflecting_vendor() -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v1", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                let mut n = 0;
                // Headers, then the declared body.
                loop {
                    let Ok(r) = conn.read(&mut buf[n..]).await else { return };
                    if r == 0 {
                        return;
                    }
                    n += r;
                    let text = String::from_utf8_lossy(&buf[..n]).to_string();
                    if let Some(end) = text.find("\r\n\r\n") {
                        let len = text
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_string())
                            })
                            .and_then(|v| v.parse::<usize>().ok())
                            .unwrap_or(0);
                        if n >= end + 4 + len {
                            break;
                        }
                    }
                }
                let text = String::from_utf8_lossy(&buf[..n]).to_string();
                let key = text
                    .lines()
                    .find_map(|l| l.strip_prefix("authorization: Bearer ").map(str::to_string))
                    .unwrap_or_default();
                let body = serde_json::json!({
                    "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "good",
                    "choices": [{"index": 0, "finish_reason": "stop",
                        "message": {"role": "assistant", "content": format!("you sent {key}")}}],
                })
                .to_string();
                let resp = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\naccess-control-allow-origin: {key}\r\nx-echo: {key}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = conn.write_all(resp.as_bytes()).await;
            });
        }
    });
    (url, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reflected_key_never_reaches_the_adapter() {
    let (url, vendor) = reflecting_vendor().await;
    let config = format!("{}{}", channel("good", &url, "good", ""), token_block(CLIENT_KEY, "*"));
    let relay = TestRelay::start(Setup { config: &config, adapters: &["openai"], env: &[] }).await;
    let a = relay.chat(&chat_body("good", "hi", false)).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    assert!(!a.text().contains(UPSTREAM_KEY), "{}", a.text());
    assert!(a.text().contains("you sent [redacted]"), "{}", a.text());
    // The body and the reflected headers that reach the adapter (x-echo does not).
    assert!(relay.metrics().await.gauge("relay_upstream_key_redactions_total") >= 1.0);
    vendor.abort();
}

/// A misbehave channel named after its mode with `base_url` and `extra` lines.
fn misbehave_channel(mode: &str, base_url: &str, extra: &str) -> String {
    format!(
        "[[channel]]\nname = \"{mode}\"\nadapter = \"misbehave\"\nbase_url = \"{base_url}\"\nmodels = [\"{mode}\"]\nsettings = {{ mode = \"{mode}\" }}\n{extra}\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adapter_paths_that_could_leave_the_vendor_are_refused_before_any_byte_is_sent() {
    let (m, evil) = (Mock::start(Options::default()).await.unwrap(), Mock::start(Options::default()).await.unwrap());
    // The bare origin as base URL, as for Anthropic and Gemini: with nothing after the port,
    // `@host` or `.host` would change the authority, not the path.
    let extra = misbehave_channel("path-from-prompt", &m.root_url(), &format!("api_key = \"{UPSTREAM_KEY}\""));
    let relay = TestRelay::start(Setup {
        config: &(config(&m, &["fine"], "") + &extra),
        adapters: &["openai", "misbehave"],
        env: &[],
    })
    .await;
    let base = baseline(&relay).await;
    let sent_before = m.stats.received().len();
    let e = evil.addr;
    let refused = [
        format!("@{e}/v1/chat/completions"),
        format!(".{e}/v1/chat/completions"),
        format!(":{}/v1/chat/completions", e.port()),
        format!("//{e}/v1/chat/completions"),
        format!("http://{e}/v1/chat/completions"),
        format!("/v1/x?u=http://{e}/"),
        "v1/chat/completions".into(),
        String::new(),
        "/v1/../v1/chat/completions".into(),
        "/v1/./chat/completions".into(),
        "/v1/%2e%2e/chat/completions".into(),
        "/v1%2Fchat/completions".into(),
        "/v1\\chat/completions".into(),
        "/v1/chat/completions#x".into(),
        "/v1/chat completions".into(),
        "/v1/chat/completions\r\nx-injected: 1".into(),
    ];
    for path in &refused {
        let a = relay.chat(&chat_body("path-from-prompt", path, false)).await;
        assert!(evil.stats.received().is_empty(), "{path:?} sent a request to another host");
        assert_eq!(a.status, StatusCode::BAD_GATEWAY, "{path:?}: {}", a.text());
        let (msg, code) = a.openai_error();
        assert_eq!(code, "adapter_error", "{path:?}");
        assert!(msg.contains("adapter 'misbehave' built an invalid request: path"), "{path:?}: {msg}");
    }
    assert_eq!(m.stats.received().len(), sent_before, "a refused path reached the vendor");
    let refusals = relay.metrics().await.value("relay_plugin_output_refused_total", &[("limit", "path")]);
    assert_eq!(refusals, refused.len() as f64);

    // At the edge: plain paths, a query, dots and slashes inside a segment or the query pass.
    for path in ["/v1/chat/completions", "/v1/chat/completions?x=../y&z=//a", "/v1/chat/completions?u=a@b"] {
        let a = relay.chat(&chat_body("path-from-prompt", path, false)).await;
        assert_eq!(a.status, StatusCode::OK, "{path:?}: {}", a.text());
        let got = m.stats.received().pop().unwrap();
        let query = path.split_once('?').map(|(_, q)| q.to_string());
        assert_eq!((got.path.as_str(), got.query), ("/v1/chat/completions", query), "{path:?}");
    }
    assert!(evil.stats.received().is_empty());
    assert_back(&relay, base).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_and_credential_headers_from_an_adapter_are_dropped() {
    let m = Mock::start(Options::default()).await.unwrap();
    let keyed = misbehave_channel("forge-headers", &m.base_url(), &format!("api_key = \"{UPSTREAM_KEY}\""));
    // Without a channel key nothing overwrites the adapter's Authorization: only the rule can.
    let keyless = misbehave_channel("forge-headers", &m.base_url(), "")
        .replacen("name = \"forge-headers\"", "name = \"forge-keyless\"", 1)
        .replace("models = [\"forge-headers\"]", "models = [\"forge-keyless\"]");
    let relay = TestRelay::start(Setup {
        config: &(config(&m, &["fine"], "") + &keyed + &keyless),
        adapters: &["openai", "misbehave"],
        env: &[],
    })
    .await;
    let base = baseline(&relay).await;
    let dropped = [
        "authorization",
        "cookie",
        "proxy-authorization",
        "proxy-connection",
        "keep-alive",
        "te",
        "trailer",
        "upgrade",
    ];

    let a = relay.chat(&chat_body("forge-headers", "hi", false)).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    let got = m.stats.received().pop().unwrap();
    let h = &got.headers;
    assert_eq!(h.get_all("host").iter().collect::<Vec<_>>(), [m.addr.to_string().as_str()], "{h:?}");
    let auth: Vec<_> = h.get_all("authorization").iter().collect();
    assert_eq!(auth, [format!("Bearer {UPSTREAM_KEY}").as_str()], "only the channel's credential: {h:?}");
    for name in &dropped[1..] {
        assert!(!h.contains_key(*name), "{name} reached the vendor: {h:?}");
    }
    assert_eq!(h["x-misbehave-kept"], "yes", "an ordinary header passes: {h:?}");

    // The mock refuses a request without its key (401, passed on); what it got is the point.
    let a = relay.chat(&chat_body("forge-keyless", "hi", false)).await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED, "{}", a.text());
    let got = m.stats.received().pop().unwrap();
    let h = &got.headers;
    assert_eq!(h.get_all("host").iter().collect::<Vec<_>>(), [m.addr.to_string().as_str()], "{h:?}");
    for name in dropped {
        assert!(!h.contains_key(name), "{name} reached the vendor: {h:?}");
    }
    assert_eq!(h["x-misbehave-kept"], "yes");
    assert_back(&relay, base).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_auth_adapter_gets_the_key_in_the_query_encoded_and_never_sees_it() {
    // A key with every character a query needs encoded.
    let key = "sk-q+u&e=r/y?#%";
    let encoded = "sk-q%2Bu%26e%3Dr%2Fy%3F%23%25";
    // Answers 200 with the request line it got as the content; 400 echoing it for `x-fail`.
    let vendor = RecordingVendor::start(|head| async move {
        let line = head.lines().next().unwrap_or_default().to_string();
        if head_header(&head, "x-fail").is_empty() {
            vec![json_response(200, &completion_json(&line))]
        } else {
            let body = serde_json::json!({"error": {"message": format!("bad request: {line}"), "type": "invalid_request_error"}});
            vec![json_response(400, &body.to_string())]
        }
    })
    .await;
    let tagged = |name: &str, extra: &str| {
        format!(
            "[[channel]]\nname = \"{name}\"\nadapter = \"tagged\"\nbase_url = \"{}\"\napi_key = \"{key}\"\nmodels = [\"{name}\"]\n{extra}\n",
            vendor.base_url()
        )
    };
    let m = Mock::start(Options::default()).await.unwrap();
    let config =
        config(&m, &["fine"], "") + &tagged("query", "") + &tagged("query-fail", "headers = { \"x-fail\" = \"1\" }");
    let relay =
        TestRelay::start(Setup { config: &config, adapters: &["openai", "misbehave", "tagged-query"], env: &[] }).await;
    // The tagged adapter's warm instance is part of the baseline.
    assert_eq!(relay.chat(&chat_body("query", "warm up", false)).await.status, StatusCode::OK);
    let base = baseline(&relay).await;

    let a = relay.chat(&chat_body("query", "hi", false)).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    let heads = vendor.heads();
    let line = heads.last().unwrap().lines().next().unwrap().to_string();
    // Joined with `&` to the adapter's own query, percent-encoded, in no header.
    assert_eq!(line, format!("POST /v1/chat/completions?alt=sse&key={encoded} HTTP/1.1"));
    assert!(head_header(heads.last().unwrap(), "authorization").is_empty(), "{}", heads.last().unwrap());
    // What the vendor echoed reached the adapter (and the client) without the key.
    assert_eq!(
        a.json()["choices"][0]["message"]["content"],
        "POST /v1/chat/completions?alt=sse&key=[redacted] HTTP/1.1",
        "{}",
        a.text()
    );
    let a = relay.chat(&chat_body("query-fail", "hi", false)).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST, "{}", a.text());
    assert!(a.text().contains("key=[redacted]"), "{}", a.text());
    for (what, text) in [("answer", a.text()), ("log", relay.logs())] {
        assert!(!text.contains(key) && !text.contains(encoded), "the key in the {what}: {text}");
    }
    assert!(relay.metrics().await.gauge("relay_upstream_key_redactions_total") >= 2.0);
    assert_back(&relay, base).await;
    vendor.close_all().await;
}

#[test]
fn the_fixtures_exist() {
    for f in ["misbehave", "tagged-sleep", "tagged-reflect", "tagged-query"] {
        assert!(Path::new(&adapter_wasm(f)).exists());
    }
}
