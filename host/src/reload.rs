//! Hot reload. The plugin directory and the config file are watched (`notify`) unless
//! `watch = false`, and SIGHUP reloads both. Changes are debounced, then applied by two independent loops in
//! one task: adapters through `Registry::reconcile`, the config by building a new routing
//! snapshot and swapping it in. An adapter load that takes long (each is bounded by the
//! adapter wall-clock limit) never delays a config edit, a token revocation included.
//! Anything invalid is refused with a log line and a metric; what runs keeps running.
//!
//! The config file is watched through its own folder and name, not only where it resolves
//! to, so a Kubernetes ConfigMap update is noticed: there `relay.toml` is a symlink to
//! `..data/relay.toml`, and kubelet renames a new `..data` symlink over the old one, then
//! deletes the folder the old one pointed to. A change event reloads only when the file's
//! content differs from what was last read, so the bursts of events one update makes (and
//! the old folder's deletion) reload once; SIGHUP always reloads.

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use arc_swap::ArcSwap;
use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use sha2::{Digest, Sha256};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::adapter::{Loader, Registry};
use crate::config::{Config, ProcessEnv, StartupConfig};
use crate::metrics::Metrics;
use crate::route::Snapshot;
use crate::service::Relay;

/// Quiet time after the last file event before a reload: editors and `cp` write in bursts,
/// and a half-written file must not be loaded more than necessary.
pub const DEBOUNCE: Duration = Duration::from_millis(250);

/// The symlink kubelet swaps on a ConfigMap update: the mounted file's name points into it.
const KUBE_DATA: &str = "..data";

/// The config file as the watcher sees it.
struct ConfigFile {
    /// The canonical folder holding the config path's last component (event paths start
    /// with the folder as watched).
    dir: PathBuf,
    name: OsString,
    /// Where the path resolves to now; the watcher's callback reads it.
    target: ArcSwap<PathBuf>,
}

impl ConfigFile {
    fn new(path: &Path) -> Result<ConfigFile> {
        let name = path.file_name().ok_or_else(|| anyhow!("cannot watch the config file {}", path.display()))?;
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let dir = dir.canonicalize().context("cannot watch the config folder")?;
        let target = dir.join(name).canonicalize().context("cannot watch the config file")?;
        Ok(ConfigFile { dir, name: name.to_os_string(), target: ArcSwap::from_pointee(target) })
    }

    /// Whether an event at `p` may have changed what the config path reads.
    fn touched_by(&self, p: &Path) -> bool {
        let in_dir = p.parent() == Some(self.dir.as_path());
        (in_dir && (p.file_name() == Some(&self.name) || p.file_name() == Some(OsStr::new(KUBE_DATA))))
            || p == self.target.load().as_path()
    }
}

/// The running watcher and the folders it watches.
struct Watching {
    watcher: Mutex<RecommendedWatcher>,
    config: Arc<ConfigFile>,
    /// Watched for as long as the relay runs: plugin_dir and the config path's own folder.
    fixed: Vec<PathBuf>,
    /// The folder the config file resolves into, when it is not one of `fixed`.
    followed: Mutex<Option<PathBuf>>,
}

impl Watching {
    /// After a change: watch the folder the config path resolves into now, and stop
    /// watching the one it resolved into before (a ConfigMap update deletes it).
    fn follow(&self) {
        // A file missing for now (mid-replacement) keeps what is watched; its reload fails.
        let Ok(target) = self.config.dir.join(&self.config.name).canonicalize() else { return };
        let want = target.parent().map(Path::to_path_buf).filter(|d| !self.fixed.contains(d));
        self.config.target.store(Arc::new(target));
        let mut followed = self.followed.lock().unwrap_or_else(PoisonError::into_inner);
        if *followed == want {
            return;
        }
        let mut watcher = self.watcher.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(old) = followed.take() {
            // It may be gone already, and its watch with it.
            let _ = watcher.unwatch(&old);
        }
        if let Some(dir) = &want
            && let Err(e) = watcher.watch(dir, RecursiveMode::NonRecursive)
        {
            tracing::warn!(folder = %dir.display(), error = %e, "cannot watch the folder the config file resolves into");
            return;
        }
        *followed = want;
    }
}

pub struct Reloader {
    pub relay: Arc<Relay>,
    pub registry: Arc<Registry>,
    pub loader: Loader,
    pub config_path: PathBuf,
    /// What the process started with. Nothing replaces it: a reload that changes one of
    /// these keys names it as needing a restart.
    pub startup: StartupConfig,
    pub tls: Arc<rustls::ClientConfig>,
    pub metrics: Arc<Metrics>,
}

impl Reloader {
    /// Start watching. The returned task owns the watcher; aborting it stops both.
    pub fn spawn(self) -> Result<JoinHandle<()>> {
        let plugins_changed = Arc::new(Notify::new());
        let config_changed = Arc::new(Notify::new());
        // With `watch = false` nothing is watched: the notifies never fire, only SIGHUP reloads.
        let watcher = if self.startup.watch {
            Some(Arc::new(self.watch_files(plugins_changed.clone(), config_changed.clone())?))
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
                // The digest of the config text last read: a watched change whose content
                // is the same reloads nothing.
                let mut seen = None;
                loop {
                    let forced = tokio::select! {
                        _ = config_changed.notified() => { settle(&config_changed).await; false }
                        _ = hup_config.recv() => { tracing::info!("SIGHUP: reloading the config"); true }
                    };
                    if let Some(w) = &watcher {
                        w.follow();
                    }
                    self.reload_config(&mut seen, forced).await;
                }
            };
            // Polled side by side: neither loop waits for the other.
            tokio::join!(plugins, config);
        }))
    }

    /// Watch `plugin_dir` and the config file; an event wakes the matching notify.
    fn watch_files(&self, plugins_changed: Arc<Notify>, config_changed: Arc<Notify>) -> Result<Watching> {
        let plugin_dir = self
            .startup
            .plugin_dir
            .canonicalize()
            .with_context(|| format!("cannot watch plugin_dir {}", self.startup.plugin_dir.display()))?;
        let config = Arc::new(ConfigFile::new(&self.config_path)?);
        let config_dir = config.dir.clone();
        let (pd, cd) = (plugins_changed, config_changed);
        let (watch_plugins, watch_config) = (plugin_dir.clone(), config.clone());
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
                if watch_config.touched_by(p) {
                    cd.notify_one();
                }
            }
        })
        .context("cannot start the file watcher")?;
        watcher.watch(&plugin_dir, RecursiveMode::NonRecursive).context("cannot watch plugin_dir")?;
        if config_dir != plugin_dir {
            watcher.watch(&config_dir, RecursiveMode::NonRecursive).context("cannot watch the config folder")?;
        }
        let watching = Watching {
            watcher: Mutex::new(watcher),
            config,
            fixed: vec![plugin_dir, config_dir],
            followed: Mutex::new(None),
        };
        // A config path that resolves into another folder (a symlink) has that folder
        // watched too, for edits made in place there.
        watching.follow();
        Ok(watching)
    }

    async fn reload_plugins(&self) {
        match self.registry.reconcile(&self.loader, &self.startup.plugin_dir).await {
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

    /// Reload the config file, unless `seen` says a watched change left its content as it
    /// was (`forced`, by SIGHUP, reloads regardless).
    async fn reload_config(&self, seen: &mut Option<[u8; 32]>, forced: bool) {
        let text = match std::fs::read_to_string(&self.config_path) {
            Ok(t) => t,
            Err(e) => {
                self.metrics.config_reloads.inc(["refused"]);
                tracing::error!(
                    error = %format!("cannot read config file {}: {e}", self.config_path.display()),
                    "config reload refused; the running config stays"
                );
                return;
            }
        };
        let digest: [u8; 32] = Sha256::digest(text.as_bytes()).into();
        if !forced && *seen == Some(digest) {
            tracing::debug!("config file changed on disk but not in content; nothing to reload");
            return;
        }
        *seen = Some(digest);
        let Config { startup, live } = match Config::load_text(&self.config_path, &text, &ProcessEnv) {
            Ok(c) => c,
            Err(e) => {
                self.metrics.config_reloads.inc(["refused"]);
                tracing::error!(error = %format!("{e:#}"), "config reload refused; the running config stays");
                return;
            }
        };
        if let Err(e) =
            crate::config::check_native(&live.channels, |a| self.registry.get(a).map(|p| p.info.native.clone()))
        {
            self.metrics.config_reloads.inc(["refused"]);
            tracing::error!(error = %format!("{e:#}"), "config reload refused; the running config stays");
            return;
        }
        // What is bound at start-up stays as it runs; the file's start-up part is only
        // compared, so the operator learns which edits wait for a restart.
        let kept = self.startup.changed_keys(&startup);
        if !kept.is_empty() {
            tracing::warn!(
                keys = %kept.join(", "),
                "config keys that apply at start-up only changed; kept as they run until the next restart"
            );
        }
        let channels = live.channels.len();
        let tokens = live.tokens.len();
        let running = self.relay.snapshot();
        // Channels whose connection settings are unchanged keep their pools.
        let next = Snapshot::reusing(live, self.tls.clone(), self.metrics.clone(), &running);
        let pools_kept = next.pools_kept(&running);
        drop(running);
        self.relay.apply(next);
        self.metrics.config_reloads.inc(["applied"]);
        tracing::info!(channels, tokens, pools_kept, "config reloaded");
    }
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
