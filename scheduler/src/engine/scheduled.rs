//! Delayed workflows: accepted with a start time ahead (`not_before`,
//! `delay_ms`), committed at once with status `scheduled` and their
//! definition, and started when due.
//!
//! The engine holds only what it needs to start them in order and answer
//! for them: the due time and the `reply_to` addresses, by id, and a heap
//! of due times (about a hundred bytes a workflow, whatever its size). The
//! definition stays in the store: when starts fall due the loop takes them
//! ([`Engine::take_due_starts`]), reads their definitions in one call, and
//! hands each back ([`Engine::start_scheduled`]). Nothing waits unacked in
//! the broker, and a restart or a takeover restores them from the store
//! ([`Engine::restore_scheduled`]).

use super::{Counters, Engine, MAX_WAITERS, emit::to_json};
use crate::{
    batch::{Op, ReplyTo, ScheduledWorkflow},
    validate::ValidWorkflow,
};
use chrono::{DateTime, Utc};
use std::{cmp::Reverse, sync::Arc};
use warren_shared::wire::{Rejection, WorkflowReport, WorkflowStatus};

/// A workflow waiting for its start.
#[derive(Debug)]
pub(super) struct Scheduled {
    /// When it starts (ms since the epoch).
    due_ms: i64,
    name: Option<String>,
    /// Where its outcome goes.
    replies: Vec<ReplyTo>,
}

/// The report of a workflow waiting for its start at `due`: what the store
/// keeps for it and status requests answer.
pub(super) fn scheduled_report(
    id: &str,
    name: Option<String>,
    due: DateTime<Utc>,
) -> WorkflowReport {
    WorkflowReport {
        name,
        status: WorkflowStatus::Scheduled,
        not_before: Some(due),
        ..WorkflowReport::not_found(id)
    }
}

impl Engine {
    /// Keeps an accepted workflow until `due` (its row and replies are in
    /// the batch already) and announces it (`workflow.{id}.scheduled`).
    pub(super) fn schedule(
        &mut self,
        id: Arc<str>,
        name: Option<String>,
        due: DateTime<Utc>,
        replies: Vec<ReplyTo>,
    ) {
        Counters::add(&self.counters.workflows_scheduled, 1);
        let report = scheduled_report(&id, name.clone(), due);
        self.emit_event(&id, WorkflowStatus::Scheduled, to_json(&report));
        self.keep_scheduled(
            id,
            Scheduled {
                due_ms: due.timestamp_millis(),
                name,
                replies,
            },
        );
    }

    fn keep_scheduled(&mut self, id: Arc<str>, s: Scheduled) {
        self.starts.push(Reverse((s.due_ms, id.clone())));
        self.scheduled.insert(id, s);
    }

    /// Restores a workflow that was waiting for its start when the store
    /// was last closed (or whose partition this scheduler took over).
    pub fn restore_scheduled(&mut self, w: ScheduledWorkflow) {
        let replies = ReplyTo::from_rows(w.replies);
        self.keep_scheduled(
            Arc::from(w.id.as_str()),
            Scheduled {
                due_ms: w.due_ms,
                name: w.name,
                replies,
            },
        );
    }

    /// True when `id` waits here for its start.
    pub fn is_scheduled(&self, id: &str) -> bool {
        self.scheduled.contains_key(id)
    }

    /// How many workflows wait for their start.
    pub fn scheduled_len(&self) -> usize {
        self.scheduled.len()
    }

    /// When the next start is due (ms since the epoch).
    pub(super) fn next_start_ms(&self) -> Option<i64> {
        self.starts.peek().map(|Reverse((due, _))| *due)
    }

    /// Takes at most `at_most` workflows due by `now_ms`, earliest first,
    /// for the loop to read their definitions and start them
    /// ([`Engine::start_scheduled`]). They stay known as scheduled until
    /// then. Heap entries of workflows no longer waiting (cancelled) are
    /// dropped.
    pub fn take_due_starts(&mut self, now_ms: i64, at_most: usize) -> Vec<Arc<str>> {
        let mut due = Vec::new();
        while due.len() < at_most {
            match self.starts.peek() {
                Some(Reverse((at, _))) if *at <= now_ms => {}
                _ => break,
            }
            let Reverse((at, id)) = self.starts.pop().expect("peeked");
            if self.scheduled.get(&id).is_some_and(|s| s.due_ms == at) {
                due.push(id);
            }
        }
        due
    }

    /// Starts a workflow the loop took (due, [`Engine::take_due_starts`],
    /// or queued, [`Engine::take_startable`]) with its definition as
    /// stored.
    pub fn start_unstarted(&mut self, v: ValidWorkflow, definition: &[u8], now: DateTime<Utc>) {
        if self.scheduled.contains_key(v.id.as_str()) {
            self.start_scheduled(v, definition, now);
        } else {
            self.start_queued(v, definition, now);
        }
    }

    /// A workflow the loop took whose stored definition cannot be read any
    /// more (a store written by another version, or gone): it ends
    /// `failed`, saying why, rather than wait forever.
    pub fn fail_unstarted(&mut self, id: &str, why: &str, now: DateTime<Utc>) {
        if let Some((id, s)) = self.scheduled.remove_entry(id) {
            let report = failed_report(&id, s.name, why, now);
            self.end_unstarted(&id, &report, &s.replies, now);
        } else {
            self.fail_queued(id, why, now);
        }
    }

    /// Starts a workflow that fell due: the row becomes `running`, started
    /// now, or, when the working set has no room for it, it waits in line
    /// (`queued.rs`). One whose `expires_at` has passed meanwhile is
    /// rejected `expired`.
    fn start_scheduled(&mut self, v: ValidWorkflow, definition: &[u8], now: DateTime<Utc>) {
        let Some((id, s)) = self.scheduled.remove_entry(v.id.as_str()) else {
            return;
        };
        if let Some(at) = v.expires_at.filter(|at| *at <= now) {
            let due = DateTime::from_timestamp_millis(s.due_ms).unwrap_or(now);
            let why = format!(
                "expires_at {} passed before its start (due {}): not run late",
                rfc3339(at),
                rfc3339(due),
            );
            let report = expired_report(&id, s.name, why, now);
            self.end_unstarted(&id, &report, &s.replies, now);
            return;
        }
        if self.must_queue(v.priority, v.tasks.len(), definition.len()) {
            let report = super::queued::queued_report(&id, v.name.clone(), now, v.tasks.len());
            self.ops.push(Op::QueueWorkflow {
                id: id.clone(),
                report: String::from_utf8_lossy(&to_json(&report)).into_owned(),
            });
            self.enqueue(&v, definition.len(), now, s.replies);
            return;
        }
        Counters::add(&self.counters.workflows_started, 1);
        self.ops.push(Op::StartWorkflow {
            id: id.clone(),
            started_at: now,
        });
        self.begin(v, definition, s.replies, now);
    }

    /// Cancels a workflow waiting for its start: it ends `cancelled`
    /// without having run. `None` when `id` does not wait here.
    pub(super) fn cancel_scheduled(
        &mut self,
        id: &str,
        now: DateTime<Utc>,
    ) -> Option<WorkflowReport> {
        let (id, s) = self.scheduled.remove_entry(id)?;
        let report = WorkflowReport {
            name: s.name,
            status: WorkflowStatus::Cancelled,
            not_before: DateTime::from_timestamp_millis(s.due_ms),
            finished_at: Some(now),
            ..WorkflowReport::not_found(&id)
        };
        self.end_unstarted(&id, &report, &s.replies, now);
        Some(report)
    }

    /// Ends a workflow that never started (cancelled, failed or rejected
    /// `expired`, as `report` says): counted, its row, its waiters, its
    /// event.
    pub(super) fn end_unstarted(
        &mut self,
        id: &Arc<str>,
        report: &WorkflowReport,
        replies: &[ReplyTo],
        now: DateTime<Utc>,
    ) {
        let counter = match report.status {
            WorkflowStatus::Cancelled => &self.counters.workflows_cancelled,
            WorkflowStatus::Rejected => &self.counters.workflows_rejected,
            _ => &self.counters.workflows_failed,
        };
        Counters::add(counter, 1);
        let body = to_json(report);
        self.ops.push(Op::FinishWorkflow {
            id: id.clone(),
            status: report.status,
            report: String::from_utf8_lossy(&body).into_owned(),
            finished_at: now,
        });
        for to in replies {
            self.emit_reply(to, body.clone());
        }
        if !replies.is_empty() {
            self.ops.push(Op::DropReplies(id.clone()));
        }
        self.emit_event(id, report.status, body);
    }

    /// A second submission of a workflow waiting for its start: its
    /// outcome goes to this `reply_to` too (at most [`MAX_WAITERS`]; past
    /// that it is answered now with the scheduled report). False when `id`
    /// does not wait here.
    pub(super) fn add_scheduled_waiter(&mut self, id: &str, reply: ReplyTo) -> bool {
        let Some((id, s)) = self.scheduled.get_key_value(id) else {
            return false;
        };
        if s.replies.contains(&reply) {
            return true;
        }
        let id = id.clone();
        if s.replies.len() >= MAX_WAITERS {
            let report = self.scheduled_status(&id).expect("present above");
            self.reply_report(&reply, &report);
            return true;
        }
        self.add_reply_row(&id, &reply);
        self.scheduled
            .get_mut(&id)
            .expect("present above")
            .replies
            .push(reply);
        true
    }

    /// The report of a workflow waiting for its start.
    pub fn scheduled_status(&self, id: &str) -> Option<WorkflowReport> {
        let s = self.scheduled.get(id)?;
        let due = DateTime::from_timestamp_millis(s.due_ms).unwrap_or_default();
        Some(scheduled_report(id, s.name.clone(), due))
    }
}

/// A time as the reports write it.
pub(super) fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// The report of a workflow that never started because its `expires_at`
/// passed first: rejected `expired`, saying `why`.
pub(super) fn expired_report(
    id: &str,
    name: Option<String>,
    why: String,
    now: DateTime<Utc>,
) -> WorkflowReport {
    WorkflowReport {
        name,
        status: WorkflowStatus::Rejected,
        errors: vec![Rejection {
            code: "expired".into(),
            message: why,
            task: None,
        }],
        finished_at: Some(now),
        ..WorkflowReport::not_found(id)
    }
}

/// The report of a workflow that never started because its stored
/// definition could not be read: failed, saying `why`.
pub(super) fn failed_report(
    id: &str,
    name: Option<String>,
    why: &str,
    now: DateTime<Utc>,
) -> WorkflowReport {
    WorkflowReport {
        name,
        status: WorkflowStatus::Failed,
        error: Some(crate::validate::shortened(why, 1024)),
        finished_at: Some(now),
        ..WorkflowReport::not_found(id)
    }
}
