//! What a client with a foothold on the vhost cannot make the scheduler do
//! (docs/security.md): apply a result it forged, write an answer into a
//! queue it names as `reply_to`, or pass a request off as a forward.

use crate::support::{DEADLINE, Env, Log, add_gated, pg_url, wait_until};
use futures_lite::StreamExt;
use lapin::{
    BasicProperties, Channel, Consumer,
    options::{BasicConsumeOptions, BasicPublishOptions, QueueDeclareOptions},
    types::AMQPValue,
};
use serde_json::json;
use std::sync::Arc;
use tokio::sync::Semaphore;
use warren_scheduler::{Metrics, store::StoreLocation};
use warren_shared::topology::{PARTITIONS, partition_of};
use warren_shared::wire::{HEADER_FORWARDED, TaskState, WorkflowStatus};
use warren_worker::Registry;

/// Consumes `{ns}.dead` (before anything lands there).
pub(crate) async fn dead_letters(ch: &Channel, ns: &str) -> Consumer {
    ch.basic_consume(
        format!("{ns}.dead").as_str().into(),
        "".into(),
        BasicConsumeOptions {
            no_ack: true,
            ..Default::default()
        },
        Default::default(),
    )
    .await
    .unwrap()
}

/// The next dead letter's reason.
pub(crate) async fn next_reason(dead: &mut Consumer) -> String {
    let d = tokio::time::timeout(DEADLINE, dead.next())
        .await
        .expect("a dead letter in time")
        .unwrap()
        .unwrap();
    match d
        .properties
        .headers()
        .as_ref()
        .and_then(|h| h.inner().get("warren-dead-reason").cloned())
    {
        Some(AMQPValue::LongString(s)) => s.to_string(),
        other => panic!("warren-dead-reason: {other:?}"),
    }
}

pub(crate) async fn publish(
    ch: &Channel,
    exchange: &str,
    key: &str,
    body: &[u8],
    props: BasicProperties,
) {
    let confirm = ch
        .basic_publish(
            exchange.into(),
            key.into(),
            BasicPublishOptions {
                mandatory: true,
                ..Default::default()
            },
            body,
            props,
        )
        .await
        .unwrap()
        .await
        .unwrap();
    assert_eq!(confirm.take_message(), None, "published to a queue");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_result_published_before_the_real_one_changes_nothing() {
    let mut env = Env::new().await;
    let log = Log::default();
    let gate = Arc::new(Semaphore::new(0));
    let s = env.scheduler(env.scheduler_config());
    let mut registry = Registry::with_builtins();
    add_gated(&mut registry, "gated", &log, "w", Some(&gate));
    env.worker(registry, &["default"], 2, "w");
    let ns = env.amqp.namespace.clone();
    let conn = env.amqp.connect("forger").await.unwrap();
    let ch = warren_shared::amqp::confirm_channel(&conn).await.unwrap();
    let mut dead = dead_letters(&ch, &ns).await;

    let waiter = tokio::spawn({
        let c = env.client.clone();
        async move {
            c.submit_and_wait(
                json!({"id": "forge", "tasks": [
                    {"id": "a", "type": "gated", "input": {"url": "https://example.org/real"}},
                    {"id": "b", "type": "echo", "depends_on": ["a"], "input": "${a.output.url}"}
                ]}),
                DEADLINE,
            )
            .await
        }
    });
    wait_until("a to run", || log.contains("forge/a/1")).await;
    // While the real attempt runs, results for it: without a token, with a
    // made-up one, and one that claims the token field with another type's
    // worth of bytes. Each would have fed `b` the forger's URL.
    for token in [None, Some("0".repeat(64)), Some("x".repeat(100_000))] {
        let mut forged = json!({"workflow_id": "forge", "task_id": "a", "attempt": 1,
            "status": "succeeded", "output": {"url": "https://evil.example/"}, "worker": "w"});
        if let Some(t) = token {
            forged["token"] = json!(t);
        }
        publish(
            &ch,
            &format!("{ns}.results"),
            "",
            forged.to_string().as_bytes(),
            warren_shared::amqp::json_properties(),
        )
        .await;
    }
    for _ in 0..3 {
        let reason = next_reason(&mut dead).await;
        assert!(
            reason.contains("not applied") && reason.contains("task `a`"),
            "{reason}"
        );
    }
    assert_eq!(Metrics::get(&s.metrics.engine.results_forged), 3);
    let running = env.client.status("forge", DEADLINE).await.unwrap();
    assert_eq!(running.tasks["a"].state, TaskState::Running, "{running:?}");
    assert_eq!(running.tasks["b"].state, TaskState::Pending);

    gate.add_permits(1);
    let report = waiter.await.unwrap().unwrap();
    assert_eq!(report.status, WorkflowStatus::Succeeded, "{report:?}");
    assert_eq!(
        report.tasks["a"].output,
        Some(json!({"url": "https://example.org/real"}))
    );
    assert_eq!(
        report.tasks["b"].output,
        Some(json!("https://example.org/real"))
    );
    assert_eq!(Metrics::get(&s.metrics.engine.results_committed), 2);
    warren_shared::amqp::close(&conn, "done").await;
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_to_naming_another_roles_queue_is_refused_whole() {
    let mut env = Env::new().await;
    let s = env.scheduler(env.scheduler_config());
    env.builtin_worker("w");
    let ns = env.amqp.namespace.clone();
    let conn = env.amqp.connect("deputy").await.unwrap();
    let ch = warren_shared::amqp::confirm_channel(&conn).await.unwrap();
    let mut dead = dead_letters(&ch, &ns).await;
    let victim = format!("{ns}.tasks.victim");
    env.track_queue("victim");
    warren_shared::Topology::new(ns.clone())
        .declare_task_queue(&ch, "victim")
        .await
        .unwrap();

    // A submission and a status request, both answering into a task queue.
    let props = || {
        warren_shared::amqp::json_properties()
            .with_reply_to(victim.as_str().into())
            .with_correlation_id("c".into())
    };
    let workflows = format!("{ns}.workflows");
    publish(
        &ch,
        &workflows,
        "",
        json!({"id": "deputy", "tasks": [{"id": "a", "type": "echo", "input": 1}]})
            .to_string()
            .as_bytes(),
        props(),
    )
    .await;
    publish(
        &ch,
        &workflows,
        "control",
        json!({"control": "status", "workflow_id": "deputy"})
            .to_string()
            .as_bytes(),
        props(),
    )
    .await;
    for _ in 0..2 {
        let reason = next_reason(&mut dead).await;
        assert!(
            reason.contains(&format!("reply_to `{victim}` refused")),
            "{reason}"
        );
    }
    assert_eq!(Metrics::get(&s.metrics.replies_refused), 2);
    // Not applied: the workflow was never accepted; nothing was written to
    // the victim queue.
    let status = env.client.status("deputy", DEADLINE).await.unwrap();
    assert_eq!(status.status, WorkflowStatus::NotFound);
    assert_eq!(Metrics::get(&s.metrics.engine.workflows_accepted), 0);
    let q = ch
        .queue_declare(
            victim.as_str().into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            Default::default(),
        )
        .await
        .unwrap();
    assert_eq!(q.message_count(), 0, "nothing reached the victim queue");

    // A named reply queue under the documented prefix is answered.
    let mine = format!("{ns}.reply.mine");
    ch.queue_declare(
        mine.as_str().into(),
        QueueDeclareOptions {
            exclusive: true,
            ..Default::default()
        },
        Default::default(),
    )
    .await
    .unwrap();
    let mut replies = ch
        .basic_consume(
            mine.as_str().into(),
            "".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            Default::default(),
        )
        .await
        .unwrap();
    publish(
        &ch,
        &workflows,
        "control",
        json!({"control": "status", "workflow_id": "deputy"})
            .to_string()
            .as_bytes(),
        warren_shared::amqp::json_properties().with_reply_to(mine.as_str().into()),
    )
    .await;
    let answer = tokio::time::timeout(DEADLINE, replies.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&answer.data).unwrap();
    assert_eq!(report["status"], "not_found");
    warren_shared::amqp::close(&conn, "done").await;
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forward_that_did_not_come_from_a_scheduler_is_no_request() {
    let mut env = Env::new().await;
    // Partition queues exist on a PostgreSQL store only.
    env.store = StoreLocation::Postgres(pg_url());
    let s = env.scheduler(env.scheduler_config());
    env.builtin_worker("w");
    let ns = env.amqp.namespace.clone();
    let t = warren_shared::Topology::new(ns.clone());
    let conn = env.amqp.connect("forwarder").await.unwrap();
    let ch = warren_shared::amqp::confirm_channel(&conn).await.unwrap();
    let mut dead = dead_letters(&ch, &ns).await;
    let forward = |id: &str| {
        let mut headers = lapin::types::FieldTable::default();
        headers.insert(
            HEADER_FORWARDED.into(),
            AMQPValue::LongString("request".into()),
        );
        let body = json!({"id": id, "tasks": [{"id": "a", "type": "echo", "input": 1}]});
        let queue = t.partition_queue(partition_of(id, PARTITIONS));
        (
            queue,
            body.to_string(),
            warren_shared::amqp::json_properties().with_headers(headers),
        )
    };
    // A first workflow: the session has declared the partition queues.
    let first = json!({"id": "first", "tasks": [{"id": "a", "type": "echo", "input": 1}]});
    let report = env.client.submit_and_wait(first, DEADLINE).await.unwrap();
    assert_eq!(report.status, WorkflowStatus::Succeeded);
    // As a worker can: through the results exchange, keyed by the
    // partition queue's name. Read as the result it is not.
    let (queue, body, props) = forward("not-forwarded");
    publish(&ch, &t.results(), &queue, body.as_bytes(), props).await;
    let reason = next_reason(&mut dead).await;
    assert!(reason.contains("undecodable result"), "{reason}");
    let status = env.client.status("not-forwarded", DEADLINE).await.unwrap();
    assert_eq!(status.status, WorkflowStatus::NotFound);
    // As a scheduler does: through the default exchange. Applied.
    let (queue, body, props) = forward("forwarded");
    publish(&ch, "", &queue, body.as_bytes(), props).await;
    wait_until("the forwarded workflow to be accepted", || {
        Metrics::get(&s.metrics.engine.workflows_accepted) == 2
    })
    .await;
    warren_shared::amqp::close(&conn, "done").await;
    env.finish().await;
}
