//! Unit tests of firing schedules, under an injected clock: catch-up of
//! firings missed while no scheduler held a schedule (each policy, and
//! its bound), the overlap policies, pause and resume, trigger, and what
//! each firing commits.

use super::tests::engine;
use super::*;
use crate::batch::{OutKind, ReplyTo, ScheduleRow, ScheduleState};
use crate::schedule::{self, MAX_CATCH_UP};
use chrono::DateTime;
use serde_json::{Value, json};
use warren_shared::wire::{CatchUp, Overlap, ScheduleReport, ScheduleSpec};

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().to_utc()
}

const WORKFLOW: &[u8] = br#"{"tasks":[{"id":"a","type":"echo","input":"${schedule.fire_time}"}]}"#;

/// A stored schedule firing every second from `created`, its next firing
/// at `next`.
fn row(catch_up: CatchUp, overlap: Overlap, created: &str, next: &str) -> ScheduleRow {
    ScheduleRow {
        id: Arc::from("s"),
        cron: None,
        every_ms: Some(1000),
        timezone: "UTC".into(),
        overlap,
        catch_up,
        created_at: at(created),
        state: ScheduleState {
            next_fire_at: Some(at(next)),
            ..ScheduleState::default()
        },
    }
}

/// Fires what is due at `now`; returns the firings' workflow ids and the
/// schedule's state as committed.
fn fire(
    e: &mut Engine,
    now: DateTime<Utc>,
    previous_running: bool,
) -> (Vec<String>, ScheduleState) {
    for id in e.take_due_firings(now.timestamp_millis(), 100) {
        e.fire_schedule(&id, Some(WORKFLOW), previous_running, now);
    }
    let (ops, out) = e.take_batch();
    let fired = out
        .iter()
        .filter(|(_, m)| m.kind == OutKind::Firing && m.routing_key.is_empty())
        .map(|(_, m)| m.message_id.clone().unwrap())
        .collect();
    let state = ops
        .into_iter()
        .filter_map(|op| match op {
            Op::ScheduleState { state, .. } => Some(state),
            _ => None,
        })
        .last()
        .unwrap_or_default();
    (fired, state)
}

#[test]
fn missed_firings_are_caught_up_by_policy_and_bound() {
    let now = at("2026-01-01T00:00:10.500Z");
    // Ten firings (00:00:01 .. 00:00:10) fell due while no scheduler ran.
    for (policy, fired, skipped) in [
        (CatchUp::None, 0, 10),
        (CatchUp::Latest, 1, 9),
        (CatchUp::All, 10, 0),
    ] {
        let mut e = engine(10);
        e.restore_schedule(
            row(
                policy,
                Overlap::Allow,
                "2026-01-01T00:00:00Z",
                "2026-01-01T00:00:01Z",
            ),
            now,
        );
        let (ids, state) = fire(&mut e, now, false);
        assert_eq!(ids.len(), fired, "{policy:?}: {ids:?}");
        assert_eq!(state.skipped, skipped, "{policy:?}");
        if policy == CatchUp::Latest {
            assert_eq!(ids, ["s:2026-01-01T00:00:10Z"]);
        }
        if policy == CatchUp::All {
            assert_eq!(ids.first().unwrap(), "s:2026-01-01T00:00:01Z");
            assert_eq!(ids.last().unwrap(), "s:2026-01-01T00:00:10Z");
        }
        // Whatever the policy, the next firing is the first after now.
        let next = e.schedule_row("s").unwrap().state.next_fire_at;
        assert_eq!(next, Some(at("2026-01-01T00:00:11Z")), "{policy:?}");
    }
    // `all` is bounded: an outage of 1,000 firings fires the last 100.
    let mut e = engine(10);
    e.restore_schedule(
        row(
            CatchUp::All,
            Overlap::Allow,
            "2026-01-01T00:00:00Z",
            "2026-01-01T00:00:01Z",
        ),
        at("2026-01-01T00:16:40.500Z"),
    );
    let (ids, state) = fire(&mut e, at("2026-01-01T00:16:40.500Z"), false);
    assert_eq!(ids.len(), MAX_CATCH_UP);
    assert_eq!(ids.first().unwrap(), "s:2026-01-01T00:15:01Z");
    assert_eq!(state.skipped, 1000 - MAX_CATCH_UP as u64);
    assert_eq!(state.fired, MAX_CATCH_UP as u64);
}

#[test]
fn a_schedule_taken_up_on_time_fires_each_slot_once_however_late_the_loop() {
    let mut e = engine(10);
    let now = at("2026-01-01T00:00:00.200Z");
    e.restore_schedule(
        row(
            CatchUp::None,
            Overlap::Allow,
            "2026-01-01T00:00:00Z",
            "2026-01-01T00:00:01Z",
        ),
        now,
    );
    assert!(fire(&mut e, now, false).0.is_empty());
    assert_eq!(
        e.next_due_ms(),
        Some(at("2026-01-01T00:00:01Z").timestamp_millis())
    );
    // The loop comes 3.5 s late: each slot still fires, once.
    let (ids, state) = fire(&mut e, at("2026-01-01T00:00:04.500Z"), false);
    assert_eq!(
        ids,
        [
            "s:2026-01-01T00:00:01Z",
            "s:2026-01-01T00:00:02Z",
            "s:2026-01-01T00:00:03Z",
            "s:2026-01-01T00:00:04Z"
        ]
    );
    assert_eq!(state.fired, 4);
    assert_eq!(
        state.last_workflow_id.as_deref(),
        Some("s:2026-01-01T00:00:04Z")
    );
    assert!(
        fire(&mut e, at("2026-01-01T00:00:04.900Z"), false)
            .0
            .is_empty()
    );
}

#[test]
fn overlap_skip_and_cancel_previous() {
    let mut e = engine(10);
    let now = at("2026-01-01T00:00:01Z");
    e.restore_schedule(
        row(
            CatchUp::None,
            Overlap::Skip,
            "2026-01-01T00:00:00Z",
            "2026-01-01T00:00:01Z",
        ),
        at("2026-01-01T00:00:00Z"),
    );
    let (ids, state) = fire(&mut e, now, true);
    assert!(ids.is_empty());
    assert!(state.last_skipped);
    assert_eq!((state.fired, state.skipped), (0, 1));
    let (ids, state) = fire(&mut e, at("2026-01-01T00:00:02Z"), false);
    assert_eq!(ids, ["s:2026-01-01T00:00:02Z"]);
    assert!(!state.last_skipped);

    // cancel_previous: a previous firing this engine does not hold is
    // cancelled by a control request, then the firing goes out.
    let mut e = engine(10);
    let mut r = row(
        CatchUp::None,
        Overlap::CancelPrevious,
        "2026-01-01T00:00:00Z",
        "2026-01-01T00:00:01Z",
    );
    r.state.last_workflow_id = Some("s:2026-01-01T00:00:00Z".into());
    e.restore_schedule(r, at("2026-01-01T00:00:00Z"));
    for id in e.take_due_firings(now.timestamp_millis(), 10) {
        e.fire_schedule(&id, Some(WORKFLOW), true, now);
    }
    let (_, out) = e.take_batch();
    let cancel: Vec<Value> = out
        .iter()
        .filter(|(_, m)| m.routing_key == "control")
        .map(|(_, m)| serde_json::from_slice(&m.body).unwrap())
        .collect();
    assert_eq!(
        cancel,
        [json!({"control": "cancel", "workflow_id": "s:2026-01-01T00:00:00Z"})]
    );
    assert_eq!(
        out.iter()
            .filter(|(_, m)| m.kind == OutKind::Firing)
            .count(),
        2
    );
}

#[test]
fn pause_holds_resume_skips_what_was_missed_and_trigger_fires_now() {
    let mut e = engine(10);
    let created = at("2026-01-01T00:00:00Z");
    let spec: ScheduleSpec = serde_json::from_value(json!({
        "id": "s", "every_ms": 1000, "overlap": "allow",
        "workflow": serde_json::from_slice::<Value>(WORKFLOW).unwrap()
    }))
    .unwrap();
    let checked = schedule::check(spec, created, &crate::validate::Limits::default()).unwrap();
    let shown = e.create_schedule(checked, created);
    assert_eq!(shown.next_fire_at, Some(at("2026-01-01T00:00:01Z")));
    let (ops, _) = e.take_batch();
    assert!(matches!(ops[..], [Op::InsertSchedule { .. }]));
    let paused = e
        .pause_schedule("s", true, at("2026-01-01T00:00:00.500Z"))
        .unwrap();
    assert!(paused.paused && paused.next_fire_at.is_none());
    e.take_batch();
    assert!(fire(&mut e, at("2026-01-01T00:00:05Z"), false).0.is_empty());
    // A trigger fires while paused, at its own time, and is answered.
    let to = ReplyTo {
        queue: "amq.gen-x".into(),
        correlation_id: Some("c".into()),
    };
    assert!(e.trigger_schedule("s", to, at("2026-01-01T00:00:05.250Z")));
    for id in e.take_due_firings(at("2026-01-01T00:00:05.250Z").timestamp_millis(), 10) {
        e.fire_schedule(&id, Some(WORKFLOW), false, at("2026-01-01T00:00:05.250Z"));
    }
    let (_, out) = e.take_batch();
    let firing = out.iter().find(|(_, m)| m.kind == OutKind::Firing).unwrap();
    let body: Value = serde_json::from_slice(&firing.1.body).unwrap();
    assert_eq!(body["id"], "s:2026-01-01T00:00:05.250Z");
    assert_eq!(body["tasks"][0]["input"], "2026-01-01T00:00:05.250Z");
    let answer = out
        .iter()
        .find(|(_, m)| m.kind == OutKind::ScheduleReply)
        .unwrap();
    let answer: ScheduleReport = serde_json::from_slice(&answer.1.body).unwrap();
    assert_eq!(answer.outcome, "triggered");
    assert_eq!(
        answer.workflow_id.as_deref(),
        Some("s:2026-01-01T00:00:05.250Z")
    );
    // Resumed at 00:00:07.5, it fires from 00:00:08: 00:00:01 to 00:00:07
    // are not caught up.
    let resumed = e
        .pause_schedule("s", false, at("2026-01-01T00:00:07.500Z"))
        .unwrap();
    assert_eq!(resumed.next_fire_at, Some(at("2026-01-01T00:00:08Z")));
    e.take_batch();
    let (ids, _) = fire(&mut e, at("2026-01-01T00:00:08Z"), false);
    assert_eq!(ids, ["s:2026-01-01T00:00:08Z"]);
    // Deleted, it fires no more.
    assert!(e.delete_schedule("s").is_some());
    assert!(fire(&mut e, at("2026-01-01T00:01:00Z"), false).0.is_empty());
    assert_eq!(e.next_due_ms(), None);
}
