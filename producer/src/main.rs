//! `warren`: submit workflows, wait for them, show their status, or run a
//! whole system in one process on an example (`warren dev FILE`).

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use serde_json::Value;
use std::{path::PathBuf, process::ExitCode, time::Duration};
use tokio_util::sync::CancellationToken;
use warren_producer::Client;
use warren_scheduler::{Scheduler, SchedulerConfig};
use warren_shared::cli::BrokerArgs;
use warren_shared::{
    AmqpConfig, Topology,
    wire::{WorkflowReport, WorkflowStatus},
};
use warren_worker::{Registry, Worker, WorkerConfig};

#[derive(Parser, Debug)]
#[command(version, about = "Submit and inspect Warren workflows")]
struct Cli {
    #[command(flatten)]
    broker: BrokerArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Publish a workflow from a JSON file and print its id.
    Submit {
        file: PathBuf,
        /// Wait for the outcome, print it, exit 0 only if it succeeded.
        #[arg(long)]
        wait: bool,
        /// Seconds to wait with --wait.
        #[arg(long, default_value_t = 300)]
        timeout: u64,
    },
    /// Print a workflow's state and each task's state.
    Status {
        id: String,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
        /// Seconds to wait for the scheduler's answer.
        #[arg(long, default_value_t = 10)]
        timeout: u64,
    },
    /// Run a scheduler and a worker (built-in handlers) in this process on a
    /// throwaway store and namespace, submit FILE, print the outcome, exit.
    Dev {
        file: PathBuf,
        /// Seconds to wait for the outcome.
        #[arg(long, default_value_t = 120)]
        timeout: u64,
    },
}

fn main() -> ExitCode {
    warren_shared::cli::init_logging("warn");
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn read_request(file: &PathBuf) -> anyhow::Result<Value> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let v: Value = serde_json::from_str(&text)
        .with_context(|| format!("{} is not valid JSON", file.display()))?;
    if !v.is_object() {
        bail!(
            "{} must hold a JSON object (a workflow request)",
            file.display()
        );
    }
    Ok(v)
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let amqp = cli.broker.config()?;
    match cli.command {
        Command::Submit {
            file,
            wait,
            timeout,
        } => {
            let request = read_request(&file)?;
            let client = Client::connect(&amqp).await?;
            if !wait {
                let id = client.submit(request).await?;
                println!("{id}");
                client.close().await;
                return Ok(ExitCode::SUCCESS);
            }
            let report = client
                .submit_and_wait(request, Duration::from_secs(timeout))
                .await?;
            client.close().await;
            Ok(print_outcome(&report))
        }
        Command::Status { id, json, timeout } => {
            let client = Client::connect(&amqp).await?;
            let report = client.status(&id, Duration::from_secs(timeout)).await?;
            client.close().await;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print_table(&report);
            }
            Ok(if report.status == WorkflowStatus::NotFound {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            })
        }
        Command::Dev { file, timeout } => dev(amqp, file, Duration::from_secs(timeout)).await,
    }
}

/// Prints a final report: JSON on stdout, a one-line verdict on stderr.
fn print_outcome(report: &WorkflowReport) -> ExitCode {
    println!(
        "{}",
        serde_json::to_string_pretty(report).expect("serialisable")
    );
    eprintln!("workflow {} {}", report.workflow_id, report.status.as_str());
    for e in &report.errors {
        eprintln!("  {}: {}", e.code, e.message);
    }
    if let Some(e) = &report.error {
        eprintln!("  {e}");
    }
    if report.status == WorkflowStatus::Succeeded {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

fn print_table(report: &WorkflowReport) {
    println!(
        "workflow {}: {}",
        report.workflow_id,
        report.status.as_str()
    );
    if let Some(e) = &report.error {
        println!("error: {e}");
    }
    for e in &report.errors {
        println!("  {}: {}", e.code, e.message);
    }
    if report.tasks.is_empty() {
        return;
    }
    let width = report
        .tasks
        .keys()
        .map(String::len)
        .max()
        .unwrap_or(4)
        .max(4);
    println!(
        "{:<width$}  {:<10}  {:>8}  WORKER",
        "TASK", "STATE", "ATTEMPTS"
    );
    for (id, t) in &report.tasks {
        println!(
            "{:<width$}  {:<10}  {:>8}  {}",
            id,
            t.state.as_str(),
            t.attempts,
            t.worker.as_deref().unwrap_or("-")
        );
    }
}

/// `warren dev`: everything in one process, cleaned up afterwards.
async fn dev(mut amqp: AmqpConfig, file: PathBuf, timeout: Duration) -> anyhow::Result<ExitCode> {
    let request = read_request(&file)?;
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

    let stop = CancellationToken::new();
    let scheduler = Scheduler::new(SchedulerConfig {
        amqp: amqp.clone(),
        store_path,
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

    let client = Client::connect(&amqp).await?;
    let outcome = tokio::select! {
        r = client.submit_and_wait(request, timeout) => r.map_err(anyhow::Error::from),
        r = wait_failed(scheduler, worker, stop.clone()) => Err(r),
    };
    client.close().await;
    stop.cancel();
    cleanup(&amqp, &queues).await;
    Ok(print_outcome(&outcome?))
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
    let topology = Topology::new(amqp.namespace.clone());
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
