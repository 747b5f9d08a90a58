//! The command line: `relay serve`, `relay status`.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand, ValueEnum};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::adapter::{Engine, Loader, Registry};
use crate::config::AdapterLimits;
use crate::config::{Config, ProcessEnv};
use crate::jobs::Jobs;
use crate::metrics::Metrics;
use crate::route::Snapshot;
use crate::service::Relay;

#[derive(Parser)]
#[command(name = "relay", version, about = "OpenAI-compatible LLM API relay with WebAssembly vendor adapters")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Serve the relay.
    Serve {
        /// The relay.toml to run with.
        #[arg(long, short, env = "RELAY_CONFIG", default_value = "relay.toml")]
        config: PathBuf,
        /// Log lines as text (key=value) or JSON.
        #[arg(long, value_enum, env = "RELAY_LOG_FORMAT", default_value = "text")]
        log_format: LogFormat,
    },
    /// Check a config file offline, as `serve` would read it (environment variables it
    /// names included); exits non-zero with the key and line of the first problem.
    CheckConfig {
        /// The relay.toml to check.
        #[arg(long, short, env = "RELAY_CONFIG", default_value = "relay.toml")]
        config: PathBuf,
    },
    /// Print a running relay's live gauges in one line (reads its /metrics).
    Status {
        /// The relay's address.
        #[arg(long, default_value = "http://127.0.0.1:3000")]
        url: String,
        /// The relay's `metrics_token`, when it has one.
        #[arg(long, env = "RELAY_METRICS_TOKEN", hide_env_values = true)]
        metrics_token: Option<String>,
    },
    /// Adapter tools.
    Plugin {
        #[command(subcommand)]
        command: PluginCommand,
    },
}

#[derive(Subcommand)]
pub enum PluginCommand {
    /// Validate an adapter against the contract, print its metadata and run a smoke
    /// transform; exits non-zero with the reason when the file is unfit.
    Check {
        /// The adapter component (.wasm).
        file: PathBuf,
    },
}

#[derive(Clone, Copy, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

pub fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("RELAY_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

pub async fn serve(config_path: PathBuf) -> Result<()> {
    // The start-up part is read here once and kept for the life of the process; only the
    // live part goes into the routing snapshot a reload replaces.
    let Config { startup, live } = Config::load(&config_path, &ProcessEnv)?;
    crate::upstream::init_dns(&startup.dns_servers);
    raise_nofile_limit(live.limits.max_connections);
    let metrics = Arc::new(Metrics::default());
    let engine = Engine::new(startup.adapters).context("cannot start the WebAssembly engine")?;
    let registry = Arc::new(Registry::default());
    let loader = Loader::new(engine.clone(), Some(&startup.data_dir.join("cache")), metrics.clone())?;
    let report = registry.reconcile(&loader, &startup.plugin_dir).await?;
    if report.loaded.is_empty() {
        tracing::warn!(dir = %startup.plugin_dir.display(), "no adapter loaded: every request will get 503");
    }
    crate::config::check_native(&live.channels, |a| registry.get(a).map(|p| p.info.native.clone()))?;
    for c in &live.channels {
        if registry.get(&c.adapter).is_none() {
            tracing::warn!(channel = %c.name, adapter = %c.adapter, "channel uses an adapter that is not loaded");
        }
    }

    let listener = listen(startup.listen).with_context(|| format!("cannot listen on {}", startup.listen))?;
    let addr = listener.local_addr()?;
    let grace = startup.shutdown_grace;
    // Cancelled by the server once the grace is over: streams and event readers end on it.
    let streams_stop = CancellationToken::new();
    let tls = crate::upstream::tls_config();
    let snapshot = Snapshot::new(live, tls.clone(), metrics.clone());
    let relay = Arc::new(Relay::new(snapshot, registry.clone(), metrics.clone(), streams_stop.clone()));
    // A job store that cannot open does not stop the relay: async routes answer 503 and
    // the store keeps trying to open (see the jobs module).
    let jobs = Jobs::start(relay.clone(), startup.jobs.clone(), metrics.clone());
    let reloader =
        crate::reload::Reloader { relay: relay.clone(), registry, loader, config_path, startup, tls, metrics }
            .spawn()?;

    tracing::info!(%addr, adapters = report.loaded.len(), "relay listening");
    // A fixed line on stdout for people and scripts (tests read the port from it).
    println!("relay listening on http://{addr}");
    crate::server::serve(listener, relay, jobs.clone(), shutdown_signal(), grace, streams_stop).await;
    // Jobs still running (none after a full drain) are recorded `job_interrupted`; the
    // sweeper ends.
    jobs.shutdown().await;
    reloader.abort();
    tracing::info!("relay stopped");
    // The engine's epoch thread ends with it.
    drop(engine);
    Ok(())
}

/// `relay check-config`: parse and validate without serving, binding or loading adapters.
pub fn check_config(config_path: &std::path::Path) -> Result<()> {
    let config = Config::load(config_path, &ProcessEnv)?;
    println!(
        "ok: {} ({} channels, {} tokens, listen {})",
        config_path.display(),
        config.live.channels.len(),
        config.live.tokens.len(),
        config.startup.listen
    );
    Ok(())
}

/// Every client connection, vendor connection and adapter file is a descriptor; the usual
/// soft limit of 1,024 would refuse clients long before `limits.max_connections`. Raise the
/// soft limit to the hard one, and say so when even that is below the cap.
fn raise_nofile_limit(max_connections: usize) {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let before = getrlimit(Resource::Nofile);
    let raised = rustix::process::Rlimit { current: before.maximum, maximum: before.maximum };
    let now = match setrlimit(Resource::Nofile, raised) {
        Ok(()) => getrlimit(Resource::Nofile),
        Err(e) => {
            tracing::warn!(error = %e, "cannot raise the open-file limit");
            before
        }
    };
    let show = |v: Option<u64>| v.map_or_else(|| "unlimited".to_string(), |n| n.to_string());
    tracing::info!(
        soft_before = %show(before.current),
        soft = %show(now.current),
        hard = %show(now.maximum),
        "open-file limit (RLIMIT_NOFILE)"
    );
    if now.current.is_some_and(|n| n < max_connections as u64 + 1024) {
        tracing::warn!(
            soft = %show(now.current),
            max_connections,
            "the open-file limit is below limits.max_connections plus room for vendor connections; clients past it are refused by the kernel, not answered"
        );
    }
}

/// Pending connections the kernel queues before the relay accepts them. std's default of
/// 128 drops connection attempts in a burst of clients (each then retries after 1 s); the
/// kernel still caps this at `net.core.somaxconn`.
const LISTEN_BACKLOG: u32 = 4096;

fn listen(addr: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        tracing::error!("cannot install signal handlers; stop the relay with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = int.recv() => tracing::info!("SIGINT received"),
    }
}

/// `relay status`: the seed's goroutine-polling script, as one command.
pub async fn status(url: &str, metrics_token: Option<&str>) -> Result<()> {
    use http_body_util::{BodyExt, Empty};
    let uri: http::Uri = format!("{}/metrics", url.trim_end_matches('/')).parse().context("invalid --url")?;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Empty<bytes::Bytes>>();
    let mut req = http::Request::get(uri.clone());
    if let Some(t) = metrics_token {
        req = req.header(http::header::AUTHORIZATION, format!("Bearer {t}"));
    }
    let req = req.body(Empty::new()).context("invalid --metrics-token")?;
    let resp = tokio::time::timeout(std::time::Duration::from_secs(5), client.request(req))
        .await
        .with_context(|| format!("{uri} did not answer within 5 s"))?
        .with_context(|| format!("cannot reach {uri}"))?;
    if !resp.status().is_success() {
        bail!("{uri} answered {}", resp.status());
    }
    let body = resp.into_body().collect().await?.to_bytes();
    let text = String::from_utf8_lossy(&body);
    let value = |name: &str| -> f64 {
        text.lines()
            .filter(|l| l.starts_with(name) && !l.starts_with('#'))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            // An empty f64 sum is -0.0; `+ 0.0` prints it as 0.
            .sum::<f64>()
            + 0.0
    };
    println!(
        "inflight={} streams={} tasks={} upstream_conns={} rss_mib={:.1} timeouts={} client_disconnects={} requests={}",
        value("relay_inflight_requests "),
        value("relay_active_streams "),
        value("relay_runtime_alive_tasks "),
        value("relay_upstream_connections_open "),
        value("process_resident_memory_bytes ") / (1024.0 * 1024.0),
        value("relay_timeouts_total{"),
        value("relay_client_disconnects_total "),
        value("relay_requests_total{"),
    );
    Ok(())
}

/// `relay plugin check FILE`: everything the host does before serving an adapter, plus a
/// smoke transform, with a verdict a plugin author can act on.
pub async fn plugin_check(file: &std::path::Path) -> Result<()> {
    use crate::model::{AuthScheme, CallContext, Endpoint, StreamFormat};
    let metrics = Arc::new(Metrics::default());
    let engine = Engine::new(AdapterLimits {
        // One file, one smoke call: no pool worth reserving.
        instances: 4,
        instance_uses: 1,
        streams_per_instance: 1,
        ..AdapterLimits::default()
    })?;
    let loader = Loader::new(engine, None, metrics)?;
    let plugin =
        Arc::new(loader.load(file).await.with_context(|| format!("{} is not a usable adapter", file.display()))?);
    let info = &plugin.info;
    println!("file:          {}", file.display());
    println!("sha256:        {}", plugin.sha256);
    println!("name:          {}", info.name);
    println!("version:       {}", info.version);
    println!("description:   {}", info.description);
    println!("contract:      {}", plugin.contract().package());
    // Named as the contract names them (`chat-completions`).
    let wit_names = |v: &[Endpoint]| v.iter().map(|e| e.as_str().replace('_', "-")).collect::<Vec<_>>().join(", ");
    println!("endpoints:     {}", wit_names(&info.endpoints));
    if !info.native.is_empty() {
        println!("native:        {}", wit_names(&info.native));
    }
    let auth = match &info.auth {
        AuthScheme::Bearer => "authorization: Bearer <key>".to_string(),
        AuthScheme::Header(h) => format!("{h}: <key>"),
        AuthScheme::Query(q) => format!("?{q}=<key>"),
        AuthScheme::None => "none".to_string(),
    };
    println!("auth:          {auth}");
    let format = match info.stream_format {
        StreamFormat::Sse => "sse",
        StreamFormat::Ndjson => "ndjson",
    };
    println!("stream format: {format}");

    // Smoke: a minimal chat request must become a request with a plain path, and a
    // stream transformer must open and close, all within the sandbox's limits.
    let ctx = CallContext {
        request_id: "plugin-check".into(),
        endpoint: Endpoint::ChatCompletions,
        model: "smoke-test-model".into(),
        stream: false,
        include_usage: false,
        settings: Vec::new(),
    };
    if info.endpoints.contains(&Endpoint::ChatCompletions) {
        let body = r#"{"model":"smoke-test-model","messages":[{"role":"user","content":"Hello"}],"max_tokens":16}"#;
        let req = plugin
            .transform_request(&ctx, body)
            .await
            .map_err(|e| anyhow::anyhow!("smoke transform-request failed: {}", e.into_relay(&info.name).message))?;
        if !req.path.starts_with('/') || req.path.starts_with("//") || req.path.contains("://") {
            bail!(
                "smoke transform-request produced the path '{}': it must be a plain path starting with '/'",
                req.path
            );
        }
        println!("smoke:         transform-request -> {} {} ({} bytes)", req.method, req.path, req.body.len());
        let mut session = plugin.open_stream(&CallContext { stream: true, ..ctx }).await.map_err(|e| {
            anyhow::anyhow!("opening a stream transformer failed: {}", e.into_relay(&info.name).message)
        })?;
        // A stream that ends before any event: an adapter may call that an error, but it
        // must answer, not trap.
        match session.finish().await {
            Ok(_) | Err(crate::adapter::CallError::Adapter(_)) => {
                println!("smoke:         stream-transformer opens and finishes")
            }
            Err(e) => bail!("the stream transformer trapped: {}", e.into_relay(&info.name).message),
        }
    }
    println!("ok: {} can be dropped into plugin_dir", file.display());
    Ok(())
}
