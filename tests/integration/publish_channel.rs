//! A worker whose publishing channel (or connection) the broker closes,
//! its consuming connection untouched: it must notice at once, start a new
//! session, and count no task as a crash.
//!
//! The broker closes only the channel that publishes to an exchange that
//! does not exist (404 NOT_FOUND), so deleting this test's `{ns}.events`
//! makes the worker's next heartbeat close its publishing channel. Only
//! the scheduler declares exchanges, so the test declares it again once the
//! worker has started a new session (until then each new session loses its
//! channel too). The workers run with `max_deliveries` 1: a task that came
//! back marked `redelivered` (a suspect) would fail at once, so a workflow
//! that succeeds had none.

use crate::support::{
    DEADLINE, Env, Events, Log, add_gated, committed_results, cut_connections_named, recording,
    wait_until,
};
use serde_json::json;
use std::{sync::Arc, time::Duration};
use tokio::sync::Semaphore;
use warren_producer::ClientError;
use warren_shared::wire::{WorkflowReport, WorkflowStatus};
use warren_worker::Registry;

/// Starts worker `id` with `registry` on `default`, where any suspect
/// fails at once.
fn start_worker(env: &mut Env, registry: Registry, id: &str) {
    let mut config = env.worker_config(&["default"], 4, id);
    config.max_deliveries = 1;
    let (_stop, join) = env.stoppable_worker(registry, config);
    tokio::spawn(async move {
        join.await
            .expect("no panic")
            .expect("worker ran without error");
    });
}

/// Deletes the exchange `name`, as an operator's mistake would: the next
/// publish to it closes the publishing channel.
async fn delete_exchange(env: &Env, name: &str) {
    let conn = env.amqp.connect("test: delete exchange").await.unwrap();
    let ch = conn.create_channel().await.unwrap();
    ch.exchange_delete(name.into(), Default::default())
        .await
        .unwrap();
    warren_shared::amqp::close(&conn, "done").await;
}

/// Deletes the namespace's events exchange: the worker's next heartbeat
/// closes its publishing channel.
async fn delete_events_exchange(env: &Env) {
    delete_exchange(env, &env.amqp.topology().events()).await;
}

/// Declares the exchanges again, with the arguments the scheduler uses.
async fn declare_exchanges(env: &Env) {
    let conn = env.amqp.connect("test: declare").await.unwrap();
    let ch = conn.create_channel().await.unwrap();
    env.amqp.topology().declare(&ch).await.unwrap();
    warren_shared::amqp::close(&conn, "done").await;
}

/// A worker `w` with `gated` (held until `gate` gives permits), and the
/// workflow `held` (one `gated` task `a`) waited for in a task; returns
/// once `a` runs.
async fn gated_task(
    env: &mut Env,
    log: &Log,
    gate: &Arc<Semaphore>,
) -> tokio::task::JoinHandle<Result<WorkflowReport, ClientError>> {
    let mut registry = Registry::with_builtins();
    add_gated(&mut registry, "gated", log, "w", Some(gate));
    start_worker(env, registry, "w");
    let waiter = tokio::spawn({
        let c = env.client.clone();
        async move {
            c.submit_and_wait(
                json!({"id": "held", "tasks": [{"id": "a", "type": "gated", "input": 7}]}),
                DEADLINE,
            )
            .await
        }
    });
    wait_until("a to start", || log.lines().len() == 1).await;
    waiter
}

/// The workflow `held` succeeded, its task run again (in a later session)
/// and committed once, as attempt 1: no retry, no suspect.
async fn ran_again_and_succeeded(
    env: &Env,
    log: &Log,
    waiter: tokio::task::JoinHandle<Result<WorkflowReport, ClientError>>,
) {
    let report = waiter.await.unwrap().unwrap();
    assert_eq!(report.status, WorkflowStatus::Succeeded, "{report:?}");
    assert_eq!(report.tasks["a"].output, Some(json!(7)));
    assert_eq!(report.tasks["a"].attempts, 1);
    let runs = log.lines();
    assert!(
        runs.len() >= 2 && runs.iter().all(|r| r == "held/a/1@w"),
        "attempt 1, run once per session until one could answer: {runs:?}"
    );
    assert_eq!(
        committed_results(env, "held").await,
        vec![("a".to_string(), 1, "succeeded".to_string())]
    );
}

/// The broker's pid of worker `id`'s publishing connection, if it has one
/// (Warren names it `warren-worker {ns} {id} (publish)`).
async fn publish_connection(env: &Env, id: &str) -> Option<String> {
    let name = format!("warren-worker {} {id} (publish)", env.amqp.namespace);
    tokio::task::spawn_blocking(move || {
        let out = std::process::Command::new("rabbitmqctl")
            .args(["-q", "list_connections", "pid", "client_properties"])
            .output()
            .expect("rabbitmqctl is installed with RabbitMQ");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .find(|l| l.contains(&name))
            .and_then(|l| l.split_whitespace().next())
            .map(str::to_owned)
    })
    .await
    .unwrap()
}

/// Waits until worker `id` has a publishing connection; returns its pid.
async fn wait_for_publish_connection(env: &Env, id: &str) -> String {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        if let Some(pid) = publish_connection(env, id).await {
            return pid;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "worker {id} never connected"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until worker `id`'s publishing connection `before` is gone: the
/// worker ended that session (the next ones may be too short to be seen:
/// each loses its channel at its first heartbeat until the exchange is
/// back).
async fn wait_for_session_end(env: &Env, id: &str, before: &str) {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while publish_connection(env, id).await.as_deref() == Some(before) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "worker {id} never ended the session of its publishing connection {before}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until worker `id`'s publishing connection is another than
/// `before`: the worker ended its session and started a new one.
async fn wait_for_new_session(env: &Env, id: &str, before: &str) {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        match publish_connection(env, id).await {
            Some(now) if now != before => return,
            _ => {}
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "worker {id} started no new session (its publishing connection was {before})"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_publish_channel_starts_a_new_session() {
    let mut env = Env::new().await;
    let log = Log::default();
    let _s = env.scheduler(env.scheduler_config());
    start_worker(&mut env, recording(&log, "w"), "w");
    let mut beats = Events::bind(&env.amqp, "worker.w.heartbeat").await;
    beats.next().await;
    beats.close().await;
    let before = wait_for_publish_connection(&env, "w").await;

    delete_events_exchange(&env).await;
    wait_for_session_end(&env, "w", &before).await;
    declare_exchanges(&env).await;
    wait_for_new_session(&env, "w", &before).await;

    // The new session publishes: heartbeats again, and results.
    let mut beats = Events::bind(&env.amqp, "worker.w.heartbeat").await;
    let (key, beat) = beats.next().await;
    assert_eq!(key, "worker.w.heartbeat");
    assert_eq!(beat["worker_id"], "w");
    beats.close().await;
    let report = env
        .client
        .submit_and_wait(
            json!({"id": "after", "tasks": [
                {"id": "a", "type": "record", "input": 1},
                {"id": "b", "type": "record", "depends_on": ["a"], "input": "${a.output}"}
            ]}),
            DEADLINE,
        )
        .await
        .unwrap();
    assert_eq!(report.status, WorkflowStatus::Succeeded, "{report:?}");
    assert_eq!(report.tasks["b"].output, Some(json!(1)));
    assert_eq!(log.lines(), vec!["after/a/1@w", "after/b/1@w"]);
    env.finish().await;
}

/// The publishing connection closed alone (by an operator, say): the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_publish_connection_starts_a_new_session() {
    let mut env = Env::new().await;
    let log = Log::default();
    let _s = env.scheduler(env.scheduler_config());
    start_worker(&mut env, recording(&log, "w"), "w");
    let before = wait_for_publish_connection(&env, "w").await;
    let name = format!("{} w (publish)", env.amqp.namespace);
    let cut = tokio::task::spawn_blocking(move || cut_connections_named(&name))
        .await
        .unwrap();
    assert_eq!(cut, 1, "only the publishing connection");
    wait_for_new_session(&env, "w", &before).await;
    let report = env
        .client
        .submit_and_wait(
            json!({"id": "after", "tasks": [{"id": "a", "type": "record", "input": 1}]}),
            DEADLINE,
        )
        .await
        .unwrap();
    assert_eq!(report.status, WorkflowStatus::Succeeded, "{report:?}");
    assert_eq!(log.lines(), vec!["after/a/1@w"]);
    env.finish().await;
}

/// A task running when the publishing channel closes is abandoned with the
/// session, as on any fault, but given back unmarked rather than left to
/// return `redelivered`: it runs again as an ordinary task, not a suspect.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_running_when_the_publish_channel_closes_is_given_back() {
    let mut env = Env::new().await;
    let log = Log::default();
    let gate = Arc::new(Semaphore::new(0));
    let _s = env.scheduler(env.scheduler_config());
    let waiter = gated_task(&mut env, &log, &gate).await;
    let before = wait_for_publish_connection(&env, "w").await;

    delete_events_exchange(&env).await;
    wait_for_session_end(&env, "w", &before).await;
    declare_exchanges(&env).await;
    // Given back, `a` runs again in a new session (a suspect would have
    // failed without running).
    wait_until("a to start again", || log.lines().len() >= 2).await;
    // Enough for every run, even one whose session still lost its channel.
    gate.add_permits(100);
    ran_again_and_succeeded(&env, &log, waiter).await;
    env.finish().await;
}

/// A result whose publish closes the channel (its exchange is gone) is not
/// a crash of its task: the task is given back, not requeued, and runs
/// again in the next session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_whose_result_closed_the_publish_channel_is_given_back() {
    let mut env = Env::new().await;
    // On a PostgreSQL store results go to partition queues, bound to
    // `{ns}.results` by the scheduler's session: bindings that deleting the
    // exchange drops and `Topology::declare` does not make again.
    env.use_sqlite();
    let log = Log::default();
    let gate = Arc::new(Semaphore::new(0));
    let _s = env.scheduler(env.scheduler_config());
    let waiter = gated_task(&mut env, &log, &gate).await;
    let before = wait_for_publish_connection(&env, "w").await;

    delete_exchange(&env, &env.amqp.topology().results()).await;
    // The first run answers: its result finds no exchange.
    gate.add_permits(1);
    wait_for_session_end(&env, "w", &before).await;
    // The next runs answer once the exchange and its binding are back (a
    // result between the two would be returned unroutable and requeued).
    declare_exchanges(&env).await;
    gate.add_permits(100);
    ran_again_and_succeeded(&env, &log, waiter).await;
    env.finish().await;
}
