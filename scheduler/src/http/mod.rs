//! The scheduler's HTTP endpoint (off unless `http_addr` is set).
//!
//! Open to anyone who reaches it:
//! - `GET /healthz`: 200 when the broker session is up, the store answers
//!   and this scheduler is active, else 503; JSON `{"broker": bool,
//!   "store": bool, "active": bool}` and nothing else. No token and no
//!   `Host` check: load balancers probe it by address.
//! - `GET /` and `GET /workflows/{id}`: the web page (`page.html`), which
//!   holds no data: its script reads the API with the token it is given.
//!
//! With a token of scope `read` (or `admin`):
//! - `GET /metrics`: Prometheus text format.
//! - `GET /api/whoami`: `{"scope": "read"|"admin", "token": bool}`.
//! - `GET /api/workflows?status=S&name=N&from=T&to=T&id_prefix=P&limit=N&offset=K`:
//!   recent workflows, newest first, narrowed by status, a substring of
//!   the name, the creation time (`from` inclusive, `to` exclusive, RFC
//!   3339) and an id prefix ([`crate::store::filter::WorkflowFilter`]; names and prefixes
//!   bounded as names and ids are; limit 1..=1000, default 50; offset at
//!   most 100,000; 400 on a bad or unknown parameter).
//! - `GET /api/workflows/{id}`: a workflow's report (running workflows
//!   from the scheduler's memory, within [`REPORT_BOUNDS`]; ended ones
//!   as stored, within the report limit).
//! - `GET /api/workflows/{id}/tasks/{task}`: one task, its output in full.
//! - `GET /api/workers`: the worker registry.
//! - `GET /api/pauses`: the paused task queues and types (as stored, so
//!   the same from every scheduler of the namespace).
//! - `GET /api/schedules?after=ID&limit=N`: schedules in id order (limit
//!   1..=1000, default 1000), as stored: a `schedule.list` answer.
//!
//! With a token of scope `admin`:
//! - `POST /api/workflows/{id}/cancel`: a `cancel` control request,
//!   applied by the loop in its next batch; answers the reply's report.
//! - `POST /api/workflows/{id}/rerun` with an optional JSON body
//!   `{"from": [...], "rerun_id": "..."}`: a `rerun` control request,
//!   applied the same way; answers the new run's report as it starts (or
//!   the refusal, status `rejected`).
//!
//! Without tokens configured the endpoint listens on loopback only (see
//! [`auth::check_exposure`]) and everyone gets `read`. Who may do what is
//! `auth`; the names it answers to (against DNS rebinding) `hosts`; the
//! connections and their bounds `server`; the handlers of the API `api`,
//! the Prometheus text `prometheus`.

mod api;
pub mod auth;
pub mod hosts;
mod prometheus;
mod server;

pub use auth::{Scope, Tokens};
pub use hosts::Hosts;
pub use prometheus::render;

use crate::{engine::ReportBounds, metrics::Metrics, store::Store, workers::SharedWorkers};
use axum::{
    Json, Router,
    extract::{DefaultBodyLimit, Request, State},
    http::{HeaderValue, StatusCode, header},
    middleware::{self, Next},
    response::{Html, IntoResponse, Response},
    routing::{get, post},
};
use std::{net::SocketAddr, sync::Arc, time::Duration};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use warren_shared::wire::{TaskReport, WorkflowReport};

/// Largest request body: a rerun's (`from` naming up to 100 tasks of 128
/// characters fits); the other requests take none. Past it: 413.
pub const MAX_BODY_BYTES: usize = 16 * 1024;

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
    /// Cancel or re-run a workflow exactly as a `cancel` or `rerun`
    /// control request does: the loop applies it in a batch (committed,
    /// its messages published) and answers once that batch is done.
    /// `None` when the loop did not take it (the sender is dropped if the
    /// batch fails).
    Act {
        id: String,
        action: Action,
        answer: oneshot::Sender<Option<Acted>>,
    },
}

/// What a [`Query::Act`] asks.
#[derive(Debug, Clone)]
pub enum Action {
    Cancel,
    Rerun(crate::engine::RerunAsk),
}

/// What came of a [`Query::Act`].
#[derive(Debug)]
pub enum Acted {
    /// The JSON of the report the control request's reply carries: for a
    /// `cancel`, the workflow cancelled, or as it is when it was not
    /// running (ended, or `not_found`); for a `rerun`, the new run as it
    /// starts, or the refusal.
    Report(Vec<u8>),
    /// Another scheduler owns the workflow's partition (PostgreSQL).
    NotOwned,
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
    /// The bound of a task's resolved input (`WARREN_MAX_TASK_INPUT_BYTES`):
    /// a stored task's input is resolved again within it.
    pub max_task_input_bytes: usize,
    /// The store's workflows counted by status, and when: counted at most
    /// every [`prometheus::ROWS_EVERY`], however often `/metrics` is read.
    pub store_rows: Arc<tokio::sync::Mutex<Option<prometheus::RowsCounted>>>,
}

/// Who the endpoint lets in: its tokens and the names it answers to
/// besides the loopback names and its own address.
#[derive(Debug, Clone, Default)]
pub struct Access {
    pub tokens: Tokens,
    pub hosts: Hosts,
}

/// Serves until `shutdown`. Returns the bound address once listening.
/// Refuses (before binding) a non-loopback `addr` without tokens.
pub async fn serve(
    addr: SocketAddr,
    sources: Sources,
    access: Access,
    shutdown: CancellationToken,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    auth::check_exposure(addr, &access.tokens)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::PermissionDenied, e))?;
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let hosts = access.hosts.with_defaults(bound);
    if access.tokens.is_empty() {
        tracing::info!(
            addr = %bound,
            %hosts,
            "HTTP endpoint listening on loopback without tokens: read-only, open to every \
             process of this host; set tokens to allow actions or other addresses"
        );
    } else {
        tracing::info!(addr = %bound, tokens = ?access.tokens, %hosts, "HTTP endpoint listening");
    }
    let app = router(sources, access.tokens, hosts);
    Ok((bound, tokio::spawn(server::run(listener, app, shutdown))))
}

/// The routes, each group behind what it needs: the page and `/healthz`
/// nothing (`/healthz` not even a known `Host`), the API a `read` token,
/// the actions an `admin` one.
fn router(sources: Sources, tokens: Tokens, hosts: Hosts) -> Router {
    let tokens = Arc::new(tokens);
    let metrics = sources.metrics.clone();
    let needs = |scope| {
        middleware::from_fn_with_state(
            auth::Needs {
                tokens: tokens.clone(),
                scope,
                metrics: metrics.clone(),
            },
            auth::require,
        )
    };
    let read = Router::new()
        .route("/metrics", get(prometheus::prometheus))
        .route("/api/whoami", get(api::whoami))
        .route("/api/workflows", get(api::list))
        .route("/api/workflows/{id}", get(api::workflow))
        .route("/api/workflows/{id}/tasks/{task}", get(api::task))
        .route("/api/workers", get(api::list_workers))
        .route("/api/pauses", get(api::pauses))
        .route("/api/schedules", get(api::schedules))
        .route_layer(needs(Scope::Read));
    let admin = Router::new()
        .route("/api/workflows/{id}/cancel", post(api::cancel))
        .route("/api/workflows/{id}/rerun", post(api::rerun))
        .route_layer(needs(Scope::Admin));
    let named = Router::new()
        .route("/", get(page))
        .route("/workflows/{id}", get(page))
        .merge(read)
        .merge(admin)
        .route_layer(middleware::from_fn_with_state(
            hosts::HostCheck {
                hosts: Arc::new(hosts),
                metrics: metrics.clone(),
            },
            hosts::check,
        ));
    Router::new()
        .route("/healthz", get(api::healthz))
        .merge(named)
        .layer(middleware::from_fn_with_state(metrics, limit_body))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(middleware::from_fn(protect))
        .with_state(sources)
}

/// Middleware: 413 for a declared body over [`MAX_BODY_BYTES`], before
/// anything reads it (a body without a length is cut at the same limit by
/// the one handler that reads one).
async fn limit_body(State(m): State<Arc<Metrics>>, req: Request, next: Next) -> Response {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(n) = declared.filter(|n| *n > MAX_BODY_BYTES as u64) {
        Metrics::add(&m.http_too_large, 1);
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("a request body of {n} bytes, over the limit of {MAX_BODY_BYTES}"),
        );
    }
    next.run(req).await
}

/// Middleware: headers on every answer. Nothing is cached (the API's
/// answers are per token), MIME types are not sniffed, no referrer is
/// sent, and the page is never framed (its cancel button could be
/// clicked through another site's frame) nor talks to another origin.
async fn protect(req: Request, next: Next) -> Response {
    let mut r = next.run(req).await;
    let h = r.headers_mut();
    for (name, value) in [
        (header::CACHE_CONTROL, "no-store"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "no-referrer"),
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
             connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
        ),
    ] {
        h.insert(name, HeaderValue::from_static(value));
    }
    r
}

/// An error answer: `{"error": message}`.
fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(serde_json::json!({"error": message.into()}))).into_response()
}

/// The page, with the layout library it uses inlined where it says
/// `<!-- vendor:dagre -->` (`vendor/README.md`).
async fn page() -> Html<&'static str> {
    static PAGE: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        include_str!("page.html").replacen(
            "<!-- vendor:dagre -->",
            &format!("<script>{}</script>", include_str!("vendor/dagre.min.js")),
            1,
        )
    });
    Html(PAGE.as_str())
}
