//! PostgreSQL restarts under load (issue 21): two schedulers share a
//! server of the test's own (`warren_harness::pg_cluster`), which is
//! restarted with `-m fast` and then `-m immediate` (crash recovery)
//! while workflows run. Both lead again, and every workflow ends with one
//! result per task. PostgreSQL suite only, as `splits.rs`.

use crate::{
    splits::{exactly_once, pg_suite, run},
    support::Env,
};
use std::sync::Arc;
use warren_harness::pg_cluster::{Cluster, StopMode};
use warren_scheduler::{Metrics, store::StoreLocation};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedulers_recover_from_fast_and_immediate_restarts_of_postgresql() {
    if pg_suite().is_none() {
        eprintln!("skipped: PostgreSQL suite only");
        return;
    }
    let cluster = Arc::new(
        tokio::task::spawn_blocking(Cluster::start)
            .await
            .unwrap()
            .expect("a PostgreSQL server of the test's own"),
    );
    let mut env = Env::new().await;
    env.store = StoreLocation::Postgres(cluster.url());
    let a = env.scheduler(env.scheduler_config());
    let b = env.scheduler(env.scheduler_config());
    env.worker(
        warren_worker::Registry::with_builtins(),
        &["default"],
        16,
        "w",
    );
    let leads = |n| {
        let (a, b) = (a.metrics.clone(), b.metrics.clone());
        move || Metrics::get(&a.active) + Metrics::get(&b.active) == n
    };
    crate::support::wait_until("both lead", leads(2)).await;

    let mut all = Vec::new();
    for (round, mode) in [StopMode::Fast, StopMode::Immediate]
        .into_iter()
        .enumerate()
    {
        let ids: Vec<String> = (0..40).map(|i| format!("restart-{round}-{i}")).collect();
        let running = run(&env, ids);
        let committed = || {
            Metrics::get(&a.metrics.batches_committed) + Metrics::get(&b.metrics.batches_committed)
        };
        let start = committed();
        crate::support::wait_until("work in flight", || committed() > start + 3).await;
        let c = cluster.clone();
        tokio::task::spawn_blocking(move || c.restart(mode))
            .await
            .unwrap()
            .expect("restart");
        eprintln!("restarted PostgreSQL ({mode:?})");
        all.extend(running.await.unwrap());
        crate::support::wait_until("both lead again", leads(2)).await;
    }
    assert!(
        Metrics::get(&a.metrics.reconnects) >= 2 && Metrics::get(&b.metrics.reconnects) >= 2,
        "each scheduler lost the database twice and came back"
    );
    exactly_once(&env, &all).await;
    a.stop().await;
    b.stop().await;
    env.finish().await;
    drop(cluster);
}
