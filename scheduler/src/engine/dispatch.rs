//! From ready to running: a task that becomes ready joins its queue
//! ([`Engine::make_ready`]); [`Engine::dispatch`] releases ready tasks
//! into their task queues, best first, while each queue has room in its
//! window, its workflow room under `max_concurrency` and its type a free
//! place (else it is parked), resolving each task's input templates on
//! the way. Paused queues are skipped, and tasks of paused types are held
//! (`pauses`).

use super::{
    Counters, Engine,
    queue::{DispatchOrder, ReadyItem},
};
use crate::attempt_key::Attempt;
use crate::{batch::Op, template::ResolveError};
use chrono::{DateTime, Utc};
use std::{cmp::Reverse, sync::Arc};
use warren_shared::wire::{TaskError, TaskMessage, TaskState};

impl Engine {
    /// Task `task` of workflow `id` is ready: it joins its queue; or, the
    /// first time (its dependencies just met) with a `delay_ms`, it waits
    /// `delayed` until then, a timer like a retry's.
    pub(super) fn make_ready(&mut self, id: &Arc<str>, task: u32) {
        let Some(wf) = self.workflows.get_mut(id) else {
            return;
        };
        let t = &mut wf.tasks[task as usize];
        if let Some(delay) = wf.specs[task as usize].delay_ms.filter(|d| *d > 0)
            && t.state == TaskState::Pending
        {
            let due = Utc::now()
                .timestamp_millis()
                .saturating_add(i64::try_from(delay).unwrap_or(i64::MAX));
            t.state = TaskState::Delayed;
            t.due_at_ms = Some(due);
            let attempt = t.attempt;
            let row = wf.row(task);
            self.ops.push(Op::Task(row));
            self.seq += 1;
            self.retries
                .push(Reverse((due, self.seq, id.clone(), task, attempt)));
            return;
        }
        t.state = TaskState::Ready;
        t.due_at_ms = None;
        self.seq += 1;
        let rank = match self.order {
            DispatchOrder::CriticalPath => wf.rank[task as usize],
            DispatchOrder::Fifo => 0,
        };
        self.queues
            .entry(wf.specs[task as usize].queue.clone())
            .or_default()
            .push(
                wf.priority,
                id,
                ReadyItem {
                    rank,
                    seq: self.seq,
                    task,
                    ready_at_ms: Utc::now().timestamp_millis(),
                    limit: self.limits.slot_of(&wf.specs[task as usize].kind),
                    released: false,
                },
            );
    }

    /// Releases ready tasks into their queues, best first, while each
    /// queue's in-flight count is under its window (`window.rs`).
    pub fn dispatch(&mut self, now: DateTime<Utc>) {
        self.dispatch_cut = false;
        self.release_parked();
        self.dispatch_queues(now);
        // A released task that did not dispatch after all (its input
        // template failed) leaves a place that the next parked one takes.
        while self.release_parked() {
            self.dispatch_queues(now);
        }
        self.forget_unused_queues();
    }

    fn dispatch_queues(&mut self, now: DateTime<Utc>) {
        let queues: Vec<String> = self
            .queues
            .iter()
            .filter(|(name, q)| {
                q.has_ready()
                    && q.in_flight < self.windows.of(name, q.busy_share())
                    && !self.pauses.queue_paused(name)
            })
            .map(|(name, _)| name.clone())
            .collect();
        for name in queues {
            let window = self.window(&name);
            loop {
                if self.batch_bytes >= self.bounds.max_batch_bytes {
                    // The batch's messages are held in memory until they
                    // are committed and published: the rest waits a turn.
                    self.dispatch_cut = true;
                    return;
                }
                let q = self.queues.get_mut(&name).expect("listed above");
                if q.in_flight >= window {
                    break;
                }
                let workflows = &self.workflows;
                let full = |w: &Arc<str>| {
                    workflows
                        .get(w)
                        .is_some_and(|wf| wf.running >= wf.max_running)
                };
                let Some((workflow, mut item)) = q.pop(full) else {
                    break;
                };
                self.limits.unreserve(&mut item);
                let Some(item) = self.hold_if_paused(&workflow, item) else {
                    continue;
                };
                if self.limits.at_limit(&item) {
                    let priority = self.workflows.get(&workflow).map_or(0, |wf| wf.priority);
                    self.limits.park(priority, workflow, item);
                    continue;
                }
                let waited_ms = now.timestamp_millis() - item.ready_at_ms;
                if self.dispatch_one(&workflow, item.task, now) {
                    self.limits.started(item.limit, &workflow, self.partitions);
                    self.counters
                        .dispatch_latency
                        .observe(waited_ms as f64 / 1e3);
                }
            }
        }
    }

    /// Dispatches a ready task; false when it is no longer ready (skipped
    /// or cancelled since) or its input could not be resolved.
    fn dispatch_one(&mut self, id: &Arc<str>, i: u32, now: DateTime<Utc>) -> bool {
        let Some(wf) = self.workflows.get_mut(id) else {
            return false;
        };
        if wf.tasks[i as usize].state != TaskState::Ready {
            return false; // skipped since it became ready
        }
        let max = self.bounds.max_task_input_bytes;
        let input = wf.resolved_input(i as usize, max);
        let spec = &wf.specs[i as usize];
        let t = &mut wf.tasks[i as usize];
        t.attempt += 1;
        t.due_at_ms = None;
        t.started_at = Some(now);
        t.finished_at = None;
        let input = match input {
            Ok(v) => v,
            Err(e) => {
                // The attempt never reaches a worker; the task fails for good.
                let message = match e {
                    ResolveError::Template(e) => format!("input template: {e}"),
                    ResolveError::TooLarge { bytes } => {
                        Counters::add(&self.counters.inputs_too_large, 1);
                        format!(
                            "the input of task `{}` resolves to {bytes} bytes or more, over the limit of {max} bytes (WARREN_MAX_TASK_INPUT_BYTES)",
                            spec.id
                        )
                    }
                };
                let error = TaskError {
                    message,
                    retryable: false,
                };
                self.fail_attempt(id, i, error, now);
                self.maybe_finish(id, now);
                return false;
            }
        };
        t.state = TaskState::Running;
        wf.running += 1;
        if !wf.progress_marked {
            wf.progress_marked = true;
            self.progress_dirty.insert(id.clone());
        }
        let msg = TaskMessage {
            workflow_id: id.to_string(),
            task_id: spec.id.clone(),
            attempt: t.attempt,
            kind: spec.kind.clone(),
            input,
            timeout_ms: spec.timeout_ms,
            max_attempts: spec.retry.unwrap_or_default().max_attempts,
            token: self.attempt_key.token(Attempt {
                workflow: id,
                task: &spec.id,
                attempt: t.attempt,
                run: wf.run,
            }),
            run: wf.run,
        };
        let queue = spec.queue.clone();
        let priority = wf.priority;
        let row = wf.row(i);
        self.ops.push(Op::Task(row));
        self.queues.entry(queue.clone()).or_default().in_flight += 1;
        if let Some(timeout) = msg.timeout_ms {
            self.seq += 1;
            self.leases.push(Reverse((
                now.timestamp_millis()
                    .saturating_add(timeout as i64)
                    .saturating_add(self.lease_grace_ms),
                self.seq,
                id.clone(),
                i,
                msg.attempt,
            )));
        }
        Counters::add(&self.counters.tasks_dispatched, 1);
        self.emit_task(&msg, queue, priority);
        true
    }
}
