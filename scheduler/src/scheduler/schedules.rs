//! The `schedule.*` control requests, and firing what is due.
//!
//! A request that changes a schedule (`create`, `pause`, `resume`,
//! `trigger`, `delete`) is routed by the schedule's id, like a workflow
//! request, to the scheduler owning its partition: that one holds the
//! schedule and fires it (`engine/schedules.rs`), and writes every change
//! in its fenced batches. `get` and `list` read the store wherever they
//! arrive. What a request needs from the store is read before the batch
//! is applied ([`ScheduleRequest::prepare`]).

use crate::{
    batch::ReplyTo,
    engine::{Engine, schedules::info},
    schedule::{self, MAX_LIST, MAX_SCHEDULE_ID_LEN, MAX_SCHEDULES},
    store::{ListedSchedule, Store, StoreError},
    validate::{self, Limits},
};
use chrono::{DateTime, Utc};
use std::collections::{HashMap, HashSet};
use warren_shared::wire::{
    ControlKind, ControlRequest, Rejection, ScheduleReport, ScheduleSpec, SchedulesPage,
    WorkflowStatus,
};

/// Most schedules fired in one step: the rest are due too, and the loop
/// takes another turn at once.
const MAX_FIRING_PER_STEP: usize = 1_000;

/// A `schedule.*` request, parsed, with what the store said of it.
pub(super) enum ScheduleRequest {
    Create {
        spec: Box<ScheduleSpec>,
        reply: ReplyTo,
        /// Schedules stored before this one (and the creates ahead of it
        /// in the batch), and the one stored under its id, if any.
        looked_up: Option<(u64, Option<ListedSchedule>)>,
    },
    Get {
        id: String,
        reply: ReplyTo,
        found: Option<(ListedSchedule, Vec<u8>)>,
    },
    List {
        after: Option<String>,
        limit: u32,
        reply: ReplyTo,
        page: Vec<ListedSchedule>,
    },
    Pause {
        id: String,
        pause: bool,
        reply: ReplyTo,
    },
    Trigger {
        id: String,
        reply: ReplyTo,
    },
    Delete {
        id: String,
        reply: ReplyTo,
    },
}

/// Reads a `schedule.*` control request: only its own fields, a valid
/// schedule id where one is needed.
pub(super) fn parse(c: ControlRequest, reply: ReplyTo) -> Result<ScheduleRequest, String> {
    let word = match c.control {
        ControlKind::ScheduleCreate => "schedule.create",
        ControlKind::ScheduleGet => "schedule.get",
        ControlKind::ScheduleList => "schedule.list",
        ControlKind::SchedulePause => "schedule.pause",
        ControlKind::ScheduleResume => "schedule.resume",
        ControlKind::ScheduleTrigger => "schedule.trigger",
        ControlKind::ScheduleDelete => "schedule.delete",
        _ => return Err("not a schedule request".into()),
    };
    if !c.workflow_id.is_empty() || c.task_id.is_some() || c.queue.is_some() || c.kind.is_some() {
        return Err(format!(
            "`{word}` takes no `workflow_id`, `task_id`, `queue` or `type`"
        ));
    }
    let listing = c.control == ControlKind::ScheduleList;
    if !listing && (c.after.is_some() || c.limit.is_some()) {
        return Err("`after` and `limit` are fields of `schedule.list` only".into());
    }
    let creating = c.control == ControlKind::ScheduleCreate;
    if creating != c.schedule.is_some() {
        return Err(if creating {
            "`schedule.create` needs `schedule`".into()
        } else {
            format!("`{word}` takes no `schedule`")
        });
    }
    let id = || match c.schedule_id.clone() {
        Some(id) if schedule::valid_schedule_id(&id) => Ok(id),
        Some(id) => Err(format!(
            "schedule id `{}` must be 1 to {MAX_SCHEDULE_ID_LEN} letters, digits, `.`, `_` or `-`",
            validate::shortened(&id, 120)
        )),
        None => Err(format!("`{word}` needs `schedule_id`")),
    };
    if (creating || listing) && c.schedule_id.is_some() {
        return Err(format!("`{word}` takes no `schedule_id`"));
    }
    Ok(match c.control {
        ControlKind::ScheduleCreate => ScheduleRequest::Create {
            spec: c.schedule.expect("checked above"),
            reply,
            looked_up: None,
        },
        ControlKind::ScheduleGet => ScheduleRequest::Get {
            id: id()?,
            reply,
            found: None,
        },
        ControlKind::ScheduleList => {
            if c.after
                .as_deref()
                .is_some_and(|a| a.len() > MAX_SCHEDULE_ID_LEN)
            {
                return Err(format!(
                    "`after` is a schedule id, at most {MAX_SCHEDULE_ID_LEN} characters"
                ));
            }
            ScheduleRequest::List {
                after: c.after,
                limit: c.limit.unwrap_or(MAX_LIST).clamp(1, MAX_LIST),
                reply,
                page: Vec::new(),
            }
        }
        ControlKind::SchedulePause | ControlKind::ScheduleResume => ScheduleRequest::Pause {
            id: id()?,
            pause: c.control == ControlKind::SchedulePause,
            reply,
        },
        ControlKind::ScheduleTrigger => ScheduleRequest::Trigger { id: id()?, reply },
        ControlKind::ScheduleDelete => ScheduleRequest::Delete { id: id()?, reply },
        _ => unreachable!("matched above"),
    })
}

impl ScheduleRequest {
    /// The schedule whose owner must apply the request: every request
    /// that changes one. `get` and `list` are answered from the store
    /// wherever they arrive.
    pub(super) fn route_id(&self) -> Option<&str> {
        match self {
            ScheduleRequest::Create { spec, .. } => Some(&spec.id),
            ScheduleRequest::Pause { id, .. }
            | ScheduleRequest::Trigger { id, .. }
            | ScheduleRequest::Delete { id, .. } => Some(id),
            ScheduleRequest::Get { .. } | ScheduleRequest::List { .. } => None,
        }
    }

    /// Reads what the request needs from the store. `creates` counts the
    /// creates of the batch read so far (each sees the ones ahead of it).
    pub(super) async fn prepare(
        &mut self,
        store: &Store,
        creates: &mut u64,
    ) -> Result<(), StoreError> {
        match self {
            ScheduleRequest::Create {
                spec, looked_up, ..
            } => {
                let stored = store.schedule_count().await? + *creates;
                *creates += 1;
                let existing = store.schedule(&spec.id).await?.map(|(listed, _)| listed);
                *looked_up = Some((stored, existing));
            }
            ScheduleRequest::Get { id, found, .. } => *found = store.schedule(id).await?,
            ScheduleRequest::List {
                after, limit, page, ..
            } => *page = store.schedules_page(after.clone(), *limit).await?,
            ScheduleRequest::Pause { .. }
            | ScheduleRequest::Trigger { .. }
            | ScheduleRequest::Delete { .. } => {}
        }
        Ok(())
    }
}

fn report(id: &str, outcome: &str) -> ScheduleReport {
    ScheduleReport {
        schedule_id: id.to_owned(),
        outcome: outcome.to_owned(),
        schedule: None,
        workflow_id: None,
        errors: Vec::new(),
    }
}

fn rejection(code: &str, message: String) -> Rejection {
    Rejection {
        code: code.into(),
        message,
        task: None,
    }
}

/// Applies a prepared request to the engine and answers it.
pub(super) fn apply(
    engine: &mut Engine,
    request: ScheduleRequest,
    limits: &Limits,
    now: DateTime<Utc>,
) {
    match request {
        ScheduleRequest::Create {
            spec,
            reply,
            looked_up,
        } => {
            let id = spec.id.clone();
            let answer = create(engine, *spec, looked_up, limits, now);
            if answer.outcome == "created" {
                tracing::info!(schedule = %id, "Schedule created");
            }
            engine.reply_schedule(&reply, &answer);
        }
        ScheduleRequest::Get { id, reply, found } => {
            let answer = match found {
                Some(((row, status), workflow)) => {
                    let mut shown = info(&row, Some(status.as_deref().unwrap_or("submitted")));
                    shown.workflow = serde_json::from_slice(&workflow).ok();
                    ScheduleReport {
                        schedule: Some(shown),
                        ..report(&id, "found")
                    }
                }
                None => report(&id, "not_found"),
            };
            engine.reply_schedule(&reply, &answer);
        }
        ScheduleRequest::List {
            limit, reply, page, ..
        } => {
            let next_after = (page.len() == limit as usize)
                .then(|| page.last().map(|(row, _)| row.id.to_string()))
                .flatten();
            let answer = SchedulesPage {
                schedules: page
                    .iter()
                    .map(|(row, status)| info(row, Some(status.as_deref().unwrap_or("submitted"))))
                    .collect(),
                next_after,
                errors: Vec::new(),
            };
            engine.reply_schedules(&reply, &answer);
        }
        ScheduleRequest::Pause { id, pause, reply } => {
            let answer = match engine.pause_schedule(&id, pause, now) {
                Some(shown) => {
                    tracing::info!(schedule = %id, paused = pause, "Schedule paused or resumed");
                    ScheduleReport {
                        schedule: Some(shown),
                        ..report(&id, if pause { "paused" } else { "resumed" })
                    }
                }
                None => report(&id, "not_found"),
            };
            engine.reply_schedule(&reply, &answer);
        }
        ScheduleRequest::Trigger { id, reply } => {
            // Answered when the firing is made, later in this batch.
            if !engine.trigger_schedule(&id, reply.clone(), now) {
                engine.reply_schedule(&reply, &report(&id, "not_found"));
            }
        }
        ScheduleRequest::Delete { id, reply } => {
            let answer = match engine.delete_schedule(&id) {
                Some(shown) => {
                    tracing::info!(schedule = %id, "Schedule deleted");
                    ScheduleReport {
                        schedule: Some(shown),
                        ..report(&id, "deleted")
                    }
                }
                None => report(&id, "not_found"),
            };
            engine.reply_schedule(&reply, &answer);
        }
    }
}

/// `schedule.create`: checked, within [`MAX_SCHEDULES`], under an id not
/// taken; the answer says which.
fn create(
    engine: &mut Engine,
    spec: ScheduleSpec,
    looked_up: Option<(u64, Option<ListedSchedule>)>,
    limits: &Limits,
    now: DateTime<Utc>,
) -> ScheduleReport {
    let id = spec.id.clone();
    let rejected = |errors: Vec<Rejection>| ScheduleReport {
        errors,
        ..report(&id, "rejected")
    };
    let checked = match schedule::check(spec, now, limits) {
        Ok(c) => c,
        Err(errors) => return rejected(errors),
    };
    let Some((stored, existing)) = looked_up else {
        // `step` prepares every request first; not applied, the asker
        // tries again.
        return rejected(vec![rejection(
            "unavailable",
            "the store was not asked; try again".into(),
        )]);
    };
    let existing = engine
        .schedule_row(&id)
        .map(|row| info(row, None))
        .or_else(|| {
            existing.map(|(row, status)| info(&row, Some(status.as_deref().unwrap_or("submitted"))))
        });
    if let Some(shown) = existing {
        return ScheduleReport {
            schedule: Some(shown),
            ..rejected(vec![rejection(
                "schedule_exists",
                format!("a schedule `{id}` exists; delete it first to replace it"),
            )])
        };
    }
    if stored >= MAX_SCHEDULES as u64 {
        return rejected(vec![rejection(
            "too_many_schedules",
            format!("the namespace holds {stored} schedules; the limit is {MAX_SCHEDULES}"),
        )]);
    }
    ScheduleReport {
        schedule: Some(engine.create_schedule(checked, now)),
        ..report(&id, "created")
    }
}

/// Fires the schedules with firings due: their workflows read from the
/// store in one call, and what is known of their last firings'
/// workflows (for `overlap`) from the engine, else in one more.
pub(super) async fn fire_due(
    engine: &mut Engine,
    store: &Store,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let due = engine.take_due_firings(now.timestamp_millis(), MAX_FIRING_PER_STEP);
    if due.is_empty() {
        return Ok(());
    }
    let ids: Vec<String> = due.iter().map(|id| id.to_string()).collect();
    let workflows: HashMap<String, Vec<u8>> =
        store.schedule_workflows(ids).await?.into_iter().collect();
    let mut running: HashSet<String> = HashSet::new();
    let mut ask = Vec::new();
    let mut fired_at = Vec::new();
    for id in &due {
        if let Some(previous) = engine.previous_firing(id) {
            if engine.is_active(previous) || engine.is_unstarted(previous) {
                running.insert(previous.to_owned());
            } else {
                ask.push(previous.to_owned());
                fired_at.push(engine.previous_firing_at(id));
            }
        }
    }
    if !ask.is_empty() {
        let known = store.lookup(ask.clone()).await?;
        // A firing older than the retention that the store no longer
        // holds ended and was pruned.
        let keep = engine
            .retention()
            .and_then(|k| chrono::Duration::from_std(k).ok());
        for ((id, k), at) in ask.into_iter().zip(known).zip(fired_at) {
            let pruned =
                k.is_none() && keep.is_some_and(|keep| at.is_some_and(|at| at + keep < now));
            // Not in the store otherwise: its request has not been taken
            // yet.
            let ended = pruned
                || k.is_some_and(|k| {
                    WorkflowStatus::parse(&k.status).is_some_and(|s| s.is_final())
                });
            if !ended {
                running.insert(id);
            }
        }
    }
    for id in due {
        let previous_running = engine
            .previous_firing(&id)
            .is_some_and(|p| running.contains(p));
        engine.fire_schedule(
            &id,
            workflows.get(&*id).map(Vec::as_slice),
            previous_running,
            now,
        );
    }
    Ok(())
}
