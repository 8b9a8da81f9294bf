//! The web page in a real browser: headless Chromium (Debian's `chromium`
//! package; `.ci/run` installs it) loads a running workflow's page, and the
//! test reads the DAG it rendered. With `WARREN_SCREENSHOT=path.png` it
//! also saves a screenshot (the one in docs/ was made this way).

use crate::support::{DEADLINE, Env, wait_until, wait_until_async};
use serde_json::json;
use std::{net::SocketAddr, process::Command};
use warren_scheduler::Metrics;
use warren_shared::wire::WorkflowStatus;

/// Chromium's flags for a closed network and a throwaway profile.
fn chromium(profile: &std::path::Path) -> Command {
    let mut c = Command::new("chromium");
    c.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1100,420",
        // Lets the page's fetches and first drawing finish before the dump.
        "--virtual-time-budget=5000",
    ])
    .arg(format!("--user-data-dir={}", profile.display()));
    c
}

/// The DOM of `url` after its scripts ran.
async fn rendered(addr: SocketAddr, path: &str) -> String {
    let url = format!("http://{addr}{path}");
    tokio::task::spawn_blocking(move || {
        let profile = tempfile::tempdir().unwrap();
        let out = chromium(profile.path())
            .arg("--dump-dom")
            .arg(&url)
            .output()
            .expect("chromium runs (apt-get install chromium; see .ci/run)");
        assert!(
            out.status.success(),
            "chromium failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    })
    .await
    .unwrap()
}

/// The `data-task` / `data-state` pairs of the rendered DAG's nodes.
fn node_states(dom: &str) -> Vec<(String, String)> {
    let mut nodes: Vec<(String, String)> = dom
        .split("<g ")
        .skip(1)
        .filter(|g| g.contains("class=\"node"))
        .map(|g| {
            let attr = |name: &str| {
                let start = g.find(&format!("{name}=\"")).expect(name) + name.len() + 2;
                g[start..start + g[start..].find('"').unwrap()].to_owned()
            };
            (attr("data-task"), attr("data-state"))
        })
        .collect();
    nodes.sort();
    nodes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_draws_a_running_workflows_dag_with_task_states() {
    let mut env = Env::new().await;
    let (scheduler, gate, addr) = env.with_http("w").await;

    let client = env.client.clone();
    let outcome = tokio::spawn(async move {
        client
            .submit_and_wait(
                json!({"id": "page-1", "name": "order", "tasks": [
                    {"id": "create", "type": "echo"},
                    {"id": "pay", "type": "gated", "depends_on": ["create"]},
                    {"id": "reserve", "type": "gated", "depends_on": ["create"]},
                    {"id": "ship", "type": "echo", "depends_on": ["pay", "reserve"]}
                ]}),
                DEADLINE,
            )
            .await
    });
    wait_until("pay and reserve running", || {
        Metrics::get(&scheduler.metrics.engine.tasks_dispatched) == 3
    })
    .await;

    let dom = rendered(addr, "/workflows/page-1").await;
    let s = |a: &str, b: &str| (a.to_owned(), b.to_owned());
    assert_eq!(
        node_states(&dom),
        vec![
            s("create", "succeeded"),
            s("pay", "running"),
            s("reserve", "running"),
            s("ship", "pending")
        ],
        "{dom}"
    );
    for (from, to) in [
        ("create", "pay"),
        ("create", "reserve"),
        ("pay", "ship"),
        ("reserve", "ship"),
    ] {
        assert!(
            dom.contains(&format!("data-from=\"{from}\" data-to=\"{to}\"")),
            "edge {from} -> {to} in {dom}"
        );
    }
    assert!(
        dom.contains("id=\"summary\" data-status=\"running\""),
        "{dom}"
    );
    if let Ok(path) = std::env::var("WARREN_SCREENSHOT") {
        let url = format!("http://{addr}/workflows/page-1");
        tokio::task::spawn_blocking(move || {
            let profile = tempfile::tempdir().unwrap();
            let ok = chromium(profile.path())
                .arg(format!("--screenshot={path}"))
                .arg(url)
                .status()
                .unwrap()
                .success();
            assert!(ok, "screenshot");
        })
        .await
        .unwrap();
    }

    // Once it has ended, the page shows every task as it ended.
    gate.add_permits(2);
    let report = outcome.await.unwrap().unwrap();
    assert_eq!(report.status, WorkflowStatus::Succeeded);
    let dom = rendered(addr, "/workflows/page-1").await;
    assert!(
        node_states(&dom)
            .iter()
            .all(|(_, state)| state == "succeeded"),
        "{dom}"
    );
    assert!(
        dom.contains("id=\"summary\" data-status=\"succeeded\""),
        "{dom}"
    );
    // And the list page links to it, beside the workers (once the
    // worker's heartbeat has reached the scheduler).
    wait_until_async("the worker is registered", || async {
        let r = env.client.workers(DEADLINE).await.unwrap();
        r.workers.iter().any(|w| w.heartbeat.worker_id == "w")
    })
    .await;
    let list = rendered(addr, "/").await;
    assert!(
        list.contains("data-workflow=\"page-1\" data-status=\"succeeded\""),
        "{list}"
    );
    // With the worker registry.
    assert!(
        list.contains("data-worker=\"w\" data-state=\"running\""),
        "{list}"
    );
    scheduler.stop().await;
    env.finish().await;
}
