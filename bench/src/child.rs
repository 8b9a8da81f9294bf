//! What a child runs: this program re-executed as `scheduler` or `worker`
//! (hidden subcommands) by a [`Deployment`](crate::deployment::Deployment).

use crate::ChildArgs;
use serde_json::{Value, json};
use std::{sync::Arc, time::Duration};
use warren_shared::AmqpConfig;

/// Runs a scheduler until SIGTERM, then writes its counters to
/// `{dir}/metrics-{pid}.json` for the parent.
pub async fn scheduler(addr: String, c: ChildArgs) -> anyhow::Result<()> {
    let config = warren_scheduler::SchedulerConfig {
        amqp: AmqpConfig::new(addr, c.namespace),
        store: match &c.store {
            Some(url) => warren_scheduler::store::StoreLocation::parse(url),
            None => c.dir.join("warren.db").into(),
        },
        dispatch_window: c.window,
        type_limits: warren_scheduler::engine::TypeLimits::parse(&c.type_limits)?,
        dispatch_order: if c.fifo {
            warren_scheduler::engine::DispatchOrder::Fifo
        } else {
            warren_scheduler::engine::DispatchOrder::CriticalPath
        },
        http_addr: c.http_addr,
        requests_prefetch: c
            .requests_prefetch
            .unwrap_or(warren_scheduler::SchedulerConfig::default().requests_prefetch),
        retention: match &c.retention {
            Some(r) => retention(r).map_err(anyhow::Error::msg)?,
            None => None,
        },
        bounds: warren_scheduler::config::Bounds {
            max_active_tasks: c
                .max_active_tasks
                .unwrap_or(warren_scheduler::config::Bounds::default().max_active_tasks),
            max_map_width: c
                .max_map_width
                .unwrap_or(warren_scheduler::config::Bounds::default().max_map_width),
            ..Default::default()
        },
        ..Default::default()
    };
    let counters: serde_json::Map<String, Value> = warren_harness::serve::scheduler(config)
        .await?
        .into_iter()
        .map(|(k, v)| (k.to_owned(), json!(v)))
        .collect();
    std::fs::write(
        c.dir.join(format!("metrics-{}.json", std::process::id())),
        Value::Object(counters).to_string(),
    )?;
    Ok(())
}

/// A retention as the scheduler reads `WARREN_RETENTION`: `90s`, `10m`
/// ..., or `0` or `forever` for none (`None`).
pub fn retention(s: &str) -> Result<Option<Duration>, String> {
    match s {
        "0" | "forever" => Ok(None),
        d => warren_shared::cli::duration_ms(d).map(|ms| Some(Duration::from_millis(ms))),
    }
}

/// Runs a worker with the bench's handlers until SIGTERM.
pub async fn worker(addr: String, c: ChildArgs) -> anyhow::Result<()> {
    // `noop`, `charge` (sleeps `input.ms`; its output is how many
    // `charge` tasks this worker was running when it started, itself
    // included), `flaky` (its first `input.fail_attempts` attempts fail,
    // retryably; the soak's retried and failing workflows) and the
    // built-ins (`sleep` for the scheduling scenarios).
    let mut registry = warren_worker::Registry::with_builtins();
    registry.register("noop", |_ctx| async move { Ok(Value::Null) });
    registry.register("flaky", |ctx| async move {
        let fail = ctx.input.get("fail_attempts").and_then(Value::as_u64);
        match fail {
            Some(n) if u64::from(ctx.attempt) <= n => Err(warren_worker::HandlerError::retryable(
                format!("attempt {} of the first {n}, which fail", ctx.attempt),
            )),
            _ => Ok(Value::Null),
        }
    });
    let charges = Arc::new(std::sync::atomic::AtomicU64::new(0));
    registry.register("charge", move |ctx| {
        let charges = charges.clone();
        async move {
            use std::sync::atomic::Ordering::SeqCst;
            let running = charges.fetch_add(1, SeqCst) + 1;
            let ms = ctx.input.get("ms").and_then(Value::as_u64).unwrap_or(0);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            charges.fetch_sub(1, SeqCst);
            Ok(json!(running))
        }
    });
    let config = warren_worker::WorkerConfig {
        amqp: AmqpConfig::new(addr, c.namespace),
        concurrency: c.concurrency,
        worker_id: c.worker_id,
        // As the worker binary reads it: `WARREN_RESULT_BATCH=1` measures
        // the worker that sends each result alone.
        result_batch: std::env::var("WARREN_RESULT_BATCH")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(usize::from(warren_worker::DEFAULT_RESULT_BATCH)),
        ..Default::default()
    };
    warren_harness::serve::worker(config, registry).await?;
    Ok(())
}
