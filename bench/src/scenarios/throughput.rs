//! Warren's throughput and latency beside the ceiling's, on one scheduler
//! and one worker of no-op tasks: `fanout` (1 -> n -> 1), `chain` (µs per
//! hop), `diamonds` (many small workflows at once), `bigdag` (time to first
//! dispatch and the scheduler's peak memory for a huge workflow).

use super::{TIMEOUT, chain as chain_of, ensure_ok, fan_out, hop_gaps_us, task};
use crate::{
    Opts,
    ceiling::Ceiling,
    deployment::Deployment,
    figures::{BrokerCpu, Figure, percentile},
};
use anyhow::Context;
use serde_json::{Value, json};
use std::{sync::Arc, time::Instant};
use warren_producer::Client;

/// One workflow, 1 root -> `o.fanout` independent tasks -> 1 join.
pub async fn fanout(addr: &str, o: &Opts, c: &Ceiling) -> anyhow::Result<Vec<Figure>> {
    let d = Deployment::start(addr, o.concurrency)?;
    let client = Client::connect(&d.amqp).await?;
    d.workers_heard(&client).await?;
    let mut figures = Vec::new();
    let n = o.fanout;
    let tasks = fan_out(n);
    let (started, broker) = (Instant::now(), BrokerCpu::start());
    let r = client
        .submit_and_wait(json!({"tasks": tasks}), TIMEOUT)
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
    Ok(figures)
}

/// One workflow of `o.chain` sequential tasks: µs per hop.
pub async fn chain(addr: &str, o: &Opts, c: &Ceiling) -> anyhow::Result<Vec<Figure>> {
    let d = Deployment::start(addr, o.concurrency)?;
    let client = Client::connect(&d.amqp).await?;
    d.workers_heard(&client).await?;
    let mut figures = Vec::new();
    let n = o.chain;
    let tasks = chain_of(n);
    let r = client
        .submit_and_wait(json!({"tasks": tasks}), TIMEOUT)
        .await?;
    ensure_ok(&r)?;
    let mut hops = hop_gaps_us(&r, n)?;
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
    Ok(figures)
}

/// `o.diamonds` workflows A -> {B, C} -> D submitted at once.
pub async fn diamonds(addr: &str, o: &Opts, c: &Ceiling) -> anyhow::Result<Vec<Figure>> {
    let d = Deployment::start(addr, o.concurrency)?;
    let client = Client::connect(&d.amqp).await?;
    d.workers_heard(&client).await?;
    let mut figures = Vec::new();
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
            let r = c2.submit_and_wait(req, TIMEOUT).await;
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
    Ok(figures)
}

/// One `o.bigdag`-task layered workflow with random edges: time from
/// publish to first task dispatched, and the scheduler's peak RSS.
pub async fn bigdag(addr: &str, o: &Opts) -> anyhow::Result<Vec<Figure>> {
    let d = Deployment::start(addr, o.concurrency)?;
    let client = Client::connect(&d.amqp).await?;
    d.workers_heard(&client).await?;
    let mut figures = Vec::new();
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
        .submit_and_wait(json!({"tasks": tasks}), TIMEOUT)
        .await?;
    ensure_ok(&r)?;
    let first = r
        .tasks
        .values()
        .filter_map(|t| t.started_at)
        .min()
        .context("no task started")?;
    let to_first_ms = (first - published).num_microseconds().unwrap_or(i64::MAX) as f64 / 1e3;
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
    Ok(figures)
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

/// Broker messages per task: everything the scheduler took from or put on
/// the broker, over the tasks run. (Workers' messages are the task deliveries
/// and the results, both counted here from the scheduler's side.)
fn messages_per_task(m: &serde_json::Map<String, Value>, tasks: usize) -> f64 {
    let n = |k: &str| m.get(k).and_then(Value::as_u64).unwrap_or(0) as f64;
    (n("messages_received") + n("messages_published")) / tasks as f64
}
