//! Dispatch windows that follow the workers' capacity (no
//! `WARREN_DISPATCH_WINDOW`): a queue served by one heartbeating worker of
//! concurrency 8 has 8 tasks in flight, not the fixed 200; a second worker
//! of 8 makes the scheduler dispatch more without any task ending. A queue that also has a consumer sending no heartbeats
//! keeps the fixed window.

use crate::support::{Env, Log, add_gated, wait_until, wait_until_async};
use futures_lite::StreamExt;
use lapin::options::{BasicConsumeOptions, BasicQosOptions, QueueDeclareOptions};
use serde_json::json;
use std::{sync::Arc, time::Duration};
use tokio::sync::Semaphore;
use warren_scheduler::Metrics;
use warren_shared::wire::{WorkerState, WorkflowStatus};
use warren_worker::Registry;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_window_follows_the_capacity_of_the_heartbeating_workers() {
    let mut env = Env::new().await;
    let scheduler = env.scheduler(env.scheduler_config());
    let log = Log::default();
    let gate = Arc::new(Semaphore::new(0));
    let held = |worker: &str| {
        let mut registry = Registry::with_builtins();
        add_gated(&mut registry, "held", &log, worker, Some(&gate));
        registry
    };
    env.worker(held("w1"), &["default"], 8, "w1");
    heard(&env, &["w1"]).await;

    let run = submit_held(&env, "wide");
    // The worker holds eight, none waits in the broker, and the scheduler
    // keeps the other 32. With a fixed window of 200 all 40 would be
    // dispatched at once.
    wait_until("the worker runs eight", || log.lines().len() == 8).await;
    let metrics = &scheduler.metrics;
    wait_until("a dispatch of the queue", || in_flight(metrics) >= 8).await;
    assert_eq!(in_flight(metrics), 8, "capacity 8, window 8");
    assert_eq!(window(metrics), 8);
    assert_eq!(
        Metrics::get(&metrics.engine.tasks_dispatched),
        8,
        "32 wait in the scheduler"
    );
    let depth = QueueDepth::open(&env).await;
    assert_eq!(depth.get().await, 0, "none waits in the broker");

    // A second worker of 8 slots: capacity 16, window 16. The scheduler
    // dispatches eight more at once, though no task has ended.
    env.worker(held("w2"), &["default"], 8, "w2");
    wait_until("the window grows to 16", || window(metrics) == 16).await;
    wait_until("16 in flight", || in_flight(metrics) == 16).await;
    wait_until("sixteen running", || log.lines().len() == 16).await;
    assert_eq!(depth.get().await, 0);
    assert_eq!(Metrics::get(&metrics.engine.tasks_dispatched), 16);

    // Every task then runs, each once.
    gate.add_permits(1_000);
    let report = run.await.unwrap().unwrap();
    assert_eq!(report.status, WorkflowStatus::Succeeded);
    assert_eq!(log.lines().len(), 40);
    assert_eq!(Metrics::get(&metrics.engine.tasks_dispatched), 40);
    depth.close().await;
    scheduler.stop().await;
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_also_consumed_without_heartbeats_keeps_the_fixed_window() {
    let mut env = Env::new().await;
    let scheduler = env.scheduler(env.scheduler_config());
    let log = Log::default();
    let gate = Arc::new(Semaphore::new(0));
    let mut registry = Registry::with_builtins();
    add_gated(&mut registry, "held", &log, "w1", Some(&gate));
    env.worker(registry, &["default"], 2, "w1");
    heard(&env, &["w1"]).await;
    // Then a consumer of another language on the queue the worker
    // declared: it takes up to 5 tasks and sends no heartbeat (nor
    // results: it never acks; its tasks go back to the queue when it
    // closes).
    let queue = warren_shared::Topology::new(env.amqp.namespace.clone()).task_queue("default");
    let silent = env.amqp.connect("silent consumer").await.unwrap();
    let ch = silent.create_channel().await.unwrap();
    ch.basic_qos(5, BasicQosOptions::default()).await.unwrap();
    let mut taken = ch
        .basic_consume(
            queue.as_str().into(),
            "silent".into(),
            BasicConsumeOptions::default(),
            Default::default(),
        )
        .await
        .unwrap();

    let run = submit_held(&env, "mixed");
    // One consumer announces 2 slots, the broker counts two consumers:
    // the window is 200, the fixed one, once they are counted (at once if
    // the count came first, else within 5 s; were it 2, two tasks would
    // be in flight).
    let metrics = &scheduler.metrics;
    wait_until("all 40 dispatched", || {
        Metrics::get(&metrics.engine.tasks_dispatched) == 40
    })
    .await;
    assert_eq!(window(metrics), 200);
    let mut held = 0;
    while held < 5 {
        taken.next().await.unwrap().unwrap();
        held += 1;
    }
    // The silent consumer goes (its five return to the queue); the worker
    // runs everything.
    warren_shared::amqp::close(&silent, "done").await;
    gate.add_permits(1_000);
    let report = run.await.unwrap().unwrap();
    assert_eq!(report.status, WorkflowStatus::Succeeded);
    scheduler.stop().await;
    env.finish().await;
}

/// Waits until the scheduler lists each of `workers` as running.
/// Submits workflow `id` of 40 `held` tasks; the handle gives its outcome.
fn submit_held(
    env: &Env,
    id: &str,
) -> tokio::task::JoinHandle<
    Result<warren_shared::wire::WorkflowReport, warren_producer::ClientError>,
> {
    let tasks: Vec<_> = (0..40)
        .map(|i| json!({"id": format!("t{i}"), "type": "held"}))
        .collect();
    let client = env.client.clone();
    let request = json!({"id": id, "tasks": tasks});
    tokio::spawn(async move {
        client
            .submit_and_wait(request, Duration::from_secs(60))
            .await
    })
}

async fn heard(env: &Env, workers: &[&str]) {
    wait_until_async("the workers heard from", || async {
        let listed = env
            .client
            .workers(Duration::from_secs(5))
            .await
            .unwrap()
            .workers;
        workers.iter().all(|id| {
            listed
                .iter()
                .any(|w| w.heartbeat.worker_id == *id && w.heartbeat.state == WorkerState::Running)
        })
    })
    .await;
}

fn in_flight(m: &Metrics) -> u64 {
    let gauge = m.in_flight.lock().unwrap();
    gauge.get("default").copied().unwrap_or(0)
}

fn window(m: &Metrics) -> u64 {
    let gauge = m.windows.lock().unwrap();
    gauge.get("default").copied().unwrap_or(0)
}

/// The ready messages of the `default` task queue, as the broker counts
/// them.
struct QueueDepth {
    conn: lapin::Connection,
    ch: lapin::Channel,
    queue: String,
}

impl QueueDepth {
    async fn open(env: &Env) -> QueueDepth {
        let conn = env.amqp.connect("window probe").await.unwrap();
        let ch = conn.create_channel().await.unwrap();
        let queue = warren_shared::Topology::new(env.amqp.namespace.clone()).task_queue("default");
        QueueDepth { conn, ch, queue }
    }

    async fn get(&self) -> u32 {
        let passive = QueueDeclareOptions {
            passive: true,
            ..Default::default()
        };
        self.ch
            .queue_declare(self.queue.as_str().into(), passive, Default::default())
            .await
            .unwrap()
            .message_count()
    }

    async fn close(self) {
        warren_shared::amqp::close(&self.conn, "done").await;
    }
}
