//! One queue's consumer: each delivery becomes a task of its own once it
//! holds one of the worker's slots (see `slots`), until the session stops.
//!
//! With several task queues a consumer may hold deliveries that wait for a
//! slot. When the worker shuts down gracefully, the consumer is cancelled
//! and what it holds unstarted is given back: published again to its queue
//! as it came, then acked. Left unacked, it would return to the queue
//! marked `redelivered` when the session closes, and the next worker would
//! take it for a task that crashed a worker (see `poison`). When the
//! session loses its publishing channel, the consumer is cancelled the same
//! way and what it holds goes to the publisher, which holds it for the
//! session to give back through a fresh channel (see `publish`). After any
//! other fault nothing can be published: what is unacked returns with the
//! session.

use crate::{
    execute::{self, Executor},
    publish::{Received, Source},
    slots::Slots,
};
use futures_lite::StreamExt;
use lapin::{Channel, message::Delivery, options::BasicCancelOptions};
use std::{sync::Arc, time::Duration};
use tokio::sync::mpsc;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

/// A consumer that ended on its own: the queue and why.
pub(crate) type Ended = (String, String);

/// How long a stopping consumer waits for the broker's cancel-ok and the
/// deliveries sent before it.
const CANCEL_WAIT: Duration = Duration::from_secs(5);

/// One queue's consumer and what its deliveries' tasks need.
pub(crate) struct Consumer {
    /// The pool's queue name (`default`).
    pub queue: String,
    pub source: Source,
    pub channel: Channel,
    pub tag: String,
    pub consumer: lapin::Consumer,
    /// The worker's execution slots (none for suspects, which run alone).
    pub slots: Option<Slots>,
    pub executor: Arc<Executor>,
    pub tracker: TaskTracker,
    /// No task starts once it is cancelled.
    pub stop: CancellationToken,
    /// Cancelled before `stop` when the worker shuts down gracefully or
    /// loses its publishing side: the consumer then gives back what it
    /// holds unstarted.
    pub graceful: CancellationToken,
    pub ended: mpsc::Sender<Ended>,
}

/// Starts a task for each delivery, once it has a slot, until `stop`;
/// reports a consumer that ends on its own.
pub(crate) async fn forward(mut c: Consumer) {
    let reason = loop {
        let delivery = tokio::select! {
            biased;
            () = c.stop.cancelled() => return c.stopped(None).await,
            next = c.consumer.next() => match next {
                Some(Ok(delivery)) => delivery,
                Some(Err(e)) => break e.to_string(),
                None => break "the broker cancelled the consumer or closed the channel".to_owned(),
            },
        };
        let slot = match &c.slots {
            Some(slots) => tokio::select! {
                biased;
                () = c.stop.cancelled() => return c.stopped(Some(delivery)).await,
                slot = slots.take() => Some(slot),
            },
            None => None,
        };
        let received = c.received(delivery);
        c.executor.publisher.started(&received);
        let executor = c.executor.clone();
        c.tracker.spawn(async move {
            execute::execute(executor, received).await;
            drop(slot);
        });
    };
    let _ = c.ended.send((c.queue, reason)).await;
}

impl Consumer {
    fn received(&self, delivery: Delivery) -> Received {
        Received {
            queue: self.queue.clone(),
            source: self.source,
            delivery,
        }
    }

    /// After `stop`: on a graceful shutdown (or a lost publishing side),
    /// cancels the consumer and gives back `waiting` and whatever the
    /// broker delivered before the cancel.
    async fn stopped(mut self, waiting: Option<Delivery>) {
        if !self.graceful.is_cancelled() {
            return;
        }
        let _ = self
            .channel
            .basic_cancel(self.tag.as_str().into(), BasicCancelOptions::default())
            .await;
        // The broker sends nothing after its cancel-ok, and the stream
        // ends once the deliveries sent before it are taken.
        let mut held: Vec<Delivery> = waiting.into_iter().collect();
        while let Ok(Some(Ok(d))) = tokio::time::timeout(CANCEL_WAIT, self.consumer.next()).await {
            held.push(d);
        }
        if !held.is_empty() {
            tracing::debug!(queue = %self.queue, held = held.len(), "Giving back unstarted tasks");
        }
        for delivery in held {
            let r = self.received(delivery);
            self.executor.publisher.give_back(&r).await;
        }
    }
}
