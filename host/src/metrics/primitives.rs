//! The instruments the registry is built from: gauges, counters, label families, histograms.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;

use super::Metrics;

#[derive(Default)]
pub struct Gauge(pub(super) AtomicI64);

impl Gauge {
    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }

    /// Count one live thing until the guard drops.
    pub fn track(&self) -> GaugeGuard<'_> {
        self.0.fetch_add(1, Ordering::Relaxed);
        GaugeGuard(self)
    }

    pub fn set(&self, v: i64) {
        self.0.store(v, Ordering::Relaxed);
    }

    /// For counts of stored things (jobs by status) that move on state changes, not scopes.
    pub fn add(&self, n: i64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
}

#[must_use = "the gauge goes down when the guard drops"]
pub struct GaugeGuard<'a>(&'a Gauge);

impl Drop for GaugeGuard<'_> {
    fn drop(&mut self) {
        self.0.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A guard that owns its gauge's metrics handle, for values that outlive a borrow
/// (connections in the pool, stream bodies handed to hyper).
pub struct OwnedGaugeGuard {
    metrics: std::sync::Arc<Metrics>,
    pick: fn(&Metrics) -> &Gauge,
}

impl OwnedGaugeGuard {
    pub fn new(metrics: std::sync::Arc<Metrics>, pick: fn(&Metrics) -> &Gauge) -> Self {
        pick(&metrics).0.fetch_add(1, Ordering::Relaxed);
        Self { metrics, pick }
    }

    pub fn metrics(&self) -> std::sync::Arc<Metrics> {
        self.metrics.clone()
    }
}

impl Drop for OwnedGaugeGuard {
    fn drop(&mut self) {
        (self.pick)(&self.metrics).0.fetch_sub(1, Ordering::Relaxed);
    }
}

#[derive(Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Distinct label sets one family keeps; past it new sets fold into one `_other` series.
/// Real label values (channels, admitted models, adapters) number in the tens; 1,000 leaves
/// room for any honest deployment while a flood of client-chosen values cannot grow
/// `/metrics` or memory without end.
pub const MAX_SERIES_PER_FAMILY: usize = 1_000;
/// The label value every folded series is counted under.
pub const FOLDED_LABEL: &str = "_other";

/// A counter family keyed by label values. Updating a label set already seen takes no lock
/// and allocates nothing: the series map is read through an `ArcSwap` and looked up with the
/// caller's `&str`s, and each series is its own atomic. A new label set copies the map
/// (handles only, no label text) under `grow` and swaps the copy in; label sets are few
/// (tens) and new ones rare. At most `MAX_SERIES_PER_FAMILY` (+1 for `_other`) series.
pub struct Family<const N: usize> {
    labels: [&'static str; N],
    series: ArcSwap<Series<N>>,
    /// Held while a new series is added, so two additions cannot lose one another.
    grow: Mutex<()>,
    max_series: usize,
    /// Updates whose label set was folded into `_other`.
    folded: AtomicU64,
}

type Series<const N: usize> = HashMap<LabelSet<N>, Arc<AtomicU64>, BuildHasherDefault<FxHasher>>;

/// rustc's FxHash: a multiply and a rotate per word. Label values are the config's names
/// (channels, admitted models, adapters) and closed sets of outcomes, not a client's choice,
/// and the fold bound caps the map anyway; a keyed SipHash would cost more than the rest of
/// the update.
#[derive(Default)]
struct FxHasher(u64);

impl FxHasher {
    fn word(&mut self, w: u64) {
        self.0 = (self.0.rotate_left(5) ^ w).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

impl Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            self.word(u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]));
        }
        let mut tail = [0u8; 8];
        let rest = chunks.remainder();
        if !rest.is_empty() {
            tail[..rest.len()].copy_from_slice(rest);
            self.word(u64::from_le_bytes(tail));
        }
    }

    fn write_u8(&mut self, i: u8) {
        self.word(u64::from(i));
    }

    fn write_usize(&mut self, i: usize) {
        self.word(i as u64);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// A stored label set. The values are shared, so copying the map copies no text.
#[derive(Clone)]
struct LabelSet<const N: usize>([Arc<str>; N]);

/// Label values as a key, stored or borrowed: both hash and compare by `values()`, so a
/// lookup borrows the caller's `[&str; N]` (`Borrow<dyn LabelValues>`) instead of building
/// an owned key.
trait LabelValues<const N: usize> {
    fn values(&self) -> [&str; N];
}

impl<const N: usize> LabelValues<N> for [&str; N] {
    fn values(&self) -> [&str; N] {
        *self
    }
}

impl<const N: usize> LabelValues<N> for LabelSet<N> {
    fn values(&self) -> [&str; N] {
        self.0.each_ref().map(|v| &**v)
    }
}

impl<const N: usize> Hash for dyn LabelValues<N> + '_ {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.values().hash(state);
    }
}

impl<const N: usize> PartialEq for dyn LabelValues<N> + '_ {
    fn eq(&self, other: &Self) -> bool {
        self.values() == other.values()
    }
}

impl<const N: usize> Eq for dyn LabelValues<N> + '_ {}

impl<const N: usize> Hash for LabelSet<N> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // The same hash as the borrowed form, which `Borrow` requires.
        (self as &dyn LabelValues<N>).hash(state);
    }
}

impl<const N: usize> PartialEq for LabelSet<N> {
    fn eq(&self, other: &Self) -> bool {
        self.values() == other.values()
    }
}

impl<const N: usize> Eq for LabelSet<N> {}

impl<'a, const N: usize> Borrow<dyn LabelValues<N> + 'a> for LabelSet<N> {
    fn borrow(&self) -> &(dyn LabelValues<N> + 'a) {
        self
    }
}

impl<const N: usize> Family<N> {
    pub fn new(labels: [&'static str; N]) -> Self {
        Self::bounded(labels, MAX_SERIES_PER_FAMILY)
    }

    pub fn bounded(labels: [&'static str; N], max_series: usize) -> Self {
        Self {
            labels,
            series: ArcSwap::from_pointee(HashMap::default()),
            grow: Mutex::new(()),
            max_series,
            folded: AtomicU64::new(0),
        }
    }

    pub fn add(&self, labels: [&str; N], n: u64) {
        let series = self.series.load();
        if let Some(v) = series.get(&labels as &dyn LabelValues<N>) {
            v.fetch_add(n, Ordering::Relaxed);
            return;
        }
        // Full, and the fold series exists: no new series can come of this, no lock needed.
        if series.len() >= self.max_series
            && let Some(v) = series.get(&[FOLDED_LABEL; N] as &dyn LabelValues<N>)
        {
            self.folded.fetch_add(1, Ordering::Relaxed);
            v.fetch_add(n, Ordering::Relaxed);
            return;
        }
        drop(series);
        self.add_series(labels, n);
    }

    /// `add` for a label set not seen yet: a new series, or the fold series past the bound.
    #[cold]
    fn add_series(&self, labels: [&str; N], n: u64) {
        let _grow = self.grow.lock().unwrap_or_else(|e| e.into_inner());
        // Another update may have added it since `add` looked.
        let current = self.series.load_full();
        if let Some(v) = current.get(&labels as &dyn LabelValues<N>) {
            v.fetch_add(n, Ordering::Relaxed);
            return;
        }
        let key = if current.len() >= self.max_series {
            self.folded.fetch_add(1, Ordering::Relaxed);
            if let Some(v) = current.get(&[FOLDED_LABEL; N] as &dyn LabelValues<N>) {
                v.fetch_add(n, Ordering::Relaxed);
                return;
            }
            [FOLDED_LABEL; N]
        } else {
            labels
        };
        // The copy shares every series' counter: updates made through the old map while it
        // is copied still count.
        let mut next: Series<N> = HashMap::clone(&current);
        next.insert(LabelSet(key.map(Arc::from)), Arc::new(AtomicU64::new(n)));
        self.series.store(Arc::new(next));
    }

    /// Updates folded into `_other` since start.
    pub fn folded(&self) -> u64 {
        self.folded.load(Ordering::Relaxed)
    }

    pub fn inc(&self, labels: [&str; N]) {
        self.add(labels, 1);
    }

    pub fn get(&self, labels: [&str; N]) -> u64 {
        self.series.load().get(&labels as &dyn LabelValues<N>).map_or(0, |v| v.load(Ordering::Relaxed))
    }

    pub(super) fn render(&self, out: &mut String, name: &str, help: &str, kind: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        let series = self.series.load_full();
        // Sorted by label values, as a scrape has always listed them.
        let mut rows: Vec<([&str; N], u64)> =
            series.iter().map(|(k, v)| (k.values(), v.load(Ordering::Relaxed))).collect();
        rows.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        for (values, n) in rows {
            let _ = writeln!(out, "{name}{{{}}} {n}", label_pairs(&self.labels, &values));
        }
    }
}

pub(super) fn label_pairs<S: AsRef<str>>(names: &[&str], values: &[S]) -> String {
    let mut s = String::new();
    for (i, (k, v)) in names.iter().zip(values).enumerate() {
        if i > 0 {
            s.push(',');
        }
        let v = v.as_ref().replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n");
        let _ = write!(s, "{k}=\"{v}\"");
    }
    s
}

/// Seconds: from a fast non-stream answer to the seed's 15-minute bound.
const BUCKETS: [f64; 16] =
    [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 600.0, 900.0];

pub struct Histogram {
    counts: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self {
            counts: std::array::from_fn(|_| AtomicU64::new(0)),
            count: AtomicU64::new(0),
            sum_micros: AtomicU64::new(0),
        }
    }
}

impl Histogram {
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        if let Some(i) = BUCKETS.iter().position(|b| secs <= *b) {
            self.counts[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add(d.as_micros() as u64, Ordering::Relaxed);
    }

    pub(super) fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0;
        for (b, c) in BUCKETS.iter().zip(&self.counts) {
            cumulative += c.load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{b}\"}} {cumulative}");
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {count}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_fold_past_their_bound() {
        let f = Family::bounded(["model"], 3);
        for m in ["a", "b", "c", "d", "e"] {
            f.inc([m]);
        }
        f.inc(["a"]);
        assert_eq!(f.get(["a"]), 2, "known series still count");
        assert_eq!(f.get(["d"]), 0);
        assert_eq!(f.get([FOLDED_LABEL]), 2, "new keys past the bound fold into _other");
        assert_eq!(f.folded(), 2);
        let mut out = String::new();
        f.render(&mut out, "x_total", "x", "counter");
        assert_eq!(out.lines().filter(|l| !l.starts_with('#')).count(), 4, "{out}");
        assert!(out.contains("x_total{model=\"_other\"} 2"), "{out}");
    }

    #[test]
    fn concurrent_updates_all_count_while_series_are_added_and_folded() {
        use std::sync::{Arc, Barrier};
        // 64 label values against a bound of 50: threads started together race to add
        // series, and to fold; rounds of fresh families make a lost update likely to show.
        let keys: Arc<Vec<String>> = Arc::new((0..64).map(|i| format!("k{i:02}")).collect());
        for _ in 0..20 {
            let f = Arc::new(Family::bounded(["k"], 50));
            let start = Arc::new(Barrier::new(4));
            let threads: Vec<_> = (0..4)
                .map(|t| {
                    let (f, keys, start) = (f.clone(), keys.clone(), start.clone());
                    std::thread::spawn(move || {
                        start.wait();
                        for i in 0..1000 {
                            f.inc([keys[(i * 7 + t) % 64].as_str()]);
                        }
                    })
                })
                .collect();
            for t in threads {
                t.join().unwrap();
            }
            let total: u64 = keys.iter().map(|k| f.get([k.as_str()])).sum::<u64>() + f.get([FOLDED_LABEL]);
            assert_eq!(total, 4 * 1000, "no update lost");
            let mut out = String::new();
            f.render(&mut out, "x_total", "x", "counter");
            let rows: Vec<&str> = out.lines().filter(|l| !l.starts_with('#')).collect();
            assert_eq!(rows.len(), 51, "50 series and _other: {out}");
            let mut sorted = rows.clone();
            sorted.sort();
            assert_eq!(rows, sorted, "rendered in label order");
        }
    }

    #[test]
    fn guards_restore_gauges() {
        let m = Metrics::default();
        {
            let _a = m.inflight_requests.track();
            let _b = m.inflight_requests.track();
            assert_eq!(m.inflight_requests.get(), 2);
        }
        assert_eq!(m.inflight_requests.get(), 0);
    }
}
