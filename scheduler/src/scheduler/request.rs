//! Requests on `{ns}.workflows`: parsing one (a workflow to validate, or a
//! control request: `status`, `cancel`, `rerun`, `workers`, `pause`,
//! `resume`, `prune`, and the `schedule.*` ones; `rerun`, `prune` and the
//! `schedule.*` ones have rooms of their own: `rerun.rs`, `prune.rs`,
//! `schedules.rs`) and applying it to the engine, answering duplicates
//! from what the store knows. A cancel or rerun from the HTTP endpoint is
//! applied here too, answered through [`Reply`]. A `pause` or `resume` is applied to the store first
//! ([`Request::change_pause`]), in a transaction of its own, then to the
//! engine with the batch.

use crate::{
    batch::{Known, ReplyTo, StoredWorkflow, TaskRow},
    engine::Engine,
    metrics::Metrics,
    pauses::{self, PauseChange, PauseKind, PauseOutcome},
    store::{Store, StoreError},
    validate::{self, Rejected},
};
use chrono::Utc;
use lapin::message::Delivery;
use serde::Deserialize;
use std::{
    collections::HashMap,
    sync::{Arc, OnceLock},
};
use warren_shared::topology::{CONTROL_ROUTING_KEY, is_reply_queue};
use warren_shared::wire::{
    ControlKind, ControlRequest, TaskReport, WorkflowReport, WorkflowStatus,
};

use super::rerun::{Rerun, apply_rerun, check_rerun, rerun_request};
use super::{
    Scheduler,
    ownership::Ownership,
    schedules::{self, ScheduleRequest},
};

/// What a request turned out to be, after parsing.
pub(super) enum Request {
    Submit(Submit),
    Status {
        id: String,
        /// One task only, its output in full.
        task: Option<String>,
        reply: ReplyTo,
    },
    Cancel {
        id: String,
        reply: Reply,
    },
    /// `rerun`: a new run of an ended workflow.
    Rerun(Rerun),
    Workers {
        reply: ReplyTo,
    },
    /// `pause` or `resume`: `outcome` is the store's, filled in by
    /// [`Request::change_pause`] before the batch's requests are applied.
    Pause {
        change: PauseChange,
        reply: ReplyTo,
        outcome: Option<PauseOutcome>,
    },
    /// One of the `schedule.*` requests (`schedules.rs`).
    Schedule(ScheduleRequest),
    /// `prune`: applied to the store by [`Request::prune`] before the
    /// batch's lookups, its `outcome` answered with the batch.
    Prune {
        older_than_ms: u64,
        reply: ReplyTo,
        outcome: Option<warren_shared::wire::PruneReport>,
    },
    Invalid {
        reason: String,
        body: Vec<u8>,
        reply: Option<ReplyTo>,
    },
}

/// Where the answer to a `cancel` or a `rerun` goes.
pub(super) enum Reply {
    /// The `reply_to` of a control request from the broker: the answer is
    /// a message of the batch.
    Queue(ReplyTo),
    /// The HTTP endpoint (`POST /api/workflows/{id}/cancel`, `.../rerun`):
    /// the answer's JSON is left here, and handed over by the loop once
    /// the batch is committed and published.
    Http(Arc<OnceLock<Vec<u8>>>),
    /// A `cancel` or `rerun` without `reply_to` (a schedule's
    /// `cancel_previous` sends these): not answered.
    Nowhere,
}

impl Reply {
    pub(super) fn report(&self, engine: &mut Engine, report: &WorkflowReport) {
        match self {
            Reply::Queue(to) => engine.reply_report(to, report),
            Reply::Http(answer) => {
                let _ = answer.set(serde_json::to_vec(report).expect("reports serialise"));
            }
            Reply::Nowhere => {}
        }
    }

    /// An already serialised report.
    pub(super) fn report_json(&self, engine: &mut Engine, json: &str) {
        match self {
            Reply::Queue(to) => engine.reply_with(to, json),
            Reply::Http(answer) => {
                let _ = answer.set(json.as_bytes().to_vec());
            }
            Reply::Nowhere => {}
        }
    }
}

/// A workflow submitted: the verdict of its validation, the body as
/// received (accepted, it is stored as the definition), and where to
/// answer, if anywhere.
pub(super) struct Submit {
    verdict: Result<validate::ValidWorkflow, Rejected>,
    body: Vec<u8>,
    reply: Option<ReplyTo>,
}

impl Request {
    /// The workflow the request is about, if any: where it is routed, and
    /// what is looked up in the store when the engine does not hold it.
    /// The request as taken from the control requests' queue: a workflow
    /// submitted there is refused (it would skip the memory budget).
    pub(super) fn control_only(self) -> Request {
        match self {
            Request::Submit(Submit { body, reply, .. }) => Request::Invalid {
                reason: format!(
                    "only control requests are taken with the routing key `{CONTROL_ROUTING_KEY}`; submit workflows with the empty routing key"
                ),
                body,
                reply,
            },
            other => other,
        }
    }

    /// True for a valid submission: what may wait unacked for room in the
    /// line of queued workflows (`waiting.rs`).
    pub(super) fn is_submission(&self) -> bool {
        matches!(self, Request::Submit(Submit { verdict: Ok(_), .. }))
    }

    /// The workflow a `rerun` reads back whole when the engine does not
    /// hold it.
    pub(super) fn rerun_id(&self) -> Option<&str> {
        match self {
            Request::Rerun(Rerun { id, .. }) => Some(id),
            _ => None,
        }
    }

    /// The task a `status` request asks for alone, with its workflow.
    pub(super) fn task_lookup(&self) -> Option<(&str, &str)> {
        match self {
            Request::Status {
                id, task: Some(t), ..
            } => Some((id, t)),
            _ => None,
        }
    }

    pub(super) fn lookup_id(&self) -> Option<&str> {
        match self {
            Request::Submit(Submit { verdict: Ok(v), .. }) => Some(&v.id),
            Request::Submit(Submit {
                verdict: Err(r), ..
            }) => Some(&r.id),
            Request::Status { id, .. }
            | Request::Cancel { id, .. }
            | Request::Rerun(Rerun { id, .. }) => Some(id),
            Request::Invalid { .. }
            | Request::Workers { .. }
            | Request::Pause { .. }
            | Request::Prune { .. }
            | Request::Schedule(_) => None,
        }
    }

    /// What decides which scheduler applies the request (partitioned
    /// stores): the workflow it is about, or the schedule it changes.
    pub(super) fn route_id(&self) -> Option<&str> {
        match self {
            Request::Schedule(s) => s.route_id(),
            other => other.lookup_id(),
        }
    }

    /// A `pause` or `resume`: applies it to the store, keeping what the
    /// store answers (every pause now) for [`Scheduler::apply_request`].
    /// Any other request: nothing.
    pub(super) async fn change_pause(&mut self, store: &Store) -> Result<(), StoreError> {
        if let Request::Pause {
            change, outcome, ..
        } = self
        {
            *outcome = Some(store.change_pause(change.clone()).await?);
        }
        Ok(())
    }
}

/// What the store knows of what a batch's requests ask about and the
/// engine does not hold: ended (or unknown) workflows by id, and the tasks
/// `status` requests ask for alone, by (workflow, task).
#[derive(Default)]
pub(super) struct Lookups {
    pub(super) workflows: HashMap<String, Known>,
    pub(super) tasks: HashMap<(String, String), TaskRow>,
    /// The workflows `rerun` requests ask about, whole (`None`: unknown).
    pub(super) stored: HashMap<String, Option<StoredWorkflow>>,
}

/// Lenient peek at a request body: only whether it has `control`.
#[derive(Deserialize)]
struct ControlPeek {
    #[serde(default)]
    control: Option<serde::de::IgnoredAny>,
}

/// Where to answer the request: `Ok(None)` without `reply_to`; an `Err`
/// with the reason when `reply_to` names a queue the scheduler must not
/// write to (see [`is_reply_queue`]).
fn reply_of(d: &Delivery, namespace: &str) -> Result<Option<ReplyTo>, String> {
    let Some(queue) = d.properties.reply_to().as_ref().map(|q| q.as_str()) else {
        return Ok(None);
    };
    if queue.is_empty() {
        return Ok(None);
    }
    if !is_reply_queue(namespace, queue) {
        return Err(format!(
            "reply_to `{}` refused: the scheduler answers only to a server-named queue (amq.gen-...), direct reply-to (amq.rabbitmq.reply-to) or a queue named {namespace}.reply.<name>; the request was not applied",
            validate::shortened(queue, 256),
        ));
    }
    Ok(Some(ReplyTo {
        queue: queue.to_owned(),
        correlation_id: d
            .properties
            .correlation_id()
            .as_ref()
            .map(|c| c.as_str().to_owned()),
    }))
}

/// A body with `control`: a control request, or an invalid one.
fn parse_control(body: Vec<u8>, reply: Option<ReplyTo>) -> Request {
    let parsed = serde_json::from_slice::<ControlRequest>(&body).and_then(|c| {
        // Ids are echoed into the answer and looked up in the store:
        // no longer than any id can be.
        let too_long = |s: &str| s.chars().count() > validate::MAX_ID_LEN;
        if too_long(&c.workflow_id) || c.task_id.as_deref().is_some_and(too_long) {
            return Err(serde::de::Error::custom(format!(
                "workflow_id and task_id are at most {} characters",
                validate::MAX_ID_LEN
            )));
        }
        Ok(c)
    });
    let parsed = parsed.and_then(|c| {
        let pausing = matches!(c.control, ControlKind::Pause | ControlKind::Resume);
        if !pausing && !c.control.is_schedule() && (c.queue.is_some() || c.kind.is_some()) {
            return Err(serde::de::Error::custom(
                "`queue` and `type` are fields of `pause` and `resume` only",
            ));
        }
        let pruning = c.control == ControlKind::Prune;
        if pruning != c.older_than_ms.is_some() {
            return Err(serde::de::Error::custom(
                "`prune` needs `older_than_ms`, a field of `prune` only",
            ));
        }
        if pruning && (!c.workflow_id.is_empty() || c.task_id.is_some()) {
            return Err(serde::de::Error::custom(
                "`prune` takes `older_than_ms` only",
            ));
        }
        let rerunning = c.control == ControlKind::Rerun;
        if !rerunning && (c.from.is_some() || c.rerun_id.is_some()) {
            return Err(serde::de::Error::custom(
                "`from` and `rerun_id` are fields of `rerun` only",
            ));
        }
        if rerunning {
            check_rerun(&c).map_err(serde::de::Error::custom)?;
        }
        let scheduling = c.control.is_schedule();
        if !scheduling
            && (c.schedule.is_some()
                || c.schedule_id.is_some()
                || c.after.is_some()
                || c.limit.is_some())
        {
            return Err(serde::de::Error::custom(
                "`schedule`, `schedule_id`, `after` and `limit` are fields of the `schedule.*` requests only",
            ));
        }
        Ok(c)
    });
    match (parsed, reply) {
        (Ok(c), Some(reply)) if c.control.is_schedule() => {
            match schedules::parse(c, reply.clone()) {
                Ok(request) => Request::Schedule(request),
                Err(why) => Request::Invalid {
                    reason: format!("invalid control request: {why}"),
                    body,
                    reply: Some(reply),
                },
            }
        }
        (Ok(c), Some(reply)) if matches!(c.control, ControlKind::Pause | ControlKind::Resume) => {
            match pause_change(c) {
                Ok(change) => Request::Pause {
                    change,
                    reply,
                    outcome: None,
                },
                Err(why) => Request::Invalid {
                    reason: format!("invalid control request: {why}"),
                    body,
                    reply: Some(reply),
                },
            }
        }
        (Ok(c), Some(reply)) => match c.control {
            ControlKind::Status => Request::Status {
                id: c.workflow_id,
                task: c.task_id,
                reply,
            },
            ControlKind::Cancel => Request::Cancel {
                id: c.workflow_id,
                reply: Reply::Queue(reply),
            },
            ControlKind::Rerun => rerun_request(c, Reply::Queue(reply)),
            ControlKind::Prune => Request::Prune {
                older_than_ms: c.older_than_ms.unwrap_or_default(),
                reply,
                outcome: None,
            },
            ControlKind::Workers => Request::Workers { reply },
            _ => unreachable!("matched above"),
        },
        (Ok(c), None) if c.control == ControlKind::Cancel => Request::Cancel {
            id: c.workflow_id,
            reply: Reply::Nowhere,
        },
        (Ok(c), None) if c.control == ControlKind::Rerun => rerun_request(c, Reply::Nowhere),
        (Ok(_), None) => Request::Invalid {
            reason: "control request without reply_to: there is nowhere to answer".into(),
            body,
            reply: None,
        },
        (Err(e), reply) => Request::Invalid {
            reason: format!("invalid control request: {e}"),
            body,
            reply,
        },
    }
}

/// The change a `pause` or `resume` asks for: exactly one of `queue` and
/// `type`, a name a queue or type may have, nothing else.
fn pause_change(c: ControlRequest) -> Result<PauseChange, String> {
    let pause = c.control == ControlKind::Pause;
    let word = if pause { "pause" } else { "resume" };
    if !c.workflow_id.is_empty() || c.task_id.is_some() {
        return Err(format!(
            "`{word}` takes `queue` or `type`, not `workflow_id` or `task_id`"
        ));
    }
    let (kind, name) = match (c.queue, c.kind) {
        (Some(q), None) => (PauseKind::Queue, q),
        (None, Some(t)) => (PauseKind::Type, t),
        (Some(_), Some(_)) => {
            return Err(format!(
                "`{word}` takes one of `queue` and `type`, not both"
            ));
        }
        (None, None) => return Err(format!("`{word}` needs `queue` or `type`")),
    };
    pauses::check_name(kind, &name)?;
    Ok(PauseChange { pause, kind, name })
}

impl Scheduler {
    /// Parses a request delivery: a control request, or a workflow
    /// validated (with an id generated in an `owned` partition when it has
    /// none).
    pub(super) fn parse_request(&self, d: Delivery, owned: &Ownership) -> Request {
        let reply = match reply_of(&d, &self.config.amqp.namespace) {
            Ok(reply) => reply,
            Err(reason) => {
                Metrics::add(&self.metrics.replies_refused, 1);
                return Request::Invalid {
                    reason,
                    body: d.data,
                    reply: None,
                };
            }
        };
        let limits = &self.config.limits;
        let body = d.data;
        if body.len() <= limits.max_body_bytes
            && body.windows(9).any(|w| w == b"\"control\"")
            && serde_json::from_slice::<ControlPeek>(&body).is_ok_and(|p| p.control.is_some())
        {
            return parse_control(body, reply);
        }
        let message_id = d
            .properties
            .message_id()
            .as_ref()
            .map(|m| m.as_str().to_owned());
        // A generated id is drawn until it falls in a partition this
        // scheduler owns, so that the request needs no forwarding.
        let verdict = validate::validate(&body, message_id.as_deref(), limits, || {
            loop {
                let id = uuid::Uuid::new_v4().to_string();
                if owned.owns(owned.part_of(&id)) {
                    break id;
                }
            }
        });
        Request::Submit(Submit {
            verdict,
            body,
            reply,
        })
    }

    /// Applies a parsed request to the engine. `known` holds what the store
    /// knows of the ids the engine does not hold; requests that end a
    /// workflow add to it, so that later ones of the batch see it ended.
    pub(super) fn apply_request(
        &self,
        engine: &mut Engine,
        request: Request,
        known: &mut Lookups,
        now: chrono::DateTime<Utc>,
    ) {
        match request {
            Request::Submit(submit) => apply_submit(engine, submit, &mut known.workflows, now),
            Request::Cancel { id, reply } => {
                apply_cancel(engine, id, reply, &mut known.workflows, now);
            }
            Request::Rerun(rerun) => apply_rerun(engine, rerun, known, now),
            Request::Workers { reply } => {
                let report = self.workers.lock().expect("not poisoned").report(now);
                engine.reply_workers(&reply, &report);
            }
            Request::Pause {
                change,
                reply,
                outcome,
            } => apply_pause(engine, &change, &reply, outcome),
            Request::Schedule(request) => {
                schedules::apply(engine, request, &self.config.limits, now);
            }
            Request::Prune { reply, outcome, .. } => match outcome {
                Some(report) => engine.reply_pruned(&reply, &report),
                // `step` prunes every one first; not answered, so the asker
                // tries again.
                None => tracing::error!("A prune was not applied to the store"),
            },
            Request::Status {
                id,
                task: None,
                reply,
            } => apply_status(engine, &id, &Reply::Queue(reply), &known.workflows),
            Request::Status {
                id,
                task: Some(task),
                reply,
            } => apply_task_status(engine, &id, &task, &reply, known),
            Request::Invalid {
                reason,
                body,
                reply,
            } => {
                tracing::warn!(%reason, "Invalid control request dead-lettered");
                if let Some(to) = reply {
                    let report = WorkflowReport {
                        status: warren_shared::wire::WorkflowStatus::Rejected,
                        errors: vec![warren_shared::wire::Rejection {
                            code: "invalid_control".into(),
                            message: reason.clone(),
                            task: None,
                        }],
                        ..WorkflowReport::not_found("")
                    };
                    engine.reply_report(&to, &report);
                }
                engine.dead_letter(body, &self.config.amqp.namespace, &reason);
            }
        }
    }
}

/// `pause` or `resume`, already applied to the store: the engine takes
/// what the store holds now (the change, and any another scheduler made),
/// and the answer says it.
fn apply_pause(
    engine: &mut Engine,
    change: &PauseChange,
    reply: &ReplyTo,
    outcome: Option<PauseOutcome>,
) {
    let Some(PauseOutcome { pauses, refused }) = outcome else {
        // `step` applies every pause to the store first; not answered, so
        // the asker tries again.
        tracing::error!(kind = change.kind.as_str(), name = %change.name, "A pause was not applied to the store");
        return;
    };
    engine.set_pauses(&pauses);
    let (kind, name) = (change.kind.as_str(), &change.name);
    match (&refused, change.pause) {
        (Some(r), _) => tracing::warn!(kind, %name, reason = %r.message, "Pause refused"),
        (None, true) => tracing::info!(kind, %name, "Dispatch paused"),
        (None, false) => tracing::info!(kind, %name, "Dispatch resumed"),
    }
    engine.reply_pauses(
        reply,
        &pauses::report(&pauses, refused.into_iter().collect()),
    );
}

/// A workflow submitted: a duplicate of a running or ended one is answered,
/// a new one accepted or rejected.
fn apply_submit(
    engine: &mut Engine,
    submit: Submit,
    known: &mut HashMap<String, Known>,
    now: chrono::DateTime<Utc>,
) {
    let Submit {
        verdict,
        body,
        reply,
    } = submit;
    let id = match &verdict {
        Ok(v) => v.id.clone(),
        Err(r) => r.id.clone(),
    };
    if engine.is_active(&id) || engine.is_unstarted(&id) {
        tracing::debug!(workflow = %id, "Duplicate submission of a running, scheduled or queued workflow");
        match reply {
            Some(to) => engine.add_waiter(&id, to),
            None => engine.note_duplicate(),
        }
        return;
    }
    if let Some(k) = known.get(&id) {
        tracing::debug!(workflow = %id, status = %k.status, "Duplicate submission of an ended workflow");
        engine.note_duplicate();
        if let (Some(to), Some(report)) = (reply, &k.report) {
            engine.reply_with(&to, report);
        }
        return;
    }
    let verdict = verdict
        .and_then(|v| expired(v, now))
        .and_then(|v| too_far(v, now))
        .and_then(|v| match engine.queue_bound_rejection(&v) {
            Some(rejected) => Err(rejected),
            None => Ok(v),
        });
    match verdict {
        Ok(v) => {
            tracing::info!(workflow = %v.id, tasks = v.tasks.len(), priority = v.priority, "Workflow accepted");
            engine.accept(v, Arc::from(body), reply, now);
        }
        Err(r) => {
            tracing::info!(workflow = %r.id, problems = r.errors.len(), "Workflow rejected");
            // Later duplicates in this batch see it as ended.
            let report = WorkflowReport {
                errors: r.errors.clone(),
                status: warren_shared::wire::WorkflowStatus::Rejected,
                ..WorkflowReport::not_found(&r.id)
            };
            known.insert(
                r.id.clone(),
                Known {
                    status: "rejected".into(),
                    report: serde_json::to_string(&report).ok(),
                },
            );
            engine.reject(r, reply, now);
        }
    }
}

/// A request taken after its `expires_at` (it waited in the broker, or
/// for room in the memory budget) is rejected `expired`, not run late.
fn expired(
    v: validate::ValidWorkflow,
    now: chrono::DateTime<Utc>,
) -> Result<validate::ValidWorkflow, Rejected> {
    match v.expires_at {
        Some(at) if at <= now => Err(Rejected {
            errors: vec![warren_shared::wire::Rejection {
                code: "expired".into(),
                message: format!(
                    "expires_at {} passed before the request was taken ({}): not run late",
                    at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                    now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
                ),
                task: None,
            }],
            id: v.id,
            name: v.name,
        }),
        _ => Ok(v),
    }
}

/// A `not_before` further ahead than `delay_ms` may be (366 days) is
/// refused, as a `delay_ms` that long is by validation.
fn too_far(
    v: validate::ValidWorkflow,
    now: chrono::DateTime<Utc>,
) -> Result<validate::ValidWorkflow, Rejected> {
    let limit = now + chrono::Duration::milliseconds(validate::MAX_DEADLINE_MS as i64);
    match v.start.map(|s| s.due(now)) {
        Some(due) if due > limit => Err(Rejected {
            errors: vec![warren_shared::wire::Rejection {
                code: "invalid_delay".into(),
                message: format!(
                    "not_before {} is more than 366 days ahead",
                    due.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
                ),
                task: None,
            }],
            id: v.id,
            name: v.name,
        }),
        _ => Ok(v),
    }
}

/// `cancel`: a running workflow is cancelled and its report sent; any
/// other is answered as `status` would be.
fn apply_cancel(
    engine: &mut Engine,
    id: String,
    reply: Reply,
    known: &mut HashMap<String, Known>,
    now: chrono::DateTime<Utc>,
) {
    match engine
        .cancel(&id, now)
        .or_else(|| engine.cancel_unstarted(&id, now))
    {
        Some(report) => {
            tracing::info!(workflow = %id, "Workflow cancelled");
            // Later requests in this batch see it as ended.
            let json = serde_json::to_string(&report).ok();
            known.insert(
                id,
                Known {
                    status: "cancelled".into(),
                    report: json,
                },
            );
            reply.report(engine, &report);
        }
        // Not running (ended, or unknown): answer with what is known.
        None => apply_status(engine, &id, &reply, known),
    }
}

/// `status`: the running workflow's report, else the stored final one,
/// else `not_found`.
fn apply_status(engine: &mut Engine, id: &str, reply: &Reply, known: &HashMap<String, Known>) {
    if let Some(report) = engine.report(id).or_else(|| engine.unstarted_status(id)) {
        reply.report(engine, &report);
    } else if let Some(Known {
        report: Some(report),
        ..
    }) = known.get(id)
    {
        reply.report_json(engine, report);
    } else {
        reply.report(engine, &WorkflowReport::not_found(id));
    }
}

/// `status` of one task: the running workflow's task from the engine, an
/// ended one's from its stored row; the report holds that task alone, its
/// output in full.
fn apply_task_status(engine: &mut Engine, id: &str, task: &str, reply: &ReplyTo, known: &Lookups) {
    let (status, found) = match engine.task_report(id, task) {
        Some(found) => (WorkflowStatus::Running, found),
        None => match known.workflows.get(id) {
            Some(k) => (
                WorkflowStatus::parse(&k.status).unwrap_or(WorkflowStatus::NotFound),
                known
                    .tasks
                    .get(&(id.to_owned(), task.to_owned()))
                    .map(stored_task_report),
            ),
            None => {
                engine.reply_report(reply, &WorkflowReport::not_found(id));
                return;
            }
        },
    };
    let mut report = WorkflowReport {
        status,
        ..WorkflowReport::not_found(id)
    };
    match found {
        Some(t) => {
            report.tasks.insert(task.to_owned(), t);
        }
        None => {
            report.error = Some(format!(
                "workflow `{id}` has no task `{}`",
                validate::shortened(task, validate::MAX_ID_LEN)
            ));
        }
    }
    engine.reply_report(reply, &report);
}

/// A task's report from its stored row; a row whose output is no longer
/// JSON reports it as missing.
fn stored_task_report(row: &TaskRow) -> TaskReport {
    TaskReport {
        state: row.state,
        attempts: row.attempt,
        depends_on: Vec::new(),
        output: row
            .output
            .as_deref()
            .and_then(|o| serde_json::from_str(o).ok()),
        output_elided: None,
        error: row.error.clone(),
        skip_reason: row.skip_reason,
        worker: row.worker.clone(),
        started_at: row.started_at,
        finished_at: row.finished_at,
        history: Vec::new(),
        attempt_log: Vec::new(),
        input: None,
    }
}
