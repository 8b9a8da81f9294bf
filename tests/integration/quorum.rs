//! Quorum queues (`WARREN_QUEUE_TYPE=quorum`): the same workflows run, the
//! queues really are quorum queues, and a process declaring them classic
//! is refused with a clear conflict.

use crate::support::{DEADLINE, Env};
use serde_json::json;
use warren_shared::wire::WorkflowStatus;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workflows_run_on_quorum_queues() {
    let mut env = Env::quorum().await;
    let _s = env.scheduler(env.scheduler_config());
    env.builtin_worker("w");
    let report = env
        .client
        .submit_and_wait(
            json!({"id": "q1", "priority": 7, "tasks": [
                {"id": "a", "type": "echo", "input": 1},
                {"id": "b", "type": "fail", "depends_on": ["a"], "input": {"times": 1},
                 "retry": {"max_attempts": 3, "backoff_ms": 10}},
                {"id": "c", "type": "echo", "depends_on": ["a"], "input": "${a.output}"},
                {"id": "d", "type": "echo", "depends_on": ["b", "c"], "input": "${c.output}"}
            ]}),
            DEADLINE,
        )
        .await
        .unwrap();
    assert_eq!(report.status, WorkflowStatus::Succeeded, "{report:?}");
    assert_eq!(report.tasks["b"].attempts, 2, "the retry went through");
    assert_eq!(report.tasks["d"].output, Some(json!(1)));

    // The broker says they are quorum queues, with the delivery limit.
    let ns = &env.amqp.namespace;
    let out = std::process::Command::new("rabbitmqctl")
        .args([
            "list_queues",
            "-q",
            "--no-table-headers",
            "name",
            "type",
            "arguments",
        ])
        .output()
        .expect("rabbitmqctl is installed with RabbitMQ");
    let listing = String::from_utf8_lossy(&out.stdout);
    for queue in [
        "workflows",
        "results",
        "dead",
        "tasks.default",
        "suspect.default",
    ] {
        let line = listing
            .lines()
            .find(|l| l.split_whitespace().next() == Some(&format!("{ns}.{queue}")))
            .unwrap_or_else(|| panic!("{ns}.{queue} not listed:\n{listing}"));
        assert!(line.contains("quorum"), "{line}");
        if queue != "dead" {
            assert!(line.contains("x-delivery-limit"), "{line}");
        }
    }

    // A client that declares them classic is refused, and told why.
    let classic = warren_shared::AmqpConfig::new(env.amqp.addr.clone(), ns.clone());
    let err = warren_producer::Client::connect(&classic)
        .await
        .expect_err("a classic declaration of quorum queues is refused");
    let msg = err.to_string();
    assert!(
        msg.contains(&format!("{ns}.workflows")) && msg.contains("WARREN_QUEUE_TYPE"),
        "{msg}"
    );
    env.finish().await;
}
