//! The scheduler's HTTP endpoint: health, Prometheus metrics, the status
//! API and the web page.

use crate::support::{
    DEADLINE, Env, held_workflow_of_1200, http_get, wait_until, wait_until_async,
};
use serde_json::{Value, json};
use warren_scheduler::Metrics;
use warren_shared::wire::{ControlKind, WorkflowStatus};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_metrics_api_and_page() {
    let mut env = Env::new().await;
    let (scheduler, gate, addr) = env.with_http("w1").await;
    wait_until("a broker session", || {
        Metrics::get(&scheduler.metrics.broker_connected) == 1
    })
    .await;

    let (code, _, body) = http_get(addr, "/healthz").await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap(),
        json!({"broker": true, "store": true, "active": true})
    );

    // One succeeded, one failed, one running (held at its gate).
    let ok = env
        .client
        .submit_and_wait(
            json!({"id": "h-ok", "tasks": [{"id": "a", "type": "echo"}]}),
            DEADLINE,
        )
        .await
        .unwrap();
    assert_eq!(ok.status, WorkflowStatus::Succeeded);
    let failed = env
        .client
        .submit_and_wait(
            json!({"id": "h-failed", "tasks": [{"id": "f", "type": "fail"}]}),
            DEADLINE,
        )
        .await
        .unwrap();
    assert_eq!(failed.status, WorkflowStatus::Failed);
    env.client
        .submit(json!({"id": "h-running", "name": "held", "tasks": [
            {"id": "g", "type": "gated"},
            {"id": "after", "type": "echo", "depends_on": ["g"]}
        ]}))
        .await
        .unwrap();
    wait_until("h-running dispatched", || {
        Metrics::get(&scheduler.metrics.engine.tasks_dispatched) == 3
    })
    .await;
    // The counter moves when the batch is built; the list reads the store,
    // which the batch reaches a commit later.
    wait_until_async("h-running committed", || async {
        http_get(addr, "/api/workflows?status=running")
            .await
            .2
            .contains("h-running")
    })
    .await;

    let list = |path: &'static str| async move {
        let (code, ty, body) = http_get(addr, path).await;
        assert_eq!(code, 200, "{path}: {body}");
        assert!(ty.starts_with("application/json"), "{ty}");
        let page: Value = serde_json::from_str(&body).unwrap();
        page["workflows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| {
                (
                    w["workflow_id"].as_str().unwrap().to_owned(),
                    w["status"].as_str().unwrap().to_owned(),
                )
            })
            .collect::<Vec<_>>()
    };
    let s = |a: &str, b: &str| (a.to_owned(), b.to_owned());
    assert_eq!(
        list("/api/workflows").await,
        vec![
            s("h-running", "running"),
            s("h-failed", "failed"),
            s("h-ok", "succeeded")
        ],
        "newest first"
    );
    assert_eq!(
        list("/api/workflows?status=failed").await,
        vec![s("h-failed", "failed")]
    );
    assert_eq!(
        list("/api/workflows?limit=1&offset=1").await,
        vec![s("h-failed", "failed")]
    );
    let (code, _, body) = http_get(addr, "/api/workflows?limit=0").await;
    assert_eq!(code, 400, "{body}");

    // A running workflow comes from the scheduler's memory, an ended one
    // from the store.
    let (code, _, body) = http_get(addr, "/api/workflows/h-running").await;
    assert_eq!(code, 200);
    let running: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(running["status"], "running");
    assert_eq!(running["name"], "held");
    assert_eq!(running["tasks"]["g"]["state"], "running");
    assert_eq!(running["tasks"]["after"]["state"], "pending");
    assert_eq!(running["tasks"]["after"]["depends_on"], json!(["g"]));
    let (code, _, body) = http_get(addr, "/api/workflows/h-failed").await;
    assert_eq!(code, 200);
    let ended: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(ended["status"], "failed");
    assert!(ended["error"].as_str().unwrap().contains("task `f` failed"));
    let (code, _, _) = http_get(addr, "/api/workflows/nope").await;
    assert_eq!(code, 404);

    // The worker is listed once a heartbeat of it reached the scheduler.
    wait_until_async("w1 in /api/workers", || async {
        let (code, _, body) = http_get(addr, "/api/workers").await;
        assert_eq!(code, 200);
        let workers: Value = serde_json::from_str(&body).unwrap();
        workers["workers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w["worker_id"] == "w1" && w["state"] == "running")
    })
    .await;

    // Prometheus text: every sample line is `name{labels} number`.
    let (code, ty, text) = http_get(addr, "/metrics").await;
    assert_eq!(code, 200);
    assert!(ty.starts_with("text/plain"), "{ty}");
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let (_, value) = line.rsplit_once(' ').unwrap();
        value
            .parse::<f64>()
            .unwrap_or_else(|_| panic!("bad sample: {line}"));
    }
    for sample in [
        "warren_workflows_total{state=\"succeeded\"} 1",
        "warren_workflows_total{state=\"failed\"} 1",
        "warren_workflows_running 1",
        "warren_tasks_total{event=\"dispatched\"} 3",
        "warren_tasks_total{event=\"succeeded\"} 1",
        "warren_tasks_total{event=\"failed\"} 1",
        "warren_in_flight_tasks{queue=\"default\"} 1",
        "warren_task_duration_seconds_count 2",
        "warren_dispatch_latency_seconds_count 3",
        "warren_dispatch_latency_seconds_bucket{le=\"+Inf\"} 3",
        "warren_broker_connected 1",
        "warren_scheduler_active 1",
        "warren_type_running_tasks{type=\"gated\"} 1",
        "warren_type_limit{type=\"gated\"} 10",
        "warren_type_waiting_tasks{type=\"gated\"} 0",
    ] {
        assert!(
            text.lines().any(|l| l == sample),
            "missing `{sample}` in:\n{text}"
        );
    }

    let (code, ty, page) = http_get(addr, "/workflows/h-running").await;
    assert_eq!(code, 200);
    assert!(ty.starts_with("text/html"), "{ty}");
    assert!(page.contains("<title>Warren</title>"));

    gate.add_permits(1);
    scheduler.stop().await;
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedules_api_pages_the_stored_schedules() {
    let mut env = Env::new().await;
    let (scheduler, _gate, addr) = env.with_http("w1").await;
    let (code, _, body) = http_get(addr, "/api/schedules").await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap(),
        json!({"schedules": []})
    );

    for (id, timing) in [
        ("b-hourly", json!({"every_ms": 3_600_000})),
        (
            "a-nightly",
            json!({"cron": "0 2 * * *", "timezone": "Europe/Paris"}),
        ),
    ] {
        let mut spec = json!({"id": id, "workflow": {"tasks": [{"id": "t", "type": "echo"}]}});
        spec.as_object_mut()
            .unwrap()
            .extend(timing.as_object().unwrap().clone());
        let report = env
            .client
            .schedule_create(serde_json::from_value(spec).unwrap(), DEADLINE)
            .await
            .unwrap();
        assert_eq!(report.outcome, "created", "{report:?}");
    }
    env.client
        .schedule(ControlKind::SchedulePause, "b-hourly", DEADLINE)
        .await
        .unwrap();

    let page = |path: &'static str| async move {
        let (code, ty, body) = http_get(addr, path).await;
        assert_eq!(code, 200, "{path}: {body}");
        assert!(ty.starts_with("application/json"), "{ty}");
        serde_json::from_str::<Value>(&body).unwrap()
    };
    let all = page("/api/schedules").await;
    let listed = all["schedules"].as_array().unwrap();
    assert_eq!(listed.len(), 2, "{all}");
    assert!(all.get("next_after").is_none(), "one page: {all}");
    let (a, b) = (&listed[0], &listed[1]);
    assert_eq!(a["id"], "a-nightly", "in id order: {all}");
    assert_eq!(a["cron"], "0 2 * * *");
    assert_eq!(a["timezone"], "Europe/Paris");
    assert_eq!(a["paused"], false);
    assert!(a["next_fire_at"].is_string(), "{a}");
    assert!(a.get("workflow").is_none(), "the list leaves workflows out");
    assert_eq!(b["id"], "b-hourly");
    assert_eq!(b["every_ms"], 3_600_000);
    assert_eq!(b["timezone"], "UTC");
    assert_eq!(b["paused"], true);
    assert!(b.get("next_fire_at").is_none(), "paused: {b}");
    assert_eq!(
        (b["fired"].clone(), b["skipped"].clone()),
        (json!(0), json!(0))
    );

    // A page at a time.
    let first = page("/api/schedules?limit=1").await;
    assert_eq!(first["schedules"][0]["id"], "a-nightly");
    assert_eq!(first["next_after"], "a-nightly");
    let second = page("/api/schedules?limit=1&after=a-nightly").await;
    assert_eq!(second["schedules"][0]["id"], "b-hourly");
    assert_eq!(
        second["next_after"], "b-hourly",
        "a full page names its last"
    );
    let last = page("/api/schedules?limit=1&after=b-hourly").await;
    assert_eq!(last, json!({"schedules": []}));
    for bad in [
        "/api/schedules?limit=0",
        "/api/schedules?limit=1001",
        "/api/schedules?limit=many",
    ] {
        let (code, _, body) = http_get(addr, bad).await;
        assert_eq!(code, 400, "{bad}: {body}");
    }
    let long = format!("/api/schedules?after={}", "x".repeat(101));
    let (code, _, body) = http_get(addr, &long).await;
    assert_eq!(code, 400, "{body}");

    scheduler.stop().await;
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_workflow_list_filters_by_name_time_and_id_prefix() {
    let mut env = Env::new().await;
    let (scheduler, _gate, addr) = env.with_http("w1").await;
    for (id, name) in [
        ("f-alpha-1", "nightly report"),
        ("f-alpha-2", "weekly report"),
        ("f-beta-1", "50%_off"),
        ("f-beta-2", "backup"),
    ] {
        let report = env
            .client
            .submit_and_wait(
                json!({"id": id, "name": name, "tasks": [{"id": "a", "type": "echo"}]}),
                DEADLINE,
            )
            .await
            .unwrap();
        assert_eq!(report.status, WorkflowStatus::Succeeded);
        // Creation times apart, so that a range can tell them apart.
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let list = |path: String| async move {
        let (code, _, body) = http_get(addr, &path).await;
        assert_eq!(code, 200, "{path}: {body}");
        let page: Value = serde_json::from_str(&body).unwrap();
        page["workflows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| {
                (
                    w["workflow_id"].as_str().unwrap().to_owned(),
                    w["created_at"].as_str().unwrap().to_owned(),
                )
            })
            .collect::<Vec<_>>()
    };
    let ids = |page: Vec<(String, String)>| page.into_iter().map(|(id, _)| id).collect::<Vec<_>>();
    let all = list("/api/workflows".into()).await;
    assert_eq!(
        ids(all.clone()),
        ["f-beta-2", "f-beta-1", "f-alpha-2", "f-alpha-1"],
        "newest first"
    );
    let created = |id: &str| all.iter().find(|(w, _)| w == id).unwrap().1.clone();

    // By name: a substring, `%` and `_` plain characters.
    assert_eq!(
        ids(list("/api/workflows?name=report".into()).await),
        ["f-alpha-2", "f-alpha-1"]
    );
    assert_eq!(
        ids(list("/api/workflows?name=%25_".into()).await),
        ["f-beta-1"]
    );
    assert_eq!(
        ids(list("/api/workflows?name=Report".into()).await),
        Vec::<String>::new(),
        "case-sensitive"
    );
    // By id prefix, with the other filters.
    assert_eq!(
        ids(list("/api/workflows?id_prefix=f-beta".into()).await),
        ["f-beta-2", "f-beta-1"]
    );
    assert_eq!(
        ids(list("/api/workflows?id_prefix=f-alpha-1".into()).await),
        ["f-alpha-1"]
    );
    assert_eq!(
        ids(list("/api/workflows?id_prefix=f-&name=report&status=succeeded&limit=1".into()).await),
        ["f-alpha-2"]
    );
    assert_eq!(
        ids(list("/api/workflows?id_prefix=f-%25".into()).await),
        Vec::<String>::new()
    );
    // By creation time: `from` inclusive, `to` exclusive.
    let (b1, a2) = (created("f-beta-1"), created("f-alpha-2"));
    assert_eq!(
        ids(list(format!("/api/workflows?from={a2}&to={b1}")).await),
        ["f-alpha-2"]
    );
    assert_eq!(
        ids(list(format!("/api/workflows?from={b1}")).await),
        ["f-beta-2", "f-beta-1"]
    );
    assert_eq!(
        ids(list(format!("/api/workflows?to={a2}")).await),
        ["f-alpha-1"]
    );
    // The same instant at another offset.
    let shifted = chrono::DateTime::parse_from_rfc3339(&b1)
        .unwrap()
        .with_timezone(&chrono::FixedOffset::east_opt(2 * 3600).unwrap())
        .to_rfc3339_opts(chrono::SecondsFormat::Micros, false)
        .replace('+', "%2B");
    assert_eq!(
        ids(list(format!("/api/workflows?from={shifted}")).await),
        ["f-beta-2", "f-beta-1"]
    );
    assert_eq!(
        ids(list("/api/workflows?limit=1000&from=&name=".into()).await).len(),
        4,
        "empty filters are none"
    );

    // Bad values: 400, with the reason.
    for bad in [
        "/api/workflows?limit=1001".to_owned(),
        "/api/workflows?limit=-1".to_owned(),
        "/api/workflows?status=lost".to_owned(),
        "/api/workflows?from=yesterday".to_owned(),
        "/api/workflows?to=2024-13-01T00:00:00Z".to_owned(),
        "/api/workflows?from=2024-05-01".to_owned(),
        format!("/api/workflows?from={b1}&to={a2}"),
        format!(
            "/api/workflows?from=2024-05-01T00:00:00.{}Z",
            "1".repeat(40)
        ),
        format!("/api/workflows?name={}", "n".repeat(257)),
        format!("/api/workflows?id_prefix={}", "i".repeat(129)),
        "/api/workflows?nmae=report".to_owned(),
    ] {
        let (code, ty, body) = http_get(addr, &bad).await;
        assert_eq!(code, 400, "{bad}: {body}");
        assert!(ty.starts_with("application/json"), "{bad}: {ty}");
        assert!(
            serde_json::from_str::<Value>(&body).unwrap()["error"].is_string(),
            "{bad}: {body}"
        );
    }
    // At the bounds: fine.
    let (code, _, body) = http_get(
        addr,
        &format!(
            "/api/workflows?name={}&id_prefix={}",
            "n".repeat(256),
            "i".repeat(128)
        ),
    )
    .await;
    assert_eq!(code, 200, "{body}");

    scheduler.stop().await;
    env.finish().await;
}

/// A running workflow larger than a report lists (the API's reports are
/// bounded to 1,000 tasks): the report counts every task by state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bounded_report_counts_every_task_by_state() {
    let mut env = Env::new().await;
    let (scheduler, gate, addr) = env.with_http("w1").await;
    // One gated root holds 1,199 dependents pending.
    held_workflow_of_1200(&env, &scheduler, "big").await;
    let (code, _, body) = http_get(addr, "/api/workflows/big").await;
    assert_eq!(code, 200, "{body}");
    let report: Value = serde_json::from_str(&body).unwrap();
    let listed = report["tasks"].as_object().unwrap().len() as u64;
    let elided = report["tasks_elided"].as_u64().unwrap();
    assert_eq!(listed + elided, 1_200, "{}", &body[..200]);
    assert!(elided > 0);
    assert_eq!(
        report["task_counts"],
        json!({"running": 1, "pending": 1_199})
    );
    gate.add_permits(1);
    env.finish().await;
}
