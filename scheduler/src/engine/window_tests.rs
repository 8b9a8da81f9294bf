//! Unit tests of the dispatch windows (`window.rs`): fixed, or following
//! the capacity the session hands over from the workers' heartbeats.

use super::tests::{config, dispatched, engine, result, submit};
use super::*;
use serde_json::{Value, json};
use warren_shared::wire::{TaskMessage, TaskResult};

/// A workflow `id` of `n` independent tasks on queue `queue`.
fn independent(id: &str, queue: &str, n: usize) -> Value {
    let tasks: Vec<Value> = (0..n)
        .map(|i| json!({"id": format!("t{i}"), "type": "echo", "queue": queue}))
        .collect();
    json!({"id": id, "tasks": tasks})
}

fn capacity(pairs: &[(&str, u64)]) -> HashMap<String, u64> {
    pairs.iter().map(|(q, c)| ((*q).to_owned(), *c)).collect()
}

/// Answers each of `msgs` with a success.
fn answer(e: &mut Engine, msgs: &[TaskMessage]) {
    for m in msgs {
        e.on_result(result(m, true, false, json!(null)), Utc::now())
            .expect("the attempt's token");
    }
}

#[test]
fn the_adaptive_window_is_the_capacity_within_the_cap() {
    let check = |capacity: u64, expected: usize| {
        assert_eq!(
            adaptive_window(capacity, None),
            expected,
            "capacity {capacity}"
        );
    };
    check(0, DEFAULT_WINDOW);
    check(1, 1);
    check(4, 4);
    check(256, 256);
    check(9_999, 9_999);
    check(MAX_WINDOW as u64 + 1, MAX_WINDOW);
    check(MAX_WINDOW as u64, MAX_WINDOW);
    check(u64::from(u32::MAX) * 10_000, MAX_WINDOW);
    check(u64::MAX, MAX_WINDOW);
}

#[test]
fn without_capacity_a_queue_has_the_fixed_default() {
    let mut e = Engine::new(EngineConfig::default(), Arc::default());
    submit(&mut e, independent("w", "default", 300));
    // Another queue's capacity changes nothing here.
    assert!(!e.set_capacities(capacity(&[("gpu", 4)])));
    assert_eq!(dispatched(&mut e).len(), DEFAULT_WINDOW);
    assert_eq!(e.window("default"), DEFAULT_WINDOW);
    assert_eq!(e.window("gpu"), 4);
    // A queue whose workers all went (absent, or 0) is back to the default.
    e.set_capacities(capacity(&[("default", 4)]));
    assert_eq!(e.window("default"), 4);
    e.set_capacities(capacity(&[("default", 0)]));
    assert_eq!(e.window("default"), DEFAULT_WINDOW);
    e.set_capacities(HashMap::new());
    assert_eq!(e.window("gpu"), DEFAULT_WINDOW);
}

#[test]
fn the_window_follows_the_capacity_and_growth_dispatches() {
    let mut e = engine(200);
    submit(&mut e, independent("w", "default", 100));
    // Known before the first dispatch: 8 slots, window 8.
    assert!(
        !e.set_capacities(capacity(&[("default", 8)])),
        "from the default 200 down to 8: nothing more to dispatch"
    );
    let first = dispatched(&mut e);
    assert_eq!(first.len(), 8);
    assert_eq!(e.window_by_queue(), BTreeMap::from([("default".into(), 8)]));
    assert!(dispatched(&mut e).is_empty(), "the window is full");
    // A second worker of 8 slots: 16 slots, window 16. The engine says
    // so, and the next dispatch fills the window without any result.
    assert!(e.set_capacities(capacity(&[("default", 16)])));
    let more = dispatched(&mut e);
    assert_eq!(more.len(), 8);
    assert_eq!(e.in_flight_by_queue()["default"], 16);
    // The same capacity again, or a larger one over a queue with nothing
    // ready, is no reason to dispatch.
    assert!(!e.set_capacities(capacity(&[("default", 16)])));
    let mut idle = engine(200);
    submit(&mut idle, independent("i", "default", 2));
    assert_eq!(dispatched(&mut idle).len(), 2);
    assert!(!idle.set_capacities(capacity(&[("default", 64)])));
}

#[test]
fn a_shrinking_window_strands_nothing() {
    let mut e = engine(200);
    submit(&mut e, independent("w", "default", 30));
    e.set_capacities(capacity(&[("default", 16)]));
    let running = dispatched(&mut e);
    assert_eq!(running.len(), 16);
    // The second worker goes: 4 slots, window 4, 16 in flight.
    assert!(!e.set_capacities(capacity(&[("default", 4)])));
    assert!(dispatched(&mut e).is_empty(), "over the window: none more");
    // The tasks in flight are answered as before; the queue dispatches
    // again once fewer than 4 are in flight.
    answer(&mut e, &running[..12]);
    assert!(
        dispatched(&mut e).is_empty(),
        "4 in flight: the window is full"
    );
    answer(&mut e, &running[12..13]);
    let next = dispatched(&mut e);
    assert_eq!(next.len(), 1);
    answer(&mut e, &running[13..]);
    let mut pending = next;
    pending.extend(dispatched(&mut e));
    assert_eq!(pending.len(), 4);
    // And the workflow runs to its end, each task once.
    let mut done = running.len();
    while !pending.is_empty() {
        assert!(pending.len() <= 4);
        answer(&mut e, &pending);
        done += pending.len();
        pending = dispatched(&mut e);
    }
    assert_eq!(done, 30);
    assert!(!e.is_active("w"));
}

#[test]
fn an_explicit_window_wins_over_any_capacity() {
    let mut e = Engine::new(
        EngineConfig {
            adapt_window: false,
            ..config(3)
        },
        Arc::default(),
    );
    submit(&mut e, independent("w", "default", 20));
    assert!(!e.set_capacities(capacity(&[("default", 100)])));
    assert_eq!(e.window("default"), 3);
    assert_eq!(dispatched(&mut e).len(), 3);
    assert!(!e.set_capacities(capacity(&[("default", 1)])));
    assert_eq!(e.window("default"), 3);
}

#[test]
fn a_forged_concurrency_moves_the_window_only_up_to_the_cap() {
    let mut e = engine(200);
    submit(&mut e, independent("w", "default", MAX_WINDOW + 50));
    assert!(e.set_capacities(capacity(&[("default", u64::from(u32::MAX) * 10_000)])));
    assert_eq!(e.window("default"), MAX_WINDOW);
    assert_eq!(dispatched(&mut e).len(), MAX_WINDOW);
}

#[test]
fn growth_over_a_paused_queue_does_not_ask_for_a_dispatch() {
    let mut e = engine(200);
    submit(&mut e, independent("w", "default", 20));
    e.set_capacities(capacity(&[("default", 8)]));
    assert_eq!(dispatched(&mut e).len(), 8);
    e.set_pauses(&[crate::pauses::Pause {
        kind: crate::pauses::PauseKind::Queue,
        name: "default".into(),
        since: Utc::now(),
    }]);
    assert!(!e.set_capacities(capacity(&[("default", 16)])));
    assert!(dispatched(&mut e).is_empty());
}

#[test]
fn a_large_pool_of_short_tasks_gets_what_its_pipeline_uses() {
    let check = |capacity: u64, share: f64, expected: usize| {
        assert_eq!(
            adaptive_window(capacity, Some(share)),
            expected,
            "capacity {capacity}, busy {share}"
        );
    };
    // Small pools keep their capacity whatever their tasks.
    check(4, 0.0, 4);
    check(PIPELINE as u64, 0.01, PIPELINE);
    // Tasks running half their round trip or more: the whole capacity.
    check(256, 0.5, 256);
    check(256, 1.0, 256);
    check(20_000, 0.9, MAX_WINDOW);
    // Short ones: twice what runs, at least the pipeline's need.
    check(256, 0.001, PIPELINE);
    check(1_000, 0.1, 200);
    check(1_000, 0.25, 500);
    // Nonsense shares are read within 0 to 1.
    check(256, f64::NAN, PIPELINE);
    check(256, -1.0, PIPELINE);
    check(256, 7.0, 256);
}

/// A result of `m` that ran from `start` to `end` ms after `t0`.
fn timed(m: &TaskMessage, t0: DateTime<Utc>, start: i64, end: i64) -> TaskResult {
    let at = |ms| t0 + chrono::TimeDelta::milliseconds(ms);
    TaskResult {
        started_at: Some(at(start)),
        finished_at: Some(at(end)),
        ..result(m, true, false, json!(null))
    }
}

#[test]
fn the_window_of_a_large_pool_follows_how_long_its_tasks_run() {
    let t0 = Utc::now();
    let at = |ms| t0 + chrono::TimeDelta::milliseconds(ms);
    let mut e = engine(200);
    submit(&mut e, independent("w", "default", 2_000));
    e.set_capacities(capacity(&[("default", 1_000)]));
    e.dispatch(t0);
    let (_, out) = e.take_batch();
    let first: Vec<TaskMessage> = out
        .iter()
        .filter(|(_, m)| m.kind == crate::batch::OutKind::Task)
        .map(|(_, m)| serde_json::from_slice(&m.body).unwrap())
        .collect();
    assert_eq!(first.len(), 1_000, "no result yet: the whole capacity");
    // Each ran 0.1 ms of a 20 ms round trip: the pipeline is what limits.
    for m in &first[..100] {
        e.on_result(timed(m, t0, 10, 10), at(20)).unwrap();
    }
    assert_eq!(e.window("default"), PIPELINE);
    assert_eq!(e.window_by_queue()["default"], PIPELINE as u64);
    assert!(
        dispatched(&mut e).is_empty(),
        "900 in flight, over the window"
    );
    // Tasks that run most of their round trip: the whole capacity again
    // (the averages move a thirty-second of the way per result).
    for m in &first[100..400] {
        e.on_result(timed(m, t0, 1, 19), at(20)).unwrap();
    }
    assert_eq!(e.window("default"), 1_000);
    assert_eq!(dispatched(&mut e).len(), 400, "600 in flight, window 1,000");
}
