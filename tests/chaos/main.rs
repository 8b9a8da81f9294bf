//! `chaos`: the fault-injection program.
//!
//! Runs N diamond workflows (A -> {B, C} -> D) through a real scheduler and
//! real workers in child processes, whose handlers record their effects in
//! files, while it kills -9 and restarts the scheduler, kills -9 and
//! restarts workers, restarts the broker (stop_app/start_app, and kill -9 of
//! the broker process), and closes every connection. It also plants known
//! poison: undecodable results and tasks (which must end in `{ns}.dead`) and
//! a task that crashes every worker that runs it (which must fail on its
//! delivery limit). At the end it checks the invariants, prints them as a
//! table, and exits non-zero if any fails.
//!
//! The program re-executes itself as the scheduler (`chaos scheduler`) and
//! as workers (`chaos worker`), so one binary holds everything.
//!
//! It restarts and kills the local broker: run it on a machine where nothing
//! else depends on that broker, never next to the test suite.
//!
//! With `--cluster N` it starts a RabbitMQ cluster of its own (N nodes on
//! this machine, see `cluster`), runs everything on quorum queues with the
//! nodes' addresses as the address list, and leaves the machine's broker
//! alone; `--node-kills K` kills -9 a node and restarts it, then stops a
//! second one briefly, K times.
//!
//! With `--bombs N` it also throws N rounds of issue 15's hostile and
//! oversized requests between the chunks of workflows (see `bombs`): the
//! invariants must hold all the same, and each bomb must end as the limits
//! say. `--max-active-tasks` gives the schedulers a memory budget, so that
//! requests wait in the broker while the faults hit.
//!
//! Layout: this file holds the flags, the fault kinds and the run's set-up
//! and tear-down; `child` is what a scheduler or worker child runs (and the
//! effects its handlers record); `fleet` starts, kills and replaces the
//! children (through warren-harness); `broker` restarts and disconnects the
//! broker and plants and reads its messages; `drive` runs the workload and
//! the faults; `cluster` starts the run's own cluster and kills and
//! stops its nodes; `bombs` throws the bombs and judges how they ended; `store`
//! reads the schedulers' store; `report` checks the invariants and prints
//! them; `splits` holds the network faults (`--partitions`: links cut
//! silently and healed) and PostgreSQL restarts (`--pg-restarts`).

mod bombs;
mod broker;
mod child;
mod cluster;
mod drive;
mod fleet;
mod report;
mod splits;
mod store;

use anyhow::bail;
use clap::{Args, Parser, Subcommand};
use fleet::Fleet;
use std::{
    path::PathBuf,
    process::ExitCode,
    time::{Duration, Instant},
};
use store::Reader;
use warren_harness::Launcher;
use warren_scheduler::{config::Bounds, store::StoreLocation};
use warren_shared::{AmqpConfig, QueueType};

#[derive(Parser)]
#[command(about = "Warren's fault-injection program")]
struct Cli {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Subcommand)]
enum Mode {
    /// Run the workload and the faults, then check the invariants.
    Run(RunArgs),
    /// Delete what a failed run left on the broker (its namespace, the
    /// bombs' queues included); a failed run keeps them for inspection.
    Clean(CleanArgs),
    /// (internal) Run a scheduler.
    #[command(hide = true)]
    Scheduler(ChildArgs),
    /// (internal) Run a worker with effect-recording handlers.
    #[command(hide = true)]
    Worker(ChildArgs),
}

#[derive(Args, Clone)]
struct RunArgs {
    /// Diamond workflows to run.
    #[arg(long, default_value_t = 200)]
    workflows: usize,
    /// Times the scheduler is killed with SIGKILL and restarted.
    #[arg(long, default_value_t = 3)]
    scheduler_kills: usize,
    /// Times a worker is killed with SIGKILL and replaced.
    #[arg(long, default_value_t = 5)]
    worker_kills: usize,
    /// Broker restarts: odd ones by stop_app/start_app, even ones by
    /// SIGKILL of the broker process and a fresh `rabbitmq-server -detached`.
    #[arg(long, default_value_t = 1)]
    broker_restarts: usize,
    /// `rabbitmqctl close_all_connections` calls.
    #[arg(long, default_value_t = 2)]
    disconnects: usize,
    /// Worker processes.
    #[arg(long, default_value_t = 3)]
    workers: usize,
    /// Give up (and fail) after this many seconds.
    #[arg(long, default_value_t = 600)]
    timeout: u64,
    /// Broker address.
    #[arg(long, env = "AMQP_ADDR", default_value = warren_shared::amqp::DEFAULT_AMQP_ADDR, hide_env_values = true)]
    amqp_addr: String,
    /// The schedulers' store: a `postgres://` URL (the run's namespace gets
    /// its own schema, dropped when the run passes); SQLite in the run's
    /// directory by default.
    #[arg(long)]
    store: Option<String>,
    /// Scheduler processes (more than one needs PostgreSQL: they share the
    /// workflows' partitions). Every other scheduler kill hits one owning
    /// partitions, the rest pick one at random.
    #[arg(long, default_value_t = 1)]
    schedulers: usize,
    /// Warren's durable queues: classic or quorum.
    #[arg(long, value_enum, default_value_t = QueueType::Classic)]
    queue_type: QueueType,
    /// Start a RabbitMQ cluster of this many nodes for the run (its own
    /// node names, ports and data under the run's directory; 0: use
    /// `--amqp-addr`). Everything then runs on quorum queues, given every
    /// node's address.
    #[arg(long, default_value_t = 0)]
    cluster: usize,
    /// Node faults (needs `--cluster 3` or more): a node killed with
    /// SIGKILL and started again while the work goes on, then, two steps
    /// later, once it runs, a second node stopped (stop_app) and started
    /// again.
    #[arg(long, default_value_t = 0)]
    node_kills: usize,
    /// Rounds of issue 15's bombs thrown between the chunks of workflows
    /// (see `bombs.rs`); 0 throws none.
    #[arg(long, default_value_t = 0)]
    bombs: usize,
    /// The schedulers' memory budget in tasks (WARREN_MAX_ACTIVE_TASKS);
    /// below the workflows' tasks, requests wait in the broker.
    #[arg(long, default_value_t = Bounds::default().max_active_tasks)]
    max_active_tasks: usize,
    /// The schedulers' bound on distinct task queues (WARREN_MAX_QUEUES).
    #[arg(long, default_value_t = Bounds::default().max_queues)]
    max_queues: usize,
    /// Network splits (see `splits.rs`): in turn a scheduler cut from
    /// PostgreSQL, a scheduler cut from the broker, a worker cut from the
    /// broker, each silently, held `--partition-hold` seconds, then healed.
    #[arg(long, default_value_t = 0)]
    partitions: usize,
    /// How long each network split lasts, in seconds.
    #[arg(long, default_value_t = 15)]
    partition_hold: u64,
    /// Restarts of PostgreSQL (`-m fast` and `-m immediate` in turn); the
    /// store is then a server of the run's own, whatever `--store` says.
    #[arg(long, default_value_t = 0)]
    pg_restarts: usize,
}

#[derive(Args, Clone)]
struct CleanArgs {
    /// The run's namespace (`chaos-...`, printed when it started).
    #[arg(long)]
    namespace: String,
    /// Broker address.
    #[arg(long, env = "AMQP_ADDR", default_value = warren_shared::amqp::DEFAULT_AMQP_ADDR, hide_env_values = true)]
    amqp_addr: String,
}

#[derive(Args, Clone)]
struct ChildArgs {
    #[arg(long)]
    amqp_addr: String,
    #[arg(long)]
    namespace: String,
    #[arg(long)]
    dir: PathBuf,
    #[arg(long, default_value = "w")]
    id: String,
    /// The store's URL or path (schedulers only).
    #[arg(long, default_value = "")]
    store: String,
    #[arg(long, value_enum, default_value_t = QueueType::Classic)]
    queue_type: QueueType,
    /// (schedulers only)
    #[arg(long, default_value_t = Bounds::default().max_active_tasks)]
    max_active_tasks: usize,
    /// (schedulers only)
    #[arg(long, default_value_t = Bounds::default().max_queues)]
    max_queues: usize,
}

impl ChildArgs {
    fn amqp(&self) -> AmqpConfig {
        let mut amqp = AmqpConfig::new(self.amqp_addr.clone(), self.namespace.clone());
        amqp.queue_type = self.queue_type;
        amqp
    }
}

/// Workers per process run this many tasks at once.
const CONCURRENCY: u16 = 8;
/// Undecodable results planted (dead-lettered by the scheduler).
const BAD_RESULTS: usize = 3;
/// Undecodable task messages planted (dead-lettered by a worker).
const BAD_TASKS: usize = 2;
/// The workflow whose task crashes its worker every time.
const POISON_ID: &str = "chaos-poison";

/// The faults injected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Fault {
    SchedulerKill,
    WorkerKill,
    BrokerRestart,
    Disconnect,
    NodeKill,
    NodeStop,
    /// A network split (`splits.rs`).
    Partition,
    /// A PostgreSQL restart (`splits.rs`).
    PgRestart,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    let outcome = match cli.mode {
        Mode::Run(args) => rt.block_on(run(args)),
        Mode::Clean(args) => rt.block_on(clean(args)).map(|()| true),
        Mode::Scheduler(args) => rt.block_on(child::scheduler(args)).map(|()| true),
        Mode::Worker(args) => rt.block_on(child::worker(args)).map(|()| true),
    };
    match outcome {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("chaos: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// A whole run: the namespace, the children, the workload and faults,
/// the verdict; the namespace and logs are removed only when it passes.
async fn run(mut args: RunArgs) -> anyhow::Result<bool> {
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.timeout);
    let ns = warren_harness::namespace::fresh("chaos");
    let dir = tempfile::Builder::new().prefix("warren-chaos-").tempdir()?;
    let cluster = cluster::for_run(&mut args, dir.path(), &ns)?;
    let mut amqp = AmqpConfig::new(args.amqp_addr.clone(), ns.clone());
    amqp.queue_type = args.queue_type;
    let restarts = match args.pg_restarts {
        0 => None,
        _ => Some(splits::Restarts::start().await?),
    };
    let location = match (&restarts, &args.store) {
        (Some(own), _) => StoreLocation::Postgres(own.url()),
        (None, Some(url)) => StoreLocation::parse(url),
        (None, None) => StoreLocation::Sqlite(dir.path().join("warren.db")),
    };
    if args.schedulers > 1 && matches!(location, StoreLocation::Sqlite(_)) {
        bail!(
            "--schedulers {} needs --store postgres://...",
            args.schedulers
        );
    }
    if args.bombs > 0 && args.max_queues >= args.max_active_tasks {
        // Bomb (e) is a workflow of max_queues + 1 tasks: larger than the
        // budget, it would wait for every other workflow to end, and the
        // held workflows of (f) and (g) end only when cancelled.
        bail!(
            "--bombs with --max-active-tasks {} needs --max-queues below it",
            args.max_active_tasks
        );
    }
    let store = Reader::new(&location, &ns);
    println!(
        "chaos: {} workflows, {} scheduler(s) on {location}, {:?} queues, {} round(s) of bombs, namespace {ns}, logs in {}",
        args.workflows,
        args.schedulers,
        args.queue_type,
        args.bombs,
        dir.path().display()
    );
    let child_args = ChildArgs {
        amqp_addr: args.amqp_addr.clone(),
        namespace: ns.clone(),
        dir: dir.path().to_owned(),
        id: String::new(),
        store: match &location {
            StoreLocation::Sqlite(p) => p.display().to_string(),
            StoreLocation::Postgres(url) => url.clone(),
        },
        queue_type: args.queue_type,
        max_active_tasks: args.max_active_tasks,
        max_queues: args.max_queues,
    };
    broker::plant_dead_letters(&amqp).await?;
    let launcher = Launcher::new(dir.path())?;
    let network = (args.partitions > 0)
        .then(|| splits::Network::new(&child_args.amqp_addr, &child_args.store));
    let mut fleet = Fleet::start(
        launcher,
        child_args,
        (args.schedulers.max(1), args.workers),
        network,
    )?;
    fleet.nodes = cluster.map(cluster::NodeFaults::new);
    // The run's own PostgreSQL server lives as long as the fleet.
    fleet.restarts = restarts;
    let outcome = drive::drive(&args, &amqp, &store, &mut fleet, deadline).await;
    fleet.stop();
    let outcome = match (&fleet.nodes, outcome) {
        (Some(nodes), Ok(passed)) => nodes.cluster.check_quorum().map(|q| passed && q),
        (_, outcome) => outcome,
    };
    let passed = match outcome {
        Ok(passed) => passed,
        Err(e) => {
            eprintln!("chaos: {e:#}; logs kept in {}", dir.path().display());
            let _ = dir.keep();
            return Err(e);
        }
    };
    if passed {
        warren_harness::namespace::delete(&amqp, "chaos cleanup").await?;
        if let StoreLocation::Postgres(url) = &location {
            warren_harness::store::drop_schema(url, &ns).await?;
        }
    } else {
        println!("logs kept in {}", dir.keep().display());
    }
    println!("elapsed: {:.1} s", started.elapsed().as_secs_f64());
    Ok(passed)
}

/// Deletes a run's namespace from the broker, the bombs' queues too.
async fn clean(args: CleanArgs) -> anyhow::Result<()> {
    let amqp = AmqpConfig::new(args.amqp_addr, args.namespace);
    bombs::Bombs::delete_queues_of(&amqp).await?;
    warren_harness::namespace::delete(&amqp, "chaos cleanup").await?;
    Ok(())
}
