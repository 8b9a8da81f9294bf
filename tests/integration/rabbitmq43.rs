//! RabbitMQ 4.3's rules, checked against the running broker (3.10 here,
//! which still allows what 4.3 refuses, so only asking it shows a breach):
//! no channel of Warren's has a global prefetch (`basic.qos` with
//! `global=true` is refused), and every queue of a namespace is durable or
//! exclusive (transient non-exclusive queues are refused). And the worker's
//! bound on results: one over `max_result_bytes` (default 8 MiB, half of
//! 4.x's 16 MiB `max_message_size`) fails its task instead of being
//! published.

use crate::support::{DEADLINE, Env};
use serde_json::{Value, json};
use std::collections::HashSet;
use warren_shared::{limits::DEFAULT_MAX_RESULT_BYTES, wire::WorkflowStatus};
use warren_worker::{HandlerError, Registry};

/// `rabbitmqctl -q --formatter json {args}`, parsed: one object per row.
fn rabbitmqctl(args: &[&str]) -> Vec<Value> {
    let out = std::process::Command::new("rabbitmqctl")
        .args(["-q", "--formatter", "json"])
        .args(args)
        .output()
        .expect("rabbitmqctl is installed with RabbitMQ");
    assert!(
        out.status.success(),
        "rabbitmqctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "rabbitmqctl {args:?} printed no JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// The pids of the broker connections whose client-given name mentions
/// `namespace` (Warren names every connection after its namespace).
fn connections_of(namespace: &str) -> HashSet<String> {
    rabbitmqctl(&["list_connections", "pid", "client_properties"])
        .into_iter()
        .filter(|c| {
            c["client_properties"].as_array().is_some_and(|props| {
                props.iter().any(|p| {
                    p[0] == "connection_name"
                        && p[2].as_str().is_some_and(|n| n.contains(namespace))
                })
            })
        })
        .filter_map(|c| c["pid"].as_str().map(str::to_owned))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warren_has_no_global_prefetch_and_no_transient_shared_queue() {
    let mut env = Env::new().await;
    let _s = env.scheduler(env.scheduler_config());
    // Two queues: each consumer's prefetch is its own (see the worker's
    // `slots`), the worker's concurrency still 4 in all.
    env.worker(Registry::with_builtins(), &["default", "other"], 4, "w43");
    let report = env
        .client
        .submit_and_wait(
            json!({"id": "rules", "tasks": [
                {"id": "a", "type": "echo", "input": 1},
                {"id": "b", "type": "echo", "queue": "other", "depends_on": ["a"], "input": "${a.output}"}
            ]}),
            DEADLINE,
        )
        .await
        .unwrap();
    assert_eq!(report.status, WorkflowStatus::Succeeded, "{report:?}");

    let ns = env.amqp.namespace.clone();
    let ours = connections_of(&ns);
    // The scheduler's two, the worker's two, the client's one.
    assert!(ours.len() >= 5, "Warren's connections: {ours:?}");

    // No channel of this test's connections has a global prefetch.
    let channels: Vec<Value> = rabbitmqctl(&[
        "list_channels",
        "connection",
        "pid",
        "global_prefetch_count",
        "prefetch_count",
    ])
    .into_iter()
    .filter(|c| c["connection"].as_str().is_some_and(|p| ours.contains(p)))
    .collect();
    assert!(channels.len() >= 5, "channels: {channels:?}");
    for c in &channels {
        assert_eq!(
            c["global_prefetch_count"], 0,
            "a channel of {ns} has a global prefetch (RabbitMQ 4.3 refuses it): {c}"
        );
    }

    // The worker's consumers prefetch per consumer: its concurrency on
    // each of two task queues (ceil(2 * 4 / 2)), one on each suspect queue.
    let consumers = rabbitmqctl(&[
        "list_consumers",
        "channel_pid",
        "queue_name",
        "consumer_tag",
        "prefetch_count",
    ]);
    for (queue, prefetch) in [
        ("tasks.default", 4),
        ("tasks.other", 4),
        ("suspect.default", 1),
        ("suspect.other", 1),
    ] {
        let name = format!("{ns}.{queue}");
        let c = consumers
            .iter()
            .find(|c| {
                c["queue_name"] == name.as_str()
                    && c["consumer_tag"]
                        .as_str()
                        .is_some_and(|t| t.starts_with("w43:"))
            })
            .unwrap_or_else(|| panic!("no consumer of w43 on {name}: {consumers:?}"));
        assert_eq!(c["prefetch_count"], prefetch, "{c}");
    }

    // Every queue of the namespace (named after it, owned by one of its
    // connections, or consumed on one of its channels: server-named queues
    // are known by that) is durable or exclusive.
    let our_channels: HashSet<&str> = channels.iter().filter_map(|c| c["pid"].as_str()).collect();
    let consumed: HashSet<&str> = consumers
        .iter()
        .filter(|c| {
            c["channel_pid"]
                .as_str()
                .is_some_and(|p| our_channels.contains(p))
        })
        .filter_map(|c| c["queue_name"].as_str())
        .collect();
    let queues: Vec<Value> = rabbitmqctl(&[
        "list_queues",
        "name",
        "durable",
        "exclusive",
        "auto_delete",
        "owner_pid",
    ])
    .into_iter()
    .filter(|q| {
        q["name"]
            .as_str()
            .is_some_and(|n| n.starts_with(&format!("{ns}.")) || consumed.contains(n))
            || q["owner_pid"].as_str().is_some_and(|p| ours.contains(p))
    })
    .collect();
    for q in &queues {
        assert!(
            q["durable"] == true || q["exclusive"] == true,
            "a transient non-exclusive queue (RabbitMQ 4.3 refuses it): {q}"
        );
    }
    let named = |n: &str| queues.iter().any(|q| q["name"] == n);
    assert!(
        named(&format!("{ns}.tasks.other")) && named(&format!("{ns}.workflows")),
        "the namespace's queues are listed: {queues:?}"
    );
    assert!(
        queues.iter().any(|q| q["exclusive"] == true),
        "the private queues are listed: {queues:?}"
    );
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_result_fails_its_task_and_the_next_workflow_runs() {
    let mut env = Env::new().await;
    let _s = env.scheduler(env.scheduler_config());
    let mut registry = Registry::with_builtins();
    // Just over the default limit once quoted and wrapped in the result.
    registry.register("huge", |_| async {
        Ok::<_, HandlerError>(Value::String("x".repeat(DEFAULT_MAX_RESULT_BYTES)))
    });
    env.worker(registry, &["default"], 4, "w");
    let report = env
        .client
        .submit_and_wait(
            json!({"id": "bomb", "tasks": [
                {"id": "big", "type": "huge", "retry": {"max_attempts": 3, "backoff_ms": 10}},
                {"id": "after", "type": "echo", "depends_on": ["big"], "input": "${big.output}"}
            ]}),
            DEADLINE,
        )
        .await
        .unwrap();
    // Outputs left out of the message: one may be 8 MiB.
    let summary: Vec<_> = report
        .tasks
        .iter()
        .map(|(id, t)| (id, t.state, t.attempts, t.error.as_ref()))
        .collect();
    assert_eq!(report.status, WorkflowStatus::Failed, "{summary:?}");
    let big = &report.tasks["big"];
    assert_eq!(big.attempts, 1, "not retried: another run is as large");
    assert_eq!(big.output, None);
    let error = big.error.as_ref().expect("an error");
    assert!(!error.retryable, "{error:?}");
    let limit = format!("limit of {DEFAULT_MAX_RESULT_BYTES} bytes");
    for part in ["`big`", "bytes of JSON", &limit, "WARREN_MAX_RESULT_BYTES"] {
        assert!(error.message.contains(part), "{part}: {}", error.message);
    }
    // The size named is the real one, above the limit.
    let size: usize = error
        .message
        .split(" is ")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("a size in {}", error.message));
    assert!(size > DEFAULT_MAX_RESULT_BYTES, "{size}");

    let next = env
        .client
        .submit_and_wait(
            json!({"id": "next", "tasks": [{"id": "a", "type": "echo", "input": {"ok": true}}]}),
            DEADLINE,
        )
        .await
        .unwrap();
    assert_eq!(next.status, WorkflowStatus::Succeeded, "{next:?}");
    assert_eq!(next.tasks["a"].output, Some(json!({"ok": true})));
    env.finish().await;
}
