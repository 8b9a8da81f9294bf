//! Faults the suite can inject without disturbing other tests: forced
//! disconnects of this test's own connections.

use crate::support::{
    DEADLINE, Env, Log, RunningScheduler, add_gated, committed_results, cut_connections, pg_url,
    recording, wait_until,
};
use serde_json::json;
use std::sync::Arc;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use warren_producer::ClientError;
use warren_scheduler::{
    Metrics,
    store::{StoreLocation, postgres::schema_of},
};
use warren_shared::wire::WorkflowReport;
use warren_shared::wire::WorkflowStatus;

/// A scheduler, a worker with `record` and `gated`, and the workflow `id`
/// (a -> gated b -> c, c echoing a's output) waited for in a task; returns
/// once b runs, held until the gate gives permits.
async fn gated_chain(
    env: &mut Env,
    id: &str,
) -> (
    RunningScheduler,
    Arc<Semaphore>,
    JoinHandle<Result<WorkflowReport, ClientError>>,
) {
    let log = Log::default();
    let gate = Arc::new(Semaphore::new(0));
    let s = env.scheduler(env.scheduler_config());
    let mut registry = recording(&log, "w");
    add_gated(&mut registry, "gated", &log, "w", Some(&gate));
    env.worker(registry, &["default"], 4, "w");
    let waiter = tokio::spawn({
        let c = env.client.clone();
        let id = id.to_owned();
        async move {
            c.submit_and_wait(
                json!({"id": id, "tasks": [
                    {"id": "a", "type": "record", "input": 1},
                    {"id": "b", "type": "gated", "depends_on": ["a"], "input": "${a.output}"},
                    {"id": "c", "type": "record", "depends_on": ["b"], "input": "${b.output}"}
                ]}),
                DEADLINE,
            )
            .await
        }
    });
    let running = format!("{id}/b/1");
    wait_until("b to start", || log.contains(&running)).await;
    (s, gate, waiter)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forced_disconnects_lose_nothing() {
    let mut env = Env::new().await;
    let (s, gate, waiter) = gated_chain(&mut env, "cut").await;
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
    let results = committed_results(&env, "cut").await;
    assert_eq!(
        results.len(),
        3,
        "exactly one committed result per task: {results:?}"
    );
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_worker_is_caught_by_the_lease_and_its_late_result_ignored() {
    use futures_lite::StreamExt;
    use lapin::options::{BasicConsumeOptions, BasicPublishOptions, BasicQosOptions};
    let mut env = Env::new().await;
    let mut config = env.scheduler_config();
    config.lease_grace = std::time::Duration::from_millis(200);
    let s = env.scheduler(config);
    // A "worker" that takes one task and then hangs: it never answers.
    let conn = warren_shared::amqp::connect(&env.amqp.addr, "hung worker")
        .await
        .unwrap();
    let ch = warren_shared::amqp::confirm_channel(&conn).await.unwrap();
    let topology = warren_shared::Topology::new(env.amqp.namespace.clone());
    topology.declare_task_queue(&ch, "default").await.unwrap();
    ch.basic_qos(1, BasicQosOptions::default()).await.unwrap();
    let mut hung = ch
        .basic_consume(
            topology.task_queue("default").as_str().into(),
            "".into(),
            BasicConsumeOptions::default(),
            Default::default(),
        )
        .await
        .unwrap();
    let waiter = tokio::spawn({
        let c = env.client.clone();
        async move {
            c.submit_and_wait(
                json!({"id": "hang", "tasks": [{"id": "a", "type": "echo", "input": "done", "timeout_ms": 100,
                        "retry": {"max_attempts": 2, "backoff_ms": 10}}]}),
                DEADLINE,
            )
            .await
        }
    });
    let held = tokio::time::timeout(DEADLINE, hung.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(
        held.properties.message_id().as_ref().unwrap().as_str(),
        "hang/a/1"
    );
    // A healthy worker joins; it gets attempt 2 once the lease of 1 ends.
    env.builtin_worker("healthy");
    let report = waiter.await.unwrap().unwrap();
    assert_eq!(report.status, WorkflowStatus::Succeeded, "{report:?}");
    assert_eq!(report.tasks["a"].attempts, 2);
    assert_eq!(report.tasks["a"].worker.as_deref(), Some("healthy"));
    assert_eq!(Metrics::get(&s.metrics.engine.leases_expired), 1);
    // The hung worker wakes up and answers attempt 1, with its token:
    // nothing changes.
    let token = serde_json::from_slice::<serde_json::Value>(&held.data).unwrap()["token"].clone();
    let late = json!({"workflow_id": "hang", "task_id": "a", "attempt": 1, "token": token, "status": "succeeded", "output": "late"});
    ch.basic_publish(
        topology.results().as_str().into(),
        "".into(),
        BasicPublishOptions::default(),
        late.to_string().as_bytes(),
        Default::default(),
    )
    .await
    .unwrap()
    .await
    .unwrap();
    wait_until("the late result to be ignored", || {
        Metrics::get(&s.metrics.engine.results_ignored) == 1
    })
    .await;
    let after = env.client.status("hang", DEADLINE).await.unwrap();
    assert_eq!(after.tasks["a"].output, Some(json!("done")));
    assert_eq!(
        committed_results(&env, "hang").await,
        vec![("a".to_string(), 2, "succeeded".to_string())],
        "attempt 1 never committed a result"
    );
    warren_shared::amqp::close(&conn, "done").await;
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_that_kills_its_worker_every_time_fails_after_max_deliveries() {
    let mut env = Env::new().await;
    let log = Log::default();
    let never = Arc::new(Semaphore::new(0));
    let _s = env.scheduler(env.scheduler_config());
    let mut registry = recording(&log, "w");
    add_gated(&mut registry, "poison", &log, "w", Some(&never));
    let mut config = env.worker_config(&["default"], 2, "poisoned");
    config.max_deliveries = 3;
    let (_stop, _join) = env.stoppable_worker(registry, config);
    let waiter = tokio::spawn({
        let c = env.client.clone();
        async move {
            c.submit_and_wait(
                json!({"id": "poison", "tasks": [
                    {"id": "p", "type": "poison", "retry": {"max_attempts": 3}},
                    {"id": "after", "type": "echo", "depends_on": ["p"]}
                ]}),
                DEADLINE,
            )
            .await
        }
    });
    // Each run "crashes" the worker: its connections are cut mid-task.
    let me = format!("{} poisoned", env.amqp.namespace);
    for run in 1..=3 {
        wait_until("the poison task to run again", || log.lines().len() == run).await;
        let me = me.clone();
        let cut = tokio::task::spawn_blocking(move || crate::support::cut_connections_named(&me))
            .await
            .unwrap();
        assert_eq!(cut, 2, "the worker's two connections");
    }
    let report = waiter.await.unwrap().unwrap();
    assert_eq!(report.status, WorkflowStatus::Failed, "{report:?}");
    let error = report.tasks["p"].error.as_ref().unwrap();
    assert!(
        error
            .message
            .contains("delivered 4 times without finishing"),
        "{}",
        error.message
    );
    assert!(!error.retryable, "a poison task is not retried");
    assert_eq!(report.tasks["p"].attempts, 1);
    assert_eq!(
        report.tasks["after"].state,
        warren_shared::wire::TaskState::Skipped
    );
    assert_eq!(log.lines().len(), 3, "run exactly max_deliveries times");
    env.finish().await;
}

/// PostgreSQL (always, whatever `WARREN_TEST_STORE` says): every database
/// session of this test's scheduler is terminated while a task runs. The
/// scheduler does not stop: it stands by again, leads again, reloads the
/// store and finishes the workflow with one result per task.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduler_whose_database_sessions_are_killed_leads_again() {
    let mut env = Env::new().await;
    let url = pg_url();
    env.store = StoreLocation::Postgres(url.clone());
    let (s, gate, waiter) = gated_chain(&mut env, "pgcut").await;
    let (pg, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let app = format!("warren {}", schema_of(&env.amqp.namespace));
    let killed: i64 = pg
        .query_one(
            "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity
             WHERE application_name = $1) k",
            &[&app],
        )
        .await
        .unwrap()
        .get(0);
    assert!(killed >= 2, "the lock's session and a pooled one: {killed}");
    gate.add_permits(10);
    let report = waiter.await.unwrap().unwrap();
    assert_eq!(report.status, WorkflowStatus::Succeeded, "{report:?}");
    assert_eq!(report.tasks["c"].output, Some(json!(1)));
    // The workflow may end on the pooled sessions before the lock's loss
    // is heard (the keeper pings it on its own beat): wait for it.
    wait_until("the lost sessions to end the session once", || {
        Metrics::get(&s.metrics.reconnects) >= 1
    })
    .await;
    wait_until("it to lead again", || Metrics::get(&s.metrics.active) == 1).await;
    let results = committed_results(&env, "pgcut").await;
    assert_eq!(
        results.len(),
        3,
        "one committed result per task: {results:?}"
    );
    s.stop().await;
    env.finish().await;
}
