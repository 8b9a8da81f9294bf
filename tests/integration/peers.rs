//! Several schedulers sharing one namespace on PostgreSQL: the partitions
//! of the workflows are shared out, each scheduler works on its own, and
//! when one leaves the others carry on with its work. (Killed schedulers:
//! the fault program, docs/reliability.md.)

use crate::{
    control::held,
    support::{DEADLINE, Env, RunningScheduler, committed_results, pg_url, wait_until},
};
use serde_json::json;
use std::sync::{Arc, atomic::Ordering};
use warren_scheduler::SchedulerConfig;
use warren_scheduler::{Metrics, store::StoreLocation};
use warren_shared::wire::WorkflowStatus;

/// Starts `n` schedulers of `config`; returns once each owns partitions
/// (the first has handed some over) and listens, when HTTP is configured.
async fn peers(env: &Env, n: usize, config: &SchedulerConfig) -> Vec<RunningScheduler> {
    let peers: Vec<_> = (0..n).map(|_| env.scheduler(config.clone())).collect();
    wait_until("every scheduler owns partitions", || {
        peers.iter().all(|p| {
            Metrics::get(&p.metrics.active) == 1
                && (config.http_addr.is_none() || p.http.get().is_some())
        })
    })
    .await;
    peers
}

fn chain(id: &str) -> serde_json::Value {
    json!({"id": id, "tasks": [
        {"id": "a", "type": "sleep", "input": {"ms": 5}},
        {"id": "b", "type": "echo", "depends_on": ["a"], "input": "${a.output}"},
        {"id": "c", "type": "echo", "depends_on": ["b"], "input": {"id": id}}
    ]})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_share_the_partitions_and_carry_on_when_one_leaves() {
    let mut env = Env::new().await;
    env.store = StoreLocation::Postgres(pg_url());
    let config = env.scheduler_config();
    let peers = peers(&env, 3, &config).await;
    env.worker(
        warren_worker::Registry::with_builtins(),
        &["default"],
        16,
        "w",
    );

    let ids: Vec<String> = (0..60).map(|i| format!("peer-{i}")).collect();
    let run = |ids: Vec<String>| {
        let client = env.client.clone();
        async move {
            let waiting: Vec<_> = ids
                .into_iter()
                .map(|id| {
                    let client = client.clone();
                    tokio::spawn(async move { client.submit_and_wait(chain(&id), DEADLINE).await })
                })
                .collect();
            let mut reports = Vec::new();
            for w in waiting {
                reports.push(w.await.expect("no panic"));
            }
            reports
        }
    };
    for r in run(ids[..30].to_vec()).await {
        let r = r.unwrap();
        assert_eq!(r.status, WorkflowStatus::Succeeded, "{r:?}");
    }
    // Every scheduler committed results of its own partitions, and
    // requests that reached a scheduler not owning them were passed on.
    for p in &peers {
        assert!(
            Metrics::get(&p.metrics.engine.results_committed) > 0,
            "a scheduler that did no work"
        );
    }
    let forwarded: u64 = peers
        .iter()
        .map(|p| Metrics::get(&p.metrics.forwarded))
        .sum();
    assert!(forwarded > 0, "no request was received by a non-owner");

    // One leaves while the second half runs; the others take its
    // partitions and finish its workflows.
    let mut peers = peers.into_iter();
    let leaving = peers.next().unwrap();
    let second = tokio::spawn(run(ids[30..].to_vec()));
    leaving.stop().await;
    for r in second.await.unwrap() {
        let r = r.unwrap();
        assert_eq!(r.status, WorkflowStatus::Succeeded, "{r:?}");
    }
    // Any scheduler answers a status request, whoever owns the workflow.
    for id in &ids {
        let report = env.client.status(id, DEADLINE).await.unwrap();
        assert_eq!(report.status, WorkflowStatus::Succeeded, "{id}");
        let results = committed_results(&env, id).await;
        assert_eq!(results.len(), 3, "one result per task of {id}: {results:?}");
    }
    for p in peers {
        p.stop().await;
    }
    env.finish().await;
}

/// A limit per task type holds across the schedulers: they take places in
/// the store, and a partition handed over carries the places its running
/// tasks use.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_type_limit_is_global_across_peers() {
    let mut env = Env::new().await;
    env.store = StoreLocation::Postgres(pg_url());
    let config = SchedulerConfig {
        type_limits: vec![("charge".into(), 3)],
        ..env.scheduler_config()
    };
    let peers = peers(&env, 3, &config).await;
    let metrics: Vec<Arc<Metrics>> = peers.iter().map(|p| p.metrics.clone()).collect();
    let mut registry = warren_worker::Registry::with_builtins();
    let (now, most, gate) = held(&mut registry, "charge");
    env.worker(registry, &["default"], 20, "w");
    let total = 12;
    let outcomes: Vec<_> = (0..total)
        .map(|i| {
            let client = env.client.clone();
            tokio::spawn(async move {
                client
                    .submit_and_wait(
                        json!({"id": format!("shop-{i}"), "tasks": [{"id": "c", "type": "charge"}]}),
                        DEADLINE,
                    )
                    .await
            })
        })
        .collect();
    let succeeded = || -> u64 {
        metrics
            .iter()
            .map(|m| Metrics::get(&m.engine.tasks_succeeded))
            .sum()
    };
    wait_until("three charges running", || now.load(Ordering::SeqCst) == 3).await;
    let mut peers = peers.into_iter();
    for done in 1..=total {
        gate.add_permits(1);
        wait_until("the next charge", || {
            succeeded() == done && now.load(Ordering::SeqCst) == (total - done).min(3) as usize
        })
        .await;
        assert!(most.load(Ordering::SeqCst) <= 3, "limit exceeded");
        if done == 4 {
            // One leaves with charges running on its partitions.
            peers.next().unwrap().stop().await;
        }
    }
    for outcome in outcomes {
        let report = outcome.await.unwrap().unwrap();
        assert_eq!(report.status, WorkflowStatus::Succeeded);
    }
    assert_eq!(most.load(Ordering::SeqCst), 3, "the limit was used");
    for p in peers {
        p.stop().await;
    }
    env.finish().await;
}

/// Any scheduler's HTTP endpoint reports a running workflow, whichever
/// owns it (the others read it as stored).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_peer_reports_a_running_workflow() {
    let mut env = Env::new().await;
    env.store = StoreLocation::Postgres(pg_url());
    let config = SchedulerConfig {
        http_addr: Some("127.0.0.1:0".parse().unwrap()),
        ..env.scheduler_config()
    };
    let peers = peers(&env, 2, &config).await;
    let mut registry = warren_worker::Registry::with_builtins();
    let (now, _, gate) = held(&mut registry, "hold");
    env.worker(registry, &["default"], 20, "w");
    let ids: Vec<String> = (0..8).map(|i| format!("held-{i}")).collect();
    for id in &ids {
        env.client
            .submit(json!({"id": id, "tasks": [{"id": "h", "type": "hold"}]}))
            .await
            .unwrap();
    }
    wait_until("every task running", || {
        now.load(Ordering::SeqCst) == ids.len()
    })
    .await;
    for id in &ids {
        for p in &peers {
            let (code, _, body) =
                crate::support::http_get(*p.http.get().unwrap(), &format!("/api/workflows/{id}"))
                    .await;
            assert_eq!(code, 200, "{id}: {body}");
            let report: serde_json::Value = serde_json::from_str(&body).unwrap();
            assert_eq!(report["status"], "running", "{body}");
            assert_eq!(report["tasks"]["h"]["state"], "running", "{body}");
        }
    }
    gate.add_permits(ids.len());
    for id in &ids {
        crate::support::wait_until_async("the workflow ends", || async {
            env.client
                .status(id, DEADLINE)
                .await
                .is_ok_and(|r| r.status == WorkflowStatus::Succeeded)
        })
        .await;
    }
    for p in peers {
        p.stop().await;
    }
    env.finish().await;
}
