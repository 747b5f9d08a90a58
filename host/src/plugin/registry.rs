//! The adapters in service, by name. Readers take a snapshot without locking; a load
//! builds a new map and swaps it in whole, so a request sees one consistent version.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use arc_swap::ArcSwap;
use sha2::{Digest, Sha256};
use wasmtime::component::Component;

use super::bindings::AdapterPluginPre;
use super::{Engine, Plugin};
use crate::metrics::Metrics;

pub struct Registry {
    plugins: ArcSwap<HashMap<String, Arc<Plugin>>>,
}

/// What a directory load did: the adapters now served and the files refused.
#[derive(Debug, Default)]
pub struct LoadReport {
    pub loaded: Vec<(String, String)>,
    pub failed: Vec<(String, String)>,
}

impl Default for Registry {
    fn default() -> Self {
        Self { plugins: ArcSwap::from_pointee(HashMap::new()) }
    }
}

impl Registry {
    pub fn get(&self, name: &str) -> Option<Arc<Plugin>> {
        self.plugins.load().get(name).cloned()
    }

    pub fn all(&self) -> Vec<Arc<Plugin>> {
        let mut v: Vec<_> = self.plugins.load().values().cloned().collect();
        v.sort_by(|a, b| a.name().cmp(b.name()));
        v
    }

    /// Load every `*.wasm` in `dir` (sorted by file name) and serve exactly those.
    pub async fn load_dir(&self, engine: &Engine, dir: &Path, metrics: &Arc<Metrics>) -> Result<LoadReport> {
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .with_context(|| format!("cannot read plugin_dir {}", dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "wasm") && p.is_file())
            .collect();
        files.sort();

        let mut report = LoadReport::default();
        let mut map = HashMap::new();
        for path in files {
            let file = path.display().to_string();
            match load(engine, &path, metrics).await {
                Ok(plugin) => {
                    if let Some(other) = map.get(plugin.name()).map(|p: &Arc<Plugin>| p.path.display().to_string()) {
                        let why = format!("adapter name '{}' is already served by {other}", plugin.name());
                        tracing::error!(file, reason = %why, "adapter refused");
                        report.failed.push((file, why));
                        continue;
                    }
                    tracing::info!(
                        file,
                        plugin = %plugin.name(),
                        version = %plugin.info.version,
                        sha256 = %&plugin.sha256[..12],
                        "adapter loaded"
                    );
                    report.loaded.push((plugin.name().to_string(), file));
                    map.insert(plugin.name().to_string(), Arc::new(plugin));
                }
                Err(e) => {
                    let why = format!("{e:#}");
                    tracing::error!(file, reason = %why, "adapter refused");
                    report.failed.push((file, why));
                }
            }
        }
        self.plugins.store(Arc::new(map));
        Ok(report)
    }
}

/// Parse, compile, pre-instantiate and smoke-call `info()`: a file that fails any step
/// never reaches the request path.
pub async fn load(engine: &Engine, path: &Path, metrics: &Arc<Metrics>) -> Result<Plugin> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let sha256 = hex(&Sha256::digest(&bytes));
    if !bytes.starts_with(b"\0asm") {
        bail!("not a WebAssembly file");
    }
    let wasmtime_engine = engine.wasmtime().clone();
    // Compilation takes hundreds of milliseconds of CPU: keep it off the async workers.
    let component = tokio::task::spawn_blocking(move || Component::from_binary(&wasmtime_engine, &bytes))
        .await
        .context("compiler task failed")?
        .map_err(|e| anyhow::anyhow!("not a valid adapter component: {}", e.root_cause()))?;
    let pre = engine
        .linker()
        .instantiate_pre(&component)
        .map_err(|e| anyhow::anyhow!("the component does not fit the host: {}", e.root_cause()))?;
    let pre = AdapterPluginPre::new(pre).map_err(|e| {
        anyhow::anyhow!("the component does not export relay:adapter/adapter@0.1.0: {}", e.root_cause())
    })?;

    let mut store = engine.store("<loading>", "load");
    let instance =
        pre.instantiate_async(&mut store).await.map_err(|e| anyhow::anyhow!("instantiation failed: {e:#}"))?;
    let info = instance
        .relay_adapter_adapter()
        .call_info(&mut store)
        .await
        .map_err(|e| anyhow::anyhow!("info() failed: {e:#}"))?;
    validate_name(&info.name)?;
    if info.endpoints.is_empty() {
        bail!("info() lists no endpoints");
    }
    Ok(Plugin { info, path: path.to_path_buf(), sha256, pre, engine: engine.clone(), metrics: metrics.clone() })
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

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
