//! The `relay.toml` file format as written: serde structs that keep each value's span for error lines.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;
use toml::Spanned;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    pub(super) listen: Option<Spanned<String>>,
    pub(super) plugin_dir: Option<PathBuf>,
    pub(super) data_dir: Option<PathBuf>,
    pub(super) admin_token: Option<Spanned<String>>,
    pub(super) admin_token_env: Option<Spanned<String>>,
    pub(super) metrics_token: Option<Spanned<String>>,
    pub(super) metrics_token_env: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) timeouts: RawTimeouts,
    #[serde(default)]
    pub(super) limits: RawLimits,
    #[serde(default)]
    pub(super) retry: RawRetry,
    #[serde(default, rename = "channel")]
    pub(super) channels: Vec<Spanned<RawChannel>>,
    #[serde(default, rename = "token")]
    pub(super) tokens: Vec<Spanned<RawToken>>,
    #[serde(default)]
    pub(super) jobs: RawJobs,
    pub(super) dns_servers: Option<Vec<Spanned<String>>>,
    pub(super) watch: Option<bool>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawJobs {
    pub(super) path: Option<PathBuf>,
    pub(super) retention: Option<Spanned<f64>>,
    pub(super) sweep_interval: Option<Spanned<f64>>,
    pub(super) max_running: Option<Spanned<u64>>,
    pub(super) max_queued: Option<Spanned<u64>>,
    pub(super) max_bytes_per_job: Option<Spanned<u64>>,
    pub(super) max_per_owner: Option<Spanned<u64>>,
    pub(super) max_store_bytes: Option<Spanned<u64>>,
}

#[derive(Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTimeouts {
    pub(super) dns: Option<Spanned<f64>>,
    pub(super) connect: Option<Spanned<f64>>,
    pub(super) tls_handshake: Option<Spanned<f64>>,
    pub(super) response_header: Option<Spanned<f64>>,
    pub(super) stream_idle: Option<Spanned<f64>>,
    pub(super) total: Option<Spanned<f64>>,
    pub(super) client_body: Option<Spanned<f64>>,
    pub(super) first_token: Option<Spanned<f64>>,
}

/// `[retry]` and `[channel.retry]`.
#[derive(Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRetry {
    pub(super) attempts: Option<Spanned<i64>>,
    pub(super) backoff: Option<Spanned<f64>>,
    pub(super) backoff_max: Option<Spanned<f64>>,
    pub(super) budget: Option<Spanned<f64>>,
    pub(super) max_cooldown: Option<Spanned<f64>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLimits {
    pub(super) max_request_body: Option<Spanned<u64>>,
    pub(super) max_response_body: Option<Spanned<u64>>,
    pub(super) max_stream_event: Option<Spanned<u64>>,
    pub(super) pool_idle_timeout: Option<Spanned<f64>>,
    pub(super) pool_max_idle_per_host: Option<usize>,
    pub(super) plugin_memory_mib: Option<Spanned<u64>>,
    pub(super) plugin_call_timeout_ms: Option<Spanned<u64>>,
    pub(super) plugin_instances: Option<Spanned<u64>>,
    pub(super) plugin_instance_uses: Option<Spanned<u64>>,
    pub(super) plugin_streams_per_instance: Option<Spanned<u64>>,
    pub(super) plugin_wall_timeout_ms: Option<Spanned<u64>>,
    pub(super) shutdown_grace: Option<Spanned<f64>>,
    pub(super) client_header_timeout: Option<Spanned<f64>>,
    pub(super) client_idle_timeout: Option<Spanned<f64>>,
    pub(super) client_write_timeout: Option<Spanned<f64>>,
    pub(super) lingering_close: Option<Spanned<f64>>,
    pub(super) max_connections: Option<Spanned<u64>>,
    pub(super) http2_max_concurrent_streams: Option<Spanned<u64>>,
    pub(super) http2_keep_alive_interval: Option<Spanned<f64>>,
    pub(super) max_inflight_body_bytes: Option<Spanned<u64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawChannel {
    pub(super) name: String,
    pub(super) adapter: String,
    pub(super) base_url: Spanned<String>,
    pub(super) api_key: Option<String>,
    pub(super) api_key_env: Option<Spanned<String>>,
    pub(super) models: Vec<String>,
    #[serde(default)]
    pub(super) priority: i64,
    pub(super) weight: Option<Spanned<u32>>,
    #[serde(default)]
    pub(super) settings: BTreeMap<String, toml::Value>,
    #[serde(default)]
    pub(super) headers: BTreeMap<String, String>,
    #[serde(default)]
    pub(super) timeouts: RawTimeouts,
    #[serde(default)]
    pub(super) retry: RawRetry,
    pub(super) malformed_events: Option<Spanned<String>>,
    pub(super) native: Option<Spanned<Vec<Spanned<String>>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawToken {
    pub(super) name: String,
    pub(super) key: Option<String>,
    pub(super) key_env: Option<Spanned<String>>,
    pub(super) models: Vec<String>,
}
