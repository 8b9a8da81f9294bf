//! Which partitions this scheduler owns ([`Partitions`]): membership and
//! ownership through session advisory locks, balancing among the
//! schedulers of the namespace, the epochs that fence a scheduler which
//! lost a partition, and stepping down.
//!
//! The locks live on a connection of their own (not the pool's): partition
//! `p` is the advisory lock `(k, p)`, `k` a hash of the schema, and every
//! running scheduler also holds the shared lock `(k, 65535)`, so
//! `pg_locks` tells who is there and who owns what. A session that ends
//! drops its locks at once, and the others take its partitions over,
//! bumping each one's epoch in the `partitions` table.

use super::{get, keeper, pg, running_workflows, tls::MakeTls};
use crate::batch::RunningWorkflow;
use crate::store::StoreError;
use deadpool_postgres::Pool;
use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};
use tokio_util::sync::CancellationToken;
use warren_shared::topology::{PARTITIONS, fnv1a};

/// Second key of the shared advisory lock that every running scheduler of
/// the namespace holds: its holders are the schedulers sharing the work.
const MEMBER_LOCK: i32 = 65_535;

/// What a look at the partitions' owners found (see [`Partitions::balance`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Balance {
    /// Nothing to change.
    Unchanged,
    /// This scheduler took this many more partitions: load them.
    Acquired(usize),
    /// This scheduler owns this many more than its share while another
    /// has less: stop working on them, then [`Partitions::release`] them.
    Release(usize),
}

/// What [`Partitions`] is built from: the store's pool and how to connect.
pub(super) struct Setup {
    pub pool: Pool,
    pub config: tokio_postgres::Config,
    pub tls: MakeTls,
    /// The lock connection's `idle_session_timeout` (zero: none).
    pub lock_idle: Duration,
}

/// The connection that holds this scheduler's advisory locks.
struct LockConn {
    /// Shared with the pings (`keeper.rs`).
    client: Arc<tokio_postgres::Client>,
    /// Its server process, as `pg_locks` names it.
    pid: i32,
}

/// How often a scheduler looks at who owns which partition.
pub const BALANCE_EVERY: Duration = Duration::from_millis(100);

/// This scheduler's share of the namespace's partitions, and the calls
/// only a partitioned store has (reached through
/// [`Store::partitioned`](crate::store::Store::partitioned)).
pub struct Partitions {
    /// The store's pool (a handle to the same one), for the reads and
    /// writes that are not batches: type places, stored reports.
    pub(super) pool: Pool,
    /// How to connect (for the lock connection).
    config: tokio_postgres::Config,
    /// Its TLS, as the pool's.
    tls: MakeTls,
    /// First key of the namespace's advisory locks: partition `p` is the
    /// lock `(lock_key, p)`, membership the shared lock `(lock_key,
    /// MEMBER_LOCK)`, and type places take a transaction lock `(lock_key,
    /// 65536 + hash of the type)`.
    pub(super) lock_key: i32,
    /// The partitions this scheduler owns, each with the epoch it took it
    /// with (sorted by partition).
    owned: std::sync::Mutex<Vec<(i32, i64)>>,
    /// Cleared when the lock connection ends.
    leading: Arc<AtomicBool>,
    /// Which lead attempt the lock connection belongs to: a connection of
    /// an earlier attempt that ends late must not clear `leading`.
    generation: Arc<AtomicU64>,
    /// Holds the advisory locks for as long as it is open.
    lock_conn: tokio::sync::Mutex<Option<LockConn>>,
    /// The task driving the lock connection: aborting it closes the
    /// connection even while a query on it is stuck (see
    /// [`Partitions::abandon`]).
    lock_task: std::sync::Mutex<Option<tokio::task::AbortHandle>>,
    /// Cancelled when the watchdog gives the partitions up: store calls of
    /// the loop waiting on the database give up with it
    /// ([`Partitions::guarded`]). A fresh one per lead.
    abandoned: std::sync::Mutex<CancellationToken>,
    /// The lock connection's `idle_session_timeout` (zero: none).
    lock_idle: Duration,
    /// The store as logs name it.
    describe: String,
}

/// A store dropped without [`Partitions::close`] (its scheduler's task
/// aborted) lets the partitions go as a killed process would: the pings
/// stop and the lock connection closes.
impl Drop for Partitions {
    fn drop(&mut self) {
        self.abandoned.lock().expect("not poisoned").cancel();
        if let Some(task) = self.lock_task.lock().expect("not poisoned").take() {
            task.abort();
        }
    }
}

impl Partitions {
    /// Owning nothing yet: [`Partitions::lead`] joins the schedulers.
    pub(super) fn new(setup: Setup, schema: &str, describe: String) -> Partitions {
        let Setup {
            pool,
            config,
            tls,
            lock_idle,
        } = setup;
        Partitions {
            pool,
            config,
            tls,
            lock_task: std::sync::Mutex::new(None),
            abandoned: std::sync::Mutex::new(CancellationToken::new()),
            lock_idle,
            lock_key: (fnv1a(&format!("warren:{schema}")) & 0x7fff_ffff) as i32,
            owned: std::sync::Mutex::new(Vec::new()),
            leading: Arc::new(AtomicBool::new(false)),
            generation: Arc::new(AtomicU64::new(0)),
            lock_conn: tokio::sync::Mutex::new(None),
            describe,
        }
    }

    /// True while this scheduler owns partitions and holds their locks.
    pub fn is_leading(&self) -> bool {
        self.leading.load(Ordering::SeqCst) && !self.owned().is_empty()
    }

    /// The partitions this scheduler owns, in order.
    pub fn owned(&self) -> Vec<u16> {
        self.owned
            .lock()
            .expect("not poisoned")
            .iter()
            .map(|&(p, _)| p as u16)
            .collect()
    }

    /// The partitions owned and the epochs they were taken with, for a
    /// batch to check inside its transaction; [`StoreError::Fenced`] when
    /// this scheduler may not commit (it owns nothing, or its lock
    /// connection ended).
    pub(super) fn fence(&self) -> Result<(Vec<i32>, Vec<i64>), StoreError> {
        let (parts, epochs): (Vec<i32>, Vec<i64>) = self
            .owned
            .lock()
            .expect("not poisoned")
            .iter()
            .copied()
            .unzip();
        if !self.leading.load(Ordering::SeqCst) || parts.is_empty() {
            return Err(StoreError::Fenced);
        }
        Ok((parts, epochs))
    }

    /// Joins the schedulers of the namespace and waits until this one owns
    /// at least one partition; false when `shutdown` comes first.
    pub async fn lead(&self, shutdown: &CancellationToken) -> Result<bool, StoreError> {
        // The locks live on a connection of their own, with the pool's
        // keepalives and timeouts (`timeouts.rs`): if the network between
        // this scheduler and the database breaks, the server ends the
        // session (releasing the partitions to the others) and this side
        // sees the connection fail (and stops committing) within about
        // 11 s, rather than the operating system's default of hours.
        // Opened and driven on the lock connections' own thread
        // (`keeper.rs`), so that a busy loop cannot silence it.
        let (config, tls) = (self.config.clone(), self.tls.clone());
        let (client, conn) = keeper::handle()
            .spawn(async move { config.connect(tls).await })
            .await
            .map_err(|e| StoreError::Postgres(e.to_string()))?
            .map_err(pg)?;
        let client = Arc::new(client);
        let connected = Arc::new(AtomicBool::new(true));
        let generation = self.generation.fetch_add(1, Ordering::SeqCst) + 1;
        {
            let (leading, connected) = (self.leading.clone(), connected.clone());
            let current = self.generation.clone();
            let task = keeper::handle().spawn(async move {
                if let Err(e) = conn.await {
                    tracing::error!(error = %e, "Lost the store connection that holds the partition locks");
                }
                connected.store(false, Ordering::SeqCst);
                if current.load(Ordering::SeqCst) == generation {
                    leading.store(false, Ordering::SeqCst);
                }
            });
            let old = self
                .lock_task
                .lock()
                .expect("not poisoned")
                .replace(task.abort_handle());
            if let Some(old) = old {
                old.abort();
            }
        }
        let abandoned = CancellationToken::new();
        *self.abandoned.lock().expect("not poisoned") = abandoned.clone();
        // The server's own watchdog: a session that sends nothing for this
        // long (this scheduler queries it at every balance tick, and pings
        // it from its own thread, below) is ended, its partitions with it,
        // whatever TCP says.
        if !self.lock_idle.is_zero() {
            let set = format!("SET idle_session_timeout = {}", self.lock_idle.as_millis());
            if let Err(e) = client.batch_execute(&set).await {
                if e.code() != Some(&tokio_postgres::error::SqlState::UNDEFINED_OBJECT) {
                    return Err(pg(e));
                }
                tracing::warn!(
                    "The database has no idle_session_timeout (PostgreSQL 14 and later): a hung scheduler keeps its partitions until its own watchdog or TCP gives them up"
                );
            }
        }
        let pid: i32 = client
            .query_one("SELECT pg_backend_pid()", &[])
            .await
            .map_err(pg)?
            .get(0);
        client
            .query_one(
                "SELECT pg_advisory_lock_shared($1, $2)",
                &[&self.lock_key, &MEMBER_LOCK],
            )
            .await
            .map_err(pg)?;
        if !self.lock_idle.is_zero() {
            // Until the partitions are abandoned or the connection closed.
            let every = (self.lock_idle / 4).max(Duration::from_millis(100));
            keeper::ping(client.clone(), every, abandoned);
        }
        self.owned.lock().expect("not poisoned").clear();
        *self.lock_conn.lock().await = Some(LockConn { client, pid });
        self.leading
            .store(connected.load(Ordering::SeqCst), Ordering::SeqCst);
        let mut waited = false;
        loop {
            self.balance().await?;
            let owned = self.owned();
            if !owned.is_empty() {
                tracing::info!(store = %self.describe, partitions = ?owned, "This scheduler owns partitions");
                return Ok(true);
            }
            if !waited {
                tracing::info!(store = %self.describe, "Every partition is owned by another scheduler; standing by");
                waited = true;
            }
            tokio::select! {
                () = shutdown.cancelled() => return Ok(false),
                () = tokio::time::sleep(BALANCE_EVERY) => {}
            }
        }
    }

    /// Looks at who owns which partition and evens it out: takes free
    /// partitions up to this scheduler's share (`ceil(partitions /
    /// schedulers)`), or asks to release some when it owns more than its
    /// share while another scheduler owns less than `floor(partitions /
    /// schedulers)`. A partition is free when no session holds its lock:
    /// its owner released it, or its session ended (a crash, a kill, a
    /// network split past the keepalives).
    pub async fn balance(&self) -> Result<Balance, StoreError> {
        let guard = self.lock_conn.lock().await;
        let Some(lc) = guard.as_ref() else {
            return Err(StoreError::Fenced);
        };
        if !self.leading.load(Ordering::SeqCst) {
            return Err(StoreError::Fenced);
        }
        let rows = lc
            .client
            .query(
                "SELECT objid::int8, pid FROM pg_locks
                 WHERE locktype = 'advisory' AND granted AND objsubid = 2 AND classid::int8 = $1
                   AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
                &[&i64::from(self.lock_key)],
            )
            .await
            .map_err(pg)?;
        let parts = usize::from(PARTITIONS);
        let mut members: HashMap<i32, usize> = HashMap::new();
        let mut taken = vec![false; parts];
        for r in rows {
            let (objid, pid): (i64, i32) = (r.get(0), r.get(1));
            if objid == i64::from(MEMBER_LOCK) {
                members.entry(pid).or_default();
            } else if let Some(t) = usize::try_from(objid).ok().and_then(|o| taken.get_mut(o)) {
                *t = true;
                *members.entry(pid).or_default() += 1;
            }
        }
        members.entry(lc.pid).or_default();
        let target = parts.div_ceil(members.len());
        let floor = parts / members.len();
        let mine = self.owned.lock().expect("not poisoned").len();
        if mine < target {
            let holder = format!("{}:{}", warren_shared::host_name(), std::process::id());
            let start = fastrand::usize(0..parts);
            let mut got = 0;
            for p in (0..parts).map(|i| (start + i) % parts) {
                if mine + got >= target {
                    break;
                }
                if taken[p] {
                    continue;
                }
                let p = p as i32;
                let locked: bool = lc
                    .client
                    .query_one("SELECT pg_try_advisory_lock($1, $2)", &[&self.lock_key, &p])
                    .await
                    .map_err(pg)?
                    .get(0);
                if !locked {
                    continue;
                }
                // Bumping the epoch waits for a batch of the previous owner
                // that holds the row, and fences any later one.
                let bumped = lc
                    .client
                    .query_one(
                        "UPDATE partitions SET epoch = epoch + 1, owner = $2, since = now()
                         WHERE id = $1 RETURNING epoch",
                        &[&p, &holder],
                    )
                    .await;
                let epoch: i64 = match bumped {
                    Ok(row) => row.get(0),
                    // A batch of the previous owner still holds the row
                    // past the lock timeout (it is cut off mid-batch: the
                    // server ends it at its idle-in-transaction timeout):
                    // let the partition go and try again at the next tick.
                    Err(e)
                        if e.code()
                            == Some(&tokio_postgres::error::SqlState::LOCK_NOT_AVAILABLE) =>
                    {
                        tracing::info!(
                            partition = p,
                            "A batch of the previous owner still holds the partition; trying again"
                        );
                        lc.client
                            .query_one("SELECT pg_advisory_unlock($1, $2)", &[&self.lock_key, &p])
                            .await
                            .map_err(pg)?;
                        continue;
                    }
                    Err(e) => return Err(pg(e)),
                };
                let mut owned = self.owned.lock().expect("not poisoned");
                owned.push((p, epoch));
                owned.sort_unstable();
                got += 1;
            }
            if got > 0 {
                return Ok(Balance::Acquired(got));
            }
        } else if mine > target && members.values().any(|&n| n < floor) {
            return Ok(Balance::Release(mine - target));
        }
        Ok(Balance::Unchanged)
    }

    /// Gives up the `n` highest partitions this scheduler owns; call only
    /// once nothing more is committed for them (the session that worked on
    /// them has ended). Another scheduler takes them at its next look.
    pub async fn release(&self, n: usize) -> Result<(), StoreError> {
        if n == 0 {
            return Ok(());
        }
        let gone = {
            let mut owned = self.owned.lock().expect("not poisoned");
            let keep = owned.len().saturating_sub(n);
            owned.split_off(keep)
        };
        let guard = self.lock_conn.lock().await;
        let Some(lc) = guard.as_ref() else {
            return Ok(()); // the connection is gone, and its locks with it
        };
        for (p, _) in &gone {
            lc.client
                .query_one("SELECT pg_advisory_unlock($1, $2)", &[&self.lock_key, p])
                .await
                .map_err(pg)?;
        }
        tracing::info!(partitions = ?gone.iter().map(|g| g.0).collect::<Vec<_>>(), "Released partitions to another scheduler");
        Ok(())
    }

    /// Gives the partitions up at once, from outside the loop (the
    /// watchdog, when the loop has stalled): no more commits (the fence
    /// fails, and store calls the loop is waiting in give up), and the
    /// lock connection is closed even if a query on it is stuck, so the
    /// server releases the locks as soon as it hears of it (or, across a
    /// silent network, at its `idle_session_timeout`). The loop, if it
    /// ever turns again, fails with [`StoreError::Fenced`] and the
    /// scheduler steps down and leads again.
    pub fn abandon(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.leading.store(false, Ordering::SeqCst);
        self.owned.lock().expect("not poisoned").clear();
        self.abandoned.lock().expect("not poisoned").cancel();
        if let Some(task) = self.lock_task.lock().expect("not poisoned").take() {
            task.abort();
        }
    }

    /// Runs `call` (a store call of the loop) unless and until the
    /// partitions are abandoned ([`Partitions::abandon`]), which fails it
    /// with [`StoreError::Fenced`]: nothing it did counts as done. While
    /// not leading (standing by) it runs as is.
    pub async fn guarded<T>(
        &self,
        call: impl std::future::Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let abandoned = self.abandoned.lock().expect("not poisoned").clone();
        if !self.leading.load(Ordering::SeqCst) || abandoned.is_cancelled() {
            return call.await;
        }
        tokio::select! {
            r = call => r,
            () = abandoned.cancelled() => Err(StoreError::Fenced),
        }
    }

    /// Leaves the namespace's schedulers: closes the lock connection
    /// (releasing every partition if the session still held them).
    /// [`Partitions::lead`] may follow.
    pub async fn step_down(&self) {
        self.abandoned.lock().expect("not poisoned").cancel();
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.leading.store(false, Ordering::SeqCst);
        self.owned.lock().expect("not poisoned").clear();
        self.lock_conn.lock().await.take();
        if let Some(task) = self.lock_task.lock().expect("not poisoned").take() {
            task.abort();
        }
    }

    /// Releases every partition (the others take them at once); the
    /// store closes its pool after.
    pub(super) async fn close(&self) {
        self.abandoned.lock().expect("not poisoned").cancel();
        self.leading.store(false, Ordering::SeqCst);
        self.owned.lock().expect("not poisoned").clear();
        if let Some(c) = self.lock_conn.lock().await.take() {
            let _ = c
                .client
                .execute("SELECT pg_advisory_unlock_all()", &[])
                .await;
        }
        if let Some(task) = self.lock_task.lock().expect("not poisoned").take() {
            task.abort();
        }
    }

    /// A running workflow as stored, for the report of one another
    /// scheduler owns; `None` when it is not running.
    pub async fn running_workflow(&self, id: &str) -> Result<Option<RunningWorkflow>, StoreError> {
        let client = get(&self.pool).await?;
        Ok(running_workflows(&client, &[id.to_owned()]).await?.pop())
    }
}
