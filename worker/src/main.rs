//! `warren-worker`: runs a worker pool with the built-in handlers.

use clap::Parser;
use std::time::Duration;
use warren_shared::cli::BrokerArgs;
use warren_worker::{Registry, Worker, WorkerConfig, kinds};

/// A Warren worker pool running the built-in handlers (echo, sleep, fail).
/// Embed the `warren-worker` library to register your own.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    #[command(flatten)]
    broker: BrokerArgs,
    /// Task queue to consume; repeat for several.
    #[arg(
        long = "queue",
        env = "WARREN_QUEUES",
        value_delimiter = ',',
        default_value = "default"
    )]
    queues: Vec<String>,
    /// Tasks executed at once across all queues (with one queue, also the
    /// prefetch).
    #[arg(long, env = "WARREN_CONCURRENCY", default_value_t = 8)]
    concurrency: u16,
    /// Id shown in results (default: host name and process id).
    #[arg(long, env = "WARREN_WORKER_ID")]
    worker_id: Option<String>,
    /// Deliveries of one task after which it fails instead of running again.
    #[arg(long, env = "WARREN_MAX_DELIVERIES", default_value_t = 5)]
    max_deliveries: u32,
    /// Seconds in-flight tasks may run on after SIGTERM.
    #[arg(long, env = "WARREN_SHUTDOWN_GRACE", default_value_t = 30)]
    shutdown_grace: u64,
    /// Milliseconds between heartbeats to the scheduler's worker registry
    /// (at least 100).
    #[arg(long, env = "WARREN_HEARTBEAT_MS", default_value_t = 5000)]
    heartbeat_ms: u64,
    /// Largest result to publish, in bytes of JSON; a larger one is
    /// replaced by a failed, non-retryable result saying so.
    #[arg(long, env = "WARREN_MAX_RESULT_BYTES", default_value_t = warren_shared::limits::DEFAULT_MAX_RESULT_BYTES)]
    max_result_bytes: usize,
    /// Most results in one message while earlier ones await the broker's
    /// confirm (1 to 1000; 1 sends each result alone).
    #[arg(long, env = "WARREN_RESULT_BATCH", default_value_t = warren_worker::DEFAULT_RESULT_BATCH,
          value_parser = clap::value_parser!(u16).range(1..=1000))]
    result_batch: u16,
    /// Enables the `shell` task kind for exactly these commands
    /// (comma-separated names or absolute paths); off when empty. Each is
    /// resolved to an absolute path through this process's PATH at start.
    #[arg(long, env = "WARREN_SHELL_ALLOW", value_delimiter = ',')]
    shell_allow: Vec<String>,
    /// Environment variables a `shell` task may set: names, or prefixes
    /// ending in `*` (comma-separated); none when empty. PATH, HOME, LD_*
    /// and other loader and interpreter variables are never allowed.
    #[arg(long, env = "WARREN_SHELL_ENV_ALLOW", value_delimiter = ',')]
    shell_env_allow: Vec<String>,
    /// Bytes kept of each of a `shell` command's stdout and stderr.
    #[arg(long, env = "WARREN_SHELL_MAX_OUTPUT_BYTES", default_value_t = kinds::DEFAULT_MAX_OUTPUT_BYTES)]
    shell_max_output_bytes: usize,
    /// Enables the `http` task kind for exactly these hosts (`host` or
    /// `host:port`, comma-separated); off when empty.
    #[arg(long, env = "WARREN_HTTP_ALLOW_HOSTS", value_delimiter = ',')]
    http_allow_hosts: Vec<String>,
    /// Milliseconds an `http` request may take, from connecting to the end
    /// of the body, when its task gives no `timeout_ms`.
    #[arg(long, env = "WARREN_HTTP_TIMEOUT_MS", default_value_t = 30_000)]
    http_timeout_ms: u64,
    /// Bytes kept of an `http` response body; the rest is not read.
    #[arg(long, env = "WARREN_HTTP_MAX_RESPONSE_BYTES", default_value_t = kinds::DEFAULT_MAX_OUTPUT_BYTES)]
    http_max_response_bytes: usize,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    warren_shared::cli::init_logging("info");
    let args = Args::parse();
    let host = warren_shared::host_name();
    let config = WorkerConfig {
        amqp: args.broker.config()?,
        queues: args.queues,
        concurrency: args.concurrency,
        worker_id: args
            .worker_id
            .unwrap_or_else(|| format!("{host}-{}", std::process::id())),
        shutdown_grace: Duration::from_secs(args.shutdown_grace),
        max_deliveries: args.max_deliveries,
        heartbeat_interval: Duration::from_millis(args.heartbeat_ms.max(100)),
        max_result_bytes: args.max_result_bytes,
        result_batch: usize::from(args.result_batch),
    };
    let shutdown = warren_shared::shutdown::on_signal();
    let mut registry = Registry::with_builtins();
    let shell: Vec<String> = args
        .shell_allow
        .into_iter()
        .filter(|c| !c.is_empty())
        .collect();
    if !shell.is_empty() {
        let mut settings = kinds::ShellConfig::new(shell);
        settings.env_allow = args.shell_env_allow;
        settings.max_output_bytes = args.shell_max_output_bytes;
        let shell = kinds::Shell::new(settings)?;
        let commands: Vec<String> = shell
            .commands()
            .map(|(name, path)| format!("{name}={}", path.display()))
            .collect();
        tracing::info!(?commands, "Task kind `shell` enabled");
        shell.register(&mut registry);
    }
    let hosts: Vec<String> = args
        .http_allow_hosts
        .into_iter()
        .filter(|h| !h.is_empty())
        .collect();
    if !hosts.is_empty() {
        tracing::info!(hosts = ?hosts, "Task kind `http` enabled");
        let mut settings = kinds::HttpConfig::new(hosts);
        settings.default_timeout = Duration::from_millis(args.http_timeout_ms);
        settings.max_body_bytes = args.http_max_response_bytes;
        kinds::register_http_with(&mut registry, settings);
    }
    Worker::new(config, registry).run(shutdown).await?;
    Ok(())
}
