//! Unit tests of queued workflows (`queued.rs`): accepted and committed
//! when the working set has no room, started in priority order, then in
//! order of arrival, as room frees; cancelled, answered, restored and
//! expired while they wait.

use super::tests::{config, dispatched, result};
use super::*;
use crate::{
    batch::{OutKind, QueuedWorkflow},
    validate::{self, Limits},
};
use serde_json::{Value, json};

/// An engine whose working set holds `max_active_tasks` tasks.
fn budgeted(max_active_tasks: usize) -> Engine {
    let cfg = EngineConfig {
        bounds: Bounds {
            max_active_tasks,
            ..Bounds::default()
        },
        ..config(1_000)
    };
    Engine::new(cfg, Arc::default())
}

/// A workflow of `n` independent tasks at `priority`.
fn wide(id: &str, n: usize, priority: u8) -> Value {
    let tasks: Vec<Value> = (0..n)
        .map(|i| json!({"id": format!("t{i}"), "type": "echo"}))
        .collect();
    json!({"id": id, "priority": priority, "tasks": tasks})
}

fn accept_at(e: &mut Engine, body: &Value, now: DateTime<Utc>) {
    let bytes = body.to_string().into_bytes();
    let v = validate::validate(&bytes, None, &Limits::default(), || "gen".into()).unwrap();
    e.accept(v, Arc::from(bytes), None, now);
}

fn accept(e: &mut Engine, body: &Value) {
    accept_at(e, body, Utc::now());
}

/// What the loop does at the start of a step: takes what fits and starts
/// it from its definition (here the request body, as the store keeps it).
fn start_what_fits(e: &mut Engine, bodies: &[&Value]) -> Vec<String> {
    let taken = e.take_startable(1_000);
    for id in &taken {
        let body = bodies
            .iter()
            .find(|b| b["id"] == **id)
            .expect("a known body");
        let bytes = body.to_string().into_bytes();
        let v = validate::validate_stored(&bytes, id).unwrap();
        e.start_unstarted(v, &bytes, Utc::now());
    }
    taken.iter().map(|id| id.to_string()).collect()
}

/// Runs every task dispatched now to success.
fn finish_dispatched(e: &mut Engine) {
    for m in dispatched(e) {
        e.on_result(result(&m, true, false, json!(1)), Utc::now())
            .expect("the attempt's token");
    }
}

#[test]
fn past_its_prioritys_share_a_workflow_is_committed_queued_and_answered() {
    // 10 tasks; priority 0 may fill 82 % of it: 8.
    let mut e = budgeted(10);
    accept(&mut e, &wide("a", 4, 0));
    accept(&mut e, &wide("b", 4, 0));
    assert!(e.is_active("a") && e.is_active("b"));
    e.take_batch();
    accept(&mut e, &wide("c", 1, 0));
    assert!(e.is_queued("c") && !e.is_active("c"), "8 + 1 > 8");
    let (ops, out) = e.take_batch();
    let report = ops
        .iter()
        .find_map(|op| match op {
            Op::InsertWorkflow {
                id,
                status: WorkflowStatus::Queued,
                report: Some(r),
                definition: Some(_),
                ..
            } if &**id == "c" => Some(serde_json::from_str::<WorkflowReport>(r).unwrap()),
            _ => None,
        })
        .expect("committed queued, with its definition and report");
    assert_eq!(
        queued_tasks(&report),
        1,
        "the stored report counts its tasks"
    );
    assert!(
        out.iter()
            .any(|(_, m)| m.routing_key == "workflow.c.queued")
    );
    assert!(out.iter().all(|(_, m)| m.kind != OutKind::Task));
    let status = e.unstarted_status("c").unwrap();
    assert_eq!(status.status, WorkflowStatus::Queued);
    assert_eq!(status.task_counts[&TaskState::Pending], 1);
    assert_eq!(e.queued_len(), 1);
    assert!(!e.has_startable(), "no room yet");
    assert!(e.take_startable(10).is_empty());
}

#[test]
fn an_urgent_workflow_starts_at_once_in_front_of_a_queued_backlog() {
    let mut e = budgeted(100);
    let mut bodies = Vec::new();
    for i in 0..30 {
        bodies.push(wide(&format!("low{i}"), 10, 0));
    }
    for b in &bodies {
        accept(&mut e, b);
    }
    // 82 of 100 for priority 0: eight of ten tasks each.
    assert_eq!(e.active_workflows(), 8);
    assert_eq!(e.queued_len(), 22);
    accept(&mut e, &wide("urgent", 10, 9));
    assert!(e.is_active("urgent"), "priority 9 has the whole budget");
    // A second priority-0 submission still waits behind the backlog.
    accept(&mut e, &wide("late", 1, 0));
    assert!(e.is_queued("late"));
}

#[test]
fn the_line_goes_by_priority_then_arrival_and_a_large_head_waits_for_its_room() {
    let mut e = budgeted(10);
    let run = wide("run", 8, 0);
    let q = [
        wide("p0-first", 2, 0),
        wide("p5", 2, 5),
        wide("p0-second", 2, 0),
        wide("p5-big", 9, 5),
    ];
    accept(&mut e, &run);
    for b in &q {
        accept(&mut e, b);
    }
    // Priority 5 may fill 92 % of 10: 9, and "run" holds 8.
    assert!(e.is_queued("p5"));
    let mut bodies: Vec<&Value> = q.iter().collect();
    bodies.push(&run);
    let mut order: Vec<String> = Vec::new();
    // Run everything as it starts; record the order of starts.
    for _ in 0..10 {
        finish_dispatched(&mut e);
        order.extend(start_what_fits(&mut e, &bodies));
        if e.queued_len() == 0 && e.active_workflows() == 0 {
            break;
        }
    }
    assert_eq!(
        order,
        ["p5", "p5-big", "p0-first", "p0-second"],
        "priority first, then arrival; the big one at the head waits for room, holding the line"
    );
}

#[test]
fn a_queued_workflow_starts_as_accepted_its_start_its_created_at() {
    let mut e = budgeted(1);
    accept(&mut e, &wide("first", 1, 0));
    let accepted = Utc::now() - chrono::Duration::seconds(5);
    let second = wide("second", 1, 0);
    accept_at(&mut e, &second, accepted);
    assert!(e.is_queued("second"));
    e.take_batch();
    finish_dispatched(&mut e);
    assert!(!e.is_active("first"));
    assert!(e.has_startable());
    assert_eq!(
        e.unstarted_status("second").unwrap().created_at,
        Some(accepted),
        "while queued, created_at is its acceptance"
    );
    let before = Utc::now();
    assert_eq!(start_what_fits(&mut e, &[&second]), ["second"]);
    let (ops, out) = e.take_batch();
    let started = ops
        .iter()
        .find_map(|op| match op {
            Op::StartWorkflow { id, started_at } if &**id == "second" => Some(*started_at),
            _ => None,
        })
        .expect("its row becomes running");
    assert!(started >= before, "created_at becomes its start: {started}");
    assert!(
        out.iter()
            .any(|(_, m)| m.routing_key == "workflow.second.running")
    );
    assert_eq!(e.report("second").unwrap().created_at, Some(started));
    assert!(!e.is_queued("second"));
    assert_eq!(dispatched(&mut e).len(), 1);
}

#[test]
fn a_queued_workflow_is_cancelled_without_running_and_its_duplicate_waits_with_it() {
    let mut e = budgeted(1);
    accept(&mut e, &wide("first", 1, 0));
    accept(&mut e, &wide("q", 1, 0));
    let dup = crate::batch::ReplyTo {
        queue: "amq.gen-dup".into(),
        correlation_id: None,
    };
    e.add_waiter("q", dup.clone());
    e.take_batch();
    let report = e.cancel_unstarted("q", Utc::now()).unwrap();
    assert_eq!(report.status, WorkflowStatus::Cancelled);
    assert!(!e.is_queued("q"));
    let (ops, out) = e.take_batch();
    assert!(ops.iter().any(|op| matches!(op, Op::FinishWorkflow { id, status: WorkflowStatus::Cancelled, .. } if &**id == "q")));
    assert!(
        out.iter()
            .any(|(_, m)| m.kind == OutKind::Reply && m.routing_key == dup.queue),
        "the duplicate's waiter is answered"
    );
    finish_dispatched(&mut e);
    assert!(
        e.take_startable(10).is_empty(),
        "its place in line is dropped"
    );
}

#[test]
fn restored_queued_workflows_start_in_their_order() {
    let mut e = budgeted(4);
    let created_at = Utc::now();
    let bodies = [wide("w2", 3, 0), wide("w1", 3, 0)];
    for (seq, id) in [(2, "w2"), (1, "w1")] {
        e.restore_queued(QueuedWorkflow {
            id: id.into(),
            name: None,
            priority: 0,
            seq,
            tasks: 3,
            bytes: 100,
            created_at,
            replies: Vec::new(),
        });
    }
    assert!(e.is_queued("w1") && e.is_queued("w2"));
    let refs: Vec<&Value> = bodies.iter().collect();
    assert_eq!(start_what_fits(&mut e, &refs), ["w1"], "3 + 3 > 4");
    finish_dispatched(&mut e);
    assert_eq!(start_what_fits(&mut e, &refs), ["w2"]);
}

#[test]
fn a_queued_workflow_whose_expiry_passes_is_rejected_not_run_late() {
    let mut e = budgeted(1);
    accept(&mut e, &wide("first", 1, 0));
    let body = json!({"id": "q", "expires_at": (Utc::now() + chrono::Duration::milliseconds(50)).to_rfc3339(),
        "tasks": [{"id": "a", "type": "echo"}]});
    accept(&mut e, &body);
    assert!(e.is_queued("q"));
    e.take_batch();
    finish_dispatched(&mut e);
    e.take_batch();
    let taken = e.take_startable(10);
    assert_eq!(taken.len(), 1);
    let bytes = body.to_string().into_bytes();
    let v = validate::validate_stored(&bytes, "q").unwrap();
    e.start_unstarted(v, &bytes, Utc::now() + chrono::Duration::seconds(1));
    let (_, out) = e.take_batch();
    let r: WorkflowReport = serde_json::from_slice(
        &out.iter()
            .find(|(_, m)| m.routing_key == "workflow.q.rejected")
            .expect("rejected")
            .1
            .body,
    )
    .unwrap();
    assert_eq!(r.errors[0].code, "expired");
    assert!(!e.is_active("q") && !e.is_queued("q"));
}

#[test]
fn a_delayed_workflow_that_falls_due_without_room_is_queued() {
    let mut e = budgeted(1);
    accept(&mut e, &wide("first", 1, 0));
    let body = json!({"id": "later", "delay_ms": 1_000, "tasks": [{"id": "a", "type": "echo"}]});
    let now = Utc::now();
    accept_at(&mut e, &body, now);
    assert!(e.is_scheduled("later"));
    let due = e.take_due_starts(now.timestamp_millis() + 1_000, 10);
    assert_eq!(due.len(), 1);
    let bytes = body.to_string().into_bytes();
    e.start_unstarted(
        validate::validate_stored(&bytes, "later").unwrap(),
        &bytes,
        Utc::now(),
    );
    assert!(e.is_queued("later") && !e.is_scheduled("later"));
    let (ops, _) = e.take_batch();
    assert!(
        ops.iter().any(|op| matches!(op, Op::QueueWorkflow { id, report } if &**id == "later" && report.contains("queued"))),
        "its row becomes queued: {ops:?}"
    );
    finish_dispatched(&mut e);
    assert_eq!(start_what_fits(&mut e, &[&body]), ["later"]);
    assert!(e.is_active("later"));
}

#[test]
fn past_the_lines_bound_the_engine_says_it_is_full() {
    let cfg = EngineConfig {
        bounds: Bounds {
            max_active_tasks: 1,
            max_queued_workflows: 2,
            ..Bounds::default()
        },
        ..config(1_000)
    };
    let mut e = Engine::new(cfg, Arc::default());
    accept(&mut e, &wide("run", 1, 0));
    accept(&mut e, &wide("q1", 1, 0));
    assert!(!e.queue_full());
    accept(&mut e, &wide("q2", 1, 0));
    assert!(e.queue_full());
}

#[test]
fn a_started_queued_workflow_restored_keeps_its_deadline_from_its_start() {
    let mut e = budgeted(1);
    accept(&mut e, &wide("first", 1, 0));
    let accepted = Utc::now() - chrono::Duration::seconds(60);
    let body = json!({"id": "q", "deadline_ms": 10_000, "tasks": [{"id": "a", "type": "echo"}]});
    accept_at(&mut e, &body, accepted);
    assert!(e.is_queued("q"));
    e.take_batch();
    finish_dispatched(&mut e);
    assert_eq!(start_what_fits(&mut e, &[&body]), ["q"]);
    let (ops, _) = e.take_batch();
    let started = ops
        .iter()
        .find_map(|op| match op {
            Op::StartWorkflow { id, started_at } if &**id == "q" => Some(*started_at),
            _ => None,
        })
        .unwrap();
    e.fire_due(started.timestamp_millis() + 1_000);
    assert!(e.is_active("q"), "within its deadline");
    // A restart rebuilds it from its row, whose created_at is its start.
    let mut r = budgeted(1);
    r.restore(crate::batch::RunningWorkflow {
        id: "q".into(),
        seq: 2,
        definition: body.to_string().into_bytes(),
        created_at: started,
        tasks: Vec::new(),
        replies: Vec::new(),
        runs: Vec::new(),
    })
    .unwrap();
    r.fire_due(started.timestamp_millis() + 1_000);
    assert!(r.is_active("q"), "restored, still within its deadline");
    r.fire_due(started.timestamp_millis() + 10_001);
    assert!(
        !r.is_active("q"),
        "its deadline passes 10 s after its start"
    );
}

#[test]
fn queued_workflows_start_only_within_max_queues_and_keep_their_places() {
    let cfg = EngineConfig {
        bounds: Bounds {
            max_active_tasks: 10,
            max_queues: 2,
            ..Bounds::default()
        },
        ..config(1_000)
    };
    let mut e = Engine::new(cfg, Arc::default());
    let on = |id: &str, n: usize, queue: &str| -> Value {
        let tasks: Vec<Value> = (0..n)
            .map(|i| json!({"id": format!("t{i}"), "type": "echo", "queue": queue}))
            .collect();
        json!({"id": id, "tasks": tasks})
    };
    let (w0, w1, w2, w3) = (
        on("w0", 4, "a"),
        on("w1", 4, "a"),
        on("w2", 1, "b"),
        on("w3", 1, "c"),
    );
    for w in [&w0, &w1, &w2, &w3] {
        accept(&mut e, w);
    }
    assert!(e.is_queued("w2") && e.is_queued("w3"));
    for m in dispatched(&mut e) {
        if m.workflow_id == "w1" {
            e.on_result(result(&m, true, false, json!(1)), Utc::now())
                .unwrap();
        }
    }
    assert!(!e.is_active("w1") && e.is_active("w0"));
    let bodies = [&w2, &w3];
    start_what_fits(&mut e, &bodies);
    assert!(e.is_active("w2"), "a and b: within 2");
    assert!(e.is_queued("w3"), "c would make 3 queues: back in line");
    assert!(e.queue_users.len() <= 2, "{:?}", e.queue_users.keys());
    assert!(!e.has_startable(), "the line waits for a workflow to end");
    accept(&mut e, &on("w4", 1, "a"));
    assert!(e.is_queued("w4"), "behind w3: order is kept");
    // w2 ends: its queue frees, w3 starts, then w4.
    for m in dispatched(&mut e) {
        if m.workflow_id == "w2" {
            e.on_result(result(&m, true, false, json!(1)), Utc::now())
                .unwrap();
        }
    }
    assert!(e.has_startable());
    let w4 = on("w4", 1, "a");
    assert_eq!(start_what_fits(&mut e, &[&w2, &w3, &w4]), ["w3", "w4"]);
    assert!(e.is_active("w3") && e.is_active("w4"));
}

#[test]
fn cancelled_queued_workflows_do_not_pile_up_in_the_line() {
    let mut e = budgeted(1);
    accept(&mut e, &wide("first", 1, 0));
    accept(&mut e, &wide("head", 1, 0));
    for i in 0..10_000 {
        let id = format!("q{i}");
        accept(&mut e, &wide(&id, 1, 0));
        e.cancel_unstarted(&id, Utc::now()).unwrap();
        e.take_batch();
    }
    assert_eq!(e.queued_len(), 1);
    assert!(
        e.line.len() <= 2 * e.queued_len() + 64,
        "the line holds {} entries for {} queued workflow(s)",
        e.line.len(),
        e.queued_len()
    );
}
