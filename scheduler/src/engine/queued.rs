//! Queued workflows: accepted while the working set (the memory budget,
//! `budget.rs`) has no room for them, committed at once with status
//! `queued` and their definition, and started in priority order, then in
//! order of arrival, as room frees.
//!
//! This is how a backlog larger than memory waits: every request is
//! accepted, answerable by `status` and cancellable, while the engine
//! holds only what it needs to start them in order (about 200 bytes a
//! workflow, whatever its size): the priority, the place in line, what
//! starting it costs the budget, and the `reply_to` addresses. The
//! definition stays in the store: the loop takes the workflows that fit
//! ([`Engine::take_startable`]), reads their definitions in one call and
//! hands each back ([`Engine::start_unstarted`]), which builds them
//! exactly as an acceptance does. A restart or a takeover restores them
//! from their rows ([`Engine::restore_queued`]). A delayed workflow that
//! falls due while there is no room waits here too (its row becomes
//! `queued`).
//!
//! Priorities: workflows of priority `p` start only within their share of
//! the budget (`budget::share`: 82 % for priority 0, 2 points more a
//! level, all of it for 9), so a backlog of low-priority work always
//! leaves room in front of it for more urgent work, which starts at once.
//! At most `max_queued_workflows` wait here; past that, submissions wait
//! unacked in the broker (`scheduler/waiting.rs`).
//!
//! Task queues: `max_queues` is checked when a workflow is submitted and
//! again when it starts. One that would pass it then goes back to its
//! place and the line stops (`blocked`) until a running workflow ends and
//! frees its queues.

use super::{
    Counters, Engine, MAX_WAITERS,
    emit::to_json,
    scheduled::{expired_report, failed_report, rfc3339},
};
use crate::{
    batch::{Op, QueuedWorkflow, ReplyTo},
    validate::ValidWorkflow,
};
use chrono::{DateTime, Utc};
use std::{cmp::Reverse, collections::BTreeMap, sync::Arc};
use warren_shared::wire::{TaskState, WorkflowReport, WorkflowStatus};

/// A workflow waiting for room.
#[derive(Debug)]
pub(super) struct Queued {
    priority: u8,
    /// Its place in line among its priority.
    seq: u64,
    /// What starting it costs the budget: its tasks and the bytes of its
    /// definition.
    tasks: usize,
    bytes: usize,
    name: Option<String>,
    /// When it was accepted (a delayed one: when it fell due); its
    /// `created_at` until it starts.
    created_at: DateTime<Utc>,
    replies: Vec<ReplyTo>,
}

/// The line: highest priority first, then the earliest.
pub(super) type Line = std::collections::BinaryHeap<(u8, Reverse<u64>, Arc<str>)>;

/// The report of a queued workflow of `tasks` tasks: what the store keeps
/// for it and status requests answer (its tasks counted, all pending).
pub(super) fn queued_report(
    id: &str,
    name: Option<String>,
    created_at: DateTime<Utc>,
    tasks: usize,
) -> WorkflowReport {
    WorkflowReport {
        name,
        status: WorkflowStatus::Queued,
        created_at: Some(created_at),
        task_counts: BTreeMap::from([(TaskState::Pending, tasks as u32)]),
        ..WorkflowReport::not_found(id)
    }
}

/// The task count a stored queued report gives (see [`queued_report`]).
pub fn queued_tasks(report: &WorkflowReport) -> usize {
    report
        .task_counts
        .get(&TaskState::Pending)
        .copied()
        .unwrap_or(0) as usize
}

impl Engine {
    /// True when a workflow of `priority` costing (`tasks`, `bytes`) must
    /// wait in line: others of its priority or higher wait already (order
    /// is kept), or its priority's share of the budget has no room.
    pub(super) fn must_queue(&mut self, priority: u8, tasks: usize, bytes: usize) -> bool {
        self.line_blocked
            || self.first_in_line().is_some_and(|(p, _)| p >= priority)
            || !self.has_room(priority, tasks, bytes)
    }

    /// Puts an accepted workflow in line (its row and replies are in the
    /// batch already, or, for a delayed one that fell due, its row stays
    /// `scheduled`) and announces it (`workflow.{id}.queued`).
    pub(super) fn enqueue(
        &mut self,
        v: &ValidWorkflow,
        bytes: usize,
        created_at: DateTime<Utc>,
        replies: Vec<ReplyTo>,
    ) {
        let id: Arc<str> = Arc::from(v.id.as_str());
        let report = queued_report(&id, v.name.clone(), created_at, v.tasks.len());
        self.emit_event(&id, WorkflowStatus::Queued, to_json(&report));
        let seq = self.next_workflow_seq;
        self.next_workflow_seq += 1;
        self.keep_queued(
            id,
            Queued {
                priority: v.priority,
                seq,
                tasks: v.tasks.len(),
                bytes,
                name: v.name.clone(),
                created_at,
                replies,
            },
        );
    }

    fn keep_queued(&mut self, id: Arc<str>, q: Queued) {
        self.line.push((q.priority, Reverse(q.seq), id.clone()));
        self.queued.insert(id, q);
    }

    /// Restores a workflow that was queued when the store was last closed
    /// (or whose partition this scheduler took over).
    pub fn restore_queued(&mut self, w: QueuedWorkflow) {
        let replies = ReplyTo::from_rows(w.replies);
        self.keep_queued(
            Arc::from(w.id.as_str()),
            Queued {
                priority: w.priority,
                seq: w.seq,
                tasks: w.tasks,
                bytes: w.bytes,
                name: w.name,
                created_at: w.created_at,
                replies,
            },
        );
    }

    /// True when `id` waits here for room.
    pub fn is_queued(&self, id: &str) -> bool {
        self.queued.contains_key(id)
    }

    /// True when `id` waits here for its start or for room.
    pub fn is_unstarted(&self, id: &str) -> bool {
        self.is_scheduled(id) || self.is_queued(id)
    }

    /// The report of a workflow waiting here for its start or for room.
    pub fn unstarted_status(&self, id: &str) -> Option<WorkflowReport> {
        self.scheduled_status(id).or_else(|| self.queued_status(id))
    }

    /// Cancels a workflow waiting here for its start or for room.
    pub fn cancel_unstarted(&mut self, id: &str, now: DateTime<Utc>) -> Option<WorkflowReport> {
        self.cancel_scheduled(id, now)
            .or_else(|| self.cancel_queued(id, now))
    }

    /// How many workflows wait for room.
    pub fn queued_len(&self) -> usize {
        self.queued.len()
    }

    /// True when no more workflows may be queued: new submissions wait
    /// unacked in the broker.
    pub fn queue_full(&self) -> bool {
        self.queued.len() >= self.bounds.max_queued_workflows
    }

    /// The priority and id of the first workflow in line, dropping the
    /// line's entries of workflows no longer queued (cancelled, started).
    fn first_in_line(&mut self) -> Option<(u8, Arc<str>)> {
        while let Some((p, Reverse(seq), id)) = self.line.peek() {
            if self.queued.get(id).is_some_and(|q| q.seq == *seq) {
                return Some((*p, id.clone()));
            }
            self.line.pop();
        }
        None
    }

    /// True when the first in line fits now (or the line has entries to
    /// drop): the loop should take a turn.
    pub fn has_startable(&self) -> bool {
        !self.line_blocked
            && self.line.peek().is_some_and(|(_, Reverse(seq), id)| {
                self.queued
                    .get(id)
                    .is_none_or(|q| q.seq != *seq || self.has_room(q.priority, q.tasks, q.bytes))
            })
    }

    /// Takes the workflows at the head of the line that fit now, together,
    /// at most `at_most`, for the loop to read their definitions and start
    /// them ([`Engine::start_unstarted`]). They stay known as queued until
    /// then. The first that does not fit stops the line: the ones behind
    /// it wait their turn, even if smaller.
    pub fn take_startable(&mut self, at_most: usize) -> Vec<Arc<str>> {
        let mut taken = Vec::new();
        if self.line_blocked {
            return taken;
        }
        let mut reserved = (0, 0);
        while taken.len() < at_most {
            let Some((_, id)) = self.first_in_line() else {
                break;
            };
            let q = &self.queued[&id];
            if !self.has_room_beside(q.priority, (q.tasks, q.bytes), reserved) {
                break;
            }
            reserved = (reserved.0 + q.tasks, reserved.1 + q.bytes);
            self.line.pop();
            taken.push(id);
        }
        taken
    }

    /// Starts a queued workflow taken by [`Engine::take_startable`], with
    /// its definition as stored: the row becomes `running`, started now
    /// (`created_at` becomes its start, as for a delayed workflow, so that
    /// its deadline counts from it across restarts too). One whose
    /// `expires_at` has passed meanwhile is rejected `expired`.
    pub(super) fn start_queued(&mut self, v: ValidWorkflow, definition: &[u8], now: DateTime<Utc>) {
        let Some((id, q)) = self.queued.remove_entry(v.id.as_str()) else {
            return;
        };
        if let Some(at) = v.expires_at.filter(|at| *at <= now) {
            let why = format!(
                "expires_at {} passed while it was queued (accepted {})",
                rfc3339(at),
                rfc3339(q.created_at),
            );
            let report = expired_report(&id, q.name, why, now);
            self.end_unstarted(&id, &report, &q.replies, now);
            return;
        }
        if self.line_blocked || self.queue_bound_rejection(&v).is_some() {
            // Its task queues would pass `max_queues` now: back to its
            // place, and the line waits for a running workflow to end.
            self.line_blocked = true;
            self.keep_queued(id, q);
            return;
        }
        Counters::add(&self.counters.workflows_started, 1);
        self.ops.push(Op::StartWorkflow {
            id: id.clone(),
            started_at: now,
        });
        self.begin(v, definition, q.replies, now);
    }

    /// Cancels a queued workflow: it ends `cancelled` without having run.
    /// `None` when `id` is not queued here.
    fn cancel_queued(&mut self, id: &str, now: DateTime<Utc>) -> Option<WorkflowReport> {
        let (id, q) = self.queued.remove_entry(id)?;
        self.compact_line();
        let report = WorkflowReport {
            name: q.name,
            status: WorkflowStatus::Cancelled,
            created_at: Some(q.created_at),
            finished_at: Some(now),
            ..WorkflowReport::not_found(&id)
        };
        self.end_unstarted(&id, &report, &q.replies, now);
        Some(report)
    }

    /// A queued workflow whose stored definition cannot be read any more:
    /// it ends `failed`, saying why. False when `id` is not queued here.
    pub(super) fn fail_queued(&mut self, id: &str, why: &str, now: DateTime<Utc>) -> bool {
        let Some((id, q)) = self.queued.remove_entry(id) else {
            return false;
        };
        self.compact_line();
        let report = failed_report(&id, q.name, why, now);
        self.end_unstarted(&id, &report, &q.replies, now);
        true
    }

    /// A second submission of a queued workflow: its outcome goes to this
    /// `reply_to` too (at most [`MAX_WAITERS`]; past that it is answered
    /// now with the queued report). False when `id` is not queued here.
    pub(super) fn add_queued_waiter(&mut self, id: &str, reply: ReplyTo) -> bool {
        let Some((id, q)) = self.queued.get_key_value(id) else {
            return false;
        };
        let id = id.clone();
        if q.replies.contains(&reply) {
            return true;
        }
        if q.replies.len() >= MAX_WAITERS {
            let report = self.queued_status(&id).expect("present above");
            self.reply_report(&reply, &report);
            return true;
        }
        self.add_reply_row(&id, &reply);
        let q = self.queued.get_mut(&id).expect("present above");
        q.replies.push(reply);
        true
    }

    /// Drops the line's entries of workflows no longer queued once they
    /// are more than half of it (cancelled ones behind a head that waits
    /// long would otherwise pile up): amortised O(1) per cancel.
    fn compact_line(&mut self) {
        if self.line.len() > 2 * self.queued.len() + 64 {
            let queued = &self.queued;
            self.line
                .retain(|(_, Reverse(seq), id)| queued.get(id).is_some_and(|q| q.seq == *seq));
        }
    }

    /// The report of a queued workflow.
    pub fn queued_status(&self, id: &str) -> Option<WorkflowReport> {
        let q = self.queued.get(id)?;
        Some(queued_report(id, q.name.clone(), q.created_at, q.tasks))
    }
}
