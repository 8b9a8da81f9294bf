//! `warren dev`: a scheduler and a worker (built-in handlers) in the CLI's
//! own process, on a temporary store and a fresh namespace, running one
//! request; both are deleted afterwards.

use anyhow::Context;
use serde_json::Value;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use warren_producer::Client;
use warren_scheduler::{Scheduler, SchedulerConfig};
use warren_shared::{AmqpConfig, wire::WorkflowReport};
use warren_worker::{Registry, Worker, WorkerConfig};

/// Runs `request` on a scheduler and a worker started for it, and returns
/// its outcome once everything is cleaned up.
pub async fn run(
    mut amqp: AmqpConfig,
    request: Value,
    timeout: Duration,
) -> anyhow::Result<WorkflowReport> {
    let mut queues: Vec<String> = request["tasks"]
        .as_array()
        .map(|ts| {
            ts.iter()
                .map(|t| {
                    t["queue"]
                        .as_str()
                        .unwrap_or(warren_shared::wire::DEFAULT_QUEUE)
                        .to_owned()
                })
                .collect()
        })
        .unwrap_or_default();
    queues.sort();
    queues.dedup();
    if queues.is_empty() {
        queues.push(warren_shared::wire::DEFAULT_QUEUE.to_owned());
    }
    amqp.namespace = format!("{}-dev-{}", amqp.namespace, uuid::Uuid::new_v4().simple());
    let dir = tempfile::tempdir().context("cannot create a temporary directory for the store")?;
    let store_path = dir.path().join("warren.db");
    eprintln!(
        "warren dev: scheduler and worker in-process, namespace {}, store {}",
        amqp.namespace,
        store_path.display()
    );

    // The client first: it declares the namespace's exchanges, which the
    // worker binds its queues to (it declares no exchange itself).
    let client = Client::connect(&amqp).await?;
    let stop = CancellationToken::new();
    let scheduler = Scheduler::new(SchedulerConfig {
        amqp: amqp.clone(),
        store: store_path.into(),
        ..SchedulerConfig::default()
    });
    let scheduler = tokio::spawn(scheduler.run(stop.clone()));
    let worker = Worker::new(
        WorkerConfig {
            amqp: amqp.clone(),
            queues: queues.clone(),
            worker_id: "dev-worker".into(),
            shutdown_grace: Duration::from_secs(5),
            ..WorkerConfig::default()
        },
        Registry::with_builtins(),
    );
    let worker = tokio::spawn(worker.run(stop.clone()));

    let outcome = tokio::select! {
        r = client.submit_and_wait(request, timeout) => r.map_err(anyhow::Error::from),
        r = wait_failed(scheduler, worker, stop.clone()) => Err(r),
    };
    client.close().await;
    stop.cancel();
    cleanup(&amqp, &queues).await;
    outcome
}

/// Resolves only when the scheduler or the worker stopped by itself.
async fn wait_failed(
    scheduler: tokio::task::JoinHandle<Result<(), warren_scheduler::SchedulerError>>,
    worker: tokio::task::JoinHandle<Result<(), warren_worker::WorkerError>>,
    stop: CancellationToken,
) -> anyhow::Error {
    let e = tokio::select! {
        r = scheduler => match r {
            Ok(Ok(())) => anyhow::anyhow!("the scheduler stopped"),
            Ok(Err(e)) => anyhow::Error::from(e).context("the scheduler failed"),
            Err(e) => anyhow::Error::from(e).context("the scheduler panicked"),
        },
        r = worker => match r {
            Ok(Ok(())) => anyhow::anyhow!("the worker stopped"),
            Ok(Err(e)) => anyhow::Error::from(e).context("the worker failed"),
            Err(e) => anyhow::Error::from(e).context("the worker panicked"),
        },
    };
    stop.cancel();
    e
}

async fn cleanup(amqp: &AmqpConfig, queues: &[String]) {
    let topology = amqp.topology();
    let deleted = async {
        let conn = amqp.connect("warren dev cleanup").await?;
        let ch = conn
            .create_channel()
            .await
            .map_err(warren_shared::Error::amqp("channel.open"))?;
        topology.delete(&ch, queues).await?;
        warren_shared::amqp::close(&conn, "done").await;
        Ok::<_, warren_shared::Error>(())
    }
    .await;
    if let Err(e) = deleted {
        eprintln!(
            "warning: could not delete namespace {}: {e}",
            amqp.namespace
        );
    }
}
