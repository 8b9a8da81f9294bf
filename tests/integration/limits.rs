//! What the scheduler builds and publishes at most, seen from outside: a
//! message over the publish limit ends its task (and only it), and a
//! report over the report limit elides outputs that stay readable one
//! task at a time, over AMQP and HTTP.

use crate::support::{DEADLINE, Env, http_get, wait_until};
use serde_json::{Value, json};
use warren_scheduler::Metrics;
use warren_shared::wire::{TaskState, WorkflowStatus};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_over_the_publish_limit_ends_its_task_and_nothing_else() {
    let mut env = Env::new().await;
    let mut config = env.scheduler_config();
    config.bounds.max_message_bytes = 64 * 1024;
    let s = env.scheduler(config);
    env.builtin_worker("w");
    let big = "b".repeat(100_000);
    let report = env
        .client
        .submit_and_wait(
            json!({"id": "too-big", "tasks": [
                {"id": "small", "type": "echo", "input": 1},
                {"id": "big", "type": "echo", "input": big, "retry": {"max_attempts": 5}}
            ]}),
            DEADLINE,
        )
        .await
        .unwrap();
    assert_eq!(report.status, WorkflowStatus::Failed, "{report:?}");
    let error = report.tasks["big"].error.as_ref().expect("an error");
    assert!(!error.retryable);
    assert!(
        error
            .message
            .contains("over the limit of 65536 (WARREN_MAX_MESSAGE_BYTES)"),
        "{}",
        error.message
    );
    assert_eq!(report.tasks["big"].attempts, 1, "never retried");
    assert_eq!(Metrics::get(&s.metrics.engine.messages_refused), 1);
    wait_until("the refusal recorded on the dead-letter exchange", || {
        Metrics::get(&s.metrics.engine.dead_lettered) >= 1
    })
    .await;
    let next = env
        .client
        .submit_and_wait(
            json!({"tasks": [{"id": "a", "type": "echo", "input": 2}]}),
            DEADLINE,
        )
        .await
        .unwrap();
    assert_eq!(next.status, WorkflowStatus::Succeeded);
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_elided_output_is_read_alone_over_amqp_and_http() {
    let mut env = Env::new().await;
    let mut config = env.scheduler_config();
    config.bounds.max_report_bytes = 20_000;
    config.http_addr = Some("127.0.0.1:0".parse().unwrap());
    let s = env.scheduler(config);
    env.builtin_worker("w");
    wait_until("the endpoint listens", || s.http.get().is_some()).await;
    let addr = *s.http.get().unwrap();
    let long = "q".repeat(30_000);
    let report = env
        .client
        .submit_and_wait(
            json!({"id": "elided", "tasks": [
                {"id": "a", "type": "echo", "input": long},
                {"id": "b", "type": "echo", "depends_on": ["a"], "input": "small"}
            ]}),
            DEADLINE,
        )
        .await
        .unwrap();
    assert_eq!(report.status, WorkflowStatus::Succeeded);
    assert_eq!(report.tasks["a"].output, None);
    assert_eq!(report.tasks["a"].output_elided, Some(30_002));
    assert_eq!(report.tasks["b"].output, Some(json!("small")));
    assert!(Metrics::get(&s.metrics.engine.reports_elided) >= 1);

    let alone = env
        .client
        .task_status("elided", "a", DEADLINE)
        .await
        .unwrap();
    assert_eq!(alone.status, WorkflowStatus::Succeeded);
    assert_eq!(alone.tasks.len(), 1);
    assert_eq!(alone.tasks["a"].state, TaskState::Succeeded);
    assert_eq!(alone.tasks["a"].output, Some(json!(long)));
    let missing = env
        .client
        .task_status("elided", "zz", DEADLINE)
        .await
        .unwrap();
    assert!(missing.tasks.is_empty());
    assert!(missing.error.unwrap().contains("no task `zz`"));

    let (code, _, body) = http_get(addr, "/api/workflows/elided/tasks/a").await;
    assert_eq!(code, 200, "{body}");
    let task: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(task["output"], json!(long));
    let (code, _, _) = http_get(addr, "/api/workflows/elided/tasks/zz").await;
    assert_eq!(code, 404);
    let (code, _, _) = http_get(addr, "/api/workflows/nope/tasks/a").await;
    assert_eq!(code, 404);
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_control_request_with_an_overlong_id_is_refused_not_echoed() {
    let env = Env::new().await;
    let _s = env.scheduler(env.scheduler_config());
    let long = "i".repeat(100_000);
    let report = env.client.status(&long, DEADLINE).await.expect("answered");
    assert_eq!(report.status, WorkflowStatus::Rejected);
    assert_eq!(report.errors[0].code, "invalid_control");
    assert!(report.errors[0].message.contains("at most 128"));
    let answer = serde_json::to_vec(&report).unwrap();
    assert!(
        answer.len() < 2_000,
        "the id is not echoed: {} bytes",
        answer.len()
    );
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_longest_ids_allowed_run() {
    // `{workflow}/{task}/{attempt}` is then longer than an AMQP short
    // string (255 bytes): the task message and its result go without a
    // message_id rather than panic the scheduler or the worker.
    let mut env = Env::new().await;
    let _s = env.scheduler(env.scheduler_config());
    env.builtin_worker("w");
    let (wf, task) = ("w".repeat(128), "t".repeat(128));
    let report = env
        .client
        .submit_and_wait(
            json!({"id": wf, "tasks": [{"id": task, "type": "echo", "input": 3}]}),
            DEADLINE,
        )
        .await
        .unwrap();
    assert_eq!(report.status, WorkflowStatus::Succeeded, "{report:?}");
    assert_eq!(report.tasks[&task].output, Some(json!(3)));
    env.finish().await;
}
