//! What a list of workflows is narrowed to (`Store::list_workflows`, which
//! applies each filter as a bound SQL parameter; the status API's
//! `GET /api/workflows` checks what the wire gives before building one).

use chrono::{DateTime, Utc};

/// Longest `name` filter, in characters: a workflow name's own limit.
pub const MAX_NAME_FILTER: usize = crate::validate::MAX_NAME_CHARS;

/// Longest `id_prefix`, in characters: a workflow id's own limit.
pub const MAX_ID_PREFIX: usize = crate::validate::MAX_ID_LEN;

/// The workflows a list keeps: all of these that are set hold.
/// `Option<String>` converts into a filter on the status alone.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WorkflowFilter {
    /// Of this status word only.
    pub status: Option<String>,
    /// Whose name contains this (case-sensitive; no wildcards).
    pub name: Option<String>,
    /// Created at or after this time.
    pub from: Option<DateTime<Utc>>,
    /// Created before this time.
    pub to: Option<DateTime<Utc>>,
    /// Whose id starts with this (case-sensitive; no wildcards).
    pub id_prefix: Option<String>,
}

impl From<Option<String>> for WorkflowFilter {
    fn from(status: Option<String>) -> WorkflowFilter {
        WorkflowFilter {
            status,
            ..WorkflowFilter::default()
        }
    }
}
