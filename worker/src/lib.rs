//! Warren's worker: register async handlers by task type, then run a pool
//! that consumes task queues, executes, publishes results and acks.
//!
//! Layout:
//! - `handler`: [`Registry`], [`TaskContext`], [`HandlerError`].
//! - `builtin`: `echo`, `sleep` and `fail`, for demos and tests, and
//!   [`Registry::with_builtins`].
//! - `kinds`: `shell` and `http`, for real work, each behind an allow-list.
//! - `config`: [`WorkerConfig`] and its defaults.
//! - `error`: [`WorkerError`], and which faults a new session cures.
//! - `worker`: [`Worker`], the session loop, the consumers and graceful
//!   shutdown.
//! - `forward`: a queue's consumer: each delivery started once it holds a
//!   slot; what it holds unstarted given back at shutdown.
//! - `suspects`: a worker of several queues fetches its suspects one at a
//!   time.
//! - `execute`: one delivery: handler, timeout, panic, result.
//! - `poison`: redelivered tasks to the suspect queue; the delivery limit.
//! - `publish`: publish what a delivery caused, await the confirm, then
//!   ack (or requeue).
//! - `nacks`: a message the broker nacks is sent again, with backoff,
//!   before anything is requeued (a quorum queue electing a leader).
//! - `settle`: coalesces a channel's acks into `multiple` acks.
//! - `slots`: the per-consumer prefetch of each task queue and the
//!   semaphore that keeps the worker to `concurrency` tasks at once.
//! - `heartbeat`: the worker's heartbeats to the scheduler's registry.
//! - `cancel`: cancelled workflows heard on `{ns}.control`; their tasks
//!   stop.
//!
//! ```no_run
//! # async fn demo() -> Result<(), warren_worker::WorkerError> {
//! use warren_worker::{HandlerError, Registry, Worker, WorkerConfig};
//! let mut registry = Registry::with_builtins();
//! registry.register("orders.create", |ctx| async move {
//!     let customer = ctx.input["customerId"].as_i64()
//!         .ok_or_else(|| HandlerError::fatal("customerId must be a number"))?;
//!     Ok(serde_json::json!({"orderId": format!("o-{customer}")}))
//! });
//! let shutdown = warren_shared::shutdown::on_signal();
//! Worker::new(WorkerConfig::default(), registry).run(shutdown).await
//! # }
//! ```

pub mod builtin;
mod cancel;
mod config;
mod error;
mod execute;
mod forward;
pub mod handler;
mod heartbeat;
pub mod kinds;
mod nacks;
mod poison;
mod publish;
mod results;
mod settle;
mod slots;
mod suspects;
mod worker;

pub use config::{DEFAULT_RESULT_BATCH, WorkerConfig};
pub use error::WorkerError;
pub use handler::{HandlerError, Registry, TaskContext};
pub use worker::Worker;
