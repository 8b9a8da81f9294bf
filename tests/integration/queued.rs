//! A backlog past the working set (issue 19): submissions the memory
//! budget has no room for are accepted `queued`, committed with their
//! definition, answered by `status` and listed, kept across a restart, and
//! started in priority order as room frees, so an urgent workflow
//! submitted after the whole backlog goes first.

use crate::support::{DEADLINE, Env, http_get, store_released, wait_until, wait_until_async};
use serde_json::{Value, json};
use warren_scheduler::Metrics;
use warren_shared::wire::{TaskState, WorkflowReport, WorkflowStatus};

fn wide(id: &str, n: usize, priority: u8) -> Value {
    let tasks: Vec<Value> = (0..n)
        .map(|t| json!({"id": format!("t{t}"), "type": "echo", "input": t}))
        .collect();
    json!({"id": id, "priority": priority, "tasks": tasks})
}

/// When the first of a report's tasks started.
fn first_start(r: &WorkflowReport) -> chrono::DateTime<chrono::Utc> {
    r.tasks
        .values()
        .filter_map(|t| t.started_at)
        .min()
        .expect("a task ran")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_past_the_working_set_is_queued_kept_across_a_restart_and_overtaken() {
    let mut env = Env::new().await;
    let mut config = env.scheduler_config();
    // Priority 0 may fill 82 % of 20 tasks: three workflows of 5.
    config.bounds.max_active_tasks = 20;
    let s = env.scheduler(config.clone());
    let mut waits = Vec::new();
    for i in 0..10 {
        let c = env.client.clone();
        let request = wide(&format!("low-{i}"), 5, 0);
        waits.push(tokio::spawn(async move {
            c.submit_and_wait(request, 4 * DEADLINE).await
        }));
    }
    wait_until("seven workflows queued", || {
        Metrics::get(&s.metrics.workflows_queued) == 7
    })
    .await;
    assert_eq!(Metrics::get(&s.metrics.workflows_running), 3);
    // Every request is answerable: the queued ones say so and count their
    // tasks, all pending.
    let mut queued = Vec::new();
    for i in 0..10 {
        let r = env
            .client
            .status(&format!("low-{i}"), DEADLINE)
            .await
            .unwrap();
        match r.status {
            WorkflowStatus::Running => {}
            WorkflowStatus::Queued => {
                assert_eq!(r.task_counts.get(&TaskState::Pending), Some(&5), "{r:?}");
                queued.push(r.workflow_id);
            }
            other => panic!("low-{i} is {other:?}"),
        }
    }
    assert_eq!(queued.len(), 7);
    // A crash: the line is restored from the store.
    s.kill().await;
    store_released(&env).await;
    config.http_addr = Some("127.0.0.1:0".parse().unwrap());
    let s = env.scheduler(config);
    wait_until("the line restored", || {
        Metrics::get(&s.metrics.workflows_queued) == 7
    })
    .await;
    // The list reads the store: the rows are queued there.
    wait_until("the endpoint listens", || s.http.get().is_some()).await;
    let (code, _, body) = http_get(*s.http.get().unwrap(), "/api/workflows?status=queued").await;
    assert_eq!(code, 200, "{body}");
    let page: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(page["workflows"].as_array().unwrap().len(), 7, "{page}");
    // An urgent workflow after the whole backlog starts at once.
    let urgent = tokio::spawn({
        let c = env.client.clone();
        async move { c.submit_and_wait(wide("urgent", 2, 9), 4 * DEADLINE).await }
    });
    wait_until_async("the urgent workflow runs", || {
        let c = env.client.clone();
        async move { c.status("urgent", DEADLINE).await.unwrap().status == WorkflowStatus::Running }
    })
    .await;
    assert_eq!(Metrics::get(&s.metrics.workflows_queued), 7);

    env.builtin_worker("w");
    let urgent = urgent.await.unwrap().unwrap();
    assert_eq!(urgent.status, WorkflowStatus::Succeeded, "{urgent:?}");
    let mut reports = Vec::new();
    for w in waits {
        let r = w.await.unwrap().unwrap();
        assert_eq!(r.status, WorkflowStatus::Succeeded, "{r:?}");
        reports.push(r);
    }
    for r in reports.iter().filter(|r| queued.contains(&r.workflow_id)) {
        assert!(
            first_start(&urgent) <= first_start(r),
            "{} started before the urgent workflow",
            r.workflow_id
        );
        assert!(
            r.created_at.unwrap() >= urgent.created_at.unwrap(),
            "a queued workflow's created_at becomes its start"
        );
    }
    assert_eq!(Metrics::get(&s.metrics.workflows_queued), 0);
    s.stop().await;
    env.finish().await;
}
