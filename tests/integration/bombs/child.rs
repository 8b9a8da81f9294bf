//! What the bombs share: the scheduler as a child process (peak RSS,
//! `/metrics`), raw AMQP to send and read hostile messages, and the
//! ordinary workflow that must still succeed after each bomb.
use crate::support::{DEADLINE, Env, Proc, binaries, http_get, store_env};
use lapin::BasicProperties;
use serde_json::{Value, json};
use std::{
    net::SocketAddr,
    path::PathBuf,
    process::{Command, Stdio},
    time::{Duration, Instant},
};
use warren_shared::{AmqpConfig, wire::WorkflowStatus};
use warren_worker::Registry;

/// How soon a bomb must be answered.
pub(super) const ANSWER: Duration = Duration::from_secs(20);
/// How soon a workflow moving 21 outputs of about the result limit must
/// end: seconds in a release build, but a debug build's serde_json escapes
/// strings at a few tens of MB/s (its per-byte precondition checks:
/// measured, 85% of the scheduler's CPU), and the scheduler serialises
/// each output several times (measured, stored, sent): with 8 MiB results,
/// about 80 s on 2 cores.
pub(super) const ANSWER_MOVING_OUTPUTS: Duration = if cfg!(debug_assertions) {
    Duration::from_secs(240)
} else {
    ANSWER
};
/// The scheduler's peak resident memory must stay under this (MB).
pub(super) const MAX_RSS_MB: f64 = 1536.0;
pub(super) const MIB: usize = 1024 * 1024;

/// A `warren-scheduler` child process on the test's namespace and store,
/// with its HTTP endpoint on a free port and its log in a file.
pub(super) struct ChildScheduler {
    pub(super) proc: Proc,
    pub(super) http: SocketAddr,
    pub(super) log: PathBuf,
}

impl ChildScheduler {
    /// Starts the scheduler binary with `vars` added to its environment,
    /// and waits until `/healthz` says it serves.
    pub(super) async fn start(
        env: &Env,
        logs: &tempfile::TempDir,
        vars: &[(&str, &str)],
    ) -> ChildScheduler {
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

    pub(super) fn pid(&self) -> u32 {
        self.proc.0.id()
    }

    /// Its peak resident memory so far (MB).
    pub(super) fn peak_rss_mb(&self) -> f64 {
        warren_harness::procfs::peak_rss_mb(self.pid()).expect("the scheduler is running")
    }

    /// Asserts that it still runs and that its peak memory stayed under
    /// [`MAX_RSS_MB`]; prints the figure.
    pub(super) fn assert_bounded(&mut self, case: &str) {
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
    pub(super) async fn metric(&self, name: &str) -> Option<f64> {
        let (status, _, body) = try_get(self.http, "/metrics").await.ok()?;
        if status != 200 {
            return None;
        }
        metric_in(&body, name)
    }

    pub(super) fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// SIGKILL, as a crash would.
    pub(super) fn kill(mut self) {
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
pub(super) fn metric_in(body: &str, name: &str) -> Option<f64> {
    body.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == name).then(|| v.trim().parse().ok()).flatten()
    })
}

/// [`http_get`] that fails rather than panics while nothing listens.
pub(super) async fn try_get(
    addr: SocketAddr,
    path: &str,
) -> std::io::Result<(u16, String, String)> {
    tokio::net::TcpStream::connect(addr).await?;
    Ok(http_get(addr, path).await)
}

/// Raw AMQP: requests with a `reply_to` of this connection's private
/// queue, answers read as JSON; results and anything else published as
/// given.
pub(super) struct Raw {
    pub(super) conn: lapin::Connection,
    pub(super) publish: lapin::Channel,
    pub(super) queue: String,
    pub(super) replies: lapin::Consumer,
    pub(super) amqp: AmqpConfig,
}

impl Raw {
    pub(super) async fn open(amqp: &AmqpConfig) -> Raw {
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
    pub(super) async fn put(&self, exchange: &str, body: &[u8], properties: BasicProperties) {
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
    pub(super) async fn send(&self, body: &[u8], correlation: &str) {
        self.send_all(body, &[correlation.to_owned()]).await;
    }

    /// The same request once per correlation id: all published, then
    /// every confirm awaited.
    pub(super) async fn send_all(&self, body: &[u8], correlations: &[String]) {
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
    pub(super) async fn send_result(&self, body: &[u8]) {
        self.put(
            &self.amqp.topology().results(),
            body,
            warren_shared::amqp::json_properties(),
        )
        .await;
    }

    /// The next answer: (correlation id, body size, report).
    pub(super) async fn reply(&mut self, within: Duration) -> (String, usize, Value) {
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
    pub(super) async fn ask(&mut self, body: &[u8], within: Duration) -> (usize, Value) {
        let correlation = uuid::Uuid::new_v4().to_string();
        self.send(body, &correlation).await;
        loop {
            let (c, size, report) = self.reply(within).await;
            if c == correlation {
                return (size, report);
            }
        }
    }

    pub(super) async fn close(self) {
        warren_shared::amqp::close(&self.conn, "done").await;
    }
}

/// A one-task workflow on `default` succeeds: the scheduler is unharmed.
pub(super) async fn ordinary(env: &Env) {
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
pub(super) async fn dispatched(env: &Env, id: &str, task: &str) {
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
pub(super) fn with_big() -> Registry {
    let mut r = Registry::with_builtins();
    r.register("big", |ctx| async move {
        let n = ctx.input["bytes"].as_u64().unwrap_or(0) as usize;
        Ok(json!("x".repeat(n)))
    });
    r
}

pub(super) fn str_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}
