//! Time limits a request carries (issue 17): `expires_at`, after which a
//! request not yet taken is rejected `expired` rather than run late, and
//! `deadline_ms`, after which a running workflow ends `failed`.

use crate::support::{DEADLINE, Env, wait_until};
use serde_json::json;
use std::sync::{
    Arc,
    atomic::{AtomicUsize, Ordering},
};
use warren_scheduler::Metrics;
use warren_shared::wire::{TaskState, WorkflowStatus};
use warren_worker::Registry;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_taken_after_its_expiry_is_rejected_expired() {
    let mut env = Env::new().await;
    // Published before any scheduler runs: it waits in the broker, and
    // its expiry passes meanwhile.
    let expires = chrono::Utc::now() - chrono::Duration::milliseconds(1);
    let waiter = tokio::spawn({
        let c = env.client.clone();
        async move {
            c.submit_and_wait(
                json!({"id": "stale", "expires_at": expires.to_rfc3339(), "tasks": [
                    {"id": "a", "type": "echo", "input": 1}
                ]}),
                DEADLINE,
            )
            .await
        }
    });
    let s = env.scheduler(env.scheduler_config());
    env.builtin_worker("w");
    let report = waiter.await.unwrap().unwrap();
    assert_eq!(report.status, WorkflowStatus::Rejected, "{report:?}");
    assert_eq!(report.errors.len(), 1);
    assert_eq!(report.errors[0].code, "expired");
    assert_eq!(
        Metrics::get(&s.metrics.engine.tasks_dispatched),
        0,
        "not run late"
    );
    // One whose expiry is ahead runs.
    let later = chrono::Utc::now() + chrono::Duration::hours(1);
    let fresh = env
        .client
        .submit_and_wait(
            json!({"id": "fresh", "expires_at": later.to_rfc3339(), "tasks": [
                {"id": "a", "type": "echo", "input": 1}
            ]}),
            DEADLINE,
        )
        .await
        .unwrap();
    assert_eq!(fresh.status, WorkflowStatus::Succeeded, "{fresh:?}");
    env.finish().await;
}

/// Counts its drops: a handler future holding one was stopped.
struct Dropped(Arc<AtomicUsize>);

impl Drop for Dropped {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workflow_past_its_deadline_fails_and_its_running_task_is_stopped() {
    let mut env = Env::new().await;
    let (started, stopped) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let s = env.scheduler(env.scheduler_config());
    let mut registry = Registry::with_builtins();
    // `hang` runs until something stops it.
    let (on_start, on_stop) = (started.clone(), stopped.clone());
    registry.register("hang", move |_ctx| {
        on_start.fetch_add(1, Ordering::SeqCst);
        let guard = Dropped(on_stop.clone());
        async move {
            let _guard = guard;
            std::future::pending::<()>().await;
            Ok(json!(null))
        }
    });
    env.worker(registry, &["default"], 2, "w");
    let report = env
        .client
        .submit_and_wait(
            json!({"id": "slow", "deadline_ms": 300, "tasks": [
                {"id": "a", "type": "hang", "input": 1},
                {"id": "b", "type": "echo", "depends_on": ["a"]}
            ]}),
            DEADLINE,
        )
        .await
        .unwrap();
    assert_eq!(report.status, WorkflowStatus::Failed, "{report:?}");
    assert_eq!(report.errors[0].code, "deadline");
    assert!(
        report.error.as_deref().unwrap().contains("300 ms"),
        "{report:?}"
    );
    assert_eq!(report.tasks["a"].state, TaskState::Cancelled);
    assert_eq!(report.tasks["b"].state, TaskState::Cancelled);
    assert_eq!(
        started.load(Ordering::SeqCst),
        1,
        "a ran until its deadline"
    );
    assert_eq!(Metrics::get(&s.metrics.engine.deadlines_passed), 1);
    wait_until("the worker to stop the running task", || {
        stopped.load(Ordering::SeqCst) == 1
    })
    .await;
    env.finish().await;
}
