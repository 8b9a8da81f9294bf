//! Schedules at scale (issue 17, point 8): `o.schedules` schedules (1,000
//! by default) of `every_ms: o.schedules_every_ms` (1 s), `overlap: allow`,
//! each firing a workflow of one no-op task, created at once on a
//! scheduler child (SQLite, or PostgreSQL with `--schedules-pg`) with a
//! worker running; they fire for `o.schedules_s` seconds (60) of measured
//! window, then are deleted.
//!
//! Every slot of every schedule whose fire time falls in the window is
//! expected exactly once. The bench watches two things on the broker, on
//! private queues bound before the schedules are created: every firing's
//! workflow request as the scheduler publishes it to `{ns}.workflows`
//! (a copy, bound with the same empty routing key; its `message_id` is the
//! workflow id), and every workflow's `running` event and outcome on
//! `{ns}.events`. For each expected slot, its **lateness** is measured
//! against the fire time its workflow id encodes (`{schedule}:{time}`):
//! when the scheduler accepted the workflow (the `running` event's
//! `created_at`, the scheduler's own stamp), when that event arrived here
//! (after the accepting commit and the event's trip through the broker),
//! and, to tell the stages apart, when the firing's request arrived here.
//! Slots never seen are missing; a workflow id seen `running` twice is a
//! duplicate. Besides: the scheduler's RSS, and the CPU each process used
//! over the window.

use super::{delayed::rss_mb, task};
use crate::{
    Opts,
    ceiling::Ceiling,
    deployment::{Deployment, Setup},
    figures::{BrokerCpu, Figure, percentile},
};
use anyhow::{Context, bail};
use chrono::{DateTime, Utc};
use futures_lite::StreamExt;
use serde_json::json;
use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};
use tokio_util::sync::CancellationToken;
use warren_producer::Client;
use warren_scheduler::schedule::firing_workflow_id;
use warren_shared::wire::{
    CatchUp, ControlKind, Overlap, ScheduleInfo, ScheduleSpec, WorkflowReport,
};

/// How long a `schedule.*` request may wait for its answer.
const ASK: Duration = Duration::from_secs(120);

/// From the last schedule created to the window's start: the creation
/// burst's own firings pass first.
const WARM_UP: Duration = Duration::from_secs(2);

/// How long after the window the slots not yet seen may still arrive
/// before they count as missing (the schedules are deleted only then, so a
/// lagging scheduler is not cut short).
const GRACE: Duration = Duration::from_secs(30);

pub async fn schedules(addr: &str, o: &Opts, c: &Ceiling) -> anyhow::Result<Vec<Figure>> {
    let n = o.schedules.max(1);
    let every_ms = o.schedules_every_ms;
    let window = Duration::from_secs(o.schedules_s.max(1));
    let store = o.schedules_pg.then(|| o.pg_url.clone());
    let d = Deployment::start_with(
        addr,
        &Setup {
            store: store.clone(),
            requests_prefetch: o.schedules_prefetch,
            ..Setup::new(o.concurrency)
        },
    )?;
    // The client declares the namespace's topology, which `Seen` binds to.
    let client = Arc::new(Client::connect(&d.amqp).await?);
    let seen = Seen::bind(&d).await?;
    // The scheduler idle, before anything is created.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let pid = d.scheduler.pid();
    let rss_before = rss_mb(pid).unwrap_or(f64::NAN);
    println!(
        "  {n} schedules every {every_ms} ms, {} s measured, store {}, requests prefetch {}",
        window.as_secs(),
        if store.is_some() {
            "PostgreSQL"
        } else {
            "SQLite"
        },
        o.schedules_prefetch
            .map_or_else(|| "Warren's".to_owned(), |p| p.to_string())
    );

    // Every schedule created at once.
    let created = Instant::now();
    let creates: Vec<_> = (0..n)
        .map(|i| {
            let client = client.clone();
            let spec = ScheduleSpec {
                id: schedule_id(i),
                cron: None,
                every_ms: Some(every_ms),
                timezone: None,
                overlap: Overlap::Allow,
                catch_up: CatchUp::Latest,
                workflow: json!({"tasks": [task("t".into(), vec![])]}),
            };
            tokio::spawn(async move { client.schedule_create(spec, ASK).await })
        })
        .collect();
    let mut infos: Vec<ScheduleInfo> = Vec::with_capacity(n);
    for h in creates {
        let r = h.await??;
        if r.outcome != "created" {
            bail!(
                "schedule {} was not created: {} {:?}",
                r.schedule_id,
                r.outcome,
                r.errors
            );
        }
        infos.push(r.schedule.context("a created schedule in the answer")?);
    }
    let create_s = created.elapsed().as_secs_f64();
    // Where in each interval the schedules fall due (they count from their
    // creation): how spread the firings of one interval are.
    let mut phases: Vec<i64> = infos
        .iter()
        .filter_map(|s| s.next_fire_at)
        .map(|t| t.timestamp_millis().rem_euclid(every_ms as i64))
        .collect();
    phases.sort_unstable();
    let spread_ms = phase_spread(&phases, every_ms as i64);
    println!(
        "  all created in {create_s:.2} s; their due times spread over {spread_ms} ms of each interval"
    );

    // The window, and every slot expected in it.
    let start = Utc::now() + WARM_UP;
    let end = start + chrono::Duration::from_std(window)?;
    let mut expected: HashMap<String, DateTime<Utc>> = HashMap::new();
    for s in &infos {
        let mut at = s.next_fire_at.context("a next firing")?;
        let step = chrono::Duration::milliseconds(every_ms as i64);
        while at < start {
            at += step;
        }
        while at < end {
            expected.insert(firing_workflow_id(&s.id, at), at);
            at += step;
        }
    }
    tokio::time::sleep((start - Utc::now()).to_std().unwrap_or_default()).await;
    let (cpu_s0, cpu_w0) = d.cpu_secs();
    let broker = BrokerCpu::start();
    tokio::time::sleep((end - Utc::now()).to_std().unwrap_or_default()).await;
    let (cpu_s1, cpu_w1) = d.cpu_secs();
    // The broker's CPU seconds in the window, times 1,000.
    let broker_ms = broker.per_1000(1000);
    let rss_end = rss_mb(pid).unwrap_or(f64::NAN);
    let secs = window.as_secs_f64();
    let cpu_share = |a: f64, b: f64| (b - a) / secs * 100.0;

    // The late ones: until every expected slot is seen, or the grace ends.
    let grace = Instant::now() + GRACE;
    while seen.running_of(&expected) < expected.len() && Instant::now() < grace {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let deletes: Vec<_> = infos
        .iter()
        .map(|s| {
            let (client, id) = (client.clone(), s.id.clone());
            tokio::spawn(
                async move { client.schedule(ControlKind::ScheduleDelete, &id, ASK).await },
            )
        })
        .collect();
    let (mut fired, mut skipped) = (0, 0);
    for h in deletes {
        let r = h.await??;
        if r.outcome != "deleted" {
            bail!("schedule {} was not deleted: {}", r.schedule_id, r.outcome);
        }
        let s = r.schedule.context("the deleted schedule in the answer")?;
        fired += s.fired;
        skipped += s.skipped;
    }
    // Every window workflow's outcome (they are one no-op task each).
    let grace = Instant::now() + GRACE;
    while seen.ended_of(&expected) < expected.len() && Instant::now() < grace {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let rss_peak = d.scheduler.peak_rss_mb().unwrap_or(f64::NAN);
    let seen = seen.finish().await;
    if let Ok(c) = Arc::try_unwrap(client) {
        c.close().await;
    }
    let counters = d.stop().await?;
    let counter = |k: &str| counters.get(k).and_then(|v| v.as_u64()).unwrap_or(0);

    // Each expected slot: once, and how late.
    let mut running: HashMap<&str, Vec<&Running>> = HashMap::new();
    for r in &seen.running {
        running.entry(r.id.as_str()).or_default().push(r);
    }
    let mut requests: HashMap<&str, Vec<DateTime<Utc>>> = HashMap::new();
    for (id, at) in &seen.requests {
        requests.entry(id.as_str()).or_default().push(*at);
    }
    let ended: HashMap<&str, &str> = seen
        .ended
        .iter()
        .map(|(id, s)| (id.as_str(), s.as_str()))
        .collect();
    let ms = |t: DateTime<Utc>, fire: DateTime<Utc>| {
        (t - fire).num_microseconds().unwrap_or(i64::MAX) as f64 / 1e3
    };
    let (mut missing, mut duplicates, mut request_duplicates) = (0usize, 0usize, 0usize);
    let (mut accepted, mut arrived, mut published) = (Vec::new(), Vec::new(), Vec::new());
    let mut succeeded = 0usize;
    for (id, fire) in &expected {
        match running.get(id.as_str()) {
            None => missing += 1,
            Some(rs) => {
                duplicates += rs.len() - 1;
                let first = rs[0];
                arrived.push(ms(first.arrived, *fire));
                if let Some(t) = first.created_at {
                    accepted.push(ms(t, *fire));
                }
            }
        }
        if let Some(rs) = requests.get(id.as_str()) {
            request_duplicates += rs.len() - 1;
            published.push(ms(rs[0], *fire));
        }
        succeeded += usize::from(ended.get(id.as_str()) == Some(&"succeeded"));
    }
    // Slots in the window no schedule should have fired.
    let unexpected = running
        .keys()
        .filter(|id| !expected.contains_key(**id))
        .filter(|id| fire_time(id).is_some_and(|t| t >= start && t < end))
        .count();
    let duplicates_all: usize = running.values().map(|rs| rs.len() - 1).sum();
    for v in [&mut accepted, &mut arrived, &mut published] {
        v.sort_by(f64::total_cmp);
    }
    println!(
        "  {} slots expected: {} seen running, {missing} missing, {duplicates} duplicate, {unexpected} unexpected; {succeeded} succeeded",
        expected.len(),
        expected.len() - missing,
    );
    println!(
        "  lateness accepted (created_at) p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        percentile(&accepted, 0.5),
        percentile(&accepted, 0.99),
        percentile(&accepted, 1.0)
    );
    if missing > 0 || duplicates_all > 0 || unexpected > 0 {
        bail!(
            "each slot once: {missing} missing, {duplicates_all} duplicate running events, {unexpected} unexpected"
        );
    }

    let rate = expected.len() as f64 / secs;
    let name = |s: &str| format!("schedules: {s}");
    let lateness = |what: &str, v: &[f64]| {
        [(0.5, "p50"), (0.99, "p99"), (1.0, "max")]
            .map(|(p, word)| Figure::info(name(&format!("{what} {word}")), percentile(v, p), "ms"))
    };
    let mut figures = vec![
        Figure::info(name("schedules"), n as f64, "scheds"),
        Figure::info(name("created, all at once, in"), create_s, "s"),
        Figure::info(
            name("due times spread per interval"),
            spread_ms as f64,
            "ms",
        ),
        Figure {
            name: name("firings per second"),
            value: rate,
            unit: "wfs/s",
            ratio: Some(rate / c.tasks_per_s),
            target: "",
        },
        Figure::info(
            name("slots expected in the window"),
            expected.len() as f64,
            "wfs",
        ),
        Figure::info(
            name("slots seen running"),
            (expected.len() - missing) as f64,
            "wfs",
        ),
        Figure::info(name("slots missing"), missing as f64, "wfs"),
        Figure::info(name("slots run twice"), duplicates as f64, "wfs"),
        Figure::info(
            name("firing requests sent twice"),
            request_duplicates as f64,
            "msgs",
        ),
        Figure::info(name("slots succeeded"), succeeded as f64, "wfs"),
    ];
    figures.extend(lateness("lateness, accepted (created_at)", &accepted));
    figures.extend(lateness("lateness, running event seen", &arrived));
    figures.extend(lateness("lateness, firing request seen", &published));
    figures.extend([
        Figure::info(name("fired (all, from the deletes)"), fired as f64, "wfs"),
        Figure::info(name("skipped (all)"), skipped as f64, "wfs"),
        Figure::info(
            name("duplicate submissions (scheduler)"),
            counter("workflows_duplicate") as f64,
            "wfs",
        ),
        Figure::info(
            name("accepted per scheduler transaction (all)"),
            counter("workflows_accepted") as f64 / counter("batches_committed").max(1) as f64,
            "wfs",
        ),
        Figure::info(name("scheduler RSS before creating"), rss_before, "MB"),
        Figure::info(name("scheduler RSS at the window's end"), rss_end, "MB"),
        Figure::info(name("scheduler peak RSS"), rss_peak, "MB"),
        Figure::info(
            name("scheduler CPU in the window"),
            cpu_share(cpu_s0, cpu_s1),
            "% core",
        ),
        Figure::info(
            name("worker CPU in the window"),
            cpu_share(cpu_w0, cpu_w1),
            "% core",
        ),
        Figure::info(
            name("broker CPU in the window"),
            broker_ms / 1e3 / secs * 100.0,
            "% core",
        ),
    ]);
    Ok(figures)
}

/// The `i`th schedule's id.
fn schedule_id(i: usize) -> String {
    format!("bench-{i:05}")
}

/// The fire time a firing's workflow id `{schedule}:{time}` encodes.
fn fire_time(workflow_id: &str) -> Option<DateTime<Utc>> {
    let (_, time) = workflow_id.split_once(':')?;
    Some(DateTime::parse_from_rfc3339(time).ok()?.with_timezone(&Utc))
}

/// The shortest stretch of the interval (of `every` ms) that holds every
/// phase (sorted): the interval less its largest gap between phases.
fn phase_spread(sorted: &[i64], every: i64) -> i64 {
    let (Some(first), Some(last)) = (sorted.first(), sorted.last()) else {
        return 0;
    };
    let wrap = first + every - last;
    let gap = sorted
        .windows(2)
        .map(|w| w[1] - w[0])
        .max()
        .unwrap_or(0)
        .max(wrap);
    every - gap
}

/// A `running` event: which workflow, when it arrived here, and when the
/// scheduler says it accepted it.
struct Running {
    id: String,
    arrived: DateTime<Utc>,
    created_at: Option<DateTime<Utc>>,
}

/// What the bench saw on the broker.
#[derive(Default)]
struct Observed {
    running: Vec<Running>,
    /// Workflows ended, and how.
    ended: Vec<(String, String)>,
    /// Workflow requests published to `{ns}.workflows`: id and arrival.
    requests: Vec<(String, DateTime<Utc>)>,
}

/// The namespace's workflow requests and workflow events, each read on a
/// private queue of its own (so that neither waits behind the other) from
/// before the schedules are created.
struct Seen {
    observed: Arc<Mutex<Observed>>,
    stop: CancellationToken,
    joins: Vec<tokio::task::JoinHandle<()>>,
    conn: lapin::Connection,
}

impl Seen {
    async fn bind(d: &Deployment) -> anyhow::Result<Seen> {
        let conn = warren_shared::amqp::connect(&d.amqp.addr, "bench schedules").await?;
        let topology = d.amqp.topology();
        let (events, workflows) = (topology.events(), topology.workflows());
        let (ev_ch, _, mut ev) = warren_shared::amqp::private_queue(
            &conn,
            // `#`, not `*`: a firing's workflow id holds a `.` when its
            // fire time has milliseconds, and so spans two words of the
            // routing key.
            &[(&events, "workflow.#")],
        )
        .await?;
        let (rq_ch, _, mut rq) =
            warren_shared::amqp::private_queue(&conn, &[(&workflows, "")]).await?;
        let observed = Arc::new(Mutex::new(Observed::default()));
        let stop = CancellationToken::new();
        let events_task = tokio::spawn({
            let (observed, stop) = (observed.clone(), stop.clone());
            async move {
                let _ch = ev_ch;
                loop {
                    let d = tokio::select! {
                        d = ev.next() => d,
                        () = stop.cancelled() => break,
                    };
                    let Some(Ok(d)) = d else { break };
                    let arrived = Utc::now();
                    let key = d.routing_key.as_str();
                    let Some((id, status)) = key
                        .strip_prefix("workflow.")
                        .and_then(|k| k.rsplit_once('.'))
                    else {
                        continue;
                    };
                    if status == "progress" {
                        continue;
                    }
                    let mut o = observed.lock().expect("not poisoned");
                    if status == "running" {
                        let created_at = serde_json::from_slice::<WorkflowReport>(&d.data)
                            .ok()
                            .and_then(|r| r.created_at);
                        o.running.push(Running {
                            id: id.to_owned(),
                            arrived,
                            created_at,
                        });
                    } else {
                        o.ended.push((id.to_owned(), status.to_owned()));
                    }
                }
            }
        });
        let requests_task = tokio::spawn({
            let (observed, stop) = (observed.clone(), stop.clone());
            async move {
                let _ch = rq_ch;
                loop {
                    let d = tokio::select! {
                        d = rq.next() => d,
                        () = stop.cancelled() => break,
                    };
                    let Some(Ok(d)) = d else { break };
                    let arrived = Utc::now();
                    if let Some(id) = d.properties.message_id() {
                        let mut o = observed.lock().expect("not poisoned");
                        o.requests.push((id.as_str().to_owned(), arrived));
                    }
                }
            }
        });
        Ok(Seen {
            observed,
            stop,
            joins: vec![events_task, requests_task],
            conn,
        })
    }

    /// How many of `expected` have been seen running.
    fn running_of(&self, expected: &HashMap<String, DateTime<Utc>>) -> usize {
        let o = self.observed.lock().expect("not poisoned");
        let ids: HashSet<&str> = o.running.iter().map(|r| r.id.as_str()).collect();
        ids.iter().filter(|id| expected.contains_key(**id)).count()
    }

    /// How many of `expected` have ended.
    fn ended_of(&self, expected: &HashMap<String, DateTime<Utc>>) -> usize {
        let o = self.observed.lock().expect("not poisoned");
        let ids: HashSet<&str> = o.ended.iter().map(|(id, _)| id.as_str()).collect();
        ids.iter().filter(|id| expected.contains_key(**id)).count()
    }

    /// Stops reading (after a moment for what is still on its way) and
    /// gives what was seen.
    async fn finish(self) -> Observed {
        tokio::time::sleep(Duration::from_secs(1)).await;
        self.stop.cancel();
        for j in self.joins {
            let _ = j.await;
        }
        warren_shared::amqp::close(&self.conn, "measured").await;
        std::mem::take(&mut *self.observed.lock().expect("not poisoned"))
    }
}
