//! Retention (`WARREN_RETENTION`): ended workflows are deleted from the
//! store once older than the retention, in small batches that ride with
//! the loop's own: at most once a second a batch carries an
//! [`Op::Prune`] of at most [`PRUNE_AT_MOST`] workflows, the oldest
//! first (with their tasks, results, replies and runs), so a prune never
//! holds a batch up by more than that. On PostgreSQL every scheduler's
//! batches prune, each skipping the rows another is deleting.
//!
//! A workflow about to be pruned is not re-run (`past_retention`), so that
//! a rerun and a prune never meet on one workflow.

use super::Engine;
use crate::batch::Op;
use chrono::{DateTime, Utc};
use std::time::Duration;

/// How often a batch carries a prune (ms).
pub const PRUNE_EVERY_MS: i64 = 1_000;
/// Most workflows one prune deletes.
pub const PRUNE_AT_MOST: u32 = 1_000;

impl Engine {
    /// How long an ended workflow is kept (`None`: for ever).
    pub fn retention(&self) -> Option<Duration> {
        self.retention
    }

    /// When a workflow that ended at `finished_at` is deleted, or about to
    /// be: the retention has passed, but for a margin (a minute, or half
    /// the retention if shorter) in which it is not re-run any more.
    pub(super) fn past_retention(&self, finished_at: DateTime<Utc>, now: DateTime<Utc>) -> bool {
        let Some(keep) = self.retention else {
            return false;
        };
        let margin = (keep / 2).min(Duration::from_secs(60));
        let left = chrono::Duration::from_std(keep.saturating_sub(margin))
            .unwrap_or(chrono::Duration::MAX);
        finished_at + left <= now
    }

    /// Adds a prune to the current batch when one is due (see the module
    /// docs).
    pub fn prune_due(&mut self, now: DateTime<Utc>) {
        let Some(keep) = self.retention else {
            return;
        };
        let now_ms = now.timestamp_millis();
        if now_ms < self.next_prune_ms {
            return;
        }
        self.next_prune_ms = now_ms + PRUNE_EVERY_MS;
        let keep = chrono::Duration::from_std(keep).unwrap_or(chrono::Duration::MAX);
        let Some(before) = now.checked_sub_signed(keep) else {
            return;
        };
        self.ops.push(Op::Prune {
            before,
            limit: PRUNE_AT_MOST,
        });
    }

    /// When the next prune is due (ms since the epoch), with a retention.
    pub(super) fn next_prune_ms(&self) -> Option<i64> {
        self.retention.map(|_| self.next_prune_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{EngineConfig, tests::config};
    use std::sync::Arc;

    fn engine(retention: Option<Duration>) -> Engine {
        Engine::new(
            EngineConfig {
                retention,
                ..config(10)
            },
            Arc::default(),
        )
    }

    fn prunes(e: &mut Engine) -> Vec<(DateTime<Utc>, u32)> {
        e.take_batch()
            .0
            .into_iter()
            .filter_map(|op| match op {
                Op::Prune { before, limit } => Some((before, limit)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_prune_rides_with_a_batch_once_a_second() {
        let week = Duration::from_secs(7 * 86_400);
        let mut e = engine(Some(week));
        let t0 = Utc::now();
        e.prune_due(t0);
        let week_ago = t0 - chrono::Duration::days(7);
        assert_eq!(prunes(&mut e), [(week_ago, PRUNE_AT_MOST)]);
        assert_eq!(
            e.next_due_ms(),
            Some(t0.timestamp_millis() + PRUNE_EVERY_MS)
        );
        e.prune_due(t0 + chrono::Duration::milliseconds(999));
        assert!(prunes(&mut e).is_empty());
        e.prune_due(t0 + chrono::Duration::milliseconds(1000));
        assert_eq!(prunes(&mut e).len(), 1);
        // Without a retention: never, and no wake-up for it.
        let mut forever = engine(None);
        forever.prune_due(t0);
        assert!(prunes(&mut forever).is_empty());
        assert_eq!(forever.next_due_ms(), None);
    }

    #[test]
    fn a_workflow_is_past_retention_a_margin_before_it_is_pruned() {
        let t0 = Utc::now();
        let e = engine(Some(Duration::from_secs(3600)));
        let hour = chrono::Duration::hours(1);
        let minute = chrono::Duration::minutes(1);
        assert!(!e.past_retention(t0, t0 + hour - minute - minute));
        assert!(e.past_retention(t0, t0 + hour - minute));
        // A short retention: half of it.
        let e = engine(Some(Duration::from_secs(10)));
        assert!(!e.past_retention(t0, t0 + chrono::Duration::seconds(4)));
        assert!(e.past_retention(t0, t0 + chrono::Duration::seconds(5)));
        assert!(!engine(None).past_retention(t0 - hour * 1000, t0));
    }
}
