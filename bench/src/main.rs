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
//!
//! Warren runs as it ships: the scheduler and one worker are child
//! processes (this program, re-executed), with the SQLite store in WAL mode
//! and full sync, persistent messages, publisher confirms and ack after
//! commit. Handlers do nothing. Figures are printed beside their ratio to
//! the ceiling and written as JSON for comparison across commits.

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use futures_lite::StreamExt;
use lapin::{
    BasicProperties,
    options::{
        BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
        QueueDeclareOptions, QueueDeleteOptions,
    },
    types::FieldTable,
};
use serde_json::{Value, json};
use std::{
    ffi::OsString,
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};
use warren_harness::{Child, Launcher, Signal, procfs};
use warren_producer::Client;
use warren_shared::{AmqpConfig, wire::WorkflowStatus};

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
    /// Every scenario, then the summary table and JSON.
    All(Opts),
    /// Only the broker ceiling.
    Ceiling(Opts),
    /// The ceiling, then one Warren scenario.
    Fanout(Opts),
    Chain(Opts),
    Diamonds(Opts),
    Bigdag(Opts),
    /// A 10-task workflow after a 100,000-task one of the same priority.
    Fairshare(Opts),
    /// A priority-9 chain, idle and behind 50,000 priority-0 tasks.
    Priority(Opts),
    /// A skewed DAG on 4 slots, critical path first and FIFO.
    Critical(Opts),
    /// 200 tasks of a type limited to 5 at once, before 5,000 others.
    Limits(Opts),
    /// Two workers of 8 and 24 slots sharing one queue.
    Pools(Opts),
    /// Fan-out and chain on SQLite, PostgreSQL with 1 scheduler and with 2
    /// (one standing by), and the takeover pause when the active one dies.
    Stores(Opts),
    /// (internal) Run a scheduler.
    #[command(hide = true)]
    Scheduler(Child_),
    /// (internal) Run a worker with a no-op handler.
    #[command(hide = true)]
    Worker(Child_),
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
    /// The dispatch window in the priority scenario.
    #[arg(long, default_value_t = 200)]
    priority_window: usize,
    /// The dispatch window in the critical-path scenario (default: the
    /// pool's 4 slots; 5 measured the same, 8 lets FIFO order in).
    #[arg(long, default_value_t = 4)]
    critical_window: usize,
    /// The PostgreSQL of the `stores` scenario (each run gets a schema of
    /// its own, dropped afterwards).
    #[arg(
        long,
        env = "WARREN_BENCH_PG",
        default_value = "postgres://postgres:postgres@127.0.0.1:5432/postgres",
        hide_env_values = true
    )]
    pg_url: String,
    /// Worker concurrency (= prefetch); the default is the ceiling
    /// worker's prefetch, so both pipelines may hold as much in flight.
    #[arg(long, default_value_t = 256)]
    concurrency: u16,
}

#[derive(clap::Args, Clone)]
#[allow(non_camel_case_types)]
struct Child_ {
    #[arg(long)]
    namespace: String,
    #[arg(long)]
    dir: PathBuf,
    #[arg(long, default_value_t = 64)]
    concurrency: u16,
    /// Dispatch a workflow's ready tasks oldest first (for comparison).
    #[arg(long)]
    fifo: bool,
    /// The scheduler's dispatch window per queue.
    #[arg(long, default_value_t = 200)]
    window: usize,
    /// The scheduler's limits per task type (`type=N,...`).
    #[arg(long, default_value = "")]
    type_limits: String,
    /// The worker's id.
    #[arg(long, default_value = "bench-worker")]
    worker_id: String,
    /// The scheduler's store (default: SQLite in `dir`).
    #[arg(long)]
    store: Option<String>,
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
            Cmd::Scheduler(c) => child_scheduler(addr, c).await,
            Cmd::Worker(c) => child_worker(addr, c).await,
            Cmd::All(o) => {
                let all = [
                    "fanout",
                    "chain",
                    "diamonds",
                    "bigdag",
                    "fairshare",
                    "priority",
                    "critical",
                    "limits",
                    "pools",
                    "stores",
                ];
                run(addr, o, &all).await
            }
            Cmd::Fairshare(o) => run(addr, o, &["fairshare"]).await,
            Cmd::Priority(o) => run(addr, o, &["priority"]).await,
            Cmd::Critical(o) => run(addr, o, &["critical"]).await,
            Cmd::Limits(o) => run(addr, o, &["limits"]).await,
            Cmd::Pools(o) => run(addr, o, &["pools"]).await,
            Cmd::Stores(o) => run(addr, o, &["stores"]).await,
            Cmd::Ceiling(o) => run(addr, o, &[]).await,
            Cmd::Fanout(o) => run(addr, o, &["fanout"]).await,
            Cmd::Chain(o) => run(addr, o, &["chain"]).await,
            Cmd::Diamonds(o) => run(addr, o, &["diamonds"]).await,
            Cmd::Bigdag(o) => run(addr, o, &["bigdag"]).await,
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

async fn child_scheduler(addr: String, c: Child_) -> anyhow::Result<()> {
    let config = warren_scheduler::SchedulerConfig {
        amqp: AmqpConfig::new(addr, c.namespace),
        store: match &c.store {
            Some(url) => warren_scheduler::store::StoreLocation::parse(url),
            None => c.dir.join("warren.db").into(),
        },
        dispatch_window: c.window,
        type_limits: warren_scheduler::engine::TypeLimits::parse(&c.type_limits)?,
        dispatch_order: if c.fifo {
            warren_scheduler::engine::DispatchOrder::Fifo
        } else {
            warren_scheduler::engine::DispatchOrder::CriticalPath
        },
        ..Default::default()
    };
    let counters: serde_json::Map<String, Value> = warren_harness::serve::scheduler(config)
        .await?
        .into_iter()
        .map(|(k, v)| (k.to_owned(), json!(v)))
        .collect();
    std::fs::write(
        c.dir.join(format!("metrics-{}.json", std::process::id())),
        Value::Object(counters).to_string(),
    )?;
    Ok(())
}

async fn child_worker(addr: String, c: Child_) -> anyhow::Result<()> {
    // `noop`, `charge` (sleeps `input.ms`; its output is how many
    // `charge` tasks this worker was running when it started, itself
    // included) and the built-ins (`sleep` for the scheduling scenarios).
    let mut registry = warren_worker::Registry::with_builtins();
    registry.register("noop", |_ctx| async move { Ok(Value::Null) });
    let charges = Arc::new(std::sync::atomic::AtomicU64::new(0));
    registry.register("charge", move |ctx| {
        let charges = charges.clone();
        async move {
            use std::sync::atomic::Ordering::SeqCst;
            let running = charges.fetch_add(1, SeqCst) + 1;
            let ms = ctx.input.get("ms").and_then(Value::as_u64).unwrap_or(0);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            charges.fetch_sub(1, SeqCst);
            Ok(json!(running))
        }
    });
    let config = warren_worker::WorkerConfig {
        amqp: AmqpConfig::new(addr, c.namespace),
        concurrency: c.concurrency,
        worker_id: c.worker_id,
        ..Default::default()
    };
    warren_harness::serve::worker(config, registry).await?;
    Ok(())
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

/// The broker's ceiling.
struct Ceiling {
    tasks_per_s: f64,
    /// CPU per 1,000 tasks of the throughput run: this program (producer and
    /// worker together) and the broker.
    client_cpu_ms: f64,
    broker_cpu_ms: f64,
    rtt_us_p50: f64,
    rtt_us_p99: f64,
}

async fn ceiling(addr: &str, n: usize) -> anyhow::Result<Ceiling> {
    let id = &uuid::Uuid::new_v4().simple().to_string()[..8];
    let (tasks_q, results_q) = (
        format!("bench-ceiling-{id}.tasks"),
        format!("bench-ceiling-{id}.results"),
    );
    let wconn = warren_shared::amqp::connect(addr, "bench ceiling worker").await?;
    let pconn = warren_shared::amqp::connect(addr, "bench ceiling producer").await?;
    let setup = pconn.create_channel().await?;
    for q in [&tasks_q, &results_q] {
        let durable = QueueDeclareOptions {
            durable: true,
            ..Default::default()
        };
        setup
            .queue_declare(q.as_str().into(), durable, FieldTable::default())
            .await?;
    }
    let persistent = BasicProperties::default().with_delivery_mode(2);

    // The worker: take a task, publish its result (confirmed), ack the task.
    let wconsume = wconn.create_channel().await?;
    wconsume.basic_qos(256, BasicQosOptions::default()).await?;
    let wpublish = Arc::new(warren_shared::amqp::confirm_channel(&wconn).await?);
    let mut tasks = wconsume
        .basic_consume(
            tasks_q.as_str().into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let worker = {
        let (results_q, props) = (results_q.clone(), persistent.clone());
        tokio::spawn(async move {
            while let Some(Ok(d)) = tasks.next().await {
                let (ch, q, props) = (wpublish.clone(), results_q.clone(), props.clone());
                tokio::spawn(async move {
                    let confirm = ch
                        .basic_publish(
                            "".into(),
                            q.as_str().into(),
                            BasicPublishOptions::default(),
                            &d.data,
                            props,
                        )
                        .await;
                    if let Ok(c) = confirm
                        && c.await.is_ok()
                    {
                        let _ = d.ack(BasicAckOptions::default()).await;
                    }
                });
            }
        })
    };

    // The producer: publish tasks (confirmed), consume results (acked).
    let publish = warren_shared::amqp::confirm_channel(&pconn).await?;
    let rconsume = pconn.create_channel().await?;
    rconsume.basic_qos(1000, BasicQosOptions::default()).await?;
    let mut results = rconsume
        .basic_consume(
            results_q.as_str().into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let body = [0u8; 64];

    // Throughput: many in flight.
    let (client_cpu, broker_cpu) = (procfs::cpu_secs(std::process::id()), BrokerCpu::start());
    let started = Instant::now();
    let producer = {
        let (publish, tasks_q, props) = (publish.clone(), tasks_q.clone(), persistent.clone());
        tokio::spawn(async move {
            let mut window = std::collections::VecDeque::new();
            for _ in 0..n {
                let c = publish
                    .basic_publish(
                        "".into(),
                        tasks_q.as_str().into(),
                        BasicPublishOptions::default(),
                        &body,
                        props.clone(),
                    )
                    .await?;
                window.push_back(c);
                if window.len() >= 1000 {
                    window.pop_front().expect("non-empty").await?;
                }
            }
            for c in window {
                c.await?;
            }
            Ok::<_, lapin::Error>(())
        })
    };
    for i in 0..n {
        let d = results.next().await.context("results consumer ended")??;
        if i % 100 == 99 || i == n - 1 {
            rconsume
                .basic_ack(d.delivery_tag, BasicAckOptions { multiple: true })
                .await?;
        }
    }
    let elapsed = started.elapsed();
    let client_cpu_ms = (procfs::cpu_secs(std::process::id()) - client_cpu) * 1e6 / n as f64;
    let broker_cpu_ms = broker_cpu.per_1000(n);
    producer.await??;
    let tasks_per_s = n as f64 / elapsed.as_secs_f64();

    // Latency: one at a time.
    let mut rtts = Vec::new();
    for _ in 0..1000 {
        let t = Instant::now();
        publish
            .basic_publish(
                "".into(),
                tasks_q.as_str().into(),
                BasicPublishOptions::default(),
                &body,
                persistent.clone(),
            )
            .await?
            .await?;
        let d = results.next().await.context("results consumer ended")??;
        d.ack(BasicAckOptions::default()).await?;
        rtts.push(t.elapsed().as_secs_f64() * 1e6);
    }
    rtts.sort_by(f64::total_cmp);
    worker.abort();
    for q in [&tasks_q, &results_q] {
        setup
            .queue_delete(q.as_str().into(), QueueDeleteOptions::default())
            .await?;
    }
    warren_shared::amqp::close(&wconn, "done").await;
    warren_shared::amqp::close(&pconn, "done").await;
    Ok(Ceiling {
        tasks_per_s,
        client_cpu_ms,
        broker_cpu_ms,
        rtt_us_p50: percentile(&rtts, 0.5),
        rtt_us_p99: percentile(&rtts, 0.99),
    })
}

/// A scheduler and a worker in child processes, on a fresh namespace.
struct Deployment {
    amqp: AmqpConfig,
    dir: tempfile::TempDir,
    scheduler: Child,
    /// Further schedulers on the same (PostgreSQL) store, standing by.
    standbys: Vec<Child>,
    workers: Vec<Child>,
    /// The PostgreSQL store whose schema `stop` drops.
    store: Option<String>,
}

/// How a [`Deployment`] runs: its workers (id, concurrency) and the
/// scheduler's settings.
struct Setup {
    workers: Vec<(String, u16)>,
    fifo: bool,
    window: usize,
    type_limits: String,
    /// A PostgreSQL URL for the store (default SQLite), and how many
    /// schedulers share it.
    store: Option<String>,
    schedulers: usize,
}

impl Setup {
    /// One worker of `concurrency`, the scheduler's defaults.
    fn new(concurrency: u16) -> Setup {
        Setup {
            workers: vec![("bench-worker".to_owned(), concurrency)],
            fifo: false,
            window: 200,
            type_limits: String::new(),
            store: None,
            schedulers: 1,
        }
    }
}

impl Deployment {
    fn start(addr: &str, concurrency: u16) -> anyhow::Result<Deployment> {
        Deployment::start_with(addr, &Setup::new(concurrency))
    }

    fn start_with(addr: &str, setup: &Setup) -> anyhow::Result<Deployment> {
        let ns = warren_harness::namespace::fresh("bench");
        let dir = tempfile::Builder::new().prefix("warren-bench-").tempdir()?;
        let launcher = Launcher::new(dir.path())?.env("RUST_LOG", "warn");
        let spawn = |mode: &str, log: &str, args: &[String]| -> anyhow::Result<Child> {
            let mut all: Vec<OsString> = ["--amqp-addr", addr, mode, "--namespace", &ns, "--dir"]
                .map(OsString::from)
                .into();
            all.push(dir.path().into());
            all.extend(args.iter().map(OsString::from));
            Ok(launcher.spawn(log, all)?)
        };
        let mut args = vec![
            "--window".to_owned(),
            setup.window.to_string(),
            "--type-limits".to_owned(),
            setup.type_limits.clone(),
        ];
        if setup.fifo {
            args.push("--fifo".to_owned());
        }
        if let Some(url) = &setup.store {
            args.extend(["--store".to_owned(), url.clone()]);
        }
        let scheduler = spawn("scheduler", "scheduler", &args)?;
        let standbys = (1..setup.schedulers)
            .map(|i| spawn("scheduler", &format!("scheduler-{i}"), &args))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let workers = setup
            .workers
            .iter()
            .map(|(id, concurrency)| {
                let args = [
                    "--concurrency".to_owned(),
                    concurrency.to_string(),
                    "--worker-id".to_owned(),
                    id.clone(),
                ];
                spawn("worker", id, &args)
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Deployment {
            amqp: AmqpConfig::new(addr, ns),
            dir,
            scheduler,
            standbys,
            workers,
            store: setup.store.clone(),
        })
    }

    /// CPU seconds used so far by the scheduler and by the workers.
    fn cpu_secs(&self) -> (f64, f64) {
        (
            self.scheduler.cpu_secs(),
            self.workers.iter().map(Child::cpu_secs).sum(),
        )
    }

    /// Stops both (SIGTERM), returns the scheduler's counters, deletes the
    /// namespace.
    async fn stop(mut self) -> anyhow::Result<serde_json::Map<String, Value>> {
        for c in self
            .workers
            .iter_mut()
            .chain([&mut self.scheduler])
            .chain(self.standbys.iter_mut())
        {
            c.terminate();
        }
        // Each scheduler writes its counters as it stops; they are summed.
        let mut sum = serde_json::Map::new();
        for entry in std::fs::read_dir(self.dir.path())? {
            let path = entry?.path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if !(name.starts_with("metrics-") && name.ends_with(".json")) {
                continue;
            }
            let Value::Object(m) = serde_json::from_str(&std::fs::read_to_string(&path)?)? else {
                bail!("metrics are not an object");
            };
            for (k, v) in m {
                let total =
                    sum.get(&k).and_then(Value::as_u64).unwrap_or(0) + v.as_u64().unwrap_or(0);
                sum.insert(k, json!(total));
            }
        }
        if sum.is_empty() {
            bail!("no scheduler wrote its metrics");
        }
        if let Some(url) = &self.store {
            warren_harness::store::drop_schema(url, &self.amqp.namespace).await?;
        }
        warren_harness::namespace::delete(&self.amqp, "bench cleanup").await?;
        Ok(sum)
    }
}

/// CPU used by the broker between two readings, per 1,000 tasks.
struct BrokerCpu(Option<(u32, f64)>);

impl BrokerCpu {
    fn start() -> BrokerCpu {
        // The local RabbitMQ's Erlang VM, when the broker runs on this
        // machine: its CPU is where most of every run's time goes.
        BrokerCpu(procfs::pid_of("beam.smp").map(|p| (p, procfs::cpu_secs(p))))
    }

    /// Milliseconds of broker CPU per 1,000 tasks since `start`; NaN when
    /// the broker is not a local process.
    fn per_1000(&self, tasks: usize) -> f64 {
        self.0.map_or(f64::NAN, |(pid, t0)| {
            (procfs::cpu_secs(pid) - t0) * 1e6 / tasks as f64
        })
    }
}

fn task(id: String, deps: Vec<String>) -> Value {
    json!({"id": id, "type": "noop", "depends_on": deps})
}

/// Broker messages per task: everything the scheduler took from or put on
/// the broker, over the tasks run. (Workers' messages are the task deliveries
/// and the results, both counted here from the scheduler's side.)
fn messages_per_task(m: &serde_json::Map<String, Value>, tasks: usize) -> f64 {
    let n = |k: &str| m.get(k).and_then(Value::as_u64).unwrap_or(0) as f64;
    (n("messages_received") + n("messages_published")) / tasks as f64
}

struct Figure {
    name: String,
    value: f64,
    unit: &'static str,
    /// Warren's figure over the ceiling's, oriented so that 1.0 is "as fast
    /// as the broker allows" (higher is better for rates, lower for times).
    ratio: Option<f64>,
    target: &'static str,
}

impl Figure {
    /// A figure shown for understanding, with no ratio and no target.
    fn info(name: impl Into<String>, value: f64, unit: &'static str) -> Figure {
        Figure {
            name: name.into(),
            value,
            unit,
            ratio: None,
            target: "",
        }
    }
}

/// Where a scenario's CPU went, per 1,000 tasks: the scheduler, the worker
/// and the broker. On a machine whose cores are all busy, throughput is
/// bounded by the sum, so this is the profile to compare with the
/// ceiling's.
fn cpu_figures(
    figures: &mut Vec<Figure>,
    scenario: &str,
    d: &Deployment,
    broker: &BrokerCpu,
    tasks: usize,
) {
    let (sched, worker) = d.cpu_secs();
    let per_1000 = |cpu: f64| cpu * 1e6 / tasks as f64;
    figures.push(Figure::info(
        format!("{scenario}: scheduler CPU per 1000 tasks"),
        per_1000(sched),
        "ms",
    ));
    figures.push(Figure::info(
        format!("{scenario}: worker CPU per 1000 tasks"),
        per_1000(worker),
        "ms",
    ));
    figures.push(Figure::info(
        format!("{scenario}: broker CPU per 1000 tasks"),
        broker.per_1000(tasks),
        "ms",
    ));
}

/// Runs `o.rounds` rounds, each measuring the ceiling and then every
/// scenario, and reports each figure's median over the rounds (a ratio is
/// taken within its round, against that round's ceiling).
async fn run(addr: String, o: Opts, scenarios: &[&str]) -> anyhow::Result<()> {
    let mut rounds = Vec::new();
    for r in 1..=o.rounds.max(1) {
        if o.rounds > 1 {
            println!("round {r} of {}", o.rounds);
        }
        rounds.push(run_round(&addr, &o, scenarios).await?);
    }
    let values: Vec<Vec<f64>> = (0..rounds[0].len())
        .map(|i| rounds.iter().map(|r| r[i].value).collect())
        .collect();
    let mut figures = rounds.swap_remove(0);
    for (i, f) in figures.iter_mut().enumerate() {
        f.value = median(rounds.iter().map(|r| r[i].value).chain([f.value]));
        f.ratio = f
            .ratio
            .map(|first| median(rounds.iter().filter_map(|r| r[i].ratio).chain([first])));
    }
    print_and_save(&figures, &values, &o.json)
}

fn median(values: impl Iterator<Item = f64>) -> f64 {
    let mut v: Vec<f64> = values.collect();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

async fn run_round(addr: &str, o: &Opts, scenarios: &[&str]) -> anyhow::Result<Vec<Figure>> {
    let addr = addr.to_owned();
    println!(
        "measuring the broker ceiling ({} tasks) ...",
        o.ceiling_tasks
    );
    let c = ceiling(&addr, o.ceiling_tasks).await?;
    let mut figures = vec![
        Figure {
            name: "ceiling: tasks/s (many in flight)".into(),
            value: c.tasks_per_s,
            unit: "tasks/s",
            ratio: None,
            target: "",
        },
        Figure {
            name: "ceiling: round trip p50".into(),
            value: c.rtt_us_p50,
            unit: "µs",
            ratio: None,
            target: "",
        },
        Figure {
            name: "ceiling: round trip p99".into(),
            value: c.rtt_us_p99,
            unit: "µs",
            ratio: None,
            target: "",
        },
        Figure::info("ceiling: client CPU per 1000 tasks", c.client_cpu_ms, "ms"),
        Figure::info("ceiling: broker CPU per 1000 tasks", c.broker_cpu_ms, "ms"),
    ];
    for s in scenarios {
        println!("running {s} ...");
        if let Some(f) = policy(&addr, o, s).await? {
            figures.extend(f);
            continue;
        }
        let d = Deployment::start(&addr, o.concurrency)?;
        let client = Client::connect(&d.amqp).await?;
        let timeout = Duration::from_secs(1800);
        match *s {
            "fanout" => {
                let n = o.fanout;
                let mut tasks = vec![task("root".into(), vec![])];
                tasks.extend((0..n).map(|i| task(format!("t{i}"), vec!["root".into()])));
                tasks.push(task(
                    "join".into(),
                    (0..n).map(|i| format!("t{i}")).collect(),
                ));
                let (started, broker) = (Instant::now(), BrokerCpu::start());
                let r = client
                    .submit_and_wait(json!({"tasks": tasks}), timeout)
                    .await?;
                let secs = started.elapsed().as_secs_f64();
                ensure_ok(&r)?;
                let rate = (n + 2) as f64 / secs;
                let mut cpu = Vec::new();
                cpu_figures(&mut cpu, "fan-out", &d, &broker, n + 2);
                client.close().await;
                let m = d.stop().await?;
                let batches = m
                    .get("batches_committed")
                    .and_then(Value::as_u64)
                    .unwrap_or(0)
                    .max(1);
                figures.push(Figure {
                    name: "fan-out: tasks per scheduler transaction".into(),
                    value: (n + 2) as f64 / batches as f64,
                    unit: "tasks",
                    ratio: None,
                    target: "",
                });
                figures.push(Figure {
                    name: format!("fan-out 1 -> {n} -> 1: tasks/s"),
                    value: rate,
                    unit: "tasks/s",
                    ratio: Some(rate / c.tasks_per_s),
                    target: ">= 0.7x ceiling",
                });
                figures.extend(cpu);
                figures.push(Figure {
                    name: "fan-out: broker messages per task".into(),
                    value: messages_per_task(&m, n + 2),
                    unit: "msgs",
                    ratio: None,
                    target: "<= 2.05",
                });
            }
            "chain" => {
                let n = o.chain;
                let tasks: Vec<Value> = (0..n)
                    .map(|i| {
                        task(
                            format!("c{i}"),
                            if i == 0 {
                                vec![]
                            } else {
                                vec![format!("c{}", i - 1)]
                            },
                        )
                    })
                    .collect();
                let r = client
                    .submit_and_wait(json!({"tasks": tasks}), timeout)
                    .await?;
                ensure_ok(&r)?;
                let starts: Vec<_> = (0..n)
                    .map(|i| r.tasks[&format!("c{i}")].started_at.context("a start time"))
                    .collect::<anyhow::Result<_>>()?;
                let mut hops: Vec<f64> = starts
                    .windows(2)
                    .map(|w| (w[1] - w[0]).num_microseconds().unwrap_or(i64::MAX) as f64)
                    .collect();
                hops.sort_by(f64::total_cmp);
                client.close().await;
                d.stop().await?;
                let (p50, p99) = (percentile(&hops, 0.5), percentile(&hops, 0.99));
                figures.push(Figure {
                    name: format!("chain of {n}: µs per hop p50"),
                    value: p50,
                    unit: "µs",
                    ratio: Some(p50 / c.rtt_us_p50),
                    target: "<= 1.5x ceiling RTT",
                });
                figures.push(Figure {
                    name: format!("chain of {n}: µs per hop p99"),
                    value: p99,
                    unit: "µs",
                    ratio: None,
                    target: "<= 5000 µs",
                });
            }
            "diamonds" => {
                let n = o.diamonds;
                let client = Arc::new(client);
                let (started, broker) = (Instant::now(), BrokerCpu::start());
                let mut waits = Vec::with_capacity(n);
                for _ in 0..n {
                    let c2 = client.clone();
                    let req = json!({"tasks": [
                        task("a".into(), vec![]), task("b".into(), vec!["a".into()]),
                        task("c".into(), vec!["a".into()]), task("d".into(), vec!["b".into(), "c".into()])
                    ]});
                    waits.push(tokio::spawn(async move {
                        let t = Instant::now();
                        let r = c2.submit_and_wait(req, timeout).await;
                        (r, t.elapsed())
                    }));
                }
                let mut latencies = Vec::with_capacity(n);
                for w in waits {
                    let (r, lat) = w.await?;
                    ensure_ok(&r?)?;
                    latencies.push(lat.as_secs_f64() * 1e3);
                }
                let secs = started.elapsed().as_secs_f64();
                let mut cpu = Vec::new();
                cpu_figures(&mut cpu, "diamonds", &d, &broker, 4 * n);
                latencies.sort_by(f64::total_cmp);
                if let Ok(c) = Arc::try_unwrap(client) {
                    c.close().await;
                }
                let m = d.stop().await?;
                let rate = (4 * n) as f64 / secs;
                figures.push(Figure {
                    name: format!("{n} diamonds: tasks/s"),
                    value: rate,
                    unit: "tasks/s",
                    ratio: Some(rate / c.tasks_per_s),
                    target: ">= 0.7x ceiling",
                });
                figures.push(Figure {
                    name: "diamonds: workflow latency p50".into(),
                    value: percentile(&latencies, 0.5),
                    unit: "ms",
                    ratio: None,
                    target: "",
                });
                figures.push(Figure {
                    name: "diamonds: workflow latency p99".into(),
                    value: percentile(&latencies, 0.99),
                    unit: "ms",
                    ratio: None,
                    target: "",
                });
                figures.extend(cpu);
                figures.push(Figure {
                    name: "diamonds: broker messages per task".into(),
                    value: messages_per_task(&m, 4 * n),
                    unit: "msgs",
                    ratio: None,
                    target: "",
                });
            }
            "bigdag" => {
                let n = o.bigdag;
                let width = 1000.min(n);
                let mut tasks = Vec::with_capacity(n);
                for i in 0..n {
                    let layer = i / width;
                    let deps = if layer == 0 {
                        vec![]
                    } else {
                        let prev = (layer - 1) * width;
                        let mut d: Vec<usize> = (0..fastrand::usize(1..=3))
                            .map(|_| prev + fastrand::usize(0..width))
                            .collect();
                        d.sort_unstable();
                        d.dedup();
                        d.into_iter().map(|j| format!("t{j}")).collect()
                    };
                    tasks.push(task(format!("t{i}"), deps));
                }
                let published = chrono::Utc::now();
                let r = client
                    .submit_and_wait(json!({"tasks": tasks}), timeout)
                    .await?;
                ensure_ok(&r)?;
                let first = r
                    .tasks
                    .values()
                    .filter_map(|t| t.started_at)
                    .min()
                    .context("no task started")?;
                let to_first_ms =
                    (first - published).num_microseconds().unwrap_or(i64::MAX) as f64 / 1e3;
                let rss = d.scheduler.peak_rss_mb().unwrap_or(f64::NAN);
                client.close().await;
                d.stop().await?;
                figures.push(Figure {
                    name: format!("{n}-task DAG: publish to first dispatch"),
                    value: to_first_ms,
                    unit: "ms",
                    ratio: None,
                    target: "<= 1000 ms",
                });
                figures.push(Figure {
                    name: format!("{n}-task DAG: scheduler peak RSS"),
                    value: rss,
                    unit: "MB",
                    ratio: None,
                    target: "<= 300 MB",
                });
            }
            other => bail!("unknown scenario {other}"),
        }
    }
    Ok(figures)
}

/// Waits until some task of `id` has been dispatched.
async fn started(client: &Client, id: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let r = client.status(id, Duration::from_secs(30)).await?;
        if r.tasks.values().any(|t| t.attempts > 0) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{id} did not start");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The scheduling-policy scenarios; `None` for any other name.
async fn policy(addr: &str, o: &Opts, scenario: &str) -> anyhow::Result<Option<Vec<Figure>>> {
    let timeout = Duration::from_secs(1800);
    let independent = |prefix: &str, n: usize| -> Vec<Value> {
        (0..n)
            .map(|i| task(format!("{prefix}{i}"), vec![]))
            .collect()
    };
    let chain = |n: usize| -> Vec<Value> {
        (0..n)
            .map(|i| {
                let deps = if i == 0 {
                    vec![]
                } else {
                    vec![format!("c{}", i - 1)]
                };
                task(format!("c{i}"), deps)
            })
            .collect()
    };
    let mut figures = Vec::new();
    match scenario {
        "fairshare" => {
            // A 10-task workflow submitted after a huge one of the same
            // priority: its latency, beside the huge one's whole run.
            let d = Deployment::start(addr, o.concurrency)?;
            let client = Client::connect(&d.amqp).await?;
            let big = o.fairshare_big;
            let t0 = Instant::now();
            client
                .submit(json!({"id": "big", "tasks": independent("b", big)}))
                .await?;
            started(&client, "big").await?;
            let (_, small_ms) = run_ok(
                &client,
                json!({"id": "small", "tasks": independent("s", 10)}),
            )
            .await?;
            let whole = client
                .submit_and_wait(
                    json!({"id": "big", "tasks": independent("b", big)}),
                    timeout,
                )
                .await?;
            ensure_ok(&whole)?;
            let big_ms = t0.elapsed().as_secs_f64() * 1e3;
            client.close().await;
            d.stop().await?;
            figures.push(Figure::info(
                format!("fair share: {big}-task workflow, whole run"),
                big_ms,
                "ms",
            ));
            figures.push(Figure {
                name: "fair share: 10-task workflow after it, latency".into(),
                value: small_ms,
                unit: "ms",
                ratio: None,
                target: "<= 1000 ms (stated bound)",
            });
        }
        "priority" => {
            // A priority-9 chain of 10, unloaded and then behind a backlog
            // of priority-0 tasks: of no-op tasks on the usual worker (the
            // machine saturated by the backlog), and of 100 ms tasks on
            // 64 slots (the slots are the bottleneck, as on a real pool).
            for (ms, slots) in [(0u64, o.concurrency), (100, 64)] {
                let with_ms = |tasks: Vec<Value>| {
                    if ms == 0 { tasks } else { sleeping(tasks, ms) }
                };
                let d = Deployment::start_with(
                    addr,
                    &Setup {
                        window: o.priority_window,
                        ..Setup::new(slots)
                    },
                )?;
                let client = Client::connect(&d.amqp).await?;
                let (_, idle_ms) = run_ok(
                    &client,
                    json!({"id": "p9-idle", "priority": 9, "tasks": with_ms(chain(10))}),
                )
                .await?;
                let backlog = o.priority_backlog;
                client
                    .submit(json!({"id": "backlog", "priority": 0, "tasks": with_ms(independent("b", backlog))}))
                    .await?;
                started(&client, "backlog").await?;
                let (_, loaded_ms) = run_ok(
                    &client,
                    json!({"id": "p9-loaded", "priority": 9, "tasks": with_ms(chain(10))}),
                )
                .await?;
                let backlog_left = client
                    .status("backlog", Duration::from_secs(30))
                    .await?
                    .tasks
                    .values()
                    .filter(|t| !t.state.is_final())
                    .count();
                client.close().await;
                d.stop().await?;
                let what = if ms == 0 {
                    format!("no-op tasks, {slots} slots")
                } else {
                    format!("{ms} ms tasks, {slots} slots")
                };
                let allowed_ms = 2.0 * idle_ms + 10.0 * ms as f64;
                figures.push(Figure::info(
                    format!("priority ({what}): chain of 10 at priority 9, idle"),
                    idle_ms,
                    "ms",
                ));
                figures.push(Figure {
                    name: format!(
                        "priority ({what}): same, behind {backlog} priority-0 (allowed {allowed_ms:.0} ms)"
                    ),
                    value: loaded_ms,
                    unit: "ms",
                    ratio: Some(loaded_ms / allowed_ms),
                    target: "<= 2x idle + 10 task durations",
                });
                figures.push(Figure::info(
                    format!("priority ({what}): backlog tasks still unfinished then"),
                    backlog_left as f64,
                    "tasks",
                ));
            }
        }
        "critical" => {
            // Skewed DAGs on 4 worker slots: independent 100 ms tasks listed
            // first (so FIFO takes them first), and a chain of ten such
            // tasks. With 20 of them the chain is the bound; with 40 the
            // work is. Lower bound: max(critical path, ceil(tasks / slots)
            // x 100 ms), as every task takes one slot for 100 ms.
            let (slots, ms, links) = (4u16, 100u64, 10usize);
            for leaves in [20usize, 40] {
                let sleep = |id: String, deps: Vec<String>| json!({"id": id, "type": "sleep", "depends_on": deps, "input": {"ms": ms}});
                let mut tasks: Vec<Value> = (0..leaves)
                    .map(|i| sleep(format!("leaf{i}"), vec![]))
                    .collect();
                tasks.extend((0..links).map(|i| {
                    sleep(
                        format!("c{i}"),
                        if i == 0 {
                            vec![]
                        } else {
                            vec![format!("c{}", i - 1)]
                        },
                    )
                }));
                let rounds = (leaves + links).div_ceil(usize::from(slots)) as u64;
                let bound_ms = ((links as u64 * ms).max(rounds * ms)) as f64;
                for fifo in [false, true] {
                    // Beyond the window, tasks wait in the scheduler in
                    // policy order; inside it, in the queue, FIFO.
                    let d = Deployment::start_with(
                        addr,
                        &Setup {
                            fifo,
                            window: o.critical_window,
                            ..Setup::new(slots)
                        },
                    )?;
                    let client = Client::connect(&d.amqp).await?;
                    let (_, makespan) =
                        run_ok(&client, json!({"id": "skewed", "tasks": tasks.clone()})).await?;
                    client.close().await;
                    d.stop().await?;
                    figures.push(Figure {
                        name: format!(
                            "skewed DAG ({leaves} + chain of {links}) makespan, {} (bound {bound_ms:.0} ms)",
                            if fifo { "fifo" } else { "critical path" }
                        ),
                        value: makespan,
                        unit: "ms",
                        ratio: Some(makespan / bound_ms),
                        target: if fifo {
                            "for comparison"
                        } else {
                            "<= 1.1x bound"
                        },
                    });
                }
            }
        }
        "limits" => {
            // 200 `charge` tasks of 20 ms limited to 5 at once, listed
            // before 5,000 no-op tasks in the same queue, on one worker of
            // the usual concurrency.
            let (limit, charges, ms, noops) = (5u64, 200usize, 20u64, 5_000usize);
            let d = Deployment::start_with(
                addr,
                &Setup {
                    type_limits: format!("charge={limit}"),
                    ..Setup::new(o.concurrency)
                },
            )?;
            let client = Client::connect(&d.amqp).await?;
            let mut tasks: Vec<Value> = (0..charges)
                .map(|i| json!({"id": format!("charge{i}"), "type": "charge", "input": {"ms": ms}}))
                .collect();
            tasks.extend(independent("n", noops));
            let r = client
                .submit_and_wait(json!({"id": "limited", "tasks": tasks}), timeout)
                .await?;
            ensure_ok(&r)?;
            client.close().await;
            d.stop().await?;
            let of =
                |prefix: &'static str| r.tasks.iter().filter(move |(id, _)| id.starts_with(prefix));
            let peak = of("charge")
                .filter_map(|(_, t)| t.output.as_ref()?.as_u64())
                .max()
                .unwrap_or(0);
            let start = r.created_at.context("report without created_at")?;
            let done_ms = |prefix: &'static str| {
                of(prefix)
                    .filter_map(|(_, t)| t.finished_at)
                    .max()
                    .map_or(f64::NAN, |f| {
                        (f - start).num_microseconds().unwrap_or(0) as f64 / 1e3
                    })
            };
            let bound_ms = (charges as u64 * ms / limit) as f64;
            figures.push(Figure {
                name: format!("type limit: most `charge` running at once (limit {limit})"),
                value: peak as f64,
                unit: "tasks",
                ratio: None,
                target: "<= 5",
            });
            let charges_ms = done_ms("charge");
            figures.push(Figure {
                name: format!(
                    "type limit: {charges} charges of {ms} ms done (bound {bound_ms:.0} ms)"
                ),
                value: charges_ms,
                unit: "ms",
                ratio: Some(charges_ms / bound_ms),
                target: "",
            });
            figures.push(Figure::info(
                format!("type limit: {noops} no-op tasks behind them done"),
                done_ms("n"),
                "ms",
            ));
        }
        "pools" => {
            // Two workers of concurrency 8 and 24 on one queue, 1,200
            // tasks of 20 ms: the larger should run 24/32 of them.
            let (small, large, n, ms) = (8u16, 24u16, 1_200usize, 20u64);
            let d = Deployment::start_with(
                addr,
                &Setup {
                    workers: vec![("small".into(), small), ("large".into(), large)],
                    ..Setup::new(0)
                },
            )?;
            let client = Client::connect(&d.amqp).await?;
            let tasks: Vec<Value> = (0..n)
                .map(|i| json!({"id": format!("s{i}"), "type": "sleep", "input": {"ms": ms}}))
                .collect();
            let (r, makespan) = run_ok(&client, json!({"id": "pools", "tasks": tasks})).await?;
            client.close().await;
            d.stop().await?;
            let ran = |w: &str| {
                r.tasks
                    .values()
                    .filter(|t| t.worker.as_deref() == Some(w))
                    .count() as f64
            };
            let share = 100.0 * ran("large") / n as f64;
            let expected = 100.0 * f64::from(large) / f64::from(small + large);
            figures.push(Figure {
                name: format!("weighted pools: tasks run by the worker of {large} slots (beside one of {small})"),
                value: share,
                unit: "%",
                ratio: Some(share / expected),
                target: "75 % (24/32)",
            });
            let bound_ms = (n as u64 * ms) as f64 / f64::from(small + large);
            figures.push(Figure {
                name: format!("weighted pools: makespan (bound {bound_ms:.0} ms)"),
                value: makespan,
                unit: "ms",
                ratio: Some(makespan / bound_ms),
                target: "",
            });
        }
        "stores" => {
            // The same fan-out, chain and many small workflows on each
            // store; then, with two schedulers, the one owning a chain of
            // 10 ms tasks is killed in its middle and the longest pause is
            // measured.
            let n = o.fanout;
            let links = 300usize;
            for (label, store, schedulers) in [
                ("SQLite", None, 1usize),
                ("PostgreSQL, 1 scheduler", Some(o.pg_url.clone()), 1),
                ("PostgreSQL, 2 schedulers", Some(o.pg_url.clone()), 2),
            ] {
                let d = Deployment::start_with(
                    addr,
                    &Setup {
                        store: store.clone(),
                        schedulers,
                        ..Setup::new(o.concurrency)
                    },
                )?;
                let client = Client::connect(&d.amqp).await?;
                if let Some(url) = &store {
                    partitions_shared(url, &d.amqp.namespace, schedulers).await?;
                }
                let mut tasks = vec![task("root".into(), vec![])];
                tasks.extend((0..n).map(|i| task(format!("t{i}"), vec!["root".into()])));
                tasks.push(task(
                    "join".into(),
                    (0..n).map(|i| format!("t{i}")).collect(),
                ));
                let (_, fan_ms) = run_ok(&client, json!({"id": "fan", "tasks": tasks})).await?;
                let rate = (n + 2) as f64 / (fan_ms / 1e3);
                let (r, _) = run_ok(&client, json!({"id": "chain", "tasks": chain(links)})).await?;
                let mut hops = hop_gaps_us(&r, links)?;
                hops.sort_by(f64::total_cmp);
                figures.push(Figure::info(
                    format!("store {label}: fan-out tasks/s"),
                    rate,
                    "tasks/s",
                ));
                figures.push(Figure::info(
                    format!("store {label}: chain µs per hop p50"),
                    percentile(&hops, 0.5),
                    "µs",
                ));
                // Many workflows at once: what several schedulers share.
                let (wfs, per) = (64usize, 32usize);
                let shared = std::sync::Arc::new(Client::connect(&d.amqp).await?);
                let started = Instant::now();
                let waiting: Vec<_> = (0..wfs)
                    .map(|w| {
                        let tasks: Vec<Value> =
                            (0..per).map(|i| task(format!("t{i}"), vec![])).collect();
                        let client = shared.clone();
                        tokio::spawn(async move {
                            run_ok(&client, json!({"id": format!("many-{w}"), "tasks": tasks}))
                                .await
                        })
                    })
                    .collect();
                for w in waiting {
                    w.await??;
                }
                figures.push(Figure::info(
                    format!("store {label}: {wfs} workflows of {per} tasks, tasks/s"),
                    (wfs * per) as f64 / started.elapsed().as_secs_f64(),
                    "tasks/s",
                ));
                if schedulers > 1 {
                    let sleepy = sleeping(chain(links), 10);
                    let waiter = {
                        let client = Client::connect(&d.amqp).await?;
                        tokio::spawn(async move {
                            let r = client
                                .submit_and_wait(
                                    json!({"id": "takeover", "tasks": sleepy}),
                                    timeout,
                                )
                                .await;
                            client.close().await;
                            r
                        })
                    };
                    // A third of the way in, kill -9 the one owning it.
                    let deadline = Instant::now() + Duration::from_secs(60);
                    while client
                        .status("takeover", Duration::from_secs(30))
                        .await
                        .map(|r| r.tasks.values().filter(|t| t.state.is_final()).count())
                        .unwrap_or(0)
                        < links / 3
                    {
                        if Instant::now() > deadline {
                            bail!("the takeover chain did not start");
                        }
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    // Its owner is in the partition's row (`host:pid`).
                    let (pg, conn) =
                        tokio_postgres::connect(&o.pg_url, tokio_postgres::NoTls).await?;
                    tokio::spawn(conn);
                    let schema = warren_scheduler::store::postgres::schema_of(&d.amqp.namespace);
                    let part = i32::from(warren_shared::topology::partition_of(
                        "takeover",
                        warren_shared::topology::PARTITIONS,
                    ));
                    let holder: String = pg
                        .query_one(
                            &format!("SELECT owner FROM {schema}.partitions WHERE id = $1"),
                            &[&part],
                        )
                        .await?
                        .get(0);
                    if let Some(pid) = warren_harness::store::owner_pid(&holder) {
                        warren_harness::signal(pid, Signal::Kill);
                    }
                    let r = waiter.await??;
                    ensure_ok(&r)?;
                    let gaps = hop_gaps_us(&r, links)?;
                    let longest = gaps.iter().copied().fold(0.0, f64::max) / 1e3;
                    figures.push(Figure::info(
                        "store PostgreSQL, 2 schedulers: longest pause of a chain of 10 ms tasks when its scheduler is killed",
                        longest,
                        "ms",
                    ));
                }
                client.close().await;
                d.stop().await?;
            }
        }
        _ => return Ok(None),
    }
    Ok(Some(figures))
}

/// Waits until `n` schedulers own partitions of the namespace (they share
/// them out within a second of starting).
async fn partitions_shared(url: &str, namespace: &str, n: usize) -> anyhow::Result<()> {
    let (pg, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    tokio::spawn(conn);
    let schema = warren_scheduler::store::postgres::schema_of(namespace);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        // Owners of partitions whose epoch moved in the last second are
        // still settling; otherwise count the distinct owners.
        // The schema exists once a scheduler has connected.
        let owners: i64 = pg
            .query_one(
                &format!(
                    "SELECT count(DISTINCT owner) FROM {schema}.partitions
                     WHERE NOT EXISTS (SELECT 1 FROM {schema}.partitions
                                       WHERE since > now() - interval '1 second')"
                ),
                &[],
            )
            .await
            .map_or(0, |r| r.get(0));
        if owners as usize >= n {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{n} schedulers did not share the partitions out");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Microseconds between the starts of consecutive links `c0..c{n-1}`.
fn hop_gaps_us(r: &warren_shared::wire::WorkflowReport, n: usize) -> anyhow::Result<Vec<f64>> {
    let starts: Vec<_> = (0..n)
        .map(|i| r.tasks[&format!("c{i}")].started_at.context("a start time"))
        .collect::<anyhow::Result<_>>()?;
    Ok(starts
        .windows(2)
        .map(|w| (w[1] - w[0]).num_microseconds().unwrap_or(i64::MAX) as f64)
        .collect())
}

/// The same tasks as built-in `sleep` tasks of `ms` each.
fn sleeping(tasks: Vec<Value>, ms: u64) -> Vec<Value> {
    tasks
        .into_iter()
        .map(|mut t| {
            t["type"] = json!("sleep");
            t["input"] = json!({ "ms": ms });
            t
        })
        .collect()
}

/// Submits `workflow`, waits for it to succeed, and returns its report and
/// the milliseconds it took.
async fn run_ok(
    client: &Client,
    workflow: Value,
) -> anyhow::Result<(warren_shared::wire::WorkflowReport, f64)> {
    let t = Instant::now();
    let r = client
        .submit_and_wait(workflow, Duration::from_secs(1800))
        .await?;
    ensure_ok(&r)?;
    Ok((r, t.elapsed().as_secs_f64() * 1e3))
}

fn ensure_ok(r: &warren_shared::wire::WorkflowReport) -> anyhow::Result<()> {
    if r.status != WorkflowStatus::Succeeded {
        bail!(
            "workflow {} ended {}: {:?} {:?}",
            r.workflow_id,
            r.status.as_str(),
            r.error,
            r.errors
        );
    }
    Ok(())
}

fn print_and_save(figures: &[Figure], rounds: &[Vec<f64>], path: &PathBuf) -> anyhow::Result<()> {
    println!();
    println!(
        "{:<44} {:>12} {:<8} {:>9}  target",
        "figure", "value", "unit", "vs ceil"
    );
    for f in figures {
        let ratio = f.ratio.map_or(String::new(), |r| format!("{r:.2}x"));
        println!(
            "{:<44} {:>12.1} {:<8} {:>9}  {}",
            f.name, f.value, f.unit, ratio, f.target
        );
    }
    let json: Vec<Value> = figures
        .iter()
        .zip(rounds)
        .map(|(f, r)| json!({"name": f.name, "value": f.value, "unit": f.unit, "ratio_to_ceiling": f.ratio, "target": f.target, "rounds": r}))
        .collect();
    let doc = json!({
        "when": chrono::Utc::now().to_rfc3339(),
        "commit": std::env::var("WARREN_COMMIT").ok(),
        "figures": json,
    });
    std::fs::write(path, serde_json::to_string_pretty(&doc)?)?;
    println!("\nwritten to {}", path.display());
    Ok(())
}
