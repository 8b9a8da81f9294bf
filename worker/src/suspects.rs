//! Suspect tasks of a worker consuming several queues: fetched one at a
//! time with `basic.get`, so that the worker never holds more than one.
//!
//! A held suspect is counted as crashed when the worker dies (the broker
//! redelivers it and `poison` raises its count), so the rule "once a task
//! is a suspect only its own crashes raise its count" needs at most one
//! suspect held per worker: the one that runs alone. A worker with one
//! queue gets that from a consumer with a prefetch of 1 on its one suspect
//! queue. With several queues a per-consumer prefetch of 1 would hold one
//! suspect per queue, and RabbitMQ 4.3 refuses the global prefetch that
//! used to share the 1 among them; so such a worker polls its suspect
//! queues in turn instead, taking the next suspect only once the last one
//! has been answered, and waits [`POLL_INTERVAL`] after a round that found
//! every suspect queue empty (suspects are rare: a few `basic.get` a
//! second per worker is the price).

use crate::{
    execute::{self, Executor},
    publish::{Received, Source},
};
use lapin::{Channel, options::BasicGetOptions};
use std::{sync::Arc, time::Duration};
use tokio::sync::mpsc;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

/// The pause after a round that found every suspect queue empty.
pub(crate) const POLL_INTERVAL: Duration = Duration::from_secs(1);

/// What the poller of one session needs.
pub(crate) struct Poller {
    pub channel: Channel,
    /// The pool's queue names (`default`), in the order they are polled.
    pub queues: Vec<String>,
    pub executor: Arc<Executor>,
    pub tracker: TaskTracker,
    pub stop: CancellationToken,
    /// Where a failed poller reports (its queues, why).
    pub ended: mpsc::Sender<(String, String)>,
}

/// Runs one suspect at a time until `stop`; reports a channel that fails.
pub(crate) async fn poll(p: Poller) {
    let topology = p.executor.publisher.topology().clone();
    let n = p.queues.len();
    let mut first = 0;
    let reason = 'session: loop {
        let mut found = None;
        for i in 0..n {
            let queue = &p.queues[(first + i) % n];
            let name = topology.suspect_queue(queue);
            let got = tokio::select! {
                biased;
                () = p.stop.cancelled() => return,
                got = p.channel.basic_get(name.as_str().into(), BasicGetOptions::default()) => got,
            };
            match got {
                Ok(Some(message)) => {
                    // The next round starts after this queue: each takes
                    // its turn.
                    first = (first + i + 1) % n;
                    found = Some((queue.clone(), message.delivery));
                    break;
                }
                Ok(None) => {}
                Err(e) => break 'session format!("basic.get on {name}: {e}"),
            }
        }
        match found {
            Some((queue, delivery)) => {
                let received = Received {
                    queue,
                    source: Source::Suspect,
                    delivery,
                };
                // Held a copy of, like a consumer's deliveries, so that a
                // lost publishing side gives it back as it came.
                p.executor.publisher.started(&received);
                let run = p
                    .tracker
                    .spawn(execute::execute(p.executor.clone(), received));
                // The next one only once this one is answered (or the
                // session stops: the drain waits for it then).
                tokio::select! {
                    biased;
                    () = p.stop.cancelled() => return,
                    _ = run => {}
                }
            }
            None => tokio::select! {
                biased;
                () = p.stop.cancelled() => return,
                () = tokio::time::sleep(POLL_INTERVAL) => {}
            },
        }
    };
    let _ = p.ended.send((p.queues.join(","), reason)).await;
}
