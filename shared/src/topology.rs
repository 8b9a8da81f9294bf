//! Exchange and queue names for a namespace, and their declaration.
//!
//! Every name starts with the namespace, so several deployments (and each
//! integration test) share one broker and vhost without clashing.
//! Declarations are idempotent; a name that exists with other settings is a
//! [`Error::TopologyConflict`], never something Warren deletes.

use crate::{amqp::QueueType, error::Error};
use lapin::{
    Channel, Connection, ExchangeKind,
    options::{
        ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions,
        QueueDeleteOptions,
    },
    protocol::{AMQPErrorKind, AMQPSoftError},
    types::{AMQPValue, FieldTable},
};

/// `x-max-priority` of task queues: AMQP priorities 0..=9 are used as is.
pub const TASK_QUEUE_MAX_PRIORITY: u8 = 10;

/// `x-delivery-limit` of quorum queues: a message redelivered this many
/// times is dead-lettered by the broker. Above the workers' own limit (a
/// task is failed after 5 deliveries), so that one acts first and the
/// broker's only catches what it cannot.
pub const QUORUM_DELIVERY_LIMIT: i64 = 20;

/// How many partitions the workflows of a namespace on a PostgreSQL store
/// are split into: the unit that schedulers sharing the namespace own.
pub const PARTITIONS: u16 = 16;

/// 32-bit FNV-1a of `s`'s bytes: stable across builds and platforms.
pub fn fnv1a(s: &str) -> u32 {
    s.bytes().fold(0x811c_9dc5_u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

/// The partition of a workflow: FNV-1a of its id modulo `partitions`.
pub fn partition_of(workflow_id: &str, partitions: u16) -> u16 {
    (fnv1a(workflow_id) % u32::from(partitions.max(1))) as u16
}

/// The routing key of control requests on the `workflows` exchange (see
/// [`Topology::control_requests`]); the empty key still works, behind
/// submissions.
pub const CONTROL_ROUTING_KEY: &str = "control";

/// The names of one Warren deployment on a broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    namespace: String,
    queue_type: QueueType,
}

impl Topology {
    /// Classic queues; see [`Topology::with_queue_type`].
    pub fn new(namespace: impl Into<String>) -> Topology {
        Topology {
            namespace: namespace.into(),
            queue_type: QueueType::Classic,
        }
    }

    /// Declares the durable queues as `queue_type`.
    pub fn with_queue_type(mut self, queue_type: QueueType) -> Topology {
        self.queue_type = queue_type;
        self
    }

    /// The arguments of a durable queue: quorum ones get the delivery limit
    /// and dead-lettering (except the dead-letter queue itself); classic
    /// task queues get priorities.
    fn queue_args(&self, name: &str, priority: bool) -> FieldTable {
        let mut args = FieldTable::default();
        match self.queue_type {
            QueueType::Classic => {
                if priority {
                    args.insert(
                        "x-max-priority".into(),
                        AMQPValue::ShortShortUInt(TASK_QUEUE_MAX_PRIORITY),
                    );
                }
            }
            QueueType::Quorum => {
                args.insert(
                    "x-queue-type".into(),
                    AMQPValue::LongString("quorum".into()),
                );
                if name != self.dead() {
                    args.insert(
                        "x-delivery-limit".into(),
                        AMQPValue::LongLongInt(QUORUM_DELIVERY_LIMIT),
                    );
                    args.insert(
                        "x-dead-letter-exchange".into(),
                        AMQPValue::LongString(self.dead().into()),
                    );
                }
            }
        }
        args
    }

    /// The namespace every name starts with.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// Direct exchange and durable queue of workflow and control requests
    /// (bound with the empty routing key).
    pub fn workflows(&self) -> String {
        format!("{}.workflows", self.namespace)
    }

    /// Durable queue of control requests sent with the routing key
    /// [`CONTROL_ROUTING_KEY`] on the `workflows` exchange: consumed apart,
    /// so that a status or cancel is never held behind submissions that
    /// wait for room in the scheduler's memory budget.
    pub fn control_requests(&self) -> String {
        format!("{}.workflows.control", self.namespace)
    }

    /// Direct exchange of task messages; routing key = task queue name.
    pub fn tasks_exchange(&self) -> String {
        format!("{}.tasks", self.namespace)
    }

    /// The durable priority queue of one worker pool.
    pub fn task_queue(&self, queue: &str) -> String {
        format!("{}.tasks.{}", self.namespace, queue)
    }

    /// The durable priority queue of a pool's suspect tasks: tasks whose
    /// last run ended without an ack. Workers run them one at a time, alone,
    /// so that a crash counts against the task that caused it. Reached
    /// through the default exchange (routing key = this name).
    pub fn suspect_queue(&self, queue: &str) -> String {
        format!("{}.suspect.{}", self.namespace, queue)
    }

    /// Direct exchange and durable queue of task results (empty routing
    /// key). Partition queues are bound to the exchange too, each with its
    /// own name as the key ([`Topology::result_route`]), so that a worker
    /// needs no right to the default exchange, which reaches every queue.
    pub fn results(&self) -> String {
        format!("{}.results", self.namespace)
    }

    /// The routing key on the [`Topology::results`] exchange of a result
    /// whose task message named `reply_to`: that partition's queue when it
    /// is one of this namespace's, the shared results queue otherwise.
    pub fn result_route<'a>(&self, reply_to: Option<&'a str>) -> &'a str {
        match reply_to {
            Some(to) if self.is_partition_queue(to) => to,
            _ => "",
        }
    }

    /// Topic exchange through which a worker puts a task back into its own
    /// pool's queues: key `tasks.{queue}` (given back unstarted) or
    /// `suspect.{queue}` (moved aside after a crash). A worker's topic
    /// permissions on it name its queues, so it cannot reach another pool
    /// (docs/security.md); the task exchange stays the scheduler's alone.
    pub fn requeue(&self) -> String {
        format!("{}.requeue", self.namespace)
    }

    /// The key on [`Topology::requeue`] of a pool's task queue.
    pub fn requeue_task_key(queue: &str) -> String {
        format!("tasks.{queue}")
    }

    /// The key on [`Topology::requeue`] of a pool's suspect queue.
    pub fn requeue_suspect_key(queue: &str) -> String {
        format!("suspect.{queue}")
    }

    /// The prefix of named reply queues a client may own: `{ns}.reply.`
    /// (docs/security.md). With server-named queues (`amq.gen-...`) and
    /// direct reply-to (`amq.rabbitmq.reply-to`), the only queues the
    /// scheduler answers to.
    pub fn reply_prefix(&self) -> String {
        format!("{}.reply.", self.namespace)
    }

    /// True when the scheduler may publish to `queue` as a request's
    /// `reply_to` ([`is_reply_queue`] in this namespace).
    pub fn is_reply_queue(&self, queue: &str) -> bool {
        is_reply_queue(&self.namespace, queue)
    }

    /// The durable queue of one partition of the workflows, when several
    /// schedulers share the namespace (PostgreSQL store): results of the
    /// partition's tasks (their task messages carry it as `reply_to`) and
    /// requests forwarded by the scheduler that received them. Results
    /// reach it through the results exchange, forwards through the default
    /// exchange (routing key = this name in both), which only schedulers
    /// may write to: a forward that did not come that way is not one.
    pub fn partition_queue(&self, partition: u16) -> String {
        format!("{}.results.{}", self.namespace, partition)
    }

    /// True when `name` is one of this namespace's partition queues: the
    /// only `reply_to` of a task message a worker publishes its result to.
    pub fn is_partition_queue(&self, name: &str) -> bool {
        name.strip_prefix(self.namespace.as_str())
            .and_then(|rest| rest.strip_prefix(".results."))
            .is_some_and(|n| !n.is_empty() && n.len() <= 5 && n.bytes().all(|b| b.is_ascii_digit()))
    }

    /// Declares the partition queues `0..partitions`. Idempotent.
    pub async fn declare_partition_queues(
        &self,
        ch: &Channel,
        partitions: u16,
    ) -> Result<(), Error> {
        let results = self.results();
        for p in 0..partitions {
            let name = self.partition_queue(p);
            declare_queue(ch, &name, self.queue_args(&name, false)).await?;
            bind(ch, &name, &results, &name).await?;
        }
        Ok(())
    }

    /// Topic exchange of state changes: `workflow.{id}.{state}`.
    pub fn events(&self) -> String {
        format!("{}.events", self.namespace)
    }

    /// Fanout exchange of notices to every worker (cancellations); each
    /// worker binds an exclusive queue of its own.
    pub fn control(&self) -> String {
        format!("{}.control", self.namespace)
    }

    /// Fanout exchange and durable queue of messages that cannot be processed.
    pub fn dead(&self) -> String {
        format!("{}.dead", self.namespace)
    }

    /// Declares the exchanges and the scheduler's queues. Idempotent.
    pub async fn declare(&self, ch: &Channel) -> Result<(), Error> {
        let durable = ExchangeDeclareOptions {
            durable: true,
            ..Default::default()
        };
        for (name, kind) in [
            (self.workflows(), ExchangeKind::Direct),
            (self.tasks_exchange(), ExchangeKind::Direct),
            (self.results(), ExchangeKind::Direct),
            (self.events(), ExchangeKind::Topic),
            (self.control(), ExchangeKind::Fanout),
            (self.dead(), ExchangeKind::Fanout),
            (self.requeue(), ExchangeKind::Topic),
        ] {
            ch.exchange_declare(name.as_str().into(), kind, durable, FieldTable::default())
                .await
                .map_err(|e| conflict_or("exchange", &name, e, "exchange.declare"))?;
        }
        let control = self.control_requests();
        for (name, exchange, key) in [
            (self.workflows(), self.workflows(), ""),
            (control, self.workflows(), CONTROL_ROUTING_KEY),
            (self.results(), self.results(), ""),
            (self.dead(), self.dead(), ""),
        ] {
            declare_queue(ch, &name, self.queue_args(&name, false)).await?;
            bind(ch, &name, &exchange, key).await?;
        }
        Ok(())
    }

    /// A producer's part: the whole declaration ([`Topology::declare`])
    /// where its user may configure the namespace, so that requests
    /// published before any scheduler ran wait in their queue; for a
    /// producer of least privilege (no configure right, docs/security.md),
    /// refused, a passive check that the requests' exchange exists, on a
    /// fresh channel (the refusal closed the first).
    pub async fn declare_or_check(&self, conn: &Connection) -> Result<(), Error> {
        let setup = conn
            .create_channel()
            .await
            .map_err(Error::amqp("channel.open"))?;
        match self.declare(&setup).await {
            Err(Error::Amqp { source, .. }) if is_access_refused(&source) => {
                let check = conn
                    .create_channel()
                    .await
                    .map_err(Error::amqp("channel.open"))?;
                let passive = ExchangeDeclareOptions {
                    passive: true,
                    ..Default::default()
                };
                let workflows = self.workflows();
                check
                    .exchange_declare(
                        workflows.as_str().into(),
                        ExchangeKind::Direct,
                        passive,
                        FieldTable::default(),
                    )
                    .await
                    .map_err(Error::amqp("exchange.declare (passive)"))?;
                let _ = check.close(200, "checked".into()).await;
                Ok(())
            }
            other => {
                let _ = setup.close(200, "declared".into()).await;
                other
            }
        }
    }

    /// Declares a worker pool's priority queue and binds it to the task
    /// exchange: the scheduler's part, before the queue's first task
    /// message. Idempotent.
    pub async fn declare_task_queue(&self, ch: &Channel, queue: &str) -> Result<(), Error> {
        let name = self.task_queue(queue);
        declare_queue(ch, &name, self.queue_args(&name, true)).await?;
        bind(ch, &name, &self.tasks_exchange(), queue).await
    }

    /// A worker's part: declares its pool's task and suspect queues (see
    /// [`Topology::suspect_queue`]) and binds both to the
    /// [`Topology::requeue`] exchange, which must exist (the scheduler
    /// declares it; until then this fails with NOT_FOUND and the worker
    /// tries again with its next session). It binds nothing to the task
    /// exchange, which the scheduler does: a worker with the right to bind
    /// there could copy another pool's tasks. Idempotent.
    pub async fn declare_pool(&self, ch: &Channel, queue: &str) -> Result<(), Error> {
        let requeue = self.requeue();
        let tasks = self.task_queue(queue);
        declare_queue(ch, &tasks, self.queue_args(&tasks, true)).await?;
        bind(ch, &tasks, &requeue, &Self::requeue_task_key(queue)).await?;
        let suspects = self.suspect_queue(queue);
        declare_queue(ch, &suspects, self.queue_args(&suspects, true)).await?;
        bind(ch, &suspects, &requeue, &Self::requeue_suspect_key(queue)).await
    }

    /// Deletes everything of this namespace, including the named task
    /// queues (and their suspect queues). For tests and `warren dev`; never
    /// called by the scheduler.
    pub async fn delete(&self, ch: &Channel, task_queues: &[String]) -> Result<(), Error> {
        let mut queues: Vec<String> = task_queues
            .iter()
            .flat_map(|q| [self.task_queue(q), self.suspect_queue(q)])
            .collect();
        queues.extend([
            self.workflows(),
            self.control_requests(),
            self.results(),
            self.dead(),
        ]);
        // Partition queues exist only where a PostgreSQL store declared
        // them; deleting an absent queue is not an error.
        queues.extend((0..PARTITIONS).map(|p| self.partition_queue(p)));
        for q in queues {
            ch.queue_delete(q.as_str().into(), QueueDeleteOptions::default())
                .await
                .map_err(Error::amqp("queue.delete"))?;
        }
        for x in [
            self.workflows(),
            self.tasks_exchange(),
            self.results(),
            self.events(),
            self.control(),
            self.dead(),
            self.requeue(),
        ] {
            ch.exchange_delete(x.as_str().into(), ExchangeDeleteOptions::default())
                .await
                .map_err(Error::amqp("exchange.delete"))?;
        }
        Ok(())
    }
}

async fn bind(ch: &Channel, queue: &str, exchange: &str, key: &str) -> Result<(), Error> {
    ch.queue_bind(
        queue.into(),
        exchange.into(),
        key.into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .map_err(Error::amqp("queue.bind"))
}

async fn declare_queue(ch: &Channel, name: &str, args: FieldTable) -> Result<(), Error> {
    ch.queue_declare(
        name.into(),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        args,
    )
    .await
    .map(|_| ())
    .map_err(|e| conflict_or("queue", name, e, "queue.declare"))
}

/// True when the scheduler of `namespace` may publish to `queue` as a
/// request's `reply_to`: a queue a producer can own (server-named
/// `amq.gen-...`, direct reply-to `amq.rabbitmq.reply-to...`, or named
/// `{namespace}.reply.{name}`) and no other role's queue. Anything else
/// would make the scheduler a confused deputy, writing reports through its
/// own rights into queues the producer cannot write to (task queues,
/// another namespace's).
pub fn is_reply_queue(namespace: &str, queue: &str) -> bool {
    queue.len() <= 255
        && (queue.starts_with("amq.gen-")
            || queue.starts_with("amq.rabbitmq.reply-to")
            || queue
                .strip_prefix(namespace)
                .and_then(|rest| rest.strip_prefix(".reply."))
                .is_some_and(|name| !name.is_empty()))
}

/// True when the broker refused an operation for the user's permissions.
pub fn is_access_refused(e: &lapin::Error) -> bool {
    matches!(e.kind(), lapin::ErrorKind::ProtocolError(amqp)
        if matches!(amqp.kind(), AMQPErrorKind::Soft(AMQPSoftError::ACCESSREFUSED)))
}

fn conflict_or(kind: &'static str, name: &str, e: lapin::Error, during: &'static str) -> Error {
    if let lapin::ErrorKind::ProtocolError(amqp) = e.kind()
        && matches!(
            amqp.kind(),
            AMQPErrorKind::Soft(AMQPSoftError::PRECONDITIONFAILED)
        )
    {
        return Error::TopologyConflict {
            kind,
            name: name.to_owned(),
            detail: amqp.get_message().to_string(),
        };
    }
    Error::Amqp { during, source: e }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_carry_the_namespace() {
        let t = Topology::new("acme");
        assert_eq!(t.workflows(), "acme.workflows");
        assert_eq!(t.tasks_exchange(), "acme.tasks");
        assert_eq!(t.task_queue("gpu"), "acme.tasks.gpu");
        assert_eq!(t.suspect_queue("gpu"), "acme.suspect.gpu");
        assert_eq!(t.results(), "acme.results");
        assert_eq!(t.events(), "acme.events");
        assert_eq!(t.dead(), "acme.dead");
        assert_eq!(t.partition_queue(7), "acme.results.7");
        assert!(t.is_partition_queue("acme.results.7"));
        for not in [
            "acme.results",
            "acme.results.",
            "acme.results.x",
            "other.results.1",
            "acme.tasks.1",
        ] {
            assert!(!t.is_partition_queue(not), "{not}");
        }
    }

    #[test]
    fn results_reach_partition_queues_by_their_name_and_the_rest_the_shared_queue() {
        let t = Topology::new("acme");
        assert_eq!(t.result_route(Some("acme.results.3")), "acme.results.3");
        for other in [None, Some(""), Some("acme.tasks.x"), Some("acme.workflows")] {
            assert_eq!(t.result_route(other), "", "{other:?}");
        }
    }

    #[test]
    fn replies_go_only_to_queues_a_producer_can_own() {
        let t = Topology::new("acme");
        for ok in [
            "amq.gen-Xf3kq",
            "amq.rabbitmq.reply-to",
            "amq.rabbitmq.reply-to.g1h2AA==",
            "acme.reply.shell-42",
        ] {
            assert!(t.is_reply_queue(ok), "{ok}");
        }
        let long = format!("acme.reply.{}", "x".repeat(250));
        for refused in [
            "acme.tasks.default",
            "acme.workflows",
            "acme.results.1",
            "acme.reply.",
            "other.reply.x",
            "acmereply.x",
            "amq.gen",
            "",
            long.as_str(),
        ] {
            assert!(!t.is_reply_queue(refused), "{refused}");
        }
    }
}
