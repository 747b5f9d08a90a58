//! The workloads: closed-loop load for throughput and latency, the hold test of many slow
//! streams, and the start-up probe.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Result, anyhow, bail};
use tokio::sync::Semaphore;
use tokio::time::{sleep, timeout, timeout_at};

use crate::client::{Sender, Target};
use crate::procfs::Procs;
use crate::results::Recorder;

/// Pause after a failed connect, so a dead server does not turn the loop into a spin.
const RETRY_PAUSE: Duration = Duration::from_millis(10);
/// RSS sampling period during the hold test: fine enough to catch the peak of a 20 s test.
const RSS_SAMPLE_EVERY: Duration = Duration::from_millis(100);
/// Pause between start-up probes: the resolution of the start-up figure.
const PROBE_PAUSE: Duration = Duration::from_millis(1);
/// Bound on one start-up probe (a request that hangs must not stall the probe loop).
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

pub struct LoadPlan {
    pub concurrency: usize,
    /// Connections being opened at once.
    pub ramp: usize,
    pub warmup: Duration,
    pub measure: Duration,
}

pub struct HoldPlan {
    pub streams: usize,
    pub ramp: usize,
    pub timeout: Duration,
    pub after: Duration,
}

#[derive(Default)]
struct Tally {
    latencies_us: Vec<u64>,
    errors: u64,
    first_error: Option<String>,
}

impl Tally {
    fn error(&mut self, e: &anyhow::Error) {
        self.errors += 1;
        self.first_error.get_or_insert_with(|| format!("{e:#}"));
    }

    fn merge(&mut self, other: Tally) {
        self.latencies_us.extend(other.latencies_us);
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[u64], q: f64) -> Option<u64> {
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len().max(1));
    sorted.get(rank - 1).copied()
}

/// `concurrency` connections send requests back to back for warmup + measure; only
/// answers completed inside the measured window count, and the server's CPU is read at
/// the window's edges, so CPU per request = CPU in the window / answers in the window.
pub async fn closed_loop(target: Target, pids: &[u32], plan: LoadPlan, rec: &Recorder) -> Result<()> {
    let procs = Procs::with_children(pids)?;
    let target = Arc::new(target);
    let from = Instant::now() + plan.warmup;
    let end = from + plan.measure;
    let gate = Arc::new(Semaphore::new(plan.ramp));
    let users: Vec<_> =
        (0..plan.concurrency).map(|_| tokio::spawn(user(target.clone(), gate.clone(), from, end))).collect();
    tokio::time::sleep_until(from.into()).await;
    let cpu_from = procs.cpu_us()?;
    tokio::time::sleep_until(end.into()).await;
    let cpu_end = procs.cpu_us()?;
    let mut tally = Tally::default();
    for u in users {
        tally.merge(u.await?);
    }
    tally.latencies_us.sort_unstable();
    let done = tally.latencies_us.len() as u64;
    rec.put("completed", done)?;
    rec.put("errors", tally.errors)?;
    if let Some(e) = &tally.first_error {
        rec.put("first_error", e)?;
    }
    if done == 0 {
        bail!("no request completed in the measured window: {}", tally.first_error.unwrap_or_default());
    }
    let ms = |q| percentile(&tally.latencies_us, q).map_or(0.0, |us| us as f64 / 1000.0);
    rec.put("rps", format!("{:.0}", done as f64 / plan.measure.as_secs_f64()))?;
    rec.put("p50_ms", format!("{:.3}", ms(0.50)))?;
    rec.put("p99_ms", format!("{:.3}", ms(0.99)))?;
    rec.put("cpu_us", format!("{:.1}", (cpu_end - cpu_from) as f64 / done as f64))?;
    eprintln!(
        "  {done} ok, {} errors, {:.0}/s, p50 {:.3} ms, p99 {:.3} ms, CPU {:.1} µs/req",
        tally.errors,
        done as f64 / plan.measure.as_secs_f64(),
        ms(0.50),
        ms(0.99),
        (cpu_end - cpu_from) as f64 / done as f64
    );
    Ok(())
}

/// One virtual user: one keep-alive connection (re-opened when the server closes it),
/// requests back to back until `end`; the one in flight at `end` is abandoned. A new
/// connection holds a `gate` permit until its first answer (so the server has accepted
/// it): a phase's opening burst cannot overflow the listen backlog.
async fn user(target: Arc<Target>, gate: Arc<Semaphore>, from: Instant, end: Instant) -> Tally {
    let mut tally = Tally::default();
    let mut conn: Option<Sender> = None;
    while Instant::now() < end {
        // A connection the server closed between requests (nginx's keepalive_requests) is
        // not a failed request: open another.
        if let Some(s) = conn.as_mut()
            && (s.is_closed() || s.ready().await.is_err())
        {
            conn = None;
        }
        let mut opening = None;
        let sender = match conn.as_mut() {
            Some(s) => s,
            None => {
                let Ok(Ok(permit)) = timeout_at(end.into(), gate.clone().acquire_owned()).await else { break };
                opening = Some(permit);
                match timeout_at(end.into(), target.connect()).await {
                    Err(_) => break,
                    Ok(Ok(s)) => conn.insert(s),
                    Ok(Err(e)) => {
                        if Instant::now() >= from {
                            tally.error(&e);
                        }
                        drop(opening);
                        sleep(RETRY_PAUSE).await;
                        continue;
                    }
                }
            }
        };
        let start = Instant::now();
        let Ok(result) = timeout_at(end.into(), target.exchange(sender)).await else { break };
        drop(opening);
        let done = Instant::now();
        match result {
            Ok(()) if done >= from => tally.latencies_us.push(done.duration_since(start).as_micros() as u64),
            Ok(()) => {}
            Err(e) => {
                if done >= from {
                    tally.error(&e);
                }
                conn = None;
            }
        }
    }
    tally
}

/// `streams` streams opened at once (at most `ramp` being opened at a time), each on its
/// own connection, held to their end; RSS sampled throughout and `after` their end.
pub async fn hold(target: Target, pids: &[u32], plan: HoldPlan, rec: &Recorder) -> Result<()> {
    let procs = Arc::new(Procs::with_children(pids)?);
    let target = Arc::new(target);
    let rss_before = procs.rss_kib()?;
    let cpu_before = procs.cpu_us()?;
    let peak = Arc::new(AtomicU64::new(rss_before));
    let sampler = {
        let (procs, peak) = (procs.clone(), peak.clone());
        tokio::spawn(async move {
            loop {
                sleep(RSS_SAMPLE_EVERY).await;
                if let Ok(kib) = procs.rss_kib() {
                    peak.fetch_max(kib, Ordering::Relaxed);
                }
            }
        })
    };
    let began = Instant::now();
    let gate = Arc::new(Semaphore::new(plan.ramp));
    // When the last stream got its response head, µs after `began`: how long opening took.
    let opened_us = Arc::new(AtomicU64::new(0));
    let streams: Vec<_> = (0..plan.streams)
        .map(|_| {
            let (target, gate, opened_us) = (target.clone(), gate.clone(), opened_us.clone());
            tokio::spawn(async move {
                let permit = gate.acquire_owned().await?;
                let start = Instant::now();
                let one = async {
                    let mut sender = target.connect().await?;
                    let resp = target.head(&mut sender).await?;
                    opened_us.fetch_max(began.elapsed().as_micros() as u64, Ordering::Relaxed);
                    drop(permit);
                    target.finish(resp).await
                };
                match timeout(plan.timeout, one).await {
                    Ok(r) => r.map(|()| start.elapsed()),
                    Err(_) => Err(anyhow!("stream not complete after {:?}", plan.timeout)),
                }
            })
        })
        .collect();
    let mut tally = Tally::default();
    for s in streams {
        match s.await? {
            Ok(d) => tally.latencies_us.push(d.as_micros() as u64),
            Err(e) => tally.error(&e),
        }
    }
    let cpu_end = procs.cpu_us()?;
    sampler.abort();
    peak.fetch_max(procs.rss_kib()?, Ordering::Relaxed);
    let peak = peak.load(Ordering::Relaxed);
    tally.latencies_us.sort_unstable();
    let done = tally.latencies_us.len() as u64;
    let s = |q| percentile(&tally.latencies_us, q).map_or(0.0, |us| us as f64 / 1e6);
    rec.put("streams", plan.streams)?;
    rec.put("completed", done)?;
    rec.put("errors", tally.errors)?;
    if let Some(e) = &tally.first_error {
        rec.put("first_error", e)?;
    }
    rec.put("p50_s", format!("{:.2}", s(0.50)))?;
    rec.put("p99_s", format!("{:.2}", s(0.99)))?;
    rec.put("open_s", format!("{:.2}", opened_us.load(Ordering::Relaxed) as f64 / 1e6))?;
    rec.put("cpu_us", format!("{:.1}", (cpu_end - cpu_before) as f64 / done.max(1) as f64))?;
    rec.put("rss_before_kib", rss_before)?;
    rec.put("rss_peak_kib", peak)?;
    eprintln!(
        "  {done}/{} complete, p50 {:.2} s, p99 {:.2} s, RSS {} → peak {} MiB; waiting {:?} for the after sample",
        plan.streams,
        s(0.50),
        s(0.99),
        rss_before / 1024,
        peak / 1024,
        plan.after
    );
    sleep(plan.after).await;
    let after = procs.rss_kib()?;
    rec.put("rss_after_kib", after)?;
    eprintln!("  RSS {} MiB {:?} after", after / 1024, plan.after);
    Ok(())
}

/// Probe with a fresh connection every millisecond until one request answers 200; the
/// start-up time is from `since_us` (taken by the script just before it spawned the
/// server) to that answer, in ms.
pub async fn wait_ok(target: Target, since_us: u64, bound: Duration) -> Result<f64> {
    let deadline = Instant::now() + bound;
    let mut last = anyhow!("no attempt");
    loop {
        let attempt = async {
            let mut sender = target.connect().await?;
            target.exchange(&mut sender).await
        };
        match timeout(PROBE_TIMEOUT, attempt).await {
            Ok(Ok(())) => {
                let now_us = SystemTime::now().duration_since(UNIX_EPOCH)?.as_micros() as u64;
                return Ok(now_us.saturating_sub(since_us) as f64 / 1000.0);
            }
            Ok(Err(e)) => last = e,
            Err(_) => last = anyhow!("probe timed out after {PROBE_TIMEOUT:?}"),
        }
        if Instant::now() > deadline {
            bail!("no 200 within {bound:?}; last attempt: {last:#}");
        }
        sleep(PROBE_PAUSE).await;
    }
}

#[cfg(test)]
mod tests {
    use super::percentile;

    #[test]
    fn nearest_rank() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 0.50), Some(50));
        assert_eq!(percentile(&v, 0.99), Some(99));
        assert_eq!(percentile(&[7], 0.99), Some(7));
        assert_eq!(percentile(&[], 0.5), None);
    }
}
