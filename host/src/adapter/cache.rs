//! Compiled adapters cached on disk, so a restart with unchanged plugins skips the
//! Cranelift compile (hundreds of milliseconds each) and loads in microseconds.
//!
//! Loading precompiled code is trusted (it runs as native code in the relay), so nothing
//! but the relay's own output may ever reach `deserialize`:
//! - the directory must be the relay user's own, not a symlink, and not writable by anyone
//!   else, and so must its parent (`data_dir`); otherwise the cache is not used at all;
//! - entries are created `O_EXCL`, mode 0600, then renamed into place; read with
//!   `O_NOFOLLOW`, and only if they are regular files owned by the relay user that no one
//!   else may write;
//! - each entry carries the SHA-256 of its code, checked before use, so a truncated or
//!   bit-flipped file is recompiled instead of run;
//! - the name carries the component's SHA-256 and the engine's compatibility hash
//!   (wasmtime version and every setting that affects code), and wasmtime checks its own
//!   header too.
//!
//! What this does not stop is someone who already runs as the relay's user: they can
//! read its keys and attach to the process anyway.

use std::hash::{Hash, Hasher};
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use sha2::{Digest, Sha256};
use wasmtime::component::Component;

/// Marks an entry written by this cache format.
const MAGIC: &[u8; 8] = b"RLYCWSM1";
/// Header: magic, then the SHA-256 of the code that follows.
const HEADER: usize = MAGIC.len() + 32;
/// A compiled adapter is a few MiB; anything far larger is not one of ours.
const MAX_ENTRY: u64 = 256 * 1024 * 1024;

pub struct Cache {
    dir: PathBuf,
    /// Engine compatibility hash, hex: part of every entry's name.
    engine_key: String,
}

impl Cache {
    /// Open (and create, owner-only) the cache directory for this engine. `Err` says why
    /// the directory cannot be trusted; the caller then runs without a cache.
    pub fn open(dir: &Path, engine: &wasmtime::Engine) -> Result<Cache> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("cannot create the compile cache {}", dir.display()))?;
        if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            private_dir(parent, false)?;
        }
        private_dir(dir, true)?;
        let mut h = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut h);
        Ok(Cache { dir: dir.to_path_buf(), engine_key: format!("{:016x}", h.finish()) })
    }

    fn entry(&self, sha256: &str) -> PathBuf {
        self.dir.join(format!("{sha256}-{}.cwasm", self.engine_key))
    }

    /// The cached compile of the component with this hash, if there is a usable one. An
    /// entry that fails any check is removed (if it is ours to remove), and the caller
    /// compiles again.
    pub fn get(&self, engine: &wasmtime::Engine, sha256: &str) -> Option<Component> {
        let path = self.entry(sha256);
        let code = match read_entry(&path) {
            Ok(Some(code)) => code,
            Ok(None) => return None,
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %format!("{e:#}"), "refusing a compile cache entry; compiling instead");
                let _ = std::fs::remove_file(&path);
                return None;
            }
        };
        // SAFETY: `code` is a private copy in memory (no mapped file can change under it),
        // read from a regular file that only the relay's user can write, in a directory
        // only that user can write, and it matches the SHA-256 written with it by `put`
        // from `Component::serialize` of a component this engine compiled. wasmtime checks
        // the engine compatibility header as well.
        #[allow(unsafe_code)]
        let loaded = unsafe { Component::deserialize(engine, &code) };
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
        let code = component.serialize().map_err(|e| anyhow::anyhow!("{e}"))?;
        let path = self.entry(sha256);
        let tmp = self.dir.join(format!(".{sha256}.{}.tmp", std::process::id()));
        let _ = std::fs::remove_file(&tmp);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(nofollow())
            .open(&tmp)
            .with_context(|| format!("cannot create {}", tmp.display()))?;
        let written = (|| {
            f.write_all(MAGIC)?;
            f.write_all(&Sha256::digest(&code))?;
            f.write_all(&code)?;
            f.sync_all()
        })();
        if let Err(e) = written.and_then(|()| std::fs::rename(&tmp, &path)) {
            let _ = std::fs::remove_file(&tmp);
            return Err(e.into());
        }
        Ok(())
    }
}

fn nofollow() -> i32 {
    rustix::fs::OFlags::NOFOLLOW.bits() as i32
}

fn euid() -> u32 {
    rustix::process::geteuid().as_raw()
}

/// A directory is private when it is a real directory (not a symlink) of the relay's user
/// that no one else may write. The cache itself must also be unreadable to others; a mode
/// that is only too open is tightened, since the directory is ours.
fn private_dir(dir: &Path, own: bool) -> Result<()> {
    let meta = std::fs::symlink_metadata(dir).with_context(|| format!("cannot inspect {}", dir.display()))?;
    if meta.file_type().is_symlink() {
        bail!("{} is a symlink", dir.display());
    }
    if !meta.is_dir() {
        bail!("{} is not a directory", dir.display());
    }
    if meta.uid() != euid() {
        bail!("{} belongs to uid {}, not to the relay's user (uid {})", dir.display(), meta.uid(), euid());
    }
    let mode = meta.mode() & 0o777;
    if own && mode & 0o077 != 0 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("cannot restrict {} to its owner", dir.display()))?;
    } else if !own && mode & 0o022 != 0 {
        bail!("{} is writable by other users (mode {mode:o})", dir.display());
    }
    Ok(())
}

/// The code of a cache entry once every check passes; `None` when there is no entry.
fn read_entry(path: &Path) -> Result<Option<Vec<u8>>> {
    let mut f = match std::fs::OpenOptions::new().read(true).custom_flags(nofollow()).open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).context("cannot open it (a symlink is refused)"),
    };
    let meta = f.metadata()?;
    if !meta.is_file() {
        bail!("not a regular file");
    }
    if meta.uid() != euid() {
        bail!("owned by uid {}, not by the relay's user", meta.uid());
    }
    if meta.mode() & 0o022 != 0 {
        bail!("writable by other users (mode {:o})", meta.mode() & 0o777);
    }
    if meta.len() > MAX_ENTRY || meta.len() < HEADER as u64 {
        bail!("implausible size {}", meta.len());
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    Read::by_ref(&mut f).take(MAX_ENTRY).read_to_end(&mut bytes)?;
    if bytes.len() < HEADER || &bytes[..MAGIC.len()] != MAGIC {
        bail!("not an entry of this cache format");
    }
    let code = bytes.split_off(HEADER);
    if Sha256::digest(&code).as_slice() != &bytes[MAGIC.len()..] {
        bail!("its code does not match its checksum (corrupt or altered)");
    }
    Ok(Some(code))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn engine() -> wasmtime::Engine {
        let mut cfg = wasmtime::Config::new();
        cfg.wasm_component_model(true);
        wasmtime::Engine::new(&cfg).unwrap()
    }

    fn component(engine: &wasmtime::Engine) -> Component {
        Component::new(engine, "(component)").unwrap()
    }

    fn private_tempdir() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        d
    }

    #[test]
    fn round_trip_and_tampering_is_refused() {
        let data = private_tempdir();
        let engine = engine();
        let cache = Cache::open(&data.path().join("cache"), &engine).unwrap();
        assert!(cache.get(&engine, "abc").is_none(), "no entry yet");
        cache.put(&component(&engine), "abc");
        assert!(cache.get(&engine, "abc").is_some(), "its own entry is used");

        // One flipped bit in the code: refused, removed, recompiled by the caller.
        let path = cache.entry("abc");
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        assert!(cache.get(&engine, "abc").is_none());
        assert!(!path.exists(), "a corrupt entry is removed");

        // A planted file without our header, and a symlink to a good entry: refused.
        std::fs::write(&path, b"\x7fELF planted").unwrap();
        assert!(cache.get(&engine, "abc").is_none());
        cache.put(&component(&engine), "good");
        std::os::unix::fs::symlink(cache.entry("good"), cache.entry("link")).unwrap();
        assert!(cache.get(&engine, "link").is_none(), "a symlinked entry is refused");
        assert!(cache.get(&engine, "good").is_some());

        // An entry others may write is refused.
        std::fs::set_permissions(cache.entry("good"), std::fs::Permissions::from_mode(0o666)).unwrap();
        assert!(cache.get(&engine, "good").is_none());
    }

    #[test]
    fn an_unsafe_directory_is_not_used() {
        let engine = engine();
        let data = private_tempdir();
        // The data dir writable by others: anyone could swap the cache directory.
        std::fs::set_permissions(data.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        let err = Cache::open(&data.path().join("cache"), &engine).err().expect("refused");
        assert!(format!("{err:#}").contains("writable by other users"), "{err:#}");

        // The cache directory a symlink to somewhere else.
        let data = private_tempdir();
        let elsewhere = private_tempdir();
        std::os::unix::fs::symlink(elsewhere.path(), data.path().join("cache")).unwrap();
        let err = Cache::open(&data.path().join("cache"), &engine).err().expect("refused");
        assert!(format!("{err:#}").contains("symlink"), "{err:#}");

        // A cache directory left open to others is tightened, not refused: it is ours.
        let data = private_tempdir();
        let dir = data.path().join("cache");
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        Cache::open(&dir, &engine).unwrap();
        assert_eq!(std::fs::metadata(&dir).unwrap().mode() & 0o777, 0o700);
    }
}
