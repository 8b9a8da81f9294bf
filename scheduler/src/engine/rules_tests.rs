//! Unit tests of conditions and trigger rules: which tasks run, which are
//! skipped and why, what a failure stops and what it lets run, how a
//! workflow with handled failures ends, and the same after a restore.

use super::tests::{dispatched, engine, final_report, restore_from, result, stored_rows, submit};
use super::*;
use serde_json::{Value, json};
use warren_shared::wire::{SkipReason, TaskMessage, WorkflowReport};

fn ids(ms: &[TaskMessage]) -> Vec<&str> {
    ms.iter().map(|m| m.task_id.as_str()).collect()
}

/// Answers every dispatched task: `fail` ones fail (not retryable), the
/// others succeed with `output`; returns what was dispatched.
fn answer(e: &mut Engine, fail: &[&str], output: Value) -> Vec<String> {
    let ms = dispatched(e);
    for m in &ms {
        let ok = !fail.contains(&m.task_id.as_str());
        e.on_result(result(m, ok, false, output.clone()), Utc::now())
            .unwrap();
    }
    ms.into_iter().map(|m| m.task_id).collect()
}

fn skipped(r: &WorkflowReport, task: &str) -> Option<SkipReason> {
    let t = &r.tasks[task];
    assert_eq!(t.state, TaskState::Skipped, "{task}: {t:?}");
    t.skip_reason
}

#[test]
fn a_false_condition_skips_its_task_and_what_needs_it() {
    let mut e = engine(10);
    submit(
        &mut e,
        json!({"id": "w", "input": {"limit": 100}, "tasks": [
            {"id": "check", "type": "echo"},
            {"id": "approve", "type": "echo", "depends_on": ["check"],
             "when": "${check.output.amount} < ${workflow.input.limit} && ${check.output.ok}"},
            {"id": "reject", "type": "echo", "depends_on": ["check"],
             "when": "!(${check.output.amount} < ${workflow.input.limit})"},
            {"id": "ship", "type": "echo", "depends_on": ["approve"]},
            {"id": "report", "type": "echo", "depends_on": ["approve", "reject"], "run_if": "all_done"}
        ]}),
    );
    assert_eq!(
        answer(&mut e, &[], json!({"amount": 250, "ok": true})),
        ["check"]
    );
    // approve is false, reject true; ship needs approve.
    assert_eq!(answer(&mut e, &[], json!(null)), ["reject"]);
    assert_eq!(answer(&mut e, &[], json!(null)), ["report"]);
    let r = final_report(&mut e);
    assert_eq!(r.status, WorkflowStatus::Succeeded, "{r:?}");
    assert_eq!(skipped(&r, "approve"), Some(SkipReason::Condition));
    assert_eq!(skipped(&r, "ship"), Some(SkipReason::UpstreamSkipped));
    assert_eq!(r.tasks["reject"].state, TaskState::Succeeded);
}

#[test]
fn a_failure_stops_what_has_not_started_but_runs_compensation_and_cleanup() {
    for (on_failure, status) in [
        ("fail", WorkflowStatus::Failed),
        ("handled", WorkflowStatus::Succeeded),
    ] {
        let mut e = engine(10);
        submit(
            &mut e,
            json!({"id": "order", "on_failure": on_failure, "tasks": [
                {"id": "charge", "type": "echo"},
                {"id": "reserve", "type": "echo"},
                {"id": "ship", "type": "echo", "depends_on": ["charge", "reserve"]},
                {"id": "notify", "type": "echo", "depends_on": ["ship"]},
                {"id": "refund", "type": "echo", "depends_on": ["ship"], "run_if": "any_failed"},
                {"id": "audit", "type": "echo", "depends_on": ["refund", "notify"], "run_if": "all_done"}
            ]}),
        );
        assert_eq!(answer(&mut e, &[], json!(1)), ["charge", "reserve"]);
        assert_eq!(answer(&mut e, &["ship"], json!(null)), ["ship"]);
        // notify is stopped by the failure; refund compensates, audit
        // cleans up after it.
        assert_eq!(answer(&mut e, &[], json!(null)), ["refund"]);
        assert_eq!(answer(&mut e, &[], json!(null)), ["audit"]);
        let r = final_report(&mut e);
        assert_eq!(r.status, status, "{on_failure}: {r:?}");
        assert_eq!(skipped(&r, "notify"), Some(SkipReason::WorkflowFailed));
        assert_eq!(r.tasks["ship"].state, TaskState::Failed);
        assert_eq!(r.tasks["refund"].state, TaskState::Succeeded);
    }
}

#[test]
fn handled_needs_every_failure_compensated_and_any_failed_without_a_failure_is_skipped() {
    // Two failures, one compensated: still failed.
    let mut e = engine(10);
    submit(
        &mut e,
        json!({"id": "w", "on_failure": "handled", "tasks": [
            {"id": "a", "type": "echo"},
            {"id": "b", "type": "echo"},
            {"id": "fix_a", "type": "echo", "depends_on": ["a"], "run_if": "any_failed"}
        ]}),
    );
    assert_eq!(answer(&mut e, &["a", "b"], json!(null)), ["a", "b"]);
    assert_eq!(answer(&mut e, &[], json!(null)), ["fix_a"]);
    assert_eq!(final_report(&mut e).status, WorkflowStatus::Failed);
    // Nothing failed: the compensation is skipped, the workflow succeeds.
    let mut e = engine(10);
    submit(
        &mut e,
        json!({"id": "w2", "tasks": [
            {"id": "a", "type": "echo"},
            {"id": "fix_a", "type": "echo", "depends_on": ["a"], "run_if": "any_failed"},
            {"id": "after", "type": "echo", "depends_on": ["fix_a"]}
        ]}),
    );
    assert_eq!(answer(&mut e, &[], json!(null)), ["a"]);
    let r = final_report(&mut e);
    assert_eq!(r.status, WorkflowStatus::Succeeded, "{r:?}");
    assert_eq!(skipped(&r, "fix_a"), Some(SkipReason::TriggerRule));
    assert_eq!(skipped(&r, "after"), Some(SkipReason::UpstreamSkipped));
}

#[test]
fn a_condition_that_cannot_be_evaluated_fails_its_task() {
    let mut e = engine(10);
    submit(
        &mut e,
        json!({"id": "w", "tasks": [
            {"id": "a", "type": "echo"},
            {"id": "b", "type": "echo", "depends_on": ["a"], "when": "${a.output.flag}"},
            {"id": "c", "type": "echo", "depends_on": ["a"], "when": "${a.output.missing} == 1"}
        ]}),
    );
    answer(&mut e, &[], json!({"flag": "yes"}));
    let r = final_report(&mut e);
    assert_eq!(r.status, WorkflowStatus::Failed, "{r:?}");
    let b = &r.tasks["b"];
    assert_eq!(b.state, TaskState::Failed);
    assert!(
        b.error.as_ref().unwrap().message.contains("not a boolean"),
        "{b:?}"
    );
}

#[test]
fn roots_decide_too_and_a_workflow_of_skipped_tasks_succeeds_at_once() {
    let mut e = engine(10);
    submit(
        &mut e,
        json!({"id": "w", "input": {"go": false}, "tasks": [
            {"id": "a", "type": "echo", "when": "${workflow.input.go}"},
            {"id": "b", "type": "echo", "depends_on": ["a"]}
        ]}),
    );
    let r = final_report(&mut e);
    assert_eq!(r.status, WorkflowStatus::Succeeded, "{r:?}");
    assert_eq!(skipped(&r, "a"), Some(SkipReason::Condition));
    assert_eq!(skipped(&r, "b"), Some(SkipReason::UpstreamSkipped));
}

#[test]
fn a_restored_workflow_keeps_its_reasons_and_runs_its_compensation() {
    let body = json!({"id": "r", "tasks": [
        {"id": "a", "type": "echo"},
        {"id": "b", "type": "echo", "depends_on": ["a"]},
        {"id": "fix", "type": "echo", "depends_on": ["a"], "run_if": "any_failed"}
    ]});
    let mut e = engine(10);
    submit(&mut e, body.clone());
    let a = dispatched(&mut e);
    let (mut ops, _) = e.take_batch();
    e.on_result(result(&a[0], false, false, json!(null)), Utc::now())
        .unwrap();
    let (more, _) = e.take_batch();
    ops.extend(more);
    // The store's rows after that batch: a failed, b skipped, fix ready.
    let rows = stored_rows(ops);
    assert_eq!(rows["b"].skip_reason, Some(SkipReason::WorkflowFailed));
    let mut restored = engine(10);
    restore_from(&mut restored, "r", &body, rows);
    let fix = dispatched(&mut restored);
    assert_eq!(ids(&fix), ["fix"]);
    restored
        .on_result(result(&fix[0], true, false, json!(null)), Utc::now())
        .unwrap();
    let r = final_report(&mut restored);
    assert_eq!(r.status, WorkflowStatus::Failed);
    assert_eq!(skipped(&r, "b"), Some(SkipReason::WorkflowFailed));
}

#[test]
fn a_passed_deadline_is_a_failure_no_compensation_handles() {
    let mut e = engine(10);
    submit(
        &mut e,
        json!({"id": "late", "deadline_ms": 1000, "on_failure": "handled", "tasks": [
            {"id": "a", "type": "echo"},
            {"id": "fix", "type": "echo", "depends_on": ["a"], "run_if": "any_failed"}
        ]}),
    );
    dispatched(&mut e);
    let due = e.next_due_ms().expect("the deadline is a timer");
    e.fire_due(due);
    let r = final_report(&mut e);
    assert_eq!(r.status, WorkflowStatus::Failed, "{r:?}");
    assert_eq!(r.errors[0].code, "deadline");
}
