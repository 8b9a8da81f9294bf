//! `warren`: submit workflows (JSON or YAML) and watch them run, show their
//! status, cancel and re-run them, prune ended ones, draw their DAG, pause and resume task queues and
//! types, manage schedules, print a role's broker permissions, or run a
//! whole system in one process on an example (`warren dev FILE`).
//!
//! Layout: this file holds the flags and runs each command; `request`
//! reads request files, `progress` draws `submit --wait`'s bar, `print`
//! prints outcomes and tables, `graph` renders DAGs, `schedule` holds the
//! `warren schedule ...` commands, and `dev` runs a scheduler and a worker
//! in-process for `warren dev`.

mod dev;
mod graph;
mod print;
mod progress;
mod request;
mod schedule;

use clap::{Parser, Subcommand};
use progress::ProgressBar;
use std::{
    path::{Path, PathBuf},
    process::ExitCode,
    time::Duration,
};
use warren_producer::{Client, PauseTarget};
use warren_shared::cli::BrokerArgs;
use warren_shared::roles::{self, Role};
use warren_shared::wire::WorkflowStatus;

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
        /// Start it at this time (RFC 3339, e.g. 2026-12-24T18:00:00Z):
        /// accepted now, `scheduled` until then.
        #[arg(long, value_name = "TIME")]
        at: Option<String>,
        /// Start it this long from now (1500ms, 90s, 10m, 2h, 1d).
        #[arg(long = "in", value_name = "DURATION")]
        after: Option<String>,
    },
    /// Print a workflow's state and a table of its tasks: a mapped task's
    /// instances folded into its row with their counts by state, a skipped
    /// task's `skip_reason`.
    Status {
        id: String,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
        /// Show each instance of a mapped task (`resize[0]`, ...) under it.
        #[arg(long)]
        instances: bool,
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
    /// Re-run an ended workflow in place and wait for the new run's
    /// outcome: the tasks named with --from (default: every task that did
    /// not succeed) and everything downstream of them run again; the
    /// others keep their outputs. Prints the outcome; exits 0 only if the
    /// run succeeded (1 if it failed or the rerun was refused).
    Rerun {
        id: String,
        /// A task to run again with what follows it; repeat for several.
        #[arg(long = "from", value_name = "TASK")]
        from: Vec<String>,
        /// Makes the request idempotent: asking again with the same id
        /// joins the run it started (default: a fresh one).
        #[arg(long, value_name = "ID")]
        rerun_id: Option<String>,
        /// Seconds to wait for the outcome.
        #[arg(long, default_value_t = 300)]
        timeout: u64,
    },
    /// Delete the workflows that ended longer ago than --older-than, as
    /// retention (WARREN_RETENTION) does, and print how many: a manual
    /// run, e.g. after lowering the retention.
    Prune {
        /// 90s, 12h, 30d, ...: workflows that ended longer ago go.
        #[arg(long, value_name = "DURATION")]
        older_than: String,
        /// Seconds to wait for each answer of the scheduler.
        #[arg(long, default_value_t = 60)]
        timeout: u64,
    },
    /// Print a workflow's DAG as Graphviz DOT or Mermaid: from a request file
    /// (JSON or YAML), or from a submitted workflow's id, with each task's
    /// state. A mapped task is one node with its instances' counts; a
    /// task's `when`, `map` and a `run_if` other than `all_succeeded` are
    /// drawn when the request is known (a file, or `--request`).
    Graph {
        /// A request file, or a workflow id.
        source: String,
        #[arg(long, value_enum, default_value_t = graph::Format::Dot)]
        format: graph::Format,
        /// With a workflow id: its request file, to draw what the report
        /// does not say (`when`, `run_if`, `map`).
        #[arg(long, value_name = "FILE")]
        request: Option<PathBuf>,
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
    /// Pause the dispatch of a task queue's or a task type's tasks, in
    /// every scheduler of the namespace (running tasks finish, everything
    /// else flows), and print what is paused.
    Pause {
        #[command(flatten)]
        target: PauseArgs,
        /// Print the answer as JSON.
        #[arg(long)]
        json: bool,
        /// Seconds to wait for the scheduler's answer.
        #[arg(long, default_value_t = 10)]
        timeout: u64,
    },
    /// Resume what `pause` paused, and print what is still paused.
    Resume {
        #[command(flatten)]
        target: PauseArgs,
        /// Print the answer as JSON.
        #[arg(long)]
        json: bool,
        /// Seconds to wait for the scheduler's answer.
        #[arg(long, default_value_t = 10)]
        timeout: u64,
    },
    /// Create, list, show, pause, resume, trigger or delete schedules:
    /// workflows submitted by a cron expression or at a fixed interval.
    Schedule {
        #[command(subcommand)]
        command: schedule::ScheduleCommand,
    },
    /// Print the `rabbitmqctl` commands that grant USER a role's broker
    /// permissions in this namespace (docs/security.md); runs nothing.
    Permissions {
        /// scheduler, worker, producer or observer.
        #[arg(value_enum)]
        role: RoleArg,
        /// The broker user to grant them to.
        user: String,
        /// The vhost.
        #[arg(long, default_value = "/")]
        vhost: String,
        /// A worker's pools (task queue names); repeat for several.
        #[arg(long = "queue", default_value = "default")]
        queues: Vec<String>,
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

/// What `pause` and `resume` act on: one task queue or one task type.
#[derive(clap::Args, Debug)]
#[group(required = true, multiple = false)]
struct PauseArgs {
    /// A task queue.
    #[arg(long)]
    queue: Option<String>,
    /// A task type.
    #[arg(long = "type")]
    kind: Option<String>,
}

impl PauseArgs {
    fn target(self) -> PauseTarget {
        match (self.queue, self.kind) {
            (Some(q), _) => PauseTarget::Queue(q),
            (None, Some(t)) => PauseTarget::Type(t),
            // clap requires one of the two.
            (None, None) => unreachable!("one of --queue and --type is required"),
        }
    }
}

/// The roles of docs/security.md, as `warren permissions` names them.
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum RoleArg {
    Scheduler,
    Worker,
    Producer,
    Observer,
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

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let amqp = cli.broker.config()?;
    match cli.command {
        Command::Submit {
            file,
            wait,
            timeout,
            at,
            after,
        } => {
            let mut request = request::read(&file)?;
            request::set_start(&mut request, at.as_deref(), after.as_deref())?;
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
            Ok(print::outcome(&report?))
        }
        Command::Status {
            id,
            json,
            instances,
            timeout,
        } => {
            let client = Client::connect(&amqp).await?;
            let report = client.status(&id, Duration::from_secs(timeout)).await?;
            client.close().await;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print::table(&report, instances);
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
            print::table(&report, false);
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
        Command::Rerun {
            id,
            from,
            rerun_id,
            timeout,
        } => {
            let client = Client::connect(&amqp).await?;
            let from: Vec<&str> = from.iter().map(String::as_str).collect();
            let report = client
                .rerun(
                    &id,
                    &from,
                    rerun_id.as_deref(),
                    Duration::from_secs(timeout),
                )
                .await;
            client.close().await;
            Ok(print::outcome(&report?))
        }
        Command::Prune {
            older_than,
            timeout,
        } => {
            let ms = warren_shared::cli::duration_ms(&older_than)
                .map_err(|e| anyhow::anyhow!("--older-than {e}"))?;
            let client = Client::connect(&amqp).await?;
            let mut total = 0;
            let before = loop {
                let r = client
                    .prune(Duration::from_millis(ms), Duration::from_secs(timeout))
                    .await?;
                total += r.pruned;
                if !r.more {
                    break r.before;
                }
            };
            client.close().await;
            println!(
                "pruned {total} workflows that ended before {}",
                before.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Graph {
            source,
            format,
            request: request_file,
            timeout,
        } => {
            let specs = match &request_file {
                Some(file) => graph::specs_of(&graph::parse_request(&request::read(file)?)?),
                None => graph::Specs::new(),
            };
            let (report, specs) = if Path::new(&source).is_file() {
                let parsed = graph::parse_request(&request::read(Path::new(&source))?)?;
                (graph::report_of_request(&parsed), graph::specs_of(&parsed))
            } else {
                let client = Client::connect(&amqp).await?;
                let report = client.status(&source, Duration::from_secs(timeout)).await?;
                client.close().await;
                if report.status == WorkflowStatus::NotFound {
                    eprintln!("no file and no workflow named {source}");
                    return Ok(ExitCode::from(1));
                }
                (report, specs)
            };
            print!("{}", graph::render(&report, &specs, format));
            Ok(ExitCode::SUCCESS)
        }
        Command::Workers { json, timeout } => {
            let client = Client::connect(&amqp).await?;
            let report = client.workers(Duration::from_secs(timeout)).await?;
            client.close().await;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print::workers(&report);
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Pause {
            target,
            json,
            timeout,
        } => pause_or_resume(&amqp, target, Duration::from_secs(timeout), json, true).await,
        Command::Resume {
            target,
            json,
            timeout,
        } => pause_or_resume(&amqp, target, Duration::from_secs(timeout), json, false).await,
        Command::Schedule { command } => schedule::run(&amqp, command).await,
        Command::Permissions {
            role,
            user,
            vhost,
            queues,
        } => {
            let role = match role {
                RoleArg::Scheduler => Role::Scheduler,
                RoleArg::Worker => Role::Worker { queues },
                RoleArg::Producer => Role::Producer,
                RoleArg::Observer => Role::Observer,
            };
            let p = roles::permissions(&amqp.namespace, &role);
            for line in roles::rabbitmqctl_commands(&vhost, &user, &p) {
                println!("{line}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Dev { file, timeout } => {
            let request = request::read(&file)?;
            let report = dev::run(amqp, request, Duration::from_secs(timeout)).await?;
            Ok(print::outcome(&report))
        }
    }
}

/// `warren pause` (`pause`) or `warren resume`: asks, then prints what is
/// paused.
async fn pause_or_resume(
    amqp: &warren_shared::AmqpConfig,
    target: PauseArgs,
    timeout: Duration,
    json: bool,
    pause: bool,
) -> anyhow::Result<ExitCode> {
    let client = Client::connect(amqp).await?;
    let target = target.target();
    let paused = if pause {
        client.pause(&target, timeout).await
    } else {
        client.resume(&target, timeout).await
    };
    client.close().await;
    print::pauses(&paused?, json);
    Ok(ExitCode::SUCCESS)
}
