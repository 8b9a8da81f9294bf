//! The `schedules` table of the PostgreSQL store (migration 5). A schedule
//! belongs to the partition of its id: only that partition's owner fires
//! it and writes its state, in its fenced batches, so a scheduler that
//! lost the partition can no longer write a firing.

use super::{PgStore, get, pg};
use crate::batch::{Op, ScheduleRow};
use crate::store::{
    StoreError,
    rows::{SCHEDULE_COLUMNS, ScheduleRecord},
};
use tokio_postgres::{Row, types::ToSql};
use warren_shared::topology::{PARTITIONS, partition_of};

use crate::store::ListedSchedule as Listed;

fn record(r: &Row) -> ScheduleRecord {
    ScheduleRecord {
        id: r.get(0),
        cron: r.get(1),
        every_ms: r.get(2),
        timezone: r.get(3),
        overlap: r.get(4),
        catch_up: r.get(5),
        created_ms: r.get(6),
        paused: r.get(7),
        next_fire_ms: r.get(8),
        last_fire_ms: r.get(9),
        last_workflow_id: r.get(10),
        last_skipped: r.get(11),
        fired: r.get(12),
        skipped: r.get(13),
    }
}

impl PgStore {
    /// Schedules in id order after `after`, at most `limit`.
    pub async fn schedules_page(
        &self,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<Listed>, StoreError> {
        let client = get(&self.pool).await?;
        let rows = client
            .query(
                &format!(
                    "SELECT {SCHEDULE_COLUMNS}, w.status FROM schedules s
                     LEFT JOIN workflows w ON w.id = s.last_workflow_id
                     WHERE s.id > $1 COLLATE \"C\" ORDER BY s.id COLLATE \"C\" LIMIT $2"
                ),
                &[&after.unwrap_or(""), &i64::from(limit)],
            )
            .await
            .map_err(pg)?;
        rows.iter()
            .map(|r| Ok((record(r).decode()?, r.get(14))))
            .collect()
    }

    /// One schedule with the workflow its firings submit.
    pub async fn schedule(&self, id: &str) -> Result<Option<(Listed, Vec<u8>)>, StoreError> {
        let client = get(&self.pool).await?;
        let row = client
            .query_opt(
                &format!(
                    "SELECT {SCHEDULE_COLUMNS}, w.status, s.workflow FROM schedules s
                     LEFT JOIN workflows w ON w.id = s.last_workflow_id
                     WHERE s.id = $1"
                ),
                &[&id],
            )
            .await
            .map_err(pg)?;
        row.map(|r| Ok(((record(&r).decode()?, r.get(14)), r.get(15))))
            .transpose()
    }

    /// The workflows of those of `ids` that exist, as (id, workflow).
    pub async fn schedule_workflows(
        &self,
        ids: &[String],
    ) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let client = get(&self.pool).await?;
        let rows = client
            .query(
                "SELECT id, workflow FROM schedules WHERE id = ANY($1)",
                &[&ids],
            )
            .await
            .map_err(pg)?;
        Ok(rows.into_iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    /// How many schedules are stored.
    pub async fn schedule_count(&self) -> Result<u64, StoreError> {
        let client = get(&self.pool).await?;
        let n: i64 = client
            .query_one("SELECT count(*) FROM schedules", &[])
            .await
            .map_err(pg)?
            .get(0);
        Ok(n.max(0) as u64)
    }
}

/// The schedules of the `owned` partitions.
pub(super) async fn owned_schedules(
    client: &deadpool_postgres::Object,
    owned: &[u16],
) -> Result<Vec<ScheduleRow>, StoreError> {
    let rows = client
        .query(&format!("SELECT {SCHEDULE_COLUMNS} FROM schedules s"), &[])
        .await
        .map_err(pg)?;
    let mut out = Vec::new();
    for r in &rows {
        let id: &str = r.get(0);
        if owned.contains(&partition_of(id, PARTITIONS)) {
            out.push(record(r).decode()?);
        }
    }
    Ok(out)
}

type Params<'p> = Vec<Box<dyn ToSql + Sync + Send + 'p>>;

/// One schedule op of a batch as statements and their parameters (a few
/// per batch: one per schedule created, fired, paused, resumed or
/// deleted; they are pipelined with the rest of the batch). A new
/// schedule is its fixed columns, then its state as any change of state
/// writes it.
pub(super) fn statements(op: &Op) -> Vec<(&'static str, Params<'_>)> {
    match op {
        Op::InsertSchedule { row, workflow } => vec![
            (
                "INSERT INTO schedules (id, cron, every_ms, timezone, overlap, catch_up, workflow, created_ms)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                vec![
                    Box::new(&*row.id),
                    Box::new(row.cron.as_deref()),
                    Box::new(row.every_ms.map(|e| e as i64)),
                    Box::new(row.timezone.as_str()),
                    Box::new(row.overlap.as_str()),
                    Box::new(row.catch_up.as_str()),
                    Box::new(workflow.as_slice()),
                    Box::new(row.created_at.timestamp_millis()),
                ],
            ),
            state(&row.id, &row.state),
        ],
        Op::ScheduleState { id, state: s } => vec![state(id, s)],
        Op::DeleteSchedule(id) => vec![("DELETE FROM schedules WHERE id = $1", vec![Box::new(&**id)])],
        _ => Vec::new(),
    }
}

fn state<'a>(id: &'a str, s: &'a crate::batch::ScheduleState) -> (&'static str, Params<'a>) {
    let ms = |t: Option<chrono::DateTime<chrono::Utc>>| t.map(|t| t.timestamp_millis());
    (
        "UPDATE schedules SET paused = $2, next_fire_ms = $3, last_fire_ms = $4, last_workflow_id = $5,
                              last_skipped = $6, fired = $7, skipped = $8
         WHERE id = $1",
        vec![
            Box::new(id),
            Box::new(s.paused),
            Box::new(ms(s.next_fire_at)),
            Box::new(ms(s.last_fire_at)),
            Box::new(s.last_workflow_id.as_deref()),
            Box::new(s.last_skipped),
            Box::new(s.fired as i64),
            Box::new(s.skipped as i64),
        ],
    )
}
