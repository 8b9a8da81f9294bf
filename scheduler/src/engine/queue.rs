//! The ready tasks of one task queue, in the order of the scheduling
//! policy: priority, then workflows taking turns, then each workflow's own
//! order ([`DispatchOrder`]); the queue's in-flight count, which the
//! dispatch window bounds; and how much of their round trip its tasks
//! spend running ([`QueueState::busy_share`]), which the window follows
//! for short tasks (`window.rs`).

use chrono::{DateTime, Utc};
use std::{
    cmp::Ordering,
    collections::{BTreeMap, BinaryHeap, HashMap, VecDeque},
    sync::Arc,
};

/// The weight of each new sample in the running averages of
/// [`QueueState::observe`].
const SAMPLE_WEIGHT: f64 = 1.0 / 32.0;

/// Which of a workflow's ready tasks goes first.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum DispatchOrder {
    /// The task with the longest remaining path to the workflow's end
    /// (weighted by duration hints) first, then the oldest.
    #[default]
    CriticalPath,
    /// The oldest first: in the order tasks became ready.
    Fifo,
}

/// A ready task waiting for a dispatch slot in its queue.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct ReadyItem {
    /// Remaining critical path (0 in FIFO order).
    pub(super) rank: u64,
    /// When it became ready, in the engine's sequence (older first).
    pub(super) seq: u64,
    /// The task's index in its workflow.
    pub(super) task: u32,
    /// When it became ready (ms since the epoch), for the dispatch latency.
    pub(super) ready_at_ms: i64,
    /// Its task type's limit slot, if the type has one.
    pub(super) limit: Option<u16>,
    /// Taken from its type's parked tasks and counted in the slot's
    /// `released` until it is popped again.
    pub(super) released: bool,
}

impl Ord for ReadyItem {
    /// Longest remaining path first, then oldest.
    fn cmp(&self, other: &Self) -> Ordering {
        self.rank
            .cmp(&other.rank)
            .then_with(|| other.seq.cmp(&self.seq))
    }
}

impl PartialOrd for ReadyItem {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// One task queue: its ready tasks and its in-flight count.
///
/// Ready tasks are kept by priority, highest first. At one priority,
/// workflows take turns (fair share: a 10-task workflow submitted after a
/// 100,000-task one gets every other slot, not the slots left after it),
/// and each workflow's own tasks go in [`DispatchOrder`].
#[derive(Debug, Default)]
pub(super) struct QueueState {
    levels: BTreeMap<u8, Level>,
    /// Tasks of the queue dispatched and not yet answered.
    pub(super) in_flight: usize,
    /// Ready tasks in `levels` (some may have been cancelled since: they
    /// are dropped when popped).
    ready: usize,
    /// Running averages (µs) of how long the queue's tasks ran on their
    /// workers and how long from their dispatch to their result here;
    /// `None` until a result said how long it ran.
    timing: Option<(f64, f64)>,
}

/// The ready tasks of one priority in one queue.
#[derive(Debug, Default)]
struct Level {
    /// Workflows with ready tasks, in turn order.
    turns: VecDeque<Arc<str>>,
    ready: HashMap<Arc<str>, BinaryHeap<ReadyItem>>,
}

impl QueueState {
    /// Adds a ready task of `workflow` at `priority`; a workflow new to
    /// the level takes the last turn.
    pub(super) fn push(&mut self, priority: u8, workflow: &Arc<str>, item: ReadyItem) {
        self.ready += 1;
        let level = self.levels.entry(priority).or_default();
        match level.ready.get_mut(workflow) {
            Some(heap) => heap.push(item),
            None => {
                level.turns.push_back(workflow.clone());
                level
                    .ready
                    .insert(workflow.clone(), BinaryHeap::from([item]));
            }
        }
    }

    /// The next task to dispatch: the best of the workflow whose turn it
    /// is at the highest priority with ready tasks, skipping workflows
    /// that `full` says are at their concurrency limit (they keep their
    /// place in the turns).
    pub(super) fn pop(
        &mut self,
        full: impl Fn(&Arc<str>) -> bool,
    ) -> Option<(Arc<str>, ReadyItem)> {
        let mut found = None;
        for (&priority, level) in self.levels.iter_mut().rev() {
            if let Some(at) = level.turns.iter().position(|w| !full(w)) {
                found = Some((priority, at));
                break;
            }
        }
        let (priority, at) = found?;
        let level = self.levels.get_mut(&priority).expect("found above");
        let workflow = level.turns.remove(at).expect("found above");
        let heap = level.ready.get_mut(&workflow).expect("a turn has tasks");
        let item = heap.pop().expect("heaps are never left empty");
        if heap.is_empty() {
            level.ready.remove(&workflow);
        } else {
            level.turns.push_back(workflow.clone());
        }
        if level.turns.is_empty() {
            self.levels.remove(&priority);
        }
        self.ready -= 1;
        Some((workflow, item))
    }

    /// Records a result of the queue that arrived at `now`, dispatched at
    /// `dispatched_at`: its round trip, and how long it ran (`ran`, the
    /// worker's start and end; a result without them, or claiming to have
    /// run longer than its round trip, counts as the round trip), folded
    /// into running averages.
    pub(super) fn observe(
        &mut self,
        ran: (Option<DateTime<Utc>>, Option<DateTime<Utc>>),
        dispatched_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) {
        let micros = |d: chrono::TimeDelta| d.num_microseconds().unwrap_or(i64::MAX).max(0) as f64;
        let trip = micros(now - dispatched_at);
        let run = match ran {
            (Some(start), Some(end)) => micros(end - start).min(trip),
            _ => trip,
        };
        self.timing = Some(match self.timing {
            None => (run, trip),
            Some((r, t)) => (
                r + (run - r) * SAMPLE_WEIGHT,
                t + (trip - t) * SAMPLE_WEIGHT,
            ),
        });
    }

    /// The share of their round trip the queue's tasks spend running
    /// (0 to 1), from the running averages; `None` before any result.
    pub(super) fn busy_share(&self) -> Option<f64> {
        let (run, trip) = self.timing?;
        Some(if trip > 0.0 { run / trip } else { 1.0 })
    }

    /// True when some task of the queue is ready.
    pub(super) fn has_ready(&self) -> bool {
        !self.levels.is_empty()
    }

    /// How many tasks of the queue are ready.
    pub(super) fn ready_count(&self) -> usize {
        self.ready
    }

    /// Takes every ready task of `workflow` out of the queue (it ended
    /// while the queue was paused, so they would not be popped and
    /// dropped). O(workflows with ready tasks at its priority).
    pub(super) fn remove_workflow(&mut self, workflow: &Arc<str>) -> Vec<ReadyItem> {
        let mut removed = Vec::new();
        self.levels.retain(|_, level| {
            if let Some(heap) = level.ready.remove(workflow) {
                level.turns.retain(|w| w != workflow);
                removed.extend(heap.into_vec());
            }
            !level.turns.is_empty()
        });
        self.ready -= removed.len();
        removed
    }

    /// Clears the `released` mark of every ready task (the queue was
    /// paused: they no longer hold their type's places) and returns the
    /// limit slot of each that had it.
    pub(super) fn clear_released(&mut self) -> Vec<u16> {
        let mut slots = Vec::new();
        for level in self.levels.values_mut() {
            for heap in level.ready.values_mut() {
                if !heap.iter().any(|i| i.released) {
                    continue;
                }
                let mut items = std::mem::take(heap).into_vec();
                for i in &mut items {
                    if i.released {
                        i.released = false;
                        slots.extend(i.limit);
                    }
                }
                *heap = BinaryHeap::from(items);
            }
        }
        slots
    }
}
