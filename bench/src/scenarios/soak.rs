//! The soak (issue 19): a steady mixed load for a long while with a short
//! retention, to show that Warren stays flat. Workflows of five kinds
//! (`mix`) are submitted at `--soak-rate` a second for `--soak-duration`
//! by a pace that never waits for outcomes, to a scheduler child with
//! `WARREN_RETENTION` at `--soak-retention`, on SQLite or (`--soak-pg`)
//! PostgreSQL, and one worker. Every `--soak-interval` a row: workflows
//! and task attempts completed a second, p50 and p99 latency from
//! submission to outcome, scheduler and worker RSS and the store's size
//! (peaks of the `probe`'s readings every second), and what retention
//! deleted (`series`). At the end, the `verdict`s: throughput holds,
//! RSS and store reach a plateau, every workflow ends as expected. The
//! rows and verdicts are written as JSON (`--soak-series`); a failed
//! verdict fails the run.

mod mix;
mod probe;
mod series;
mod verdict;

use super::backlog::{free_addr, metrics};
use crate::{
    Opts,
    ceiling::Ceiling,
    deployment::{Deployment, Setup},
    figures::{Figure, percentile},
};
use anyhow::bail;
use mix::{Kind, Pace};
use probe::Probe;
use serde_json::json;
use series::{Ended, Row, Series};
use std::{
    sync::Arc,
    time::{Duration, Instant},
};
use tokio::sync::mpsc;
use verdict::{RSS, Resource, STORE, THROUGHPUT_TOLERANCE, Verdict, Window};
use warren_producer::Client;
use warren_shared::wire::{WorkflowReport, WorkflowStatus};

/// How long a workflow's outcome is waited for before it counts as lost.
const OUTCOME_WAIT: Duration = Duration::from_secs(120);
/// The probes read this often (or ten times an interval, if shorter).
const SAMPLE_EVERY: Duration = Duration::from_secs(1);
/// Unexpected or lost workflows described at the end, at most.
const SHOWN: usize = 5;

/// What a soak run is: its load, its intervals, its store.
struct Plan {
    pace: Pace,
    interval: Duration,
    window: Window,
    /// The PostgreSQL store's URL, if not SQLite.
    pg: Option<String>,
}

impl Plan {
    fn of(o: &Opts) -> anyhow::Result<Plan> {
        let retention = crate::child::retention(&o.soak_retention).map_err(anyhow::Error::msg)?;
        let interval = o.soak_interval;
        if interval.is_zero() {
            bail!("--soak-interval must be longer than 0");
        }
        let intervals = (o.soak_duration.as_nanos() / interval.as_nanos()) as usize;
        Ok(Plan {
            pace: Pace::new(o.soak_rate)?,
            interval,
            window: Window::new(intervals, interval, retention.unwrap_or_default())?,
            pg: o.soak_pg.then(|| o.pg_url.clone()),
        })
    }

    /// The run: its whole intervals.
    fn run(&self) -> Duration {
        self.interval * self.window.intervals as u32
    }
}

pub async fn soak(addr: &str, o: &Opts, c: &Ceiling) -> anyhow::Result<Vec<Figure>> {
    let plan = Plan::of(o)?;
    let http = free_addr()?;
    let d = Deployment::start_with(
        addr,
        &Setup {
            http_addr: Some(http),
            store: plan.pg.clone(),
            retention: Some(o.soak_retention.clone()),
            ..Setup::new(o.concurrency)
        },
    )?;
    println!(
        "  {} workflows/s ({:.0} tasks/s) for {:?} in {} intervals of {:?}, retention {}, store {}",
        plan.pace.rate(),
        plan.pace.rate() * Kind::mean_tasks(),
        plan.run(),
        plan.window.intervals,
        plan.interval,
        o.soak_retention,
        if plan.pg.is_some() {
            "PostgreSQL"
        } else {
            "SQLite"
        },
    );
    let series = drive(&d, &plan, http).await;
    d.stop().await?;
    let (series, about) = series?;

    let rows = series.rows();
    let totals = series.totals();
    let verdicts = verdicts(&plan, &rows, &totals);
    println!("\n  {} submitted: {:?}", totals.submitted, totals);
    for v in &verdicts {
        let mark = if v.passed { "pass" } else { "FAIL" };
        println!("  {mark}  {}: {}", v.name, v.detail);
    }
    let failed: Vec<&str> = verdicts
        .iter()
        .filter(|v| !v.passed)
        .map(|v| v.name.as_str())
        .collect();
    let doc = json!({
        "when": chrono::Utc::now().to_rfc3339(),
        "commit": std::env::var("WARREN_COMMIT").ok(),
        "store": if plan.pg.is_some() { "postgres" } else { "sqlite" },
        "postgres_autovacuum": about["postgres_autovacuum"],
        "latency_by_kind": about["latency_by_kind"],
        "offered_per_s": plan.pace.rate(),
        "interval_s": plan.interval.as_secs_f64(),
        "retention": o.soak_retention,
        "concurrency": o.concurrency,
        "mix": "in every 20: 9 diamonds, 5 chains of 10, 2 fan-outs of 100, 3 diamonds retried once, 1 diamond failing",
        "ceiling_tasks_per_s": c.tasks_per_s,
        "window": plan.window,
        "tolerances": {"throughput": THROUGHPUT_TOLERANCE, "rss": RSS, "store": STORE},
        "rows": rows,
        "totals": totals,
        "verdicts": verdicts,
        "passed": failed.is_empty(),
    });
    std::fs::write(&o.soak_series, serde_json::to_string_pretty(&doc)?)?;
    println!("  rows and verdicts written to {}", o.soak_series.display());
    if !failed.is_empty() {
        bail!(
            "the soak failed {} verdicts: {}",
            failed.len(),
            failed.join("; ")
        );
    }
    Ok(figures(&plan, &rows, &totals))
}

/// Runs the load on `d` and returns its figures, with what else the JSON
/// tells: each kind's latency, and PostgreSQL's autovacuum setting.
async fn drive(
    d: &Deployment,
    plan: &Plan,
    http: std::net::SocketAddr,
) -> anyhow::Result<(Series, serde_json::Value)> {
    let up = Instant::now() + Duration::from_secs(60);
    while metrics(http).await.is_err() {
        if Instant::now() > up {
            bail!("the scheduler's /metrics did not answer");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let probe = Probe::new(d, plan.pg.as_deref(), http).await?;
    let autovacuum = probe.autovacuum().await;
    if autovacuum.as_deref() == Some("off") {
        println!(
            "  this PostgreSQL runs with autovacuum off: nothing reclaims what retention deletes, so its tables grow"
        );
    }
    let client = Arc::new(Client::connect(&d.amqp).await?);
    let (tx, mut rx) = mpsc::unbounded_channel::<End>();
    let n = plan.window.intervals;
    let mut series = Series::new(n, plan.interval);
    let mut seen = Seen::default();
    let total = plan.pace.total(plan.run());
    let mut sampling = tokio::time::interval(SAMPLE_EVERY.min(plan.interval / 10));
    sampling.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    println!(
        "  {:>4} {:>6} {:>7} {:>8} {:>7} {:>7} {:>9} {:>9} {:>8} {:>7} {:>6} {:>5}",
        "int",
        "end s",
        "wf/s",
        "tasks/s",
        "p50 ms",
        "p99 ms",
        "sched MB",
        "work MB",
        "store MB",
        "pruned",
        "in fl",
        "load"
    );
    let start = tokio::time::Instant::now();
    let (mut i, mut k) = (0u64, 0usize);
    while k < n || i < total {
        tokio::select! {
            () = tokio::time::sleep_until(start + plan.pace.due(i)), if i < total => {
                let kind = Kind::of(i);
                series.submitted(start.elapsed());
                let request = kind.workflow(format!("soak-{i}-{}", kind.name()));
                tokio::spawn(submit(client.clone(), kind, request, tx.clone()));
                i += 1;
            }
            Some(end) = rx.recv() => seen.record(&mut series, start.into_std(), end),
            _ = sampling.tick() => {
                let t = start.elapsed();
                let s = probe.sample().await;
                series.sample(t, s);
            }
            () = tokio::time::sleep_until(start + plan.interval * (k as u32 + 1)), if k < n => {
                series.close(k, probe.pruned_total().await, load_average());
                print_row(&series.row(k));
                k += 1;
            }
        }
    }
    // The drain: every outcome still to come (each waits at most
    // OUTCOME_WAIT).
    drop(tx);
    while let Some(end) = rx.recv().await {
        seen.record(&mut series, start.into_std(), end);
    }
    for p in &seen.problems {
        println!("  {p}");
    }
    let by_kind = seen.by_kind();
    println!("  latency by kind: {by_kind}");
    if let Ok(c) = Arc::try_unwrap(client) {
        c.close().await;
    }
    let about = json!({"postgres_autovacuum": autovacuum, "latency_by_kind": by_kind});
    Ok((series, about))
}

/// A workflow's end, as its submission reports it.
struct End {
    kind: Kind,
    submitted: Instant,
    at: Instant,
    outcome: Result<WorkflowReport, String>,
}

/// Submits `request` and reports its outcome on `tx`.
async fn submit(
    client: Arc<Client>,
    kind: Kind,
    request: serde_json::Value,
    tx: mpsc::UnboundedSender<End>,
) {
    let submitted = Instant::now();
    let outcome = client
        .submit_and_wait(request, OUTCOME_WAIT)
        .await
        .map_err(|e| e.to_string());
    let _ = tx.send(End {
        kind,
        submitted,
        at: Instant::now(),
        outcome,
    });
}

/// The outcomes' bookkeeping beside the series: the first few problems,
/// and each kind's latencies (ms) over the whole run.
#[derive(Default)]
struct Seen {
    problems: Vec<String>,
    latencies: [Vec<f64>; Kind::ALL.len()],
}

impl Seen {
    fn record(&mut self, series: &mut Series, start: Instant, end: End) {
        let (t, latency) = (end.at - start, end.at - end.submitted);
        if end.outcome.is_ok() {
            self.latencies[end.kind.index()].push(latency.as_secs_f64() * 1e3);
        }
        let (tasks, how) = match &end.outcome {
            Ok(r) if r.status == end.kind.expected() => (
                attempts(r),
                Ended::Expected {
                    failed: r.status == WorkflowStatus::Failed,
                },
            ),
            Ok(r) => {
                self.note(format!(
                    "{} ({}) ended {}: {:?} {:?}",
                    r.workflow_id,
                    end.kind.name(),
                    r.status.as_str(),
                    r.error,
                    r.errors
                ));
                (attempts(r), Ended::Unexpected)
            }
            Err(e) => {
                self.note(format!("a {} workflow was lost: {e}", end.kind.name()));
                (0, Ended::Lost)
            }
        };
        series.ended(t, latency, tasks, how);
    }

    /// p50 and p99 latency (ms) of each kind, by name.
    fn by_kind(&mut self) -> serde_json::Value {
        let mut out = serde_json::Map::new();
        for k in Kind::ALL {
            let lat = &mut self.latencies[k.index()];
            lat.sort_by(f64::total_cmp);
            out.insert(
                k.name().into(),
                json!({"p50_ms": percentile(lat, 0.5), "p99_ms": percentile(lat, 0.99), "count": lat.len()}),
            );
        }
        serde_json::Value::Object(out)
    }

    fn note(&mut self, problem: String) {
        if self.problems.len() < SHOWN {
            self.problems.push(problem);
        }
    }
}

/// Task attempts a workflow ran (retries included).
fn attempts(r: &WorkflowReport) -> u64 {
    r.tasks.values().map(|t| u64::from(t.attempts)).sum()
}

/// The machine's load average over the last minute.
fn load_average() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn mb(bytes: Option<u64>) -> f64 {
    bytes.map_or(f64::NAN, |b| b as f64 / (1024.0 * 1024.0))
}

fn print_row(r: &Row) {
    println!(
        "  {:>4} {:>6.0} {:>7.1} {:>8.0} {:>7.1} {:>7.1} {:>9.1} {:>9.1} {:>8.1} {:>7} {:>6} {:>5.1}",
        r.index,
        r.end_s,
        r.workflows_per_s,
        r.tasks_per_s,
        r.latency_p50_ms,
        r.latency_p99_ms,
        mb(r.scheduler_rss),
        mb(r.worker_rss),
        mb(r.store),
        r.pruned.map_or("-".to_owned(), |p| p.to_string()),
        r.in_flight,
        r.load.unwrap_or(f64::NAN),
    );
}

/// Every verdict of the run.
fn verdicts(plan: &Plan, rows: &[Row], totals: &series::Totals) -> Vec<Verdict> {
    let w = &plan.window;
    let load = (plan.pace.rate(), plan.interval);
    let mut v = verdict::throughput(rows, w, plan.pace.rate());
    let resources: [(&str, Resource, _); 3] = [
        ("scheduler RSS", |r| r.scheduler_rss, RSS),
        ("worker RSS", |r| r.worker_rss, RSS),
        ("store size", |r| r.store, STORE),
    ];
    for (what, read, allowance) in resources {
        v.push(verdict::plateau(what, (rows, read), w, allowance, load));
    }
    v.extend(verdict::outcomes(totals));
    v
}

/// The summary's figures.
fn figures(plan: &Plan, rows: &[Row], totals: &series::Totals) -> Vec<Figure> {
    let w = &plan.window;
    let (first, last) = (&rows[w.first], &rows[w.intervals - 1]);
    let peak = |range: std::ops::Range<usize>, read: Resource| {
        mb(rows[range].iter().filter_map(read).max())
    };
    let name = |s: String| format!("soak: {s}");
    let mut f = vec![
        Figure::info(
            name("offered workflows/s".into()),
            plan.pace.rate(),
            "wfs/s",
        ),
        Figure::info(
            name(format!("workflows/s, interval {}", w.first)),
            first.workflows_per_s,
            "wfs/s",
        ),
        Figure::info(
            name("workflows/s, last interval".into()),
            last.workflows_per_s,
            "wfs/s",
        ),
        Figure::info(
            name(format!("tasks/s, interval {}", w.first)),
            first.tasks_per_s,
            "tasks/s",
        ),
        Figure::info(
            name("tasks/s, last interval".into()),
            last.tasks_per_s,
            "tasks/s",
        ),
        Figure::info(
            name("latency p50, whole run".into()),
            totals.latency_p50_ms,
            "ms",
        ),
        Figure::info(
            name("latency p99, whole run".into()),
            totals.latency_p99_ms,
            "ms",
        ),
    ];
    let resources: [(&str, Resource); 3] = [
        ("scheduler RSS", |r| r.scheduler_rss),
        ("worker RSS", |r| r.worker_rss),
        ("store size", |r| r.store),
    ];
    for (what, read) in resources {
        f.push(Figure::info(
            name(format!("{what}, second quarter's peak")),
            peak(w.second_quarter(), read),
            "MB",
        ));
        f.push(Figure::info(
            name(format!("{what}, last quarter's peak")),
            peak(w.last_quarter(), read),
            "MB",
        ));
    }
    f.push(Figure::info(
        name("workflows submitted".into()),
        totals.submitted as f64,
        "wfs",
    ));
    f
}
