//! The alert rules of `deploy/alerts.yaml` against the real relay: `/metrics` scraped under a
//! healthy load and after real failures, turned into Prometheus' rule tester input, and
//! checked by the tester itself (`promtool test rules`). Also keeps the rules shown in
//! `docs/operations.md` identical to the file.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use futures_util::future::join_all;
use http::StatusCode;
use relay_tests::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const RULES: &str = "deploy/alerts.yaml";

/// Minutes of input the generated tests span (each rule's `for:` fits in half of it).
const STEPS: usize = 60;

#[test]
fn docs_show_the_rules_file_verbatim() {
    let root = workspace_root();
    let file = std::fs::read_to_string(root.join(RULES)).expect("rules file");
    let docs = std::fs::read_to_string(root.join("docs/operations.md")).expect("docs");
    let section =
        docs.split("## Alert rules to copy").nth(1).expect("the docs have an \"Alert rules to copy\" section");
    let section = section.split("\n## ").next().unwrap_or_default();
    assert!(section.contains(RULES), "the section names {RULES}");
    let block = section
        .split("```yaml\n")
        .nth(1)
        .and_then(|b| b.split("\n```").next())
        .expect("the section holds a ```yaml block");
    let block = format!("{block}\n");
    if block != file {
        let line = block
            .lines()
            .zip(file.lines())
            .position(|(a, b)| a != b)
            .unwrap_or(block.lines().count().min(file.lines().count()));
        panic!(
            "the yaml block of docs/operations.md differs from {RULES} at line {}: paste the file into the block\n docs: {:?}\n file: {:?}",
            line + 1,
            block.lines().nth(line),
            file.lines().nth(line)
        );
    }
}

/// One `/metrics` reading: series (with their labels, as the text format writes them) and
/// whether each family is a gauge.
struct Scrape {
    samples: BTreeMap<String, f64>,
    gauges: Vec<String>,
}

fn parse(text: &str) -> Scrape {
    let mut samples = BTreeMap::new();
    let mut gauges = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            if let Some(name) = rest.strip_suffix(" gauge") {
                gauges.push(name.to_string());
            }
            continue;
        }
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("not a sample: {line}"));
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("not a value: {line}"));
        samples.insert(series.to_string(), value);
    }
    Scrape { samples, gauges }
}

/// The series with the scraper's target labels added.
fn target(series: &str) -> String {
    match series.strip_suffix('}') {
        Some(s) => format!("{s},job=\"relay\",instance=\"relay\"}}"),
        None => format!("{series}{{job=\"relay\",instance=\"relay\"}}"),
    }
}

fn num(v: f64) -> String {
    format!("{v}")
}

/// Rule tester input from two readings taken `between` apart: gauges hold the first reading
/// for half the span and the second for the other half; counters go on growing every
/// minute by what they grew between the readings (the load seen goes on). A series only
/// in the second reading appears at half time, at its value.
fn input_series(a: &Scrape, b: &Scrape) -> String {
    let half = STEPS / 2;
    let mut out = String::new();
    let names: std::collections::BTreeSet<&String> = a.samples.keys().chain(b.samples.keys()).collect();
    for series in names {
        let name = series.split('{').next().unwrap_or_default();
        let gauge = a.gauges.iter().chain(&b.gauges).any(|g| g == name);
        let values = match (a.samples.get(series), b.samples.get(series)) {
            (Some(x), Some(y)) if gauge => format!("{}x{} {}x{}", num(*x), half - 1, num(*y), half),
            (Some(x), Some(y)) => {
                let d = y - x;
                let step = if d < 0.0 { format!("-{}", num(-d)) } else { format!("+{}", num(d)) };
                format!("{}{step}x{}", num(*x), STEPS - 1)
            }
            (Some(x), None) => format!("{}x{}", num(*x), half - 1),
            (None, Some(y)) => format!("_x{} {}x{}", half, num(*y), half - 1),
            (None, None) => unreachable!(),
        };
        out.push_str(&format!("      - series: '{}'\n        values: '{values}'\n", target(series)));
    }
    out
}

/// Run the rule tester on `deploy/alerts.yaml` with the two readings as input and
/// `checks` (promql_expr_test entries); the tester's report on failure.
fn rule_test(dir: &Path, name: &str, a: &Scrape, b: &Scrape, checks: &str) -> Result<(), String> {
    let rules = workspace_root().join(RULES);
    let test = format!(
        "rule_files: ['{}']\nevaluation_interval: 1m\ntests:\n  - name: {name}\n    interval: 1m\n    input_series:\n{}    promql_expr_test:\n{checks}",
        rules.display(),
        input_series(a, b)
    );
    let path = dir.join(format!("{name}.test.yaml"));
    std::fs::write(&path, test).expect("write the rule test");
    let out = Command::new("promtool").arg("test").arg("rules").arg(&path).output().unwrap_or_else(|e| {
        panic!(
            "promtool (Prometheus' rule tester) cannot run ({e}): `make test` installs it \
             (Debian package prometheus); or `apt-get install -y --no-install-recommends prometheus`"
        )
    });
    if out.status.success() {
        return Ok(());
    }
    Err(format!(
        "{}{}\n(input: {})",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        path.display()
    ))
}

/// An idle keep-alive client: one answered request, then the connection held open.
async fn idle_client(relay: &TestRelay) -> TcpStream {
    let mut s = TcpStream::connect(relay.addr).await.expect("connect");
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: relay\r\n\r\n").await.expect("write");
    let mut buf = vec![0u8; 4096];
    let n =
        tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf)).await.expect("answer in time").expect("read");
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&buf[..n]));
    s
}

/// A stream held open: the vendor stalls after its first event, the client keeps reading.
async fn held_stream(relay: &TestRelay) -> TcpStream {
    let body = chat_body("slow", "hold", true).to_string();
    let mut s = TcpStream::connect(relay.addr).await.expect("connect");
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: relay\r\nAuthorization: Bearer {CLIENT_KEY}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(head.as_bytes()).await.expect("write");
    let mut got = Vec::new();
    let mut buf = vec![0u8; 4096];
    while !String::from_utf8_lossy(&got).contains("data: ") {
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
            .await
            .expect("first event in time")
            .expect("read");
        assert!(n > 0, "stream closed early: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    s
}

/// Normal traffic: `n` answers, ten at a time (so the pool keeps several idle vendor
/// connections), and two vendor 4xx.
async fn traffic(relay: &TestRelay, n: usize) {
    for batch in 0..n.div_ceil(10) {
        let body = chat_body("m", "hi", false);
        let reqs = (0..10.min(n - batch * 10)).map(|_| relay.chat(&body));
        for a in join_all(reqs).await {
            assert_eq!(a.status, StatusCode::OK, "{}", a.text());
        }
    }
    for _ in 0..2 {
        let a = relay.chat(&chat_body("denied", "hi", false)).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{}", a.text());
    }
}

fn firing(alert: &str, labels: &str) -> String {
    format!(
        "          - labels: 'ALERTS{{alertname=\"{alert}\",alertstate=\"firing\",{labels}}}'\n            value: 1\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_stay_quiet_on_a_healthy_relay_and_fire_on_its_real_failures() {
    // Fail, never skip, without the tester.
    let version = Command::new("promtool").arg("--version").output();
    assert!(
        version.is_ok_and(|o| o.status.success()),
        "promtool (Prometheus' rule tester) is missing: `make test` installs it (Debian package prometheus)"
    );
    let m = Mock::start(Options::default()).await.expect("mock");
    let url = m.base_url();
    let mut config = String::from(
        // Idle clients stay for the whole test; the pool empties soon after it.
        "[limits]\npool_idle_timeout = 5\nclient_header_timeout = 300\nclient_idle_timeout = 300\n",
    );
    config.push_str(&channel("main", &url, "m", ""));
    config.push_str(&channel("slow", &url, "slow", "headers = { \"x-mock-fault\" = \"stall-after:1\" }"));
    config.push_str(&channel("denied", &url, "denied", "headers = { \"x-mock-status\" = \"400\" }"));
    config.push_str(&channel("flaky", &url, "fo", "priority = 10\nheaders = { \"x-mock-status\" = \"500\" }"));
    config.push_str(&channel("backup", &url, "fo", ""));
    config.push_str(&format!(
        "[[channel]]\nname = \"broken\"\nadapter = \"misbehave\"\nbase_url = \"{url}\"\napi_key = \"{UPSTREAM_KEY}\"\nmodels = [\"trap\"]\nsettings = {{ mode = \"panic\" }}\n"
    ));
    config.push_str(&token_block(CLIENT_KEY, "*"));
    let relay = TestRelay::start(Setup { config: &config, adapters: &["openai", "misbehave"], env: &[] }).await;
    let baseline = relay.metrics().await;
    let dir = tempfile::tempdir().expect("temp dir");

    // A healthy relay: first a quiet moment with 150 idle keep-alive clients (one task
    // each), then under load: 10 streams in flight, a pool of idle vendor connections,
    // answers with a few 4xx. Read once in each state.
    let mut idle = Vec::new();
    for _ in 0..150 {
        idle.push(idle_client(&relay).await);
    }
    let first = parse(&relay.metrics().await.0);
    let v = first.samples.get("relay_connections_open").copied().unwrap_or_default();
    assert!(v >= 150.0, "relay_connections_open is {v} with 150 idle clients");
    let streams = join_all((0..10).map(|_| held_stream(&relay))).await;
    traffic(&relay, 60).await;
    let second = parse(&relay.metrics().await.0);
    for (name, at_least) in [
        ("relay_connections_open", 160.0),
        ("relay_active_streams", 10.0),
        ("relay_upstream_connections_open", 11.0),
        ("relay_runtime_alive_tasks", 160.0),
    ] {
        let v = second.samples.get(name).copied().unwrap_or_default();
        assert!(v >= at_least, "{name} is {v}, the load did not hold (expected at least {at_least})");
    }
    let quiet = "      - {expr: ALERTS, eval_time: 29m, exp_samples: []}\n      - {expr: ALERTS, eval_time: 59m, exp_samples: []}\n";
    // Every failure below is collected, so one run reports all of them.
    let mut problems = Vec::new();
    if let Err(report) = rule_test(dir.path(), "healthy", &first, &second, quiet) {
        problems.push(format!("an alert fires on a healthy relay under load:\n{report}"));
    }
    // The counters the rules read are there at 0 before their first event.
    for series in [
        "relay_plugin_traps_total{plugin=\"misbehave\",reason=\"panic\"}",
        "relay_plugin_reloads_total{plugin=\"openai\",outcome=\"refused\"}",
        "relay_config_reloads_total{outcome=\"refused\"}",
        "relay_upstream_attempts_total{channel=\"flaky\",outcome=\"status_5xx\"}",
    ] {
        if second.samples.get(series) != Some(&0.0) {
            problems.push(format!(
                "{series} is {:?} before its first event, not a zero sample",
                second.samples.get(series)
            ));
        }
    }

    // Real failures: the first trap after the start, a refused config edit, an adapter file
    // refused before it ever loaded, vendor 5xx that failover absorbed.
    let a = relay.chat(&chat_body("trap", "hi", false)).await;
    assert_eq!(a.status, StatusCode::BAD_GATEWAY, "{}", a.text());
    let good = std::fs::read_to_string(relay.config_path()).expect("config");
    std::fs::write(relay.config_path(), format!("{good}\nthis is not toml\n")).expect("write config");
    let dir_plugins = relay.plugin_dir();
    std::fs::write(dir_plugins.join(".newone.wasm.part"), b"not a component").expect("write");
    std::fs::rename(dir_plugins.join(".newone.wasm.part"), dir_plugins.join("newone.wasm")).expect("rename");
    for _ in 0..5 {
        let a = relay.chat(&chat_body("fo", "hi", false)).await;
        assert_eq!(a.status, StatusCode::OK, "failover to backup: {}", a.text());
    }
    let refused = relay
        .wait_metrics(Duration::from_secs(20), |m| {
            m.value("relay_config_reloads_total", &[("outcome", "refused")]) >= 1.0
                && m.value("relay_plugin_reloads_total", &[("plugin", "newone"), ("outcome", "refused")]) >= 1.0
        })
        .await;
    assert_eq!(refused.value("relay_config_reloads_total", &[("outcome", "refused")]), 1.0, "{}", relay.logs());
    assert_eq!(
        refused.value("relay_plugin_reloads_total", &[("plugin", "newone"), ("outcome", "refused")]),
        1.0,
        "{}",
        relay.logs()
    );
    assert_eq!(refused.value("relay_requests_total", &[("status", "500")]), 0.0, "clients saw no 5xx");
    let third = parse(&refused.0);
    let target = "job=\"relay\",instance=\"relay\"";
    // Counters go on growing as they did; the never-loaded file's series appears at 30m.
    let mut fired =
        String::from("      - expr: 'ALERTS{alertstate=\"firing\"}'\n        eval_time: 35m\n        exp_samples:\n");
    fired.push_str(&firing(
        "RelayAdapterTraps",
        &format!("severity=\"warning\",{target},plugin=\"misbehave\",reason=\"panic\""),
    ));
    fired.push_str(&firing("RelayReloadRefused", &format!("severity=\"warning\",{target},outcome=\"refused\"")));
    fired.push_str(&firing(
        "RelayReloadRefused",
        &format!("severity=\"warning\",{target},plugin=\"newone\",outcome=\"refused\""),
    ));
    fired.push_str(&firing("RelayVendorErrors", "severity=\"warning\",channel=\"flaky\""));
    if let Err(report) = rule_test(dir.path(), "failures", &second, &third, &fired) {
        problems.push(format!("the alerts for real failures did not fire as named:\n{report}"));
    }

    // Everything the load held goes back.
    drop(idle);
    drop(streams);
    let end = relay
        .wait_metrics(Duration::from_secs(30), |m| {
            m.gauge("relay_connections_open") <= baseline.gauge("relay_connections_open")
                && m.gauge("relay_active_streams") == 0.0
                && m.gauge("relay_inflight_requests") == 0.0
                && m.gauge("relay_upstream_connections_open") == 0.0
                && m.gauge("relay_runtime_alive_tasks") <= baseline.gauge("relay_runtime_alive_tasks")
        })
        .await;
    for g in [
        "relay_connections_open",
        "relay_active_streams",
        "relay_inflight_requests",
        "relay_upstream_connections_open",
        "relay_runtime_alive_tasks",
    ] {
        assert!(
            end.gauge(g) <= baseline.gauge(g),
            "{g} did not come back: {} (baseline {})",
            end.gauge(g),
            baseline.gauge(g)
        );
    }
    assert!(problems.is_empty(), "{}", problems.join("\n\n"));
}
