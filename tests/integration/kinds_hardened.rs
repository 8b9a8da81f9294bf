//! The `shell` and `http` kinds against tasks that try to get round them,
//! through whole workflows: a task cannot change which binary runs or what
//! it loads, a filter fed more than a pipe buffer does not deadlock, a
//! timeout or a cancel leaves no process behind (looked for in /proc), and
//! an HTTP answer is capped, timed out, and kept free of secrets.

use crate::support::{DEADLINE, Env, wait_until};
use axum::{Router, http::header, response::IntoResponse, routing::get};
use serde_json::{Value, json};
use std::{os::unix::fs::PermissionsExt, time::Duration};
use warren_shared::wire::WorkflowStatus;
use warren_worker::{Registry, kinds};

/// A value no other process carries: marks the processes of one task.
fn marker() -> String {
    format!("mark-{}", uuid::Uuid::new_v4().simple())
}

/// Live processes (zombies are dead) whose environment holds
/// `WARREN_MARK=marker`.
fn marked(marker: &str) -> Vec<u32> {
    let needle = format!("WARREN_MARK={marker}");
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let env = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let state = stat.rsplit_once(") ").and_then(|(_, r)| r.chars().next());
            env.split(|b| *b == 0).any(|v| v == needle.as_bytes())
                && !matches!(state, None | Some('Z' | 'X'))
        })
        .collect()
}

/// A worker whose `shell` runs `cat` and `sh`, and lets tasks set
/// `WARREN_MARK` and nothing else.
fn shell_worker(env: &mut Env) {
    let mut config = kinds::ShellConfig::new(vec!["cat".into(), "sh".into()]);
    config.env_allow = vec!["WARREN_MARK".into()];
    let mut registry = Registry::with_builtins();
    kinds::Shell::new(config).unwrap().register(&mut registry);
    env.worker(registry, &["default"], 4, "w");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_cannot_change_which_binary_runs_nor_deadlock_a_filter() {
    let mut env = Env::new().await;
    let scheduler = env.scheduler(env.scheduler_config());
    shell_worker(&mut env);

    // A `cat` of the task's own, which would leave a trace if it ran.
    let dir = tempfile::tempdir().unwrap();
    let fake = dir.path().join("cat");
    let trace = dir.path().join("ran");
    std::fs::write(&fake, format!("#!/bin/sh\ntouch {}\n", trace.display())).unwrap();
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let dir_s = dir.path().to_str().unwrap();
    let fake_s = fake.to_str().unwrap();
    let refused = [
        (
            json!({"command": "cat", "stdin": "x", "env": {"PATH": dir_s}}),
            "`env` may not set `PATH`: no task may set a variable that changes which program runs or what it loads",
        ),
        (
            json!({"command": "cat", "stdin": "x", "env": {"LD_PRELOAD": fake_s}}),
            "`env` may not set `LD_PRELOAD`: no task may set",
        ),
        (
            json!({"command": "cat", "stdin": "x", "env": {"APP_MODE": "1"}}),
            "`env` may not set `APP_MODE`: not in this worker's shell env allow-list (WARREN_MARK)",
        ),
        (
            json!({"command": fake_s}),
            "is not in this worker's shell allow-list (cat, sh)",
        ),
    ];
    // One workflow each: a failed task would skip the others.
    for (input, says) in refused {
        let report = env
            .client
            .submit_and_wait(
                json!({"tasks": [{"id": "t", "type": "shell", "input": input}]}),
                DEADLINE,
            )
            .await
            .unwrap();
        let error = report.tasks["t"].error.clone().unwrap();
        assert!(
            !error.retryable && error.message.contains(says),
            "{input}: {error:?}"
        );
    }
    assert!(!trace.exists(), "the task's own `cat` never runs");

    // Airflow's pattern of examples/etl.json, at 1 MiB: one task's stdout
    // is the next one's stdin, far past the 64 KiB of a pipe.
    let report = env
        .client
        .submit_and_wait(
            json!({"tasks": [
                {"id": "extract", "type": "shell", "input": {"command": "sh",
                    "args": ["-c", "head -c 1048576 /dev/zero | tr '\\0' a"]}},
                {"id": "transform", "type": "shell", "depends_on": ["extract"],
                    "input": {"command": "cat", "stdin": "${extract.output.stdout}"}}
            ]}),
            DEADLINE,
        )
        .await
        .unwrap();
    assert_eq!(report.status, WorkflowStatus::Succeeded, "{report:?}");
    let out = report.tasks["transform"].output.as_ref().unwrap();
    let stdout = out["stdout"].as_str().unwrap();
    assert_eq!(stdout.len(), 1 << 20);
    assert!(stdout.bytes().all(|b| b == b'a'));
    assert!(
        out.get("stdout_truncated").is_none(),
        "1 MiB is within the cap"
    );
    scheduler.stop().await;
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeouts_and_cancels_leave_no_process_behind() {
    let mut env = Env::new().await;
    let scheduler = env.scheduler(env.scheduler_config());
    shell_worker(&mut env);
    let both = |mark: &str, timeout: Value| {
        let mut input = json!({"command": "sh", "args": ["-c", "sleep 1000 & sleep 1000"],
            "env": {"WARREN_MARK": mark}});
        if !timeout.is_null() {
            input["timeout_ms"] = timeout;
        }
        input
    };

    // The input's timeout, and the task's (which drops the handler).
    for (input_timeout, task_timeout, says) in [
        (json!(300), Value::Null, "`sh` ran over 300 ms"),
        (Value::Null, json!(300), "timed out after 300 ms"),
    ] {
        let mark = marker();
        let mut task = json!({"id": "t", "type": "shell", "input": both(&mark, input_timeout)});
        if !task_timeout.is_null() {
            task["timeout_ms"] = task_timeout;
        }
        let report = env
            .client
            .submit_and_wait(json!({"tasks": [task]}), DEADLINE)
            .await
            .unwrap();
        assert_eq!(report.status, WorkflowStatus::Failed, "{report:?}");
        assert_eq!(report.tasks["t"].error.clone().unwrap().message, says);
        wait_until("no process of the task left", || marked(&mark).is_empty()).await;
    }

    // A cancelled workflow: its running command's group goes with it.
    let mark = marker();
    let client = env.client.clone();
    let input = both(&mark, Value::Null);
    let outcome = tokio::spawn(async move {
        client
            .submit_and_wait(
                json!({"id": "cancel-me", "tasks": [{"id": "t", "type": "shell", "input": input}]}),
                DEADLINE,
            )
            .await
    });
    wait_until("both sleeps running", || marked(&mark).len() >= 2).await;
    let report = env.client.cancel("cancel-me", DEADLINE).await.unwrap();
    assert_eq!(report.status, WorkflowStatus::Cancelled, "{report:?}");
    wait_until("no process of the cancelled task left", || {
        marked(&mark).is_empty()
    })
    .await;
    let outcome = outcome.await.unwrap().unwrap();
    assert_eq!(outcome.status, WorkflowStatus::Cancelled);
    scheduler.stop().await;
    env.finish().await;
}

/// A service that streams without end, never answers, or answers with
/// headers that must not reach a report.
async fn service() -> std::net::SocketAddr {
    let endless = || async {
        let chunk = axum::body::Bytes::from(vec![b'z'; 16 * 1024]);
        let stream = futures_lite::stream::repeat_with(move || {
            Ok::<_, std::convert::Infallible>(chunk.clone())
        });
        axum::body::Body::from_stream(stream)
    };
    let app = Router::new()
        .route("/endless", get(endless))
        .route("/hang", get(std::future::pending::<()>))
        .route(
            "/headers",
            get(|| async {
                (
                    [
                        (header::SET_COOKIE, "session=s3cret-cookie"),
                        (header::WWW_AUTHENTICATE, "Bearer realm=\"x\""),
                        (header::ETAG, "\"v1\""),
                        (header::CONTENT_TYPE, "application/json"),
                    ],
                    [("x-internal-token", "s3cret-token")],
                    r#"{"ok": true}"#,
                )
                    .into_response()
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_answers_are_capped_timed_out_and_free_of_secrets() {
    let addr = service().await;
    // An allowed port nothing listens on.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let mut env = Env::new().await;
    let scheduler = env.scheduler(env.scheduler_config());
    let mut config = kinds::HttpConfig::new(vec![addr.to_string(), closed.to_string()]);
    config.default_timeout = Duration::from_millis(300);
    config.max_body_bytes = 100_000;
    let mut registry = Registry::with_builtins();
    kinds::register_http_with(&mut registry, config);
    env.worker(registry, &["default"], 4, "w");

    let task = |id: &str, input: Value| json!({"id": id, "type": "http", "input": input});
    let report = env
        .client
        .submit_and_wait(
            json!({"tasks": [
                task("endless", json!({"url": format!("http://{addr}/endless")})),
                task("headers", json!({"url": format!("http://{addr}/headers")})),
            ]}),
            DEADLINE,
        )
        .await
        .unwrap();
    assert_eq!(report.status, WorkflowStatus::Succeeded, "{report:?}");
    // An endless body: its first 100,000 bytes, and no more read.
    let endless = report.tasks["endless"].output.as_ref().unwrap();
    assert_eq!(endless["body"].as_str().unwrap().len(), 100_000);
    assert_eq!(endless["body_truncated"], true);
    // Only the safe headers reach the output, and so the report.
    let headers = report.tasks["headers"].output.as_ref().unwrap();
    assert_eq!(headers["body"], json!({"ok": true}));
    assert_eq!(headers["headers"]["etag"], "\"v1\"");
    assert_eq!(headers["headers"]["content-type"], "application/json");
    for name in headers["headers"].as_object().unwrap().keys() {
        assert!(
            kinds::http::SAFE_RESPONSE_HEADERS.contains(&name.as_str()),
            "{name}"
        );
    }
    let all = serde_json::to_string(&report.tasks).unwrap();
    assert!(
        !all.contains("s3cret") && !all.contains("set-cookie"),
        "{all}"
    );

    // Each of these fails; run one by one so none is skipped.
    let fails = [
        (
            task("hang", json!({"url": format!("http://{addr}/hang")})),
            true,
            format!("GET http://{addr}/hang: no complete answer within 300 ms"),
        ),
        (
            task(
                "host",
                json!({"url": format!("http://{addr}/headers"),
                "headers": {"host": "internal.example"}}),
            ),
            false,
            "invalid `http` input: the `Host` header cannot be set".to_owned(),
        ),
        (
            task(
                "missing",
                json!({"url": format!("http://user:s3cret@{addr}/missing")}),
            ),
            false,
            format!("GET http://***@{addr}/missing answered 404"),
        ),
        (
            task(
                "refused",
                json!({"url": format!("http://user:s3cret@{closed}/x")}),
            ),
            true,
            format!("GET http://***@{closed}/x: "),
        ),
        (
            task(
                "elsewhere",
                json!({"url": "http://user:s3cret@127.0.0.1:1/x"}),
            ),
            false,
            "http://***@127.0.0.1:1/x is not allowed".to_owned(),
        ),
    ];
    for (t, retryable, says) in fails {
        let id = t["id"].as_str().unwrap().to_owned();
        let report = env
            .client
            .submit_and_wait(json!({"tasks": [t]}), DEADLINE)
            .await
            .unwrap();
        let error = report.tasks[&id].error.clone().unwrap();
        assert_eq!(error.retryable, retryable, "{id}: {error:?}");
        assert!(error.message.starts_with(&says), "{id}: {error:?}");
        assert!(!error.message.contains("s3cret"), "{id}: {error:?}");
    }
    scheduler.stop().await;
    env.finish().await;
}
