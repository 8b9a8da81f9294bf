//! The `rerun` control request (docs/protocol.md, "Re-running a
//! workflow"): its fields checked and parsed, and applied to the engine
//! with what the store holds of the workflow (`step.rs` reads it whole
//! before the batch is applied), answered at once or at the run's end.

use super::request::{Lookups, Reply, Request};
use crate::batch::Known;
use crate::engine::{Engine, RerunAsk, RerunOutcome};
use crate::validate;
use chrono::Utc;
use warren_shared::wire::{ControlRequest, WorkflowReport};

/// A `rerun` of workflow `id`, answered through `reply`.
pub(crate) struct Rerun {
    pub(crate) id: String,
    pub(crate) ask: RerunAsk,
    pub(crate) reply: Reply,
}

/// A `rerun` as parsed (its fields checked by [`check_rerun`]).
pub(super) fn rerun_request(c: ControlRequest, reply: Reply) -> Request {
    Request::Rerun(Rerun {
        id: c.workflow_id,
        ask: RerunAsk::new(c.from.unwrap_or_default(), c.rerun_id),
        reply,
    })
}

/// A `rerun` names its workflow, at most [`crate::engine::MAX_FROM`]
/// tasks of at most `MAX_ID_LEN` characters, and a `rerun_id` a workflow
/// id could be.
pub(super) fn check_rerun(c: &ControlRequest) -> Result<(), String> {
    if c.workflow_id.is_empty() {
        return Err("`rerun` needs `workflow_id`".into());
    }
    if c.task_id.is_some() {
        return Err("`rerun` names its tasks in `from`, not `task_id`".into());
    }
    check_rerun_fields(c.from.as_deref(), c.rerun_id.as_deref())
}

/// `from` and `rerun_id` of a `rerun`, from the broker or the HTTP
/// endpoint.
pub fn check_rerun_fields(from: Option<&[String]>, rerun_id: Option<&str>) -> Result<(), String> {
    let from = from.unwrap_or_default();
    if from.len() > crate::engine::MAX_FROM {
        return Err(format!(
            "`from` names {} tasks; at most {} may be named",
            from.len(),
            crate::engine::MAX_FROM
        ));
    }
    if from
        .iter()
        .any(|t| t.is_empty() || t.chars().count() > validate::MAX_ID_LEN)
    {
        return Err(format!(
            "each task of `from` is 1 to {} characters",
            validate::MAX_ID_LEN
        ));
    }
    if rerun_id.is_some_and(|r| !validate::valid_workflow_id(r)) {
        return Err(format!(
            "`rerun_id` must be [A-Za-z0-9._:-]{{1,{}}}",
            validate::MAX_ID_LEN
        ));
    }
    Ok(())
}

/// `rerun`: a workflow that runs here is joined (the same `rerun_id`) or
/// refused; an ended one starts its next run. A `reply_to` waits for the
/// run's outcome; the HTTP endpoint is answered at once.
pub(super) fn apply_rerun(
    engine: &mut Engine,
    Rerun { id, ask, reply }: Rerun,
    known: &mut Lookups,
    now: chrono::DateTime<Utc>,
) {
    let waiter = match &reply {
        Reply::Queue(to) => Some(to.clone()),
        Reply::Http(_) | Reply::Nowhere => None,
    };
    let outcome = if engine.is_active(&id) || engine.is_unstarted(&id) {
        engine.rerun_active(&id, &ask, waiter.clone())
    } else {
        match known.stored.remove(&id) {
            Some(Some(stored)) => engine.rerun(stored, &ask, waiter.clone(), now),
            Some(None) => {
                reply.report(engine, &WorkflowReport::not_found(&id));
                return;
            }
            // It ran when the batch was read, and ended in it.
            None => crate::engine::still_running(&id),
        }
    };
    match &outcome {
        RerunOutcome::Started => {
            // Later requests of the batch see it running, or as its new
            // run ended at once.
            match engine.finished_in_batch(&id) {
                Some((status, report)) if !engine.is_active(&id) => {
                    known.workflows.insert(
                        id.clone(),
                        Known {
                            status: status.as_str().into(),
                            report: Some(report),
                        },
                    );
                }
                _ => {
                    known.workflows.remove(&id);
                }
            }
        }
        RerunOutcome::Refused(why) => {
            tracing::info!(workflow = %id, code = %why.code, "Rerun refused");
        }
        RerunOutcome::Joined | RerunOutcome::Done(_) => {}
    }
    let answered_later =
        matches!(outcome, RerunOutcome::Started | RerunOutcome::Joined) && waiter.is_some();
    if !answered_later && !matches!(reply, Reply::Nowhere) {
        let json = outcome.report_json(engine, &id);
        reply.report_json(engine, &json);
    }
}
