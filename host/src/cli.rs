//! The command line: `relay serve`, `relay status`.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand, ValueEnum};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::{Config, ProcessEnv};
use crate::metrics::Metrics;
use crate::plugin::{Engine, PluginLimits, Registry};
use crate::relay::Relay;
use crate::route::Snapshot;

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
    /// Print a running relay's live gauges in one line (reads its /metrics).
    Status {
        /// The relay's address.
        #[arg(long, default_value = "http://127.0.0.1:3000")]
        url: String,
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
    let config = Config::load(&config_path, &ProcessEnv)?;
    let metrics = Arc::new(Metrics::default());
    let engine = Engine::new(PluginLimits {
        memory: config.limits.plugin_memory,
        call_timeout: config.limits.plugin_call_timeout,
    })
    .context("cannot start the WebAssembly engine")?;
    let registry = Arc::new(Registry::default());
    let report = registry.load_dir(&engine, &config.plugin_dir, &metrics).await?;
    if report.loaded.is_empty() {
        tracing::warn!(dir = %config.plugin_dir.display(), "no adapter loaded: every request will get 503");
    }
    for c in &config.channels {
        if registry.get(&c.adapter).is_none() {
            tracing::warn!(channel = %c.name, adapter = %c.adapter, "channel uses an adapter that is not loaded");
        }
    }

    let listener =
        TcpListener::bind(config.listen).await.with_context(|| format!("cannot listen on {}", config.listen))?;
    let addr = listener.local_addr()?;
    let grace = config.limits.shutdown_grace;
    let (stop_tx, stop_rx) = watch::channel(false);
    let snapshot = Snapshot::new(config, crate::upstream::tls_config(), metrics.clone());
    let relay = Arc::new(Relay::new(snapshot, registry, metrics, stop_rx));

    tracing::info!(%addr, adapters = report.loaded.len(), "relay listening");
    // A fixed line on stdout for people and scripts (tests read the port from it).
    println!("relay listening on http://{addr}");
    crate::server::serve(listener, relay, shutdown_signal(), grace, stop_tx).await;
    tracing::info!("relay stopped");
    // The engine's epoch thread ends with it.
    drop(engine);
    Ok(())
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
pub async fn status(url: &str) -> Result<()> {
    use http_body_util::{BodyExt, Empty};
    let uri: http::Uri = format!("{}/metrics", url.trim_end_matches('/')).parse().context("invalid --url")?;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Empty<bytes::Bytes>>();
    let resp = tokio::time::timeout(std::time::Duration::from_secs(5), client.get(uri.clone()))
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
            .sum()
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
