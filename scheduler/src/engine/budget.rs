//! What the engine holds, and its bounds: the memory budget (tasks and
//! bytes of the running workflows, the working set) that queued
//! workflows wait for (`queued.rs`), and the
//! distinct task queues the running workflows use (each a durable queue on
//! the broker, a map entry here and a metrics series), which a new
//! workflow may not push past `max_queues`.

use super::{Counters, Engine, workflow::Workflow};
use crate::validate::{Rejected, ValidWorkflow};
use std::collections::HashSet;
use warren_shared::wire::Rejection;

/// The share of the memory budget that workflows of priority 0 may start
/// into, in percent; each priority above adds [`SHARE_STEP`], so priority
/// 9 has the whole budget. The room above a priority's share is what lets
/// a more urgent workflow start at once in front of a backlog of less
/// urgent ones, without taking anything from them.
pub const BASE_SHARE: usize = 82;
/// See [`BASE_SHARE`].
pub const SHARE_STEP: usize = 2;

/// The part of `limit` that workflows of `priority` may fill.
pub(super) fn share(limit: usize, priority: u8) -> usize {
    let percent = BASE_SHARE + SHARE_STEP * priority.min(9) as usize;
    (limit as u128 * percent as u128 / 100) as usize
}

impl Engine {
    /// True when a workflow of `priority`, `tasks` tasks and a `bytes`-byte
    /// request fits in the memory budget now, beside `reserved` (tasks,
    /// bytes) about to start: within its priority's share of the budget
    /// ([`share`]). An engine holding nothing always has room for one,
    /// so that a workflow larger than the budget still runs, alone.
    pub fn has_room(&self, priority: u8, tasks: usize, bytes: usize) -> bool {
        self.has_room_beside(priority, (tasks, bytes), (0, 0))
    }

    pub(super) fn has_room_beside(
        &self,
        priority: u8,
        (tasks, bytes): (usize, usize),
        reserved: (usize, usize),
    ) -> bool {
        (self.workflows.is_empty() && reserved == (0, 0))
            || (self
                .held_tasks
                .saturating_add(reserved.0)
                .saturating_add(tasks)
                <= share(self.bounds.max_active_tasks, priority)
                && self
                    .held_bytes
                    .saturating_add(reserved.1)
                    .saturating_add(bytes)
                    <= share(self.bounds.max_active_bytes, priority))
    }

    /// A running workflow starts being held: its tasks, its bytes, and its
    /// queues.
    pub(super) fn hold(&mut self, wf: &Workflow) {
        self.held_tasks += wf.tasks.len();
        self.held_bytes += wf.held_bytes;
        for q in distinct_queues(wf.specs.iter().map(|s| s.queue.as_str())) {
            *self.queue_users.entry(q.to_owned()).or_default() += 1;
        }
        self.publish_held();
    }

    /// `tasks` more held by a running workflow (a mapped task's
    /// instances).
    pub(super) fn hold_tasks(&mut self, tasks: usize) {
        self.held_tasks += tasks;
        self.publish_held();
    }

    /// `bytes` more held by a running workflow (an output received).
    pub(super) fn hold_bytes(&mut self, bytes: usize) {
        self.held_bytes += bytes;
        self.publish_held();
    }

    /// A workflow that ended is no longer held. A queue no running
    /// workflow uses is forgotten once nothing of it is in flight or ready.
    pub(super) fn release(&mut self, wf: &Workflow) {
        // Queues may have freed: the line may try again.
        self.line_blocked = false;
        self.held_tasks = self.held_tasks.saturating_sub(wf.tasks.len());
        self.held_bytes = self.held_bytes.saturating_sub(wf.held_bytes);
        for q in distinct_queues(wf.specs.iter().map(|s| s.queue.as_str())) {
            if let Some(n) = self.queue_users.get_mut(q) {
                *n -= 1;
                if *n == 0 {
                    self.queue_users.remove(q);
                    self.unused_queues.push(q.to_owned());
                }
            }
        }
        self.publish_held();
    }

    /// Forgets the queues no running workflow uses any more that are idle
    /// (after a dispatch, never during one).
    pub(super) fn forget_unused_queues(&mut self) {
        for q in std::mem::take(&mut self.unused_queues) {
            self.forget_queue_if_idle(&q);
        }
    }

    /// Drops a queue's entry when no running workflow uses it and nothing
    /// of it is in flight or ready.
    pub(super) fn forget_queue_if_idle(&mut self, q: &str) {
        if !self.queue_users.contains_key(q)
            && self
                .queues
                .get(q)
                .is_some_and(|s| s.in_flight == 0 && !s.has_ready())
        {
            self.queues.remove(q);
        }
    }

    /// The rejection of a workflow that would bring the distinct task
    /// queues of running workflows past `max_queues`; `None` when it fits.
    pub fn queue_bound_rejection(&self, v: &ValidWorkflow) -> Option<Rejected> {
        let new = distinct_queues(v.tasks.iter().map(|t| t.queue.as_str()))
            .into_iter()
            .filter(|q| !self.queue_users.contains_key(*q))
            .count();
        if new == 0 || self.queue_users.len() + new <= self.bounds.max_queues {
            return None;
        }
        Some(Rejected {
            id: v.id.clone(),
            name: v.name.clone(),
            errors: vec![Rejection {
                code: "too_many_queues".into(),
                message: format!(
                    "the workflow uses {new} task queues no running workflow uses; with the {} in use that passes the limit of {} (WARREN_MAX_QUEUES)",
                    self.queue_users.len(),
                    self.bounds.max_queues
                ),
                task: None,
            }],
        })
    }

    fn publish_held(&self) {
        Counters::set(&self.counters.active_tasks, self.held_tasks as u64);
        Counters::set(&self.counters.active_bytes, self.held_bytes as u64);
    }
}

fn distinct_queues<'a>(queues: impl Iterator<Item = &'a str>) -> HashSet<&'a str> {
    queues.collect()
}
