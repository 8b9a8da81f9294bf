//! Cancelling workflows and watching their progress.

use crate::support::{DEADLINE, Env, Events, Log, add_gated, wait_until, wait_until_async};
use serde_json::json;
use std::sync::{
    Arc,
    atomic::{AtomicUsize, Ordering},
};
use tokio::sync::Semaphore;
use warren_scheduler::{Metrics, SchedulerConfig};
use warren_shared::wire::{TaskState, WorkflowStatus};
use warren_worker::Registry;

/// Counts handler futures dropped before they finished: a task stopped.
struct DropCount(Arc<AtomicUsize>, bool);

impl Drop for DropCount {
    fn drop(&mut self) {
        if !self.1 {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_stops_running_tasks_and_the_rest_never_starts() {
    let mut env = Env::new().await;
    let scheduler = env.scheduler(env.scheduler_config());
    let (log, stopped) = (Log::default(), Arc::new(AtomicUsize::new(0)));
    let mut registry = Registry::with_builtins();
    add_gated(&mut registry, "record", &log, "w", None);
    // `hang` runs until it is stopped; it counts the stops.
    let counter = stopped.clone();
    registry.register("hang", move |_ctx| {
        let guard = DropCount(counter.clone(), false);
        async move {
            let _guard = guard;
            std::future::pending::<()>().await;
            Ok(json!(null))
        }
    });
    env.worker(registry, &["default"], 4, "w");
    let mut events = Events::bind(&env.amqp, "workflow.c1.*").await;

    let client = env.client.clone();
    let outcome = tokio::spawn(async move {
        client
            .submit_and_wait(
                json!({"id": "c1", "tasks": [
                    {"id": "a", "type": "record"},
                    {"id": "h1", "type": "hang", "depends_on": ["a"]},
                    {"id": "h2", "type": "hang", "depends_on": ["a"]},
                    {"id": "z", "type": "record", "depends_on": ["h1", "h2"]}
                ]}),
                DEADLINE,
            )
            .await
    });
    // Both `hang` tasks are running once the scheduler says so.
    wait_until("h1 and h2 running", || {
        Metrics::get(&scheduler.metrics.engine.tasks_dispatched) == 3
    })
    .await;

    let report = env.client.cancel("c1", DEADLINE).await.unwrap();
    assert_eq!(report.status, WorkflowStatus::Cancelled, "{report:?}");
    assert_eq!(report.tasks["a"].state, TaskState::Succeeded);
    for t in ["h1", "h2", "z"] {
        assert_eq!(report.tasks[t].state, TaskState::Cancelled, "{t}");
    }
    // The submitter's outcome is the cancellation, on reply_to and events.
    let outcome = outcome.await.unwrap().unwrap();
    assert_eq!(outcome.status, WorkflowStatus::Cancelled);
    let (key, _) = events.next().await;
    assert_eq!(key, "workflow.c1.running");
    let (key, body) = events.next().await;
    assert_eq!(key, "workflow.c1.cancelled");
    assert_eq!(body["tasks"]["z"]["state"], "cancelled");
    // Workers were told: both running handlers are stopped, `z` never ran.
    wait_until("both hang tasks stopped", || {
        stopped.load(Ordering::SeqCst) == 2
    })
    .await;
    assert_eq!(log.lines(), vec!["c1/a/1@w"]);

    // Cancelling again, or an ended or unknown workflow, changes nothing.
    let again = env.client.cancel("c1", DEADLINE).await.unwrap();
    assert_eq!(again.status, WorkflowStatus::Cancelled);
    let done = env
        .client
        .submit_and_wait(
            json!({"id": "c2", "tasks": [{"id": "a", "type": "echo"}]}),
            DEADLINE,
        )
        .await
        .unwrap();
    assert_eq!(done.status, WorkflowStatus::Succeeded);
    let not_cancelled = env.client.cancel("c2", DEADLINE).await.unwrap();
    assert_eq!(not_cancelled.status, WorkflowStatus::Succeeded);
    let unknown = env.client.cancel("nope", DEADLINE).await.unwrap();
    assert_eq!(unknown.status, WorkflowStatus::NotFound);
    // Nothing of c1 is left in flight: a status shows it as it ended.
    let status = env.client.status("c1", DEADLINE).await.unwrap();
    assert_eq!(status.status, WorkflowStatus::Cancelled);
    events.close().await;
    scheduler.stop().await;
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_workflows_queued_tasks_do_not_run() {
    let mut env = Env::new().await;
    // A fixed window, so that all five go to the broker's queue (one
    // following the worker's single slot would keep three here).
    let mut config = env.scheduler_config();
    config.dispatch_window = Some(200);
    let scheduler = env.scheduler(config);
    let log = Log::default();
    let gate = Arc::new(Semaphore::new(0));
    let mut registry = Registry::with_builtins();
    add_gated(&mut registry, "gated", &log, "w", Some(&gate));
    // One task at a time: the others wait in the task queue.
    env.worker(registry, &["default"], 1, "w");
    let tasks: Vec<_> = (0..5)
        .map(|i| json!({"id": format!("t{i}"), "type": "gated"}))
        .collect();
    env.client
        .submit(json!({"id": "q1", "tasks": tasks}))
        .await
        .unwrap();
    wait_until("the first task started", || log.lines().len() == 1).await;
    wait_until("all five dispatched", || {
        Metrics::get(&scheduler.metrics.engine.tasks_dispatched) == 5
    })
    .await;
    let report = env.client.cancel("q1", DEADLINE).await.unwrap();
    assert_eq!(report.status, WorkflowStatus::Cancelled);
    // The running task is stopped; the four queued ones are acked unrun
    // once the worker takes them (the gate never opens for them).
    gate.add_permits(10);
    let conn = env.amqp.connect("probe").await.unwrap();
    let ch = conn.create_channel().await.unwrap();
    let queue = warren_shared::Topology::new(env.amqp.namespace.clone()).task_queue("default");
    wait_until_async("the task queue drained", || async {
        let passive = lapin::options::QueueDeclareOptions {
            passive: true,
            ..Default::default()
        };
        let q = ch
            .queue_declare(queue.as_str().into(), passive, Default::default())
            .await
            .unwrap();
        q.message_count() == 0
    })
    .await;
    // Let the worker settle what it holds, then check nothing else ran.
    let ended = env
        .client
        .submit_and_wait(
            json!({"id": "q2", "tasks": [{"id": "after", "type": "echo"}]}),
            DEADLINE,
        )
        .await
        .unwrap();
    assert_eq!(ended.status, WorkflowStatus::Succeeded);
    assert_eq!(log.lines(), vec!["q1/t0/1@w"], "queued tasks must not run");
    warren_shared::amqp::close(&conn, "done").await;
    scheduler.stop().await;
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_events_count_tasks_by_state_while_a_workflow_runs() {
    let mut env = Env::new().await;
    let scheduler = env.scheduler(env.scheduler_config());
    env.builtin_worker("w");
    let mut seen = Vec::new();
    let report = env
        .client
        .submit_and_watch(
            json!({"id": "p1", "tasks": [
                {"id": "a", "type": "sleep", "input": {"ms": 700}},
                {"id": "b", "type": "sleep", "depends_on": ["a"], "input": {"ms": 700}},
                {"id": "c", "type": "sleep", "depends_on": ["b"], "input": {"ms": 700}}
            ]}),
            DEADLINE,
            |p| seen.push(p.clone()),
        )
        .await
        .unwrap();
    assert_eq!(report.status, WorkflowStatus::Succeeded);
    assert!(!seen.is_empty(), "a 2-second workflow reports progress");
    for p in &seen {
        assert_eq!(p.workflow_id, "p1");
        assert_eq!(p.status, WorkflowStatus::Running);
        assert_eq!(p.total, 3);
        assert_eq!(p.tasks.values().sum::<u32>(), 3, "{p:?}");
    }
    // Announced about once a second, not once per change.
    assert!(seen.len() <= 3, "{seen:?}");
    assert!(
        Metrics::get(&scheduler.metrics.messages_published) < 20,
        "progress costs no message per task"
    );
    scheduler.stop().await;
    env.finish().await;
}

/// Registers `kind`: each task counts itself running (`now`, with the most
/// at once in `most`) until the returned gate gives it a permit.
pub fn held(
    registry: &mut Registry,
    kind: &str,
) -> (Arc<AtomicUsize>, Arc<AtomicUsize>, Arc<Semaphore>) {
    let (now, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let gate = Arc::new(Semaphore::new(0));
    let (n, m, g) = (now.clone(), most.clone(), gate.clone());
    registry.register(kind, move |_ctx| {
        let (now, most, gate) = (n.clone(), m.clone(), g.clone());
        async move {
            let running = now.fetch_add(1, Ordering::SeqCst) + 1;
            most.fetch_max(running, Ordering::SeqCst);
            gate.acquire().await.expect("gate open").forget();
            now.fetch_sub(1, Ordering::SeqCst);
            Ok(json!(null))
        }
    });
    (now, most, gate)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_concurrency_holds_across_a_scheduler_restart() {
    let mut env = Env::new().await;
    let first = env.scheduler(env.scheduler_config());
    let mut registry = Registry::with_builtins();
    let (now, most, gate) = held(&mut registry, "held");
    env.worker(registry, &["default"], 10, "w");
    let tasks: Vec<_> = (0..6)
        .map(|i| json!({"id": format!("t{i}"), "type": "held"}))
        .collect();
    let client = env.client.clone();
    let outcome = tokio::spawn(async move {
        client
            .submit_and_wait(
                json!({"id": "capped", "max_concurrency": 2, "tasks": tasks}),
                DEADLINE,
            )
            .await
    });
    wait_until("two tasks running", || now.load(Ordering::SeqCst) == 2).await;
    // A new scheduler on the same store rebuilds the running count.
    first.stop().await;
    let second = env.scheduler(env.scheduler_config());
    for done in 1..=6 {
        gate.add_permits(1);
        wait_until("the next task", || {
            Metrics::get(&second.metrics.engine.results_committed) == done
        })
        .await;
        assert!(most.load(Ordering::SeqCst) <= 2, "limit exceeded");
    }
    let report = outcome.await.unwrap().unwrap();
    assert_eq!(report.status, WorkflowStatus::Succeeded);
    assert_eq!(most.load(Ordering::SeqCst), 2, "the limit was used");
    second.stop().await;
    env.finish().await;
}

/// `charge` is limited to 2 running at once across two workflows; `mail`
/// tasks in the same queue run meanwhile; the limit survives a scheduler
/// restart (the running count is rebuilt from the store).
#[tokio::test]
async fn a_type_limit_holds_across_workflows_and_a_scheduler_restart() {
    let mut env = Env::new().await;
    let config = SchedulerConfig {
        type_limits: vec![("charge".into(), 2)],
        ..env.scheduler_config()
    };
    let first = env.scheduler(config.clone());
    let mails = Arc::new(AtomicUsize::new(0));
    let mut registry = Registry::with_builtins();
    let (now, most, gate) = held(&mut registry, "charge");
    {
        let mails = mails.clone();
        registry.register("mail", move |_ctx| {
            let mails = mails.clone();
            async move {
                mails.fetch_add(1, Ordering::SeqCst);
                Ok(json!(null))
            }
        });
    }
    env.worker(registry, &["default"], 20, "w");
    let mut outcomes = Vec::new();
    for w in ["shop-a", "shop-b"] {
        let mut tasks: Vec<_> = (0..3)
            .map(|i| json!({"id": format!("charge{i}"), "type": "charge"}))
            .collect();
        tasks.extend((0..3).map(|i| json!({"id": format!("mail{i}"), "type": "mail"})));
        let client = env.client.clone();
        outcomes.push(tokio::spawn(async move {
            client
                .submit_and_wait(json!({"id": w, "tasks": tasks}), DEADLINE)
                .await
        }));
    }
    wait_until("two charges running and every mail sent", || {
        now.load(Ordering::SeqCst) == 2 && Metrics::get(&first.metrics.engine.tasks_succeeded) == 6
    })
    .await;
    assert_eq!(mails.load(Ordering::SeqCst), 6);
    first.stop().await;
    let second = env.scheduler(config);
    for done in 1..=6 {
        gate.add_permits(1);
        wait_until("the next charge", || {
            Metrics::get(&second.metrics.engine.tasks_succeeded) == done
                && now.load(Ordering::SeqCst) == (6 - done as usize).min(2)
        })
        .await;
        assert!(most.load(Ordering::SeqCst) <= 2, "limit exceeded");
    }
    for outcome in outcomes {
        let report = outcome.await.unwrap().unwrap();
        assert_eq!(report.status, WorkflowStatus::Succeeded);
    }
    assert_eq!(most.load(Ordering::SeqCst), 2, "the limit was used");
    second.stop().await;
    env.finish().await;
}
