//! `warren`: submit workflows (JSON or YAML) and watch them run, show their
//! status, cancel them, draw their DAG, or run a whole system in one
//! process on an example (`warren dev FILE`).

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use serde_json::Value;
use std::{
    collections::BTreeMap,
    io::{IsTerminal, Write},
    path::{Path, PathBuf},
    process::ExitCode,
    time::{Duration, Instant},
};
use tokio_util::sync::CancellationToken;
use warren_producer::Client;
use warren_scheduler::{Scheduler, SchedulerConfig};
use warren_shared::cli::BrokerArgs;
use warren_shared::{
    AmqpConfig,
    wire::{
        TaskReport, TaskState, WorkersReport, WorkflowProgress, WorkflowReport, WorkflowStatus,
    },
};
use warren_worker::{Registry, Worker, WorkerConfig};

#[derive(Parser, Debug)]
// `name` is what `--version` prints: the package the CLI was first built
// in, kept so that the output does not change with the crate's move.
#[command(
    name = "warren-producer",
    version,
    about = "Submit and inspect Warren workflows"
)]
struct Cli {
    #[command(flatten)]
    broker: BrokerArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Publish a workflow from a JSON or YAML file (.yaml, .yml) and print
    /// its id.
    Submit {
        file: PathBuf,
        /// Wait for the outcome, showing progress on stderr; print the
        /// outcome; exit 0 only if it succeeded.
        #[arg(long)]
        wait: bool,
        /// Seconds to wait with --wait.
        #[arg(long, default_value_t = 300)]
        timeout: u64,
    },
    /// Print a workflow's state and a table of its tasks.
    Status {
        id: String,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
        /// Seconds to wait for the scheduler's answer.
        #[arg(long, default_value_t = 10)]
        timeout: u64,
    },
    /// Cancel a running workflow: tasks not started are cancelled, running
    /// ones are told to stop, and it ends `cancelled`. Exits 0 when it was
    /// cancelled, 1 when it had already ended or is unknown.
    Cancel {
        id: String,
        /// Seconds to wait for the scheduler's answer.
        #[arg(long, default_value_t = 10)]
        timeout: u64,
    },
    /// Print a workflow's DAG as Graphviz DOT or Mermaid: from a request file
    /// (JSON or YAML), or from a submitted workflow's id, with each task's
    /// state.
    Graph {
        /// A request file, or a workflow id.
        source: String,
        #[arg(long, value_enum, default_value_t = GraphFormat::Dot)]
        format: GraphFormat,
        /// Seconds to wait for the scheduler's answer (for an id).
        #[arg(long, default_value_t = 10)]
        timeout: u64,
    },
    /// List the workers the scheduler hears from: id, state (running,
    /// stopping, lost), host, queues, concurrency, tasks in flight,
    /// version, last heartbeat.
    Workers {
        /// Print the registry as JSON.
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

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum GraphFormat {
    Dot,
    Mermaid,
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

/// Reads a workflow request: YAML for `.yaml` and `.yml` files, else JSON.
fn read_request(file: &Path) -> anyhow::Result<Value> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let yaml = matches!(
        file.extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml")
    );
    let v: Value = if yaml {
        serde_norway::from_str(&text)
            .with_context(|| format!("{} is not valid YAML", file.display()))?
    } else {
        serde_json::from_str(&text)
            .with_context(|| format!("{} is not valid JSON", file.display()))?
    };
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
            let bar = std::sync::Mutex::new(ProgressBar::new());
            let report = {
                let watch = client.submit_and_watch(request, Duration::from_secs(timeout), |p| {
                    bar.lock().expect("not poisoned").show(p)
                });
                tokio::pin!(watch);
                // On a terminal the elapsed time ticks between progress events.
                let mut tick = tokio::time::interval(Duration::from_secs(1));
                loop {
                    tokio::select! {
                        r = &mut watch => break r,
                        _ = tick.tick() => bar.lock().expect("not poisoned").redraw(),
                    }
                }
            };
            bar.lock()
                .expect("not poisoned")
                .finish(report.as_ref().ok());
            client.close().await;
            Ok(print_outcome(&report?))
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
        Command::Cancel { id, timeout } => {
            let client = Client::connect(&amqp).await?;
            let report = client.cancel(&id, Duration::from_secs(timeout)).await?;
            client.close().await;
            print_table(&report);
            Ok(match report.status {
                WorkflowStatus::Cancelled => ExitCode::SUCCESS,
                WorkflowStatus::NotFound => ExitCode::from(1),
                other => {
                    eprintln!(
                        "workflow {id} had already ended ({}); nothing to cancel",
                        other.as_str()
                    );
                    ExitCode::from(1)
                }
            })
        }
        Command::Graph {
            source,
            format,
            timeout,
        } => {
            let report = if Path::new(&source).is_file() {
                report_of_request(&read_request(Path::new(&source))?)?
            } else {
                let client = Client::connect(&amqp).await?;
                let report = client.status(&source, Duration::from_secs(timeout)).await?;
                client.close().await;
                if report.status == WorkflowStatus::NotFound {
                    eprintln!("no file and no workflow named {source}");
                    return Ok(ExitCode::from(1));
                }
                report
            };
            print!("{}", graph(&report, format));
            Ok(ExitCode::SUCCESS)
        }
        Command::Workers { json, timeout } => {
            let client = Client::connect(&amqp).await?;
            let report = client.workers(Duration::from_secs(timeout)).await?;
            client.close().await;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print_workers(&report);
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Dev { file, timeout } => dev(amqp, file, Duration::from_secs(timeout)).await,
    }
}

fn print_workers(report: &WorkersReport) {
    if report.workers.is_empty() {
        println!("no workers heard from");
        return;
    }
    let rows: Vec<[String; 8]> = report
        .workers
        .iter()
        .map(|w| {
            let h = &w.heartbeat;
            let ago = (chrono::Utc::now() - w.last_seen).num_milliseconds().max(0);
            [
                h.worker_id.clone(),
                h.state.as_str().to_owned(),
                h.host.clone(),
                h.queues.join(","),
                h.concurrency.to_string(),
                h.in_flight.to_string(),
                h.version.clone(),
                format!("{:.1}s ago", ago as f64 / 1e3),
            ]
        })
        .collect();
    let header = [
        "WORKER",
        "STATE",
        "HOST",
        "QUEUES",
        "CONCURRENCY",
        "IN FLIGHT",
        "VERSION",
        "LAST SEEN",
    ];
    let widths: Vec<usize> = (0..header.len())
        .map(|i| {
            rows.iter()
                .map(|r| r[i].len())
                .chain([header[i].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("{}", padded.join("  ").trim_end());
    };
    line(header.to_vec());
    for r in &rows {
        line(r.iter().map(String::as_str).collect());
    }
}

/// Progress of `submit --wait` on stderr: a bar redrawn in place on a
/// terminal, a line per progress event otherwise (logs, CI).
struct ProgressBar {
    started: Instant,
    tty: bool,
    drawn: bool,
    last: Option<WorkflowProgress>,
}

impl ProgressBar {
    fn new() -> ProgressBar {
        ProgressBar {
            started: Instant::now(),
            tty: std::io::stderr().is_terminal(),
            drawn: false,
            last: None,
        }
    }

    /// Draws the last progress again with the time now (terminals only).
    fn redraw(&mut self) {
        if let (true, Some(p)) = (self.tty, self.last.take()) {
            self.show(&p);
        }
    }

    fn show(&mut self, p: &WorkflowProgress) {
        self.last = Some(p.clone());
        let n = |s: TaskState| p.tasks.get(&s).copied().unwrap_or(0);
        let done = n(TaskState::Succeeded);
        let (running, failed) = (n(TaskState::Running), n(TaskState::Failed));
        let width = 30usize;
        let filled = (done as usize * width)
            .checked_div(p.total as usize)
            .unwrap_or(0)
            .min(width);
        let line = format!(
            "[{}{}] {done}/{} done, {running} running, {failed} failed, {:.1}s",
            "#".repeat(filled),
            ".".repeat(width - filled),
            p.total,
            self.started.elapsed().as_secs_f64()
        );
        let mut err = std::io::stderr().lock();
        if self.tty {
            let _ = write!(err, "\r\x1b[2K{line}");
        } else {
            let _ = writeln!(err, "{line}");
        }
        let _ = err.flush();
        self.drawn = true;
    }

    /// Ends the bar's line; on a terminal, shows the final counts first.
    fn finish(&mut self, report: Option<&WorkflowReport>) {
        if let Some(r) = report.filter(|r| !r.tasks.is_empty() && self.drawn) {
            let mut tasks = BTreeMap::new();
            for t in r.tasks.values() {
                *tasks.entry(t.state).or_insert(0) += 1;
            }
            self.show(&WorkflowProgress {
                workflow_id: r.workflow_id.clone(),
                name: r.name.clone(),
                status: r.status,
                total: r.tasks.len() as u32,
                tasks,
                created_at: r.created_at,
            });
        }
        if self.drawn && self.tty {
            eprintln!();
        }
    }
}

/// A not yet submitted request as a report of pending tasks, to draw it.
fn report_of_request(request: &Value) -> anyhow::Result<WorkflowReport> {
    let parsed: warren_shared::wire::WorkflowRequest = serde_json::from_value(request.clone())
        .context("the file is not a valid workflow request")?;
    let mut report = WorkflowReport::not_found(parsed.id.as_deref().unwrap_or("workflow"));
    report.name = parsed.name;
    report.status = WorkflowStatus::Running;
    for t in parsed.tasks {
        report.tasks.insert(
            t.id,
            TaskReport {
                state: TaskState::Pending,
                attempts: 0,
                depends_on: t.depends_on,
                output: None,
                error: None,
                worker: None,
                started_at: None,
                finished_at: None,
            },
        );
    }
    Ok(report)
}

/// The DAG of a report, each task labelled and coloured by its state.
fn graph(report: &WorkflowReport, format: GraphFormat) -> String {
    let colour = |s: TaskState| match s {
        TaskState::Pending => "#e0e0e0",
        TaskState::Ready => "#fff3b0",
        TaskState::Running => "#9ecbff",
        TaskState::Retrying => "#ffd08a",
        TaskState::Succeeded => "#a8e6a1",
        TaskState::Failed => "#ff9b9b",
        TaskState::Skipped | TaskState::Cancelled => "#c8c8c8",
        _ => "#ffffff",
    };
    let mut out = String::new();
    match format {
        GraphFormat::Dot => {
            out.push_str(&format!(
                "digraph {} {{\n  rankdir=LR;\n  node [shape=box, style=\"rounded,filled\"];\n",
                dot_id(&report.workflow_id)
            ));
            for (id, t) in &report.tasks {
                out.push_str(&format!(
                    "  {} [label=\"{id}\\n{}\", fillcolor=\"{}\"];\n",
                    dot_id(id),
                    t.state.as_str(),
                    colour(t.state)
                ));
            }
            for (id, t) in &report.tasks {
                for d in &t.depends_on {
                    out.push_str(&format!("  {} -> {};\n", dot_id(d), dot_id(id)));
                }
            }
            out.push_str("}\n");
        }
        GraphFormat::Mermaid => {
            // Mermaid node ids must be plain words: number the tasks.
            let ids: BTreeMap<&str, usize> = report
                .tasks
                .keys()
                .enumerate()
                .map(|(i, k)| (k.as_str(), i))
                .collect();
            out.push_str("flowchart LR\n");
            for (id, t) in &report.tasks {
                out.push_str(&format!(
                    "  t{}[\"{id}<br/>{}\"]:::{}\n",
                    ids[id.as_str()],
                    t.state.as_str(),
                    t.state.as_str()
                ));
            }
            for (id, t) in &report.tasks {
                for d in &t.depends_on {
                    if let Some(from) = ids.get(d.as_str()) {
                        out.push_str(&format!("  t{from} --> t{}\n", ids[id.as_str()]));
                    }
                }
            }
            let mut states: Vec<TaskState> = report.tasks.values().map(|t| t.state).collect();
            states.sort();
            states.dedup();
            for s in states {
                out.push_str(&format!("  classDef {} fill:{};\n", s.as_str(), colour(s)));
            }
        }
    }
    out
}

/// A DOT identifier: quoted, with quotes and backslashes escaped.
fn dot_id(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
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
        "{:<width$}  {:<10}  {:>8}  {:>10}  WORKER",
        "TASK", "STATE", "ATTEMPTS", "DURATION"
    );
    for (id, t) in &report.tasks {
        println!(
            "{:<width$}  {:<10}  {:>8}  {:>10}  {}",
            id,
            t.state.as_str(),
            t.attempts,
            duration(t),
            t.worker.as_deref().unwrap_or("-")
        );
    }
}

/// How long the task's last attempt took, or has been running; `-` when
/// it has not started.
fn duration(t: &TaskReport) -> String {
    let Some(start) = t.started_at else {
        return "-".into();
    };
    let end = match (t.finished_at, t.state) {
        (Some(end), _) => end,
        (None, TaskState::Running) => chrono::Utc::now(),
        (None, _) => return "-".into(),
    };
    let ms = (end - start).num_milliseconds().max(0);
    if ms < 1_000 {
        format!("{ms}ms")
    } else if ms < 120_000 {
        format!("{:.1}s", ms as f64 / 1e3)
    } else {
        format!("{}m{:02}s", ms / 60_000, (ms / 1_000) % 60)
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
