//! A workflow's past on the wire: its runs and its tasks' earlier
//! outcomes, as a report carries them once the workflow was re-run
//! (`rerun`; docs/protocol.md, "Re-running a workflow"), and a task's log
//! of attempts.

use super::{SkipReason, TaskError, TaskState, WorkflowStatus};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// One run of a workflow, in a report's `runs` (absent until it is
/// re-run; then every run, the last being the current one).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RunSummary {
    /// From 1: the submission's run; each `rerun` starts the next.
    pub run: u32,
    /// How it ended, or `running`.
    pub status: WorkflowStatus,
    /// The `rerun_id` of the request that started it, if it gave one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rerun_id: Option<String>,
    /// The tasks the `rerun` named (`from`; absent for the first run, and
    /// when the rerun named none: every task that had not succeeded ran
    /// again). Those and everything downstream of them ran again: each
    /// has an entry of the run before in its `history`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from: Vec<String>,
    /// When it started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<DateTime<Utc>>,
    /// When it ended; absent while it runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<DateTime<Utc>>,
    /// For a failed run: which task failed and why, in one line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// How a task ended in an earlier run, in its report's `history` (a task
/// re-run keeps one entry per run it ended in before; its output is not
/// kept).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EarlierOutcome {
    /// The run it ended in.
    pub run: u32,
    /// Its state when that run ended.
    pub state: TaskState,
    /// Attempts it took in that run.
    pub attempts: u32,
    /// Why its last attempt failed (its message cut at 1,024
    /// characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<TaskError>,
    /// Why it was skipped (state `skipped` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skip_reason: Option<SkipReason>,
    /// The worker that answered its last attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<String>,
    /// When its last attempt started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<DateTime<Utc>>,
    /// When its last attempt ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<DateTime<Utc>>,
}

/// One attempt of a task whose result was committed, in the `attempt_log`
/// of a single task's answer (`GET /api/workflows/{id}/tasks/{task}`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AttemptLog {
    /// The attempt, from 1 (in the current run).
    pub attempt: u32,
    /// `succeeded` or `failed`.
    pub status: String,
    /// The worker that answered it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<String>,
    /// When it started, as its worker reported (else when dispatched).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<DateTime<Utc>>,
    /// When it ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<DateTime<Utc>>,
}
