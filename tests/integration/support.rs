//! Test harness: a fresh namespace per test, a scheduler and workers run
//! in-process against the real RabbitMQ, and cleanup of everything the
//! test declared, even when it fails.

use std::{
    collections::HashMap,
    path::PathBuf,
    sync::{Arc, Mutex, OnceLock},
    time::{Duration, Instant},
};
use tokio::{sync::Semaphore, task::JoinHandle};
use tokio_util::sync::CancellationToken;
use warren_producer::Client;
use warren_scheduler::{Metrics, Scheduler, SchedulerConfig, store::StoreLocation};
use warren_shared::{AmqpConfig, Topology};
use warren_worker::{Registry, Worker, WorkerConfig};

/// How long any single wait in a test may take before it fails.
pub const DEADLINE: Duration = Duration::from_secs(30);

pub fn amqp_addr() -> String {
    std::env::var("AMQP_ADDR").unwrap_or_else(|_| warren_shared::amqp::DEFAULT_AMQP_ADDR.to_owned())
}

/// One test's world.
pub struct Env {
    pub amqp: AmqpConfig,
    pub client: Arc<Client>,
    /// SQLite in the test's directory, or PostgreSQL when
    /// `WARREN_TEST_STORE` is a `postgres://` URL (the namespace's own
    /// schema, dropped at the end).
    pub store: StoreLocation,
    _dir: tempfile::TempDir,
    root: CancellationToken,
    joins: Vec<(String, JoinHandle<()>)>,
    queues: Vec<String>,
    cleaned: bool,
    created: Instant,
}

/// A scheduler started by [`Env::scheduler`].
pub struct RunningScheduler {
    pub metrics: Arc<Metrics>,
    /// The HTTP endpoint's address, once it listens (when configured).
    pub http: Arc<OnceLock<std::net::SocketAddr>>,
    stop: CancellationToken,
    join: JoinHandle<Result<(), warren_scheduler::SchedulerError>>,
}

impl RunningScheduler {
    /// Waits for it to stop by itself and returns why.
    pub async fn failure(self) -> warren_scheduler::SchedulerError {
        let r = tokio::time::timeout(DEADLINE, self.join)
            .await
            .expect("scheduler stops in time");
        r.expect("scheduler task")
            .expect_err("the scheduler should have failed")
    }

    /// Kills it: its task is dropped wherever it is (in a commit, between
    /// publishing and acking, ...), with no wind-down, as a crash would;
    /// its connections close as the dropped task lets them go.
    pub async fn kill(self) {
        self.join.abort();
        let _ = self.join.await;
    }

    /// Stops it cleanly and checks it had not failed.
    pub async fn stop(self) {
        self.stop.cancel();
        let r = tokio::time::timeout(DEADLINE, self.join)
            .await
            .expect("scheduler stops in time");
        r.expect("scheduler task")
            .expect("scheduler ran without error");
    }
}

impl Env {
    pub async fn new() -> Env {
        Env::over(amqp_addr(), None).await
    }

    /// A world whose durable queues are quorum queues.
    pub async fn quorum() -> Env {
        Env::build(amqp_addr(), None, warren_shared::QueueType::Quorum).await
    }

    /// A world reaching the broker at `addr`, trusting `tls_ca_pem`.
    pub async fn over(addr: String, tls_ca_pem: Option<String>) -> Env {
        Env::build(addr, tls_ca_pem, warren_shared::QueueType::Classic).await
    }

    async fn build(
        addr: String,
        tls_ca_pem: Option<String>,
        queue_type: warren_shared::QueueType,
    ) -> Env {
        if std::env::var_os("RUST_LOG").is_some() {
            // Logs of the in-process scheduler and workers, on request.
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
                .with_test_writer()
                .try_init();
        }
        let ns = format!("wt-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
        let mut amqp = AmqpConfig::new(addr, ns);
        amqp.tls_ca_pem = tls_ca_pem;
        amqp.queue_type = queue_type;
        let client = Arc::new(Client::connect(&amqp).await.expect("connect to RabbitMQ"));
        let dir = tempfile::tempdir().unwrap();
        Env {
            store: test_store(&dir.path().join("warren.db")),
            amqp,
            client,
            _dir: dir,
            root: CancellationToken::new(),
            joins: Vec::new(),
            queues: vec!["default".into()],
            cleaned: false,
            created: Instant::now(),
        }
    }

    /// Puts this test on SQLite whatever `WARREN_TEST_STORE` says.
    pub fn use_sqlite(&mut self) {
        self.store = StoreLocation::Sqlite(self._dir.path().join("warren.db"));
    }

    pub fn scheduler_config(&self) -> SchedulerConfig {
        SchedulerConfig {
            amqp: self.amqp.clone(),
            store: self.store.clone(),
            ..SchedulerConfig::default()
        }
    }

    pub fn scheduler(&self, config: SchedulerConfig) -> RunningScheduler {
        let s = Scheduler::new(config);
        let metrics = s.metrics();
        let http = s.http_addr();
        let stop = self.root.child_token();
        let join = tokio::spawn(s.run(stop.clone()));
        RunningScheduler {
            metrics,
            http,
            stop,
            join,
        }
    }

    /// A scheduler serving HTTP on a free port, and a worker `worker` on
    /// `default` with the built-ins and `gated` (held until the returned
    /// semaphore gives permits; its type is limited to 10 running, for the
    /// limit's gauges). Returns once the endpoint listens.
    pub async fn with_http(
        &mut self,
        worker: &str,
    ) -> (RunningScheduler, Arc<Semaphore>, std::net::SocketAddr) {
        let mut config = self.scheduler_config();
        config.http_addr = Some("127.0.0.1:0".parse().unwrap());
        config.type_limits = vec![("gated".into(), 10)];
        // A fixed window: the page's tests count tasks dispatched past the
        // worker's 4 slots (up to the type's limit of 10).
        config.dispatch_window = Some(200);
        let scheduler = self.scheduler(config);
        let gate = Arc::new(Semaphore::new(0));
        let mut registry = Registry::with_builtins();
        add_gated(&mut registry, "gated", &Log::default(), worker, Some(&gate));
        self.worker(registry, &["default"], 4, worker);
        wait_until("the endpoint listens", || scheduler.http.get().is_some()).await;
        let addr = *scheduler.http.get().unwrap();
        (scheduler, gate, addr)
    }

    /// Makes [`Env::finish`] delete this task queue too.
    pub fn track_queue(&mut self, queue: &str) {
        if !self.queues.iter().any(|x| x == queue) {
            self.queues.push(queue.to_owned());
        }
    }

    /// Starts a worker with the built-in handlers on `default`.
    pub fn builtin_worker(&mut self, id: &str) {
        self.worker(Registry::with_builtins(), &["default"], 4, id);
    }

    /// Starts a worker on `queues`; it runs until the test ends.
    pub fn worker(&mut self, registry: Registry, queues: &[&str], concurrency: u16, id: &str) {
        let config = self.worker_config(queues, concurrency, id);
        let (_, join) = self.stoppable_worker(registry, config);
        self.joins.push((
            id.to_owned(),
            tokio::spawn(async move {
                join.await
                    .expect("no panic")
                    .expect("worker ran without error");
            }),
        ));
    }

    /// The configuration of worker `id` on `queues` (which
    /// [`Env::finish`] deletes too).
    pub fn worker_config(&mut self, queues: &[&str], concurrency: u16, id: &str) -> WorkerConfig {
        for q in queues {
            self.track_queue(q);
        }
        WorkerConfig {
            amqp: self.amqp.clone(),
            queues: queues.iter().map(|q| (*q).to_owned()).collect(),
            concurrency,
            worker_id: id.to_owned(),
            shutdown_grace: Duration::from_secs(5),
            // Tests look at the worker registry: heard from within 0.25 s.
            heartbeat_interval: Duration::from_millis(250),
            ..WorkerConfig::default()
        }
    }

    /// Starts a worker the test stops itself with the returned token.
    pub fn stoppable_worker(
        &self,
        registry: Registry,
        config: WorkerConfig,
    ) -> (
        CancellationToken,
        JoinHandle<Result<(), warren_worker::WorkerError>>,
    ) {
        let w = Worker::new(config, registry);
        let stop = self.root.child_token();
        (stop.clone(), tokio::spawn(w.run(stop)))
    }

    /// Stops everything and deletes the namespace.
    pub async fn finish(mut self) {
        self.root.cancel();
        for (id, j) in std::mem::take(&mut self.joins) {
            tokio::time::timeout(DEADLINE, j)
                .await
                .unwrap_or_else(|_| panic!("worker {id} did not stop within {DEADLINE:?}"))
                .expect("no panic");
        }
        delete_namespace(&self.amqp, &self.queues).await;
        drop_store_schema(&self.store, &self.amqp.namespace).await;
        self.cleaned = true;
        eprintln!(
            "env {} ran {:?}",
            self.amqp.namespace,
            self.created.elapsed()
        );
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        if self.cleaned {
            return;
        }
        // A failed test: clean up from a thread with its own runtime.
        self.root.cancel();
        let (amqp, queues, store) = (self.amqp.clone(), self.queues.clone(), self.store.clone());
        let _ = std::thread::spawn(move || {
            if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                rt.block_on(delete_namespace(&amqp, &queues));
                rt.block_on(drop_store_schema(&store, &amqp.namespace));
            }
        })
        .join();
    }
}

async fn delete_namespace(amqp: &AmqpConfig, queues: &[String]) {
    let conn = amqp
        .connect("warren test cleanup")
        .await
        .expect("connect for cleanup");
    let ch = conn.create_channel().await.expect("channel");
    Topology::new(amqp.namespace.clone())
        .delete(&ch, queues)
        .await
        .expect("delete the test namespace");
    warren_shared::amqp::close(&conn, "done").await;
}

/// Polls `cond` until it holds; fails the test after [`DEADLINE`].
pub async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + DEADLINE;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// `GET path` on `addr` over plain HTTP/1.1: (status, content type, body).
pub async fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(DEADLINE, s.read_to_end(&mut raw))
        .await
        .expect("an answer in time")
        .unwrap();
    let text = String::from_utf8(raw).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").expect("headers and body");
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    let header = |name: &str| {
        head.lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
            })
            .unwrap_or_default()
    };
    assert!(
        !header("transfer-encoding").contains("chunked"),
        "this helper reads whole bodies only"
    );
    (status, header("content-type"), body.to_owned())
}

/// Like [`wait_until`], for a condition that must be awaited.
pub async fn wait_until_async<F: std::future::Future<Output = bool>>(
    what: &str,
    mut cond: impl FnMut() -> F,
) {
    let deadline = Instant::now() + DEADLINE;
    while !cond().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A shared log of `workflow/task/attempt@worker` lines written by handlers.
#[derive(Clone, Default)]
pub struct Log(Arc<Mutex<Vec<String>>>);

impl Log {
    pub fn push(&self, line: String) {
        self.0.lock().unwrap().push(line);
    }
    pub fn lines(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }
    pub fn contains(&self, prefix: &str) -> bool {
        self.0.lock().unwrap().iter().any(|l| l.starts_with(prefix))
    }
}

/// A registry with the built-ins plus `record`: logs the call and echoes.
pub fn recording(log: &Log, worker: &str) -> Registry {
    let mut r = Registry::with_builtins();
    add_gated(&mut r, "record", log, worker, None);
    r
}

/// Registers `kind`: logs `workflow/task/attempt@worker`, then (with a
/// gate) waits for a permit, then echoes its input.
pub fn add_gated(
    registry: &mut Registry,
    kind: &str,
    log: &Log,
    worker: &str,
    gate: Option<&Arc<Semaphore>>,
) {
    let (log, worker, gate) = (log.clone(), worker.to_owned(), gate.cloned());
    registry.register(kind, move |ctx| {
        let (log, worker, gate) = (log.clone(), worker.clone(), gate.clone());
        async move {
            log.push(format!(
                "{}/{}/{}@{}",
                ctx.workflow_id, ctx.task_id, ctx.attempt, worker
            ));
            if let Some(gate) = gate {
                gate.acquire().await.expect("gate open").forget();
            }
            Ok(ctx.input)
        }
    });
}

/// Committed results of a workflow, read from the store file:
/// (task, attempt, status).
/// The PostgreSQL for tests that need it whatever the test store is:
/// `WARREN_TEST_STORE` when it is one, else the local server.
pub fn pg_url() -> String {
    std::env::var("WARREN_TEST_STORE")
        .ok()
        .filter(|u| u.starts_with("postgres"))
        .unwrap_or_else(|| "postgres://postgres:postgres@127.0.0.1:5432/postgres".into())
}

/// The test's store: PostgreSQL when `WARREN_TEST_STORE` is a
/// `postgres://` URL, else SQLite at `sqlite`.
pub fn test_store(sqlite: &std::path::Path) -> StoreLocation {
    match std::env::var("WARREN_TEST_STORE") {
        Ok(url) if url.starts_with("postgres") => StoreLocation::Postgres(url),
        _ => StoreLocation::Sqlite(sqlite.to_owned()),
    }
}

/// `WARREN_STORE` for a binary: the test store's URL or path.
pub fn store_env(store: &StoreLocation) -> std::ffi::OsString {
    match store {
        StoreLocation::Postgres(url) => url.into(),
        StoreLocation::Sqlite(p) => p.as_os_str().to_owned(),
    }
}

/// Drops the namespace's PostgreSQL schema (nothing for SQLite: its file
/// goes with the test's directory).
pub async fn drop_store_schema(store: &StoreLocation, namespace: &str) {
    let StoreLocation::Postgres(url) = store else {
        return;
    };
    let Ok((client, conn)) = tokio_postgres::connect(url, tokio_postgres::NoTls).await else {
        eprintln!(
            "cannot reach {} to drop the test's schema",
            warren_shared::redact_addr(url)
        );
        return;
    };
    let conn = tokio::spawn(conn);
    let schema = warren_scheduler::store::postgres::schema_of(namespace);
    if let Err(e) = client
        .batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
        .await
    {
        eprintln!("dropping schema {schema}: {e}");
    }
    drop(client);
    let _ = conn.await;
}

/// Waits until no scheduler of this process holds the test's SQLite store
/// (a killed scheduler's store thread lets its lock go once the tasks
/// holding the store have ended); at once on PostgreSQL.
pub async fn store_released(env: &Env) {
    if let StoreLocation::Sqlite(path) = &env.store {
        let lock = format!("{}.lock", path.display());
        wait_until("the killed scheduler's store is released", || {
            std::fs::File::open(&lock).is_ok_and(|f| f.try_lock().is_ok())
        })
        .await;
    }
}

/// Committed results (task, attempt, status) of a workflow, read from the
/// test's store behind the scheduler's back.
pub async fn committed_results(env: &Env, workflow: &str) -> Vec<(String, u32, String)> {
    let sql = "SELECT task_id, attempt, status FROM results WHERE workflow_id = $1 ORDER BY task_id, attempt";
    let path = match &env.store {
        StoreLocation::Sqlite(path) => path,
        StoreLocation::Postgres(url) => {
            let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
                .await
                .unwrap();
            tokio::spawn(conn);
            let schema = warren_scheduler::store::postgres::schema_of(&env.amqp.namespace);
            client
                .batch_execute(&format!("SET search_path = {schema}"))
                .await
                .unwrap();
            return client
                .query(sql, &[&workflow])
                .await
                .unwrap()
                .into_iter()
                .map(|r| (r.get(0), r.get::<_, i32>(1) as u32, r.get(2)))
                .collect();
        }
    };
    let conn = rusqlite::Connection::open(path).unwrap();
    let mut stmt = conn.prepare(&sql.replace("$1", "?1")).unwrap();
    stmt.query_map([workflow], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

/// Paths of the workspace's binaries (`warren`, `warren-scheduler`,
/// `warren-worker`, `chaos`), built once per test run with the same
/// profile as the tests (`release`, `dev` or a custom one).
pub fn binaries() -> &'static HashMap<String, PathBuf> {
    static BINS: OnceLock<HashMap<String, PathBuf>> = OnceLock::new();
    BINS.get_or_init(|| {
        let mut cmd = std::process::Command::new(env!("CARGO"));
        cmd.args(["build", "--message-format=json", "--bins"])
            .args([
                "-p",
                "warren-cli",
                "-p",
                "warren-scheduler",
                "-p",
                "warren-worker",
            ])
            .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."));
        // The test binary's profile, read from where it was built
        // (`target/{profile}/deps/`): `debug` is `dev`; a custom profile
        // (`--profile p`, defined by `CARGO_PROFILE_P_INHERITS`) is
        // passed on, so that its builds never share `target/debug` with
        // another checkout's.
        let profile = std::env::current_exe()
            .ok()
            .and_then(|exe| Some(exe.parent()?.parent()?.file_name()?.to_str()?.to_owned()));
        match profile.as_deref() {
            Some("debug") => {}
            Some(p) => {
                cmd.args(["--profile", p]);
            }
            None if !cfg!(debug_assertions) => {
                cmd.arg("--release");
            }
            None => {}
        }
        // Cargo gives the test process the variables it sets for the
        // package under test (CARGO_PKG_*, CARGO_MANIFEST_DIR, ...); build
        // scripts that watch them would rerun and rebuild half the graph.
        for (key, _) in std::env::vars_os() {
            let key = key.to_string_lossy();
            let keep = matches!(key.as_ref(), "CARGO_HOME" | "CARGO_TARGET_DIR")
                || key.starts_with("CARGO_PROFILE_")
                || key.starts_with("CARGO_BUILD_")
                || key.starts_with("CARGO_REGISTRIES_")
                || key.starts_with("CARGO_NET_");
            if (key.starts_with("CARGO_") && !keep) || key == "OUT_DIR" || key.starts_with("RUSTC")
            {
                cmd.env_remove(key.as_ref());
            }
        }
        let out = cmd.output().expect("run cargo build");
        assert!(
            out.status.success(),
            "cargo build failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter_map(|v| {
                let exe = v["executable"].as_str()?;
                let name = v["target"]["name"].as_str()?;
                Some((name.to_owned(), PathBuf::from(exe)))
            })
            .collect()
    })
}

/// A child process killed when dropped, so a failing test leaves none.
pub struct Proc(pub std::process::Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Submits workflow `id` of 1,200 tasks, one `gated` root holding 1,199
/// dependents pending (a workflow larger than a bounded report lists),
/// and waits for the root's dispatch.
pub async fn held_workflow_of_1200(env: &Env, scheduler: &RunningScheduler, id: &str) {
    let mut tasks = vec![serde_json::json!({"id": "root", "type": "gated"})];
    tasks.extend((0..1_199).map(
        |i| serde_json::json!({"id": format!("t{i}"), "type": "echo", "depends_on": ["root"]}),
    ));
    env.client
        .submit(serde_json::json!({"id": id, "tasks": tasks}))
        .await
        .unwrap();
    wait_until("the root dispatched", || {
        Metrics::get(&scheduler.metrics.engine.tasks_dispatched) == 1
    })
    .await;
}

/// An observer bound to `{ns}.events` with a routing pattern.
pub struct Events {
    conn: lapin::Connection,
    consumer: lapin::Consumer,
}

impl Events {
    pub async fn bind(amqp: &AmqpConfig, pattern: &str) -> Events {
        let conn = warren_shared::amqp::connect(&amqp.addr, "test observer")
            .await
            .unwrap();
        let events = Topology::new(amqp.namespace.clone()).events();
        let (_, _, consumer) = warren_shared::amqp::private_queue(&conn, &[(&events, pattern)])
            .await
            .unwrap();
        Events { conn, consumer }
    }

    /// The next event's routing key and body.
    pub async fn next(&mut self) -> (String, serde_json::Value) {
        use futures_lite::StreamExt;
        let d = tokio::time::timeout(DEADLINE, self.consumer.next())
            .await
            .expect("an event in time")
            .expect("consumer open")
            .expect("delivery");
        (
            d.routing_key.to_string(),
            serde_json::from_slice(&d.data).expect("JSON event"),
        )
    }

    pub async fn close(self) {
        warren_shared::amqp::close(&self.conn, "done").await;
    }
}

/// Force-closes every broker connection whose name mentions `namespace`
/// (Warren names its connections after their namespace), as a network cut
/// or `rabbitmqctl close_all_connections` would, but only for this test.
/// Returns how many were closed.
pub fn cut_connections(namespace: &str) -> usize {
    cut_connections_named(namespace)
}

/// Force-closes every broker connection whose name contains `fragment`.
pub fn cut_connections_named(fragment: &str) -> usize {
    let out = std::process::Command::new("rabbitmqctl")
        .args(["-q", "list_connections", "pid", "client_properties"])
        .output()
        .expect("rabbitmqctl is installed with RabbitMQ");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut closed = 0;
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        if !line.contains(fragment) {
            continue;
        }
        let pid = line.split_whitespace().next().expect("a pid column");
        let status = std::process::Command::new("rabbitmqctl")
            .args(["-q", "close_connection", pid, "test: forced disconnect"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap();
        if status.success() {
            closed += 1;
        }
    }
    closed
}
