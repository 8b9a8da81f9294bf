//! The memory budget's bombs (h): a backlog within the budget (queued in
//! the store, and past the line's bound waiting in the broker), control
//! requests never held behind waiting submissions, a waiting and a queued
//! submission cancelled.
use super::child::*;
use crate::support::{DEADLINE, Env};
use lapin::{options::QueueDeclareOptions, types::FieldTable};
use serde_json::{Value, json};
use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};
use warren_shared::wire::WorkflowStatus;

/// How soon a bomb must be answered.
/// What a [`Sampler`] saw of the budget's gauges.
#[derive(Debug, Default)]
struct Sampled {
    samples: AtomicU64,
    /// Most active tasks seen.
    active_max: AtomicU64,
    /// Most active tasks seen while more than one workflow ran (one
    /// workflow larger than the budget runs alone).
    shared_max: AtomicU64,
    /// Most requests seen waiting.
    waiting_max: AtomicU64,
}

/// Samples the budget's gauges of `/metrics` every 10 ms until stopped.
struct Sampler {
    stop: Arc<AtomicBool>,
    seen: Arc<Sampled>,
    join: tokio::task::JoinHandle<()>,
}

impl Sampler {
    fn start(http: SocketAddr) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Sampled::default());
        let join = tokio::spawn({
            let (stop, seen) = (stop.clone(), seen.clone());
            async move {
                while !stop.load(Ordering::Relaxed) {
                    if let Ok((200, _, body)) = try_get(http, "/metrics").await {
                        let gauge = |name| metric_in(&body, name).map(|v| v as u64);
                        if let (Some(active), Some(waiting), Some(running)) = (
                            gauge("warren_active_tasks"),
                            gauge("warren_requests_waiting"),
                            gauge("warren_workflows_running"),
                        ) {
                            seen.active_max.fetch_max(active, Ordering::Relaxed);
                            if running > 1 {
                                seen.shared_max.fetch_max(active, Ordering::Relaxed);
                            }
                            seen.waiting_max.fetch_max(waiting, Ordering::Relaxed);
                            seen.samples.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        });
        Sampler { stop, seen, join }
    }

    fn active_max(&self) -> u64 {
        self.seen.active_max.load(Ordering::Relaxed)
    }

    fn waiting_max(&self) -> u64 {
        self.seen.waiting_max.load(Ordering::Relaxed)
    }

    /// Stops sampling and returns what it saw.
    async fn finish(self) -> Arc<Sampled> {
        self.stop.store(true, Ordering::Relaxed);
        self.join.await.unwrap();
        self.seen
    }
}

/// Waits until the sampler saw requests waiting and the active tasks
/// near the budget.
async fn backlog_seen(sampler: &Sampler, budget: u64) {
    let deadline = Instant::now() + DEADLINE;
    while sampler.waiting_max() == 0 || sampler.active_max() < budget * 8 / 10 {
        assert!(
            Instant::now() < deadline,
            "no backlog seen: at most {} active, {} waiting",
            sampler.active_max(),
            sampler.waiting_max()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// (h) The memory budget: with `WARREN_MAX_ACTIVE_TASKS=50`,
/// `WARREN_MAX_QUEUED_WORKFLOWS=5` and no worker, 20 workflows of 10 tasks
/// and one of 60: beyond the budget 5 wait queued in the store and the rest
/// in the broker (also across a restart), then all succeed once a worker
/// runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bomb_h_a_backlog_stays_within_the_budget_then_completes() {
    let mut env = Env::new().await;
    let budget = 50u64;
    let vars = [
        ("WARREN_MAX_ACTIVE_TASKS", "50"),
        ("WARREN_MAX_QUEUED_WORKFLOWS", "5"),
    ];
    let logs = tempfile::tempdir().unwrap();
    let s = ChildScheduler::start(&env, &logs, &vars).await;
    assert!(
        s.metric("warren_active_tasks").await.is_some(),
        "the scheduler serves no warren_active_tasks gauge"
    );
    let sampler = Sampler::start(s.http);
    let mut waits = Vec::new();
    let workflows: Vec<(String, usize)> = (0..20)
        .map(|i| (format!("bomb-h-{i}"), 10))
        .chain([("bomb-h-large".to_owned(), 60)])
        .collect();
    for (id, n) in &workflows {
        let tasks: Vec<Value> = (0..*n)
            .map(|t| json!({"id": format!("t{t}"), "type": "echo", "input": t}))
            .collect();
        let client = env.client.clone();
        let request = json!({"id": id, "tasks": tasks});
        waits.push(tokio::spawn(async move {
            client.submit_and_wait(request, 4 * DEADLINE).await
        }));
    }
    backlog_seen(&sampler, budget).await;
    // Samples for a while longer, then a crash and a restart with the
    // backlog waiting: the new scheduler keeps the budget too.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let seen = sampler.finish().await;
    eprintln!("bomb h: {seen:?}");
    let active = seen.active_max.load(Ordering::Relaxed);
    assert!(active <= budget, "{active} active tasks, budget {budget}");
    let rss_before = s.peak_rss_mb();
    s.kill();
    let mut s = ChildScheduler::start(&env, &logs, &vars).await;
    let sampler = Sampler::start(s.http);
    backlog_seen(&sampler, budget).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Then a worker: everything completes, the budget still kept.
    env.builtin_worker("w");
    for w in waits {
        let r = w.await.unwrap().unwrap();
        assert_eq!(r.status, WorkflowStatus::Succeeded, "{r:?}");
    }
    // Past the budget only while the workflow larger than it ran alone.
    let seen = sampler.finish().await;
    eprintln!("bomb h after a restart: {seen:?}");
    let shared = seen.shared_max.load(Ordering::Relaxed);
    assert!(
        shared <= budget,
        "{shared} active tasks of several workflows after a restart"
    );
    assert!(seen.active_max.load(Ordering::Relaxed) <= 60);
    ordinary(&env).await;
    eprintln!("bomb h: peak RSS before the restart {rss_before:.0} MB");
    assert!(rss_before < MAX_RSS_MB);
    s.assert_bounded("h");
    s.kill();
    env.finish().await;
}

/// (h') Control requests while submissions wait for the budget: with
/// `WARREN_MAX_ACTIVE_TASKS=50` full of workflows that cannot progress
/// (no worker) and more submissions waiting than the requests' prefetch,
/// a `status` and a `cancel` (which would make room) are still answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bomb_h_control_requests_are_not_held_behind_waiting_submissions() {
    let mut env = Env::new().await;
    env.track_queue("held");
    let logs = tempfile::tempdir().unwrap();
    let vars = [
        ("WARREN_MAX_ACTIVE_TASKS", "50"),
        ("WARREN_MAX_QUEUED_WORKFLOWS", "5"),
    ];
    let mut s = ChildScheduler::start(&env, &logs, &vars).await;
    let tasks = |queue: &str| -> Vec<Value> {
        (0..10)
            .map(|t| json!({"id": format!("t{t}"), "type": "echo", "queue": queue}))
            .collect()
    };
    env.client
        .submit(json!({"id": "bomb-h-held", "tasks": tasks("held")}))
        .await
        .unwrap();
    dispatched(&env, "bomb-h-held", "t0").await;
    // 3 more fit (priority 0 fills 82 % of the budget), 5 are queued, 92
    // wait: more than the requests the broker hands over at once (the
    // requests prefetch, 64).
    let mut waits = Vec::new();
    for i in 0..100 {
        let client = env.client.clone();
        let request = json!({"id": format!("bomb-h-{i}"), "tasks": tasks("default")});
        waits.push(tokio::spawn(async move {
            client.submit_and_wait(request, 4 * DEADLINE).await
        }));
    }
    // Until the scheduler holds all it may of them and the rest wait in
    // the broker's queue, ahead of the control requests below.
    let conn = warren_shared::amqp::connect(&env.amqp.addr, "bomb h'")
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    let workflows = env.amqp.topology().workflows();
    let deadline = Instant::now() + DEADLINE;
    loop {
        let waiting = s.metric("warren_requests_waiting").await.unwrap_or(0.0);
        let queued = ch
            .queue_declare(
                workflows.as_str().into(),
                QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap()
            .message_count();
        if waiting > 0.0 && queued > 0 {
            eprintln!(
                "bomb h': {waiting} requests waiting in the scheduler, {queued} in the broker"
            );
            break;
        }
        assert!(Instant::now() < deadline, "the submissions did not wait");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    warren_shared::amqp::close(&conn, "looked").await;
    let started = Instant::now();
    let status = env.client.status("bomb-h-held", ANSWER).await;
    eprintln!("bomb h': status answered in {:?}", started.elapsed());
    assert_eq!(status.unwrap().status, WorkflowStatus::Running);
    let cancelled = env.client.cancel("bomb-h-held", ANSWER).await.unwrap();
    assert_eq!(cancelled.status, WorkflowStatus::Cancelled);
    env.builtin_worker("w");
    for w in waits {
        let r = w.await.unwrap().unwrap();
        assert_eq!(r.status, WorkflowStatus::Succeeded, "{r:?}");
    }
    ordinary(&env).await;
    s.assert_bounded("h'");
    s.kill();
    env.finish().await;
}

/// (h'') A cancel of a submission held in the scheduler for room in the
/// line of queued workflows takes hold: the submission is taken at once and
/// cancelled, instead of the cancel answering `not_found` and the workflow
/// running later anyway; so does a cancel of a queued one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bomb_h_a_waiting_submission_can_be_cancelled() {
    let mut env = Env::new().await;
    env.track_queue("held");
    let logs = tempfile::tempdir().unwrap();
    let vars = [
        ("WARREN_MAX_ACTIVE_TASKS", "10"),
        ("WARREN_MAX_QUEUED_WORKFLOWS", "1"),
    ];
    let mut s = ChildScheduler::start(&env, &logs, &vars).await;
    let tasks = |queue: &str| -> Vec<Value> {
        (0..10)
            .map(|t| json!({"id": format!("t{t}"), "type": "echo", "queue": queue}))
            .collect()
    };
    env.client
        .submit(json!({"id": "bomb-h2-held", "tasks": tasks("held")}))
        .await
        .unwrap();
    dispatched(&env, "bomb-h2-held", "t0").await;
    env.client
        .submit(json!({"id": "bomb-h2-queued", "tasks": tasks("held")}))
        .await
        .unwrap();
    env.client
        .submit(json!({"id": "bomb-h2-waits", "tasks": tasks("held")}))
        .await
        .unwrap();
    let deadline = Instant::now() + DEADLINE;
    while s.metric("warren_requests_waiting").await.unwrap_or(0.0) < 1.0 {
        assert!(Instant::now() < deadline, "the submission did not wait");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let cancelled = env.client.cancel("bomb-h2-waits", ANSWER).await.unwrap();
    assert_eq!(cancelled.status, WorkflowStatus::Cancelled, "{cancelled:?}");
    let again = env.client.status("bomb-h2-waits", ANSWER).await.unwrap();
    assert_eq!(again.status, WorkflowStatus::Cancelled);
    let queued = env.client.status("bomb-h2-queued", ANSWER).await.unwrap();
    assert_eq!(queued.status, WorkflowStatus::Queued, "{queued:?}");
    let cancelled = env.client.cancel("bomb-h2-queued", ANSWER).await.unwrap();
    assert_eq!(cancelled.status, WorkflowStatus::Cancelled, "{cancelled:?}");
    let held = env.client.cancel("bomb-h2-held", ANSWER).await.unwrap();
    assert_eq!(held.status, WorkflowStatus::Cancelled);
    env.builtin_worker("w");
    ordinary(&env).await;
    s.assert_bounded("h''");
    s.kill();
    env.finish().await;
}
