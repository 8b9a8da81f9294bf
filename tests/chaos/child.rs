//! What a child runs: this program re-executed as `scheduler` or `worker`
//! (hidden subcommands). The worker's `effect` handler appends a line per
//! run to `effects-{pid}.log`, which the parent reads back here to check
//! that every task ran; its `crash` handler is the poison; `big` and
//! `echo` serve the bombs.

use crate::{CONCURRENCY, ChildArgs};
use serde_json::json;
use std::{
    collections::HashMap, fs::OpenOptions, io::Write, path::Path, sync::Arc, time::Duration,
};
use warren_scheduler::store::StoreLocation;

fn child_logging() {
    warren_shared::cli::init_logging("info");
}

/// Runs a scheduler until SIGTERM (or SIGKILL).
pub async fn scheduler(args: ChildArgs) -> anyhow::Result<()> {
    child_logging();
    let config = warren_scheduler::SchedulerConfig {
        amqp: args.amqp(),
        store: StoreLocation::parse(&args.store),
        bounds: warren_scheduler::config::Bounds {
            max_active_tasks: args.max_active_tasks,
            max_queues: args.max_queues,
            ..Default::default()
        },
        ..Default::default()
    };
    warren_harness::serve::scheduler(config).await?;
    Ok(())
}

/// Runs a worker with the effect-recording and crashing handlers.
pub async fn worker(args: ChildArgs) -> anyhow::Result<()> {
    child_logging();
    let path = args.dir.join(format!("effects-{}.log", std::process::id()));
    let file = Arc::new(std::sync::Mutex::new(
        OpenOptions::new().create(true).append(true).open(&path)?,
    ));
    let mut registry = warren_worker::Registry::new();
    registry.register("effect", move |ctx| {
        let file = file.clone();
        async move {
            // A little work, so that faults land mid-task.
            tokio::time::sleep(Duration::from_millis(fastrand::u64(0..8))).await;
            let line = format!("{}/{}/{}\n", ctx.workflow_id, ctx.task_id, ctx.attempt);
            // One write of a whole line: O_APPEND keeps lines whole.
            file.lock()
                .expect("not poisoned")
                .write_all(line.as_bytes())
                .map_err(|e| warren_worker::HandlerError::retryable(e.to_string()))?;
            Ok(json!({"done": ctx.task_id}))
        }
    });
    // For the bombs: `big` answers a string of `input.bytes` bytes, and
    // `echo` its input (neither records an effect).
    registry.register("big", |ctx| async move {
        let n = ctx.input["bytes"].as_u64().unwrap_or(0) as usize;
        Ok(json!("x".repeat(n)))
    });
    registry.register("echo", |ctx| async move { Ok(ctx.input) });
    registry.register("crash", |_ctx| async move {
        // The poison: takes its worker down with it, every time.
        std::process::abort();
        #[allow(unreachable_code)]
        Ok(serde_json::Value::Null)
    });
    let config = warren_worker::WorkerConfig {
        amqp: args.amqp(),
        concurrency: CONCURRENCY,
        worker_id: args.id,
        shutdown_grace: Duration::from_secs(5),
        ..Default::default()
    };
    warren_harness::serve::worker(config, registry).await?;
    Ok(())
}

/// Effects recorded by the workers: (workflow, task) -> times run.
pub fn recorded_effects(dir: &Path) -> anyhow::Result<HashMap<(String, String), usize>> {
    let mut out = HashMap::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if !name.starts_with("effects-") {
            continue;
        }
        for line in std::fs::read_to_string(&path)?.lines() {
            let mut parts = line.split('/');
            if let (Some(wf), Some(task), Some(_attempt), None) =
                (parts.next(), parts.next(), parts.next(), parts.next())
            {
                *out.entry((wf.to_owned(), task.to_owned())).or_default() += 1;
            }
        }
    }
    Ok(out)
}
