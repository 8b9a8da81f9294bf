//! The scheduler's HTTP endpoint (off unless `http_addr` is set):
//!
//! - `GET /healthz`: 200 when the broker session is up and the store
//!   answers, else 503; JSON `{"broker": bool, "store": bool}`.
//! - `GET /metrics`: Prometheus text format.
//! - `GET /api/workflows?status=S&limit=N&offset=K`: recent workflows,
//!   newest first (limit 1..=500, default 50).
//! - `GET /api/workflows/{id}`: a workflow's report (running workflows
//!   from the scheduler's memory, within [`REPORT_BOUNDS`]; ended ones
//!   as stored, within the report limit).
//! - `GET /api/workflows/{id}/tasks/{task}`: one task, its output in full.
//! - `GET /api/workers`: the worker registry.
//! - `GET /` and `GET /workflows/{id}`: the web page (see `page.html`).

use crate::{
    batch::RunningWorkflow,
    engine::{ReportBounds, TypeUsage},
    histogram::Histogram,
    metrics::Metrics,
    store::{Partitions, Store, StoreError},
    workers::SharedWorkers,
};
use axum::{
    Json, Router,
    extract::{self, Path, State},
    http::{StatusCode, header},
    response::{Html, IntoResponse, Response},
    routing::get,
};
use serde_json::Value;
use std::{fmt::Write, net::SocketAddr, sync::Arc, time::Duration};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use warren_shared::wire::{TaskReport, WorkflowReport, WorkflowSummary};

/// How long a request waits for the scheduler's loop or the store.
const ANSWER_WITHIN: Duration = Duration::from_secs(5);

/// A running workflow's report as the endpoint serves it: at most 1 MiB
/// and 1,000 tasks (the rest counted in `tasks_elided`, large outputs in
/// `output_elided`; read one task in full at
/// `/api/workflows/{id}/tasks/{task}`). The loop builds it, so it is kept
/// small: a page polling every second, or a client asking in a loop, costs
/// the loop a bounded piece of work per request, after its deliveries.
pub const REPORT_BOUNDS: ReportBounds = ReportBounds {
    max_bytes: 1024 * 1024,
    max_tasks: 1_000,
};

/// A question for the scheduler's loop, which alone holds running
/// workflows.
pub enum Query {
    /// The report of a running workflow within [`REPORT_BOUNDS`]; `None`
    /// when it is not running.
    Report {
        id: String,
        answer: oneshot::Sender<Option<WorkflowReport>>,
    },
    /// One task of a running workflow, its output in full: `None` when
    /// the workflow is not running here, `Some(None)` when it has no such
    /// task.
    Task {
        id: String,
        task: String,
        answer: oneshot::Sender<Option<Option<TaskReport>>>,
    },
}

/// What the endpoint answers from: the scheduler's metrics and the
/// workers it heard from, the store, and the loop.
#[derive(Clone)]
pub struct Sources {
    pub metrics: Arc<Metrics>,
    pub workers: SharedWorkers,
    pub store: Store,
    /// Questions for the loop, which alone holds running workflows.
    pub queries: mpsc::Sender<Query>,
}

/// Serves until `shutdown`. Returns the bound address once listening.
pub async fn serve(
    addr: SocketAddr,
    sources: Sources,
    shutdown: CancellationToken,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let app = Router::new()
        .route("/", get(page))
        .route("/workflows/{id}", get(page))
        .route("/healthz", get(healthz))
        .route("/metrics", get(prometheus))
        .route("/api/workflows", get(list))
        .route("/api/workflows/{id}", get(workflow))
        .route("/api/workflows/{id}/tasks/{task}", get(task))
        .route("/api/workers", get(list_workers))
        .with_state(sources);
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    tracing::info!(addr = %bound, "HTTP endpoint listening");
    let join = tokio::spawn(async move {
        let stop = async move { shutdown.cancelled().await };
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(stop)
            .await
        {
            tracing::error!(error = %e, "HTTP endpoint stopped");
        }
    });
    Ok((bound, join))
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(serde_json::json!({"error": message.into()}))).into_response()
}

async fn page() -> Html<&'static str> {
    Html(include_str!("page.html"))
}

async fn healthz(State(s): State<Sources>) -> Response {
    let broker = Metrics::get(&s.metrics.broker_connected) == 1;
    let store = matches!(
        tokio::time::timeout(ANSWER_WITHIN, s.store.ping()).await,
        Ok(Ok(()))
    );
    // A standby (another scheduler is active on its PostgreSQL store) is
    // alive but not serving: 503, with `active: false`.
    let active = s.store.partitioned().is_none_or(Partitions::is_leading);
    let status = if broker && store && active {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(serde_json::json!({"broker": broker, "store": store, "active": active})),
    )
        .into_response()
}

#[derive(serde::Deserialize)]
struct ListParams {
    status: Option<String>,
    limit: Option<u32>,
    offset: Option<u32>,
}

#[derive(serde::Serialize)]
struct ListPage {
    workflows: Vec<WorkflowSummary>,
    limit: u32,
    offset: u32,
}

async fn list(State(s): State<Sources>, extract::Query(p): extract::Query<ListParams>) -> Response {
    let limit = p.limit.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return error(StatusCode::BAD_REQUEST, "limit must be 1 to 500");
    }
    let offset = p.offset.unwrap_or(0);
    let status = p.status.filter(|s| !s.is_empty());
    let found = s.store.list_workflows(status, limit, offset).await;
    match found {
        Ok(workflows) => Json(ListPage {
            workflows,
            limit,
            offset,
        })
        .into_response(),
        Err(e) => store_error(e),
    }
}

/// Asks the loop about a running workflow: `Ok(None)` when the loop does
/// not hold it (or this scheduler is a standby, whose loop is not
/// running: read the store), a 503 when the loop does not answer in time.
async fn ask_loop<T>(
    s: &Sources,
    query: impl FnOnce(oneshot::Sender<Option<T>>) -> Query,
) -> Result<Option<T>, Response> {
    let (answer, answered) = oneshot::channel();
    let running = async {
        if !s.store.partitioned().is_none_or(Partitions::is_leading) {
            return None;
        }
        s.queries.send(query(answer)).await.ok()?;
        answered.await.ok()?
    };
    tokio::time::timeout(ANSWER_WITHIN, running)
        .await
        .map_err(|_| {
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "the scheduler is not answering (no broker session?)",
            )
        })
}

async fn workflow(State(s): State<Sources>, Path(id): Path<String>) -> Response {
    let asked = ask_loop(&s, |answer| Query::Report {
        id: id.clone(),
        answer,
    });
    match asked.await {
        Ok(Some(report)) => return Json(report).into_response(),
        Ok(None) => {}
        Err(unavailable) => return unavailable,
    }
    let key = id.clone();
    match s.store.lookup(vec![key]).await {
        Ok(mut found) => match found.pop().flatten() {
            Some(known) => match known.report {
                Some(report) => {
                    ([(header::CONTENT_TYPE, "application/json")], report).into_response()
                }
                // Running, and not in this scheduler's memory: owned by
                // another scheduler (read as stored), or between a restart
                // and its recovery.
                None => match stored_running(&s.store, &id).await {
                    // Rebuilt off the loop's thread: O(tasks) of work.
                    Ok(Some(stored)) => match tokio::task::spawn_blocking(move || {
                        crate::engine::stored_report(stored, REPORT_BOUNDS)
                    })
                    .await
                    {
                        Ok(Ok(Some(report))) => Json(report).into_response(),
                        Ok(Ok(None)) => error(StatusCode::SERVICE_UNAVAILABLE, "not loaded yet"),
                        Ok(Err(e)) => store_error(e.into()),
                        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
                    },
                    Ok(None) => error(StatusCode::SERVICE_UNAVAILABLE, "not loaded yet"),
                    Err(e) => store_error(e),
                },
            },
            None => error(StatusCode::NOT_FOUND, format!("no workflow {id}")),
        },
        Err(e) => store_error(e),
    }
}

async fn task(State(s): State<Sources>, Path((id, task)): Path<(String, String)>) -> Response {
    let asked = ask_loop(&s, |answer| Query::Task {
        id: id.clone(),
        task: task.clone(),
        answer,
    });
    match asked.await {
        Ok(Some(Some(report))) => return Json(report).into_response(),
        Ok(Some(None)) => return no_task(&id, &task),
        Ok(None) => {}
        Err(unavailable) => return unavailable,
    }
    // Ended, or running under another scheduler: its stored row.
    match s.store.lookup(vec![id.clone()]).await {
        Ok(found) if found.first().is_some_and(Option::is_some) => {}
        Ok(_) => return error(StatusCode::NOT_FOUND, format!("no workflow {id}")),
        Err(e) => return store_error(e),
    }
    match s.store.task_row(&id, &task).await {
        Ok(Some(row)) => match row.output.as_deref().map(serde_json::from_str::<Value>) {
            Some(Err(e)) => store_error(StoreError::Corrupt(format!("output of {task}: {e}"))),
            output => Json(TaskReport {
                state: row.state,
                attempts: row.attempt,
                depends_on: Vec::new(),
                output: output.and_then(Result::ok),
                output_elided: None,
                error: row.error,
                worker: row.worker,
                started_at: row.started_at,
                finished_at: row.finished_at,
            })
            .into_response(),
        },
        Ok(None) => no_task(&id, &task),
        Err(e) => store_error(e),
    }
}

fn no_task(id: &str, task: &str) -> Response {
    error(
        StatusCode::NOT_FOUND,
        format!("workflow {id} has no task {task}"),
    )
}

/// A running workflow another scheduler owns, as stored; `None` on SQLite,
/// whose one scheduler holds every running workflow in memory.
async fn stored_running(store: &Store, id: &str) -> Result<Option<RunningWorkflow>, StoreError> {
    match store.partitioned() {
        Some(parts) => parts.running_workflow(id).await,
        None => Ok(None),
    }
}

/// 503 when the store is closed (the scheduler is stopping), else 500.
fn store_error(e: StoreError) -> Response {
    let code = match e {
        StoreError::Closed => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    error(code, e.to_string())
}

async fn list_workers(State(s): State<Sources>) -> Response {
    let report = s
        .workers
        .lock()
        .expect("not poisoned")
        .report(chrono::Utc::now());
    Json(report).into_response()
}

async fn prometheus(State(s): State<Sources>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        render(&s.metrics),
    )
        .into_response()
}

/// The metrics in Prometheus' text format.
pub fn render(m: &Metrics) -> String {
    let mut out = String::new();
    let g = Metrics::get;
    let family = |out: &mut String, name: &str, kind: &str, help: &str| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    };
    family(
        &mut out,
        "warren_workflows_total",
        "counter",
        "Workflows by what happened to them.",
    );
    for (state, c) in [
        ("accepted", &m.engine.workflows_accepted),
        ("rejected", &m.engine.workflows_rejected),
        ("duplicate", &m.engine.workflows_duplicate),
        ("succeeded", &m.engine.workflows_succeeded),
        ("failed", &m.engine.workflows_failed),
        ("cancelled", &m.engine.workflows_cancelled),
    ] {
        let _ = writeln!(out, "warren_workflows_total{{state=\"{state}\"}} {}", g(c));
    }
    family(
        &mut out,
        "warren_workflows_running",
        "gauge",
        "Workflows running now.",
    );
    let _ = writeln!(out, "warren_workflows_running {}", g(&m.workflows_running));
    family(
        &mut out,
        "warren_tasks_total",
        "counter",
        "Task events: dispatched attempts, final successes and failures, retries, dead letters.",
    );
    for (event, c) in [
        ("dispatched", &m.engine.tasks_dispatched),
        ("succeeded", &m.engine.tasks_succeeded),
        ("failed", &m.engine.tasks_failed),
        ("retried", &m.engine.tasks_retried),
        ("lease_expired", &m.engine.leases_expired),
        ("dead_lettered", &m.engine.dead_lettered),
    ] {
        let _ = writeln!(out, "warren_tasks_total{{event=\"{event}\"}} {}", g(c));
    }
    family(
        &mut out,
        "warren_in_flight_tasks",
        "gauge",
        "Tasks dispatched and not yet answered, by task queue.",
    );
    for (queue, n) in m.in_flight.lock().expect("not poisoned").iter() {
        let _ = writeln!(
            out,
            "warren_in_flight_tasks{{queue=\"{}\"}} {n}",
            label(queue)
        );
    }
    let types = m.types.lock().expect("not poisoned").clone();
    for (name, help, value) in [
        (
            "warren_type_running_tasks",
            "Tasks of a limited type (WARREN_TYPE_LIMITS) running now.",
            (|u: &TypeUsage| u.running) as fn(&TypeUsage) -> u64,
        ),
        (
            "warren_type_limit",
            "The most tasks of the type allowed to run at once.",
            |u| u.limit,
        ),
        (
            "warren_type_waiting_tasks",
            "Ready tasks of the type held back by its limit.",
            |u| u.waiting,
        ),
    ] {
        if types.is_empty() {
            break;
        }
        family(&mut out, name, "gauge", help);
        for u in &types {
            let _ = writeln!(out, "{name}{{type=\"{}\"}} {}", label(&u.kind), value(u));
        }
    }
    for (name, c, help) in [
        (
            "warren_results_total",
            &m.engine.results_committed,
            "Results committed.",
        ),
        (
            "warren_results_ignored_total",
            &m.engine.results_ignored,
            "Results ignored: duplicates, late, or for ended workflows.",
        ),
        (
            "warren_results_forged_total",
            &m.engine.results_forged,
            "Results refused without their attempt's token (dead-lettered).",
        ),
        (
            "warren_batches_committed_total",
            &m.batches_committed,
            "Store transactions.",
        ),
        (
            "warren_reconnects_total",
            &m.reconnects,
            "Broker sessions lost and retried.",
        ),
        (
            "warren_messages_received_total",
            &m.messages_received,
            "Messages taken from the requests and results queues.",
        ),
        (
            "warren_messages_published_total",
            &m.messages_published,
            "Messages published.",
        ),
        (
            "warren_forwarded_total",
            &m.forwarded,
            "Requests and results passed on to the scheduler owning their partition.",
        ),
        (
            "warren_inputs_too_large_total",
            &m.engine.inputs_too_large,
            "Tasks failed because their resolved input passed WARREN_MAX_TASK_INPUT_BYTES.",
        ),
        (
            "warren_reports_elided_total",
            &m.engine.reports_elided,
            "Final reports with outputs or tasks left out to fit WARREN_MAX_REPORT_BYTES.",
        ),
        (
            "warren_results_too_large_total",
            &m.results_too_large,
            "Results over WARREN_MAX_RESULT_BYTES, dead-lettered unread.",
        ),
        (
            "warren_replies_refused_total",
            &m.replies_refused,
            "Requests refused (dead-lettered) for a reply_to the scheduler may not write to.",
        ),
        (
            "warren_messages_refused_total",
            &m.engine.messages_refused,
            "Messages the broker refused for good; what they belonged to ended.",
        ),
    ] {
        family(&mut out, name, "counter", help);
        let _ = writeln!(out, "{name} {}", g(c));
    }
    for (name, c, help) in [
        (
            "warren_active_tasks",
            &m.engine.active_tasks,
            "Tasks of running workflows held in memory (budget WARREN_MAX_ACTIVE_TASKS).",
        ),
        (
            "warren_active_bytes",
            &m.engine.active_bytes,
            "Bytes of running workflows held in memory (budget WARREN_MAX_ACTIVE_BYTES).",
        ),
        (
            "warren_requests_waiting",
            &m.requests_waiting,
            "Submissions held unacked in the broker until the memory budget has room.",
        ),
    ] {
        family(&mut out, name, "gauge", help);
        let _ = writeln!(out, "{name} {}", g(c));
    }
    family(
        &mut out,
        "warren_broker_connected",
        "gauge",
        "1 while the scheduler has a broker session.",
    );
    let _ = writeln!(out, "warren_broker_connected {}", g(&m.broker_connected));
    family(
        &mut out,
        "warren_scheduler_active",
        "gauge",
        "1 for the active scheduler of the store, 0 for a standby.",
    );
    let _ = writeln!(out, "warren_scheduler_active {}", g(&m.active));
    histogram(
        &mut out,
        "warren_dispatch_latency_seconds",
        "From a task becoming ready to its dispatch.",
        &m.engine.dispatch_latency,
    );
    histogram(
        &mut out,
        "warren_task_duration_seconds",
        "An attempt's run time, as its worker reports it.",
        &m.engine.task_duration,
    );
    out
}

/// A label value as the exposition format writes it: `\`, `"` and line
/// feeds escaped.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn histogram(out: &mut String, name: &str, help: &str, h: &Histogram) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
    let (buckets, sum, count) = h.read();
    for (bound, n) in buckets {
        let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {n}");
    }
    let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
    let _ = writeln!(out, "{name}_sum {sum}");
    let _ = writeln!(out, "{name}_count {count}");
}
