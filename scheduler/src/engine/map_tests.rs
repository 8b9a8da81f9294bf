//! Unit tests of mapped tasks: list → map → reduce, the empty array, a
//! value that is not an array or too wide, a failed instance, and a
//! restore in the middle of a map.

use super::tests::{
    config, dispatched, engine, final_report, restore_from, result, stored_rows, submit,
};
use super::*;
use serde_json::{Value, json};
use warren_shared::wire::TaskMessage;

fn list_map_reduce(files: Value) -> Value {
    json!({"id": "lmr", "input": {"files": files}, "tasks": [
        {"id": "list", "type": "echo", "input": "${workflow.input.files}"},
        {"id": "resize", "type": "echo", "depends_on": ["list"], "map": "${list.output}",
         "input": {"file": "${item}", "at": "${index}", "label": "${index}: ${item}"},
         "retry": {"max_attempts": 2, "backoff_ms": 1}},
        {"id": "reduce", "type": "echo", "depends_on": ["resize"], "input": {"all": "${resize.output}"}}
    ]})
}

/// Answers each dispatched task with its own input as output.
fn echo(e: &mut Engine) -> Vec<TaskMessage> {
    let ms = dispatched(e);
    for m in &ms {
        e.on_result(result(m, true, false, m.input.clone()), Utc::now())
            .unwrap();
    }
    ms
}

fn ids(ms: &[TaskMessage]) -> Vec<&str> {
    ms.iter().map(|m| m.task_id.as_str()).collect()
}

#[test]
fn list_map_reduce_runs_one_instance_per_item_and_collects_their_outputs_in_order() {
    let mut e = engine(10);
    submit(&mut e, list_map_reduce(json!(["a.png", "b.png", "c.png"])));
    assert_eq!(ids(&echo(&mut e)), ["list"]);
    let instances = dispatched(&mut e);
    assert_eq!(ids(&instances), ["resize[0]", "resize[1]", "resize[2]"]);
    assert_eq!(
        instances[1].input,
        json!({"file": "b.png", "at": 1, "label": "1: b.png"})
    );
    // Answered out of order: the output keeps the items' order.
    for m in instances.iter().rev() {
        let out = json!(format!("small-{}", m.input["file"].as_str().unwrap()));
        e.on_result(result(m, true, false, out), Utc::now())
            .unwrap();
    }
    let reduce = echo(&mut e);
    assert_eq!(ids(&reduce), ["reduce"]);
    assert_eq!(
        reduce[0].input,
        json!({"all": ["small-a.png", "small-b.png", "small-c.png"]})
    );
    let r = final_report(&mut e);
    assert_eq!(r.status, WorkflowStatus::Succeeded, "{r:?}");
    assert_eq!(r.tasks["resize"].state, TaskState::Succeeded);
    assert_eq!(r.tasks["resize[2]"].output, Some(json!("small-c.png")));
}

#[test]
fn an_empty_array_succeeds_at_once_and_a_bad_one_fails_the_task() {
    let mut e = engine(10);
    submit(&mut e, list_map_reduce(json!([])));
    echo(&mut e);
    let reduce = echo(&mut e);
    assert_eq!(reduce[0].input, json!({"all": []}));
    assert_eq!(final_report(&mut e).status, WorkflowStatus::Succeeded);

    for (files, fragment) in [
        (json!({"not": "a list"}), "not an array"),
        (json!(vec![1; 11]), "WARREN_MAX_MAP_WIDTH"),
    ] {
        let mut c = config(10);
        c.bounds.max_map_width = 10;
        let mut e = Engine::new(c, Arc::default());
        submit(&mut e, list_map_reduce(files));
        echo(&mut e);
        let r = final_report(&mut e);
        assert_eq!(r.status, WorkflowStatus::Failed, "{r:?}");
        let error = r.tasks["resize"].error.clone().unwrap();
        assert!(error.message.contains(fragment), "{error:?}");
    }
}

#[test]
fn a_failed_instance_fails_the_mapped_task_after_its_retries() {
    let mut e = engine(10);
    submit(&mut e, list_map_reduce(json!(["a", "b", "c"])));
    echo(&mut e);
    let first = dispatched(&mut e);
    assert_eq!(ids(&first), ["resize[0]", "resize[1]", "resize[2]"]);
    for m in &first {
        let ok = m.task_id != "resize[0]";
        e.on_result(result(m, ok, true, json!(1)), Utc::now())
            .unwrap();
    }
    e.fire_due(Utc::now().timestamp_millis() + 60_000);
    let again = dispatched(&mut e);
    assert_eq!(ids(&again), ["resize[0]"]);
    assert_eq!(again[0].attempt, 2);
    e.on_result(result(&again[0], false, true, json!(null)), Utc::now())
        .unwrap();
    let r = final_report(&mut e);
    assert_eq!(r.status, WorkflowStatus::Failed, "{r:?}");
    assert_eq!(r.tasks["resize"].state, TaskState::Failed);
    assert!(
        r.tasks["resize"]
            .error
            .as_ref()
            .unwrap()
            .message
            .contains("resize[0]")
    );
    assert_eq!(r.tasks["reduce"].state, TaskState::Skipped);
}

#[test]
fn a_restore_in_the_middle_of_a_map_runs_what_is_left() {
    let body = list_map_reduce(json!(["a", "b", "c"]));
    // One key for both engines, as the store gives every session its own.
    let key = crate::attempt_key::AttemptKey::random();
    let keyed = || {
        Engine::new(
            EngineConfig {
                attempt_key: key.clone(),
                ..config(10)
            },
            Arc::default(),
        )
    };
    let mut e = keyed();
    submit(&mut e, body.clone());
    let mut ops = Vec::new();
    let mut step = |e: &mut Engine| {
        e.dispatch(Utc::now());
        let (more, out) = e.take_batch();
        ops.extend(more);
        out.iter()
            .filter(|(_, m)| m.kind == crate::batch::OutKind::Task)
            .map(|(_, m)| serde_json::from_slice::<TaskMessage>(&m.body).unwrap())
            .collect::<Vec<_>>()
    };
    let list = step(&mut e);
    e.on_result(
        result(&list[0], true, false, list[0].input.clone()),
        Utc::now(),
    )
    .unwrap();
    let instances = step(&mut e);
    e.on_result(result(&instances[1], true, false, json!("B")), Utc::now())
        .unwrap();
    step(&mut e);
    let rows = stored_rows(ops);
    assert_eq!(rows["resize"].state, TaskState::Mapped);
    let mut restored = keyed();
    restore_from(&mut restored, "lmr", &body, rows);
    // resize[0] and resize[2] were running: their leases stand; their
    // results are taken.
    for m in instances.iter().filter(|m| m.task_id != "resize[1]") {
        let out = json!(m.input["file"].as_str().unwrap().to_uppercase());
        restored
            .on_result(result(m, true, false, out), Utc::now())
            .unwrap();
    }
    let reduce = echo(&mut restored);
    assert_eq!(reduce[0].input, json!({"all": ["A", "B", "C"]}));
    assert_eq!(
        final_report(&mut restored).status,
        WorkflowStatus::Succeeded
    );
}

#[test]
fn the_instances_of_a_cleanup_map_run_after_a_failure() {
    let mut e = engine(10);
    submit(
        &mut e,
        json!({"id": "c", "input": {"items": ["x", "y"]}, "tasks": [
            {"id": "work", "type": "echo"},
            {"id": "clean", "type": "echo", "depends_on": ["work"], "run_if": "all_done",
             "map": "${workflow.input.items}", "input": "${item}"}
        ]}),
    );
    let work = dispatched(&mut e);
    e.on_result(result(&work[0], false, false, json!(null)), Utc::now())
        .unwrap();
    let cleaners = echo(&mut e);
    assert_eq!(ids(&cleaners), ["clean[0]", "clean[1]"]);
    let r = final_report(&mut e);
    assert_eq!(r.status, WorkflowStatus::Failed);
    assert_eq!(r.tasks["clean"].output, Some(json!(["x", "y"])));
}

#[test]
fn a_cancel_ends_the_mapped_task_cancelled_and_collected_outputs_are_bounded() {
    let mut e = engine(10);
    submit(&mut e, list_map_reduce(json!(["a", "b"])));
    echo(&mut e);
    dispatched(&mut e);
    e.cancel("lmr", Utc::now()).expect("running");
    let (_, out) = e.take_batch();
    let r = super::tests::final_report_in(&out);
    assert_eq!(r.tasks["resize"].state, TaskState::Cancelled, "{r:?}");
    assert_eq!(r.tasks["resize[1]"].state, TaskState::Cancelled);

    // Outputs of 2 × 60 bytes do not fit a 100-byte input.
    let mut c = config(10);
    c.bounds.max_task_input_bytes = 100;
    let mut e = Engine::new(c, Arc::default());
    submit(&mut e, list_map_reduce(json!(["a", "b"])));
    echo(&mut e);
    for m in dispatched(&mut e) {
        e.on_result(result(&m, true, false, json!("x".repeat(60))), Utc::now())
            .unwrap();
    }
    let r = final_report(&mut e);
    assert_eq!(r.status, WorkflowStatus::Failed);
    let error = r.tasks["resize"].error.clone().unwrap();
    assert!(
        error.message.contains("WARREN_MAX_TASK_INPUT_BYTES"),
        "{error:?}"
    );
}

#[test]
fn a_restore_after_the_map_ended_keeps_its_instances() {
    let body = list_map_reduce(json!(["a", "b"]));
    let mut e = engine(10);
    submit(&mut e, body.clone());
    let mut ops = Vec::new();
    for _ in 0..2 {
        e.dispatch(Utc::now());
        let (more, out) = e.take_batch();
        ops.extend(more);
        for (_, m) in out
            .iter()
            .filter(|(_, m)| m.kind == crate::batch::OutKind::Task)
        {
            let m: TaskMessage = serde_json::from_slice(&m.body).unwrap();
            e.on_result(result(&m, true, false, m.input.clone()), Utc::now())
                .unwrap();
        }
    }
    // reduce is ready now; the map has ended.
    let (more, _) = e.take_batch();
    ops.extend(more);
    let rows = stored_rows(ops);
    let mut restored = engine(10);
    restore_from(&mut restored, "lmr", &body, rows);
    let report = restored.report("lmr").expect("running");
    assert_eq!(report.tasks["resize"].state, TaskState::Succeeded);
    assert_eq!(
        report.tasks["resize[1]"].state,
        TaskState::Succeeded,
        "{report:?}"
    );
    assert_eq!(ids(&echo(&mut restored)), ["reduce"]);
    assert_eq!(
        final_report(&mut restored).status,
        WorkflowStatus::Succeeded
    );
}
