//! A result the broker nacks is published again, not answered by
//! requeueing its task: the task runs once. (A quorum queue nacks what it
//! is sent while it elects a new leader, after a node of a cluster is
//! lost; the chaos program's `--cluster` runs show it.)
//!
//! Here the nacks come from a queue of the test's own bound to the
//! results exchange with no room and `x-overflow: reject-publish`: the
//! broker nacks every message routed to it, even when another queue (the
//! scheduler's) takes it. Once the test deletes that queue, the worker's
//! next try is confirmed and the task acked.

use crate::support::{DEADLINE, Env, Log, recording, wait_until_async};
use lapin::{
    Confirmation,
    options::{BasicPublishOptions, ConfirmSelectOptions, QueueBindOptions, QueueDeclareOptions},
    types::{AMQPValue, FieldTable},
};
use serde_json::json;
use warren_shared::{topology::PARTITIONS, wire::WorkflowStatus};

/// Messages of `queue` delivered and not yet acked, from rabbitmqctl.
async fn unacked(queue: String) -> u64 {
    tokio::task::spawn_blocking(move || {
        let out = std::process::Command::new("rabbitmqctl")
            .args(["-q", "list_queues", "name", "messages_unacknowledged"])
            .output()
            .expect("rabbitmqctl is installed with RabbitMQ");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .find_map(|l| {
                let mut cols = l.split_whitespace();
                (cols.next() == Some(queue.as_str())).then(|| cols.next()?.parse().ok())?
            })
            .unwrap_or(0)
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn a_nacked_result_is_published_again_and_its_task_runs_once() {
    let mut env = Env::new().await;
    let topology = env.amqp.topology();
    let conn = env.amqp.connect("test: nacker").await.unwrap();
    let ch = conn.create_channel().await.unwrap();
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    topology.declare(&ch).await.unwrap();
    let mut args = FieldTable::default();
    args.insert("x-max-length".into(), AMQPValue::LongLongInt(0));
    args.insert(
        "x-overflow".into(),
        AMQPValue::LongString("reject-publish".into()),
    );
    let nacker = ch
        .queue_declare(
            "".into(),
            QueueDeclareOptions {
                exclusive: true,
                ..Default::default()
            },
            args,
        )
        .await
        .unwrap();
    // Every key a worker's result may carry: "" for the shared results
    // queue, a partition queue's name on PostgreSQL; and one of its own.
    let keys = ["".to_owned(), "probe".to_owned()]
        .into_iter()
        .chain((0..PARTITIONS).map(|p| topology.partition_queue(p)));
    for key in keys {
        ch.queue_bind(
            nacker.name().clone(),
            topology.results().as_str().into(),
            key.as_str().into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    }
    // The set-up nacks: a probe only it receives is refused.
    let probe = ch
        .basic_publish(
            topology.results().as_str().into(),
            "probe".into(),
            BasicPublishOptions::default(),
            b"probe",
            warren_shared::amqp::json_properties(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    assert!(matches!(probe, Confirmation::Nack(_)), "{probe:?}");

    let log = Log::default();
    let _s = env.scheduler(env.scheduler_config());
    env.worker(recording(&log, "w"), &["default"], 4, "w");
    let report = env
        .client
        .submit_and_wait(
            json!({"id": "nacked", "tasks": [{"id": "a", "type": "record", "input": 1}]}),
            DEADLINE,
        )
        .await
        .unwrap();
    // The scheduler's queue took the result; the worker, nacked, holds
    // the task and publishes the result again.
    assert_eq!(report.status, WorkflowStatus::Succeeded, "{report:?}");
    let tasks = topology.task_queue("default");
    assert_eq!(unacked(tasks.clone()).await, 1, "the task is held, unacked");
    warren_shared::amqp::close(&conn, "nacker gone").await;
    wait_until_async("the task acked", || {
        let tasks = tasks.clone();
        async move { unacked(tasks).await == 0 }
    })
    .await;
    assert_eq!(log.lines(), ["nacked/a/1@w"], "one run, no requeue");
    env.finish().await;
}
