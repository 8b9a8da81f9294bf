//! Delayed start at scale: `o.delayed` workflows (100,000 by default) of
//! one no-op task each, all submitted with the same `not_before`, far
//! enough ahead that every one is accepted before it, to a scheduler
//! child on SQLite (or PostgreSQL with `--delayed-pg`) with a worker
//! running. While they wait: the scheduler's RSS before submitting, just
//! before the due time and at its peak (from /proc), so the memory one
//! waiting workflow costs shows. When they all fall due together: each
//! one's start lateness (its `workflow.{id}.running` event's arrival here
//! minus `not_before`) as p50, p99 and max, the last start as the reports'
//! `created_at` say, and the time until all have completed.

use super::{
    TIMEOUT,
    backlog::{free_addr, gauge, metrics},
    ensure_ok, task,
};
use crate::{
    Opts,
    ceiling::Ceiling,
    deployment::{Deployment, Setup},
    figures::{Figure, percentile},
};
use anyhow::bail;
use chrono::{DateTime, SecondsFormat, Utc};
use futures_lite::StreamExt;
use serde_json::json;
use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};
use tokio_util::sync::CancellationToken;
use warren_producer::Client;

/// The lead of `not_before` when `--delayed-lead-s` is not given: a fixed
/// part for starting up, plus an allowance per workflow that assumes at
/// least 500 accepted per second: generous, since the release build
/// accepted ~4,100 a second on this 2-core machine (a debug build under
/// load ~750). The run fails, saying so, if any is accepted after the due
/// time.
fn default_lead(n: usize) -> Duration {
    Duration::from_secs(20) + Duration::from_millis(2 * n as u64)
}

pub async fn delayed(addr: &str, o: &Opts, c: &Ceiling) -> anyhow::Result<Vec<Figure>> {
    let n = o.delayed.max(1);
    let http = free_addr()?;
    let store = o.delayed_pg.then(|| o.pg_url.clone());
    let d = Deployment::start_with(
        addr,
        &Setup {
            http_addr: Some(http),
            store: store.clone(),
            ..Setup::new(o.concurrency)
        },
    )?;
    let client = Arc::new(Client::connect(&d.amqp).await?);
    let deadline = Instant::now() + Duration::from_secs(60);
    while metrics(http).await.is_err() {
        if Instant::now() > deadline {
            bail!("the scheduler's /metrics did not answer");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if gauge(&metrics(http).await?, "warren_workflows_scheduled").is_none() {
        bail!("the scheduler serves no warren_workflows_scheduled gauge");
    }
    let events = Events::bind(&d, n).await?;
    // The scheduler idle, before anything is submitted.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let pid = d.scheduler.pid();
    let rss_before = rss_mb(pid).unwrap_or(f64::NAN);

    let lead = o
        .delayed_lead_s
        .map_or_else(|| default_lead(n), Duration::from_secs);
    let not_before: DateTime<Utc> = Utc::now() + lead;
    let not_before_text = not_before.to_rfc3339_opts(SecondsFormat::Millis, true);
    // What the scheduler reads back: the text, to the millisecond.
    let not_before = DateTime::parse_from_rfc3339(&not_before_text)?.with_timezone(&Utc);
    println!(
        "  {n} delayed workflows of one task, not_before {not_before_text} ({:.0} s ahead), store {}",
        lead.as_secs_f64(),
        if store.is_some() {
            "PostgreSQL"
        } else {
            "SQLite"
        }
    );

    // Every workflow submitted at once, each waiting for its outcome (so
    // the scheduler holds its reply address while it waits).
    let submitted = Instant::now();
    let waits: Vec<_> = (0..n)
        .map(|i| {
            let client = client.clone();
            let request = json!({
                "id": format!("delayed-{i}"),
                "not_before": not_before_text,
                "tasks": [task("t".into(), vec![])],
            });
            tokio::spawn(async move {
                let r = client.submit_and_wait(request, lead + TIMEOUT).await;
                (r, Utc::now())
            })
        })
        .collect();

    // All accepted (each announced `scheduled`) before the due time.
    while events.scheduled.load(Ordering::Relaxed) < n {
        if Utc::now() >= not_before {
            bail!(
                "only {} of {n} workflows were accepted before not_before; give a longer --delayed-lead-s",
                events.scheduled.load(Ordering::Relaxed)
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let accepted_s = submitted.elapsed().as_secs_f64();
    let margin_s = (not_before - Utc::now()).num_milliseconds() as f64 / 1e3;
    println!(
        "  all accepted after {accepted_s:.1} s ({:.0}/s), {margin_s:.1} s before the due time",
        n as f64 / accepted_s
    );

    // Waiting: the RSS just before the due time, and the gauge.
    let before_due = not_before - chrono::Duration::milliseconds(500);
    let wait = (before_due - Utc::now()).to_std().unwrap_or_default();
    tokio::time::sleep(wait).await;
    let rss_due = rss_mb(pid).unwrap_or(f64::NAN);
    let peak_waiting = d.scheduler.peak_rss_mb().unwrap_or(f64::NAN);
    let waiting = gauge(&metrics(http).await?, "warren_workflows_scheduled").unwrap_or(0);
    println!(
        "  just before the due time: {waiting} waiting, RSS {rss_due:.1} MB (before submitting {rss_before:.1} MB, peak {peak_waiting:.1} MB)"
    );

    // Due: every start, then every outcome.
    let mut completed = Vec::with_capacity(n);
    let mut last_created = not_before;
    for w in waits {
        let (r, at) = w.await?;
        let r = r?;
        ensure_ok(&r)?;
        if let Some(t) = r.created_at {
            last_created = last_created.max(t);
        }
        completed.push(at);
    }
    let all_done = completed.iter().max().copied().unwrap_or(not_before);
    let starts = events.finish().await;
    let rss_all = d.scheduler.peak_rss_mb().unwrap_or(f64::NAN);
    if let Ok(c) = Arc::try_unwrap(client) {
        c.close().await;
    }
    d.stop().await?;

    let ms_after = |t: DateTime<Utc>| (t - not_before).num_microseconds().unwrap_or(0) as f64 / 1e3;
    let mut late: Vec<f64> = starts.into_iter().map(ms_after).collect();
    late.sort_by(f64::total_cmp);
    if late.len() < n {
        bail!("{} of {n} running events arrived", late.len());
    }
    let done_s = ms_after(all_done) / 1e3;
    let rate = n as f64 / done_s;
    let per_workflow = (rss_due - rss_before) * 1024.0 * 1024.0 / n as f64;
    let name = |s: &str| format!("delayed: {s}");
    Ok(vec![
        Figure::info(name("workflows waiting"), n as f64, "wfs"),
        Figure::info(
            name("not_before ahead of submitting"),
            lead.as_secs_f64(),
            "s",
        ),
        Figure::info(name("accepted, per second"), n as f64 / accepted_s, "wfs/s"),
        Figure::info(name("all accepted, before the due time"), margin_s, "s"),
        Figure::info(name("waiting at due (gauge)"), waiting as f64, "wfs"),
        Figure::info(name("scheduler RSS before submitting"), rss_before, "MB"),
        Figure::info(name("scheduler RSS just before due"), rss_due, "MB"),
        Figure::info(name("scheduler peak RSS while waiting"), peak_waiting, "MB"),
        Figure::info(name("RSS per waiting workflow"), per_workflow, "bytes"),
        Figure::info(name("start lateness p50"), percentile(&late, 0.5), "ms"),
        Figure::info(name("start lateness p99"), percentile(&late, 0.99), "ms"),
        Figure::info(name("start lateness max"), percentile(&late, 1.0), "ms"),
        Figure::info(
            name("last start (created_at)"),
            ms_after(last_created),
            "ms",
        ),
        Figure::info(name("all completed after due"), done_s, "s"),
        Figure {
            name: name("due to completed, wfs/s"),
            value: rate,
            unit: "wfs/s",
            ratio: Some(rate / c.tasks_per_s),
            target: "",
        },
        Figure::info(name("scheduler peak RSS overall"), rss_all, "MB"),
    ])
}

/// A process's resident memory now (`VmRSS`), in MB.
pub(super) fn rss_mb(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// The namespace's `scheduled` and `running` events, read on a private
/// queue bound before anything is submitted: how many were announced
/// `scheduled`, and when each `running` arrived here.
struct Events {
    scheduled: Arc<AtomicUsize>,
    stop: CancellationToken,
    join: tokio::task::JoinHandle<Vec<DateTime<Utc>>>,
    conn: lapin::Connection,
}

impl Events {
    /// Binds the queue; the reading stops once `n` have started.
    async fn bind(d: &Deployment, n: usize) -> anyhow::Result<Events> {
        let conn = warren_shared::amqp::connect(&d.amqp.addr, "bench delayed events").await?;
        let exchange = d.amqp.topology().events();
        let (_ch, _queue, mut consumer) = warren_shared::amqp::private_queue(
            &conn,
            &[
                (&exchange, "workflow.*.scheduled"),
                (&exchange, "workflow.*.running"),
            ],
        )
        .await?;
        let scheduled = Arc::new(AtomicUsize::new(0));
        let stop = CancellationToken::new();
        let join = tokio::spawn({
            let (scheduled, stop) = (scheduled.clone(), stop.clone());
            async move {
                let mut running = Vec::with_capacity(n);
                while running.len() < n {
                    let d = tokio::select! {
                        d = consumer.next() => d,
                        () = stop.cancelled() => break,
                    };
                    let Some(Ok(d)) = d else { break };
                    match d.routing_key.as_str().rsplit('.').next() {
                        Some("scheduled") => {
                            scheduled.fetch_add(1, Ordering::Relaxed);
                        }
                        Some("running") => running.push(Utc::now()),
                        _ => {}
                    }
                }
                running
            }
        });
        Ok(Events {
            scheduled,
            stop,
            join,
            conn,
        })
    }

    /// The arrival times of the `running` events: all of them, or those
    /// that arrived within 30 s from now (every outcome is in by now, so
    /// their events are too, unless lost).
    async fn finish(self) -> Vec<DateTime<Utc>> {
        let Events {
            stop,
            mut join,
            conn,
            ..
        } = self;
        let running = match tokio::time::timeout(Duration::from_secs(30), &mut join).await {
            Ok(r) => r.unwrap_or_default(),
            Err(_) => {
                stop.cancel();
                join.await.unwrap_or_default()
            }
        };
        warren_shared::amqp::close(&conn, "measured").await;
        running
    }
}
