//! The worker pool: consume task queues, execute, publish the result with a
//! confirm, then ack.
//!
//! Order per task: run the handler (with the task's timeout), publish the
//! result and await its confirm, then ack the task. If the worker dies
//! anywhere before the ack, the broker redelivers the task: delivery is at
//! least once, and the scheduler ignores a second result for an attempt.

use crate::{
    cancel::{self, Cancels},
    handler::{HandlerError, Registry, TaskContext},
    settle::{Settle, Settler},
};
use chrono::Utc;
use futures_lite::{FutureExt, StreamExt};
use lapin::{
    BasicProperties, Channel, Connection,
    message::Delivery,
    options::{
        BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicQosOptions,
        BasicRejectOptions,
    },
    types::{AMQPValue, FieldTable, ShortString},
};
use serde_json::Value;
use std::{sync::Arc, time::Duration};
use tokio::sync::mpsc;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use warren_shared::{
    AmqpConfig, QueueType, Topology, amqp,
    session::{Connections, Reconnect},
    wire::{
        DEFAULT_QUEUE, HEADER_DELIVERIES, ResultStatus, TYPE_HEARTBEAT, TYPE_RESULT, TaskError,
        TaskMessage, TaskResult, WorkerHeartbeat, WorkerState,
    },
};

/// The worker's typed settings.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Broker address and namespace.
    pub amqp: AmqpConfig,
    /// Task queues to consume (default `["default"]`).
    pub queues: Vec<String>,
    /// Tasks executed at once; also the prefetch (default 8).
    pub concurrency: u16,
    /// Shown in results and reports (default `worker-{pid}`).
    pub worker_id: String,
    /// How long in-flight tasks may run on after shutdown is requested
    /// before they are abandoned to redelivery (default 30 s).
    pub shutdown_grace: Duration,
    /// Deliveries of one task message after which the worker gives up on it
    /// with a failed result instead of running it again (default 5). Each
    /// redelivery means the task's last run ended without an ack: its worker
    /// crashed, hung, lost its connection or was stopped mid-task.
    pub max_deliveries: u32,
    /// How often the worker announces itself to the scheduler's registry
    /// (default 5 s); it counts as lost after three intervals of silence.
    pub heartbeat_interval: Duration,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            amqp: AmqpConfig::default(),
            queues: vec![DEFAULT_QUEUE.to_owned()],
            concurrency: 8,
            worker_id: format!("worker-{}", std::process::id()),
            shutdown_grace: Duration::from_secs(30),
            max_deliveries: 5,
            heartbeat_interval: Duration::from_secs(5),
        }
    }
}

/// Why a worker stopped other than by shutdown.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WorkerError {
    #[error(transparent)]
    Broker(#[from] warren_shared::Error),
    #[error("the consumer of `{queue}` ended: {reason}")]
    ConsumerEnded { queue: String, reason: String },
    #[error("invalid worker configuration: {0}")]
    Config(String),
}

/// A worker pool, ready to [`run`](Worker::run).
#[derive(Debug)]
pub struct Worker {
    config: WorkerConfig,
    started_at: chrono::DateTime<Utc>,
    registry: Arc<Registry>,
    /// Kept across sessions: a cancel heard before a reconnect still holds.
    cancels: Arc<Cancels>,
}

/// Which queue of a pool a delivery came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    /// `{ns}.tasks.{queue}`: tasks run concurrently.
    Tasks,
    /// `{ns}.suspect.{queue}`: tasks whose last run ended without an ack,
    /// run alone.
    Suspect,
}

/// What each in-flight task needs to publish its result.
struct Shared {
    /// Coalesces the acks of the tasks channel (suspects, one at a time on
    /// their own channel, are acked directly).
    settler: Settler,
    cancels: Arc<Cancels>,
    registry: Arc<Registry>,
    publish: Channel,
    topology: Topology,
    worker_id: String,
    max_deliveries: u32,
    /// Ordinary tasks hold it shared, suspect tasks exclusively: a suspect
    /// runs alone in this process, so a crash while it runs is its own.
    exclusive: tokio::sync::RwLock<()>,
    /// Cancelled when the shutdown grace period is over: tasks still
    /// running stop without publishing or acking, and are redelivered.
    abandon: CancellationToken,
}

/// A consumer that ended on its own: the queue and why.
type Ended = (String, String);

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
    /// the broker connection fails.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), WorkerError> {
        let cfg = &self.config;
        if cfg.queues.is_empty() || cfg.concurrency == 0 {
            return Err(WorkerError::Config(
                "at least one queue and a concurrency above 0 are needed".into(),
            ));
        }
        let mut reconnect = Reconnect::new(cfg.worker_id.clone());
        loop {
            let mut connected = false;
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
            if !reconnect.wait(&error, connected, &shutdown).await {
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
        let outcome = self
            .consume(
                shutdown,
                &conns.consume,
                &conns.publish,
                connected,
                failures,
            )
            .await;
        // Closing the consuming connection requeues any unacked delivery
        // (prefetched ones that were never started, abandoned ones).
        conns.close("worker stopping").await;
        outcome
    }

    async fn consume(
        &self,
        shutdown: &CancellationToken,
        consume_conn: &Connection,
        publish_conn: &Connection,
        connected: &mut bool,
        failures: u32,
    ) -> Result<(), WorkerError> {
        let cfg = &self.config;
        let topology = cfg.amqp.topology();
        let setup = publish_conn
            .create_channel()
            .await
            .map_err(warren_shared::Error::amqp("channel.open"))?;
        topology.declare(&setup).await?;
        for q in &cfg.queues {
            topology.declare_task_queue(&setup, q).await?;
            topology.declare_suspect_queue(&setup, q).await?;
        }
        cancel::listen(consume_conn, &topology, self.cancels.clone()).await?;
        let (settler, settled) = Settler::spawn();
        let shared = Arc::new(Shared {
            settler,
            cancels: self.cancels.clone(),
            registry: self.registry.clone(),
            publish: amqp::confirm_channel(publish_conn).await?,
            topology: topology.clone(),
            worker_id: cfg.worker_id.clone(),
            max_deliveries: cfg.max_deliveries,
            exclusive: tokio::sync::RwLock::new(()),
            abandon: CancellationToken::new(),
        });

        let consume = consume_conn
            .create_channel()
            .await
            .map_err(warren_shared::Error::amqp("channel.open"))?;
        // Global: one limit shared by the consumers of every queue. Quorum
        // queues have no global prefetch: each queue's consumer gets an
        // equal share of the concurrency instead.
        let (global, prefetch) = match cfg.amqp.queue_type {
            QueueType::Classic => (true, cfg.concurrency),
            QueueType::Quorum => (
                false,
                (cfg.concurrency / cfg.queues.len().max(1) as u16).max(1),
            ),
        };
        consume
            .basic_qos(prefetch, BasicQosOptions { global })
            .await
            .map_err(warren_shared::Error::amqp("basic.qos"))?;
        // Suspects: one at a time per worker, on their own channel.
        let suspects = consume_conn
            .create_channel()
            .await
            .map_err(warren_shared::Error::amqp("channel.open"))?;
        suspects
            .basic_qos(1, BasicQosOptions { global })
            .await
            .map_err(warren_shared::Error::amqp("basic.qos"))?;
        // Each consumer spawns its deliveries' tasks itself, until `stop`.
        let tracker = TaskTracker::new();
        let stop = CancellationToken::new();
        let mut forwards = tokio::task::JoinSet::new();
        let (ended_tx, mut ended) = mpsc::channel::<Ended>(cfg.queues.len() * 2);
        let mut tags = Vec::new();
        for q in &cfg.queues {
            for (ch, source, name) in [
                (&consume, Source::Tasks, topology.task_queue(q)),
                (&suspects, Source::Suspect, topology.suspect_queue(q)),
            ] {
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
                tags.push((ch.clone(), tag));
                forwards.spawn(forward(Consumer {
                    queue: q.clone(),
                    source,
                    consumer,
                    shared: shared.clone(),
                    tracker: tracker.clone(),
                    stop: stop.clone(),
                    ended: ended_tx.clone(),
                }));
            }
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

        let beat = self.heartbeat(tracker.clone());
        tokio::spawn(heartbeats(
            shared.publish.clone(),
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
        };
        // No task starts after this: deliveries not yet taken stay unacked
        // and return to their queue.
        stop.cancel();
        while forwards.join_next().await.is_some() {}
        tracker.close();
        if outcome.is_err() {
            // The session is gone: no result of a running task can be acked
            // on it, and the broker is redelivering those tasks already.
            shared.abandon.cancel();
            tracker.wait().await;
        } else {
            self.drain(&tags, &tracker, &shared.abandon).await;
            // The last heartbeat: the registry shows it stopping, not lost.
            let mut last = beat.snapshot();
            last.state = WorkerState::Stopping;
            publish_heartbeat(&shared.publish, &topology, &last).await;
        }
        // Every task is done: let the settler send the acks it still holds.
        drop(shared);
        let _ = settled.await;
        outcome
    }

    /// Stops taking work and lets what runs finish within the grace period.
    async fn drain(
        &self,
        consumers: &[(Channel, String)],
        tracker: &TaskTracker,
        abandon: &CancellationToken,
    ) {
        let cfg = &self.config;
        tracing::debug!(worker = %cfg.worker_id, "Cancelling consumers");
        for (ch, tag) in consumers {
            let _ = ch
                .basic_cancel(tag.as_str().into(), BasicCancelOptions::default())
                .await;
        }
        let in_flight = tracker.len();
        tracing::debug!(worker = %cfg.worker_id, in_flight, "Consumers cancelled");
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

impl WorkerError {
    /// True for faults a new broker session may cure.
    pub fn is_transient(&self) -> bool {
        match self {
            WorkerError::Broker(e) => e.is_transient(),
            WorkerError::ConsumerEnded { .. } => true,
            WorkerError::Config(_) => false,
        }
    }
}

/// One queue's consumer and what its deliveries' tasks need.
struct Consumer {
    queue: String,
    source: Source,
    consumer: lapin::Consumer,
    shared: Arc<Shared>,
    tracker: TaskTracker,
    stop: CancellationToken,
    ended: mpsc::Sender<Ended>,
}

/// Starts a task for each delivery until `stop`; reports a consumer that
/// ends on its own.
async fn forward(mut c: Consumer) {
    let reason = loop {
        tokio::select! {
            biased;
            () = c.stop.cancelled() => return,
            next = c.consumer.next() => match next {
                Some(Ok(d)) => {
                    c.tracker
                        .spawn(execute(c.shared.clone(), c.queue.clone(), c.source, d));
                }
                Some(Err(e)) => break e.to_string(),
                None => break "the broker cancelled the consumer or closed the channel".to_owned(),
            },
        }
    };
    let _ = c.ended.send((c.queue, reason)).await;
}

/// The ids of a task body that did not decode as a whole.
fn readable_ids(body: &[u8]) -> Option<(String, String, u32)> {
    let v: Value = serde_json::from_slice(body).ok()?;
    Some((
        v.get("workflow_id")?.as_str()?.to_owned(),
        v.get("task_id")?.as_str()?.to_owned(),
        u32::try_from(v.get("attempt")?.as_u64()?).ok()?,
    ))
}

async fn execute(shared: Arc<Shared>, queue: String, source: Source, d: Delivery) {
    let abandon = shared.abandon.clone();
    let work = async {
        if d.redelivered
            && let Ok(msg) = serde_json::from_slice::<TaskMessage>(&d.data)
        {
            return suspect(&shared, &queue, source, &d, msg).await;
        }
        // Ordinary tasks run side by side; a suspect waits until it can
        // run alone (and ordinary tasks wait while it runs).
        let _turn = match source {
            Source::Tasks => Turn::Shared(shared.exclusive.read().await),
            Source::Suspect => Turn::Alone(shared.exclusive.write().await),
        };
        run_task(&shared, &queue, source, &d).await;
    };
    tokio::select! {
        () = work => {}
        // Dropping the delivery unacked: it is requeued when the channel closes.
        () = abandon.cancelled() => {}
    }
}

/// A held turn to run (kept for its drop).
#[allow(dead_code)]
enum Turn<'a> {
    Shared(tokio::sync::RwLockReadGuard<'a, ()>),
    Alone(tokio::sync::RwLockWriteGuard<'a, ()>),
}

async fn run_task(shared: &Shared, queue: &str, source: Source, d: &Delivery) {
    let started_at = Utc::now();
    let msg: TaskMessage = match serde_json::from_slice(&d.data) {
        Ok(m) => m,
        Err(e) => {
            let reason = format!("undecodable task message: {e}");
            match readable_ids(&d.data) {
                Some((workflow_id, task_id, attempt)) => {
                    tracing::warn!(workflow = %workflow_id, task = %task_id, %reason, "Failing undecodable task");
                    let result = TaskResult {
                        workflow_id,
                        task_id,
                        attempt,
                        status: ResultStatus::Failed,
                        output: None,
                        error: Some(TaskError {
                            message: reason,
                            retryable: false,
                        }),
                        worker: shared.worker_id.clone(),
                        started_at: Some(started_at),
                        finished_at: Some(Utc::now()),
                    };
                    finish(shared, source, d, &result).await;
                }
                None => dead_letter(shared, queue, source, d, &reason).await,
            }
            return;
        }
    };
    let Some(entered) = shared.cancels.enter(&msg.workflow_id) else {
        tracing::info!(workflow = %msg.workflow_id, task = %msg.task_id, "Task of a cancelled workflow dropped");
        ack(shared, source, d).await;
        return;
    };
    let outcome = match shared.registry.get(&msg.kind) {
        None => Err(HandlerError::fatal(format!(
            "no handler for task type `{}` on worker {} (it handles: {})",
            msg.kind,
            shared.worker_id,
            shared.registry.kinds().join(", ")
        ))),
        Some(handler) => {
            let ctx = TaskContext {
                workflow_id: msg.workflow_id.clone(),
                task_id: msg.task_id.clone(),
                attempt: msg.attempt,
                max_attempts: msg.max_attempts,
                kind: msg.kind.clone(),
                input: msg.input,
            };
            // A panic in the handler becomes a failed result, not a dead
            // worker (this already runs in a task of its own).
            let run = std::panic::AssertUnwindSafe(handler(ctx)).catch_unwind();
            let timed = async {
                match msg.timeout_ms {
                    Some(ms) => match tokio::time::timeout(Duration::from_millis(ms), run).await {
                        Ok(c) => c,
                        // Dropping the handler's future cancels it.
                        Err(_) => Ok(Err(HandlerError::retryable(format!(
                            "timed out after {ms} ms"
                        )))),
                    },
                    None => run.await,
                }
            };
            let caught = tokio::select! {
                c = timed => c,
                () = entered.token.cancelled() => {
                    // The workflow has ended: no result is wanted.
                    tracing::info!(workflow = %msg.workflow_id, task = %msg.task_id, "Task stopped: its workflow was cancelled");
                    ack(shared, source, d).await;
                    return;
                }
            };
            caught.unwrap_or_else(|panic| {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "non-string panic".into());
                Err(HandlerError::retryable(format!("handler panicked: {what}")))
            })
        }
    };
    let (status, output, error) = match outcome {
        Ok(v) => (ResultStatus::Succeeded, Some(v), None),
        Err(e) => {
            tracing::info!(workflow = %msg.workflow_id, task = %msg.task_id, attempt = msg.attempt, error = %e.message, "Task failed");
            (
                ResultStatus::Failed,
                None,
                Some(TaskError {
                    message: e.message,
                    retryable: e.retryable,
                }),
            )
        }
    };
    let result = TaskResult {
        workflow_id: msg.workflow_id,
        task_id: msg.task_id,
        attempt: msg.attempt,
        status,
        output,
        error,
        worker: shared.worker_id.clone(),
        started_at: Some(started_at),
        finished_at: Some(Utc::now()),
    };
    finish(shared, source, d, &result).await;
}

/// A redelivered task: its last run ended without an ack (its worker
/// crashed, hung, lost its connection or stopped), maybe because of this
/// task, maybe because of another that ran beside it. Classic queues do not
/// count deliveries, so the worker does: it moves the task to the pool's
/// suspect queue with the count raised in a header (confirmed, then acks
/// this delivery). Suspects run alone, so once a task is a suspect only its
/// own crashes raise its count; past `max_deliveries` the worker answers
/// with a failed result instead, so a task that crashes every worker that
/// runs it fails rather than being redelivered forever.
async fn suspect(shared: &Shared, queue: &str, source: Source, d: &Delivery, msg: TaskMessage) {
    let seen = amqp::header_int(&d.properties, HEADER_DELIVERIES)
        .unwrap_or(1)
        .max(1);
    let deliveries = seen.saturating_add(1);
    if deliveries > i64::from(shared.max_deliveries) {
        tracing::error!(workflow = %msg.workflow_id, task = %msg.task_id, deliveries, "Giving up on a task that never finishes");
        let now = Utc::now();
        let result = TaskResult {
            workflow_id: msg.workflow_id,
            task_id: msg.task_id,
            attempt: msg.attempt,
            status: ResultStatus::Failed,
            output: None,
            error: Some(TaskError {
                message: format!(
                    "delivered {deliveries} times without finishing: the task crashes, hangs or outlives its worker"
                ),
                retryable: false,
            }),
            worker: shared.worker_id.clone(),
            started_at: Some(now),
            finished_at: Some(now),
        };
        finish(shared, source, d, &result).await;
        return;
    }
    tracing::warn!(workflow = %msg.workflow_id, task = %msg.task_id, deliveries, "Task redelivered; it will run alone");
    let mut headers = d.properties.headers().clone().unwrap_or_default();
    headers.insert(HEADER_DELIVERIES.into(), AMQPValue::LongLongInt(deliveries));
    let props = d.properties.clone().with_headers(headers);
    let target = shared.topology.suspect_queue(queue);
    let moved = Outgoing {
        exchange: "",
        key: &target,
        body: &d.data,
        props,
    };
    if let Err(e) = publish_then_settle(shared, source, d, moved).await {
        tracing::error!(error = %e, "Could not move a redelivered task; leaving it to the broker");
    }
}

/// What a heartbeat says, with the in-flight count read when it is sent.
#[derive(Clone)]
struct Beat {
    template: WorkerHeartbeat,
    tracker: TaskTracker,
}

impl Beat {
    fn snapshot(&self) -> WorkerHeartbeat {
        WorkerHeartbeat {
            in_flight: self.tracker.len() as u32,
            sent_at: Utc::now(),
            ..self.template.clone()
        }
    }
}

impl Worker {
    fn heartbeat(&self, tracker: TaskTracker) -> Beat {
        let cfg = &self.config;
        Beat {
            template: WorkerHeartbeat {
                worker_id: cfg.worker_id.clone(),
                host: host_name(),
                pid: std::process::id(),
                queues: cfg.queues.clone(),
                concurrency: u32::from(cfg.concurrency),
                in_flight: 0,
                version: concat!("warren-worker ", env!("CARGO_PKG_VERSION")).into(),
                interval_ms: cfg.heartbeat_interval.as_millis() as u64,
                state: WorkerState::Running,
                started_at: Some(self.started_at),
                sent_at: Utc::now(),
            },
            tracker,
        }
    }
}

pub use warren_shared::host_name;

/// Announces the worker every interval until `stop`.
async fn heartbeats(ch: Channel, topology: Topology, beat: Beat, stop: CancellationToken) {
    let interval = Duration::from_millis(beat.template.interval_ms.max(1));
    loop {
        publish_heartbeat(&ch, &topology, &beat.snapshot()).await;
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(interval) => {}
        }
    }
}

/// Publishes one heartbeat (not awaited: a lost one is replaced by the
/// next).
async fn publish_heartbeat(ch: &Channel, topology: &Topology, h: &WorkerHeartbeat) {
    let body = serde_json::to_vec(h).expect("wire types always serialise");
    let key = format!("worker.{}.heartbeat", h.worker_id);
    let props = amqp::json_properties().with_type(TYPE_HEARTBEAT.into());
    if let Err(e) = amqp::publish(ch, &topology.events(), &key, false, &body, props).await {
        tracing::debug!(error = %e, "Heartbeat not sent");
    }
}

/// Acks a task whose outcome is safely on the broker.
async fn ack(shared: &Shared, source: Source, d: &Delivery) {
    match source {
        Source::Tasks => shared
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
async fn requeue(shared: &Shared, source: Source, d: &Delivery) {
    let _ = d.acker.reject(BasicRejectOptions { requeue: true }).await;
    if source == Source::Tasks {
        shared.settler.send(Settle::Rejected(d.delivery_tag));
    }
}

/// Publishes the result, awaits its confirm, then acks the task. When the
/// result cannot be confirmed the task is requeued, never acked.
async fn finish(shared: &Shared, source: Source, d: &Delivery, result: &TaskResult) {
    let body = serde_json::to_vec(result).expect("wire types always serialise");
    // A scheduler sharing the namespace with others names the queue of the
    // workflow's partition in `reply_to`; anything else goes to the results
    // exchange (whichever scheduler receives it forwards it).
    let (exchange, key) = match d.properties.reply_to() {
        Some(to) if shared.topology.is_partition_queue(to.as_str()) => {
            (String::new(), to.as_str().to_owned())
        }
        _ => (shared.topology.results(), String::new()),
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
    if let Err(e) = publish_then_settle(shared, source, d, out).await {
        tracing::error!(error = %e, workflow = %result.workflow_id, task = %result.task_id, "Result not confirmed; requeueing the task");
    }
}

async fn dead_letter(shared: &Shared, queue: &str, source: Source, d: &Delivery, reason: &str) {
    tracing::warn!(queue, %reason, "Dead-lettering a task message");
    let exchange = shared.topology.dead();
    let props = amqp::dead_letter_properties(d, &shared.topology.task_queue(queue), reason);
    let out = Outgoing {
        exchange: &exchange,
        key: "",
        body: &d.data,
        props,
    };
    if let Err(e) = publish_then_settle(shared, source, d, out).await {
        tracing::error!(error = %e, "Dead-lettering failed; requeueing");
    }
}

/// One message a delivery caused, for [`publish_then_settle`].
struct Outgoing<'a> {
    exchange: &'a str,
    key: &'a str,
    body: &'a [u8],
    props: BasicProperties,
}

/// Publishes what a delivery caused (mandatory), awaits the broker's
/// confirm, then acks the delivery. When the confirm does not come (a nack,
/// no queue to route to, a lost channel) the delivery is requeued, never
/// acked, and the error returned for the caller to log. Every path that
/// answers a delivery with a message goes through here, so "ack only after
/// the confirm" holds in this one place.
async fn publish_then_settle(
    shared: &Shared,
    source: Source,
    d: &Delivery,
    out: Outgoing<'_>,
) -> Result<(), warren_shared::Error> {
    let sent = async {
        let confirm = amqp::publish(
            &shared.publish,
            out.exchange,
            out.key,
            true,
            out.body,
            out.props,
        )
        .await?;
        amqp::confirmed(confirm, out.exchange, out.key).await
    }
    .await;
    match sent {
        Ok(()) => {
            ack(shared, source, d).await;
            Ok(())
        }
        Err(e) => {
            requeue(shared, source, d).await;
            Err(e)
        }
    }
}
