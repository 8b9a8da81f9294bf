//! Retention in the PostgreSQL store: an [`Op::Prune`] is one statement of
//! its batch, deleting the oldest ended workflows past the retention with
//! their tasks, results, replies and runs. The workflows it takes are
//! locked `SKIP LOCKED`, so schedulers pruning at once never wait for each
//! other: each deletes what the others do not hold. Autovacuum gives the
//! space back to the tables.

use super::{PgStore, get, pg};
use crate::batch::Op;
use crate::store::StoreError;
use chrono::{DateTime, Utc};
use std::sync::atomic::Ordering;

/// The index retention reads by (migration 7).
pub(super) const MIGRATION: &str = "
CREATE INDEX workflows_by_finished ON workflows (finished_at) WHERE finished_at IS NOT NULL;
";

/// The prune's statement: its rows (one per workflow deleted) are the
/// count.
pub(super) const STATEMENT: &str = "
WITH gone AS (
    DELETE FROM workflows WHERE id IN (
        SELECT id FROM workflows
        WHERE finished_at < $1 AND status IN ('succeeded', 'failed', 'cancelled', 'rejected')
        ORDER BY finished_at LIMIT $2
        FOR UPDATE SKIP LOCKED)
    RETURNING id),
t AS (DELETE FROM tasks WHERE workflow_id IN (SELECT id FROM gone)),
r AS (DELETE FROM results WHERE workflow_id IN (SELECT id FROM gone)),
p AS (DELETE FROM replies WHERE workflow_id IN (SELECT id FROM gone)),
u AS (DELETE FROM runs WHERE workflow_id IN (SELECT id FROM gone))
SELECT id FROM gone";

/// The prune of a batch, if it has one: (before, limit).
pub(super) fn of(op: &Op) -> Option<(DateTime<Utc>, i64)> {
    match op {
        Op::Prune { before, limit } => Some((*before, i64::from(*limit))),
        _ => None,
    }
}

impl PgStore {
    /// Workflows deleted by retention through this store since it was
    /// opened.
    pub fn pruned(&self) -> u64 {
        self.pruned.load(Ordering::Relaxed)
    }

    /// The bytes of the namespace's tables with their indexes and TOAST.
    pub async fn size_bytes(&self) -> Result<u64, StoreError> {
        let row = get(&self.pool)
            .await?
            .query_one(
                "SELECT COALESCE(sum(pg_total_relation_size(c.oid)), 0)::int8
                 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                 WHERE n.nspname = current_schema() AND c.relkind = 'r'",
                &[],
            )
            .await
            .map_err(pg)?;
        Ok(row.get::<_, i64>(0).max(0) as u64)
    }

    /// The workflows stored, by status word.
    pub async fn workflows_by_status(&self) -> Result<Vec<(String, u64)>, StoreError> {
        Ok(get(&self.pool)
            .await?
            .query(
                "SELECT status, count(*) FROM workflows GROUP BY status",
                &[],
            )
            .await
            .map_err(pg)?
            .into_iter()
            .map(|r| (r.get(0), r.get::<_, i64>(1).max(0) as u64))
            .collect())
    }
}
