//! Acks of one channel's deliveries, coalesced.
//!
//! A worker acks every task after its result is confirmed. Confirms come
//! from the broker in bursts (one `multiple` confirm covers many results),
//! so many tasks become ready to ack at the same moment. Acking each on its
//! own costs one frame and one broker operation per task; [`Settler`] turns
//! each contiguous run of them into one `basic.ack` with `multiple` set.
//!
//! Safety rests on one fact of AMQP: a channel's delivery tags are 1, 2, 3,
//! ... in delivery order, and a `multiple` ack of tag `t` acks every
//! unsettled delivery up to `t`. So a multiple ack is sent only up to a tag
//! below which every delivery is known to be settled already (acked or
//! rejected by this worker). Acks that are not contiguous with that floor go
//! out one by one at once, never held back: a task acked late would hold a
//! prefetch slot, and a slow task must not stall the acks of fast ones.

use lapin::{Acker, options::BasicAckOptions};
use std::collections::{BTreeSet, HashMap};
use tokio::sync::mpsc;

/// What to send for one burst of acks.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Plan {
    /// Ack this tag with `multiple`: it and every delivery below it.
    pub multiple: Option<u64>,
    /// Ack these tags one by one.
    pub single: Vec<u64>,
}

/// Which deliveries of a channel are settled.
#[derive(Debug)]
pub(crate) struct Ledger {
    /// Every tag below this one is settled.
    floor: u64,
    /// Settled tags above the floor.
    above: BTreeSet<u64>,
}

impl Default for Ledger {
    fn default() -> Self {
        // Delivery tags start at 1 on every channel.
        Ledger {
            floor: 1,
            above: BTreeSet::new(),
        }
    }
}

impl Ledger {
    /// Records a delivery settled some other way (rejected).
    pub fn settled(&mut self, tag: u64) {
        self.above.insert(tag);
        self.advance(&BTreeSet::new());
    }

    /// Plans the acks of `tags`, which must be unsettled deliveries, and
    /// records them as settled.
    pub fn plan(&mut self, tags: &[u64]) -> Plan {
        let burst: BTreeSet<u64> = tags.iter().copied().collect();
        let multiple = self.advance(&burst);
        let single: Vec<u64> = burst.range(self.floor..).copied().collect();
        self.above.extend(&single);
        Plan { multiple, single }
    }

    /// Raises the floor over `burst` and over tags settled before; returns
    /// the highest tag of `burst` it passed, if any.
    fn advance(&mut self, burst: &BTreeSet<u64>) -> Option<u64> {
        let mut top = None;
        loop {
            if burst.contains(&self.floor) {
                top = Some(self.floor);
            } else if !self.above.remove(&self.floor) {
                return top;
            }
            self.floor += 1;
        }
    }
}

/// How the settler learns of a settled delivery.
pub(crate) enum Settle {
    /// Result confirmed: ack it.
    Ack(Acker, u64),
    /// Settled by the task itself (rejected, or acked at once before its
    /// suspect copy may run): only recorded.
    Settled(u64),
}

/// Handle to the coalescing task of one channel.
#[derive(Clone)]
pub(crate) struct Settler {
    tx: mpsc::UnboundedSender<Settle>,
}

impl Settler {
    /// Starts the coalescing task; it ends, with every ack sent, once every
    /// clone of the handle is dropped.
    pub fn spawn() -> (Settler, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Settler { tx }, tokio::spawn(run(rx)))
    }

    pub fn send(&self, s: Settle) {
        // The task lives as long as any handle; a send cannot fail before.
        let _ = self.tx.send(s);
    }
}

async fn run(mut rx: mpsc::UnboundedReceiver<Settle>) {
    let mut ledger = Ledger::default();
    let mut burst = Vec::new();
    while rx.recv_many(&mut burst, 4096).await > 0 {
        let mut ackers = HashMap::with_capacity(burst.len());
        for s in burst.drain(..) {
            match s {
                Settle::Ack(acker, tag) => {
                    ackers.insert(tag, acker);
                }
                Settle::Settled(tag) => ledger.settled(tag),
            }
        }
        let tags: Vec<u64> = ackers.keys().copied().collect();
        let plan = ledger.plan(&tags);
        let sends = plan
            .multiple
            .map(|t| (t, true))
            .into_iter()
            .chain(plan.single.iter().map(|&t| (t, false)));
        for (tag, multiple) in sends {
            let acker = &ackers[&tag];
            if let Err(e) = acker.ack(BasicAckOptions { multiple }).await {
                // The channel is gone: the broker redelivers what was not
                // acked, and the scheduler ignores a result it already has.
                tracing::warn!(error = %e, tag, multiple, "Ack failed; unacked tasks will be redelivered");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_contiguous_burst_is_one_multiple_ack() {
        let mut l = Ledger::default();
        assert_eq!(
            l.plan(&[3, 1, 2]),
            Plan {
                multiple: Some(3),
                single: vec![]
            }
        );
        assert_eq!(
            l.plan(&[4]),
            Plan {
                multiple: Some(4),
                single: vec![]
            }
        );
    }

    #[test]
    fn acks_above_a_gap_go_singly_and_the_gap_closes_later() {
        let mut l = Ledger::default();
        // Tag 2 is still running: 1 goes as a multiple ack, 3 and 4 singly.
        assert_eq!(
            l.plan(&[1, 3, 4]),
            Plan {
                multiple: Some(1),
                single: vec![3, 4]
            }
        );
        // When 2 is done, a multiple ack of 2 is enough; then 5 follows.
        assert_eq!(
            l.plan(&[2, 5]),
            Plan {
                multiple: Some(5),
                single: vec![]
            }
        );
    }

    #[test]
    fn a_multiple_ack_never_covers_an_unsettled_delivery() {
        let mut l = Ledger::default();
        assert_eq!(
            l.plan(&[2, 3]),
            Plan {
                multiple: None,
                single: vec![2, 3]
            }
        );
        // A rejected delivery counts as settled.
        l.settled(1);
        assert_eq!(
            l.plan(&[5]),
            Plan {
                multiple: None,
                single: vec![5]
            }
        );
        assert_eq!(
            l.plan(&[4]),
            Plan {
                multiple: Some(4),
                single: vec![]
            }
        );
    }
}
