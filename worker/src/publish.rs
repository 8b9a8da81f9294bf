//! Answering a delivery: publish what it caused, await the broker's
//! confirm, then ack it, or requeue it when the confirm does not come.
//!
//! This is the worker's half of the invariant "a delivery is acked only
//! after what it caused is confirmed", and it lives here alone:
//! [`Publisher::publish_then_settle`] is the one path from a published
//! message to an ack. A task's result ([`Publisher::result`]), a redelivered
//! task moved to the suspect queue (`poison`) and an undecodable message
//! sent to the dead-letter exchange ([`Publisher::dead_letter`]) all go
//! through it. Deliveries answered without a message (a cancelled
//! workflow's tasks) are acked with [`Publisher::ack`].

use crate::settle::{Settle, Settler};
use lapin::{
    BasicProperties, Channel,
    message::Delivery,
    options::{BasicAckOptions, BasicRejectOptions},
};
use warren_shared::{
    Topology, amqp,
    wire::{TYPE_RESULT, TaskResult},
};

/// Which queue of a pool a delivery came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Source {
    /// `{ns}.tasks.{queue}`: tasks run concurrently.
    Tasks,
    /// `{ns}.suspect.{queue}`: tasks whose last run ended without an ack,
    /// run alone.
    Suspect,
}

/// A delivery being handled, and where it came from.
pub(crate) struct Received {
    /// The pool's queue name (`default`), not the broker's queue name.
    pub queue: String,
    pub source: Source,
    pub delivery: Delivery,
}

/// One message a delivery caused, for [`Publisher::publish_then_settle`].
pub(crate) struct Outgoing<'a> {
    pub exchange: &'a str,
    pub key: &'a str,
    pub body: &'a [u8],
    pub props: BasicProperties,
}

/// Publishes and settles for the deliveries of one session.
pub(crate) struct Publisher {
    /// The session's confirmed publishing channel.
    channel: Channel,
    topology: Topology,
    /// Coalesces the acks of the tasks channel (suspects, one at a time on
    /// their own channel, are acked directly).
    settler: Settler,
}

impl Publisher {
    /// `channel` must be in confirm mode.
    pub fn new(channel: Channel, topology: Topology, settler: Settler) -> Publisher {
        Publisher {
            channel,
            topology,
            settler,
        }
    }

    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    /// Acks a task whose outcome is safely on the broker.
    pub async fn ack(&self, r: &Received) {
        let d = &r.delivery;
        match r.source {
            Source::Tasks => self
                .settler
                .send(Settle::Ack(d.acker.clone(), d.delivery_tag)),
            Source::Suspect => {
                if let Err(e) = d.acker.ack(BasicAckOptions::default()).await {
                    tracing::warn!(error = %e, "Ack failed; the task will be redelivered");
                }
            }
        }
    }

    /// Returns a task to its queue.
    async fn requeue(&self, r: &Received) {
        let d = &r.delivery;
        let _ = d.acker.reject(BasicRejectOptions { requeue: true }).await;
        if r.source == Source::Tasks {
            self.settler.send(Settle::Rejected(d.delivery_tag));
        }
    }

    /// Publishes what a delivery caused (mandatory), awaits the broker's
    /// confirm, then acks the delivery. When the confirm does not come (a
    /// nack, no queue to route to, a lost channel) the delivery is
    /// requeued, never acked, and the error returned for the caller to log.
    pub async fn publish_then_settle(
        &self,
        r: &Received,
        out: Outgoing<'_>,
    ) -> Result<(), warren_shared::Error> {
        let sent = async {
            let confirm = amqp::publish(
                &self.channel,
                amqp::Publish {
                    exchange: out.exchange,
                    routing_key: out.key,
                    mandatory: true,
                    body: out.body,
                    properties: out.props,
                },
            )
            .await?;
            amqp::confirmed(confirm, out.exchange, out.key).await
        }
        .await;
        match sent {
            Ok(()) => {
                self.ack(r).await;
                Ok(())
            }
            Err(e) => {
                self.requeue(r).await;
                Err(e)
            }
        }
    }

    /// Publishes the result, awaits its confirm, then acks the task. When
    /// the result cannot be confirmed the task is requeued, never acked.
    pub async fn result(&self, r: &Received, result: &TaskResult) {
        let body = serde_json::to_vec(result).expect("wire types always serialise");
        // A scheduler sharing the namespace with others names the queue of
        // the workflow's partition in `reply_to`; anything else goes to the
        // results exchange (whichever scheduler receives it forwards it).
        let (exchange, key) = match r.delivery.properties.reply_to() {
            Some(to) if self.topology.is_partition_queue(to.as_str()) => {
                (String::new(), to.as_str().to_owned())
            }
            _ => (self.topology.results(), String::new()),
        };
        let props = amqp::json_properties()
            .with_type(TYPE_RESULT.into())
            .with_message_id(
                format!(
                    "{}/{}/{}",
                    result.workflow_id, result.task_id, result.attempt
                )
                .into(),
            );
        let out = Outgoing {
            exchange: &exchange,
            key: &key,
            body: &body,
            props,
        };
        if let Err(e) = self.publish_then_settle(r, out).await {
            tracing::error!(error = %e, workflow = %result.workflow_id, task = %result.task_id, "Result not confirmed; requeueing the task");
        }
    }

    /// Sends a task message nothing can be made of to `{ns}.dead`, then
    /// acks it.
    pub async fn dead_letter(&self, r: &Received, reason: &str) {
        let queue = r.queue.as_str();
        tracing::warn!(queue, %reason, "Dead-lettering a task message");
        let exchange = self.topology.dead();
        let d = &r.delivery;
        let props = amqp::dead_letter_properties(d, &self.topology.task_queue(queue), reason);
        let out = Outgoing {
            exchange: &exchange,
            key: "",
            body: &d.data,
            props,
        };
        if let Err(e) = self.publish_then_settle(r, out).await {
            tracing::error!(error = %e, "Dead-lettering failed; requeueing");
        }
    }
}
