//! Hot reload. The plugin directory and the config file are watched (`notify`) unless
//! `watch = false`, and SIGHUP reloads both. Changes are debounced, then applied by two independent loops in
//! one task: adapters through `Registry::reconcile`, the config by building a new routing
//! snapshot and swapping it in. An adapter load that takes long (each is bounded by the
//! adapter wall-clock limit) never delays a config edit, a token revocation included.
//! Anything invalid is refused with a log line and a metric; what runs keeps running.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::config::{Config, ProcessEnv};
use crate::metrics::Metrics;
use crate::plugin::{Loader, Registry};
use crate::relay::Relay;
use crate::route::Snapshot;

/// Quiet time after the last file event before a reload: editors and `cp` write in bursts,
/// and a half-written file must not be loaded more than necessary.
pub const DEBOUNCE: Duration = Duration::from_millis(250);

pub struct Reloader {
    pub relay: Arc<Relay>,
    pub registry: Arc<Registry>,
    pub loader: Loader,
    pub config_path: PathBuf,
    pub tls: Arc<rustls::ClientConfig>,
    pub metrics: Arc<Metrics>,
}

impl Reloader {
    /// Start watching. The returned task owns the watcher; aborting it stops both.
    pub fn spawn(self) -> Result<JoinHandle<()>> {
        let plugins_changed = Arc::new(Notify::new());
        let config_changed = Arc::new(Notify::new());
        // With `watch = false` nothing is watched: the notifies never fire, only SIGHUP reloads.
        let watcher = if self.relay.snapshot().config.watch {
            Some(self.watch_files(plugins_changed.clone(), config_changed.clone())?)
        } else {
            tracing::info!("watch = false: the config file and plugin_dir reload on SIGHUP only");
            None
        };
        // One SIGHUP listener per loop: every listener of a signal is woken.
        let hangup = || {
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
                .context("cannot install the SIGHUP handler")
        };
        let (mut hup_plugins, mut hup_config) = (hangup()?, hangup()?);

        Ok(tokio::spawn(async move {
            let _watcher = watcher;
            let plugins = async {
                loop {
                    tokio::select! {
                        _ = plugins_changed.notified() => settle(&plugins_changed).await,
                        _ = hup_plugins.recv() => tracing::info!("SIGHUP: reloading the adapters"),
                    }
                    self.reload_plugins().await;
                }
            };
            let config = async {
                loop {
                    tokio::select! {
                        _ = config_changed.notified() => settle(&config_changed).await,
                        _ = hup_config.recv() => tracing::info!("SIGHUP: reloading the config"),
                    }
                    self.reload_config().await;
                }
            };
            // Polled side by side: neither loop waits for the other.
            tokio::join!(plugins, config);
        }))
    }

    /// Watch `plugin_dir` and the config file; an event wakes the matching notify.
    fn watch_files(&self, plugins_changed: Arc<Notify>, config_changed: Arc<Notify>) -> Result<RecommendedWatcher> {
        let running = self.relay.snapshot();
        let plugin_dir = running
            .config
            .plugin_dir
            .canonicalize()
            .with_context(|| format!("cannot watch plugin_dir {}", running.config.plugin_dir.display()))?;
        let config_path = self.config_path.canonicalize().context("cannot watch the config file")?;
        let config_dir = config_path.parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("/"));
        let (pd, cd) = (plugins_changed, config_changed);
        let (watch_plugins, watch_config) = (plugin_dir.clone(), config_path.clone());
        let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
            let Ok(ev) = res else { return };
            // Reads do not change anything; a close after writing does.
            if matches!(ev.kind, EventKind::Access(a) if a != notify::event::AccessKind::Close(notify::event::AccessMode::Write))
            {
                return;
            }
            for p in &ev.paths {
                if p.parent() == Some(watch_plugins.as_path()) {
                    pd.notify_one();
                }
                if p == &watch_config {
                    cd.notify_one();
                }
            }
        })
        .context("cannot start the file watcher")?;
        watcher.watch(&plugin_dir, RecursiveMode::NonRecursive).context("cannot watch plugin_dir")?;
        if config_dir != plugin_dir {
            watcher.watch(&config_dir, RecursiveMode::NonRecursive).context("cannot watch the config folder")?;
        }
        Ok(watcher)
    }

    async fn reload_plugins(&self) {
        let dir = self.relay.snapshot().config.plugin_dir.clone();
        match self.registry.reconcile(&self.loader, &dir).await {
            Ok(r) if r.loaded.is_empty() && r.failed.is_empty() && r.removed.is_empty() => {}
            Ok(r) => tracing::info!(
                loaded = r.loaded.len(),
                refused = r.failed.len(),
                removed = r.removed.len(),
                "adapters reloaded"
            ),
            Err(e) => tracing::error!(error = %format!("{e:#}"), "cannot rescan plugin_dir; adapters unchanged"),
        }
    }

    async fn reload_config(&self) {
        let mut config = match Config::load(&self.config_path, &ProcessEnv) {
            Ok(c) => c,
            Err(e) => {
                self.metrics.config_reloads.inc(["refused"]);
                tracing::error!(error = %format!("{e:#}"), "config reload refused; the running config stays");
                return;
            }
        };
        let running = self.relay.snapshot();
        let old = &running.config;
        // What is bound at start-up stays as it runs, so the running config stays true.
        let kept = keep_startup_keys(&mut config, old);
        if !kept.is_empty() {
            tracing::warn!(
                keys = %kept.join(", "),
                "config keys that apply at start-up only changed; kept as they run until the next restart"
            );
        }
        let channels = config.channels.len();
        let tokens = config.tokens.len();
        self.relay.apply(Snapshot::new(config, self.tls.clone(), self.metrics.clone()));
        self.metrics.config_reloads.inc(["applied"]);
        tracing::info!(channels, tokens, "config reloaded");
    }
}

/// Put back in `new` every key that only applies at start-up (what is bound, reserved or
/// started once) and differs from the running config; returns the names of those keys.
fn keep_startup_keys(new: &mut Config, old: &Config) -> Vec<&'static str> {
    let mut kept = Vec::new();
    macro_rules! keep {
        ($($field:ident).+, $name:literal) => {
            if new.$($field).+ != old.$($field).+ {
                new.$($field).+.clone_from(&old.$($field).+);
                kept.push($name);
            }
        };
    }
    keep!(listen, "listen");
    keep!(plugin_dir, "plugin_dir");
    keep!(data_dir, "data_dir");
    keep!(watch, "watch");
    keep!(dns_servers, "dns_servers");
    keep!(limits.plugin_memory, "limits.plugin_memory_mib");
    keep!(limits.plugin_call_timeout, "limits.plugin_call_timeout_ms");
    keep!(limits.plugin_instances, "limits.plugin_instances");
    keep!(limits.plugin_instance_uses, "limits.plugin_instance_uses");
    keep!(limits.plugin_streams_per_instance, "limits.plugin_streams_per_instance");
    keep!(limits.plugin_wall_timeout, "limits.plugin_wall_timeout_ms");
    keep!(limits.shutdown_grace, "limits.shutdown_grace");
    // The job store and its workers are started once; the running ones keep these.
    keep!(jobs.path, "jobs.path");
    keep!(jobs.retention, "jobs.retention");
    keep!(jobs.sweep_interval, "jobs.sweep_interval");
    keep!(jobs.max_running, "jobs.max_running");
    keep!(jobs.max_queued, "jobs.max_queued");
    keep!(jobs.max_bytes_per_job, "jobs.max_bytes_per_job");
    keep!(jobs.max_per_owner, "jobs.max_per_owner");
    keep!(jobs.max_store_bytes, "jobs.max_store_bytes");
    kept
}

/// Wait until `changed` has been quiet for `DEBOUNCE`.
async fn settle(changed: &Notify) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(DEBOUNCE) => return,
            _ = changed.notified() => {}
        }
    }
}
