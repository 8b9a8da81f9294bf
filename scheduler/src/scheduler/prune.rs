//! The `prune` control request (docs/protocol.md, "Pruning"): applied to
//! the store in transactions of its own before the batch's lookups, so
//! that they see what it left, and answered with the batch.

use super::request::Request;
use crate::store::{Store, StoreError};
use chrono::Utc;

/// Most transactions one `prune` request deletes in (each at most
/// `PRUNE_AT_MOST` workflows): past them its answer says `more`.
pub const MANUAL_PRUNE_BATCHES: usize = 10;

impl Request {
    /// A `prune`: deletes what ended before `now` less its
    /// `older_than_ms`, as retention does, in at most
    /// [`MANUAL_PRUNE_BATCHES`] transactions of its own (so that one
    /// request holds the loop a bounded time), keeping what it deleted
    /// for [`Scheduler::apply_request`]. Any other request: nothing.
    pub(super) async fn prune(
        &mut self,
        store: &Store,
        now: chrono::DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let Request::Prune {
            older_than_ms,
            outcome,
            ..
        } = self
        else {
            return Ok(());
        };
        let ago = chrono::Duration::milliseconds(i64::try_from(*older_than_ms).unwrap_or(i64::MAX));
        let before = now
            .checked_sub_signed(ago)
            .unwrap_or(chrono::DateTime::<Utc>::MIN_UTC);
        let limit = crate::engine::PRUNE_AT_MOST;
        let (mut pruned, mut more) = (0, true);
        for _ in 0..MANUAL_PRUNE_BATCHES {
            let was = store.pruned();
            store
                .commit(vec![crate::batch::Op::Prune { before, limit }])
                .await?;
            let n = store.pruned().saturating_sub(was);
            pruned += n;
            if n < u64::from(limit) {
                more = false;
                break;
            }
        }
        tracing::info!(pruned, more, "Manual prune");
        *outcome = Some(warren_shared::wire::PruneReport {
            pruned,
            before,
            more,
        });
        Ok(())
    }
}
