//! Stored values to and from the batch contract, once for both stores.
//!
//! Each store reads a row into one of the records below with its own SQL
//! and driver calls (numbers already in the contract's types); turning the
//! stored text into the contract's types (timestamps, JSON errors and
//! headers, task state words, outbox kinds) happens here. A value that does
//! not read back is [`StoreError::Corrupt`]. The other way, the JSON
//! columns are written by [`error_text`] and [`headers_text`], and SQLite's
//! timestamps by [`ts`].

use super::StoreError;
use crate::batch::{OutKind, OutMsg, RunningWorkflow, TaskRow};
use chrono::{DateTime, Utc};
use std::sync::Arc;
use warren_shared::wire::{SkipReason, TaskError, TaskState, WorkflowSummary};

/// A timestamp as a store keeps it: RFC 3339 text in SQLite (written by
/// [`ts`]), a `timestamptz` in PostgreSQL.
pub(super) trait Stamp {
    /// The instant (text that does not parse is corrupt).
    fn time(self) -> Result<DateTime<Utc>, StoreError>;
    /// The text the status API shows: SQLite's as stored, PostgreSQL's
    /// written as [`ts`] writes it.
    fn text(self) -> String;
}

impl Stamp for String {
    fn time(self) -> Result<DateTime<Utc>, StoreError> {
        DateTime::parse_from_rfc3339(&self)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|e| StoreError::Corrupt(format!("timestamp `{self}`: {e}")))
    }

    fn text(self) -> String {
        self
    }
}

impl Stamp for DateTime<Utc> {
    fn time(self) -> Result<DateTime<Utc>, StoreError> {
        Ok(self)
    }

    fn text(self) -> String {
        ts(&self)
    }
}

/// A timestamp as SQLite stores it and the status API shows it: RFC 3339
/// in UTC, to the microsecond.
pub(super) fn ts(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// A task's state as stored: its word, and for a skipped task with a
/// reason, `skipped:{reason}` (`skipped:condition`), so that the reason
/// needs no column of its own.
pub(super) fn state_text(row: &TaskRow) -> std::borrow::Cow<'static, str> {
    match (row.state, row.skip_reason) {
        (TaskState::Skipped, Some(r)) => format!("skipped:{}", r.as_str()).into(),
        (state, _) => state.as_str().into(),
    }
}

/// The state and skip reason a stored state word gives.
fn parse_state(word: &str) -> Option<(TaskState, Option<SkipReason>)> {
    match word.split_once(':') {
        Some(("skipped", reason)) => Some((TaskState::Skipped, Some(SkipReason::parse(reason)?))),
        Some(_) => None,
        None => Some((TaskState::parse(word)?, None)),
    }
}

/// A task's error as stored (JSON), if it has one.
pub(super) fn error_text(error: Option<&TaskError>) -> Result<Option<String>, StoreError> {
    error
        .map(serde_json::to_string)
        .transpose()
        .map_err(|e| StoreError::Corrupt(e.to_string()))
}

/// An outbox message's extra headers as stored (a JSON array of pairs);
/// none are stored as NULL.
pub(super) fn headers_text(headers: &[(String, String)]) -> Result<Option<String>, StoreError> {
    if headers.is_empty() {
        return Ok(None);
    }
    serde_json::to_string(headers)
        .map(Some)
        .map_err(|e| StoreError::Corrupt(e.to_string()))
}

/// An `outbox` row as read.
pub(super) struct OutboxRecord {
    pub seq: i64,
    pub kind: String,
    pub exchange: String,
    pub routing_key: String,
    pub message_id: Option<String>,
    pub correlation_id: Option<String>,
    pub priority: Option<u8>,
    pub headers: Option<String>,
    pub body: Vec<u8>,
    /// 0 on SQLite, which has no such column.
    pub part: u16,
}

impl OutboxRecord {
    /// The message waiting to be published, with its sequence number.
    pub fn decode(self) -> Result<(u64, Arc<OutMsg>), StoreError> {
        let kind = OutKind::parse(&self.kind)
            .ok_or_else(|| StoreError::Corrupt(format!("outbox kind `{}`", self.kind)))?;
        let headers = match self.headers {
            Some(h) => serde_json::from_str(&h)
                .map_err(|e| StoreError::Corrupt(format!("outbox headers: {e}")))?,
            None => Vec::new(),
        };
        Ok((
            self.seq as u64,
            Arc::new(OutMsg {
                kind,
                exchange: self.exchange,
                routing_key: self.routing_key,
                message_id: self.message_id,
                correlation_id: self.correlation_id,
                priority: self.priority,
                headers,
                body: self.body,
                part: self.part,
            }),
        ))
    }
}

/// A `tasks` row as read (its workflow aside), timestamps as the store
/// keeps them.
pub(super) struct TaskRecord<T> {
    pub task_id: String,
    pub state: String,
    pub attempt: u32,
    pub due_at_ms: Option<i64>,
    /// The output's JSON, kept as text.
    pub output: Option<String>,
    pub error: Option<String>,
    pub worker: Option<String>,
    pub started_at: Option<T>,
    pub finished_at: Option<T>,
}

impl<T: Stamp> TaskRecord<T> {
    /// The task's durable state, as a task of `workflow_id`.
    pub fn decode(self, workflow_id: Arc<str>) -> Result<TaskRow, StoreError> {
        let (state, skip_reason) = parse_state(&self.state)
            .ok_or_else(|| StoreError::Corrupt(format!("task state `{}`", self.state)))?;
        let error = self
            .error
            .map(|e| serde_json::from_str::<TaskError>(&e))
            .transpose()
            .map_err(|e| StoreError::Corrupt(format!("task error: {e}")))?;
        Ok(TaskRow {
            workflow_id,
            task_id: self.task_id,
            state,
            skip_reason,
            attempt: self.attempt,
            due_at_ms: self.due_at_ms,
            output: self.output,
            error,
            worker: self.worker,
            started_at: self.started_at.map(Stamp::time).transpose()?,
            finished_at: self.finished_at.map(Stamp::time).transpose()?,
        })
    }
}

/// A running workflow's `workflows` row as read.
pub(super) struct WorkflowRecord<T> {
    pub id: String,
    pub seq: i64,
    pub definition: Option<Vec<u8>>,
    pub created_at: T,
}

impl<T: Stamp> WorkflowRecord<T> {
    /// The workflow to resume, with its tasks' rows and its waiters.
    pub fn decode(
        self,
        tasks: Vec<TaskRow>,
        replies: Vec<(String, Option<String>)>,
        runs: Vec<crate::batch::RunRow>,
    ) -> Result<RunningWorkflow, StoreError> {
        let Some(definition) = self.definition else {
            return Err(StoreError::Corrupt(format!(
                "running workflow {} has no definition",
                self.id
            )));
        };
        Ok(RunningWorkflow {
            id: self.id,
            seq: self.seq as u64,
            definition,
            created_at: self.created_at.time()?,
            tasks,
            replies,
            runs,
        })
    }
}

/// A `workflows` row as listed.
pub(super) struct SummaryRecord<T> {
    pub id: String,
    pub name: Option<String>,
    pub status: String,
    pub priority: i64,
    pub created_at: T,
    pub finished_at: Option<T>,
    /// The stored report of a `scheduled` or `queued` workflow (none for
    /// others).
    pub scheduled_report: Option<String>,
}

impl<T: Stamp> SummaryRecord<T> {
    /// The workflow as `/api/workflows` lists it.
    pub fn decode(self) -> WorkflowSummary {
        WorkflowSummary {
            workflow_id: self.id,
            name: self.name,
            status: self.status,
            priority: self.priority,
            created_at: self.created_at.text(),
            finished_at: self.finished_at.map(Stamp::text),
            not_before: self
                .scheduled_report
                .and_then(|r| serde_json::from_str::<warren_shared::wire::WorkflowReport>(&r).ok())
                .and_then(|r| r.not_before)
                .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
        }
    }
}

/// A workflow waiting for its start, from its row: its due time is the
/// `not_before` of the report stored with it (the report status requests
/// answer), so the store keeps no column of its own for it.
pub(super) fn scheduled_workflow(
    id: String,
    name: Option<String>,
    report: Option<&str>,
    replies: Vec<(String, Option<String>)>,
) -> Result<crate::batch::ScheduledWorkflow, StoreError> {
    let due = report
        .and_then(|r| serde_json::from_str::<warren_shared::wire::WorkflowReport>(r).ok())
        .and_then(|r| r.not_before)
        .ok_or_else(|| {
            StoreError::Corrupt(format!(
                "scheduled workflow {id} has no readable not_before in its report"
            ))
        })?;
    Ok(crate::batch::ScheduledWorkflow {
        id,
        name,
        due_ms: due.timestamp_millis(),
        replies,
    })
}

/// A `queued` workflow's row as recovered: its task count is the one its
/// stored report gives (the report status requests answer), so the store
/// keeps no column of its own for it.
pub(super) struct QueuedRecord<T> {
    pub id: String,
    pub name: Option<String>,
    pub priority: i64,
    pub seq: i64,
    pub report: Option<String>,
    /// Bytes of its definition.
    pub bytes: i64,
    pub created_at: T,
}

impl<T: Stamp> QueuedRecord<T> {
    /// The workflow as the engine keeps it until it starts.
    pub fn decode(
        self,
        replies: Vec<(String, Option<String>)>,
    ) -> Result<crate::batch::QueuedWorkflow, StoreError> {
        let tasks = self
            .report
            .as_deref()
            .and_then(|r| serde_json::from_str::<warren_shared::wire::WorkflowReport>(r).ok())
            .map(|r| crate::engine::queued_tasks(&r))
            .filter(|n| *n > 0)
            .ok_or_else(|| {
                StoreError::Corrupt(format!(
                    "queued workflow {} has no readable task count in its report",
                    self.id
                ))
            })?;
        Ok(crate::batch::QueuedWorkflow {
            id: self.id,
            name: self.name,
            priority: self.priority.clamp(0, 9) as u8,
            seq: self.seq as u64,
            tasks,
            bytes: self.bytes.max(0) as usize,
            created_at: self.created_at.time()?,
            replies,
        })
    }
}

/// The columns of `schedules` a [`ScheduleRecord`] is read from, in its
/// order (both stores keep times as milliseconds since the epoch).
pub(super) const SCHEDULE_COLUMNS: &str = "s.id, s.cron, s.every_ms, s.timezone, s.overlap, s.catch_up, s.created_ms, \
     s.paused, s.next_fire_ms, s.last_fire_ms, s.last_workflow_id, s.last_skipped, s.fired, s.skipped";

/// A row of `schedules` as read (all but the workflow).
pub(super) struct ScheduleRecord {
    pub id: String,
    pub cron: Option<String>,
    pub every_ms: Option<i64>,
    pub timezone: String,
    pub overlap: String,
    pub catch_up: String,
    pub created_ms: i64,
    pub paused: bool,
    pub next_fire_ms: Option<i64>,
    pub last_fire_ms: Option<i64>,
    pub last_workflow_id: Option<String>,
    pub last_skipped: bool,
    pub fired: i64,
    pub skipped: i64,
}

fn millis(ms: i64, what: &str) -> Result<DateTime<Utc>, StoreError> {
    DateTime::from_timestamp_millis(ms)
        .ok_or_else(|| StoreError::Corrupt(format!("schedule {what} of {ms} ms")))
}

fn word<T: serde::de::DeserializeOwned>(w: &str, what: &str) -> Result<T, StoreError> {
    serde_json::from_value(serde_json::Value::String(w.to_owned()))
        .map_err(|_| StoreError::Corrupt(format!("schedule {what} `{w}`")))
}

impl ScheduleRecord {
    pub fn decode(self) -> Result<crate::batch::ScheduleRow, StoreError> {
        Ok(crate::batch::ScheduleRow {
            id: Arc::from(self.id),
            cron: self.cron,
            every_ms: self.every_ms.map(|ms| ms.max(0) as u64),
            timezone: self.timezone,
            overlap: word(&self.overlap, "overlap")?,
            catch_up: word(&self.catch_up, "catch_up")?,
            created_at: millis(self.created_ms, "created_at")?,
            state: crate::batch::ScheduleState {
                paused: self.paused,
                next_fire_at: self
                    .next_fire_ms
                    .map(|t| millis(t, "next_fire_at"))
                    .transpose()?,
                last_fire_at: self
                    .last_fire_ms
                    .map(|t| millis(t, "last_fire_at"))
                    .transpose()?,
                last_workflow_id: self.last_workflow_id,
                last_skipped: self.last_skipped,
                fired: self.fired.max(0) as u64,
                skipped: self.skipped.max(0) as u64,
            },
        })
    }
}
