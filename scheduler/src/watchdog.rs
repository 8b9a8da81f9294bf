//! The watchdog of a scheduler on a partitioned store ([`Watchdog`]): the
//! loop beats at every turn (at least every balance tick, 100 ms, while a
//! broker session runs); when it has not beaten for the configured time
//! (`WARREN_WATCHDOG`, default 10 s) while this scheduler owns partitions,
//! the watchdog gives them up ([`Partitions::abandon`]) so that the other
//! schedulers take them over, rather than holding them for as long as the
//! stall lasts.
//!
//! A stall is anything that keeps the loop waiting without turning: a
//! store call stuck on a connection whose peer went silent, a broker that
//! cannot be reached (no session, so no loop), a bug. A long step that
//! keeps the thread busy (a huge request on a slow machine) is not one:
//! this task shares the loop's thread, and a tick that comes far later
//! than asked counts as progress. The loop, if it turns again,
//! fails with `StoreError::Fenced`; the scheduler steps down, waits until
//! it can reach the broker, and leads again.
//!
//! The database keeps a watch from its side: the lock connection's
//! `idle_session_timeout` is the same time (`store/postgres/timeouts.rs`),
//! and the lock connection is pinged from a thread of its own
//! (`store/postgres/keeper.rs`) until this watchdog bites, so the server
//! ends the session of a process frozen whole or behind a network that
//! went silent, where this task cannot help.

use crate::store::Partitions;
use std::{
    sync::Mutex,
    time::{Duration, Instant},
};
use tokio_util::sync::CancellationToken;

/// When the loop last turned, and how long it may go without.
#[derive(Debug)]
pub struct Watchdog {
    last: Mutex<Instant>,
    limit: Duration,
}

impl Watchdog {
    /// A watchdog that bites after `limit` without a beat (zero: never).
    pub fn new(limit: Duration) -> Watchdog {
        Watchdog {
            last: Mutex::new(Instant::now()),
            limit,
        }
    }

    /// The loop made progress.
    pub fn beat(&self) {
        *self.last.lock().expect("not poisoned") = Instant::now();
    }

    /// How long since the last beat, when that is past the limit.
    pub fn stalled(&self, now: Instant) -> Option<Duration> {
        let since = now.saturating_duration_since(*self.last.lock().expect("not poisoned"));
        (!self.limit.is_zero() && since >= self.limit).then_some(since)
    }

    /// Watches `parts` until `stop`: abandons them when this scheduler
    /// leads and the loop has stalled. Checks ten times per limit.
    pub async fn watch(&self, parts: &Partitions, stop: &CancellationToken) {
        if self.limit.is_zero() {
            return;
        }
        let every = (self.limit / 10).max(Duration::from_millis(50));
        let mut last_tick = Instant::now();
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(every) => {}
            }
            let now = Instant::now();
            // This task shares the loop's thread: a tick far later than
            // asked means the thread was busy (a long step), not waiting.
            // Busy is progress; only a loop stuck waiting is a stall.
            if busy(now.saturating_duration_since(last_tick), every) {
                self.beat();
            }
            last_tick = now;
            if !parts.is_leading() {
                continue;
            }
            if let Some(since) = self.stalled(Instant::now()) {
                tracing::error!(
                    stalled_ms = since.as_millis() as u64,
                    partitions = ?parts.owned(),
                    "The scheduler's loop has stalled; giving its partitions up to the other schedulers"
                );
                parts.abandon();
            }
        }
    }
}

/// True when a tick asked for after `every` came `gap` later: the thread
/// was kept busy in between.
fn busy(gap: Duration, every: Duration) -> bool {
    gap > every * 3 + Duration::from_millis(500)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_late_tick_means_a_busy_thread() {
        let every = Duration::from_secs(1);
        assert!(!busy(Duration::from_millis(1100), every));
        assert!(!busy(Duration::from_millis(3400), every));
        assert!(busy(Duration::from_secs(12), every));
    }

    #[test]
    fn bites_only_after_the_limit_without_a_beat() {
        let w = Watchdog::new(Duration::from_secs(10));
        let t0 = Instant::now();
        w.beat();
        assert_eq!(w.stalled(t0), None);
        assert_eq!(w.stalled(t0 + Duration::from_secs(9)), None);
        assert!(w.stalled(t0 + Duration::from_secs(11)).is_some());
        let off = Watchdog::new(Duration::ZERO);
        assert_eq!(off.stalled(t0 + Duration::from_secs(3600)), None);
    }
}
