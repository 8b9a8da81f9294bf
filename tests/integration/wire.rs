//! The wire as a non-Rust client sees it: task message properties, a
//! hand-written result, the outcome by reply_to and on the events exchange.

use crate::support::{DEADLINE, Env, Events};
use futures_lite::StreamExt;
use lapin::{
    options::{BasicAckOptions, BasicConsumeOptions, BasicPublishOptions},
    types::{AMQPValue, FieldTable},
};
use serde_json::{Value, json};
use warren_shared::{Topology, wire::WorkflowStatus};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_amqp_worker_and_event_observer() {
    let mut env = Env::new().await;
    env.track_queue("raw");
    let _s = env.scheduler(env.scheduler_config());
    let ns = env.amqp.namespace.clone();
    let topology = Topology::new(ns.clone());
    let conn = warren_shared::amqp::connect(&env.amqp.addr, "plain client")
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    let mut events = Events::bind(&env.amqp, "workflow.#").await;
    // A worker for queue `raw` that is just an AMQP consumer.
    topology.declare_task_queue(&ch, "raw").await.unwrap();
    let mut tasks = ch
        .basic_consume(
            topology.task_queue("raw").as_str().into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();

    let waiter = tokio::spawn({
        let c = env.client.clone();
        async move {
            c.submit_and_wait(
                json!({"id": "rawwf", "priority": 7, "input": {"k": 41}, "tasks": [
                    {"id": "t", "type": "py.add_one", "queue": "raw", "input": {"k": "${workflow.input.k}"}, "timeout_ms": 1000}
                ]}),
                DEADLINE,
            )
            .await
        }
    });

    let d = tokio::time::timeout(DEADLINE, tasks.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let p = &d.properties;
    assert_eq!(p.priority(), &Some(7));
    assert_eq!(
        p.message_id().as_ref().map(|m| m.as_str()),
        Some("rawwf/t/1")
    );
    assert_eq!(
        p.content_type().as_ref().map(|m| m.as_str()),
        Some("application/json")
    );
    assert_eq!(p.kind().as_ref().map(|m| m.as_str()), Some("warren.task"));
    assert_eq!(p.delivery_mode(), &Some(2));
    assert_eq!(
        p.headers().as_ref().unwrap().inner().get("warren-protocol"),
        Some(&AMQPValue::LongLongInt(2))
    );
    let mut task: Value = serde_json::from_slice(&d.data).unwrap();
    let token = task
        .as_object_mut()
        .unwrap()
        .remove("token")
        .expect("a task message carries its attempt's token");
    assert!(
        token
            .as_str()
            .is_some_and(|t| t.len() == 64 && t.bytes().all(|b| b.is_ascii_hexdigit())),
        "{token}"
    );
    assert_eq!(
        task,
        json!({"workflow_id": "rawwf", "task_id": "t", "attempt": 1, "type": "py.add_one",
               "input": {"k": 41}, "timeout_ms": 1000, "max_attempts": 1})
    );
    // A result written by hand, with no Warren headers at all, but the
    // attempt's token.
    let result = json!({"workflow_id": "rawwf", "task_id": "t", "attempt": 1, "token": token,
                        "status": "succeeded", "output": {"k": 42}, "worker": "python-7"});
    let confirm = ch
        .basic_publish(
            topology.results().as_str().into(),
            "".into(),
            BasicPublishOptions {
                mandatory: true,
                ..Default::default()
            },
            result.to_string().as_bytes(),
            Default::default(),
        )
        .await
        .unwrap();
    assert!(confirm.await.unwrap().take_message().is_none());
    d.ack(BasicAckOptions::default()).await.unwrap();

    let report = waiter.await.unwrap().unwrap();
    assert_eq!(report.status, WorkflowStatus::Succeeded);
    assert_eq!(report.tasks["t"].output, Some(json!({"k": 42})));
    assert_eq!(report.tasks["t"].worker.as_deref(), Some("python-7"));

    let mut seen = Vec::new();
    for _ in 0..2 {
        let (key, body) = events.next().await;
        seen.push((key, body["status"].as_str().unwrap().to_owned()));
    }
    assert_eq!(
        seen,
        vec![
            ("workflow.rawwf.running".to_string(), "running".to_string()),
            (
                "workflow.rawwf.succeeded".to_string(),
                "succeeded".to_string()
            )
        ]
    );
    events.close().await;
    warren_shared::amqp::close(&conn, "done").await;
    env.finish().await;
}
