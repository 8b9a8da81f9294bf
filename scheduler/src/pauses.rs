//! Pauses of task queues and task types: what the `pause` and `resume`
//! control requests change, the stores keep (`pauses` table) and the
//! engine holds dispatch for. A leaf module, so that the engine, the
//! stores and the loop may all import it.
//!
//! A pause is namespace-wide: every scheduler of a PostgreSQL store reads
//! the table (at the start of each session, and at each balance tick), so
//! one applied through any of them holds everywhere within a tick.

use chrono::{DateTime, Utc};
use warren_shared::wire::{PauseEntry, Paused, PausesReport, Rejection};

/// Most pauses stored at once (queues and types together). A `pause` past
/// it is refused with `too_many_pauses`; resuming makes room.
pub const MAX_PAUSES: usize = 1_000;

/// Longest name of a paused task type (characters), as a task's `type`.
pub const MAX_PAUSE_NAME_CHARS: usize = crate::validate::MAX_ID_LEN;

/// What is paused: a task queue or a task type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PauseKind {
    Queue,
    Type,
}

impl PauseKind {
    /// The word the store keeps (`queue`, `type`).
    pub fn as_str(self) -> &'static str {
        match self {
            PauseKind::Queue => "queue",
            PauseKind::Type => "type",
        }
    }

    /// The kind a stored word names.
    pub fn parse(s: &str) -> Option<PauseKind> {
        match s {
            "queue" => Some(PauseKind::Queue),
            "type" => Some(PauseKind::Type),
            _ => None,
        }
    }
}

/// A stored pause.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pause {
    pub kind: PauseKind,
    pub name: String,
    /// When it was paused.
    pub since: DateTime<Utc>,
}

/// A `pause` or `resume` to apply to the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PauseChange {
    /// True for `pause`, false for `resume`.
    pub pause: bool,
    pub kind: PauseKind,
    /// A valid name ([`check_name`]).
    pub name: String,
}

/// What the store made of a [`PauseChange`]: every pause now stored (the
/// change's own among them unless refused), and why it was refused.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PauseOutcome {
    pub pauses: Vec<Pause>,
    /// A `pause` past [`MAX_PAUSES`]: the answer's error.
    pub refused: Option<Rejection>,
}

/// The refusal of a `pause` when `stored` pauses already fill the bound.
pub fn too_many(stored: usize) -> Rejection {
    Rejection {
        code: "too_many_pauses".into(),
        message: format!(
            "{stored} task queues and types are paused, the most there may be is {MAX_PAUSES}; resume one first"
        ),
        task: None,
    }
}

/// Checks the name of a queue or type to pause or resume: a queue name as
/// a task's `queue` may be, a type of 1 to [`MAX_PAUSE_NAME_CHARS`]
/// characters. The error says why not.
pub fn check_name(kind: PauseKind, name: &str) -> Result<(), String> {
    match kind {
        PauseKind::Queue if !crate::validate::valid_queue(name) => Err(format!(
            "queue `{}` must be 1 to 100 characters of letters, digits, `.`, `_` or `-`",
            crate::validate::shortened(name, MAX_PAUSE_NAME_CHARS)
        )),
        PauseKind::Type if name.is_empty() => Err("type must not be empty".into()),
        PauseKind::Type if name.chars().count() > MAX_PAUSE_NAME_CHARS => Err(format!(
            "type is {} characters; at most {MAX_PAUSE_NAME_CHARS}",
            name.chars().count()
        )),
        _ => Ok(()),
    }
}

/// The wire answer listing `pauses` (queues and types each sorted by
/// name), with `errors`.
pub fn report(pauses: &[Pause], errors: Vec<Rejection>) -> PausesReport {
    let mut paused = Paused::default();
    for p in pauses {
        let entry = PauseEntry {
            name: p.name.clone(),
            since: p.since,
        };
        match p.kind {
            PauseKind::Queue => paused.queues.push(entry),
            PauseKind::Type => paused.types.push(entry),
        }
    }
    paused.queues.sort_by(|a, b| a.name.cmp(&b.name));
    paused.types.sort_by(|a, b| a.name.cmp(&b.name));
    PausesReport { paused, errors }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_as_a_tasks_queue_and_type_are() {
        for (kind, name, ok) in [
            (PauseKind::Queue, "emails", true),
            (PauseKind::Queue, "a.b_c-9", true),
            (PauseKind::Queue, "", false),
            (PauseKind::Queue, "with space", false),
            (PauseKind::Queue, &"q".repeat(101), false),
            (PauseKind::Type, "payments.charge", true),
            (PauseKind::Type, "any thing: é", true),
            (PauseKind::Type, &"é".repeat(128), true),
            (PauseKind::Type, &"t".repeat(129), false),
            (PauseKind::Type, "", false),
        ] {
            assert_eq!(check_name(kind, name).is_ok(), ok, "{kind:?} {name}");
        }
    }

    #[test]
    fn the_report_lists_queues_and_types_by_name() {
        let since = Utc::now();
        let p = |kind, name: &str| Pause {
            kind,
            name: name.into(),
            since,
        };
        let r = report(
            &[
                p(PauseKind::Type, "b"),
                p(PauseKind::Queue, "z"),
                p(PauseKind::Type, "a"),
                p(PauseKind::Queue, "y"),
            ],
            Vec::new(),
        );
        let names = |v: &[PauseEntry]| v.iter().map(|e| e.name.clone()).collect::<Vec<_>>();
        assert_eq!(names(&r.paused.queues), ["y", "z"]);
        assert_eq!(names(&r.paused.types), ["a", "b"]);
        let json = serde_json::to_value(&r).unwrap();
        assert!(json.get("errors").is_none(), "{json}");
        assert_eq!(json["paused"]["queues"][0]["name"], "y");
    }
}
