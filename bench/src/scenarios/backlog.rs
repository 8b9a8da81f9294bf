//! The memory budget under a backlog: `o.backlog` tasks (200,000 by
//! default, in workflows of `o.backlog_workflow`) submitted with no worker
//! running to a scheduler whose budget is `o.backlog_budget` tasks
//! (WARREN_MAX_ACTIVE_TASKS). While the backlog waits: the most tasks the
//! scheduler held (its `warren_active_tasks` gauge, sampled from
//! `/metrics`), the requests waiting in it and in the broker, and its peak
//! RSS. Then a worker starts: the time to drain the whole backlog, and its
//! rate beside the ceiling's.

use super::{TIMEOUT, ensure_ok, independent};
use crate::{
    Opts,
    ceiling::Ceiling,
    deployment::{Deployment, Setup},
    figures::Figure,
};
use anyhow::{Context, bail};
use lapin::{options::QueueDeclareOptions, types::FieldTable};
use serde_json::json;
use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};
use warren_producer::Client;

/// How long the backlog may take to settle (every request it can take
/// taken, the rest waiting).
const SETTLE: Duration = Duration::from_secs(600);

pub async fn backlog(addr: &str, o: &Opts, c: &Ceiling) -> anyhow::Result<Vec<Figure>> {
    let http = free_addr()?;
    let budget = o.backlog_budget;
    let mut d = Deployment::start_with(
        addr,
        &Setup {
            workers: Vec::new(),
            max_active_tasks: Some(budget),
            http_addr: Some(http),
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
    let page = metrics(http).await?;
    if gauge(&page, "warren_active_tasks").is_none() {
        bail!("the scheduler serves no warren_active_tasks gauge");
    }
    let sampler = Sampler::start(http);

    // The backlog: every workflow submitted and waited for at once.
    let per = o.backlog_workflow.max(1);
    let sizes: Vec<usize> = (0..o.backlog.div_ceil(per))
        .map(|i| per.min(o.backlog - i * per))
        .collect();
    let total: usize = sizes.iter().sum();
    println!(
        "  {total} tasks in {} workflows, budget {budget} tasks, no worker",
        sizes.len()
    );
    let submitted = Instant::now();
    let waits: Vec<_> = sizes
        .iter()
        .enumerate()
        .map(|(i, &n)| {
            let client = client.clone();
            let request = json!({"id": format!("backlog-{i}"), "tasks": independent("t", n)});
            tokio::spawn(async move { client.submit_and_wait(request, TIMEOUT).await })
        })
        .collect();

    // It settles: the scheduler holds what fits, and holds it still.
    let (mut last, mut still_since) = (u64::MAX, Instant::now());
    loop {
        let held = sampler.seen.active.load(Ordering::Relaxed);
        if held != last {
            (last, still_since) = (held, Instant::now());
        }
        let waiting = sampler.seen.waiting_max.load(Ordering::Relaxed) > 0;
        if waiting && still_since.elapsed() > Duration::from_secs(3) {
            break;
        }
        if submitted.elapsed() > SETTLE {
            bail!("the backlog did not settle: {held} tasks held");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let settled_s = submitted.elapsed().as_secs_f64();
    let held = sampler.seen.active.load(Ordering::Relaxed);
    let held_max = sampler.seen.active_max.load(Ordering::Relaxed);
    let waiting_in_scheduler = sampler.seen.waiting.load(Ordering::Relaxed);
    let waiting_in_broker = queued_requests(&d).await?;
    let rss_waiting = d.scheduler.peak_rss_mb().unwrap_or(f64::NAN);
    println!(
        "  settled after {settled_s:.1} s: {held} tasks held (at most {held_max}), {waiting_in_scheduler} requests waiting in the scheduler, {waiting_in_broker} in the broker, peak RSS {rss_waiting:.0} MB"
    );

    // A worker: the time to drain it all.
    let drain = Instant::now();
    d.add_worker("bench-worker", o.concurrency)?;
    for w in waits {
        ensure_ok(&w.await??)?;
    }
    let drain_s = drain.elapsed().as_secs_f64();
    let seen = sampler.finish().await;
    let rss_all = d.scheduler.peak_rss_mb().unwrap_or(f64::NAN);
    if let Ok(c) = Arc::try_unwrap(client) {
        c.close().await;
    }
    d.stop().await?;

    let held_max = seen.active_max.load(Ordering::Relaxed);
    let rate = total as f64 / drain_s;
    Ok(vec![
        Figure::info("backlog: tasks submitted, no worker", total as f64, "tasks"),
        Figure::info(
            "backlog: budget (WARREN_MAX_ACTIVE_TASKS)",
            budget as f64,
            "tasks",
        ),
        Figure {
            name: "backlog: most tasks held".into(),
            value: held_max as f64,
            unit: "tasks",
            ratio: None,
            target: "<= the budget",
        },
        Figure::info(
            "backlog: requests waiting in the scheduler",
            waiting_in_scheduler as f64,
            "requests",
        ),
        Figure::info(
            "backlog: requests waiting in the broker",
            waiting_in_broker as f64,
            "requests",
        ),
        Figure {
            name: "backlog: scheduler peak RSS while waiting".into(),
            value: rss_waiting,
            unit: "MB",
            ratio: None,
            target: "< 1536 MB",
        },
        Figure::info("backlog: time to drain once a worker runs", drain_s, "s"),
        Figure {
            name: "backlog: drain, tasks/s".into(),
            value: rate,
            unit: "tasks/s",
            ratio: Some(rate / c.tasks_per_s),
            target: "",
        },
        Figure {
            name: "backlog: scheduler peak RSS overall".into(),
            value: rss_all,
            unit: "MB",
            ratio: None,
            target: "< 1536 MB",
        },
    ])
}

/// A local address nothing listens on (bound, then released for the
/// scheduler to take).
pub(super) fn free_addr() -> anyhow::Result<SocketAddr> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

/// Requests ready in `{ns}.workflows`: those the scheduler has not taken.
async fn queued_requests(d: &Deployment) -> anyhow::Result<u32> {
    let conn = warren_shared::amqp::connect(&d.amqp.addr, "bench backlog").await?;
    let ch = conn.create_channel().await?;
    let q = ch
        .queue_declare(
            d.amqp.topology().workflows().as_str().into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await?;
    warren_shared::amqp::close(&conn, "looked").await;
    Ok(q.message_count())
}

/// `GET /metrics` (std's blocking TCP on the blocking pool: the bench
/// needs no HTTP client for one page).
pub(super) async fn metrics(addr: SocketAddr) -> anyhow::Result<String> {
    tokio::task::spawn_blocking(move || -> anyhow::Result<String> {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        write!(
            s,
            "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
        )?;
        let mut text = String::new();
        s.read_to_string(&mut text)?;
        let (head, body) = text.split_once("\r\n\r\n").context("an HTTP answer")?;
        if !head.starts_with("HTTP/1.1 200") {
            bail!("{}", head.lines().next().unwrap_or_default());
        }
        Ok(body.to_owned())
    })
    .await?
}

/// The value of metric `name` (a line `name value`) in Prometheus text.
pub(super) fn gauge(body: &str, name: &str) -> Option<u64> {
    body.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == name).then(|| v.trim().parse::<f64>().ok().map(|v| v as u64))?
    })
}

/// What the sampler saw.
#[derive(Default)]
struct Seen {
    /// Tasks held now, and the most seen.
    active: AtomicU64,
    active_max: AtomicU64,
    /// Requests waiting in the scheduler now, and the most seen.
    waiting: AtomicU64,
    waiting_max: AtomicU64,
}

/// Reads the budget's gauges from `/metrics` every 50 ms until stopped.
struct Sampler {
    stop: Arc<AtomicBool>,
    seen: Arc<Seen>,
    join: tokio::task::JoinHandle<()>,
}

impl Sampler {
    fn start(http: SocketAddr) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Seen::default());
        let join = tokio::spawn({
            let (stop, seen) = (stop.clone(), seen.clone());
            async move {
                while !stop.load(Ordering::Relaxed) {
                    if let Ok(body) = metrics(http).await
                        && let (Some(active), Some(waiting)) = (
                            gauge(&body, "warren_active_tasks"),
                            gauge(&body, "warren_requests_waiting"),
                        )
                    {
                        seen.active.store(active, Ordering::Relaxed);
                        seen.active_max.fetch_max(active, Ordering::Relaxed);
                        seen.waiting.store(waiting, Ordering::Relaxed);
                        seen.waiting_max.fetch_max(waiting, Ordering::Relaxed);
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        });
        Sampler { stop, seen, join }
    }

    async fn finish(self) -> Arc<Seen> {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.join.await;
        self.seen
    }
}
