//! `warren-bench`: Warren's speed beside the raw broker's, in one run.
//!
//! Every figure is measured on the same RabbitMQ in the same run:
//!
//! - `ceiling`: a bare lapin pipeline in which each "task" is two
//!   persistent, confirmed, manually acked messages (task to a worker,
//!   result back): tasks/s with many in flight, and µs per round trip one at
//!   a time. This is what any system on this broker and machine could do.
//! - `fanout`: one workflow, 1 root -> 10,000 independent tasks -> 1 join.
//! - `chain`: one workflow of 1,000 sequential tasks: µs per hop.
//! - `diamonds`: 1,000 workflows A -> {B, C} -> D submitted at once.
//! - `bigdag`: one 100,000-task layered workflow with random edges: time
//!   from publish to first task dispatched, and the scheduler's peak RSS.
//! - `huge`: one workflow of 1,000,000 tasks (a mapped task over its
//!   input): time from publish to its first task, to its end, and the
//!   scheduler's peak RSS.
//!
//! Warren runs as it ships: the scheduler and one worker are child
//! processes (this program, re-executed), with the SQLite store in WAL mode
//! and full sync, persistent messages, publisher confirms and ack after
//! commit. Handlers do nothing. Figures are printed beside their ratio to
//! the ceiling and written as JSON for comparison across commits.
//! - `fairshare`, `priority`, `critical`, `limits`, `pools`: the scheduling
//!   policy's scenarios; `stores`: SQLite beside PostgreSQL with one and two
//!   schedulers (see docs/benchmarks.md).
//! - `backlog`: 2,000,000 tasks submitted with no worker running: what the
//!   scheduler holds and queues, its peak RSS, a status of every workflow,
//!   then how soon a priority-9 workflow submitted behind it all starts
//!   once a worker does, and the time to drain it.
//! - `delayed`: 100,000 workflows submitted with one `not_before`: the
//!   scheduler's RSS while they wait, and how late they start when all
//!   fall due at once.
//! - `schedules`: 1,000 schedules firing every second for a minute: each
//!   slot fired once, and how late each firing's workflow is accepted.
//! - `soak`: a steady mixed load for 30 minutes with a short retention:
//!   throughput, latency, RSS and store size per minute, and verdicts on
//!   whether they stay flat (not part of `all`).
//! - `python-worker`: the fan-out served by the Python SDK's worker
//!   (`clients/python`) beside Warren's own (not part of `all`: it needs
//!   the SDK installed for `WARREN_BENCH_PYTHON`, default python3).
//!
//! Layout: this file holds the flags and starts a run or a child;
//! `rounds` runs the ceiling and the scenarios round after round and takes
//! the medians; `ceiling` is the bare-lapin pipeline; `scenarios` (with
//! `throughput`, `policy`, `stores`, `backlog`, `delayed`, `schedules`, `soak` and `python_worker` under it) are Warren's; `deployment`
//! starts and stops the children (through warren-harness); `child` is what
//! a child runs; `figures` holds a figure, the statistics, and the summary
//! table and JSON.

mod ceiling;
mod child;
mod deployment;
mod figures;
mod rounds;
mod scenarios;

use clap::{FromArgMatches, Parser, Subcommand, ValueEnum};
use scenarios::Scenario;
use std::path::PathBuf;

#[derive(Parser)]
#[command(about = "Warren's benchmark, beside the raw broker's ceiling")]
struct Cli {
    /// Broker address.
    #[arg(long, global = true, env = "AMQP_ADDR", default_value = warren_shared::amqp::DEFAULT_AMQP_ADDR, hide_env_values = true)]
    amqp_addr: String,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Every scenario but the soak and python-worker, then the summary
    /// table and JSON.
    All(Opts),
    /// Only the broker ceiling.
    Ceiling(Opts),
    // The ceiling, then one Warren scenario: a subcommand per `Scenario`.
    #[command(flatten)]
    One(OneScenario),
    /// (internal) Run a scheduler.
    #[command(hide = true)]
    Scheduler(ChildArgs),
    /// (internal) Run a worker with a no-op handler.
    #[command(hide = true)]
    Worker(ChildArgs),
}

/// One scenario's subcommand (`warren-bench fanout [OPTIONS]`, ...): one
/// per [`Scenario`], named and described by its value, so that a scenario
/// is declared in one place.
struct OneScenario {
    scenario: Scenario,
    opts: Opts,
}

impl FromArgMatches for OneScenario {
    fn from_arg_matches(matches: &clap::ArgMatches) -> Result<Self, clap::Error> {
        let Some((name, sub)) = matches.subcommand() else {
            return Err(clap::Error::new(clap::error::ErrorKind::MissingSubcommand));
        };
        let scenario = Scenario::from_str(name, false)
            .map_err(|e| clap::Error::raw(clap::error::ErrorKind::InvalidSubcommand, e))?;
        Ok(OneScenario {
            scenario,
            opts: Opts::from_arg_matches(sub)?,
        })
    }

    fn update_from_arg_matches(&mut self, matches: &clap::ArgMatches) -> Result<(), clap::Error> {
        *self = OneScenario::from_arg_matches(matches)?;
        Ok(())
    }
}

impl Subcommand for OneScenario {
    fn augment_subcommands(cmd: clap::Command) -> clap::Command {
        Scenario::value_variants().iter().fold(cmd, |cmd, s| {
            let value = s.to_possible_value().expect("no scenario is skipped");
            // Without its `string` feature clap names commands with
            // `&'static str`: ten short names, kept for the program's life.
            let name: &'static str = Box::leak(value.get_name().to_owned().into_boxed_str());
            let mut sub = clap::Command::new(name);
            if let Some(help) = value.get_help() {
                sub = sub.about(help.clone());
            }
            cmd.subcommand(<Opts as clap::Args>::augment_args(sub))
        })
    }

    fn augment_subcommands_for_update(cmd: clap::Command) -> clap::Command {
        OneScenario::augment_subcommands(cmd)
    }

    fn has_subcommand(name: &str) -> bool {
        Scenario::from_str(name, false).is_ok()
    }
}

#[derive(clap::Args, Clone)]
struct Opts {
    /// Where to write the figures as JSON.
    #[arg(long, default_value = "bench-results.json")]
    json: PathBuf,
    /// Tasks in the ceiling's throughput run.
    #[arg(long, default_value_t = 20_000)]
    ceiling_tasks: usize,
    /// Independent tasks in the fan-out workflow.
    #[arg(long, default_value_t = 10_000)]
    fanout: usize,
    /// Tasks in the chain.
    #[arg(long, default_value_t = 1_000)]
    chain: usize,
    /// Diamond workflows.
    #[arg(long, default_value_t = 1_000)]
    diamonds: usize,
    /// Tasks in the big DAG (at most the scheduler's task limit, 100,000).
    #[arg(long, default_value_t = 100_000)]
    bigdag: usize,
    /// Instances of the huge workflow's mapped task.
    #[arg(long, default_value_t = 1_000_000)]
    huge: usize,
    /// Rounds to run (ceiling and scenarios each time); each figure is
    /// reported as its median over the rounds.
    #[arg(long, default_value_t = 1)]
    rounds: usize,
    /// Tasks of the huge workflow in the fair-share scenario.
    #[arg(long, default_value_t = 100_000)]
    fairshare_big: usize,
    /// Priority-0 tasks waiting in the priority scenario.
    #[arg(long, default_value_t = 50_000)]
    priority_backlog: usize,
    /// The dispatch window in the priority scenario (default: the
    /// scheduler's, which follows the workers' capacity).
    #[arg(long)]
    priority_window: Option<usize>,
    /// The dispatch window in the critical-path scenario (default: the
    /// scheduler's, which follows the pool's 4 slots).
    #[arg(long)]
    critical_window: Option<usize>,
    /// The PostgreSQL of the `stores` scenario (each run gets a schema of
    /// its own, dropped afterwards).
    #[arg(
        long,
        env = "WARREN_BENCH_PG",
        default_value = "postgres://postgres:postgres@127.0.0.1:5432/postgres",
        hide_env_values = true
    )]
    pg_url: String,
    /// Tasks in all of the backlog scenario's workflows.
    #[arg(long, default_value_t = 2_000_000)]
    backlog: usize,
    /// Tasks per workflow in the backlog scenario.
    #[arg(long, default_value_t = 100)]
    backlog_workflow: usize,
    /// The scheduler's working set in the backlog scenario
    /// (WARREN_MAX_ACTIVE_TASKS; default: the scheduler's own).
    #[arg(long)]
    backlog_budget: Option<usize>,
    /// Workflows (one no-op task each) waiting in the delayed scenario.
    #[arg(long, default_value_t = 100_000)]
    delayed: usize,
    /// Seconds from submitting to the delayed scenario's common
    /// `not_before` (default 20 s + 2 ms per workflow: 220 s for 100,000).
    #[arg(long)]
    delayed_lead_s: Option<u64>,
    /// Run the delayed scenario on PostgreSQL (`--pg-url`), not SQLite.
    #[arg(long)]
    delayed_pg: bool,
    /// Schedules in the schedules scenario.
    #[arg(long, default_value_t = 1_000)]
    schedules: usize,
    /// Their interval (`every_ms`; at least 1,000).
    #[arg(long, default_value_t = 1_000)]
    schedules_every_ms: u64,
    /// Seconds of the schedules scenario's measured window.
    #[arg(long, default_value_t = 60)]
    schedules_s: u64,
    /// Run the schedules scenario on PostgreSQL (`--pg-url`), not SQLite.
    #[arg(long)]
    schedules_pg: bool,
    /// The scheduler's prefetch of workflow requests in the schedules
    /// scenario (default Warren's, 64).
    #[arg(long)]
    schedules_prefetch: Option<u16>,
    /// How long the soak offers its load (`30m`, `2m`, `90s`).
    #[arg(long, default_value = "30m", value_parser = duration)]
    soak_duration: std::time::Duration,
    /// Workflows the soak submits per second, at a steady pace that does
    /// not wait for outcomes (a mix of diamonds, chains of 10, fan-outs of
    /// 100, retried and failing workflows: 15.3 tasks each on average).
    #[arg(long, default_value_t = 40.0)]
    soak_rate: f64,
    /// The soak's reporting interval (a row of figures each).
    #[arg(long, default_value = "60s", value_parser = duration)]
    soak_interval: std::time::Duration,
    /// The scheduler's retention in the soak (WARREN_RETENTION: `20s`,
    /// `1m`, or `forever`, to watch the store grow).
    #[arg(long, default_value = "1m")]
    soak_retention: String,
    /// Run the soak on PostgreSQL (`--pg-url`), not SQLite.
    #[arg(long)]
    soak_pg: bool,
    /// Where the soak writes its figures per interval and its verdicts
    /// (JSON, which bench/soak_plot.py draws).
    #[arg(long, default_value = "soak-series.json")]
    soak_series: PathBuf,
    /// Worker concurrency (= prefetch); the default is the ceiling
    /// worker's prefetch, so both pipelines may hold as much in flight.
    #[arg(long, default_value_t = 256)]
    concurrency: u16,
}

#[derive(clap::Args, Clone)]
struct ChildArgs {
    #[arg(long)]
    namespace: String,
    #[arg(long)]
    dir: PathBuf,
    #[arg(long, default_value_t = 64)]
    concurrency: u16,
    /// Dispatch a workflow's ready tasks oldest first (for comparison).
    #[arg(long)]
    fifo: bool,
    /// The scheduler's dispatch window per queue (default: the
    /// scheduler's own).
    #[arg(long)]
    window: Option<usize>,
    /// The scheduler's limits per task type (`type=N,...`).
    #[arg(long, default_value = "")]
    type_limits: String,
    /// The worker's id.
    #[arg(long, default_value = "bench-worker")]
    worker_id: String,
    /// The scheduler's memory budget in tasks (default Warren's).
    #[arg(long)]
    max_active_tasks: Option<usize>,
    /// The scheduler's most instances of one mapped task (default Warren's).
    #[arg(long)]
    max_map_width: Option<usize>,
    /// Where the scheduler serves `/metrics` (default nowhere).
    #[arg(long)]
    http_addr: Option<std::net::SocketAddr>,
    /// The scheduler's prefetch of workflow requests (default Warren's).
    #[arg(long)]
    requests_prefetch: Option<u16>,
    /// The scheduler's store (default: SQLite in `dir`).
    #[arg(long)]
    store: Option<String>,
    /// How long the scheduler keeps ended workflows (default for ever).
    #[arg(long)]
    retention: Option<String>,
}

/// A duration flag: `1500ms`, `90s`, `10m`, `2h`.
fn duration(s: &str) -> Result<std::time::Duration, String> {
    warren_shared::cli::duration_ms(s).map(std::time::Duration::from_millis)
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // The scheduler runs its loop on one thread, as its binary does.
    let rt = if matches!(cli.command, Cmd::Scheduler(_)) {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Runtime::new()
    }
    .expect("tokio runtime");
    let addr = cli.amqp_addr.clone();
    let r = rt.block_on(async move {
        match cli.command {
            Cmd::Scheduler(c) => child::scheduler(addr, c).await,
            Cmd::Worker(c) => child::worker(addr, c).await,
            Cmd::All(o) => rounds::run(addr, o, &Scenario::in_all()).await,
            Cmd::Ceiling(o) => rounds::run(addr, o, &[]).await,
            Cmd::One(one) => rounds::run(addr, one.opts, &[one.scenario]).await,
        }
    });
    match r {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("warren-bench: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}
