//! A workflow request as a producer publishes it to `{ns}.workflows`: its
//! fields, its tasks with their retry policy, trigger rule (`run_if`),
//! condition (`when`) and `map`, what a failure makes of the workflow
//! (`on_failure`), and why a task those rules skip is skipped
//! (`SkipReason`, shown in reports). docs/protocol.md, "Workflow request".

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A workflow request, published by a producer to `{ns}.workflows`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct WorkflowRequest {
    /// Idempotency key. When absent, the AMQP `message_id` is used, and when
    /// that is absent too the scheduler generates one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Free-form name, shown in reports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// 0..=9, default 0; every task inherits it. Kept wide here so that an
    /// out-of-range value is reported by validation, not by the parser.
    #[serde(default)]
    pub priority: i64,
    /// Input available to templates as `${workflow.input...}`.
    #[serde(default)]
    pub input: Value,
    /// Most of this workflow's tasks running at once; none by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrency: Option<u32>,
    /// RFC 3339 instant after which the request is no longer wanted: taken
    /// later (it waited in the broker), it is rejected with code `expired`
    /// rather than run late. Read as text so that a malformed one is a
    /// validation error of its own (`invalid_time`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    /// RFC 3339 instant before which the workflow does not start: it is
    /// accepted and stored at once (`scheduled`) and started when due; a
    /// time already past starts it at once. Not with `delay_ms`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_before: Option<String>,
    /// Start this long after the scheduler accepts the request (ms); as
    /// `not_before`, relative. Not with `not_before`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay_ms: Option<u64>,
    /// Longest the workflow may run, from its start (ms): past it, it ends
    /// `failed` with reason `deadline`, its running tasks told to stop.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline_ms: Option<u64>,
    /// What a failure makes of the workflow: `fail` (the default), or
    /// `handled`: it ends `succeeded` when every task that failed has a
    /// direct dependent with `run_if: any_failed` that succeeded.
    #[serde(default, skip_serializing_if = "OnFailure::is_default")]
    pub on_failure: OnFailure,
    /// The DAG.
    pub tasks: Vec<TaskSpec>,
}

/// What a failure makes of a workflow (`on_failure`).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum OnFailure {
    /// It ends `failed` (the default).
    #[default]
    Fail,
    /// It ends `succeeded` when each failed task's failure was handled: a
    /// direct dependent with `run_if: any_failed` succeeded.
    Handled,
}

impl OnFailure {
    /// Whether this is the default (`fail`).
    pub fn is_default(&self) -> bool {
        *self == OnFailure::Fail
    }
}

/// When a task whose dependencies have all ended runs (`run_if`).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RunIf {
    /// Every dependency succeeded (the default); a dependency skipped
    /// skips it (`upstream_skipped`).
    #[default]
    AllSucceeded,
    /// Every dependency ended, whatever its outcome (cleanup).
    AllDone,
    /// At least one dependency failed (compensation); else it is skipped
    /// (`trigger_rule`).
    AnyFailed,
}

impl RunIf {
    /// Whether this is the default (`all_succeeded`).
    pub fn is_default(&self) -> bool {
        *self == RunIf::AllSucceeded
    }

    /// The word on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            RunIf::AllSucceeded => "all_succeeded",
            RunIf::AllDone => "all_done",
            RunIf::AnyFailed => "any_failed",
        }
    }
}

/// Why a task ended `skipped` without running.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum SkipReason {
    /// Another task failed first: nothing more starts (fail-fast), but
    /// tasks with `run_if: all_done` or `any_failed`.
    WorkflowFailed,
    /// A dependency was skipped, and its `run_if` is `all_succeeded`.
    UpstreamSkipped,
    /// Its `when` was false.
    Condition,
    /// Its `run_if` did not hold (`any_failed`, and none failed).
    TriggerRule,
}

impl SkipReason {
    /// The word on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            SkipReason::WorkflowFailed => "workflow_failed",
            SkipReason::UpstreamSkipped => "upstream_skipped",
            SkipReason::Condition => "condition",
            SkipReason::TriggerRule => "trigger_rule",
        }
    }

    /// The reason a word names.
    pub fn parse(s: &str) -> Option<SkipReason> {
        [
            SkipReason::WorkflowFailed,
            SkipReason::UpstreamSkipped,
            SkipReason::Condition,
            SkipReason::TriggerRule,
        ]
        .into_iter()
        .find(|r| r.as_str() == s)
    }
}

/// One task of a workflow request.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TaskSpec {
    /// Unique within the workflow; letters, digits, `_` and `-`.
    pub id: String,
    /// Handler name a worker registered (`echo`, `payments.charge`, ...).
    #[serde(rename = "type")]
    pub kind: String,
    /// Task queue (worker pool); default `default`.
    #[serde(default = "default_queue")]
    pub queue: String,
    /// Tasks that must end before this one starts (succeed, unless
    /// `run_if` says otherwise).
    #[serde(default)]
    pub depends_on: Vec<String>,
    /// Input, with `${task.output.path}` / `${workflow.input.path}` templates.
    #[serde(default)]
    pub input: Value,
    /// Retry policy; default: one attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetryPolicy>,
    /// Time the handler may take for one attempt, enforced by the worker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// How long the task is expected to run: weights the critical path
    /// that orders dispatch (a task without a hint weighs 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_hint_ms: Option<u64>,
    /// Run no earlier than this long after the task's dependencies are met
    /// (polling loops, cool-downs): it waits `delayed` in the scheduler's
    /// store, not in the broker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay_ms: Option<u64>,
    /// Runs only if this condition over templates is true when the task's
    /// dependencies are met, else ends `skipped` (`condition`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when: Option<String>,
    /// Which outcomes of its dependencies let it run (default
    /// `all_succeeded`).
    #[serde(default, skip_serializing_if = "RunIf::is_default")]
    pub run_if: RunIf,
    /// Runs one instance of the task per element of the array this
    /// template resolves to (`${list.output.files}`), each instance's
    /// input seeing `${item}` and `${index}`; its output is the array of
    /// the instances' outputs, in order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub map: Option<String>,
}

/// Name of the task queue a task goes to when its request names none.
pub const DEFAULT_QUEUE: &str = "default";

fn default_queue() -> String {
    DEFAULT_QUEUE.to_owned()
}

/// How often, and how far apart, a failed task is tried again.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RetryPolicy {
    /// Attempts in all, including the first; 1 means no retry.
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// Delay before the second attempt; doubled for each further one.
    #[serde(default = "default_backoff_ms")]
    pub backoff_ms: u64,
    /// Upper bound of the delay.
    #[serde(default = "default_max_backoff_ms")]
    pub max_backoff_ms: u64,
}

pub(super) fn default_max_attempts() -> u32 {
    1
}
fn default_backoff_ms() -> u64 {
    1_000
}
fn default_max_backoff_ms() -> u64 {
    300_000
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: default_max_attempts(),
            backoff_ms: default_backoff_ms(),
            max_backoff_ms: default_max_backoff_ms(),
        }
    }
}
