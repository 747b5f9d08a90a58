//! The adapters in service, by name. Readers take a snapshot without locking; a load
//! builds a new map and swaps it in whole, so a request sees one consistent version and
//! keeps the `Arc<Adapter>` it started with until it ends.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use anyhow::{Context, Result, bail};
use arc_swap::ArcSwap;
use sha2::{Digest, Sha256};
use wasmtime::component::Component;

use super::bindings::{Contract, Mismatch, Pre};
use super::cache::Cache;
use super::{Adapter, Engine};
use crate::metrics::Metrics;
use crate::model::AuthScheme;

/// Builds `Adapter`s from files: hash, compile (or take from the cache), pre-instantiate,
/// smoke-call `info()`.
pub struct Loader {
    pub engine: Engine,
    cache: Option<Cache>,
    metrics: Arc<Metrics>,
}

impl Loader {
    pub fn new(engine: Engine, cache_dir: Option<&Path>, metrics: Arc<Metrics>) -> Result<Loader> {
        // An untrustworthy cache directory costs a compile per load, never a refusal to start.
        let cache = cache_dir.and_then(|d| {
            Cache::open(d, engine.wasmtime())
                .map_err(|e| tracing::warn!(error = %format!("{e:#}"), "compile cache not used"))
                .ok()
        });
        Ok(Loader { engine, cache, metrics })
    }

    /// Load one file. A file that fails any step never reaches the request path.
    pub async fn load(&self, path: &Path) -> Result<Adapter> {
        let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        self.load_bytes(path, bytes).await
    }

    async fn load_bytes(&self, path: &Path, bytes: Vec<u8>) -> Result<Adapter> {
        let sha256 = hex(&Sha256::digest(&bytes));
        if !bytes.starts_with(b"\0asm") {
            bail!("not a WebAssembly file");
        }
        let engine = self.engine.wasmtime().clone();
        let started = std::time::Instant::now();
        let cached = self.cache.as_ref().and_then(|c| c.get(&engine, &sha256));
        let from_cache = cached.is_some();
        let component = match cached {
            Some(c) => c,
            None => {
                // Compilation takes hundreds of milliseconds of CPU: keep it off the
                // async workers.
                let c = tokio::task::spawn_blocking(move || Component::from_binary(&engine, &bytes))
                    .await
                    .context("compiler task failed")?
                    .map_err(|e| anyhow::anyhow!("not a valid adapter component: {}", e.root_cause()))?;
                if let Some(cache) = &self.cache {
                    cache.put(&c, &sha256);
                }
                c
            }
        };
        // The contract version first, by export name: a component of another version is
        // told which versions this host speaks, not which import it lacks.
        let unfit = |why: String| {
            anyhow::anyhow!(
                "the component does not export a contract this host speaks ({}): {why}",
                Contract::exports()
            )
        };
        let contract = Contract::of(&component, self.engine.wasmtime()).map_err(unfit)?;
        let pre = self
            .engine
            .linker_for(&component)
            .and_then(|l| Ok(l.instantiate_pre(&component)?))
            .map_err(|e| anyhow::anyhow!("the component does not fit this host's contract: {}", e.root_cause()))?;
        let pre = Pre::new(contract, pre).map_err(|e| {
            unfit(format!("its {} does not have the contract's types: {}", contract.export(), e.root_cause()))
        })?;

        // Instantiation and `info()` run under the same wall-clock bound as any call, so an
        // adapter that blocks cannot hold up start-up or the reloader.
        let bound = self.engine.wall_timeout();
        let over = |what: &str| anyhow::anyhow!("{what} ran past the wall-clock limit of {} ms", bound.as_millis());
        let mut store = self.engine.store("<loading>", "load");
        let instance = tokio::time::timeout(bound, pre.instantiate_async(&mut store))
            .await
            .map_err(|_| over("instantiation"))?
            .map_err(|e| match e.downcast_ref::<Mismatch>() {
                Some(m) => unfit(format!("its {} does not have the contract's types: {m}", contract.export())),
                None => anyhow::anyhow!(
                    "instantiation failed: {}",
                    super::truncate(format!("{e:#}"), super::MAX_ADAPTER_ERROR)
                ),
            })?;
        let info =
            tokio::time::timeout(bound, instance.info(&mut store)).await.map_err(|_| over("info()"))?.map_err(|e| {
                anyhow::anyhow!(
                    "info() failed: {}",
                    super::truncate(e.root_cause().to_string(), super::MAX_ADAPTER_ERROR)
                )
            })?;
        drop(store);
        validate_name(&info.name)?;
        validate_auth(&info.auth)?;
        if info.endpoints.is_empty() && info.native.is_empty() {
            bail!("info() lists no endpoints");
        }
        Ok(Adapter {
            from_cache,
            prepare_ms: started.elapsed().as_secs_f64() * 1000.0,
            info,
            path: path.to_path_buf(),
            sha256,
            loaded_at: SystemTime::now(),
            pre,
            engine: self.engine.clone(),
            metrics: self.metrics.clone(),
            pools: super::Pools::new(),
        })
    }
}

pub struct Registry {
    plugins: ArcSwap<HashMap<String, Arc<Adapter>>>,
}

/// What a directory scan did.
#[derive(Debug, Default)]
pub struct LoadReport {
    /// (adapter name, file) newly loaded or replaced.
    pub loaded: Vec<(String, String)>,
    /// (file, reason) refused; a previous version from the same file keeps serving.
    pub failed: Vec<(String, String)>,
    /// Adapter names no longer served because their file is gone.
    pub removed: Vec<String>,
}

impl Default for Registry {
    fn default() -> Self {
        Self { plugins: ArcSwap::from_pointee(HashMap::new()) }
    }
}

impl Registry {
    pub fn get(&self, name: &str) -> Option<Arc<Adapter>> {
        self.plugins.load().get(name).cloned()
    }

    pub fn all(&self) -> Vec<Arc<Adapter>> {
        let mut v: Vec<_> = self.plugins.load().values().cloned().collect();
        v.sort_by(|a, b| a.name().cmp(b.name()));
        v
    }

    /// Make the served set match the `*.wasm` files in `dir`: unchanged files keep their
    /// loaded version, new and changed ones are loaded, removed ones are dropped. A file
    /// that fails to load leaves the version it replaced serving.
    pub async fn reconcile(&self, loader: &Loader, dir: &Path) -> Result<LoadReport> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .with_context(|| format!("cannot read plugin_dir {}", dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "wasm") && p.is_file())
            .collect();
        files.sort();

        let current = self.plugins.load_full();
        let by_path: HashMap<&Path, &Arc<Adapter>> = current.values().map(|p| (p.path.as_path(), p)).collect();
        let mut report = LoadReport::default();
        let mut next: HashMap<String, Arc<Adapter>> = HashMap::new();
        let m = &loader.metrics;
        for path in &files {
            let file = path.display().to_string();
            let previous = by_path.get(path.as_path()).copied();
            let bytes = match std::fs::read(path) {
                Ok(b) => b,
                Err(e) => {
                    report.failed.push((file, e.to_string()));
                    if let Some(p) = previous {
                        next.insert(p.name().to_string(), p.clone());
                    }
                    continue;
                }
            };
            let plugin = match previous {
                Some(p) if p.sha256 == hex(&Sha256::digest(&bytes)) => p.clone(),
                _ => match loader.load_bytes(path, bytes).await {
                    Ok(p) => {
                        tracing::info!(
                            file,
                            plugin = %p.name(),
                            version = %p.info.version,
                            contract = %p.contract().version(),
                            sha256 = %&p.sha256[..12],
                            replaced = previous.is_some(),
                            cached = p.from_cache,
                            ms = p.prepare_ms,
                            "adapter loaded"
                        );
                        m.plugin_loaded(p.name());
                        report.loaded.push((p.name().to_string(), file.clone()));
                        Arc::new(p)
                    }
                    Err(e) => {
                        let why = format!("{e:#}");
                        let label = previous.map_or_else(|| file_stem(path), |p| p.name().to_string());
                        tracing::error!(file, reason = %why, kept_previous = previous.is_some(), "adapter refused");
                        m.plugin_reloads.inc([&label, "refused"]);
                        report.failed.push((file.clone(), why));
                        match previous {
                            Some(p) => p.clone(),
                            None => continue,
                        }
                    }
                },
            };
            if let Some(other) = next.get(plugin.name()) {
                let why = format!("adapter name '{}' is already served by {}", plugin.name(), other.path.display());
                tracing::error!(file, reason = %why, "adapter refused");
                m.plugin_reloads.inc([plugin.name(), "refused"]);
                report.failed.push((file, why));
                continue;
            }
            next.insert(plugin.name().to_string(), plugin);
        }
        for name in current.keys() {
            if !next.contains_key(name) {
                tracing::warn!(plugin = %name, "adapter removed: new requests for it get 503");
                m.plugin_reloads.inc([name, "removed"]);
                report.removed.push(name.clone());
            }
        }
        m.set_plugins(
            next.values().map(|p| [p.name().to_string(), p.info.version.clone(), p.sha256.clone()]).collect(),
        );
        self.plugins.store(Arc::new(next));
        Ok(report)
    }
}

fn file_stem(path: &Path) -> String {
    path.file_stem().map_or_else(|| "?".into(), |s| s.to_string_lossy().into_owned())
}

fn validate_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if !ok {
        bail!("adapter name '{name}' must be 1-64 of a-z, 0-9, '-' and '_'");
    }
    Ok(())
}

/// Header names an adapter may ask the channel key to be sent in: the vendors' own key
/// headers. Any other name could be one an upstream or a gateway reflects back (`origin`,
/// `x-request-id`, `host`), handing the key to the adapter with the response.
pub const AUTH_HEADERS: [&str; 4] = ["x-api-key", "api-key", "x-goog-api-key", "anthropic-api-key"];
/// Query parameters an adapter may ask the channel key to be sent in.
pub const AUTH_QUERY_PARAMS: [&str; 2] = ["key", "api-key"];

/// Refuse a credential placement outside the allow-lists, at load, with the reason.
pub fn validate_auth(auth: &AuthScheme) -> Result<()> {
    match auth {
        AuthScheme::Bearer | AuthScheme::None => Ok(()),
        AuthScheme::Header(name) if AUTH_HEADERS.contains(&name.to_ascii_lowercase().as_str()) => Ok(()),
        AuthScheme::Header(name) => bail!(
            "auth header '{}' is not allowed for the channel key: use bearer (authorization) or one of {}",
            super::truncate(name.escape_debug().to_string(), 128),
            AUTH_HEADERS.join(", ")
        ),
        AuthScheme::Query(param) if AUTH_QUERY_PARAMS.contains(&param.as_str()) => Ok(()),
        AuthScheme::Query(param) => bail!(
            "auth query parameter '{}' is not allowed for the channel key: use one of {}",
            super::truncate(param.escape_debug().to_string(), 128),
            AUTH_QUERY_PARAMS.join(", ")
        ),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
