//! Shared helpers for the end-to-end tests: the real `relay` binary started on a free
//! loopback port with a generated config, an HTTP client, SSE and metrics readers.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

pub use demo_upstream::{Mock, Options};

/// The client key every test config defines.
pub const CLIENT_KEY: &str = "sk-test-client";
/// The vendor key the mock expects.
pub const UPSTREAM_KEY: &str = "sk-demo-upstream";

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ has a parent").to_path_buf()
}

pub fn relay_bin() -> PathBuf {
    let bin = std::env::var_os("RELAY_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target/release/relay"));
    assert!(bin.exists(), "{} is missing: run `make build` first (make test does)", bin.display());
    bin
}

/// A built adapter: `plugins.d/<name>.wasm` for shipped ones, `target/fixtures/<name>.wasm`
/// for test-only ones (`make fixtures`).
pub fn adapter_wasm(name: &str) -> PathBuf {
    let shipped = workspace_root().join("plugins.d").join(format!("{name}.wasm"));
    if shipped.exists() {
        return shipped;
    }
    let fixture = workspace_root().join("target/fixtures").join(format!("{name}.wasm"));
    assert!(fixture.exists(), "{} is missing: run `make build fixtures` first", fixture.display());
    fixture
}

pub struct TestRelay {
    pub addr: SocketAddr,
    pub dir: tempfile::TempDir,
    child: Child,
    logs: Arc<Mutex<String>>,
    client: Client<HttpConnector, Full<Bytes>>,
}

impl Drop for TestRelay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What a test asks of a relay: the config's body (channels, tokens, tables) and the
/// adapters to put in its plugin directory.
pub struct Setup<'a> {
    pub config: &'a str,
    pub adapters: &'a [&'a str],
    pub env: &'a [(&'a str, &'a str)],
}

impl TestRelay {
    /// A relay with the OpenAI adapter and one token allowed every model.
    pub async fn openai(channels: &str) -> TestRelay {
        let config = format!("{channels}\n{}", token_block(CLIENT_KEY, "*"));
        Self::start(Setup { config: &config, adapters: &["openai"], env: &[] }).await
    }

    pub async fn start(setup: Setup<'_>) -> TestRelay {
        Self::try_start(setup).await.unwrap_or_else(|e| panic!("relay did not start: {e}"))
    }

    /// Start the binary; `Err` carries what it printed if it exited instead.
    pub async fn try_start(setup: Setup<'_>) -> Result<TestRelay, String> {
        let dir = tempfile::tempdir().expect("temp dir");
        Self::start_in(dir, setup).await
    }

    /// Start (again) in an existing folder, e.g. to restart with the same data dir.
    pub async fn start_in(dir: tempfile::TempDir, setup: Setup<'_>) -> Result<TestRelay, String> {
        let plugins = dir.path().join("plugins");
        std::fs::create_dir_all(&plugins).expect("plugin dir");
        for a in setup.adapters {
            // Fixture variants (`tagged-a`) are served under their adapter's file name.
            let file = a.split('-').next().filter(|_| a.starts_with("tagged-")).unwrap_or(a);
            std::fs::copy(adapter_wasm(a), plugins.join(format!("{file}.wasm"))).expect("copy adapter");
        }
        let config = format!(
            "listen = \"127.0.0.1:0\"\nplugin_dir = \"plugins\"\n{}\n",
            // Top-level keys must come before the first table.
            setup.config
        );
        let path = dir.path().join("relay.toml");
        std::fs::write(&path, config).expect("write config");

        let mut cmd = Command::new(relay_bin());
        cmd.arg("serve").arg("--config").arg(&path).stdout(Stdio::piped()).stderr(Stdio::piped());
        cmd.env("RELAY_LOG", "info");
        for (k, v) in setup.env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().map_err(|e| e.to_string())?;
        let logs = Arc::new(Mutex::new(String::new()));
        let stderr = child.stderr.take().expect("piped");
        let l = logs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut g = l.lock().unwrap();
                g.push_str(&line);
                g.push('\n');
            }
        });
        let stdout = child.stdout.take().expect("piped");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(a) = line.strip_prefix("relay listening on http://") {
                    let _ = tx.send(a.parse::<SocketAddr>().ok());
                }
            }
            let _ = tx.send(None);
        });
        let addr = tokio::task::spawn_blocking(move || rx.recv_timeout(Duration::from_secs(60)))
            .await
            .expect("join")
            .ok()
            .flatten();
        let Some(addr) = addr else {
            let _ = child.kill();
            let status = child.wait().ok();
            std::thread::sleep(Duration::from_millis(100));
            return Err(format!("exit {status:?}; stderr:\n{}", logs.lock().unwrap()));
        };
        // No client-side pooling: each request has its own connection, so the relay's task
        // gauge does not depend on how many idle connections this client happens to keep.
        let client = Client::builder(TokioExecutor::new()).pool_max_idle_per_host(0).build_http();
        Ok(TestRelay { addr, dir, child, logs, client })
    }

    /// The relay's plugin directory (`<temp>/plugins`).
    pub fn plugin_dir(&self) -> PathBuf {
        self.dir.path().join("plugins")
    }

    /// The relay's config file.
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("relay.toml")
    }

    /// Put `src` at `plugins/<name>.wasm` the way operators are told to: copy to a
    /// temporary name in the same folder, then rename over.
    pub fn install_adapter(&self, src: &Path, name: &str) {
        let tmp = self.plugin_dir().join(format!(".{name}.wasm.part"));
        std::fs::copy(src, &tmp).expect("copy");
        std::fs::rename(&tmp, self.plugin_dir().join(format!("{name}.wasm"))).expect("rename");
    }

    pub fn logs(&self) -> String {
        self.logs.lock().unwrap().clone()
    }

    /// The log so far, once it holds `needle` (log lines arrive through a pipe, a moment
    /// after the response). After 10 s it returns the log without it: check the result, or
    /// use `expect_log`.
    #[must_use = "the log may not hold the needle: check it, or use expect_log"]
    pub async fn wait_log(&self, needle: &str) -> String {
        let end = Instant::now() + Duration::from_secs(10);
        loop {
            let logs = self.logs();
            if logs.contains(needle) || Instant::now() > end {
                return logs;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The log once it holds `needle`; fails the test, showing the log, if it does not within 10 s.
    pub async fn expect_log(&self, needle: &str) -> String {
        let logs = self.wait_log(needle).await;
        assert!(logs.contains(needle), "the relay did not log {needle:?} within 10 s; its log:\n{logs}");
        logs
    }

    /// Wait until the relay holds no more than `fds` file descriptors, or fail after `within`.
    pub async fn assert_fds_back(&self, fds: usize, within: Duration) {
        let end = Instant::now() + within;
        loop {
            let now = self.open_fds();
            if now <= fds {
                return;
            }
            assert!(Instant::now() < end, "file descriptors: {now} now, {fds} at the baseline");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The first access-log line holding `needle` (e.g. `request_id=req_1 `); fails the
    /// test, showing the log, if none comes within 10 s.
    pub async fn access_line(&self, needle: &str) -> String {
        let end = Instant::now() + Duration::from_secs(10);
        loop {
            let logs = self.logs();
            if let Some(line) = logs.lines().find(|l| l.contains("relay::access") && l.contains(needle)) {
                return line.to_string();
            }
            assert!(Instant::now() < end, "no access line with {needle:?} within 10 s in:\n{logs}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stop the process and hand back its folder (plugins, data dir) for a restart.
    pub fn stop(mut self) -> tempfile::TempDir {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let dir = tempfile::tempdir().expect("temp dir");
        std::mem::replace(&mut self.dir, dir)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// File descriptors the relay process holds now (sockets, the store, the log pipes).
    pub fn open_fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid())).map_or(0, |d| d.count())
    }

    /// Send a signal to the relay process (e.g. "TERM").
    pub fn signal(&self, name: &str) {
        let ok = Command::new("kill").arg(format!("-{name}")).arg(self.pid().to_string()).status();
        assert!(ok.is_ok_and(|s| s.success()), "kill -{name} failed");
    }

    /// Wait for the process to exit, up to `within`.
    #[must_use = "None means the relay did not exit"]
    pub async fn wait_exit(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let end = Instant::now() + within;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() > end {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Live gauges that must come back to their baseline after any fault.
    pub async fn gauges(&self) -> Gauges {
        let m = self.metrics().await;
        Gauges {
            inflight: m.gauge("relay_inflight_requests"),
            streams: m.gauge("relay_active_streams"),
            upstream_connections: m.gauge("relay_upstream_connections_open"),
            tasks: m.gauge("relay_runtime_alive_tasks"),
        }
    }

    /// Wait until the gauges are back at `baseline`, or fail naming what stayed up.
    pub async fn assert_back_to(&self, baseline: Gauges, within: Duration) {
        let end = Instant::now() + within;
        loop {
            let g = self.gauges().await;
            if g == baseline {
                return;
            }
            if Instant::now() > end {
                panic!("gauges did not return to baseline within {within:?}: now {g:?}, baseline {baseline:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub async fn request(&self, method: Method, path: &str, key: Option<&str>, body: &str) -> Answer {
        self.request_with(method, path, key, &[], body).await
    }

    pub async fn request_with(
        &self,
        method: Method,
        path: &str,
        key: Option<&str>,
        headers: &[(&str, &str)],
        body: &str,
    ) -> Answer {
        let mut b = Request::builder().method(method).uri(self.url(path)).header("content-type", "application/json");
        if let Some(k) = key {
            b = b.header("authorization", format!("Bearer {k}"));
        }
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let req = b.body(Full::new(Bytes::from(body.to_string()))).expect("request");
        let resp = self.client.request(req).await.expect("relay answers");
        let (parts, body) = resp.into_parts();
        let body = body.collect().await.expect("body").to_bytes();
        Answer { status: parts.status, headers: parts.headers, body }
    }

    pub async fn chat(&self, body: &Value) -> Answer {
        self.request(Method::POST, "/v1/chat/completions", Some(CLIENT_KEY), &body.to_string()).await
    }

    pub async fn metrics(&self) -> Metrics {
        let a = self.request(Method::GET, "/metrics", None, "").await;
        assert_eq!(a.status, StatusCode::OK);
        Metrics(String::from_utf8_lossy(&a.body).into_owned())
    }

    /// Poll `/metrics` until `check` holds or `within` passes; returns the last reading,
    /// which may fail `check`: test it, or use `expect_metrics`.
    #[must_use = "the reading may fail the check: test it, or use expect_metrics"]
    pub async fn wait_metrics(&self, within: Duration, check: impl Fn(&Metrics) -> bool) -> Metrics {
        let end = Instant::now() + within;
        loop {
            let m = self.metrics().await;
            if check(&m) || Instant::now() > end {
                return m;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Poll `/metrics` until `check` holds; fails the test naming `what` (and showing the
    /// relay's own series) if it does not within `within`.
    pub async fn expect_metrics(&self, what: &str, within: Duration, check: impl Fn(&Metrics) -> bool) -> Metrics {
        let m = self.wait_metrics(within, &check).await;
        if !check(&m) {
            let relay_lines: Vec<&str> = m.0.lines().filter(|l| l.starts_with("relay_")).collect();
            panic!("timed out after {within:?} waiting for {what}; /metrics:\n{}", relay_lines.join("\n"));
        }
        m
    }
}

pub fn token_block(key: &str, models: &str) -> String {
    let models: Vec<String> = models.split(',').map(|m| format!("\"{}\"", m.trim())).collect();
    format!("[[token]]\nname = \"test\"\nkey = \"{key}\"\nmodels = [{}]\n", models.join(", "))
}

/// A config for fault tests: short pool idle time, so that every upstream connection is
/// closed soon after use and "back to baseline" means zero open connections.
pub const FAST_POOL: &str = "[limits]\npool_idle_timeout = 0.5\n";

/// Start a relay for fault tests, make one good request on every channel so the pool and
/// the client connection exist, wait for the pool to empty, and return the baseline.
pub async fn relay_with_baseline(config: &str, warm_models: &[&str]) -> (TestRelay, Gauges) {
    relay_with_baseline_env(config, warm_models, &[]).await
}

/// `relay_with_baseline` with environment variables for the relay process.
pub async fn relay_with_baseline_env(config: &str, warm_models: &[&str], env: &[(&str, &str)]) -> (TestRelay, Gauges) {
    let config = format!("{FAST_POOL}{config}{}", token_block(CLIENT_KEY, "*"));
    let relay = TestRelay::start(Setup { config: &config, adapters: &["openai"], env }).await;
    let baseline = warm_baseline(&relay, warm_models).await;
    (relay, baseline)
}

/// A `[[channel]]` table for the OpenAI adapter pointing at `base_url`.
pub fn channel(name: &str, base_url: &str, models: &str, extra: &str) -> String {
    let models: Vec<String> = models.split(',').map(|m| format!("\"{}\"", m.trim())).collect();
    format!(
        "[[channel]]\nname = \"{name}\"\nadapter = \"openai\"\nbase_url = \"{base_url}\"\napi_key = \"{UPSTREAM_KEY}\"\nmodels = [{}]\n{extra}\n",
        models.join(", ")
    )
}

pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Answer {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The `data:` payloads of an SSE body, in order.
    pub fn sse_data(&self) -> Vec<String> {
        sse_data(&self.text())
    }

    /// Assert the OpenAI error shape and return (message, code).
    pub fn openai_error(&self) -> (String, Value) {
        let v = self.json();
        let e = &v["error"];
        assert!(e.is_object(), "not an OpenAI error: {v}");
        assert!(e["message"].is_string(), "error without message: {v}");
        assert!(e["type"].is_string(), "error without type: {v}");
        assert!(e.get("code").is_some() && e.get("param").is_some(), "error without code/param: {v}");
        (e["message"].as_str().unwrap().to_string(), e["code"].clone())
    }
}

/// The named events of an SSE body (Messages, Responses): `(event, data as JSON)`; an
/// event whose data is not JSON fails the test, showing it.
pub fn sse_events(text: &str) -> Vec<(String, Value)> {
    text.split("\n\n")
        .filter(|e| !e.trim().is_empty())
        .map(|e| {
            let name = e.lines().find_map(|l| l.strip_prefix("event: ")).unwrap_or_default().to_string();
            let data: Vec<&str> = e.lines().filter_map(|l| l.strip_prefix("data: ")).collect();
            let data =
                serde_json::from_str(&data.join("\n")).unwrap_or_else(|err| panic!("event not JSON ({err}): {e}"));
            (name, data)
        })
        .collect()
}

pub fn sse_data(text: &str) -> Vec<String> {
    text.split("\n\n")
        .filter_map(|ev| {
            let data: Vec<&str> = ev.lines().filter_map(|l| l.strip_prefix("data: ")).collect();
            (!data.is_empty()).then(|| data.join("\n"))
        })
        .collect()
}

/// The content deltas of OpenAI chat chunks, joined.
pub fn joined_content(chunks: &[String]) -> String {
    chunks
        .iter()
        .filter(|c| c.as_str() != "[DONE]")
        .filter_map(|c| serde_json::from_str::<Value>(c).ok())
        .filter_map(|v| v.pointer("/choices/0/delta/content").and_then(Value::as_str).map(str::to_owned))
        .collect()
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Gauges {
    pub inflight: f64,
    pub streams: f64,
    pub upstream_connections: f64,
    pub tasks: f64,
}

pub struct Metrics(pub String);

impl Metrics {
    /// The sum of every sample of `name` whose labels contain all of `labels`.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.0
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter(|l| l.starts_with(name) && matches!(l.as_bytes().get(name.len()), Some(b' ') | Some(b'{')))
            .filter(|l| labels.iter().all(|(k, v)| l.contains(&format!("{k}=\"{v}\""))))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    pub fn gauge(&self, name: &str) -> f64 {
        self.value(name, &[])
    }
}

pub fn chat_body(model: &str, content: &str, stream: bool) -> Value {
    let mut v = serde_json::json!({"model": model, "messages": [{"role": "user", "content": content}]});
    if stream {
        v["stream"] = Value::Bool(true);
    }
    v
}

/// A vendor spoken as raw HTTP/1.1 with keep-alive, for tests that must see exactly what the
/// relay sent: it records each request head as received (request line and headers, case
/// kept), counts its open sockets, answers each request with what `answer` returns for its
/// head (a whole response, with a `content-length`, in pieces written 200 ms apart), and
/// closes every socket on demand.
pub struct RecordingVendor {
    pub addr: SocketAddr,
    heads: Arc<Mutex<Vec<String>>>,
    open: Arc<std::sync::atomic::AtomicUsize>,
    accepted: Arc<std::sync::atomic::AtomicUsize>,
    close: Arc<tokio::sync::watch::Sender<u64>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for RecordingVendor {
    fn drop(&mut self) {
        self.task.abort();
        self.close.send_modify(|g| *g += 1);
    }
}

impl RecordingVendor {
    pub async fn start<F, Fut>(answer: F) -> RecordingVendor
    where
        F: Fn(String) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Vec<Vec<u8>>> + Send + 'static,
    {
        use std::sync::atomic::Ordering::SeqCst;
        use tokio::io::AsyncWriteExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address");
        let heads: Arc<Mutex<Vec<String>>> = Arc::default();
        let open = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let close = Arc::new(tokio::sync::watch::Sender::new(0u64));
        let answer = Arc::new(answer);
        let (h, o, a, c) = (heads.clone(), Arc::clone(&open), Arc::clone(&accepted), close.clone());
        let task = tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let _ = s.set_nodelay(true);
                a.fetch_add(1, SeqCst);
                o.fetch_add(1, SeqCst);
                let (h, o, answer, mut closed) = (h.clone(), o.clone(), answer.clone(), c.subscribe());
                tokio::spawn(async move {
                    let serve = async {
                        let mut buf = Vec::new();
                        while let Some(head) = read_one_request(&mut s, &mut buf).await {
                            h.lock().unwrap().push(head.clone());
                            let pieces: Vec<Vec<u8>> = answer(head).await;
                            for (i, piece) in pieces.into_iter().enumerate() {
                                if i > 0 {
                                    tokio::time::sleep(Duration::from_millis(200)).await;
                                }
                                if s.write_all(&piece).await.is_err() {
                                    return;
                                }
                            }
                        }
                    };
                    // Bounded: no vendor socket outlives a test by much.
                    tokio::select! {
                        _ = serve => {}
                        _ = closed.changed() => {}
                        _ = tokio::time::sleep(Duration::from_secs(60)) => {}
                    }
                    o.fetch_sub(1, SeqCst);
                });
            }
        });
        RecordingVendor { addr, heads, open, accepted, close, task }
    }

    /// The base URL with OpenAI's `/v1`.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// Every request head received so far, in order.
    pub fn heads(&self) -> Vec<String> {
        self.heads.lock().unwrap().clone()
    }

    /// Sockets the relay has open to this vendor now.
    pub fn open(&self) -> usize {
        self.open.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Connections accepted since start.
    pub fn accepted(&self) -> usize {
        self.accepted.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Close every socket open now (idle pooled ones included), and wait until they are.
    pub async fn close_all(&self) {
        self.close.send_modify(|g| *g += 1);
        let end = Instant::now() + Duration::from_secs(10);
        while self.open() > 0 {
            assert!(Instant::now() < end, "vendor sockets did not close");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// One request from a keep-alive socket (`buf` keeps what was read past it): its head, or
/// `None` when the peer closed.
async fn read_one_request(s: &mut tokio::net::TcpStream, buf: &mut Vec<u8>) -> Option<String> {
    use tokio::io::AsyncReadExt;
    let mut tmp = [0u8; 16 * 1024];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = s.read(&mut tmp).await.ok().filter(|n| *n > 0)?;
        buf.extend_from_slice(&tmp[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let len: usize = head
        .lines()
        .find_map(|l| l.split_once(':').filter(|(k, _)| k.eq_ignore_ascii_case("content-length")))
        .and_then(|(_, v)| v.trim().parse().ok())
        .unwrap_or(0);
    while buf.len() < head_end + len {
        let n = s.read(&mut tmp).await.ok().filter(|n| *n > 0)?;
        buf.extend_from_slice(&tmp[..n]);
    }
    buf.drain(..head_end + len);
    Some(head)
}

/// A whole HTTP/1.1 response with a JSON body.
pub fn json_response(status: u16, body: &str) -> Vec<u8> {
    format!("HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}", body.len())
        .into_bytes()
}

/// An OpenAI chat completion whose message is `content`.
pub fn completion_json(content: &str) -> String {
    serde_json::json!({
        "id": "chatcmpl-rec", "object": "chat.completion", "created": 1, "model": "rec",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}
    })
    .to_string()
}

/// The value of header `name` (any case) in a recorded request head.
pub fn head_header<'a>(head: &'a str, name: &str) -> Vec<&'a str> {
    head.lines()
        .filter_map(|l| l.split_once(':'))
        .filter(|(k, _)| k.trim().eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim())
        .collect()
}

/// Warm a started relay up (a good request on each model), wait for the upstream pool to
/// empty, and return the first gauge reading that holds still: the baseline for a relay
/// that `relay_with_baseline` cannot start (its own top-level keys, adapters or env).
pub async fn warm_baseline(relay: &TestRelay, warm_models: &[&str]) -> Gauges {
    for m in warm_models {
        let a = relay.chat(&chat_body(m, "warm up", false)).await;
        assert_eq!(a.status, StatusCode::OK, "warm-up on {m}: {}", a.text());
    }
    let m = relay.wait_metrics(Duration::from_secs(10), |m| m.gauge("relay_upstream_connections_open") == 0.0).await;
    assert_eq!(m.gauge("relay_upstream_connections_open"), 0.0, "the pool did not empty after the warm-up");
    // Connections close asynchronously (the warm-up's, the pool's idle reaper): the
    // baseline is the first reading that holds still.
    let end = Instant::now() + Duration::from_secs(10);
    let mut baseline = relay.gauges().await;
    loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let again = relay.gauges().await;
        if again == baseline || Instant::now() > end {
            break;
        }
        baseline = again;
    }
    assert_eq!((baseline.inflight, baseline.streams, baseline.upstream_connections), (0.0, 0.0, 0.0));
    baseline
}

/// Set to `1` to skip the SDK checks on a machine without Python; CI never sets it.
pub const SKIP_SDK_VAR: &str = "RELAY_SKIP_SDK";

/// The SDK checks' interpreter (`prepare_venv`), set up once per test binary; `None` only
/// when the checks are skipped on purpose (`RELAY_SKIP_SDK=1`, outside CI). Anything else
/// that keeps them from running fails the test, saying why. `sdk` names the checks ("OpenAI
/// SDK", "Anthropic SDK") in the messages.
pub fn sdk_python(sdk: &str) -> Option<PathBuf> {
    use std::io::Write;
    use std::sync::{Once, OnceLock};
    static PYTHON: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    static NOTICE: Once = Once::new();
    let skip = std::env::var(SKIP_SDK_VAR).is_ok_and(|v| v == "1");
    if skip && std::env::var_os("CI").is_some() {
        panic!("{SKIP_SDK_VAR}=1 is not honoured when CI is set: CI runs the {sdk} checks");
    }
    if skip {
        // Straight to stderr: the test harness keeps what `eprintln!` says from passing tests.
        NOTICE.call_once(|| {
            let bar = "!".repeat(100);
            let _ = writeln!(
                std::io::stderr(),
                "\n{bar}\nSKIPPED ({SKIP_SDK_VAR}=1): the {sdk} checks did not run; nothing here is tested.\n{bar}\n"
            );
        });
        return None;
    }
    match PYTHON.get_or_init(prepare_venv) {
        Ok(python) => Some(python.clone()),
        Err(why) => panic!(
            "the {sdk} checks need python3 (with pip) and PyPI to make target/sdk-venv:\n{why}\n\
             Install python3 and python3-pip (apt-get install python3 python3-pip python3-venv), \
             or set {SKIP_SDK_VAR}=1 to skip these checks on purpose."
        ),
    }
}

/// The Python clients' virtualenv (target/sdk-venv, from tests/sdk/requirements.txt: the
/// pinned OpenAI SDK, `requests`): its interpreter once it has them, or why it cannot have them.
/// Made or repaired on first use; shared by the SDK checks and the docs check.
pub fn prepare_venv() -> Result<PathBuf, String> {
    let root = workspace_root();
    let requirements = root.join("tests/sdk/requirements.txt");
    let pin = pinned_sdk(&requirements)?;
    let venv = root.join("target/sdk-venv");
    let python = venv.join("bin/python");
    let anthropic_pin = pinned(&requirements, "anthropic")?;
    let complete = |python: &Path| {
        installed_sdk(python).as_deref() == Some(pin.as_str())
            && has_requests(python)
            && installed(python, "anthropic").as_deref() == Some(anthropic_pin.as_str())
    };
    if complete(&python) {
        return Ok(python);
    }
    // Over an existing venv this only repairs it; the install then brings the pinned version.
    let mut pip = match run_ok(Command::new("python3").args(["-m", "venv"]).arg(&venv), "python3 -m venv") {
        Ok(()) => {
            let mut pip = Command::new(&python);
            pip.args(["-m", "pip"]);
            pip
        }
        // Debian keeps venv's pip bootstrap (ensurepip) in python3-venv: without it, make a
        // bare venv and install into it with the system's pip (`--python`, pip 22.3+).
        Err(full) => {
            let mut bare = Command::new("python3");
            bare.args(["-m", "venv", "--without-pip"]).arg(&venv);
            run_ok(&mut bare, "python3 -m venv --without-pip").map_err(|e| format!("{full}\n{e}"))?;
            let mut pip = Command::new("python3");
            pip.args(["-m", "pip", "--python"]).arg(&python);
            pip
        }
    };
    pip.args(["install", "--quiet", "--disable-pip-version-check", "-r"]).arg(&requirements);
    run_ok(&mut pip, "pip install -r tests/sdk/requirements.txt")?;
    match installed_sdk(&python) {
        _ if complete(&python) => Ok(python),
        Some(v) if v == pin && !has_requests(&python) => {
            Err("the venv has no `requests` after the install".to_string())
        }
        Some(v) if v == pin => Err(format!(
            "the venv has anthropic {:?} after the install, not {anthropic_pin}",
            installed(&python, "anthropic")
        )),
        other => Err(format!("the venv has openai {other:?} after the install, not {pin}")),
    }
}

/// The `<package>==X` pin of the requirements file.
fn pinned(requirements: &Path, package: &str) -> Result<String, String> {
    let text = std::fs::read_to_string(requirements).map_err(|e| format!("{}: {e}", requirements.display()))?;
    let prefix = format!("{package}==");
    text.lines()
        .find_map(|l| l.trim().strip_prefix(prefix.as_str()))
        .map(str::to_owned)
        .ok_or_else(|| format!("{} pins no {package} version", requirements.display()))
}

/// The version of `package` the interpreter has, if it runs and has one.
fn installed(python: &Path, package: &str) -> Option<String> {
    let out = Command::new(python)
        .args(["-c", &format!("import importlib.metadata as m; print(m.version('{package}'))")])
        .output()
        .ok()
        .filter(|o| o.status.success())?;
    Some(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The `openai==X` pin of the requirements file.
fn pinned_sdk(requirements: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(requirements).map_err(|e| format!("{}: {e}", requirements.display()))?;
    text.lines()
        .find_map(|l| l.trim().strip_prefix("openai=="))
        .map(str::to_owned)
        .ok_or_else(|| format!("{} pins no openai version", requirements.display()))
}

/// The SDK version the interpreter has, if it runs and has one.
fn installed_sdk(python: &Path) -> Option<String> {
    let out = Command::new(python)
        .args(["-c", "import importlib.metadata as m; print(m.version('openai'))"])
        .output()
        .ok()
        .filter(|o| o.status.success())?;
    Some(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn run_ok(cmd: &mut Command, what: &str) -> Result<(), String> {
    let out = cmd.output().map_err(|e| format!("`{what}` could not start: {e}"))?;
    if out.status.success() {
        return Ok(());
    }
    Err(format!("`{what}` failed ({}):\n{}", out.status, String::from_utf8_lossy(&out.stderr)))
}

/// Whether the interpreter can import `requests` (the docs' Python examples use it).
fn has_requests(python: &Path) -> bool {
    Command::new(python).args(["-c", "import requests"]).output().is_ok_and(|o| o.status.success())
}

/// Run an SDK check script (blocking, off the runtime's threads); fails the test with the
/// script's output and the relay's log unless it exits 0. Returns its stdout, also printed.
pub async fn run_sdk_check(mut cmd: Command, what: &str, relay: &TestRelay) -> String {
    let out = tokio::task::spawn_blocking(move || cmd.output()).await.expect("join").expect("the script starts");
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{what} failed ({}):\n{stdout}{stderr}\nrelay log:\n{}", out.status, relay.logs());
    eprintln!("{stdout}");
    stdout.into_owned()
}

/// Poll `check` every 25 ms until it holds; panics naming `what` after `within`.
pub async fn wait_until(what: &str, within: Duration, mut check: impl AsyncFnMut() -> bool) {
    let end = Instant::now() + within;
    while !check().await {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}
