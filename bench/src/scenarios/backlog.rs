//! A backlog larger than memory: `o.backlog` tasks (2,000,000 by default,
//! in workflows of `o.backlog_workflow`, 100) submitted with no worker
//! running. The scheduler holds its working set (`WARREN_MAX_ACTIVE_TASKS`,
//! its default unless `--backlog-budget`) and accepts the rest `queued`
//! in the store. While the backlog waits: the most tasks it held (its
//! `warren_active_tasks` gauge, sampled from `/metrics`), how many
//! workflows it runs and queues, requests left waiting, its peak RSS, and a
//! `status` of every workflow (each must answer `running` or `queued`).
//! Then a priority-9 workflow submitted behind the whole backlog, and a
//! worker: how soon that workflow's first task starts once the worker is
//! started, and the time to drain everything, beside the ceiling.

use super::{TIMEOUT, ensure_ok, first_start, independent};
use crate::{
    Opts,
    ceiling::Ceiling,
    deployment::{Deployment, Setup},
    figures::Figure,
};
use anyhow::{Context, bail};
use futures_lite::StreamExt;
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
use warren_shared::wire::WorkflowStatus;

/// How long the backlog may take to settle (every request taken).
const SETTLE: Duration = Duration::from_secs(1_800);
/// Status requests in flight at once while every workflow is asked.
const ASKING: usize = 32;

pub async fn backlog(addr: &str, o: &Opts, c: &Ceiling) -> anyhow::Result<Vec<Figure>> {
    let http = free_addr()?;
    let mut d = Deployment::start_with(
        addr,
        &Setup {
            workers: Vec::new(),
            max_active_tasks: o.backlog_budget,
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
    if gauge(&page, "warren_workflows_queued").is_none() {
        bail!("the scheduler serves no warren_workflows_queued gauge");
    }
    let sampler = Sampler::start(http);

    // The backlog: every workflow submitted and waited for at once.
    let per = o.backlog_workflow.max(1);
    let sizes: Vec<usize> = (0..o.backlog.div_ceil(per))
        .map(|i| per.min(o.backlog - i * per))
        .collect();
    let total: usize = sizes.iter().sum();
    let budget = o
        .backlog_budget
        .map_or("the default".to_owned(), |b| b.to_string());
    println!(
        "  {total} tasks in {} workflows, working set {budget} tasks, no worker",
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

    // It settles: every request taken, running or queued.
    let workflows = sizes.len() as u64;
    loop {
        let taken = sampler.seen.running.load(Ordering::Relaxed)
            + sampler.seen.queued.load(Ordering::Relaxed);
        if taken >= workflows && sampler.seen.waiting.load(Ordering::Relaxed) == 0 {
            break;
        }
        if submitted.elapsed() > SETTLE {
            bail!("the backlog did not settle: {taken} of {workflows} workflows taken");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let settled_s = submitted.elapsed().as_secs_f64();
    let held_max = sampler.seen.active_max.load(Ordering::Relaxed);
    let running = sampler.seen.running.load(Ordering::Relaxed);
    let queued = sampler.seen.queued.load(Ordering::Relaxed);
    let waiting_in_broker = queued_requests(&d).await?;
    println!(
        "  settled after {settled_s:.1} s: {running} workflows running ({held_max} tasks held at most), {queued} queued, {waiting_in_broker} requests left in the broker"
    );
    // Every request answerable by `status`.
    let asked = Instant::now();
    let answered = ask_every(&client, sizes.len()).await?;
    let asked_s = asked.elapsed().as_secs_f64();
    println!("  {answered} status requests answered running or queued in {asked_s:.1} s");
    let rss_waiting = d.scheduler.peak_rss_mb().unwrap_or(f64::NAN);

    // An urgent workflow behind the whole backlog, then a worker.
    let urgent = tokio::spawn({
        let client = client.clone();
        let request = json!({"id": "urgent", "priority": 9, "tasks": independent("u", 10)});
        async move { client.submit_and_wait(request, TIMEOUT).await }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    while client.status("urgent", TIMEOUT).await?.status != WorkflowStatus::Running {
        if Instant::now() > deadline {
            bail!("the urgent workflow did not start running");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let worker_started = chrono::Utc::now();
    let drain = Instant::now();
    d.add_worker("bench-worker", o.concurrency)?;
    let urgent = urgent.await??;
    ensure_ok(&urgent)?;
    let first = first_start(&urgent)?;
    let urgent_start_s = (first - worker_started).num_milliseconds() as f64 / 1e3;
    println!(
        "  the urgent workflow's first task started {urgent_start_s:.3} s after the worker was started"
    );
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
            "backlog: workflows submitted",
            workflows as f64,
            "workflows",
        ),
        Figure::info(
            "backlog: most tasks held (the working set)",
            held_max as f64,
            "tasks",
        ),
        Figure::info(
            "backlog: workflows queued once settled",
            queued as f64,
            "workflows",
        ),
        Figure::info("backlog: seconds to accept every request", settled_s, "s"),
        Figure {
            name: "backlog: requests left waiting in the broker".into(),
            value: waiting_in_broker as f64,
            unit: "requests",
            ratio: None,
            target: "0 (every request accepted)",
        },
        Figure {
            name: "backlog: status requests answered running or queued".into(),
            value: answered as f64,
            unit: "workflows",
            ratio: None,
            target: "every workflow",
        },
        Figure {
            name: "backlog: scheduler peak RSS while waiting".into(),
            value: rss_waiting,
            unit: "MB",
            ratio: None,
            target: "< 500 MB",
        },
        Figure {
            name: "backlog: priority-9 start after the worker starts".into(),
            value: urgent_start_s,
            unit: "s",
            ratio: None,
            target: "<= 1 s",
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
            target: "< 500 MB",
        },
    ])
}

/// Asks the status of `backlog-0` to `backlog-{n-1}`, [`ASKING`] at a
/// time; fails unless each is `running` or `queued`. Returns how many
/// answered.
async fn ask_every(client: &Arc<Client>, n: usize) -> anyhow::Result<usize> {
    let mut asks = futures_lite::stream::iter(0..n).map(|i| {
        let client = client.clone();
        tokio::spawn(async move {
            let id = format!("backlog-{i}");
            let r = client.status(&id, TIMEOUT).await?;
            match r.status {
                WorkflowStatus::Running | WorkflowStatus::Queued => Ok(()),
                other => bail!("{id} is {}", other.as_str()),
            }
        })
    });
    let mut pending = std::collections::VecDeque::new();
    let mut answered = 0;
    while let Some(ask) = asks.next().await {
        pending.push_back(ask);
        if pending.len() >= ASKING {
            pending.pop_front().expect("full").await??;
            answered += 1;
        }
    }
    for ask in pending {
        ask.await??;
        answered += 1;
    }
    Ok(answered)
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
    /// Requests waiting in the scheduler now.
    waiting: AtomicU64,
    /// Workflows running and queued now.
    running: AtomicU64,
    queued: AtomicU64,
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
                        && let (Some(active), Some(waiting), Some(running), Some(queued)) = (
                            gauge(&body, "warren_active_tasks"),
                            gauge(&body, "warren_requests_waiting"),
                            gauge(&body, "warren_workflows_running"),
                            gauge(&body, "warren_workflows_queued"),
                        )
                    {
                        seen.active.store(active, Ordering::Relaxed);
                        seen.active_max.fetch_max(active, Ordering::Relaxed);
                        seen.waiting.store(waiting, Ordering::Relaxed);
                        seen.running.store(running, Ordering::Relaxed);
                        seen.queued.store(queued, Ordering::Relaxed);
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
