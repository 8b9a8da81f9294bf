//! The session's publisher: publishes a batch's outbox messages with
//! confirms (all in flight at once), declares each task queue before its
//! first message (a task is never published to a queue that does not
//! exist), declares and resends once a task message returned unroutable,
//! and forwards messages of partitions this scheduler does not own to
//! their owners' queues.

use crate::{
    batch::{OutKind, OutMsg},
    metrics::Metrics,
};
use lapin::{
    BasicProperties, Channel, Confirmation,
    types::{AMQPValue, LongString},
};
use std::{collections::HashSet, sync::Arc};
use warren_shared::{
    Topology, amqp,
    wire::{HEADER_FORWARDED, TYPE_CONTROL, TYPE_PROGRESS, TYPE_REPORT, TYPE_TASK, TYPE_WORKERS},
};

use super::SchedulerError;

/// A message of a partition this scheduler does not own, on its way to
/// that partition's queue.
pub(super) struct Forward {
    pub(super) part: u16,
    pub(super) properties: BasicProperties,
    pub(super) body: Vec<u8>,
    pub(super) request: bool,
}

/// Publishes outbox messages with confirms.
pub(super) struct Publisher {
    channel: Channel,
    /// Channel for declarations: a declaration error closes its channel,
    /// and must not take the publishing channel with it.
    setup: Channel,
    pub(super) topology: Topology,
    /// Task queues declared by this process: a task is never published to
    /// a queue that does not exist.
    declared: HashSet<String>,
    /// Task messages carry their partition's queue as `reply_to`.
    partitioned: bool,
}

impl Publisher {
    /// Publishes on `channel` (in confirm mode), declares on `setup`.
    pub(super) fn new(
        channel: Channel,
        setup: Channel,
        topology: Topology,
        partitioned: bool,
    ) -> Publisher {
        Publisher {
            channel,
            setup,
            topology,
            declared: HashSet::new(),
            partitioned,
        }
    }

    fn properties(&self, m: &OutMsg) -> BasicProperties {
        let mut p = amqp::json_properties();
        if self.partitioned && m.kind == OutKind::Task {
            p = p.with_reply_to(self.topology.partition_queue(m.part).into());
        }
        if !m.headers.is_empty() {
            let mut h = p.headers().clone().unwrap_or_default();
            for (k, v) in &m.headers {
                h.insert(
                    k.as_str().into(),
                    AMQPValue::LongString(LongString::from(v.as_str())),
                );
            }
            p = p.with_headers(h);
        }
        if let Some(id) = &m.message_id {
            p = p.with_message_id(id.as_str().into());
        }
        if let Some(c) = &m.correlation_id {
            p = p.with_correlation_id(c.as_str().into());
        }
        if let Some(prio) = m.priority {
            p = p.with_priority(prio);
        }
        match m.kind {
            OutKind::Task => p.with_type(TYPE_TASK.into()),
            OutKind::Reply | OutKind::Event => p.with_type(TYPE_REPORT.into()),
            OutKind::WorkersReply => p.with_type(TYPE_WORKERS.into()),
            OutKind::Progress => p.with_type(TYPE_PROGRESS.into()),
            OutKind::Control => p.with_type(TYPE_CONTROL.into()),
            OutKind::Dead => p,
        }
    }

    /// Forwards messages to the queues of their partitions, with confirms.
    /// A forwarded request is marked with [`HEADER_FORWARDED`].
    pub(super) async fn forward(&self, forwards: &[Forward]) -> Result<(), SchedulerError> {
        let mut pending = Vec::with_capacity(forwards.len());
        for f in forwards {
            let queue = self.topology.partition_queue(f.part);
            let mut properties = f.properties.clone();
            if f.request {
                let mut h = properties.headers().clone().unwrap_or_default();
                h.insert(
                    HEADER_FORWARDED.into(),
                    AMQPValue::LongString("request".into()),
                );
                properties = properties.with_headers(h);
            }
            let msg = amqp::Publish {
                exchange: "",
                routing_key: &queue,
                mandatory: true,
                body: &f.body,
                properties,
            };
            let confirm = amqp::publish(&self.channel, msg).await?;
            pending.push((confirm, queue));
        }
        for (confirm, queue) in pending {
            amqp::confirmed(confirm, "", &queue).await?;
        }
        Ok(())
    }

    /// Publishes `msgs` with confirms. A task message returned unroutable
    /// (its queue deleted behind our back) is declared again and resent
    /// once; returned again, it is [`warren_shared::Error::Unroutable`].
    pub(super) async fn publish_all(
        &mut self,
        msgs: &[(u64, Arc<OutMsg>)],
        metrics: &Metrics,
    ) -> Result<(), SchedulerError> {
        Metrics::add(&metrics.messages_published, msgs.len() as u64);
        let returned = self.publish_once(msgs.iter().map(|(_, m)| m)).await?;
        if returned.is_empty() {
            return Ok(());
        }
        // A task queue deleted behind our back: declare it again and resend.
        for m in &returned {
            self.declared.remove(&m.routing_key);
        }
        let again = self.publish_once(returned.iter()).await?;
        match again.first() {
            None => Ok(()),
            Some(m) => Err(warren_shared::Error::Unroutable {
                exchange: m.exchange.clone(),
                routing_key: m.routing_key.clone(),
            }
            .into()),
        }
    }

    /// Publishes every message, then awaits every confirm. Returns the task
    /// messages that came back unroutable.
    async fn publish_once<'a>(
        &mut self,
        msgs: impl Iterator<Item = &'a Arc<OutMsg>>,
    ) -> Result<Vec<Arc<OutMsg>>, SchedulerError> {
        let mut pending = Vec::new();
        for m in msgs {
            if m.kind == OutKind::Task && !self.declared.contains(&m.routing_key) {
                self.topology
                    .declare_task_queue(&self.setup, &m.routing_key)
                    .await?;
                self.declared.insert(m.routing_key.clone());
            }
            let msg = amqp::Publish {
                exchange: &m.exchange,
                routing_key: &m.routing_key,
                // Events and notices have no queue unless someone listens.
                mandatory: !matches!(
                    m.kind,
                    OutKind::Event | OutKind::Progress | OutKind::Control
                ),
                body: &m.body,
                properties: self.properties(m),
            };
            let confirm = amqp::publish(&self.channel, msg).await?;
            pending.push((confirm, m));
        }
        let mut returned = Vec::new();
        for (confirm, m) in pending {
            match confirm
                .await
                .map_err(warren_shared::Error::amqp("publisher confirm"))?
            {
                Confirmation::Ack(None) | Confirmation::NotRequested => {}
                Confirmation::Ack(Some(_)) => match m.kind {
                    OutKind::Reply | OutKind::WorkersReply => tracing::warn!(
                        reply_to = %m.routing_key,
                        "Reply queue no longer exists; the outcome is still on the events exchange"
                    ),
                    OutKind::Task => returned.push(m.clone()),
                    // Not mandatory: never returned.
                    OutKind::Event | OutKind::Progress | OutKind::Control => {}
                    OutKind::Dead => tracing::error!(
                        exchange = %m.exchange,
                        "Message returned unroutable; is the dead-letter queue deleted?"
                    ),
                },
                Confirmation::Nack(_) => {
                    return Err(warren_shared::Error::PublishNacked {
                        exchange: m.exchange.clone(),
                        routing_key: m.routing_key.clone(),
                    }
                    .into());
                }
            }
        }
        Ok(returned)
    }
}
