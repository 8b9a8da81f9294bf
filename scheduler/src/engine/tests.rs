//! Unit tests of the engine, without a broker: workflows driven through
//! accept, dispatch, results, retries, leases and cancels, and the
//! scheduling policy (priority, turns, critical path, limits per workflow
//! and per task type).

use super::{workflow::critical_path_ranks, *};
use crate::{
    batch::OutKind,
    validate::{self, Limits},
};
use serde_json::{Value, json};
use warren_shared::wire::{
    ControlNotice, ResultStatus, TaskMessage, TaskResult, TaskSpec, WorkflowProgress,
};

pub(super) fn config(window: usize) -> EngineConfig {
    EngineConfig {
        topology: Topology::new("t"),
        window,
        lease_grace: Duration::from_millis(1_000),
        next_outbox_seq: 1,
        next_workflow_seq: 1,
        ..EngineConfig::default()
    }
}

pub(super) fn engine(window: usize) -> Engine {
    Engine::new(config(window), Arc::default())
}

pub(super) fn submit(e: &mut Engine, body: Value) {
    let bytes = body.to_string().into_bytes();
    let v = validate::validate(&bytes, None, &Limits::default(), || "gen".into()).unwrap();
    e.accept(v, Arc::from(bytes), None, Utc::now());
}

/// Dispatches and returns the task messages published, in order.
pub(super) fn dispatched(e: &mut Engine) -> Vec<TaskMessage> {
    e.dispatch(Utc::now());
    let (_, out) = e.take_batch();
    out.iter()
        .filter(|(_, m)| m.kind == OutKind::Task)
        .map(|(_, m)| serde_json::from_slice(&m.body).unwrap())
        .collect()
}

pub(super) fn result(m: &TaskMessage, ok: bool, retryable: bool, output: Value) -> TaskResult {
    let status = if ok {
        ResultStatus::Succeeded
    } else {
        ResultStatus::Failed
    };
    TaskResult {
        output: ok.then_some(output),
        error: (!ok).then(|| TaskError {
            message: "boom".into(),
            retryable,
        }),
        ..m.result(status, "w")
    }
}

pub(super) fn final_report(e: &mut Engine) -> WorkflowReport {
    let (_, out) = e.take_batch();
    final_report_in(&out)
}

/// The task rows a store would hold after `ops` (the last of each task
/// wins), by task id.
pub(super) fn stored_rows(ops: Vec<Op>) -> HashMap<String, crate::batch::TaskRow> {
    let mut rows = HashMap::new();
    for op in ops {
        if let Op::Task(row) = op {
            rows.insert(row.task_id.clone(), row);
        }
    }
    rows
}

/// Restores workflow `id` of request `body` into `e` from `rows`, as a
/// restarted scheduler would.
pub(super) fn restore_from(
    e: &mut Engine,
    id: &str,
    body: &Value,
    rows: HashMap<String, crate::batch::TaskRow>,
) {
    e.restore(crate::batch::RunningWorkflow {
        id: id.into(),
        seq: 1,
        definition: serde_json::to_vec(body).unwrap(),
        created_at: Utc::now(),
        tasks: rows.into_values().collect(),
        replies: Vec::new(),
        runs: Vec::new(),
    })
    .unwrap();
}

/// The final event's report among a batch's messages.
pub(super) fn final_report_in(out: &[(u64, Arc<OutMsg>)]) -> WorkflowReport {
    let ev = out
        .iter()
        .find(|(_, m)| m.kind == OutKind::Event && !m.routing_key.ends_with(".running"))
        .expect("a final event");
    serde_json::from_slice(&ev.1.body).unwrap()
}

#[test]
fn diamond_with_templates() {
    let mut e = engine(10);
    submit(
        &mut e,
        json!({"id": "d", "input": {"n": 2}, "tasks": [
            {"id": "a", "type": "echo", "input": {"n": "${workflow.input.n}"}},
            {"id": "b", "type": "echo", "depends_on": ["a"], "input": "${a.output.n}"},
            {"id": "c", "type": "echo", "depends_on": ["a"], "input": "c got ${a.output.n}"},
            {"id": "j", "type": "echo", "depends_on": ["b", "c"], "input": ["${b.output}", "${c.output}"]}
        ]}),
    );
    let a = dispatched(&mut e);
    assert_eq!(a.len(), 1);
    assert_eq!(a[0].input, json!({"n": 2}));
    e.on_result(result(&a[0], true, false, a[0].input.clone()), Utc::now())
        .expect("the attempt's token");
    let bc = dispatched(&mut e);
    assert_eq!(
        bc.iter().map(|m| m.input.clone()).collect::<Vec<_>>(),
        vec![json!(2), json!("c got 2")]
    );
    e.on_result(result(&bc[0], true, false, json!(2)), Utc::now())
        .expect("the attempt's token");
    assert!(dispatched(&mut e).is_empty(), "join waits for both parents");
    e.on_result(result(&bc[1], true, false, json!("c got 2")), Utc::now())
        .expect("the attempt's token");
    let j = dispatched(&mut e);
    assert_eq!(j[0].input, json!([2, "c got 2"]));
    e.on_result(result(&j[0], true, false, json!("done")), Utc::now())
        .expect("the attempt's token");
    let report = final_report(&mut e);
    assert_eq!(report.status, WorkflowStatus::Succeeded);
    assert_eq!(report.tasks["j"].output, Some(json!("done")));
    assert!(!e.is_active("d"));
}

#[test]
fn a_result_without_its_attempts_token_changes_nothing() {
    let mut e = engine(10);
    submit(
        &mut e,
        json!({"id": "f", "tasks": [
            {"id": "a", "type": "echo", "input": 1, "retry": {"max_attempts": 2}},
            {"id": "b", "type": "echo", "depends_on": ["a"], "input": "${a.output}"}
        ]}),
    );
    let a = dispatched(&mut e);
    let real = result(&a[0], true, false, json!("real"));
    let forgeries = [
        TaskResult {
            token: String::new(),
            ..result(&a[0], true, false, json!("forged"))
        },
        TaskResult {
            token: "0".repeat(64),
            ..result(&a[0], true, false, json!("forged"))
        },
        TaskResult {
            // The token of another attempt of the same task.
            token: e.attempt_key.token(crate::attempt_key::Attempt {
                workflow: "f",
                task: "a",
                attempt: 2,
                run: 1,
            }),
            ..result(&a[0], true, false, json!("forged"))
        },
        TaskResult {
            // The real token, moved to another task.
            task_id: "b".into(),
            ..real.clone()
        },
    ];
    for forged in forgeries {
        let refused = e.on_result(forged, Utc::now()).unwrap_err();
        assert!(refused.reason.contains("not applied"), "{}", refused.reason);
    }
    assert_eq!(Counters::get(&e.counters.results_forged), 4);
    assert_eq!(Counters::get(&e.counters.results_committed), 0);
    assert!(dispatched(&mut e).is_empty(), "nothing was unlocked");
    e.on_result(real, Utc::now()).expect("the attempt's token");
    let b = dispatched(&mut e);
    assert_eq!(b[0].input, json!("real"));
    assert_ne!(b[0].token, a[0].token, "each attempt has its own token");
}

#[test]
fn a_workflow_past_its_deadline_ends_failed_and_its_running_tasks_are_stopped() {
    let mut e = engine(10);
    submit(
        &mut e,
        json!({"id": "late", "deadline_ms": 1000, "tasks": [
            {"id": "a", "type": "echo"},
            {"id": "b", "type": "echo", "depends_on": ["a"]}
        ]}),
    );
    let a = dispatched(&mut e);
    assert_eq!(a.len(), 1);
    let due = e.next_due_ms().expect("the deadline is a timer");
    e.fire_due(due - 1);
    assert!(e.is_active("late"), "not before its deadline");
    e.fire_due(due);
    assert!(!e.is_active("late"));
    let (_, out) = e.take_batch();
    assert!(
        out.iter().any(|(_, m)| m.kind == OutKind::Control),
        "the running task's worker is told to stop"
    );
    let report = final_report_in(&out);
    assert_eq!(report.status, WorkflowStatus::Failed);
    assert_eq!(report.errors.len(), 1);
    assert_eq!(report.errors[0].code, "deadline");
    assert!(
        report.error.as_deref().unwrap().starts_with("deadline"),
        "{report:?}"
    );
    use TaskState::Cancelled;
    assert_eq!(report.tasks["a"].state, Cancelled);
    assert_eq!(report.tasks["b"].state, Cancelled);
    assert_eq!(Counters::get(&e.counters.deadlines_passed), 1);
    // Its result, arriving after, changes nothing.
    e.on_result(result(&a[0], true, false, json!(1)), Utc::now())
        .expect("the attempt's token");
    assert_eq!(Counters::get(&e.counters.results_ignored), 1);
    assert_eq!(e.next_due_ms(), None, "nothing left to wake for");
}

#[test]
fn a_workflow_that_ends_in_time_is_not_touched_by_its_deadline() {
    let mut e = engine(10);
    submit(
        &mut e,
        json!({"id": "quick", "deadline_ms": 1000, "tasks": [{"id": "a", "type": "echo"}]}),
    );
    let a = dispatched(&mut e);
    let due = e.next_due_ms().unwrap();
    e.on_result(result(&a[0], true, false, json!(1)), Utc::now())
        .expect("the attempt's token");
    assert_eq!(final_report(&mut e).status, WorkflowStatus::Succeeded);
    e.fire_due(due);
    assert_eq!(Counters::get(&e.counters.deadlines_passed), 0);
    let (ops, out) = e.take_batch();
    assert!(ops.is_empty() && out.is_empty(), "nothing more happens");
}

#[test]
fn cancel_stops_every_unfinished_task_and_frees_the_window() {
    let counters = Arc::new(Counters::default());
    let mut e = Engine::new(config(2), counters.clone());
    submit(
        &mut e,
        json!({"id": "x", "tasks": [
            {"id": "a", "type": "echo"},
            {"id": "b", "type": "echo", "depends_on": ["a"]},
            {"id": "c", "type": "echo", "depends_on": ["a"]},
            {"id": "d", "type": "echo", "depends_on": ["b", "c"]}
        ]}),
    );
    let a = dispatched(&mut e);
    e.on_result(result(&a[0], true, false, json!(1)), Utc::now())
        .expect("the attempt's token");
    let bc = dispatched(&mut e);
    assert_eq!(bc.len(), 2, "the window of 2 is full");

    let report = e.cancel("x", Utc::now()).expect("running");
    assert_eq!(report.status, WorkflowStatus::Cancelled);
    let states: Vec<TaskState> = report.tasks.values().map(|t| t.state).collect();
    use TaskState::{Cancelled, Succeeded};
    assert_eq!(states, vec![Succeeded, Cancelled, Cancelled, Cancelled]);
    let (_, out) = e.take_batch();
    let notice = out
        .iter()
        .find(|(_, m)| m.kind == OutKind::Control)
        .expect("workers are told");
    assert_eq!(notice.1.exchange, "t.control");
    let notice: ControlNotice = serde_json::from_slice(&notice.1.body).unwrap();
    assert_eq!(notice.workflow_id, "x");
    assert!(
        out.iter()
            .any(|(_, m)| m.kind == OutKind::Event && m.routing_key == "workflow.x.cancelled")
    );
    assert!(!e.is_active("x"));
    assert!(e.cancel("x", Utc::now()).is_none(), "only once");

    // A late result changes nothing; the window is free again.
    e.on_result(result(&bc[0], true, false, json!(2)), Utc::now())
        .expect("the attempt's token");
    assert_eq!(Counters::get(&counters.results_ignored), 1);
    submit(
        &mut e,
        json!({"id": "y", "tasks": [{"id": "p", "type": "echo"}, {"id": "q", "type": "echo"}]}),
    );
    assert_eq!(dispatched(&mut e).len(), 2);
}

#[test]
fn progress_is_announced_once_per_interval_for_changed_workflows() {
    let mut e = engine(10);
    submit(
        &mut e,
        json!({"id": "p", "tasks": [
            {"id": "a", "type": "echo"}, {"id": "b", "type": "echo"},
            {"id": "c", "type": "echo", "depends_on": ["a", "b"]}
        ]}),
    );
    let ab = dispatched(&mut e);
    e.on_result(result(&ab[0], true, false, json!(1)), Utc::now())
        .expect("the attempt's token");
    let progress = |e: &mut Engine, at| -> Vec<WorkflowProgress> {
        e.emit_progress(at);
        let (_, out) = e.take_batch();
        out.iter()
            .filter(|(_, m)| m.kind == OutKind::Progress)
            .map(|(_, m)| serde_json::from_slice(&m.body).unwrap())
            .collect()
    };
    assert!(
        progress(&mut e, Utc::now()).is_empty(),
        "a workflow younger than the interval has none"
    );
    let later = Utc::now() + chrono::Duration::milliseconds(2 * PROGRESS_INTERVAL_MS);
    let p = progress(&mut e, later);
    assert_eq!(p.len(), 1);
    assert_eq!(p[0].total, 3);
    let counts: Vec<(TaskState, u32)> = p[0].tasks.clone().into_iter().collect();
    assert_eq!(
        counts,
        vec![
            (TaskState::Pending, 1),
            (TaskState::Running, 1),
            (TaskState::Succeeded, 1)
        ]
    );
    e.on_result(result(&ab[1], true, false, json!(2)), Utc::now())
        .expect("the attempt's token");
    assert!(progress(&mut e, later).is_empty(), "once per interval");
    let even_later = later + chrono::Duration::milliseconds(PROGRESS_INTERVAL_MS);
    assert_eq!(progress(&mut e, even_later).len(), 1);
    assert!(progress(&mut e, even_later).is_empty(), "nothing changed");
}

#[test]
fn retry_then_exhaustion_skips_dependents() {
    let mut e = engine(10);
    submit(
        &mut e,
        json!({"id": "r", "tasks": [
            {"id": "a", "type": "fail", "retry": {"max_attempts": 2, "backoff_ms": 100}},
            {"id": "s", "type": "sleep"},
            {"id": "b", "type": "echo", "depends_on": ["a"]}
        ]}),
    );
    let first = dispatched(&mut e);
    assert_eq!(first.len(), 2);
    let now = Utc::now();
    e.on_result(result(&first[0], false, true, Value::Null), now)
        .expect("the attempt's token");
    assert!(
        dispatched(&mut e).is_empty(),
        "the retry waits for its due time"
    );
    let due = e.next_due_ms().unwrap();
    let delay = due - now.timestamp_millis();
    assert!(
        (50..=100).contains(&delay),
        "equal jitter of 100 ms: {delay}"
    );
    e.fire_due(due);
    let second = dispatched(&mut e);
    assert_eq!((second[0].task_id.as_str(), second[0].attempt), ("a", 2));
    // A late duplicate of attempt 1 changes nothing.
    e.on_result(result(&first[0], true, false, json!(1)), Utc::now())
        .expect("the attempt's token");
    assert_eq!(Counters::get(&e.counters.results_ignored), 1);
    e.on_result(result(&second[0], false, true, Value::Null), Utc::now())
        .expect("the attempt's token");
    assert!(e.is_active("r"), "waits for the running sibling");
    e.on_result(result(&first[1], true, false, json!("slept")), Utc::now())
        .expect("the attempt's token");
    let report = final_report(&mut e);
    assert_eq!(report.status, WorkflowStatus::Failed);
    assert_eq!(report.tasks["a"].state, TaskState::Failed);
    assert_eq!(report.tasks["a"].attempts, 2);
    assert_eq!(report.tasks["s"].state, TaskState::Succeeded);
    assert_eq!(report.tasks["b"].state, TaskState::Skipped);
    assert_eq!(
        report.error.as_deref(),
        Some("task `a` failed after 2 attempts: boom")
    );
}

#[test]
fn non_retryable_failure_is_final() {
    let mut e = engine(10);
    submit(
        &mut e,
        json!({"id": "n", "tasks": [
            {"id": "a", "type": "x", "retry": {"max_attempts": 5}}
        ]}),
    );
    let a = dispatched(&mut e);
    e.on_result(result(&a[0], false, false, Value::Null), Utc::now())
        .expect("the attempt's token");
    assert_eq!(final_report(&mut e).tasks["a"].attempts, 1);
}

#[test]
fn window_and_priority_order() {
    let mut e = engine(1);
    submit(
        &mut e,
        json!({"id": "low", "priority": 0, "tasks": [
            {"id": "a", "type": "echo"}, {"id": "b", "type": "echo"}
        ]}),
    );
    let first = dispatched(&mut e);
    assert_eq!(first.len(), 1, "window of one");
    submit(
        &mut e,
        json!({"id": "high", "priority": 9, "tasks": [{"id": "h", "type": "echo"}]}),
    );
    assert!(dispatched(&mut e).is_empty());
    e.on_result(result(&first[0], true, false, json!(null)), Utc::now())
        .expect("the attempt's token");
    let next = dispatched(&mut e);
    assert_eq!(
        next[0].workflow_id, "high",
        "priority 9 overtakes the earlier backlog"
    );
}

#[test]
fn workflows_of_one_priority_take_turns() {
    let mut e = engine(4);
    let big: Vec<Value> = (0..100)
        .map(|i| json!({"id": format!("b{i}"), "type": "echo"}))
        .collect();
    submit(&mut e, json!({"id": "big", "tasks": big}));
    submit(
        &mut e,
        json!({"id": "small", "tasks": [
            {"id": "s0", "type": "echo"}, {"id": "s1", "type": "echo"}
        ]}),
    );
    let order: Vec<String> = dispatched(&mut e)
        .into_iter()
        .map(|m| m.workflow_id)
        .collect();
    assert_eq!(
        order,
        ["big", "small", "big", "small"],
        "the later, smaller workflow is not starved"
    );
}

#[test]
fn max_concurrency_caps_a_workflow_and_not_its_neighbours() {
    let mut e = engine(10);
    let tasks: Vec<Value> = (0..6)
        .map(|i| json!({"id": format!("t{i}"), "type": "echo"}))
        .collect();
    submit(
        &mut e,
        json!({"id": "capped", "max_concurrency": 2, "tasks": tasks}),
    );
    submit(
        &mut e,
        json!({"id": "free", "tasks": [{"id": "a", "type": "echo"}, {"id": "b", "type": "echo"}]}),
    );
    let first = dispatched(&mut e);
    let of = |ms: &[TaskMessage], w: &str| ms.iter().filter(|m| m.workflow_id == w).count();
    assert_eq!(of(&first, "capped"), 2, "never more than 2 at once");
    assert_eq!(of(&first, "free"), 2, "the other workflow is not held up");
    assert!(dispatched(&mut e).is_empty());
    let capped: Vec<&TaskMessage> = first.iter().filter(|m| m.workflow_id == "capped").collect();
    e.on_result(result(capped[0], true, false, json!(1)), Utc::now())
        .expect("the attempt's token");
    let next = dispatched(&mut e);
    assert_eq!(next.len(), 1, "one slot freed, one task");
    assert_eq!(next[0].workflow_id, "capped");
}

fn limited(window: usize, limits: &[(&str, u32)]) -> Engine {
    let config = EngineConfig {
        type_limits: limits.iter().map(|(k, n)| (k.to_string(), *n)).collect(),
        ..config(window)
    };
    Engine::new(config, Arc::default())
}

#[test]
fn a_type_limit_holds_across_workflows_and_holds_up_no_other_type() {
    let mut e = limited(100, &[("charge", 2)]);
    let mut tasks: Vec<Value> = (0..4)
        .map(|i| json!({"id": format!("c{i}"), "type": "charge"}))
        .collect();
    tasks.extend((0..2).map(|i| json!({"id": format!("m{i}"), "type": "mail"})));
    submit(&mut e, json!({"id": "w1", "tasks": tasks}));
    submit(
        &mut e,
        json!({"id": "w2", "priority": 5, "tasks": [
            {"id": "c0", "type": "charge"}, {"id": "c1", "type": "charge"}
        ]}),
    );
    let first = dispatched(&mut e);
    let of = |ms: &[TaskMessage], kind: &str| ms.iter().filter(|m| m.kind == kind).count();
    assert_eq!(of(&first, "charge"), 2, "at most 2 charges at once");
    assert_eq!(of(&first, "mail"), 2, "mail is not held up behind charges");
    assert!(
        first
            .iter()
            .filter(|m| m.kind == "charge")
            .all(|m| m.workflow_id == "w2"),
        "the higher priority takes the limited places"
    );
    assert_eq!(
        e.type_usage(),
        vec![TypeUsage {
            kind: "charge".into(),
            running: 2,
            limit: 2,
            waiting: 4
        }]
    );
    assert!(dispatched(&mut e).is_empty());
    let charge = first.iter().find(|m| m.kind == "charge").unwrap();
    e.on_result(result(charge, true, false, json!(1)), Utc::now())
        .expect("the attempt's token");
    let next = dispatched(&mut e);
    assert_eq!(next.len(), 1, "one place freed, one charge");
    assert_eq!(next[0].kind, "charge");
}

/// Random DAGs of limited and unlimited types, answered in random
/// order (some cancelled): the limits are never exceeded, and every
/// workflow ends (nothing parked is forgotten).
#[test]
fn type_limits_are_never_exceeded_and_nothing_stalls() {
    for seed in 0..20 {
        fastrand::seed(seed);
        let limits = [("a", 1u32), ("b", 3)];
        let mut e = limited(1 + fastrand::usize(..8), &limits);
        for w in 0..6 {
            let n = 5 + fastrand::usize(..20);
            let tasks: Vec<Value> = (0..n)
                .map(|i| {
                    let deps: Vec<String> = (0..i)
                        .filter(|_| fastrand::u8(..10) == 0)
                        .map(|d| format!("t{d}"))
                        .collect();
                    let kind = ["a", "b", "c"][fastrand::usize(..3)];
                    let queue = ["q1", "q2"][fastrand::usize(..2)];
                    json!({
                        "id": format!("t{i}"),
                        "type": kind,
                        "queue": queue,
                        "depends_on": deps,
                    })
                })
                .collect();
            submit(
                &mut e,
                json!({"id": format!("w{w}"), "priority": fastrand::u8(..3), "tasks": tasks}),
            );
        }
        let mut running: Vec<TaskMessage> = Vec::new();
        for _ in 0..10_000 {
            running.extend(dispatched(&mut e));
            for (kind, max) in limits {
                let now = running.iter().filter(|m| m.kind == kind).count();
                assert!(
                    now <= max as usize,
                    "seed {seed}: {now} of `{kind}` running"
                );
            }
            if running.is_empty() {
                break;
            }
            let m = running.swap_remove(fastrand::usize(..running.len()));
            if fastrand::u8(..50) == 0 {
                let wf = m.workflow_id.clone();
                e.cancel(&wf, Utc::now());
                running.retain(|r| r.workflow_id != wf);
            } else {
                e.on_result(result(&m, true, false, json!(1)), Utc::now())
                    .expect("the attempt's token");
            }
        }
        assert_eq!(e.active_workflows(), 0, "seed {seed}: a workflow stalled");
        assert!(e.type_usage().iter().all(|u| u.running == 0));
    }
}

#[test]
fn type_limits_parse() {
    assert_eq!(
        TypeLimits::parse(" payments.charge=5, mail = 20,").unwrap(),
        vec![("payments.charge".into(), 5), ("mail".into(), 20)]
    );
    assert!(TypeLimits::parse("").unwrap().is_empty());
    for bad in ["charge", "charge=0", "=3", "charge=x"] {
        let e = TypeLimits::parse(bad).unwrap_err().to_string();
        assert!(e.contains(bad.trim()), "{bad}: {e}");
    }
}

/// A skewed DAG: five leaves listed first (so they become ready
/// first), and a chain of three behind `root`.
fn skewed(e: &mut Engine) {
    let mut tasks: Vec<Value> = (0..5)
        .map(|i| json!({"id": format!("leaf{i}"), "type": "echo"}))
        .collect();
    tasks.extend([
        json!({"id": "root", "type": "echo"}),
        json!({"id": "c1", "type": "echo", "depends_on": ["root"]}),
        json!({"id": "c2", "type": "echo", "depends_on": ["c1"]}),
        json!({"id": "c3", "type": "echo", "depends_on": ["c2"]}),
    ]);
    submit(e, json!({"id": "skew", "tasks": tasks}));
}

#[test]
fn critical_path_first_and_fifo_for_comparison() {
    let mut e = engine(1);
    skewed(&mut e);
    let first = dispatched(&mut e);
    assert_eq!(first[0].task_id, "root", "root heads the longest path");

    let config = EngineConfig {
        dispatch_order: DispatchOrder::Fifo,
        ..config(1)
    };
    let mut fifo = Engine::new(config, Arc::default());
    skewed(&mut fifo);
    assert_eq!(dispatched(&mut fifo)[0].task_id, "leaf0", "first ready");
    // With hints, weight beats length: one 100 s task outranks a chain
    // of three unhinted ones.
    let mut e = engine(1);
    submit(
        &mut e,
        json!({"id": "hints", "tasks": [
            {"id": "a1", "type": "echo"},
            {"id": "a2", "type": "echo", "depends_on": ["a1"]},
            {"id": "a3", "type": "echo", "depends_on": ["a2"]},
            {"id": "slow", "type": "echo", "duration_hint_ms": 100000}
        ]}),
    );
    assert_eq!(dispatched(&mut e)[0].task_id, "slow");
}

#[test]
fn critical_path_ranks_weigh_the_heaviest_way_to_the_end() {
    let specs: Vec<TaskSpec> = serde_json::from_value(json!([
        {"id": "a", "type": "t"},
        {"id": "b", "type": "t", "depends_on": ["a"], "duration_hint_ms": 10},
        {"id": "c", "type": "t", "depends_on": ["a"]},
        {"id": "d", "type": "t", "depends_on": ["b", "c"], "duration_hint_ms": 5}
    ]))
    .unwrap();
    let deps = vec![vec![], vec![0], vec![0], vec![1, 2]];
    let dependents = vec![vec![1, 2], vec![3], vec![3], vec![]];
    assert_eq!(
        critical_path_ranks(&specs, &dependents, &deps),
        vec![16, 15, 6, 5]
    );
}

#[test]
fn missing_template_path_fails_the_task() {
    let mut e = engine(10);
    submit(
        &mut e,
        json!({"id": "m", "tasks": [
            {"id": "a", "type": "echo"},
            {"id": "b", "type": "echo", "depends_on": ["a"], "input": "${a.output.nope}"}
        ]}),
    );
    let a = dispatched(&mut e);
    e.on_result(result(&a[0], true, false, json!({"x": 1})), Utc::now())
        .expect("the attempt's token");
    e.dispatch(Utc::now());
    let report = final_report(&mut e);
    assert_eq!(report.status, WorkflowStatus::Failed);
    let err = report.tasks["b"].error.as_ref().unwrap();
    assert!(err.message.contains("has no `nope`"), "{}", err.message);
}

#[test]
fn an_expired_lease_fails_the_attempt_and_a_late_result_is_ignored() {
    let mut e = engine(10);
    submit(
        &mut e,
        json!({"id": "l", "tasks": [
            {"id": "a", "type": "hang", "timeout_ms": 100, "retry": {"max_attempts": 2, "backoff_ms": 10}}
        ]}),
    );
    let start = Utc::now();
    let first = dispatched(&mut e);
    let due = e.next_due_ms().expect("a lease");
    let expected = start.timestamp_millis() + 100 + 1_000;
    assert!(
        (expected..expected + 50).contains(&due),
        "lease ends at timeout + grace"
    );
    e.fire_due(due - 1);
    assert!(dispatched(&mut e).is_empty(), "not before the lease ends");
    e.fire_due(due);
    assert_eq!(Counters::get(&e.counters.leases_expired), 1);
    let retry_due = e.next_due_ms().unwrap();
    e.fire_due(retry_due);
    let second = dispatched(&mut e);
    assert_eq!(second[0].attempt, 2);
    // The hung attempt's result arrives after all: ignored.
    e.on_result(result(&first[0], true, false, json!("late")), Utc::now())
        .expect("the attempt's token");
    assert_eq!(Counters::get(&e.counters.results_ignored), 1);
    e.on_result(result(&second[0], true, false, json!("ok")), Utc::now())
        .expect("the attempt's token");
    let report = final_report(&mut e);
    assert_eq!(report.status, WorkflowStatus::Succeeded);
    assert_eq!(report.tasks["a"].output, Some(json!("ok")));
    assert_eq!(report.tasks["a"].attempts, 2);
}

#[test]
fn a_delayed_workflow_is_stored_scheduled_and_starts_when_due() {
    let mut e = engine(10);
    let body = json!({"id": "later", "delay_ms": 60_000, "tasks": [{"id": "a", "type": "echo"}]});
    let bytes = body.to_string().into_bytes();
    let v = validate::validate(&bytes, None, &Limits::default(), || "gen".into()).unwrap();
    let accepted = Utc::now();
    e.accept(v, Arc::from(bytes.clone()), None, accepted);
    let (ops, out) = e.take_batch();
    assert!(
        ops.iter().any(|op| matches!(op, Op::InsertWorkflow { status: WorkflowStatus::Scheduled, report: Some(r), .. } if r.contains("not_before"))),
        "stored scheduled, with its due time: {ops:?}"
    );
    assert!(
        out.iter().all(|(_, m)| m.kind != OutKind::Task),
        "nothing dispatched"
    );
    assert!(
        out.iter()
            .any(|(_, m)| m.routing_key == "workflow.later.scheduled")
    );
    assert!(e.is_scheduled("later") && !e.is_active("later"));
    let due = accepted.timestamp_millis() + 60_000;
    assert_eq!(e.next_due_ms(), Some(due));
    assert_eq!(
        e.scheduled_status("later")
            .unwrap()
            .not_before
            .unwrap()
            .timestamp_millis(),
        due
    );
    assert!(e.take_due_starts(due - 1, 10).is_empty(), "not before");
    let taken = e.take_due_starts(due, 10);
    assert_eq!(taken.len(), 1);
    let v = validate::validate_stored(&bytes, "later").unwrap();
    e.start_unstarted(v, &bytes, Utc::now());
    let (ops, _) = e.take_batch();
    assert!(ops.iter().any(|op| matches!(op, Op::StartWorkflow { .. })));
    assert!(e.is_active("later") && !e.is_scheduled("later"));
    assert_eq!(dispatched(&mut e).len(), 1);
    assert_eq!(Counters::get(&e.counters.workflows_started), 1);
}

#[test]
fn a_scheduled_workflow_can_be_cancelled_and_then_never_starts() {
    let mut e = engine(10);
    submit(
        &mut e,
        json!({"id": "never", "not_before": "2999-01-01T00:00:00Z", "tasks": [{"id": "a", "type": "echo"}]}),
    );
    assert!(e.is_scheduled("never"));
    let report = e.cancel_scheduled("never", Utc::now()).unwrap();
    assert_eq!(report.status, WorkflowStatus::Cancelled);
    assert!(!e.is_scheduled("never"));
    let due = e.next_due_ms().unwrap();
    assert!(
        e.take_due_starts(due, 10).is_empty(),
        "its start is dropped"
    );
    assert_eq!(e.next_due_ms(), None);
}

#[test]
fn a_start_time_already_past_starts_at_once() {
    let mut e = engine(10);
    submit(
        &mut e,
        json!({"id": "now", "not_before": "2000-01-01T00:00:00Z", "tasks": [{"id": "a", "type": "echo"}]}),
    );
    assert!(e.is_active("now"));
    assert_eq!(dispatched(&mut e).len(), 1);
}

#[test]
fn a_task_with_a_delay_waits_that_long_after_its_dependencies_once() {
    let mut e = engine(10);
    submit(
        &mut e,
        json!({"id": "poll", "tasks": [
            {"id": "a", "type": "echo"},
            {"id": "b", "type": "echo", "depends_on": ["a"], "delay_ms": 5000,
             "retry": {"max_attempts": 2, "backoff_ms": 0}}
        ]}),
    );
    let a = dispatched(&mut e);
    let before = Utc::now().timestamp_millis();
    e.on_result(result(&a[0], true, false, json!(1)), Utc::now())
        .expect("the attempt's token");
    let (ops, out) = e.take_batch();
    assert!(out.iter().all(|(_, m)| m.kind != OutKind::Task), "b waits");
    assert!(
        ops.iter().any(|op| matches!(op, Op::Task(row) if row.task_id == "b" && row.state == TaskState::Delayed && row.due_at_ms.is_some())),
        "the wait is stored: {ops:?}"
    );
    let due = e.next_due_ms().unwrap();
    assert!(due >= before + 5000);
    e.fire_due(due - 1);
    assert!(dispatched(&mut e).is_empty(), "not before its delay");
    e.fire_due(due);
    let b = dispatched(&mut e);
    assert_eq!(b.len(), 1);
    // A retry of it waits for its backoff only, not the delay again.
    e.on_result(result(&b[0], false, true, Value::Null), Utc::now())
        .expect("the attempt's token");
    e.fire_due(Utc::now().timestamp_millis());
    assert_eq!(
        dispatched(&mut e).len(),
        1,
        "the retry is not delayed again"
    );
}
