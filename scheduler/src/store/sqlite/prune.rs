//! Retention in the SQLite store: an [`Op::Prune`] deletes the oldest
//! ended workflows past the retention with their tasks, results, replies
//! and runs, and the pages they freed go back to the file system
//! (`auto_vacuum = INCREMENTAL`, set when the file is created; a file made
//! before keeps its size until a `VACUUM`).

use super::{Db, SqliteStore};
use crate::batch::Op;
use crate::store::{StoreError, rows::ts};
use rusqlite::{Connection, Transaction, params};
use std::sync::atomic::Ordering;

/// Pages given back after a prune, at most (4 MiB of 4 KiB pages): the
/// rest at the next.
const VACUUM_PAGES: u32 = 1024;

/// Deletes what an [`Op::Prune`] names; returns how many workflows.
pub(super) fn write(tx: &Transaction<'_>, op: &Op) -> Result<u64, StoreError> {
    let Op::Prune { before, limit } = op else {
        return Ok(0);
    };
    tx.execute_batch(
        "CREATE TEMP TABLE IF NOT EXISTS pruned (id TEXT PRIMARY KEY); DELETE FROM temp.pruned;",
    )?;
    let n = tx
        .prepare_cached(
            "INSERT INTO temp.pruned SELECT id FROM workflows
             WHERE finished_at < ?1 AND status IN ('succeeded', 'failed', 'cancelled', 'rejected')
             ORDER BY finished_at LIMIT ?2",
        )?
        .execute(params![ts(before), limit])?;
    if n > 0 {
        for table in ["tasks", "results", "replies", "runs"] {
            tx.execute(
                &format!("DELETE FROM {table} WHERE workflow_id IN (SELECT id FROM temp.pruned)"),
                [],
            )?;
        }
        tx.execute(
            "DELETE FROM workflows WHERE id IN (SELECT id FROM temp.pruned)",
            [],
        )?;
    }
    Ok(n as u64)
}

/// After a commit that pruned: gives freed pages back (a file created
/// with incremental auto-vacuum).
pub(super) fn vacuum(conn: &Connection) -> Result<(), StoreError> {
    conn.execute_batch(&format!("PRAGMA incremental_vacuum({VACUUM_PAGES});"))?;
    Ok(())
}

impl SqliteStore {
    /// Workflows deleted by retention since the store was opened.
    pub fn pruned(&self) -> u64 {
        self.pruned.load(Ordering::Relaxed)
    }

    /// The file's size in bytes as SQLite counts it (pages in use and
    /// free), with its write-ahead log.
    pub async fn size_bytes(&self) -> Result<u64, StoreError> {
        self.call(|db| db.size_bytes()).await?
    }

    /// The workflows stored, by status word.
    pub async fn workflows_by_status(&self) -> Result<Vec<(String, u64)>, StoreError> {
        self.call(|db| db.workflows_by_status()).await?
    }
}

impl Db {
    pub(super) fn workflows_by_status(&self) -> Result<Vec<(String, u64)>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT status, count(*) FROM workflows GROUP BY status")?;
        let rows = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get::<_, i64>(1)?.max(0) as u64)))?
            .collect::<Result<_, _>>()?;
        Ok(rows)
    }

    pub(super) fn size_bytes(&self) -> Result<u64, StoreError> {
        let pages: i64 = self.conn.query_row("PRAGMA page_count", [], |r| r.get(0))?;
        let size: i64 = self.conn.query_row("PRAGMA page_size", [], |r| r.get(0))?;
        let wal = self
            .conn
            .path()
            .and_then(|p| std::fs::metadata(format!("{p}-wal")).ok())
            .map_or(0, |m| m.len());
        Ok((pages.max(0) as u64) * (size.max(0) as u64) + wal)
    }
}
