//! Clients Warren did not write: Python (a raw pika worker, a producer on
//! the Python SDK under `clients/python`) and the shell with Debian's
//! amqp-tools, running the examples under `examples/` and the wire check
//! against `docs/schema/`. They need `python3` with `pika`, `aio-pika` and
//! `jsonschema`, and `amqp-tools`; `.ci/run` installs them. A missing tool
//! fails the test with the reason: nothing here is skipped.

use crate::support::{Env, wait_until_async};
use lapin::options::QueueDeclareOptions;
use serde_json::Value;
use std::{path::PathBuf, process::Stdio, time::Duration};
use tokio::process::Command;

/// The workspace root, where `examples/` and `docs/` are.
fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is in the workspace")
        .to_owned()
}

/// A command of the examples, pointed at this test's broker and namespace.
fn command(env: &Env, program: &str, args: &[&str]) -> Command {
    let mut c = Command::new(program);
    c.args(args)
        .current_dir(root())
        .env("AMQP_ADDR", &env.amqp.addr)
        .env("WARREN_NAMESPACE", &env.amqp.namespace)
        .env("WARREN_TIMEOUT", "60")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    c
}

/// Runs to the end; returns exit code, stdout and stderr.
async fn run(mut c: Command) -> (i32, String, String) {
    let what = format!("{c:?}");
    let out = tokio::time::timeout(Duration::from_secs(120), c.output())
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish in 120 s"))
        .unwrap_or_else(|e| panic!("cannot run {what}: {e} (see .ci/run for what it needs)"));
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wire_matches_the_schemas() {
    let mut env = Env::new().await;
    // The check copies results from the results exchange, which results
    // bypass on a partitioned store (they go to the task's `reply_to`);
    // the bodies are the same on both stores.
    env.use_sqlite();
    env.track_queue("wirecheck");
    let scheduler = env.scheduler(env.scheduler_config());
    env.builtin_worker("rust-1");
    let (code, out, err) = run(command(&env, "python3", &["tests/polyglot/wire_check.py"])).await;
    assert_eq!(code, 0, "wire check failed:\n{out}\n{err}");
    assert!(out.contains("; 0 mismatches"), "{out}");
    scheduler.stop().await;
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_producer_and_worker_share_a_workflow_with_rust() {
    let mut env = Env::new().await;
    env.track_queue("python");
    let scheduler = env.scheduler(env.scheduler_config());
    env.builtin_worker("rust-1");
    let mut py_worker = command(&env, "python3", &["examples/python/worker.py"])
        .env("WARREN_QUEUE", "python")
        .env("WARREN_WORKER_ID", "python-1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 runs (see .ci/run)");

    // The Python worker is ready once its queue has a consumer.
    let conn = env.amqp.connect("polyglot probe").await.unwrap();
    let queue = format!("{}.tasks.python", env.amqp.namespace);
    wait_until_async("the Python worker consumes", || async {
        let passive = QueueDeclareOptions {
            passive: true,
            ..Default::default()
        };
        // A passive declare of a missing queue closes its channel: a new
        // channel for each look.
        let Ok(ch) = conn.create_channel().await else {
            return false;
        };
        let ready = ch
            .queue_declare(queue.as_str().into(), passive, Default::default())
            .await
            .is_ok_and(|q| q.consumer_count() > 0);
        let _ = ch.close(200, "looked".into()).await;
        ready
    })
    .await;
    warren_shared::amqp::close(&conn, "probe done").await;

    let (code, out, err) = run(command(
        &env,
        "python3",
        &["examples/python/producer.py", "examples/mixed.json"],
    ))
    .await;
    assert_eq!(code, 0, "producer:\n{out}\n{err}");
    let report: Value = serde_json::from_str(&out).expect("the producer prints the report");
    assert_eq!(report["status"], "succeeded", "{report}");
    assert_eq!(report["tasks"]["reverse"]["worker"], "python-1", "{report}");
    assert_eq!(report["tasks"]["greet"]["worker"], "rust-1", "{report}");
    assert_eq!(
        report["tasks"]["publish"]["output"],
        serde_json::json!({"original": "hello Warren", "reversed": "nerraW olleh"}),
        "a Rust task received the Python task's output: {report}"
    );

    py_worker.start_kill().unwrap();
    py_worker.wait().await.unwrap();
    scheduler.stop().await;
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqp_tools_submit_and_read_the_outcome() {
    let mut env = Env::new().await;
    let scheduler = env.scheduler(env.scheduler_config());
    env.builtin_worker("rust-1");
    let (code, out, err) = run(command(
        &env,
        "sh",
        &["examples/shell/submit.sh", "examples/order.json"],
    ))
    .await;
    assert_eq!(code, 0, "submit.sh:\n{out}\n{err}");
    let report: Value = serde_json::from_str(out.trim()).expect("the outcome is JSON");
    assert_eq!(report["workflow_id"], "order-1042", "{report}");
    assert_eq!(report["status"], "succeeded", "{report}");
    assert_eq!(report["tasks"]["pay_order"]["attempts"], 2, "{report}");
    scheduler.stop().await;
    env.finish().await;
}
