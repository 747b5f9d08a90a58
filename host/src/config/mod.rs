//! `relay.toml`: parsed, validated and resolved into the runtime configuration.
//!
//! Every default is a named constant; every invalid value stops start-up (or a reload)
//! with a message that names the key, and the line where the file has one.

mod defaults;
mod raw;
mod resolve;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use http::{HeaderName, HeaderValue};

use crate::model::Endpoint;

pub use defaults::*;
use raw::RawConfig;
use resolve::{
    apply_env_timeouts, line_of, readable_secrets, resolve_jobs, resolve_limits, resolve_retry, resolve_startup_limits,
    resolve_timeouts, validate_base_url,
};

/// The resolved configuration, split by lifetime. A reload parses the whole file, compares
/// its `startup` with the running one (`StartupConfig::changed_keys`) and swaps only its
/// `live` part into the routing snapshot: nothing a reload builds can reach what was bound,
/// reserved or started once.
#[derive(Debug, Clone)]
pub struct Config {
    pub startup: StartupConfig,
    pub live: LiveConfig,
}

/// Keys bound, reserved or started once: the running process keeps the ones it started
/// with, and a reload that changes one names it as needing a restart.
#[derive(Debug, Clone, PartialEq)]
pub struct StartupConfig {
    pub listen: SocketAddr,
    pub plugin_dir: PathBuf,
    pub data_dir: PathBuf,
    /// Whether the config file and `plugin_dir` are watched for changes; off, only SIGHUP
    /// reloads them.
    pub watch: bool,
    /// Name servers for upstream host names (`ip` or `ip:port`); empty: the system's
    /// (`/etc/resolv.conf`).
    pub dns_servers: Vec<SocketAddr>,
    /// The WebAssembly engine's bounds: its instance pool is reserved at start.
    pub adapters: AdapterLimits,
    pub shutdown_grace: Duration,
    pub jobs: JobsConfig,
}

/// `[limits] plugin_*`: what the adapter engine is built with.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdapterLimits {
    /// Linear memory one instance may grow to.
    pub memory: u64,
    /// CPU budget of one call (epoch ticks).
    pub call_timeout: Duration,
    /// Adapter instances alive at once (warm transform instances and stream hosts); the
    /// pooling allocator reserves address space for this many up front.
    pub instances: u32,
    /// Calls one instance serves (streams, for a stream host) before it is replaced by a
    /// fresh one (1: a fresh instance per call and per stream).
    pub instance_uses: u32,
    /// Streams that share one instance at a time (1: an instance per stream).
    pub streams_per_instance: u32,
    /// Host wall-clock bound on one call (and on instantiation and `info()` at load): a
    /// call suspended in the host, where the epoch never fires, is cut at this and its
    /// instance retired.
    pub wall_timeout: Duration,
}

impl Default for AdapterLimits {
    fn default() -> Self {
        Self {
            memory: DEFAULT_PLUGIN_MEMORY,
            call_timeout: DEFAULT_PLUGIN_CALL_TIMEOUT,
            instances: DEFAULT_PLUGIN_INSTANCES,
            instance_uses: DEFAULT_PLUGIN_INSTANCE_USES,
            streams_per_instance: DEFAULT_PLUGIN_STREAMS_PER_INSTANCE,
            wall_timeout: DEFAULT_PLUGIN_CALL_TIMEOUT * DEFAULT_PLUGIN_WALL_TIMEOUT_FACTOR,
        }
    }
}

impl StartupConfig {
    /// The keys (as `relay.toml` names them) whose value in `next` differs from this one.
    pub fn changed_keys(&self, next: &StartupConfig) -> Vec<&'static str> {
        // Destructured without `..`: a start-up key added to the struct does not compile
        // until it is compared here.
        let StartupConfig { listen, plugin_dir, data_dir, watch, dns_servers, adapters, shutdown_grace, jobs } = self;
        let AdapterLimits { memory, call_timeout, instances, instance_uses, streams_per_instance, wall_timeout } =
            adapters;
        let JobsConfig {
            path,
            retention,
            sweep_interval,
            max_running,
            max_queued,
            max_bytes_per_job,
            max_per_owner,
            max_store_bytes,
        } = jobs;
        let (a, j) = (&next.adapters, &next.jobs);
        [
            (*listen != next.listen, "listen"),
            (*plugin_dir != next.plugin_dir, "plugin_dir"),
            (*data_dir != next.data_dir, "data_dir"),
            (*watch != next.watch, "watch"),
            (*dns_servers != next.dns_servers, "dns_servers"),
            (*memory != a.memory, "limits.plugin_memory_mib"),
            (*call_timeout != a.call_timeout, "limits.plugin_call_timeout_ms"),
            (*instances != a.instances, "limits.plugin_instances"),
            (*instance_uses != a.instance_uses, "limits.plugin_instance_uses"),
            (*streams_per_instance != a.streams_per_instance, "limits.plugin_streams_per_instance"),
            (*wall_timeout != a.wall_timeout, "limits.plugin_wall_timeout_ms"),
            (*shutdown_grace != next.shutdown_grace, "limits.shutdown_grace"),
            (*path != j.path, "jobs.path"),
            (*retention != j.retention, "jobs.retention"),
            (*sweep_interval != j.sweep_interval, "jobs.sweep_interval"),
            (*max_running != j.max_running, "jobs.max_running"),
            (*max_queued != j.max_queued, "jobs.max_queued"),
            (*max_bytes_per_job != j.max_bytes_per_job, "jobs.max_bytes_per_job"),
            (*max_per_owner != j.max_per_owner, "jobs.max_per_owner"),
            (*max_store_bytes != j.max_store_bytes, "jobs.max_store_bytes"),
        ]
        .into_iter()
        .filter_map(|(changed, key)| changed.then_some(key))
        .collect()
    }
}

/// Keys a reload applies: new requests (and, for the client-edge limits, new connections)
/// use them; requests already running finish with the values they started with.
#[derive(Debug, Clone)]
pub struct LiveConfig {
    /// Bearer token for `/admin/*`; the admin API is off without one.
    pub admin_token: Option<Secret>,
    /// Bearer token for `/metrics`; without one `/metrics` is open (as before).
    pub metrics_token: Option<Secret>,
    pub timeouts: Timeouts,
    pub limits: Limits,
    pub channels: Vec<Channel>,
    pub tokens: Vec<Token>,
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
    /// A stream's first output event must come within this, or the request fails over
    /// (while no byte reached the client); off when `None`.
    pub first_token: Option<Duration>,
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
            first_token: None,
        }
    }
}

/// `[limits]` a reload applies (the `plugin_*` ones and `shutdown_grace` are in
/// `StartupConfig`).
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    pub max_request_body: u64,
    pub max_response_body: u64,
    pub max_stream_event: usize,
    pub pool_idle_timeout: Duration,
    pub pool_max_idle_per_host: usize,
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

/// `[retry]`, overridden per channel by `[channel.retry]`: how often one channel is tried
/// per request, the backoff between tries, what waiting a request may spend, and the
/// longest vendor cooldown honoured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryConfig {
    /// Tries of the channel per request (1: no retry on the same channel).
    pub attempts: u32,
    pub backoff: Duration,
    pub backoff_max: Duration,
    /// Total waiting between attempts per request, whatever the channels.
    pub budget: Duration,
    pub max_cooldown: Duration,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            attempts: DEFAULT_RETRY_ATTEMPTS,
            backoff: DEFAULT_RETRY_BACKOFF,
            backoff_max: DEFAULT_RETRY_BACKOFF_MAX,
            budget: DEFAULT_RETRY_BUDGET,
            max_cooldown: DEFAULT_MAX_COOLDOWN,
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
    pub retry: RetryConfig,
    pub malformed_events: MalformedEvents,
    /// The client APIs passed through natively (`native`); unset, the adapter's own list.
    pub native: Option<Native>,
}

/// A channel's `native` key: the client APIs it passes through to an adapter that speaks
/// them natively; any other client API is bridged through chat completions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Native {
    pub apis: Vec<Endpoint>,
    /// The key's line, for the check against the adapter's own list once it is loaded.
    pub line: usize,
}

/// The client APIs an adapter can speak natively, by their names in `native`.
const NATIVE_APIS: [Endpoint; 2] = [Endpoint::Responses, Endpoint::Messages];

/// Every channel's `native` list against its adapter's own (`declared`, by adapter name;
/// None for an adapter that is not loaded, whose channels are checked when it is): a name
/// the adapter does not speak natively is an error naming the key and its line.
pub fn check_native(channels: &[Channel], declared: impl Fn(&str) -> Option<Vec<Endpoint>>) -> Result<()> {
    for (i, c) in channels.iter().enumerate() {
        let (Some(n), Some(declared)) = (&c.native, declared(&c.adapter)) else { continue };
        if let Some(api) = n.apis.iter().find(|a| !declared.contains(a)) {
            let speaks = declared.iter().map(|e| format!("\"{}\"", e.as_str())).collect::<Vec<_>>();
            let speaks = if speaks.is_empty() { "none".to_string() } else { speaks.join(", ") };
            bail!(
                "channel[{i}] '{}': native (line {}): adapter '{}' does not speak \"{}\" natively (it speaks: {speaks})",
                c.name,
                n.line,
                c.adapter,
                api.as_str()
            );
        }
    }
    Ok(())
}

/// What a stream does with a vendor event its adapter could not read (`malformed_events`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MalformedEvents {
    /// Left out and counted; the answer goes on.
    Skip,
    /// The stream ends with an invalid-upstream error after the events before it.
    Fail,
}

impl MalformedEvents {
    pub fn name(self) -> &'static str {
        match self {
            MalformedEvents::Skip => "skip",
            MalformedEvents::Fail => "fail",
        }
    }
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
            .field("native", &self.native)
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

/// The seed's knobs: the environment wins over the file, so an operator can change a
/// bound on a running deployment's next start without editing it.
pub const ENV_TIMEOUTS: [&str; 5] = [
    "RELAY_CONNECT_TIMEOUT",
    "RELAY_TLS_HANDSHAKE_TIMEOUT",
    "RELAY_RESPONSE_HEADER_TIMEOUT",
    "RELAY_STREAM_IDLE_TIMEOUT",
    "RELAY_TIMEOUT",
];

impl Config {
    /// Read, parse and validate a config file; relative paths resolve against its folder.
    pub fn load(path: &Path, env: &dyn Env) -> Result<Config> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("cannot read config file {}", path.display()))?;
        Self::load_text(path, &text, env)
    }

    /// `load` for a file's text already read, so a caller can compare what it read with
    /// what it loaded before (hot reload does).
    pub fn load_text(path: &Path, text: &str, env: &dyn Env) -> Result<Config> {
        let base = path.parent().unwrap_or_else(|| Path::new("."));
        let config = Self::parse(text, base, env).with_context(|| format!("invalid config file {}", path.display()))?;
        #[cfg(unix)]
        if let Ok(meta) = std::fs::metadata(path) {
            let mode = std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o777;
            if readable_secrets(text, mode) {
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
            (Some(t), Some(_)) => {
                bail!("admin_token (line {}): set admin_token or admin_token_env, not both", at(t.span()))
            }
            (Some(t), None) => Some(Secret(t.get_ref().clone())),
            (None, Some(var)) => Some(Secret(env.var(var.get_ref()).filter(|v| !v.is_empty()).ok_or_else(|| {
                anyhow!("admin_token_env (line {}): environment variable {} is not set", at(var.span()), var.get_ref())
            })?)),
            (None, None) => None,
        };
        if admin_token.as_ref().is_some_and(|t| t.0.len() < 16) {
            // The line of whichever key gave the token: inline or `_env`.
            let line =
                raw.admin_token.as_ref().map(|t| at(t.span())).or(raw.admin_token_env.as_ref().map(|v| at(v.span())));
            bail!("admin_token (line {}): must be at least 16 characters", line.unwrap_or_default());
        }
        let metrics_token = match (&raw.metrics_token, &raw.metrics_token_env) {
            (Some(t), Some(_)) => {
                bail!("metrics_token (line {}): set metrics_token or metrics_token_env, not both", at(t.span()))
            }
            (Some(t), None) => Some(Secret(t.get_ref().clone())),
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
            // The line of whichever key gave the token: inline or `_env`.
            let line = raw
                .metrics_token
                .as_ref()
                .map(|t| at(t.span()))
                .or(raw.metrics_token_env.as_ref().map(|v| at(v.span())));
            bail!("metrics_token (line {}): must be at least 16 characters", line.unwrap_or_default());
        }

        let mut timeouts = resolve_timeouts(&raw.timeouts, Timeouts::default(), "timeouts", text)?;
        apply_env_timeouts(&mut timeouts, env)?;
        let limits = resolve_limits(&raw.limits, text)?;
        let retry = resolve_retry(&raw.retry, RetryConfig::default(), "retry", text)?;
        let (adapters, shutdown_grace) = resolve_startup_limits(&raw.limits, text)?;

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
            // The body is read before the request's channel is chosen: a per-channel bound
            // could never apply, so it is refused rather than ignored.
            if let Some(v) = &c.timeouts.client_body {
                bail!(
                    "{}",
                    ctx(&format!(
                        "timeouts.client_body (line {}): not allowed per channel (the request body is read before its channel is chosen); set it in [timeouts]",
                        at(v.span())
                    ))
                );
            }
            let timeouts = resolve_timeouts(&c.timeouts, timeouts, &format!("channel[{i}].timeouts"), text)?;
            let retry = resolve_retry(&c.retry, retry, &format!("channel[{i}].retry"), text)?;
            let malformed_events = match &c.malformed_events {
                None => DEFAULT_MALFORMED_EVENTS,
                Some(v) => match v.get_ref().as_str() {
                    "skip" => MalformedEvents::Skip,
                    "fail" => MalformedEvents::Fail,
                    other => bail!(
                        "{}",
                        ctx(&format!(
                            "malformed_events (line {}): must be \"skip\" or \"fail\", not {other:?}",
                            at(v.span())
                        ))
                    ),
                },
            };
            let native = match &c.native {
                None => DEFAULT_NATIVE,
                Some(list) => {
                    let line = at(list.span());
                    let mut apis = Vec::with_capacity(list.get_ref().len());
                    for name in list.get_ref() {
                        let Some(api) = NATIVE_APIS.into_iter().find(|e| e.as_str() == name.get_ref()) else {
                            bail!(
                                "{}",
                                ctx(&format!(
                                    "native (line {}): {:?} is not a client API an adapter speaks natively (\"responses\", \"messages\")",
                                    at(name.span()),
                                    name.get_ref()
                                ))
                            )
                        };
                        if apis.contains(&api) {
                            bail!(
                                "{}",
                                ctx(&format!(
                                    "native (line {}): {:?} is listed twice",
                                    at(name.span()),
                                    name.get_ref()
                                ))
                            );
                        }
                        apis.push(api);
                    }
                    Some(Native { apis, line })
                }
            };
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
                retry,
                malformed_events,
                native,
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
                (None, Some(var)) => env.var(var.get_ref()).filter(|v| !v.is_empty()).ok_or_else(|| {
                    anyhow!(
                        "{}",
                        ctx(&format!(
                            "key_env (line {}): environment variable {} is not set",
                            at(var.span()),
                            var.get_ref()
                        ))
                    )
                })?,
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
            startup: StartupConfig {
                listen,
                plugin_dir,
                data_dir,
                watch: raw.watch.unwrap_or(DEFAULT_WATCH),
                dns_servers,
                adapters,
                shutdown_grace,
                jobs,
            },
            live: LiveConfig { admin_token, metrics_token, timeouts, limits, channels, tokens },
        })
    }
}

/// A bound as operators wrote it: "900 s", "0.5 s".
pub fn fmt_secs(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s.fract() == 0.0 { format!("{s:.0} s") } else { format!("{s} s") }
}
