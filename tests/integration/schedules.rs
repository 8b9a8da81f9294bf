//! Schedules (issue 17): the `schedule.*` control requests, firings that
//! happen exactly once per slot across a killed scheduler (and, on
//! PostgreSQL, when the scheduler firing a schedule is killed and another
//! takes its partition over), and the overlap policies.

use crate::{
    control::held,
    support::{
        DEADLINE, Env, RunningScheduler, committed_results, pg_url, wait_until, wait_until_async,
    },
};
use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use std::{collections::BTreeMap, sync::atomic::Ordering, time::Duration};
use warren_producer::ClientError;
use warren_scheduler::{
    Metrics,
    store::{Store, StoreLocation},
};
use warren_shared::wire::{ControlKind, ScheduleReport, ScheduleSpec, WorkflowStatus};

fn spec(v: Value) -> ScheduleSpec {
    serde_json::from_value(v).expect("a schedule")
}

async fn get(env: &Env, id: &str) -> ScheduleReport {
    env.client
        .schedule(ControlKind::ScheduleGet, id, DEADLINE)
        .await
        .expect("an answer")
}

/// Waits until schedule `id` has fired at least `n` times.
async fn fired_at_least(env: &Env, id: &str, n: u64) {
    wait_until_async(&format!("{id} to fire {n} times"), || async move {
        get(env, id).await.schedule.is_some_and(|s| s.fired >= n)
    })
    .await;
}

/// Every workflow the store holds whose id starts with `{schedule}:`, by
/// its firing time, with its status. Opens the store, so on SQLite every
/// scheduler must have stopped.
async fn firings(env: &Env, schedule: &str) -> BTreeMap<DateTime<Utc>, String> {
    let store = Store::connect(&env.store, &env.amqp.namespace)
        .await
        .expect("store");
    let mut out = BTreeMap::new();
    let mut offset = 0;
    loop {
        let page = store.list_workflows(None, 500, offset).await.unwrap();
        if page.is_empty() {
            break;
        }
        offset += page.len() as u32;
        for w in page {
            if let Some(time) = w.workflow_id.strip_prefix(&format!("{schedule}:")) {
                let at = DateTime::parse_from_rfc3339(time)
                    .expect("a firing time")
                    .to_utc();
                assert!(
                    out.insert(at, w.status).is_none(),
                    "two workflows for one firing"
                );
            }
        }
    }
    store.close().await;
    out
}

/// Every slot from the first firing to the last is there, once, and ran:
/// each firing's one task committed exactly one result.
async fn each_slot_once(env: &Env, schedule: &str, every: Duration) -> usize {
    let fired = firings(env, schedule).await;
    let times: Vec<_> = fired.keys().copied().collect();
    for pair in times.windows(2) {
        assert_eq!(
            (pair[1] - pair[0]).to_std().unwrap(),
            every,
            "a slot missing or extra between {} and {}",
            pair[0],
            pair[1]
        );
    }
    for (at, status) in &fired {
        let id = warren_scheduler::schedule::firing_workflow_id(schedule, *at);
        assert_eq!(status, "succeeded", "{id}");
        let results = committed_results(env, &id).await;
        assert_eq!(results.len(), 1, "{id}: {results:?}");
    }
    fired.len()
}

fn ticking(id: &str) -> ScheduleSpec {
    spec(json!({
        "id": id, "every_ms": 1000, "overlap": "allow", "catch_up": "all",
        "workflow": {"tasks": [{"id": "a", "type": "echo", "input": {"at": "${schedule.fire_time}"}}]}
    }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_every_second_schedule_fires_each_slot_once_across_a_killed_scheduler() {
    let mut env = Env::new().await;
    let s = env.scheduler(env.scheduler_config());
    env.builtin_worker("w");
    let created = env
        .client
        .schedule_create(ticking("tick"), DEADLINE)
        .await
        .unwrap();
    assert_eq!(created.outcome, "created", "{created:?}");
    fired_at_least(&env, "tick", 3).await;
    s.kill().await;
    // A deliberate outage of a few slots: the firings due meanwhile are
    // caught up (`catch_up: all`) when a scheduler takes the schedule up.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let s = env.scheduler(env.scheduler_config());
    let before = get(&env, "tick").await.schedule.unwrap().fired;
    fired_at_least(&env, "tick", before + 4).await;
    pause_and_drain(&env, "tick", &[&s]).await;
    s.stop().await;
    let n = each_slot_once(&env, "tick", Duration::from_secs(1)).await;
    assert!(n >= 7, "only {n} firings");
    env.finish().await;
}

/// Pauses schedule `id` and waits for every workflow it started to end:
/// its last firing's has (so every earlier request was taken: they share
/// one queue), and no scheduler runs a workflow any more.
async fn pause_and_drain(env: &Env, id: &str, schedulers: &[&RunningScheduler]) {
    let paused = env
        .client
        .schedule(ControlKind::SchedulePause, id, DEADLINE)
        .await
        .unwrap();
    let last = paused.schedule.unwrap().last_workflow_id.unwrap();
    wait_for_end(env, &last).await;
    wait_until("every firing's workflow ended", || {
        schedulers
            .iter()
            .all(|s| Metrics::get(&s.metrics.workflows_running) == 0)
    })
    .await;
}

/// Which of the running schedulers holds (fires) the schedules.
fn firing_one(peers: &[RunningScheduler]) -> Option<usize> {
    peers
        .iter()
        .position(|p| p.metrics.schedules.load(Ordering::Relaxed) > 0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_three_schedulers_the_firing_one_killed_another_fires_each_slot_once() {
    let mut env = Env::new().await;
    env.store = StoreLocation::Postgres(pg_url());
    let config = env.scheduler_config();
    let mut peers: Vec<_> = (0..3).map(|_| env.scheduler(config.clone())).collect();
    wait_until("every scheduler owns partitions", || {
        peers.iter().all(|p| Metrics::get(&p.metrics.active) == 1)
    })
    .await;
    env.builtin_worker("w");
    let created = env
        .client
        .schedule_create(ticking("tick3"), DEADLINE)
        .await
        .unwrap();
    assert_eq!(created.outcome, "created", "{created:?}");
    fired_at_least(&env, "tick3", 3).await;
    let firing = firing_one(&peers).expect("one scheduler holds the schedule");
    assert_eq!(
        peers
            .iter()
            .filter(|p| p.metrics.schedules.load(Ordering::Relaxed) > 0)
            .count(),
        1,
        "exactly one scheduler holds it"
    );
    let before = get(&env, "tick3").await.schedule.unwrap().fired;
    peers.remove(firing).kill().await;
    wait_until("another scheduler takes the schedule up", || {
        firing_one(&peers).is_some()
    })
    .await;
    fired_at_least(&env, "tick3", before + 4).await;
    pause_and_drain(&env, "tick3", &peers.iter().collect::<Vec<_>>()).await;
    for p in peers {
        p.stop().await;
    }
    let n = each_slot_once(&env, "tick3", Duration::from_secs(1)).await;
    assert!(n >= 7, "only {n} firings");
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlap_skip_holds_firings_while_the_previous_one_runs() {
    let mut env = Env::new().await;
    let _s = env.scheduler(env.scheduler_config());
    let mut registry = warren_worker::Registry::with_builtins();
    let (running, most, gate) = held(&mut registry, "slow");
    env.worker(registry, &["default"], 8, "w");
    let created = env
        .client
        .schedule_create(
            spec(json!({
                "id": "slow", "every_ms": 1000,
                "workflow": {"tasks": [{"id": "a", "type": "slow"}]}
            })),
            DEADLINE,
        )
        .await
        .unwrap();
    assert_eq!(created.schedule.as_ref().unwrap().overlap.as_str(), "skip");
    wait_until("the first firing runs", || {
        running.load(Ordering::SeqCst) == 1
    })
    .await;
    // While it runs, the next firings are skipped, and say so.
    wait_until_async("two firings skipped", || async {
        get(&env, "slow")
            .await
            .schedule
            .is_some_and(|s| s.skipped >= 2)
    })
    .await;
    let shown = get(&env, "slow").await.schedule.unwrap();
    assert_eq!(shown.fired, 1, "{shown:?}");
    assert_eq!(shown.last_outcome.as_deref(), Some("skipped"), "{shown:?}");
    // Released, the next firing runs again.
    gate.add_permits(1);
    wait_until_async("a second firing", || async {
        get(&env, "slow")
            .await
            .schedule
            .is_some_and(|s| s.fired >= 2)
    })
    .await;
    gate.add_permits(100);
    assert_eq!(most.load(Ordering::SeqCst), 1, "two firings ran at once");
    env.client
        .schedule(ControlKind::ScheduleDelete, "slow", DEADLINE)
        .await
        .unwrap();
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlap_cancel_previous_cancels_the_running_firing() {
    let mut env = Env::new().await;
    let _s = env.scheduler(env.scheduler_config());
    let mut registry = warren_worker::Registry::with_builtins();
    let (_running, _most, _gate) = held(&mut registry, "slow");
    env.worker(registry, &["default"], 8, "w");
    env.client
        .schedule_create(
            spec(json!({
                "id": "cp", "every_ms": 1000, "overlap": "cancel_previous",
                "workflow": {"tasks": [{"id": "a", "type": "slow"}]}
            })),
            DEADLINE,
        )
        .await
        .unwrap();
    fired_at_least(&env, "cp", 2).await;
    env.client
        .schedule(ControlKind::SchedulePause, "cp", DEADLINE)
        .await
        .unwrap();
    let shown = get(&env, "cp").await.schedule.unwrap();
    // An interval counts from the schedule's creation: the first firing
    // is one interval after it. The second firing cancelled it.
    let first = warren_scheduler::schedule::firing_workflow_id(
        "cp",
        shown.created_at + chrono::Duration::seconds(1),
    );
    let first = wait_for_end(&env, &first).await;
    assert_eq!(first.status, WorkflowStatus::Cancelled, "{first:?}");
    let last = shown.last_workflow_id.expect("a last firing");
    let last = env.client.status(&last, DEADLINE).await.unwrap();
    assert_eq!(last.status, WorkflowStatus::Running, "{last:?}");
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedule_requests_are_answered_with_their_outcome() {
    let mut env = Env::new().await;
    let _s = env.scheduler(env.scheduler_config());
    env.builtin_worker("w");
    let c = env.client.clone();
    let yearly = |id: &str| {
        spec(json!({
            "id": id, "cron": "0 0 1 1 *", "timezone": "Europe/Berlin",
            "workflow": {"input": {"who": "${schedule.id}"}, "tasks": [
                {"id": "a", "type": "echo", "input": {"who": "${schedule.id}", "at": "${schedule.fire_time}"}}
            ]}
        }))
    };
    let created = c.schedule_create(yearly("yearly"), DEADLINE).await.unwrap();
    assert_eq!(created.outcome, "created");
    let shown = created.schedule.unwrap();
    assert_eq!(shown.timezone, "Europe/Berlin");
    assert_eq!(shown.catch_up.as_str(), "latest");
    let next = shown.next_fire_at.expect("a next firing");
    // Midnight on 1 January in Berlin (CET, UTC+1).
    assert_eq!(next.format("%m-%d %H:%M:%S").to_string(), "12-31 23:00:00");
    // The same id again is refused, whatever the definition.
    let again = c.schedule_create(yearly("yearly"), DEADLINE).await.unwrap();
    assert_eq!(again.outcome, "rejected");
    assert_eq!(again.errors[0].code, "schedule_exists");
    // Each problem has its code.
    for (bad, code) in [
        (
            json!({"id": "b", "cron": "61 * * * *", "workflow": {"tasks": [{"id": "a", "type": "echo"}]}}),
            "invalid_cron",
        ),
        (
            json!({"id": "b", "cron": "* * * * *", "timezone": "Europe/Atlantis", "workflow": {"tasks": [{"id": "a", "type": "echo"}]}}),
            "unknown_timezone",
        ),
        (
            json!({"id": "b c", "every_ms": 1000, "workflow": {"tasks": [{"id": "a", "type": "echo"}]}}),
            "invalid_schedule_id",
        ),
        (
            json!({"id": "b", "every_ms": 5, "workflow": {"tasks": [{"id": "a", "type": "echo"}]}}),
            "invalid_schedule",
        ),
        (
            json!({"id": "b", "every_ms": 1000, "workflow": {"tasks": [{"id": "a", "type": "echo", "depends_on": ["x"]}]}}),
            "unknown_dependency",
        ),
    ] {
        let r = c
            .schedule_create(spec(bad.clone()), DEADLINE)
            .await
            .unwrap();
        assert_eq!(r.outcome, "rejected", "{bad}");
        assert_eq!(r.errors[0].code, code, "{bad}: {r:?}");
    }
    // A schedule over 1 MiB is refused, and nothing is stored.
    let huge = json!({"id": "huge", "every_ms": 1000, "workflow": {
        "input": "x".repeat(1100 * 1024), "tasks": [{"id": "a", "type": "echo"}]
    }});
    let r = c.schedule_create(spec(huge), DEADLINE).await.unwrap();
    assert_eq!(r.errors[0].code, "schedule_too_large", "{:?}", r.errors);
    assert_eq!(get(&env, "huge").await.outcome, "not_found");
    // Get shows the workflow; trigger fires it now with the placeholders
    // filled in.
    let got = get(&env, "yearly").await;
    assert_eq!(got.outcome, "found");
    assert!(got.schedule.unwrap().workflow.is_some());
    let triggered = c
        .schedule(ControlKind::ScheduleTrigger, "yearly", DEADLINE)
        .await
        .unwrap();
    assert_eq!(triggered.outcome, "triggered", "{triggered:?}");
    let wf = triggered.workflow_id.expect("the firing's workflow");
    assert!(wf.starts_with("yearly:"), "{wf}");
    let report = wait_for_end(&env, &wf).await;
    assert_eq!(report.status, WorkflowStatus::Succeeded, "{report:?}");
    let output = report.tasks["a"].output.clone().unwrap();
    assert_eq!(output["who"], "yearly");
    let at = DateTime::parse_from_rfc3339(output["at"].as_str().unwrap()).unwrap();
    assert_eq!(
        warren_scheduler::schedule::firing_workflow_id("yearly", at.to_utc()),
        wf
    );
    let after = get(&env, "yearly").await.schedule.unwrap();
    assert_eq!(after.fired, 1);
    assert_eq!(after.last_workflow_id.as_deref(), Some(wf.as_str()));
    assert_eq!(after.last_outcome.as_deref(), Some("succeeded"));
    // Pause and resume; a list pages through in id order.
    let paused = c
        .schedule(ControlKind::SchedulePause, "yearly", DEADLINE)
        .await
        .unwrap();
    assert_eq!(paused.outcome, "paused");
    assert!(paused.schedule.as_ref().unwrap().paused);
    assert!(paused.schedule.unwrap().next_fire_at.is_none());
    let resumed = c
        .schedule(ControlKind::ScheduleResume, "yearly", DEADLINE)
        .await
        .unwrap();
    assert_eq!(resumed.outcome, "resumed");
    assert_eq!(resumed.schedule.unwrap().next_fire_at, Some(next));
    for id in ["a1", "a2"] {
        c.schedule_create(yearly(id), DEADLINE).await.unwrap();
    }
    let page = c.schedule_list(None, Some(2), DEADLINE).await.unwrap();
    let ids: Vec<_> = page.schedules.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(ids, ["a1", "a2"]);
    let rest = c
        .schedule_list(page.next_after.as_deref(), Some(2), DEADLINE)
        .await
        .unwrap();
    let ids: Vec<_> = rest.schedules.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(ids, ["yearly"]);
    assert!(rest.next_after.is_none());
    // Delete; then it is gone.
    let deleted = c
        .schedule(ControlKind::ScheduleDelete, "yearly", DEADLINE)
        .await
        .unwrap();
    assert_eq!(deleted.outcome, "deleted");
    assert_eq!(get(&env, "yearly").await.outcome, "not_found");
    for kind in [
        ControlKind::SchedulePause,
        ControlKind::ScheduleTrigger,
        ControlKind::ScheduleDelete,
    ] {
        let r = c.schedule(kind, "yearly", DEADLINE).await.unwrap();
        assert_eq!(r.outcome, "not_found", "{kind:?}");
    }
    // A malformed request is refused as one.
    match c
        .schedule(ControlKind::ScheduleGet, "no spaces allowed", DEADLINE)
        .await
    {
        Err(ClientError::Refused { code, .. }) => assert_eq!(code, "invalid_control"),
        other => panic!("{other:?}"),
    }
    env.finish().await;
}

/// Waits for a workflow to end and returns its report.
async fn wait_for_end(env: &Env, id: &str) -> warren_shared::wire::WorkflowReport {
    let report = std::sync::Arc::new(std::sync::Mutex::new(None));
    wait_until_async(&format!("{id} to end"), || {
        let report = report.clone();
        async move {
            let r = env.client.status(id, DEADLINE).await.unwrap();
            // (Not found until the firing's request is taken.)
            let ended = r.status.is_final() && r.status != WorkflowStatus::NotFound;
            *report.lock().unwrap() = Some(r);
            ended
        }
    })
    .await;
    report.lock().unwrap().take().expect("a report")
}
