//! Paused task queues and task types (the `pause` and `resume` control
//! requests): their ready tasks are not dispatched, everything else flows.
//!
//! A paused queue is skipped by the dispatch: its ready tasks stay in its
//! [`QueueState`](super::queue::QueueState) in policy order, and a retry
//! that falls due joins them there. A paused type cannot be skipped that
//! way, as it shares its queues with other types: like a type at its limit
//! (`limits`), a ready task of a paused type is taken out of its queue
//! when its turn comes and held here, by workflow, so the tasks behind it
//! flow. Resuming the type puts its held tasks back into their queues,
//! whose order (priority, turns, critical path) they then take again.
//! Running tasks are not touched: they finish and their results are
//! applied as ever.
//!
//! What is paused is the store's (`pauses` table); the engine holds a
//! copy, replaced whole by [`Engine::set_pauses`] when a session starts,
//! when a `pause` or `resume` is applied, and on a partitioned store at
//! every balance tick. Its size is bounded by the store's
//! ([`MAX_PAUSES`]), and what it holds of workflows (ready tasks) is
//! dropped when they end, so it stays within the memory budget.

use super::{Engine, queue::ReadyItem, workflow::Workflow};
use crate::pauses::{MAX_PAUSES, Pause, PauseKind};
use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
};
use warren_shared::wire::TaskState;

/// The paused queues and types, and the ready tasks held for the types.
#[derive(Debug, Default)]
pub(super) struct Pauses {
    queues: HashSet<String>,
    types: HashMap<String, Held>,
}

/// The ready tasks of a paused type taken out of their queues.
#[derive(Debug, Default)]
struct Held {
    /// By workflow, so that an ending workflow's are dropped at once.
    tasks: HashMap<Arc<str>, Vec<ReadyItem>>,
    count: usize,
}

/// A paused queue or type and the ready tasks it holds back here (for a
/// queue, every ready task of the queue).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PauseUsage {
    pub kind: PauseKind,
    pub name: String,
    pub held: u64,
}

impl Pauses {
    /// True when the dispatch of task queue `name` is paused.
    pub(super) fn queue_paused(&self, name: &str) -> bool {
        !self.queues.is_empty() && self.queues.contains(name)
    }
}

impl Engine {
    /// Replaces what is paused with `pauses`: every pause of the store (at
    /// most [`MAX_PAUSES`] are taken). The held tasks of a type no longer
    /// paused go back into their queues. True when something was resumed:
    /// ready tasks may be dispatched now.
    pub fn set_pauses(&mut self, pauses: &[Pause]) -> bool {
        let mut queues = HashSet::new();
        let mut types = HashSet::new();
        for p in pauses.iter().take(MAX_PAUSES) {
            match p.kind {
                PauseKind::Queue => queues.insert(p.name.clone()),
                PauseKind::Type => types.insert(p.name.clone()),
            };
        }
        let mut resumed = self.pauses.queues.iter().any(|q| !queues.contains(q));
        for q in queues.iter().filter(|q| !self.pauses.queues.contains(*q)) {
            // Its tasks released from their type's parked ones give their
            // places back to the type's tasks of other queues.
            if let Some(state) = self.queues.get_mut(q) {
                let slots = state.clear_released();
                self.limits.unreserve_slots(&slots);
            }
        }
        self.pauses.queues = queues;
        let gone: Vec<String> = self
            .pauses
            .types
            .keys()
            .filter(|t| !types.contains(*t))
            .cloned()
            .collect();
        for kind in gone {
            resumed = true;
            if let Some(held) = self.pauses.types.remove(&kind) {
                self.put_back(held);
            }
        }
        for kind in types {
            self.pauses.types.entry(kind).or_default();
        }
        resumed
    }

    /// Puts a resumed type's held tasks back into their queues, oldest
    /// first (so workflows of one priority take their turns in the order
    /// their tasks became ready); those no longer ready (cancelled,
    /// skipped) are dropped.
    fn put_back(&mut self, held: Held) {
        let mut items: Vec<(Arc<str>, ReadyItem)> = held
            .tasks
            .into_iter()
            .flat_map(|(w, items)| items.into_iter().map(move |i| (w.clone(), i)))
            .collect();
        items.sort_by_key(|(_, i)| i.seq);
        for (workflow, item) in items {
            let Some(wf) = self.workflows.get(&workflow) else {
                continue;
            };
            let task = item.task as usize;
            if wf.tasks[task].state != TaskState::Ready {
                continue;
            }
            self.queues
                .entry(wf.specs[task].queue.clone())
                .or_default()
                .push(wf.priority, &workflow, item);
        }
    }

    /// A ready task popped from its queue for dispatch: held when its type
    /// is paused (`None`), else given back to be dispatched.
    pub(super) fn hold_if_paused(
        &mut self,
        workflow: &Arc<str>,
        item: ReadyItem,
    ) -> Option<ReadyItem> {
        if self.pauses.types.is_empty() {
            return Some(item);
        }
        let Some(wf) = self.workflows.get(workflow) else {
            return Some(item); // ended: the dispatch drops it
        };
        let Some(held) = self
            .pauses
            .types
            .get_mut(&wf.specs[item.task as usize].kind)
        else {
            return Some(item);
        };
        held.tasks.entry(workflow.clone()).or_default().push(item);
        held.count += 1;
        None
    }

    /// An ended workflow's ready tasks held by pauses are dropped: those
    /// of paused queues (which are not popped while paused) and those
    /// held for paused types.
    pub(super) fn drop_paused_ready(&mut self, wf: &Workflow) {
        if !self.pauses.queues.is_empty() {
            let used: HashSet<&str> = wf.specs.iter().map(|s| s.queue.as_str()).collect();
            for q in used {
                if self.pauses.queues.contains(q)
                    && let Some(state) = self.queues.get_mut(q)
                {
                    for mut item in state.remove_workflow(&wf.id) {
                        self.limits.unreserve(&mut item);
                    }
                }
            }
        }
        for held in self.pauses.types.values_mut() {
            if let Some(items) = held.tasks.remove(&wf.id) {
                held.count -= items.len();
            }
        }
    }

    /// Each paused queue and type, sorted, with the ready tasks it holds
    /// back here.
    pub fn pause_usage(&self) -> Vec<PauseUsage> {
        let mut out: Vec<PauseUsage> = self
            .pauses
            .queues
            .iter()
            .map(|q| PauseUsage {
                kind: PauseKind::Queue,
                name: q.clone(),
                held: self.queues.get(q).map_or(0, |s| s.ready_count() as u64),
            })
            .chain(self.pauses.types.iter().map(|(t, held)| PauseUsage {
                kind: PauseKind::Type,
                name: t.clone(),
                held: held.count as u64,
            }))
            .collect();
        out.sort_by(|a, b| (a.kind, &a.name).cmp(&(b.kind, &b.name)));
        out
    }
}
