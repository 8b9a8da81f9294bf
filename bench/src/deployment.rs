//! A deployment of Warren for one scenario: the scheduler (or several, on
//! PostgreSQL) and the workers as child processes of this program, on a
//! fresh namespace and directory; stopped with SIGTERM, which makes each
//! scheduler write its counters, then deleted.

use anyhow::bail;
use serde_json::{Value, json};
use std::ffi::OsString;
use warren_harness::{Child, Launcher};
use warren_shared::AmqpConfig;

/// A scheduler and a worker in child processes, on a fresh namespace.
pub struct Deployment {
    pub amqp: AmqpConfig,
    dir: tempfile::TempDir,
    launcher: Launcher,
    pub scheduler: Child,
    /// Further schedulers on the same (PostgreSQL) store, standing by.
    standbys: Vec<Child>,
    workers: Vec<Child>,
    /// The workers' ids, as started.
    worker_ids: Vec<String>,
    /// The PostgreSQL store whose schema `stop` drops.
    store: Option<String>,
}

/// How a [`Deployment`] runs: its workers (id, concurrency) and the
/// scheduler's settings.
pub struct Setup {
    pub workers: Vec<(String, u16)>,
    pub fifo: bool,
    /// The scheduler's `WARREN_DISPATCH_WINDOW` (default unset: each
    /// queue's window follows its workers' capacity).
    pub window: Option<usize>,
    pub type_limits: String,
    /// A PostgreSQL URL for the store (default SQLite), and how many
    /// schedulers share it.
    pub store: Option<String>,
    pub schedulers: usize,
    /// The scheduler's memory budget in tasks (default Warren's).
    pub max_active_tasks: Option<usize>,
    /// The scheduler's most instances of one mapped task (default
    /// Warren's).
    pub max_map_width: Option<usize>,
    /// Where the scheduler serves `/metrics` (default nowhere).
    pub http_addr: Option<std::net::SocketAddr>,
    /// The scheduler's prefetch of workflow requests (default Warren's).
    pub requests_prefetch: Option<u16>,
    /// How long the scheduler keeps ended workflows (`WARREN_RETENTION`,
    /// as `90s`, `10m` ...; default for ever, as the bench always did).
    pub retention: Option<String>,
}

impl Setup {
    /// One worker of `concurrency`, the scheduler's defaults.
    pub fn new(concurrency: u16) -> Setup {
        Setup {
            workers: vec![("bench-worker".to_owned(), concurrency)],
            fifo: false,
            window: None,
            type_limits: String::new(),
            store: None,
            schedulers: 1,
            max_active_tasks: None,
            max_map_width: None,
            http_addr: None,
            requests_prefetch: None,
            retention: None,
        }
    }
}

impl Deployment {
    pub fn start(addr: &str, concurrency: u16) -> anyhow::Result<Deployment> {
        Deployment::start_with(addr, &Setup::new(concurrency))
    }

    pub fn start_with(addr: &str, setup: &Setup) -> anyhow::Result<Deployment> {
        let ns = warren_harness::namespace::fresh("bench");
        let dir = tempfile::Builder::new().prefix("warren-bench-").tempdir()?;
        let launcher = Launcher::new(dir.path())?.env("RUST_LOG", "warn");
        let amqp = AmqpConfig::new(addr, ns);
        let spawn =
            |mode: &str, log: &str, args: &[String]| spawn_child(&launcher, &amqp, mode, log, args);
        let mut args = vec!["--type-limits".to_owned(), setup.type_limits.clone()];
        if let Some(w) = setup.window {
            args.extend(["--window".to_owned(), w.to_string()]);
        }
        if setup.fifo {
            args.push("--fifo".to_owned());
        }
        if let Some(url) = &setup.store {
            args.extend(["--store".to_owned(), url.clone()]);
        }
        if let Some(n) = setup.max_active_tasks {
            args.extend(["--max-active-tasks".to_owned(), n.to_string()]);
        }
        if let Some(n) = setup.max_map_width {
            args.extend(["--max-map-width".to_owned(), n.to_string()]);
        }
        if let Some(n) = setup.requests_prefetch {
            args.extend(["--requests-prefetch".to_owned(), n.to_string()]);
        }
        if let Some(r) = &setup.retention {
            args.extend(["--retention".to_owned(), r.clone()]);
        }
        if let Some(a) = setup.http_addr {
            args.extend(["--http-addr".to_owned(), a.to_string()]);
        }
        let scheduler = spawn("scheduler", "scheduler", &args)?;
        let standbys = (1..setup.schedulers)
            .map(|i| spawn("scheduler", &format!("scheduler-{i}"), &args))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let workers = setup
            .workers
            .iter()
            .map(|(id, concurrency)| spawn("worker", id, &worker_args(id, *concurrency)))
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Deployment {
            amqp,
            dir,
            launcher,
            scheduler,
            standbys,
            workers,
            worker_ids: setup.workers.iter().map(|(id, _)| id.clone()).collect(),
            store: setup.store.clone(),
        })
    }

    /// Starts one more worker `id` of `concurrency` slots.
    pub fn add_worker(&mut self, id: &str, concurrency: u16) -> anyhow::Result<()> {
        let w = spawn_child(
            &self.launcher,
            &self.amqp,
            "worker",
            id,
            &worker_args(id, concurrency),
        )?;
        self.workers.push(w);
        self.worker_ids.push(id.to_owned());
        Ok(())
    }

    /// The directory of the logs and of the SQLite store (`warren.db`).
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// The workers' process ids.
    pub fn worker_pids(&self) -> Vec<u32> {
        self.workers.iter().map(Child::pid).collect()
    }

    /// Waits until the scheduler lists every worker started as running:
    /// from then on its dispatch windows follow their capacity (until a
    /// worker's first heartbeat reaches it, a queue has the fixed window
    /// of 200). A worker announces itself when it starts and then every
    /// 5 s, so this takes up to 5 s when the first heartbeat went out
    /// before the scheduler listened.
    pub async fn workers_heard(&self, client: &warren_producer::Client) -> anyhow::Result<()> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let listed = client
                .workers(std::time::Duration::from_secs(10))
                .await?
                .workers;
            let running = |id: &String| {
                listed.iter().any(|w| {
                    w.heartbeat.worker_id == *id
                        && w.heartbeat.state == warren_shared::wire::WorkerState::Running
                })
            };
            if self.worker_ids.iter().all(running) {
                return Ok(());
            }
            if std::time::Instant::now() > deadline {
                bail!("the scheduler did not hear from every worker within 30 s");
            }
            tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        }
    }

    /// CPU seconds used so far by the scheduler and by the workers.
    pub fn cpu_secs(&self) -> (f64, f64) {
        (
            self.scheduler.cpu_secs(),
            self.workers.iter().map(Child::cpu_secs).sum(),
        )
    }

    /// Stops both (SIGTERM), returns the scheduler's counters, deletes the
    /// namespace.
    pub async fn stop(mut self) -> anyhow::Result<serde_json::Map<String, Value>> {
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

/// Starts this program as a `mode` child on `amqp`'s namespace, logging to
/// `{log}.log` in the launcher's directory (the deployment's).
fn spawn_child(
    launcher: &Launcher,
    amqp: &AmqpConfig,
    mode: &str,
    log: &str,
    args: &[String],
) -> anyhow::Result<Child> {
    let mut all: Vec<OsString> = [
        "--amqp-addr",
        &amqp.addr,
        mode,
        "--namespace",
        &amqp.namespace,
        "--dir",
    ]
    .map(OsString::from)
    .into();
    all.push(launcher.dir().into());
    all.extend(args.iter().map(OsString::from));
    Ok(launcher.spawn(log, all)?)
}

/// A worker child's arguments.
fn worker_args(id: &str, concurrency: u16) -> [String; 4] {
    [
        "--concurrency".to_owned(),
        concurrency.to_string(),
        "--worker-id".to_owned(),
        id.to_owned(),
    ]
}
