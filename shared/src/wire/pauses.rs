//! The answer to the `pause` and `resume` control requests: what is
//! paused, namespace-wide (`type: warren.pauses`; docs/protocol.md).

use super::Rejection;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// What is paused: the answer to `pause` and `resume`, and what the
/// status API's `GET /api/pauses` serves.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct PausesReport {
    /// The task queues and task types whose dispatch is held.
    pub paused: Paused,
    /// Why the request was not applied (e.g. `too_many_pauses`); absent
    /// when it was. `paused` then says what is paused all the same.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<Rejection>,
}

/// The paused task queues and task types, each sorted by name.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Paused {
    /// Paused task queues.
    #[serde(default)]
    pub queues: Vec<PauseEntry>,
    /// Paused task types.
    #[serde(default)]
    pub types: Vec<PauseEntry>,
}

/// One paused task queue or task type.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PauseEntry {
    /// The queue's or type's name.
    pub name: String,
    /// When it was paused (a second `pause` keeps the first time).
    pub since: DateTime<Utc>,
}

impl Paused {
    /// True when nothing is paused.
    pub fn is_empty(&self) -> bool {
        self.queues.is_empty() && self.types.is_empty()
    }
}
