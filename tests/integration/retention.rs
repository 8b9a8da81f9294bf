//! Retention (issue 19, point 1) against the real broker and store: an
//! ended workflow is deleted, with everything it held, once older than
//! `WARREN_RETENTION`; a running one is not, however old; the store's
//! metrics say what was pruned and how large it is; and the id of a
//! pruned workflow is new again (the duplicate-submission window is the
//! retention).

use crate::support::{
    DEADLINE, Env, Log, add_gated, committed_results, http_get, wait_until_async,
};
use serde_json::json;
use std::{sync::Arc, time::Duration};
use tokio::sync::Semaphore;
use warren_shared::wire::WorkflowStatus;
use warren_worker::Registry;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ended_workflow_is_pruned_past_retention_and_a_running_one_is_not() {
    let mut env = Env::new().await;
    let mut config = env.scheduler_config();
    config.retention = Some(Duration::from_secs(1));
    config.http_addr = Some("127.0.0.1:0".parse().unwrap());
    let scheduler = env.scheduler(config);
    let gate = Arc::new(Semaphore::new(0));
    let mut registry = Registry::with_builtins();
    add_gated(&mut registry, "gated", &Log::default(), "w", Some(&gate));
    env.worker(registry, &["default"], 4, "w");

    let chain = json!({"id": "kept-then-pruned", "tasks": [
        {"id": "a", "type": "echo", "input": 1},
        {"id": "b", "type": "echo", "depends_on": ["a"], "input": "${a.output}"}
    ]});
    let report = env
        .client
        .submit_and_wait(chain.clone(), DEADLINE)
        .await
        .unwrap();
    assert_eq!(report.status, WorkflowStatus::Succeeded);
    // A workflow that runs for longer than the retention.
    let client = env.client.clone();
    let held = tokio::spawn(async move {
        client
            .submit_and_wait(
                json!({"id": "held", "tasks": [{"id": "g", "type": "gated"}]}),
                DEADLINE * 2,
            )
            .await
    });
    // The ended one goes, with its tasks and results.
    wait_until_async("the ended workflow is pruned", || async {
        env.client
            .status("kept-then-pruned", DEADLINE)
            .await
            .is_ok_and(|r| r.status == WorkflowStatus::NotFound)
    })
    .await;
    assert!(committed_results(&env, "kept-then-pruned").await.is_empty());
    let addr = *scheduler.http.get().unwrap();
    let (code, _, metrics) = http_get(addr, "/metrics").await;
    assert_eq!(code, 200);
    let pruned = metrics
        .lines()
        .find_map(|l| l.strip_prefix("warren_store_pruned_total "))
        .and_then(|n| n.parse::<u64>().ok());
    assert!(pruned.is_some_and(|n| n >= 1), "{metrics}");
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("warren_store_bytes ")),
        "{metrics}"
    );
    // The store's rows: the held workflow, and nothing ended any more.
    let rows: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("warren_store_workflows{"))
        .collect();
    assert_eq!(
        rows,
        ["warren_store_workflows{status=\"running\"} 1"],
        "{metrics}"
    );
    // Held past the retention (the prune above ran after its second),
    // the running workflow is still there, and then ends.
    let status = env.client.status("held", DEADLINE).await.unwrap();
    assert_eq!(status.status, WorkflowStatus::Running, "{status:?}");
    gate.add_permits(1);
    let held = held.await.unwrap().unwrap();
    assert_eq!(held.status, WorkflowStatus::Succeeded);
    // Past the retention, the id is new again: it runs again.
    let again = env.client.submit_and_wait(chain, DEADLINE).await.unwrap();
    assert_eq!(again.status, WorkflowStatus::Succeeded);
    assert_eq!(committed_results(&env, "kept-then-pruned").await.len(), 2);
    scheduler.stop().await;
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warren_prune_deletes_what_ended_before_a_time_and_nothing_running() {
    let mut env = Env::new().await;
    // No retention: nothing goes by itself.
    let scheduler = env.scheduler(env.scheduler_config());
    let gate = Arc::new(Semaphore::new(0));
    let mut registry = Registry::with_builtins();
    add_gated(&mut registry, "gated", &Log::default(), "w", Some(&gate));
    env.worker(registry, &["default"], 4, "w");
    for i in 0..3 {
        let wf = json!({"id": format!("ended-{i}"), "tasks": [{"id": "a", "type": "echo"}]});
        let r = env.client.submit_and_wait(wf, DEADLINE).await.unwrap();
        assert_eq!(r.status, WorkflowStatus::Succeeded);
    }
    let client = env.client.clone();
    let held = tokio::spawn(async move {
        client
            .submit_and_wait(
                json!({"id": "running", "tasks": [{"id": "g", "type": "gated"}]}),
                DEADLINE * 2,
            )
            .await
    });
    wait_until_async("the held workflow runs", || async {
        env.client
            .status("running", DEADLINE)
            .await
            .is_ok_and(|r| r.status == WorkflowStatus::Running)
    })
    .await;
    // Older than a day: nothing; older than nothing: every ended one.
    let ns = env.amqp.namespace.clone();
    let prune = |older: &'static str| {
        let ns = ns.clone();
        tokio::task::spawn_blocking(move || {
            crate::cli::warren(&ns, &["prune", "--older-than", older])
        })
    };
    let (code, out, err) = prune("1d").await.unwrap();
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("pruned 0 workflows"), "{out}");
    let (code, out, err) = prune("0s").await.unwrap();
    assert_eq!(code, 0, "{err}");
    assert!(
        out.starts_with("pruned 3 workflows that ended before "),
        "{out}"
    );
    for i in 0..3 {
        let r = env
            .client
            .status(&format!("ended-{i}"), DEADLINE)
            .await
            .unwrap();
        assert_eq!(r.status, WorkflowStatus::NotFound);
    }
    let r = env.client.status("running", DEADLINE).await.unwrap();
    assert_eq!(r.status, WorkflowStatus::Running);
    gate.add_permits(1);
    assert_eq!(
        held.await.unwrap().unwrap().status,
        WorkflowStatus::Succeeded
    );
    scheduler.stop().await;
    env.finish().await;
}
