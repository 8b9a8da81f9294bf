//! Schedules on the wire: what `schedule.create` carries, and the answers
//! to the `schedule.*` control requests (`type: warren.schedule` and
//! `warren.schedules`; docs/protocol.md, "Schedules").

use super::Rejection;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A schedule as `schedule.create` gives it: when it fires, what each
/// firing submits, and what happens when firings overlap or were missed.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ScheduleSpec {
    /// `[A-Za-z0-9._-]{1,100}`: each firing's workflow id is
    /// `{id}:{fire time}`.
    pub id: String,
    /// A cron expression: five fields, or six with a leading seconds
    /// field (exactly one of `cron` and `every_ms`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cron: Option<String>,
    /// A fixed interval, counted from the schedule's creation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub every_ms: Option<u64>,
    /// The IANA zone whose wall clock `cron` reads; `UTC` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    /// A firing while the previous firing's workflow still runs.
    #[serde(default)]
    pub overlap: Overlap,
    /// Firings missed while no scheduler could fire them.
    #[serde(default)]
    pub catch_up: CatchUp,
    /// The workflow request each firing submits, without `id`; strings in
    /// its `input` and its tasks' `input` may hold `${schedule.id}` and
    /// `${schedule.fire_time}`.
    pub workflow: Value,
}

/// What a firing does while the previous firing's workflow has not ended.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Overlap {
    /// The firing is skipped (counted, and shown as the last outcome).
    #[default]
    Skip,
    /// The firing submits its workflow all the same.
    Allow,
    /// The previous workflow is cancelled, and the firing submits its own.
    CancelPrevious,
}

impl Overlap {
    /// The word on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Overlap::Skip => "skip",
            Overlap::Allow => "allow",
            Overlap::CancelPrevious => "cancel_previous",
        }
    }
}

/// What a scheduler does, when it takes a schedule up, with the firings
/// that fell due while no scheduler could fire them.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum CatchUp {
    /// None of them fires.
    None,
    /// The most recent one fires.
    #[default]
    Latest,
    /// Each fires, oldest first, up to the most recent 100.
    All,
}

impl CatchUp {
    /// The word on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            CatchUp::None => "none",
            CatchUp::Latest => "latest",
            CatchUp::All => "all",
        }
    }
}

/// A stored schedule as the answers show it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ScheduleInfo {
    /// The schedule's id.
    pub id: String,
    /// Its cron expression, as given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cron: Option<String>,
    /// Its interval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub every_ms: Option<u64>,
    /// The zone `cron` is read in (`UTC` when none was given).
    pub timezone: String,
    /// Its overlap policy.
    pub overlap: Overlap,
    /// Its catch-up policy.
    pub catch_up: CatchUp,
    /// Firings hold while paused.
    pub paused: bool,
    /// When it was created (an `every_ms` schedule counts from here).
    pub created_at: DateTime<Utc>,
    /// Its next firing; absent while paused, or when it never fires again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_fire_at: Option<DateTime<Utc>>,
    /// The time of its last firing (fired or skipped).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_fire_at: Option<DateTime<Utc>>,
    /// The workflow its last submitted firing started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_workflow_id: Option<String>,
    /// What became of the last firing: `skipped` (overlap), or the status
    /// of `last_workflow_id` (`submitted` while the request has not been
    /// taken yet, then `running`, `succeeded`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_outcome: Option<String>,
    /// Firings that submitted a workflow, and firings skipped (by the
    /// `overlap` policy, or missed and not caught up).
    #[serde(default)]
    pub fired: u64,
    /// See `fired`.
    #[serde(default)]
    pub skipped: u64,
    /// The workflow request each firing submits (`schedule.get` and
    /// `schedule.create` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workflow: Option<Value>,
}

/// The answer to `schedule.create`, `get`, `pause`, `resume`, `trigger`
/// and `delete` (`type: warren.schedule`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ScheduleReport {
    /// The schedule asked about.
    pub schedule_id: String,
    /// `created`, `found`, `paused`, `resumed`, `triggered`, `skipped`
    /// (a trigger held back by `overlap: skip`), `deleted`, `not_found`
    /// or `rejected` (then `errors` says why).
    pub outcome: String,
    /// The schedule as stored after the request (before it, for
    /// `deleted`); absent for `not_found` and most `rejected`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<ScheduleInfo>,
    /// `triggered`: the workflow the firing submitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workflow_id: Option<String>,
    /// Why the request was refused (`rejected`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<Rejection>,
}

/// The answer to `schedule.list` (`type: warren.schedules`): schedules in
/// id order, a page at a time.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct SchedulesPage {
    /// The page's schedules (without their workflows).
    pub schedules: Vec<ScheduleInfo>,
    /// Give this as `after` for the next page; absent on the last one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_after: Option<String>,
    /// Why the request was refused.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<Rejection>,
}
