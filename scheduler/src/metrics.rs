//! Counters of what the scheduler did, shared with whoever holds a
//! [`Metrics`] handle (tests today; the `/metrics` endpoint later).

use std::sync::atomic::{AtomicU64, Ordering};

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
    pub tasks_retried: AtomicU64,
    /// Attempts failed because no result came within timeout plus grace.
    pub leases_expired: AtomicU64,
    pub results_committed: AtomicU64,
    /// Results for an attempt that already has one, or that is not running.
    pub results_ignored: AtomicU64,
    pub dead_lettered: AtomicU64,
    pub batches_committed: AtomicU64,
    /// Broker sessions lost and retried.
    pub reconnects: AtomicU64,
    /// Deliveries taken from the requests and results queues.
    pub messages_received: AtomicU64,
    /// Messages published (tasks, replies, events, dead letters).
    pub messages_published: AtomicU64,
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
            ("tasks_retried", Metrics::get(&self.tasks_retried)),
            ("leases_expired", Metrics::get(&self.leases_expired)),
            ("results_committed", Metrics::get(&self.results_committed)),
            ("results_ignored", Metrics::get(&self.results_ignored)),
            ("dead_lettered", Metrics::get(&self.dead_lettered)),
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
