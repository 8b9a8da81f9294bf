//! [`Worker`]: the session loop, and in each session the consumers that
//! start a task per delivery, until shutdown (drained within the grace
//! period) or a fault (a new session after a backoff).
//!
//! Order per task: run the handler (with the task's timeout), publish the
//! result and await its confirm, then ack the task. If the worker dies
//! anywhere before the ack, the broker redelivers the task: delivery is at
//! least once, and the scheduler ignores a second result for an attempt.
//!
//! A session ends at the first fault: a consumer that ends, or its
//! publishing channel or connection closed (heard at once from the
//! connection's events, not at the next publish). After the latter the
//! consuming side still works, so what the session held unanswered is given
//! back through a fresh channel before it closes, rather than left to
//! return marked `redelivered` as if its tasks had crashed a worker.

use crate::{
    cancel::{self, Cancels},
    config::WorkerConfig,
    error::WorkerError,
    execute::Executor,
    forward::{self, Consumer, Ended},
    handler::Registry,
    heartbeat::{self, Beat},
    publish::{self, Publisher, Source},
    settle::Settler,
    slots::{self, Slots},
    suspects::{self, Poller},
};
use chrono::Utc;
use lapin::{
    Connection,
    options::{BasicConsumeOptions, BasicQosOptions},
    types::{FieldTable, ShortString},
};
use std::{sync::Arc, time::Duration};
use tokio::sync::mpsc;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use warren_shared::{
    amqp, limits,
    session::{Connections, Reconnect},
    wire::WorkerState,
};

/// How long a session that lost its publishing channel may take to give
/// back what it held; what is left returns with the session.
const GIVE_BACK_WAIT: Duration = Duration::from_secs(5);

/// A session that fails sooner than this after it began is one more failed
/// attempt, not a recovery: the backoff goes on growing and the failure is
/// logged at debug. Otherwise a cause that outlives a new session (an
/// exchange deleted, which closes the publishing channel at the first
/// heartbeat) would start sessions ten times a second, each with a warning.
const STABLE_SESSION: Duration = Duration::from_secs(1);

/// A worker pool, ready to [`run`](Worker::run).
#[derive(Debug)]
pub struct Worker {
    config: WorkerConfig,
    started_at: chrono::DateTime<Utc>,
    registry: Arc<Registry>,
    /// Kept across sessions: a cancel heard before a reconnect still holds.
    cancels: Arc<Cancels>,
}

impl Worker {
    pub fn new(config: WorkerConfig, registry: Registry) -> Worker {
        Worker {
            config,
            started_at: Utc::now(),
            registry: Arc::new(registry),
            cancels: Arc::default(),
        }
    }

    /// Runs until `shutdown` is cancelled (returns `Ok` after draining) or
    /// a fault no new session cures (see [`WorkerError`]).
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), WorkerError> {
        let cfg = &self.config;
        if cfg.queues.is_empty() || cfg.concurrency == 0 {
            return Err(WorkerError::Config(
                "at least one queue and a concurrency above 0 are needed".into(),
            ));
        }
        if cfg.max_result_bytes < limits::MIN_MAX_RESULT_BYTES {
            return Err(WorkerError::Config(format!(
                "max_result_bytes is {}, below the least of {} bytes",
                cfg.max_result_bytes,
                limits::MIN_MAX_RESULT_BYTES
            )));
        }
        if cfg.max_result_bytes > limits::BROKER_MAX_MESSAGE_BYTES / 2 {
            tracing::warn!(
                max_result_bytes = cfg.max_result_bytes,
                "Results may exceed half of RabbitMQ 4.x's default max_message_size (16 MiB); \
                 raise the broker's limit and the scheduler's to match"
            );
        }
        let mut reconnect = Reconnect::new(cfg.worker_id.clone());
        loop {
            let mut connected = false;
            let began = tokio::time::Instant::now();
            let error = match self
                .session(&shutdown, &mut connected, reconnect.failures())
                .await
            {
                Ok(()) => {
                    tracing::info!(worker = %cfg.worker_id, "Worker stopped");
                    return Ok(());
                }
                Err(e) if e.is_transient() => e,
                Err(e) => return Err(e),
            };
            let recovered = connected && began.elapsed() >= STABLE_SESSION;
            if !reconnect.wait(&error, recovered, &shutdown).await {
                tracing::info!(worker = %cfg.worker_id, "Worker stopped");
                return Ok(());
            }
        }
    }

    /// One broker session: connect, consume until shutdown or a fault.
    async fn session(
        &self,
        shutdown: &CancellationToken,
        connected: &mut bool,
        failures: u32,
    ) -> Result<(), WorkerError> {
        let cfg = &self.config;
        let conns = Connections::open(
            &cfg.amqp,
            &format!("warren-worker {} {}", cfg.amqp.namespace, cfg.worker_id),
        )
        .await?;
        let outcome = self.consume(shutdown, &conns, connected, failures).await;
        // Closing the consuming connection requeues any unacked delivery
        // (prefetched ones that were never started, abandoned ones).
        // `consume` closes both itself once its session ran; this is for a
        // session that failed while starting.
        conns.close("worker stopping").await;
        outcome
    }

    async fn consume(
        &self,
        shutdown: &CancellationToken,
        conns: &Connections,
        connected: &mut bool,
        failures: u32,
    ) -> Result<(), WorkerError> {
        let (consume_conn, publish_conn) = (&conns.consume, &conns.publish);
        // Listening from the start: a channel closed before the loop waits
        // is heard too.
        let mut publish_failed = std::pin::pin!(publish::watch(publish_conn));
        let cfg = &self.config;
        let topology = cfg.amqp.topology();
        let setup = publish_conn
            .create_channel()
            .await
            .map_err(warren_shared::Error::amqp("channel.open"))?;
        // Its own queues only: the exchanges and the task queues' bindings
        // are the scheduler's (docs/security.md), so a worker needs no
        // right to configure them.
        for q in &cfg.queues {
            topology.declare_pool(&setup, q).await?;
        }
        cancel::listen(consume_conn, &topology, self.cancels.clone()).await?;
        let (settler, settled) = Settler::spawn();
        // Results, suspects and dead letters, and the heartbeats.
        let publish = amqp::confirm_channel(publish_conn).await?;
        let executor = Arc::new(Executor {
            publisher: Publisher::new(
                publish.clone(),
                topology.clone(),
                settler,
                (cfg.max_result_bytes, cfg.result_batch),
            ),
            cancels: self.cancels.clone(),
            registry: self.registry.clone(),
            worker_id: cfg.worker_id.clone(),
            max_deliveries: cfg.max_deliveries,
            exclusive: tokio::sync::RwLock::new(()),
            abandon: CancellationToken::new(),
        });

        let consume = consume_conn
            .create_channel()
            .await
            .map_err(warren_shared::Error::amqp("channel.open"))?;
        // No global prefetch (RabbitMQ 4.3 refuses it): each task queue's
        // consumer gets a prefetch of its own, and the session's slots
        // keep what runs to `concurrency` across all of them (see `slots`).
        consume
            .basic_qos(
                slots::task_prefetch(cfg.concurrency, cfg.queues.len()),
                BasicQosOptions { global: false },
            )
            .await
            .map_err(warren_shared::Error::amqp("basic.qos"))?;
        // Suspects, on their own channel: at most one held by the worker
        // (they run alone: see `execute`). One queue: a consumer with a
        // prefetch of 1; several: fetched one at a time (see `suspects`).
        let suspects = consume_conn
            .create_channel()
            .await
            .map_err(warren_shared::Error::amqp("channel.open"))?;
        let poll_suspects = cfg.queues.len() > 1;
        if !poll_suspects {
            suspects
                .basic_qos(slots::SUSPECT_PREFETCH, BasicQosOptions { global: false })
                .await
                .map_err(warren_shared::Error::amqp("basic.qos"))?;
        }
        let task_slots = Slots::new(cfg.concurrency);
        // Each consumer spawns its deliveries' tasks itself, until `stop`.
        let tracker = TaskTracker::new();
        let stop = CancellationToken::new();
        let graceful = CancellationToken::new();
        let mut forwards = tokio::task::JoinSet::new();
        let (ended_tx, mut ended) = mpsc::channel::<Ended>(cfg.queues.len() * 2);
        let mut consumers = Vec::new();
        for q in &cfg.queues {
            consumers.push((
                &consume,
                q,
                Source::Tasks,
                topology.task_queue(q),
                Some(task_slots.clone()),
            ));
            if !poll_suspects {
                consumers.push((
                    &suspects,
                    q,
                    Source::Suspect,
                    topology.suspect_queue(q),
                    None,
                ));
            }
        }
        for (ch, q, source, name, slots) in consumers {
            let tag = format!("{}:{name}", cfg.worker_id);
            let consumer = ch
                .basic_consume(
                    name.as_str().into(),
                    ShortString::from(tag.as_str()),
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                )
                .await
                .map_err(warren_shared::Error::amqp("basic.consume"))?;
            forwards.spawn(forward::forward(Consumer {
                queue: q.clone(),
                source,
                channel: ch.clone(),
                tag,
                consumer,
                slots,
                executor: executor.clone(),
                tracker: tracker.clone(),
                stop: stop.clone(),
                graceful: graceful.clone(),
                ended: ended_tx.clone(),
            }));
        }
        if poll_suspects {
            forwards.spawn(suspects::poll(Poller {
                channel: suspects.clone(),
                queues: cfg.queues.clone(),
                executor: executor.clone(),
                tracker: tracker.clone(),
                stop: stop.clone(),
                ended: ended_tx.clone(),
            }));
        }
        drop(ended_tx);
        *connected = true;
        if failures > 0 {
            tracing::info!(attempts = failures, "Reconnected to the broker");
        }
        tracing::info!(
            worker = %cfg.worker_id,
            amqp = ?cfg.amqp,
            queues = ?cfg.queues,
            concurrency = cfg.concurrency,
            handlers = ?self.registry.kinds(),
            "Worker consuming"
        );

        let beat = Beat::new(cfg, self.started_at, tracker.clone());
        tokio::spawn(heartbeat::heartbeats(
            publish.clone(),
            topology.clone(),
            beat.clone(),
            stop.clone(),
        ));
        let outcome = tokio::select! {
            biased;
            () = shutdown.cancelled() => Ok(()),
            e = ended.recv() => {
                let (queue, reason) = e.unwrap_or_else(|| {
                    (cfg.queues.join(","), "all consumers stopped".into())
                });
                Err(WorkerError::ConsumerEnded { queue, reason })
            }
            reason = &mut publish_failed => {
                executor.publisher.lose(&reason);
                Err(WorkerError::PublishLost { reason })
            }
            reason = executor.publisher.lost() => Err(WorkerError::PublishLost { reason }),
        };
        let publish_lost = matches!(outcome, Err(WorkerError::PublishLost { .. }));
        // No task starts after this. Shutting down, the consumers are
        // cancelled and give back what they hold unstarted (after a lost
        // publishing side, the publisher holds it, to give back below);
        // after another fault it stays unacked and returns to its queue
        // with the session.
        if outcome.is_ok() || publish_lost {
            graceful.cancel();
        }
        stop.cancel();
        while forwards.join_next().await.is_some() {}
        tracker.close();
        if outcome.is_err() {
            // The session is failing: running tasks stop at once. Their
            // results could not be published (after a lost publishing side)
            // or acked (after a lost consuming one).
            executor.abandon.cancel();
            tracker.wait().await;
            if publish_lost {
                give_back_held(publish_conn, &executor.publisher).await;
            }
        } else {
            self.drain(&tracker, &executor.abandon).await;
            // The last heartbeat: the registry shows it stopping, not lost.
            let mut last = beat.snapshot();
            last.state = WorkerState::Stopping;
            heartbeat::publish(&publish, &topology, &last).await;
        }
        // Every task is done: let the settler send the acks it still holds.
        drop(executor);
        let _ = settled.await;
        // Closed while this session's channels are still held. A channel
        // handle dropped first makes lapin close that channel on its own,
        // racing the connection's close, which then fails: the socket is
        // dropped without a close handshake, and acks just sent (a given
        // back task's) can be lost, the task then coming back twice.
        conns.close("worker stopping").await;
        drop(publish);
        outcome
    }

    /// Stops taking work and lets what runs finish within the grace period.
    async fn drain(&self, tracker: &TaskTracker, abandon: &CancellationToken) {
        let cfg = &self.config;
        let in_flight = tracker.len();
        tracing::debug!(worker = %cfg.worker_id, in_flight, "Consumers stopped");
        if in_flight > 0 {
            tracing::info!(in_flight, grace = ?cfg.shutdown_grace, "Waiting for in-flight tasks");
        }
        if tokio::time::timeout(cfg.shutdown_grace, tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                abandoned = tracker.len(),
                "Grace period over; unfinished tasks return to their queue"
            );
            abandon.cancel();
            tracker.wait().await;
        }
    }
}

/// After the session lost its publishing channel, with every task stopped:
/// gives back what it held unanswered (running tasks, results that could
/// not be published, deliveries the consumers held unstarted) through a
/// fresh channel of the publishing connection, within [`GIVE_BACK_WAIT`].
/// Their tasks run again, as ordinary tasks rather than suspects: none of
/// them crashed a worker. When no channel can be opened (the connection is
/// gone too) they return with the session, marked `redelivered`, as after
/// any lost connection.
async fn give_back_held(publish_conn: &Connection, publisher: &Publisher) {
    if !publisher.holds_unanswered() {
        return;
    }
    let give_back = async {
        let ch = amqp::confirm_channel(publish_conn).await?;
        let counts = publisher.give_back_unanswered(&ch).await;
        let _ = ch.close(200, "given back".into()).await;
        Ok::<_, warren_shared::Error>(counts)
    };
    match tokio::time::timeout(GIVE_BACK_WAIT, give_back).await {
        Ok(Ok((0, 0))) => {}
        Ok(Ok((given, left))) => {
            tracing::info!(
                given,
                left,
                "Tasks held when publishing was lost given back to their queues"
            );
        }
        Ok(Err(e)) => {
            tracing::info!(error = %e, "No channel to give tasks back on; they return with the session");
        }
        Err(_) => {
            tracing::warn!(timeout = ?GIVE_BACK_WAIT, "Giving tasks back took too long; the rest return with the session");
        }
    }
}
