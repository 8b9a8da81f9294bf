//! The batch writer: one batch of [`Op`]s as columns, written in one
//! transaction with one statement per kind of op over arrays (`INSERT
//! ... SELECT * FROM unnest(...)`), after the fencing check of the owned
//! partitions' epochs. The statements are prepared once per connection
//! and pipelined, so a batch costs one round trip whatever its size.

use super::pg;
use crate::batch::{Op, TaskRow};
use crate::store::{
    StoreError,
    rows::{error_text, headers_text, state_text},
};
use chrono::{DateTime, Utc};
use std::{borrow::Cow, collections::HashMap};
use tokio_postgres::types::ToSql;

/// One batch's ops as columns, one statement per kind, borrowing from the
/// ops (no copies of bodies or outputs). Task rows are full snapshots, so
/// only the last one of a task in a batch is written.
#[derive(Default)]
pub(super) struct Batch<'a> {
    wf_id: Vec<&'a str>,
    wf_seq: Vec<i64>,
    wf_name: Vec<Option<Cow<'a, str>>>,
    wf_priority: Vec<i16>,
    wf_status: Vec<&'static str>,
    wf_definition: Vec<Option<&'a [u8]>>,
    wf_report: Vec<Option<&'a str>>,
    wf_created: Vec<DateTime<Utc>>,
    wf_finished: Vec<Option<DateTime<Utc>>>,

    queue_id: Vec<&'a str>,
    queue_report: Vec<&'a str>,
    start_id: Vec<&'a str>,
    start_at: Vec<DateTime<Utc>>,
    fin_id: Vec<&'a str>,
    fin_status: Vec<&'static str>,
    fin_report: Vec<&'a str>,
    fin_at: Vec<DateTime<Utc>>,

    tasks: Vec<&'a TaskRow>,

    res_wf: Vec<&'a str>,
    res_task: Vec<&'a str>,
    res_attempt: Vec<i32>,
    res_status: Vec<&'static str>,
    res_worker: Vec<Option<Cow<'a, str>>>,
    res_started: Vec<Option<DateTime<Utc>>>,
    res_finished: Vec<Option<DateTime<Utc>>>,

    out_seq: Vec<i64>,
    out_kind: Vec<&'static str>,
    out_exchange: Vec<&'a str>,
    out_key: Vec<Cow<'a, str>>,
    out_message_id: Vec<Option<Cow<'a, str>>>,
    out_correlation: Vec<Option<Cow<'a, str>>>,
    out_priority: Vec<Option<i16>>,
    out_headers: Vec<Option<String>>,
    out_body: Vec<&'a [u8]>,
    out_part: Vec<i32>,

    done: Vec<i64>,

    rep_wf: Vec<&'a str>,
    rep_to: Vec<Cow<'a, str>>,
    rep_corr: Vec<Option<Cow<'a, str>>>,
    rep_run: Vec<i32>,

    drop_replies: Vec<&'a str>,

    place_kind: Vec<&'a str>,
    place_part: Vec<i32>,
    place_held: Vec<i32>,
    place_wanted: Vec<i32>,

    /// Schedule ops, written in order, a statement each.
    schedules: Vec<&'a Op>,

    /// Re-runs, written before anything else.
    reruns: super::runs::Reruns<'a>,
    /// Retention's prune (the last of the batch wins): before, limit.
    prune: Option<(DateTime<Utc>, i64)>,
}

/// PostgreSQL text cannot hold NUL; strings from the wire (worker names,
/// AMQP reply addresses) could. They are stored with U+FFFD instead.
fn text(s: &str) -> Cow<'_, str> {
    if s.contains('\0') {
        Cow::Owned(s.replace('\0', "\u{FFFD}"))
    } else {
        Cow::Borrowed(s)
    }
}

fn opt_text(s: &Option<String>) -> Option<Cow<'_, str>> {
    s.as_deref().map(text)
}

impl<'a> Batch<'a> {
    pub(super) fn of(ops: &'a [Op]) -> Result<Batch<'a>, StoreError> {
        let mut b = Batch::default();
        let mut task_at: HashMap<(&str, &str), usize> = HashMap::new();
        for op in ops {
            match op {
                Op::InsertWorkflow {
                    id,
                    seq,
                    name,
                    priority,
                    status,
                    definition,
                    report,
                    created_at,
                } => {
                    b.wf_id.push(id);
                    b.wf_seq.push(*seq as i64);
                    b.wf_name.push(opt_text(name));
                    b.wf_priority.push(i16::from(*priority));
                    b.wf_status.push(status.as_str());
                    b.wf_definition.push(definition.as_deref());
                    b.wf_finished.push(status.is_final().then_some(*created_at));
                    b.wf_report.push(report.as_deref());
                    b.wf_created.push(*created_at);
                }
                Op::QueueWorkflow { id, report } => {
                    b.queue_id.push(id);
                    b.queue_report.push(report);
                }
                Op::StartWorkflow { id, started_at } => {
                    b.start_id.push(id);
                    b.start_at.push(*started_at);
                }
                Op::FinishWorkflow {
                    id,
                    status,
                    report,
                    finished_at,
                } => {
                    b.fin_id.push(id);
                    b.fin_status.push(status.as_str());
                    b.fin_report.push(report);
                    b.fin_at.push(*finished_at);
                }
                Op::Task(row) => match task_at.get(&(&*row.workflow_id, row.task_id.as_str())) {
                    Some(&i) => b.tasks[i] = row,
                    None => {
                        task_at.insert((&row.workflow_id, &row.task_id), b.tasks.len());
                        b.tasks.push(row);
                    }
                },
                Op::Result {
                    workflow_id,
                    task_id,
                    attempt,
                    status,
                    worker,
                    started_at,
                    finished_at,
                } => {
                    b.res_wf.push(workflow_id);
                    b.res_task.push(task_id);
                    b.res_attempt.push(*attempt as i32);
                    b.res_status.push(status.as_str());
                    b.res_worker.push(opt_text(worker));
                    b.res_started.push(*started_at);
                    b.res_finished.push(*finished_at);
                }
                Op::Outbox(seq, m) => {
                    b.out_seq.push(*seq as i64);
                    b.out_kind.push(m.kind.as_str());
                    b.out_exchange.push(&m.exchange);
                    b.out_key.push(text(&m.routing_key));
                    b.out_message_id.push(opt_text(&m.message_id));
                    b.out_correlation.push(opt_text(&m.correlation_id));
                    b.out_priority.push(m.priority.map(i16::from));
                    b.out_headers.push(headers_text(&m.headers)?);
                    b.out_body.push(&m.body);
                    b.out_part.push(i32::from(m.part));
                }
                Op::OutboxDone(seq) => b.done.push(*seq as i64),
                Op::AddReply {
                    workflow_id,
                    reply_to,
                    correlation_id,
                    run,
                } => {
                    b.rep_wf.push(workflow_id);
                    b.rep_to.push(text(reply_to));
                    b.rep_corr.push(opt_text(correlation_id));
                    b.rep_run.push((*run).min(i32::MAX as u32) as i32);
                }
                Op::Rerun { .. } => b.reruns.push(op),
                Op::Prune { .. } => b.prune = super::prune::of(op),
                Op::DropReplies(id) => b.drop_replies.push(id),
                Op::TypePlaces(rows) => {
                    // The last snapshot of a batch wins.
                    b.place_kind.clear();
                    b.place_part.clear();
                    b.place_held.clear();
                    b.place_wanted.clear();
                    for row in rows {
                        b.place_kind.push(&row.kind);
                        b.place_part.push(i32::from(row.part));
                        b.place_held.push(row.held.min(i32::MAX as u32) as i32);
                        b.place_wanted.push(row.wanted.min(i32::MAX as u32) as i32);
                    }
                }
                Op::InsertSchedule { .. } | Op::ScheduleState { .. } | Op::DeleteSchedule(_) => {
                    b.schedules.push(op);
                }
            }
        }
        Ok(b)
    }

    /// Writes the batch after checking the epochs of the owned partitions
    /// (and returns how many workflows its prune deleted)
    /// (`parts`, taken with `epochs`; [`StoreError::Fenced`] when one has
    /// moved on): workflows, their ends, tasks, results, outbox, replies (added before dropped: a
    /// workflow can gain a waiter and end in one batch). The statements
    /// are prepared once per connection and sent together (pipelined), so
    /// the batch costs one round trip whatever its size.
    pub(super) async fn write(
        self,
        tx: &deadpool_postgres::Transaction<'_>,
        parts: &[i32],
        epochs: &[i64],
    ) -> Result<u64, StoreError> {
        let n = self.tasks.len();
        let mut t_wf = Vec::with_capacity(n);
        let mut t_id = Vec::with_capacity(n);
        let mut t_state = Vec::with_capacity(n);
        let mut t_attempt = Vec::with_capacity(n);
        let mut t_due = Vec::with_capacity(n);
        let mut t_output = Vec::with_capacity(n);
        let mut t_error = Vec::with_capacity(n);
        let mut t_worker = Vec::with_capacity(n);
        let mut t_started = Vec::with_capacity(n);
        let mut t_finished = Vec::with_capacity(n);
        for t in self.tasks {
            t_wf.push(&*t.workflow_id);
            t_id.push(t.task_id.as_str());
            t_state.push(state_text(t));
            t_attempt.push(t.attempt as i32);
            t_due.push(t.due_at_ms);
            t_output.push(t.output.as_deref());
            t_error.push(error_text(t.error.as_ref())?);
            t_worker.push(opt_text(&t.worker));
            t_started.push(t.started_at);
            t_finished.push(t.finished_at);
        }
        type Params<'p> = Vec<&'p (dyn ToSql + Sync)>;
        // Fencing: every owned partition still has the epoch this
        // scheduler took it with. The share lock makes a taker's epoch bump
        // wait for this transaction; a bump committed first leaves the row
        // out (READ COMMITTED re-checks a locked row's newest version).
        let mut stmts: Vec<(&'static str, Params<'_>)> = vec![(
            "SELECT p.id FROM partitions p
             JOIN unnest($1::int4[], $2::int8[]) AS o(id, epoch) ON p.id = o.id AND p.epoch = o.epoch
             FOR SHARE OF p",
            vec![&parts, &epochs],
        )];
        // A re-run's deletions come before the rows its run writes.
        let rerun_stmts = self.reruns.statements();
        for (sql, params) in &rerun_stmts {
            stmts.push((sql, params.clone()));
        }
        // The reruns' last statement sets each workflow running: one
        // pruned meanwhile (a manual prune by another scheduler) is not
        // there, and the batch must not write its rows.
        let reruns = self.reruns.len();
        let rerun_update = stmts.len().checked_sub(1).filter(|_| reruns > 0);
        if !self.wf_id.is_empty() {
            stmts.push((
                "INSERT INTO workflows (id, seq, name, priority, status, definition, report, created_at, finished_at)
                 SELECT * FROM unnest($1::text[], $2::int8[], $3::text[], $4::int2[], $5::text[], $6::bytea[],
                                      $7::text[], $8::timestamptz[], $9::timestamptz[])",
                vec![
                    &self.wf_id,
                    &self.wf_seq,
                    &self.wf_name,
                    &self.wf_priority,
                    &self.wf_status,
                    &self.wf_definition,
                    &self.wf_report,
                    &self.wf_created,
                    &self.wf_finished,
                ],
            ));
        }
        if !self.queue_id.is_empty() {
            stmts.push((
                "UPDATE workflows w SET status = 'queued', report = q.report
                 FROM unnest($1::text[], $2::text[]) AS q(id, report)
                 WHERE w.id = q.id",
                vec![&self.queue_id, &self.queue_report],
            ));
        }
        if !self.start_id.is_empty() {
            stmts.push((
                "UPDATE workflows w SET status = 'running', report = NULL, created_at = s.at
                 FROM unnest($1::text[], $2::timestamptz[]) AS s(id, at)
                 WHERE w.id = s.id",
                vec![&self.start_id, &self.start_at],
            ));
        }
        if !self.fin_id.is_empty() {
            stmts.push((
                "UPDATE workflows w SET status = f.status, report = f.report, finished_at = f.at
                 FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[]) AS f(id, status, report, at)
                 WHERE w.id = f.id",
                vec![&self.fin_id, &self.fin_status, &self.fin_report, &self.fin_at],
            ));
        }
        if n > 0 {
            stmts.push((
                "INSERT INTO tasks (workflow_id, task_id, state, attempt, due_at_ms, output, error, worker, started_at, finished_at)
                 SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::int4[], $5::int8[], $6::text[],
                                      $7::text[], $8::text[], $9::timestamptz[], $10::timestamptz[])
                 ON CONFLICT (workflow_id, task_id) DO UPDATE SET
                   state = excluded.state, attempt = excluded.attempt, due_at_ms = excluded.due_at_ms,
                   output = excluded.output, error = excluded.error, worker = excluded.worker,
                   started_at = excluded.started_at, finished_at = excluded.finished_at",
                vec![
                    &t_wf, &t_id, &t_state, &t_attempt, &t_due, &t_output, &t_error, &t_worker,
                    &t_started, &t_finished,
                ],
            ));
        }
        if !self.res_wf.is_empty() {
            stmts.push((
                "INSERT INTO results (workflow_id, task_id, attempt, status, worker, started_at, finished_at)
                 SELECT * FROM unnest($1::text[], $2::text[], $3::int4[], $4::text[], $5::text[],
                                      $6::timestamptz[], $7::timestamptz[])",
                vec![
                    &self.res_wf,
                    &self.res_task,
                    &self.res_attempt,
                    &self.res_status,
                    &self.res_worker,
                    &self.res_started,
                    &self.res_finished,
                ],
            ));
        }
        if !self.out_seq.is_empty() {
            stmts.push((
                "INSERT INTO outbox (seq, kind, exchange, routing_key, message_id, correlation_id, priority, headers, body, part)
                 SELECT * FROM unnest($1::int8[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
                                      $7::int2[], $8::text[], $9::bytea[], $10::int4[])",
                vec![
                    &self.out_seq,
                    &self.out_kind,
                    &self.out_exchange,
                    &self.out_key,
                    &self.out_message_id,
                    &self.out_correlation,
                    &self.out_priority,
                    &self.out_headers,
                    &self.out_body,
                    &self.out_part,
                ],
            ));
        }
        if !self.done.is_empty() {
            stmts.push(("DELETE FROM outbox WHERE seq = ANY($1)", vec![&self.done]));
        }
        if !self.rep_wf.is_empty() {
            stmts.push((
                "INSERT INTO replies (workflow_id, reply_to, correlation_id, run)
                 SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::int4[])",
                vec![&self.rep_wf, &self.rep_to, &self.rep_corr, &self.rep_run],
            ));
        }
        if !self.drop_replies.is_empty() {
            stmts.push((
                "DELETE FROM replies WHERE workflow_id = ANY($1) AND run > 0",
                vec![&self.drop_replies],
            ));
        }
        if !self.place_kind.is_empty() {
            stmts.push((
                "INSERT INTO type_places (kind, part, held, wanted)
                 SELECT * FROM unnest($1::text[], $2::int4[], $3::int4[], $4::int4[])
                 ON CONFLICT (kind, part) DO UPDATE SET held = excluded.held, wanted = excluded.wanted",
                vec![
                    &self.place_kind,
                    &self.place_part,
                    &self.place_held,
                    &self.place_wanted,
                ],
            ));
        }
        let schedule_stmts: Vec<_> = self
            .schedules
            .iter()
            .flat_map(|op| super::schedules::statements(op))
            .collect();
        for (sql, params) in &schedule_stmts {
            stmts.push((sql, params.iter().map(|p| &**p as _).collect()));
        }
        // Retention's prune, last: what the batch wrote is not pruned.
        let prune = self.prune;
        if let Some((before, limit)) = &prune {
            stmts.push((super::prune::STATEMENT, vec![before, limit]));
        }
        let mut prepared = Vec::with_capacity(stmts.len());
        for (sql, _) in &stmts {
            prepared.push(tx.prepare_cached(sql).await.map_err(pg)?);
        }
        let counts = futures_util::future::try_join_all(
            prepared
                .iter()
                .zip(&stmts)
                .map(|(stmt, (_, params))| tx.execute(stmt, params)),
        )
        .await
        .map_err(pg)?;
        if counts[0] != parts.len() as u64 {
            return Err(StoreError::Fenced);
        }
        if let Some(i) = rerun_update
            && counts[i] != reruns as u64
        {
            return Err(StoreError::Postgres(
                "a re-run workflow is no longer in the store (pruned meanwhile)".into(),
            ));
        }
        // The prune's rows are the workflows it deleted.
        Ok(if prune.is_some() {
            counts.last().copied().unwrap_or(0)
        } else {
            0
        })
    }
}
