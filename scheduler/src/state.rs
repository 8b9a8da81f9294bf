//! The scheduler's state machine, free of I/O.
//!
//! [`Engine`] holds every running workflow in memory (the store holds the
//! same, durably) and turns inputs (accepted requests, results, due retries)
//! into state changes. Each change appends [`Op`]s for the store and
//! [`OutMsg`]s for the broker to the current batch; the I/O loop in
//! `engine.rs` commits the batch, then publishes, then acks.
//!
//! Task lifecycle: pending -> ready -> running -> succeeded, or
//! running -> retrying -> ready -> running ..., or running -> failed.
//! When a task fails for good, every task that has not started is skipped,
//! running ones finish, and the workflow fails once none is running.

use crate::{
    batch::{Op, OutKind, OutMsg, ReplyTo, RunningWorkflow, TaskRow, TypePlaceRow, Unreadable},
    metrics::Metrics,
    template::{self, Source},
    validate::{self, Limits, Rejected, ValidWorkflow},
};
use chrono::{DateTime, Utc};
use serde_json::Value;
use std::{
    cmp::{Ordering, Reverse},
    collections::{BTreeMap, BinaryHeap, HashMap, HashSet, VecDeque},
    sync::Arc,
};
use warren_shared::{
    Topology,
    topology::partition_of,
    wire::{
        ControlNotice, NoticeKind, ResultStatus, RetryPolicy, TaskError, TaskMessage, TaskReport,
        TaskResult, TaskSpec, TaskState, WorkersReport, WorkflowProgress, WorkflowReport,
        WorkflowStatus,
    },
};

#[derive(Debug, Clone)]
struct TaskRt {
    state: TaskState,
    attempt: u32,
    due_at_ms: Option<i64>,
    output: Option<Value>,
    error: Option<TaskError>,
    worker: Option<String>,
    started_at: Option<DateTime<Utc>>,
    finished_at: Option<DateTime<Utc>>,
}

impl TaskRt {
    fn pending() -> TaskRt {
        TaskRt {
            state: TaskState::Pending,
            attempt: 0,
            due_at_ms: None,
            output: None,
            error: None,
            worker: None,
            started_at: None,
            finished_at: None,
        }
    }
}

#[derive(Debug)]
struct Workflow {
    id: Arc<str>,
    name: Option<String>,
    priority: u8,
    input: Value,
    created_at: DateTime<Utc>,
    specs: Vec<TaskSpec>,
    /// Task index by id.
    index: HashMap<String, u32>,
    templated: Vec<bool>,
    dependents: Vec<Vec<u32>>,
    /// Each task's remaining critical path: its weight (duration hint, or
    /// 1) plus the heaviest path through its dependents to the end.
    rank: Vec<u64>,
    /// Dependencies of each task that have not succeeded yet.
    waiting: Vec<u32>,
    tasks: Vec<TaskRt>,
    /// Tasks dispatched whose result has not arrived.
    running: u32,
    /// Most tasks running at once (`max_concurrency`; `u32::MAX` if none).
    max_running: u32,
    /// Tasks not in a final state.
    unfinished: u32,
    /// Set when a task failed for good: the workflow's one-line error.
    failure: Option<String>,
    /// Set by a cancel request.
    cancelled: bool,
    /// In `Engine::progress_dirty`: marks it once per interval, not once
    /// per task (no hashing of the id on every result).
    progress_marked: bool,
    replies: Vec<ReplyTo>,
}

impl Workflow {
    fn report(&self, status: WorkflowStatus, finished_at: Option<DateTime<Utc>>) -> WorkflowReport {
        let tasks: BTreeMap<String, TaskReport> = self
            .specs
            .iter()
            .zip(&self.tasks)
            .map(|(spec, t)| {
                (
                    spec.id.clone(),
                    TaskReport {
                        state: t.state,
                        attempts: t.attempt,
                        depends_on: spec.depends_on.clone(),
                        output: t.output.clone(),
                        error: t.error.clone(),
                        worker: t.worker.clone(),
                        started_at: t.started_at,
                        finished_at: t.finished_at,
                    },
                )
            })
            .collect();
        WorkflowReport {
            workflow_id: self.id.to_string(),
            name: self.name.clone(),
            status,
            tasks,
            errors: Vec::new(),
            error: self.failure.clone(),
            created_at: Some(self.created_at),
            finished_at,
        }
    }

    fn row(&self, i: u32) -> TaskRow {
        let t = &self.tasks[i as usize];
        TaskRow {
            workflow_id: self.id.clone(),
            task_id: self.specs[i as usize].id.clone(),
            state: t.state,
            attempt: t.attempt,
            due_at_ms: t.due_at_ms,
            output: t.output.as_ref().map(Value::to_string),
            error: t.error.clone(),
            worker: t.worker.clone(),
            started_at: t.started_at,
            finished_at: t.finished_at,
        }
    }
}

/// Which of a workflow's ready tasks goes first.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum DispatchOrder {
    /// The task with the longest remaining path to the workflow's end
    /// (weighted by duration hints) first, then the oldest.
    #[default]
    CriticalPath,
    /// The oldest first: in the order tasks became ready.
    Fifo,
}

/// A ready task waiting for a dispatch slot in its queue.
#[derive(Debug, PartialEq, Eq)]
struct ReadyItem {
    /// Remaining critical path (0 in FIFO order).
    rank: u64,
    seq: u64,
    task: u32,
    /// When it became ready (ms since the epoch), for the dispatch latency.
    ready_at_ms: i64,
    /// Its task type's limit, if the type has one.
    limit: Option<u16>,
    /// Taken from its type's parked tasks and counted in
    /// [`TypeSlot::released`] until it is popped again.
    released: bool,
}

impl Ord for ReadyItem {
    /// Longest remaining path first, then oldest.
    fn cmp(&self, other: &Self) -> Ordering {
        self.rank
            .cmp(&other.rank)
            .then_with(|| other.seq.cmp(&self.seq))
    }
}

impl PartialOrd for ReadyItem {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// One task queue: its ready tasks and its in-flight count.
///
/// Ready tasks are kept by priority, highest first. At one priority,
/// workflows take turns (fair share: a 10-task workflow submitted after a
/// 100,000-task one gets every other slot, not the slots left after it),
/// and each workflow's own tasks go in [`DispatchOrder`].
#[derive(Debug, Default)]
struct QueueState {
    levels: BTreeMap<u8, Level>,
    in_flight: usize,
}

/// The ready tasks of one priority in one queue.
#[derive(Debug, Default)]
struct Level {
    /// Workflows with ready tasks, in turn order.
    turns: VecDeque<Arc<str>>,
    ready: HashMap<Arc<str>, BinaryHeap<ReadyItem>>,
}

impl QueueState {
    fn push(&mut self, priority: u8, workflow: &Arc<str>, item: ReadyItem) {
        let level = self.levels.entry(priority).or_default();
        match level.ready.get_mut(workflow) {
            Some(heap) => heap.push(item),
            None => {
                level.turns.push_back(workflow.clone());
                level
                    .ready
                    .insert(workflow.clone(), BinaryHeap::from([item]));
            }
        }
    }

    /// The next task to dispatch: the best of the workflow whose turn it
    /// is at the highest priority with ready tasks, skipping workflows
    /// that `full` says are at their concurrency limit (they keep their
    /// place in the turns).
    fn pop(&mut self, full: impl Fn(&Arc<str>) -> bool) -> Option<(Arc<str>, ReadyItem)> {
        let mut found = None;
        for (&priority, level) in self.levels.iter_mut().rev() {
            if let Some(at) = level.turns.iter().position(|w| !full(w)) {
                found = Some((priority, at));
                break;
            }
        }
        let (priority, at) = found?;
        let level = self.levels.get_mut(&priority).expect("found above");
        let workflow = level.turns.remove(at).expect("found above");
        let heap = level.ready.get_mut(&workflow).expect("a turn has tasks");
        let item = heap.pop().expect("heaps are never left empty");
        if heap.is_empty() {
            level.ready.remove(&workflow);
        } else {
            level.turns.push_back(workflow.clone());
        }
        if level.turns.is_empty() {
            self.levels.remove(&priority);
        }
        Some((workflow, item))
    }

    fn has_ready(&self) -> bool {
        !self.levels.is_empty()
    }
}

/// Concurrency limits per task type (`kind`), across all workers.
///
/// A ready task whose type is at its limit when its turn comes is parked
/// in its type's heap (best first), and does not hold up the tasks behind
/// it in its queue. Each time a task of the type ends, the best parked one
/// goes back into its queue and takes its turn again. No step scans the
/// parked tasks: parking and releasing are O(log n).
#[derive(Debug, Default)]
pub struct TypeLimits {
    by_kind: HashMap<String, u16>,
    slots: Vec<TypeSlot>,
}

#[derive(Debug)]
struct TypeSlot {
    kind: String,
    /// The configured limit, across every scheduler of the namespace.
    limit: u32,
    /// How many may run from this scheduler: the limit when it is alone
    /// (SQLite); on a partitioned store, the places it holds in the
    /// database (see [`Engine::grant_type_places`]).
    max: u32,
    /// At most this many places are kept while other schedulers wait for
    /// some (their fair share); `u32::MAX` when none waits.
    cap: u32,
    /// Tasks of the type dispatched and not yet answered.
    running: u32,
    /// `running` by partition (partitioned stores only).
    by_part: HashMap<u16, u32>,
    /// Parked tasks put back into their queue and not yet popped: a
    /// release reserves a place under `max` so that one free place does
    /// not release many tasks.
    released: u32,
    parked: BinaryHeap<Parked>,
}

#[derive(Debug, PartialEq, Eq)]
struct Parked {
    priority: u8,
    workflow: Arc<str>,
    item: ReadyItem,
}

impl Ord for Parked {
    fn cmp(&self, other: &Self) -> Ordering {
        self.priority
            .cmp(&other.priority)
            .then_with(|| self.item.cmp(&other.item))
    }
}

impl PartialOrd for Parked {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// A limit that cannot be parsed from `WARREN_TYPE_LIMITS`.
#[derive(Debug, thiserror::Error)]
#[error("task type limit `{entry}`: {why} (expected `type=N[,type=N...]` with N >= 1)")]
pub struct TypeLimitError {
    entry: String,
    why: &'static str,
}

impl TypeLimits {
    /// Limits from `(type, most running)` pairs.
    pub fn new(limits: impl IntoIterator<Item = (String, u32)>) -> TypeLimits {
        let mut out = TypeLimits::default();
        for (kind, max) in limits {
            match out.by_kind.get(&kind) {
                Some(&s) => {
                    out.slots[s as usize].max = max;
                    out.slots[s as usize].limit = max;
                }
                None => {
                    out.by_kind.insert(kind.clone(), out.slots.len() as u16);
                    out.slots.push(TypeSlot {
                        kind,
                        limit: max,
                        max,
                        cap: u32::MAX,
                        running: 0,
                        by_part: HashMap::new(),
                        released: 0,
                        parked: BinaryHeap::new(),
                    });
                }
            }
        }
        out
    }

    /// Parses `payments.charge=5,email.send=20` (spaces allowed) into
    /// `(type, most running)` pairs.
    pub fn parse(spec: &str) -> Result<Vec<(String, u32)>, TypeLimitError> {
        let mut pairs = Vec::new();
        for entry in spec.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let err = |why| TypeLimitError {
                entry: entry.to_owned(),
                why,
            };
            let (kind, n) = entry.split_once('=').ok_or_else(|| err("no `=`"))?;
            let kind = kind.trim();
            if kind.is_empty() {
                return Err(err("empty task type"));
            }
            let n: u32 = n.trim().parse().map_err(|_| err("not a number"))?;
            if n == 0 {
                return Err(err("a limit of 0 would never run the type"));
            }
            pairs.push((kind.to_owned(), n));
        }
        if pairs.len() > u16::MAX as usize {
            return Err(TypeLimitError {
                entry: format!("{} entries", pairs.len()),
                why: "too many task types",
            });
        }
        Ok(pairs)
    }

    fn slot_of(&self, kind: &str) -> Option<u16> {
        if self.slots.is_empty() {
            return None;
        }
        self.by_kind.get(kind).copied()
    }

    /// A task of the slot's type, of `workflow` (one of `partitions`),
    /// started.
    fn started(&mut self, slot: Option<u16>, workflow: &str, partitions: u16) {
        if let Some(s) = slot {
            let s = &mut self.slots[s as usize];
            s.running += 1;
            *s.by_part
                .entry(partition_of(workflow, partitions))
                .or_default() += 1;
        }
    }

    /// A task of the slot's type ended (result, lease expiry, cancel).
    fn ended(&mut self, slot: Option<u16>, workflow: &str, partitions: u16) {
        if let Some(s) = slot {
            let s = &mut self.slots[s as usize];
            s.running = s.running.saturating_sub(1);
            if let Some(n) = s.by_part.get_mut(&partition_of(workflow, partitions)) {
                *n = n.saturating_sub(1);
            }
        }
    }
}

impl TypeSlot {
    /// While `others` schedulers wait for places, keep no more than a fair
    /// share of them.
    fn set_cap(&mut self, others: u32) {
        self.cap = if others == 0 {
            u32::MAX
        } else {
            self.limit.div_ceil(others + 1).max(1)
        };
    }
}

/// The running count, limit and parked tasks of a limited task type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypeUsage {
    pub kind: String,
    pub running: u64,
    pub limit: u64,
    pub waiting: u64,
}

/// A retry waiting for its due time: (due ms, order, workflow, task, attempt).
type DueRetry = Reverse<(i64, u64, Arc<str>, u32, u32)>;

/// The state machine. See the module docs.
#[derive(Debug)]
pub struct Engine {
    topology: Topology,
    window: usize,
    workflows: HashMap<Arc<str>, Workflow>,
    queues: HashMap<String, QueueState>,
    retries: BinaryHeap<DueRetry>,
    /// Running attempts with a timeout, by the time their lease ends.
    leases: BinaryHeap<DueRetry>,
    /// Added to a task's timeout to give its lease (ms).
    lease_grace_ms: i64,
    seq: u64,
    next_outbox: u64,
    next_workflow_seq: u64,
    ops: Vec<Op>,
    outbox: Vec<(u64, Arc<OutMsg>)>,
    metrics: Arc<Metrics>,
    /// Which of a workflow's ready tasks goes first.
    order: DispatchOrder,
    /// Running workflows whose tasks changed since their last progress
    /// event.
    progress_dirty: HashSet<Arc<str>>,
    /// Progress is announced at most once per interval (ms since epoch).
    next_progress_ms: i64,
    limits: TypeLimits,
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
}

/// The report of a running workflow as stored, built the way a scheduler
/// restoring it would (for one another scheduler owns).
pub fn stored_report(r: RunningWorkflow) -> Result<Option<WorkflowReport>, Unreadable> {
    let id = r.id.clone();
    let mut engine = Engine::new(
        Topology::new("report"),
        1,
        0,
        0,
        0,
        Arc::new(Metrics::default()),
    );
    engine.restore(r)?;
    Ok(engine.report(&id))
}

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
    pub fn new(
        topology: Topology,
        window: usize,
        lease_grace_ms: u64,
        next_outbox: u64,
        next_workflow_seq: u64,
        metrics: Arc<Metrics>,
    ) -> Engine {
        Engine {
            topology,
            window: window.max(1),
            workflows: HashMap::new(),
            queues: HashMap::new(),
            retries: BinaryHeap::new(),
            leases: BinaryHeap::new(),
            lease_grace_ms: lease_grace_ms.min(i64::MAX as u64) as i64,
            seq: 0,
            next_outbox,
            next_workflow_seq,
            ops: Vec::new(),
            outbox: Vec::new(),
            metrics,
            order: DispatchOrder::default(),
            progress_dirty: HashSet::new(),
            next_progress_ms: 0,
            limits: TypeLimits::default(),
            partitions: 1,
            home: 0,
            owned: vec![0],
            places_written: Vec::new(),
        }
    }

    /// Sets the store's partition count and the partitions this scheduler
    /// owns (the first is where messages of no workflow are filed).
    pub fn set_partitions(&mut self, partitions: u16, owned: &[u16]) {
        self.partitions = partitions.max(1);
        self.owned = owned.to_vec();
        self.home = owned.first().copied().unwrap_or(0);
    }

    fn partitioned(&self) -> bool {
        self.partitions > 1
    }

    /// Partitioned stores: the places of each limited type this scheduler
    /// holds in the store (summed over the partitions it owns), which
    /// replace the configured limits as what it may run. Call after
    /// restoring the workflows.
    pub fn set_type_places(&mut self, held: &HashMap<String, u32>) {
        for slot in &mut self.limits.slots {
            slot.max = held.get(&slot.kind).copied().unwrap_or(0);
            slot.cap = u32::MAX;
        }
        self.places_written.clear();
    }

    /// Partitioned stores: the limited types with tasks parked for want of
    /// a place here, as (type, places wanted, configured limit).
    pub fn type_wants(&self) -> Vec<(String, u32, u32)> {
        if !self.partitioned() {
            return Vec::new();
        }
        self.limits
            .slots
            .iter()
            .filter(|s| !s.parked.is_empty() && s.max < s.cap.min(s.limit))
            .map(|s| {
                let room = s.cap.min(s.limit) - s.max;
                let want = (s.parked.len() as u64).min(u64::from(room)) as u32;
                (s.kind.clone(), want, s.limit)
            })
            .collect()
    }

    /// True when tasks wait for a place of their limited type here.
    pub fn has_parked(&self) -> bool {
        self.limits.slots.iter().any(|s| !s.parked.is_empty())
    }

    /// Partitioned stores: `granted` more places of `kind`, taken in the
    /// store; `others_waiting` schedulers also want some, so this one
    /// keeps no more than its fair share as its tasks end.
    pub fn grant_type_places(&mut self, kind: &str, granted: u32, others_waiting: u32) {
        let Some(s) = self.limits.slot_of(kind) else {
            return;
        };
        let slot = &mut self.limits.slots[s as usize];
        slot.max += granted;
        slot.set_cap(others_waiting);
    }

    /// Partitioned stores: how many other schedulers want places of each
    /// limited type now (absent: none), read from the store at every
    /// balance tick.
    pub fn set_type_waiters(&mut self, waiting: &HashMap<String, u32>) {
        for slot in &mut self.limits.slots {
            slot.set_cap(waiting.get(&slot.kind).copied().unwrap_or(0));
        }
    }

    /// Partitioned stores: gives back the places not in use (no task of
    /// the type waits, or more are held than the fair share), and records
    /// what each owned partition holds in the batch: at least its running
    /// tasks of the type, so that whoever takes a partition over inherits
    /// the places its running tasks use.
    pub fn sync_type_places(&mut self) {
        if !self.partitioned() || self.limits.slots.is_empty() {
            return;
        }
        let mut rows = Vec::new();
        for slot in &mut self.limits.slots {
            let used = slot.running + slot.released;
            let spare = slot.max.saturating_sub(used);
            let keep = if slot.parked.is_empty() {
                0
            } else {
                spare.min(slot.cap.min(slot.limit).saturating_sub(used))
            };
            slot.max -= spare - keep;
            // What is still wanted, for the others' fair shares.
            let wanted = if slot.parked.is_empty() {
                0
            } else {
                (slot.parked.len() as u64).min(u64::from(slot.limit.saturating_sub(slot.max)))
                    as u32
            };
            let mut home_extra = slot.max;
            for &p in &self.owned {
                let running = slot.by_part.get(&p).copied().unwrap_or(0);
                home_extra = home_extra.saturating_sub(running);
                rows.push(TypePlaceRow {
                    kind: slot.kind.clone(),
                    part: p,
                    held: running,
                    wanted: 0,
                });
            }
            if let Some(row) = rows
                .iter_mut()
                .rev()
                .take(self.owned.len())
                .find(|r| r.part == self.home)
            {
                row.held += home_extra;
                row.wanted = wanted;
            }
        }
        if rows != self.places_written {
            self.ops.push(Op::TypePlaces(rows.clone()));
            self.places_written = rows;
        }
    }

    /// Sets the concurrency limits per task type. Call before restoring
    /// workflows, so that their running tasks are counted.
    pub fn set_type_limits(&mut self, limits: TypeLimits) {
        self.limits = limits;
    }

    /// Running and parked tasks of each limited type.
    pub fn type_usage(&self) -> Vec<TypeUsage> {
        self.limits
            .slots
            .iter()
            .map(|s| TypeUsage {
                kind: s.kind.clone(),
                running: s.running as u64,
                limit: s.limit as u64,
                waiting: s.parked.len() as u64,
            })
            .collect()
    }

    /// Hands over the current batch: store ops and the messages to publish
    /// once they are committed.
    /// Sets the order of a workflow's ready tasks (default critical path).
    pub fn set_dispatch_order(&mut self, order: DispatchOrder) {
        self.order = order;
    }

    pub fn take_batch(&mut self) -> (Vec<Op>, Vec<(u64, Arc<OutMsg>)>) {
        (
            std::mem::take(&mut self.ops),
            std::mem::take(&mut self.outbox),
        )
    }

    /// Adds an op to the current batch (used for outbox deletions).
    pub fn push_op(&mut self, op: Op) {
        self.ops.push(op);
    }

    pub fn has_ops(&self) -> bool {
        !self.ops.is_empty()
    }

    pub fn active_workflows(&self) -> usize {
        self.workflows.len()
    }

    pub fn is_active(&self, id: &str) -> bool {
        self.workflows.contains_key(id)
    }

    fn emit(&mut self, msg: OutMsg) {
        let seq = self.next_outbox;
        self.next_outbox += 1;
        let msg = Arc::new(msg);
        self.ops.push(Op::Outbox(seq, msg.clone()));
        self.outbox.push((seq, msg));
    }

    /// Answers a `workers` control request with the registry's report.
    pub fn reply_workers(&mut self, to: &ReplyTo, report: &WorkersReport) {
        self.emit_to(OutKind::WorkersReply, to, to_json(report));
    }

    fn emit_reply(&mut self, to: &ReplyTo, body: Vec<u8>) {
        self.emit_to(OutKind::Reply, to, body);
    }

    /// A message to a producer's `reply_to` queue.
    fn emit_to(&mut self, kind: OutKind, to: &ReplyTo, body: Vec<u8>) {
        self.emit(OutMsg {
            kind,
            exchange: String::new(),
            routing_key: to.queue.clone(),
            message_id: None,
            correlation_id: to.correlation_id.clone(),
            priority: None,
            headers: Vec::new(),
            body,
            part: self.home,
        });
    }

    fn emit_event(&mut self, id: &str, status: WorkflowStatus, body: Vec<u8>) {
        self.emit(OutMsg {
            kind: OutKind::Event,
            exchange: self.topology.events(),
            routing_key: format!("workflow.{id}.{}", status.as_str()),
            message_id: None,
            correlation_id: None,
            priority: None,
            headers: Vec::new(),
            body,
            part: self.home,
        });
    }

    /// Dead-letters a message that cannot be processed.
    pub fn dead_letter(&mut self, body: Vec<u8>, source_queue: &str, reason: &str) {
        Metrics::add(&self.metrics.dead_lettered, 1);
        self.emit(OutMsg {
            kind: OutKind::Dead,
            exchange: self.topology.dead(),
            routing_key: String::new(),
            message_id: None,
            correlation_id: None,
            priority: None,
            headers: vec![
                (
                    warren_shared::wire::HEADER_DEAD_REASON.to_owned(),
                    reason.to_owned(),
                ),
                (
                    warren_shared::wire::HEADER_DEAD_QUEUE.to_owned(),
                    source_queue.to_owned(),
                ),
            ],
            body,
            part: self.home,
        });
    }

    /// Sends an already serialised report to `to`.
    pub fn reply_with(&mut self, to: &ReplyTo, report_json: &str) {
        self.emit_reply(to, report_json.as_bytes().to_vec());
    }

    /// Sends `report` to `to`.
    pub fn reply_report(&mut self, to: &ReplyTo, report: &WorkflowReport) {
        self.emit_reply(to, to_json(report));
    }

    /// The current report of a running workflow.
    pub fn report(&self, id: &str) -> Option<WorkflowReport> {
        self.workflows
            .get(id)
            .map(|w| w.report(WorkflowStatus::Running, None))
    }

    /// A second submission of a running workflow: its outcome goes to this
    /// `reply_to` too.
    pub fn add_waiter(&mut self, id: &str, reply: ReplyTo) {
        Metrics::add(&self.metrics.workflows_duplicate, 1);
        if let Some(w) = self.workflows.get_mut(id) {
            if w.replies.contains(&reply) {
                return; // the same request redelivered
            }
            self.ops.push(Op::AddReply {
                workflow_id: w.id.clone(),
                reply_to: reply.queue.clone(),
                correlation_id: reply.correlation_id.clone(),
            });
            w.replies.push(reply);
        }
    }

    /// Counts a duplicate submission of a workflow that has already ended.
    pub fn note_duplicate(&mut self) {
        Metrics::add(&self.metrics.workflows_duplicate, 1);
    }

    /// Records a rejected request and answers it.
    pub fn reject(&mut self, r: Rejected, reply: Option<ReplyTo>, now: DateTime<Utc>) {
        Metrics::add(&self.metrics.workflows_rejected, 1);
        let report = WorkflowReport {
            workflow_id: r.id.clone(),
            name: r.name.clone(),
            status: WorkflowStatus::Rejected,
            tasks: BTreeMap::new(),
            errors: r.errors,
            error: None,
            created_at: Some(now),
            finished_at: Some(now),
        };
        let body = to_json(&report);
        let seq = self.next_workflow_seq;
        self.next_workflow_seq += 1;
        self.ops.push(Op::InsertWorkflow {
            id: Arc::from(r.id.as_str()),
            seq,
            name: r.name,
            priority: 0,
            status: WorkflowStatus::Rejected,
            definition: None,
            report: Some(String::from_utf8_lossy(&body).into_owned()),
            created_at: now,
        });
        if let Some(to) = &reply {
            self.emit_reply(to, body.clone());
        }
        self.emit_event(&r.id, WorkflowStatus::Rejected, body);
    }

    /// Accepts a validated workflow: records it and makes its roots ready.
    pub fn accept(
        &mut self,
        v: ValidWorkflow,
        definition: Arc<[u8]>,
        reply: Option<ReplyTo>,
        now: DateTime<Utc>,
    ) {
        Metrics::add(&self.metrics.workflows_accepted, 1);
        let seq = self.next_workflow_seq;
        self.next_workflow_seq += 1;
        let id: Arc<str> = Arc::from(v.id.as_str());
        self.ops.push(Op::InsertWorkflow {
            id: id.clone(),
            seq,
            name: v.name.clone(),
            priority: v.priority,
            status: WorkflowStatus::Running,
            definition: Some(definition),
            report: None,
            created_at: now,
        });
        let mut replies = Vec::new();
        if let Some(to) = reply {
            self.ops.push(Op::AddReply {
                workflow_id: id.clone(),
                reply_to: to.queue.clone(),
                correlation_id: to.correlation_id.clone(),
            });
            replies.push(to);
        }
        let wf = build(id.clone(), v, now, replies, |_| TaskRt::pending());
        // The accepted event names no tasks: building (and dropping) a
        // report of every task would cost O(tasks) for nothing.
        let event = WorkflowReport {
            workflow_id: id.to_string(),
            name: wf.name.clone(),
            status: WorkflowStatus::Running,
            tasks: BTreeMap::new(),
            errors: Vec::new(),
            error: None,
            created_at: Some(now),
            finished_at: None,
        };
        self.emit_event(&id, WorkflowStatus::Running, to_json(&event));
        let roots: Vec<u32> = (0..wf.tasks.len() as u32)
            .filter(|&i| wf.waiting[i as usize] == 0)
            .collect();
        self.workflows.insert(id.clone(), wf);
        for i in roots {
            self.make_ready(&id, i);
        }
    }

    /// Rebuilds a workflow that was running when the scheduler stopped.
    pub fn restore(&mut self, r: RunningWorkflow) -> Result<(), Unreadable> {
        let unlimited = Limits {
            max_body_bytes: usize::MAX,
            max_tasks: usize::MAX,
            max_input_depth: usize::MAX,
        };
        let id = r.id.clone();
        let v = validate::validate(&r.definition, Some(&r.id), &unlimited, || id.clone()).map_err(
            |rej| {
                Unreadable(format!(
                    "stored definition of workflow {} no longer validates: {:?}",
                    r.id, rej.errors
                ))
            },
        )?;
        let mut rows: HashMap<String, TaskRow> = r
            .tasks
            .into_iter()
            .map(|t| (t.task_id.clone(), t))
            .collect();
        let replies = r
            .replies
            .into_iter()
            .map(|(queue, correlation_id)| ReplyTo {
                queue,
                correlation_id,
            })
            .collect();
        let wf_id: Arc<str> = Arc::from(r.id.as_str());
        let mut corrupt = None;
        let mut wf = build(wf_id.clone(), v, r.created_at, replies, |spec| {
            match rows.remove(&spec.id) {
                None => TaskRt::pending(),
                Some(row) => TaskRt {
                    state: row.state,
                    attempt: row.attempt,
                    due_at_ms: row.due_at_ms,
                    output: row.output.and_then(|o| match serde_json::from_str(&o) {
                        Ok(v) => Some(v),
                        Err(e) => {
                            corrupt = Some(format!("output of {}: {e}", spec.id));
                            None
                        }
                    }),
                    error: row.error,
                    worker: row.worker,
                    started_at: row.started_at,
                    finished_at: row.finished_at,
                },
            }
        });
        if let Some(c) = corrupt {
            return Err(Unreadable(c));
        }
        // Derive the counters from the task states.
        for i in 0..wf.tasks.len() {
            let state = wf.tasks[i].state;
            if state == TaskState::Succeeded {
                for &d in &wf.dependents[i] {
                    wf.waiting[d as usize] -= 1;
                }
            }
            if state.is_final() {
                wf.unfinished -= 1;
            }
            if state == TaskState::Failed && wf.failure.is_none() {
                wf.failure = Some(failure_line(&wf.specs[i].id, &wf.tasks[i]));
            }
        }
        for i in 0..wf.tasks.len() as u32 {
            match wf.tasks[i as usize].state {
                TaskState::Running => {
                    wf.running += 1;
                    self.limits.started(
                        self.limits.slot_of(&wf.specs[i as usize].kind),
                        &wf.id,
                        self.partitions,
                    );
                    self.queues
                        .entry(wf.specs[i as usize].queue.clone())
                        .or_default()
                        .in_flight += 1;
                    if let Some(timeout) = wf.specs[i as usize].timeout_ms {
                        let t = &wf.tasks[i as usize];
                        let since = t.started_at.map_or(0, |s| s.timestamp_millis());
                        self.seq += 1;
                        self.leases.push(Reverse((
                            since
                                .saturating_add(timeout as i64)
                                .saturating_add(self.lease_grace_ms),
                            self.seq,
                            wf_id.clone(),
                            i,
                            t.attempt,
                        )));
                    }
                }
                TaskState::Retrying => {
                    let t = &wf.tasks[i as usize];
                    self.seq += 1;
                    self.retries.push(Reverse((
                        t.due_at_ms.unwrap_or(0),
                        self.seq,
                        wf_id.clone(),
                        i,
                        t.attempt,
                    )));
                }
                _ => {}
            }
        }
        let ready: Vec<u32> = if wf.failure.is_none() {
            (0..wf.tasks.len() as u32)
                .filter(|&i| {
                    wf.tasks[i as usize].state == TaskState::Pending && wf.waiting[i as usize] == 0
                })
                .collect()
        } else {
            Vec::new()
        };
        self.workflows.insert(wf_id.clone(), wf);
        for i in ready {
            self.make_ready(&wf_id, i);
        }
        self.maybe_finish(&wf_id, Utc::now());
        Ok(())
    }

    /// Cancels a running workflow: every task not yet final becomes
    /// `cancelled`, workers are told on `{ns}.control` to stop the ones
    /// running, and the workflow ends `cancelled` now (a later result is
    /// ignored). Returns the final report, or `None` when the workflow is
    /// not running here.
    pub fn cancel(&mut self, id: &str, now: DateTime<Utc>) -> Option<WorkflowReport> {
        let wf = self.workflows.get_mut(id)?;
        let id = wf.id.clone();
        let mut stopped = 0;
        for j in 0..wf.tasks.len() {
            let t = &mut wf.tasks[j];
            match t.state {
                TaskState::Running => {
                    stopped += 1;
                    t.finished_at = Some(now);
                    self.limits
                        .ended(self.limits.slot_of(&wf.specs[j].kind), &id, self.partitions);
                    if let Some(q) = self.queues.get_mut(&wf.specs[j].queue) {
                        q.in_flight = q.in_flight.saturating_sub(1);
                    }
                }
                TaskState::Pending | TaskState::Ready | TaskState::Retrying => {}
                _ => continue,
            }
            t.state = TaskState::Cancelled;
            t.due_at_ms = None;
            let row = wf.row(j as u32);
            self.ops.push(Op::Task(row));
        }
        wf.running = 0;
        wf.unfinished = 0;
        wf.cancelled = true;
        // Queued ready items, retries and leases of these tasks find them
        // no longer ready, retrying or running, and are dropped.
        if stopped > 0 {
            let notice = ControlNotice {
                control: NoticeKind::Cancel,
                workflow_id: id.to_string(),
            };
            self.emit(OutMsg {
                kind: OutKind::Control,
                exchange: self.topology.control(),
                routing_key: String::new(),
                message_id: None,
                correlation_id: None,
                priority: None,
                headers: Vec::new(),
                body: to_json(&notice),
                part: self.home,
            });
        }
        let report = self.workflows[&id].report(WorkflowStatus::Cancelled, Some(now));
        self.maybe_finish(&id, now);
        Some(report)
    }

    /// Publishes a progress event for each running workflow that changed,
    /// if a progress interval has passed since it started. Not stored:
    /// a lost one is replaced by the next.
    pub fn emit_progress(&mut self, now: DateTime<Utc>) {
        if self.progress_dirty.is_empty() || now.timestamp_millis() < self.next_progress_ms {
            return;
        }
        self.next_progress_ms = now.timestamp_millis() + PROGRESS_INTERVAL_MS;
        let due: Vec<Arc<str>> = self
            .progress_dirty
            .iter()
            .filter(|id| {
                self.workflows.get(*id).is_some_and(|w| {
                    (now - w.created_at).num_milliseconds() >= PROGRESS_INTERVAL_MS
                })
            })
            .cloned()
            .collect();
        for id in due {
            self.progress_dirty.remove(&id);
            let Some(wf) = self.workflows.get_mut(&id) else {
                continue;
            };
            wf.progress_marked = false;
            let mut tasks = BTreeMap::new();
            for t in &wf.tasks {
                *tasks.entry(t.state).or_insert(0u32) += 1;
            }
            let progress = WorkflowProgress {
                workflow_id: id.to_string(),
                name: wf.name.clone(),
                status: WorkflowStatus::Running,
                total: wf.tasks.len() as u32,
                tasks,
                created_at: Some(wf.created_at),
            };
            let seq = self.next_outbox;
            self.next_outbox += 1;
            self.outbox.push((
                seq,
                Arc::new(OutMsg {
                    kind: OutKind::Progress,
                    exchange: self.topology.events(),
                    routing_key: format!("workflow.{id}.progress"),
                    message_id: None,
                    correlation_id: None,
                    priority: None,
                    headers: Vec::new(),
                    body: to_json(&progress),
                    part: self.home,
                }),
            ));
        }
    }

    /// When the next progress events are due (ms since the epoch), if any
    /// workflow has changed since its last one.
    pub fn next_progress_ms(&self) -> Option<i64> {
        (!self.progress_dirty.is_empty()).then_some(self.next_progress_ms)
    }

    fn make_ready(&mut self, id: &Arc<str>, task: u32) {
        let Some(wf) = self.workflows.get_mut(id) else {
            return;
        };
        wf.tasks[task as usize].state = TaskState::Ready;
        self.seq += 1;
        let rank = match self.order {
            DispatchOrder::CriticalPath => wf.rank[task as usize],
            DispatchOrder::Fifo => 0,
        };
        self.queues
            .entry(wf.specs[task as usize].queue.clone())
            .or_default()
            .push(
                wf.priority,
                id,
                ReadyItem {
                    rank,
                    seq: self.seq,
                    task,
                    ready_at_ms: Utc::now().timestamp_millis(),
                    limit: self.limits.slot_of(&wf.specs[task as usize].kind),
                    released: false,
                },
            );
    }

    /// Applies a task result. Results for an attempt that is not running
    /// (duplicates, late results) change nothing and are counted.
    pub fn on_result(&mut self, r: TaskResult, now: DateTime<Utc>) {
        let Some(wf) = self.workflows.get_mut(r.workflow_id.as_str()) else {
            Metrics::add(&self.metrics.results_ignored, 1);
            tracing::debug!(workflow = %r.workflow_id, task = %r.task_id, attempt = r.attempt, "Result for a workflow that is not running ignored");
            return;
        };
        let Some(i) = wf.index.get(r.task_id.as_str()).map(|&i| i as usize) else {
            Metrics::add(&self.metrics.results_ignored, 1);
            tracing::warn!(workflow = %r.workflow_id, task = %r.task_id, "Result for an unknown task ignored");
            return;
        };
        let t = &mut wf.tasks[i];
        if t.state != TaskState::Running || t.attempt != r.attempt {
            Metrics::add(&self.metrics.results_ignored, 1);
            tracing::debug!(workflow = %r.workflow_id, task = %r.task_id, attempt = r.attempt, "Duplicate or late result ignored");
            return;
        }
        Metrics::add(&self.metrics.results_committed, 1);
        let id = wf.id.clone();
        if !wf.progress_marked {
            wf.progress_marked = true;
            self.progress_dirty.insert(id.clone());
        }
        wf.running -= 1;
        self.limits
            .ended(self.limits.slot_of(&wf.specs[i].kind), &id, self.partitions);
        if let Some(q) = self.queues.get_mut(&wf.specs[i].queue) {
            q.in_flight = q.in_flight.saturating_sub(1);
        }
        t.worker = Some(r.worker).filter(|w| !w.is_empty());
        if let (Some(start), Some(end)) = (r.started_at, r.finished_at) {
            self.metrics
                .task_duration
                .observe((end - start).num_microseconds().unwrap_or(0) as f64 / 1e6);
        }
        t.started_at = r.started_at.or(t.started_at);
        t.finished_at = Some(r.finished_at.unwrap_or(now));
        self.ops.push(Op::Result {
            workflow_id: id.clone(),
            task_id: r.task_id,
            attempt: r.attempt,
            status: r.status,
        });
        let i = i as u32;
        match r.status {
            ResultStatus::Succeeded => {
                Metrics::add(&self.metrics.tasks_succeeded, 1);
                t.state = TaskState::Succeeded;
                t.output = Some(r.output.unwrap_or(Value::Null));
                t.error = None;
                wf.unfinished -= 1;
                let row = wf.row(i);
                self.ops.push(Op::Task(row));
                if wf.failure.is_none() {
                    let mut ready = Vec::new();
                    for &d in &wf.dependents[i as usize] {
                        wf.waiting[d as usize] -= 1;
                        if wf.waiting[d as usize] == 0 {
                            ready.push(d);
                        }
                    }
                    for d in ready {
                        self.make_ready(&id, d);
                    }
                }
            }
            ResultStatus::Failed => {
                let error = r.error.unwrap_or_else(|| TaskError {
                    message: "the worker reported a failure without an error".into(),
                    retryable: false,
                });
                self.fail_attempt(&id, i, error, now);
            }
        }
        self.maybe_finish(&id, now);
    }

    /// A failed attempt: retried when allowed, else the task and the
    /// workflow fail.
    fn fail_attempt(&mut self, id: &Arc<str>, i: u32, error: TaskError, now: DateTime<Utc>) {
        let Some(wf) = self.workflows.get_mut(id) else {
            return;
        };
        let policy = wf.specs[i as usize].retry.unwrap_or_default();
        let t = &mut wf.tasks[i as usize];
        let retry = error.retryable && t.attempt < policy.max_attempts && wf.failure.is_none();
        t.error = Some(error);
        if retry {
            Metrics::add(&self.metrics.tasks_retried, 1);
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
        Metrics::add(&self.metrics.tasks_failed, 1);
        t.state = TaskState::Failed;
        t.due_at_ms = None;
        wf.unfinished -= 1;
        let row = wf.row(i);
        self.ops.push(Op::Task(row));
        if wf.failure.is_none() {
            wf.failure = Some(failure_line(
                &wf.specs[i as usize].id,
                &wf.tasks[i as usize],
            ));
            // Nothing that has not started will start now.
            for j in 0..wf.tasks.len() {
                if matches!(
                    wf.tasks[j].state,
                    TaskState::Pending | TaskState::Ready | TaskState::Retrying
                ) {
                    wf.tasks[j].state = TaskState::Skipped;
                    wf.tasks[j].due_at_ms = None;
                    wf.unfinished -= 1;
                    let row = wf.row(j as u32);
                    self.ops.push(Op::Task(row));
                }
            }
        }
    }

    /// Ends the workflow when nothing is left to run.
    fn maybe_finish(&mut self, id: &Arc<str>, now: DateTime<Utc>) {
        let Some(wf) = self.workflows.get(id) else {
            return;
        };
        if wf.running > 0 || (wf.unfinished > 0 && wf.failure.is_none()) {
            return;
        }
        let wf = self.workflows.remove(id).expect("present above");
        let status = if wf.cancelled {
            Metrics::add(&self.metrics.workflows_cancelled, 1);
            WorkflowStatus::Cancelled
        } else if wf.failure.is_some() {
            Metrics::add(&self.metrics.workflows_failed, 1);
            WorkflowStatus::Failed
        } else {
            Metrics::add(&self.metrics.workflows_succeeded, 1);
            WorkflowStatus::Succeeded
        };
        let report = wf.report(status, Some(now));
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
        if !wf.replies.is_empty() {
            self.ops.push(Op::DropReplies(wf.id.clone()));
        }
        self.emit_event(&wf.id, status, body);
    }

    /// When the next retry or lease is due (ms since the epoch).
    pub fn next_due_ms(&self) -> Option<i64> {
        let retry = self.retries.peek().map(|Reverse((due, ..))| *due);
        let lease = self.leases.peek().map(|Reverse((due, ..))| *due);
        match (retry, lease) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Makes every retry due by `now_ms` ready again, and fails every
    /// attempt whose lease has ended without a result.
    pub fn fire_due(&mut self, now_ms: i64) {
        self.expire_leases(now_ms);
        while let Some(Reverse((due, ..))) = self.retries.peek() {
            if *due > now_ms {
                break;
            }
            let Reverse((_, _, id, task, attempt)) = self.retries.pop().expect("peeked");
            let live = self.workflows.get(&id).is_some_and(|w| {
                let t = &w.tasks[task as usize];
                t.state == TaskState::Retrying && t.attempt == attempt
            });
            if live {
                self.make_ready(&id, task);
            }
        }
    }

    /// A running attempt whose result has not come within its timeout plus
    /// the grace period is failed (retryable): its worker is dead or hung.
    /// Should its result come later after all, it is ignored.
    fn expire_leases(&mut self, now_ms: i64) {
        let now = DateTime::from_timestamp_millis(now_ms).unwrap_or_else(Utc::now);
        while let Some(Reverse((due, ..))) = self.leases.peek() {
            if *due > now_ms {
                break;
            }
            let Reverse((_, _, id, task, attempt)) = self.leases.pop().expect("peeked");
            let Some(wf) = self.workflows.get_mut(&id) else {
                continue;
            };
            let t = &mut wf.tasks[task as usize];
            if t.state != TaskState::Running || t.attempt != attempt {
                continue;
            }
            Metrics::add(&self.metrics.leases_expired, 1);
            let timeout = wf.specs[task as usize].timeout_ms.unwrap_or(0);
            tracing::warn!(workflow = %id, task = %wf.specs[task as usize].id, attempt, "Lease expired: no result within the task's timeout plus grace");
            wf.running -= 1;
            self.limits.ended(
                self.limits.slot_of(&wf.specs[task as usize].kind),
                &id,
                self.partitions,
            );
            if let Some(q) = self.queues.get_mut(&wf.specs[task as usize].queue) {
                q.in_flight = q.in_flight.saturating_sub(1);
            }
            t.finished_at = Some(now);
            let error = TaskError {
                message: format!(
                    "no result within the lease ({timeout} ms timeout + {} ms grace): the worker died or hung",
                    self.lease_grace_ms
                ),
                retryable: true,
            };
            self.fail_attempt(&id, task, error, now);
            self.maybe_finish(&id, now);
        }
    }

    /// Releases ready tasks into their queues, best first, while each
    /// queue's in-flight count is under the window.
    pub fn dispatch(&mut self, now: DateTime<Utc>) {
        self.release_parked();
        self.dispatch_queues(now);
        // A released task that did not dispatch after all (its input
        // template failed) leaves a place that the next parked one takes.
        while self.release_parked() {
            self.dispatch_queues(now);
        }
    }

    fn dispatch_queues(&mut self, now: DateTime<Utc>) {
        let queues: Vec<String> = self
            .queues
            .iter()
            .filter(|(_, q)| q.has_ready() && q.in_flight < self.window)
            .map(|(name, _)| name.clone())
            .collect();
        for name in queues {
            loop {
                let q = self.queues.get_mut(&name).expect("listed above");
                if q.in_flight >= self.window {
                    break;
                }
                let workflows = &self.workflows;
                let full = |w: &Arc<str>| {
                    workflows
                        .get(w)
                        .is_some_and(|wf| wf.running >= wf.max_running)
                };
                let Some((workflow, mut item)) = q.pop(full) else {
                    break;
                };
                if let Some(s) = item.limit {
                    let slot = &mut self.limits.slots[s as usize];
                    if item.released {
                        item.released = false;
                        slot.released -= 1;
                    }
                    if slot.running >= slot.max.min(slot.cap) {
                        let priority = self.workflows.get(&workflow).map_or(0, |wf| wf.priority);
                        slot.parked.push(Parked {
                            priority,
                            workflow,
                            item,
                        });
                        continue;
                    }
                }
                let waited_ms = now.timestamp_millis() - item.ready_at_ms;
                if self.dispatch_one(&workflow, item.task, now) {
                    self.limits.started(item.limit, &workflow, self.partitions);
                    self.metrics
                        .dispatch_latency
                        .observe(waited_ms as f64 / 1e3);
                }
            }
        }
    }

    /// Puts parked tasks back into their queues while their type has free
    /// places; parked tasks no longer ready (cancelled, ended) are dropped.
    /// True when one was put back.
    fn release_parked(&mut self) -> bool {
        let mut any = false;
        for slot in &mut self.limits.slots {
            while slot.running + slot.released < slot.max.min(slot.cap) {
                let Some(mut p) = slot.parked.pop() else {
                    break;
                };
                let Some(wf) = self.workflows.get(&p.workflow) else {
                    continue;
                };
                if wf.tasks[p.item.task as usize].state != TaskState::Ready {
                    continue;
                }
                p.item.released = true;
                slot.released += 1;
                self.queues
                    .entry(wf.specs[p.item.task as usize].queue.clone())
                    .or_default()
                    .push(p.priority, &p.workflow, p.item);
                any = true;
            }
        }
        any
    }

    /// Dispatches a ready task; false when it is no longer ready (skipped
    /// or cancelled since) or its input could not be resolved.
    fn dispatch_one(&mut self, id: &Arc<str>, i: u32, now: DateTime<Utc>) -> bool {
        let Some(wf) = self.workflows.get_mut(id) else {
            return false;
        };
        if wf.tasks[i as usize].state != TaskState::Ready {
            return false; // skipped since it became ready
        }
        let spec = &wf.specs[i as usize];
        let input = if wf.templated[i as usize] {
            let (index, tasks, wf_input) = (&wf.index, &wf.tasks, &wf.input);
            let lookup = |s: &Source| -> Option<&Value> {
                match s {
                    Source::WorkflowInput => Some(wf_input),
                    Source::TaskOutput(name) => {
                        tasks[*index.get(name.as_str())? as usize].output.as_ref()
                    }
                }
            };
            template::resolve(&spec.input, &lookup)
        } else {
            Ok(spec.input.clone())
        };
        let t = &mut wf.tasks[i as usize];
        t.attempt += 1;
        t.due_at_ms = None;
        t.started_at = Some(now);
        t.finished_at = None;
        let input = match input {
            Ok(v) => v,
            Err(e) => {
                // The attempt never reaches a worker; the task fails for good.
                let error = TaskError {
                    message: format!("input template: {e}"),
                    retryable: false,
                };
                self.fail_attempt(id, i, error, now);
                self.maybe_finish(id, now);
                return false;
            }
        };
        t.state = TaskState::Running;
        wf.running += 1;
        if !wf.progress_marked {
            wf.progress_marked = true;
            self.progress_dirty.insert(id.clone());
        }
        let msg = TaskMessage {
            workflow_id: id.to_string(),
            task_id: spec.id.clone(),
            attempt: t.attempt,
            kind: spec.kind.clone(),
            input,
            timeout_ms: spec.timeout_ms,
            max_attempts: spec.retry.unwrap_or_default().max_attempts,
        };
        let queue = spec.queue.clone();
        let priority = wf.priority;
        let row = wf.row(i);
        self.ops.push(Op::Task(row));
        self.queues.entry(queue.clone()).or_default().in_flight += 1;
        if let Some(timeout) = msg.timeout_ms {
            self.seq += 1;
            self.leases.push(Reverse((
                now.timestamp_millis()
                    .saturating_add(timeout as i64)
                    .saturating_add(self.lease_grace_ms),
                self.seq,
                id.clone(),
                i,
                msg.attempt,
            )));
        }
        Metrics::add(&self.metrics.tasks_dispatched, 1);
        self.emit(OutMsg {
            kind: OutKind::Task,
            exchange: self.topology.tasks_exchange(),
            routing_key: queue,
            message_id: Some(msg.message_id()),
            correlation_id: None,
            priority: Some(priority),
            headers: Vec::new(),
            body: to_json(&msg),
            part: partition_of(id, self.partitions),
        });
        true
    }

    /// Tasks dispatched and not yet answered, by queue.
    pub fn in_flight_by_queue(&self) -> BTreeMap<String, u64> {
        self.queues
            .iter()
            .map(|(name, q)| (name.clone(), q.in_flight as u64))
            .collect()
    }
}

fn failure_line(task: &str, t: &TaskRt) -> String {
    let why = t
        .error
        .as_ref()
        .map_or("no error given", |e| e.message.as_str());
    format!(
        "task `{task}` failed after {} attempt{}: {why}",
        t.attempt,
        if t.attempt == 1 { "" } else { "s" }
    )
}

fn build(
    id: Arc<str>,
    v: ValidWorkflow,
    created_at: DateTime<Utc>,
    replies: Vec<ReplyTo>,
    mut task: impl FnMut(&TaskSpec) -> TaskRt,
) -> Workflow {
    let n = v.tasks.len();
    let mut dependents = vec![Vec::new(); n];
    for (i, ds) in v.deps.iter().enumerate() {
        for &d in ds {
            dependents[d as usize].push(i as u32);
        }
    }
    let rank = critical_path_ranks(&v.tasks, &dependents, &v.deps);
    Workflow {
        id,
        rank,
        name: v.name,
        priority: v.priority,
        input: v.input,
        created_at,
        tasks: v.tasks.iter().map(&mut task).collect(),
        waiting: v.deps.iter().map(|d| d.len() as u32).collect(),
        index: v
            .tasks
            .iter()
            .enumerate()
            .map(|(i, t)| (t.id.clone(), i as u32))
            .collect(),
        specs: v.tasks,
        templated: v.templated,
        dependents,
        running: 0,
        max_running: v.max_concurrency,
        unfinished: n as u32,
        failure: None,
        cancelled: false,
        progress_marked: false,
        replies,
    }
}

/// Remaining critical path of each task (see [`Workflow::rank`]), in
/// O(tasks + edges): tasks are settled once all their dependents are.
fn critical_path_ranks(specs: &[TaskSpec], dependents: &[Vec<u32>], deps: &[Vec<u32>]) -> Vec<u64> {
    let n = specs.len();
    let weight = |i: usize| specs[i].duration_hint_ms.unwrap_or(1).max(1);
    let mut rank = vec![0u64; n];
    let mut left: Vec<usize> = dependents.iter().map(Vec::len).collect();
    let mut settled: Vec<usize> = (0..n).filter(|&i| left[i] == 0).collect();
    while let Some(i) = settled.pop() {
        let heaviest = dependents[i]
            .iter()
            .map(|&d| rank[d as usize])
            .max()
            .unwrap_or(0);
        rank[i] = weight(i).saturating_add(heaviest);
        for &p in &deps[i] {
            left[p as usize] -= 1;
            if left[p as usize] == 0 {
                settled.push(p as usize);
            }
        }
    }
    rank
}

fn to_json<T: serde::Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).expect("wire types always serialise")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn engine(window: usize) -> Engine {
        Engine::new(
            Topology::new("t"),
            window,
            1_000,
            1,
            1,
            Arc::new(Metrics::default()),
        )
    }

    fn submit(e: &mut Engine, body: Value) {
        let bytes = body.to_string().into_bytes();
        let v = validate::validate(&bytes, None, &Limits::default(), || "gen".into()).unwrap();
        e.accept(v, Arc::from(bytes), None, Utc::now());
    }

    /// Dispatches and returns the task messages published, in order.
    fn dispatched(e: &mut Engine) -> Vec<TaskMessage> {
        e.dispatch(Utc::now());
        let (_, out) = e.take_batch();
        out.iter()
            .filter(|(_, m)| m.kind == OutKind::Task)
            .map(|(_, m)| serde_json::from_slice(&m.body).unwrap())
            .collect()
    }

    fn result(m: &TaskMessage, ok: bool, retryable: bool, output: Value) -> TaskResult {
        TaskResult {
            workflow_id: m.workflow_id.clone(),
            task_id: m.task_id.clone(),
            attempt: m.attempt,
            status: if ok {
                ResultStatus::Succeeded
            } else {
                ResultStatus::Failed
            },
            output: ok.then_some(output),
            error: (!ok).then(|| TaskError {
                message: "boom".into(),
                retryable,
            }),
            worker: "w".into(),
            started_at: None,
            finished_at: None,
        }
    }

    fn final_report(e: &mut Engine) -> WorkflowReport {
        let (_, out) = e.take_batch();
        let ev = out
            .iter()
            .find(|(_, m)| m.kind == OutKind::Event && !m.routing_key.ends_with(".running"))
            .expect("a final event");
        serde_json::from_slice(&ev.1.body).unwrap()
    }

    #[test]
    fn diamond_with_templates() {
        let mut e = engine(10);
        submit(
            &mut e,
            json!({"id": "d", "input": {"n": 2}, "tasks": [
                {"id": "a", "type": "echo", "input": {"n": "${workflow.input.n}"}},
                {"id": "b", "type": "echo", "depends_on": ["a"], "input": "${a.output.n}"},
                {"id": "c", "type": "echo", "depends_on": ["a"], "input": "c got ${a.output.n}"},
                {"id": "j", "type": "echo", "depends_on": ["b", "c"], "input": ["${b.output}", "${c.output}"]}
            ]}),
        );
        let a = dispatched(&mut e);
        assert_eq!(a.len(), 1);
        assert_eq!(a[0].input, json!({"n": 2}));
        e.on_result(result(&a[0], true, false, a[0].input.clone()), Utc::now());
        let bc = dispatched(&mut e);
        assert_eq!(
            bc.iter().map(|m| m.input.clone()).collect::<Vec<_>>(),
            vec![json!(2), json!("c got 2")]
        );
        e.on_result(result(&bc[0], true, false, json!(2)), Utc::now());
        assert!(dispatched(&mut e).is_empty(), "join waits for both parents");
        e.on_result(result(&bc[1], true, false, json!("c got 2")), Utc::now());
        let j = dispatched(&mut e);
        assert_eq!(j[0].input, json!([2, "c got 2"]));
        e.on_result(result(&j[0], true, false, json!("done")), Utc::now());
        let report = final_report(&mut e);
        assert_eq!(report.status, WorkflowStatus::Succeeded);
        assert_eq!(report.tasks["j"].output, Some(json!("done")));
        assert!(!e.is_active("d"));
    }

    #[test]
    fn cancel_stops_every_unfinished_task_and_frees_the_window() {
        let metrics = Arc::new(Metrics::default());
        let mut e = Engine::new(Topology::new("t"), 2, 1_000, 1, 1, metrics.clone());
        submit(
            &mut e,
            json!({"id": "x", "tasks": [
                {"id": "a", "type": "echo"},
                {"id": "b", "type": "echo", "depends_on": ["a"]},
                {"id": "c", "type": "echo", "depends_on": ["a"]},
                {"id": "d", "type": "echo", "depends_on": ["b", "c"]}
            ]}),
        );
        let a = dispatched(&mut e);
        e.on_result(result(&a[0], true, false, json!(1)), Utc::now());
        let bc = dispatched(&mut e);
        assert_eq!(bc.len(), 2, "the window of 2 is full");

        let report = e.cancel("x", Utc::now()).expect("running");
        assert_eq!(report.status, WorkflowStatus::Cancelled);
        let states: Vec<TaskState> = report.tasks.values().map(|t| t.state).collect();
        use TaskState::{Cancelled, Succeeded};
        assert_eq!(states, vec![Succeeded, Cancelled, Cancelled, Cancelled]);
        let (_, out) = e.take_batch();
        let notice = out
            .iter()
            .find(|(_, m)| m.kind == OutKind::Control)
            .expect("workers are told");
        assert_eq!(notice.1.exchange, "t.control");
        let notice: ControlNotice = serde_json::from_slice(&notice.1.body).unwrap();
        assert_eq!(notice.workflow_id, "x");
        assert!(
            out.iter()
                .any(|(_, m)| m.kind == OutKind::Event && m.routing_key == "workflow.x.cancelled")
        );
        assert!(!e.is_active("x"));
        assert!(e.cancel("x", Utc::now()).is_none(), "only once");

        // A late result changes nothing; the window is free again.
        e.on_result(result(&bc[0], true, false, json!(2)), Utc::now());
        assert_eq!(Metrics::get(&metrics.results_ignored), 1);
        submit(
            &mut e,
            json!({"id": "y", "tasks": [{"id": "p", "type": "echo"}, {"id": "q", "type": "echo"}]}),
        );
        assert_eq!(dispatched(&mut e).len(), 2);
    }

    #[test]
    fn progress_is_announced_once_per_interval_for_changed_workflows() {
        let mut e = engine(10);
        submit(
            &mut e,
            json!({"id": "p", "tasks": [
                {"id": "a", "type": "echo"}, {"id": "b", "type": "echo"},
                {"id": "c", "type": "echo", "depends_on": ["a", "b"]}
            ]}),
        );
        let ab = dispatched(&mut e);
        e.on_result(result(&ab[0], true, false, json!(1)), Utc::now());
        let progress = |e: &mut Engine, at| -> Vec<WorkflowProgress> {
            e.emit_progress(at);
            let (_, out) = e.take_batch();
            out.iter()
                .filter(|(_, m)| m.kind == OutKind::Progress)
                .map(|(_, m)| serde_json::from_slice(&m.body).unwrap())
                .collect()
        };
        assert!(
            progress(&mut e, Utc::now()).is_empty(),
            "a workflow younger than the interval has none"
        );
        let later = Utc::now() + chrono::Duration::milliseconds(2 * PROGRESS_INTERVAL_MS);
        let p = progress(&mut e, later);
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].total, 3);
        let counts: Vec<(TaskState, u32)> = p[0].tasks.clone().into_iter().collect();
        assert_eq!(
            counts,
            vec![
                (TaskState::Pending, 1),
                (TaskState::Running, 1),
                (TaskState::Succeeded, 1)
            ]
        );
        e.on_result(result(&ab[1], true, false, json!(2)), Utc::now());
        assert!(progress(&mut e, later).is_empty(), "once per interval");
        let even_later = later + chrono::Duration::milliseconds(PROGRESS_INTERVAL_MS);
        assert_eq!(progress(&mut e, even_later).len(), 1);
        assert!(progress(&mut e, even_later).is_empty(), "nothing changed");
    }

    #[test]
    fn retry_then_exhaustion_skips_dependents() {
        let mut e = engine(10);
        submit(
            &mut e,
            json!({"id": "r", "tasks": [
                {"id": "a", "type": "fail", "retry": {"max_attempts": 2, "backoff_ms": 100}},
                {"id": "s", "type": "sleep"},
                {"id": "b", "type": "echo", "depends_on": ["a"]}
            ]}),
        );
        let first = dispatched(&mut e);
        assert_eq!(first.len(), 2);
        let now = Utc::now();
        e.on_result(result(&first[0], false, true, Value::Null), now);
        assert!(
            dispatched(&mut e).is_empty(),
            "the retry waits for its due time"
        );
        let due = e.next_due_ms().unwrap();
        let delay = due - now.timestamp_millis();
        assert!(
            (50..=100).contains(&delay),
            "equal jitter of 100 ms: {delay}"
        );
        e.fire_due(due);
        let second = dispatched(&mut e);
        assert_eq!((second[0].task_id.as_str(), second[0].attempt), ("a", 2));
        // A late duplicate of attempt 1 changes nothing.
        e.on_result(result(&first[0], true, false, json!(1)), Utc::now());
        assert_eq!(Metrics::get(&e.metrics.results_ignored), 1);
        e.on_result(result(&second[0], false, true, Value::Null), Utc::now());
        assert!(e.is_active("r"), "waits for the running sibling");
        e.on_result(result(&first[1], true, false, json!("slept")), Utc::now());
        let report = final_report(&mut e);
        assert_eq!(report.status, WorkflowStatus::Failed);
        assert_eq!(report.tasks["a"].state, TaskState::Failed);
        assert_eq!(report.tasks["a"].attempts, 2);
        assert_eq!(report.tasks["s"].state, TaskState::Succeeded);
        assert_eq!(report.tasks["b"].state, TaskState::Skipped);
        assert_eq!(
            report.error.as_deref(),
            Some("task `a` failed after 2 attempts: boom")
        );
    }

    #[test]
    fn non_retryable_failure_is_final() {
        let mut e = engine(10);
        submit(
            &mut e,
            json!({"id": "n", "tasks": [
                {"id": "a", "type": "x", "retry": {"max_attempts": 5}}
            ]}),
        );
        let a = dispatched(&mut e);
        e.on_result(result(&a[0], false, false, Value::Null), Utc::now());
        assert_eq!(final_report(&mut e).tasks["a"].attempts, 1);
    }

    #[test]
    fn window_and_priority_order() {
        let mut e = engine(1);
        submit(
            &mut e,
            json!({"id": "low", "priority": 0, "tasks": [
                {"id": "a", "type": "echo"}, {"id": "b", "type": "echo"}
            ]}),
        );
        let first = dispatched(&mut e);
        assert_eq!(first.len(), 1, "window of one");
        submit(
            &mut e,
            json!({"id": "high", "priority": 9, "tasks": [{"id": "h", "type": "echo"}]}),
        );
        assert!(dispatched(&mut e).is_empty());
        e.on_result(result(&first[0], true, false, json!(null)), Utc::now());
        let next = dispatched(&mut e);
        assert_eq!(
            next[0].workflow_id, "high",
            "priority 9 overtakes the earlier backlog"
        );
    }

    #[test]
    fn workflows_of_one_priority_take_turns() {
        let mut e = engine(4);
        let big: Vec<Value> = (0..100)
            .map(|i| json!({"id": format!("b{i}"), "type": "echo"}))
            .collect();
        submit(&mut e, json!({"id": "big", "tasks": big}));
        submit(
            &mut e,
            json!({"id": "small", "tasks": [
                {"id": "s0", "type": "echo"}, {"id": "s1", "type": "echo"}
            ]}),
        );
        let order: Vec<String> = dispatched(&mut e)
            .into_iter()
            .map(|m| m.workflow_id)
            .collect();
        assert_eq!(
            order,
            ["big", "small", "big", "small"],
            "the later, smaller workflow is not starved"
        );
    }

    #[test]
    fn max_concurrency_caps_a_workflow_and_not_its_neighbours() {
        let mut e = engine(10);
        let tasks: Vec<Value> = (0..6)
            .map(|i| json!({"id": format!("t{i}"), "type": "echo"}))
            .collect();
        submit(
            &mut e,
            json!({"id": "capped", "max_concurrency": 2, "tasks": tasks}),
        );
        submit(
            &mut e,
            json!({"id": "free", "tasks": [{"id": "a", "type": "echo"}, {"id": "b", "type": "echo"}]}),
        );
        let first = dispatched(&mut e);
        let of = |ms: &[TaskMessage], w: &str| ms.iter().filter(|m| m.workflow_id == w).count();
        assert_eq!(of(&first, "capped"), 2, "never more than 2 at once");
        assert_eq!(of(&first, "free"), 2, "the other workflow is not held up");
        assert!(dispatched(&mut e).is_empty());
        let capped: Vec<&TaskMessage> =
            first.iter().filter(|m| m.workflow_id == "capped").collect();
        e.on_result(result(capped[0], true, false, json!(1)), Utc::now());
        let next = dispatched(&mut e);
        assert_eq!(next.len(), 1, "one slot freed, one task");
        assert_eq!(next[0].workflow_id, "capped");
    }

    fn limited(window: usize, limits: &[(&str, u32)]) -> Engine {
        let mut e = engine(window);
        e.set_type_limits(TypeLimits::new(
            limits.iter().map(|(k, n)| (k.to_string(), *n)),
        ));
        e
    }

    #[test]
    fn a_type_limit_holds_across_workflows_and_holds_up_no_other_type() {
        let mut e = limited(100, &[("charge", 2)]);
        let mut tasks: Vec<Value> = (0..4)
            .map(|i| json!({"id": format!("c{i}"), "type": "charge"}))
            .collect();
        tasks.extend((0..2).map(|i| json!({"id": format!("m{i}"), "type": "mail"})));
        submit(&mut e, json!({"id": "w1", "tasks": tasks}));
        submit(
            &mut e,
            json!({"id": "w2", "priority": 5, "tasks": [
                {"id": "c0", "type": "charge"}, {"id": "c1", "type": "charge"}
            ]}),
        );
        let first = dispatched(&mut e);
        let of = |ms: &[TaskMessage], kind: &str| ms.iter().filter(|m| m.kind == kind).count();
        assert_eq!(of(&first, "charge"), 2, "at most 2 charges at once");
        assert_eq!(of(&first, "mail"), 2, "mail is not held up behind charges");
        assert!(
            first
                .iter()
                .filter(|m| m.kind == "charge")
                .all(|m| m.workflow_id == "w2"),
            "the higher priority takes the limited places"
        );
        assert_eq!(
            e.type_usage(),
            vec![TypeUsage {
                kind: "charge".into(),
                running: 2,
                limit: 2,
                waiting: 4
            }]
        );
        assert!(dispatched(&mut e).is_empty());
        let charge = first.iter().find(|m| m.kind == "charge").unwrap();
        e.on_result(result(charge, true, false, json!(1)), Utc::now());
        let next = dispatched(&mut e);
        assert_eq!(next.len(), 1, "one place freed, one charge");
        assert_eq!(next[0].kind, "charge");
    }

    /// Random DAGs of limited and unlimited types, answered in random
    /// order (some cancelled): the limits are never exceeded, and every
    /// workflow ends (nothing parked is forgotten).
    #[test]
    fn type_limits_are_never_exceeded_and_nothing_stalls() {
        for seed in 0..20 {
            fastrand::seed(seed);
            let limits = [("a", 1u32), ("b", 3)];
            let mut e = limited(1 + fastrand::usize(..8), &limits);
            for w in 0..6 {
                let n = 5 + fastrand::usize(..20);
                let tasks: Vec<Value> = (0..n)
                    .map(|i| {
                        let deps: Vec<String> = (0..i)
                            .filter(|_| fastrand::u8(..10) == 0)
                            .map(|d| format!("t{d}"))
                            .collect();
                        let kind = ["a", "b", "c"][fastrand::usize(..3)];
                        let queue = ["q1", "q2"][fastrand::usize(..2)];
                        json!({
                            "id": format!("t{i}"),
                            "type": kind,
                            "queue": queue,
                            "depends_on": deps,
                        })
                    })
                    .collect();
                submit(
                    &mut e,
                    json!({"id": format!("w{w}"), "priority": fastrand::u8(..3), "tasks": tasks}),
                );
            }
            let mut running: Vec<TaskMessage> = Vec::new();
            for _ in 0..10_000 {
                running.extend(dispatched(&mut e));
                for (kind, max) in limits {
                    let now = running.iter().filter(|m| m.kind == kind).count();
                    assert!(
                        now <= max as usize,
                        "seed {seed}: {now} of `{kind}` running"
                    );
                }
                if running.is_empty() {
                    break;
                }
                let m = running.swap_remove(fastrand::usize(..running.len()));
                if fastrand::u8(..50) == 0 {
                    let wf = m.workflow_id.clone();
                    e.cancel(&wf, Utc::now());
                    running.retain(|r| r.workflow_id != wf);
                } else {
                    e.on_result(result(&m, true, false, json!(1)), Utc::now());
                }
            }
            assert_eq!(e.active_workflows(), 0, "seed {seed}: a workflow stalled");
            assert!(e.type_usage().iter().all(|u| u.running == 0));
        }
    }

    #[test]
    fn type_limits_parse() {
        assert_eq!(
            TypeLimits::parse(" payments.charge=5, mail = 20,").unwrap(),
            vec![("payments.charge".into(), 5), ("mail".into(), 20)]
        );
        assert!(TypeLimits::parse("").unwrap().is_empty());
        for bad in ["charge", "charge=0", "=3", "charge=x"] {
            let e = TypeLimits::parse(bad).unwrap_err().to_string();
            assert!(e.contains(bad.trim()), "{bad}: {e}");
        }
    }

    /// A skewed DAG: five leaves listed first (so they become ready
    /// first), and a chain of three behind `root`.
    fn skewed(e: &mut Engine) {
        let mut tasks: Vec<Value> = (0..5)
            .map(|i| json!({"id": format!("leaf{i}"), "type": "echo"}))
            .collect();
        tasks.extend([
            json!({"id": "root", "type": "echo"}),
            json!({"id": "c1", "type": "echo", "depends_on": ["root"]}),
            json!({"id": "c2", "type": "echo", "depends_on": ["c1"]}),
            json!({"id": "c3", "type": "echo", "depends_on": ["c2"]}),
        ]);
        submit(e, json!({"id": "skew", "tasks": tasks}));
    }

    #[test]
    fn critical_path_first_and_fifo_for_comparison() {
        let mut e = engine(1);
        skewed(&mut e);
        let first = dispatched(&mut e);
        assert_eq!(first[0].task_id, "root", "root heads the longest path");

        let mut fifo = engine(1);
        fifo.set_dispatch_order(DispatchOrder::Fifo);
        skewed(&mut fifo);
        assert_eq!(dispatched(&mut fifo)[0].task_id, "leaf0", "first ready");
        // With hints, weight beats length: one 100 s task outranks a chain
        // of three unhinted ones.
        let mut e = engine(1);
        submit(
            &mut e,
            json!({"id": "hints", "tasks": [
                {"id": "a1", "type": "echo"},
                {"id": "a2", "type": "echo", "depends_on": ["a1"]},
                {"id": "a3", "type": "echo", "depends_on": ["a2"]},
                {"id": "slow", "type": "echo", "duration_hint_ms": 100000}
            ]}),
        );
        assert_eq!(dispatched(&mut e)[0].task_id, "slow");
    }

    #[test]
    fn critical_path_ranks_weigh_the_heaviest_way_to_the_end() {
        let specs: Vec<TaskSpec> = serde_json::from_value(json!([
            {"id": "a", "type": "t"},
            {"id": "b", "type": "t", "depends_on": ["a"], "duration_hint_ms": 10},
            {"id": "c", "type": "t", "depends_on": ["a"]},
            {"id": "d", "type": "t", "depends_on": ["b", "c"], "duration_hint_ms": 5}
        ]))
        .unwrap();
        let deps = vec![vec![], vec![0], vec![0], vec![1, 2]];
        let dependents = vec![vec![1, 2], vec![3], vec![3], vec![]];
        assert_eq!(
            critical_path_ranks(&specs, &dependents, &deps),
            vec![16, 15, 6, 5]
        );
    }

    #[test]
    fn missing_template_path_fails_the_task() {
        let mut e = engine(10);
        submit(
            &mut e,
            json!({"id": "m", "tasks": [
                {"id": "a", "type": "echo"},
                {"id": "b", "type": "echo", "depends_on": ["a"], "input": "${a.output.nope}"}
            ]}),
        );
        let a = dispatched(&mut e);
        e.on_result(result(&a[0], true, false, json!({"x": 1})), Utc::now());
        e.dispatch(Utc::now());
        let report = final_report(&mut e);
        assert_eq!(report.status, WorkflowStatus::Failed);
        let err = report.tasks["b"].error.as_ref().unwrap();
        assert!(err.message.contains("has no `nope`"), "{}", err.message);
    }

    #[test]
    fn an_expired_lease_fails_the_attempt_and_a_late_result_is_ignored() {
        let mut e = engine(10);
        submit(
            &mut e,
            json!({"id": "l", "tasks": [
                {"id": "a", "type": "hang", "timeout_ms": 100, "retry": {"max_attempts": 2, "backoff_ms": 10}}
            ]}),
        );
        let start = Utc::now();
        let first = dispatched(&mut e);
        let due = e.next_due_ms().expect("a lease");
        let expected = start.timestamp_millis() + 100 + 1_000;
        assert!(
            (expected..expected + 50).contains(&due),
            "lease ends at timeout + grace"
        );
        e.fire_due(due - 1);
        assert!(dispatched(&mut e).is_empty(), "not before the lease ends");
        e.fire_due(due);
        assert_eq!(Metrics::get(&e.metrics.leases_expired), 1);
        let retry_due = e.next_due_ms().unwrap();
        e.fire_due(retry_due);
        let second = dispatched(&mut e);
        assert_eq!(second[0].attempt, 2);
        // The hung attempt's result arrives after all: ignored.
        e.on_result(result(&first[0], true, false, json!("late")), Utc::now());
        assert_eq!(Metrics::get(&e.metrics.results_ignored), 1);
        e.on_result(result(&second[0], true, false, json!("ok")), Utc::now());
        let report = final_report(&mut e);
        assert_eq!(report.status, WorkflowStatus::Succeeded);
        assert_eq!(report.tasks["a"].output, Some(json!("ok")));
        assert_eq!(report.tasks["a"].attempts, 2);
    }
}
