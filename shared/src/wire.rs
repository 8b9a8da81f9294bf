//! Wire format v2: every JSON body Warren sends or accepts.
//!
//! docs/protocol.md is the contract for other languages; these types are its
//! single Rust definition. Requests are strict (`deny_unknown_fields`) so a
//! misspelt field is an error rather than a silently ignored setting;
//! messages Warren itself emits are read leniently so that adding a field in
//! a later minor version does not break older readers.

use chrono::{DateTime, Utc};
use request::default_max_attempts;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

mod pauses;
mod prune;
mod request;
mod runs;
mod schedules;
pub use pauses::{PauseEntry, Paused, PausesReport};
pub use prune::PruneReport;
pub use request::{
    DEFAULT_QUEUE, OnFailure, RetryPolicy, RunIf, SkipReason, TaskSpec, WorkflowRequest,
};
pub use runs::{AttemptLog, EarlierOutcome, RunSummary};
pub use schedules::{CatchUp, Overlap, ScheduleInfo, ScheduleReport, ScheduleSpec, SchedulesPage};

/// Protocol version written to the `warren-protocol` header: 2 since task
/// messages carry a `token` that results must echo, and workers reach the
/// results and their own pools' queues through exchanges only
/// (docs/protocol.md, "Versioning").
pub const PROTOCOL_VERSION: i64 = 2;
/// Header carrying [`PROTOCOL_VERSION`] on everything Warren publishes.
pub const HEADER_PROTOCOL: &str = "warren-protocol";
/// Header on a dead-lettered message saying why it could not be processed.
pub const HEADER_DEAD_REASON: &str = "warren-dead-reason";
/// Header on a dead-lettered message naming the queue it was taken from.
pub const HEADER_DEAD_QUEUE: &str = "warren-dead-queue";
/// Header on a task message a worker re-published after a redelivery:
/// how many times the task has been delivered. See `max_deliveries`.
pub const HEADER_DELIVERIES: &str = "warren-deliveries";
/// Marks a request a scheduler forwarded to the queue of the partition that
/// owns its workflow (anything else on a partition queue is a result).
pub const HEADER_FORWARDED: &str = "warren-forwarded";
/// Content type of every Warren body.
pub const CONTENT_TYPE: &str = "application/json";

/// AMQP `type` property of task messages.
pub const TYPE_TASK: &str = "warren.task";
/// AMQP `type` property of task results.
pub const TYPE_RESULT: &str = "warren.result";
/// AMQP `type` property of a message of several task results: a JSON array
/// of them (docs/protocol.md, Task result).
pub const TYPE_RESULTS: &str = "warren.results";
/// Most results one `warren.results` message may carry; the scheduler
/// dead-letters a larger array whole.
pub const MAX_RESULTS_PER_MESSAGE: usize = 1_000;
/// AMQP `type` property of workflow reports (outcomes, status replies, events).
pub const TYPE_REPORT: &str = "warren.report";
/// AMQP `type` property of progress events.
pub const TYPE_PROGRESS: &str = "warren.progress";
/// AMQP `type` property of notices to workers on `{ns}.control`.
pub const TYPE_CONTROL: &str = "warren.control";
/// AMQP `type` property of worker heartbeats.
pub const TYPE_HEARTBEAT: &str = "warren.heartbeat";
/// AMQP `type` property of the answer to a `workers` control request.
pub const TYPE_WORKERS: &str = "warren.workers";
/// AMQP `type` property of the answer to a `pause` or `resume` control
/// request.
pub const TYPE_PAUSES: &str = "warren.pauses";
/// AMQP `type` property of the answer to a `schedule.*` control request
/// about one schedule.
pub const TYPE_SCHEDULE: &str = "warren.schedule";
/// AMQP `type` property of the answer to `schedule.list`.
pub const TYPE_SCHEDULES: &str = "warren.schedules";
/// AMQP `type` property of the answer to `prune`.
pub const TYPE_PRUNED: &str = "warren.pruned";

/// A control request on `{ns}.workflows`: recognised by its `control` field.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ControlRequest {
    /// What is asked: `status`, `cancel`, `workers`, `pause`, `resume`,
    /// or one of the `schedule.*` requests.
    pub control: ControlKind,
    /// Required by `status` and `cancel`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub workflow_id: String,
    /// `status` only: answer with this one task of the workflow, its
    /// output in full (as `tasks`, the only entry), instead of the whole
    /// report.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_id: Option<String>,
    /// `pause` and `resume`: the task queue to pause or resume (exactly
    /// one of `queue` and `type`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<String>,
    /// `pause` and `resume`: the task type to pause or resume.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// `schedule.create`: the schedule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<Box<ScheduleSpec>>,
    /// `schedule.get`, `pause`, `resume`, `trigger` and `delete`: which.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule_id: Option<String>,
    /// `schedule.list`: start after this schedule id (the previous page's
    /// `next_after`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
    /// `schedule.list`: most schedules in the answer (default and most
    /// 1,000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
    /// `rerun`: the tasks to run again, with everything downstream of
    /// them; absent: every failed, skipped or cancelled task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<Vec<String>>,
    /// `rerun`: makes the request idempotent: a rerun of a workflow that
    /// already started a run with this id starts none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rerun_id: Option<String>,
    /// `prune`: delete the workflows that ended longer ago than this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub older_than_ms: Option<u64>,
}

impl ControlRequest {
    /// A request of `control` about workflow `workflow_id` (empty for
    /// none), every other field unset.
    pub fn new(control: ControlKind, workflow_id: impl Into<String>) -> ControlRequest {
        ControlRequest {
            control,
            workflow_id: workflow_id.into(),
            task_id: None,
            queue: None,
            kind: None,
            schedule: None,
            schedule_id: None,
            after: None,
            limit: None,
            from: None,
            rerun_id: None,
            older_than_ms: None,
        }
    }
}

/// What a worker announces about itself, every `interval_ms`, on
/// `{ns}.events` with routing key `worker.{worker_id}.heartbeat`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct WorkerHeartbeat {
    /// The worker's id: the `{worker_id}` of the routing key, and its key
    /// in the scheduler's registry.
    pub worker_id: String,
    /// The machine it runs on (empty when not sent).
    #[serde(default)]
    pub host: String,
    /// Its process id (0 when not sent).
    #[serde(default)]
    pub pid: u32,
    /// The task queues (pools) it consumes, e.g. `default`.
    pub queues: Vec<String>,
    /// Most tasks it runs at once.
    pub concurrency: u32,
    /// Tasks running at the moment.
    pub in_flight: u32,
    /// The worker's software and version, e.g. `warren-worker 0.1.0`.
    #[serde(default)]
    pub version: String,
    /// Milliseconds until the next heartbeat; the scheduler marks the
    /// worker lost after three intervals without one.
    pub interval_ms: u64,
    /// `running`, or `stopping` in the last heartbeat of a worker that shuts
    /// down.
    pub state: WorkerState,
    /// When the worker started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<DateTime<Utc>>,
    /// When this heartbeat was sent.
    pub sent_at: DateTime<Utc>,
}

/// A worker's state, as announced or as the scheduler sees it.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum WorkerState {
    /// Taking tasks and sending heartbeats.
    Running,
    /// Announced: shutting down (its last heartbeat).
    Stopping,
    /// Seen by the scheduler: no heartbeat for three intervals.
    Lost,
}

impl WorkerState {
    /// The wire word (`running`, `stopping`, `lost`).
    pub fn as_str(self) -> &'static str {
        match self {
            WorkerState::Running => "running",
            WorkerState::Stopping => "stopping",
            WorkerState::Lost => "lost",
        }
    }
}

/// The scheduler's worker registry: the answer to a `workers` control
/// request.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct WorkersReport {
    /// Every worker the scheduler has heard from.
    pub workers: Vec<WorkerEntry>,
}

/// One worker in a [`WorkersReport`]: its last heartbeat, and its state as
/// the scheduler sees it now.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct WorkerEntry {
    /// Its last heartbeat, fields inline, with `state` as the scheduler
    /// sees it now (`lost` after three intervals without a heartbeat).
    #[serde(flatten)]
    pub heartbeat: WorkerHeartbeat,
    /// When the scheduler received the last heartbeat.
    pub last_seen: DateTime<Utc>,
}

/// What a control request asks for.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ControlKind {
    /// Reply (to `reply_to`) with the workflow's current report.
    Status,
    /// Cancel the workflow, then reply with its report.
    Cancel,
    /// Reply with the worker registry ([`WorkersReport`]); `workflow_id`
    /// is not needed.
    Workers,
    /// Hold the dispatch of a task queue's or a task type's tasks (`queue`
    /// or `type`), then reply with what is paused ([`PausesReport`]).
    Pause,
    /// Release what a `pause` held, then reply with what is paused.
    Resume,
    /// Store a new schedule (`schedule`), then reply with it
    /// ([`ScheduleReport`]).
    #[serde(rename = "schedule.create")]
    ScheduleCreate,
    /// Reply with a schedule (`schedule_id`), its workflow included.
    #[serde(rename = "schedule.get")]
    ScheduleGet,
    /// Reply with a page of schedules ([`SchedulesPage`]; `after`, `limit`).
    #[serde(rename = "schedule.list")]
    ScheduleList,
    /// Hold a schedule's firings.
    #[serde(rename = "schedule.pause")]
    SchedulePause,
    /// Let a paused schedule fire again, from its next firing after now.
    #[serde(rename = "schedule.resume")]
    ScheduleResume,
    /// Fire a schedule now, once, besides its own firings.
    #[serde(rename = "schedule.trigger")]
    ScheduleTrigger,
    /// Delete a schedule (the workflows it started run on).
    #[serde(rename = "schedule.delete")]
    ScheduleDelete,
    /// Start a new run of an ended workflow (`from`, `rerun_id`); its
    /// outcome goes to `reply_to` and to the workflow's submitters.
    Rerun,
    /// Delete the workflows that ended longer ago than `older_than_ms`
    /// now, as retention would; reply with what was deleted
    /// ([`PruneReport`]).
    Prune,
}

impl ControlKind {
    /// Whether this is one of the `schedule.*` requests.
    pub fn is_schedule(self) -> bool {
        matches!(
            self,
            ControlKind::ScheduleCreate
                | ControlKind::ScheduleGet
                | ControlKind::ScheduleList
                | ControlKind::SchedulePause
                | ControlKind::ScheduleResume
                | ControlKind::ScheduleTrigger
                | ControlKind::ScheduleDelete
        )
    }
}

/// A notice the scheduler broadcasts to every worker on `{ns}.control`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ControlNotice {
    /// `cancel`: stop running this workflow's tasks, and do not start any.
    pub control: NoticeKind,
    /// The workflow concerned.
    pub workflow_id: String,
    /// The run cancelled (absent: 1): a task message of a later run (a
    /// `rerun`) is not the cancelled run's and runs.
    #[serde(default = "first_run", skip_serializing_if = "is_first_run")]
    pub run: u32,
}

/// What a [`ControlNotice`] tells workers.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum NoticeKind {
    /// The workflow has ended cancelled: stop its running tasks, do not
    /// run its task messages still queued, and publish no result for them.
    Cancel,
}

/// A task message, published by the scheduler to `{ns}.tasks` with the
/// task's queue as routing key. `message_id` is `{workflow}/{task}/{attempt}`
/// (the same again in a later run, which `run` tells apart).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TaskMessage {
    /// The workflow the task belongs to.
    pub workflow_id: String,
    /// The task's id in its workflow.
    pub task_id: String,
    /// 1 for the first attempt.
    pub attempt: u32,
    /// The task's `type`: the handler to run.
    #[serde(rename = "type")]
    pub kind: String,
    /// Input with every template already substituted.
    pub input: Value,
    /// Time one attempt may take; absent when the task has none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// Attempts the scheduler will make in all.
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// This attempt's token: unguessable, known only to the scheduler and
    /// to whoever received the message; a result is applied only if it
    /// carries it back. Empty from a scheduler older than protocol 2.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub token: String,
    /// The workflow's run (absent: 1): each `rerun` starts the next, whose
    /// attempts count from 1 again.
    #[serde(default = "first_run", skip_serializing_if = "is_first_run")]
    pub run: u32,
}

impl TaskMessage {
    /// The AMQP `message_id` of this attempt.
    pub fn message_id(&self) -> String {
        format!("{}/{}/{}", self.workflow_id, self.task_id, self.attempt)
    }

    /// A result of this attempt by `worker`, with the attempt's ids and
    /// token copied: `status`, and nothing else set yet.
    pub fn result(&self, status: ResultStatus, worker: &str) -> TaskResult {
        TaskResult {
            workflow_id: self.workflow_id.clone(),
            task_id: self.task_id.clone(),
            attempt: self.attempt,
            token: self.token.clone(),
            status,
            output: None,
            error: None,
            worker: worker.to_owned(),
            started_at: None,
            finished_at: None,
        }
    }
}

/// Whether an attempt succeeded.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ResultStatus {
    /// The handler returned; `output` is its output.
    Succeeded,
    /// The handler failed; `error` says why.
    Failed,
}

impl ResultStatus {
    /// The wire word (`succeeded`, `failed`).
    pub fn as_str(self) -> &'static str {
        match self {
            ResultStatus::Succeeded => "succeeded",
            ResultStatus::Failed => "failed",
        }
    }
}

/// Why an attempt failed, and whether trying again may help.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TaskError {
    /// What went wrong, shown in reports.
    pub message: String,
    /// `true` lets the scheduler retry if the task's policy has attempts
    /// left (default `false`).
    #[serde(default)]
    pub retryable: bool,
}

/// A task result, published by a worker to `{ns}.results`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TaskResult {
    /// Copied from the task message.
    pub workflow_id: String,
    /// Copied from the task message.
    pub task_id: String,
    /// Copied from the task message.
    pub attempt: u32,
    /// Copied from the task message: without the attempt's token a result
    /// is not applied (dead-lettered, counted).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub token: String,
    /// `succeeded` or `failed`.
    pub status: ResultStatus,
    /// Any JSON; `null` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<Value>,
    /// Why the attempt failed; expected with `failed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<TaskError>,
    /// The worker that ran it, shown in reports (empty when not sent).
    #[serde(default)]
    pub worker: String,
    /// When the handler started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<DateTime<Utc>>,
    /// When the handler finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<DateTime<Utc>>,
}

/// A workflow's state, as reported.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum WorkflowStatus {
    /// Accepted with a start time ahead (`not_before`, `delay_ms`): kept
    /// in the store, started when due; the report's `not_before` says when.
    Scheduled,
    /// Accepted and committed, waiting for room in the scheduler's working
    /// set (its memory budget); started in priority order, then in order
    /// of arrival. `task_counts` counts its tasks, all `pending`.
    Queued,
    /// Accepted; tasks are being dispatched.
    Running,
    /// Every task succeeded.
    Succeeded,
    /// A task failed for good; `error` says which and why.
    Failed,
    /// Refused at submission; `errors` says why.
    Rejected,
    /// Stopped by a cancel request.
    Cancelled,
    /// Only in a status reply: the scheduler has no workflow with that id.
    NotFound,
}

impl WorkflowStatus {
    /// True once nothing about the workflow will change any more.
    pub fn is_final(self) -> bool {
        !matches!(
            self,
            WorkflowStatus::Running | WorkflowStatus::Scheduled | WorkflowStatus::Queued
        )
    }

    /// The word used on the wire and in event routing keys.
    pub fn as_str(self) -> &'static str {
        match self {
            WorkflowStatus::Scheduled => "scheduled",
            WorkflowStatus::Queued => "queued",
            WorkflowStatus::Running => "running",
            WorkflowStatus::Succeeded => "succeeded",
            WorkflowStatus::Failed => "failed",
            WorkflowStatus::Rejected => "rejected",
            WorkflowStatus::Cancelled => "cancelled",
            WorkflowStatus::NotFound => "not_found",
        }
    }

    /// The status a word of [`WorkflowStatus::as_str`] names.
    pub fn parse(s: &str) -> Option<WorkflowStatus> {
        Some(match s {
            "scheduled" => WorkflowStatus::Scheduled,
            "queued" => WorkflowStatus::Queued,
            "running" => WorkflowStatus::Running,
            "succeeded" => WorkflowStatus::Succeeded,
            "failed" => WorkflowStatus::Failed,
            "rejected" => WorkflowStatus::Rejected,
            "cancelled" => WorkflowStatus::Cancelled,
            "not_found" => WorkflowStatus::NotFound,
            _ => return None,
        })
    }
}

/// A task's state, as reported.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum TaskState {
    /// Waiting for dependencies.
    Pending,
    /// Dependencies met; waiting in the scheduler for a dispatch slot.
    Ready,
    /// Dispatched to its queue; the attempt's result has not arrived.
    Running,
    /// An attempt failed; the next one is due at a set time.
    Retrying,
    /// Dependencies met; waiting for its `delay_ms` before it is ready.
    Delayed,
    /// A mapped task (`map`) whose instances (`task[0]`, `task[1]`, ...)
    /// run.
    Mapped,
    /// An attempt succeeded.
    Succeeded,
    /// Attempts exhausted, or a non-retryable error.
    Failed,
    /// Not run because the workflow failed first.
    Skipped,
    /// Not run, or stopped while running, because the workflow was
    /// cancelled.
    Cancelled,
}

impl TaskState {
    /// True once the task will not run again.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            TaskState::Succeeded | TaskState::Failed | TaskState::Skipped | TaskState::Cancelled
        )
    }

    /// The word used on the wire and in the store.
    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::Pending => "pending",
            TaskState::Ready => "ready",
            TaskState::Running => "running",
            TaskState::Retrying => "retrying",
            TaskState::Delayed => "delayed",
            TaskState::Mapped => "mapped",
            TaskState::Succeeded => "succeeded",
            TaskState::Failed => "failed",
            TaskState::Skipped => "skipped",
            TaskState::Cancelled => "cancelled",
        }
    }

    /// Inverse of [`TaskState::as_str`].
    pub fn parse(s: &str) -> Option<TaskState> {
        Some(match s {
            "pending" => TaskState::Pending,
            "ready" => TaskState::Ready,
            "running" => TaskState::Running,
            "retrying" => TaskState::Retrying,
            "delayed" => TaskState::Delayed,
            "mapped" => TaskState::Mapped,
            "succeeded" => TaskState::Succeeded,
            "failed" => TaskState::Failed,
            "skipped" => TaskState::Skipped,
            "cancelled" => TaskState::Cancelled,
            _ => return None,
        })
    }
}

/// One validation problem of a rejected request.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Rejection {
    /// Stable machine-readable code (`cycle`, `unknown_dependency`, ...).
    pub code: String,
    /// Human-readable explanation.
    pub message: String,
    /// The task concerned, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<String>,
}

/// One task in a [`WorkflowReport`].
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TaskReport {
    /// Where the task stands.
    pub state: TaskState,
    /// Attempts started so far.
    pub attempts: u32,
    /// The task's dependencies, as requested (absent when none): enough to
    /// draw the DAG from a report.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<String>,
    /// The output of its successful attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<Value>,
    /// Set, to the output's size in bytes of JSON, when the output was left
    /// out of this report to keep the report under the scheduler's
    /// `max_report_bytes`; read it alone with a `status` request naming
    /// the task (`task_id`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_elided: Option<u64>,
    /// Why its last attempt failed (none once it succeeded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<TaskError>,
    /// Why it was skipped (state `skipped` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skip_reason: Option<SkipReason>,
    /// The worker that answered its last attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<String>,
    /// When its last attempt started (as its worker reported, else when
    /// it was dispatched).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<DateTime<Utc>>,
    /// When its last attempt ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<DateTime<Utc>>,
    /// How it ended in earlier runs, oldest first (a task re-run by a
    /// `rerun`); absent when it never was.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<EarlierOutcome>,
    /// Its attempts of this run whose result was committed, in order (an
    /// attempt whose lease expired has none): in the answer about one
    /// task of the HTTP endpoint only; absent elsewhere.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attempt_log: Vec<AttemptLog>,
    /// Its input with the templates substituted, as its task messages
    /// carry it: in a single task's answer only (a `status` request with
    /// `task_id` of a running workflow, or the HTTP endpoint's); absent
    /// elsewhere, and while a source it reads has no output yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<Value>,
}

/// A workflow's state: the outcome sent to `reply_to` and the events
/// exchange when it ends, and the reply to a status request at any time.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct WorkflowReport {
    /// The workflow's id.
    pub workflow_id: String,
    /// Its name, if the request gave one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Where it stands.
    pub status: WorkflowStatus,
    /// Every task, by id (but those counted in `tasks_elided`).
    #[serde(default)]
    pub tasks: BTreeMap<String, TaskReport>,
    /// Tasks left out of `tasks` to keep the report under the scheduler's
    /// `max_report_bytes`, even with every output elided (a workflow of
    /// very many tasks); each can be read alone with a `status` request
    /// naming it. Absent when none.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub tasks_elided: u32,
    /// When tasks are left out (`tasks_elided`): every task of the
    /// workflow counted by state, listed or not. Absent otherwise (count
    /// `tasks` then).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub task_counts: BTreeMap<TaskState, u32>,
    /// For `rejected`: every validation problem.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<Rejection>,
    /// For `failed`: which task failed and why, in one line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// For `scheduled`: when it starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_before: Option<DateTime<Utc>>,
    /// When the scheduler received it (a delayed workflow: when it
    /// started).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<DateTime<Utc>>,
    /// When it ended; absent while it runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<DateTime<Utc>>,
    /// Which run this is: 1 for the submission's, each `rerun` the next.
    #[serde(default = "first_run")]
    pub run: u32,
    /// Every run, once it was re-run (the last is this one); absent
    /// before.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub runs: Vec<RunSummary>,
}

fn first_run() -> u32 {
    1
}

fn is_first_run(run: &u32) -> bool {
    *run == 1
}

/// A running workflow's counts of tasks by state, published now and then on
/// `{ns}.events` with routing key `workflow.{id}.progress`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct WorkflowProgress {
    /// The workflow's id.
    pub workflow_id: String,
    /// Its name, if the request gave one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Always `running`: a workflow that ends gets its final report instead.
    pub status: WorkflowStatus,
    /// Tasks in the workflow.
    pub total: u32,
    /// Tasks by state; states with no task are left out.
    pub tasks: BTreeMap<TaskState, u32>,
    /// When the scheduler received it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<DateTime<Utc>>,
}

/// One line of the workflow list (`GET /api/workflows` of the scheduler's
/// HTTP endpoint).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkflowSummary {
    /// The workflow's id.
    pub workflow_id: String,
    /// Its name, if the request gave one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Its status word (`running`, `succeeded`, ...).
    pub status: String,
    /// Its priority, 0..=9.
    pub priority: i64,
    /// When the scheduler received it, RFC 3339 in UTC.
    pub created_at: String,
    /// When it ended, RFC 3339 in UTC; absent while it runs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    /// For `scheduled`: when it starts, RFC 3339 in UTC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_before: Option<String>,
}

impl WorkflowReport {
    /// The reply to a status request for an id the scheduler does not know.
    pub fn not_found(workflow_id: &str) -> WorkflowReport {
        WorkflowReport {
            workflow_id: workflow_id.to_owned(),
            name: None,
            status: WorkflowStatus::NotFound,
            tasks: BTreeMap::new(),
            tasks_elided: 0,
            task_counts: BTreeMap::new(),
            errors: Vec::new(),
            error: None,
            not_before: None,
            created_at: None,
            finished_at: None,
            run: 1,
            runs: Vec::new(),
        }
    }
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

#[cfg(test)]
mod tests;
