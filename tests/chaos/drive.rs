//! The workload and the faults: diamonds submitted in chunks with a fault
//! (and, with `--bombs`, bombs) between chunks, then waiting for every
//! workflow to end and the queues to drain, then gathering what the
//! invariants are checked on.

use crate::{
    Fault, POISON_ID, RunArgs, bombs::Bombs, broker, child::recorded_effects, fleet::Fleet,
    report::report, store::Reader,
};
use anyhow::Context;
use serde_json::json;
use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};
use warren_producer::Client;
use warren_shared::AmqpConfig;

/// Runs the workload and the faults, then checks the invariants: true
/// when they all hold.
pub async fn drive(
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
        .chain(std::iter::repeat_n(Fault::NodeKill, args.node_kills))
        .chain(std::iter::repeat_n(Fault::Partition, args.partitions))
        .chain(std::iter::repeat_n(Fault::PgRestart, args.pg_restarts))
        .collect();
    let mut partitions = 0;
    fastrand::shuffle(&mut faults);
    // Each node kill is followed two steps later by the brief stop of a
    // second node: the killed node is down over the next chunk and fault.
    let mut i = 0;
    while i < faults.len() {
        if faults[i] == Fault::NodeKill {
            faults.insert((i + 2).min(faults.len()), Fault::NodeStop);
        }
        i += 1;
    }
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
    let mut bombs = Bombs::new(amqp, args.bombs, args.max_queues);
    for step in 0..chunks {
        if faults.get(step) == Some(&Fault::NodeStop) {
            // The killed node back first, so that the stop meets the
            // chunk about to go in.
            if let Some(nodes) = &mut fleet.nodes {
                nodes.finish().await?;
            }
        }
        let end = (next + per_chunk).min(args.workflows);
        for i in next..end {
            client.submit(diamond(i)).await?;
        }
        next = end;
        bombs.throw_due(step, chunks).await?;
        // A node fault strikes as soon as its chunk is in, so that it
        // meets that chunk in flight (a short chunk can end in the pause).
        if !matches!(faults.get(step), Some(Fault::NodeKill | Fault::NodeStop)) {
            tokio::time::sleep(Duration::from_millis(fastrand::u64(150..500))).await;
        }
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
                tokio::task::spawn_blocking(move || broker::restart_broker(hard)).await??;
            }
            Fault::Disconnect => {
                let cluster = fleet.nodes.as_ref().map(|n| n.cluster.clone());
                tokio::task::spawn_blocking(move || {
                    let reason = "chaos: forced disconnect";
                    match cluster {
                        Some(cluster) => cluster.disconnect_all(reason),
                        None => broker::rabbitmqctl(&["close_all_connections", reason]),
                    }
                })
                .await??
            }
            Fault::NodeKill | Fault::NodeStop => {
                let nodes = fleet
                    .nodes
                    .as_mut()
                    .context("--node-kills needs --cluster")?;
                let unfinished = unfinished(store, next).await?;
                if fault == Fault::NodeKill {
                    nodes.kill(unfinished).await?;
                } else {
                    nodes.stop(unfinished).await?;
                }
            }
            Fault::Partition => {
                let hold = Duration::from_secs(args.partition_hold);
                let names = fleet.names();
                let network = fleet.network.as_ref().expect("links with --partitions");
                network
                    .partition(partitions, (&names.0, &names.1), store, hold)
                    .await?;
                partitions += 1;
            }
            Fault::PgRestart => {
                let own = fleet
                    .restarts
                    .as_mut()
                    .expect("a server with --pg-restarts");
                own.restart().await?;
            }
        }
        *injected.entry(fault).or_default() += 1;
        println!("fault {:>3}/{}: {fault:?}", step + 1, faults.len());
    }
    if let Some(nodes) = &mut fleet.nodes {
        nodes.finish().await?;
    }
    bombs.settle(&client).await?;
    client.close().await;

    // Wait for every workflow to end, replacing workers the poison kills.
    let expected = args.workflows + 1 + bombs.recorded();
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
    let mut depths = broker::queue_depths(amqp, matches!(store, Reader::Postgres { .. })).await?;
    while depths.iter().any(|(q, n)| !q.ends_with(".dead") && *n > 0) && Instant::now() < deadline {
        self_deaths += fleet.revive()?;
        tokio::time::sleep(Duration::from_millis(200)).await;
        depths = broker::queue_depths(amqp, matches!(store, Reader::Postgres { .. })).await?;
    }

    let results = store.committed_results().await?;
    let poison_error = store.poison_error().await?;
    let effects = recorded_effects(&fleet.args.dir)?;
    let dead = broker::dead_letters(amqp).await?;
    let verdict = bombs.verdict(&store.bomb_reports().await?, &dead);
    let passed = report(
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
        &verdict,
    );
    let splits_ok = fleet.network.as_ref().is_none_or(|n| n.verdict());
    let restarted = injected.get(&Fault::PgRestart).copied().unwrap_or(0);
    if restarted > 0 {
        println!("PostgreSQL restarts (fast and immediate in turn): {restarted}");
    }
    let passed = passed && splits_ok;
    if passed {
        bombs.delete_queues().await?;
    }
    Ok(passed)
}

/// Diamonds of the `submitted` that have not ended yet.
async fn unfinished(store: &Reader, submitted: usize) -> anyhow::Result<usize> {
    let ended = store
        .statuses()
        .await?
        .iter()
        .filter(|(id, s)| id.starts_with("chaos-") && *id != POISON_ID && *s != "running")
        .count();
    Ok(submitted.saturating_sub(ended))
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
