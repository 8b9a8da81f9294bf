//! Warren's scheduler: validates workflow requests, keeps their state in a
//! durable store, dispatches ready tasks through per-queue windows, and
//! turns results into the next dispatches.
//!
//! Layout:
//! - `config`: [`SchedulerConfig`], the typed settings (binaries parse flags).
//! - `bounds`: what the scheduler builds, holds and publishes at most.
//! - `validate`: every check of a request, all problems reported at once.
//! - `template`: `${task.output.path}` / `${workflow.input.path}`.
//! - `engine`: the I/O-free state machine ([`engine::Engine`]).
//! - `batch`: the batch contract between the engine and the stores (ops,
//!   outbox messages, what a store gives back to resume from).
//! - `store`: the store, SQLite (on its own thread) or PostgreSQL (shared
//!   by several schedulers, which split the workflows by partition).
//! - `scheduler`: [`Scheduler`], the process around the engine: leads,
//!   runs broker sessions and reconnects; its children are the stages of a
//!   session (`session`, `consume`, `ownership`, `step`, `request`,
//!   `publisher`).
//! - `metrics`: counters, gauges and histograms (the engine's read from
//!   [`engine::Counters`]).
//! - `histogram`: the histogram type the engine observes into.
//! - `http`: `/healthz`, `/metrics`, `/api/...` and the web page.
//! - `workers`: the workers heard from in heartbeats.
//! - `schedule`: when schedules fire (cron with time zones, intervals),
//!   what an outage missed, and each firing's workflow id; the time
//!   arithmetic only, which schedules (issue 17) are being built on.
//! - `attempt_key`: the key that signs each task message's token and
//!   verifies each result's.
//! - `pauses`: paused task queues and types, as the control requests
//!   change them and the stores keep them.
//! - `watchdog`: gives a partitioned scheduler's partitions up when its
//!   loop stalls.

pub mod attempt_key;
pub mod batch;
pub mod bounds;
pub mod condition;
pub mod config;
pub mod engine;
pub mod histogram;
pub mod http;
pub mod metrics;
pub mod pauses;
pub mod schedule;
pub mod scheduler;
pub mod store;
pub mod template;
pub mod validate;
pub mod watchdog;
pub mod workers;

pub use config::SchedulerConfig;
pub use metrics::Metrics;
pub use scheduler::{Scheduler, SchedulerError};
pub use workers::{SharedWorkers, WorkerDirectory};
