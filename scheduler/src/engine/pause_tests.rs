//! Unit tests of paused task queues and types: what is paused holds,
//! everything else flows, a resume releases in the policy's order, and
//! nothing held is forgotten or holds a place of a limited type.

use super::tests::{config, dispatched, engine, result, submit};
use super::*;
use crate::batch::TaskRow;
use crate::pauses::{Pause, PauseKind};
use serde_json::{Value, json};
use warren_shared::wire::TaskMessage;

/// Sets what is paused to `paused`, as the store would hand it over.
fn set(e: &mut Engine, paused: &[(PauseKind, &str)]) -> bool {
    let pauses: Vec<Pause> = paused
        .iter()
        .map(|(kind, name)| Pause {
            kind: *kind,
            name: (*name).into(),
            since: Utc::now(),
        })
        .collect();
    e.set_pauses(&pauses)
}

const Q: PauseKind = PauseKind::Queue;
const T: PauseKind = PauseKind::Type;

fn ids(ms: &[TaskMessage]) -> Vec<String> {
    ms.iter()
        .map(|m| format!("{}/{}", m.workflow_id, m.task_id))
        .collect()
}

fn limited(window: usize, limits: &[(&str, u32)]) -> Engine {
    let config = EngineConfig {
        type_limits: limits.iter().map(|(k, n)| (k.to_string(), *n)).collect(),
        ..config(window)
    };
    Engine::new(config, Arc::default())
}

#[test]
fn a_paused_queue_holds_while_another_flows() {
    let mut e = engine(10);
    set(&mut e, &[(Q, "slow")]);
    submit(
        &mut e,
        json!({"id": "w", "tasks": [
            {"id": "s1", "type": "echo", "queue": "slow"},
            {"id": "s2", "type": "echo", "queue": "slow"},
            {"id": "f", "type": "echo", "queue": "fast"},
            {"id": "after", "type": "echo", "queue": "fast", "depends_on": ["f"]}
        ]}),
    );
    let first = dispatched(&mut e);
    assert_eq!(ids(&first), ["w/f"], "only the queue not paused flows");
    e.on_result(result(&first[0], true, false, json!(1)), Utc::now())
        .unwrap();
    assert_eq!(ids(&dispatched(&mut e)), ["w/after"]);
    let usage = e.pause_usage();
    assert_eq!(usage.len(), 1);
    assert_eq!((usage[0].kind, usage[0].held), (Q, 2), "{usage:?}");
    assert!(
        !set(&mut e, &[(Q, "slow")]),
        "pausing again changes nothing"
    );
    assert!(dispatched(&mut e).is_empty());
    assert!(set(&mut e, &[]), "a resume says so");
    let mut released = ids(&dispatched(&mut e));
    released.sort();
    assert_eq!(released, ["w/s1", "w/s2"]);
    assert!(e.pause_usage().is_empty());
}

#[test]
fn a_paused_type_holds_while_another_type_of_its_queue_flows() {
    let mut e = engine(10);
    set(&mut e, &[(T, "charge")]);
    submit(
        &mut e,
        json!({"id": "w", "tasks": [
            {"id": "c1", "type": "charge"},
            {"id": "c2", "type": "charge"},
            {"id": "m1", "type": "mail"},
            {"id": "m2", "type": "mail"}
        ]}),
    );
    let first = dispatched(&mut e);
    assert!(first.iter().all(|m| m.kind == "mail"), "{:?}", ids(&first));
    assert_eq!(
        first.len(),
        2,
        "the charges do not block the mails behind them"
    );
    assert_eq!(e.pause_usage()[0].held, 2);
    // The same type in another queue is held as well; a queue of the same
    // name is not paused.
    submit(
        &mut e,
        json!({"id": "v", "tasks": [
            {"id": "c", "type": "charge", "queue": "other"},
            {"id": "m", "type": "mail", "queue": "charge"}
        ]}),
    );
    assert_eq!(ids(&dispatched(&mut e)), ["v/m"]);
    set(&mut e, &[]);
    let mut released = ids(&dispatched(&mut e));
    released.sort();
    assert_eq!(released, ["v/c", "w/c1", "w/c2"]);
}

/// Priority first, then the workflows of one priority in turns (in the
/// order their tasks became ready), as if there had been no pause.
#[test]
fn a_resume_releases_in_the_policys_order() {
    for (pause, queue) in [((Q, "q"), "q"), ((T, "t"), "default")] {
        let mut e = engine(100);
        set(&mut e, &[pause]);
        for (id, priority) in [("a", 1), ("b", 9), ("c", 1)] {
            submit(
                &mut e,
                json!({"id": id, "priority": priority, "tasks": [
                    {"id": "x", "type": "t", "queue": queue},
                    {"id": "y", "type": "t", "queue": queue}
                ]}),
            );
        }
        assert!(dispatched(&mut e).is_empty(), "{pause:?}");
        set(&mut e, &[]);
        let order: Vec<String> = dispatched(&mut e)
            .into_iter()
            .map(|m| m.workflow_id)
            .collect();
        assert_eq!(order, ["b", "b", "a", "c", "a", "c"], "{pause:?}");
    }
}

#[test]
fn a_retry_that_falls_due_while_paused_waits() {
    for pause in [(Q, "default"), (T, "echo")] {
        let mut e = engine(10);
        submit(
            &mut e,
            json!({"id": "r", "tasks": [{"id": "a", "type": "echo",
                "retry": {"max_attempts": 2, "backoff_ms": 1, "max_backoff_ms": 1}}]}),
        );
        let a = dispatched(&mut e);
        set(&mut e, &[pause]);
        // The running attempt finishes and its result is applied.
        e.on_result(result(&a[0], false, true, json!(null)), Utc::now())
            .unwrap();
        e.fire_due(Utc::now().timestamp_millis() + 60_000);
        assert!(dispatched(&mut e).is_empty(), "{pause:?}");
        assert_eq!(
            e.report("r").unwrap().tasks["a"].state,
            TaskState::Ready,
            "due, waiting for the resume"
        );
        set(&mut e, &[]);
        let again = dispatched(&mut e);
        assert_eq!(again.len(), 1, "{pause:?}");
        assert_eq!(again[0].attempt, 2);
    }
}

/// A restarted scheduler restores the running workflows and then takes
/// the stored pauses, before its first dispatch (as `session` does).
#[test]
fn a_restored_workflow_stays_paused() {
    let body = json!({"id": "w", "tasks": [
        {"id": "done", "type": "echo"},
        {"id": "q", "type": "echo", "queue": "paused", "depends_on": ["done"]},
        {"id": "t", "type": "charge", "depends_on": ["done"]},
        {"id": "free", "type": "echo", "depends_on": ["done"]},
        {"id": "due", "type": "charge",
         "retry": {"max_attempts": 3, "backoff_ms": 1, "max_backoff_ms": 1}}
    ]});
    let row = |task: &str, state, attempt, due_at_ms| TaskRow {
        workflow_id: Arc::from("w"),
        task_id: task.into(),
        state,
        skip_reason: None,
        attempt,
        due_at_ms,
        output: Some("1".into()),
        error: None,
        worker: None,
        started_at: None,
        finished_at: None,
    };
    let mut e = engine(10);
    e.restore(RunningWorkflow {
        id: "w".into(),
        seq: 1,
        definition: body.to_string().into_bytes(),
        created_at: Utc::now(),
        tasks: vec![
            row("done", TaskState::Succeeded, 1, None),
            row("due", TaskState::Retrying, 1, Some(0)),
        ],
        replies: Vec::new(),
        runs: Vec::new(),
    })
    .unwrap();
    set(&mut e, &[(Q, "paused"), (T, "charge")]);
    e.fire_due(Utc::now().timestamp_millis());
    assert_eq!(ids(&dispatched(&mut e)), ["w/free"]);
    set(&mut e, &[(T, "charge")]);
    assert_eq!(ids(&dispatched(&mut e)), ["w/q"]);
    set(&mut e, &[]);
    let mut rest = ids(&dispatched(&mut e));
    rest.sort();
    assert_eq!(rest, ["w/due", "w/t"]);
}

/// A parked task of a limited type whose queue is paused does not keep
/// the type's place from its tasks of other queues.
#[test]
fn a_paused_queue_holds_no_place_of_a_limited_type() {
    let mut e = limited(2, &[("charge", 1)]);
    let one = |e: &mut Engine, id: &str, queue: &str, priority: u8| {
        submit(
            e,
            json!({"id": id, "priority": priority, "tasks": [
                {"id": "c", "type": "charge", "queue": queue}
            ]}),
        );
    };
    one(&mut e, "w3", "q2", 0);
    let w3 = dispatched(&mut e);
    assert_eq!(ids(&w3), ["w3/c"]);
    one(&mut e, "w1", "q1", 9);
    assert!(dispatched(&mut e).is_empty(), "w1 parked at the limit");
    // Two mails fill q1's window.
    submit(
        &mut e,
        json!({"id": "w0", "tasks": [
            {"id": "m1", "type": "mail", "queue": "q1"},
            {"id": "m2", "type": "mail", "queue": "q1"}
        ]}),
    );
    let mails = dispatched(&mut e);
    assert_eq!(mails.len(), 2);
    one(&mut e, "w2", "q2", 0);
    assert!(dispatched(&mut e).is_empty(), "w2 parked at the limit");
    // The place frees: w1 (first by priority) takes it, but its queue is
    // full: it waits there, released, holding the place.
    e.on_result(result(&w3[0], true, false, json!(1)), Utc::now())
        .unwrap();
    assert!(dispatched(&mut e).is_empty());
    // Pausing q1 gives that place back: w2 of q2 runs.
    set(&mut e, &[(Q, "q1")]);
    let w2 = dispatched(&mut e);
    assert_eq!(ids(&w2), ["w2/c"]);
    // w1 waits in its paused queue, holding no place: w2's end frees it
    // for the type's tasks of other queues.
    for m in mails.iter().chain(&w2) {
        e.on_result(result(m, true, false, json!(1)), Utc::now())
            .unwrap();
    }
    assert!(dispatched(&mut e).is_empty());
    one(&mut e, "w4", "q2", 0);
    let w4 = dispatched(&mut e);
    assert_eq!(ids(&w4), ["w4/c"], "the place is free");
    // Resumed, w1 finds the type at its limit and is parked again.
    set(&mut e, &[]);
    assert!(dispatched(&mut e).is_empty(), "w1 waits for w4's place");
    e.on_result(result(&w4[0], true, false, json!(1)), Utc::now())
        .unwrap();
    assert_eq!(ids(&dispatched(&mut e)), ["w1/c"]);
    assert_eq!(e.type_usage()[0].waiting, 0);
}

/// A task parked at its type's limit whose queue is paused meanwhile is
/// not given the next free place: the type's task of another queue is.
#[test]
fn a_parked_task_of_a_paused_queue_takes_no_place() {
    let mut e = limited(10, &[("charge", 1)]);
    let mut w3 = Vec::new();
    for (id, queue, priority) in [("w3", "q2", 0), ("w1", "q1", 9), ("w2", "q2", 0)] {
        submit(
            &mut e,
            json!({"id": id, "priority": priority, "tasks": [
                {"id": "c", "type": "charge", "queue": queue}
            ]}),
        );
        w3.extend(dispatched(&mut e));
    }
    assert_eq!(ids(&w3), ["w3/c"], "w1 and w2 parked");
    set(&mut e, &[(Q, "q1")]);
    e.on_result(result(&w3[0], true, false, json!(1)), Utc::now())
        .unwrap();
    let w2 = dispatched(&mut e);
    assert_eq!(ids(&w2), ["w2/c"], "w1 is first by priority, but paused");
    set(&mut e, &[]);
    assert!(dispatched(&mut e).is_empty(), "w1 is parked again");
    e.on_result(result(&w2[0], true, false, json!(1)), Utc::now())
        .unwrap();
    assert_eq!(ids(&dispatched(&mut e)), ["w1/c"]);
}

/// A workflow that ends while its ready tasks are held drops them: a
/// resume finds nothing of it, and nothing is left held.
#[test]
fn an_ended_workflow_leaves_nothing_held() {
    let mut e = engine(10);
    set(&mut e, &[(Q, "q"), (T, "t")]);
    submit(
        &mut e,
        json!({"id": "w", "tasks": [
            {"id": "a", "type": "x", "queue": "q"},
            {"id": "b", "type": "t"}
        ]}),
    );
    assert!(dispatched(&mut e).is_empty());
    assert_eq!(
        e.pause_usage().iter().map(|u| u.held).collect::<Vec<_>>(),
        [1, 1]
    );
    e.cancel("w", Utc::now()).unwrap();
    assert_eq!(
        e.pause_usage().iter().map(|u| u.held).collect::<Vec<_>>(),
        [0, 0]
    );
    set(&mut e, &[]);
    assert!(dispatched(&mut e).is_empty());
    assert_eq!(e.active_workflows(), 0);
}

/// Random DAGs of limited and unlimited types over two queues, with
/// queues and types paused and resumed at random: nothing paused is
/// dispatched, limits are never exceeded, and once everything is resumed
/// every workflow ends.
#[test]
fn random_pauses_hold_exactly_what_is_paused() {
    let choices = [(Q, "q1"), (Q, "q2"), (T, "a"), (T, "b"), (T, "c")];
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
                        "retry": {"max_attempts": 2, "backoff_ms": 1, "max_backoff_ms": 1},
                    })
                })
                .collect();
            submit(
                &mut e,
                json!({"id": format!("w{w}"), "priority": fastrand::u8(..3), "tasks": tasks}),
            );
        }
        let mut paused: Vec<(PauseKind, &str)> = Vec::new();
        let mut running: Vec<TaskMessage> = Vec::new();
        for step in 0..20_000 {
            if step < 2_000 && fastrand::u8(..8) == 0 {
                let c = choices[fastrand::usize(..choices.len())];
                match paused.iter().position(|p| *p == c) {
                    Some(i) => {
                        paused.swap_remove(i);
                    }
                    None => paused.push(c),
                }
                set(&mut e, &paused);
            } else if step == 2_000 {
                paused.clear();
                set(&mut e, &paused);
            }
            e.fire_due(Utc::now().timestamp_millis() + 60_000);
            let now = dispatched(&mut e);
            for m in &now {
                let queue = e.workflows[m.workflow_id.as_str()].specs
                    [e.workflows[m.workflow_id.as_str()].index[m.task_id.as_str()] as usize]
                    .queue
                    .clone();
                assert!(
                    !paused.contains(&(Q, queue.as_str())) && !paused.contains(&(T, &m.kind)),
                    "seed {seed}: {}/{} dispatched while paused",
                    m.workflow_id,
                    m.task_id
                );
            }
            running.extend(now);
            for (kind, max) in limits {
                let n = running.iter().filter(|m| m.kind == kind).count();
                assert!(n <= max as usize, "seed {seed}: {n} of `{kind}` running");
            }
            if running.is_empty() {
                if step > 2_000 {
                    break;
                }
                continue;
            }
            let m = running.swap_remove(fastrand::usize(..running.len()));
            match fastrand::u8(..50) {
                0 => {
                    let wf = m.workflow_id.clone();
                    e.cancel(&wf, Utc::now());
                    running.retain(|r| r.workflow_id != wf);
                    Ok(())
                }
                1..=5 => e.on_result(result(&m, false, true, json!(null)), Utc::now()),
                _ => e.on_result(result(&m, true, false, json!(1)), Utc::now()),
            }
            .expect("the attempt's token");
        }
        assert_eq!(e.active_workflows(), 0, "seed {seed}: a workflow stalled");
        assert!(e.type_usage().iter().all(|u| u.running == 0));
        assert!(e.pause_usage().is_empty());
    }
}
