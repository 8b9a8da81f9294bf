//! Warren's worker: register async handlers by task type, then run a pool
//! that consumes task queues, executes, publishes results and acks.
//!
//! Layout:
//! - `handler`: [`Registry`], [`TaskContext`], [`HandlerError`].
//! - `builtin`: `echo`, `sleep` and `fail`, for demos and tests.
//! - `kinds`: `shell` and `http`, for real work, each behind an allow-list.
//! - `runner`: [`Worker`], the consume/execute/publish/ack loop, and
//!   graceful shutdown.
//! - `cancel`: cancelled workflows heard on `{ns}.control`; their tasks
//!   stop.
//! - `settle`: coalesces a channel's acks into `multiple` acks.
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
pub mod handler;
pub mod kinds;
pub mod runner;
mod settle;

pub use handler::{HandlerError, Registry, TaskContext};
pub use runner::{Worker, WorkerConfig, WorkerError};
