//! The scheduler's state machine, free of I/O.
//!
//! [`Engine`] holds every running workflow in memory (the store holds the
//! same, durably) and turns inputs (accepted requests, results, due retries)
//! into state changes. Each change appends [`Op`]s for the store and
//! [`OutMsg`]s for the broker to the current batch; the scheduler's
//! session (`scheduler::step`) commits the batch, then publishes, then
//! acks.
//!
//! Task lifecycle: pending -> ready -> running -> succeeded, or
//! running -> retrying -> ready -> running ..., or running -> failed.
//! When a task fails for good, every task that has not started is skipped,
//! running ones finish, and the workflow fails once none is running.
//!
//! Layout: this file holds the engine, its configuration, its batch and
//! the transitions several steps share (a failed attempt, the end of a
//! workflow). The other steps add their own `impl Engine`:
//! - `workflow`: one workflow's DAG, tasks, rows and report.
//! - `queue`: the ready tasks of a task queue, in policy order.
//! - `limits`: limits per task type, parked tasks, places negotiation.
//! - `emit`: every message the engine sends, built in one place.
//! - `intake`: accepted, rejected, duplicate and restored workflows.
//! - `dispatch`: from ready to running.
//! - `outcome`: results, expired leases, cancels and due retries.
//! - `counters`: what the engine counts (read by `Metrics`).
//! - `budget`: what the engine holds (the memory budget, the queues in
//!   use) and its bounds.
//! - `pauses`: paused task queues and types, and the ready tasks they hold.
//! - `window`: each queue's dispatch window, fixed or following the
//!   capacity of its workers.
//!
//! Dependencies between them go one way: `intake` and `outcome` use
//! `dispatch`, which uses `pauses`, `limits`, `emit`, `queue` and
//! `workflow`; `pauses` and `limits` use `queue`, and each other only for
//! the places of limited types (a paused queue holds none); `workflow`,
//! `queue` and `counters` use none.

#[cfg(test)]
mod bounds_tests;
mod budget;
mod counters;
mod dispatch;
mod emit;
mod intake;
mod limits;
mod map;
#[cfg(test)]
mod map_tests;
mod outcome;
#[cfg(test)]
mod pause_tests;
mod pauses;
mod queue;
mod queued;
#[cfg(test)]
mod queued_tests;
mod rerun;
#[cfg(test)]
mod rerun_tests;
mod retention;
mod rules;
#[cfg(test)]
mod rules_tests;
#[cfg(test)]
mod schedule_tests;
mod scheduled;
pub mod schedules;
#[cfg(test)]
mod tests;
mod window;
#[cfg(test)]
mod window_tests;
mod workflow;

pub use counters::Counters;
pub use intake::MAX_WAITERS;
pub use limits::{TypeLimitError, TypeLimits, TypeUsage};
pub use outcome::Forged;
pub use pauses::PauseUsage;
pub use queue::DispatchOrder;
pub use queued::queued_tasks;
pub use rerun::{MAX_FROM, MAX_RUNS, RerunAsk, RerunOutcome, still_running};
pub use retention::{PRUNE_AT_MOST, PRUNE_EVERY_MS};
pub use window::{DEFAULT_WINDOW, MAX_WINDOW, PIPELINE, adaptive_window};

pub use workflow::ReportBounds;

use self::{emit::to_json, queue::QueueState, workflow::Workflow};
use crate::attempt_key::AttemptKey;
use crate::{
    batch::{Op, OutMsg, RunningWorkflow, TypePlaceRow, Unreadable},
    bounds::Bounds,
};
use chrono::{DateTime, Utc};
use std::{
    cmp::Reverse,
    collections::{BTreeMap, BinaryHeap, HashMap, HashSet},
    sync::Arc,
    time::Duration,
};
use warren_shared::{
    Topology,
    amqp::DEFAULT_NAMESPACE,
    wire::{RetryPolicy, TaskError, TaskReport, TaskState, WorkflowReport, WorkflowStatus},
};

/// How an [`Engine`] is set up. An engine lives for one broker session;
/// nothing here changes during its life.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// The namespace's exchange and queue names, which messages are
    /// addressed by (default: the default namespace, `warren`).
    pub topology: Topology,
    /// Most tasks of one queue dispatched and not yet answered (default
    /// 200; 0 counts as 1): every queue's window when `adapt_window` is
    /// false, else the window of a queue no live worker announces.
    pub window: usize,
    /// Whether each queue's window follows the capacity of its workers
    /// (`Engine::set_capacities`; `window.rs`); default true. False when
    /// the window was set explicitly.
    pub adapt_window: bool,
    /// Added to a task's `timeout_ms` to give its lease, after which an
    /// attempt without a result is failed (default 30 s).
    pub lease_grace: Duration,
    /// The first outbox sequence number to hand out: the store's
    /// `Recovered::next_outbox_seq` (default 0).
    pub next_outbox_seq: u64,
    /// The first workflow sequence number to hand out: the store's
    /// `Recovered::next_workflow_seq` (default 0).
    pub next_workflow_seq: u64,
    /// Which of a workflow's ready tasks goes first (default: critical
    /// path).
    pub dispatch_order: DispatchOrder,
    /// Most tasks of a type (`kind`) running at once, as `(type, limit)`
    /// pairs; types not listed have no limit (default: none). Set here so
    /// that restored workflows' running tasks are counted.
    pub type_limits: Vec<(String, u32)>,
    /// The store's partition count: 1 (the default) unless several
    /// schedulers may share the namespace; 0 counts as 1.
    pub partitions: u16,
    /// The partitions this scheduler owns; the first is where messages of
    /// no workflow are filed (default `[0]`).
    pub owned: Vec<u16>,
    /// What the engine builds and holds at most.
    pub bounds: Bounds,
    /// The key of attempt tokens: the store's (`Recovered::attempt_key`);
    /// by default a random one, for tests and tools.
    pub attempt_key: AttemptKey,
    /// How long an ended workflow is kept in the store (`None`, the
    /// default: for ever; `retention.rs`).
    pub retention: Option<Duration>,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            topology: Topology::new(DEFAULT_NAMESPACE),
            window: window::DEFAULT_WINDOW,
            adapt_window: true,
            lease_grace: Duration::from_secs(30),
            next_outbox_seq: 0,
            next_workflow_seq: 0,
            dispatch_order: DispatchOrder::default(),
            type_limits: Vec::new(),
            partitions: 1,
            owned: vec![0],
            bounds: Bounds::default(),
            attempt_key: AttemptKey::random(),
            retention: None,
        }
    }
}

/// A retry waiting for its due time: (due ms, order, workflow, task, attempt).
type DueRetry = Reverse<(i64, u64, Arc<str>, u32, u32)>;

/// The state machine. See the module docs.
#[derive(Debug)]
pub struct Engine {
    /// The names messages are addressed by.
    topology: Topology,
    /// Most tasks of each queue in flight.
    windows: window::Windows,
    /// Every running workflow, by id.
    workflows: HashMap<Arc<str>, Workflow>,
    /// Ready tasks and in-flight counts, by task queue.
    queues: HashMap<String, QueueState>,
    /// Retrying tasks, by due time.
    retries: BinaryHeap<DueRetry>,
    /// Running attempts with a timeout, by the time their lease ends.
    leases: BinaryHeap<DueRetry>,
    /// Added to a task's timeout to give its lease (ms).
    lease_grace_ms: i64,
    /// Orders ready items, retries and leases made at the same time.
    seq: u64,
    /// The next outbox and workflow sequence numbers to hand out.
    next_outbox: u64,
    next_workflow_seq: u64,
    /// The current batch: store ops, and messages to publish once they
    /// are committed.
    ops: Vec<Op>,
    outbox: Vec<(u64, Arc<OutMsg>)>,
    /// What the engine counts (shared with `Metrics`).
    counters: Arc<Counters>,
    /// Which of a workflow's ready tasks goes first.
    order: DispatchOrder,
    /// Running workflows whose tasks changed since their last progress
    /// event.
    progress_dirty: HashSet<Arc<str>>,
    /// Progress is announced at most once per interval (ms since epoch).
    next_progress_ms: i64,
    /// Places and parked tasks of each limited task type.
    limits: TypeLimits,
    /// Paused task queues and types, and the ready tasks held for them.
    pauses: pauses::Pauses,
    /// The store's partition count (1 unless several schedulers may share
    /// the namespace) and the partition messages of no workflow are filed
    /// under (one this scheduler owns).
    partitions: u16,
    home: u16,
    /// The partitions this scheduler owns (partitioned stores).
    owned: Vec<u16>,
    /// The type places last written to the store: (type, partition,
    /// held, wanted).
    places_written: Vec<TypePlaceRow>,
    /// What the engine builds and holds at most.
    bounds: Bounds,
    /// Tasks and bytes of the running workflows (see `budget`).
    held_tasks: usize,
    held_bytes: usize,
    /// Running workflows using each task queue.
    queue_users: HashMap<String, usize>,
    /// Queues whose last user ended since the last dispatch.
    unused_queues: Vec<String>,
    /// Bytes of the messages in the current batch.
    batch_bytes: usize,
    /// The last dispatch stopped at `max_batch_bytes` with tasks left to
    /// dispatch: the loop takes another turn at once.
    dispatch_cut: bool,
    /// Signs each task message's token and verifies each result's.
    attempt_key: AttemptKey,
    /// Workflows with a `deadline_ms`, by when it passes (ms since the
    /// epoch); ended ones are dropped when they come up.
    deadlines: BinaryHeap<Reverse<(i64, Arc<str>)>>,
    /// Workflows waiting for their start, by id (`scheduled.rs`).
    scheduled: HashMap<Arc<str>, scheduled::Scheduled>,
    /// Their starts, earliest first; cancelled ones are dropped when they
    /// come up.
    starts: BinaryHeap<Reverse<(i64, Arc<str>)>>,
    /// Workflows waiting for room in the working set, by id, and their
    /// line (`queued.rs`); entries of the line no longer queued are
    /// dropped when they come up.
    queued: HashMap<Arc<str>, queued::Queued>,
    line: queued::Line,
    /// The first in line would pass `max_queues`: nothing starts from the
    /// line until a running workflow ends (`queued.rs`).
    line_blocked: bool,
    /// The schedules of the owned partitions, and their next firings.
    schedules: schedules::Schedules,
    /// How long an ended workflow is kept, and when the next prune is due
    /// (ms since the epoch; `retention.rs`).
    retention: Option<Duration>,
    next_prune_ms: i64,
}

/// The report of a running workflow as stored, built the way a scheduler
/// restoring it would (for one another scheduler owns).
pub fn stored_report(
    r: RunningWorkflow,
    bounds: ReportBounds,
) -> Result<Option<WorkflowReport>, Unreadable> {
    let id = r.id.clone();
    let config = EngineConfig {
        topology: Topology::new("report"),
        window: 1,
        lease_grace: Duration::ZERO,
        // It dispatches nothing: no token is made or verified.
        attempt_key: AttemptKey::fixed(0),
        ..EngineConfig::default()
    };
    let mut engine = Engine::new(config, Arc::default());
    engine.restore(r)?;
    Ok(engine.report_within(&id, bounds))
}

/// The tasks whose stored rows resolving task `task`'s input reads, with
/// the stored `definition` of workflow `id`: the task itself, the tasks
/// its input's templates name and, for an instance (`task[k]`), its mapped
/// task and what that task's `map` names. `None` when the definition does
/// not read back or has no such task.
pub fn input_sources(definition: &[u8], id: &str, task: &str) -> Option<Vec<String>> {
    let v = crate::validate::validate_stored(definition, id).ok()?;
    let own = map::task_of(task);
    let spec = v.tasks.iter().find(|t| t.id == own)?;
    let mut refs = Vec::new();
    crate::template::references(&spec.input, &mut refs).ok()?;
    if own != task {
        refs.push(crate::template::single_ref(spec.map.as_deref()?).ok()?);
    }
    let mut ids: Vec<String> = vec![task.to_owned(), own.to_owned()];
    ids.extend(refs.into_iter().filter_map(|r| match r.source {
        crate::template::Source::TaskOutput(t) => Some(t),
        _ => None,
    }));
    ids.sort();
    ids.dedup();
    Some(ids)
}

/// The input of task `task` of a stored workflow (an ended one, or one
/// another scheduler runs) as its task messages carried it, from the
/// rows [`input_sources`] names (any others are read as pending): `None`
/// when it has no such task, its definition does not read back, or a
/// source it reads has no output.
pub fn stored_task_input(r: RunningWorkflow, task: &str, max: usize) -> Option<serde_json::Value> {
    use crate::template::Source;
    let v = crate::validate::validate_stored(&r.definition, &r.id).ok()?;
    let replies = Vec::new();
    let wf =
        workflow::restored(Arc::from(r.id.as_str()), v, r.created_at, replies, r.tasks).ok()?;
    let own = map::task_of(task);
    let &m = wf.index.get(own)?;
    if own == task {
        return wf.resolved_input(m as usize, max).ok();
    }
    // An instance: its element of the mapped task's array, as dispatch
    // resolves it (its siblings' rows are not needed).
    let k: usize = task[own.len() + 1..task.len() - 1].parse().ok()?;
    let item = map::items(&wf, m as usize).ok()?.get(k)?.clone();
    let index = serde_json::Value::from(k);
    let lookup = |s: &Source| match s {
        Source::Item => Some(&item),
        Source::Index => Some(&index),
        other => wf.source(m as usize, other),
    };
    crate::template::resolve(&wf.specs[m as usize].input, &lookup, max).ok()
}

/// Longest error message kept for a task (characters): a worker's longer
/// one is cut, saying how long it was. The workflow's one-line `error`
/// quotes at most [`MAX_FAILURE_LINE_CHARS`] of it.
pub const MAX_ERROR_CHARS: usize = 16 * 1024;
/// Longest one-line `error` of a failed workflow (characters).
pub const MAX_FAILURE_LINE_CHARS: usize = 1024;

/// How often a running workflow that changed announces its progress.
pub const PROGRESS_INTERVAL_MS: i64 = 1_000;

/// Backoff before attempt `attempt + 1`: doubling from `backoff_ms`, capped,
/// with "equal jitter" (half fixed, half random) so that a burst of failures
/// does not come back as a burst.
pub fn retry_delay_ms(policy: &RetryPolicy, attempt: u32) -> u64 {
    let exp = policy
        .backoff_ms
        .saturating_mul(1u64 << (attempt.saturating_sub(1)).min(32));
    let delay = exp.min(policy.max_backoff_ms);
    delay / 2 + fastrand::u64(0..=delay - delay / 2)
}

impl Engine {
    /// An engine with no workflow, counting into `counters` (pass the
    /// same ones to each session's engine to keep counting on). Restore
    /// the running workflows next.
    pub fn new(config: EngineConfig, counters: Arc<Counters>) -> Engine {
        Engine {
            topology: config.topology,
            windows: window::Windows::new(config.window, config.adapt_window),
            workflows: HashMap::new(),
            queues: HashMap::new(),
            retries: BinaryHeap::new(),
            leases: BinaryHeap::new(),
            lease_grace_ms: config.lease_grace.as_millis().min(i64::MAX as u128) as i64,
            seq: 0,
            next_outbox: config.next_outbox_seq,
            next_workflow_seq: config.next_workflow_seq,
            ops: Vec::new(),
            outbox: Vec::new(),
            counters,
            order: config.dispatch_order,
            progress_dirty: HashSet::new(),
            next_progress_ms: 0,
            limits: TypeLimits::new(config.type_limits),
            pauses: pauses::Pauses::default(),
            partitions: config.partitions.max(1),
            home: config.owned.first().copied().unwrap_or(0),
            owned: config.owned,
            places_written: Vec::new(),
            bounds: config.bounds,
            held_tasks: 0,
            held_bytes: 0,
            queue_users: HashMap::new(),
            unused_queues: Vec::new(),
            batch_bytes: 0,
            dispatch_cut: false,
            attempt_key: config.attempt_key,
            deadlines: BinaryHeap::new(),
            scheduled: HashMap::new(),
            starts: BinaryHeap::new(),
            queued: HashMap::new(),
            line: queued::Line::new(),
            line_blocked: false,
            schedules: schedules::Schedules::default(),
            retention: config.retention,
            next_prune_ms: 0,
        }
    }

    /// True when several schedulers may share the namespace's store.
    fn partitioned(&self) -> bool {
        self.partitions > 1
    }

    /// Hands over the current batch: store ops and the messages to publish
    /// once they are committed.
    pub fn take_batch(&mut self) -> (Vec<Op>, Vec<(u64, Arc<OutMsg>)>) {
        self.batch_bytes = 0;
        (
            std::mem::take(&mut self.ops),
            std::mem::take(&mut self.outbox),
        )
    }

    /// Adds an op to the current batch (used for outbox deletions).
    pub fn push_op(&mut self, op: Op) {
        self.ops.push(op);
    }

    /// True when the last dispatch stopped at the batch's byte bound with
    /// ready tasks left: the loop should take another turn without waiting.
    pub fn dispatch_cut(&self) -> bool {
        self.dispatch_cut
    }

    /// True when the current batch has something to commit.
    pub fn has_ops(&self) -> bool {
        !self.ops.is_empty()
    }

    /// How many workflows are running here.
    pub fn active_workflows(&self) -> usize {
        self.workflows.len()
    }

    /// True when workflow `id` is running here.
    pub fn is_active(&self, id: &str) -> bool {
        self.workflows.contains_key(id)
    }

    /// The current report of a running workflow, within the report limit.
    pub fn report(&self, id: &str) -> Option<WorkflowReport> {
        self.workflows
            .get(id)
            .map(|w| w.report(WorkflowStatus::Running, None, self.report_bounds()))
    }

    /// The current report of a running workflow within `bounds` (smaller
    /// ones than a reply's, for the HTTP endpoint).
    pub fn report_within(&self, id: &str, bounds: ReportBounds) -> Option<WorkflowReport> {
        let max_bytes = bounds.max_bytes.min(self.bounds.max_report_bytes);
        self.workflows.get(id).map(|w| {
            w.report(
                WorkflowStatus::Running,
                None,
                ReportBounds {
                    max_bytes,
                    ..bounds
                },
            )
        })
    }

    /// Task `task` of a running workflow, its output in full: `None` when
    /// the workflow is not running here, `Some(None)` when it has no such
    /// task.
    pub fn task_report(&self, id: &str, task: &str) -> Option<Option<TaskReport>> {
        let w = self.workflows.get(id)?;
        let max = self.bounds.max_task_input_bytes;
        Some(
            w.index
                .get(task)
                .map(|&i| w.single_task_report(i as usize, max)),
        )
    }

    /// A reply's or an event's bounds: the report limit, every task.
    fn report_bounds(&self) -> ReportBounds {
        ReportBounds {
            max_bytes: self.bounds.max_report_bytes,
            max_tasks: usize::MAX,
        }
    }

    /// A failed attempt: retried when allowed, else the task and the
    /// workflow fail.
    fn fail_attempt(&mut self, id: &Arc<str>, i: u32, mut error: TaskError, now: DateTime<Utc>) {
        let Some(wf) = self.workflows.get_mut(id) else {
            return;
        };
        if error.message.len() > MAX_ERROR_CHARS {
            error.message = crate::validate::shortened(&error.message, MAX_ERROR_CHARS);
        }
        let policy = wf.specs[i as usize].retry.unwrap_or_default();
        // After the workflow failed, only tasks whose rule lets them run
        // after a failure (`run_if`) are tried again.
        let may_go_on = wf.failure.is_none()
            || rules::rule(wf, i as usize) != warren_shared::wire::RunIf::AllSucceeded;
        let t = &mut wf.tasks[i as usize];
        let retry = error.retryable && t.attempt < policy.max_attempts && may_go_on;
        if retry {
            t.error = Some(error);
            Counters::add(&self.counters.tasks_retried, 1);
            let due = now.timestamp_millis() + retry_delay_ms(&policy, t.attempt) as i64;
            t.state = TaskState::Retrying;
            t.due_at_ms = Some(due);
            let attempt = t.attempt;
            let row = wf.row(i);
            self.ops.push(Op::Task(row));
            self.seq += 1;
            self.retries
                .push(Reverse((due, self.seq, id.clone(), i, attempt)));
            return;
        }
        let ended = rules::fail_for_good(wf, i as usize, error, &mut self.ops, &self.counters);
        self.settle(id, ended, Vec::new());
    }

    /// Ends the workflow when nothing is left to run.
    fn maybe_finish(&mut self, id: &Arc<str>, now: DateTime<Utc>) {
        let Some(wf) = self.workflows.get(id) else {
            return;
        };
        // After a failure, what has not started was skipped, but tasks
        // whose rule lets them run after one (`run_if`): they run first.
        if wf.running > 0 || wf.unfinished > 0 {
            return;
        }
        let mut wf = self.workflows.remove(id).expect("present above");
        if wf.failure.is_some()
            && !wf.cancelled
            && !wf.deadline_passed
            && wf.on_failure == warren_shared::wire::OnFailure::Handled
            && rules::failures_handled(&wf)
        {
            tracing::info!(workflow = %wf.id, "Its failures were handled (on_failure: handled)");
            wf.failure = None;
        }
        self.release(&wf);
        self.drop_paused_ready(&wf);
        let status = if wf.cancelled {
            Counters::add(&self.counters.workflows_cancelled, 1);
            WorkflowStatus::Cancelled
        } else if wf.failure.is_some() {
            Counters::add(&self.counters.workflows_failed, 1);
            WorkflowStatus::Failed
        } else {
            Counters::add(&self.counters.workflows_succeeded, 1);
            WorkflowStatus::Succeeded
        };
        let report = wf.report(status, Some(now), self.report_bounds());
        if report.tasks_elided > 0 || report.tasks.values().any(|t| t.output_elided.is_some()) {
            Counters::add(&self.counters.reports_elided, 1);
        }
        self.progress_dirty.remove(&wf.id);
        let body = to_json(&report);
        tracing::info!(workflow = %wf.id, status = status.as_str(), "Workflow finished");
        self.ops.push(Op::FinishWorkflow {
            id: wf.id.clone(),
            status,
            report: String::from_utf8_lossy(&body).into_owned(),
            finished_at: now,
        });
        for to in &wf.replies {
            self.emit_reply(to, body.clone());
        }
        // The rerun's `reply_to` is answered once; the submitters' stay,
        // for a later run.
        if wf.run > 1 {
            self.ops.push(Op::DropReplies(wf.id.clone()));
        }
        self.emit_event(&wf.id, status, body);
    }

    /// When the next retry, lease, deadline, delayed start, firing or
    /// prune is due (ms since the epoch).
    pub fn next_due_ms(&self) -> Option<i64> {
        let retry = self.retries.peek().map(|Reverse((due, ..))| *due);
        let lease = self.leases.peek().map(|Reverse((due, ..))| *due);
        let deadline = self.deadlines.peek().map(|Reverse((due, _))| *due);
        [
            retry,
            lease,
            deadline,
            self.next_start_ms(),
            self.next_fire_ms(),
            self.next_prune_ms(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Arms the deadline of a workflow just accepted or restored: it
    /// passes `deadline_ms` after the workflow's start.
    fn arm_deadline(&mut self, wf: &Workflow) {
        if let Some(ms) = wf.deadline_ms {
            let due = wf
                .run_started_at
                .timestamp_millis()
                .saturating_add(i64::try_from(ms).unwrap_or(i64::MAX));
            self.deadlines.push(Reverse((due, wf.id.clone())));
        }
    }

    /// When the next progress events are due (ms since the epoch), if any
    /// workflow has changed since its last one.
    pub fn next_progress_ms(&self) -> Option<i64> {
        (!self.progress_dirty.is_empty()).then_some(self.next_progress_ms)
    }

    /// Tasks dispatched and not yet answered, by queue.
    pub fn in_flight_by_queue(&self) -> BTreeMap<String, u64> {
        self.queues
            .iter()
            .map(|(name, q)| (name.clone(), q.in_flight as u64))
            .collect()
    }
}
