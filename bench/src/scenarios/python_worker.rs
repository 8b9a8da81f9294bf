//! `python-worker`: the fan-out of `fanout` (1 -> n -> 1 no-op tasks, one
//! scheduler, one worker) served by the Python SDK's worker
//! (`clients/python`) instead of Warren's, beside Warren's own worker's
//! figure and the ceiling of the same round.
//!
//! The Python worker is `clients/python/bench/noop_worker.py`, run by the
//! interpreter in `WARREN_BENCH_PYTHON` (default `python3`), which must have
//! the SDK installed (`pip install ./clients/python`); it gets the same
//! concurrency as Warren's worker. Not part of `all`, which needs no Python.

use super::{TIMEOUT, ensure_ok, fan_out};
use crate::{
    Opts,
    ceiling::Ceiling,
    deployment::{Deployment, Setup},
    figures::Figure,
};
use anyhow::{Context, bail};
use serde_json::json;
use std::{
    path::PathBuf,
    process::{Command, Stdio},
    time::{Duration, Instant},
};
use warren_harness::{Signal, procfs, signal};
use warren_producer::Client;
use warren_shared::wire::WorkerState;

/// The id the Python worker announces.
const WORKER_ID: &str = "bench-python";

/// The fan-out served by Warren's worker, then by the Python one.
pub async fn python_worker(addr: &str, o: &Opts, c: &Ceiling) -> anyhow::Result<Vec<Figure>> {
    let python = std::env::var("WARREN_BENCH_PYTHON").unwrap_or_else(|_| "python3".into());
    let script =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../clients/python/bench/noop_worker.py");
    let check = Command::new(&python)
        .args(["-c", "import warren"])
        .status()
        .with_context(|| format!("cannot run {python} (WARREN_BENCH_PYTHON)"))?;
    if !check.success() {
        bail!("{python} cannot import warren: pip install ./clients/python into its environment");
    }
    let n = o.fanout;
    let rust = fanout(addr, o, None).await?;
    let py = fanout(addr, o, Some((&python, &script))).await?;
    let figure = |who: &str, f: &Run| Figure {
        name: format!("fan-out 1 -> {n} -> 1, {who} worker: tasks/s"),
        value: f.rate,
        unit: "tasks/s",
        ratio: Some(f.rate / c.tasks_per_s),
        target: "",
    };
    Ok(vec![
        figure("Rust", &rust),
        figure("Python", &py),
        Figure {
            name: "fan-out: Python worker beside Rust worker".into(),
            value: py.rate / rust.rate,
            unit: "x",
            ratio: None,
            target: "",
        },
        Figure {
            name: "fan-out, Python worker: its CPU per 1,000 tasks".into(),
            value: py.worker_cpu_ms,
            unit: "ms",
            ratio: None,
            target: "",
        },
        Figure {
            name: "fan-out, Rust worker: its CPU per 1,000 tasks".into(),
            value: rust.worker_cpu_ms,
            unit: "ms",
            ratio: None,
            target: "",
        },
    ])
}

/// One fan-out's rate and its worker's CPU.
struct Run {
    rate: f64,
    worker_cpu_ms: f64,
}

/// Runs the fan-out on a fresh deployment served by Warren's worker
/// (`python` None) or by the Python script given.
async fn fanout(addr: &str, o: &Opts, python: Option<(&str, &PathBuf)>) -> anyhow::Result<Run> {
    let mut setup = Setup::new(o.concurrency);
    if python.is_some() {
        setup.workers.clear();
    }
    let d = Deployment::start_with(addr, &setup)?;
    let mut child = None;
    if let Some((python, script)) = python {
        let log = std::fs::File::create(d.dir().join("python-worker.log"))?;
        child = Some(
            Command::new(python)
                .arg(script)
                .env("AMQP_ADDR", addr)
                .env("WARREN_NAMESPACE", &d.amqp.namespace)
                .env("BENCH_CONCURRENCY", o.concurrency.to_string())
                .env("BENCH_WORKER_ID", WORKER_ID)
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log)
                .spawn()
                .with_context(|| format!("cannot start {python} {}", script.display()))?,
        );
    }
    let client = Client::connect(&d.amqp).await?;
    if python.is_some() {
        python_heard(&client).await?;
    } else {
        d.workers_heard(&client).await?;
    }
    let cpu_before = match &child {
        Some(p) => procfs::cpu_secs(p.id()),
        None => d.cpu_secs().1,
    };
    let n = o.fanout;
    let started = Instant::now();
    let r = client
        .submit_and_wait(json!({"tasks": fan_out(n)}), TIMEOUT)
        .await?;
    let secs = started.elapsed().as_secs_f64();
    let cpu_after = match &child {
        Some(p) => procfs::cpu_secs(p.id()),
        None => d.cpu_secs().1,
    };
    ensure_ok(&r)?;
    client.close().await;
    if let Some(mut p) = child {
        signal(p.id(), Signal::Term);
        let _ = p.wait();
    }
    d.stop().await?;
    Ok(Run {
        rate: (n + 2) as f64 / secs,
        worker_cpu_ms: (cpu_after - cpu_before) * 1e3 / ((n + 2) as f64 / 1e3),
    })
}

/// Waits until the scheduler lists the Python worker as running.
async fn python_heard(client: &Client) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let listed = client.workers(Duration::from_secs(10)).await?.workers;
        if listed.iter().any(|w| {
            w.heartbeat.worker_id == WORKER_ID && w.heartbeat.state == WorkerState::Running
        }) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("the scheduler did not hear from the Python worker within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
