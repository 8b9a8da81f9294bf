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
    pub scheduler: Child,
    /// Further schedulers on the same (PostgreSQL) store, standing by.
    standbys: Vec<Child>,
    workers: Vec<Child>,
    /// The PostgreSQL store whose schema `stop` drops.
    store: Option<String>,
}

/// How a [`Deployment`] runs: its workers (id, concurrency) and the
/// scheduler's settings.
pub struct Setup {
    pub workers: Vec<(String, u16)>,
    pub fifo: bool,
    pub window: usize,
    pub type_limits: String,
    /// A PostgreSQL URL for the store (default SQLite), and how many
    /// schedulers share it.
    pub store: Option<String>,
    pub schedulers: usize,
}

impl Setup {
    /// One worker of `concurrency`, the scheduler's defaults.
    pub fn new(concurrency: u16) -> Setup {
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
    pub fn start(addr: &str, concurrency: u16) -> anyhow::Result<Deployment> {
        Deployment::start_with(addr, &Setup::new(concurrency))
    }

    pub fn start_with(addr: &str, setup: &Setup) -> anyhow::Result<Deployment> {
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
