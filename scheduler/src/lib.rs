//! Warren's scheduler: validates workflow requests, keeps their state in a
//! durable store, dispatches ready tasks through per-queue windows, and
//! turns results into the next dispatches.
//!
//! Layout:
//! - `config`: [`SchedulerConfig`], the typed settings (binaries parse flags).
//! - `validate`: every check of a request, all problems reported at once.
//! - `template`: `${task.output.path}` / `${workflow.input.path}`.
//! - `state`: the I/O-free state machine ([`state::Engine`]).
//! - `store`: the SQLite store on its own thread, with the outbox.
//! - `engine`: the loop that batches deliveries, commits, publishes, acks.
//! - `metrics`: counters, gauges and histograms.
//! - `http`: `/healthz`, `/metrics`, `/api/...` and the web page.
//! - `registry`: the workers heard from in heartbeats.

pub mod batch;
pub mod config;
pub mod engine;
pub mod http;
pub mod metrics;
pub mod registry;
pub mod state;
pub mod store;
pub mod template;
pub mod validate;

pub use config::SchedulerConfig;
pub use engine::{Scheduler, SchedulerError};
pub use metrics::Metrics;
pub use registry::{SharedRegistry, WorkerRegistry};
