//! Re-runs in the PostgreSQL store: the `runs` table (one row per run
//! after the first; migration 6, which also gives each `results` row the
//! worker and times of its attempt), the `run` of each `replies` row (0
//! for a submitter, N for the `rerun` that started run N), the statements of an
//! [`Op::Rerun`], and a whole workflow read back for a `rerun`.

use super::{PgStore, get, pg};
use crate::batch::{Op, RunRow, StoredWorkflow};
use crate::store::StoreError;
use chrono::{DateTime, Utc};
use std::collections::HashMap;
use std::sync::Arc;
use tokio_postgres::types::ToSql;
use warren_shared::wire::AttemptLog;

/// The `runs` table, and the `run` of `replies`.
pub(super) const MIGRATION: &str = "
CREATE TABLE runs (
    workflow_id TEXT NOT NULL,
    run         INTEGER NOT NULL,
    rerun_id    TEXT,
    started_at  TIMESTAMPTZ NOT NULL,
    record      TEXT NOT NULL,
    PRIMARY KEY (workflow_id, run)
);
ALTER TABLE replies ADD COLUMN run INTEGER NOT NULL DEFAULT 0;
ALTER TABLE results ADD COLUMN worker TEXT,
                    ADD COLUMN started_at TIMESTAMPTZ,
                    ADD COLUMN finished_at TIMESTAMPTZ;
";

/// The re-runs of one batch as columns.
#[derive(Default)]
pub(super) struct Reruns<'a> {
    wf: Vec<&'a str>,
    run: Vec<i32>,
    rerun_id: Vec<Option<&'a str>>,
    started_at: Vec<DateTime<Utc>>,
    record: Vec<&'a str>,
    /// (workflow, task) of each task row and its results to delete.
    reset_wf: Vec<&'a str>,
    reset_task: Vec<&'a str>,
}

type Params<'p> = Vec<&'p (dyn ToSql + Sync)>;

impl<'a> Reruns<'a> {
    /// Takes an [`Op::Rerun`]; any other op is not this module's.
    pub(super) fn push(&mut self, op: &'a Op) {
        let Op::Rerun { row, reset } = op else {
            return;
        };
        self.wf.push(&row.workflow_id);
        self.run.push(row.run.min(i32::MAX as u32) as i32);
        self.rerun_id.push(row.rerun_id.as_deref());
        self.started_at.push(row.started_at);
        self.record.push(&row.record);
        for task in reset {
            self.reset_wf.push(&row.workflow_id);
            self.reset_task.push(task);
        }
    }

    /// How many workflows the batch re-runs.
    pub(super) fn len(&self) -> usize {
        self.wf.len()
    }

    /// The statements, to run before any other write of the batch (its
    /// task rows and the end of the run may follow in the same batch).
    pub(super) fn statements(&self) -> Vec<(&'static str, Params<'_>)> {
        if self.wf.is_empty() {
            return Vec::new();
        }
        vec![
            (
                "INSERT INTO runs (workflow_id, run, rerun_id, started_at, record)
                 SELECT * FROM unnest($1::text[], $2::int4[], $3::text[], $4::timestamptz[], $5::text[])",
                vec![
                    &self.wf,
                    &self.run,
                    &self.rerun_id,
                    &self.started_at,
                    &self.record,
                ],
            ),
            (
                "DELETE FROM tasks t USING unnest($1::text[], $2::text[]) AS d(w, t)
                 WHERE t.workflow_id = d.w AND t.task_id = d.t",
                vec![&self.reset_wf, &self.reset_task],
            ),
            (
                "DELETE FROM results r USING unnest($1::text[], $2::text[]) AS d(w, t)
                 WHERE r.workflow_id = d.w AND r.task_id = d.t",
                vec![&self.reset_wf, &self.reset_task],
            ),
            (
                "UPDATE workflows SET status = 'running', report = NULL, finished_at = NULL
                 WHERE id = ANY($1)",
                vec![&self.wf],
            ),
        ]
    }
}

/// The runs after the first of each of `ids`, oldest first.
pub(super) async fn runs_of(
    client: &deadpool_postgres::Object,
    ids: &[String],
) -> Result<HashMap<String, Vec<RunRow>>, StoreError> {
    let mut out: HashMap<String, Vec<RunRow>> = HashMap::new();
    for r in client
        .query(
            "SELECT workflow_id, run, rerun_id, started_at, record FROM runs
             WHERE workflow_id = ANY($1) ORDER BY workflow_id, run",
            &[&ids],
        )
        .await
        .map_err(pg)?
    {
        let wf: String = r.get(0);
        let row = RunRow {
            workflow_id: Arc::from(wf.as_str()),
            run: r.get::<_, i32>(1).max(0) as u32,
            rerun_id: r.get(2),
            started_at: r.get(3),
            record: r.get(4),
        };
        out.entry(wf).or_default().push(row);
    }
    Ok(out)
}

impl PgStore {
    /// The stored definition of workflow `id` and its creation.
    pub async fn definition(
        &self,
        id: &str,
    ) -> Result<Option<(Vec<u8>, DateTime<Utc>)>, StoreError> {
        let row = get(&self.pool)
            .await?
            .query_opt(
                "SELECT definition, created_at FROM workflows WHERE id = $1 AND definition IS NOT NULL",
                &[&id],
            )
            .await
            .map_err(pg)?;
        Ok(row.map(|r| (r.get(0), r.get(1))))
    }

    /// The attempts of a task whose result was committed, in order.
    pub async fn attempt_log(
        &self,
        workflow_id: &str,
        task_id: &str,
    ) -> Result<Vec<AttemptLog>, StoreError> {
        let rows = get(&self.pool)
            .await?
            .query(
                "SELECT attempt, status, worker, started_at, finished_at FROM results
                 WHERE workflow_id = $1 AND task_id = $2 ORDER BY attempt LIMIT 1000",
                &[&workflow_id, &task_id],
            )
            .await
            .map_err(pg)?;
        Ok(rows
            .into_iter()
            .map(|r| AttemptLog {
                attempt: r.get::<_, i32>(0).max(0) as u32,
                status: r.get(1),
                worker: r.get(2),
                started_at: r.get(3),
                finished_at: r.get(4),
            })
            .collect())
    }

    /// Workflow `id` as stored, whole (`None` when unknown).
    pub async fn stored_workflow(&self, id: &str) -> Result<Option<StoredWorkflow>, StoreError> {
        let client = get(&self.pool).await?;
        let Some(head) = client
            .query_opt(
                "SELECT status, report, finished_at FROM workflows WHERE id = $1",
                &[&id],
            )
            .await
            .map_err(pg)?
        else {
            return Ok(None);
        };
        let ids = [id.to_owned()];
        let Some(workflow) = super::whole_workflows(&client, &ids, false).await?.pop() else {
            return Ok(None);
        };
        Ok(Some(StoredWorkflow {
            status: head.get(0),
            report: head.get(1),
            finished_at: head.get(2),
            workflow,
        }))
    }
}
