//! A schedule as `schedule.create` gives it, checked: its id, its timing,
//! and the workflow each firing submits (validated as a request would be,
//! with the placeholders filled in for a sample firing). And the body of
//! one firing's request.

use super::{MAX_SCHEDULE_ID_LEN, Timing, TimingSpec, firing_workflow_id, valid_schedule_id};
use crate::validate::{self, Limits, MAX_ECHO_CHARS, shortened};
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::Value;
use warren_shared::wire::{Rejection, ScheduleSpec};

/// Most schedules a namespace holds.
pub const MAX_SCHEDULES: usize = 10_000;
/// Largest schedule, as stored (its workflow request and its timing), in
/// bytes.
pub const MAX_SCHEDULE_BYTES: usize = 1024 * 1024;
/// Most schedules in one `schedule.list` answer or `/api/schedules` page
/// (and the default).
pub const MAX_LIST: u32 = 1_000;
/// Most missed firings `catch_up: all` fires (the most recent ones).
pub const MAX_CATCH_UP: usize = 100;

/// The placeholder of the schedule's id in a firing's input.
const ID_PLACEHOLDER: &str = "${schedule.id}";
/// The placeholder of the firing's time (RFC 3339, UTC, milliseconds).
const TIME_PLACEHOLDER: &str = "${schedule.fire_time}";

/// A schedule that passed every check.
#[derive(Debug, Clone)]
pub struct CheckedSchedule {
    pub spec: ScheduleSpec,
    pub timing: Timing,
}

fn problem(code: &str, message: impl Into<String>) -> Rejection {
    Rejection {
        code: code.into(),
        message: shortened(&message.into(), MAX_ECHO_CHARS),
        task: None,
    }
}

/// Checks a schedule, created at `created_at` (its `every_ms` anchor);
/// every problem is listed, each with its code: `invalid_schedule_id`,
/// `invalid_cron`, `unknown_timezone`, `invalid_schedule`,
/// `schedule_too_large`, and the workflow's own (`invalid_task`, ...).
pub fn check(
    spec: ScheduleSpec,
    created_at: DateTime<Utc>,
    limits: &Limits,
) -> Result<CheckedSchedule, Vec<Rejection>> {
    let mut errors = Vec::new();
    if !valid_schedule_id(&spec.id) {
        errors.push(problem(
            "invalid_schedule_id",
            format!(
                "schedule id `{}` must be 1 to {MAX_SCHEDULE_ID_LEN} letters, digits, `.`, `_` or `-`",
                shortened(&spec.id, 120)
            ),
        ));
    }
    let timing = Timing::parse(
        &TimingSpec {
            cron: spec.cron.as_deref(),
            every_ms: spec.every_ms,
            timezone: spec.timezone.as_deref(),
        },
        created_at,
    );
    if let Err(problems) = &timing {
        errors.extend(problems.iter().map(|e| problem(e.code(), e.to_string())));
    }
    let size = serde_json::to_vec(&spec).map_or(usize::MAX, |b| b.len());
    if size > MAX_SCHEDULE_BYTES {
        errors.push(problem(
            "schedule_too_large",
            format!("the schedule is {size} bytes; the limit is {MAX_SCHEDULE_BYTES}"),
        ));
    } else {
        errors.extend(check_workflow(&spec, limits));
    }
    match timing {
        Ok(timing) if errors.is_empty() => Ok(CheckedSchedule { spec, timing }),
        _ => Err(errors),
    }
}

/// The workflow of a schedule: an object without `id` (each firing's is
/// derived), `not_before` or `expires_at` (fixed instants would hold for
/// every firing), that validates as a request once the placeholders are
/// filled in for a firing (with the longest id a schedule can have).
fn check_workflow(spec: &ScheduleSpec, limits: &Limits) -> Vec<Rejection> {
    let Some(object) = spec.workflow.as_object() else {
        return vec![problem(
            "invalid_schedule",
            "`workflow` must be a workflow request (a JSON object)",
        )];
    };
    let fixed: Vec<&str> = ["id", "not_before", "expires_at"]
        .into_iter()
        .filter(|k| object.contains_key(*k))
        .collect();
    if !fixed.is_empty() {
        return vec![problem(
            "invalid_schedule",
            format!(
                "a schedule's workflow must not give {}: each firing's id is derived from the schedule, \
                 and a fixed time would hold for every firing (use `delay_ms` and `deadline_ms`)",
                fixed.join(", ")
            ),
        )];
    }
    let sample_id = "x".repeat(MAX_SCHEDULE_ID_LEN);
    let sample_time =
        DateTime::<Utc>::from_timestamp_millis(253_402_300_799_999).unwrap_or_default();
    let body = firing_body(&spec.workflow, &sample_id, sample_time);
    match validate::validate(&body, None, limits, || sample_id.clone()) {
        Ok(_) => Vec::new(),
        Err(rejected) => rejected.errors,
    }
}

/// The request one firing publishes: the schedule's workflow with `id`
/// set to [`firing_workflow_id`] and, in every string of its `input` and
/// of its tasks' `input`, `${schedule.id}` and `${schedule.fire_time}`
/// replaced.
pub fn firing_body(workflow: &Value, schedule_id: &str, fire_time: DateTime<Utc>) -> Vec<u8> {
    let mut request = workflow.clone();
    let time = fire_time.to_rfc3339_opts(SecondsFormat::Millis, true);
    if let Some(object) = request.as_object_mut() {
        if let Some(input) = object.get_mut("input") {
            fill(input, schedule_id, &time);
        }
        if let Some(Value::Array(tasks)) = object.get_mut("tasks") {
            for task in tasks {
                if let Some(input) = task.get_mut("input") {
                    fill(input, schedule_id, &time);
                }
            }
        }
        object.insert(
            "id".into(),
            Value::String(firing_workflow_id(schedule_id, fire_time)),
        );
    }
    serde_json::to_vec(&request).expect("JSON values serialise")
}

/// Replaces the placeholders in every string of `value`.
fn fill(value: &mut Value, schedule_id: &str, time: &str) {
    match value {
        Value::String(s) if s.contains("${schedule.") => {
            *s = s
                .replace(ID_PLACEHOLDER, schedule_id)
                .replace(TIME_PLACEHOLDER, time);
        }
        Value::Array(items) => items.iter_mut().for_each(|v| fill(v, schedule_id, time)),
        Value::Object(map) => map.values_mut().for_each(|v| fill(v, schedule_id, time)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(v: Value) -> ScheduleSpec {
        serde_json::from_value(v).expect("a schedule")
    }

    fn codes(r: Result<CheckedSchedule, Vec<Rejection>>) -> Vec<String> {
        r.err()
            .unwrap_or_default()
            .into_iter()
            .map(|e| e.code)
            .collect()
    }

    fn workflow() -> Value {
        json!({"tasks": [{"id": "a", "type": "noop", "input": {"at": "${schedule.fire_time}"}}]})
    }

    #[test]
    fn a_good_schedule_passes() {
        let now = Utc::now();
        let s = spec(
            json!({"id": "nightly", "cron": "0 2 * * *", "timezone": "Europe/Berlin", "workflow": workflow()}),
        );
        assert!(check(s, now, &Limits::default()).is_ok());
    }

    #[test]
    fn each_problem_has_its_code() {
        let now = Utc::now();
        let limits = Limits::default();
        let cases = [
            (
                json!({"id": "a b", "every_ms": 1000, "workflow": workflow()}),
                vec!["invalid_schedule_id"],
            ),
            (
                json!({"id": "x", "cron": "61 * * * *", "workflow": workflow()}),
                vec!["invalid_cron"],
            ),
            (
                json!({"id": "x", "cron": "* * * * *", "timezone": "Mars/Olympus", "workflow": workflow()}),
                vec!["unknown_timezone"],
            ),
            (
                json!({"id": "x", "workflow": workflow()}),
                vec!["invalid_schedule"],
            ),
            (
                json!({"id": "x", "every_ms": 10, "workflow": workflow()}),
                vec!["invalid_schedule"],
            ),
            (
                json!({"id": "x", "every_ms": 1000, "workflow": [1]}),
                vec!["invalid_schedule"],
            ),
            (
                json!({"id": "x", "every_ms": 1000, "workflow": {"id": "fixed", "tasks": []}}),
                vec!["invalid_schedule"],
            ),
            (
                json!({"id": "x", "every_ms": 1000, "workflow": {"expires_at": "2030-01-01T00:00:00Z", "tasks": []}}),
                vec!["invalid_schedule"],
            ),
            (
                json!({"id": "x", "every_ms": 1000, "workflow": {"tasks": []}}),
                vec!["no_tasks"],
            ),
            (
                json!({"id": "", "cron": "bad", "workflow": workflow()}),
                vec!["invalid_schedule_id", "invalid_cron"],
            ),
        ];
        for (s, want) in cases {
            let got = codes(check(spec(s.clone()), now, &limits));
            assert_eq!(got, want, "{s}");
        }
        let big = json!({"id": "x", "every_ms": 1000, "workflow": {"input": "a".repeat(MAX_SCHEDULE_BYTES), "tasks": []}});
        assert_eq!(
            codes(check(spec(big), now, &limits)),
            vec!["schedule_too_large"]
        );
    }

    #[test]
    fn a_firing_fills_in_its_id_and_time() {
        let at = DateTime::parse_from_rfc3339("2026-03-29T01:00:00Z")
            .unwrap()
            .to_utc();
        let wf = json!({
            "input": {"who": "${schedule.id}", "deep": ["run ${schedule.fire_time} of ${schedule.id}"]},
            "tasks": [{"id": "a", "type": "noop", "input": "${schedule.fire_time}"}, {"id": "b", "type": "noop"}]
        });
        let body: Value = serde_json::from_slice(&firing_body(&wf, "nightly", at)).unwrap();
        assert_eq!(body["id"], "nightly:2026-03-29T01:00:00Z");
        assert_eq!(body["input"]["who"], "nightly");
        assert_eq!(
            body["input"]["deep"][0],
            "run 2026-03-29T01:00:00.000Z of nightly"
        );
        assert_eq!(body["tasks"][0]["input"], "2026-03-29T01:00:00.000Z");
        assert!(body["tasks"][1].get("input").is_none());
    }
}
