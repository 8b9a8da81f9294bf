//! The scheduler's metrics, shared with whoever holds a [`Metrics`]
//! handle (the `/metrics` endpoint, tests, the benchmark). What the engine
//! counts (workflows, tasks, results, and its histograms) it owns in
//! [`Counters`], which `Metrics` holds and reads; the counters and gauges
//! of the I/O loop (batches, messages, sessions) live here.

use crate::engine::{Counters, PauseUsage, TypeUsage};
use std::{
    collections::BTreeMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

/// Monotonic counters and gauges; read them with [`Metrics::get`].
#[derive(Debug, Default)]
pub struct Metrics {
    /// What the engine counts; each session's engine counts into these.
    pub engine: Arc<Counters>,
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
    /// Gauge: workflows waiting for their start (`scheduled`).
    pub workflows_scheduled: AtomicU64,
    /// Gauge: workflows accepted and waiting for room in the working set
    /// (`queued`).
    pub workflows_queued: AtomicU64,
    /// Gauge: schedules this scheduler holds (fires).
    pub schedules: AtomicU64,
    /// Results over `max_result_bytes`, dead-lettered unread.
    pub results_too_large: AtomicU64,
    /// Requests refused for a `reply_to` the scheduler must not write to.
    pub replies_refused: AtomicU64,
    /// Gauge: submissions held unacked (waiting in the broker) because
    /// the memory budget is full.
    pub requests_waiting: AtomicU64,
    /// Gauge: tasks dispatched and not yet answered, by task queue.
    pub in_flight: Mutex<BTreeMap<String, u64>>,
    /// Gauge: the dispatch window of each task queue in use (the queues
    /// of `in_flight`), fixed or following its workers' capacity.
    pub windows: Mutex<BTreeMap<String, u64>>,
    /// Gauges: running, limit and waiting tasks of each limited task type.
    pub types: Mutex<Vec<TypeUsage>>,
    /// Gauges: each paused task queue and type, with the ready tasks it
    /// holds back here.
    pub paused: Mutex<Vec<PauseUsage>>,
    /// Gauge: 1 while a broker session is up.
    pub broker_connected: AtomicU64,
    /// Gauge: 1 once this scheduler is the active one of its store (0 for
    /// a standby).
    pub active: AtomicU64,
    /// HTTP requests refused for want of a valid token (401).
    pub http_unauthorized: AtomicU64,
    /// HTTP requests refused for a token of too small a scope (403).
    pub http_forbidden: AtomicU64,
    /// HTTP requests refused for a `Host` not the endpoint's (421) or
    /// none (400).
    pub http_misdirected: AtomicU64,
    /// HTTP requests refused for a body over the limit (413).
    pub http_too_large: AtomicU64,
}

impl Metrics {
    /// Every counter by name, for reports.
    pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
        let e = &self.engine;
        vec![
            ("workflows_accepted", Metrics::get(&e.workflows_accepted)),
            ("workflows_rejected", Metrics::get(&e.workflows_rejected)),
            ("workflows_duplicate", Metrics::get(&e.workflows_duplicate)),
            ("workflows_succeeded", Metrics::get(&e.workflows_succeeded)),
            ("workflows_failed", Metrics::get(&e.workflows_failed)),
            ("workflows_cancelled", Metrics::get(&e.workflows_cancelled)),
            ("workflows_rerun", Metrics::get(&e.workflows_rerun)),
            ("tasks_dispatched", Metrics::get(&e.tasks_dispatched)),
            ("tasks_succeeded", Metrics::get(&e.tasks_succeeded)),
            ("tasks_failed", Metrics::get(&e.tasks_failed)),
            ("tasks_retried", Metrics::get(&e.tasks_retried)),
            ("leases_expired", Metrics::get(&e.leases_expired)),
            ("results_committed", Metrics::get(&e.results_committed)),
            ("results_ignored", Metrics::get(&e.results_ignored)),
            ("results_forged", Metrics::get(&e.results_forged)),
            ("deadlines_passed", Metrics::get(&e.deadlines_passed)),
            ("dead_lettered", Metrics::get(&e.dead_lettered)),
            ("inputs_too_large", Metrics::get(&e.inputs_too_large)),
            ("reports_elided", Metrics::get(&e.reports_elided)),
            ("messages_refused", Metrics::get(&e.messages_refused)),
            ("results_too_large", Metrics::get(&self.results_too_large)),
            ("replies_refused", Metrics::get(&self.replies_refused)),
            ("forwarded", Metrics::get(&self.forwarded)),
            ("batches_committed", Metrics::get(&self.batches_committed)),
            ("reconnects", Metrics::get(&self.reconnects)),
            ("messages_received", Metrics::get(&self.messages_received)),
            ("messages_published", Metrics::get(&self.messages_published)),
            ("http_unauthorized", Metrics::get(&self.http_unauthorized)),
            ("http_forbidden", Metrics::get(&self.http_forbidden)),
            ("http_misdirected", Metrics::get(&self.http_misdirected)),
            ("http_too_large", Metrics::get(&self.http_too_large)),
        ]
    }

    /// A counter's or gauge's value now.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}
