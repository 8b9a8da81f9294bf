//! The batch contract between the engine and the stores: what one batch
//! changes ([`Op`]), the messages it causes ([`OutMsg`], written to the
//! outbox in the same transaction), and what a store gives back to resume
//! from ([`Recovered`]). The engine produces these and the stores persist
//! them; neither depends on the other.

use crate::attempt_key::AttemptKey;
use chrono::{DateTime, Utc};
use std::{collections::HashMap, sync::Arc};
use warren_shared::wire::{
    CatchUp, Overlap, ResultStatus, SkipReason, TaskError, TaskState, WorkflowStatus,
};

/// Where to send a workflow's outcome: a producer's `reply_to`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplyTo {
    pub queue: String,
    pub correlation_id: Option<String>,
}

/// What kind of message an outbox row is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutKind {
    /// A task message to `{ns}.tasks`.
    Task,
    /// A report to a producer's `reply_to` queue.
    Reply,
    /// The worker registry, to a producer's `reply_to` queue.
    WorkersReply,
    /// What is paused (the answer to `pause` and `resume`), to a
    /// producer's `reply_to` queue.
    PausesReply,
    /// A schedule (the answer to a `schedule.*` request), to a producer's
    /// `reply_to` queue.
    ScheduleReply,
    /// A page of schedules (the answer to `schedule.list`).
    SchedulesReply,
    /// What a `prune` deleted.
    PruneReply,
    /// A schedule's firing: its workflow request, to `{ns}.workflows`.
    Firing,
    /// A state change on `{ns}.events`.
    Event,
    /// A message dead-lettered to `{ns}.dead`.
    Dead,
    /// A notice to every worker on `{ns}.control`.
    Control,
    /// A progress event on `{ns}.events`: never stored (a lost one is
    /// replaced by the next), published with the batch.
    Progress,
}

impl OutKind {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            OutKind::Task => "task",
            OutKind::Reply => "reply",
            OutKind::WorkersReply => "workers_reply",
            OutKind::PausesReply => "pauses_reply",
            OutKind::ScheduleReply => "schedule_reply",
            OutKind::SchedulesReply => "schedules_reply",
            OutKind::PruneReply => "prune_reply",
            OutKind::Firing => "firing",
            OutKind::Event => "event",
            OutKind::Dead => "dead",
            OutKind::Control => "control",
            OutKind::Progress => "progress",
        }
    }
    pub(crate) fn parse(s: &str) -> Option<OutKind> {
        Some(match s {
            "task" => OutKind::Task,
            "reply" => OutKind::Reply,
            "workers_reply" => OutKind::WorkersReply,
            "pauses_reply" => OutKind::PausesReply,
            "schedule_reply" => OutKind::ScheduleReply,
            "schedules_reply" => OutKind::SchedulesReply,
            "prune_reply" => OutKind::PruneReply,
            "firing" => OutKind::Firing,
            "event" => OutKind::Event,
            "dead" => OutKind::Dead,
            "control" => OutKind::Control,
            _ => return None,
        })
    }
}

/// A message waiting in the outbox to be published.
#[derive(Debug, Clone, PartialEq)]
pub struct OutMsg {
    pub kind: OutKind,
    pub exchange: String,
    pub routing_key: String,
    pub message_id: Option<String>,
    pub correlation_id: Option<String>,
    pub priority: Option<u8>,
    /// Extra string headers (the dead-letter reason).
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The partition whose owner publishes it again after a crash: its
    /// workflow's, or (messages of no workflow) one the emitting scheduler
    /// owns. A task message's `reply_to` names this partition's queue when
    /// the store is partitioned. Always 0 on SQLite.
    pub part: u16,
}

/// A task's durable state. Tasks without a row are pending.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskRow {
    pub workflow_id: Arc<str>,
    pub task_id: String,
    pub state: TaskState,
    /// Why a `skipped` task was skipped (stored in its state word,
    /// `skipped:condition`: see `store/rows.rs`).
    pub skip_reason: Option<SkipReason>,
    pub attempt: u32,
    pub due_at_ms: Option<i64>,
    pub output: Option<String>,
    pub error: Option<TaskError>,
    pub worker: Option<String>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
}

/// One change inside a batch transaction.
#[derive(Debug, Clone)]
pub enum Op {
    /// A new workflow: accepted (`definition` set; `scheduled` and
    /// `queued` ones with their report too, saying when they start or how
    /// many tasks they have) or rejected (`report` only).
    InsertWorkflow {
        id: Arc<str>,
        seq: u64,
        name: Option<String>,
        priority: u8,
        status: WorkflowStatus,
        definition: Option<Arc<[u8]>>,
        report: Option<String>,
        created_at: DateTime<Utc>,
    },
    /// A delayed workflow fell due without room in the working set: it
    /// waits in line, `queued` with its queued report.
    QueueWorkflow {
        id: Arc<str>,
        report: String,
    },
    /// A scheduled or queued workflow starts: `running` from now
    /// (`created_at` becomes its start), its report cleared.
    StartWorkflow {
        id: Arc<str>,
        started_at: DateTime<Utc>,
    },
    /// A workflow reached a final state.
    FinishWorkflow {
        id: Arc<str>,
        status: WorkflowStatus,
        report: String,
        finished_at: DateTime<Utc>,
    },
    Task(TaskRow),
    /// A committed result; the primary key makes committing one twice fail.
    /// With who answered the attempt and when: a task's log of attempts.
    Result {
        workflow_id: Arc<str>,
        task_id: String,
        attempt: u32,
        status: ResultStatus,
        worker: Option<String>,
        started_at: Option<DateTime<Utc>>,
        finished_at: Option<DateTime<Utc>>,
    },
    Outbox(u64, Arc<OutMsg>),
    OutboxDone(u64),
    /// Where a workflow's outcome goes: for `run` 0, a submitter's
    /// `reply_to`, answered at the end of every run; else the `reply_to`
    /// of the `rerun` that started run `run`, answered at its end only.
    AddReply {
        workflow_id: Arc<str>,
        reply_to: String,
        correlation_id: Option<String>,
        run: u32,
    },
    /// A run ended: its rerun's `reply_to` rows (run > 0) go; the
    /// submitters' stay, for the runs a later `rerun` starts.
    DropReplies(Arc<str>),
    /// An ended workflow runs again (`rerun`): its run row is added, the
    /// rows and results of the tasks it runs again (`reset`, their mapped
    /// instances included) deleted, and the workflow is `running` again,
    /// without a final report.
    Rerun {
        row: RunRow,
        reset: Vec<String>,
    },
    /// Partitioned stores: the places of each limited type that each owned
    /// partition holds and still wants.
    TypePlaces(Vec<TypePlaceRow>),
    /// A new schedule, with the workflow request its firings submit.
    InsertSchedule {
        row: ScheduleRow,
        workflow: Vec<u8>,
    },
    /// A schedule's state after a firing, a pause or a resume (the last
    /// of a batch wins).
    ScheduleState {
        id: Arc<str>,
        state: ScheduleState,
    },
    DeleteSchedule(Arc<str>),
    /// Retention: deletes at most `limit` workflows that ended before
    /// `before` (succeeded, failed, cancelled or rejected), oldest first,
    /// with their tasks, results, replies and runs.
    Prune {
        before: DateTime<Utc>,
        limit: u32,
    },
}

/// A stored schedule, all but the workflow its firings submit.
#[derive(Debug, Clone, PartialEq)]
pub struct ScheduleRow {
    pub id: Arc<str>,
    pub cron: Option<String>,
    pub every_ms: Option<u64>,
    pub timezone: String,
    pub overlap: Overlap,
    pub catch_up: CatchUp,
    /// Its creation (an `every_ms` schedule's anchor).
    pub created_at: DateTime<Utc>,
    pub state: ScheduleState,
}

/// What changes of a schedule as it fires, pauses and resumes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ScheduleState {
    pub paused: bool,
    /// Its next firing; `None` while paused or when it never fires again.
    pub next_fire_at: Option<DateTime<Utc>>,
    /// Its last firing, submitted or skipped.
    pub last_fire_at: Option<DateTime<Utc>>,
    /// The workflow its last submitted firing started.
    pub last_workflow_id: Option<String>,
    /// Whether the last firing was skipped.
    pub last_skipped: bool,
    /// Firings that submitted a workflow, and firings skipped.
    pub fired: u64,
    pub skipped: u64,
}

/// A workflow that was running when the store was last closed.
#[derive(Debug, Clone)]
pub struct RunningWorkflow {
    pub id: String,
    pub seq: u64,
    pub definition: Vec<u8>,
    pub created_at: DateTime<Utc>,
    pub tasks: Vec<TaskRow>,
    pub replies: Vec<(String, Option<String>)>,
    /// Its runs after the first, oldest first (empty unless re-run).
    pub runs: Vec<RunRow>,
}

/// Run `run` (from 2) of a workflow, started by a `rerun`.
#[derive(Debug, Clone, PartialEq)]
pub struct RunRow {
    pub workflow_id: Arc<str>,
    pub run: u32,
    pub rerun_id: Option<String>,
    pub started_at: DateTime<Utc>,
    /// A [`RunRecord`] as JSON.
    pub record: String,
}

/// What a run's row records: what the rerun asked, and how the run before
/// it ended, with the earlier outcome of each task it runs again.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RunRecord {
    /// The tasks the rerun named (empty: every one that did not succeed).
    #[serde(default)]
    pub from: Vec<String>,
    /// The run before, as it ended.
    pub previous: warren_shared::wire::RunSummary,
    /// How each task that runs again ended in the run before (those that
    /// had ended).
    #[serde(default)]
    pub tasks: std::collections::BTreeMap<String, warren_shared::wire::EarlierOutcome>,
}

/// An ended (or any) workflow as stored, whole: what a `rerun` starts from.
#[derive(Debug, Clone)]
pub struct StoredWorkflow {
    /// Its status word (`succeeded`, `failed`, ...).
    pub status: String,
    /// Its final report, once it ended.
    pub report: Option<String>,
    pub finished_at: Option<DateTime<Utc>>,
    /// Its definition (empty for a rejected one), rows, submitters'
    /// replies and runs.
    pub workflow: RunningWorkflow,
}

impl ReplyTo {
    /// The stored `(reply_to, correlation_id)` rows of a workflow.
    pub fn from_rows(rows: Vec<(String, Option<String>)>) -> Vec<ReplyTo> {
        rows.into_iter()
            .map(|(queue, correlation_id)| ReplyTo {
                queue,
                correlation_id,
            })
            .collect()
    }
}

/// A workflow that was waiting for its start (`scheduled`).
#[derive(Debug, Clone)]
pub struct ScheduledWorkflow {
    pub id: String,
    pub name: Option<String>,
    /// When it starts (ms since the epoch).
    pub due_ms: i64,
    pub replies: Vec<(String, Option<String>)>,
}

/// A workflow that was waiting for room in the working set (`queued`):
/// what the engine keeps of it until it starts (its definition stays in
/// the store).
#[derive(Debug, Clone)]
pub struct QueuedWorkflow {
    pub id: String,
    pub name: Option<String>,
    pub priority: u8,
    /// Its place among the queued ones of its priority.
    pub seq: u64,
    /// Its tasks and the bytes of its definition: what starting it costs
    /// the memory budget.
    pub tasks: usize,
    pub bytes: usize,
    pub created_at: DateTime<Utc>,
    pub replies: Vec<(String, Option<String>)>,
}

/// Everything the scheduler needs to resume.
#[derive(Debug)]
pub struct Recovered {
    pub running: Vec<RunningWorkflow>,
    /// Workflows waiting for their start.
    pub scheduled: Vec<ScheduledWorkflow>,
    /// Workflows waiting for room in the working set.
    pub queued: Vec<QueuedWorkflow>,
    pub outbox: Vec<(u64, Arc<OutMsg>)>,
    pub next_outbox_seq: u64,
    pub next_workflow_seq: u64,
    /// Partitioned stores: places held per limited type by the owned
    /// partitions.
    pub type_places: HashMap<String, u32>,
    /// The key of attempt tokens (`attempt_key.rs`), created with the store
    /// and the same for every scheduler sharing it.
    pub attempt_key: AttemptKey,
    /// The schedules of the owned partitions.
    pub schedules: Vec<ScheduleRow>,
}

impl Recovered {
    /// Nothing to resume yet, under the store's `attempt_key`.
    pub fn new(attempt_key: AttemptKey) -> Recovered {
        Recovered {
            running: Vec::new(),
            scheduled: Vec::new(),
            queued: Vec::new(),
            outbox: Vec::new(),
            next_outbox_seq: 0,
            next_workflow_seq: 0,
            type_places: HashMap::new(),
            attempt_key,
            schedules: Vec::new(),
        }
    }
}

/// A workflow known to the store, as looked up by id.
#[derive(Debug, Clone, PartialEq)]
pub struct Known {
    pub status: String,
    /// The final report, once the workflow has ended.
    pub report: Option<String>,
}

/// The places a partition holds of one limited task type and how many more
/// it wants (partitioned stores).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypePlaceRow {
    /// The task type.
    pub kind: String,
    pub part: u16,
    pub held: u32,
    pub wanted: u32,
}

/// A stored row the engine cannot read back (a definition that no longer
/// validates, an output that is not JSON).
#[derive(Debug, Clone, thiserror::Error)]
#[error("state store holds an unreadable row: {0}")]
pub struct Unreadable(pub String);
