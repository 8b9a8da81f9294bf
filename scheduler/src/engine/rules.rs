//! What happens to a task once every one of its dependencies has ended:
//! its trigger rule (`run_if`) and its condition (`when`) decide whether
//! it runs, is skipped (with its reason), or fails (a condition that
//! cannot be evaluated); and what a failure does to the tasks that have
//! not started (fail-fast, but for the tasks whose rule lets them run
//! after a failure).
//!
//! A task waits for its dependencies to end, whatever their outcome
//! (`Workflow::waiting` counts those that have not). Then:
//! - `all_succeeded` (the default): runs if every dependency succeeded;
//!   after the workflow failed it is skipped (`workflow_failed`), and a
//!   skipped dependency skips it (`upstream_skipped`);
//! - `all_done`: runs;
//! - `any_failed`: runs if a dependency failed, else is skipped
//!   (`trigger_rule`);
//! - and when it would run, its `when` must be true, else it is skipped
//!   (`condition`).
//!
//! A skipped task has ended too: what waits on it is decided in turn, in
//! one pass over a work list (no recursion, whatever the DAG's depth).

use super::{
    Counters, Engine,
    map::{self, Expansion},
    workflow::Workflow,
};
use crate::{batch::Op, condition::Condition, template::Source};
use std::{collections::VecDeque, sync::Arc};
use warren_shared::wire::{RunIf, SkipReason, TaskError, TaskState};

/// What becomes of a task whose dependencies have all ended.
enum Decision {
    Run,
    Skip(SkipReason),
    Fail(TaskError),
}

/// The rule task `j` runs by: its own, or for an instance of a mapped
/// task, the mapped task's (an instance has no dependencies of its own).
pub(super) fn rule(wf: &Workflow, j: usize) -> RunIf {
    match wf.instances.get(&(j as u32)) {
        Some(instance) => wf.specs[instance.of as usize].run_if,
        None => wf.specs[j].run_if,
    }
}

/// The decision for task `d`, all of whose dependencies have ended.
fn decide(wf: &Workflow, d: usize) -> Decision {
    if wf.instances.contains_key(&(d as u32)) {
        // Its mapped task was decided: it runs, unless a failure stops it.
        return if wf.failure.is_some() && rule(wf, d) == RunIf::AllSucceeded {
            Decision::Skip(SkipReason::WorkflowFailed)
        } else {
            Decision::Run
        };
    }
    let spec = &wf.specs[d];
    let mut states = spec
        .depends_on
        .iter()
        .map(|n| wf.tasks[wf.index[n.as_str()] as usize].state);
    match spec.run_if {
        RunIf::AllSucceeded if wf.failure.is_some() => {
            return Decision::Skip(SkipReason::WorkflowFailed);
        }
        RunIf::AllSucceeded if !states.all(|s| s == TaskState::Succeeded) => {
            return Decision::Skip(SkipReason::UpstreamSkipped);
        }
        RunIf::AnyFailed if !states.any(|s| s == TaskState::Failed) => {
            return Decision::Skip(SkipReason::TriggerRule);
        }
        _ => {}
    }
    let Some(when) = &spec.when else {
        return Decision::Run;
    };
    let lookup = |s: &Source| wf.source(d, s);
    match Condition::parse(when).and_then(|c| c.eval(&lookup)) {
        Ok(true) => Decision::Run,
        Ok(false) => Decision::Skip(SkipReason::Condition),
        Err(e) => Decision::Fail(TaskError {
            message: format!("its condition (`when`) could not be evaluated: {e}"),
            retryable: false,
        }),
    }
}

/// Whether a task in `state` that has not started is held back by a
/// failure: every task but those whose rule lets them run after one.
fn stopped_by_failure(wf: &Workflow, j: usize) -> bool {
    matches!(
        wf.tasks[j].state,
        TaskState::Pending | TaskState::Ready | TaskState::Retrying | TaskState::Delayed
    ) && rule(wf, j) == RunIf::AllSucceeded
}

/// Ends task `i` skipped for `reason`.
fn skip(wf: &mut Workflow, i: usize, reason: SkipReason, ops: &mut Vec<Op>) {
    let t = &mut wf.tasks[i];
    t.state = TaskState::Skipped;
    t.skip_reason = Some(reason);
    t.due_at_ms = None;
    wf.unfinished -= 1;
    ops.push(Op::Task(wf.row(i as u32)));
}

/// Fails task `i` for good; the first failure of the workflow stops what
/// has not started (see [`stopped_by_failure`]). Returns the tasks that
/// ended.
pub(super) fn fail_for_good(
    wf: &mut Workflow,
    i: usize,
    error: TaskError,
    ops: &mut Vec<Op>,
    counters: &Counters,
) -> Vec<u32> {
    Counters::add(&counters.tasks_failed, 1);
    let t = &mut wf.tasks[i];
    t.state = TaskState::Failed;
    t.due_at_ms = None;
    t.error = Some(error);
    wf.unfinished -= 1;
    ops.push(Op::Task(wf.row(i as u32)));
    let mut ended = vec![i as u32];
    if wf.failure.is_none() {
        wf.failure = Some(wf.failure_line(i));
        for j in 0..wf.tasks.len() {
            if stopped_by_failure(wf, j) {
                skip(wf, j, SkipReason::WorkflowFailed, ops);
                ended.push(j as u32);
            }
        }
    }
    ended
}

/// With `on_failure: handled`: every task that failed has a direct
/// dependent with `run_if: any_failed` that succeeded (a failed instance
/// of a mapped task is handled with its mapped task, which failed with
/// it).
pub(super) fn failures_handled(wf: &Workflow) -> bool {
    (0..wf.tasks.len())
        .filter(|&i| wf.tasks[i].state == TaskState::Failed)
        .filter(|&i| !wf.instances.contains_key(&(i as u32)))
        .all(|i| {
            wf.dependents[i].iter().any(|&d| {
                wf.specs[d as usize].run_if == RunIf::AnyFailed
                    && wf.tasks[d as usize].state == TaskState::Succeeded
            })
        })
}

impl Engine {
    /// Tasks of workflow `id` have ended (`ended`), and others are to be
    /// decided now (`decide_now`: pending, their dependencies all ended,
    /// such as the roots of a workflow just accepted). Decides every task
    /// this leaves with no dependency waiting, in one pass, and makes
    /// ready those that run.
    pub(super) fn settle(&mut self, id: &Arc<str>, ended: Vec<u32>, decide_now: Vec<u32>) {
        let max_output = self.bounds.max_task_input_bytes;
        let Some(wf) = self.workflows.get_mut(id) else {
            return;
        };
        let mut ended: VecDeque<u32> = ended.into();
        let mut to_decide: VecDeque<u32> = decide_now.into();
        let mut run = Vec::new();
        let (mut held_tasks, mut held_bytes) = (0, 0);
        loop {
            if let Some(d) = to_decide.pop_front() {
                let d = d as usize;
                if wf.tasks[d].state != TaskState::Pending {
                    continue;
                }
                match decide(wf, d) {
                    Decision::Run if wf.specs[d].map.is_some() => {
                        match map::expand(wf, d as u32, &self.bounds, &mut self.ops, &self.counters)
                        {
                            Expansion::Instances(added) => {
                                held_tasks += added.len();
                                run.extend(added);
                            }
                            Expansion::Ended(more, bytes) => {
                                held_bytes += bytes;
                                ended.extend(more);
                            }
                        }
                    }
                    Decision::Run => run.push(d as u32),
                    Decision::Skip(reason) => {
                        skip(wf, d, reason, &mut self.ops);
                        ended.push_back(d as u32);
                    }
                    Decision::Fail(error) => {
                        ended.extend(fail_for_good(wf, d, error, &mut self.ops, &self.counters));
                    }
                }
                continue;
            }
            let Some(i) = ended.pop_front() else {
                break;
            };
            let (more, bytes) =
                map::instance_ended(wf, i, max_output, &mut self.ops, &self.counters);
            held_bytes += bytes;
            ended.extend(more);
            for k in 0..wf.dependents[i as usize].len() {
                let d = wf.dependents[i as usize][k];
                if wf.tasks[d as usize].state != TaskState::Pending {
                    continue;
                }
                wf.waiting[d as usize] -= 1;
                if wf.waiting[d as usize] == 0 {
                    to_decide.push_back(d);
                }
            }
        }
        self.hold_tasks(held_tasks);
        self.hold_bytes(held_bytes);
        for d in run {
            // A failure decided later in the pass may have stopped it.
            let still = self
                .workflows
                .get(id)
                .is_some_and(|wf| wf.tasks[d as usize].state == TaskState::Pending);
            if still {
                self.make_ready(id, d);
            }
        }
    }
}
