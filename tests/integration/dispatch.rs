//! Dispatch: priorities through the window, competing workers, dead letters.

use crate::support::{DEADLINE, Env, Log, add_gated, recording, wait_until};
use futures_lite::StreamExt;
use lapin::options::{BasicConsumeOptions, BasicPublishOptions};
use serde_json::json;
use std::{collections::HashMap, sync::Arc};
use tokio::sync::Semaphore;
use warren_scheduler::Metrics;
use warren_shared::wire::WorkflowStatus;
use warren_worker::Registry;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn priority_nine_overtakes_an_earlier_priority_zero_backlog() {
    let mut env = Env::new().await;
    let log = Log::default();
    let gate = Arc::new(Semaphore::new(0));
    let mut config = env.scheduler_config();
    config.dispatch_window = Some(1);
    let _s = env.scheduler(config);
    let mut registry = recording(&log, "w");
    add_gated(&mut registry, "first", &log, "w", Some(&gate));
    env.worker(registry, &["default"], 1, "w");
    let low = tokio::spawn({
        let c = env.client.clone();
        async move {
            c.submit_and_wait(
                json!({"id": "low", "priority": 0, "tasks": [
                    {"id": "l1", "type": "first"}, {"id": "l2", "type": "record"},
                    {"id": "l3", "type": "record"}, {"id": "l4", "type": "record"}
                ]}),
                DEADLINE,
            )
            .await
        }
    });
    wait_until("the first low task to run", || log.contains("low/l1")).await;
    let high = tokio::spawn({
        let c = env.client.clone();
        async move {
            c.submit_and_wait(
                json!({"id": "high", "priority": 9, "tasks": [{"id": "h", "type": "record"}]}),
                DEADLINE,
            )
            .await
        }
    });
    // Accepted while the backlog waits behind the window.
    loop {
        let s = env.client.status("high", DEADLINE).await.unwrap();
        if s.status == WorkflowStatus::Running {
            break;
        }
        assert_eq!(s.status, WorkflowStatus::NotFound);
    }
    gate.add_permits(1);
    assert_eq!(
        low.await.unwrap().unwrap().status,
        WorkflowStatus::Succeeded
    );
    assert_eq!(
        high.await.unwrap().unwrap().status,
        WorkflowStatus::Succeeded
    );
    let lines = log.lines();
    assert_eq!(lines[0], "low/l1/1@w");
    assert_eq!(
        lines[1], "high/h/1@w",
        "priority 9 went before the earlier priority-0 tasks: {lines:?}"
    );
    assert_eq!(lines.len(), 5);
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn competing_workers_share_a_queue_and_lose_nothing() {
    let mut env = Env::new().await;
    let log = Log::default();
    let _s = env.scheduler(env.scheduler_config());
    // Each worker's tasks wait until both workers have started one, so the
    // work is provably shared (each worker holds at most its prefetch of 2).
    let started: Arc<std::sync::Mutex<HashMap<String, usize>>> = Arc::default();
    let both = Arc::new(tokio::sync::Notify::new());
    for w in ["w1", "w2"] {
        let mut registry = recording(&log, w);
        let (log, started, both, me) = (log.clone(), started.clone(), both.clone(), w.to_owned());
        registry.register("shared", move |ctx| {
            let (log, started, both, me) = (log.clone(), started.clone(), both.clone(), me.clone());
            async move {
                let ready = {
                    let mut s = started.lock().unwrap();
                    *s.entry(me.clone()).or_default() += 1;
                    s.len() == 2
                };
                if ready {
                    both.notify_waiters();
                } else {
                    let notified = both.notified();
                    if started.lock().unwrap().len() < 2 {
                        notified.await;
                    }
                }
                log.push(format!(
                    "{}/{}/{}@{me}",
                    ctx.workflow_id, ctx.task_id, ctx.attempt
                ));
                Ok(ctx.input)
            }
        });
        env.worker(registry, &["default"], 2, w);
    }
    let n = 60;
    let tasks: Vec<_> = (0..n)
        .map(|i| json!({"id": format!("t{i}"), "type": "shared", "input": i}))
        .collect();
    let report = env
        .client
        .submit_and_wait(json!({"id": "fan", "tasks": tasks}), DEADLINE)
        .await
        .unwrap();
    assert_eq!(report.status, WorkflowStatus::Succeeded);
    let lines = log.lines();
    assert_eq!(lines.len(), n, "every task executed exactly once here");
    let mut by_worker: HashMap<&str, usize> = HashMap::new();
    let mut ids: Vec<&str> = Vec::new();
    for l in &lines {
        let (task, worker) = l.split_once('@').unwrap();
        *by_worker.entry(worker).or_default() += 1;
        ids.push(task);
    }
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), n, "no task lost or run twice");
    assert!(by_worker["w1"] > 0 && by_worker["w2"] > 0, "{by_worker:?}");
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undecodable_results_and_tasks_are_dead_lettered_with_a_reason() {
    let mut env = Env::new().await;
    let s = env.scheduler(env.scheduler_config());
    env.builtin_worker("w");
    let conn = warren_shared::amqp::connect(&env.amqp.addr, "test")
        .await
        .unwrap();
    let ch = warren_shared::amqp::confirm_channel(&conn).await.unwrap();
    let ns = env.amqp.namespace.clone();
    // The worker may not have declared its queue yet.
    warren_shared::Topology::new(ns.clone())
        .declare_task_queue(&ch, "default")
        .await
        .unwrap();
    // Consume the dead-letter queue before anything can land there.
    let mut dead = ch
        .basic_consume(
            format!("{ns}.dead").as_str().into(),
            "".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            Default::default(),
        )
        .await
        .unwrap();
    for (exchange, key, body) in [
        (
            format!("{ns}.results"),
            "".to_string(),
            b"not json".to_vec(),
        ),
        (
            format!("{ns}.tasks"),
            "default".to_string(),
            b"{\"garbage\": true}".to_vec(),
        ),
    ] {
        let confirmation = ch
            .basic_publish(
                exchange.as_str().into(),
                key.as_str().into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..Default::default()
                },
                &body,
                warren_shared::amqp::json_properties(),
            )
            .await
            .unwrap()
            .await
            .unwrap();
        assert_eq!(confirmation.take_message(), None, "published to a queue");
    }
    let mut reasons = Vec::new();
    for _ in 0..2 {
        let d = tokio::time::timeout(DEADLINE, dead.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        let headers = d.properties.headers().clone().unwrap();
        let text = |key: &str| match headers.inner().get(key) {
            Some(lapin::types::AMQPValue::LongString(s)) => s.to_string(),
            other => panic!("header {key}: {other:?}"),
        };
        reasons.push(format!(
            "{} {}",
            text("warren-dead-queue"),
            text("warren-dead-reason")
        ));
    }
    reasons.sort();
    assert!(
        reasons[0].contains(&format!("{ns}.results")) && reasons[0].contains("undecodable result"),
        "{reasons:?}"
    );
    assert!(
        reasons[1].contains(&format!("{ns}.tasks.default"))
            && reasons[1].contains("undecodable task message"),
        "{reasons:?}"
    );
    assert_eq!(Metrics::get(&s.metrics.engine.dead_lettered), 1);
    warren_shared::amqp::close(&conn, "done").await;
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_shutdown_finishes_in_flight_work_and_requeues_the_rest() {
    let mut env = Env::new().await;
    let log = Log::default();
    let _s = env.scheduler(env.scheduler_config());
    // On the first worker, `hold` tasks log their start and wait for a permit.
    let gate = Arc::new(Semaphore::new(0));
    let mut first = recording(&log, "w1");
    add_gated(&mut first, "hold", &log, "w1", Some(&gate));
    let mut config = env.worker_config(&["default"], 2, "w1");
    config.shutdown_grace = std::time::Duration::from_millis(300);
    let (stop, join) = env.stoppable_worker(first, config);
    let waiter = tokio::spawn({
        let c = env.client.clone();
        async move {
            c.submit_and_wait(
                json!({"id": "drain", "tasks": [
                    {"id": "a", "type": "hold"}, {"id": "b", "type": "hold"}
                ]}),
                DEADLINE,
            )
            .await
        }
    });
    wait_until("both tasks to start on w1", || {
        log.contains("drain/a/1") && log.contains("drain/b/1")
    })
    .await;
    stop.cancel();
    // One task finishes within the grace period; the other never does.
    gate.add_permits(1);
    tokio::time::timeout(DEADLINE, join)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    // The abandoned task was requeued: a second worker completes it.
    let mut second = Registry::with_builtins();
    add_gated(&mut second, "hold", &log, "w2", None);
    env.worker(second, &["default"], 2, "w2");
    let report = waiter.await.unwrap().unwrap();
    assert_eq!(report.status, WorkflowStatus::Succeeded, "{report:?}");
    let on_w2: Vec<String> = log
        .lines()
        .into_iter()
        .filter(|l| l.ends_with("@w2"))
        .collect();
    assert_eq!(
        on_w2.len(),
        1,
        "exactly the abandoned task ran again: {:?}",
        log.lines()
    );
    let finished_on_w1 = if on_w2[0].starts_with("drain/a/") {
        "b"
    } else {
        "a"
    };
    assert_eq!(report.tasks[finished_on_w1].worker.as_deref(), Some("w1"));
    assert_eq!(
        report.tasks[if finished_on_w1 == "a" { "b" } else { "a" }]
            .worker
            .as_deref(),
        Some("w2")
    );
    env.finish().await;
}

/// Weighted pools: two workers of 1 and 3 slots on one queue. Neither ever
/// runs more than its slots, and the larger runs most of the work (its
/// share follows its capacity; 3/4 when tasks take equally long).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_with_more_slots_gets_more_work_and_never_more_than_its_slots() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let mut env = Env::new().await;
    let _s = env.scheduler(env.scheduler_config());
    let mut peaks = Vec::new();
    for (id, slots) in [("small", 1u16), ("large", 3)] {
        let (now, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let mut registry = Registry::with_builtins();
        {
            let (now, most) = (now.clone(), most.clone());
            registry.register("work", move |_ctx| {
                let (now, most) = (now.clone(), most.clone());
                async move {
                    most.fetch_max(now.fetch_add(1, Ordering::SeqCst) + 1, Ordering::SeqCst);
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                    now.fetch_sub(1, Ordering::SeqCst);
                    Ok(json!(null))
                }
            });
        }
        env.worker(registry, &["default"], slots, id);
        peaks.push((slots, most));
    }
    let tasks: Vec<_> = (0..60)
        .map(|i| json!({"id": format!("t{i}"), "type": "work"}))
        .collect();
    let report = env
        .client
        .submit_and_wait(json!({"id": "pools", "tasks": tasks}), DEADLINE)
        .await
        .unwrap();
    assert_eq!(report.status, WorkflowStatus::Succeeded);
    for (slots, most) in &peaks {
        assert_eq!(
            most.load(Ordering::SeqCst),
            usize::from(*slots),
            "slots used, never exceeded"
        );
    }
    let ran = |w: &str| {
        report
            .tasks
            .values()
            .filter(|t| t.worker.as_deref() == Some(w))
            .count()
    };
    let (small, large) = (ran("small"), ran("large"));
    assert_eq!(small + large, 60);
    assert!(large >= 2 * small, "large ran {large}, small {small}");
    env.finish().await;
}
