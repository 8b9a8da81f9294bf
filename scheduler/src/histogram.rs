//! A Prometheus-style histogram of durations, lock-free: the engine
//! observes into it (dispatch latency, task duration) and the `/metrics`
//! endpoint reads it. A leaf: it depends on nothing in the crate.

use std::sync::atomic::{AtomicU64, Ordering};

/// Upper bounds (seconds) of the histogram buckets: from a millisecond to
/// ten minutes.
pub const BUCKETS: [f64; 16] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 600.0,
];

/// A Prometheus-style histogram: cumulative counts per bucket, sum, count.
#[derive(Debug, Default)]
pub struct Histogram {
    /// Observations at most each bound of [`BUCKETS`] (not cumulative here).
    buckets: [AtomicU64; BUCKETS.len()],
    sum_micros: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    /// Records one observation (negative ones count as 0).
    pub fn observe(&self, seconds: f64) {
        let seconds = seconds.max(0.0);
        if let Some(i) = BUCKETS.iter().position(|&b| seconds <= b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.sum_micros
            .fetch_add((seconds * 1e6) as u64, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// (bound, cumulative count) per bucket, then the sum and the count.
    pub fn read(&self) -> (Vec<(f64, u64)>, f64, u64) {
        let mut total = 0;
        let buckets = BUCKETS
            .iter()
            .zip(&self.buckets)
            .map(|(&b, c)| {
                total += c.load(Ordering::Relaxed);
                (b, total)
            })
            .collect();
        (
            buckets,
            self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6,
            self.count.load(Ordering::Relaxed),
        )
    }
}
