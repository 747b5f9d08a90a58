//! The results file: one `target<TAB>key<TAB>value` line per figure, appended by each
//! command of the run, read back by `report`.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result};

/// Appends one phase's figures for one target.
pub struct Recorder {
    path: PathBuf,
    target: String,
    phase: String,
}

impl Recorder {
    pub fn new(path: PathBuf, target: String, phase: String) -> Recorder {
        Recorder { path, target, phase }
    }

    /// Record `key` (prefixed with the phase, `ns32.rps`); tabs and newlines in the value
    /// are flattened so one figure stays one line.
    pub fn put(&self, key: &str, value: impl std::fmt::Display) -> Result<()> {
        let key = if self.phase.is_empty() { key.to_string() } else { format!("{}.{key}", self.phase) };
        let value = value.to_string().replace(['\t', '\n', '\r'], " ");
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .with_context(|| format!("cannot open {}", self.path.display()))?;
        writeln!(f, "{}\t{key}\t{value}", self.target)?;
        Ok(())
    }
}

/// Every line of a results file, in order: (target, key, value).
pub fn read(path: &std::path::Path) -> Result<Vec<(String, String, String)>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(text
        .lines()
        .filter_map(|l| {
            let mut it = l.splitn(3, '\t');
            Some((it.next()?.to_string(), it.next()?.to_string(), it.next()?.to_string()))
        })
        .collect())
}
