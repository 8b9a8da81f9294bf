//! Re-runs against the real broker and store (issue 18, point 4): a
//! failed workflow fixed and re-run from its failed task keeps what
//! succeeded, answers the rerun and the original submitter, keeps each
//! run's history; a rerun survives a killed scheduler mid-run; reruns of
//! a running workflow, of unknown tasks and twice with one `rerun_id`
//! are answered as documented.

use crate::support::{DEADLINE, Env, Log, add_gated, wait_until};
use futures_lite::StreamExt;
use lapin::options::{BasicConsumeOptions, BasicPublishOptions, QueueDeclareOptions};
use serde_json::{Value, json};
use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};
use tokio::sync::Semaphore;
use warren_scheduler::Metrics;
use warren_shared::wire::{TaskState, WorkflowReport, WorkflowStatus};
use warren_worker::{HandlerError, Registry};

/// A registry with `flaky` (fails, not retryable, while `broken` is set;
/// else echoes its input) and `record` (logs each attempt), besides the
/// built-in kinds.
fn registry(broken: &Arc<AtomicBool>, log: &Log, gate: Option<&Arc<Semaphore>>) -> Registry {
    let mut r = Registry::with_builtins();
    add_gated(&mut r, "record", log, "w", None);
    let (broken, log, gate) = (broken.clone(), log.clone(), gate.cloned());
    r.register("flaky", move |ctx| {
        let (broken, log, gate) = (broken.clone(), log.clone(), gate.clone());
        async move {
            log.push(format!(
                "{}/{}/{}@flaky",
                ctx.workflow_id, ctx.task_id, ctx.attempt
            ));
            if let Some(gate) = gate {
                gate.acquire().await.expect("gate open").forget();
            }
            if broken.load(Ordering::SeqCst) {
                return Err(HandlerError::fatal("the service is down"));
            }
            Ok(ctx.input)
        }
    });
    r
}

fn etl(id: &str) -> Value {
    json!({"id": id, "input": {"rows": 3}, "tasks": [
        {"id": "extract", "type": "record", "input": {"rows": "${workflow.input.rows}"}},
        {"id": "transform", "type": "flaky", "depends_on": ["extract"],
         "input": {"rows": "${extract.output.rows}"}},
        {"id": "load", "type": "record", "depends_on": ["transform"],
         "input": "${transform.output.rows}"}
    ]})
}

/// The attempts the log holds of `task`: (attempt) in order.
fn attempts(log: &Log, wf: &str, task: &str) -> Vec<String> {
    let prefix = format!("{wf}/{task}/");
    log.lines()
        .iter()
        .filter_map(|l| l.strip_prefix(&prefix))
        .map(|rest| rest.split('@').next().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_workflow_rerun_from_its_failed_task_keeps_what_succeeded() {
    let mut env = Env::new().await;
    let scheduler = env.scheduler(env.scheduler_config());
    let (broken, log) = (Arc::new(AtomicBool::new(true)), Log::default());
    env.worker(registry(&broken, &log, None), &["default"], 4, "w");

    // The original submitter answers into a queue of its own.
    let ns = env.amqp.namespace.clone();
    let conn = env.amqp.connect("submitter").await.unwrap();
    let ch = warren_shared::amqp::confirm_channel(&conn).await.unwrap();
    let mine = format!("{ns}.reply.submitter");
    ch.queue_declare(
        mine.as_str().into(),
        QueueDeclareOptions {
            exclusive: true,
            ..Default::default()
        },
        Default::default(),
    )
    .await
    .unwrap();
    let mut replies = ch
        .basic_consume(
            mine.as_str().into(),
            "".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            Default::default(),
        )
        .await
        .unwrap();
    ch.basic_publish(
        format!("{ns}.workflows").as_str().into(),
        "".into(),
        BasicPublishOptions::default(),
        etl("etl-1").to_string().as_bytes(),
        warren_shared::amqp::json_properties().with_reply_to(mine.as_str().into()),
    )
    .await
    .unwrap()
    .await
    .unwrap();
    let mut next_reply = async || -> WorkflowReport {
        let d = tokio::time::timeout(DEADLINE, replies.next())
            .await
            .expect("a reply in time")
            .unwrap()
            .unwrap();
        serde_json::from_slice(&d.data).unwrap()
    };
    let first = next_reply().await;
    assert_eq!(first.status, WorkflowStatus::Failed, "{first:?}");
    assert_eq!(first.run, 1);
    assert_eq!(first.tasks["load"].state, TaskState::Skipped);

    // A rerun of a task the workflow does not have changes nothing.
    let refused = env
        .client
        .rerun("etl-1", &["nope"], None, DEADLINE)
        .await
        .unwrap();
    assert_eq!(refused.status, WorkflowStatus::Rejected);
    assert_eq!(refused.errors[0].code, "unknown_task");
    assert_eq!(refused.errors[0].task.as_deref(), Some("nope"));

    // The cause fixed, the default rerun runs the failed task and what
    // follows it; extract keeps its output and does not run again.
    broken.store(false, Ordering::SeqCst);
    let second = env
        .client
        .rerun("etl-1", &[], Some("fix-1"), DEADLINE)
        .await
        .unwrap();
    assert_eq!(second.status, WorkflowStatus::Succeeded, "{second:?}");
    assert_eq!(second.run, 2);
    assert_eq!(second.tasks["load"].output, Some(json!(3)));
    assert_eq!(attempts(&log, "etl-1", "extract"), ["1"]);
    assert_eq!(attempts(&log, "etl-1", "transform"), ["1", "1"]);
    let t = &second.tasks["transform"];
    assert_eq!((t.state, t.attempts), (TaskState::Succeeded, 1));
    assert_eq!(t.history.len(), 1);
    assert_eq!(t.history[0].state, TaskState::Failed);
    assert_eq!(
        t.history[0].error.as_ref().unwrap().message,
        "the service is down"
    );
    assert_eq!(second.runs.len(), 2);
    assert_eq!(second.runs[0].status, WorkflowStatus::Failed);
    assert_eq!(second.runs[1].rerun_id.as_deref(), Some("fix-1"));
    // The original submitter hears of the second run too.
    let again = next_reply().await;
    assert_eq!((again.status, again.run), (WorkflowStatus::Succeeded, 2));

    // The same rerun again: the run it started, not a third one.
    let same = env
        .client
        .rerun("etl-1", &[], Some("fix-1"), DEADLINE)
        .await
        .unwrap();
    assert_eq!((same.status, same.run), (WorkflowStatus::Succeeded, 2));
    // Nothing failed: a rerun without `from` has nothing to run.
    let nothing = env
        .client
        .rerun("etl-1", &[], None, DEADLINE)
        .await
        .unwrap();
    assert_eq!(nothing.errors[0].code, "nothing_to_rerun");
    // From a task: it and what follows it run again.
    let third = env
        .client
        .rerun("etl-1", &["load"], None, DEADLINE)
        .await
        .unwrap();
    assert_eq!((third.status, third.run), (WorkflowStatus::Succeeded, 3));
    assert_eq!(attempts(&log, "etl-1", "load"), ["1", "1"]);
    // load ran in each run: skipped in the first, succeeded in the second.
    let load: Vec<_> = third.tasks["load"]
        .history
        .iter()
        .map(|h| (h.run, h.state))
        .collect();
    assert_eq!(load, [(1, TaskState::Skipped), (2, TaskState::Succeeded)]);
    assert_eq!(third.tasks["transform"].history.len(), 1);
    // The CLI: the run and each task's earlier runs; a refused rerun
    // exits 1 with its code; a rerun from a task waits for its outcome.
    let cli = |args: &'static [&'static str]| {
        let ns = env.amqp.namespace.clone();
        tokio::task::spawn_blocking(move || crate::cli::warren(&ns, args))
    };
    let (code, out, _) = cli(&["status", "etl-1"]).await.unwrap();
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("workflow etl-1: succeeded (run 3)"), "{out}");
    assert!(out.contains("run 1: failed"), "{out}");
    assert!(out.contains("before: 1 skipped, 2 succeeded"), "{out}");
    let (code, _, err) = cli(&["rerun", "etl-1", "--from", "nope"]).await.unwrap();
    assert_eq!(code, 1);
    assert!(err.contains("unknown_task"), "{err}");
    let (code, out, err) = cli(&["rerun", "etl-1", "--from", "load"]).await.unwrap();
    assert_eq!(code, 0, "{err}");
    let fourth: WorkflowReport = serde_json::from_str(&out).unwrap();
    assert_eq!((fourth.status, fourth.run), (WorkflowStatus::Succeeded, 4));
    let (_, dot, _) = cli(&["graph", "etl-1"]).await.unwrap();
    assert!(dot.contains("run 4 of etl-1"), "{dot}");
    assert!(
        dot.contains("earlier runs: 1 skipped, 2 succeeded, 3 succeeded"),
        "{dot}"
    );
    // Bounds: at most 100 tasks named; a rerun_id of an id's form.
    let many: Vec<String> = (0..101).map(|i| format!("t{i}")).collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    let invalid = env
        .client
        .rerun("etl-1", &many, None, DEADLINE)
        .await
        .unwrap();
    assert_eq!(invalid.errors[0].code, "invalid_control", "{invalid:?}");
    assert!(
        invalid.errors[0].message.contains("at most 100"),
        "{invalid:?}"
    );
    let invalid = env
        .client
        .rerun("etl-1", &[], Some("not an id"), DEADLINE)
        .await
        .unwrap();
    assert_eq!(invalid.errors[0].code, "invalid_control", "{invalid:?}");
    // An unknown workflow.
    let unknown = env.client.rerun("nope", &[], None, DEADLINE).await.unwrap();
    assert_eq!(unknown.status, WorkflowStatus::NotFound);
    assert_eq!(Metrics::get(&scheduler.metrics.engine.workflows_rerun), 3);
    // Each result committed once per run: the last run's, with attempt 1.
    let results = crate::support::committed_results(&env, "etl-1").await;
    assert_eq!(
        results.iter().filter(|(task, ..)| task == "load").count(),
        1,
        "{results:?}"
    );
    warren_shared::amqp::close(&conn, "done").await;
    scheduler.stop().await;
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rerun_goes_on_across_a_killed_scheduler_and_refuses_a_second_meanwhile() {
    let mut env = Env::new().await;
    let first = env.scheduler(env.scheduler_config());
    let (broken, log) = (Arc::new(AtomicBool::new(true)), Log::default());
    let gate = Arc::new(Semaphore::new(1));
    env.worker(registry(&broken, &log, Some(&gate)), &["default"], 4, "w");
    let report = env
        .client
        .submit_and_wait(etl("etl-2"), DEADLINE)
        .await
        .unwrap();
    assert_eq!(report.status, WorkflowStatus::Failed);
    broken.store(false, Ordering::SeqCst);

    // The rerun's transform waits at the gate; meanwhile the scheduler
    // is killed and another takes over.
    let client = env.client.clone();
    let rerun = tokio::spawn(async move {
        client
            .rerun("etl-2", &["transform"], Some("across"), DEADLINE * 2)
            .await
    });
    wait_until("the rerun's transform runs", || {
        attempts(&log, "etl-2", "transform").len() == 2
    })
    .await;
    // Refused while it runs: another rerun id.
    let refused = env
        .client
        .rerun("etl-2", &[], Some("other"), DEADLINE)
        .await
        .unwrap();
    assert_eq!(refused.errors[0].code, "workflow_running");
    first.kill().await;
    crate::support::store_released(&env).await;
    let second = env.scheduler(env.scheduler_config());
    gate.add_permits(100);
    let report = rerun.await.unwrap().unwrap();
    assert_eq!((report.status, report.run), (WorkflowStatus::Succeeded, 2));
    assert_eq!(
        report.tasks["transform"].history[0].state,
        TaskState::Failed
    );
    assert_eq!(report.tasks["extract"].history.len(), 0);
    assert_eq!(attempts(&log, "etl-2", "extract"), ["1"]);
    second.stop().await;
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_three_schedulers_a_rerun_reaches_the_owner_and_outlives_it() {
    let mut env = Env::new().await;
    env.store = warren_scheduler::store::StoreLocation::Postgres(crate::support::pg_url());
    let config = env.scheduler_config();
    let mut peers: Vec<_> = (0..3).map(|_| env.scheduler(config.clone())).collect();
    wait_until("every scheduler owns partitions", || {
        peers.iter().all(|p| Metrics::get(&p.metrics.active) == 1)
    })
    .await;
    let (broken, log) = (Arc::new(AtomicBool::new(true)), Log::default());
    let gate = Arc::new(Semaphore::new(1));
    env.worker(registry(&broken, &log, Some(&gate)), &["default"], 4, "w");
    let report = env
        .client
        .submit_and_wait(etl("etl-3"), DEADLINE)
        .await
        .unwrap();
    assert_eq!(report.status, WorkflowStatus::Failed);
    broken.store(false, Ordering::SeqCst);
    let client = env.client.clone();
    let rerun = tokio::spawn(async move {
        client
            .rerun("etl-3", &[], Some("peers"), DEADLINE * 2)
            .await
    });
    wait_until("the rerun's transform runs", || {
        attempts(&log, "etl-3", "transform").len() == 2
    })
    .await;
    // The scheduler running it is killed; another takes its partition.
    wait_until("the owner counts the workflow running", || {
        peers
            .iter()
            .any(|p| Metrics::get(&p.metrics.workflows_running) == 1)
    })
    .await;
    let owner = peers
        .iter()
        .position(|p| Metrics::get(&p.metrics.workflows_running) == 1)
        .expect("one scheduler runs the workflow");
    peers.remove(owner).kill().await;
    // The same rerun asked again meanwhile is joined, not run twice.
    let again = env.client.clone();
    let joined =
        tokio::spawn(async move { again.rerun("etl-3", &[], Some("peers"), DEADLINE * 2).await });
    gate.add_permits(100);
    for report in [
        rerun.await.unwrap().unwrap(),
        joined.await.unwrap().unwrap(),
    ] {
        assert_eq!(
            (report.status, report.run),
            (WorkflowStatus::Succeeded, 2),
            "{report:?}"
        );
    }
    assert_eq!(attempts(&log, "etl-3", "extract"), ["1"]);
    let runs: u64 = peers
        .iter()
        .map(|p| Metrics::get(&p.metrics.engine.workflows_rerun))
        .sum();
    assert_eq!(runs, 0, "the killed owner started the only run");
    for p in peers {
        p.stop().await;
    }
    env.finish().await;
}
