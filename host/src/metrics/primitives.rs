//! The instruments the registry is built from: gauges, counters, label families, histograms.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

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

/// A counter family keyed by label values. The lock is held for a map update only (and a
/// clone when rendering). At most `MAX_SERIES_PER_FAMILY` (+1 for `_other`) series.
pub struct Family<const N: usize> {
    labels: [&'static str; N],
    values: Mutex<BTreeMap<[String; N], u64>>,
    max_series: usize,
    /// Updates whose label set was folded into `_other`.
    folded: AtomicU64,
}

impl<const N: usize> Family<N> {
    pub fn new(labels: [&'static str; N]) -> Self {
        Self::bounded(labels, MAX_SERIES_PER_FAMILY)
    }

    pub fn bounded(labels: [&'static str; N], max_series: usize) -> Self {
        Self { labels, values: Mutex::new(BTreeMap::new()), max_series, folded: AtomicU64::new(0) }
    }

    pub fn add(&self, labels: [&str; N], n: u64) {
        let key = labels.map(str::to_owned);
        let mut map = self.values.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(v) = map.get_mut(&key) {
            *v += n;
            return;
        }
        if map.len() >= self.max_series {
            self.folded.fetch_add(1, Ordering::Relaxed);
            *map.entry([(); N].map(|_| FOLDED_LABEL.to_owned())).or_insert(0) += n;
            return;
        }
        map.insert(key, n);
    }

    /// Updates folded into `_other` since start.
    pub fn folded(&self) -> u64 {
        self.folded.load(Ordering::Relaxed)
    }

    pub fn inc(&self, labels: [&str; N]) {
        self.add(labels, 1);
    }

    pub fn get(&self, labels: [&str; N]) -> u64 {
        let key = labels.map(str::to_owned);
        self.values.lock().unwrap_or_else(|e| e.into_inner()).get(&key).copied().unwrap_or(0)
    }

    pub(super) fn render(&self, out: &mut String, name: &str, help: &str, kind: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        // Formatting happens outside the lock: request completion updates the same map.
        let map = self.values.lock().unwrap_or_else(|e| e.into_inner()).clone();
        for (values, n) in map.iter() {
            let _ = writeln!(out, "{name}{{{}}} {n}", label_pairs(&self.labels, values));
        }
    }
}

pub(super) fn label_pairs(names: &[&str], values: &[String]) -> String {
    let mut s = String::new();
    for (i, (k, v)) in names.iter().zip(values).enumerate() {
        if i > 0 {
            s.push(',');
        }
        let v = v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n");
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
