//! Latency histograms shared by many tasks, and the printed report.

use std::sync::Mutex;
use std::time::Duration;

use hdrhistogram::Histogram;

/// Microsecond histograms in shards, so thousands of receiving tasks can
/// record without all taking one lock.
pub struct Latencies {
    shards: Vec<Mutex<Histogram<u64>>>,
}

impl Latencies {
    pub fn new() -> Self {
        let shards = (0..64)
            .map(|_| Mutex::new(new_histogram()))
            .collect::<Vec<_>>();
        Self { shards }
    }

    pub fn record(&self, shard: usize, d: Duration) {
        let us = (d.as_micros() as u64).clamp(1, MAX_US);
        let mut h = self.shards[shard % self.shards.len()].lock().unwrap();
        let _ = h.record(us);
    }

    /// Records `n` samples of `us` microseconds (merging another
    /// process's histogram).
    pub fn record_n(&self, shard: usize, us: u64, n: u64) {
        let mut h = self.shards[shard % self.shards.len()].lock().unwrap();
        let _ = h.record_n(us.clamp(1, MAX_US), n);
    }

    /// The samples so far, merged, leaving every shard empty (one
    /// sampling interval's histogram at a time).
    pub fn take(&self) -> Histogram<u64> {
        let mut all = new_histogram();
        for s in &self.shards {
            let mut h = s.lock().unwrap();
            let _ = all.add(&*h);
            h.reset();
        }
        all
    }

    pub fn merged(&self) -> Histogram<u64> {
        let mut all = new_histogram();
        for s in &self.shards {
            let _ = all.add(&*s.lock().unwrap());
        }
        all
    }
}

const MAX_US: u64 = 600_000_000;

fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_US, 3).expect("valid bounds")
}

/// One measured row of a scenario.
#[derive(Debug, Clone, Default)]
pub struct Row {
    pub scenario: String,
    pub target: String,
    /// Samples (deliveries or requests) the latency figures cover.
    pub count: u64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
    /// Deliveries (or accepted requests) per second over the timed phase.
    pub per_sec: f64,
    pub expected: u64,
    pub received: u64,
    /// Non-2xx answers and transport errors on the sending side.
    pub send_errors: u64,
    pub rss_base_kib: u64,
    pub rss_peak_kib: u64,
    /// Server CPU time over the timed phase.
    pub server_cpu_ms: u64,
    /// Anything else worth printing (scenario-specific).
    pub note: String,
}

impl Row {
    pub fn with_latencies(mut self, h: &Histogram<u64>) -> Self {
        self.count = h.len();
        if !h.is_empty() {
            self.p50_us = h.value_at_quantile(0.50);
            self.p99_us = h.value_at_quantile(0.99);
            self.p999_us = h.value_at_quantile(0.999);
            self.max_us = h.max();
        }
        self
    }

    pub fn lost(&self) -> i64 {
        self.expected as i64 - self.received as i64
    }
}

fn ms(us: u64) -> String {
    format!("{:.2}", us as f64 / 1000.0)
}

pub fn print_table(rows: &[Row]) {
    println!(
        "\n{:<22} {:<16} {:>9} {:>9} {:>9} {:>9} {:>12} {:>10} {:>10} {:>7} {:>6} {:>9} {:>9} {:>8}",
        "scenario",
        "target",
        "p50 ms",
        "p99 ms",
        "p99.9 ms",
        "max ms",
        "per s",
        "expected",
        "received",
        "lost",
        "errs",
        "rss0 MiB",
        "rss MiB",
        "cpu s"
    );
    for r in rows {
        println!(
            "{:<22} {:<16} {:>9} {:>9} {:>9} {:>9} {:>12.0} {:>10} {:>10} {:>7} {:>6} {:>9.1} {:>9.1} {:>8.2}",
            r.scenario,
            r.target,
            ms(r.p50_us),
            ms(r.p99_us),
            ms(r.p999_us),
            ms(r.max_us),
            r.per_sec,
            r.expected,
            r.received,
            r.lost(),
            r.send_errors,
            r.rss_base_kib as f64 / 1024.0,
            r.rss_peak_kib as f64 / 1024.0,
            r.server_cpu_ms as f64 / 1000.0,
        );
        if !r.note.is_empty() {
            println!("    {}", r.note);
        }
    }
    if rows.len() > 1 {
        let base = &rows[0];
        for r in &rows[1..] {
            if r.scenario != base.scenario {
                continue;
            }
            println!(
                "    ratio {} / {}: p99 {:.2}x, per-s {:.2}x, rss-above-base {:.2}x",
                base.target,
                r.target,
                ratio(base.p99_us as f64, r.p99_us as f64),
                ratio(base.per_sec, r.per_sec),
                ratio(
                    base.rss_peak_kib.saturating_sub(base.rss_base_kib) as f64,
                    r.rss_peak_kib.saturating_sub(r.rss_base_kib) as f64
                ),
            );
        }
    }
    for r in rows {
        println!(
            "RESULT {}",
            serde_json::json!({
                "scenario": r.scenario, "target": r.target, "count": r.count,
                "p50_us": r.p50_us, "p99_us": r.p99_us, "p999_us": r.p999_us, "max_us": r.max_us,
                "per_sec": r.per_sec, "expected": r.expected, "received": r.received,
                "send_errors": r.send_errors, "rss_base_kib": r.rss_base_kib,
                "rss_peak_kib": r.rss_peak_kib, "server_cpu_ms": r.server_cpu_ms, "note": r.note,
            })
        );
    }
}

fn ratio(a: f64, b: f64) -> f64 {
    if b == 0.0 { f64::NAN } else { a / b }
}
