//! What ends a running attempt: its result ([`Engine::on_result`]), its
//! lease running out ([`Engine::fire_due`]), or its workflow's cancel
//! ([`Engine::cancel`]); and due retries, which make a task ready again.

use super::{Counters, Engine, TypeLimits, queue::QueueState, workflow::Workflow};
use crate::batch::{Op, OutKind, OutMsg};
use chrono::{DateTime, Utc};
use serde_json::Value;
use std::{cmp::Reverse, collections::HashMap, sync::Arc};
use warren_shared::wire::{
    ResultStatus, TaskError, TaskMessage, TaskResult, TaskState, WorkflowReport, WorkflowStatus,
};

/// A result that does not carry its attempt's token (see
/// `attempt_key.rs`): not applied; the caller dead-letters it with this
/// reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forged {
    /// Why it was refused, naming the attempt.
    pub reason: String,
}

impl Engine {
    /// Applies a task result. Results for an attempt that is not running
    /// (duplicates, late results) change nothing and are counted. A result
    /// without its attempt's token changes nothing either, and is handed
    /// back as [`Forged`] (counted as `results_forged`).
    pub fn on_result(&mut self, r: TaskResult, now: DateTime<Utc>) -> Result<(), Forged> {
        // The token names its run: the running one's, or (a late result
        // of a workflow not running here) any run it may have had.
        let of = |run| crate::attempt_key::Attempt {
            workflow: &r.workflow_id,
            task: &r.task_id,
            attempt: r.attempt,
            run,
        };
        let key = &self.attempt_key;
        let (verified, earlier) = match self.workflows.get(r.workflow_id.as_str()) {
            Some(wf) => (
                key.verify(of(wf.run), &r.token),
                // A late result of an earlier run's attempt: not forged,
                // and not this run's.
                (1..wf.run).any(|run| key.verify(of(run), &r.token)),
            ),
            None => (
                (1..=super::MAX_RUNS).any(|run| key.verify(of(run), &r.token)),
                false,
            ),
        };
        if earlier {
            Counters::add(&self.counters.results_ignored, 1);
            tracing::debug!(workflow = %r.workflow_id, task = %r.task_id, attempt = r.attempt, "Result of an earlier run ignored");
            return Ok(());
        }
        if !verified {
            Counters::add(&self.counters.results_forged, 1);
            let what = if r.token.is_empty() {
                "without a token"
            } else {
                "with a wrong token"
            };
            let reason = format!(
                "result {what} for attempt {} of task `{}` of workflow `{}`: not applied (protocol 2: a result carries its task message's `token`)",
                r.attempt,
                crate::validate::shortened(&r.task_id, 256),
                crate::validate::shortened(&r.workflow_id, 256),
            );
            tracing::warn!(%reason, "Result refused");
            return Err(Forged { reason });
        }
        let Some(wf) = self.workflows.get_mut(r.workflow_id.as_str()) else {
            Counters::add(&self.counters.results_ignored, 1);
            tracing::debug!(workflow = %r.workflow_id, task = %r.task_id, attempt = r.attempt, "Result for a workflow that is not running ignored");
            return Ok(());
        };
        let Some(i) = wf.index.get(r.task_id.as_str()).map(|&i| i as usize) else {
            Counters::add(&self.counters.results_ignored, 1);
            tracing::warn!(workflow = %r.workflow_id, task = %r.task_id, "Result for an unknown task ignored");
            return Ok(());
        };
        let t = &wf.tasks[i];
        if t.state != TaskState::Running || t.attempt != r.attempt {
            Counters::add(&self.counters.results_ignored, 1);
            tracing::debug!(workflow = %r.workflow_id, task = %r.task_id, attempt = r.attempt, "Duplicate or late result ignored");
            return Ok(());
        }
        Counters::add(&self.counters.results_committed, 1);
        // How long it ran, and since its dispatch (`started_at` until the
        // worker's start replaces it below): for the queue's window.
        if let (Some(dispatched_at), Some(q)) =
            (t.started_at, self.queues.get_mut(&wf.specs[i].queue))
        {
            q.observe((r.started_at, r.finished_at), dispatched_at, now);
        }
        let id = wf.id.clone();
        if !wf.progress_marked {
            wf.progress_marked = true;
            self.progress_dirty.insert(id.clone());
        }
        task_ended(
            wf,
            i,
            r.finished_at.unwrap_or(now),
            Capacity {
                limits: &mut self.limits,
                queues: &mut self.queues,
                partitions: self.partitions,
            },
        );
        let t = &mut wf.tasks[i];
        // A worker's id is its own to choose: kept to 256 characters.
        t.worker = Some(r.worker)
            .filter(|w| !w.is_empty())
            .map(|w| crate::validate::shortened(&w, 256));
        if let (Some(start), Some(end)) = (r.started_at, r.finished_at) {
            self.counters
                .task_duration
                .observe((end - start).num_microseconds().unwrap_or(0) as f64 / 1e6);
        }
        t.started_at = r.started_at.or(t.started_at);
        self.ops.push(Op::Result {
            workflow_id: id.clone(),
            task_id: r.task_id,
            attempt: r.attempt,
            status: r.status,
            worker: t.worker.clone(),
            started_at: t.started_at,
            finished_at: t.finished_at,
        });
        let i = i as u32;
        let mut received = 0;
        match r.status {
            ResultStatus::Succeeded => {
                Counters::add(&self.counters.tasks_succeeded, 1);
                t.state = TaskState::Succeeded;
                let output = r.output.unwrap_or(Value::Null);
                t.output_bytes =
                    crate::template::json_len_within(&output, usize::MAX).expect("no limit");
                t.output = Some(output);
                received = t.output_bytes;
                wf.held_bytes += received;
                t.error = None;
                wf.unfinished -= 1;
                let row = wf.row(i);
                self.ops.push(Op::Task(row));
                self.settle(&id, vec![i], Vec::new());
            }
            ResultStatus::Failed => {
                let error = r.error.unwrap_or_else(|| TaskError {
                    message: "the worker reported a failure without an error".into(),
                    retryable: false,
                });
                self.fail_attempt(&id, i, error, now);
            }
        }
        self.hold_bytes(received);
        self.maybe_finish(&id, now);
        Ok(())
    }

    /// Cancels a running workflow: every task not yet final becomes
    /// `cancelled`, workers are told on `{ns}.control` to stop the ones
    /// running, and the workflow ends `cancelled` now (a later result is
    /// ignored). Returns the final report, or `None` when the workflow is
    /// not running here.
    pub fn cancel(&mut self, id: &str, now: DateTime<Utc>) -> Option<WorkflowReport> {
        let id = self.workflows.get(id)?.id.clone();
        self.stop_unfinished(&id, now);
        self.workflows
            .get_mut(&id)
            .expect("present above")
            .cancelled = true;
        let report =
            self.workflows[&id].report(WorkflowStatus::Cancelled, Some(now), self.report_bounds());
        self.maybe_finish(&id, now);
        Some(report)
    }

    /// Ends a running workflow whose `deadline_ms` has passed: as a
    /// cancel (its unfinished tasks `cancelled`, the running ones told to
    /// stop), but it ends `failed`, its report saying why (`error`, and an
    /// entry with code `deadline` in `errors`).
    fn pass_deadline(&mut self, id: &Arc<str>, now: DateTime<Utc>) {
        let Some(wf) = self.workflows.get(id) else {
            return;
        };
        let ms = wf.deadline_ms.unwrap_or(0);
        tracing::info!(workflow = %id, deadline_ms = ms, "Workflow past its deadline");
        Counters::add(&self.counters.deadlines_passed, 1);
        self.stop_unfinished(id, now);
        let wf = self.workflows.get_mut(id).expect("present above");
        wf.deadline_passed = true;
        wf.failure = Some(format!(
            "deadline: not finished within deadline_ms ({ms} ms) of its start"
        ));
        self.maybe_finish(id, now);
    }

    /// Every task of `id` not yet final becomes `cancelled`; workers are
    /// told on `{ns}.control` to stop the running ones, whose dispatch
    /// slots are freed. Queued ready items, retries and leases of these
    /// tasks find them no longer ready, retrying or running, and are
    /// dropped.
    fn stop_unfinished(&mut self, id: &Arc<str>, now: DateTime<Utc>) {
        let wf = self.workflows.get_mut(id).expect("caller checked");
        let id = wf.id.clone();
        let mut stopped = 0;
        for j in 0..wf.tasks.len() {
            match wf.tasks[j].state {
                TaskState::Running => {
                    stopped += 1;
                    task_ended(
                        wf,
                        j,
                        now,
                        Capacity {
                            limits: &mut self.limits,
                            queues: &mut self.queues,
                            partitions: self.partitions,
                        },
                    );
                }
                TaskState::Pending
                | TaskState::Ready
                | TaskState::Retrying
                | TaskState::Delayed
                | TaskState::Mapped => {}
                _ => continue,
            }
            let t = &mut wf.tasks[j];
            t.state = TaskState::Cancelled;
            t.due_at_ms = None;
            let row = wf.row(j as u32);
            self.ops.push(Op::Task(row));
        }
        debug_assert_eq!(wf.running, 0, "every running task was counted");
        wf.unfinished = 0;
        if stopped > 0 {
            let run = wf.run;
            self.emit_cancel_notice(&id, run);
        }
    }

    /// Makes every retry due by `now_ms` ready again, fails every attempt
    /// whose lease has ended without a result, and ends every workflow
    /// past its deadline.
    pub fn fire_due(&mut self, now_ms: i64) {
        self.expire_leases(now_ms);
        let now = DateTime::from_timestamp_millis(now_ms).unwrap_or_else(Utc::now);
        while let Some(Reverse((due, _))) = self.deadlines.peek() {
            if *due > now_ms {
                break;
            }
            let Reverse((_, id)) = self.deadlines.pop().expect("peeked");
            self.pass_deadline(&id, now);
        }
        while let Some(Reverse((due, ..))) = self.retries.peek() {
            if *due > now_ms {
                break;
            }
            let Reverse((_, _, id, task, attempt)) = self.retries.pop().expect("peeked");
            let live = self.workflows.get(&id).is_some_and(|w| {
                let t = &w.tasks[task as usize];
                matches!(t.state, TaskState::Retrying | TaskState::Delayed) && t.attempt == attempt
            });
            if live {
                self.make_ready(&id, task);
            }
        }
    }

    /// A running attempt whose result has not come within its timeout plus
    /// the grace period is failed (retryable): its worker is dead or hung.
    /// Should its result come later after all, it is ignored.
    fn expire_leases(&mut self, now_ms: i64) {
        let now = DateTime::from_timestamp_millis(now_ms).unwrap_or_else(Utc::now);
        while let Some(Reverse((due, ..))) = self.leases.peek() {
            if *due > now_ms {
                break;
            }
            let Reverse((_, _, id, task, attempt)) = self.leases.pop().expect("peeked");
            let Some(wf) = self.workflows.get(&id) else {
                continue;
            };
            let t = &wf.tasks[task as usize];
            if t.state != TaskState::Running || t.attempt != attempt {
                continue;
            }
            Counters::add(&self.counters.leases_expired, 1);
            let timeout = wf.specs[task as usize].timeout_ms.unwrap_or(0);
            tracing::warn!(workflow = %id, task = %wf.specs[task as usize].id, attempt, "Lease expired: no result within the task's timeout plus grace");
            let error = TaskError {
                message: format!(
                    "no result within the lease ({timeout} ms timeout + {} ms grace): the worker died or hung",
                    self.lease_grace_ms
                ),
                retryable: true,
            };
            self.fail_running(&id, (task, attempt), error, now);
        }
    }

    /// Fails attempt `attempt` of task `task` if it is the one running;
    /// false when it is not.
    fn fail_running(
        &mut self,
        id: &Arc<str>,
        (task, attempt): (u32, u32),
        error: TaskError,
        now: DateTime<Utc>,
    ) -> bool {
        let Some(wf) = self.workflows.get_mut(id) else {
            return false;
        };
        let t = &wf.tasks[task as usize];
        if t.state != TaskState::Running || t.attempt != attempt {
            return false;
        }
        task_ended(
            wf,
            task as usize,
            now,
            Capacity {
                limits: &mut self.limits,
                queues: &mut self.queues,
                partitions: self.partitions,
            },
        );
        self.fail_attempt(id, task, error, now);
        self.maybe_finish(id, now);
        true
    }

    /// The broker refused an outbox message for good (too large, or its
    /// queue exists with other arguments), or Warren would not send it:
    /// it is recorded on `{ns}.dead` (described, with the message itself
    /// when small), and a task message's attempt fails for good with the
    /// reason, so that its workflow ends instead of waiting forever. Any
    /// other message (a report, an event) is only recorded.
    pub fn message_refused(&mut self, msg: &OutMsg, reason: &str, now: DateTime<Utc>) {
        Counters::add(&self.counters.messages_refused, 1);
        tracing::error!(kind = msg.kind.as_str(), exchange = %msg.exchange, routing_key = %msg.routing_key, bytes = msg.body.len(), %reason, "The broker refused a message for good");
        match msg.kind {
            // A refused dead letter is not dead-lettered again.
            OutKind::Dead => return,
            OutKind::Task => self.dead_letter_refused(msg, reason),
            _ => {
                self.dead_letter_refused(msg, reason);
                return;
            }
        }
        let Ok(task) = serde_json::from_slice::<TaskMessage>(&msg.body) else {
            return;
        };
        let id: Arc<str> = Arc::from(task.workflow_id.as_str());
        let Some(i) = self
            .workflows
            .get(&id)
            .and_then(|wf| wf.index.get(task.task_id.as_str()).copied())
        else {
            return;
        };
        let error = TaskError {
            message: format!("the task message could not be published: {reason}"),
            retryable: false,
        };
        self.fail_running(&id, (i, task.attempt), error, now);
    }
}

/// What a running attempt takes up outside its workflow: a place of its
/// type (counted by partition) and a slot of its queue's window. The
/// engine's fields, borrowed apart from the workflow that holds the
/// attempt.
struct Capacity<'a> {
    limits: &'a mut TypeLimits,
    queues: &'a mut HashMap<String, QueueState>,
    partitions: u16,
}

/// The one bookkeeping of a running attempt that stopped, whatever
/// stopped it (its result, its lease, its workflow's cancel): it no longer
/// counts against its workflow's `max_concurrency`, its type's place and
/// its queue's window slot are freed (a task parked for the place is
/// released at the next dispatch), and it finished at `finished_at`.
/// Its lease, if it has one, stays in the heap and is dropped when it
/// comes up (it finds the attempt no longer running). What the attempt
/// ends as (succeeded, retrying, failed, cancelled) is the caller's.
fn task_ended(wf: &mut Workflow, i: usize, finished_at: DateTime<Utc>, capacity: Capacity<'_>) {
    let Capacity {
        limits,
        queues,
        partitions,
    } = capacity;
    wf.running -= 1;
    let spec = &wf.specs[i];
    limits.ended(limits.slot_of(&spec.kind), &wf.id, partitions);
    if let Some(q) = queues.get_mut(&spec.queue) {
        q.in_flight = q.in_flight.saturating_sub(1);
    }
    wf.tasks[i].finished_at = Some(finished_at);
}
