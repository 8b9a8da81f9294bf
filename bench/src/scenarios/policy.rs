//! The scheduling policy's scenarios: fair share between workflows of one
//! priority, priority behind a backlog, critical path first on a skewed
//! DAG, limits per task type, and weighted worker pools.

use super::{TIMEOUT, chain, ensure_ok, independent, run_ok, sleeping, started};
use crate::{
    Opts,
    deployment::{Deployment, Setup},
    figures::Figure,
};
use anyhow::Context;
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use warren_producer::Client;

/// A 10-task workflow submitted after a huge one of the same priority: its
/// latency, beside the huge one's whole run.
pub async fn fairshare(addr: &str, o: &Opts) -> anyhow::Result<Vec<Figure>> {
    let mut figures = Vec::new();
    let d = Deployment::start(addr, o.concurrency)?;
    let client = Client::connect(&d.amqp).await?;
    d.workers_heard(&client).await?;
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
            TIMEOUT,
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
    Ok(figures)
}

/// A priority-9 chain of 10, unloaded and then behind a backlog of
/// priority-0 tasks: of no-op tasks on the usual worker (the machine
/// saturated by the backlog), and of 100 ms tasks on 64 slots (the slots
/// are the bottleneck, as on a real pool).
pub async fn priority(addr: &str, o: &Opts) -> anyhow::Result<Vec<Figure>> {
    let mut figures = Vec::new();
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
        d.workers_heard(&client).await?;
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
    Ok(figures)
}

/// Skewed DAGs on 4 worker slots: independent 100 ms tasks listed first (so
/// FIFO takes them first), and a chain of ten such tasks. With 20 of them
/// the chain is the bound; with 40 the work is. Lower bound: max(critical
/// path, ceil(tasks / slots) x 100 ms), as every task takes one slot for
/// 100 ms.
pub async fn critical(addr: &str, o: &Opts) -> anyhow::Result<Vec<Figure>> {
    let mut figures = Vec::new();
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
            d.workers_heard(&client).await?;
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
                    "<= 1.15x bound"
                },
            });
        }
    }
    Ok(figures)
}

/// 200 `charge` tasks of 20 ms limited to 5 at once, listed before 5,000
/// no-op tasks in the same queue, on one worker of the usual concurrency.
pub async fn limits(addr: &str, o: &Opts) -> anyhow::Result<Vec<Figure>> {
    let mut figures = Vec::new();
    let (limit, charges, ms, noops) = (5u64, 200usize, 20u64, 5_000usize);
    let d = Deployment::start_with(
        addr,
        &Setup {
            type_limits: format!("charge={limit}"),
            ..Setup::new(o.concurrency)
        },
    )?;
    let client = Client::connect(&d.amqp).await?;
    d.workers_heard(&client).await?;
    let mut tasks: Vec<Value> = (0..charges)
        .map(|i| json!({"id": format!("charge{i}"), "type": "charge", "input": {"ms": ms}}))
        .collect();
    tasks.extend(independent("n", noops));
    let r = client
        .submit_and_wait(json!({"id": "limited", "tasks": tasks}), TIMEOUT)
        .await?;
    ensure_ok(&r)?;
    client.close().await;
    d.stop().await?;
    let of = |prefix: &'static str| r.tasks.iter().filter(move |(id, _)| id.starts_with(prefix));
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
        name: format!("type limit: {charges} charges of {ms} ms done (bound {bound_ms:.0} ms)"),
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
    Ok(figures)
}

/// Two workers of concurrency 8 and 24 on one queue, 1,200 tasks of 20 ms:
/// the larger should run 24/32 of them.
pub async fn pools(addr: &str) -> anyhow::Result<Vec<Figure>> {
    let mut figures = Vec::new();
    let (small, large, n, ms) = (8u16, 24u16, 1_200usize, 20u64);
    let d = Deployment::start_with(
        addr,
        &Setup {
            workers: vec![("small".into(), small), ("large".into(), large)],
            ..Setup::new(0)
        },
    )?;
    let client = Client::connect(&d.amqp).await?;
    d.workers_heard(&client).await?;
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
        name: format!(
            "weighted pools: tasks run by the worker of {large} slots (beside one of {small})"
        ),
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
    Ok(figures)
}
