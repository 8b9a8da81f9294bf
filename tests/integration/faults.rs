//! Faults the suite can inject without disturbing other tests: forced
//! disconnects of this test's own connections.

use crate::support::{DEADLINE, Env, Log, add_gated, committed_results, cut_connections, recording, wait_until};
use serde_json::json;
use std::sync::Arc;
use tokio::sync::Semaphore;
use warren_scheduler::Metrics;
use warren_shared::wire::WorkflowStatus;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forced_disconnects_lose_nothing() {
    let mut env = Env::new().await;
    let log = Log::default();
    let gate = Arc::new(Semaphore::new(0));
    let s = env.scheduler(env.scheduler_config());
    let mut registry = recording(&log, "w");
    add_gated(&mut registry, "gated", &log, "w", Some(&gate));
    env.worker(registry, &["default"], 4, "w");
    let waiter = tokio::spawn({
        let c = env.client.clone();
        async move {
            c.submit_and_wait(
                json!({"id": "cut", "tasks": [
                    {"id": "a", "type": "record", "input": 1},
                    {"id": "b", "type": "gated", "depends_on": ["a"], "input": "${a.output}"},
                    {"id": "c", "type": "record", "depends_on": ["b"], "input": "${b.output}"}
                ]}),
                DEADLINE,
            )
            .await
        }
    });
    wait_until("b to start", || log.contains("cut/b/1")).await;
    // Scheduler (2), worker (2) and client (1) connections.
    let closed = tokio::task::spawn_blocking({
        let ns = env.amqp.namespace.clone();
        move || cut_connections(&ns)
    })
    .await
    .unwrap();
    assert_eq!(closed, 5, "every connection of the namespace was cut");
    // b's first run lost its connection; it runs again once redelivered.
    gate.add_permits(10);
    let report = waiter.await.unwrap().unwrap();
    assert_eq!(report.status, WorkflowStatus::Succeeded, "{report:?}");
    assert_eq!(report.tasks["c"].output, Some(json!(1)));
    assert!(Metrics::get(&s.metrics.reconnects) >= 1);
    let results = committed_results(&env.store_path, "cut");
    assert_eq!(results.len(), 3, "exactly one committed result per task: {results:?}");
    env.finish().await;
}
