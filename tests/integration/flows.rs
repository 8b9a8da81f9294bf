//! Workflows end to end: shapes, data passing, retries, failures.

use crate::support::{Env, Log, recording};
use serde_json::json;
use warren_shared::wire::{TaskState, WorkflowStatus};

const WAIT: std::time::Duration = crate::support::DEADLINE;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chain_runs_in_order_and_passes_data() {
    let mut env = Env::new().await;
    let log = Log::default();
    let _s = env.scheduler(env.scheduler_config());
    env.worker(recording(&log, "w1"), &["default"], 4, "w1");
    let report = env
        .client
        .submit_and_wait(
            json!({"id": "chain", "input": {"n": 1}, "tasks": [
                {"id": "a", "type": "record", "input": {"n": "${workflow.input.n}", "from": "a"}},
                {"id": "b", "type": "record", "depends_on": ["a"], "input": {"prev": "${a.output.from}", "n": "${a.output.n}"}},
                {"id": "c", "type": "record", "depends_on": ["b"], "input": "b said ${b.output.prev} and ${b.output.n}"}
            ]}),
            WAIT,
        )
        .await
        .unwrap();
    assert_eq!(report.status, WorkflowStatus::Succeeded, "{report:?}");
    assert_eq!(report.tasks["b"].output, Some(json!({"prev": "a", "n": 1})));
    assert_eq!(report.tasks["c"].output, Some(json!("b said a and 1")));
    assert_eq!(
        log.lines(),
        vec!["chain/a/1@w1", "chain/b/1@w1", "chain/c/1@w1"]
    );
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn diamond_fans_out_and_joins() {
    let mut env = Env::new().await;
    let log = Log::default();
    let _s = env.scheduler(env.scheduler_config());
    env.worker(recording(&log, "w"), &["default"], 4, "w");
    let report = env
        .client
        .submit_and_wait(
            json!({"id": "diamond", "tasks": [
                {"id": "a", "type": "record", "input": {"v": 2}},
                {"id": "b", "type": "record", "depends_on": ["a"], "input": {"double": "${a.output.v}"}},
                {"id": "c", "type": "record", "depends_on": ["a"], "input": {"square": "${a.output.v}"}},
                {"id": "d", "type": "record", "depends_on": ["b", "c"], "input": ["${b.output}", "${c.output}"]}
            ]}),
            WAIT,
        )
        .await
        .unwrap();
    assert_eq!(report.status, WorkflowStatus::Succeeded);
    assert_eq!(
        report.tasks["d"].output,
        Some(json!([{"double": 2}, {"square": 2}]))
    );
    let lines = log.lines();
    assert_eq!(lines.first().map(String::as_str), Some("diamond/a/1@w"));
    assert_eq!(
        lines.last().map(String::as_str),
        Some("diamond/d/1@w"),
        "the join runs last: {lines:?}"
    );
    assert_eq!(lines.len(), 4);
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_then_success() {
    let mut env = Env::new().await;
    let s = env.scheduler(env.scheduler_config());
    env.builtin_worker("w");
    let report = env
        .client
        .submit_and_wait(
            json!({"id": "flaky", "tasks": [
                {"id": "f", "type": "fail", "input": {"times": 2, "message": "transient"},
                 "retry": {"max_attempts": 3, "backoff_ms": 20}},
                {"id": "after", "type": "echo", "depends_on": ["f"], "input": "${f.output.attempt}"}
            ]}),
            WAIT,
        )
        .await
        .unwrap();
    assert_eq!(report.status, WorkflowStatus::Succeeded, "{report:?}");
    assert_eq!(report.tasks["f"].attempts, 3);
    assert_eq!(report.tasks["after"].output, Some(json!(3)));
    assert_eq!(
        warren_scheduler::Metrics::get(&s.metrics.engine.tasks_retried),
        2
    );
    let results = crate::support::committed_results(&env, "flaky").await;
    assert_eq!(
        results,
        vec![
            ("after".to_string(), 1, "succeeded".to_string()),
            ("f".to_string(), 1, "failed".to_string()),
            ("f".to_string(), 2, "failed".to_string()),
            ("f".to_string(), 3, "succeeded".to_string()),
        ]
    );
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exhausted_retries_fail_the_workflow_and_skip_dependents() {
    let mut env = Env::new().await;
    let _s = env.scheduler(env.scheduler_config());
    env.builtin_worker("w");
    let report = env
        .client
        .submit_and_wait(
            json!({"id": "doomed", "tasks": [
                {"id": "pay", "type": "fail", "input": {"message": "card declined"},
                 "retry": {"max_attempts": 2, "backoff_ms": 10}},
                {"id": "slow_sibling", "type": "sleep", "input": {"ms": 300}},
                {"id": "ship", "type": "echo", "depends_on": ["pay"]},
                {"id": "notify", "type": "echo", "depends_on": ["ship", "slow_sibling"]}
            ]}),
            WAIT,
        )
        .await
        .unwrap();
    assert_eq!(report.status, WorkflowStatus::Failed);
    assert_eq!(
        report.error.as_deref(),
        Some("task `pay` failed after 2 attempts: card declined")
    );
    assert_eq!(report.tasks["pay"].state, TaskState::Failed);
    assert_eq!(report.tasks["pay"].attempts, 2);
    assert_eq!(
        report.tasks["pay"].error.as_ref().unwrap().message,
        "card declined"
    );
    assert_eq!(
        report.tasks["slow_sibling"].state,
        TaskState::Succeeded,
        "running siblings finish"
    );
    assert_eq!(report.tasks["ship"].state, TaskState::Skipped);
    assert_eq!(report.tasks["notify"].state, TaskState::Skipped);
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handler_errors_panics_timeouts_and_unknown_types_are_failed_results() {
    let mut env = Env::new().await;
    let _s = env.scheduler(env.scheduler_config());
    let mut registry = warren_worker::Registry::with_builtins();
    registry.register("panics", |_ctx| async move {
        if true {
            panic!("handler bug");
        }
        Ok(serde_json::Value::Null)
    });
    env.worker(registry, &["default"], 4, "w");
    for (kind, input, timeout, expected) in [
        ("panics", json!(null), None, "handler panicked: handler bug"),
        (
            "sleep",
            json!({"ms": 5000}),
            Some(50),
            "timed out after 50 ms",
        ),
        (
            "no.such.type",
            json!(null),
            None,
            "no handler for task type `no.such.type`",
        ),
    ] {
        let report = env
            .client
            .submit_and_wait(json!({"tasks": [{"id": "t", "type": kind, "input": input, "timeout_ms": timeout}]}), WAIT)
            .await
            .unwrap();
        assert_eq!(report.status, WorkflowStatus::Failed, "{kind}");
        let err = report.tasks["t"].error.as_ref().unwrap();
        assert!(err.message.contains(expected), "{kind}: {}", err.message);
    }
    env.finish().await;
}
