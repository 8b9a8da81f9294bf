//! Results published in batches when they come faster than the broker
//! confirms them.
//!
//! Every result costs the broker the same work whatever its size: a
//! publish, a route, a persistent enqueue, a confirm, a delivery to the
//! scheduler and its ack. Short tasks make results faster than one
//! confirm round trip, so they are sent together: a `warren.results`
//! message whose body is a JSON array of results (docs/protocol.md, Task
//! result), one broker message for many tasks.
//!
//! The batching adds no wait of its own. A result is published at once
//! while fewer than [`MAX_IN_FLIGHT`] messages of results await their
//! confirm; only when that many are in flight do new results queue, and
//! the next message takes every result queued (up to the count and byte
//! bounds, per routing key). So an idle worker sends each result alone, as
//! a plain `warren.result` message, and a busy one sends batches as large
//! as the confirm round trip lets results pile up.
//!
//! The rule "ack only after what the task caused is confirmed" holds per
//! task: each task's [`Publisher`](crate::publish::Publisher) call waits for
//! the [`Outcome`] of the message that carried its result, and acks,
//! requeues or holds its delivery by it.

use crate::nacks;
use lapin::Channel;
use tokio::{
    sync::{mpsc, oneshot},
    task::JoinSet,
};
use warren_shared::{
    amqp,
    wire::{MAX_RESULTS_PER_MESSAGE, TYPE_RESULT, TYPE_RESULTS},
};

/// Messages of results awaiting their confirm before results queue for the
/// next one. Two keep the broker busy (one is written while the other is
/// confirmed) and let results pile up behind them under load.
pub(crate) const MAX_IN_FLIGHT: usize = 2;

/// What became of the message that carried a result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// The broker confirmed it: the task may be acked.
    Confirmed,
    /// The broker refused it (a nack that outlasted `nacks`' retries, no
    /// queue to route to): the task goes back to its queue.
    Refused(String),
    /// The publishing channel is gone: the task is held for the session to
    /// give back.
    Lost(String),
}

/// One result to publish: its JSON body (already within the worker's
/// result bound), its routing key on the results exchange, and its
/// message id.
pub(crate) struct Pending {
    pub key: String,
    pub body: Vec<u8>,
    pub message_id: String,
    pub done: oneshot::Sender<Outcome>,
}

/// Handle to the task that publishes one session's results.
#[derive(Clone)]
pub(crate) struct Batcher {
    tx: mpsc::UnboundedSender<Pending>,
}

/// Bounds of one message of results.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Bounds {
    /// Most results in one message (`WARREN_RESULT_BATCH`, at most
    /// [`MAX_RESULTS_PER_MESSAGE`]); 1 sends every result alone.
    pub count: usize,
    /// Most bytes of one message's body: the worker's result bound, which
    /// the scheduler applies to the whole message.
    pub bytes: usize,
}

impl Batcher {
    /// Starts publishing on `channel` (in confirm mode) to `exchange`; the
    /// task ends, every message confirmed or failed, once every handle is
    /// dropped.
    pub fn spawn(channel: Channel, exchange: String, bounds: Bounds) -> Batcher {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(rx, channel, exchange, bounds));
        Batcher { tx }
    }

    /// Publishes `body` and resolves with what became of the message that
    /// carried it.
    pub async fn publish(&self, key: &str, body: Vec<u8>, message_id: String) -> Outcome {
        let (done, outcome) = oneshot::channel();
        let pending = Pending {
            key: key.to_owned(),
            body,
            message_id,
            done,
        };
        if self.tx.send(pending).is_err() {
            return Outcome::Lost("the session's result publisher has ended".into());
        }
        outcome
            .await
            .unwrap_or_else(|_| Outcome::Lost("the session's result publisher has ended".into()))
    }
}

/// Most results taken off the channel at once (more wait there).
const RECEIVE_AT_ONCE: usize = 4096;

/// Publishes what comes, [`MAX_IN_FLIGHT`] messages at most awaiting their
/// confirm (any number when each result goes alone). At the top of each
/// turn either nothing is queued or that many are in flight, so some
/// branch of the `select!` is always enabled.
async fn run(
    mut rx: mpsc::UnboundedReceiver<Pending>,
    channel: Channel,
    exchange: String,
    bounds: Bounds,
) {
    // Sending every result alone (a count of 1), nothing is gained by
    // holding results back: each goes at once, as many in flight as come.
    let most = if bounds.count > 1 {
        MAX_IN_FLIGHT
    } else {
        usize::MAX
    };
    let mut in_flight = JoinSet::new();
    let mut queued: Vec<Pending> = Vec::new();
    let mut open = true;
    while open || !queued.is_empty() || !in_flight.is_empty() {
        tokio::select! {
            biased;
            Some(_) = in_flight.join_next(), if !in_flight.is_empty() => {}
            n = rx.recv_many(&mut queued, RECEIVE_AT_ONCE), if open && in_flight.len() < most => {
                open = n > 0;
            }
        }
        // Queued results wait only while `most` messages are in flight.
        while in_flight.len() < most && !queued.is_empty() {
            let batch = take_batch(&mut queued, bounds);
            in_flight.spawn(send(channel.clone(), exchange.clone(), batch));
        }
    }
}

/// Takes the next message's results from `queued`: the first result's
/// routing key, the results with that key in arrival order, up to the
/// bounds. The first is always taken (each body is within the byte bound
/// on its own).
fn take_batch(queued: &mut Vec<Pending>, bounds: Bounds) -> Vec<Pending> {
    let key = queued[0].key.clone();
    let mut bytes = 1; // "[" and "]", less the first result's comma
    let mut taken: Vec<Pending> = Vec::new();
    let mut rest = Vec::with_capacity(queued.len());
    // Once one result of `key` is left behind, so are the later ones: a
    // key's results keep their order.
    let mut full = false;
    for p in queued.drain(..) {
        if p.key == key && !full {
            let fits = taken.is_empty()
                || (taken.len() < bounds.count && bytes + 1 + p.body.len() <= bounds.bytes);
            if fits {
                bytes += 1 + p.body.len();
                taken.push(p);
                continue;
            }
            full = true;
        }
        rest.push(p);
    }
    *queued = rest;
    taken
}

/// The body of a message of `bodies`: the one result as it is, or a JSON
/// array of them.
pub(crate) fn batch_body(bodies: &[&[u8]]) -> Vec<u8> {
    if let [one] = bodies {
        return one.to_vec();
    }
    let len = bodies.iter().map(|b| b.len() + 1).sum::<usize>() + 1;
    let mut out = Vec::with_capacity(len);
    out.push(b'[');
    for (i, b) in bodies.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b);
    }
    out.push(b']');
    out
}

/// Publishes one message of `batch` (mandatory, confirmed) and tells each
/// result's caller what became of it.
async fn send(channel: Channel, exchange: String, batch: Vec<Pending>) {
    let bodies: Vec<&[u8]> = batch.iter().map(|p| p.body.as_slice()).collect();
    let body = batch_body(&bodies);
    let key = batch[0].key.as_str();
    let props = if batch.len() == 1 {
        amqp::with_message_id(
            amqp::json_properties().with_type(TYPE_RESULT.into()),
            &batch[0].message_id,
        )
    } else {
        amqp::json_properties().with_type(TYPE_RESULTS.into())
    };
    debug_assert!(batch.len() <= MAX_RESULTS_PER_MESSAGE);
    // A nack is sent again for a while (`nacks`), the batch's tasks held.
    let sent = nacks::through_nacks(
        || channel.status().connected(),
        || async {
            let confirm = amqp::publish(
                &channel,
                amqp::Publish {
                    exchange: &exchange,
                    routing_key: key,
                    mandatory: true,
                    body: &body,
                    properties: props.clone(),
                },
            )
            .await?;
            amqp::confirmed(confirm, &exchange, key).await
        },
    )
    .await;
    let outcome = match sent {
        Ok(()) => Outcome::Confirmed,
        Err(e) if !channel.status().connected() => Outcome::Lost(e.to_string()),
        Err(e) => Outcome::Refused(e.to_string()),
    };
    for p in batch {
        // A caller that is gone (its task aborted) needs no answer.
        let _ = p.done.send(outcome.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(key: &str, body: &str) -> (Pending, oneshot::Receiver<Outcome>) {
        let (done, rx) = oneshot::channel();
        (
            Pending {
                key: key.into(),
                body: body.as_bytes().to_vec(),
                message_id: String::new(),
                done,
            },
            rx,
        )
    }

    fn bodies(batch: &[Pending]) -> Vec<&str> {
        batch
            .iter()
            .map(|p| std::str::from_utf8(&p.body).unwrap())
            .collect()
    }

    const WIDE: Bounds = Bounds {
        count: 100,
        bytes: 1 << 20,
    };

    #[test]
    fn one_result_goes_as_it_is_and_several_as_an_array() {
        assert_eq!(batch_body(&[b"{\"a\":1}"]), b"{\"a\":1}");
        let body = batch_body(&[b"{\"a\":1}", b"{\"b\":2}", b"{}"]);
        assert_eq!(body, b"[{\"a\":1},{\"b\":2},{}]");
        let parsed: Vec<serde_json::Value> = serde_json::from_slice(&body).unwrap();
        assert_eq!(parsed.len(), 3);
    }

    #[test]
    fn a_batch_takes_one_key_in_arrival_order_and_leaves_the_rest_in_order() {
        let mut q: Vec<Pending> = [("r.0", "1"), ("r.1", "2"), ("r.0", "3"), ("r.1", "4")]
            .into_iter()
            .map(|(k, b)| pending(k, b).0)
            .collect();
        let first = take_batch(&mut q, WIDE);
        assert_eq!(bodies(&first), ["1", "3"]);
        assert_eq!(bodies(&q), ["2", "4"]);
        let second = take_batch(&mut q, WIDE);
        assert_eq!(bodies(&second), ["2", "4"]);
        assert!(q.is_empty());
    }

    #[test]
    fn a_batch_stops_at_its_count_and_its_bytes_without_reordering_a_key() {
        let mut q: Vec<Pending> = (0..5).map(|i| pending("k", &i.to_string()).0).collect();
        let b = take_batch(
            &mut q,
            Bounds {
                count: 2,
                bytes: 1 << 20,
            },
        );
        assert_eq!(bodies(&b), ["0", "1"]);
        assert_eq!(bodies(&q), ["2", "3", "4"]);

        // "[" + "aaaa" + "," + "bbbb" + "]" = 11 bytes; a bound of 10 takes one.
        let mut q: Vec<Pending> = ["aaaa", "bbbb", "c"]
            .into_iter()
            .map(|b| pending("k", b).0)
            .collect();
        let b = take_batch(
            &mut q,
            Bounds {
                count: 10,
                bytes: 10,
            },
        );
        assert_eq!(bodies(&b), ["aaaa"], "bbbb would pass 10 bytes");
        assert_eq!(bodies(&q), ["bbbb", "c"], "c waits behind bbbb: order kept");
        let b = take_batch(
            &mut q,
            Bounds {
                count: 10,
                bytes: 11,
            },
        );
        assert_eq!(bodies(&b), ["bbbb", "c"]);
        assert_eq!(batch_body(&[b"bbbb", b"c"]).len(), 8);
    }

    #[test]
    fn a_body_over_the_byte_bound_still_goes_alone() {
        let mut q = vec![pending("k", "0123456789").0, pending("k", "x").0];
        let b = take_batch(
            &mut q,
            Bounds {
                count: 10,
                bytes: 4,
            },
        );
        assert_eq!(bodies(&b), ["0123456789"]);
        assert_eq!(bodies(&q), ["x"]);
    }
}
