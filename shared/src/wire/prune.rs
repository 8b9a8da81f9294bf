//! A manual prune on the wire: the answer to a `prune` control request
//! (`type: warren.pruned`; docs/protocol.md, "Retention").

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// What a `prune` deleted.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PruneReport {
    /// Ended workflows deleted, with their tasks, results, replies and
    /// runs.
    pub pruned: u64,
    /// They had ended before this time.
    pub before: DateTime<Utc>,
    /// More of them are left (one request deletes at most 10,000): ask
    /// again.
    pub more: bool,
}
