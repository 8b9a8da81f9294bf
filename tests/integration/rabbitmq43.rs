//! RabbitMQ 4.3's rules, checked against the running broker (3.10 here,
//! which still allows what 4.3 refuses, so only asking it shows a breach):
//! no channel of Warren's has a global prefetch (`basic.qos` with
//! `global=true` is refused), and every queue of a namespace is durable or
//! exclusive (transient non-exclusive queues are refused). And the worker's
//! bound on results: one over `max_result_bytes` (default 2 MiB, an eighth of
//! 4.x's 16 MiB `max_message_size`) fails its task instead of being
//! published.

use crate::support::{DEADLINE, Env, Log, add_gated, wait_until, wait_until_async};
use serde_json::{Value, json};
use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
    time::Duration,
};
use tokio::sync::Semaphore;
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

/// Ready and unacked messages of each queue of `namespace`, by the name
/// after `{namespace}.` (`tasks.default`).
async fn queue_counts(namespace: &str) -> HashMap<String, (u64, u64)> {
    let prefix = format!("{namespace}.");
    let rows = tokio::task::spawn_blocking(|| {
        rabbitmqctl(&[
            "list_queues",
            "name",
            "messages_ready",
            "messages_unacknowledged",
        ])
    })
    .await
    .unwrap();
    rows.into_iter()
        .filter_map(|q| {
            let name = q["name"].as_str()?.strip_prefix(&prefix)?.to_owned();
            let count = |k: &str| q[k].as_u64().unwrap_or(0);
            Some((
                name,
                (count("messages_ready"), count("messages_unacknowledged")),
            ))
        })
        .collect()
}

/// (ready, unacked) summed over `queues` of `namespace`.
async fn counted(namespace: &str, queues: &[&str]) -> (u64, u64) {
    let all = queue_counts(namespace).await;
    queues
        .iter()
        .filter_map(|q| all.get(*q))
        .fold((0, 0), |(r, u), (r2, u2)| (r + r2, u + u2))
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
    // `slots`), the worker's concurrency still 4 in all. And a worker of
    // one queue, whose suspects have a consumer of their own.
    env.worker(Registry::with_builtins(), &["default", "other"], 4, "w43");
    env.worker(Registry::with_builtins(), &["solo"], 3, "w43solo");
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
    // The scheduler's two, the workers' two each, the client's one.
    assert!(ours.len() >= 7, "Warren's connections: {ours:?}");

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

    // The workers' consumers prefetch per consumer: the two-queue worker
    // its concurrency on each task queue (ceil(2 * 4 / 2)), its suspects
    // fetched one at a time (no consumer); the one-queue worker its
    // concurrency, and 1 on its suspect queue.
    let consumers = rabbitmqctl(&[
        "list_consumers",
        "channel_pid",
        "queue_name",
        "consumer_tag",
        "prefetch_count",
    ]);
    let consumer = |worker: &str, queue: &str| {
        let name = format!("{ns}.{queue}");
        consumers
            .iter()
            .find(|c| {
                c["queue_name"] == name.as_str()
                    && c["consumer_tag"]
                        .as_str()
                        .is_some_and(|t| t.starts_with(&format!("{worker}:")))
            })
            .cloned()
    };
    for (worker, queue, prefetch) in [
        ("w43", "tasks.default", Some(4)),
        ("w43", "tasks.other", Some(4)),
        ("w43", "suspect.default", None),
        ("w43", "suspect.other", None),
        ("w43solo", "tasks.solo", Some(3)),
        ("w43solo", "suspect.solo", Some(1)),
    ] {
        let found = consumer(worker, queue);
        assert_eq!(
            found.as_ref().map(|c| c["prefetch_count"].clone()),
            prefetch.map(Value::from),
            "{worker} on {queue}: {found:?}"
        );
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
    // Outputs left out of the message: one may be 2 MiB.
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

/// Suspects run alone, so a worker holds at most one: were a second one
/// held while the first crashed the worker, its count would be raised for
/// a crash not its own. Without a global prefetch, a worker of several
/// queues fetches its suspects one at a time (`basic.get`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_of_several_queues_holds_one_suspect_at_a_time() {
    let mut env = Env::new().await;
    let log = Log::default();
    let gate = Arc::new(Semaphore::new(0));
    let _s = env.scheduler(env.scheduler_config());
    let mut registry = Registry::with_builtins();
    add_gated(&mut registry, "hold", &log, "two", Some(&gate));
    let config = env.worker_config(&["a", "b"], 2, "two");
    let (_stop, _join) = env.stoppable_worker(registry, config);
    let waiter = tokio::spawn({
        let c = env.client.clone();
        async move {
            c.submit_and_wait(
                json!({"id": "suspects", "tasks": [
                    {"id": "x", "type": "hold", "queue": "a"},
                    {"id": "y", "type": "hold", "queue": "b"}
                ]}),
                DEADLINE,
            )
            .await
        }
    });
    // Both run; then the worker "crashes" (its connections are cut): both
    // come back redelivered and become suspects.
    wait_until("both tasks to run", || log.lines().len() == 2).await;
    let me = format!("{} two", env.amqp.namespace);
    let cut = tokio::task::spawn_blocking(move || crate::support::cut_connections_named(&me))
        .await
        .unwrap();
    assert_eq!(cut, 2, "the worker's two connections");
    wait_until("a suspect to run", || log.lines().len() == 3).await;
    // One suspect is held (it runs, alone); the other waits in its queue,
    // and stays there while the first runs (over several poll intervals).
    let ns = env.amqp.namespace.clone();
    let suspects = ["suspect.a", "suspect.b"];
    wait_until_async("one suspect held, one waiting in its queue", || {
        let ns = ns.clone();
        async move { counted(&ns, &suspects).await == (1, 1) }
    })
    .await;
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(
            counted(&ns, &suspects).await,
            (1, 1),
            "(ready, held) of the suspect queues"
        );
    }
    assert_eq!(log.lines().len(), 3, "the second suspect has not started");
    gate.add_permits(10);
    let report = waiter.await.unwrap().unwrap();
    assert_eq!(report.status, WorkflowStatus::Succeeded, "{report:?}");
    assert_eq!(log.lines().len(), 4, "each ran again once, as a suspect");
    env.finish().await;
}

/// A worker of several queues may hold deliveries waiting for a slot.
/// Shutting down, it gives them back unmarked: left unacked, they would
/// return `redelivered`, and the next worker would take them for tasks
/// that crashed a worker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopping_worker_gives_back_unmarked_the_tasks_it_had_not_started() {
    let mut env = Env::new().await;
    let log = Log::default();
    let gate = Arc::new(Semaphore::new(0));
    let _s = env.scheduler(env.scheduler_config());
    let mut registry = Registry::with_builtins();
    add_gated(&mut registry, "hold", &log, "w", Some(&gate));
    // Concurrency 1 on two queues: each consumer prefetches 1, so one task
    // runs and the other waits in the worker for the slot.
    let config = env.worker_config(&["a", "b"], 1, "first");
    let (stop, join) = env.stoppable_worker(registry.clone(), config);
    let waiter = tokio::spawn({
        let c = env.client.clone();
        async move {
            c.submit_and_wait(
                json!({"id": "given-back", "tasks": [
                    {"id": "x", "type": "hold", "queue": "a"},
                    {"id": "y", "type": "hold", "queue": "b"}
                ]}),
                DEADLINE,
            )
            .await
        }
    });
    wait_until("one task to run", || log.lines().len() == 1).await;
    let ns = env.amqp.namespace.clone();
    let tasks = ["tasks.a", "tasks.b"];
    wait_until_async("the other to wait in the worker", || {
        let ns = ns.clone();
        async move { counted(&ns, &tasks).await == (0, 2) }
    })
    .await;
    stop.cancel();
    // The waiting task is back in its queue at once; the running one
    // finishes within the grace period.
    wait_until_async("the waiting task to be given back", || {
        let ns = ns.clone();
        async move { counted(&ns, &tasks).await == (1, 1) }
    })
    .await;
    gate.add_permits(1);
    tokio::time::timeout(DEADLINE, join)
        .await
        .expect("the worker stops")
        .unwrap()
        .expect("stopped cleanly");
    assert_eq!(log.lines().len(), 1, "the given-back task has not run");
    // A worker that fails every redelivered task at once: the given-back
    // task is not one.
    let mut config = env.worker_config(&["a", "b"], 2, "second");
    config.max_deliveries = 1;
    let (_stop, _join) = env.stoppable_worker(registry, config);
    gate.add_permits(10);
    let report = waiter.await.unwrap().unwrap();
    assert_eq!(report.status, WorkflowStatus::Succeeded, "{report:?}");
    assert_eq!(log.lines().len(), 2);
    env.finish().await;
}
