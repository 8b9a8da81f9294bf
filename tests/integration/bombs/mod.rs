//! Issue 15's bomb battery: hostile and oversized requests, each answered
//! within seconds (a rejection, or the workflow ending with an error that
//! names the limit), each followed by an ordinary one-task workflow that
//! succeeds, with the scheduler's peak memory under 1.5 GiB.
//!
//! The scheduler is the real `warren-scheduler` binary, a child process
//! configured through the environment as an operator would, so that its
//! peak RSS (`VmHWM`) can be read and its gauges (`/metrics`) sampled; the
//! worker runs in-process. Raw AMQP ([`Raw`]) sends what the client library
//! would refuse to build and reads answers as JSON, unknown fields included.

mod budget;
mod child;

use crate::support::{DEADLINE, Env, http_get};
use child::*;
use lapin::{
    options::{BasicGetOptions, QueueDeclareOptions},
    types::{AMQPValue, FieldTable},
};
use serde_json::{Value, json};
use std::{
    collections::{BTreeMap, HashSet},
    time::{Duration, Instant},
};
use warren_shared::wire::WorkflowStatus;
use warren_worker::Registry;

/// How soon a bomb must be answered.
/// (a) An invalid 4 KiB task id whose `depends_on` lists `a` 200,000
/// times: rejected with a bounded answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bomb_a_invalid_id_with_200000_dependencies_is_rejected_briefly() {
    let mut env = Env::new().await;
    let logs = tempfile::tempdir().unwrap();
    let mut s = ChildScheduler::start(&env, &logs, &[]).await;
    env.builtin_worker("w");
    let mut raw = Raw::open(&env.amqp).await;
    let body = json!({"id": "bomb-a", "tasks": [
        {"id": "x".repeat(4096), "type": "echo", "depends_on": vec!["a"; 200_000]},
        {"id": "a", "type": "echo"}
    ]})
    .to_string();
    assert!(body.len() > 800_000);
    let started = Instant::now();
    let (size, report) = raw.ask(body.as_bytes(), ANSWER).await;
    eprintln!("bomb a: answered in {:?}, {size} bytes", started.elapsed());
    assert_eq!(report["status"], "rejected", "{report}");
    let errors = report["errors"].as_array().unwrap();
    assert_eq!(errors[0]["code"], "invalid_task_id", "{}", errors[0]);
    assert!(errors.len() <= 101, "{} errors", errors.len());
    assert!(size < 256 * 1024, "an answer of {size} bytes");
    raw.close().await;
    ordinary(&env).await;
    s.assert_bounded("a");
    s.kill();
    env.finish().await;
}

/// (b) 1 MiB of workflow input referenced 200 times in one task's input:
/// the task fails, not retried, naming itself and the limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bomb_b_input_expanding_past_the_limit_fails_the_task() {
    let mut env = Env::new().await;
    let logs = tempfile::tempdir().unwrap();
    let mut s = ChildScheduler::start(&env, &logs, &[]).await;
    env.builtin_worker("w");
    let mut raw = Raw::open(&env.amqp).await;
    let body = json!({
        "id": "bomb-b",
        "input": {"blob": "x".repeat(MIB)},
        "tasks": [
            {"id": "grow", "type": "echo", "input": vec!["${workflow.input.blob}"; 200],
             // Were it retried, the workflow would not end in time.
             "retry": {"max_attempts": 3, "backoff_ms": 600_000}},
            {"id": "after", "type": "echo", "depends_on": ["grow"]}
        ]
    })
    .to_string();
    let started = Instant::now();
    let (_, report) = raw.ask(body.as_bytes(), ANSWER).await;
    eprintln!("bomb b: answered in {:?}", started.elapsed());
    assert_eq!(report["status"], "failed", "{}", str_of(&report["error"]));
    let task = &report["tasks"]["grow"];
    assert_eq!(task["state"], "failed", "{task}");
    let message = str_of(&task["error"]["message"]);
    for needle in ["`grow`", "8388608", "WARREN_MAX_TASK_INPUT_BYTES"] {
        assert!(message.contains(needle), "`{message}` lacks {needle}");
    }
    let error = str_of(&report["error"]);
    assert!(error.contains("`grow`"), "{error}");
    assert_eq!(report["tasks"]["after"]["state"], "skipped");
    raw.close().await;
    ordinary(&env).await;
    s.assert_bounded("b");
    s.kill();
    env.finish().await;
}

/// (c) An 8 MiB output echoed into 20 dependents: the worker refuses a
/// result over its limit (`WARREN_MAX_RESULT_BYTES`, default 2 MiB) and
/// publishes a failed one naming it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bomb_c_an_output_over_the_result_limit_fails_its_task() {
    let mut env = Env::new().await;
    let logs = tempfile::tempdir().unwrap();
    let mut s = ChildScheduler::start(&env, &logs, &[]).await;
    env.worker(with_big(), &["default"], 4, "w");
    let mut raw = Raw::open(&env.amqp).await;
    let mut tasks = vec![json!({"id": "big", "type": "big", "input": {"bytes": 8 * MIB}})];
    tasks.extend((0..20).map(|i| {
        json!({"id": format!("d{i}"), "type": "echo", "depends_on": ["big"], "input": "${big.output}"})
    }));
    let body = json!({"id": "bomb-c-over", "tasks": tasks}).to_string();
    let started = Instant::now();
    let (size, report) = raw.ask(body.as_bytes(), ANSWER).await;
    eprintln!("bomb c (over): answered in {:?}", started.elapsed());
    assert_eq!(report["status"], "failed", "{}", str_of(&report["error"]));
    let message = str_of(&report["tasks"]["big"]["error"]["message"]);
    let limit = warren_shared::limits::DEFAULT_MAX_RESULT_BYTES.to_string();
    for needle in ["`big`", limit.as_str()] {
        assert!(message.contains(needle), "`{message}` lacks {needle}");
    }
    assert_eq!(report["tasks"]["d0"]["state"], "skipped");
    assert!(size < MIB, "{size}");
    raw.close().await;
    ordinary(&env).await;
    s.assert_bounded("c (over the limit)");
    s.kill();
    env.finish().await;
}

/// (c') The same with an output just under the limit: everything runs,
/// and the final report (21 outputs just under the result limit, more
/// than the 8 MiB report limit) elides the outputs it
/// cannot hold, which remain readable one task at a time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bomb_c_outputs_just_under_the_limit_are_elided_from_the_report() {
    let mut env = Env::new().await;
    let logs = tempfile::tempdir().unwrap();
    let mut s = ChildScheduler::start(&env, &logs, &[]).await;
    env.worker(with_big(), &["default"], 4, "w");
    let mut raw = Raw::open(&env.amqp).await;
    let bytes = warren_shared::limits::DEFAULT_MAX_RESULT_BYTES - 64 * 1024;
    let max_report = 8 * MIB;
    assert!(
        21 * bytes > 2 * max_report,
        "the outputs must not fit a report"
    );
    let mut tasks = vec![json!({"id": "big", "type": "big", "input": {"bytes": bytes}})];
    tasks.extend((0..20).map(|i| {
        json!({"id": format!("d{i}"), "type": "echo", "depends_on": ["big"], "input": "${big.output}"})
    }));
    let body = json!({"id": "bomb-c-under", "tasks": tasks}).to_string();
    let started = Instant::now();
    let (size, report) = raw.ask(body.as_bytes(), ANSWER_MOVING_OUTPUTS).await;
    eprintln!(
        "bomb c (under): answered in {:?}, report of {size} bytes",
        started.elapsed()
    );
    assert_eq!(
        report["status"],
        "succeeded",
        "{}",
        str_of(&report["error"])
    );
    assert!(size <= max_report, "a report of {size} bytes");
    let elided: Vec<&String> = report["tasks"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(_, t)| t.get("output_elided").is_some())
        .map(|(id, _)| id)
        .collect();
    // At most what fits the report is kept: the others are elided.
    let kept = max_report / bytes;
    assert!(elided.len() >= 21 - kept, "elided: {elided:?}");
    for id in &elided {
        let t = &report["tasks"][id.as_str()];
        assert!(t.get("output").is_none(), "{id} has both");
        assert!(
            t["output_elided"]
                .as_u64()
                .is_some_and(|n| n as usize >= bytes),
            "{id}: {}",
            t["output_elided"]
        );
    }
    // One task in full, through the HTTP API.
    let one = elided[0];
    let (status, _, body) =
        http_get(s.http, &format!("/api/workflows/bomb-c-under/tasks/{one}")).await;
    assert_eq!(status, 200, "{}", &body[..body.len().min(300)]);
    let task: Value = serde_json::from_str(&body).unwrap();
    let output = task
        .get("output")
        .or_else(|| task.pointer(&format!("/tasks/{one}/output")))
        .unwrap_or_else(|| panic!("no output in {}", &body[..body.len().min(300)]));
    assert_eq!(output.as_str().map(str::len), Some(bytes));
    raw.close().await;
    ordinary(&env).await;
    s.assert_bounded("c (just under the limit)");
    s.kill();
    env.finish().await;
}

/// (d) A task queue that exists on the broker with other arguments: the
/// workflow needing it fails naming it; workflows on other queues run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bomb_d_a_conflicting_task_queue_stops_only_its_workflow() {
    let mut env = Env::new().await;
    env.track_queue("clash");
    let logs = tempfile::tempdir().unwrap();
    let mut s = ChildScheduler::start(&env, &logs, &[]).await;
    env.worker(Registry::with_builtins(), &["default"], 4, "w");
    // `{ns}.tasks.clash`, declared first with arguments Warren does not use.
    let clash = env.amqp.topology().task_queue("clash");
    {
        let conn = warren_shared::amqp::connect(&env.amqp.addr, "bomb d")
            .await
            .unwrap();
        let ch = conn.create_channel().await.unwrap();
        let mut args = FieldTable::default();
        args.insert("x-max-length".into(), AMQPValue::LongLongInt(5));
        ch.queue_declare(
            clash.as_str().into(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            args,
        )
        .await
        .unwrap();
        warren_shared::amqp::close(&conn, "declared").await;
    }
    let mut raw = Raw::open(&env.amqp).await;
    let body = json!({"id": "bomb-d", "tasks": [
        {"id": "t", "type": "echo", "queue": "clash"},
        {"id": "after", "type": "echo", "depends_on": ["t"]}
    ]})
    .to_string();
    let started = Instant::now();
    raw.send(body.as_bytes(), "bomb-d").await;
    // An ordinary workflow meanwhile.
    ordinary(&env).await;
    let (c, _, report) = raw.reply(ANSWER).await;
    assert_eq!(c, "bomb-d");
    eprintln!("bomb d: answered in {:?}", started.elapsed());
    assert_eq!(report["status"], "failed", "{report}");
    // Named as the task's `queue` or as the broker's queue.
    let message = str_of(&report["tasks"]["t"]["error"]["message"]);
    assert!(
        message.contains("clash"),
        "`{message}` does not name {clash}"
    );
    assert!(
        str_of(&report["error"]).contains("`t`"),
        "{}",
        report["error"]
    );
    raw.close().await;
    ordinary(&env).await;
    s.assert_bounded("d");
    s.kill();
    env.finish().await;
}

/// (e) More distinct task queues than `WARREN_MAX_QUEUES` (3): rejected
/// `too_many_queues`, alone or beside running workflows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bomb_e_too_many_queues_are_rejected() {
    let mut env = Env::new().await;
    for q in ["q1", "q2", "q3", "q4", "q5", "q6", "q7"] {
        env.track_queue(q);
    }
    let logs = tempfile::tempdir().unwrap();
    let mut s = ChildScheduler::start(&env, &logs, &[("WARREN_MAX_QUEUES", "3")]).await;
    env.builtin_worker("w");
    let mut raw = Raw::open(&env.amqp).await;
    let on = |queues: &[&str]| -> Vec<Value> {
        queues
            .iter()
            .enumerate()
            .map(|(i, q)| json!({"id": format!("t{i}"), "type": "echo", "queue": q}))
            .collect()
    };
    // Four queues in one workflow.
    let (_, alone) = raw
        .ask(
            json!({"id": "bomb-e-alone", "tasks": on(&["q4", "q5", "q6", "q7"])})
                .to_string()
                .as_bytes(),
            ANSWER,
        )
        .await;
    assert_eq!(alone["status"], "rejected", "{alone}");
    assert_eq!(alone["errors"][0]["code"], "too_many_queues", "{alone}");
    assert!(
        str_of(&alone["errors"][0]["message"]).contains('3'),
        "{alone}"
    );
    // Two held on queues no worker takes, then two more: one too many.
    env.client
        .submit(json!({"id": "bomb-e-held", "tasks": on(&["q1", "q2"])}))
        .await
        .unwrap();
    dispatched(&env, "bomb-e-held", "t0").await;
    let (_, beside) = raw
        .ask(
            json!({"id": "bomb-e-beside", "tasks": on(&["q3", "q4"])})
                .to_string()
                .as_bytes(),
            ANSWER,
        )
        .await;
    assert_eq!(beside["status"], "rejected", "{beside}");
    assert_eq!(beside["errors"][0]["code"], "too_many_queues", "{beside}");
    // The third, `default`, still fits.
    ordinary(&env).await;
    let cancelled = env.client.cancel("bomb-e-held", DEADLINE).await.unwrap();
    assert_eq!(cancelled.status, WorkflowStatus::Cancelled);
    raw.close().await;
    s.assert_bounded("e");
    s.kill();
    env.finish().await;
}

/// (f) 2,000 duplicate submissions of one running workflow, each with a
/// `reply_to`: every one answered, the excess at once and cheaply.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bomb_f_2000_duplicate_submissions_are_answered() {
    let mut env = Env::new().await;
    env.track_queue("held");
    let logs = tempfile::tempdir().unwrap();
    let mut s = ChildScheduler::start(&env, &logs, &[]).await;
    env.builtin_worker("w");
    let mut raw = Raw::open(&env.amqp).await;
    let body = json!({"id": "bomb-f", "tasks": [{"id": "t", "type": "echo", "queue": "held", "input": 1}]})
        .to_string();
    raw.send(body.as_bytes(), "original").await;
    dispatched(&env, "bomb-f", "t").await;
    let n = 2_000;
    let started = Instant::now();
    let duplicates: Vec<String> = (0..n).map(|i| format!("dup-{i}")).collect();
    raw.send_all(body.as_bytes(), &duplicates).await;
    // All but the few a workflow keeps waiting (100 at most) are answered
    // at once with the running report.
    let mut answered = HashSet::new();
    let mut by_status: BTreeMap<String, usize> = BTreeMap::new();
    while answered.len() < n - 100 {
        let (c, _, report) = raw.reply(ANSWER).await;
        assert!(c.starts_with("dup-"), "{c}: {report}");
        assert!(answered.insert(c.clone()), "{c} answered twice");
        *by_status.entry(str_of(&report["status"])).or_default() += 1;
    }
    eprintln!(
        "bomb f: {} duplicates answered in {:?}: {by_status:?}",
        answered.len(),
        started.elapsed()
    );
    assert!(started.elapsed() < ANSWER);
    assert_eq!(by_status.keys().collect::<Vec<_>>(), ["running"]);
    // Then a worker takes the held task: the waiters hear the outcome.
    env.worker(Registry::with_builtins(), &["held"], 4, "held");
    let mut original = false;
    while answered.len() < n || !original {
        let (c, _, report) = raw.reply(DEADLINE).await;
        if c == "original" {
            assert_eq!(report["status"], "succeeded", "{report}");
            original = true;
            continue;
        }
        assert!(answered.insert(c.clone()), "{c} answered twice");
        assert!(
            ["running", "succeeded"].contains(&report["status"].as_str().unwrap_or("")),
            "{report}"
        );
    }
    raw.close().await;
    ordinary(&env).await;
    s.assert_bounded("f");
    s.kill();
    env.finish().await;
}

/// (g) Results over `max_result_bytes` published straight onto
/// `{ns}.results`: dead-lettered with the reason, and the scheduler keeps
/// going.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bomb_g_oversized_results_are_dead_lettered() {
    let mut env = Env::new().await;
    env.track_queue("held");
    let logs = tempfile::tempdir().unwrap();
    let mut s = ChildScheduler::start(&env, &logs, &[]).await;
    env.builtin_worker("w");
    let raw = Raw::open(&env.amqp).await;
    env.client
        .submit(json!({"id": "bomb-g", "tasks": [{"id": "t", "type": "echo", "queue": "held"}]}))
        .await
        .unwrap();
    dispatched(&env, "bomb-g", "t").await;
    // For the running attempt, then a flood of them: 9 MiB each, over the
    // default 2 MiB, and the 8 MiB it was.
    let hostile = json!({"workflow_id": "bomb-g", "task_id": "t", "attempt": 1,
        "status": "succeeded", "output": "x".repeat(9 * MIB)})
    .to_string();
    let flood = 20;
    let started = Instant::now();
    for _ in 0..=flood {
        raw.send_result(hostile.as_bytes()).await;
    }
    // All dead-lettered, each with a reason naming the size.
    let conn = warren_shared::amqp::connect(&env.amqp.addr, "bomb g reader")
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    let dead = env.amqp.topology().dead();
    let deadline = Instant::now() + ANSWER;
    loop {
        let q = ch
            .queue_declare(
                dead.as_str().into(),
                QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap();
        if q.message_count() as usize > flood {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {} dead-lettered",
            q.message_count(),
            flood + 1
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("bomb g: dead-lettered in {:?}", started.elapsed());
    let got = ch
        .basic_get(dead.as_str().into(), BasicGetOptions { no_ack: false })
        .await
        .unwrap()
        .expect("a dead letter");
    let reason = got
        .delivery
        .properties
        .headers()
        .as_ref()
        .and_then(|h| h.inner().get("warren-dead-reason").cloned());
    let reason = match reason {
        Some(AMQPValue::LongString(s)) => s.to_string(),
        other => panic!("no reason: {other:?}"),
    };
    // The reason says the size (and the limit).
    assert!(
        reason.contains(&hostile.len().to_string()) && reason.contains("bytes"),
        "{reason}"
    );
    assert_eq!(got.delivery.data.len(), hostile.len());
    warren_shared::amqp::close(&conn, "read").await;
    // The task was not completed by it, and the scheduler goes on.
    let r = env.client.status("bomb-g", DEADLINE).await.unwrap();
    assert_eq!(r.status, WorkflowStatus::Running);
    ordinary(&env).await;
    env.client.cancel("bomb-g", DEADLINE).await.unwrap();
    raw.close().await;
    s.assert_bounded("g");
    s.kill();
    env.finish().await;
}

/// (i) Heartbeats under 20,000 distinct worker ids, and under ids of
/// 4 KiB: the `workers` answer lists at most 10,000, none of the long ids.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bomb_i_a_flood_of_worker_ids_is_bounded() {
    let mut env = Env::new().await;
    let logs = tempfile::tempdir().unwrap();
    let mut s = ChildScheduler::start(&env, &logs, &[]).await;
    env.builtin_worker("w");
    let raw = Raw::open(&env.amqp).await;
    let events = env.amqp.topology().events();
    let beat = |id: &str| {
        json!({"worker_id": id, "queues": ["default"], "concurrency": 1, "in_flight": 0,
               "interval_ms": 60_000, "state": "running", "sent_at": "2026-01-01T00:00:00Z"})
        .to_string()
    };
    // Published unconfirmed but on one channel, then one confirmed: all
    // have reached the broker once that one is confirmed.
    let flood = 20_000;
    for i in 0..=flood {
        let id = if i % 1_000 == 0 {
            format!("long-{}", "x".repeat(4096))
        } else {
            format!("flood-{i}")
        };
        let confirm = raw
            .publish
            .basic_publish(
                events.as_str().into(),
                "worker.flood.heartbeat".into(),
                Default::default(),
                beat(&id).as_bytes(),
                warren_shared::amqp::json_properties(),
            )
            .await
            .unwrap();
        if i == flood {
            confirm.await.unwrap();
        }
    }
    // The scheduler has heard them all once the last flood id is listed.
    let last = format!("flood-{}", flood - 1);
    let deadline = Instant::now() + DEADLINE;
    let report = loop {
        let r = env.client.workers(DEADLINE).await.unwrap();
        if r.workers.iter().any(|w| w.heartbeat.worker_id == last) {
            break r;
        }
        assert!(Instant::now() < deadline, "the flood was not heard");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        report.workers.len() <= warren_scheduler::workers::MAX_WORKERS_LISTED,
        "{} listed",
        report.workers.len()
    );
    assert!(
        report
            .workers
            .iter()
            .all(|w| w.heartbeat.worker_id.len() <= 256)
    );
    raw.close().await;
    ordinary(&env).await;
    s.assert_bounded("i");
    s.kill();
    env.finish().await;
}
