//! SQLite beside PostgreSQL with one scheduler and with two: the same
//! fan-out, chain and many small workflows on each, and the longest pause
//! of a chain when the scheduler owning it is killed.

use super::{TIMEOUT, chain, ensure_ok, fan_out, hop_gaps_us, run_ok, sleeping, task};
use crate::{
    Opts,
    deployment::{Deployment, Setup},
    figures::{Figure, percentile},
};
use anyhow::bail;
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use warren_harness::Signal;
use warren_producer::Client;

/// The same fan-out, chain and many small workflows on each store; then,
/// with two schedulers, the one owning a chain of 10 ms tasks is killed in
/// its middle and the longest pause is measured.
pub async fn stores(addr: &str, o: &Opts) -> anyhow::Result<Vec<Figure>> {
    let mut figures = Vec::new();
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
        let tasks = fan_out(n);
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
                let tasks: Vec<Value> = (0..per).map(|i| task(format!("t{i}"), vec![])).collect();
                let client = shared.clone();
                tokio::spawn(async move {
                    run_ok(&client, json!({"id": format!("many-{w}"), "tasks": tasks})).await
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
                        .submit_and_wait(json!({"id": "takeover", "tasks": sleepy}), TIMEOUT)
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
            let (pg, conn) = tokio_postgres::connect(&o.pg_url, tokio_postgres::NoTls).await?;
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
    Ok(figures)
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
