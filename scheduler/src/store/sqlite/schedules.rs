//! The `schedules` table of the SQLite store: each schedule's timing, the
//! workflow its firings submit, and its state (written with the batch that
//! fires, pauses or resumes it).

use super::{Db, SqliteStore};
use crate::batch::{Op, ScheduleRow};
use crate::store::{
    StoreError,
    rows::{SCHEDULE_COLUMNS, ScheduleRecord},
};
use rusqlite::{OptionalExtension, Row, params};

use crate::store::ListedSchedule as Listed;

impl SqliteStore {
    /// Schedules in id order after `after`, at most `limit`.
    pub async fn schedules_page(
        &self,
        after: Option<String>,
        limit: u32,
    ) -> Result<Vec<Listed>, StoreError> {
        self.call(move |db| db.schedules_page(after.as_deref(), limit))
            .await?
    }

    /// One schedule with the workflow its firings submit.
    pub async fn schedule(&self, id: String) -> Result<Option<(Listed, Vec<u8>)>, StoreError> {
        self.call(move |db| db.schedule(&id)).await?
    }

    /// The workflows of those of `ids` that exist, as (id, workflow).
    pub async fn schedule_workflows(
        &self,
        ids: Vec<String>,
    ) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        self.call(move |db| db.schedule_workflows(&ids)).await?
    }

    /// How many schedules are stored.
    pub async fn schedule_count(&self) -> Result<u64, StoreError> {
        self.call(|db| {
            db.conn
                .query_row("SELECT count(*) FROM schedules", [], |r| r.get::<_, i64>(0))
                .map(|n| n.max(0) as u64)
                .map_err(StoreError::from)
        })
        .await?
    }
}

fn record(r: &Row<'_>) -> rusqlite::Result<ScheduleRecord> {
    Ok(ScheduleRecord {
        id: r.get(0)?,
        cron: r.get(1)?,
        every_ms: r.get(2)?,
        timezone: r.get(3)?,
        overlap: r.get(4)?,
        catch_up: r.get(5)?,
        created_ms: r.get(6)?,
        paused: r.get(7)?,
        next_fire_ms: r.get(8)?,
        last_fire_ms: r.get(9)?,
        last_workflow_id: r.get(10)?,
        last_skipped: r.get(11)?,
        fired: r.get(12)?,
        skipped: r.get(13)?,
    })
}

impl Db {
    fn schedules_page(&self, after: Option<&str>, limit: u32) -> Result<Vec<Listed>, StoreError> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {SCHEDULE_COLUMNS}, w.status FROM schedules s
             LEFT JOIN workflows w ON w.id = s.last_workflow_id
             WHERE s.id > ?1 ORDER BY s.id LIMIT ?2"
        ))?;
        let rows = stmt.query_map(params![after.unwrap_or(""), limit], |r| {
            Ok((record(r)?, r.get::<_, Option<String>>(14)?))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (rec, status) = row?;
            out.push((rec.decode()?, status));
        }
        Ok(out)
    }

    fn schedule(&self, id: &str) -> Result<Option<(Listed, Vec<u8>)>, StoreError> {
        let found = self
            .conn
            .prepare_cached(&format!(
                "SELECT {SCHEDULE_COLUMNS}, w.status, s.workflow FROM schedules s
                 LEFT JOIN workflows w ON w.id = s.last_workflow_id
                 WHERE s.id = ?1"
            ))?
            .query_row([id], |r| {
                Ok((
                    record(r)?,
                    r.get::<_, Option<String>>(14)?,
                    r.get::<_, Vec<u8>>(15)?,
                ))
            })
            .optional()?;
        found
            .map(|(rec, status, workflow)| Ok(((rec.decode()?, status), workflow)))
            .transpose()
    }

    fn schedule_workflows(&self, ids: &[String]) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT workflow FROM schedules WHERE id = ?1")?;
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(w) = stmt.query_row([id], |r| r.get(0)).optional()? {
                out.push((id.clone(), w));
            }
        }
        Ok(out)
    }
}

/// Every stored schedule (the one scheduler owns them all).
pub(super) fn all(conn: &rusqlite::Connection) -> Result<Vec<ScheduleRow>, StoreError> {
    let mut stmt = conn.prepare(&format!("SELECT {SCHEDULE_COLUMNS} FROM schedules s"))?;
    let rows = stmt.query_map([], record)?;
    let mut out = Vec::new();
    for row in rows {
        out.push(row?.decode()?);
    }
    Ok(out)
}

fn ms(t: Option<chrono::DateTime<chrono::Utc>>) -> Option<i64> {
    t.map(|t| t.timestamp_millis())
}

/// Writes one schedule op of a batch: a new schedule is its fixed
/// columns, then its state as any change of state writes it.
pub(super) fn write(tx: &rusqlite::Transaction<'_>, op: &Op) -> Result<(), StoreError> {
    match op {
        Op::InsertSchedule { row, workflow } => {
            tx.prepare_cached(
                "INSERT INTO schedules (id, cron, every_ms, timezone, overlap, catch_up, workflow, created_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )?
            .execute(params![
                &*row.id,
                row.cron,
                row.every_ms.map(|e| e as i64),
                row.timezone,
                row.overlap.as_str(),
                row.catch_up.as_str(),
                workflow,
                row.created_at.timestamp_millis(),
            ])?;
            write_state(tx, &row.id, &row.state)?;
        }
        Op::ScheduleState { id, state } => write_state(tx, id, state)?,
        Op::DeleteSchedule(id) => {
            tx.prepare_cached("DELETE FROM schedules WHERE id = ?1")?
                .execute([&**id])?;
        }
        _ => {}
    }
    Ok(())
}

fn write_state(
    tx: &rusqlite::Transaction<'_>,
    id: &str,
    s: &crate::batch::ScheduleState,
) -> Result<(), StoreError> {
    tx.prepare_cached(
        "UPDATE schedules SET paused = ?2, next_fire_ms = ?3, last_fire_ms = ?4, last_workflow_id = ?5,
                              last_skipped = ?6, fired = ?7, skipped = ?8
         WHERE id = ?1",
    )?
    .execute(params![
        id,
        s.paused,
        ms(s.next_fire_at),
        ms(s.last_fire_at),
        s.last_workflow_id,
        s.last_skipped,
        s.fired as i64,
        s.skipped as i64,
    ])?;
    Ok(())
}
