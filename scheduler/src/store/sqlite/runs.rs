//! Re-runs in the SQLite store: the `runs` table (one row per run after
//! the first), the `run` of each `replies` row (0 for a submitter, N for
//! the `rerun` that started run N), and a whole workflow read back for a
//! `rerun`.

use super::{Db, SqliteStore, task_record};
use crate::batch::{Op, RunRow, StoredWorkflow};
use crate::store::{
    StoreError,
    rows::{Stamp, WorkflowRecord, ts},
};
use rusqlite::{Connection, OptionalExtension, Transaction, params};
use std::sync::Arc;
use warren_shared::wire::AttemptLog;

/// What schema version 2 adds to a store of version 1: the `run` of
/// `replies`, and who answered each committed attempt and when (the
/// `runs` table is created with the others).
pub(super) const MIGRATE_TO_2: &str =
    "ALTER TABLE replies ADD COLUMN run INTEGER NOT NULL DEFAULT 0;
     ALTER TABLE results ADD COLUMN worker TEXT;
     ALTER TABLE results ADD COLUMN started_at TEXT;
     ALTER TABLE results ADD COLUMN finished_at TEXT;";

/// Writes an [`Op::Rerun`]; any other op is not this module's.
pub(super) fn write(tx: &Transaction<'_>, op: &Op) -> Result<(), StoreError> {
    let Op::Rerun { row, reset } = op else {
        return Ok(());
    };
    let id = &*row.workflow_id;
    tx.prepare_cached(
        "INSERT INTO runs (workflow_id, run, rerun_id, started_at, record) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![
        id,
        row.run,
        row.rerun_id,
        ts(&row.started_at),
        row.record
    ])?;
    let mut tasks =
        tx.prepare_cached("DELETE FROM tasks WHERE workflow_id = ?1 AND task_id = ?2")?;
    let mut results =
        tx.prepare_cached("DELETE FROM results WHERE workflow_id = ?1 AND task_id = ?2")?;
    for task in reset {
        tasks.execute([id, task])?;
        results.execute([id, task])?;
    }
    tx.prepare_cached(
        "UPDATE workflows SET status = 'running', report = NULL, finished_at = NULL WHERE id = ?1",
    )?
    .execute([id])?;
    Ok(())
}

/// The runs after the first of workflow `id`, oldest first.
pub(super) fn runs_of(conn: &Connection, id: &str) -> Result<Vec<RunRow>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT run, rerun_id, started_at, record FROM runs WHERE workflow_id = ?1 ORDER BY run",
    )?;
    let wf: Arc<str> = Arc::from(id);
    let rows = stmt.query_map([id], |r| {
        Ok((
            r.get::<_, u32>(0)?,
            r.get::<_, Option<String>>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, String>(3)?,
        ))
    })?;
    rows.map(|r| {
        let (run, rerun_id, started_at, record) = r?;
        Ok(RunRow {
            workflow_id: wf.clone(),
            run,
            rerun_id,
            started_at: started_at.time()?,
            record,
        })
    })
    .collect()
}

impl SqliteStore {
    /// The stored definition of workflow `id` and its creation.
    pub async fn definition(
        &self,
        id: String,
    ) -> Result<Option<(Vec<u8>, chrono::DateTime<chrono::Utc>)>, StoreError> {
        self.call(move |db| {
            let found: Option<(Option<Vec<u8>>, String)> = db
                .conn
                .prepare_cached("SELECT definition, created_at FROM workflows WHERE id = ?1")?
                .query_row([&id], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()?;
            match found {
                Some((Some(definition), created_at)) => Ok(Some((definition, created_at.time()?))),
                _ => Ok(None),
            }
        })
        .await?
    }

    /// The attempts of a task whose result was committed, in order.
    pub async fn attempt_log(
        &self,
        workflow_id: String,
        task_id: String,
    ) -> Result<Vec<AttemptLog>, StoreError> {
        self.call(move |db| {
            let mut stmt = db.conn.prepare_cached(
                "SELECT attempt, status, worker, started_at, finished_at FROM results
                 WHERE workflow_id = ?1 AND task_id = ?2 ORDER BY attempt LIMIT 1000",
            )?;
            let rows = stmt.query_map([&workflow_id, &task_id], |r| {
                Ok((
                    r.get::<_, u32>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, Option<String>>(2)?,
                    r.get::<_, Option<String>>(3)?,
                    r.get::<_, Option<String>>(4)?,
                ))
            })?;
            rows.map(|r| {
                let (attempt, status, worker, started_at, finished_at) = r?;
                Ok(AttemptLog {
                    attempt,
                    status,
                    worker,
                    started_at: started_at.map(Stamp::time).transpose()?,
                    finished_at: finished_at.map(Stamp::time).transpose()?,
                })
            })
            .collect()
        })
        .await?
    }

    /// Workflow `id` as stored, whole (`None` when unknown).
    pub async fn stored_workflow(&self, id: String) -> Result<Option<StoredWorkflow>, StoreError> {
        self.call(move |db| db.stored_workflow(&id)).await?
    }
}

impl Db {
    pub(super) fn stored_workflow(&self, id: &str) -> Result<Option<StoredWorkflow>, StoreError> {
        let found = self
            .conn
            .prepare_cached(
                "SELECT seq, definition, created_at, status, report, finished_at FROM workflows WHERE id = ?1",
            )?
            .query_row([id], |r| {
                Ok((
                    WorkflowRecord::<String> {
                        id: id.to_owned(),
                        seq: r.get(0)?,
                        definition: r.get::<_, Option<Vec<u8>>>(1)?,
                        created_at: r.get(2)?,
                    },
                    r.get::<_, String>(3)?,
                    r.get::<_, Option<String>>(4)?,
                    r.get::<_, Option<String>>(5)?,
                ))
            })
            .optional()?;
        let Some((mut record, status, report, finished_at)) = found else {
            return Ok(None);
        };
        // A rejected workflow has no definition: read back empty.
        record.definition.get_or_insert_with(Vec::new);
        let wf: Arc<str> = Arc::from(id);
        let tasks = self
            .conn
            .prepare_cached(
                "SELECT task_id, state, attempt, due_at_ms, output, error, worker, started_at, finished_at
                 FROM tasks WHERE workflow_id = ?1",
            )?
            .query_map([id], task_record)?
            .map(|t| t.map_err(StoreError::from)?.decode(wf.clone()))
            .collect::<Result<Vec<_>, _>>()?;
        let replies = self
            .conn
            .prepare_cached("SELECT reply_to, correlation_id FROM replies WHERE workflow_id = ?1")?
            .query_map([id], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<_, _>>()?;
        let runs = runs_of(&self.conn, id)?;
        Ok(Some(StoredWorkflow {
            status,
            report,
            finished_at: finished_at.map(Stamp::time).transpose()?,
            workflow: record.decode(tasks, replies, runs)?,
        }))
    }
}
