//! The docs, held to the built relay so they stay true:
//!
//! - every `relay.toml` key of docs/configuration.md is accepted by `relay check-config`,
//!   and every key the config parser accepts (read from its own unknown-key error) is
//!   documented there;
//! - every metric named in README.md or docs/*.md is on `/metrics` of a running relay, and
//!   every family there is in the metrics table of docs/operations.md, with its type;
//! - the commands of the docs' shell blocks run against a relay serving the demo config
//!   (examples/relay.toml) and the demo mock, and the Python resume example of
//!   docs/async.md resumes across a stream cut mid-body.
//!
//! Which commands run: lines of ```sh blocks, and `$ ` lines of ```console blocks (with
//! their `\` continuations), whose program is `relay` or `curl` (after `VAR=value`
//! assignments). `make`, `cargo`, `bash` lines build or benchmark and are not run here;
//! the few `relay`/`curl` lines that cannot run offline are in `SKIP`.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use http::{Method, StatusCode};
use relay_tests::*;
use serde_json::Value;

/// Documented commands not run, each with why. Matched as a prefix of the command.
const SKIP: &[(&str, &str)] = &[
    ("relay serve", "serves until stopped: the relay under test is one"),
    ("RELAY_LOG_FORMAT=json relay serve", "serves until stopped"),
];

/// Placeholders of the docs' commands, and what they stand for here.
const DEMO_URL: &str = "http://127.0.0.1:3000";
const DEMO_KEY: &str = "sk-relay-demo";
/// A secret the `*_env` keys name when their keys are checked.
const SECRET_VAR: &str = "DOCS_CHECK_SECRET";
const SECRET: &str = "docs-check-secret-0123456789";

/// Example values for keys whose default column holds no TOML value (`unset`, a formula,
/// `yes`). Anything else is checked with the default the doc gives.
const EXAMPLES: &[(&str, &str, &str)] = &[
    ("", "admin_token", "\"docs-check-admin-token\""),
    ("", "admin_token_env", "\"DOCS_CHECK_SECRET\""),
    ("", "metrics_token", "\"docs-check-metrics-token\""),
    ("", "metrics_token_env", "\"DOCS_CHECK_SECRET\""),
    ("", "dns_servers", "[\"10.0.0.2\", \"127.0.0.1:5353\"]"),
    ("limits", "plugin_wall_timeout_ms", "2000"),
    ("channel", "name", "\"docs\""),
    ("channel", "adapter", "\"openai\""),
    ("channel", "base_url", "\"https://api.openai.com/v1\""),
    ("channel", "api_key", "\"sk-docs-vendor\""),
    ("channel", "api_key_env", "\"DOCS_CHECK_SECRET\""),
    ("channel", "models", "[\"demo-gpt\"]"),
    ("channel", "priority", "1"),
    ("channel", "weight", "3"),
    ("channel", "settings", "{ organization = \"org-docs\", beta = true, n = 2 }"),
    ("channel", "headers", "{ \"x-docs\" = \"1\" }"),
    ("channel", "timeouts", "{ total = 5 }"),
    ("channel", "retry", "{ attempts = 2 }"),
    ("timeouts", "first_token", "20"),
    ("channel", "malformed_events", "\"fail\""),
    ("channel", "native", "[\"responses\"]"),
    ("token", "name", "\"docs\""),
    ("token", "key", "\"sk-docs-client\""),
    ("token", "key_env", "\"DOCS_CHECK_SECRET\""),
    ("token", "models", "[\"*\"]"),
];

fn read_doc(rel: &str) -> String {
    let path = workspace_root().join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The cells of a markdown table row.
fn cells(line: &str) -> Vec<String> {
    line.trim().trim_matches('|').split('|').map(|c| c.trim().to_string()).collect()
}

/// The `code` spans of a markdown fragment.
fn code_spans(text: &str) -> Vec<String> {
    text.split('`').skip(1).step_by(2).map(str::to_string).collect()
}

/// One documented key: its table ("" for the top level), name and default cell.
struct DocKey {
    table: String,
    key: String,
    default: String,
    line: usize,
}

/// The key rows of docs/configuration.md, by the table their section names.
fn documented_keys() -> Vec<DocKey> {
    let text = read_doc("docs/configuration.md");
    let mut table: Option<String> = None;
    let mut keys = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if let Some(h) = line.strip_prefix("## ") {
            table = if h.trim() == "Top level" {
                Some(String::new())
            } else {
                code_spans(h)
                    .first()
                    .filter(|s| s.starts_with('['))
                    .map(|s| s.trim_matches(|c| c == '[' || c == ']').to_string())
            };
            continue;
        }
        let Some(t) = &table else { continue };
        if !line.starts_with("| `") {
            continue;
        }
        let row = cells(line);
        for key in code_spans(&row[0]) {
            keys.push(DocKey { table: t.clone(), key, default: row.get(1).cloned().unwrap_or_default(), line: n + 1 });
        }
    }
    keys
}

/// A value to set `key` to: the example for it, else the default the doc gives when it is
/// a TOML number, string or boolean.
fn value_for(k: &DocKey) -> String {
    if let Some((_, _, v)) = EXAMPLES.iter().find(|(t, key, _)| *t == k.table && *key == k.key) {
        return v.to_string();
    }
    let first = k.default.split_whitespace().next().unwrap_or("").trim_matches('`');
    let is_string = first.len() >= 2 && first.starts_with('"') && first.ends_with('"');
    if is_string || first.parse::<f64>().is_ok() || first == "true" || first == "false" {
        return first.to_string();
    }
    panic!(
        "docs/configuration.md line {}: {}.{} has no TOML value in its default column ('{}'): add an example to EXAMPLES",
        k.line, k.table, k.key, k.default
    )
}

/// A config holding a minimal channel and token, with `key` of `table` set to `value`.
fn config_with(table: &str, key: &str, value: &str) -> String {
    let mut top = Vec::new();
    let mut tables: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    let mut channel: Vec<(String, String)> = [
        ("name", "\"docs\""),
        ("adapter", "\"openai\""),
        ("base_url", "\"https://api.openai.com/v1\""),
        ("models", "[\"demo-gpt\"]"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let mut token: Vec<(String, String)> = [("name", "\"docs\""), ("key", "\"sk-docs-client\""), ("models", "[\"*\"]")]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let set = |map: &mut Vec<(String, String)>, key: &str, value: &str| {
        // `x_env` replaces `x`: a config may set only one of them.
        if let Some(stem) = key.strip_suffix("_env") {
            map.retain(|(k, _)| k != stem);
        }
        map.retain(|(k, _)| k != key);
        map.push((key.to_string(), value.to_string()));
    };
    match table {
        "" => top.push(format!("{key} = {value}")),
        "channel" => set(&mut channel, key, value),
        "channel.timeouts" => set(&mut channel, "timeouts", &format!("{{ {key} = {value} }}")),
        "token" => set(&mut token, key, value),
        t => tables.entry(t).or_default().push(format!("{key} = {value}")),
    }
    let mut text = top.join("\n") + "\n";
    for (t, lines) in tables {
        text += &format!("[{t}]\n{}\n", lines.join("\n"));
    }
    text += "[[channel]]\n";
    for (k, v) in channel {
        text += &format!("{k} = {v}\n");
    }
    text += "[[token]]\n";
    for (k, v) in token {
        text += &format!("{k} = {v}\n");
    }
    text
}

/// `relay check-config` on `text`.
fn check_config(dir: &Path, text: &str) -> Output {
    let path = dir.join("relay.toml");
    std::fs::write(&path, text).expect("write config");
    Command::new(relay_bin())
        .arg("check-config")
        .arg("--config")
        .arg(&path)
        .env(SECRET_VAR, SECRET)
        .env("RELAY_LOG", "error")
        .output()
        .expect("relay check-config runs")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The keys the parser accepts in `table`: a key it does not know is refused with its
/// line and the list of the keys it expects (serde's own, derived from the raw structs).
fn accepted_keys(dir: &Path, table: &str) -> BTreeSet<String> {
    const PROBE: &str = "zz_docs_probe";
    let minimal_channel = "name = \"docs\"\nadapter = \"openai\"\nbase_url = \"http://x\"\nmodels = [\"m\"]\n";
    let (text, line) = match table {
        "" => (format!("{PROBE} = 1\n"), 1),
        "channel" => (format!("[[channel]]\n{PROBE} = 1\n{minimal_channel}"), 2),
        "token" => (format!("[[token]]\n{PROBE} = 1\nname = \"t\"\nkey = \"k\"\nmodels = [\"*\"]\n"), 2),
        "channel.timeouts" => (format!("[[channel]]\n{minimal_channel}[channel.timeouts]\n{PROBE} = 1\n"), 7),
        t => (format!("[{t}]\n{PROBE} = 1\n"), 2),
    };
    let out = check_config(dir, &text);
    let err = stderr(&out);
    assert!(!out.status.success(), "an unknown key in [{table}] was accepted:\n{text}");
    assert!(
        err.contains(PROBE) && err.contains(&format!("line {line}")),
        "the unknown key's error names no line:\n{err}"
    );
    let expected = err.split("expected").nth(1).unwrap_or_else(|| panic!("no list of expected keys:\n{err}"));
    let expected = expected.lines().next().unwrap_or("");
    code_spans(expected).into_iter().collect()
}

#[test]
fn every_documented_key_parses_and_every_parsed_key_is_documented() {
    let dir = tempfile::tempdir().unwrap();
    let keys = documented_keys();
    assert!(keys.len() > 40, "docs/configuration.md: only {} key rows found; did its layout change?", keys.len());

    // Documented -> accepted, one config per key.
    let mut failures = Vec::new();
    for k in &keys {
        let text = config_with(&k.table, &k.key, &value_for(k));
        let out = check_config(dir.path(), &text);
        if !out.status.success() {
            failures.push(format!(
                "docs/configuration.md line {}: {}.{} is refused:\n{}\n{text}",
                k.line,
                k.table,
                k.key,
                stderr(&out)
            ));
        }
    }
    // `[channel.timeouts]`: every `[timeouts]` key but `client_body`, which is refused there
    // naming its key and line, as the doc says.
    let timeouts: Vec<&DocKey> = keys.iter().filter(|k| k.table == "timeouts").collect();
    for k in &timeouts {
        let text = config_with("channel.timeouts", &k.key, &value_for(k));
        let out = check_config(dir.path(), &text);
        if k.key == "client_body" {
            let err = stderr(&out);
            assert!(!out.status.success(), "[channel.timeouts] client_body is accepted:\n{text}");
            let line = text.lines().position(|l| l.starts_with("timeouts = ")).map_or(0, |i| i + 1);
            assert!(err.contains(&format!("timeouts.client_body (line {line})")), "{err}\n{text}");
        } else if !out.status.success() {
            failures.push(format!("[channel.timeouts] {} is refused:\n{}\n{text}", k.key, stderr(&out)));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));

    // Accepted -> documented, table by table.
    let mut documented: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for k in &keys {
        documented.entry(k.table.clone()).or_default().insert(k.key.clone());
    }
    // The tables are keys of the top level, documented by their sections.
    let table_names: Vec<String> = documented.keys().filter(|t| !t.is_empty()).cloned().collect();
    documented.entry(String::new()).or_default().extend(table_names);
    let timeout_keys = documented.get("timeouts").cloned().unwrap_or_default();
    documented.insert("channel.timeouts".into(), timeout_keys);
    let mut undocumented = Vec::new();
    for (table, doc) in &documented {
        let accepted = accepted_keys(dir.path(), table);
        assert!(!accepted.is_empty(), "no accepted keys read for [{table}]");
        for key in accepted.difference(doc) {
            undocumented.push(format!("[{table}] {key}"));
        }
    }
    assert!(
        undocumented.is_empty(),
        "keys the relay accepts that docs/configuration.md does not document: {undocumented:?}"
    );
}

/// `relay_*` and `process_*` names in the text, file names (`relay_x.wasm`) aside.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let bytes = text.as_bytes();
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    for prefix in ["relay_", "process_"] {
        let mut from = 0;
        while let Some(i) = text[from..].find(prefix).map(|i| i + from) {
            let mut end = i + prefix.len();
            while end < bytes.len()
                && (bytes[end].is_ascii_lowercase() || bytes[end].is_ascii_digit() || bytes[end] == b'_')
            {
                end += 1;
            }
            from = end;
            let starts_word = i == 0 || !word(bytes[i - 1]);
            let file_name = bytes.get(end) == Some(&b'.') && bytes.get(end + 1).is_some_and(|b| word(*b));
            let crate_path = bytes.get(end) == Some(&b':');
            if starts_word
                && !file_name
                && !crate_path
                && end > i + prefix.len()
                && !word(*bytes.get(end).unwrap_or(&b' '))
            {
                names.insert(text[i..end].to_string());
            }
        }
    }
    names
}

/// The demo config (examples/relay.toml) with its upstream pointed at `mock`, plus a slow
/// channel for the resume example; `listen` and `plugin_dir` come from the test relay.
fn demo_config(mock: &Mock) -> String {
    let text = read_doc("examples/relay.toml");
    let body: String = text
        .lines()
        .filter(|l| !l.starts_with("listen") && !l.starts_with("plugin_dir"))
        .map(|l| format!("{l}\n"))
        .collect();
    let slow = "headers = { \"x-mock-chunks\" = \"20\", \"x-mock-chunk-delay-ms\" = \"40\" }";
    body.replace("http://127.0.0.1:8081/v1", &mock.base_url())
        + &channel("docs-slow", &mock.base_url(), "docs-slow-gpt", slow)
}

async fn demo_relay() -> (Mock, TestRelay) {
    let mock = Mock::start(Options::default()).await.expect("mock starts");
    let config = demo_config(&mock);
    let relay = TestRelay::start(Setup { config: &config, adapters: &["openai"], env: &[] }).await;
    (mock, relay)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_in_the_docs_exists_and_every_metric_is_documented() {
    let (_mock, relay) = demo_relay().await;
    let a = relay
        .request(Method::POST, "/v1/chat/completions", Some(DEMO_KEY), &chat_body("demo-gpt", "Hi", false).to_string())
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    let exposition = relay.metrics().await.0;
    // Every family prints `# TYPE` even before its first sample.
    let families: BTreeMap<String, String> = exposition
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_once(' '))
        .map(|(n, k)| (n.to_string(), k.to_string()))
        .collect();
    assert!(families.contains_key("relay_requests_total"), "{exposition}");

    let mut docs = vec![PathBuf::from("README.md")];
    let mut files: Vec<PathBuf> = std::fs::read_dir(workspace_root().join("docs"))
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "md"))
        .collect();
    files.sort();
    docs.extend(files);
    let mut missing = Vec::new();
    for f in &docs {
        let text = std::fs::read_to_string(workspace_root().join(f)).unwrap();
        for name in metric_names(&text) {
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s).filter(|b| families.get(*b).is_some_and(|k| k == "histogram")))
                .unwrap_or(&name);
            if !families.contains_key(family) {
                let shown = f.strip_prefix(workspace_root()).unwrap_or(f);
                missing.push(format!("{}: {name}", shown.display()));
            }
        }
    }
    assert!(missing.is_empty(), "metrics named in the docs that /metrics does not have: {missing:?}");

    // The metrics table of docs/operations.md: every family, with its type.
    let ops = read_doc("docs/operations.md");
    let section = ops.split("\n## Metrics").nth(1).expect("a Metrics section in docs/operations.md");
    let section = section.split("\n## ").next().unwrap_or("");
    let mut table = BTreeMap::new();
    for line in section.lines().filter(|l| l.starts_with("| `")) {
        let row = cells(line);
        let name = code_spans(&row[0]).first().cloned().unwrap_or_default();
        let name = name.split('{').next().unwrap_or("").to_string();
        table.insert(name, row.get(1).cloned().unwrap_or_default());
    }
    let mut problems = Vec::new();
    for (name, kind) in &families {
        match table.get(name) {
            None => problems.push(format!("{name} ({kind}) is not in the metrics table")),
            Some(t) if t != kind => problems.push(format!("{name}: the table says {t}, /metrics says {kind}")),
            Some(_) => {}
        }
    }
    assert!(problems.is_empty(), "docs/operations.md metrics table: {problems:?}");
}

/// One command of a docs code block.
struct DocCommand {
    file: String,
    line: usize,
    text: String,
}

/// The commands of the shell blocks of `file` (see the module doc for the convention).
fn doc_commands(file: &str) -> Vec<DocCommand> {
    let text = read_doc(file);
    let mut out = Vec::new();
    let mut lang: Option<String> = None;
    let mut pending: Option<DocCommand> = None;
    for (n, line) in text.lines().enumerate() {
        if let Some(fence) = line.trim_start().strip_prefix("```") {
            lang = if lang.is_some() { None } else { Some(fence.trim().to_string()) };
            continue;
        }
        let Some(l) = lang.as_deref() else { continue };
        if let Some(mut cmd) = pending.take() {
            let piece = line.trim();
            cmd.text.push(' ');
            cmd.text.push_str(piece.trim_end_matches('\\').trim());
            if piece.ends_with('\\') {
                pending = Some(cmd);
            } else {
                out.push(cmd);
            }
            continue;
        }
        let cmd = match l {
            "sh" | "bash" | "shell" => Some(line.trim()),
            "console" => line.strip_prefix("$ "),
            _ => None,
        };
        let Some(cmd) = cmd.filter(|c| !c.is_empty() && !c.starts_with('#')) else { continue };
        // A trailing `# comment` (outside quotes, as the docs write them).
        let cmd = cmd.split("  #").next().unwrap_or(cmd).trim_end();
        let c = DocCommand { file: file.to_string(), line: n + 1, text: cmd.trim_end_matches('\\').trim().to_string() };
        if cmd.ends_with('\\') {
            pending = Some(c);
        } else {
            out.push(c);
        }
    }
    out
}

/// The program a command runs, past `VAR=value` assignments.
fn program(cmd: &str) -> &str {
    cmd.split_whitespace().find(|w| !w.contains('=')).unwrap_or("")
}

fn venv_python() -> PathBuf {
    prepare_venv().unwrap_or_else(|why| panic!("the docs' Python example needs python3 (with pip) and PyPI:\n{why}"))
}

/// A TCP proxy to `to` that cuts its first connection mid-body, right after the answer's
/// `id: 3` line; later connections pass through. Returns its address and a count of the
/// connections it took.
fn cutting_proxy(to: std::net::SocketAddr) -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let count = Arc::new(AtomicUsize::new(0));
    let c = count.clone();
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(mut client) = client else { return };
            let n = c.fetch_add(1, Ordering::SeqCst);
            let Ok(mut upstream) = TcpStream::connect(to) else { return };
            let (mut up_r, mut client_w) = (upstream.try_clone().unwrap(), client.try_clone().unwrap());
            std::thread::spawn(move || {
                let mut seen = Vec::new();
                let mut buf = [0u8; 8192];
                while let Ok(k) = up_r.read(&mut buf) {
                    if k == 0 {
                        break;
                    }
                    let start = seen.len();
                    seen.extend_from_slice(&buf[..k]);
                    let cut = (n == 0).then(|| find(&seen, b"id: 3\n")).flatten();
                    if let Some(at) = cut {
                        // Up to the end of the `id: 3` line, inside an HTTP chunk: the client
                        // sees a body that stops mid-chunk.
                        let end = at + b"id: 3\n".len();
                        if end > start {
                            let _ = client_w.write_all(&seen[start..end]);
                        }
                        let _ = client_w.shutdown(std::net::Shutdown::Both);
                        let _ = up_r.shutdown(std::net::Shutdown::Both);
                        return;
                    }
                    if client_w.write_all(&buf[..k]).is_err() {
                        break;
                    }
                }
                let _ = client_w.shutdown(std::net::Shutdown::Write);
            });
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut client, &mut upstream);
                let _ = upstream.shutdown(std::net::Shutdown::Write);
            });
        }
    });
    (addr, count)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The first ```python block of docs/async.md.
fn python_example() -> String {
    let text = read_doc("docs/async.md");
    let start = text.find("```python\n").expect("a python block in docs/async.md") + "```python\n".len();
    let len = text[start..].find("```").expect("the python block ends");
    text[start..start + len].to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_docs_commands_run() {
    let (_mock, relay) = demo_relay().await;
    let url = format!("http://{}", relay.addr);
    let bin_dir = relay_bin().parent().unwrap().to_path_buf();
    let path = format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap_or_default());
    let template = workspace_root().join("target/fixtures/plugin-template.wasm");

    let mut commands = Vec::new();
    let mut docs = vec!["README.md".to_string()];
    let mut files: Vec<String> = std::fs::read_dir(workspace_root().join("docs"))
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".md"))
        .map(|n| format!("docs/{n}"))
        .collect();
    files.sort();
    docs.extend(files);
    for f in &docs {
        commands.extend(doc_commands(f));
    }
    let mut job_id: Option<String> = None;
    // The last Responses id a command printed, for the commands that name one (`resp_…`).
    let mut response_id: Option<String> = None;
    let (mut ran, mut failures) = (0, Vec::new());
    for c in commands.iter().filter(|c| matches!(program(&c.text), "relay" | "curl")) {
        if SKIP.iter().any(|(prefix, _)| c.text.starts_with(prefix)) {
            continue;
        }
        let mut cmd = c
            .text
            .replace(DEMO_URL, &url)
            .replace("target/wasm32-wasip2/release/relay_myvendor.wasm", &template.display().to_string());
        if program(&cmd) == "curl" {
            // An HTTP error is a failed command; nothing waits forever.
            cmd = cmd.replacen("curl ", "curl --fail-with-body --max-time 20 ", 1);
        }
        if cmd.contains("job_") {
            let Some(id) = &job_id else {
                failures.push(format!("{}:{}: names a job before any was submitted: {}", c.file, c.line, c.text));
                continue;
            };
            cmd = cmd.replace("job_00063f1c2a9b4e1042d1f00c", id).replace("job_…", id);
        }
        if cmd.contains("resp_…") {
            let Some(id) = &response_id else {
                failures.push(format!("{}:{}: names a response before any was created: {}", c.file, c.line, c.text));
                continue;
            };
            cmd = cmd.replace("resp_…", id);
        }
        // Run from the repository's root, as the docs' relative paths are written.
        let out = Command::new("sh")
            .arg("-c")
            .arg(&cmd)
            .current_dir(workspace_root())
            .env("KEY", DEMO_KEY)
            .env("PATH", &path)
            .output()
            .unwrap();
        ran += 1;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        if !out.status.success() {
            failures.push(format!(
                "{}:{}: `{}` failed ({}):\n{stdout}{}",
                c.file,
                c.line,
                c.text,
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ));
            continue;
        }
        if let Some(i) = stdout.find("\"id\":\"resp_") {
            response_id = stdout[i + 6..].split('"').next().map(str::to_string);
        }
        if let Some(i) = stdout.find("\"id\":\"job_") {
            let id = &stdout[i + 6..];
            job_id = id.split('"').next().map(str::to_string);
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    assert!(ran >= 8, "only {ran} documented commands ran; did the docs' blocks change shape?");

    // The Python resume example: through a proxy that cuts the first stream mid-body, it
    // reconnects with Last-Event-ID and prints the whole answer once.
    let python = venv_python();
    let body = chat_body("docs-slow-gpt", "a long story", false).to_string();
    let a = relay
        .request_with(Method::POST, "/v1/chat/completions", Some(DEMO_KEY), &[("prefer", "respond-async")], &body)
        .await;
    assert_eq!(a.status, StatusCode::ACCEPTED, "{}", a.text());
    let id = a.json()["id"].as_str().unwrap().to_string();
    let (proxy, connections) = cutting_proxy(relay.addr);
    let script = format!("import sys\nbase, job, key = sys.argv[1:4]\n{}", python_example());
    let mut child = Command::new(&python)
        .arg("-c")
        .arg(&script)
        .arg(format!("http://{proxy}"))
        .arg(&id)
        .arg(DEMO_KEY)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let end = Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > end {
            let _ = child.kill();
            panic!("the python example did not finish within 30 s: {:?}", child.wait_with_output());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let out = child.wait_with_output().unwrap();
    let printed = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "the python example failed:\n{printed}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(connections.load(Ordering::SeqCst) >= 2, "the example never reconnected");
    let v: Value = relay.request(Method::GET, &format!("/v1/jobs/{id}"), Some(DEMO_KEY), "").await.json();
    assert_eq!(v["status"], "succeeded", "{v}");
    let content = v["result"]["choices"][0]["message"]["content"].as_str().unwrap_or_default();
    assert!(!content.is_empty(), "{v}");
    assert_eq!(printed, content, "the example printed the answer with a gap or a duplicate");
}
