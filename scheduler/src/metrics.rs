//! Counters of what the scheduler did, shared with whoever holds a
//! [`Metrics`] handle (tests today; the `/metrics` endpoint later).

use std::{
    collections::BTreeMap,
    sync::{
        Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

/// Monotonic counters; read them with [`Metrics::get`].
#[derive(Debug, Default)]
pub struct Metrics {
    pub workflows_accepted: AtomicU64,
    pub workflows_rejected: AtomicU64,
    pub workflows_duplicate: AtomicU64,
    pub workflows_succeeded: AtomicU64,
    pub workflows_failed: AtomicU64,
    pub workflows_cancelled: AtomicU64,
    pub tasks_dispatched: AtomicU64,
    /// Tasks that ended succeeded.
    pub tasks_succeeded: AtomicU64,
    /// Tasks that failed for good (attempts exhausted or not retryable).
    pub tasks_failed: AtomicU64,
    pub tasks_retried: AtomicU64,
    /// Attempts failed because no result came within timeout plus grace.
    pub leases_expired: AtomicU64,
    pub results_committed: AtomicU64,
    /// Results for an attempt that already has one, or that is not running.
    pub results_ignored: AtomicU64,
    pub dead_lettered: AtomicU64,
    /// Requests and results passed on to the scheduler that owns their
    /// workflow's partition.
    pub forwarded: AtomicU64,
    pub batches_committed: AtomicU64,
    /// Broker sessions lost and retried.
    pub reconnects: AtomicU64,
    /// Deliveries taken from the requests and results queues.
    pub messages_received: AtomicU64,
    /// Messages published (tasks, replies, events, dead letters).
    pub messages_published: AtomicU64,
    /// Gauge: workflows running now.
    pub workflows_running: AtomicU64,
    /// Gauge: tasks dispatched and not yet answered, by task queue.
    pub in_flight: Mutex<BTreeMap<String, u64>>,
    /// Gauges: running, limit and waiting tasks of each limited task type.
    pub types: Mutex<Vec<crate::state::TypeUsage>>,
    /// Gauge: 1 while a broker session is up.
    pub broker_connected: AtomicU64,
    /// Gauge: 1 once this scheduler is the active one of its store (0 for
    /// a standby).
    pub active: AtomicU64,
    /// From a task becoming ready to its dispatch (seconds).
    pub dispatch_latency: Histogram,
    /// An attempt's run time as its worker reports it (seconds).
    pub task_duration: Histogram,
}

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

impl Metrics {
    /// Every counter by name, for reports.
    pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
        vec![
            ("workflows_accepted", Metrics::get(&self.workflows_accepted)),
            ("workflows_rejected", Metrics::get(&self.workflows_rejected)),
            (
                "workflows_duplicate",
                Metrics::get(&self.workflows_duplicate),
            ),
            (
                "workflows_succeeded",
                Metrics::get(&self.workflows_succeeded),
            ),
            ("workflows_failed", Metrics::get(&self.workflows_failed)),
            (
                "workflows_cancelled",
                Metrics::get(&self.workflows_cancelled),
            ),
            ("tasks_dispatched", Metrics::get(&self.tasks_dispatched)),
            ("tasks_succeeded", Metrics::get(&self.tasks_succeeded)),
            ("tasks_failed", Metrics::get(&self.tasks_failed)),
            ("tasks_retried", Metrics::get(&self.tasks_retried)),
            ("leases_expired", Metrics::get(&self.leases_expired)),
            ("results_committed", Metrics::get(&self.results_committed)),
            ("results_ignored", Metrics::get(&self.results_ignored)),
            ("dead_lettered", Metrics::get(&self.dead_lettered)),
            ("forwarded", Metrics::get(&self.forwarded)),
            ("batches_committed", Metrics::get(&self.batches_committed)),
            ("reconnects", Metrics::get(&self.reconnects)),
            ("messages_received", Metrics::get(&self.messages_received)),
            ("messages_published", Metrics::get(&self.messages_published)),
        ]
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}
