//! The TCP keepalives of the store's connections, put to the test (issue
//! 21): a `warren-scheduler` process runs in a network namespace of its
//! own (`warren_harness::netns`), reaching a PostgreSQL server of the
//! test's own across a veth pair, with its watchdog off
//! (`WARREN_WATCHDOG=0`: no `idle_session_timeout`, no watchdog), so that
//! only TCP can notice. The pair then drops every packet both ways,
//! silently. The server must end the cut scheduler's sessions on its
//! keepalives (5 s + 3 × 2 s) and the in-process scheduler take all the
//! partitions over; the cut process must notice on its side too and, once
//! the pair heals, rejoin. PostgreSQL suite only, and only as root with
//! iproute2 (skipped otherwise, saying so).

use crate::{
    splits::{lock_holders, pg_suite, within},
    support::{Env, Proc, amqp_addr, binaries},
};
use std::{
    net::SocketAddr,
    process::Stdio,
    time::{Duration, Instant},
};
use warren_harness::{
    link::{Link, target_of, via},
    netns::Host,
    pg_cluster::Cluster,
};
use warren_scheduler::{Metrics, store::StoreLocation};

/// Keepalives of 5 s, then 3 probes 2 s apart: 11 s, plus the balance
/// tick and slack for a loaded machine.
const KEEPALIVE_BOUND: Duration = Duration::from_secs(16);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keepalives_end_the_sessions_of_a_scheduler_behind_a_silent_network() {
    if pg_suite().is_none() || !Host::available() {
        eprintln!("skipped: PostgreSQL suite as root with iproute2 only");
        return;
    }
    let host = Host::create().expect("a network namespace");
    let outside = host.outside;
    let cluster = tokio::task::spawn_blocking(move || Cluster::start_on(&[outside]))
        .await
        .unwrap()
        .expect("a PostgreSQL server of the test's own");
    let mut env = Env::new().await;
    env.store = StoreLocation::Postgres(cluster.url());
    // The broker listens on loopback: the namespace reaches it through a
    // link bound to the pair's outside address (cut too: its packets cross
    // the pair).
    let broker = Link::open_on(
        SocketAddr::from((outside, 0)),
        target_of(&amqp_addr()).unwrap(),
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let log_path = dir.path().join("scheduler.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let child = Proc(
        host.command(&binaries()["warren-scheduler"])
            .env("AMQP_ADDR", via(&amqp_addr(), broker.addr()))
            .env("WARREN_NAMESPACE", &env.amqp.namespace)
            .env("WARREN_STORE", cluster.url_at(outside))
            .env("WARREN_WATCHDOG", "0")
            .env("RUST_LOG", "info")
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap(),
    );
    let url = cluster.url();
    let ns = env.amqp.namespace.clone();
    within(
        Duration::from_secs(30),
        "the scheduler in the namespace leads",
        || async { lock_holders(&url, &ns).await == (1, 16) },
    )
    .await;
    let other = env.scheduler(env.scheduler_config());
    within(
        Duration::from_secs(30),
        "the partitions shared by two",
        || async { lock_holders(&url, &ns).await == (2, 16) },
    )
    .await;

    host.cut().unwrap();
    let t0 = Instant::now();
    let took = within(
        KEEPALIVE_BOUND,
        "the server ends the cut sessions",
        || async { lock_holders(&url, &ns).await == (1, 16) },
    )
    .await;
    eprintln!(
        "partitions taken over {:.1} s after the pair went silent",
        took.as_secs_f64()
    );
    // The cut process notices on its side: its lock connection fails on
    // its own keepalives or tcp_user_timeout.
    within(
        KEEPALIVE_BOUND.saturating_sub(t0.elapsed()) + Duration::from_secs(4),
        "the cut scheduler notices",
        || async {
            std::fs::read_to_string(&log_path)
                .unwrap_or_default()
                .contains("Lost the store connection that holds the partition locks")
        },
    )
    .await;
    assert_eq!(Metrics::get(&other.metrics.active), 1);

    host.heal().unwrap();
    within(
        Duration::from_secs(45),
        "the cut scheduler rejoins",
        || async { lock_holders(&url, &ns).await == (2, 16) },
    )
    .await;
    drop(child);
    other.stop().await;
    env.finish().await;
    drop(broker);
    drop(cluster);
    drop(host);
}
