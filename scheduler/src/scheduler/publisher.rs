//! The session's publisher: publishes a batch's outbox messages with
//! confirms (all in flight at once), declares each task queue before its
//! first message (a task is never published to a queue that does not
//! exist), declares and resends once a task message returned unroutable,
//! and forwards messages of partitions this scheduler does not own to
//! their owners' queues.
//!
//! A message the broker refuses for a reason that will not change is
//! handed back as [`Refused`], never retried: one over `max_message_bytes`
//! is not sent at all; one the broker refuses as too large (its own
//! `max_message_size` is lower) closes the channel, which is opened again
//! and the rest resent; a task queue that exists with other arguments
//! refuses every message for it, for the rest of the session (tried again
//! in the next). The session ends what each belonged to.

use crate::{
    batch::{OutKind, OutMsg},
    metrics::Metrics,
};
use lapin::{
    BasicProperties, Channel, Confirmation, Connection,
    types::{AMQPValue, LongString},
};
use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
};
use warren_shared::{
    Topology, amqp,
    wire::{
        HEADER_FORWARDED, TYPE_CONTROL, TYPE_PAUSES, TYPE_PROGRESS, TYPE_PRUNED, TYPE_REPORT,
        TYPE_SCHEDULE, TYPE_SCHEDULES, TYPE_TASK, TYPE_WORKERS,
    },
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

/// An outbox message that will not be published, and why.
pub(super) struct Refused {
    pub(super) seq: u64,
    pub(super) msg: Arc<OutMsg>,
    pub(super) reason: String,
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
    /// Largest message sent.
    max_message_bytes: usize,
    /// Task queues that exist with other arguments, with the broker's
    /// reason: their messages are refused for the rest of the session.
    /// At most one entry per distinct task queue (bounded by
    /// `max_queues`).
    conflicts: HashMap<String, String>,
}

impl Publisher {
    /// Publishes on `channel` (in confirm mode), declares on `setup`.
    pub(super) fn new(
        (channel, setup): (Channel, Channel),
        topology: Topology,
        partitioned: bool,
        max_message_bytes: usize,
    ) -> Publisher {
        Publisher {
            channel,
            setup,
            topology,
            declared: HashSet::new(),
            partitioned,
            max_message_bytes,
            conflicts: HashMap::new(),
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
            p = amqp::with_message_id(p, id);
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
            OutKind::PausesReply => p.with_type(TYPE_PAUSES.into()),
            OutKind::ScheduleReply => p.with_type(TYPE_SCHEDULE.into()),
            OutKind::SchedulesReply => p.with_type(TYPE_SCHEDULES.into()),
            OutKind::PruneReply => p.with_type(TYPE_PRUNED.into()),
            // A workflow request, as a producer publishes one.
            OutKind::Firing => p,
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

    /// Publishes `msgs` with confirms and returns those refused for good
    /// (see the module docs). A task message returned unroutable (its
    /// queue deleted behind our back) is declared again and resent once;
    /// returned again, it is [`warren_shared::Error::Unroutable`]. `conn`
    /// opens channels again after the broker closed one.
    pub(super) async fn publish_all(
        &mut self,
        conn: &Connection,
        msgs: &[(u64, Arc<OutMsg>)],
        metrics: &Metrics,
    ) -> Result<Vec<Refused>, SchedulerError> {
        let mut refused = Vec::new();
        let mut send = Vec::with_capacity(msgs.len());
        for (seq, m) in msgs {
            if m.body.len() > self.max_message_bytes {
                refused.push(Refused {
                    seq: *seq,
                    msg: m.clone(),
                    reason: format!(
                        "a message of {} bytes is over the limit of {} (WARREN_MAX_MESSAGE_BYTES)",
                        m.body.len(),
                        self.max_message_bytes
                    ),
                });
            } else {
                send.push((*seq, m.clone()));
            }
        }
        self.declare_queues(conn, &send).await?;
        send.retain(|(seq, m)| match self.conflict_of(m) {
            Some(reason) => {
                refused.push(Refused {
                    seq: *seq,
                    msg: m.clone(),
                    reason,
                });
                false
            }
            None => true,
        });
        Metrics::add(&metrics.messages_published, send.len() as u64);
        let returned = loop {
            match self.publish_once(send.iter().map(|(_, m)| m)).await {
                Ok(returned) => break returned,
                Err(e) => {
                    let Some((size, max)) = amqp::refused_size(&e) else {
                        return Err(e.into());
                    };
                    // The broker closed the channel over one message: it
                    // is refused, the channel opened again, the rest sent
                    // again (duplicates are harmless, as after a crash).
                    let (bad, good): (Vec<_>, Vec<_>) =
                        send.into_iter().partition(|(_, m)| m.body.len() == size);
                    if bad.is_empty() {
                        return Err(e.into());
                    }
                    refused.extend(bad.into_iter().map(|(seq, msg)| Refused {
                        seq,
                        msg,
                        reason: format!(
                            "the broker refused a message of {size} bytes: over its max_message_size of {max}; raise it, or lower WARREN_MAX_MESSAGE_BYTES to match"
                        ),
                    }));
                    send = good;
                    self.channel = amqp::confirm_channel(conn).await?;
                }
            }
        };
        if returned.is_empty() {
            return Ok(refused);
        }
        // A task queue deleted behind our back: declare it again and resend.
        for m in &returned {
            self.declared.remove(&m.routing_key);
        }
        let again: Vec<(u64, Arc<OutMsg>)> = returned.into_iter().map(|m| (0, m)).collect();
        self.declare_queues(conn, &again).await?;
        let again = self.publish_once(again.iter().map(|(_, m)| m)).await?;
        match again.first() {
            None => Ok(refused),
            Some(m) => Err(warren_shared::Error::Unroutable {
                exchange: m.exchange.clone(),
                routing_key: m.routing_key.clone(),
            }
            .into()),
        }
    }

    /// Declares the task queues of `msgs` not declared yet. A queue that
    /// exists with other arguments is remembered as a conflict (its
    /// messages are refused); the declaring channel, closed by the broker,
    /// is opened again.
    async fn declare_queues(
        &mut self,
        conn: &Connection,
        msgs: &[(u64, Arc<OutMsg>)],
    ) -> Result<(), SchedulerError> {
        for (_, m) in msgs {
            if m.kind != OutKind::Task
                || self.declared.contains(&m.routing_key)
                || self.conflicts.contains_key(&m.routing_key)
            {
                continue;
            }
            match self
                .topology
                .declare_task_queue(&self.setup, &m.routing_key)
                .await
            {
                Ok(()) => {
                    self.declared.insert(m.routing_key.clone());
                }
                Err(e @ warren_shared::Error::TopologyConflict { .. }) => {
                    tracing::error!(queue = %m.routing_key, error = %e, "Task queue exists with other arguments; its tasks fail");
                    self.conflicts.insert(m.routing_key.clone(), e.to_string());
                    self.setup = conn
                        .create_channel()
                        .await
                        .map_err(warren_shared::Error::amqp("channel.open"))?;
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// Why a message cannot go out: its task queue is in conflict.
    fn conflict_of(&self, m: &OutMsg) -> Option<String> {
        if m.kind != OutKind::Task {
            return None;
        }
        self.conflicts.get(&m.routing_key).cloned()
    }

    /// Publishes every message, then awaits every confirm. Returns the task
    /// messages that came back unroutable.
    async fn publish_once<'a>(
        &self,
        msgs: impl Iterator<Item = &'a Arc<OutMsg>>,
    ) -> Result<Vec<Arc<OutMsg>>, warren_shared::Error> {
        let mut pending = Vec::new();
        for m in msgs {
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
                    OutKind::Reply
                    | OutKind::WorkersReply
                    | OutKind::PausesReply
                    | OutKind::ScheduleReply
                    | OutKind::SchedulesReply
                    | OutKind::PruneReply => {
                        tracing::warn!(
                            reply_to = %m.routing_key,
                            "Reply queue no longer exists; the outcome is still on the events exchange"
                        )
                    }
                    OutKind::Task => returned.push(m.clone()),
                    // Not mandatory: never returned.
                    OutKind::Event | OutKind::Progress | OutKind::Control => {}
                    OutKind::Dead => tracing::error!(
                        exchange = %m.exchange,
                        "Message returned unroutable; is the dead-letter queue deleted?"
                    ),
                    OutKind::Firing => tracing::error!(
                        exchange = %m.exchange,
                        workflow = ?m.message_id,
                        "A schedule's firing returned unroutable; is the requests queue deleted?"
                    ),
                },
                Confirmation::Nack(_) => {
                    return Err(warren_shared::Error::PublishNacked {
                        exchange: m.exchange.clone(),
                        routing_key: m.routing_key.clone(),
                    });
                }
            }
        }
        Ok(returned)
    }
}
