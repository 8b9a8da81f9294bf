//! The broker's count of the consumers of each task queue whose window
//! follows a capacity, so that a queue also consumed by workers that send
//! no heartbeats (a worker in another language beside Warren's) keeps the
//! fixed window instead of one sized for the heartbeating workers alone.
//!
//! A task of the session counts them with passive declares on a channel
//! of its own, every [`COUNT_EVERY`] and whenever the list of queues
//! changes, at most [`MAX_COUNTED`] queues a round. The list is the
//! queues live workers announce, which exist (a Warren worker declares
//! its queues before it announces them); a queue that does not (deleted,
//! or named by a forged heartbeat) closes the channel, and counting stops
//! for the session: its windows then follow the heartbeats alone.

use lapin::{Channel, options::QueueDeclareOptions};
use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};
use tokio::sync::Notify;
use warren_shared::Topology;

/// How often the consumers are counted.
pub(super) const COUNT_EVERY: Duration = Duration::from_secs(5);
/// Most queues counted in a round (the first, by name).
pub(super) const MAX_COUNTED: usize = 1_000;

/// What the counting task and the feed share.
#[derive(Debug, Default)]
pub(super) struct Census {
    /// The queues to count (set by the feed).
    queues: Vec<String>,
    /// Each counted queue's consumers at the last round.
    consumers: HashMap<String, u32>,
    /// A count changed since the feed last looked.
    pub(super) changed: bool,
}

impl Census {
    /// Sets the queues to count; true when the list changed.
    pub(super) fn set_queues(&mut self, mut queues: Vec<String>) -> bool {
        queues.sort_unstable();
        queues.truncate(MAX_COUNTED);
        if queues == self.queues {
            return false;
        }
        self.queues = queues;
        true
    }

    /// The consumers of `queue` at the last count, if it was counted.
    pub(super) fn consumers(&self, queue: &str) -> Option<u32> {
        self.consumers.get(queue).copied()
    }

    /// Records a round's counts, as the counting task does.
    #[cfg(test)]
    pub(super) fn consumers_counted(&mut self, counts: &[(&str, u32)]) {
        self.consumers = counts.iter().map(|(q, n)| ((*q).to_owned(), *n)).collect();
        self.changed = true;
    }

    /// True when a count changed since the last call.
    pub(super) fn take_changed(&mut self) -> bool {
        std::mem::take(&mut self.changed)
    }
}

/// The census, and the means to wake its counting task.
#[derive(Debug, Clone, Default)]
pub(super) struct SharedCensus {
    pub(super) census: Arc<Mutex<Census>>,
    /// Woken when the list of queues changes.
    pub(super) recount: Arc<Notify>,
}

/// Counts until the channel fails (the session's connection closed, or a
/// queue did not exist); wakes `changed` when a count changes.
pub(super) async fn count(
    ch: Channel,
    topology: Topology,
    shared: SharedCensus,
    changed: Arc<Notify>,
) {
    let passive = QueueDeclareOptions {
        passive: true,
        ..Default::default()
    };
    loop {
        let queues = shared.census.lock().expect("not poisoned").queues.clone();
        let mut counts = HashMap::with_capacity(queues.len());
        for q in queues {
            let name = topology.task_queue(&q);
            match ch
                .queue_declare(name.as_str().into(), passive, Default::default())
                .await
            {
                Ok(info) => {
                    counts.insert(q, info.consumer_count());
                }
                Err(e) => {
                    tracing::debug!(queue = %name, error = %e, "Consumers no longer counted in this session");
                    return;
                }
            }
        }
        {
            let mut census = shared.census.lock().expect("not poisoned");
            if census.consumers != counts {
                census.consumers = counts;
                census.changed = true;
                changed.notify_one();
            }
        }
        tokio::select! {
            () = tokio::time::sleep(COUNT_EVERY) => {}
            () = shared.recount.notified() => {}
        }
    }
}
