//! How a worker shares its `concurrency` among its task queues without a
//! global prefetch (RabbitMQ 4.3 refuses `basic.qos` with `global=true`).
//!
//! Each task queue's consumer gets a per-consumer prefetch
//! ([`task_prefetch`]), and a local semaphore of `concurrency` permits
//! ([`Slots`]) gates execution: a delivery starts only once it holds a
//! permit, so at most `concurrency` tasks run at once across every queue,
//! whatever the broker delivers.
//!
//! The prefetch trades two costs. Too small, and one busy queue among idle
//! ones cannot fill the worker. Too large, and deliveries wait inside this
//! worker for a permit while another worker of the pool has room: the
//! broker hands a queue's messages to whichever consumer has prefetch room,
//! and a delivery waiting here is room it cannot see. With one queue the
//! prefetch is `concurrency`, exactly as before (a delivery waits for a
//! permit only while the task before it, already acked, ends). With `n`
//! queues each consumer gets `ceil(2 * concurrency / n)` (at most
//! `concurrency`): two queues can each fill the worker alone, the queues
//! together always can, and whatever `n` the deliveries held beyond those
//! running are at most `concurrency + n - 1` (given back unstarted when the
//! worker stops: see `forward`).

use std::sync::Arc;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The per-consumer prefetch of each of `queues` task queues of a worker
/// running `concurrency` tasks at once.
pub(crate) fn task_prefetch(concurrency: u16, queues: usize) -> u16 {
    let c = u32::from(concurrency);
    let n = u32::try_from(queues.max(1)).unwrap_or(u32::MAX);
    let share = (2 * c).div_ceil(n).clamp(1, c.max(1));
    u16::try_from(share).unwrap_or(u16::MAX)
}

/// The suspect queue's prefetch for a worker of one queue: a suspect runs
/// alone (a worker of several queues fetches them one at a time instead:
/// see `suspects`).
pub(crate) const SUSPECT_PREFETCH: u16 = 1;

/// The worker's `concurrency` execution permits, shared by the consumers
/// of all its task queues.
#[derive(Debug, Clone)]
pub(crate) struct Slots(Arc<Semaphore>);

impl Slots {
    pub fn new(concurrency: u16) -> Slots {
        Slots(Arc::new(Semaphore::new(usize::from(concurrency))))
    }

    /// Waits for a free slot; the task runs while it holds the permit.
    /// Waiters are served in the order they asked, so queues take turns.
    pub async fn take(&self) -> OwnedSemaphorePermit {
        self.0
            .clone()
            .acquire_owned()
            .await
            .expect("the semaphore is never closed")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_queue_prefetches_its_concurrency() {
        for c in [1, 2, 8, 256, u16::MAX] {
            assert_eq!(task_prefetch(c, 1), c);
        }
    }

    #[test]
    fn two_queues_can_each_fill_the_worker() {
        assert_eq!(task_prefetch(8, 2), 8);
        assert_eq!(task_prefetch(1, 2), 1);
    }

    #[test]
    fn several_queues_fill_the_worker_and_hold_a_bounded_surplus() {
        for c in [1u16, 2, 3, 8, 100, 256, u16::MAX] {
            for n in 1..=40u64 {
                let p = u64::from(task_prefetch(c, n as usize));
                let c = u64::from(c);
                assert!((1..=c).contains(&p), "c={c} n={n}: {p}");
                // All queues busy at once can fill the worker...
                assert!(p * n >= c, "c={c} n={n}: {p}");
                // ...and what waits beyond the running tasks is bounded.
                assert!(p * n < 2 * c + n, "c={c} n={n}: {p}");
            }
        }
        assert_eq!(task_prefetch(8, 3), 6);
        assert_eq!(task_prefetch(8, 4), 4);
        assert_eq!(task_prefetch(8, 16), 1);
        assert_eq!(task_prefetch(8, 100), 1);
    }

    #[tokio::test]
    async fn slots_gate_to_concurrency() {
        let slots = Slots::new(2);
        let a = slots.take().await;
        let _b = slots.take().await;
        let third = tokio::time::timeout(std::time::Duration::from_millis(20), slots.take());
        assert!(third.await.is_err(), "a third task waits");
        drop(a);
        let _c = tokio::time::timeout(std::time::Duration::from_secs(1), slots.take())
            .await
            .expect("a freed slot is taken");
    }
}
