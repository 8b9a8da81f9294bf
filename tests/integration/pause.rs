//! Pausing and resuming task queues and task types: what is paused is not
//! dispatched while everything else flows, a resume releases it, the
//! pause survives a restart, and on PostgreSQL a pause applied through
//! one scheduler holds at the others.

use crate::support::{
    DEADLINE, Env, Log, RunningScheduler, add_gated, http_get, pg_url, recording, wait_until,
    wait_until_async,
};
use serde_json::json;
use std::time::Instant;
use warren_producer::PauseTarget;
use warren_scheduler::{Metrics, SchedulerConfig, pauses::PauseKind, store::StoreLocation};
use warren_shared::wire::{PauseEntry, TaskState, WorkflowStatus};

fn names(entries: &[PauseEntry]) -> Vec<&str> {
    entries.iter().map(|e| e.name.as_str()).collect()
}

fn queue(name: &str) -> PauseTarget {
    PauseTarget::Queue(name.into())
}

/// The state of task `task` of workflow `id`, as the scheduler reports it.
async fn task_state(env: &Env, id: &str, task: &str) -> Option<TaskState> {
    let report = env.client.status(id, DEADLINE).await.unwrap();
    report.tasks.get(task).map(|t| t.state)
}

async fn wait_succeeded(env: &Env, id: &str) {
    wait_until_async(&format!("{id} succeeds"), || async {
        env.client
            .status(id, DEADLINE)
            .await
            .is_ok_and(|r| r.status == WorkflowStatus::Succeeded)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_queue_holds_while_another_flows_and_resume_releases_it() {
    let mut env = Env::new().await;
    let config = SchedulerConfig {
        http_addr: Some("127.0.0.1:0".parse().unwrap()),
        ..env.scheduler_config()
    };
    let scheduler = env.scheduler(config);
    let log = Log::default();
    env.worker(recording(&log, "w"), &["slow", "fast"], 4, "w");
    wait_until("the endpoint listens", || scheduler.http.get().is_some()).await;
    let addr = *scheduler.http.get().unwrap();

    let paused = env.client.pause(&queue("slow"), DEADLINE).await.unwrap();
    assert_eq!(names(&paused.queues), ["slow"]);
    assert!(paused.types.is_empty());
    let again = env.client.pause(&queue("slow"), DEADLINE).await.unwrap();
    assert_eq!(
        again, paused,
        "pausing twice changes nothing, `since` included"
    );

    // `held` is accepted before `flows` (one channel, one queue): by the
    // time `flows` has succeeded, `held`'s tasks have been ready through
    // at least one dispatch.
    env.client
        .submit(json!({"id": "held", "tasks": [
            {"id": "s1", "type": "record", "queue": "slow"},
            {"id": "s2", "type": "record", "queue": "slow"},
            {"id": "f", "type": "record", "queue": "fast"}
        ]}))
        .await
        .unwrap();
    let flows = env
        .client
        .submit_and_wait(
            json!({"id": "flows", "tasks": [{"id": "f", "type": "record", "queue": "fast"}]}),
            DEADLINE,
        )
        .await
        .unwrap();
    assert_eq!(flows.status, WorkflowStatus::Succeeded);
    wait_until_async("held's fast task succeeds", || async {
        task_state(&env, "held", "f").await == Some(TaskState::Succeeded)
    })
    .await;
    for t in ["s1", "s2"] {
        assert_eq!(task_state(&env, "held", t).await, Some(TaskState::Ready));
    }
    assert!(
        !log.contains("held/s"),
        "a task of the paused queue ran: {:?}",
        log.lines()
    );
    assert_eq!(
        Metrics::get(&scheduler.metrics.engine.tasks_dispatched),
        2,
        "only the fast tasks were dispatched"
    );
    // `/metrics` and the status API show the pause.
    let (code, _, metrics) = http_get(addr, "/metrics").await;
    assert_eq!(code, 200);
    assert!(
        metrics.contains("warren_paused{kind=\"queue\",name=\"slow\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("warren_paused_ready_tasks{kind=\"queue\",name=\"slow\"} 2"),
        "{metrics}"
    );
    let (code, _, body) = http_get(addr, "/api/pauses").await;
    assert_eq!(code, 200, "{body}");
    let api: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(api["paused"]["queues"][0]["name"], "slow", "{body}");
    assert_eq!(api["paused"]["types"], json!([]), "{body}");

    let resumed = env.client.resume(&queue("slow"), DEADLINE).await.unwrap();
    assert!(resumed.is_empty(), "{resumed:?}");
    wait_succeeded(&env, "held").await;
    assert!(log.contains("held/s1/1@w") && log.contains("held/s2/1@w"));
    let (_, _, metrics) = http_get(addr, "/metrics").await;
    assert!(!metrics.contains("warren_paused{"), "{metrics}");
    scheduler.stop().await;
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_type_holds_while_other_types_of_its_queue_flow() {
    let mut env = Env::new().await;
    let scheduler = env.scheduler(env.scheduler_config());
    let log = Log::default();
    let mut registry = recording(&log, "w");
    add_gated(&mut registry, "charge", &log, "w", None);
    env.worker(registry, &["default"], 4, "w");
    let paused = env
        .client
        .pause(&PauseTarget::Type("charge".into()), DEADLINE)
        .await
        .unwrap();
    assert_eq!(names(&paused.types), ["charge"]);

    // The charges come first in the queue; the records behind them flow.
    let tasks: Vec<_> = (0..3)
        .map(|i| json!({"id": format!("c{i}"), "type": "charge", "duration_hint_ms": 1000}))
        .chain((0..3).map(|i| json!({"id": format!("r{i}"), "type": "record"})))
        .collect();
    env.client
        .submit(json!({"id": "mixed", "tasks": tasks}))
        .await
        .unwrap();
    wait_until("the records ran", || {
        (0..3).all(|i| log.contains(&format!("mixed/r{i}/")))
    })
    .await;
    wait_until_async("the records succeeded", || async {
        let report = env.client.status("mixed", DEADLINE).await.unwrap();
        (0..3).all(|i| report.tasks[&format!("r{i}")].state == TaskState::Succeeded)
    })
    .await;
    assert!(
        !log.contains("mixed/c"),
        "a paused type ran: {:?}",
        log.lines()
    );
    assert_eq!(Metrics::get(&scheduler.metrics.engine.tasks_dispatched), 3);
    let usage = scheduler.metrics.paused.lock().unwrap().clone();
    assert_eq!(usage.len(), 1);
    assert_eq!((usage[0].kind, usage[0].held), (PauseKind::Type, 3));

    env.client
        .resume(&PauseTarget::Type("charge".into()), DEADLINE)
        .await
        .unwrap();
    wait_succeeded(&env, "mixed").await;
    scheduler.stop().await;
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pause_survives_a_scheduler_restart() {
    let mut env = Env::new().await;
    let first = env.scheduler(env.scheduler_config());
    let log = Log::default();
    env.worker(recording(&log, "w"), &["slow", "fast"], 4, "w");
    env.client.pause(&queue("slow"), DEADLINE).await.unwrap();
    env.client
        .submit(json!({"id": "across", "tasks": [
            {"id": "s", "type": "record", "queue": "slow"},
            {"id": "f", "type": "record", "queue": "fast"}
        ]}))
        .await
        .unwrap();
    wait_until_async("the fast task succeeds", || async {
        task_state(&env, "across", "f").await == Some(TaskState::Succeeded)
    })
    .await;
    first.stop().await;

    // The new scheduler restores `across` with its slow task ready, and the
    // stored pause before its first dispatch; `after`, accepted after the
    // restore, shows that it has dispatched since.
    let second = env.scheduler(env.scheduler_config());
    let after = env
        .client
        .submit_and_wait(
            json!({"id": "after", "tasks": [{"id": "f", "type": "record", "queue": "fast"}]}),
            DEADLINE,
        )
        .await
        .unwrap();
    assert_eq!(after.status, WorkflowStatus::Succeeded);
    assert_eq!(
        task_state(&env, "across", "s").await,
        Some(TaskState::Ready)
    );
    assert!(!log.contains("across/s"), "{:?}", log.lines());
    assert_eq!(
        Metrics::get(&second.metrics.engine.tasks_dispatched),
        1,
        "only `after` was dispatched"
    );
    let resumed = env.client.resume(&queue("slow"), DEADLINE).await.unwrap();
    assert!(resumed.is_empty());
    wait_succeeded(&env, "across").await;
    second.stop().await;
    env.finish().await;
}

/// Starts `n` schedulers of `config` and waits until each owns partitions
/// and runs its broker session (so that each has read the pauses already,
/// and learns of a new one only from the store at its balance tick).
async fn peers(env: &Env, n: usize, config: &SchedulerConfig) -> Vec<RunningScheduler> {
    let peers: Vec<_> = (0..n).map(|_| env.scheduler(config.clone())).collect();
    wait_until("every scheduler runs its session", || {
        peers.iter().all(|p| {
            Metrics::get(&p.metrics.active) == 1 && Metrics::get(&p.metrics.broker_connected) == 1
        })
    })
    .await;
    peers
}

/// True when `p` holds queue `name` paused (its engine's view).
fn holds(p: &RunningScheduler, name: &str) -> bool {
    p.metrics
        .paused
        .lock()
        .unwrap()
        .iter()
        .any(|u| u.kind == PauseKind::Queue && u.name == name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pause_applied_by_one_peer_holds_at_the_other() {
    let mut env = Env::new().await;
    env.store = StoreLocation::Postgres(pg_url());
    let config = env.scheduler_config();
    let peers = peers(&env, 2, &config).await;
    let log = Log::default();
    env.worker(recording(&log, "w"), &["slow", "fast"], 8, "w");

    // Whichever scheduler takes the request applies it to the store; the
    // other reads it at its next balance tick (every 100 ms).
    env.client.pause(&queue("slow"), DEADLINE).await.unwrap();
    let answered = Instant::now();
    wait_until("both schedulers hold the queue", || {
        peers.iter().all(|p| holds(p, "slow"))
    })
    .await;
    let after = answered.elapsed();
    eprintln!("the pause held at both schedulers {after:?} after the answer");
    assert!(
        after.as_secs() < 5,
        "the bound is a balance tick: {after:?}"
    );

    // Workflows in both schedulers' partitions.
    let ids: Vec<String> = (0..16).map(|i| format!("both-{i}")).collect();
    for id in &ids {
        env.client
            .submit(json!({"id": id, "tasks": [
                {"id": "s", "type": "record", "queue": "slow"},
                {"id": "f", "type": "record", "queue": "fast"}
            ]}))
            .await
            .unwrap();
    }
    for id in &ids {
        wait_until_async("the fast task succeeds", || async {
            task_state(&env, id, "f").await == Some(TaskState::Succeeded)
        })
        .await;
    }
    for p in &peers {
        assert!(
            Metrics::get(&p.metrics.engine.tasks_dispatched) > 0,
            "a scheduler that owned none of the workflows"
        );
    }
    assert!(
        !log.lines().iter().any(|l| l.contains("/s/")),
        "a task of the paused queue ran: {:?}",
        log.lines()
    );
    let dispatched: u64 = peers
        .iter()
        .map(|p| Metrics::get(&p.metrics.engine.tasks_dispatched))
        .sum();
    assert_eq!(dispatched, ids.len() as u64, "only the fast tasks");

    env.client.resume(&queue("slow"), DEADLINE).await.unwrap();
    for id in &ids {
        wait_succeeded(&env, id).await;
    }
    for p in peers {
        p.stop().await;
    }
    env.finish().await;
}
