//! Every message the engine sends, built in one place: task messages,
//! replies (reports, the workers registry, what is paused), events, dead
//! letters, control notices and progress events.
//!
//! Each message but progress is numbered, written to the outbox in the
//! batch's transaction ([`Op::Outbox`]) and published once that commits;
//! progress events are only published (a lost one is replaced by the
//! next). A message of no workflow is filed under the scheduler's home
//! partition, a task message under its workflow's.

use super::{Counters, Engine, PROGRESS_INTERVAL_MS};
use crate::batch::{Op, OutKind, OutMsg, ReplyTo};
use chrono::{DateTime, Utc};
use std::{collections::BTreeMap, sync::Arc};
use warren_shared::{
    topology::partition_of,
    wire::{
        ControlNotice, HEADER_DEAD_QUEUE, HEADER_DEAD_REASON, NoticeKind, PausesReport,
        TaskMessage, WorkersReport, WorkflowProgress, WorkflowReport, WorkflowStatus,
    },
};

/// A wire type as its JSON body.
pub(super) fn to_json<T: serde::Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).expect("wire types always serialise")
}

/// A message with nothing but its route and body set.
fn message(
    kind: OutKind,
    exchange: String,
    routing_key: String,
    body: Vec<u8>,
    part: u16,
) -> OutMsg {
    OutMsg {
        kind,
        exchange,
        routing_key,
        message_id: None,
        correlation_id: None,
        priority: None,
        headers: Vec::new(),
        body,
        part,
    }
}

impl Engine {
    /// Numbers `msg` and adds it to the batch's outbox.
    pub(super) fn emit(&mut self, msg: OutMsg) {
        self.batch_bytes += msg.body.len();
        let seq = self.next_outbox;
        self.next_outbox += 1;
        let msg = Arc::new(msg);
        self.ops.push(Op::Outbox(seq, msg.clone()));
        self.outbox.push((seq, msg));
    }

    /// A task message to its queue, with its workflow's priority, filed
    /// under its workflow's partition.
    pub(super) fn emit_task(&mut self, msg: &TaskMessage, queue: String, priority: u8) {
        let part = partition_of(&msg.workflow_id, self.partitions);
        self.emit(OutMsg {
            message_id: Some(msg.message_id()),
            priority: Some(priority),
            ..message(
                OutKind::Task,
                self.topology.tasks_exchange(),
                queue,
                to_json(msg),
                part,
            )
        });
    }

    /// A message to a producer's `reply_to` queue.
    pub(super) fn emit_to(&mut self, kind: OutKind, to: &ReplyTo, body: Vec<u8>) {
        self.emit(OutMsg {
            correlation_id: to.correlation_id.clone(),
            ..message(kind, String::new(), to.queue.clone(), body, self.home)
        });
    }

    /// A report (as JSON) to a producer's `reply_to` queue.
    pub(super) fn emit_reply(&mut self, to: &ReplyTo, body: Vec<u8>) {
        self.emit_to(OutKind::Reply, to, body);
    }

    /// A workflow's state change on `{ns}.events`, routed
    /// `workflow.{id}.{status}`.
    pub(super) fn emit_event(&mut self, id: &str, status: WorkflowStatus, body: Vec<u8>) {
        self.emit(message(
            OutKind::Event,
            self.topology.events(),
            format!("workflow.{id}.{}", status.as_str()),
            body,
            self.home,
        ));
    }

    /// Tells every worker on `{ns}.control` to stop the running tasks of
    /// the workflow's run `run`.
    pub(super) fn emit_cancel_notice(&mut self, id: &str, run: u32) {
        let notice = ControlNotice {
            control: NoticeKind::Cancel,
            workflow_id: id.to_owned(),
            run,
        };
        self.emit(message(
            OutKind::Control,
            self.topology.control(),
            String::new(),
            to_json(&notice),
            self.home,
        ));
    }

    /// A progress event on `{ns}.events`: published with the batch, never
    /// stored.
    fn publish_progress(&mut self, progress: &WorkflowProgress) {
        let seq = self.next_outbox;
        self.next_outbox += 1;
        let msg = message(
            OutKind::Progress,
            self.topology.events(),
            format!("workflow.{}.progress", progress.workflow_id),
            to_json(progress),
            self.home,
        );
        self.outbox.push((seq, Arc::new(msg)));
    }

    /// Answers a `workers` control request with the registry's report.
    pub fn reply_workers(&mut self, to: &ReplyTo, report: &WorkersReport) {
        self.emit_to(OutKind::WorkersReply, to, to_json(report));
    }

    /// Answers a `pause` or `resume` control request with what is paused.
    pub fn reply_pauses(&mut self, to: &ReplyTo, report: &PausesReport) {
        self.emit_to(OutKind::PausesReply, to, to_json(report));
    }

    /// Answers a `prune` with what it deleted.
    pub fn reply_pruned(&mut self, to: &ReplyTo, report: &warren_shared::wire::PruneReport) {
        self.emit_to(OutKind::PruneReply, to, to_json(report));
    }

    /// Sends an already serialised report to `to`.
    pub fn reply_with(&mut self, to: &ReplyTo, report_json: &str) {
        self.emit_reply(to, report_json.as_bytes().to_vec());
    }

    /// Sends `report` to `to`.
    pub fn reply_report(&mut self, to: &ReplyTo, report: &WorkflowReport) {
        self.emit_reply(to, to_json(report));
    }

    /// Dead-letters a message that cannot be processed.
    pub fn dead_letter(&mut self, body: Vec<u8>, source_queue: &str, reason: &str) {
        Counters::add(&self.counters.dead_lettered, 1);
        self.emit(OutMsg {
            headers: vec![
                (HEADER_DEAD_REASON.to_owned(), reason.to_owned()),
                (HEADER_DEAD_QUEUE.to_owned(), source_queue.to_owned()),
            ],
            ..message(
                OutKind::Dead,
                self.topology.dead(),
                String::new(),
                body,
                self.home,
            )
        });
    }

    /// Records a message the broker refused for good on `{ns}.dead`: a
    /// description (kind, route, size, reason) with the message itself
    /// when it is at most 64 KiB of JSON (a larger one would be refused
    /// again, or cost as much).
    pub(super) fn dead_letter_refused(&mut self, msg: &OutMsg, reason: &str) {
        const KEEP: usize = 64 * 1024;
        let message = (msg.body.len() <= KEEP)
            .then(|| serde_json::from_slice::<serde_json::Value>(&msg.body).ok())
            .flatten();
        let description = serde_json::json!({
            "refused": reason,
            "kind": msg.kind.as_str(),
            "exchange": msg.exchange,
            "routing_key": msg.routing_key,
            "bytes": msg.body.len(),
            "message": message,
        });
        let source = format!("{}:{}", msg.exchange, msg.routing_key);
        self.dead_letter(
            serde_json::to_vec(&description).expect("JSON values always serialise"),
            &source,
            &format!("refused by the broker: {reason}"),
        );
    }

    /// Publishes a progress event for each running workflow that changed,
    /// if a progress interval has passed since it started. Not stored:
    /// a lost one is replaced by the next.
    pub fn emit_progress(&mut self, now: DateTime<Utc>) {
        if self.progress_dirty.is_empty() || now.timestamp_millis() < self.next_progress_ms {
            return;
        }
        self.next_progress_ms = now.timestamp_millis() + PROGRESS_INTERVAL_MS;
        let due: Vec<Arc<str>> = self
            .progress_dirty
            .iter()
            .filter(|id| {
                self.workflows.get(*id).is_some_and(|w| {
                    (now - w.created_at).num_milliseconds() >= PROGRESS_INTERVAL_MS
                })
            })
            .cloned()
            .collect();
        for id in due {
            self.progress_dirty.remove(&id);
            let Some(wf) = self.workflows.get_mut(&id) else {
                continue;
            };
            wf.progress_marked = false;
            let mut tasks = BTreeMap::new();
            for t in &wf.tasks {
                *tasks.entry(t.state).or_insert(0u32) += 1;
            }
            let progress = WorkflowProgress {
                workflow_id: id.to_string(),
                name: wf.name.clone(),
                status: WorkflowStatus::Running,
                total: wf.tasks.len() as u32,
                tasks,
                created_at: Some(wf.created_at),
            };
            self.publish_progress(&progress);
        }
    }
}
