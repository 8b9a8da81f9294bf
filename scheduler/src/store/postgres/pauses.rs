//! The `pauses` table of the PostgreSQL store: paused task queues and
//! types, shared by every scheduler of the namespace. Each re-reads it at
//! its balance tick (`Scheduler::balance`), so a pause applied through one
//! holds at the others within a tick.

use super::{PgStore, get, pg};
use crate::pauses::{MAX_PAUSES, Pause, PauseChange, PauseKind, PauseOutcome, too_many};
use crate::store::StoreError;
use chrono::{DateTime, Utc};

impl PgStore {
    /// Every stored pause.
    pub async fn pauses(&self) -> Result<Vec<Pause>, StoreError> {
        let client = get(&self.pool).await?;
        read_pauses(&client).await
    }

    /// Applies a `pause` or `resume` in one transaction, and returns what
    /// is paused now. Writers of `pauses` take turns (a table lock that
    /// readers do not wait for), so the count checked against
    /// [`MAX_PAUSES`] is exact whichever scheduler applies the change.
    pub async fn change_pause(&self, c: &PauseChange) -> Result<PauseOutcome, StoreError> {
        let mut client = get(&self.pool).await?;
        let tx = client.transaction().await.map_err(pg)?;
        tx.batch_execute("LOCK TABLE pauses IN SHARE ROW EXCLUSIVE MODE")
            .await
            .map_err(pg)?;
        let kind = c.kind.as_str();
        let mut refused = None;
        if c.pause {
            let row = tx
                .query_one(
                    "SELECT count(*), count(*) FILTER (WHERE kind = $1 AND name = $2) FROM pauses",
                    &[&kind, &c.name],
                )
                .await
                .map_err(pg)?;
            let (stored, known): (i64, i64) = (row.get(0), row.get(1));
            if known > 0 {
                // Paused already: it keeps its first `since`.
            } else if stored as usize >= MAX_PAUSES {
                refused = Some(too_many(stored as usize));
            } else {
                tx.execute(
                    "INSERT INTO pauses (kind, name, since) VALUES ($1, $2, now())",
                    &[&kind, &c.name],
                )
                .await
                .map_err(pg)?;
            }
        } else {
            tx.execute(
                "DELETE FROM pauses WHERE kind = $1 AND name = $2",
                &[&kind, &c.name],
            )
            .await
            .map_err(pg)?;
        }
        let pauses = read_pauses(&tx).await?;
        tx.commit().await.map_err(pg)?;
        Ok(PauseOutcome { pauses, refused })
    }
}

/// Every row of `pauses`.
async fn read_pauses(
    client: &impl deadpool_postgres::GenericClient,
) -> Result<Vec<Pause>, StoreError> {
    let rows = client
        .query(
            "SELECT kind, name, since FROM pauses ORDER BY kind, name",
            &[],
        )
        .await
        .map_err(pg)?;
    rows.into_iter()
        .map(|r| {
            let kind: String = r.get(0);
            Ok(Pause {
                kind: PauseKind::parse(&kind).ok_or_else(|| {
                    StoreError::Corrupt(format!("pause of unknown kind `{kind}`"))
                })?,
                name: r.get(1),
                since: r.get::<_, DateTime<Utc>>(2),
            })
        })
        .collect()
}
