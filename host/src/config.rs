//! `relay.toml`: parsed, validated and resolved into the runtime configuration.
//!
//! Every default is a named constant; every invalid value stops start-up (or a reload)
//! with a message that names the key, and the line where the file has one.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use http::{HeaderName, HeaderValue, Uri};
use serde::Deserialize;
use toml::Spanned;

/// The seed's defaults: fail fast while connecting, give a 10-minute response 5 minutes
/// of margin, and bound the whole request by the same 15 minutes.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// A resolver that has not answered in 5 s is down (glibc waits 5 s per try too); the
/// lookup is its own stage so a slow resolver cannot eat the connect bound.
pub const DEFAULT_DNS_TIMEOUT: Duration = Duration::from_secs(5);
pub const DEFAULT_RESPONSE_HEADER_TIMEOUT: Duration = Duration::from_secs(900);
/// Vendors send keep-alive pings every few seconds; 5 minutes of silence is a dead stream.
pub const DEFAULT_STREAM_IDLE_TIMEOUT: Duration = Duration::from_secs(300);
pub const DEFAULT_TOTAL_TIMEOUT: Duration = Duration::from_secs(900);
/// A client that cannot upload its prompt in 30 s is stuck, not slow.
pub const DEFAULT_CLIENT_BODY_TIMEOUT: Duration = Duration::from_secs(30);
/// Time for in-flight streams to finish after SIGTERM before they are ended.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(30);
/// Longest accepted bound: a week is already far past any sane request.
const MAX_TIMEOUT_SECS: f64 = 7.0 * 24.0 * 3600.0;
/// Shortest accepted duration: 1 ms, the timers' resolution.
const MIN_DURATION_SECS: f64 = 0.001;

/// Large enough for long multimodal prompts with inline images; bounded so one client
/// cannot make the relay buffer gigabytes.
pub const DEFAULT_MAX_REQUEST_BODY: u64 = 32 * 1024 * 1024;
/// A non-stream vendor response is buffered whole for the adapter; same reasoning.
pub const DEFAULT_MAX_RESPONSE_BODY: u64 = 32 * 1024 * 1024;
/// One SSE event; vendors send a few KiB at most, tool-call arguments included.
pub const DEFAULT_MAX_STREAM_EVENT: usize = 1024 * 1024;
/// Idle upstream connections are closed after this (vendors' own idle cut is ~60-120 s).
pub const DEFAULT_POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// Idle connections kept per upstream host; enough to absorb bursts without hoarding sockets.
pub const DEFAULT_POOL_MAX_IDLE_PER_HOST: usize = 64;
/// Per-instance linear memory cap for an adapter: JSON mapping needs a few MiB at most.
pub const DEFAULT_PLUGIN_MEMORY: u64 = 64 * 1024 * 1024;
/// CPU budget per adapter call; a mapping takes microseconds, a loop is cut at this.
pub const DEFAULT_PLUGIN_CALL_TIMEOUT: Duration = Duration::from_millis(100);
/// Adapter instances alive at once: one per open stream plus transforms in progress; 10,000
/// covers the 5,000-stream target twice over, and costs only address space until used.
pub const DEFAULT_PLUGIN_INSTANCES: u32 = 10_000;
/// Calls (or, for stream hosts, streams) one adapter instance serves before a fresh one
/// replaces it: reuse saves ~30 µs of instantiation per call; a bound keeps any state an
/// adapter leaks from piling up.
pub const DEFAULT_PLUGIN_INSTANCE_USES: u32 = 1_000;
/// Streams sharing one adapter instance: 5,000 streams fit in ~160 instances instead of
/// 5,000, and a trap ends at most this many streams.
pub const DEFAULT_PLUGIN_STREAMS_PER_INSTANCE: u32 = 32;
/// Time for a new connection to deliver its first request head, on every protocol (HTTP/1
/// head, or HTTP/2 preface and first stream); also the HTTP/1 head timer: a client that
/// cannot send a few KiB of headers in 30 s is stuck or hostile.
pub const DEFAULT_CLIENT_HEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// A keep-alive connection with no request in flight is closed after this; 60 s matches
/// common load balancers' idle cut, so the relay is not the first to drop a pooled socket.
pub const DEFAULT_CLIENT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// A write to a client that makes no progress for this long ends the connection: a client
/// that stopped reading (zero window) no longer holds its stream until the total deadline.
/// 60 s leaves a slow mobile link, which still drains, far inside the bound.
pub const DEFAULT_CLIENT_WRITE_TIMEOUT: Duration = Duration::from_secs(60);
/// After the relay closes a connection it keeps reading and discarding what the client still
/// sends for up to this long (nginx's lingering close), so a client uploading a body that was
/// refused early reads the answer instead of a reset. Nothing is buffered, so the only cost
/// is the socket for this long; 5 s drains ~50 MB even at 100 Mbit/s.
pub const DEFAULT_LINGERING_CLOSE: Duration = Duration::from_secs(5);
/// Client connections served at once. Each costs a socket, a task and a few KiB of buffers;
/// 10,000 is twice the 5,000-stream target and fits the usual hard `RLIMIT_NOFILE` (raised to
/// at start) with room for vendor connections.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// Streams one HTTP/2 connection may have open: one client cannot multiply itself past this.
pub const DEFAULT_HTTP2_MAX_CONCURRENT_STREAMS: u32 = 256;
/// HTTP/2 pings on a connection silent this long; a peer that does not answer in
/// `HTTP2_KEEP_ALIVE_TIMEOUT` is gone and its connection is closed.
pub const DEFAULT_HTTP2_KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(30);
/// Request bodies buffered at once, synchronous requests and queued jobs together: 32
/// bodies of the 32 MiB maximum, or thousands of ordinary prompts; past it new bodies get
/// 503 with `Retry-After` instead of the relay growing without bound.
pub const DEFAULT_MAX_INFLIGHT_BODY_BYTES: u64 = 1024 * 1024 * 1024;
/// Default wall-clock bound on one adapter call, as a multiple of `plugin_call_timeout`: the
/// same 20x after which the CPU bound cuts a call that starved for CPU, so a legitimate call
/// on an overloaded host is never cut first by this one.
pub const DEFAULT_PLUGIN_WALL_TIMEOUT_FACTOR: u32 = 20;
pub const DEFAULT_LISTEN: &str = "127.0.0.1:3000";
pub const DEFAULT_PLUGIN_DIR: &str = "plugins.d";
/// The relay's own state (compile cache, job store), next to its config by default.
pub const DEFAULT_DATA_DIR: &str = ".relay";

/// Async jobs: the store's folder under `data_dir`.
pub const DEFAULT_JOBS_DIR: &str = "jobs";
/// A finished job's result is kept a day: time to collect it, not a long-term archive.
pub const DEFAULT_JOB_RETENTION: Duration = Duration::from_secs(24 * 3600);
/// Expired jobs are purged this often; an expired job is at most this late to go.
pub const DEFAULT_JOB_SWEEP_INTERVAL: Duration = Duration::from_secs(60);
/// Jobs running at once; each holds one vendor call, like a synchronous request.
pub const DEFAULT_JOBS_MAX_RUNNING: usize = 64;
/// Jobs waiting for a run slot; past it a submission gets 429. Each holds its body in memory.
pub const DEFAULT_JOBS_MAX_QUEUED: usize = 1024;
/// Stored output of one job; a long answer is a few hundred KiB of chunks.
pub const DEFAULT_JOB_MAX_BYTES: u64 = 16 * 1024 * 1024;
/// Jobs one client key may hold (queued, running, or finished and not yet purged): a job
/// every 90 s around the clock at the default 24 h retention, and less than the queue, so
/// one key cannot fill the queue or the store for every other key.
pub const DEFAULT_JOBS_MAX_PER_OWNER: u64 = 1000;
/// Estimated bytes the job store may hold: 64 jobs at the full per-job output bound, far
/// more than typical answers; past it submissions get 507 and running jobs fail.
pub const DEFAULT_JOB_MAX_STORE_BYTES: u64 = 1024 * 1024 * 1024;
/// Longest retention accepted: a year.
const MAX_RETENTION_SECS: f64 = 365.0 * 24.0 * 3600.0;

/// The resolved configuration the relay runs with.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub plugin_dir: PathBuf,
    pub data_dir: PathBuf,
    /// Bearer token for `/admin/*`; the admin API is off without one.
    pub admin_token: Option<Secret>,
    /// Bearer token for `/metrics`; without one `/metrics` is open (as before).
    pub metrics_token: Option<Secret>,
    pub timeouts: Timeouts,
    pub limits: Limits,
    pub channels: Vec<Channel>,
    pub tokens: Vec<Token>,
    pub jobs: JobsConfig,
    /// Name servers for upstream host names (`ip` or `ip:port`); empty: the system's
    /// (`/etc/resolv.conf`). Applies at start-up.
    pub dns_servers: Vec<SocketAddr>,
}

/// `[jobs]`: the async mode's store and bounds. Applies at start-up.
#[derive(Debug, Clone, PartialEq)]
pub struct JobsConfig {
    /// Folder of the job store.
    pub path: PathBuf,
    pub retention: Duration,
    pub sweep_interval: Duration,
    pub max_running: usize,
    pub max_queued: usize,
    pub max_bytes_per_job: u64,
    pub max_per_owner: u64,
    pub max_store_bytes: u64,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Timeouts {
    pub dns: Duration,
    pub connect: Duration,
    pub tls_handshake: Duration,
    pub response_header: Duration,
    pub stream_idle: Duration,
    pub total: Duration,
    pub client_body: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            dns: DEFAULT_DNS_TIMEOUT,
            connect: DEFAULT_CONNECT_TIMEOUT,
            tls_handshake: DEFAULT_TLS_HANDSHAKE_TIMEOUT,
            response_header: DEFAULT_RESPONSE_HEADER_TIMEOUT,
            stream_idle: DEFAULT_STREAM_IDLE_TIMEOUT,
            total: DEFAULT_TOTAL_TIMEOUT,
            client_body: DEFAULT_CLIENT_BODY_TIMEOUT,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    pub max_request_body: u64,
    pub max_response_body: u64,
    pub max_stream_event: usize,
    pub pool_idle_timeout: Duration,
    pub pool_max_idle_per_host: usize,
    pub plugin_memory: u64,
    pub plugin_call_timeout: Duration,
    pub plugin_instances: u32,
    pub plugin_instance_uses: u32,
    pub plugin_streams_per_instance: u32,
    /// Host wall-clock bound on one adapter call (instantiation and `info()` included).
    pub plugin_wall_timeout: Duration,
    pub shutdown_grace: Duration,
    pub client_header_timeout: Duration,
    pub client_idle_timeout: Duration,
    pub client_write_timeout: Duration,
    pub lingering_close: Duration,
    pub max_connections: usize,
    pub http2_max_concurrent_streams: u32,
    pub http2_keep_alive_interval: Duration,
    pub max_inflight_body_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_request_body: DEFAULT_MAX_REQUEST_BODY,
            max_response_body: DEFAULT_MAX_RESPONSE_BODY,
            max_stream_event: DEFAULT_MAX_STREAM_EVENT,
            pool_idle_timeout: DEFAULT_POOL_IDLE_TIMEOUT,
            pool_max_idle_per_host: DEFAULT_POOL_MAX_IDLE_PER_HOST,
            plugin_memory: DEFAULT_PLUGIN_MEMORY,
            plugin_call_timeout: DEFAULT_PLUGIN_CALL_TIMEOUT,
            plugin_instances: DEFAULT_PLUGIN_INSTANCES,
            plugin_instance_uses: DEFAULT_PLUGIN_INSTANCE_USES,
            plugin_streams_per_instance: DEFAULT_PLUGIN_STREAMS_PER_INSTANCE,
            plugin_wall_timeout: DEFAULT_PLUGIN_CALL_TIMEOUT * DEFAULT_PLUGIN_WALL_TIMEOUT_FACTOR,
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
            client_header_timeout: DEFAULT_CLIENT_HEADER_TIMEOUT,
            client_idle_timeout: DEFAULT_CLIENT_IDLE_TIMEOUT,
            client_write_timeout: DEFAULT_CLIENT_WRITE_TIMEOUT,
            lingering_close: DEFAULT_LINGERING_CLOSE,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            http2_max_concurrent_streams: DEFAULT_HTTP2_MAX_CONCURRENT_STREAMS,
            http2_keep_alive_interval: DEFAULT_HTTP2_KEEP_ALIVE_INTERVAL,
            max_inflight_body_bytes: DEFAULT_MAX_INFLIGHT_BODY_BYTES,
        }
    }
}

#[derive(Clone)]
pub struct Channel {
    pub name: String,
    pub adapter: String,
    /// Scheme, authority and path prefix; never ends with `/`.
    pub base_url: String,
    pub api_key: Option<String>,
    pub models: Vec<String>,
    pub priority: i64,
    pub weight: u32,
    pub settings: Vec<(String, String)>,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub timeouts: Timeouts,
}

// Hand-written so a credential can never reach a log line through `{:?}`.
impl std::fmt::Debug for Channel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Channel")
            .field("name", &self.name)
            .field("adapter", &self.adapter)
            .field("base_url", &self.base_url)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("models", &self.models)
            .field("priority", &self.priority)
            .field("weight", &self.weight)
            .finish_non_exhaustive()
    }
}

/// A credential that never prints.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

#[derive(Clone)]
pub struct Token {
    pub name: String,
    pub key: String,
    /// `*` allows every model.
    pub models: Vec<String>,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Token")
            .field("name", &self.name)
            .field("key", &"<redacted>")
            .field("models", &self.models)
            .finish()
    }
}

impl Token {
    pub fn allows(&self, model: &str) -> bool {
        self.models.iter().any(|m| m == "*" || m == model)
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    listen: Option<Spanned<String>>,
    plugin_dir: Option<PathBuf>,
    data_dir: Option<PathBuf>,
    admin_token: Option<String>,
    admin_token_env: Option<Spanned<String>>,
    metrics_token: Option<String>,
    metrics_token_env: Option<Spanned<String>>,
    #[serde(default)]
    timeouts: RawTimeouts,
    #[serde(default)]
    limits: RawLimits,
    #[serde(default, rename = "channel")]
    channels: Vec<Spanned<RawChannel>>,
    #[serde(default, rename = "token")]
    tokens: Vec<Spanned<RawToken>>,
    #[serde(default)]
    jobs: RawJobs,
    dns_servers: Option<Vec<Spanned<String>>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawJobs {
    path: Option<PathBuf>,
    retention: Option<Spanned<f64>>,
    sweep_interval: Option<Spanned<f64>>,
    max_running: Option<Spanned<u64>>,
    max_queued: Option<Spanned<u64>>,
    max_bytes_per_job: Option<Spanned<u64>>,
    max_per_owner: Option<Spanned<u64>>,
    max_store_bytes: Option<Spanned<u64>>,
}

#[derive(Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
struct RawTimeouts {
    dns: Option<Spanned<f64>>,
    connect: Option<Spanned<f64>>,
    tls_handshake: Option<Spanned<f64>>,
    response_header: Option<Spanned<f64>>,
    stream_idle: Option<Spanned<f64>>,
    total: Option<Spanned<f64>>,
    client_body: Option<Spanned<f64>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    max_request_body: Option<Spanned<u64>>,
    max_response_body: Option<Spanned<u64>>,
    max_stream_event: Option<Spanned<u64>>,
    pool_idle_timeout: Option<Spanned<f64>>,
    pool_max_idle_per_host: Option<usize>,
    plugin_memory_mib: Option<Spanned<u64>>,
    plugin_call_timeout_ms: Option<Spanned<u64>>,
    plugin_instances: Option<Spanned<u64>>,
    plugin_instance_uses: Option<Spanned<u64>>,
    plugin_streams_per_instance: Option<Spanned<u64>>,
    plugin_wall_timeout_ms: Option<Spanned<u64>>,
    shutdown_grace: Option<Spanned<f64>>,
    client_header_timeout: Option<Spanned<f64>>,
    client_idle_timeout: Option<Spanned<f64>>,
    client_write_timeout: Option<Spanned<f64>>,
    lingering_close: Option<Spanned<f64>>,
    max_connections: Option<Spanned<u64>>,
    http2_max_concurrent_streams: Option<Spanned<u64>>,
    http2_keep_alive_interval: Option<Spanned<f64>>,
    max_inflight_body_bytes: Option<Spanned<u64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawChannel {
    name: String,
    adapter: String,
    base_url: Spanned<String>,
    api_key: Option<String>,
    api_key_env: Option<Spanned<String>>,
    models: Vec<String>,
    #[serde(default)]
    priority: i64,
    weight: Option<Spanned<u32>>,
    #[serde(default)]
    settings: BTreeMap<String, toml::Value>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default)]
    timeouts: RawTimeouts,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawToken {
    name: String,
    key: Option<String>,
    key_env: Option<Spanned<String>>,
    models: Vec<String>,
}

/// Where the environment comes from: the process, or a map in tests.
pub trait Env {
    fn var(&self, name: &str) -> Option<String>;
}

pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

impl Env for HashMap<String, String> {
    fn var(&self, name: &str) -> Option<String> {
        self.get(name).cloned()
    }
}

impl Config {
    /// Read, parse and validate a config file; relative paths resolve against its folder.
    pub fn load(path: &Path, env: &dyn Env) -> Result<Config> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("cannot read config file {}", path.display()))?;
        let base = path.parent().unwrap_or_else(|| Path::new("."));
        let config =
            Self::parse(&text, base, env).with_context(|| format!("invalid config file {}", path.display()))?;
        #[cfg(unix)]
        if let Ok(meta) = std::fs::metadata(path) {
            let mode = std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o777;
            if readable_secrets(&text, mode) {
                tracing::warn!(
                    file = %path.display(),
                    mode = format!("{mode:o}"),
                    "the config file holds keys inline and other users may read it: chmod 600 it, or use the *_env keys"
                );
            }
        }
        Ok(config)
    }

    pub fn parse(text: &str, base: &Path, env: &dyn Env) -> Result<Config> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| anyhow!("{}", e.to_string().trim_end()))?;
        let at = |span: std::ops::Range<usize>| line_of(text, span.start);

        let listen = match &raw.listen {
            Some(s) => s
                .get_ref()
                .parse::<SocketAddr>()
                .map_err(|e| anyhow!("listen (line {}): '{}' is not an address: {e}", at(s.span()), s.get_ref()))?,
            None => DEFAULT_LISTEN.parse().expect("default listen address parses"),
        };
        let plugin_dir = base.join(raw.plugin_dir.unwrap_or_else(|| PathBuf::from(DEFAULT_PLUGIN_DIR)));
        let data_dir = base.join(raw.data_dir.unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR)));
        let admin_token = match (&raw.admin_token, &raw.admin_token_env) {
            (Some(_), Some(_)) => bail!("set admin_token or admin_token_env, not both"),
            (Some(t), None) => Some(Secret(t.clone())),
            (None, Some(var)) => Some(Secret(env.var(var.get_ref()).filter(|v| !v.is_empty()).ok_or_else(|| {
                anyhow!("admin_token_env (line {}): environment variable {} is not set", at(var.span()), var.get_ref())
            })?)),
            (None, None) => None,
        };
        if admin_token.as_ref().is_some_and(|t| t.0.len() < 16) {
            bail!("admin_token must be at least 16 characters");
        }
        let metrics_token = match (&raw.metrics_token, &raw.metrics_token_env) {
            (Some(_), Some(_)) => bail!("set metrics_token or metrics_token_env, not both"),
            (Some(t), None) => Some(Secret(t.clone())),
            (None, Some(var)) => Some(Secret(env.var(var.get_ref()).filter(|v| !v.is_empty()).ok_or_else(|| {
                anyhow!(
                    "metrics_token_env (line {}): environment variable {} is not set",
                    at(var.span()),
                    var.get_ref()
                )
            })?)),
            (None, None) => None,
        };
        if metrics_token.as_ref().is_some_and(|t| t.0.len() < 16) {
            bail!("metrics_token must be at least 16 characters");
        }

        let mut timeouts = resolve_timeouts(&raw.timeouts, Timeouts::default(), "timeouts", text)?;
        apply_env_timeouts(&mut timeouts, env)?;
        let limits = resolve_limits(&raw.limits, text)?;

        let mut channels = Vec::with_capacity(raw.channels.len());
        for (i, sc) in raw.channels.iter().enumerate() {
            let line = at(sc.span());
            let c = sc.get_ref();
            let ctx = |what: &str| format!("channel[{i}] '{}' (line {line}): {what}", c.name);
            if c.name.trim().is_empty() {
                bail!("channel[{i}] (line {line}): name must not be empty");
            }
            if channels.iter().any(|o: &Channel| o.name == c.name) {
                bail!("{}", ctx("name is used by another channel"));
            }
            if c.adapter.trim().is_empty() {
                bail!("{}", ctx("adapter must not be empty"));
            }
            let base_url = validate_base_url(c.base_url.get_ref())
                .map_err(|e| anyhow!("{}", ctx(&format!("base_url (line {}): {e}", at(c.base_url.span())))))?;
            let api_key = match (&c.api_key, &c.api_key_env) {
                (Some(_), Some(_)) => bail!("{}", ctx("set api_key or api_key_env, not both")),
                (Some(k), None) => Some(k.clone()),
                (None, Some(var)) => Some(env.var(var.get_ref()).filter(|v| !v.is_empty()).ok_or_else(|| {
                    anyhow!(
                        "{}",
                        ctx(&format!(
                            "api_key_env (line {}): environment variable {} is not set",
                            at(var.span()),
                            var.get_ref()
                        ))
                    )
                })?),
                (None, None) => None,
            };
            if c.models.is_empty() {
                bail!("{}", ctx("models must list at least one model"));
            }
            if c.models.iter().any(|m| m.trim().is_empty()) {
                bail!("{}", ctx("models must not contain an empty name"));
            }
            let weight = match &c.weight {
                Some(w) if *w.get_ref() == 0 => {
                    bail!("{}", ctx(&format!("weight (line {}): must be at least 1", at(w.span()))))
                }
                Some(w) => *w.get_ref(),
                None => 1,
            };
            let mut settings = Vec::with_capacity(c.settings.len());
            for (k, v) in &c.settings {
                let v = match v {
                    toml::Value::String(s) => s.clone(),
                    toml::Value::Integer(n) => n.to_string(),
                    toml::Value::Float(f) => f.to_string(),
                    toml::Value::Boolean(b) => b.to_string(),
                    _ => bail!("{}", ctx(&format!("settings.{k}: must be a string, number or boolean"))),
                };
                settings.push((k.clone(), v));
            }
            let mut headers = Vec::with_capacity(c.headers.len());
            for (k, v) in &c.headers {
                let name = HeaderName::try_from(k.as_str())
                    .map_err(|_| anyhow!("{}", ctx(&format!("headers: '{k}' is not a valid header name"))))?;
                let value = HeaderValue::try_from(v.as_str())
                    .map_err(|_| anyhow!("{}", ctx(&format!("headers.{k}: not a valid header value"))))?;
                headers.push((name, value));
            }
            let timeouts = resolve_timeouts(&c.timeouts, timeouts, &format!("channel[{i}].timeouts"), text)?;
            channels.push(Channel {
                name: c.name.clone(),
                adapter: c.adapter.clone(),
                base_url,
                api_key,
                models: c.models.clone(),
                priority: c.priority,
                weight,
                settings,
                headers,
                timeouts,
            });
        }

        let mut tokens: Vec<Token> = Vec::with_capacity(raw.tokens.len());
        for (i, st) in raw.tokens.iter().enumerate() {
            let line = at(st.span());
            let t = st.get_ref();
            let ctx = |what: &str| format!("token[{i}] '{}' (line {line}): {what}", t.name);
            if t.name.trim().is_empty() {
                bail!("token[{i}] (line {line}): name must not be empty");
            }
            let key = match (&t.key, &t.key_env) {
                (Some(_), Some(_)) => bail!("{}", ctx("set key or key_env, not both")),
                (Some(k), None) => k.clone(),
                (None, Some(var)) => env.var(var.get_ref()).unwrap_or_default(),
                (None, None) => bail!("{}", ctx("set key or key_env")),
            };
            if key.is_empty() {
                bail!("{}", ctx("the key is empty (is its environment variable set?)"));
            }
            if tokens.iter().any(|o| o.key == key) {
                bail!("{}", ctx("the same key is used by another token"));
            }
            if t.models.is_empty() {
                bail!("{}", ctx("models must list at least one model, or \"*\""));
            }
            tokens.push(Token { name: t.name.clone(), key, models: t.models.clone() });
        }

        let jobs = resolve_jobs(&raw.jobs, base, &data_dir, text)?;
        let mut dns_servers = Vec::new();
        for s in raw.dns_servers.iter().flatten() {
            let v = s.get_ref();
            let addr = v
                .parse::<SocketAddr>()
                .or_else(|_| v.parse::<std::net::IpAddr>().map(|ip| SocketAddr::new(ip, 53)))
                .map_err(|_| anyhow!("dns_servers (line {}): '{v}' is not an IP address or ip:port", at(s.span())))?;
            dns_servers.push(addr);
        }
        Ok(Config {
            listen,
            plugin_dir,
            data_dir,
            admin_token,
            metrics_token,
            timeouts,
            limits,
            channels,
            tokens,
            jobs,
            dns_servers,
        })
    }
}

/// True when a config text holds a secret inline (not through `*_env`) and `mode` lets
/// the file's group or others read it.
fn readable_secrets(text: &str, mode: u32) -> bool {
    let Ok(raw) = toml::from_str::<RawConfig>(text) else { return false };
    let inline = raw.admin_token.is_some()
        || raw.channels.iter().any(|c| c.get_ref().api_key.is_some())
        || raw.tokens.iter().any(|t| t.get_ref().key.is_some());
    inline && mode & 0o044 != 0
}

/// A bound as operators wrote it: "900 s", "0.5 s".
pub fn fmt_secs(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s.fract() == 0.0 { format!("{s:.0} s") } else { format!("{s} s") }
}

fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())].iter().filter(|&&b| b == b'\n').count() + 1
}

fn seconds(v: &Spanned<f64>, key: &str, text: &str) -> Result<Duration> {
    let secs = *v.get_ref();
    to_duration(secs).map_err(|e| anyhow!("{key} (line {}): {e}", line_of(text, v.span().start)))
}

fn to_duration(secs: f64) -> Result<Duration, String> {
    if !secs.is_finite() || secs <= 0.0 {
        return Err(format!("must be a positive number of seconds, got {secs}"));
    }
    // Below a millisecond a bound rounds to zero in timers (and `interval(0)` panics).
    if secs < MIN_DURATION_SECS {
        return Err(format!("{secs} s is less than the minimum of {MIN_DURATION_SECS} s"));
    }
    if secs > MAX_TIMEOUT_SECS {
        return Err(format!("{secs} s is more than the maximum of {MAX_TIMEOUT_SECS} s"));
    }
    Ok(Duration::from_secs_f64(secs))
}

fn resolve_timeouts(raw: &RawTimeouts, base: Timeouts, table: &str, text: &str) -> Result<Timeouts> {
    let mut t = base;
    let fields: [(&Option<Spanned<f64>>, &mut Duration, &str); 7] = [
        (&raw.dns, &mut t.dns, "dns"),
        (&raw.connect, &mut t.connect, "connect"),
        (&raw.tls_handshake, &mut t.tls_handshake, "tls_handshake"),
        (&raw.response_header, &mut t.response_header, "response_header"),
        (&raw.stream_idle, &mut t.stream_idle, "stream_idle"),
        (&raw.total, &mut t.total, "total"),
        (&raw.client_body, &mut t.client_body, "client_body"),
    ];
    for (value, slot, key) in fields {
        if let Some(v) = value {
            *slot = seconds(v, &format!("{table}.{key}"), text)?;
        }
    }
    Ok(t)
}

/// The seed's knobs: the environment wins over the file, so an operator can change a
/// bound on a running deployment's next start without editing it.
pub const ENV_TIMEOUTS: [&str; 5] = [
    "RELAY_CONNECT_TIMEOUT",
    "RELAY_TLS_HANDSHAKE_TIMEOUT",
    "RELAY_RESPONSE_HEADER_TIMEOUT",
    "RELAY_STREAM_IDLE_TIMEOUT",
    "RELAY_TIMEOUT",
];

fn apply_env_timeouts(t: &mut Timeouts, env: &dyn Env) -> Result<()> {
    let slots: [&mut Duration; 5] =
        [&mut t.connect, &mut t.tls_handshake, &mut t.response_header, &mut t.stream_idle, &mut t.total];
    for (name, slot) in ENV_TIMEOUTS.iter().zip(slots) {
        if let Some(v) = env.var(name) {
            let secs: f64 = v
                .trim()
                .parse()
                .map_err(|_| anyhow!("environment variable {name}: '{v}' is not a number of seconds"))?;
            *slot = to_duration(secs).map_err(|e| anyhow!("environment variable {name}: {e}"))?;
        }
    }
    Ok(())
}

fn resolve_limits(raw: &RawLimits, text: &str) -> Result<Limits> {
    let mut l = Limits::default();
    let positive = |v: &Spanned<u64>, key: &str| -> Result<u64> {
        if *v.get_ref() == 0 {
            bail!("limits.{key} (line {}): must be greater than 0", line_of(text, v.span().start));
        }
        Ok(*v.get_ref())
    };
    if let Some(v) = &raw.max_request_body {
        l.max_request_body = positive(v, "max_request_body")?;
    }
    if let Some(v) = &raw.max_response_body {
        l.max_response_body = positive(v, "max_response_body")?;
    }
    if let Some(v) = &raw.max_stream_event {
        l.max_stream_event = usize::try_from(positive(v, "max_stream_event")?).unwrap_or(usize::MAX);
    }
    if let Some(v) = &raw.pool_idle_timeout {
        l.pool_idle_timeout = seconds(v, "limits.pool_idle_timeout", text)?;
    }
    if let Some(v) = raw.pool_max_idle_per_host {
        l.pool_max_idle_per_host = v;
    }
    if let Some(v) = &raw.plugin_memory_mib {
        l.plugin_memory = positive(v, "plugin_memory_mib")?.saturating_mul(1024 * 1024);
    }
    if let Some(v) = &raw.plugin_call_timeout_ms {
        l.plugin_call_timeout = Duration::from_millis(positive(v, "plugin_call_timeout_ms")?);
    }
    if let Some(v) = &raw.plugin_instances {
        l.plugin_instances = u32::try_from(positive(v, "plugin_instances")?).unwrap_or(u32::MAX);
    }
    if let Some(v) = &raw.plugin_instance_uses {
        l.plugin_instance_uses = u32::try_from(positive(v, "plugin_instance_uses")?).unwrap_or(u32::MAX);
    }
    if let Some(v) = &raw.plugin_streams_per_instance {
        l.plugin_streams_per_instance = u32::try_from(positive(v, "plugin_streams_per_instance")?).unwrap_or(u32::MAX);
    }
    l.plugin_wall_timeout = l.plugin_call_timeout.saturating_mul(DEFAULT_PLUGIN_WALL_TIMEOUT_FACTOR);
    if let Some(v) = &raw.plugin_wall_timeout_ms {
        l.plugin_wall_timeout = Duration::from_millis(positive(v, "plugin_wall_timeout_ms")?);
        if l.plugin_wall_timeout < l.plugin_call_timeout {
            bail!(
                "limits.plugin_wall_timeout_ms (line {}): must be at least plugin_call_timeout_ms ({} ms)",
                line_of(text, v.span().start),
                l.plugin_call_timeout.as_millis()
            );
        }
    }
    if let Some(v) = &raw.shutdown_grace {
        l.shutdown_grace = seconds(v, "limits.shutdown_grace", text)?;
    }
    let durations: [(&Option<Spanned<f64>>, &mut Duration, &str); 5] = [
        (&raw.client_header_timeout, &mut l.client_header_timeout, "limits.client_header_timeout"),
        (&raw.client_idle_timeout, &mut l.client_idle_timeout, "limits.client_idle_timeout"),
        (&raw.client_write_timeout, &mut l.client_write_timeout, "limits.client_write_timeout"),
        (&raw.lingering_close, &mut l.lingering_close, "limits.lingering_close"),
        (&raw.http2_keep_alive_interval, &mut l.http2_keep_alive_interval, "limits.http2_keep_alive_interval"),
    ];
    for (v, slot, key) in durations {
        if let Some(v) = v {
            *slot = seconds(v, key, text)?;
        }
    }
    if let Some(v) = &raw.max_connections {
        l.max_connections = usize::try_from(positive(v, "max_connections")?).unwrap_or(usize::MAX);
    }
    if let Some(v) = &raw.http2_max_concurrent_streams {
        l.http2_max_concurrent_streams =
            u32::try_from(positive(v, "http2_max_concurrent_streams")?).unwrap_or(u32::MAX);
    }
    if let Some(v) = &raw.max_inflight_body_bytes {
        l.max_inflight_body_bytes = positive(v, "max_inflight_body_bytes")?;
    }
    if l.max_inflight_body_bytes < l.max_request_body {
        bail!(
            "limits.max_inflight_body_bytes ({}) must be at least limits.max_request_body ({}): no body could ever be read",
            l.max_inflight_body_bytes,
            l.max_request_body
        );
    }
    Ok(l)
}

fn resolve_jobs(raw: &RawJobs, base: &Path, data_dir: &Path, text: &str) -> Result<JobsConfig> {
    let at = |v: &std::ops::Range<usize>| line_of(text, v.start);
    let span_secs = |v: &Spanned<f64>, key: &str| -> Result<Duration> {
        let secs = *v.get_ref();
        if !secs.is_finite() || !(MIN_DURATION_SECS..=MAX_RETENTION_SECS).contains(&secs) {
            bail!(
                "jobs.{key} (line {}): must be from {MIN_DURATION_SECS} to {MAX_RETENTION_SECS} seconds, got {secs}",
                at(&v.span())
            );
        }
        Ok(Duration::from_secs_f64(secs))
    };
    let count = |v: &Spanned<u64>, key: &str| -> Result<u64> {
        if *v.get_ref() == 0 {
            bail!("jobs.{key} (line {}): must be greater than 0", at(&v.span()));
        }
        Ok(*v.get_ref())
    };
    let as_usize = |n: u64| usize::try_from(n).unwrap_or(usize::MAX);
    Ok(JobsConfig {
        path: raw.path.as_ref().map_or_else(|| data_dir.join(DEFAULT_JOBS_DIR), |p| base.join(p)),
        retention: raw
            .retention
            .as_ref()
            .map(|v| span_secs(v, "retention"))
            .transpose()?
            .unwrap_or(DEFAULT_JOB_RETENTION),
        sweep_interval: raw
            .sweep_interval
            .as_ref()
            .map(|v| span_secs(v, "sweep_interval"))
            .transpose()?
            .unwrap_or(DEFAULT_JOB_SWEEP_INTERVAL),
        max_running: raw
            .max_running
            .as_ref()
            .map(|v| count(v, "max_running"))
            .transpose()?
            .map_or(DEFAULT_JOBS_MAX_RUNNING, as_usize),
        max_queued: raw
            .max_queued
            .as_ref()
            .map(|v| count(v, "max_queued"))
            .transpose()?
            .map_or(DEFAULT_JOBS_MAX_QUEUED, as_usize),
        max_bytes_per_job: raw
            .max_bytes_per_job
            .as_ref()
            .map(|v| count(v, "max_bytes_per_job"))
            .transpose()?
            .unwrap_or(DEFAULT_JOB_MAX_BYTES),
        max_per_owner: raw
            .max_per_owner
            .as_ref()
            .map(|v| count(v, "max_per_owner"))
            .transpose()?
            .unwrap_or(DEFAULT_JOBS_MAX_PER_OWNER),
        max_store_bytes: raw
            .max_store_bytes
            .as_ref()
            .map(|v| count(v, "max_store_bytes"))
            .transpose()?
            .unwrap_or(DEFAULT_JOB_MAX_STORE_BYTES),
    })
}

/// `base_url` follows each vendor SDK's convention (OpenAI's includes `/v1`); the adapter's
/// path is appended to it. No query or fragment: those would make the join ambiguous.
fn validate_base_url(s: &str) -> Result<String, String> {
    let trimmed = s.trim_end_matches('/');
    let uri: Uri = trimmed.parse().map_err(|e| format!("'{s}' is not a URL: {e}"))?;
    match uri.scheme_str() {
        Some("http") | Some("https") => {}
        _ => return Err(format!("'{s}' must start with http:// or https://")),
    }
    if uri.authority().is_none_or(|a| a.host().is_empty()) {
        return Err(format!("'{s}' has no host"));
    }
    if uri.query().is_some() || trimmed.contains('#') {
        return Err(format!("'{s}' must not have a query or fragment"));
    }
    if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
        return Err(format!("'{s}' must not carry credentials; use api_key or api_key_env"));
    }
    Ok(trimmed.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    const GOOD: &str = r#"
listen = "127.0.0.1:3999"
plugin_dir = "adapters"
[timeouts]
total = 600
stream_idle = 0.5
[[channel]]
name = "main"
adapter = "openai"
base_url = "https://api.openai.com/v1/"
api_key_env = "OPENAI_KEY"
models = ["gpt-4o"]
priority = 2
settings = { flag = true, n = 3 }
headers = { "x-team" = "a" }
[channel.timeouts]
total = 30
[[token]]
name = "team-a"
key = "sk-a"
models = ["*"]
"#;

    #[test]
    fn parses_and_resolves() {
        let c = Config::parse(GOOD, Path::new("/etc/relay"), &env(&[("OPENAI_KEY", "sk-up")])).unwrap();
        assert_eq!(c.listen.port(), 3999);
        assert_eq!(c.plugin_dir, Path::new("/etc/relay/adapters"));
        assert_eq!(c.timeouts.total, Duration::from_secs(600));
        assert_eq!(c.timeouts.stream_idle, Duration::from_millis(500));
        assert_eq!(c.timeouts.connect, DEFAULT_CONNECT_TIMEOUT);
        let ch = &c.channels[0];
        assert_eq!(ch.base_url, "https://api.openai.com/v1");
        assert_eq!(ch.api_key.as_deref(), Some("sk-up"));
        assert_eq!(ch.timeouts.total, Duration::from_secs(30));
        assert_eq!(ch.timeouts.stream_idle, Duration::from_millis(500));
        assert_eq!(ch.settings, vec![("flag".into(), "true".into()), ("n".into(), "3".into())]);
        assert!(c.tokens[0].allows("anything"));
        assert!(!format!("{ch:?}").contains("sk-up"));
    }

    #[test]
    fn env_overrides_the_file() {
        let e = env(&[("OPENAI_KEY", "k"), ("RELAY_TIMEOUT", "1200"), ("RELAY_CONNECT_TIMEOUT", "2.5")]);
        let c = Config::parse(GOOD, Path::new("."), &e).unwrap();
        assert_eq!(c.timeouts.total, Duration::from_secs(1200));
        assert_eq!(c.timeouts.connect, Duration::from_millis(2500));
        let bad = env(&[("OPENAI_KEY", "k"), ("RELAY_TIMEOUT", "soon")]);
        let err = Config::parse(GOOD, Path::new("."), &bad).unwrap_err().to_string();
        assert!(err.contains("RELAY_TIMEOUT"), "{err}");
    }

    #[test]
    fn errors_name_key_and_line() {
        let err = |text: &str| format!("{:#}", Config::parse(text, Path::new("."), &env(&[])).unwrap_err());
        let e = err("[timeouts]\ntotal = -1\n");
        assert!(e.contains("timeouts.total") && e.contains("line 2"), "{e}");
        let e = err("listen = \"nope\"\n");
        assert!(e.contains("listen") && e.contains("line 1"), "{e}");
        let e = err("[[channel]]\nname = \"a\"\nadapter = \"openai\"\nbase_url = \"ftp://x\"\nmodels = [\"m\"]\n");
        assert!(e.contains("base_url") && e.contains("line 4"), "{e}");
        let e = err(
            "[[channel]]\nname = \"a\"\nadapter = \"o\"\nbase_url = \"http://x\"\napi_key_env = \"NOPE\"\nmodels = [\"m\"]\n",
        );
        assert!(e.contains("NOPE") && e.contains("line 5"), "{e}");
        let e = err("bogus = 1\n");
        assert!(e.contains("bogus") && e.contains("line 1"), "{e}");
        let e = err("[[token]]\nname = \"t\"\nmodels = [\"*\"]\n");
        assert!(e.contains("token[0] 't'") && e.contains("key"), "{e}");
        let e = err("[limits]\nmax_request_body = 0\n");
        assert!(e.contains("limits.max_request_body") && e.contains("line 2"), "{e}");
        let e = err("[limits]\nplugin_call_timeout_ms = 200\nplugin_wall_timeout_ms = 100\n");
        assert!(e.contains("limits.plugin_wall_timeout_ms") && e.contains("line 3"), "{e}");
    }

    #[test]
    fn plugin_wall_timeout_follows_the_call_timeout_unless_set() {
        let l = |text: &str| Config::parse(text, Path::new("."), &env(&[])).unwrap().limits.plugin_wall_timeout;
        assert_eq!(l(""), Duration::from_secs(2));
        assert_eq!(l("[limits]\nplugin_call_timeout_ms = 200\n"), Duration::from_secs(4));
        assert_eq!(l("[limits]\nplugin_wall_timeout_ms = 500\n"), Duration::from_millis(500));
    }

    #[test]
    fn jobs_table() {
        let c = Config::parse("", Path::new("/etc/relay"), &env(&[])).unwrap();
        assert_eq!(c.jobs.path, Path::new("/etc/relay/.relay/jobs"));
        assert_eq!(c.jobs.retention, DEFAULT_JOB_RETENTION);
        assert_eq!(c.jobs.max_running, DEFAULT_JOBS_MAX_RUNNING);
        let c = Config::parse(
            "[jobs]\npath = \"j\"\nretention = 0.5\nmax_running = 2\nmax_queued = 3\nmax_bytes_per_job = 10\n",
            Path::new("/r"),
            &env(&[]),
        )
        .unwrap();
        assert_eq!(c.jobs.path, Path::new("/r/j"));
        assert_eq!(c.jobs.retention, Duration::from_millis(500));
        assert_eq!((c.jobs.max_running, c.jobs.max_queued, c.jobs.max_bytes_per_job), (2, 3, 10));
        let e =
            format!("{:#}", Config::parse("[jobs]\nsweep_interval = 1e-12\n", Path::new("."), &env(&[])).unwrap_err());
        assert!(e.contains("jobs.sweep_interval") && e.contains("from 0.001"), "{e}");
        let e = format!("{:#}", Config::parse("[timeouts]\ntotal = 1e-9\n", Path::new("."), &env(&[])).unwrap_err());
        assert!(e.contains("timeouts.total") && e.contains("minimum of 0.001"), "{e}");
        let e = format!("{:#}", Config::parse("[jobs]\nmax_queued = 0\n", Path::new("."), &env(&[])).unwrap_err());
        assert!(e.contains("jobs.max_queued") && e.contains("line 2"), "{e}");
        assert_eq!(
            (c.jobs.max_per_owner, c.jobs.max_store_bytes),
            (DEFAULT_JOBS_MAX_PER_OWNER, DEFAULT_JOB_MAX_STORE_BYTES)
        );
        let c =
            Config::parse("[jobs]\nmax_per_owner = 5\nmax_store_bytes = 4096\n", Path::new("."), &env(&[])).unwrap();
        assert_eq!((c.jobs.max_per_owner, c.jobs.max_store_bytes), (5, 4096));
        let e = format!("{:#}", Config::parse("[jobs]\nmax_per_owner = 0\n", Path::new("."), &env(&[])).unwrap_err());
        assert!(e.contains("jobs.max_per_owner"), "{e}");
    }

    #[test]
    fn dns_stage_and_servers() {
        let c = Config::parse(
            "dns_servers = [\"127.0.0.1:5353\", \"::1\"]\n[timeouts]\ndns = 2\n",
            Path::new("."),
            &env(&[]),
        )
        .unwrap();
        assert_eq!(c.dns_servers, vec!["127.0.0.1:5353".parse().unwrap(), "[::1]:53".parse().unwrap()]);
        assert_eq!(c.timeouts.dns, Duration::from_secs(2));
        assert_eq!(Config::parse("", Path::new("."), &env(&[])).unwrap().timeouts.dns, DEFAULT_DNS_TIMEOUT);
        let e =
            format!("{:#}", Config::parse("dns_servers = [\"resolver\"]\n", Path::new("."), &env(&[])).unwrap_err());
        assert!(e.contains("dns_servers (line 1)"), "{e}");
    }

    #[test]
    fn inline_secrets_in_a_readable_file_are_flagged() {
        let inline = "admin_token = \"0123456789abcdef\"\n";
        assert!(readable_secrets(inline, 0o644));
        assert!(!readable_secrets(inline, 0o600));
        assert!(readable_secrets("[[token]]\nname = \"a\"\nkey = \"k\"\nmodels = [\"*\"]\n", 0o640));
        assert!(!readable_secrets("[[token]]\nname = \"a\"\nkey_env = \"K\"\nmodels = [\"*\"]\n", 0o644));
    }

    #[test]
    fn client_edge_limits() {
        let c = Config::parse("", Path::new("."), &env(&[])).unwrap();
        assert_eq!(c.limits.client_header_timeout, DEFAULT_CLIENT_HEADER_TIMEOUT);
        assert_eq!(c.limits.max_connections, DEFAULT_MAX_CONNECTIONS);
        assert_eq!(c.limits.max_inflight_body_bytes, DEFAULT_MAX_INFLIGHT_BODY_BYTES);
        assert!(c.metrics_token.is_none());
        let c = Config::parse(
            "metrics_token_env = \"M\"\n[limits]\nclient_header_timeout = 1.5\nclient_idle_timeout = 2\nclient_write_timeout = 3\n\
             lingering_close = 0.5\nmax_connections = 7\nhttp2_max_concurrent_streams = 8\nhttp2_keep_alive_interval = 9\n\
             max_request_body = 10\nmax_inflight_body_bytes = 10\n",
            Path::new("."),
            &env(&[("M", "0123456789abcdef")]),
        )
        .unwrap();
        let l = &c.limits;
        assert_eq!(l.client_header_timeout, Duration::from_millis(1500));
        assert_eq!((l.client_idle_timeout.as_secs(), l.client_write_timeout.as_secs()), (2, 3));
        assert_eq!(l.lingering_close, Duration::from_millis(500));
        assert_eq!((l.max_connections, l.http2_max_concurrent_streams), (7, 8));
        assert_eq!(l.http2_keep_alive_interval.as_secs(), 9);
        assert_eq!(c.metrics_token.unwrap().expose(), "0123456789abcdef");
        let e = |t: &str| format!("{:#}", Config::parse(t, Path::new("."), &env(&[])).unwrap_err());
        let m = e("[limits]\nmax_connections = 0\n");
        assert!(m.contains("limits.max_connections") && m.contains("line 2"), "{m}");
        let m = e("[limits]\n\nclient_write_timeout = -1\n");
        assert!(m.contains("limits.client_write_timeout") && m.contains("line 3"), "{m}");
        let m = e("[limits]\nmax_inflight_body_bytes = 1000\n");
        assert!(m.contains("limits.max_inflight_body_bytes"), "{m}");
        let m = e("metrics_token = \"short\"\n");
        assert!(m.contains("metrics_token must be at least 16"), "{m}");
    }

    #[test]
    fn base_url_rules() {
        assert_eq!(validate_base_url("http://127.0.0.1:8080/").unwrap(), "http://127.0.0.1:8080");
        assert!(validate_base_url("http://h/v1?x=1").is_err());
        assert!(validate_base_url("https://user:pw@h").is_err());
        assert!(validate_base_url("h/v1").is_err());
    }
}
