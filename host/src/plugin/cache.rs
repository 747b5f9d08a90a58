//! Compiled adapters cached on disk, so a restart with unchanged plugins skips the
//! Cranelift compile (hundreds of milliseconds each) and loads in microseconds.
//!
//! Entries are keyed by the component's SHA-256 and the engine's compatibility hash
//! (wasmtime version and every setting that affects code), written temp-then-rename, and
//! read only from this directory, which only the relay writes: loading precompiled code
//! is trusted, so nothing else may ever be fed to it.

use std::hash::{Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use wasmtime::component::Component;

pub struct Cache {
    dir: PathBuf,
    /// Engine compatibility hash, hex: part of every entry's name.
    engine_key: String,
}

impl Cache {
    /// Open (and create, owner-only) the cache directory for this engine.
    pub fn open(dir: &Path, engine: &wasmtime::Engine) -> Result<Cache> {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create cache_dir {}", dir.display()))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
                .with_context(|| format!("cannot restrict cache_dir {}", dir.display()))?;
        }
        let mut h = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut h);
        Ok(Cache { dir: dir.to_path_buf(), engine_key: format!("{:016x}", h.finish()) })
    }

    fn entry(&self, sha256: &str) -> PathBuf {
        self.dir.join(format!("{sha256}-{}.cwasm", self.engine_key))
    }

    /// The cached compile of the component with this hash, if there is a usable one. A
    /// corrupt or incompatible entry is removed, and the caller compiles again.
    pub fn get(&self, engine: &wasmtime::Engine, sha256: &str) -> Option<Component> {
        let path = self.entry(sha256);
        if !path.exists() {
            return None;
        }
        // SAFETY: the file is in the relay's own cache directory (owner-only), was written
        // by `put` from `Component::serialize` of a component this engine compiled, and its
        // name carries the engine's compatibility hash; wasmtime checks the header too.
        #[allow(unsafe_code)]
        let loaded = unsafe { Component::deserialize_file(engine, &path) };
        match loaded {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "dropping unusable cache entry");
                let _ = std::fs::remove_file(&path);
                None
            }
        }
    }

    /// Store a compiled component; failures only cost the next start a compile.
    pub fn put(&self, component: &Component, sha256: &str) {
        if let Err(e) = self.try_put(component, sha256) {
            tracing::warn!(error = %format!("{e:#}"), "cannot write the compile cache");
        }
    }

    fn try_put(&self, component: &Component, sha256: &str) -> Result<()> {
        let bytes = component.serialize().map_err(|e| anyhow::anyhow!("{e}"))?;
        let path = self.entry(sha256);
        let tmp = self.dir.join(format!(".{sha256}.{}.tmp", std::process::id()));
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        Ok(())
    }
}
