//! What the engine counts: workflows, tasks and results by what happened
//! to them, and the two durations it observes. The engine owns these;
//! `Metrics` holds the same [`Counters`] (one `Arc` shared by every
//! session's engine, so counts run on across sessions) and the `/metrics`
//! endpoint reads them through it. The engine knows nothing of metrics.

use crate::histogram::Histogram;
use std::sync::atomic::{AtomicU64, Ordering};

/// Monotonic counters and histograms of the engine; read a counter with
/// [`Counters::get`].
#[derive(Debug, Default)]
pub struct Counters {
    /// Workflow requests accepted.
    pub workflows_accepted: AtomicU64,
    /// Workflow requests rejected (invalid).
    pub workflows_rejected: AtomicU64,
    /// Submissions of a workflow already known (running or ended).
    pub workflows_duplicate: AtomicU64,
    pub workflows_succeeded: AtomicU64,
    pub workflows_failed: AtomicU64,
    pub workflows_cancelled: AtomicU64,
    /// Runs started by a `rerun` (an ended workflow running again).
    pub workflows_rerun: AtomicU64,
    /// Attempts dispatched.
    pub tasks_dispatched: AtomicU64,
    /// Tasks that ended succeeded.
    pub tasks_succeeded: AtomicU64,
    /// Tasks that failed for good (attempts exhausted or not retryable).
    pub tasks_failed: AtomicU64,
    /// Failed attempts that will be retried.
    pub tasks_retried: AtomicU64,
    /// Attempts failed because no result came within timeout plus grace.
    pub leases_expired: AtomicU64,
    /// Results applied (for the attempt that was running).
    pub results_committed: AtomicU64,
    /// Results for an attempt that already has one, or that is not running.
    pub results_ignored: AtomicU64,
    /// Results refused for not carrying their attempt's token.
    pub results_forged: AtomicU64,
    /// Workflows accepted with a start ahead (`scheduled`).
    pub workflows_scheduled: AtomicU64,
    /// Schedule firings that submitted a workflow.
    pub schedule_firings: AtomicU64,
    /// Schedule firings skipped (`overlap: skip`, or missed and not caught
    /// up).
    pub schedule_firings_skipped: AtomicU64,
    /// Scheduled workflows started when due.
    pub workflows_started: AtomicU64,
    /// Workflows ended `failed` by their `deadline_ms`.
    pub deadlines_passed: AtomicU64,
    /// Messages dead-lettered.
    pub dead_lettered: AtomicU64,
    /// Tasks failed because their resolved input passed the limit.
    pub inputs_too_large: AtomicU64,
    /// Reports sent with outputs or tasks left out to fit the limit.
    pub reports_elided: AtomicU64,
    /// Messages the broker refused for good (too large, or their queue
    /// exists with other arguments): what they belonged to ended.
    pub messages_refused: AtomicU64,
    /// Gauge: tasks of the running workflows held in memory.
    pub active_tasks: AtomicU64,
    /// Gauge: bytes of the running workflows held in memory (request
    /// bodies and outputs).
    pub active_bytes: AtomicU64,
    /// From a task becoming ready to its dispatch (seconds).
    pub dispatch_latency: Histogram,
    /// An attempt's run time as its worker reports it (seconds).
    pub task_duration: Histogram,
}

impl Counters {
    /// A counter's value now.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    /// Adds `n` to a counter.
    pub(super) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Sets a gauge.
    pub(super) fn set(gauge: &AtomicU64, n: u64) {
        gauge.store(n, Ordering::Relaxed);
    }
}
