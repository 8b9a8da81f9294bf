//! The network faults of issue 21: `--partitions N` and `--pg-restarts N`.
//!
//! With `--partitions`, every child reaches the broker, and every
//! scheduler the database, through a link of its own made in this process
//! (`warren_harness::link`: loopback TCP forwarders that a fault cuts
//! silently, nothing crossing and nothing closed, and then heals). Each
//! partition fault, in turn: a scheduler cut from PostgreSQL (its
//! partitions must be taken over within [`TAKEOVER_BOUND`]: the
//! watchdog's 10 s plus a margin), a scheduler cut from the broker, a
//! worker cut from the broker mid-task; each held `--partition-hold`
//! seconds, then healed (the cut-off process rejoins). The children's
//! AMQP address asks for 5 s heartbeats, so that both ends notice a
//! silent broker link within about 10 s.
//!
//! With `--pg-restarts`, the store is a PostgreSQL server of the run's own
//! (`warren_harness::pg_cluster`), restarted with `-m fast` and `-m
//! immediate` in turn.

use crate::store::Reader;
use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};
use warren_harness::link::{Link, target_of, via};
use warren_harness::pg_cluster::{Cluster, StopMode};
use warren_shared::topology::fnv1a;

/// Longest takeover allowed after a scheduler is cut from the database.
pub const TAKEOVER_BOUND: Duration = Duration::from_secs(15);

/// The children's links, made as they are first started (a child started
/// again under the same name keeps its links).
pub struct Network {
    amqp: String,
    store: String,
    links: Mutex<HashMap<String, Arc<Link>>>,
    /// What the partition faults found, for the report.
    outcomes: Mutex<Vec<(String, Result<String, String>)>>,
}

/// Which partition fault comes next.
#[derive(Clone, Copy, Debug)]
enum Cut {
    SchedulerFromStore,
    SchedulerFromBroker,
    WorkerFromBroker,
}

impl Network {
    /// Links for children reaching the broker at `amqp` and the store at
    /// `store` (PostgreSQL, or a SQLite path: then no store links).
    pub fn new(amqp: &str, store: &str) -> Network {
        Network {
            amqp: amqp.to_owned(),
            store: store.to_owned(),
            links: Mutex::default(),
            outcomes: Mutex::default(),
        }
    }

    fn link(&self, name: String, url: &str) -> anyhow::Result<Arc<Link>> {
        let mut links = self.links.lock().expect("not poisoned");
        if let Some(l) = links.get(&name) {
            return Ok(l.clone());
        }
        let l = Arc::new(Link::open(target_of(url)?)?);
        links.insert(name, l.clone());
        Ok(l)
    }

    /// The (broker, store) addresses the child `id` is given.
    pub fn route(&self, id: &str) -> anyhow::Result<(String, String)> {
        let broker = self.link(format!("{id}/broker"), &self.amqp)?;
        let sep = if self.amqp.contains('?') { '&' } else { '?' };
        let amqp = format!("{}{sep}heartbeat=5", via(&self.amqp, broker.addr()));
        let store = if id.starts_with("scheduler") && self.store.starts_with("postgres") {
            via(
                &self.store,
                self.link(format!("{id}/store"), &self.store)?.addr(),
            )
        } else {
            self.store.clone()
        };
        Ok((amqp, store))
    }

    /// The `n`th partition fault: cuts one of `schedulers` or `workers`
    /// (their names), holds the cut for `hold`, heals it.
    pub async fn partition(
        &self,
        n: usize,
        (schedulers, workers): (&[String], &[String]),
        store: &Reader,
        hold: Duration,
    ) -> anyhow::Result<()> {
        let postgres = matches!(store, Reader::Postgres { .. });
        let kinds: &[Cut] = if postgres {
            &[
                Cut::SchedulerFromStore,
                Cut::SchedulerFromBroker,
                Cut::WorkerFromBroker,
            ]
        } else {
            &[Cut::SchedulerFromBroker, Cut::WorkerFromBroker]
        };
        let kind = kinds[n % kinds.len()];
        let (who, what) = match (kind, store) {
            (Cut::SchedulerFromStore, Reader::Postgres { url, schema }) => {
                // The scheduler owning the most partitions, so that the
                // cut meets work in flight.
                (self.busiest(schedulers, url, schema).await?, "store")
            }
            (Cut::SchedulerFromStore | Cut::SchedulerFromBroker, _) => (pick(schedulers), "broker"),
            (Cut::WorkerFromBroker, _) => (pick(workers), "broker"),
        };
        let link = self
            .links
            .lock()
            .expect("not poisoned")
            .get(&format!("{who}/{what}"))
            .cloned();
        let Some(link) = link else {
            anyhow::bail!("no link for {who}/{what}");
        };
        let label = format!("{who} cut from the {what}");
        // The scheduler's database sessions, named by their client ports.
        let store_link = self
            .links
            .lock()
            .expect("not poisoned")
            .get(&format!("{who}/store"))
            .cloned();
        let ports = store_link.map(|l| l.upstream_ports()).unwrap_or_default();
        link.cut();
        let t0 = Instant::now();
        let outcome = match (kind, store) {
            (Cut::WorkerFromBroker, _) | (_, Reader::Sqlite(_)) => {
                Ok(format!("held {} s", hold.as_secs()))
            }
            (_, Reader::Postgres { url, schema }) => {
                let from_store = matches!(kind, Cut::SchedulerFromStore);
                let limit = if from_store {
                    hold.max(TAKEOVER_BOUND + Duration::from_secs(5))
                } else {
                    hold
                };
                let (had, seen) = taken_over(url, schema, &ports, limit).await?;
                match seen {
                    Some(t) if !from_store || (t <= TAKEOVER_BOUND && had > 0) => Ok(format!(
                        "{had} partitions taken over in {:.1} s",
                        t.as_secs_f64()
                    )),
                    None if !from_store => Ok(format!(
                        "kept its {had} partitions through the {} s cut",
                        hold.as_secs()
                    )),
                    Some(t) => Err(format!(
                        "{had} partitions taken over in {:.1} s",
                        t.as_secs_f64()
                    )),
                    None => Err(format!("{had} partitions not taken over")),
                }
            }
        };
        let rest = hold.saturating_sub(t0.elapsed());
        tokio::time::sleep(rest).await;
        link.heal();
        println!(
            "partition: {label}: {}",
            match &outcome {
                Ok(s) | Err(s) => s,
            }
        );
        self.outcomes
            .lock()
            .expect("not poisoned")
            .push((label, outcome));
        Ok(())
    }

    /// Of `schedulers`, the one whose sessions hold the most partition
    /// locks (waiting up to 10 s for any to hold one).
    async fn busiest(
        &self,
        schedulers: &[String],
        url: &str,
        schema: &str,
    ) -> anyhow::Result<String> {
        let until = Instant::now() + Duration::from_secs(10);
        loop {
            let held = locks_by_port(url, schema).await?;
            let best = schedulers
                .iter()
                .map(|s| {
                    let link = self
                        .links
                        .lock()
                        .expect("not poisoned")
                        .get(&format!("{s}/store"))
                        .cloned();
                    let n: i64 = link.map_or(0, |l| {
                        l.upstream_ports().iter().filter_map(|p| held.get(p)).sum()
                    });
                    (n, s.clone())
                })
                .max();
            match best {
                Some((n, s)) if n > 0 || Instant::now() > until => return Ok(s),
                _ => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }

    /// Prints what the partition faults found; true when every cut
    /// scheduler was taken over in time.
    pub fn verdict(&self) -> bool {
        let outcomes = self.outcomes.lock().expect("not poisoned");
        if outcomes.is_empty() {
            return true;
        }
        println!();
        println!("{:<46} {:<6} detail", "network split", "result");
        let mut ok = true;
        for (label, outcome) in outcomes.iter() {
            let (pass, detail) = match outcome {
                Ok(d) => (true, d),
                Err(d) => (false, d),
            };
            ok &= pass;
            println!(
                "{label:<46} {:<6} {detail}",
                if pass { "PASS" } else { "FAIL" }
            );
        }
        ok
    }
}

fn pick(names: &[String]) -> String {
    names[fastrand::usize(0..names.len())].clone()
}

/// Waits up to `limit` until the sessions on `ports` hold no partition
/// lock and all 16 are held (by the others): how many they held at the
/// start, and when that was.
async fn taken_over(
    url: &str,
    schema: &str,
    ports: &[u16],
    limit: Duration,
) -> anyhow::Result<(i64, Option<Duration>)> {
    let t0 = Instant::now();
    let held = |now: &HashMap<u16, i64>| -> i64 { ports.iter().filter_map(|p| now.get(p)).sum() };
    let had = held(&locks_by_port(url, schema).await?);
    while t0.elapsed() < limit {
        let now = locks_by_port(url, schema).await?;
        if held(&now) == 0 && now.values().sum::<i64>() == 16 {
            return Ok((had, Some(t0.elapsed())));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok((had, None))
}

/// Partition locks held, by the client port of the session holding them
/// (a link's upstream port names its scheduler's sessions).
async fn locks_by_port(url: &str, schema: &str) -> anyhow::Result<HashMap<u16, i64>> {
    let key = i64::from((fnv1a(&format!("warren:{schema}")) & 0x7fff_ffff) as i32);
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    tokio::spawn(conn);
    let rows = client
        .query(
            "SELECT a.client_port, count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
             WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2 AND l.classid::int8 = $1
               AND l.objid::int8 < 65535
               AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
             GROUP BY a.client_port",
            &[&key],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| {
            let port: Option<i32> = r.get(0);
            (port.unwrap_or(0).clamp(0, 65535) as u16, r.get::<_, i64>(1))
        })
        .collect())
}

/// The run's own PostgreSQL server, for `--pg-restarts`.
pub struct Restarts {
    cluster: Arc<Cluster>,
    done: usize,
}

impl Restarts {
    pub async fn start() -> anyhow::Result<Restarts> {
        let cluster = tokio::task::spawn_blocking(Cluster::start).await??;
        Ok(Restarts {
            cluster: Arc::new(cluster),
            done: 0,
        })
    }

    pub fn url(&self) -> String {
        self.cluster.url()
    }

    /// Restarts the server: `-m fast` and `-m immediate` in turn.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        let mode = if self.done.is_multiple_of(2) {
            StopMode::Fast
        } else {
            StopMode::Immediate
        };
        self.done += 1;
        let c = self.cluster.clone();
        let t0 = Instant::now();
        tokio::task::spawn_blocking(move || c.restart(mode)).await??;
        println!(
            "PostgreSQL restart ({mode:?}) took {:.1} s",
            t0.elapsed().as_secs_f64()
        );
        Ok(())
    }
}
