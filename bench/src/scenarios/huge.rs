//! One workflow of `o.huge` tasks (1,000,000 by default): a mapped task
//! over an array in the workflow's input, then one task after it. A
//! request holding a million tasks written out would be over 16 MiB,
//! RabbitMQ 4.x's largest message, so a workflow this size is a map: its
//! instances are tasks of their own, dispatched, committed and reported
//! one by one. The scheduler runs with its working set and map width
//! raised to hold it. Measured: publish to the first task's start, publish
//! to the end, tasks/s beside the ceiling, and the scheduler's peak RSS.

use super::{TIMEOUT, ensure_ok, first_start};
use crate::{
    Opts,
    ceiling::Ceiling,
    deployment::{Deployment, Setup},
    figures::Figure,
};
use serde_json::json;
use std::time::Instant;
use warren_producer::Client;

pub async fn huge(addr: &str, o: &Opts, c: &Ceiling) -> anyhow::Result<Vec<Figure>> {
    let n = o.huge.max(1);
    let d = Deployment::start_with(
        addr,
        &Setup {
            max_active_tasks: Some(n + 2),
            max_map_width: Some(n),
            ..Setup::new(o.concurrency)
        },
    )?;
    let client = Client::connect(&d.amqp).await?;
    let items: Vec<usize> = (0..n).collect();
    let request = json!({
        "id": "huge",
        "input": {"items": items},
        "tasks": [
            {"id": "each", "type": "noop", "map": "${workflow.input.items}"},
            {"id": "done", "type": "noop", "depends_on": ["each"]}
        ]
    });
    println!(
        "  one workflow of {n} mapped tasks and 1 more ({} MB request)",
        request.to_string().len() / 1_000_000
    );
    let published = chrono::Utc::now();
    let t = Instant::now();
    let r = client.submit_and_wait(request, TIMEOUT).await?;
    let total_s = t.elapsed().as_secs_f64();
    ensure_ok(&r)?;
    let first = first_start(&r)?;
    let to_first_ms = (first - published).num_microseconds().unwrap_or(i64::MAX) as f64 / 1e3;
    let rss = d.scheduler.peak_rss_mb().unwrap_or(f64::NAN);
    client.close().await;
    d.stop().await?;
    let rate = n as f64 / total_s;
    Ok(vec![
        Figure {
            name: format!("{n}-task workflow: publish to first task"),
            value: to_first_ms,
            unit: "ms",
            ratio: None,
            target: "<= 2000 ms",
        },
        Figure::info(format!("{n}-task workflow: publish to end"), total_s, "s"),
        Figure {
            name: format!("{n}-task workflow: tasks/s"),
            value: rate,
            unit: "tasks/s",
            ratio: Some(rate / c.tasks_per_s),
            target: "",
        },
        Figure {
            name: format!("{n}-task workflow: scheduler peak RSS"),
            value: rss,
            unit: "MB",
            ratio: None,
            target: "stated",
        },
    ])
}
