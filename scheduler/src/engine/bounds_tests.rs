//! Unit tests of what the engine builds at most: a task's resolved input
//! and a report, and one task read alone.

use super::tests::{config, dispatched, final_report, final_report_in, result, submit};
use super::*;
use crate::batch::OutKind;
use serde_json::{Value, json};

fn bounded(max_task_input_bytes: usize, max_report_bytes: usize) -> (Engine, Arc<Counters>) {
    let counters = Arc::new(Counters::default());
    let cfg = EngineConfig {
        bounds: Bounds {
            max_task_input_bytes,
            max_report_bytes,
            ..Bounds::default()
        },
        ..config(2_000)
    };
    (Engine::new(cfg, counters.clone()), counters)
}

/// Dispatches, expecting no task message and the workflow's final report.
fn failed_at_dispatch(e: &mut Engine) -> WorkflowReport {
    e.dispatch(Utc::now());
    let (_, out) = e.take_batch();
    assert!(
        !out.iter().any(|(_, m)| m.kind == OutKind::Task),
        "nothing reaches a worker"
    );
    final_report_in(&out)
}

#[test]
fn an_input_over_the_limit_fails_the_task_for_good_without_building_it() {
    let (mut e, counters) = bounded(100_000, 8 << 20);
    // 20 KB of input referenced 200 times: 4 MB if it were built.
    let refs: Vec<Value> = vec![json!("${workflow.input.blob}"); 200];
    submit(
        &mut e,
        json!({"id": "w", "input": {"blob": "x".repeat(20_000)}, "tasks": [
            {"id": "big", "type": "echo", "input": refs, "retry": {"max_attempts": 5}},
            {"id": "after", "type": "echo", "depends_on": ["big"]}
        ]}),
    );
    let report = failed_at_dispatch(&mut e);
    assert_eq!(report.status, WorkflowStatus::Failed);
    let err = report.tasks["big"].error.as_ref().expect("an error");
    assert!(!err.retryable);
    assert!(
        err.message.contains("`big`")
            && err.message.contains("100000")
            && err.message.contains("WARREN_MAX_TASK_INPUT_BYTES"),
        "{}",
        err.message
    );
    assert_eq!(report.tasks["big"].attempts, 1);
    assert_eq!(report.tasks["after"].state, TaskState::Skipped);
    assert_eq!(Counters::get(&counters.inputs_too_large), 1);
}

#[test]
fn an_input_without_templates_is_held_to_the_limit_too() {
    let (mut e, _) = bounded(1_000, 8 << 20);
    submit(
        &mut e,
        json!({"id": "w", "tasks": [{"id": "a", "type": "echo", "input": "y".repeat(2_000)}]}),
    );
    assert_eq!(failed_at_dispatch(&mut e).status, WorkflowStatus::Failed);
}

#[test]
fn a_report_over_the_limit_leaves_out_the_largest_outputs() {
    let (mut e, _) = bounded(8 << 20, 50_000);
    submit(
        &mut e,
        json!({"id": "w", "tasks": [
            {"id": "small", "type": "echo"},
            {"id": "big1", "type": "echo"},
            {"id": "big2", "type": "echo"}
        ]}),
    );
    let msgs = dispatched(&mut e);
    for m in &msgs {
        let output = match m.task_id.as_str() {
            "small" => json!("s"),
            _ => json!("z".repeat(30_000)),
        };
        e.on_result(result(m, true, false, output), Utc::now())
            .expect("the attempt's token");
    }
    let report = final_report(&mut e);
    assert_eq!(report.status, WorkflowStatus::Succeeded);
    assert_eq!(report.tasks["small"].output, Some(json!("s")));
    let elided: Vec<_> = ["big1", "big2"]
        .iter()
        .filter(|t| report.tasks[**t].output.is_none())
        .collect();
    assert_eq!(elided.len(), 1, "one big output fits, the other does not");
    assert_eq!(report.tasks[*elided[0]].output_elided, Some(30_002));
    assert!(serde_json::to_vec(&report).unwrap().len() <= 50_000);
    assert_eq!(report.tasks_elided, 0);
}

#[test]
fn a_report_of_very_many_tasks_lists_what_fits_failed_first() {
    let (mut e, _) = bounded(8 << 20, 20_000);
    let mut tasks: Vec<Value> = (0..1_000)
        .map(|i| json!({"id": format!("t{i:04}"), "type": "echo"}))
        .collect();
    tasks.push(json!({"id": "zz", "type": "echo", "retry": {"max_attempts": 1}}));
    submit(&mut e, json!({"id": "w", "tasks": tasks}));
    let msgs = dispatched(&mut e);
    let failing = msgs.iter().find(|m| m.task_id == "zz").unwrap();
    e.on_result(result(failing, false, false, Value::Null), Utc::now())
        .expect("the attempt's token");
    for m in msgs.iter().filter(|m| m.task_id != "zz") {
        e.on_result(result(m, true, false, json!(1)), Utc::now())
            .expect("the attempt's token");
    }
    let report = final_report(&mut e);
    assert_eq!(report.status, WorkflowStatus::Failed);
    assert!(report.tasks.contains_key("zz"), "the failed task is listed");
    assert!(report.tasks_elided > 0);
    assert_eq!(report.tasks.len() + report.tasks_elided as usize, 1_001);
    // Every task is counted, listed or not.
    assert_eq!(report.task_counts[&TaskState::Succeeded], 1_000);
    assert_eq!(report.task_counts[&TaskState::Failed], 1);
    let len = serde_json::to_vec(&report).unwrap().len();
    assert!(len <= 20_000, "{len}");
}

#[test]
fn one_task_is_read_alone_with_its_output_in_full() {
    let (mut e, _) = bounded(8 << 20, 10_000);
    submit(
        &mut e,
        json!({"id": "w", "tasks": [
            {"id": "a", "type": "echo"},
            {"id": "b", "type": "echo", "depends_on": ["a"]}
        ]}),
    );
    let a = dispatched(&mut e);
    e.on_result(
        result(&a[0], true, false, json!("q".repeat(20_000))),
        Utc::now(),
    )
    .expect("the attempt's token");
    let running = e.report("w").unwrap();
    assert_eq!(running.tasks["a"].output_elided, Some(20_002));
    let alone = e.task_report("w", "a").unwrap().unwrap();
    assert_eq!(alone.output, Some(json!("q".repeat(20_000))));
    assert!(e.task_report("w", "nope").unwrap().is_none());
    assert!(e.task_report("other", "a").is_none());
}

fn budgeted(max_active_tasks: usize, max_queues: usize) -> (Engine, Arc<Counters>) {
    let counters = Arc::new(Counters::default());
    let cfg = EngineConfig {
        bounds: Bounds {
            max_active_tasks,
            max_queues,
            ..Bounds::default()
        },
        ..config(2_000)
    };
    (Engine::new(cfg, counters.clone()), counters)
}

fn valid(body: Value) -> crate::validate::ValidWorkflow {
    let bytes = body.to_string().into_bytes();
    crate::validate::validate(&bytes, None, &crate::validate::Limits::default(), || {
        "gen".into()
    })
    .unwrap()
}

#[test]
fn the_budget_counts_tasks_and_bytes_held_and_frees_them_at_the_end() {
    let (mut e, counters) = budgeted(5, 1_000);
    assert!(
        e.has_room(9, 100, 1 << 30),
        "an empty engine takes anything"
    );
    submit(
        &mut e,
        json!({"id": "w", "tasks": [
            {"id": "a", "type": "echo"}, {"id": "b", "type": "echo"}, {"id": "c", "type": "echo"}
        ]}),
    );
    assert_eq!(Counters::get(&counters.active_tasks), 3);
    let bytes = Counters::get(&counters.active_bytes);
    assert!(bytes > 0);
    assert!(e.has_room(9, 2, 0));
    assert!(!e.has_room(9, 3, 0));
    let msgs = dispatched(&mut e);
    e.on_result(
        result(&msgs[0], true, false, json!("x".repeat(1000))),
        Utc::now(),
    )
    .expect("the attempt's token");
    assert_eq!(Counters::get(&counters.active_bytes), bytes + 1002);
    for m in &msgs[1..] {
        e.on_result(result(m, true, false, json!(1)), Utc::now())
            .expect("the attempt's token");
    }
    assert!(!e.is_active("w"));
    assert_eq!(Counters::get(&counters.active_tasks), 0);
    assert_eq!(Counters::get(&counters.active_bytes), 0);
    assert!(e.has_room(9, 5, 0));
}

#[test]
fn new_queues_past_the_bound_are_rejected_until_workflows_using_others_end() {
    let (mut e, _) = budgeted(1_000, 2);
    submit(
        &mut e,
        json!({"id": "w1", "tasks": [
            {"id": "a", "type": "echo", "queue": "q1"}, {"id": "b", "type": "echo", "queue": "q2"}
        ]}),
    );
    let third = valid(json!({"id": "w2", "tasks": [{"id": "a", "type": "echo", "queue": "q3"}]}));
    let rejected = e.queue_bound_rejection(&third).expect("over the bound");
    assert_eq!(rejected.errors[0].code, "too_many_queues");
    assert!(rejected.errors[0].message.contains("WARREN_MAX_QUEUES"));
    let same = valid(json!({"id": "w3", "tasks": [{"id": "a", "type": "echo", "queue": "q1"}]}));
    assert!(e.queue_bound_rejection(&same).is_none());
    for m in dispatched(&mut e) {
        e.on_result(result(&m, true, false, json!(1)), Utc::now())
            .expect("the attempt's token");
    }
    assert!(
        e.queue_bound_rejection(&third).is_none(),
        "q1 and q2 are free again"
    );
    e.dispatch(Utc::now());
    assert!(
        e.in_flight_by_queue().is_empty(),
        "idle queues are forgotten at the next dispatch"
    );
}

#[test]
fn waiters_per_workflow_are_bounded() {
    let (mut e, _) = budgeted(1_000, 1_000);
    submit(
        &mut e,
        json!({"id": "w", "tasks": [{"id": "a", "type": "echo"}]}),
    );
    e.take_batch();
    for i in 0..(MAX_WAITERS + 50) {
        e.add_waiter(
            "w",
            crate::batch::ReplyTo {
                queue: format!("r{i}"),
                correlation_id: None,
            },
        );
    }
    let (ops, out) = e.take_batch();
    let added = ops
        .iter()
        .filter(|op| matches!(op, crate::batch::Op::AddReply { .. }))
        .count();
    assert_eq!(added, MAX_WAITERS);
    let answered_now = out.iter().filter(|(_, m)| m.kind == OutKind::Reply).count();
    assert_eq!(answered_now, 50);
}

#[test]
fn a_batch_stops_dispatching_at_its_byte_bound_and_goes_on_next_turn() {
    let counters = Arc::new(Counters::default());
    let cfg = EngineConfig {
        bounds: Bounds {
            max_batch_bytes: 2_000,
            ..Bounds::default()
        },
        ..config(2_000)
    };
    let mut e = Engine::new(cfg, counters);
    let tasks: Vec<Value> = (0..10)
        .map(|i| json!({"id": format!("t{i}"), "type": "echo", "input": "p".repeat(500)}))
        .collect();
    submit(&mut e, json!({"id": "w", "tasks": tasks}));
    let mut turns = 0;
    let mut sent = 0;
    loop {
        turns += 1;
        let n = dispatched(&mut e).len();
        assert!(
            n <= 4,
            "at most ~2,000 bytes of messages per batch, got {n}"
        );
        sent += n;
        if !e.dispatch_cut() {
            break;
        }
    }
    assert_eq!(sent, 10);
    assert!(turns >= 3, "{turns}");
}
