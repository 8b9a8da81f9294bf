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
}

impl Metrics {
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}
