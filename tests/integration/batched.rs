//! Messages of several results (`warren.results`, docs/protocol.md, Task
//! result): a busy worker sends them, the scheduler applies each element
//! as if it had come alone, and what cannot be read as a whole is
//! dead-lettered whole.

use crate::{
    forgery::{dead_letters, next_reason, publish},
    support::{DEADLINE, Env, Log, add_gated, wait_until},
};
use futures_lite::StreamExt;
use lapin::options::{BasicConsumeOptions, QueueBindOptions, QueueDeclareOptions};
use serde_json::{Value, json};
use std::{collections::BTreeSet, sync::Arc};
use tokio::sync::Semaphore;
use warren_scheduler::Metrics;
use warren_shared::{
    topology::PARTITIONS,
    wire::{TaskState, WorkflowStatus},
};
use warren_worker::Registry;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_that_come_together_go_in_one_message_and_all_apply() {
    const N: usize = 40;
    let mut env = Env::new().await;
    let log = Log::default();
    let gate = Arc::new(Semaphore::new(0));
    let s = env.scheduler(env.scheduler_config());
    let mut registry = Registry::with_builtins();
    add_gated(&mut registry, "gated", &log, "w", Some(&gate));
    env.worker(registry, &["default"], N as u16, "w");
    let ns = env.amqp.namespace.clone();
    let conn = env.amqp.connect("spy").await.unwrap();
    let ch = warren_shared::amqp::confirm_channel(&conn).await.unwrap();

    // A copy of every result message, whichever queue it is routed to (the
    // shared one, or a partition's on PostgreSQL).
    let spy = ch
        .queue_declare(
            "".into(),
            QueueDeclareOptions {
                exclusive: true,
                ..Default::default()
            },
            Default::default(),
        )
        .await
        .unwrap()
        .name()
        .to_string();
    let results = format!("{ns}.results");
    let keys =
        std::iter::once(String::new()).chain((0..PARTITIONS).map(|p| format!("{results}.{p}")));
    for key in keys {
        ch.queue_bind(
            spy.as_str().into(),
            results.as_str().into(),
            key.as_str().into(),
            QueueBindOptions::default(),
            Default::default(),
        )
        .await
        .unwrap();
    }
    let mut copies = ch
        .basic_consume(
            spy.as_str().into(),
            "".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            Default::default(),
        )
        .await
        .unwrap();

    let tasks: Vec<Value> = (0..N)
        .map(|i| json!({"id": format!("t{i}"), "type": "gated", "input": i}))
        .collect();
    let waiter = tokio::spawn({
        let c = env.client.clone();
        async move {
            c.submit_and_wait(json!({"id": "together", "tasks": tasks}), DEADLINE)
                .await
        }
    });
    wait_until("every task to run", || log.lines().len() == N).await;
    // All finish at once: their results come faster than a confirm.
    gate.add_permits(N);
    let report = waiter.await.unwrap().unwrap();
    assert_eq!(report.status, WorkflowStatus::Succeeded, "{report:?}");
    for i in 0..N {
        assert_eq!(report.tasks[&format!("t{i}")].output, Some(json!(i)));
    }

    let (mut messages, mut batches) = (0, 0);
    let mut seen = BTreeSet::new();
    while seen.len() < N {
        let d = tokio::time::timeout(DEADLINE, copies.next())
            .await
            .expect("every result copied in time")
            .unwrap()
            .unwrap();
        messages += 1;
        let body: Value = serde_json::from_slice(&d.data).unwrap();
        let kind = d.properties.kind().as_ref().map(|k| k.to_string());
        let results = match body {
            Value::Array(results) => {
                batches += 1;
                assert_eq!(kind.as_deref(), Some("warren.results"));
                assert!(results.len() > 1, "one result is never wrapped");
                results
            }
            one => {
                assert_eq!(kind.as_deref(), Some("warren.result"));
                vec![one]
            }
        };
        for r in results {
            assert!(
                seen.insert(r["task_id"].as_str().unwrap().to_owned()),
                "each result once: {r}"
            );
        }
    }
    assert!(
        batches >= 1 && messages < N,
        "{N} results in {messages} messages, {batches} of several"
    );
    assert_eq!(Metrics::get(&s.metrics.engine.results_committed), N as u64);
    warren_shared::amqp::close(&conn, "done").await;
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_of_results_unusable_whole_is_dead_lettered_and_a_bad_element_alone() {
    let mut env = Env::new().await;
    let log = Log::default();
    let gate = Arc::new(Semaphore::new(0));
    let s = env.scheduler(env.scheduler_config());
    let mut registry = Registry::with_builtins();
    add_gated(&mut registry, "gated", &log, "w", Some(&gate));
    env.worker(registry, &["default"], 2, "w");
    let ns = env.amqp.namespace.clone();
    let conn = env.amqp.connect("hostile").await.unwrap();
    let ch = warren_shared::amqp::confirm_channel(&conn).await.unwrap();
    let mut dead = dead_letters(&ch, &ns).await;

    let waiter = tokio::spawn({
        let c = env.client.clone();
        async move {
            c.submit_and_wait(
                json!({"id": "held", "tasks": [{"id": "a", "type": "gated", "input": "real"}]}),
                DEADLINE,
            )
            .await
        }
    });
    wait_until("a to run", || log.contains("held/a/1")).await;

    let props = || warren_shared::amqp::json_properties().with_type("warren.results".into());
    let results = format!("{ns}.results");
    let too_many = format!("[{}]", vec!["{}"; 1001].join(","));
    // An element without its attempt's token, beside one that is no result.
    let mixed = json!([7, {"workflow_id": "held", "task_id": "a", "attempt": 1,
        "status": "succeeded", "output": "forged", "worker": "x"}])
    .to_string();
    for body in ["[]", "[{}, ", too_many.as_str(), mixed.as_str()] {
        publish(&ch, &results, "", body.as_bytes(), props()).await;
    }
    let mut reasons = Vec::new();
    for _ in 0..5 {
        reasons.push(next_reason(&mut dead).await);
    }
    for part in [
        "with none in it",
        "undecodable message of results",
        "a message of 1001 results, over the protocol's 1000",
        "undecodable result",
        "not applied",
    ] {
        assert!(
            reasons.iter().any(|r| r.contains(part)),
            "{part}: {reasons:?}"
        );
    }
    assert_eq!(Metrics::get(&s.metrics.engine.results_forged), 1);
    let running = env.client.status("held", DEADLINE).await.unwrap();
    assert_eq!(running.tasks["a"].state, TaskState::Running, "{running:?}");

    gate.add_permits(1);
    let report = waiter.await.unwrap().unwrap();
    assert_eq!(report.status, WorkflowStatus::Succeeded, "{report:?}");
    assert_eq!(report.tasks["a"].output, Some(json!("real")));
    warren_shared::amqp::close(&conn, "done").await;
    env.finish().await;
}
