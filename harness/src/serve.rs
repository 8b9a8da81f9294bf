//! The child's side of the harness: a scheduler or a worker that runs
//! until SIGTERM or ctrl-c, which is how the parent stops it gracefully
//! (a SIGKILL stops it in any state).

use warren_scheduler::{Scheduler, SchedulerConfig, SchedulerError};
use warren_worker::{Registry, Worker, WorkerConfig, WorkerError};

/// Runs a scheduler until a signal; returns its counters as it stopped.
pub async fn scheduler(
    config: SchedulerConfig,
) -> Result<Vec<(&'static str, u64)>, SchedulerError> {
    let shutdown = warren_shared::shutdown::on_signal();
    let scheduler = Scheduler::new(config);
    let metrics = scheduler.metrics();
    scheduler.run(shutdown).await?;
    Ok(metrics.snapshot())
}

/// Runs a worker with `registry`'s handlers until a signal.
pub async fn worker(config: WorkerConfig, registry: Registry) -> Result<(), WorkerError> {
    let shutdown = warren_shared::shutdown::on_signal();
    Worker::new(config, registry).run(shutdown).await
}
