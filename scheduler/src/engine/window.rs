//! The dispatch window of each task queue: the most tasks of the queue
//! this scheduler keeps dispatched and not yet answered.
//!
//! Set explicitly (`WARREN_DISPATCH_WINDOW`), it is every queue's. Left
//! unset, it follows the queue's *capacity*, which the session hands over
//! from the workers' heartbeats ([`Engine::set_capacities`]; computed in
//! `workers.rs`): the sum of the `concurrency` of the live workers that
//! consume the queue. The window is that capacity, at most [`MAX_WINDOW`]
//! ([`adaptive_window`]): every task dispatched is in a worker's hands
//! (a one-queue worker's prefetch is its concurrency), none waits in the
//! broker queue, where the order is FIFO, and everything that waits is
//! here, in the scheduling policy's order. The price is that a slot whose
//! task ends idles for the scheduler's round trip (result, commit,
//! dispatch: a few ms) before the next arrives. A slack of tasks waiting
//! in the broker would cover that gap, and was measured and dropped: one
//! in eight more cost the no-op fan-out on 256 slots about a tenth of its
//! throughput (tasks queued in the broker cost it more work than no-op
//! slots lose by idling), brought the 20 ms tasks of the `pools` benchmark
//! only about 5 %, and on 4 slots a fifth task, chosen a round early, now
//! and then took the slot the critical path's next task needed, a whole
//! task duration lost (docs/benchmarks.md). A queue that no live worker's
//! heartbeat names (no worker yet, or workers that send none) gets the
//! fixed [`DEFAULT_WINDOW`], as before windows adapted.
//!
//! A pool of more than [`PIPELINE`] slots whose tasks are short gets less
//! than its capacity: its slots are not what limits it, the pipeline of
//! result, commit and dispatch is, and tasks in flight beyond what the
//! pipeline turns around only queue up in it (in FIFO order, delaying
//! whatever is urgent behind them). The queue's results tell how much of
//! their round trip (dispatch to result) tasks spend running
//! ([`QueueState::busy_share`](super::queue::QueueState::busy_share),
//! `s`); the window is then `2 s` times the capacity (what the running
//! tasks need, that much again in transit) but at least [`PIPELINE`]. So
//! a queue whose tasks run at least half their round trip keeps its whole
//! capacity, and 256 slots of no-op tasks get 128.
//!
//! A window that shrinks below the queue's in-flight count strands
//! nothing: the tasks in flight run and answer as before, and the queue
//! dispatches again once fewer than the new window are in flight. One that
//! grows is reported to the caller, whose loop then dispatches without
//! waiting for a result to wake it.

use super::{Engine, queue::QueueState};
use std::collections::{BTreeMap, HashMap};

/// The window of a queue no heartbeat names, and of every queue when
/// windows do not adapt and none is configured.
pub const DEFAULT_WINDOW: usize = 200;

/// The largest adaptive window: a heartbeat is anyone's to send (with the
/// broker permission to publish on the events exchange), so a worker
/// claiming a concurrency of a billion moves a queue's window only up to
/// here. An explicit `WARREN_DISPATCH_WINDOW` is not capped.
pub const MAX_WINDOW: usize = 10_000;

/// The fewest tasks in flight the window of a pool of short tasks is cut
/// to: enough for the scheduler's pipeline to reach its throughput with
/// no-op tasks (on the project's 2-core machine, 64 in flight cost the
/// fan-out about a fifth of its tasks/s, 128 nothing measurable).
pub const PIPELINE: usize = 128;

/// The window of a queue whose live workers have `capacity` slots in all,
/// whose tasks spend `busy_share` of their round trip running (`None`
/// before any result): the capacity, within [`MAX_WINDOW`], cut to
/// `2 * busy_share * capacity` but not below [`PIPELINE`]; the default
/// for a capacity of 0.
pub fn adaptive_window(capacity: u64, busy_share: Option<f64>) -> usize {
    if capacity == 0 {
        return DEFAULT_WINDOW;
    }
    let c = usize::try_from(capacity)
        .unwrap_or(usize::MAX)
        .min(MAX_WINDOW);
    match busy_share {
        Some(s) if c > PIPELINE => {
            // A float to usize cast saturates (and a NaN is 0).
            let needed = (2.0 * s.clamp(0.0, 1.0) * c as f64).ceil() as usize;
            c.min(needed.max(PIPELINE))
        }
        _ => c,
    }
}

/// Each queue's window: fixed, or adapting to the capacities last given.
#[derive(Debug)]
pub(super) struct Windows {
    /// The configured window (0 counts as 1): every queue's when windows
    /// do not adapt, else the window of a queue without capacity.
    fixed: usize,
    /// False when the window was set explicitly.
    adapt: bool,
    /// Capacity by queue, as last given (only queues with some).
    capacity: HashMap<String, u64>,
}

impl Windows {
    pub(super) fn new(fixed: usize, adapt: bool) -> Windows {
        Windows {
            fixed: fixed.max(1),
            adapt,
            capacity: HashMap::new(),
        }
    }

    /// The window of `queue`, whose tasks spend `busy_share` of their
    /// round trip running.
    pub(super) fn of(&self, queue: &str, busy_share: Option<f64>) -> usize {
        match self.capacity.get(queue) {
            Some(&c) if self.adapt => adaptive_window(c, busy_share),
            _ => self.fixed,
        }
    }
}

impl Engine {
    /// Sets every task queue's capacity: the sum of the `concurrency` of
    /// the live workers consuming it (a queue not listed has none, and
    /// gets the fixed window). Without effect when the window was set
    /// explicitly. True when some queue with ready tasks may now dispatch
    /// more than before: the caller should dispatch (a batch of nothing
    /// does) rather than wait for a result.
    pub fn set_capacities(&mut self, capacity: HashMap<String, u64>) -> bool {
        let before: Vec<(String, usize)> = self
            .queues
            .iter()
            .filter(|(name, q)| q.has_ready() && !self.pauses.queue_paused(name))
            .map(|(name, _)| (name.clone(), self.window(name)))
            .collect();
        self.windows.capacity = capacity;
        self.windows.capacity.retain(|_, c| *c > 0);
        before.into_iter().any(|(name, old)| {
            let new = self.window(&name);
            new > old && self.queues.get(&name).is_some_and(|q| q.in_flight < new)
        })
    }

    /// The dispatch window of `queue` now.
    pub fn window(&self, queue: &str) -> usize {
        let share = self.queues.get(queue).and_then(QueueState::busy_share);
        self.windows.of(queue, share)
    }

    /// The window of each task queue in use (those
    /// [`Engine::in_flight_by_queue`] lists), for the gauge.
    pub fn window_by_queue(&self) -> BTreeMap<String, u64> {
        self.queues
            .keys()
            .map(|name| (name.clone(), self.window(name) as u64))
            .collect()
    }
}
