//! Micro-benchmark of a labelled counter update (`Family::inc`), the call made on every
//! request and every adapter call: label sets already seen, on 1 and 2 threads at once.
//! Beside it, the design it replaced (one `Mutex<BTreeMap<[String; N], u64>>`, an owned key
//! built per update) as the reference row. `cargo bench -p relay --bench metrics_family`;
//! prints ns per update (medians over batches, wall time and the thread's CPU time).
//! Compare the rows of one run.

use std::collections::BTreeMap;
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

use relay::metrics::Family;

const BATCHES: usize = 9;
const PER_BATCH: usize = 200_000;
const CHANNELS: [&str; 4] = ["openai-main", "anthropic-main", "gemini-backup", "azure-eu"];
const MODELS: [&str; 5] = ["gpt-4o", "claude-3-5-sonnet", "gemini-1.5-pro", "gpt-4o-mini", "text-embedding-3-small"];
const STATUSES: [&str; 3] = ["200", "429", "502"];

trait Counters: Send + Sync + 'static {
    fn inc(&self, labels: [&str; 3]);
    fn get(&self, labels: [&str; 3]) -> u64;
}

impl Counters for Family<3> {
    fn inc(&self, labels: [&str; 3]) {
        Family::inc(self, labels);
    }
    fn get(&self, labels: [&str; 3]) -> u64 {
        Family::get(self, labels)
    }
}

/// The previous design's update path.
#[derive(Default)]
struct MutexFamily(Mutex<BTreeMap<[String; 3], u64>>);

impl Counters for MutexFamily {
    fn inc(&self, labels: [&str; 3]) {
        let key = labels.map(str::to_owned);
        *self.0.lock().expect("not poisoned").entry(key).or_insert(0) += 1;
    }
    fn get(&self, labels: [&str; 3]) -> u64 {
        self.0.lock().expect("not poisoned").get(&labels.map(str::to_owned)).copied().unwrap_or(0)
    }
}

fn thread_cpu() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

/// Median wall and CPU ns per update of one thread while `threads` threads update `f`
/// together; `f` has the 60 series of a family like `relay_requests_total` already seen.
fn measure<C: Counters>(f: Arc<C>, threads: usize) -> (f64, f64) {
    for c in CHANNELS {
        for m in MODELS {
            for s in STATUSES {
                f.inc([c, m, s]);
            }
        }
    }
    let per_batch: Vec<(f64, f64)> = (0..BATCHES)
        .map(|_| {
            let barrier = Arc::new(Barrier::new(threads));
            let handles: Vec<_> = (0..threads)
                .map(|t| {
                    let (f, barrier) = (f.clone(), barrier.clone());
                    std::thread::spawn(move || {
                        barrier.wait();
                        let (start, cpu) = (Instant::now(), thread_cpu());
                        for i in 0..PER_BATCH {
                            let i = i + t;
                            f.inc([CHANNELS[i % 4], MODELS[i % 5], STATUSES[i % 3]]);
                        }
                        let per = |d: Duration| d.as_nanos() as f64 / PER_BATCH as f64;
                        (per(start.elapsed()), per(thread_cpu() - cpu))
                    })
                })
                .collect();
            let times: Vec<(f64, f64)> = handles.into_iter().map(|h| h.join().expect("bench thread")).collect();
            let n = times.len() as f64;
            (times.iter().map(|t| t.0).sum::<f64>() / n, times.iter().map(|t| t.1).sum::<f64>() / n)
        })
        .collect();
    let median = |pick: fn(&(f64, f64)) -> f64| {
        let mut v: Vec<f64> = per_batch.iter().map(pick).collect();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let total: u64 = CHANNELS
        .iter()
        .flat_map(|c| MODELS.iter().flat_map(move |m| STATUSES.iter().map(move |s| [*c, *m, *s])))
        .map(|labels| f.get(labels))
        .sum();
    assert_eq!(total, (60 + BATCHES * PER_BATCH * threads) as u64, "every update counted");
    (median(|t| t.0), median(|t| t.1))
}

fn main() {
    // `cargo bench` passes `--bench`; nothing here takes arguments.
    println!("| one update of a 3-label family, 60 series seen (median of {BATCHES} batches) |  wall ns |   CPU ns |");
    println!("| {:-<70} | -------: | -------: |", "");
    let row = |label: String, (wall, cpu): (f64, f64)| println!("| {label:<70} | {wall:>8.1} | {cpu:>8.1} |");
    for threads in [1, 2] {
        let family = measure(Arc::new(Family::new(["channel", "model", "status"])), threads);
        let mutex = measure(Arc::new(MutexFamily::default()), threads);
        row(format!("Family::inc, {threads} thread(s) at once"), family);
        row(format!("reference: Mutex<BTreeMap> and an owned key, {threads} thread(s)"), mutex);
    }
}
