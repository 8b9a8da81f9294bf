//! Dynamic workflows (issue 18) through the examples, against the real
//! broker: list → map → reduce (`examples/dynamic_mapping.json`), an
//! approval branch with `when` and an `all_done` notify
//! (`examples/approval.json`), and Conductor's order workflow with a
//! compensating refund (`examples/order_with_refund.json`) against a small
//! HTTP service this test starts. Also: a map wider than the scheduler's
//! bound fails its task, and a mapped workflow survives a scheduler
//! restart in the middle of its map.

use crate::support::{DEADLINE, Env, Log, add_gated, amqp_addr, binaries, wait_until};
use axum::{
    Json, Router,
    extract::{Path, State},
    http::StatusCode,
    routing::post,
};
use serde_json::{Value, json};
use std::sync::{
    Arc, Mutex,
    atomic::{AtomicBool, Ordering},
};
use tokio::sync::Semaphore;
use warren_scheduler::Metrics;
use warren_shared::wire::{SkipReason, TaskState, WorkflowReport, WorkflowStatus};
use warren_worker::{Registry, kinds};

fn example(name: &str) -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/").to_owned() + name;
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// Runs `warren ARGS` against the test's namespace: (exit code, stdout).
async fn warren(env: &Env, args: &[&str]) -> (i32, String) {
    let ns = env.amqp.namespace.clone();
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(&binaries()["warren"])
            .args(&args)
            .env("AMQP_ADDR", amqp_addr())
            .env("WARREN_NAMESPACE", ns)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// The line of `warren status` for task `id`, split into words.
fn row<'a>(out: &'a str, id: &str) -> Vec<&'a str> {
    out.lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|words| words.first() == Some(&id))
        .unwrap_or_else(|| panic!("no row for {id}: {out}"))
}

/// The ids of the report's tasks, in the report's order.
fn task_ids(report: &WorkflowReport) -> Vec<&str> {
    report.tasks.keys().map(String::as_str).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mapping_example_runs_one_instance_per_item_and_reduces_their_outputs() {
    let mut env = Env::new().await;
    let scheduler = env.scheduler(env.scheduler_config());
    env.builtin_worker("w");

    let report = env
        .client
        .submit_and_wait(example("dynamic_mapping.json"), DEADLINE)
        .await
        .unwrap();
    assert_eq!(report.status, WorkflowStatus::Succeeded, "{report:?}");
    let thumbnails = json!([
        {"source": "photos/cat.png", "thumbnail": "thumbs/0-cat.png", "kb": 420},
        {"source": "photos/dog.png", "thumbnail": "thumbs/1-dog.png", "kb": 380},
        {"source": "photos/owl.png", "thumbnail": "thumbs/2-owl.png", "kb": 515}
    ]);
    // The reduce saw the mapped task's output: its instances', in order.
    assert_eq!(
        report.tasks["reduce"].output,
        Some(json!({"gallery": "photos", "thumbnails": thumbnails}))
    );
    assert_eq!(report.tasks["resize"].state, TaskState::Succeeded);
    assert_eq!(report.tasks["resize"].output, Some(thumbnails.clone()));
    // Each instance is a task of its own in the report.
    assert_eq!(
        task_ids(&report),
        [
            "list",
            "reduce",
            "resize",
            "resize[0]",
            "resize[1]",
            "resize[2]"
        ]
    );
    for k in 0..3 {
        let instance = &report.tasks[&format!("resize[{k}]")];
        assert_eq!(instance.state, TaskState::Succeeded, "resize[{k}]");
        assert_eq!(instance.attempts, 1, "resize[{k}]");
        assert_eq!(
            instance.output.as_ref(),
            Some(&thumbnails[k]),
            "resize[{k}]"
        );
    }
    // list, three instances and reduce ran; the mapped task itself did not.
    assert_eq!(
        Metrics::get(&scheduler.metrics.engine.tasks_dispatched),
        5,
        "one task message per instance"
    );

    // Nothing to map: the mapped task succeeds at once with [], no
    // instance runs, and the reduce sees the empty array.
    let mut request = example("dynamic_mapping.json");
    request["input"]["images"] = json!([]);
    let report = env.client.submit_and_wait(request, DEADLINE).await.unwrap();
    assert_eq!(report.status, WorkflowStatus::Succeeded, "{report:?}");
    assert_eq!(report.tasks["resize"].output, Some(json!([])));
    assert_eq!(
        report.tasks["reduce"].output,
        Some(json!({"gallery": "photos", "thumbnails": []}))
    );
    assert_eq!(task_ids(&report), ["list", "reduce", "resize"]);
    scheduler.stop().await;
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_approval_example_takes_each_branch_and_always_notifies() {
    let mut env = Env::new().await;
    let scheduler = env.scheduler(env.scheduler_config());
    env.builtin_worker("w");

    // (amount, the branch taken, the branch skipped)
    for (amount, taken, not_taken) in [(420, "approve", "reject"), (5000, "reject", "approve")] {
        let mut request = example("approval.json");
        request["input"]["expense"]["amount"] = json!(amount);
        let report = env.client.submit_and_wait(request, DEADLINE).await.unwrap();
        assert_eq!(report.status, WorkflowStatus::Succeeded, "{report:?}");
        let t = &report.tasks[taken];
        assert_eq!(t.state, TaskState::Succeeded, "{amount}: {taken}");
        assert_eq!(t.skip_reason, None);
        let decision = if taken == "approve" {
            "approved"
        } else {
            "rejected"
        };
        assert_eq!(
            t.output.as_ref().unwrap()["decision"],
            json!(decision),
            "{amount}"
        );
        let n = &report.tasks[not_taken];
        assert_eq!(n.state, TaskState::Skipped, "{amount}: {not_taken}");
        assert_eq!(n.skip_reason, Some(SkipReason::Condition), "{amount}");
        assert_eq!(n.attempts, 0);
        // The notify ran after one branch was skipped (`all_done`).
        let notify = &report.tasks["notify"];
        assert_eq!(notify.state, TaskState::Succeeded, "{amount}: notify");
        assert_eq!(notify.output, Some(json!({"to": "ada", "about": "exp-7"})));
    }
    // The rejection says why; `warren status` shows why `approve` was
    // skipped.
    let mut request = example("approval.json");
    request["id"] = json!("expense-1001");
    request["input"]["expense"]["amount"] = json!(1001);
    let report = env.client.submit_and_wait(request, DEADLINE).await.unwrap();
    assert_eq!(
        report.tasks["reject"].output.as_ref().unwrap()["reason"],
        json!("1001 is over the limit of 1000")
    );
    assert_eq!(
        report.tasks["approve"].skip_reason,
        Some(SkipReason::Condition)
    );
    let (code, out) = warren(&env, &["status", "expense-1001"]).await;
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        out.lines().nth(1).unwrap().split_whitespace().last(),
        Some("DETAIL"),
        "{out}"
    );
    assert_eq!(
        row(&out, "approve"),
        ["approve", "skipped", "0", "-", "-", "condition"]
    );
    assert_eq!(row(&out, "reject")[..2], ["reject", "succeeded"]);
    assert_eq!(row(&out, "reject").len(), 5, "no detail: {out}");
    scheduler.stop().await;
    env.finish().await;
}

/// The order service: what it was asked, in order, and whether shipping
/// fails (409: not retried).
#[derive(Clone, Default)]
struct Shop {
    calls: Arc<Mutex<Vec<String>>>,
    ship_fails: Arc<AtomicBool>,
}

impl Shop {
    fn push(&self, call: String) {
        self.calls.lock().unwrap().push(call);
    }

    fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.calls.lock().unwrap())
    }
}

async fn service(shop: Shop) -> std::net::SocketAddr {
    let app = Router::new()
        .route(
            "/orders",
            post(
                |State(s): State<Shop>, Json(order): Json<Value>| async move {
                    s.push(format!("create {}", order["customerId"]));
                    (StatusCode::CREATED, Json(json!({"orderId": "o-17"})))
                },
            ),
        )
        .route(
            "/payments",
            post(|State(s): State<Shop>, Json(p): Json<Value>| async move {
                s.push(format!("charge {} {}", p["orderId"], p["amount"]));
                Json(json!({"paymentId": "p-9", "orderId": p["orderId"]}))
            }),
        )
        .route(
            "/orders/{id}/ship",
            post(|State(s): State<Shop>, Path(id): Path<String>| async move {
                s.push(format!("ship {id}"));
                if s.ship_fails.load(Ordering::SeqCst) {
                    return (
                        StatusCode::CONFLICT,
                        Json(json!({"error": "no courier for this address"})),
                    );
                }
                (
                    StatusCode::OK,
                    Json(json!({"trackingId": format!("t-{id}")})),
                )
            }),
        )
        .route(
            "/payments/{id}/refund",
            post(
                |State(s): State<Shop>, Path(id): Path<String>, Json(r): Json<Value>| async move {
                    s.push(format!("refund {id} {} {}", r["orderId"], r["amount"]));
                    Json(json!({"refundId": format!("r-{id}")}))
                },
            ),
        )
        .with_state(shop);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_order_example_refunds_the_charge_when_shipping_fails() {
    let shop = Shop::default();
    let addr = service(shop.clone()).await;
    let mut env = Env::new().await;
    let scheduler = env.scheduler(env.scheduler_config());
    let mut registry = Registry::with_builtins();
    kinds::register_http(&mut registry, vec![addr.to_string()]);
    env.worker(registry, &["default"], 4, "w");
    let request = || {
        let mut r = example("order_with_refund.json");
        r["input"]["api"] = json!(format!("http://{addr}"));
        r
    };

    // Shipped: no refund (its trigger rule did not hold).
    let report = env
        .client
        .submit_and_wait(request(), DEADLINE)
        .await
        .unwrap();
    assert_eq!(report.status, WorkflowStatus::Succeeded, "{report:?}");
    assert_eq!(
        report.tasks["ship_order"].output,
        Some(json!({"trackingId": "t-o-17"}))
    );
    let refund = &report.tasks["refund_payment"];
    assert_eq!(refund.state, TaskState::Skipped);
    assert_eq!(refund.skip_reason, Some(SkipReason::TriggerRule));
    assert_eq!(
        shop.take(),
        ["create 123", "charge \"o-17\" 42.5", "ship o-17"]
    );

    // Shipping fails for good: the charge is refunded, and the workflow
    // still ends failed, naming the shipment.
    shop.ship_fails.store(true, Ordering::SeqCst);
    let report = env
        .client
        .submit_and_wait(request(), DEADLINE)
        .await
        .unwrap();
    assert_eq!(report.status, WorkflowStatus::Failed, "{report:?}");
    let ship = &report.tasks["ship_order"];
    assert_eq!(ship.state, TaskState::Failed);
    assert!(
        ship.error.as_ref().unwrap().message.contains("409"),
        "{ship:?}"
    );
    let refund = &report.tasks["refund_payment"];
    assert_eq!(refund.state, TaskState::Succeeded, "{report:?}");
    assert_eq!(refund.output, Some(json!({"refundId": "r-p-9"})));
    assert!(
        report.error.as_deref().unwrap_or("").contains("ship_order"),
        "{:?}",
        report.error
    );
    assert_eq!(
        shop.take(),
        [
            "create 123",
            "charge \"o-17\" 42.5",
            "ship o-17",
            "refund p-9 \"o-17\" 42.5"
        ]
    );

    // With `on_failure: handled`, the refunded order ends succeeded; the
    // shipment stays failed in the report.
    let mut handled = request();
    handled["on_failure"] = json!("handled");
    let report = env.client.submit_and_wait(handled, DEADLINE).await.unwrap();
    assert_eq!(report.status, WorkflowStatus::Succeeded, "{report:?}");
    assert_eq!(report.error, None);
    assert_eq!(report.tasks["ship_order"].state, TaskState::Failed);
    assert_eq!(report.tasks["refund_payment"].state, TaskState::Succeeded);
    assert_eq!(
        shop.take(),
        [
            "create 123",
            "charge \"o-17\" 42.5",
            "ship o-17",
            "refund p-9 \"o-17\" 42.5"
        ]
    );
    scheduler.stop().await;
    env.finish().await;
}

/// list → map → reduce over the workflow input's `items`, with instances
/// of type `kind`.
fn list_map_reduce(id: &str, items: Value, kind: &str) -> Value {
    json!({"id": id, "input": {"items": items}, "tasks": [
        {"id": "list", "type": "echo", "input": "${workflow.input.items}"},
        {"id": "x", "type": kind, "depends_on": ["list"], "map": "${list.output}",
         "input": {"item": "${item}", "index": "${index}"}},
        {"id": "reduce", "type": "echo", "depends_on": ["x"], "input": "${x.output}"}
    ]})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_map_wider_than_the_bound_fails_its_task_with_the_reason() {
    let mut env = Env::new().await;
    let mut config = env.scheduler_config();
    config.bounds.max_map_width = 10;
    let scheduler = env.scheduler(config);
    env.builtin_worker("w");

    let items: Vec<u32> = (0..12).collect();
    let report = env
        .client
        .submit_and_wait(list_map_reduce("wide", json!(items), "echo"), DEADLINE)
        .await
        .unwrap();
    assert_eq!(report.status, WorkflowStatus::Failed, "{report:?}");
    let x = &report.tasks["x"];
    assert_eq!(x.state, TaskState::Failed);
    let error = x.error.as_ref().unwrap();
    assert_eq!(
        error.message,
        "`map` resolved to 12 items, over the limit of 10 (WARREN_MAX_MAP_WIDTH)"
    );
    assert!(!error.retryable);
    assert_eq!(report.tasks["reduce"].state, TaskState::Skipped);
    // No instance was made, none ran.
    assert_eq!(task_ids(&report), ["list", "reduce", "x"]);
    assert_eq!(Metrics::get(&scheduler.metrics.engine.tasks_dispatched), 1);

    // At the bound it runs.
    let items: Vec<u32> = (0..10).collect();
    let report = env
        .client
        .submit_and_wait(list_map_reduce("ten", json!(items), "echo"), DEADLINE)
        .await
        .unwrap();
    assert_eq!(report.status, WorkflowStatus::Succeeded, "{report:?}");
    let expected: Vec<Value> = (0..10).map(|i| json!({"item": i, "index": i})).collect();
    assert_eq!(report.tasks["reduce"].output, Some(json!(expected)));
    assert!(report.tasks.contains_key("x[9]"));
    scheduler.stop().await;
    env.finish().await;
}

/// Six instances, three at a time (the worker's concurrency), each held
/// until the test gives a permit: the first three end before the restart,
/// the other three are running across it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mapped_workflow_survives_a_scheduler_restart_mid_map() {
    let mut env = Env::new().await;
    let first = env.scheduler(env.scheduler_config());
    let (log, gate) = (Log::default(), Arc::new(Semaphore::new(0)));
    let mut registry = Registry::with_builtins();
    add_gated(&mut registry, "gated", &log, "w", Some(&gate));
    env.worker(registry, &["default"], 3, "w");
    let items = json!(["a", "b", "c", "d", "e", "f"]);
    let client = env.client.clone();
    let request = list_map_reduce("remap", items.clone(), "gated");
    let outcome = tokio::spawn(async move { client.submit_and_wait(request, DEADLINE).await });

    let started = |n: usize| {
        let log = log.clone();
        move || log.lines().len() == n
    };
    wait_until("three instances running", started(3)).await;
    gate.add_permits(3);
    // list and the first three instances committed, the next three held.
    wait_until("three instances done, three more running", || {
        Metrics::get(&first.metrics.engine.results_committed) == 4 && log.lines().len() == 6
    })
    .await;
    let status = env.client.status("remap", DEADLINE).await.unwrap();
    assert_eq!(status.tasks["x"].state, TaskState::Mapped, "{status:?}");
    // `warren status` folds the instances into the mapped task's row,
    // and shows them on request, in order; `warren graph` draws one node.
    let (code, out) = warren(&env, &["status", "remap"]).await;
    assert_eq!(code, 0, "{out}");
    let x = row(&out, "x");
    assert_eq!(x[1], "mapped", "{out}");
    assert!(x.join(" ").ends_with("3/6 succeeded, 3 running"), "{out}");
    assert!(!out.contains("x[0]"), "{out}");
    assert!(
        out.ends_with("(6 instances of mapped tasks not shown: --instances shows them)\n"),
        "{out}"
    );
    let (code, out) = warren(&env, &["status", "remap", "--instances"]).await;
    assert_eq!(code, 0, "{out}");
    let ids: Vec<&str> = out
        .lines()
        .skip(2)
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(
        ids,
        [
            "list", "reduce", "x", "x[0]", "x[1]", "x[2]", "x[3]", "x[4]", "x[5]"
        ],
        "{out}"
    );
    assert_eq!(row(&out, "x[4]")[1], "running", "{out}");
    let (code, out) = warren(&env, &["graph", "remap"]).await;
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("  \"x\" [label=\"x\\nmapped: 3/6 succeeded, 3 running\", fillcolor=\"#b9dcff\", peripheries=2];\n"),
        "{out}"
    );
    assert!(!out.contains("x["), "{out}");
    first.stop().await;

    let second = env.scheduler(env.scheduler_config());
    // The restored workflow knows which instances ended and which run.
    let status = env.client.status("remap", DEADLINE).await.unwrap();
    assert_eq!(status.status, WorkflowStatus::Running);
    assert_eq!(status.tasks["x"].state, TaskState::Mapped, "{status:?}");
    let states: Vec<TaskState> = (0..6)
        .map(|k| status.tasks[&format!("x[{k}]")].state)
        .collect();
    assert_eq!(
        states[..3],
        [TaskState::Succeeded; 3],
        "before the restart: {status:?}"
    );
    assert_eq!(
        states[3..],
        [TaskState::Running; 3],
        "across the restart: {status:?}"
    );
    gate.add_permits(3);
    let report = outcome.await.unwrap().unwrap();
    assert_eq!(report.status, WorkflowStatus::Succeeded, "{report:?}");
    let expected: Vec<Value> = (0..6)
        .map(|k| json!({"item": items[k], "index": k}))
        .collect();
    assert_eq!(report.tasks["x"].output, Some(json!(expected)));
    assert_eq!(report.tasks["reduce"].output, Some(json!(expected)));
    // Each instance ran once: none was dispatched again by the new
    // scheduler.
    let mut lines = log.lines();
    lines.sort();
    let want: Vec<String> = (0..6).map(|k| format!("remap/x[{k}]/1@w")).collect();
    assert_eq!(lines, want);
    assert_eq!(Metrics::get(&second.metrics.engine.tasks_dispatched), 1);
    second.stop().await;
    env.finish().await;
}

/// A mapped task whose instance fails, compensated by a `run_if:
/// any_failed` dependent of the mapped task, under `on_failure: handled`.
///
/// Fails on the engine as it is (953c63b): the workflow ends `failed`,
/// because the failed instance `x[1]` is itself a failed task with no
/// direct dependent (instances have none), so `rules::failures_handled`
/// never finds it compensated, although the mapped task's compensation
/// `undo` ran and succeeded. Ignored until the engine decides what a
/// failed instance asks of `on_failure: handled`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_instance_compensated_on_its_mapped_task_is_handled() {
    let mut env = Env::new().await;
    let scheduler = env.scheduler(env.scheduler_config());
    env.builtin_worker("w");
    // `fail` fails while the attempt is at most `times`: item 0 succeeds,
    // item 1 fails (one attempt).
    let request = json!({"id": "mapfail", "on_failure": "handled", "input": {"items": [0, 1]}, "tasks": [
        {"id": "list", "type": "echo", "input": "${workflow.input.items}"},
        {"id": "x", "type": "fail", "depends_on": ["list"], "map": "${list.output}",
         "input": {"times": "${item}", "message": "item ${index} failed"}},
        {"id": "undo", "type": "echo", "depends_on": ["x"], "run_if": "any_failed"}
    ]});
    let report = env.client.submit_and_wait(request, DEADLINE).await.unwrap();
    assert_eq!(
        report.tasks["x[0]"].state,
        TaskState::Succeeded,
        "{report:?}"
    );
    assert_eq!(report.tasks["x[1]"].state, TaskState::Failed, "{report:?}");
    assert_eq!(report.tasks["x"].state, TaskState::Failed, "{report:?}");
    assert_eq!(
        report.tasks["undo"].state,
        TaskState::Succeeded,
        "{report:?}"
    );
    assert_eq!(report.status, WorkflowStatus::Succeeded, "{report:?}");
    scheduler.stop().await;
    env.finish().await;
}
