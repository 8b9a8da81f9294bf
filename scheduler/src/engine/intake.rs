//! How workflows come into the engine: accepted from a request
//! ([`Engine::accept`]), rejected ([`Engine::reject`]), submitted again
//! while known ([`Engine::add_waiter`], [`Engine::note_duplicate`]), or
//! restored from the store after a restart or a change of partitions
//! ([`Engine::restore`]).

use super::{
    Counters, Engine,
    emit::to_json,
    queued::queued_report,
    scheduled::scheduled_report,
    workflow::{TaskRt, build, restored},
};
use crate::{
    batch::{Op, ReplyTo, RunningWorkflow, Unreadable},
    validate::{self, Rejected, ValidWorkflow},
};
use chrono::{DateTime, Utc};
use std::{cmp::Reverse, sync::Arc};
use warren_shared::wire::{TaskState, WorkflowReport, WorkflowStatus};

/// Most `reply_to` addresses one running workflow's outcome goes to: each
/// duplicate submission with a `reply_to` adds one, up to this; past it a
/// duplicate is answered at once (status `running`, no tasks).
pub const MAX_WAITERS: usize = 100;

impl Engine {
    /// A second submission of a running workflow: its outcome goes to this
    /// `reply_to` too.
    pub fn add_waiter(&mut self, id: &str, reply: ReplyTo) {
        Counters::add(&self.counters.workflows_duplicate, 1);
        if self.add_scheduled_waiter(id, reply.clone()) || self.add_queued_waiter(id, reply.clone())
        {
            return;
        }
        if let Some(w) = self.workflows.get_mut(id) {
            if w.replies.contains(&reply) {
                return; // the same request redelivered
            }
            if w.replies.len() >= MAX_WAITERS {
                // Answered now, cheaply: running, without its tasks.
                let report = WorkflowReport {
                    status: WorkflowStatus::Running,
                    name: w.name.clone(),
                    created_at: Some(w.created_at),
                    error: Some(format!(
                        "{MAX_WAITERS} submissions already wait for this workflow's outcome; ask with a status request"
                    )),
                    ..WorkflowReport::not_found(id)
                };
                self.reply_report(&reply, &report);
                return;
            }
            let id = w.id.clone();
            self.add_reply_row(&id, &reply);
            let w = self.workflows.get_mut(&id).expect("present above");
            w.replies.push(reply);
        }
    }

    /// The row that sends a workflow's outcome to a submitter's `reply_to`.
    pub(super) fn add_reply_row(&mut self, id: &Arc<str>, reply: &ReplyTo) {
        self.ops.push(Op::AddReply {
            workflow_id: id.clone(),
            reply_to: reply.queue.clone(),
            correlation_id: reply.correlation_id.clone(),
            run: 0,
        });
    }

    /// Counts a duplicate submission of a workflow that has already ended.
    pub fn note_duplicate(&mut self) {
        Counters::add(&self.counters.workflows_duplicate, 1);
    }

    /// Records a rejected request and answers it.
    pub fn reject(&mut self, r: Rejected, reply: Option<ReplyTo>, now: DateTime<Utc>) {
        Counters::add(&self.counters.workflows_rejected, 1);
        let report = WorkflowReport {
            workflow_id: r.id.clone(),
            name: r.name.clone(),
            status: WorkflowStatus::Rejected,
            errors: r.errors,
            created_at: Some(now),
            finished_at: Some(now),
            ..WorkflowReport::not_found(&r.id)
        };
        let body = to_json(&report);
        let seq = self.next_workflow_seq;
        self.next_workflow_seq += 1;
        self.ops.push(Op::InsertWorkflow {
            id: Arc::from(r.id.as_str()),
            seq,
            name: r.name,
            priority: 0,
            status: WorkflowStatus::Rejected,
            definition: None,
            report: Some(String::from_utf8_lossy(&body).into_owned()),
            created_at: now,
        });
        if let Some(to) = &reply {
            self.emit_reply(to, body.clone());
        }
        self.emit_event(&r.id, WorkflowStatus::Rejected, body);
    }

    /// Accepts a validated workflow: records it and makes its roots ready;
    /// with a start time ahead, records it `scheduled` (`scheduled.rs`);
    /// without room in the working set, records it `queued` (`queued.rs`).
    pub fn accept(
        &mut self,
        v: ValidWorkflow,
        definition: Arc<[u8]>,
        reply: Option<ReplyTo>,
        now: DateTime<Utc>,
    ) {
        Counters::add(&self.counters.workflows_accepted, 1);
        let seq = self.next_workflow_seq;
        self.next_workflow_seq += 1;
        let id: Arc<str> = Arc::from(v.id.as_str());
        let due = v.start.map(|s| s.due(now)).filter(|due| *due > now);
        let queue = due.is_none() && self.must_queue(v.priority, v.tasks.len(), definition.len());
        let (status, report) = match due {
            Some(due) => (
                WorkflowStatus::Scheduled,
                Some(scheduled_report(&id, v.name.clone(), due)),
            ),
            None if queue => (
                WorkflowStatus::Queued,
                Some(queued_report(&id, v.name.clone(), now, v.tasks.len())),
            ),
            None => (WorkflowStatus::Running, None),
        };
        self.ops.push(Op::InsertWorkflow {
            id: id.clone(),
            seq,
            name: v.name.clone(),
            priority: v.priority,
            status,
            definition: Some(definition.clone()),
            report: report.map(|r| String::from_utf8_lossy(&to_json(&r)).into_owned()),
            created_at: now,
        });
        let mut replies = Vec::new();
        if let Some(to) = reply {
            self.add_reply_row(&id, &to);
            replies.push(to);
        }
        match due {
            Some(due) => self.schedule(id, v.name, due, replies),
            None if queue => self.enqueue(&v, definition.len(), now, replies),
            None => self.begin(v, &definition, replies, now),
        }
    }

    /// Starts an accepted workflow: builds it, announces it and makes its
    /// roots ready (what the store needs is already in the batch).
    pub(super) fn begin(
        &mut self,
        v: ValidWorkflow,
        definition: &[u8],
        replies: Vec<ReplyTo>,
        now: DateTime<Utc>,
    ) {
        let id: Arc<str> = Arc::from(v.id.as_str());
        let mut wf = build(id.clone(), v, now, replies, |_| TaskRt::pending());
        wf.held_bytes = definition.len();
        self.hold(&wf);
        // The accepted event names no tasks: building (and dropping) a
        // report of every task would cost O(tasks) for nothing.
        let event = WorkflowReport {
            workflow_id: id.to_string(),
            name: wf.name.clone(),
            status: WorkflowStatus::Running,
            created_at: Some(now),
            ..WorkflowReport::not_found(&id)
        };
        self.emit_event(&id, WorkflowStatus::Running, to_json(&event));
        let roots: Vec<u32> = (0..wf.tasks.len() as u32)
            .filter(|&i| wf.waiting[i as usize] == 0)
            .collect();
        self.arm_deadline(&wf);
        self.workflows.insert(id.clone(), wf);
        self.settle(&id, Vec::new(), roots);
        // Every task may have been skipped by its condition.
        self.maybe_finish(&id, now);
    }

    /// Rebuilds a workflow that was running when the scheduler stopped.
    pub fn restore(&mut self, r: RunningWorkflow) -> Result<(), Unreadable> {
        let v = validate::validate_stored(&r.definition, &r.id).map_err(|rej| {
            Unreadable(format!(
                "stored definition of workflow {} no longer validates: {:?}",
                r.id, rej.errors
            ))
        })?;
        let replies = ReplyTo::from_rows(r.replies);
        let wf_id: Arc<str> = Arc::from(r.id.as_str());
        let mut wf = restored(wf_id.clone(), v, r.created_at, replies, r.tasks)?;
        super::rerun::apply_runs(&mut wf, &r.runs)?;
        wf.held_bytes = r.definition.len()
            + wf.tasks.iter().map(|t| t.output_bytes).sum::<usize>()
            + wf.history_bytes;
        self.hold(&wf);
        for i in 0..wf.tasks.len() as u32 {
            match wf.tasks[i as usize].state {
                TaskState::Running => {
                    wf.running += 1;
                    self.limits.started(
                        self.limits.slot_of(&wf.specs[i as usize].kind),
                        &wf.id,
                        self.partitions,
                    );
                    self.queues
                        .entry(wf.specs[i as usize].queue.clone())
                        .or_default()
                        .in_flight += 1;
                    if let Some(timeout) = wf.specs[i as usize].timeout_ms {
                        let t = &wf.tasks[i as usize];
                        let since = t.started_at.map_or(0, |s| s.timestamp_millis());
                        self.seq += 1;
                        self.leases.push(Reverse((
                            since
                                .saturating_add(timeout as i64)
                                .saturating_add(self.lease_grace_ms),
                            self.seq,
                            wf_id.clone(),
                            i,
                            t.attempt,
                        )));
                    }
                }
                TaskState::Retrying | TaskState::Delayed => {
                    let t = &wf.tasks[i as usize];
                    self.seq += 1;
                    self.retries.push(Reverse((
                        t.due_at_ms.unwrap_or(0),
                        self.seq,
                        wf_id.clone(),
                        i,
                        t.attempt,
                    )));
                }
                _ => {}
            }
        }
        let undecided: Vec<u32> = (0..wf.tasks.len() as u32)
            .filter(|&i| {
                wf.tasks[i as usize].state == TaskState::Pending && wf.waiting[i as usize] == 0
            })
            .collect();
        self.arm_deadline(&wf);
        self.workflows.insert(wf_id.clone(), wf);
        self.settle(&wf_id, Vec::new(), undecided);
        self.maybe_finish(&wf_id, Utc::now());
        Ok(())
    }
}
