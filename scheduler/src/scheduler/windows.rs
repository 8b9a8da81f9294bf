//! Feeds the engine each task queue's capacity from the worker directory,
//! which the dispatch windows follow (`engine/window.rs`).
//!
//! The directory is read when a heartbeat changed a capacity (a worker
//! came, came back, stopped, or changed its concurrency or queues) and
//! when a live worker's time to be lost has come: at once while a few
//! changes come together ([`BURST`]), then at most once per
//! [`MIN_INTERVAL`], so a flood of heartbeats costs one pass over the
//! (bounded) directory per interval, not one per heartbeat. The engine
//! keeps no link to the directory, so it stays testable without a broker.
//!
//! A queue with more consumers on the broker than live workers announce
//! (`census`: some send no heartbeats) is handed over without a capacity,
//! so it keeps the fixed window.

use super::census::{self, SharedCensus};
use crate::{engine::Engine, workers::SharedWorkers};
use chrono::{DateTime, Utc};
use std::{sync::Arc, time::Duration};
use tokio::{sync::Notify, task::JoinHandle, time::Instant};

/// Reads of the directory allowed at once; one more is allowed per
/// [`MIN_INTERVAL`].
pub(super) const BURST: u32 = 4;
/// The time it takes to earn one more read.
pub(super) const MIN_INTERVAL: Duration = Duration::from_millis(500);

/// When to read the directory next, and the means to be woken for it.
pub(super) struct Feed {
    workers: SharedWorkers,
    changes: Arc<Notify>,
    /// Reads allowed now (at most `BURST`), as of `earned_at`.
    allowed: u32,
    earned_at: Instant,
    /// When it must be read again without a heartbeat: a live worker's
    /// time to be lost, or a change that came when no read was allowed.
    next: Option<Instant>,
    /// Not yet read in this session.
    first: bool,
    /// The broker's count of each queue's consumers, and the task that
    /// counts them (stopped with the feed).
    census: SharedCensus,
    counting: Option<JoinHandle<()>>,
}

impl Drop for Feed {
    fn drop(&mut self) {
        if let Some(task) = self.counting.take() {
            task.abort();
        }
    }
}

impl Feed {
    /// A feed that does not count consumers (nothing counted: every
    /// capacity is handed over as the heartbeats give it).
    pub(super) fn new(workers: SharedWorkers) -> Feed {
        let changes = workers.lock().expect("not poisoned").changes();
        Feed {
            workers,
            changes,
            allowed: BURST,
            earned_at: Instant::now(),
            next: None,
            first: true,
            census: SharedCensus::default(),
            counting: None,
        }
    }

    /// A feed whose queues' consumers are counted on `ch`.
    pub(super) fn counting(
        workers: SharedWorkers,
        ch: lapin::Channel,
        topology: warren_shared::Topology,
    ) -> Feed {
        let mut feed = Feed::new(workers);
        let task = census::count(ch, topology, feed.census.clone(), feed.changes.clone());
        feed.counting = Some(tokio::spawn(task));
        feed
    }

    /// Hands the engine the capacities if they may have changed; true when
    /// a window grew over ready tasks (the loop should dispatch).
    pub(super) fn update(&mut self, engine: &mut Engine) -> bool {
        self.update_at(engine, Instant::now(), Utc::now())
    }

    /// [`Feed::update`] at `now` (`wall` on the wall clock).
    fn update_at(&mut self, engine: &mut Engine, now: Instant, wall: DateTime<Utc>) -> bool {
        let changed = self
            .workers
            .lock()
            .expect("not poisoned")
            .capacity_changed();
        let counted = self
            .census
            .census
            .lock()
            .expect("not poisoned")
            .take_changed();
        let due = self.first || changed || counted || self.next.is_some_and(|n| n <= now);
        if !due {
            return false;
        }
        let earned = (now - self.earned_at).as_millis() / MIN_INTERVAL.as_millis();
        let earned = u32::try_from(earned).unwrap_or(u32::MAX);
        if self.allowed.saturating_add(earned) >= BURST {
            (self.allowed, self.earned_at) = (BURST, now);
        } else {
            self.allowed += earned;
            self.earned_at += MIN_INTERVAL * earned;
        }
        if self.allowed == 0 {
            // A count that changed is read with the next capacities.
            self.census.census.lock().expect("not poisoned").changed |= counted;
            self.next = Some(self.earned_at + MIN_INTERVAL);
            return false;
        }
        self.allowed -= 1;
        self.first = false;
        let mut capacity = self.workers.lock().expect("not poisoned").capacity(wall);
        self.next = capacity
            .next_lost
            .map(|at| now + (at - wall).to_std().unwrap_or(Duration::ZERO));
        let mut census = self.census.census.lock().expect("not poisoned");
        // Consumers the heartbeats do not account for: the fixed window.
        capacity.by_queue.retain(|q, _| {
            let announced = capacity.workers.get(q).copied().unwrap_or(0);
            census.consumers(q).is_none_or(|n| n <= announced)
        });
        if census.set_queues(capacity.workers.keys().cloned().collect()) {
            self.census.recount.notify_one();
        }
        drop(census);
        engine.set_capacities(capacity.by_queue)
    }

    /// When [`Feed::update`] is due without a heartbeat.
    pub(super) fn next(&self) -> Option<Instant> {
        self.next
    }

    /// Resolves when a heartbeat changes a capacity (or has since the
    /// last call).
    pub(super) async fn changed(&self) {
        self.changes.notified().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{DEFAULT_WINDOW, EngineConfig};
    use warren_shared::wire::{WorkerHeartbeat, WorkerState};

    fn beat(id: &str, concurrency: u32, sent: DateTime<Utc>) -> WorkerHeartbeat {
        WorkerHeartbeat {
            worker_id: id.into(),
            host: "h".into(),
            pid: 1,
            queues: vec!["default".into()],
            concurrency,
            in_flight: 0,
            version: "test".into(),
            interval_ms: 1_000,
            state: WorkerState::Running,
            started_at: None,
            sent_at: sent,
        }
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn changes_are_read_at_once_in_a_burst_then_once_per_interval() {
        let workers = SharedWorkers::default();
        let mut engine = Engine::new(EngineConfig::default(), Arc::default());
        let mut feed = Feed::new(workers.clone());
        let (t0, wall) = (Instant::now(), Utc::now());
        let record = |id: &str, slots| {
            workers.lock().unwrap().record(beat(id, slots, wall), wall);
        };
        // The first turn reads, whatever happened.
        feed.update_at(&mut engine, t0, wall);
        assert_eq!(engine.window("default"), 200, "no worker yet");
        assert!(!feed.update_at(&mut engine, t0, wall), "nothing changed");
        // Three workers come, each read at once: with the first read,
        // the burst of four is spent.
        for (i, slots) in [(1u64, 4u32), (2, 8), (3, 16)] {
            record(&format!("w{i}"), slots);
            feed.update_at(&mut engine, t0 + ms(i), wall);
        }
        assert_eq!(engine.window("default"), 28);
        // A fourth waits for the next read to be earned, 500 ms on.
        record("w4", 32);
        feed.update_at(&mut engine, t0 + ms(10), wall);
        assert_eq!(engine.window("default"), 28, "not read yet");
        assert_eq!(feed.next(), Some(t0 + MIN_INTERVAL));
        feed.update_at(&mut engine, t0 + ms(499), wall);
        assert_eq!(engine.window("default"), 28);
        feed.update_at(&mut engine, t0 + MIN_INTERVAL, wall);
        assert_eq!(engine.window("default"), 60);
        // Then nothing is due until the first worker may be lost, three of
        // its 1 s intervals after its heartbeat.
        assert_eq!(feed.next(), Some(t0 + MIN_INTERVAL + ms(3_000)));
        let lost = t0 + MIN_INTERVAL + ms(3_000);
        feed.update_at(
            &mut engine,
            lost,
            wall + chrono::TimeDelta::milliseconds(3_000),
        );
        assert_eq!(engine.window("default"), DEFAULT_WINDOW, "all lost");
        assert_eq!(feed.next(), None);
    }

    #[test]
    fn a_queue_with_consumers_the_heartbeats_do_not_announce_keeps_the_fixed_window() {
        let workers = SharedWorkers::default();
        let mut engine = Engine::new(EngineConfig::default(), Arc::default());
        let mut feed = Feed::new(workers.clone());
        let (t0, wall) = (Instant::now(), Utc::now());
        workers.lock().unwrap().record(beat("w1", 4, wall), wall);
        feed.update_at(&mut engine, t0, wall);
        assert_eq!(engine.window("default"), 4);
        // The queues to count are those live workers announce.
        assert_eq!(
            feed.census.census.lock().unwrap().consumers("default"),
            None
        );
        let census = feed.census.census.clone();
        let count = |n: u32| {
            let mut c = census.lock().unwrap();
            c.set_queues(vec!["default".into()]);
            c.consumers_counted(&[("default", n)]);
        };
        // The broker counts two consumers for one announced worker (the
        // other sends no heartbeats): the fixed window, as before.
        count(2);
        assert!(!feed.update_at(&mut engine, t0 + ms(1), wall));
        assert_eq!(engine.window("default"), DEFAULT_WINDOW);
        // The silent one goes: the window follows the capacity again.
        count(1);
        feed.update_at(&mut engine, t0 + ms(2), wall);
        assert_eq!(engine.window("default"), 4);
        // Fewer consumers than announced workers (one reconnecting) is no
        // reason to leave the capacity.
        count(0);
        feed.update_at(&mut engine, t0 + ms(3), wall);
        assert_eq!(engine.window("default"), 4);
    }
}
