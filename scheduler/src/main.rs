//! `warren-scheduler`: runs the scheduler with settings from flags and env.

use anyhow::Context;
use clap::Parser;
use std::io::Read;
use warren_scheduler::{
    Scheduler, SchedulerConfig,
    bounds::Bounds,
    engine::TypeLimits,
    http::{Access, Hosts, Scope, Tokens},
    store::{StoreLocation, postgres::PgTimeouts},
    validate::Limits,
};
use warren_shared::cli::BrokerArgs;

/// Warren's scheduler: validates workflow requests, keeps their state in a
/// SQLite or PostgreSQL store and dispatches ready tasks to RabbitMQ.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    #[command(flatten)]
    broker: BrokerArgs,
    /// The scheduler's state: a SQLite file, or a PostgreSQL URL
    /// (`postgres://user:password@host:5432/db`), where several schedulers
    /// may share one database and the work, split by partitions of the
    /// workflows.
    #[arg(
        long,
        env = "WARREN_STORE",
        default_value = "warren.db",
        hide_env_values = true
    )]
    store: String,
    /// Most tasks per queue dispatched and not yet answered, for every
    /// queue. Unset: each queue's window follows the concurrency of the
    /// live workers consuming it (from their heartbeats), at most 10,000
    /// (past 128 slots, less when its tasks are short);
    /// 200 for a queue no heartbeat names or with consumers that send none.
    #[arg(long, env = "WARREN_DISPATCH_WINDOW")]
    dispatch_window: Option<usize>,
    /// Milliseconds added to a task's timeout_ms before an attempt without
    /// a result is failed and retried.
    #[arg(long, env = "WARREN_LEASE_GRACE_MS", default_value_t = 30_000)]
    lease_grace_ms: u64,
    /// Largest accepted request body, in bytes.
    #[arg(long, env = "WARREN_MAX_BODY_BYTES", default_value_t = Limits::default().max_body_bytes)]
    max_body_bytes: usize,
    /// Most tasks in one workflow.
    #[arg(long, env = "WARREN_MAX_TASKS", default_value_t = Limits::default().max_tasks)]
    max_tasks: usize,
    /// Deepest nesting of any input.
    #[arg(long, env = "WARREN_MAX_INPUT_DEPTH", default_value_t = Limits::default().max_input_depth)]
    max_input_depth: usize,
    /// Most problems one rejection lists.
    #[arg(long, env = "WARREN_MAX_REPORTED_ERRORS", default_value_t = Limits::default().max_reported_errors)]
    max_reported_errors: usize,
    /// Largest resolved input of a task, in bytes of JSON; past it the task
    /// fails for good.
    #[arg(long, env = "WARREN_MAX_TASK_INPUT_BYTES", default_value_t = Bounds::default().max_task_input_bytes)]
    max_task_input_bytes: usize,
    /// Largest report, in bytes; past it the largest outputs (then tasks)
    /// are left out, each readable alone.
    #[arg(long, env = "WARREN_MAX_REPORT_BYTES", default_value_t = Bounds::default().max_report_bytes)]
    max_report_bytes: usize,
    /// Largest result message read, in bytes; a larger one is
    /// dead-lettered. Keep it at least the workers' WARREN_MAX_RESULT_BYTES.
    #[arg(long, env = "WARREN_MAX_RESULT_BYTES", default_value_t = Bounds::default().max_result_bytes)]
    max_result_bytes: usize,
    /// Most instances of one mapped task; a wider array fails the task.
    #[arg(long, env = "WARREN_MAX_MAP_WIDTH", default_value_t = Bounds::default().max_map_width)]
    max_map_width: usize,
    /// Most distinct task queues used by running workflows at once.
    #[arg(long, env = "WARREN_MAX_QUEUES", default_value_t = Bounds::default().max_queues)]
    max_queues: usize,
    /// Most tasks of running workflows held in memory (the working set);
    /// past it new submissions are queued in the store.
    #[arg(long, env = "WARREN_MAX_ACTIVE_TASKS", default_value_t = Bounds::default().max_active_tasks)]
    max_active_tasks: usize,
    /// Most bytes (request bodies and outputs) of running workflows held in
    /// memory; past it new submissions are queued in the store.
    #[arg(long, env = "WARREN_MAX_ACTIVE_BYTES", default_value_t = Bounds::default().max_active_bytes)]
    max_active_bytes: usize,
    /// Most workflows queued for room in the working set; past it new
    /// submissions wait unacked in the broker.
    #[arg(long, env = "WARREN_MAX_QUEUED_WORKFLOWS", default_value_t = Bounds::default().max_queued_workflows)]
    max_queued_workflows: usize,
    /// Most bytes of deliveries taken into one batch.
    #[arg(long, env = "WARREN_MAX_BATCH_BYTES", default_value_t = Bounds::default().max_batch_bytes)]
    max_batch_bytes: usize,
    /// Most bytes of unacked deliveries per consumer (caps the prefetch).
    #[arg(long, env = "WARREN_MAX_IN_FLIGHT_BYTES", default_value_t = Bounds::default().max_in_flight_bytes)]
    max_in_flight_bytes: usize,
    /// Largest message published; set it to the broker's max_message_size.
    #[arg(long, env = "WARREN_MAX_MESSAGE_BYTES", default_value_t = Bounds::default().max_message_bytes)]
    max_message_bytes: usize,
    /// Address of the HTTP endpoint (/healthz, /metrics, /api/..., the web
    /// page), e.g. 127.0.0.1:8080; none by default. Without tokens only a
    /// loopback address is accepted.
    #[arg(long, env = "WARREN_HTTP_ADDR")]
    http_addr: Option<std::net::SocketAddr>,
    /// A file of the HTTP endpoint's bearer tokens, one `read TOKEN` or
    /// `admin TOKEN` per line (`#` comments). The variables
    /// WARREN_HTTP_READ_TOKEN and WARREN_HTTP_ADMIN_TOKEN add one each
    /// (there are no flags for them: a command line is visible to every
    /// user of the host).
    #[arg(long, env = "WARREN_HTTP_TOKENS_FILE")]
    http_tokens_file: Option<std::path::PathBuf>,
    /// Host names the HTTP endpoint answers to besides localhost,
    /// 127.0.0.1, [::1] and the address it listens on, comma-separated
    /// `host` (any port) or `host:port`; other `Host`s get 421.
    #[arg(long, env = "WARREN_HTTP_HOSTS", default_value = "")]
    http_hosts: String,
    /// Which of a workflow's ready tasks goes first: `critical-path`
    /// (longest remaining path, weighted by duration hints) or `fifo`.
    #[arg(long, env = "WARREN_DISPATCH_ORDER", value_enum, default_value_t = Order::CriticalPath)]
    dispatch_order: Order,
    /// Most tasks of a type running at once across all workers, e.g.
    /// `payments.charge=5,email.send=20`; other types have no limit.
    #[arg(long, env = "WARREN_TYPE_LIMITS", default_value = "")]
    type_limits: String,
    /// How long an ended workflow (its tasks, results, replies and runs)
    /// is kept before it is deleted, as 90s, 12h, 7d ...; 0 or forever
    /// keeps everything. The window in which a duplicate submission is
    /// answered with the stored outcome.
    #[arg(long, env = "WARREN_RETENTION", default_value = "7d")]
    retention: String,
    /// PostgreSQL: how long the loop may go without a turn while this
    /// scheduler owns partitions before it gives them up to the others,
    /// and how long the database keeps its lock session when it sends
    /// nothing (idle_session_timeout, PostgreSQL 14+); 0 turns both off.
    #[arg(long, env = "WARREN_WATCHDOG", default_value = "10s")]
    watchdog: String,
    /// PostgreSQL: idle time before the first TCP keepalive probe, on
    /// every connection, both ends; 0 turns keepalives off.
    #[arg(long, env = "WARREN_PG_KEEPALIVE_IDLE", default_value = "5s")]
    pg_keepalive_idle: String,
    /// PostgreSQL: time between keepalive probes.
    #[arg(long, env = "WARREN_PG_KEEPALIVE_INTERVAL", default_value = "2s")]
    pg_keepalive_interval: String,
    /// PostgreSQL: unanswered keepalive probes before a connection is
    /// dropped.
    #[arg(long, env = "WARREN_PG_KEEPALIVE_RETRIES", default_value_t = 3)]
    pg_keepalive_retries: u32,
    /// PostgreSQL: how long sent data may stay unacknowledged before a
    /// connection is dropped, both ends (Linux); 0: the system's default.
    #[arg(long, env = "WARREN_PG_TCP_USER_TIMEOUT", default_value = "11s")]
    pg_tcp_user_timeout: String,
    /// PostgreSQL: the server ends a session idle inside a transaction
    /// this long (releasing its locks); 0: never.
    #[arg(
        long,
        env = "WARREN_PG_IDLE_IN_TRANSACTION_TIMEOUT",
        default_value = "5s"
    )]
    pg_idle_in_transaction_timeout: String,
    /// PostgreSQL: longest wait for a lock before the statement fails; 0:
    /// no limit.
    #[arg(long, env = "WARREN_PG_LOCK_TIMEOUT", default_value = "5s")]
    pg_lock_timeout: String,
}

/// A duration flag (`500ms`, `10s`, `0`), named by its variable in errors.
fn duration(var: &str, value: &str) -> anyhow::Result<std::time::Duration> {
    if value == "0" {
        return Ok(std::time::Duration::ZERO);
    }
    warren_shared::cli::duration_ms(value)
        .map(std::time::Duration::from_millis)
        .map_err(|e| anyhow::anyhow!("{var} {e}"))
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum Order {
    CriticalPath,
    Fifo,
}

// One thread: the scheduler's loop is sequential by design (SQLite has its
// own thread, lapin its I/O thread), and a multi-threaded runtime only adds
// wake-ups between threads: measured 81.5 -> 68 ms of scheduler CPU per
// 1,000 tasks in the fan-out benchmark.
#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    warren_shared::cli::init_logging("info");
    let args = Args::parse();
    let config = SchedulerConfig {
        amqp: args.broker.config()?,
        store: StoreLocation::parse(&args.store),
        limits: Limits {
            max_body_bytes: args.max_body_bytes,
            max_tasks: args.max_tasks,
            max_input_depth: args.max_input_depth,
            max_reported_errors: args.max_reported_errors,
        },
        bounds: Bounds {
            max_task_input_bytes: args.max_task_input_bytes,
            max_report_bytes: args.max_report_bytes,
            max_result_bytes: args.max_result_bytes,
            max_queues: args.max_queues,
            max_active_tasks: args.max_active_tasks,
            max_active_bytes: args.max_active_bytes,
            max_queued_workflows: args.max_queued_workflows,
            max_batch_bytes: args.max_batch_bytes,
            max_in_flight_bytes: args.max_in_flight_bytes,
            max_message_bytes: args.max_message_bytes,
            max_map_width: args.max_map_width,
        },
        dispatch_window: args.dispatch_window,
        lease_grace: std::time::Duration::from_millis(args.lease_grace_ms),
        http_addr: args.http_addr,
        http_access: Access {
            tokens: http_tokens(args.http_tokens_file.as_deref())?,
            hosts: Hosts::parse(&args.http_hosts).context("WARREN_HTTP_HOSTS")?,
        },
        dispatch_order: match args.dispatch_order {
            Order::CriticalPath => warren_scheduler::engine::DispatchOrder::CriticalPath,
            Order::Fifo => warren_scheduler::engine::DispatchOrder::Fifo,
        },
        type_limits: TypeLimits::parse(&args.type_limits)?,
        retention: match args.retention.as_str() {
            "0" | "forever" => None,
            d => Some(std::time::Duration::from_millis(
                warren_shared::cli::duration_ms(d)
                    .map_err(|e| anyhow::anyhow!("WARREN_RETENTION {e}"))?,
            )),
        },
        watchdog: duration("WARREN_WATCHDOG", &args.watchdog)?,
        pg: PgTimeouts {
            keepalive_idle: duration("WARREN_PG_KEEPALIVE_IDLE", &args.pg_keepalive_idle)?,
            keepalive_interval: duration(
                "WARREN_PG_KEEPALIVE_INTERVAL",
                &args.pg_keepalive_interval,
            )?,
            keepalive_retries: args.pg_keepalive_retries,
            tcp_user_timeout: duration("WARREN_PG_TCP_USER_TIMEOUT", &args.pg_tcp_user_timeout)?,
            idle_in_transaction: duration(
                "WARREN_PG_IDLE_IN_TRANSACTION_TIMEOUT",
                &args.pg_idle_in_transaction_timeout,
            )?,
            lock_timeout: duration("WARREN_PG_LOCK_TIMEOUT", &args.pg_lock_timeout)?,
            ..PgTimeouts::default()
        },
        ..SchedulerConfig::default()
    };
    config.bounds.check().map_err(anyhow::Error::msg)?;
    tracing::info!(amqp = ?config.amqp, store = %config.store, "Starting scheduler");
    let shutdown = warren_shared::shutdown::on_signal();
    Scheduler::new(config).run(shutdown).await?;
    Ok(())
}

/// Largest tokens file read.
const MAX_TOKENS_FILE_BYTES: u64 = 1024 * 1024;

/// The HTTP endpoint's tokens: those of the file, and one each from
/// WARREN_HTTP_READ_TOKEN and WARREN_HTTP_ADMIN_TOKEN (empty counts as
/// unset). Errors name the file or the variable and the line, never a
/// token.
fn http_tokens(file: Option<&std::path::Path>) -> anyhow::Result<Tokens> {
    let mut tokens = Tokens::default();
    if let Some(path) = file {
        let mut text = String::new();
        std::fs::File::open(path)
            .and_then(|f| f.take(MAX_TOKENS_FILE_BYTES + 1).read_to_string(&mut text))
            .with_context(|| format!("reading the tokens file {}", path.display()))?;
        if text.len() as u64 > MAX_TOKENS_FILE_BYTES {
            anyhow::bail!(
                "the tokens file {} is over {MAX_TOKENS_FILE_BYTES} bytes",
                path.display()
            );
        }
        tokens
            .add_file(&text)
            .with_context(|| format!("in the tokens file {}", path.display()))?;
    }
    for (var, scope) in [
        ("WARREN_HTTP_READ_TOKEN", Scope::Read),
        ("WARREN_HTTP_ADMIN_TOKEN", Scope::Admin),
    ] {
        match std::env::var(var) {
            Ok(token) if !token.is_empty() => tokens.add(scope, token.trim(), var)?,
            Ok(_) | Err(std::env::VarError::NotPresent) => {}
            Err(std::env::VarError::NotUnicode(_)) => anyhow::bail!("{var} is not text"),
        }
    }
    Ok(tokens)
}
