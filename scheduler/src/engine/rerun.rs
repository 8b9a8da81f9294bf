//! Re-runs (`rerun`): an ended workflow runs again in place. The tasks
//! the request names (`from`; by default every task that did not
//! succeed), those a cancel stopped, and everything downstream of them go
//! back to pending, their
//! rows and results deleted; the tasks upstream keep their rows, so
//! templates read their committed outputs. The workflow is then restored
//! from what is left exactly as a restarted scheduler restores a running
//! one: one recovery path.
//!
//! Each run after the first has a row in the store ([`RunRow`]): its
//! number, its `rerun_id`, when it started, and a [`RunRecord`] of how
//! the run before ended, with the earlier outcome of each task run again.
//! A workflow's report carries those (`run`, `runs`, each task's
//! `history`). Attempts count from 1 again in a new run; the attempt token
//! names the run, so a late result of an earlier run is not taken for the
//! new run's.
//!
//! Bounds: at most [`MAX_RUNS`] runs per workflow, [`MAX_FROM`] tasks
//! named by one request, an earlier error kept to
//! [`MAX_HISTORY_ERROR_CHARS`] characters.

use super::{
    Counters, Engine,
    emit::to_json,
    workflow::{Workflow, json_len},
};
use crate::batch::{
    Op, ReplyTo, RunRecord, RunRow, RunningWorkflow, StoredWorkflow, TaskRow, Unreadable,
};
use crate::validate;
use chrono::{DateTime, Utc};
use std::cmp::Reverse;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use warren_shared::wire::{
    EarlierOutcome, Rejection, RunSummary, TaskState, WorkflowReport, WorkflowStatus,
};

/// Most runs of one workflow (the first included): a `rerun` past it is
/// refused (`too_many_runs`).
pub const MAX_RUNS: u32 = 20;
/// Most tasks one `rerun` names in `from`.
pub const MAX_FROM: usize = 100;
/// Longest error message kept in a task's `history` (characters).
pub const MAX_HISTORY_ERROR_CHARS: usize = 1024;

/// What a `rerun` asks for.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RerunAsk {
    /// The tasks to run again with everything downstream; empty: every
    /// task that did not succeed.
    pub from: Vec<String>,
    /// Makes the request idempotent.
    pub rerun_id: Option<String>,
}

impl RerunAsk {
    /// A rerun of the tasks `from` (each named once, in the order first
    /// named), with `rerun_id`.
    pub fn new(mut from: Vec<String>, rerun_id: Option<String>) -> RerunAsk {
        let mut seen = std::collections::HashSet::new();
        from.retain(|t| seen.insert(t.clone()));
        RerunAsk { from, rerun_id }
    }
}

/// What came of a `rerun`.
#[derive(Debug)]
pub enum RerunOutcome {
    /// A new run started (or ended at once). Its `reply_to` is answered
    /// when the run ends.
    Started,
    /// The run its `rerun_id` started is running: its `reply_to` waits
    /// for that run's end too.
    Joined,
    /// The run its `rerun_id` started has ended: the workflow's stored
    /// report (JSON), the answer now.
    Done(String),
    /// Refused, and why: the workflow is unchanged.
    Refused(Rejection),
}

impl RerunOutcome {
    /// The answer now, as JSON: the workflow's report as it is (started
    /// or joined: built only when asked, for the HTTP endpoint), the
    /// stored one, or the refusal.
    pub fn report_json(&self, engine: &Engine, id: &str) -> String {
        match self {
            RerunOutcome::Started | RerunOutcome::Joined => engine
                .report(id)
                .map(|r| String::from_utf8_lossy(&to_json(&r)).into_owned())
                .or_else(|| engine.finished_in_batch(id).map(|(_, r)| r))
                .unwrap_or_default(),
            RerunOutcome::Done(r) => r.clone(),
            RerunOutcome::Refused(why) => {
                String::from_utf8_lossy(&to_json(&refusal(id, why.clone()))).into_owned()
            }
        }
    }
}

/// The answer to a refused `rerun`: status `rejected` (the request, not
/// the workflow), with the reason in `errors`.
fn refusal(id: &str, why: Rejection) -> WorkflowReport {
    WorkflowReport {
        status: WorkflowStatus::Rejected,
        errors: vec![why],
        ..WorkflowReport::not_found(id)
    }
}

fn refused(code: &str, message: String) -> RerunOutcome {
    RerunOutcome::Refused(Rejection {
        code: code.into(),
        message,
        task: None,
    })
}

/// The refusal of a rerun of a workflow that has not ended.
pub fn still_running(id: &str) -> RerunOutcome {
    refused(
        "workflow_running",
        format!(
            "workflow `{}` has not ended: only an ended workflow can be re-run (cancel it first, or wait for its outcome)",
            validate::shortened(id, validate::MAX_ID_LEN)
        ),
    )
}

impl Engine {
    /// A `rerun` of a workflow that runs (or waits for its start) here:
    /// joined when its run was started by the same `rerun_id`, else
    /// refused.
    pub fn rerun_active(
        &mut self,
        id: &str,
        ask: &RerunAsk,
        waiter: Option<ReplyTo>,
    ) -> RerunOutcome {
        let Some(wf) = self.workflows.get_mut(id) else {
            return still_running(id);
        };
        let Some(rerun_id) = &ask.rerun_id else {
            return still_running(id);
        };
        let now = |engine: &Engine| {
            RerunOutcome::Done(
                engine
                    .report(id)
                    .map(|r| String::from_utf8_lossy(&to_json(&r)).into_owned())
                    .unwrap_or_default(),
            )
        };
        if wf.rerun_id.as_ref() != Some(rerun_id) {
            // The id of an earlier run: that run has ended; answered with
            // the report as it is now.
            let earlier = wf
                .runs
                .iter()
                .any(|r| r.rerun_id.as_ref() == Some(rerun_id));
            return if earlier {
                now(self)
            } else {
                still_running(id)
            };
        }
        if let Some(to) = waiter
            && !wf.replies.contains(&to)
        {
            if wf.replies.len() >= super::MAX_WAITERS {
                // Answered at once, as a duplicate submission past the
                // bound is.
                return now(self);
            }
            self.ops.push(Op::AddReply {
                workflow_id: wf.id.clone(),
                reply_to: to.queue.clone(),
                correlation_id: to.correlation_id.clone(),
                run: wf.run,
            });
            wf.replies.push(to);
        }
        RerunOutcome::Joined
    }

    /// A `rerun` of an ended workflow, as stored: starts its next run, or
    /// says why not (see the module docs).
    pub fn rerun(
        &mut self,
        stored: StoredWorkflow,
        ask: &RerunAsk,
        waiter: Option<ReplyTo>,
        now: DateTime<Utc>,
    ) -> RerunOutcome {
        let w = stored.workflow;
        let shown = validate::shortened(&w.id, validate::MAX_ID_LEN);
        let Some(status) = WorkflowStatus::parse(&stored.status).filter(|s| {
            matches!(
                s,
                WorkflowStatus::Succeeded | WorkflowStatus::Failed | WorkflowStatus::Cancelled
            )
        }) else {
            return match stored.status.as_str() {
                "running" | "scheduled" | "queued" => still_running(&w.id),
                other => refused(
                    "not_rerunnable",
                    format!("workflow `{shown}` is {other}: it never ran, so it cannot run again"),
                ),
            };
        };
        if let Some(rid) = &ask.rerun_id
            && w.runs.iter().any(|r| r.rerun_id.as_ref() == Some(rid))
        {
            return RerunOutcome::Done(stored.report.unwrap_or_default());
        }
        if stored
            .finished_at
            .is_some_and(|at| self.past_retention(at, now))
        {
            return refused(
                "past_retention",
                format!(
                    "workflow `{shown}` ended longer ago than the scheduler keeps workflows (WARREN_RETENTION): it is being deleted"
                ),
            );
        }
        let previous_run = w.runs.last().map_or(1, |r| r.run);
        let run = previous_run + 1;
        if run > MAX_RUNS {
            return refused(
                "too_many_runs",
                format!(
                    "workflow `{shown}` has run {previous_run} times, the most a workflow may run ({MAX_RUNS})"
                ),
            );
        }
        let v = match validate::validate_stored(&w.definition, &w.id) {
            Ok(v) => v,
            Err(r) => {
                return refused(
                    "not_rerunnable",
                    format!(
                        "the stored definition of workflow `{shown}` no longer validates: {:?}",
                        r.errors
                    ),
                );
            }
        };
        let rows: HashMap<&str, &TaskRow> =
            w.tasks.iter().map(|t| (t.task_id.as_str(), t)).collect();
        let index: HashMap<&str, usize> = v
            .tasks
            .iter()
            .enumerate()
            .map(|(i, t)| (t.id.as_str(), i))
            .collect();
        let n = v.tasks.len();
        let state = |i: usize| rows.get(v.tasks[i].id.as_str()).map(|r| r.state);
        // Tasks the end of the run stopped run again whatever is named: a
        // cancel's, and those a failure skipped (fail-fast): the run's
        // end stopped them, not their own rules.
        let stopped = |i: usize| {
            rows.get(v.tasks[i].id.as_str()).is_some_and(|r| {
                r.state == TaskState::Cancelled
                    || r.skip_reason == Some(warren_shared::wire::SkipReason::WorkflowFailed)
            })
        };
        let mut named: Vec<usize> = (0..n).filter(|&i| stopped(i)).collect();
        if ask.from.is_empty() {
            named.extend((0..n).filter(|&i| state(i) != Some(TaskState::Succeeded)));
        } else {
            for task in &ask.from {
                match index.get(task.as_str()) {
                    Some(&i) => named.push(i),
                    None => {
                        return RerunOutcome::Refused(Rejection {
                            code: "unknown_task".into(),
                            message: format!(
                                "workflow `{shown}` has no task `{}` (a mapped task's instances run again with their task: name the task)",
                                validate::shortened(task, validate::MAX_ID_LEN)
                            ),
                            task: Some(validate::shortened(task, validate::MAX_ID_LEN)),
                        });
                    }
                }
            }
        }
        // The tasks named and everything downstream of them.
        let mut dependents = vec![Vec::new(); n];
        for (i, deps) in v.deps.iter().enumerate() {
            for &d in deps {
                dependents[d as usize].push(i);
            }
        }
        let mut reset = vec![false; n];
        while let Some(i) = named.pop() {
            if !std::mem::replace(&mut reset[i], true) {
                named.extend(&dependents[i]);
            }
        }
        if !reset.contains(&true) {
            return refused(
                "nothing_to_rerun",
                format!(
                    "every task of workflow `{shown}` succeeded: name the tasks to run again in `from`"
                ),
            );
        }
        // A failed task kept fails the new run at once (fail-fast): it
        // must run again too, unless the workflow handles its failures.
        if v.on_failure == warren_shared::wire::OnFailure::Fail
            && let Some(i) = (0..n).find(|&i| !reset[i] && state(i) == Some(TaskState::Failed))
        {
            let task = validate::shortened(&v.tasks[i].id, validate::MAX_ID_LEN);
            return RerunOutcome::Refused(Rejection {
                code: "failed_task_kept".into(),
                message: format!(
                    "task `{task}` of workflow `{shown}` failed and would not run again, so the new run would fail at once: name it in `from` too, or re-run without `from`"
                ),
                task: Some(task),
            });
        }
        if let Some(r) = self.queue_bound_rejection(&v) {
            return RerunOutcome::Refused(r.errors.into_iter().next().expect("one problem"));
        }
        // A task's row goes with its task, an instance's (`task[k]`) with
        // its mapped task.
        let runs_again = |task_id: &str| {
            index
                .get(super::map::task_of(task_id))
                .is_some_and(|&i| reset[i])
        };
        let previous: Option<WorkflowReport> = stored
            .report
            .as_deref()
            .and_then(|r| serde_json::from_str(r).ok());
        let mut record = RunRecord {
            from: ask.from.clone(),
            previous: RunSummary {
                run: previous_run,
                status,
                rerun_id: None,
                from: Vec::new(),
                started_at: Some(w.runs.last().map_or(w.created_at, |r| r.started_at)),
                finished_at: stored.finished_at,
                error: previous.and_then(|p| p.error),
            },
            tasks: BTreeMap::new(),
        };
        let mut deleted: Vec<String> = (0..n)
            .filter(|&i| reset[i])
            .map(|i| v.tasks[i].id.clone())
            .collect();
        let mut kept = Vec::with_capacity(w.tasks.len());
        for row in w.tasks {
            if !runs_again(&row.task_id) {
                kept.push(row);
                continue;
            }
            if index.contains_key(row.task_id.as_str()) && row.state.is_final() {
                record
                    .tasks
                    .insert(row.task_id.clone(), earlier(previous_run, &row));
            } else if !index.contains_key(row.task_id.as_str()) {
                deleted.push(row.task_id);
            }
        }
        // What the restored run holds against the memory budget: its
        // definition, the outputs kept, its instances kept and its history.
        let record_json = serde_json::to_string(&record).expect("records serialise");
        let kept_bytes: usize = kept
            .iter()
            .map(|r| r.output.as_ref().map_or(0, String::len))
            .sum();
        let kept_instances = kept
            .iter()
            .filter(|r| !index.contains_key(r.task_id.as_str()))
            .count();
        let bytes = w.definition.len() + kept_bytes + record_json.len();
        if !self.has_room(v.priority, n + kept_instances, bytes) {
            return refused(
                "over_capacity",
                "the scheduler holds the most tasks or bytes it may (WARREN_MAX_ACTIVE_TASKS, WARREN_MAX_ACTIVE_BYTES): ask again once workflows have ended".into(),
            );
        }
        let row = RunRow {
            workflow_id: Arc::from(w.id.as_str()),
            run,
            rerun_id: ask.rerun_id.clone(),
            started_at: now,
            record: record_json,
        };
        // The timers of the run before (its deadline, a lease or retry of
        // an attempt, whose numbers count from 1 again) are dropped: left
        // in their heaps they would fire on this run's (O(timers), once
        // per rerun).
        self.deadlines.retain(|Reverse((_, of))| **of != *w.id);
        self.retries.retain(|Reverse((_, _, of, ..))| **of != *w.id);
        self.leases.retain(|Reverse((_, _, of, ..))| **of != *w.id);
        let mark = self.ops.len();
        self.ops.push(Op::Rerun {
            row: row.clone(),
            reset: deleted,
        });
        let mut replies = ReplyTo::from_rows(w.replies)
            .into_iter()
            .map(|r| (r.queue, r.correlation_id))
            .collect::<Vec<_>>();
        if let Some(to) = &waiter {
            self.ops.push(Op::AddReply {
                workflow_id: row.workflow_id.clone(),
                reply_to: to.queue.clone(),
                correlation_id: to.correlation_id.clone(),
                run,
            });
            replies.push((to.queue.clone(), to.correlation_id.clone()));
        }
        let mut runs = w.runs;
        runs.push(row);
        let restored = RunningWorkflow {
            id: w.id.clone(),
            seq: w.seq,
            definition: w.definition,
            created_at: w.created_at,
            tasks: kept,
            replies,
            runs,
        };
        // Restoring fails before it changes anything (an output that is
        // no longer JSON): the rerun is not written either.
        if let Err(Unreadable(why)) = self.restore_run(restored) {
            self.ops.truncate(mark);
            return refused(
                "not_rerunnable",
                format!("workflow `{shown}` does not read back: {why}"),
            );
        }
        Counters::add(&self.counters.workflows_rerun, 1);
        tracing::info!(workflow = %w.id, run, "Workflow re-run");
        RerunOutcome::Started
    }

    /// Restores a re-run workflow and announces its new run.
    fn restore_run(&mut self, r: RunningWorkflow) -> Result<(), Unreadable> {
        let id = r.id.clone();
        let created_at = r.created_at;
        self.restore(r)?;
        if let Some(wf) = self.workflows.get(id.as_str()) {
            let event = WorkflowReport {
                name: wf.name.clone(),
                status: WorkflowStatus::Running,
                created_at: Some(created_at),
                run: wf.run,
                ..WorkflowReport::not_found(&id)
            };
            self.emit_event(&id, WorkflowStatus::Running, to_json(&event));
        }
        Ok(())
    }

    /// The status and final report of a workflow that ended in the
    /// current batch.
    pub fn finished_in_batch(&self, id: &str) -> Option<(WorkflowStatus, String)> {
        self.ops.iter().rev().find_map(|op| match op {
            Op::FinishWorkflow {
                id: done,
                status,
                report,
                ..
            } if &**done == id => Some((*status, report.clone())),
            _ => None,
        })
    }
}

/// How a task's row says it ended, as an entry of its `history`.
fn earlier(run: u32, row: &TaskRow) -> EarlierOutcome {
    let mut error = row.error.clone();
    if let Some(e) = &mut error
        && e.message.chars().count() > MAX_HISTORY_ERROR_CHARS
    {
        e.message = validate::shortened(&e.message, MAX_HISTORY_ERROR_CHARS);
    }
    EarlierOutcome {
        run,
        state: row.state,
        attempts: row.attempt,
        error,
        skip_reason: row.skip_reason,
        worker: row.worker.clone(),
        started_at: row.started_at,
        finished_at: row.finished_at,
    }
}

/// Gives a restored workflow its runs: its number, when it started, the
/// summary of each run and each task's earlier outcomes.
pub(super) fn apply_runs(wf: &mut Workflow, runs: &[RunRow]) -> Result<(), Unreadable> {
    let Some(current) = runs.last() else {
        return Ok(());
    };
    let mut summaries = Vec::with_capacity(runs.len() + 1);
    let mut asked: Option<(Vec<String>, Option<String>)> = None;
    for row in runs {
        let record: RunRecord = serde_json::from_str(&row.record).map_err(|e| {
            Unreadable(format!(
                "run {} of workflow {}: {e}",
                row.run, row.workflow_id
            ))
        })?;
        let mut previous = record.previous;
        if let Some((from, rerun_id)) = asked.take() {
            previous.from = from;
            previous.rerun_id = rerun_id;
        }
        summaries.push(previous);
        for (task, outcome) in record.tasks {
            if let Some(&i) = wf.index.get(&task) {
                wf.history.entry(i).or_default().push(outcome);
            }
        }
        asked = Some((record.from, row.rerun_id.clone()));
    }
    let (from, rerun_id) = asked.unwrap_or_default();
    summaries.push(RunSummary {
        run: current.run,
        status: WorkflowStatus::Running,
        rerun_id: rerun_id.clone(),
        from,
        started_at: Some(current.started_at),
        finished_at: None,
        error: None,
    });
    wf.run = current.run;
    wf.run_started_at = current.started_at;
    wf.rerun_id = rerun_id;
    wf.history_bytes = json_len(&summaries) + wf.history.values().map(json_len).sum::<usize>();
    wf.runs = summaries;
    Ok(())
}

/// The workflow's runs as a report shows them: none before a rerun; else
/// every run, the current one as of now.
pub(super) fn runs_now(
    wf: &Workflow,
    status: WorkflowStatus,
    finished_at: Option<DateTime<Utc>>,
) -> Vec<RunSummary> {
    let mut runs = wf.runs.clone();
    if let Some(current) = runs.last_mut() {
        current.status = status;
        current.finished_at = finished_at;
        current.error.clone_from(&wf.failure);
    }
    runs
}
