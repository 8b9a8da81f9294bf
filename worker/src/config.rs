//! The worker's typed settings, [`WorkerConfig`], and their defaults. Only
//! the binary reads flags and the environment; it fills this in.

use std::time::Duration;
use warren_shared::{AmqpConfig, limits, wire::DEFAULT_QUEUE};

/// The default of [`WorkerConfig::result_batch`].
pub const DEFAULT_RESULT_BATCH: u16 = 100;

/// The worker's typed settings.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Broker address and namespace.
    pub amqp: AmqpConfig,
    /// Task queues to consume (default `["default"]`).
    pub queues: Vec<String>,
    /// Tasks executed at once across all `queues` (default 8). With one
    /// queue it is also the prefetch; with several, each queue's consumer
    /// prefetches `ceil(2 * concurrency / queues)` (at most `concurrency`)
    /// and a semaphore keeps what runs to `concurrency`.
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
    /// The largest result a worker publishes, in bytes of the result
    /// message's JSON body (default 2 MiB, at least 1 KiB). A larger one
    /// is replaced by a failed, non-retryable result naming the task, the
    /// size and the limit. See [`limits::DEFAULT_MAX_RESULT_BYTES`] for why
    /// the default is half of RabbitMQ 4.x's 16 MiB message limit.
    pub max_result_bytes: usize,
    /// Most results sent in one message while earlier ones await the
    /// broker's confirm (default 100, at most
    /// the protocol's 1,000; 1 sends every result alone). An idle
    /// worker sends each result at once whatever this is.
    pub result_batch: usize,
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
            max_result_bytes: limits::DEFAULT_MAX_RESULT_BYTES,
            result_batch: usize::from(DEFAULT_RESULT_BATCH),
        }
    }
}
