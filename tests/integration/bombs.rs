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

use crate::support::{DEADLINE, Env, Proc, binaries, http_get, store_env};
use lapin::{
    BasicProperties,
    options::{BasicGetOptions, QueueDeclareOptions},
    types::{AMQPValue, FieldTable},
};
use serde_json::{Value, json};
use std::{
    collections::{BTreeMap, HashSet},
    net::SocketAddr,
    path::PathBuf,
    process::{Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};
use warren_shared::{AmqpConfig, wire::WorkflowStatus};
use warren_worker::Registry;

/// How soon a bomb must be answered.
const ANSWER: Duration = Duration::from_secs(20);
/// How soon a workflow moving 21 outputs of about the result limit must
/// end: seconds in a release build, but a debug build's serde_json escapes
/// strings at a few tens of MB/s (its per-byte precondition checks:
/// measured, 85% of the scheduler's CPU), and the scheduler serialises
/// each output several times (measured, stored, sent): with 8 MiB results,
/// about 80 s on 2 cores.
const ANSWER_MOVING_OUTPUTS: Duration = if cfg!(debug_assertions) {
    Duration::from_secs(240)
} else {
    ANSWER
};
/// The scheduler's peak resident memory must stay under this (MB).
const MAX_RSS_MB: f64 = 1536.0;
const MIB: usize = 1024 * 1024;

/// A `warren-scheduler` child process on the test's namespace and store,
/// with its HTTP endpoint on a free port and its log in a file.
struct ChildScheduler {
    proc: Proc,
    http: SocketAddr,
    log: PathBuf,
}

impl ChildScheduler {
    /// Starts the scheduler binary with `vars` added to its environment,
    /// and waits until `/healthz` says it serves.
    async fn start(env: &Env, logs: &tempfile::TempDir, vars: &[(&str, &str)]) -> ChildScheduler {
        // A free port: bound, then released for the child to take.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let http: SocketAddr = ([127, 0, 0, 1], port).into();
        let log = logs
            .path()
            .join(format!("scheduler-{}.log", fastrand::u32(..)));
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(&binaries()["warren-scheduler"])
            .envs(vars.iter().copied())
            .env("AMQP_ADDR", &env.amqp.addr)
            .env("WARREN_NAMESPACE", &env.amqp.namespace)
            .env("WARREN_STORE", store_env(&env.store))
            .env("WARREN_HTTP_ADDR", http.to_string())
            .env(
                "RUST_LOG",
                std::env::var("BOMBS_SCHEDULER_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdout(Stdio::from(out.try_clone().unwrap()))
            .stderr(Stdio::from(out))
            .spawn()
            .unwrap();
        let s = ChildScheduler {
            proc: Proc(child),
            http,
            log,
        };
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Ok(Ok((200, _, _))) =
                tokio::time::timeout(Duration::from_secs(2), try_get(http, "/healthz")).await
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the scheduler did not start serving; its log:\n{}",
                s.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        s
    }

    fn pid(&self) -> u32 {
        self.proc.0.id()
    }

    /// Its peak resident memory so far (MB).
    fn peak_rss_mb(&self) -> f64 {
        warren_harness::procfs::peak_rss_mb(self.pid()).expect("the scheduler is running")
    }

    /// Asserts that it still runs and that its peak memory stayed under
    /// [`MAX_RSS_MB`]; prints the figure.
    fn assert_bounded(&mut self, case: &str) {
        assert!(
            self.proc.0.try_wait().unwrap().is_none(),
            "{case}: the scheduler died; its log:\n{}",
            self.log_tail()
        );
        let mb = self.peak_rss_mb();
        eprintln!("bomb {case}: scheduler peak RSS {mb:.0} MB");
        assert!(mb < MAX_RSS_MB, "{case}: peak RSS {mb:.0} MB");
    }

    /// A gauge or counter of `/metrics` (without labels), if served.
    async fn metric(&self, name: &str) -> Option<f64> {
        let (status, _, body) = try_get(self.http, "/metrics").await.ok()?;
        if status != 200 {
            return None;
        }
        metric_in(&body, name)
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// SIGKILL, as a crash would.
    fn kill(mut self) {
        let _ = self.proc.0.kill();
        let _ = self.proc.0.wait();
    }
}

impl Drop for ChildScheduler {
    /// A failing test shows the end of the scheduler's log.
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("the scheduler's log ends:\n{}", self.log_tail());
        }
    }
}

/// The value of metric `name` (a line `name value`) in Prometheus text.
fn metric_in(body: &str, name: &str) -> Option<f64> {
    body.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == name).then(|| v.trim().parse().ok()).flatten()
    })
}

/// [`http_get`] that fails rather than panics while nothing listens.
async fn try_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String, String)> {
    tokio::net::TcpStream::connect(addr).await?;
    Ok(http_get(addr, path).await)
}

/// Raw AMQP: requests with a `reply_to` of this connection's private
/// queue, answers read as JSON; results and anything else published as
/// given.
struct Raw {
    conn: lapin::Connection,
    publish: lapin::Channel,
    queue: String,
    replies: lapin::Consumer,
    amqp: AmqpConfig,
}

impl Raw {
    async fn open(amqp: &AmqpConfig) -> Raw {
        let conn = warren_shared::amqp::connect(&amqp.addr, "bomb thrower")
            .await
            .unwrap();
        let (_, queue, replies) = warren_shared::amqp::private_queue(&conn, &[])
            .await
            .unwrap();
        let publish = warren_shared::amqp::confirm_channel(&conn).await.unwrap();
        Raw {
            conn,
            publish,
            queue,
            replies,
            amqp: amqp.clone(),
        }
    }

    /// Publishes `body` to `exchange` (routing key `""`) with
    /// `properties`, and waits for the broker's confirm.
    async fn put(&self, exchange: &str, body: &[u8], properties: BasicProperties) {
        let confirm = warren_shared::amqp::publish(
            &self.publish,
            warren_shared::amqp::Publish {
                exchange,
                routing_key: "",
                mandatory: true,
                body,
                properties,
            },
        )
        .await
        .unwrap();
        warren_shared::amqp::confirmed(confirm, exchange, "")
            .await
            .unwrap();
    }

    /// A request answered to this connection's queue under `correlation`.
    async fn send(&self, body: &[u8], correlation: &str) {
        self.send_all(body, &[correlation.to_owned()]).await;
    }

    /// The same request once per correlation id: all published, then
    /// every confirm awaited.
    async fn send_all(&self, body: &[u8], correlations: &[String]) {
        let exchange = self.amqp.topology().workflows();
        let mut confirms = Vec::with_capacity(correlations.len());
        for c in correlations {
            let properties = warren_shared::amqp::json_properties()
                .with_reply_to(self.queue.as_str().into())
                .with_correlation_id(c.as_str().into());
            let msg = warren_shared::amqp::Publish {
                exchange: &exchange,
                routing_key: "",
                mandatory: true,
                body,
                properties,
            };
            confirms.push(
                warren_shared::amqp::publish(&self.publish, msg)
                    .await
                    .unwrap(),
            );
        }
        for confirm in confirms {
            warren_shared::amqp::confirmed(confirm, &exchange, "")
                .await
                .unwrap();
        }
    }

    /// A result straight onto `{ns}.results`, as a worker would publish.
    async fn send_result(&self, body: &[u8]) {
        self.put(
            &self.amqp.topology().results(),
            body,
            warren_shared::amqp::json_properties(),
        )
        .await;
    }

    /// The next answer: (correlation id, body size, report).
    async fn reply(&mut self, within: Duration) -> (String, usize, Value) {
        use futures_lite::StreamExt;
        let d = tokio::time::timeout(within, self.replies.next())
            .await
            .unwrap_or_else(|_| panic!("no answer within {within:?}"))
            .expect("reply queue open")
            .expect("a delivery");
        let correlation = d
            .properties
            .correlation_id()
            .as_ref()
            .map(|c| c.as_str().to_owned())
            .unwrap_or_default();
        let report = serde_json::from_slice(&d.data).expect("a JSON answer");
        (correlation, d.data.len(), report)
    }

    /// Sends a request and waits for its answer.
    async fn ask(&mut self, body: &[u8], within: Duration) -> (usize, Value) {
        let correlation = uuid::Uuid::new_v4().to_string();
        self.send(body, &correlation).await;
        loop {
            let (c, size, report) = self.reply(within).await;
            if c == correlation {
                return (size, report);
            }
        }
    }

    async fn close(self) {
        warren_shared::amqp::close(&self.conn, "done").await;
    }
}

/// A one-task workflow on `default` succeeds: the scheduler is unharmed.
async fn ordinary(env: &Env) {
    let ok = env
        .client
        .submit_and_wait(
            json!({"tasks": [{"id": "a", "type": "echo", "input": "ordinary"}]}),
            DEADLINE,
        )
        .await
        .unwrap();
    assert_eq!(ok.status, WorkflowStatus::Succeeded, "{ok:?}");
}

/// Waits until `id`'s task `task` has been dispatched.
async fn dispatched(env: &Env, id: &str, task: &str) {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let r = env.client.status(id, DEADLINE).await.unwrap();
        if r.tasks.get(task).is_some_and(|t| t.attempts > 0) {
            return;
        }
        assert!(Instant::now() < deadline, "{id}/{task} was not dispatched");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The built-ins plus `big`, whose output is a string of `input.bytes`
/// bytes.
fn with_big() -> Registry {
    let mut r = Registry::with_builtins();
    r.register("big", |ctx| async move {
        let n = ctx.input["bytes"].as_u64().unwrap_or(0) as usize;
        Ok(json!("x".repeat(n)))
    });
    r
}

fn str_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

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

/// What a [`Sampler`] saw of the budget's gauges.
#[derive(Debug, Default)]
struct Sampled {
    samples: AtomicU64,
    /// Most active tasks seen.
    active_max: AtomicU64,
    /// Most active tasks seen while more than one workflow ran (one
    /// workflow larger than the budget runs alone).
    shared_max: AtomicU64,
    /// Most requests seen waiting.
    waiting_max: AtomicU64,
}

/// Samples the budget's gauges of `/metrics` every 10 ms until stopped.
struct Sampler {
    stop: Arc<AtomicBool>,
    seen: Arc<Sampled>,
    join: tokio::task::JoinHandle<()>,
}

impl Sampler {
    fn start(http: SocketAddr) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Sampled::default());
        let join = tokio::spawn({
            let (stop, seen) = (stop.clone(), seen.clone());
            async move {
                while !stop.load(Ordering::Relaxed) {
                    if let Ok((200, _, body)) = try_get(http, "/metrics").await {
                        let gauge = |name| metric_in(&body, name).map(|v| v as u64);
                        if let (Some(active), Some(waiting), Some(running)) = (
                            gauge("warren_active_tasks"),
                            gauge("warren_requests_waiting"),
                            gauge("warren_workflows_running"),
                        ) {
                            seen.active_max.fetch_max(active, Ordering::Relaxed);
                            if running > 1 {
                                seen.shared_max.fetch_max(active, Ordering::Relaxed);
                            }
                            seen.waiting_max.fetch_max(waiting, Ordering::Relaxed);
                            seen.samples.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        });
        Sampler { stop, seen, join }
    }

    fn active_max(&self) -> u64 {
        self.seen.active_max.load(Ordering::Relaxed)
    }

    fn waiting_max(&self) -> u64 {
        self.seen.waiting_max.load(Ordering::Relaxed)
    }

    /// Stops sampling and returns what it saw.
    async fn finish(self) -> Arc<Sampled> {
        self.stop.store(true, Ordering::Relaxed);
        self.join.await.unwrap();
        self.seen
    }
}

/// Waits until the sampler saw requests waiting and the active tasks
/// near the budget.
async fn backlog_seen(sampler: &Sampler, budget: u64) {
    let deadline = Instant::now() + DEADLINE;
    while sampler.waiting_max() == 0 || sampler.active_max() < budget * 8 / 10 {
        assert!(
            Instant::now() < deadline,
            "no backlog seen: at most {} active, {} waiting",
            sampler.active_max(),
            sampler.waiting_max()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// (h) The memory budget: with `WARREN_MAX_ACTIVE_TASKS=50` and no worker,
/// 20 workflows of 10 tasks and one of 60 wait in the broker beyond the
/// budget (also across a restart), then all succeed once a worker runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bomb_h_a_backlog_stays_within_the_budget_then_completes() {
    let mut env = Env::new().await;
    let budget = 50u64;
    let vars = [("WARREN_MAX_ACTIVE_TASKS", "50")];
    let logs = tempfile::tempdir().unwrap();
    let s = ChildScheduler::start(&env, &logs, &vars).await;
    assert!(
        s.metric("warren_active_tasks").await.is_some(),
        "the scheduler serves no warren_active_tasks gauge"
    );
    let sampler = Sampler::start(s.http);
    let mut waits = Vec::new();
    let workflows: Vec<(String, usize)> = (0..20)
        .map(|i| (format!("bomb-h-{i}"), 10))
        .chain([("bomb-h-large".to_owned(), 60)])
        .collect();
    for (id, n) in &workflows {
        let tasks: Vec<Value> = (0..*n)
            .map(|t| json!({"id": format!("t{t}"), "type": "echo", "input": t}))
            .collect();
        let client = env.client.clone();
        let request = json!({"id": id, "tasks": tasks});
        waits.push(tokio::spawn(async move {
            client.submit_and_wait(request, 4 * DEADLINE).await
        }));
    }
    backlog_seen(&sampler, budget).await;
    // Samples for a while longer, then a crash and a restart with the
    // backlog waiting: the new scheduler keeps the budget too.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let seen = sampler.finish().await;
    eprintln!("bomb h: {seen:?}");
    let active = seen.active_max.load(Ordering::Relaxed);
    assert!(active <= budget, "{active} active tasks, budget {budget}");
    let rss_before = s.peak_rss_mb();
    s.kill();
    let mut s = ChildScheduler::start(&env, &logs, &vars).await;
    let sampler = Sampler::start(s.http);
    backlog_seen(&sampler, budget).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Then a worker: everything completes, the budget still kept.
    env.builtin_worker("w");
    for w in waits {
        let r = w.await.unwrap().unwrap();
        assert_eq!(r.status, WorkflowStatus::Succeeded, "{r:?}");
    }
    // Past the budget only while the workflow larger than it ran alone.
    let seen = sampler.finish().await;
    eprintln!("bomb h after a restart: {seen:?}");
    let shared = seen.shared_max.load(Ordering::Relaxed);
    assert!(
        shared <= budget,
        "{shared} active tasks of several workflows after a restart"
    );
    assert!(seen.active_max.load(Ordering::Relaxed) <= 60);
    ordinary(&env).await;
    eprintln!("bomb h: peak RSS before the restart {rss_before:.0} MB");
    assert!(rss_before < MAX_RSS_MB);
    s.assert_bounded("h");
    s.kill();
    env.finish().await;
}

/// (h') Control requests while submissions wait for the budget: with
/// `WARREN_MAX_ACTIVE_TASKS=50` full of workflows that cannot progress
/// (no worker) and more submissions waiting than the requests' prefetch,
/// a `status` and a `cancel` (which would make room) are still answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bomb_h_control_requests_are_not_held_behind_waiting_submissions() {
    let mut env = Env::new().await;
    env.track_queue("held");
    let logs = tempfile::tempdir().unwrap();
    let mut s = ChildScheduler::start(&env, &logs, &[("WARREN_MAX_ACTIVE_TASKS", "50")]).await;
    let tasks = |queue: &str| -> Vec<Value> {
        (0..10)
            .map(|t| json!({"id": format!("t{t}"), "type": "echo", "queue": queue}))
            .collect()
    };
    env.client
        .submit(json!({"id": "bomb-h-held", "tasks": tasks("held")}))
        .await
        .unwrap();
    dispatched(&env, "bomb-h-held", "t0").await;
    // 4 more fit, 96 wait: more than the requests the broker hands over
    // at once (the requests prefetch, 64).
    let mut waits = Vec::new();
    for i in 0..100 {
        let client = env.client.clone();
        let request = json!({"id": format!("bomb-h-{i}"), "tasks": tasks("default")});
        waits.push(tokio::spawn(async move {
            client.submit_and_wait(request, 4 * DEADLINE).await
        }));
    }
    // Until the scheduler holds all it may of them and the rest wait in
    // the broker's queue, ahead of the control requests below.
    let conn = warren_shared::amqp::connect(&env.amqp.addr, "bomb h'")
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    let workflows = env.amqp.topology().workflows();
    let deadline = Instant::now() + DEADLINE;
    loop {
        let waiting = s.metric("warren_requests_waiting").await.unwrap_or(0.0);
        let queued = ch
            .queue_declare(
                workflows.as_str().into(),
                QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap()
            .message_count();
        if waiting > 0.0 && queued > 0 {
            eprintln!(
                "bomb h': {waiting} requests waiting in the scheduler, {queued} in the broker"
            );
            break;
        }
        assert!(Instant::now() < deadline, "the submissions did not wait");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    warren_shared::amqp::close(&conn, "looked").await;
    let started = Instant::now();
    let status = env.client.status("bomb-h-held", ANSWER).await;
    eprintln!("bomb h': status answered in {:?}", started.elapsed());
    assert_eq!(status.unwrap().status, WorkflowStatus::Running);
    let cancelled = env.client.cancel("bomb-h-held", ANSWER).await.unwrap();
    assert_eq!(cancelled.status, WorkflowStatus::Cancelled);
    env.builtin_worker("w");
    for w in waits {
        let r = w.await.unwrap().unwrap();
        assert_eq!(r.status, WorkflowStatus::Succeeded, "{r:?}");
    }
    ordinary(&env).await;
    s.assert_bounded("h'");
    s.kill();
    env.finish().await;
}

/// (h'') A cancel of a submission held in the scheduler for the budget
/// takes hold: the submission is taken at once and cancelled, instead of
/// the cancel answering `not_found` and the workflow running later anyway.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bomb_h_a_waiting_submission_can_be_cancelled() {
    let mut env = Env::new().await;
    env.track_queue("held");
    let logs = tempfile::tempdir().unwrap();
    let mut s = ChildScheduler::start(&env, &logs, &[("WARREN_MAX_ACTIVE_TASKS", "10")]).await;
    let tasks = |queue: &str| -> Vec<Value> {
        (0..10)
            .map(|t| json!({"id": format!("t{t}"), "type": "echo", "queue": queue}))
            .collect()
    };
    env.client
        .submit(json!({"id": "bomb-h2-held", "tasks": tasks("held")}))
        .await
        .unwrap();
    dispatched(&env, "bomb-h2-held", "t0").await;
    env.client
        .submit(json!({"id": "bomb-h2-waits", "tasks": tasks("held")}))
        .await
        .unwrap();
    let deadline = Instant::now() + DEADLINE;
    while s.metric("warren_requests_waiting").await.unwrap_or(0.0) < 1.0 {
        assert!(Instant::now() < deadline, "the submission did not wait");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let cancelled = env.client.cancel("bomb-h2-waits", ANSWER).await.unwrap();
    assert_eq!(cancelled.status, WorkflowStatus::Cancelled, "{cancelled:?}");
    let again = env.client.status("bomb-h2-waits", ANSWER).await.unwrap();
    assert_eq!(again.status, WorkflowStatus::Cancelled);
    let held = env.client.cancel("bomb-h2-held", ANSWER).await.unwrap();
    assert_eq!(held.status, WorkflowStatus::Cancelled);
    env.builtin_worker("w");
    ordinary(&env).await;
    s.assert_bounded("h''");
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
