//! Delayed start (issue 17): a workflow with `delay_ms` or `not_before` is
//! accepted and stored at once (`scheduled`, with its due time), starts
//! when due and not before, also across a scheduler restart, and can be
//! cancelled while it waits.

use crate::support::{DEADLINE, Env, http_get, wait_until, wait_until_async};
use serde_json::json;
use warren_scheduler::Metrics;
use warren_shared::wire::WorkflowStatus;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delayed_workflow_starts_when_due_and_not_before_also_across_a_restart() {
    let mut env = Env::new().await;
    let s = env.scheduler(env.scheduler_config());
    env.builtin_worker("w");
    let waiter = tokio::spawn({
        let c = env.client.clone();
        async move {
            c.submit_and_wait(
                json!({"id": "later", "delay_ms": 2000, "tasks": [
                    {"id": "a", "type": "echo", "input": 1}
                ]}),
                DEADLINE,
            )
            .await
        }
    });
    // Accepted and stored at once: status says when it starts.
    let seen = std::sync::Arc::new(std::sync::Mutex::new(None));
    wait_until_async("the workflow to be scheduled", || {
        let (c, seen) = (env.client.clone(), seen.clone());
        async move {
            let r = c.status("later", DEADLINE).await.unwrap();
            *seen.lock().unwrap() = r.not_before;
            r.status == WorkflowStatus::Scheduled
        }
    })
    .await;
    let not_before = *seen.lock().unwrap();
    let not_before = not_before.expect("a scheduled report names its start");
    assert_eq!(Metrics::get(&s.metrics.engine.tasks_dispatched), 0);
    // The scheduler goes away and another takes over the store: the start
    // is kept there, not in the broker or in memory.
    s.stop().await;
    let s = env.scheduler(env.scheduler_config());
    let report = waiter.await.unwrap().unwrap();
    assert_eq!(report.status, WorkflowStatus::Succeeded, "{report:?}");
    let started = report.tasks["a"].started_at.expect("a ran");
    assert!(
        started >= not_before,
        "started {started} before {not_before}"
    );
    assert!(
        report.created_at.unwrap() >= not_before,
        "a delayed workflow's created_at is its start"
    );
    assert_eq!(Metrics::get(&s.metrics.engine.workflows_started), 1);
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduled_workflow_can_be_cancelled_and_its_submitter_hears_it() {
    let mut env = Env::new().await;
    let mut config = env.scheduler_config();
    config.http_addr = Some("127.0.0.1:0".parse().unwrap());
    let s = env.scheduler(config);
    env.builtin_worker("w");
    let tomorrow = (chrono::Utc::now() + chrono::Duration::days(1))
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let waiter = tokio::spawn({
        let (c, tomorrow) = (env.client.clone(), tomorrow.clone());
        async move {
            c.submit_and_wait(
                json!({"id": "someday", "not_before": tomorrow, "tasks": [
                    {"id": "a", "type": "echo", "input": 1}
                ]}),
                DEADLINE,
            )
            .await
        }
    });
    wait_until_async("the workflow to be scheduled", || {
        let c = env.client.clone();
        async move {
            c.status("someday", DEADLINE).await.unwrap().status == WorkflowStatus::Scheduled
        }
    })
    .await;
    // The list says when it starts.
    wait_until("the endpoint listens", || s.http.get().is_some()).await;
    let (code, _, body) = http_get(*s.http.get().unwrap(), "/api/workflows?status=scheduled").await;
    assert_eq!(code, 200, "{body}");
    let page: serde_json::Value = serde_json::from_str(&body).unwrap();
    let listed = &page["workflows"][0];
    assert_eq!(listed["workflow_id"], "someday", "{page}");
    assert_eq!(
        chrono::DateTime::parse_from_rfc3339(listed["not_before"].as_str().unwrap()).unwrap(),
        chrono::DateTime::parse_from_rfc3339(&tomorrow).unwrap(),
    );
    let cancelled = env.client.cancel("someday", DEADLINE).await.unwrap();
    assert_eq!(cancelled.status, WorkflowStatus::Cancelled);
    let outcome = waiter.await.unwrap().unwrap();
    assert_eq!(outcome.status, WorkflowStatus::Cancelled, "{outcome:?}");
    let status = env.client.status("someday", DEADLINE).await.unwrap();
    assert_eq!(status.status, WorkflowStatus::Cancelled);
    assert_eq!(Metrics::get(&s.metrics.engine.tasks_dispatched), 0);
    // A start more than 366 days ahead is refused.
    let far = env
        .client
        .submit_and_wait(
            json!({"id": "too-far", "not_before": "2999-01-01T00:00:00Z", "tasks": [
                {"id": "a", "type": "echo"}
            ]}),
            DEADLINE,
        )
        .await
        .unwrap();
    assert_eq!(far.status, WorkflowStatus::Rejected);
    assert_eq!(far.errors[0].code, "invalid_delay");
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_with_a_delay_runs_that_long_after_its_dependency_and_not_before() {
    let mut env = Env::new().await;
    let _s = env.scheduler(env.scheduler_config());
    env.builtin_worker("w");
    let report = env
        .client
        .submit_and_wait(
            json!({"id": "poll", "tasks": [
                {"id": "a", "type": "echo", "input": 1},
                {"id": "b", "type": "echo", "depends_on": ["a"], "delay_ms": 1000, "input": 2}
            ]}),
            DEADLINE,
        )
        .await
        .unwrap();
    assert_eq!(report.status, WorkflowStatus::Succeeded, "{report:?}");
    let a_done = report.tasks["a"].finished_at.unwrap();
    let b_started = report.tasks["b"].started_at.unwrap();
    assert!(
        b_started >= a_done + chrono::Duration::milliseconds(1000),
        "b started {b_started}, a finished {a_done}"
    );
    env.finish().await;
}
