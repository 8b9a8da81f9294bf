//! Nothing runs twice that should not: duplicate submissions, duplicate
//! results, and a scheduler replaced mid-workflow.

use crate::support::{
    DEADLINE, Env, Log, add_gated, committed_results, http_get, recording, wait_until,
    wait_until_async,
};
use lapin::options::BasicPublishOptions;
use serde_json::json;
use std::sync::Arc;
use tokio::sync::Semaphore;
use warren_scheduler::{Metrics, store::StoreLocation};
use warren_shared::wire::{ResultStatus, TaskError, TaskResult, TaskState, WorkflowStatus};
use warren_worker::Registry;

/// A registry whose `gated` tasks log their start, then wait for a permit.
fn gated(log: &Log, gate: &Arc<Semaphore>) -> Registry {
    let mut r = recording(log, "w");
    add_gated(&mut r, "gated", log, "w", Some(gate));
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_submission_runs_once_and_answers_every_submitter() {
    let mut env = Env::new().await;
    let log = Log::default();
    let gate = Arc::new(Semaphore::new(0));
    let s = env.scheduler(env.scheduler_config());
    env.worker(gated(&log, &gate), &["default"], 4, "w");
    let request = json!({"id": "dup-1", "tasks": [{"id": "a", "type": "gated", "input": 7}]});
    let first = tokio::spawn({
        let (c, r) = (env.client.clone(), request.clone());
        async move { c.submit_and_wait(r, DEADLINE).await }
    });
    wait_until("the first attempt to start", || log.contains("dup-1/a/1")).await;
    let second = tokio::spawn({
        let (c, r) = (env.client.clone(), request.clone());
        async move { c.submit_and_wait(r, DEADLINE).await }
    });
    wait_until("the duplicate to be seen", || {
        Metrics::get(&s.metrics.engine.workflows_duplicate) == 1
    })
    .await;
    gate.add_permits(1);
    let (a, b) = (
        first.await.unwrap().unwrap(),
        second.await.unwrap().unwrap(),
    );
    assert_eq!(a.status, WorkflowStatus::Succeeded);
    assert_eq!(a, b, "both submitters get the same outcome");
    // After the end, a third submission is answered from the store.
    let c = env.client.submit_and_wait(request, DEADLINE).await.unwrap();
    assert_eq!(c, a);
    assert_eq!(log.lines(), vec!["dup-1/a/1@w"], "executed once");
    assert_eq!(Metrics::get(&s.metrics.engine.workflows_accepted), 1);
    assert_eq!(Metrics::get(&s.metrics.engine.workflows_duplicate), 2);
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_result_without_the_token_changes_nothing() {
    let mut env = Env::new().await;
    let log = Log::default();
    let gate = Arc::new(Semaphore::new(0));
    let s = env.scheduler(env.scheduler_config());
    env.worker(gated(&log, &gate), &["default"], 4, "w");
    let waiter = tokio::spawn({
        let c = env.client.clone();
        async move {
            c.submit_and_wait(
                json!({"id": "dres", "tasks": [
                    {"id": "a", "type": "record", "input": {"v": "original"}},
                    {"id": "b", "type": "gated", "depends_on": ["a"], "input": "${a.output.v}"}
                ]}),
                DEADLINE,
            )
            .await
        }
    });
    wait_until("b to start (a's result committed)", || {
        log.contains("dres/b/1")
    })
    .await;
    // Replay a's attempt 1 with a different verdict, twice.
    let forged = TaskResult {
        workflow_id: "dres".into(),
        task_id: "a".into(),
        attempt: 1,
        // Whoever replays a result without having received the task
        // message cannot know the attempt's token (the replay of a real
        // result is an engine test: `results_ignored`).
        token: "0".repeat(64),
        status: ResultStatus::Failed,
        output: None,
        error: Some(TaskError {
            message: "forged".into(),
            retryable: false,
        }),
        worker: "impostor".into(),
        started_at: None,
        finished_at: None,
    };
    let conn = warren_shared::amqp::connect(&env.amqp.addr, "test")
        .await
        .unwrap();
    let ch = warren_shared::amqp::confirm_channel(&conn).await.unwrap();
    for _ in 0..2 {
        ch.basic_publish(
            format!("{}.results", env.amqp.namespace).as_str().into(),
            "".into(),
            BasicPublishOptions::default(),
            &serde_json::to_vec(&forged).unwrap(),
            warren_shared::amqp::json_properties(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    }
    wait_until("both forged results to be refused", || {
        Metrics::get(&s.metrics.engine.results_forged) == 2
    })
    .await;
    gate.add_permits(1);
    let report = waiter.await.unwrap().unwrap();
    assert_eq!(report.status, WorkflowStatus::Succeeded);
    assert_eq!(report.tasks["a"].state, TaskState::Succeeded);
    assert_eq!(report.tasks["a"].output, Some(json!({"v": "original"})));
    assert_eq!(report.tasks["b"].output, Some(json!("original")));
    assert_eq!(
        committed_results(&env, "dres").await,
        vec![
            ("a".to_string(), 1, "succeeded".to_string()),
            ("b".to_string(), 1, "succeeded".to_string())
        ]
    );
    warren_shared::amqp::close(&conn, "done").await;
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_scheduler_on_the_same_store_completes_the_workflow() {
    let mut env = Env::new().await;
    let log = Log::default();
    let gate = Arc::new(Semaphore::new(0));
    let first = env.scheduler(env.scheduler_config());
    env.worker(gated(&log, &gate), &["default"], 4, "w");
    let waiter = tokio::spawn({
        let c = env.client.clone();
        async move {
            c.submit_and_wait(
                json!({"id": "restart", "tasks": [
                    {"id": "a", "type": "record", "input": 1},
                    {"id": "b", "type": "gated", "depends_on": ["a"], "input": "${a.output}"},
                    {"id": "c", "type": "record", "depends_on": ["b"], "input": "${b.output}"},
                    {"id": "d", "type": "record", "depends_on": ["a"], "input": 4}
                ]}),
                DEADLINE,
            )
            .await
        }
    });
    wait_until("b to be running", || log.contains("restart/b/1")).await;
    // A second scheduler on the same store would dispatch everything twice:
    // on SQLite it is refused; on PostgreSQL it stands by.
    let standby = match env.store {
        StoreLocation::Sqlite(_) => {
            let intruder = env.scheduler(env.scheduler_config()).failure().await;
            assert!(
                intruder.to_string().contains("in use by another scheduler"),
                "{intruder}"
            );
            None
        }
        StoreLocation::Postgres(_) => {
            let mut config = env.scheduler_config();
            config.http_addr = Some("127.0.0.1:0".parse().unwrap());
            Some(env.scheduler(config))
        }
    };
    let deadline = std::time::Instant::now() + DEADLINE;
    while env.client.status("restart", DEADLINE).await.unwrap().tasks["d"].state
        != TaskState::Succeeded
    {
        assert!(std::time::Instant::now() < deadline, "d did not finish");
    }
    if let Some(s) = &standby {
        assert_eq!(
            Metrics::get(&s.metrics.messages_received),
            0,
            "a standby takes nothing"
        );
        assert_eq!(Metrics::get(&s.metrics.broker_connected), 0);
        // It serves the store's workflows, and says it is not the active one.
        wait_until("the standby's endpoint listens", || s.http.get().is_some()).await;
        let addr = *s.http.get().unwrap();
        let (code, _, body) = http_get(addr, "/healthz").await;
        assert_eq!(code, 503, "{body}");
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&body).unwrap()["active"],
            json!(false)
        );
        let (code, _, body) = http_get(addr, "/api/workflows").await;
        assert_eq!(code, 200, "{body}");
        assert!(body.contains("\"restart\""), "{body}");
    }
    first.stop().await;
    // b finishes while no scheduler runs (or only the standby, which takes
    // over now): its result waits in the queue.
    gate.add_permits(1);
    let second = match standby {
        Some(s) => s,
        None => env.scheduler(env.scheduler_config()),
    };
    let report = waiter.await.unwrap().unwrap();
    assert_eq!(report.status, WorkflowStatus::Succeeded, "{report:?}");
    if let Some(addr) = second.http.get() {
        // The standby that took over is the active one now.
        wait_until_async("the new active scheduler is healthy", || async {
            http_get(*addr, "/healthz").await.0 == 200
        })
        .await;
        assert_eq!(Metrics::get(&second.metrics.active), 1);
    }
    assert_eq!(report.tasks["c"].output, Some(json!(1)));
    let results = committed_results(&env, "restart").await;
    assert_eq!(results.len(), 4, "one result per task: {results:?}");
    assert!(
        results
            .iter()
            .all(|(_, attempt, status)| *attempt == 1 && status == "succeeded")
    );
    let mut lines = log.lines();
    lines.sort();
    assert_eq!(
        lines,
        vec![
            "restart/a/1@w",
            "restart/b/1@w",
            "restart/c/1@w",
            "restart/d/1@w"
        ]
    );
    assert_eq!(
        Metrics::get(&second.metrics.engine.results_committed),
        2,
        "b and c, committed by the second"
    );
    env.finish().await;
}
