//! The status API: `/healthz`, `/api/whoami`, the workflow list, a
//! workflow's report, one task, the worker registry, what is paused, the
//! schedules; and the actions, cancelling and re-running a workflow.

use super::{ANSWER_WITHIN, Acted, Action, Query, REPORT_BOUNDS, Sources, auth::Granted, error};
use crate::schedule::MAX_LIST;
use crate::store::filter::{MAX_ID_PREFIX, MAX_NAME_FILTER, WorkflowFilter};
use crate::{
    batch::{Known, RunningWorkflow},
    engine::schedules::info,
    metrics::Metrics,
    schedule::MAX_SCHEDULE_ID_LEN,
    store::{Partitions, Store, StoreError},
    validate::MAX_ID_LEN,
};
use axum::{
    Extension, Json,
    body::Bytes,
    extract::{
        self, Path, State,
        rejection::{BytesRejection, QueryRejection},
    },
    http::{StatusCode, header},
    response::{IntoResponse, Response},
};
use chrono::{DateTime, Utc};
use serde_json::Value;
use tokio::sync::oneshot;
use warren_shared::wire::{
    SchedulesPage, TaskReport, WorkflowReport, WorkflowStatus, WorkflowSummary,
};

/// Largest `offset` of the workflow list: each row skipped is read by the
/// store, so paging is kept shallow (filter by `status` to go further).
pub const MAX_LIST_OFFSET: u32 = 100_000;

pub(super) async fn healthz(State(s): State<Sources>) -> Response {
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

/// Most workflows one list answers (`limit`).
pub const MAX_LIST_LIMIT: u32 = 1_000;

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ListParams {
    status: Option<String>,
    name: Option<String>,
    from: Option<String>,
    to: Option<String>,
    id_prefix: Option<String>,
    limit: Option<u32>,
    offset: Option<u32>,
}

#[derive(serde::Serialize)]
struct ListPage {
    workflows: Vec<WorkflowSummary>,
    limit: u32,
    offset: u32,
}

/// An RFC 3339 time of the list's `from` or `to`, or why not.
fn list_time(which: &str, value: Option<String>) -> Result<Option<DateTime<Utc>>, String> {
    let Some(v) = value.filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    // The longest RFC 3339 time: nanoseconds and an offset.
    const MAX_TIME: usize = "2024-01-01T00:00:00.123456789+00:00".len();
    if v.len() > MAX_TIME {
        return Err(format!(
            "{which} is {} bytes; an RFC 3339 time is at most {MAX_TIME}",
            v.len()
        ));
    }
    DateTime::parse_from_rfc3339(&v)
        .map(|t| Some(t.with_timezone(&Utc)))
        .map_err(|e| format!("{which} must be an RFC 3339 time (2024-05-01T12:00:00Z): {e}"))
}

/// A text filter of the list, at most `max` characters, or why not.
fn list_text(which: &str, value: Option<String>, max: usize) -> Result<Option<String>, String> {
    match value.filter(|v| !v.is_empty()) {
        Some(v) if v.chars().count() > max => Err(format!(
            "{which} is {} characters; at most {max}",
            v.chars().count()
        )),
        v => Ok(v),
    }
}

/// The list's filters, checked: every one bounded; else why not (a 400).
fn list_filter(p: ListParams) -> Result<WorkflowFilter, String> {
    let status = p.status.filter(|s| !s.is_empty());
    if let Some(st) = &status
        && WorkflowStatus::parse(st).is_none_or(|st| st == WorkflowStatus::NotFound)
    {
        return Err(
            "status must be scheduled, queued, running, succeeded, failed, rejected or cancelled"
                .into(),
        );
    }
    let filter = WorkflowFilter {
        status,
        name: list_text("name", p.name, MAX_NAME_FILTER)?,
        from: list_time("from", p.from)?,
        to: list_time("to", p.to)?,
        id_prefix: list_text("id_prefix", p.id_prefix, MAX_ID_PREFIX)?,
    };
    if let (Some(from), Some(to)) = (filter.from, filter.to)
        && from > to
    {
        return Err("from is after to".into());
    }
    Ok(filter)
}

/// `GET /api/workflows?status=&name=&from=&to=&id_prefix=&limit=&offset=`:
/// workflows newest first, of one status, whose name contains `name`,
/// created in `[from, to)`, whose id starts with `id_prefix`.
pub(super) async fn list(
    State(s): State<Sources>,
    params: Result<extract::Query<ListParams>, QueryRejection>,
) -> Response {
    let p = match params {
        Ok(extract::Query(p)) => p,
        Err(rejected) => return error(StatusCode::BAD_REQUEST, rejected.body_text()),
    };
    let limit = p.limit.unwrap_or(50);
    if !(1..=MAX_LIST_LIMIT).contains(&limit) {
        return error(
            StatusCode::BAD_REQUEST,
            format!("limit must be 1 to {MAX_LIST_LIMIT}"),
        );
    }
    let offset = p.offset.unwrap_or(0);
    if offset > MAX_LIST_OFFSET {
        return error(
            StatusCode::BAD_REQUEST,
            format!(
                "offset must be at most {MAX_LIST_OFFSET}; filter by status or time to go further"
            ),
        );
    }
    let filter = match list_filter(p) {
        Ok(f) => f,
        Err(bad) => return error(StatusCode::BAD_REQUEST, bad),
    };
    let found = s.store.list_workflows(filter, limit, offset).await;
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

/// What the caller may do: `{"scope": "read"|"admin", "token": bool}`
/// (`token` false: no tokens are configured, everyone on loopback reads).
/// The page asks it to know whether to offer actions.
pub(super) async fn whoami(Extension(g): Extension<Granted>) -> Response {
    Json(serde_json::json!({"scope": g.scope.as_str(), "token": g.token})).into_response()
}

/// A workflow id longer than any can be: answered without a look-up.
fn too_long(id: &str) -> bool {
    id.chars().count() > MAX_ID_LEN
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

pub(super) async fn workflow(State(s): State<Sources>, Path(id): Path<String>) -> Response {
    if too_long(&id) {
        return no_workflow(&id);
    }
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
            None => no_workflow(&id),
        },
        Err(e) => store_error(e),
    }
}

/// `GET /api/workflows/{id}/tasks/{task}`: one task, its output in full,
/// with its `attempt_log` (each attempt whose result was committed: its
/// worker and times) from the store; a running workflow's task from the
/// loop, an ended one's from its stored row (its `history` from the
/// stored report).
pub(super) async fn task(
    State(s): State<Sources>,
    Path((id, task)): Path<(String, String)>,
) -> Response {
    if too_long(&id) {
        return no_workflow(&id);
    }
    let asked = ask_loop(&s, |answer| Query::Task {
        id: id.clone(),
        task: task.clone(),
        answer,
    });
    let mut found = match asked.await {
        Ok(Some(Some(report))) => report,
        Ok(Some(None)) => return no_task(&id, &task),
        Ok(None) => match stored_task(&s, &id, &task).await {
            Ok(found) => found,
            Err(answer) => return *answer,
        },
        Err(unavailable) => return unavailable,
    };
    match s.store.attempt_log(&id, &task).await {
        Ok(log) => found.attempt_log = log,
        Err(e) => return store_error(e),
    }
    Json(found).into_response()
}

/// A task of a workflow this scheduler does not run (ended, or running
/// under another scheduler): its stored row, its input resolved again
/// from the stored rows it reads (those alone are read), and its history
/// from the stored final report.
async fn stored_task(s: &Sources, id: &str, task: &str) -> Result<TaskReport, Box<Response>> {
    let fail = |e| Box::new(store_error(e));
    let Some(known) = s
        .store
        .lookup(vec![id.to_owned()])
        .await
        .map_err(fail)?
        .pop()
        .flatten()
    else {
        return Err(Box::new(no_workflow(id)));
    };
    let Some(row) = s.store.task_row(id, task).await.map_err(fail)? else {
        return Err(Box::new(no_task(id, task)));
    };
    let output = match row.output.as_deref().map(serde_json::from_str::<Value>) {
        Some(Err(e)) => {
            let e = StoreError::Corrupt(format!("output of {task}: {e}"));
            return Err(fail(e));
        }
        output => output.and_then(Result::ok),
    };
    let history = known
        .report
        .as_deref()
        .and_then(|r| serde_json::from_str::<WorkflowReport>(r).ok())
        .and_then(|mut r| r.tasks.remove(task))
        .map(|t| t.history)
        .unwrap_or_default();
    let mut input = None;
    if let Some((definition, created_at)) = s.store.definition(id).await.map_err(fail)?
        && let Some(sources) = crate::engine::input_sources(&definition, id, task)
    {
        let mut tasks = Vec::with_capacity(sources.len());
        for source in sources {
            if let Some(r) = s.store.task_row(id, &source).await.map_err(fail)? {
                tasks.push(r);
            }
        }
        let stored = RunningWorkflow {
            id: id.to_owned(),
            seq: 0,
            definition,
            created_at,
            tasks,
            replies: Vec::new(),
            runs: Vec::new(),
        };
        input = crate::engine::stored_task_input(stored, task, s.max_task_input_bytes);
    }
    Ok(TaskReport {
        state: row.state,
        attempts: row.attempt,
        depends_on: Vec::new(),
        output,
        output_elided: None,
        error: row.error,
        skip_reason: row.skip_reason,
        worker: row.worker,
        started_at: row.started_at,
        finished_at: row.finished_at,
        history,
        attempt_log: Vec::new(),
        input,
    })
}

fn no_workflow(id: &str) -> Response {
    error(
        StatusCode::NOT_FOUND,
        format!("no workflow {}", crate::validate::shortened(id, MAX_ID_LEN)),
    )
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

/// `GET /api/pauses`: what is paused, namespace-wide, as stored (also on
/// a standby): the answer a `pause` or `resume` control request gets.
pub(super) async fn pauses(State(s): State<Sources>) -> Response {
    match s.store.pauses().await {
        Ok(pauses) => Json(crate::pauses::report(&pauses, Vec::new())).into_response(),
        Err(e) => store_error(e),
    }
}

#[derive(serde::Deserialize)]
pub(super) struct SchedulesParams {
    after: Option<String>,
    limit: Option<u32>,
}

/// `GET /api/schedules?after=ID&limit=N`: schedules in id order after
/// `after`, as stored (also on a standby): the page a `schedule.list`
/// control request answers, `next_after` naming where the next one starts.
pub(super) async fn schedules(
    State(s): State<Sources>,
    extract::Query(p): extract::Query<SchedulesParams>,
) -> Response {
    let limit = p.limit.unwrap_or(MAX_LIST);
    if !(1..=MAX_LIST).contains(&limit) {
        return error(
            StatusCode::BAD_REQUEST,
            format!("limit must be 1 to {MAX_LIST}"),
        );
    }
    let after = p.after.filter(|a| !a.is_empty());
    if after
        .as_deref()
        .is_some_and(|a| a.chars().count() > MAX_SCHEDULE_ID_LEN)
    {
        return error(
            StatusCode::BAD_REQUEST,
            format!("after is a schedule id, at most {MAX_SCHEDULE_ID_LEN} characters"),
        );
    }
    match s.store.schedules_page(after, limit).await {
        Ok(page) => {
            let next_after = (page.len() == limit as usize)
                .then(|| page.last().map(|(row, _)| row.id.to_string()))
                .flatten();
            Json(SchedulesPage {
                schedules: page
                    .iter()
                    .map(|(row, status)| info(row, status.as_deref()))
                    .collect(),
                next_after,
                errors: Vec::new(),
            })
            .into_response()
        }
        Err(e) => store_error(e),
    }
}

pub(super) async fn list_workers(State(s): State<Sources>) -> Response {
    let report = s
        .workers
        .lock()
        .expect("not poisoned")
        .report(chrono::Utc::now());
    Json(report).into_response()
}

/// `POST /api/workflows/{id}/cancel`: a `cancel` control request, applied
/// by the loop exactly as one from the broker is (see `Query::Cancel`),
/// answered with the report its reply would carry: 200, or 404 with
/// status `not_found`. A workflow this scheduler does not run is answered
/// from the store as the control request would be (ended: its report;
/// unknown: `not_found`); one running elsewhere gets 409 (another
/// scheduler owns it) or 503 (standing by, or between broker sessions).
pub(super) async fn cancel(
    State(s): State<Sources>,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    // No body is used; one without a length is cut at the limit here.
    if let Err(refused) = action_body(&s, &id, body) {
        return *refused;
    }
    let asked = ask_loop(&s, |answer| Query::Act {
        id: id.clone(),
        action: Action::Cancel,
        answer,
    });
    let elsewhere = match asked.await {
        Ok(Some(Acted::Report(json))) => return report(json),
        Ok(Some(Acted::NotOwned)) => true,
        Ok(None) => false,
        // Not taken since (the loop drops a cancel whose asker is gone),
        // unless it was being committed at that moment.
        Err(_) => {
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "the scheduler did not answer within {ANSWER_WITHIN:?} (no broker \
                     session?); see the workflow's status before trying again"
                ),
            );
        }
    };
    match s.store.lookup(vec![id.clone()]).await {
        Ok(mut found) => match found.pop().flatten() {
            // Ended: its final report. (A scheduled or queued workflow's
            // row has a report too, but it has not ended.)
            Some(Known {
                report: Some(ended),
                status,
            }) if WorkflowStatus::parse(&status).is_some_and(WorkflowStatus::is_final) => {
                report(ended.into_bytes())
            }
            Some(_) if elsewhere => error(
                StatusCode::CONFLICT,
                format!(
                    "workflow {id} runs on another scheduler (the owner of its partition, \
                     or it is changing hands): cancel it through that scheduler's endpoint, or \
                     with a `cancel` control request (`warren cancel`), which reaches the owner"
                ),
            ),
            Some(_) => error(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "workflow {id} is running, but this scheduler cannot cancel it now \
                     (standing by, or between broker sessions): retry, or send a `cancel` \
                     control request (`warren cancel`)"
                ),
            ),
            None => report(serde_json::to_vec(&WorkflowReport::not_found(&id)).unwrap_or_default()),
        },
        Err(e) => store_error(e),
    }
}

/// An action's body within the limit (413 counted otherwise) and its
/// workflow id one an id can be (400 otherwise).
fn action_body(
    s: &Sources,
    id: &str,
    body: Result<Bytes, BytesRejection>,
) -> Result<Bytes, Box<Response>> {
    let body = body.map_err(|rejected| {
        if rejected.status() == StatusCode::PAYLOAD_TOO_LARGE {
            Metrics::add(&s.metrics.http_too_large, 1);
        }
        Box::new(error(rejected.status(), rejected.body_text()))
    })?;
    if too_long(id) {
        return Err(Box::new(error(
            StatusCode::BAD_REQUEST,
            format!("workflow ids are at most {MAX_ID_LEN} characters"),
        )));
    }
    Ok(body)
}

/// What `POST /api/workflows/{id}/rerun` may carry.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RerunBody {
    #[serde(default)]
    from: Option<Vec<String>>,
    #[serde(default)]
    rerun_id: Option<String>,
}

/// `POST /api/workflows/{id}/rerun`: a `rerun` control request (the body,
/// if any, its `from` and `rerun_id`), applied by the loop exactly as one
/// from the broker is, answered with the new run's report as it starts,
/// or the refusal (status `rejected`, the reason in `errors`): 200, or 404
/// with status `not_found`. A workflow another scheduler owns gets 409; a
/// scheduler standing by, or between broker sessions, 503.
pub(super) async fn rerun(
    State(s): State<Sources>,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let body = match action_body(&s, &id, body) {
        Ok(b) => b,
        Err(refused) => return *refused,
    };
    let asked: RerunBody = if body.iter().all(u8::is_ascii_whitespace) {
        RerunBody::default()
    } else {
        match serde_json::from_slice(&body) {
            Ok(b) => b,
            Err(e) => return error(StatusCode::BAD_REQUEST, format!("rerun body: {e}")),
        }
    };
    if let Err(why) =
        crate::scheduler::check_rerun_fields(asked.from.as_deref(), asked.rerun_id.as_deref())
    {
        return error(StatusCode::BAD_REQUEST, why);
    }
    let ask = crate::engine::RerunAsk::new(asked.from.unwrap_or_default(), asked.rerun_id);
    let asked = ask_loop(&s, |answer| Query::Act {
        id: id.clone(),
        action: Action::Rerun(ask),
        answer,
    });
    match asked.await {
        Ok(Some(Acted::Report(json))) => report(json),
        Ok(Some(Acted::NotOwned)) => error(
            StatusCode::CONFLICT,
            format!(
                "workflow {id} belongs to another scheduler (the owner of its partition): \
                 re-run it with a `rerun` control request (`warren rerun`), which reaches the owner"
            ),
        ),
        Ok(None) | Err(_) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "the scheduler did not take the rerun within {ANSWER_WITHIN:?} (standing by, or \
                 no broker session?); see the workflow's status before trying again"
            ),
        ),
    }
}

/// A control request's report as an answer: 404 when it says
/// `not_found`, else 200.
fn report(json: Vec<u8>) -> Response {
    #[derive(serde::Deserialize)]
    struct Peek {
        status: Option<WorkflowStatus>,
    }
    let code = match serde_json::from_slice::<Peek>(&json) {
        Ok(Peek {
            status: Some(WorkflowStatus::NotFound),
        }) => StatusCode::NOT_FOUND,
        _ => StatusCode::OK,
    };
    (code, [(header::CONTENT_TYPE, "application/json")], json).into_response()
}
