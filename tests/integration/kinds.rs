//! The `shell` and `http` task kinds, through the seeds' examples:
//! Airflow's extract >> transform >> load with shell tasks, and
//! Conductor's order_processing with HTTP tasks against a small service
//! this test starts on localhost.

use crate::support::{DEADLINE, Env};
use axum::{
    Json, Router,
    extract::{Path, State},
    http::StatusCode,
    routing::post,
};
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use warren_shared::wire::{TaskState, WorkflowStatus};
use warren_worker::{Registry, kinds};

fn example(name: &str) -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/").to_owned() + name;
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etl_with_shell_tasks() {
    let mut env = Env::new().await;
    let scheduler = env.scheduler(env.scheduler_config());
    let mut registry = Registry::with_builtins();
    kinds::register_shell(&mut registry, vec!["python3".into()]);
    env.worker(registry, &["default"], 4, "w");
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("out.json");
    let mut request = example("etl.json");
    request["input"]["target"] = json!(target.to_str().unwrap());
    let report = env.client.submit_and_wait(request, DEADLINE).await.unwrap();
    assert_eq!(report.status, WorkflowStatus::Succeeded, "{report:?}");
    let load = report.tasks["load"].output.as_ref().unwrap();
    assert_eq!(load["exit_code"], 0);
    assert!(
        load["stdout"]
            .as_str()
            .unwrap()
            .starts_with("loaded 2 rows into ")
    );
    let loaded: Value = serde_json::from_str(&std::fs::read_to_string(&target).unwrap()).unwrap();
    assert_eq!(
        loaded,
        json!([{"city": "Oslo", "temp_c": 4, "temp_f": 39.2}, {"city": "Lima", "temp_c": 19, "temp_f": 66.2}])
    );

    // A command off the allow-list, or one that fails, fails the task.
    let report = env
        .client
        .submit_and_wait(
            json!({"tasks": [{"id": "sneaky", "type": "shell", "input": {"command": "sh", "args": ["-c", "id"]}}]}),
            DEADLINE,
        )
        .await
        .unwrap();
    assert_eq!(report.status, WorkflowStatus::Failed);
    let error = report.tasks["sneaky"].error.as_ref().unwrap();
    assert!(
        error
            .message
            .contains("`sh` is not in this worker's shell allow-list"),
        "{error:?}"
    );
    let report = env
        .client
        .submit_and_wait(
            json!({"tasks": [{"id": "exit3", "type": "shell", "input": {"command": "python3",
                "args": ["-c", "import sys; print('bad row', file=sys.stderr); sys.exit(3)"]}}]}),
            DEADLINE,
        )
        .await
        .unwrap();
    let error = report.tasks["exit3"].error.as_ref().unwrap();
    assert_eq!(error.message, "`python3` exited with code 3: bad row");
    scheduler.stop().await;
    env.finish().await;
}

/// The order service: what it was asked, in order.
type Calls = Arc<Mutex<Vec<String>>>;

async fn service() -> (std::net::SocketAddr, Calls) {
    let calls = Calls::default();
    let app = Router::new()
        .route(
            "/orders",
            post(
                |State(c): State<Calls>, Json(order): Json<Value>| async move {
                    c.lock()
                        .unwrap()
                        .push(format!("create {}", order["customerId"]));
                    (StatusCode::CREATED, Json(json!({"orderId": "o-17"})))
                },
            ),
        )
        .route(
            "/payments",
            post(|State(c): State<Calls>, Json(p): Json<Value>| async move {
                let mut calls = c.lock().unwrap();
                calls.push(format!("charge {} {}", p["orderId"], p["amount"]));
                // The gateway is busy once: the task's retry policy helps.
                if calls.iter().filter(|c| c.starts_with("charge")).count() == 1 {
                    return (
                        StatusCode::SERVICE_UNAVAILABLE,
                        Json(json!({"error": "busy"})),
                    );
                }
                (
                    StatusCode::OK,
                    Json(json!({"paymentId": "p-9", "orderId": p["orderId"]})),
                )
            }),
        )
        .route(
            "/orders/{id}/ship",
            post(
                |State(c): State<Calls>, Path(id): Path<String>| async move {
                    c.lock().unwrap().push(format!("ship {id}"));
                    Json(json!({"trackingId": format!("t-{id}")}))
                },
            ),
        )
        .with_state(calls.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, calls)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn order_processing_with_http_tasks() {
    let (addr, calls) = service().await;
    let mut env = Env::new().await;
    let scheduler = env.scheduler(env.scheduler_config());
    let mut registry = Registry::with_builtins();
    kinds::register_http(&mut registry, vec![addr.to_string()]);
    env.worker(registry, &["default"], 4, "w");

    let mut request = example("order_processing.json");
    request["input"]["api"] = json!(format!("http://{addr}"));
    let report = env.client.submit_and_wait(request, DEADLINE).await.unwrap();
    assert_eq!(report.status, WorkflowStatus::Succeeded, "{report:?}");
    assert_eq!(
        report.tasks["create_order"].output,
        Some(json!({"orderId": "o-17"}))
    );
    assert_eq!(report.tasks["charge_payment"].attempts, 2, "503 then 200");
    assert_eq!(
        report.tasks["ship_order"].output,
        Some(json!({"trackingId": "t-o-17"}))
    );
    assert_eq!(
        *calls.lock().unwrap(),
        vec![
            "create 123",
            "charge \"o-17\" 42.5",
            "charge \"o-17\" 42.5",
            "ship o-17"
        ]
    );

    // A host off the allow-list is refused before any request is sent.
    let report = env
        .client
        .submit_and_wait(
            json!({"tasks": [{"id": "out", "type": "http", "input": {"url": "http://127.0.0.1:1/steal"}}]}),
            DEADLINE,
        )
        .await
        .unwrap();
    assert_eq!(report.tasks["out"].state, TaskState::Failed);
    let error = report.tasks["out"].error.as_ref().unwrap();
    assert!(
        !error.retryable && error.message.contains("is not allowed"),
        "{error:?}"
    );
    scheduler.stop().await;
    env.finish().await;
}
