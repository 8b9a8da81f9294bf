//! Places of limited task types across the schedulers of a namespace
//! (`WARREN_TYPE_LIMITS` on a partitioned store): the `type_places` table
//! records, per type and partition, the places held and still wanted.
//! Each batch writes its owned partitions' rows (see `batch.rs`); here a
//! scheduler takes more places, counts who else waits, and takes over the
//! rows of the partitions it loads.

use super::{get, partitions::Partitions, pg};
use crate::store::StoreError;
use std::collections::HashMap;
use warren_shared::topology::fnv1a;

impl Partitions {
    /// Takes up to `want` more places of `kind` for this scheduler (filed
    /// under the first partition it owns), out of `limit` across every
    /// scheduler, and records the places still wanted; returns the places
    /// granted and how many other partitions' owners want some. One
    /// scheduler at a time per type (a transaction advisory lock); a
    /// scheduler's batches only ever lower what its partitions hold below
    /// what it was granted, so the sum read here never undercounts.
    /// Gives up with the partitions (see [`Partitions::guarded`]).
    pub async fn take_type_places(
        &self,
        kind: &str,
        want: u32,
        limit: u32,
    ) -> Result<(u32, u32), StoreError> {
        self.guarded(self.take_places(kind, want, limit)).await
    }

    async fn take_places(
        &self,
        kind: &str,
        want: u32,
        limit: u32,
    ) -> Result<(u32, u32), StoreError> {
        let owned: Vec<i32> = self.owned().into_iter().map(i32::from).collect();
        let Some(&home) = owned.first() else {
            return Err(StoreError::Fenced);
        };
        let mut client = get(&self.pool).await?;
        let tx = client.transaction().await.map_err(pg)?;
        // Second keys 0..=65535 are partitions and membership.
        let type_key = 65_536 + (fnv1a(kind) & 0x3fff_ffff) as i32;
        tx.query_one(
            "SELECT pg_advisory_xact_lock($1, $2)",
            &[&self.lock_key, &type_key],
        )
        .await
        .map_err(pg)?;
        let held: i64 = tx
            .query_one(
                "SELECT COALESCE(sum(held), 0)::int8 FROM type_places WHERE kind = $1",
                &[&kind],
            )
            .await
            .map_err(pg)?
            .get(0);
        let granted = (i64::from(limit) - held).clamp(0, i64::from(want)) as i32;
        let wanted = want as i32 - granted;
        tx.execute(
            "UPDATE type_places SET wanted = 0 WHERE kind = $1 AND part = ANY($2) AND wanted <> 0",
            &[&kind, &owned],
        )
        .await
        .map_err(pg)?;
        tx.execute(
            "INSERT INTO type_places (kind, part, held, wanted) VALUES ($1, $2, $3, $4)
             ON CONFLICT (kind, part) DO UPDATE
             SET held = type_places.held + excluded.held, wanted = excluded.wanted",
            &[&kind, &home, &granted, &wanted],
        )
        .await
        .map_err(pg)?;
        let others: i64 = tx
            .query_one(
                "SELECT count(*) FROM type_places WHERE kind = $1 AND wanted > 0 AND NOT (part = ANY($2))",
                &[&kind, &owned],
            )
            .await
            .map_err(pg)?
            .get(0);
        tx.commit().await.map_err(pg)?;
        Ok((granted as u32, others as u32))
    }

    /// How many partitions other schedulers own want places, per type.
    pub async fn type_waiters(&self) -> Result<HashMap<String, u32>, StoreError> {
        self.guarded(self.waiters()).await
    }

    async fn waiters(&self) -> Result<HashMap<String, u32>, StoreError> {
        let owned: Vec<i32> = self.owned().into_iter().map(i32::from).collect();
        let rows = get(&self.pool)
            .await?
            .query(
                "SELECT kind, count(*) FROM type_places
                 WHERE wanted > 0 AND NOT (part = ANY($1)) GROUP BY kind",
                &[&owned],
            )
            .await
            .map_err(pg)?;
        Ok(rows
            .into_iter()
            .map(|r| {
                (
                    r.get(0),
                    r.get::<_, i64>(1).clamp(0, i64::from(u32::MAX)) as u32,
                )
            })
            .collect())
    }
}

/// Takes over the places rows of the partitions `parts` as their new
/// owner: forgets what an earlier owner wanted and returns the places
/// they hold, per type.
pub(super) async fn take_over(
    client: &deadpool_postgres::Object,
    parts: &[i32],
) -> Result<HashMap<String, u32>, StoreError> {
    // What an earlier owner wanted is its own business.
    client
        .execute(
            "UPDATE type_places SET wanted = 0 WHERE part = ANY($1) AND wanted <> 0",
            &[&parts],
        )
        .await
        .map_err(pg)?;
    let mut held_by_type = HashMap::new();
    for r in client
        .query(
            "SELECT kind, sum(held)::int8 FROM type_places WHERE part = ANY($1) GROUP BY kind",
            &[&parts],
        )
        .await
        .map_err(pg)?
    {
        let held: i64 = r.get(1);
        held_by_type.insert(r.get(0), held.clamp(0, i64::from(u32::MAX)) as u32);
    }
    Ok(held_by_type)
}
