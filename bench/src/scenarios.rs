//! Warren's scenarios: which there are (each is a subcommand, and `all`
//! runs them in this order), and the workflows and waits they share.
//!
//! Each runs on a deployment of its own (a fresh namespace and store) and
//! returns its figures: `throughput` measures Warren beside the ceiling,
//! `policy` the scheduling policy, `stores` SQLite beside PostgreSQL,
//! `backlog` the memory budget, `delayed` delayed starts, `schedules`
//! schedules' firing lateness, `soak` a steady load over a long while
//! (which `all` leaves out: it lasts 30 minutes).

mod backlog;
mod delayed;
mod huge;
mod policy;
mod python_worker;
mod schedules;
mod soak;
mod stores;
mod throughput;

use crate::{Opts, ceiling::Ceiling, figures::Figure};
use anyhow::{Context, bail};
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use warren_producer::Client;
use warren_shared::wire::{WorkflowReport, WorkflowStatus};

/// Warren's scenarios, in the order `all` runs them. A doc comment here is
/// the subcommand's help.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scenario {
    /// The ceiling, then one Warren scenario.
    Fanout,
    Chain,
    Diamonds,
    Bigdag,
    /// One workflow of 1,000,000 no-op tasks (a mapped task over its
    /// input): publish to first task, to the end, peak RSS.
    Huge,
    /// A 10-task workflow after a 100,000-task one of the same priority.
    Fairshare,
    /// A priority-9 chain, idle and behind 50,000 priority-0 tasks.
    Priority,
    /// A skewed DAG on 4 slots, critical path first and FIFO.
    Critical,
    /// 200 tasks of a type limited to 5 at once, before 5,000 others.
    Limits,
    /// Two workers of 8 and 24 slots sharing one queue.
    Pools,
    /// Fan-out and chain on SQLite, PostgreSQL with 1 scheduler and with 2
    /// (one standing by), and the takeover pause when the active one dies.
    Stores,
    /// 2,000,000 tasks waiting with no worker, past the working set:
    /// tasks held and queued, peak RSS, every status answered, a
    /// priority-9 workflow's start once a worker runs, the time to drain.
    Backlog,
    /// 100,000 workflows waiting for one `not_before`: the scheduler's RSS
    /// while they wait, their start lateness when all fall due.
    Delayed,
    /// 1,000 schedules firing every second for a minute: each slot once,
    /// and how late each firing's workflow is accepted.
    Schedules,
    /// A steady mixed load for 30 minutes with a short retention:
    /// throughput, latency, RSS and store size per minute, and whether
    /// they stay flat (not part of `all`).
    Soak,
    /// The fan-out served by the Python SDK's worker beside Warren's own
    /// (needs `WARREN_BENCH_PYTHON`, default python3, with `pip install
    /// ./clients/python`; not part of `all`).
    PythonWorker,
}

impl Scenario {
    /// Runs the scenario; `c` is this round's ceiling, for the ratios.
    pub async fn run(self, addr: &str, o: &Opts, c: &Ceiling) -> anyhow::Result<Vec<Figure>> {
        match self {
            Scenario::Fanout => throughput::fanout(addr, o, c).await,
            Scenario::Chain => throughput::chain(addr, o, c).await,
            Scenario::Diamonds => throughput::diamonds(addr, o, c).await,
            Scenario::Bigdag => throughput::bigdag(addr, o).await,
            Scenario::Huge => huge::huge(addr, o, c).await,
            Scenario::Fairshare => policy::fairshare(addr, o).await,
            Scenario::Priority => policy::priority(addr, o).await,
            Scenario::Critical => policy::critical(addr, o).await,
            Scenario::Limits => policy::limits(addr, o).await,
            Scenario::Pools => policy::pools(addr).await,
            Scenario::Stores => stores::stores(addr, o).await,
            Scenario::Backlog => backlog::backlog(addr, o, c).await,
            Scenario::Delayed => delayed::delayed(addr, o, c).await,
            Scenario::Schedules => schedules::schedules(addr, o, c).await,
            Scenario::Soak => soak::soak(addr, o, c).await,
            Scenario::PythonWorker => python_worker::python_worker(addr, o, c).await,
        }
    }

    /// The scenarios `all` runs: every one but the soak, which is long,
    /// and the Python worker's, which needs a Python environment.
    pub fn in_all() -> Vec<Scenario> {
        use clap::ValueEnum;
        Scenario::value_variants()
            .iter()
            .copied()
            .filter(|s| !matches!(s, Scenario::Soak | Scenario::PythonWorker))
            .collect()
    }
}

impl std::fmt::Display for Scenario {
    /// The subcommand's name.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use clap::ValueEnum;
        let value = self.to_possible_value().expect("no scenario is skipped");
        f.write_str(value.get_name())
    }
}

/// How long a scenario's workflow may take.
const TIMEOUT: Duration = Duration::from_secs(1800);

/// A task of the worker's no-op type.
fn task(id: String, deps: Vec<String>) -> Value {
    json!({"id": id, "type": "noop", "depends_on": deps})
}

/// `n` independent no-op tasks `{prefix}0..`.
fn independent(prefix: &str, n: usize) -> Vec<Value> {
    (0..n)
        .map(|i| task(format!("{prefix}{i}"), vec![]))
        .collect()
}

/// A chain of `n` no-op tasks `c0 -> c1 -> ...`.
fn chain(n: usize) -> Vec<Value> {
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
}

/// A fan-out of `n` no-op tasks: `root` -> `t0..t{n-1}` -> `join`.
fn fan_out(n: usize) -> Vec<Value> {
    let mut tasks = vec![task("root".into(), vec![])];
    tasks.extend((0..n).map(|i| task(format!("t{i}"), vec!["root".into()])));
    tasks.push(task(
        "join".into(),
        (0..n).map(|i| format!("t{i}")).collect(),
    ));
    tasks
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

/// The earliest start of a task listed in `r` (every task of a report
/// within its byte bound; past it, the earliest of those listed, at worst
/// later than the first).
fn first_start(r: &WorkflowReport) -> anyhow::Result<chrono::DateTime<chrono::Utc>> {
    r.tasks
        .values()
        .filter_map(|t| t.started_at)
        .min()
        .context("no task listed with a start")
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

/// Submits `workflow`, waits for it to succeed, and returns its report and
/// the milliseconds it took.
async fn run_ok(client: &Client, workflow: Value) -> anyhow::Result<(WorkflowReport, f64)> {
    let t = Instant::now();
    let r = client.submit_and_wait(workflow, TIMEOUT).await?;
    ensure_ok(&r)?;
    Ok((r, t.elapsed().as_secs_f64() * 1e3))
}

fn ensure_ok(r: &WorkflowReport) -> anyhow::Result<()> {
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

/// Microseconds between the starts of consecutive links `c0..c{n-1}`.
fn hop_gaps_us(r: &WorkflowReport, n: usize) -> anyhow::Result<Vec<f64>> {
    let starts: Vec<_> = (0..n)
        .map(|i| r.tasks[&format!("c{i}")].started_at.context("a start time"))
        .collect::<anyhow::Result<_>>()?;
    Ok(starts
        .windows(2)
        .map(|w| (w[1] - w[0]).num_microseconds().unwrap_or(i64::MAX) as f64)
        .collect())
}
