//! Network splits on PostgreSQL (issue 21): schedulers reach the database
//! through links of their own (`warren_harness::link`), which a test cuts
//! silently (nothing crosses, nothing closes) and heals. PostgreSQL suite
//! only (`WARREN_TEST_STORE=postgres://...`): the split tests wait out the
//! default timeouts, whose bound they check, and that is not worth paying
//! twice.

use crate::support::{DEADLINE, Env, RunningScheduler, committed_results, wait_until};
use serde_json::json;
use std::time::{Duration, Instant};
use warren_harness::link::{Link, target_of, via};
use warren_scheduler::{Metrics, store::StoreLocation};
use warren_shared::{topology::fnv1a, wire::WorkflowStatus};

/// The takeover bound the default timeouts promise after a scheduler is
/// cut from the database (docs/reliability.md, Network splits): the
/// lock session's idle timeout (= the 10 s watchdog) plus a balance tick
/// and the load of the partitions.
pub const TAKEOVER_BOUND: Duration = Duration::from_secs(15);

/// `WARREN_TEST_STORE` when the suite runs on PostgreSQL.
pub fn pg_suite() -> Option<String> {
    std::env::var("WARREN_TEST_STORE")
        .ok()
        .filter(|u| u.starts_with("postgres"))
}

fn chain(id: &str) -> serde_json::Value {
    json!({"id": id, "tasks": [
        {"id": "a", "type": "sleep", "input": {"ms": 20}},
        {"id": "b", "type": "echo", "depends_on": ["a"], "input": "${a.output}"},
        {"id": "c", "type": "sleep", "depends_on": ["b"], "input": {"ms": 20}}
    ]})
}

/// Submits chains `ids` and waits for each report, in the background.
pub fn run(env: &Env, ids: Vec<String>) -> tokio::task::JoinHandle<Vec<String>> {
    let client = env.client.clone();
    tokio::spawn(async move {
        let waiting: Vec<_> = ids
            .into_iter()
            .map(|id| {
                let client = client.clone();
                tokio::spawn(async move {
                    let r = client
                        .submit_and_wait(chain(&id), Duration::from_secs(120))
                        .await
                        .expect("a report");
                    assert_eq!(r.status, WorkflowStatus::Succeeded, "{r:?}");
                    id
                })
            })
            .collect();
        let mut done = Vec::new();
        for w in waiting {
            done.push(w.await.expect("no panic"));
        }
        done
    })
}

/// One committed result per task, each of attempt 1: no task was run for
/// two owners (a second owner's dispatch would be a second attempt or a
/// second result).
pub async fn exactly_once(env: &Env, ids: &[String]) {
    for id in ids {
        let results = committed_results(env, id).await;
        assert_eq!(results.len(), 3, "one result per task of {id}: {results:?}");
        assert!(
            results
                .iter()
                .all(|(_, attempt, s)| *attempt == 1 && s == "succeeded"),
            "{id}: {results:?}"
        );
    }
}

/// Who holds the namespace's partition locks: (distinct sessions, locks).
pub async fn lock_holders(url: &str, namespace: &str) -> (i64, i64) {
    let schema = warren_scheduler::store::postgres::schema_of(namespace);
    let key = i64::from((fnv1a(&format!("warren:{schema}")) & 0x7fff_ffff) as i32);
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let row = client
        .query_one(
            "SELECT count(DISTINCT pid), count(*) FROM pg_locks
             WHERE locktype = 'advisory' AND granted AND objsubid = 2 AND classid::int8 = $1
               AND objid::int8 < 65535
               AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
            &[&key],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1))
}

/// Sessions of the namespace idle inside a transaction (a batch cut off
/// between its statements and its commit).
async fn idle_in_transaction(url: &str, namespace: &str) -> i64 {
    let app = format!(
        "warren {}",
        warren_scheduler::store::postgres::schema_of(namespace)
    );
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    client
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 AND state = 'idle in transaction'",
            &[&app],
        )
        .await
        .unwrap()
        .get(0)
}

/// Polls `cond` until it holds or `limit` passes; how long it took.
pub async fn within<F: std::future::Future<Output = bool>>(
    limit: Duration,
    what: &str,
    mut cond: impl FnMut() -> F,
) -> Duration {
    let start = Instant::now();
    while !cond().await {
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    start.elapsed()
}

async fn both_lead(env: &Env, a: &RunningScheduler, b: &RunningScheduler, url: &str) {
    wait_until("both schedulers lead", || {
        Metrics::get(&a.metrics.active) == 1 && Metrics::get(&b.metrics.active) == 1
    })
    .await;
    within(DEADLINE, "the partitions shared by two", || async {
        lock_holders(url, &env.amqp.namespace).await == (2, 16)
    })
    .await;
}

/// A scheduler cut from the database in the middle of its batches (its
/// link slowed first, so that its transactions stay open, then cut): the
/// other takes all its partitions over within [`TAKEOVER_BOUND`] with the
/// default timeouts; the cut one commits nothing more; once the link heals
/// it rejoins and works again; every workflow ends with one result per task.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduler_cut_from_the_database_mid_batch_is_taken_over_in_time_and_rejoins() {
    let Some(url) = pg_suite() else {
        eprintln!("skipped: PostgreSQL suite only");
        return;
    };
    let mut env = Env::new().await;
    env.store = StoreLocation::Postgres(url.clone());
    let link = Link::to(target_of(&url).unwrap()).await.unwrap();
    let mut cut_config = env.scheduler_config();
    cut_config.store = StoreLocation::Postgres(via(&url, link.addr()));
    let cut = env.scheduler(cut_config);
    let other = env.scheduler(env.scheduler_config());
    both_lead(&env, &cut, &other, &url).await;
    env.worker(
        warren_worker::Registry::with_builtins(),
        &["default"],
        16,
        "w",
    );

    let ids: Vec<String> = (0..60).map(|i| format!("split-{i}")).collect();
    let first = run(&env, ids.clone());
    wait_until("the cut scheduler commits", || {
        Metrics::get(&cut.metrics.batches_committed) > 3
    })
    .await;
    // Slow, so that a batch is in flight, then silent.
    link.delay(Duration::from_millis(150));
    tokio::time::sleep(Duration::from_millis(400)).await;
    link.cut();
    let t0 = Instant::now();
    let committed_at_cut = Metrics::get(&cut.metrics.batches_committed);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let open = idle_in_transaction(&url, &env.amqp.namespace).await;
    eprintln!("sessions idle in a transaction just after the cut: {open}");

    within(TAKEOVER_BOUND, "the takeover", || async {
        lock_holders(&url, &env.amqp.namespace).await == (1, 16)
    })
    .await;
    let takeover = t0.elapsed();
    eprintln!("takeover after the cut: {:.1} s", takeover.as_secs_f64());
    assert!(takeover <= TAKEOVER_BOUND, "{takeover:?}");
    // At most the batch in flight at the cut counts as committed by the
    // cut scheduler (if its commit reached the server before the cut).
    assert!(
        Metrics::get(&cut.metrics.batches_committed) <= committed_at_cut + 1,
        "the cut scheduler committed after the cut"
    );
    let after_takeover = Metrics::get(&cut.metrics.batches_committed);

    // The other finishes every workflow while the cut one is away.
    let done = first.await.unwrap();
    exactly_once(&env, &done).await;
    assert_eq!(
        Metrics::get(&cut.metrics.batches_committed),
        after_takeover,
        "nothing committed by the cut scheduler after losing its partitions"
    );

    // Healed, it rejoins and takes its share again.
    link.heal();
    within(Duration::from_secs(45), "the old owner rejoins", || async {
        Metrics::get(&cut.metrics.active) == 1
            && lock_holders(&url, &env.amqp.namespace).await == (2, 16)
    })
    .await;
    let before = Metrics::get(&cut.metrics.engine.results_committed);
    let more: Vec<String> = (0..20).map(|i| format!("healed-{i}")).collect();
    let done = run(&env, more).await.unwrap();
    exactly_once(&env, &done).await;
    assert!(
        Metrics::get(&cut.metrics.engine.results_committed) > before,
        "the rejoined scheduler works again"
    );
    cut.stop().await;
    other.stop().await;
    env.finish().await;
}
