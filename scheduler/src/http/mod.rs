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
//!
//! The handlers of the status API are in `api`, the Prometheus text in
//! `prometheus`.

mod api;
mod prometheus;

pub use prometheus::render;

use crate::{engine::ReportBounds, metrics::Metrics, store::Store, workers::SharedWorkers};
use axum::{
    Json, Router,
    http::StatusCode,
    response::{Html, IntoResponse, Response},
    routing::get,
};
use std::{net::SocketAddr, sync::Arc, time::Duration};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use warren_shared::wire::{TaskReport, WorkflowReport};

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
        .route("/healthz", get(api::healthz))
        .route("/metrics", get(prometheus::prometheus))
        .route("/api/workflows", get(api::list))
        .route("/api/workflows/{id}", get(api::workflow))
        .route("/api/workflows/{id}/tasks/{task}", get(api::task))
        .route("/api/workers", get(api::list_workers))
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

/// An error answer: `{"error": message}`.
fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(serde_json::json!({"error": message.into()}))).into_response()
}

async fn page() -> Html<&'static str> {
    Html(include_str!("page.html"))
}
