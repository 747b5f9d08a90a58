//! CPU time and resident memory of the server under test, from /proc.

use anyhow::{Context, Result, anyhow};

/// USER_HZ, the unit of utime/stime in /proc/<pid>/stat: 100 on every Linux architecture
/// Debian ships (it is fixed by the ABI, independent of the kernel's HZ).
const CLOCK_TICKS_PER_SEC: u64 = 100;
const MICROS_PER_TICK: u64 = 1_000_000 / CLOCK_TICKS_PER_SEC;

/// The processes of one server: the given ones and their direct children (nginx's
/// workers), fixed when created.
pub struct Procs {
    pids: Vec<u32>,
}

impl Procs {
    pub fn with_children(roots: &[u32]) -> Result<Procs> {
        let mut pids = roots.to_vec();
        for entry in std::fs::read_dir("/proc").context("cannot read /proc")? {
            let Some(pid) = entry?.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
                continue;
            };
            // Processes come and go while we scan; one that vanished is not a child of ours.
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                continue;
            };
            if let Some(ppid) = stat_fields(&stat).and_then(|f| f.get(1)?.parse::<u32>().ok())
                && roots.contains(&ppid)
                && !pids.contains(&pid)
            {
                pids.push(pid);
            }
        }
        Ok(Procs { pids })
    }

    /// user + system CPU time of all the processes (all their threads, live and exited), µs.
    pub fn cpu_us(&self) -> Result<u64> {
        let mut ticks = 0;
        for pid in &self.pids {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .with_context(|| format!("server process {pid} is gone"))?;
            let f = stat_fields(&stat).ok_or_else(|| anyhow!("unexpected /proc/{pid}/stat"))?;
            // After the command: state is field 3 of stat(5), utime 14, stime 15.
            let field = |i: usize| f.get(i - 3).and_then(|v| v.parse::<u64>().ok());
            ticks += field(14).zip(field(15)).map(|(u, s)| u + s).ok_or_else(|| anyhow!("bad /proc/{pid}/stat"))?;
        }
        Ok(ticks * MICROS_PER_TICK)
    }

    /// Sum of VmRSS of all the processes, KiB.
    pub fn rss_kib(&self) -> Result<u64> {
        let mut kib = 0;
        for pid in &self.pids {
            let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
                .with_context(|| format!("server process {pid} is gone"))?;
            kib += status
                .lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
                .ok_or_else(|| anyhow!("no VmRSS in /proc/{pid}/status"))?;
        }
        Ok(kib)
    }
}

/// The fields of /proc/<pid>/stat after `(comm)`, which may itself contain spaces.
fn stat_fields(stat: &str) -> Option<Vec<&str>> {
    let rest = &stat[stat.rfind(')')? + 1..];
    Some(rest.split_whitespace().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_has_cpu_and_rss() {
        let me = Procs::with_children(&[std::process::id()]).unwrap();
        assert!(me.rss_kib().unwrap() > 0);
        let before = me.cpu_us().unwrap();
        let start = std::time::Instant::now();
        // Spin past two clock ticks so the counter must move.
        while start.elapsed() < std::time::Duration::from_millis(50) {
            std::hint::black_box(start.elapsed());
        }
        assert!(me.cpu_us().unwrap() > before);
    }

    #[test]
    fn comm_with_spaces_and_parens() {
        let f = stat_fields("42 (a (b) c) S 7 42 42 0 -1 4194560 0 0 0 0 11 22 0").unwrap();
        assert_eq!(f[0], "S");
        assert_eq!(f[1], "7");
        assert_eq!(f[14 - 3], "11");
        assert_eq!(f[15 - 3], "22");
    }
}
