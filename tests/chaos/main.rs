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

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use lapin::options::{BasicPublishOptions, QueueDeclareOptions};
use serde_json::json;
use std::{
    collections::{BTreeMap, HashMap},
    ffi::OsStr,
    fs::OpenOptions,
    io::Write,
    path::{Path, PathBuf},
    process::{Command, ExitCode, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};
use warren_harness::{Child, Launcher};
use warren_producer::Client;
use warren_scheduler::store::{StoreLocation, postgres::schema_of};
use warren_shared::{AmqpConfig, QueueType, topology::PARTITIONS};

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

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    let outcome = match cli.mode {
        Mode::Run(args) => rt.block_on(run(args)),
        Mode::Scheduler(args) => rt.block_on(child_scheduler(args)).map(|()| true),
        Mode::Worker(args) => rt.block_on(child_worker(args)).map(|()| true),
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

fn child_logging() {
    warren_shared::cli::init_logging("info");
}

async fn child_scheduler(args: ChildArgs) -> anyhow::Result<()> {
    child_logging();
    let config = warren_scheduler::SchedulerConfig {
        amqp: args.amqp(),
        store: StoreLocation::parse(&args.store),
        ..Default::default()
    };
    warren_harness::serve::scheduler(config).await?;
    Ok(())
}

async fn child_worker(args: ChildArgs) -> anyhow::Result<()> {
    child_logging();
    let path = args.dir.join(format!("effects-{}.log", std::process::id()));
    let file = Arc::new(std::sync::Mutex::new(
        OpenOptions::new().create(true).append(true).open(&path)?,
    ));
    let mut registry = warren_worker::Registry::new();
    registry.register("effect", move |ctx| {
        let file = file.clone();
        async move {
            // A little work, so that faults land mid-task.
            tokio::time::sleep(Duration::from_millis(fastrand::u64(0..8))).await;
            let line = format!("{}/{}/{}\n", ctx.workflow_id, ctx.task_id, ctx.attempt);
            // One write of a whole line: O_APPEND keeps lines whole.
            file.lock()
                .expect("not poisoned")
                .write_all(line.as_bytes())
                .map_err(|e| warren_worker::HandlerError::retryable(e.to_string()))?;
            Ok(json!({"done": ctx.task_id}))
        }
    });
    registry.register("crash", |_ctx| async move {
        // The poison: takes its worker down with it, every time.
        std::process::abort();
        #[allow(unreachable_code)]
        Ok(serde_json::Value::Null)
    });
    let config = warren_worker::WorkerConfig {
        amqp: args.amqp(),
        concurrency: CONCURRENCY,
        worker_id: args.id,
        shutdown_grace: Duration::from_secs(5),
        ..Default::default()
    };
    warren_harness::serve::worker(config, registry).await?;
    Ok(())
}

/// The processes under test.
struct Fleet {
    launcher: Launcher,
    args: ChildArgs,
    schedulers: Vec<Child>,
    workers: Vec<Child>,
    spawned_workers: usize,
}

impl Fleet {
    /// Starts this program as a `mode` child named `id` (its log is
    /// `{id}.log`, continued when a child of that name is restarted).
    fn spawn(&self, mode: &str, id: &str) -> anyhow::Result<Child> {
        let a = &self.args;
        let queue_type = match a.queue_type {
            QueueType::Classic => "classic",
            QueueType::Quorum => "quorum",
        };
        let flags: [(&str, &OsStr); 6] = [
            ("--amqp-addr", a.amqp_addr.as_ref()),
            ("--namespace", a.namespace.as_ref()),
            ("--dir", a.dir.as_ref()),
            ("--id", id.as_ref()),
            ("--store", a.store.as_ref()),
            ("--queue-type", queue_type.as_ref()),
        ];
        let args = std::iter::once(OsStr::new(mode))
            .chain(flags.into_iter().flat_map(|(f, v)| [OsStr::new(f), v]));
        Ok(self.launcher.spawn(id, args)?)
    }

    fn new_worker(&mut self) -> anyhow::Result<Child> {
        self.spawned_workers += 1;
        let id = format!("worker-{}", self.spawned_workers);
        self.spawn("worker", &id)
    }

    fn spawn_scheduler(&self, i: usize) -> anyhow::Result<Child> {
        self.spawn("scheduler", &format!("scheduler-{i}"))
    }

    /// Kills the scheduler with pid `target`, or one at random, and starts
    /// it again; returns the killed one's pid.
    fn kill_scheduler(&mut self, target: Option<u32>) -> anyhow::Result<u32> {
        let i = target
            .and_then(|pid| self.schedulers.iter().position(|c| c.pid() == pid))
            .unwrap_or_else(|| fastrand::usize(0..self.schedulers.len()));
        let pid = self.schedulers[i].pid();
        self.schedulers[i].kill();
        self.schedulers[i] = self.spawn_scheduler(i)?;
        Ok(pid)
    }

    fn kill_worker(&mut self) -> anyhow::Result<()> {
        let i = fastrand::usize(0..self.workers.len());
        self.workers[i].kill();
        self.workers[i] = self.new_worker()?;
        Ok(())
    }

    /// Replaces workers that died by themselves (the poison kills them).
    fn revive(&mut self) -> anyhow::Result<usize> {
        let mut revived = 0;
        for i in 0..self.workers.len() {
            if self.workers[i].has_exited()? {
                self.workers[i] = self.new_worker()?;
                revived += 1;
            }
        }
        for (i, s) in self.schedulers.iter_mut().enumerate() {
            if s.has_exited()? {
                bail!(
                    "scheduler {i} exited by itself; see {}",
                    self.args.dir.join(format!("scheduler-{i}.log")).display()
                );
            }
        }
        Ok(revived)
    }

    fn stop(&mut self) {
        for c in self.schedulers.iter_mut().chain(self.workers.iter_mut()) {
            c.kill();
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Fault {
    SchedulerKill,
    WorkerKill,
    BrokerRestart,
    Disconnect,
}

fn rabbitmqctl(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("rabbitmqctl")
        .args(args)
        .output()
        .context("run rabbitmqctl")?;
    if !out.status.success() {
        bail!(
            "rabbitmqctl {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

fn broker_port_open() -> bool {
    std::net::TcpStream::connect_timeout(
        &"127.0.0.1:5672".parse().expect("addr"),
        Duration::from_millis(200),
    )
    .is_ok()
}

fn restart_broker(hard: bool) -> anyhow::Result<()> {
    if hard {
        // SIGKILL the broker's VM, then start a fresh one.
        let status = Command::new("pkill")
            .args(["-9", "-f", "beam.smp"])
            .status()?;
        if !status.success() {
            bail!("no broker process to kill");
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while broker_port_open() {
            if Instant::now() > deadline {
                bail!("the killed broker still listens");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let status = Command::new("rabbitmq-server")
            .arg("-detached")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()?;
        if !status.success() {
            bail!("rabbitmq-server -detached failed");
        }
    } else {
        rabbitmqctl(&["stop_app"])?;
        rabbitmqctl(&["start_app"])?;
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    while !broker_port_open() {
        if Instant::now() > deadline {
            bail!("the broker did not come back within 120 s");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    rabbitmqctl(&["await_startup"])
}

fn diamond(i: usize) -> serde_json::Value {
    json!({
        "id": format!("chaos-{i}"),
        "tasks": [
            {"id": "a", "type": "effect"},
            {"id": "b", "type": "effect", "depends_on": ["a"], "input": "${a.output}"},
            {"id": "c", "type": "effect", "depends_on": ["a"]},
            {"id": "d", "type": "effect", "depends_on": ["b", "c"], "input": ["${b.output}", "${c.output}"]}
        ]
    })
}

/// The bodies of the undecodable results and task messages planted.
fn planted() -> (Vec<String>, Vec<String>) {
    (
        (0..BAD_RESULTS)
            .map(|i| format!("not a result {i}"))
            .collect(),
        (0..BAD_TASKS)
            .map(|i| format!("{{\"not\": \"a task {i}\"}}"))
            .collect(),
    )
}

/// The bodies in the dead-letter queue, read without taking them (they
/// return to the queue when the channel closes unacked).
async fn dead_letters(amqp: &AmqpConfig) -> anyhow::Result<Vec<String>> {
    let topology = amqp.topology();
    let conn = warren_shared::amqp::connect(&amqp.addr, "chaos dead-letter reader").await?;
    let ch = conn.create_channel().await?;
    let mut bodies = Vec::new();
    while let Some(m) = ch
        .basic_get(
            topology.dead().as_str().into(),
            lapin::options::BasicGetOptions { no_ack: false },
        )
        .await?
    {
        bodies.push(String::from_utf8_lossy(&m.delivery.data).into_owned());
    }
    warren_shared::amqp::close(&conn, "read").await;
    Ok(bodies)
}

async fn plant_dead_letters(amqp: &AmqpConfig) -> anyhow::Result<()> {
    let topology = amqp.topology();
    let conn = warren_shared::amqp::connect(&amqp.addr, "chaos planter").await?;
    let ch = warren_shared::amqp::confirm_channel(&conn).await?;
    topology.declare(&ch).await?;
    topology.declare_task_queue(&ch, "default").await?;
    let (results, tasks) = planted();
    let plants = results
        .into_iter()
        .map(|b| (topology.results(), String::new(), b))
        .chain(
            tasks
                .into_iter()
                .map(|b| (topology.tasks_exchange(), "default".to_owned(), b)),
        );
    for (exchange, key, body) in plants {
        let confirm = ch
            .basic_publish(
                exchange.as_str().into(),
                key.as_str().into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..Default::default()
                },
                body.as_bytes(),
                warren_shared::amqp::json_properties(),
            )
            .await?;
        warren_shared::amqp::confirmed(confirm, &exchange, &key).await?;
    }
    warren_shared::amqp::close(&conn, "planted").await;
    Ok(())
}

/// Messages waiting in each of the namespace's queues.
/// On PostgreSQL, the partition queues too.
async fn queue_depths(
    amqp: &AmqpConfig,
    partitioned: bool,
) -> anyhow::Result<BTreeMap<String, u32>> {
    let topology = amqp.topology();
    let conn = warren_shared::amqp::connect(&amqp.addr, "chaos checker").await?;
    let ch = conn.create_channel().await?;
    let mut depths = BTreeMap::new();
    let mut queues = vec![
        topology.workflows(),
        topology.results(),
        topology.task_queue("default"),
        topology.suspect_queue("default"),
        topology.dead(),
    ];
    if partitioned {
        queues.extend((0..PARTITIONS).map(|p| topology.partition_queue(p)));
    }
    for q in queues {
        let passive = QueueDeclareOptions {
            passive: true,
            ..Default::default()
        };
        let info = ch
            .queue_declare(q.as_str().into(), passive, Default::default())
            .await?;
        depths.insert(q, info.message_count());
    }
    warren_shared::amqp::close(&conn, "checked").await;
    Ok(depths)
}

async fn run(args: RunArgs) -> anyhow::Result<bool> {
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.timeout);
    let ns = warren_harness::namespace::fresh("chaos");
    let dir = tempfile::Builder::new().prefix("warren-chaos-").tempdir()?;
    let mut amqp = AmqpConfig::new(args.amqp_addr.clone(), ns.clone());
    amqp.queue_type = args.queue_type;
    let location = match &args.store {
        Some(url) => StoreLocation::parse(url),
        None => StoreLocation::Sqlite(dir.path().join("warren.db")),
    };
    if args.schedulers > 1 && matches!(location, StoreLocation::Sqlite(_)) {
        bail!(
            "--schedulers {} needs --store postgres://...",
            args.schedulers
        );
    }
    let store = Reader::new(&location, &ns);
    println!(
        "chaos: {} workflows, {} scheduler(s) on {location}, {:?} queues, namespace {ns}, logs in {}",
        args.workflows,
        args.schedulers,
        args.queue_type,
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
    };
    plant_dead_letters(&amqp).await?;
    let mut fleet = Fleet {
        launcher: Launcher::new(dir.path())?,
        args: child_args,
        schedulers: Vec::new(),
        workers: Vec::new(),
        spawned_workers: 0,
    };
    for i in 0..args.schedulers.max(1) {
        let s = fleet.spawn_scheduler(i)?;
        fleet.schedulers.push(s);
    }
    for _ in 0..args.workers {
        let w = fleet.new_worker()?;
        fleet.workers.push(w);
    }
    let outcome = drive(&args, &amqp, &store, &mut fleet, deadline).await;
    fleet.stop();
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

async fn drive(
    args: &RunArgs,
    amqp: &AmqpConfig,
    store: &Reader,
    fleet: &mut Fleet,
    deadline: Instant,
) -> anyhow::Result<bool> {
    let client = Client::connect(amqp).await?;
    client
        .submit(json!({"id": POISON_ID, "tasks": [{"id": "boom", "type": "crash"}]}))
        .await?;

    let mut faults: Vec<Fault> = std::iter::repeat_n(Fault::SchedulerKill, args.scheduler_kills)
        .chain(std::iter::repeat_n(Fault::WorkerKill, args.worker_kills))
        .chain(std::iter::repeat_n(
            Fault::BrokerRestart,
            args.broker_restarts,
        ))
        .chain(std::iter::repeat_n(Fault::Disconnect, args.disconnects))
        .collect();
    fastrand::shuffle(&mut faults);
    let mut injected: BTreeMap<Fault, usize> = BTreeMap::new();
    let mut self_deaths = 0;
    // Scheduler kills that hit one owning partitions (PostgreSQL: from
    // `partitions`).
    let mut active_kills = 0;
    let mut scheduler_kills = 0;
    // Workflows go in between the faults, so every fault meets work in flight.
    let chunks = faults.len() + 1;
    let per_chunk = args.workflows.div_ceil(chunks);
    let mut next = 0;
    let mut broker_restarts = 0;
    for step in 0..chunks {
        let end = (next + per_chunk).min(args.workflows);
        for i in next..end {
            client.submit(diamond(i)).await?;
        }
        next = end;
        tokio::time::sleep(Duration::from_millis(fastrand::u64(150..500))).await;
        self_deaths += fleet.revive()?;
        let Some(&fault) = faults.get(step) else {
            break;
        };
        match fault {
            Fault::SchedulerKill => {
                // Every other kill is aimed at a scheduler owning
                // partitions (the others at any, one standing by included).
                let active = store.owner_pid().await?;
                scheduler_kills += 1;
                let target = active.filter(|_| scheduler_kills % 2 == 1);
                if Some(fleet.kill_scheduler(target)?) == active {
                    active_kills += 1;
                }
            }
            Fault::WorkerKill => fleet.kill_worker()?,
            Fault::BrokerRestart => {
                broker_restarts += 1;
                let hard = broker_restarts % 2 == 0;
                tokio::task::spawn_blocking(move || restart_broker(hard)).await??;
            }
            Fault::Disconnect => {
                tokio::task::spawn_blocking(|| {
                    rabbitmqctl(&["close_all_connections", "chaos: forced disconnect"])
                })
                .await??
            }
        }
        *injected.entry(fault).or_default() += 1;
        println!("fault {:>3}/{}: {fault:?}", step + 1, faults.len());
    }
    client.close().await;

    // Wait for every workflow to end, replacing workers the poison kills.
    let expected = args.workflows + 1;
    let statuses = loop {
        let statuses = store.statuses().await?;
        let finished = statuses
            .values()
            .filter(|s| s.as_str() != "running")
            .count();
        if finished >= expected {
            break statuses;
        }
        if Instant::now() > deadline {
            println!("timed out: {finished} of {expected} workflows finished");
            break statuses;
        }
        self_deaths += fleet.revive()?;
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // Leftover copies (redelivered tasks of finished workflows) drain too.
    let mut depths = queue_depths(amqp, matches!(store, Reader::Postgres { .. })).await?;
    while depths.iter().any(|(q, n)| !q.ends_with(".dead") && *n > 0) && Instant::now() < deadline {
        self_deaths += fleet.revive()?;
        tokio::time::sleep(Duration::from_millis(200)).await;
        depths = queue_depths(amqp, matches!(store, Reader::Postgres { .. })).await?;
    }

    let results = store.committed_results().await?;
    let poison_error = store.poison_error().await?;
    let effects = recorded_effects(&fleet.args.dir)?;
    let dead = dead_letters(amqp).await?;
    report(
        args,
        &injected,
        self_deaths,
        &statuses,
        &results,
        &effects,
        &depths,
        &dead,
        poison_error,
        active_kills,
    )
}

/// Effects recorded by the workers: (workflow, task) -> times run.
fn recorded_effects(dir: &Path) -> anyhow::Result<HashMap<(String, String), usize>> {
    let mut out = HashMap::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if !name.starts_with("effects-") {
            continue;
        }
        for line in std::fs::read_to_string(&path)?.lines() {
            let mut parts = line.split('/');
            if let (Some(wf), Some(task), Some(_attempt), None) =
                (parts.next(), parts.next(), parts.next(), parts.next())
            {
                *out.entry((wf.to_owned(), task.to_owned())).or_default() += 1;
            }
        }
    }
    Ok(out)
}

#[allow(clippy::too_many_arguments)]
fn report(
    args: &RunArgs,
    injected: &BTreeMap<Fault, usize>,
    self_deaths: usize,
    statuses: &HashMap<String, String>,
    results: &HashMap<(String, String), Vec<String>>,
    effects: &HashMap<(String, String), usize>,
    depths: &BTreeMap<String, u32>,
    dead: &[String],
    poison_error: Option<String>,
    active_kills: usize,
) -> anyhow::Result<bool> {
    let n = args.workflows;
    let tasks: Vec<(String, String)> = (0..n)
        .flat_map(|i| ["a", "b", "c", "d"].map(|t| (format!("chaos-{i}"), t.to_owned())))
        .collect();

    let succeeded = (0..n)
        .filter(|i| statuses.get(&format!("chaos-{i}")).map(String::as_str) == Some("succeeded"))
        .count();
    let poison_ok = statuses.get(POISON_ID).map(String::as_str) == Some("failed")
        && poison_error
            .as_deref()
            .is_some_and(|e| e.contains("without finishing"));
    let once = tasks
        .iter()
        .filter(|k| {
            results
                .get(*k)
                .is_some_and(|v| v.iter().filter(|s| s.as_str() == "succeeded").count() == 1)
        })
        .count();
    let committed: usize = results
        .iter()
        .filter(|(k, _)| k.0 != POISON_ID)
        .map(|(_, v)| v.len())
        .sum();
    let with_effect = tasks
        .iter()
        .filter(|k| effects.get(*k).copied().unwrap_or(0) >= 1)
        .count();
    let duplicates: usize = tasks
        .iter()
        .map(|k| effects.get(k).copied().unwrap_or(0).saturating_sub(1))
        .sum();
    let unknown_effects = effects
        .keys()
        .filter(|k| !k.0.starts_with("chaos-"))
        .count();
    // Dead-lettering is at least once too: a worker whose ack is lost
    // after it dead-lettered a message does it again on redelivery. So the
    // distinct bodies must be exactly the planted ones; copies are counted.
    let (bad_results, bad_tasks) = planted();
    let intended: std::collections::BTreeSet<&str> = bad_results
        .iter()
        .chain(&bad_tasks)
        .map(String::as_str)
        .collect();
    let distinct: std::collections::BTreeSet<&str> = dead.iter().map(String::as_str).collect();
    let dead_ok = distinct == intended;
    let leftovers: u32 = depths
        .iter()
        .filter(|(q, _)| !q.ends_with(".dead"))
        .map(|(_, n)| *n)
        .sum();

    println!();
    println!("{:<34} {:>8}", "fault", "injected");
    for (fault, label) in [
        (Fault::SchedulerKill, "scheduler kill -9 + restart"),
        (Fault::WorkerKill, "worker kill -9 + replace"),
        (Fault::BrokerRestart, "broker restart"),
        (Fault::Disconnect, "close all connections"),
    ] {
        println!(
            "{label:<34} {:>8}",
            injected.get(&fault).copied().unwrap_or(0)
        );
        if fault == Fault::SchedulerKill && args.schedulers > 1 {
            println!(
                "{:<34} {:>8}",
                "  of which at a partition's owner", active_kills
            );
        }
    }
    println!(
        "{:<34} {:>8}",
        "worker deaths not caused by chaos", self_deaths
    );
    println!();
    let checks: Vec<(&str, bool, String)> = vec![
        (
            "every workflow finished and succeeded",
            succeeded == n,
            format!("{succeeded}/{n}"),
        ),
        (
            "poison task failed on its delivery limit",
            poison_ok,
            poison_error.unwrap_or_else(|| "no error recorded".into()),
        ),
        (
            "every result committed exactly once",
            once == tasks.len() && committed == tasks.len(),
            format!("{once}/{} tasks, {committed} results", tasks.len()),
        ),
        (
            "every effect recorded at least once",
            with_effect == tasks.len() && unknown_effects == 0,
            format!(
                "{with_effect}/{} tasks, {duplicates} duplicate runs",
                tasks.len()
            ),
        ),
        (
            "task, suspect, result, request queues empty",
            leftovers == 0,
            format!("{leftovers} messages left"),
        ),
        (
            "dead-letter queue = intended poison",
            dead_ok,
            format!(
                "{}/{} distinct, {} copies",
                distinct.len(),
                intended.len(),
                dead.len() - distinct.len()
            ),
        ),
    ];
    println!("{:<46} {:<6} detail", "invariant", "result");
    let mut passed = true;
    for (name, ok, detail) in &checks {
        passed &= ok;
        println!(
            "{name:<46} {:<6} {detail}",
            if *ok { "PASS" } else { "FAIL" }
        );
    }
    println!();
    println!(
        "{}",
        if passed {
            "all invariants hold"
        } else {
            "INVARIANTS BROKEN"
        }
    );
    Ok(passed)
}

/// Reads the schedulers' store behind their backs, for the invariants.
enum Reader {
    Sqlite(PathBuf),
    Postgres { url: String, schema: String },
}

impl Reader {
    fn new(location: &StoreLocation, namespace: &str) -> Reader {
        match location {
            StoreLocation::Sqlite(p) => Reader::Sqlite(p.clone()),
            StoreLocation::Postgres(url) => Reader::Postgres {
                url: url.clone(),
                schema: schema_of(namespace),
            },
        }
    }

    /// Rows of `sql` (selecting text columns only), from either store.
    async fn rows(&self, sql: &str, columns: usize) -> anyhow::Result<Vec<Vec<Option<String>>>> {
        match self {
            Reader::Sqlite(path) => {
                if !path.exists() {
                    return Ok(Vec::new());
                }
                let conn = rusqlite::Connection::open_with_flags(
                    path,
                    rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
                )?;
                conn.busy_timeout(Duration::from_secs(5))?;
                let mut stmt = conn.prepare(sql)?;
                let rows = stmt.query_map([], |r| {
                    (0..columns)
                        .map(|i| r.get::<_, Option<String>>(i))
                        .collect::<Result<Vec<_>, _>>()
                })?;
                Ok(rows.collect::<Result<_, _>>()?)
            }
            Reader::Postgres { url, schema } => {
                let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
                tokio::spawn(conn);
                let exists: bool = client
                    .query_one(
                        "SELECT EXISTS (SELECT 1 FROM information_schema.tables WHERE table_schema = $1 AND table_name = 'workflows')",
                        &[schema],
                    )
                    .await?
                    .get(0);
                if !exists {
                    return Ok(Vec::new());
                }
                client
                    .batch_execute(&format!("SET search_path = {schema}"))
                    .await?;
                Ok(client
                    .query(sql, &[])
                    .await?
                    .iter()
                    .map(|r| {
                        (0..columns)
                            .map(|i| r.get::<_, Option<String>>(i))
                            .collect()
                    })
                    .collect())
            }
        }
    }

    /// Workflows in the store, by status.
    async fn statuses(&self) -> anyhow::Result<HashMap<String, String>> {
        Ok(self
            .rows("SELECT id, status FROM workflows", 2)
            .await?
            .into_iter()
            .map(|mut r| {
                (
                    r[0].take().unwrap_or_default(),
                    r[1].take().unwrap_or_default(),
                )
            })
            .collect())
    }

    /// Committed results: (workflow, task) -> statuses of each committed attempt.
    async fn committed_results(&self) -> anyhow::Result<HashMap<(String, String), Vec<String>>> {
        let mut out: HashMap<(String, String), Vec<String>> = HashMap::new();
        for mut r in self
            .rows("SELECT workflow_id, task_id, status FROM results", 3)
            .await?
        {
            let key = (
                r[0].take().unwrap_or_default(),
                r[1].take().unwrap_or_default(),
            );
            out.entry(key)
                .or_default()
                .push(r[2].take().unwrap_or_default());
        }
        Ok(out)
    }

    /// The error of the poison workflow's task.
    async fn poison_error(&self) -> anyhow::Result<Option<String>> {
        let report = self
            .rows(
                &format!("SELECT report FROM workflows WHERE id = '{POISON_ID}'"),
                1,
            )
            .await?
            .into_iter()
            .next()
            .and_then(|mut r| r[0].take());
        Ok(report.and_then(|r| {
            let v: serde_json::Value = serde_json::from_str(&r).ok()?;
            v["tasks"]["boom"]["error"]["message"]
                .as_str()
                .map(str::to_owned)
        }))
    }

    /// The pid of a scheduler owning partitions (the owner of a random
    /// one, PostgreSQL only), if any.
    async fn owner_pid(&self) -> anyhow::Result<Option<u32>> {
        if matches!(self, Reader::Sqlite(_)) {
            return Ok(None);
        }
        let holder = self
            .rows(
                "SELECT owner FROM partitions WHERE owner IS NOT NULL ORDER BY random() LIMIT 1",
                1,
            )
            .await
            .unwrap_or_default()
            .into_iter()
            .next()
            .and_then(|mut r| r[0].take());
        Ok(holder.and_then(|h| warren_harness::store::owner_pid(&h)))
    }
}
