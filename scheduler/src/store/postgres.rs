//! The PostgreSQL state store (`WARREN_STORE=postgres://...`).
//!
//! Same tables and the same batches as SQLite: one transaction per batch,
//! with each kind of op sent as one statement over arrays (`unnest`), so a
//! batch of thousands of ops costs about ten round trips, not thousands.
//! The tables live in a schema of their own per Warren namespace, created
//! and migrated at startup (`warren_migrations` records the versions).
//!
//! Several schedulers may share a namespace. Its workflows are split into
//! [`PARTITIONS`] partitions (by a hash of the workflow id); each scheduler
//! owns some, holding a session advisory lock per partition and the epoch
//! it took each with (the `partitions` table). Every batch checks those
//! epochs inside its transaction, so a scheduler that lost a partition
//! (its connection dropped, another took it over) can commit nothing more:
//! its batch fails and it starts again with what it still owns.

use super::StoreError;
use crate::batch::{Known, Op, OutKind, OutMsg, Recovered, RunningWorkflow, TaskRow};
use chrono::{DateTime, Utc};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use std::{
    borrow::Cow,
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};
use tokio_postgres::{NoTls, types::ToSql};
use tokio_util::sync::CancellationToken;
use warren_shared::{
    topology::{PARTITIONS, fnv1a, partition_of},
    wire::{TaskError, TaskState, WorkflowSummary},
};

/// The schema's migrations, in order; version N is `MIGRATIONS[N - 1]`.
/// Never edit one that has shipped: add the next.
const MIGRATIONS: &[&str] = &[
    "
CREATE TABLE workflows (
    id          TEXT PRIMARY KEY,
    seq         BIGINT NOT NULL,
    name        TEXT,
    priority    SMALLINT NOT NULL,
    status      TEXT NOT NULL,
    definition  BYTEA,
    report      TEXT,
    created_at  TIMESTAMPTZ NOT NULL,
    finished_at TIMESTAMPTZ
);
CREATE INDEX workflows_by_status ON workflows (status, seq);
CREATE INDEX workflows_by_seq ON workflows (seq);
CREATE TABLE tasks (
    workflow_id TEXT NOT NULL,
    task_id     TEXT NOT NULL,
    state       TEXT NOT NULL,
    attempt     INTEGER NOT NULL,
    due_at_ms   BIGINT,
    output      TEXT,
    error       TEXT,
    worker      TEXT,
    started_at  TIMESTAMPTZ,
    finished_at TIMESTAMPTZ,
    PRIMARY KEY (workflow_id, task_id)
);
CREATE TABLE results (
    workflow_id  TEXT NOT NULL,
    task_id      TEXT NOT NULL,
    attempt      INTEGER NOT NULL,
    status       TEXT NOT NULL,
    committed_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (workflow_id, task_id, attempt)
);
CREATE TABLE outbox (
    seq            BIGINT PRIMARY KEY,
    kind           TEXT NOT NULL,
    exchange       TEXT NOT NULL,
    routing_key    TEXT NOT NULL,
    message_id     TEXT,
    correlation_id TEXT,
    priority       SMALLINT,
    headers        TEXT,
    body           BYTEA NOT NULL
);
CREATE TABLE replies (
    workflow_id    TEXT NOT NULL,
    reply_to       TEXT NOT NULL,
    correlation_id TEXT
);
CREATE INDEX replies_by_workflow ON replies (workflow_id);
CREATE TABLE leader (
    id     INTEGER PRIMARY KEY CHECK (id = 1),
    epoch  BIGINT NOT NULL,
    holder TEXT NOT NULL,
    since  TIMESTAMPTZ NOT NULL
);
",
    "
CREATE TABLE partitions (
    id    INTEGER PRIMARY KEY,
    epoch BIGINT NOT NULL DEFAULT 0,
    owner TEXT,
    since TIMESTAMPTZ
);
INSERT INTO partitions (id) SELECT generate_series(0, 15);
ALTER TABLE outbox ADD COLUMN part INTEGER NOT NULL DEFAULT 0;
CREATE SEQUENCE engine_instance;
CREATE TABLE type_places (
    kind   TEXT NOT NULL,
    part   INTEGER NOT NULL,
    held   INTEGER NOT NULL,
    wanted INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (kind, part)
);
DROP TABLE leader;
",
];

/// Second key of the shared advisory lock that every running scheduler of
/// the namespace holds: its holders are the schedulers sharing the work.
const MEMBER_LOCK: i32 = 65_535;

/// What a look at the partitions' owners found (see [`PgStore::balance`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Balance {
    /// Nothing to change.
    Unchanged,
    /// This scheduler took this many more partitions: load them.
    Acquired(usize),
    /// This scheduler owns this many more than its share while another
    /// has less: stop working on them, then [`PgStore::release`] them.
    Release(usize),
}

/// The connection that holds this scheduler's advisory locks.
struct LockConn {
    client: tokio_postgres::Client,
    /// Its server process, as `pg_locks` names it.
    pid: i32,
}

pub struct PgStore {
    pool: Pool,
    /// How to connect (for the lock connection).
    config: tokio_postgres::Config,
    /// First key of the namespace's advisory locks: partition `p` is the
    /// lock `(lock_key, p)`, membership the shared lock `(lock_key,
    /// MEMBER_LOCK)`.
    lock_key: i32,
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
    pub(super) describe: String,
}

fn pg(e: tokio_postgres::Error) -> StoreError {
    StoreError::Postgres(e.to_string())
}

/// The schema of a Warren namespace: `warren_` and the namespace when it is
/// already lower-case `[a-z0-9_]` and short; otherwise its first 40
/// characters in that form (others as `_`) and a hash of the exact name,
/// so that `a-b`, `a_b` and `A_B` never share a schema (nor its locks).
pub fn schema_of(namespace: &str) -> String {
    let plain: String = namespace
        .chars()
        .map(|c| {
            if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' {
                c
            } else if c.is_ascii_alphabetic() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .take(40)
        .collect();
    if plain == namespace {
        return format!("warren_{plain}");
    }
    format!("warren_{plain}_{:08x}", fnv1a(namespace))
}

/// PostgreSQL text cannot hold NUL; strings from the wire (worker names,
/// AMQP reply addresses) could. They are stored with U+FFFD instead.
fn text(s: &str) -> Cow<'_, str> {
    if s.contains('\0') {
        Cow::Owned(s.replace('\0', "\u{FFFD}"))
    } else {
        Cow::Borrowed(s)
    }
}

/// How often a scheduler looks at who owns which partition.
pub const BALANCE_EVERY: Duration = Duration::from_millis(100);

impl PgStore {
    /// Connects and creates and migrates the namespace's schema. The store
    /// can be read at once; it commits only once [`PgStore::lead`] gave
    /// this scheduler partitions to own.
    pub async fn connect(url: &str, namespace: &str) -> Result<PgStore, StoreError> {
        let schema = schema_of(namespace);
        let mut config: tokio_postgres::Config = url
            .parse()
            .map_err(|e: tokio_postgres::Error| StoreError::Url(e.to_string()))?;
        let describe = describe(&config, &schema);
        // Names the namespace's sessions in pg_stat_activity (PostgreSQL
        // keeps the first 63 bytes).
        config.application_name(format!("warren {schema}"));
        config.options(format!("-c search_path={schema}"));
        config.connect_timeout(Duration::from_secs(10));
        let manager = Manager::from_config(
            config.clone(),
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(4)
            .build()
            .map_err(|e| StoreError::Postgres(e.to_string()))?;
        let mut client = get(&pool).await?;
        migrate(&mut client, &schema).await?;
        let partitions: i64 = client
            .query_one("SELECT count(*) FROM partitions", &[])
            .await
            .map_err(pg)?
            .get(0);
        if partitions != i64::from(PARTITIONS) {
            return Err(StoreError::Corrupt(format!(
                "{partitions} partitions in the store, this scheduler knows {PARTITIONS}"
            )));
        }
        drop(client);
        Ok(PgStore {
            pool,
            config,
            lock_key: (fnv1a(&format!("warren:{schema}")) & 0x7fff_ffff) as i32,
            owned: std::sync::Mutex::new(Vec::new()),
            leading: Arc::new(AtomicBool::new(false)),
            generation: Arc::new(AtomicU64::new(0)),
            lock_conn: tokio::sync::Mutex::new(None),
            describe,
        })
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

    /// Joins the schedulers of the namespace and waits until this one owns
    /// at least one partition; false when `shutdown` comes first.
    pub async fn lead(&self, shutdown: &CancellationToken) -> Result<bool, StoreError> {
        // The locks live on a connection of their own. Its TCP keepalives
        // are short on both ends: if the network between this scheduler
        // and the database breaks, the server ends the session (releasing
        // the partitions to the others) and this side sees the connection
        // fail (and stops committing) within about 11 s, rather than the
        // operating system's default of hours.
        let mut lock_config = self.config.clone();
        lock_config
            .keepalives(true)
            .keepalives_idle(Duration::from_secs(5))
            .keepalives_interval(Duration::from_secs(2))
            .keepalives_retries(3);
        let (client, conn) = lock_config.connect(NoTls).await.map_err(pg)?;
        let connected = Arc::new(AtomicBool::new(true));
        let generation = self.generation.fetch_add(1, Ordering::SeqCst) + 1;
        {
            let (leading, connected) = (self.leading.clone(), connected.clone());
            let current = self.generation.clone();
            tokio::spawn(async move {
                if let Err(e) = conn.await {
                    tracing::error!(error = %e, "Lost the store connection that holds the partition locks");
                }
                connected.store(false, Ordering::SeqCst);
                if current.load(Ordering::SeqCst) == generation {
                    leading.store(false, Ordering::SeqCst);
                }
            });
        }
        client
            .batch_execute(
                "SET tcp_keepalives_idle = 5; SET tcp_keepalives_interval = 2; SET tcp_keepalives_count = 3",
            )
            .await
            .map_err(pg)?;
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
                let epoch: i64 = lc
                    .client
                    .query_one(
                        "UPDATE partitions SET epoch = epoch + 1, owner = $2, since = now()
                         WHERE id = $1 RETURNING epoch",
                        &[&p, &holder],
                    )
                    .await
                    .map_err(pg)?
                    .get(0);
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

    /// Takes up to `want` more places of `kind` for this scheduler (filed
    /// under the first partition it owns), out of `limit` across every
    /// scheduler, and records the places still wanted; returns the places
    /// granted and how many other partitions' owners want some. One
    /// scheduler at a time per type (a transaction advisory lock); a
    /// scheduler's batches only ever lower what its partitions hold below
    /// what it was granted, so the sum read here never undercounts.
    pub async fn take_type_places(
        &self,
        kind: &str,
        want: u32,
        limit: u32,
    ) -> Result<(u32, u32), StoreError> {
        let owned: Vec<i32> = self.owned().into_iter().map(i32::from).collect();
        let Some(&home) = owned.first() else {
            return Err(StoreError::Fenced);
        };
        let mut client = get(&self.pool).await?;
        let tx = client.transaction().await.map_err(pg)?;
        // Second keys 0..=65535 are partitions and membership.
        let type_key = 65_536 + (fnv1a(kind) & 0x3fff_ffff) as i32;
        tx.query_one(
            "SELECT pg_advisory_xact_lock($1, $2)",
            &[&self.lock_key, &type_key],
        )
        .await
        .map_err(pg)?;
        let held: i64 = tx
            .query_one(
                "SELECT COALESCE(sum(held), 0)::int8 FROM type_places WHERE kind = $1",
                &[&kind],
            )
            .await
            .map_err(pg)?
            .get(0);
        let granted = (i64::from(limit) - held).clamp(0, i64::from(want)) as i32;
        let wanted = want as i32 - granted;
        tx.execute(
            "UPDATE type_places SET wanted = 0 WHERE kind = $1 AND part = ANY($2) AND wanted <> 0",
            &[&kind, &owned],
        )
        .await
        .map_err(pg)?;
        tx.execute(
            "INSERT INTO type_places (kind, part, held, wanted) VALUES ($1, $2, $3, $4)
             ON CONFLICT (kind, part) DO UPDATE
             SET held = type_places.held + excluded.held, wanted = excluded.wanted",
            &[&kind, &home, &granted, &wanted],
        )
        .await
        .map_err(pg)?;
        let others: i64 = tx
            .query_one(
                "SELECT count(*) FROM type_places WHERE kind = $1 AND wanted > 0 AND NOT (part = ANY($2))",
                &[&kind, &owned],
            )
            .await
            .map_err(pg)?
            .get(0);
        tx.commit().await.map_err(pg)?;
        Ok((granted as u32, others as u32))
    }

    /// How many partitions other schedulers own want places, per type.
    pub async fn type_waiters(&self) -> Result<HashMap<String, u32>, StoreError> {
        let owned: Vec<i32> = self.owned().into_iter().map(i32::from).collect();
        let rows = get(&self.pool)
            .await?
            .query(
                "SELECT kind, count(*) FROM type_places
                 WHERE wanted > 0 AND NOT (part = ANY($1)) GROUP BY kind",
                &[&owned],
            )
            .await
            .map_err(pg)?;
        Ok(rows
            .into_iter()
            .map(|r| {
                (
                    r.get(0),
                    r.get::<_, i64>(1).clamp(0, i64::from(u32::MAX)) as u32,
                )
            })
            .collect())
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

    /// Leaves the namespace's schedulers: closes the lock connection
    /// (releasing every partition if the session still held them).
    /// [`PgStore::lead`] may follow.
    pub async fn step_down(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.leading.store(false, Ordering::SeqCst);
        self.owned.lock().expect("not poisoned").clear();
        self.lock_conn.lock().await.take();
    }

    /// Releases the partitions (the others take them at once) and the pool.
    pub async fn close(&self) {
        self.leading.store(false, Ordering::SeqCst);
        self.owned.lock().expect("not poisoned").clear();
        if let Some(c) = self.lock_conn.lock().await.take() {
            let _ = c
                .client
                .execute("SELECT pg_advisory_unlock_all()", &[])
                .await;
        }
        self.pool.close();
    }

    pub async fn commit(&self, ops: &[Op], relaxed: bool) -> Result<(), StoreError> {
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
        let mut client = get(&self.pool).await?;
        let tx = client.transaction().await.map_err(pg)?;
        if relaxed {
            // Deletions of published outbox rows: losing them in a crash
            // only publishes a message twice.
            tx.batch_execute("SET LOCAL synchronous_commit = off")
                .await
                .map_err(pg)?;
        }
        Batch::of(ops)?.write(&tx, &parts, &epochs).await?;
        tx.commit().await.map_err(pg)?;
        Ok(())
    }

    /// Loads what the partitions this scheduler owns resume from.
    pub async fn recover(&self) -> Result<Recovered, StoreError> {
        let owned = self.owned();
        let parts: Vec<i32> = owned.iter().map(|&p| i32::from(p)).collect();
        let client = get(&self.pool).await?;
        let mut out = Recovered::default();
        for r in client
            .query(
                "SELECT seq, kind, exchange, routing_key, message_id, correlation_id, priority, headers, body, part
                 FROM outbox WHERE part = ANY($1) ORDER BY seq",
                &[&parts],
            )
            .await
            .map_err(pg)?
        {
            let kind: String = r.get(1);
            let kind = OutKind::parse(&kind)
                .ok_or_else(|| StoreError::Corrupt(format!("outbox kind `{kind}`")))?;
            let headers: Option<String> = r.get(7);
            let headers = match headers {
                Some(h) => serde_json::from_str(&h)
                    .map_err(|e| StoreError::Corrupt(format!("outbox headers: {e}")))?,
                None => Vec::new(),
            };
            let priority: Option<i16> = r.get(6);
            out.outbox.push((
                r.get::<_, i64>(0) as u64,
                Arc::new(OutMsg {
                    kind,
                    exchange: r.get(2),
                    routing_key: r.get(3),
                    message_id: r.get(4),
                    correlation_id: r.get(5),
                    priority: priority.map(|p| p.clamp(0, 255) as u8),
                    headers,
                    body: r.get(8),
                    part: r.get::<_, i32>(9).clamp(0, i32::from(u16::MAX)) as u16,
                }),
            ));
        }
        // Sequence numbers (outbox rows, workflow order) must not collide
        // with another scheduler's: each engine instance counts from its
        // own block of 2^40.
        let instance: i64 = client
            .query_one("SELECT nextval('engine_instance')", &[])
            .await
            .map_err(pg)?
            .get(0);
        let base = (instance as u64) << 40;
        out.next_outbox_seq = base + 1;
        out.next_workflow_seq = base + 1;
        // What an earlier owner wanted is its own business.
        client
            .execute(
                "UPDATE type_places SET wanted = 0 WHERE part = ANY($1) AND wanted <> 0",
                &[&parts],
            )
            .await
            .map_err(pg)?;
        for r in client
            .query(
                "SELECT kind, sum(held)::int8 FROM type_places WHERE part = ANY($1) GROUP BY kind",
                &[&parts],
            )
            .await
            .map_err(pg)?
        {
            let held: i64 = r.get(1);
            out.type_places
                .insert(r.get(0), held.clamp(0, i64::from(u32::MAX)) as u32);
        }

        let ids: Vec<String> = client
            .query("SELECT id FROM workflows WHERE status = 'running'", &[])
            .await
            .map_err(pg)?
            .into_iter()
            .map(|r| r.get::<_, String>(0))
            .filter(|id| owned.contains(&partition_of(id, PARTITIONS)))
            .collect();
        out.running = running_workflows(&client, &ids).await?;
        Ok(out)
    }

    /// A running workflow as stored (for reports of workflows another
    /// scheduler owns); `None` when it is not running.
    pub async fn running_workflow(&self, id: &str) -> Result<Option<RunningWorkflow>, StoreError> {
        let client = get(&self.pool).await?;
        Ok(running_workflows(&client, &[id.to_owned()]).await?.pop())
    }

    pub async fn lookup(&self, ids: &[String]) -> Result<Vec<Option<Known>>, StoreError> {
        let client = get(&self.pool).await?;
        let rows = client
            .query(
                "SELECT id, status, report FROM workflows WHERE id = ANY($1)",
                &[&ids],
            )
            .await
            .map_err(pg)?;
        let mut found: HashMap<String, Known> = rows
            .into_iter()
            .map(|r| {
                (
                    r.get(0),
                    Known {
                        status: r.get(1),
                        report: r.get(2),
                    },
                )
            })
            .collect();
        Ok(ids.iter().map(|id| found.remove(id)).collect())
    }

    pub async fn list_workflows(
        &self,
        status: Option<&str>,
        limit: u32,
        offset: u32,
    ) -> Result<Vec<WorkflowSummary>, StoreError> {
        let client = get(&self.pool).await?;
        let (limit, offset) = (i64::from(limit), i64::from(offset));
        let rows =
            match status {
                Some(s) => client
                    .query(
                        "SELECT id, name, status, priority, created_at, finished_at FROM workflows
                     WHERE status = $1 ORDER BY seq DESC LIMIT $2 OFFSET $3",
                        &[&s, &limit, &offset],
                    )
                    .await,
                None => client
                    .query(
                        "SELECT id, name, status, priority, created_at, finished_at FROM workflows
                     ORDER BY seq DESC LIMIT $1 OFFSET $2",
                        &[&limit, &offset],
                    )
                    .await,
            }
            .map_err(pg)?;
        Ok(rows
            .into_iter()
            .map(|r| WorkflowSummary {
                workflow_id: r.get(0),
                name: r.get(1),
                status: r.get(2),
                priority: i64::from(r.get::<_, i16>(3)),
                created_at: super::ts(&r.get::<_, DateTime<Utc>>(4)),
                finished_at: r.get::<_, Option<DateTime<Utc>>>(5).as_ref().map(super::ts),
            })
            .collect())
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        get(&self.pool)
            .await?
            .query_one("SELECT 1", &[])
            .await
            .map_err(pg)?;
        Ok(())
    }

    pub async fn results_of(
        &self,
        workflow_id: &str,
    ) -> Result<Vec<(String, u32, String)>, StoreError> {
        let rows = get(&self.pool)
            .await?
            .query(
                "SELECT task_id, attempt, status FROM results WHERE workflow_id = $1 ORDER BY task_id, attempt",
                &[&workflow_id],
            )
            .await
            .map_err(pg)?;
        Ok(rows
            .into_iter()
            .map(|r| (r.get(0), r.get::<_, i32>(1) as u32, r.get(2)))
            .collect())
    }

    pub async fn outbox_len(&self) -> Result<u64, StoreError> {
        let row = get(&self.pool)
            .await?
            .query_one("SELECT COUNT(*) FROM outbox", &[])
            .await
            .map_err(pg)?;
        Ok(row.get::<_, i64>(0) as u64)
    }
}

/// The running workflows among `ids`, with their tasks and waiters, in
/// the order they were accepted.
async fn running_workflows(
    client: &deadpool_postgres::Object,
    ids: &[String],
) -> Result<Vec<RunningWorkflow>, StoreError> {
    let mut running = Vec::with_capacity(ids.len());
    let wfs = client
        .query(
            "SELECT id, seq, definition, created_at FROM workflows
             WHERE id = ANY($1) AND status = 'running' ORDER BY seq",
            &[&ids],
        )
        .await
        .map_err(pg)?;
    let mut tasks: HashMap<String, Vec<TaskRow>> = HashMap::new();
    for r in client
        .query(
            "SELECT t.workflow_id, t.task_id, t.state, t.attempt, t.due_at_ms, t.output, t.error,
                    t.worker, t.started_at, t.finished_at
             FROM tasks t WHERE t.workflow_id = ANY($1)",
            &[&ids],
        )
        .await
        .map_err(pg)?
    {
        let wf: String = r.get(0);
        let state: String = r.get(2);
        let state = TaskState::parse(&state)
            .ok_or_else(|| StoreError::Corrupt(format!("task state `{state}`")))?;
        let error: Option<String> = r.get(6);
        let error = error
            .map(|e| serde_json::from_str::<TaskError>(&e))
            .transpose()
            .map_err(|e| StoreError::Corrupt(format!("task error: {e}")))?;
        let attempt: i32 = r.get(3);
        tasks.entry(wf.clone()).or_default().push(TaskRow {
            workflow_id: Arc::from(wf.as_str()),
            task_id: r.get(1),
            state,
            attempt: attempt.max(0) as u32,
            due_at_ms: r.get(4),
            output: r.get(5),
            error,
            worker: r.get(7),
            started_at: r.get(8),
            finished_at: r.get(9),
        });
    }
    let mut replies: HashMap<String, Vec<(String, Option<String>)>> = HashMap::new();
    for r in client
        .query(
            "SELECT r.workflow_id, r.reply_to, r.correlation_id
             FROM replies r WHERE r.workflow_id = ANY($1)",
            &[&ids],
        )
        .await
        .map_err(pg)?
    {
        replies
            .entry(r.get(0))
            .or_default()
            .push((r.get(1), r.get(2)));
    }
    for r in wfs {
        let id: String = r.get(0);
        let definition: Option<Vec<u8>> = r.get(2);
        running.push(RunningWorkflow {
            seq: r.get::<_, i64>(1) as u64,
            definition: definition.ok_or_else(|| {
                StoreError::Corrupt(format!("running workflow {id} has no definition"))
            })?,
            created_at: r.get(3),
            tasks: tasks.remove(&id).unwrap_or_default(),
            replies: replies.remove(&id).unwrap_or_default(),
            id,
        });
    }
    Ok(running)
}

/// `postgres://user@host:port/db (schema s)`, without the password.
fn describe(c: &tokio_postgres::Config, schema: &str) -> String {
    let host = c
        .get_hosts()
        .first()
        .map(|h| match h {
            tokio_postgres::config::Host::Tcp(h) => h.clone(),
            tokio_postgres::config::Host::Unix(p) => p.display().to_string(),
        })
        .unwrap_or_default();
    let port = c.get_ports().first().copied().unwrap_or(5432);
    format!(
        "postgres://{}@{host}:{port}/{} (schema {schema})",
        c.get_user().unwrap_or(""),
        c.get_dbname().unwrap_or("")
    )
}

async fn get(pool: &Pool) -> Result<deadpool_postgres::Object, StoreError> {
    pool.get()
        .await
        .map_err(|e| StoreError::Postgres(e.to_string()))
}

/// Creates the schema and applies the migrations it lacks, one scheduler
/// at a time (a transaction-scoped advisory lock).
async fn migrate(client: &mut deadpool_postgres::Object, schema: &str) -> Result<(), StoreError> {
    let tx = client.transaction().await.map_err(pg)?;
    tx.query_one(
        "SELECT pg_advisory_xact_lock(hashtext($1))",
        &[&format!("warren-migrate:{schema}")],
    )
    .await
    .map_err(pg)?;
    tx.batch_execute(&format!(
        "CREATE SCHEMA IF NOT EXISTS {schema};
         CREATE TABLE IF NOT EXISTS {schema}.warren_migrations (
             version    INTEGER PRIMARY KEY,
             applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
         );"
    ))
    .await
    .map_err(pg)?;
    let current: i32 = tx
        .query_one(
            &format!("SELECT COALESCE(MAX(version), 0) FROM {schema}.warren_migrations"),
            &[],
        )
        .await
        .map_err(pg)?
        .get(0);
    let known = MIGRATIONS.len() as i32;
    if current > known {
        tx.rollback().await.map_err(pg)?;
        return Err(StoreError::SchemaVersion {
            found: i64::from(current),
            known: i64::from(known),
        });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        let version = i as i32 + 1;
        tx.batch_execute(&format!("SET LOCAL search_path = {schema}; {sql}"))
            .await
            .map_err(pg)?;
        tx.execute(
            &format!("INSERT INTO {schema}.warren_migrations (version) VALUES ($1)"),
            &[&version],
        )
        .await
        .map_err(pg)?;
        tracing::info!(schema, version, "Store schema migrated");
    }
    tx.commit().await.map_err(pg)?;
    Ok(())
}

/// One batch's ops as columns, one statement per kind, borrowing from the
/// ops (no copies of bodies or outputs). Task rows are full snapshots, so
/// only the last one of a task in a batch is written.
#[derive(Default)]
struct Batch<'a> {
    wf_id: Vec<&'a str>,
    wf_seq: Vec<i64>,
    wf_name: Vec<Option<Cow<'a, str>>>,
    wf_priority: Vec<i16>,
    wf_status: Vec<&'static str>,
    wf_definition: Vec<Option<&'a [u8]>>,
    wf_report: Vec<Option<&'a str>>,
    wf_created: Vec<DateTime<Utc>>,
    wf_finished: Vec<Option<DateTime<Utc>>>,

    fin_id: Vec<&'a str>,
    fin_status: Vec<&'static str>,
    fin_report: Vec<&'a str>,
    fin_at: Vec<DateTime<Utc>>,

    tasks: Vec<&'a TaskRow>,

    res_wf: Vec<&'a str>,
    res_task: Vec<&'a str>,
    res_attempt: Vec<i32>,
    res_status: Vec<&'static str>,

    out_seq: Vec<i64>,
    out_kind: Vec<&'static str>,
    out_exchange: Vec<&'a str>,
    out_key: Vec<Cow<'a, str>>,
    out_message_id: Vec<Option<Cow<'a, str>>>,
    out_correlation: Vec<Option<Cow<'a, str>>>,
    out_priority: Vec<Option<i16>>,
    out_headers: Vec<Option<String>>,
    out_body: Vec<&'a [u8]>,
    out_part: Vec<i32>,

    done: Vec<i64>,

    rep_wf: Vec<&'a str>,
    rep_to: Vec<Cow<'a, str>>,
    rep_corr: Vec<Option<Cow<'a, str>>>,

    drop_replies: Vec<&'a str>,

    place_kind: Vec<&'a str>,
    place_part: Vec<i32>,
    place_held: Vec<i32>,
    place_wanted: Vec<i32>,
}

fn json_err(e: serde_json::Error) -> StoreError {
    StoreError::Corrupt(e.to_string())
}

fn opt_text(s: &Option<String>) -> Option<Cow<'_, str>> {
    s.as_deref().map(text)
}

impl<'a> Batch<'a> {
    fn of(ops: &'a [Op]) -> Result<Batch<'a>, StoreError> {
        let mut b = Batch::default();
        let mut task_at: HashMap<(&str, &str), usize> = HashMap::new();
        for op in ops {
            match op {
                Op::InsertWorkflow {
                    id,
                    seq,
                    name,
                    priority,
                    status,
                    definition,
                    report,
                    created_at,
                } => {
                    b.wf_id.push(id);
                    b.wf_seq.push(*seq as i64);
                    b.wf_name.push(opt_text(name));
                    b.wf_priority.push(i16::from(*priority));
                    b.wf_status.push(status.as_str());
                    b.wf_definition.push(definition.as_deref());
                    b.wf_finished.push(report.as_ref().map(|_| *created_at));
                    b.wf_report.push(report.as_deref());
                    b.wf_created.push(*created_at);
                }
                Op::FinishWorkflow {
                    id,
                    status,
                    report,
                    finished_at,
                } => {
                    b.fin_id.push(id);
                    b.fin_status.push(status.as_str());
                    b.fin_report.push(report);
                    b.fin_at.push(*finished_at);
                }
                Op::Task(row) => match task_at.get(&(&*row.workflow_id, row.task_id.as_str())) {
                    Some(&i) => b.tasks[i] = row,
                    None => {
                        task_at.insert((&row.workflow_id, &row.task_id), b.tasks.len());
                        b.tasks.push(row);
                    }
                },
                Op::Result {
                    workflow_id,
                    task_id,
                    attempt,
                    status,
                } => {
                    b.res_wf.push(workflow_id);
                    b.res_task.push(task_id);
                    b.res_attempt.push(*attempt as i32);
                    b.res_status.push(status.as_str());
                }
                Op::Outbox(seq, m) => {
                    b.out_seq.push(*seq as i64);
                    b.out_kind.push(m.kind.as_str());
                    b.out_exchange.push(&m.exchange);
                    b.out_key.push(text(&m.routing_key));
                    b.out_message_id.push(opt_text(&m.message_id));
                    b.out_correlation.push(opt_text(&m.correlation_id));
                    b.out_priority.push(m.priority.map(i16::from));
                    b.out_headers.push(if m.headers.is_empty() {
                        None
                    } else {
                        Some(serde_json::to_string(&m.headers).map_err(json_err)?)
                    });
                    b.out_body.push(&m.body);
                    b.out_part.push(i32::from(m.part));
                }
                Op::OutboxDone(seq) => b.done.push(*seq as i64),
                Op::AddReply {
                    workflow_id,
                    reply_to,
                    correlation_id,
                } => {
                    b.rep_wf.push(workflow_id);
                    b.rep_to.push(text(reply_to));
                    b.rep_corr.push(opt_text(correlation_id));
                }
                Op::DropReplies(id) => b.drop_replies.push(id),
                Op::TypePlaces(rows) => {
                    // The last snapshot of a batch wins.
                    b.place_kind.clear();
                    b.place_part.clear();
                    b.place_held.clear();
                    b.place_wanted.clear();
                    for row in rows {
                        b.place_kind.push(&row.kind);
                        b.place_part.push(i32::from(row.part));
                        b.place_held.push(row.held.min(i32::MAX as u32) as i32);
                        b.place_wanted.push(row.wanted.min(i32::MAX as u32) as i32);
                    }
                }
            }
        }
        Ok(b)
    }

    /// Writes the batch after checking the leader epoch: workflows, their
    /// ends, tasks, results, outbox, replies (added before dropped: a
    /// workflow can gain a waiter and end in one batch). The statements
    /// are prepared once per connection and sent together (pipelined), so
    /// the batch costs one round trip whatever its size.
    async fn write(
        self,
        tx: &deadpool_postgres::Transaction<'_>,
        parts: &[i32],
        epochs: &[i64],
    ) -> Result<(), StoreError> {
        let n = self.tasks.len();
        let mut t_wf = Vec::with_capacity(n);
        let mut t_id = Vec::with_capacity(n);
        let mut t_state = Vec::with_capacity(n);
        let mut t_attempt = Vec::with_capacity(n);
        let mut t_due = Vec::with_capacity(n);
        let mut t_output = Vec::with_capacity(n);
        let mut t_error = Vec::with_capacity(n);
        let mut t_worker = Vec::with_capacity(n);
        let mut t_started = Vec::with_capacity(n);
        let mut t_finished = Vec::with_capacity(n);
        for t in self.tasks {
            t_wf.push(&*t.workflow_id);
            t_id.push(t.task_id.as_str());
            t_state.push(t.state.as_str());
            t_attempt.push(t.attempt as i32);
            t_due.push(t.due_at_ms);
            t_output.push(t.output.as_deref());
            t_error.push(
                t.error
                    .as_ref()
                    .map(serde_json::to_string)
                    .transpose()
                    .map_err(json_err)?,
            );
            t_worker.push(opt_text(&t.worker));
            t_started.push(t.started_at);
            t_finished.push(t.finished_at);
        }
        type Params<'p> = Vec<&'p (dyn ToSql + Sync)>;
        // Fencing: every owned partition still has the epoch this
        // scheduler took it with. The share lock makes a taker's epoch bump
        // wait for this transaction; a bump committed first leaves the row
        // out (READ COMMITTED re-checks a locked row's newest version).
        let mut stmts: Vec<(&'static str, Params<'_>)> = vec![(
            "SELECT p.id FROM partitions p
             JOIN unnest($1::int4[], $2::int8[]) AS o(id, epoch) ON p.id = o.id AND p.epoch = o.epoch
             FOR SHARE OF p",
            vec![&parts, &epochs],
        )];
        if !self.wf_id.is_empty() {
            stmts.push((
                "INSERT INTO workflows (id, seq, name, priority, status, definition, report, created_at, finished_at)
                 SELECT * FROM unnest($1::text[], $2::int8[], $3::text[], $4::int2[], $5::text[], $6::bytea[],
                                      $7::text[], $8::timestamptz[], $9::timestamptz[])",
                vec![
                    &self.wf_id,
                    &self.wf_seq,
                    &self.wf_name,
                    &self.wf_priority,
                    &self.wf_status,
                    &self.wf_definition,
                    &self.wf_report,
                    &self.wf_created,
                    &self.wf_finished,
                ],
            ));
        }
        if !self.fin_id.is_empty() {
            stmts.push((
                "UPDATE workflows w SET status = f.status, report = f.report, finished_at = f.at
                 FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[]) AS f(id, status, report, at)
                 WHERE w.id = f.id",
                vec![&self.fin_id, &self.fin_status, &self.fin_report, &self.fin_at],
            ));
        }
        if n > 0 {
            stmts.push((
                "INSERT INTO tasks (workflow_id, task_id, state, attempt, due_at_ms, output, error, worker, started_at, finished_at)
                 SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::int4[], $5::int8[], $6::text[],
                                      $7::text[], $8::text[], $9::timestamptz[], $10::timestamptz[])
                 ON CONFLICT (workflow_id, task_id) DO UPDATE SET
                   state = excluded.state, attempt = excluded.attempt, due_at_ms = excluded.due_at_ms,
                   output = excluded.output, error = excluded.error, worker = excluded.worker,
                   started_at = excluded.started_at, finished_at = excluded.finished_at",
                vec![
                    &t_wf, &t_id, &t_state, &t_attempt, &t_due, &t_output, &t_error, &t_worker,
                    &t_started, &t_finished,
                ],
            ));
        }
        if !self.res_wf.is_empty() {
            stmts.push((
                "INSERT INTO results (workflow_id, task_id, attempt, status)
                 SELECT * FROM unnest($1::text[], $2::text[], $3::int4[], $4::text[])",
                vec![
                    &self.res_wf,
                    &self.res_task,
                    &self.res_attempt,
                    &self.res_status,
                ],
            ));
        }
        if !self.out_seq.is_empty() {
            stmts.push((
                "INSERT INTO outbox (seq, kind, exchange, routing_key, message_id, correlation_id, priority, headers, body, part)
                 SELECT * FROM unnest($1::int8[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
                                      $7::int2[], $8::text[], $9::bytea[], $10::int4[])",
                vec![
                    &self.out_seq,
                    &self.out_kind,
                    &self.out_exchange,
                    &self.out_key,
                    &self.out_message_id,
                    &self.out_correlation,
                    &self.out_priority,
                    &self.out_headers,
                    &self.out_body,
                    &self.out_part,
                ],
            ));
        }
        if !self.done.is_empty() {
            stmts.push(("DELETE FROM outbox WHERE seq = ANY($1)", vec![&self.done]));
        }
        if !self.rep_wf.is_empty() {
            stmts.push((
                "INSERT INTO replies (workflow_id, reply_to, correlation_id)
                 SELECT * FROM unnest($1::text[], $2::text[], $3::text[])",
                vec![&self.rep_wf, &self.rep_to, &self.rep_corr],
            ));
        }
        if !self.drop_replies.is_empty() {
            stmts.push((
                "DELETE FROM replies WHERE workflow_id = ANY($1)",
                vec![&self.drop_replies],
            ));
        }
        if !self.place_kind.is_empty() {
            stmts.push((
                "INSERT INTO type_places (kind, part, held, wanted)
                 SELECT * FROM unnest($1::text[], $2::int4[], $3::int4[], $4::int4[])
                 ON CONFLICT (kind, part) DO UPDATE SET held = excluded.held, wanted = excluded.wanted",
                vec![
                    &self.place_kind,
                    &self.place_part,
                    &self.place_held,
                    &self.place_wanted,
                ],
            ));
        }
        let mut prepared = Vec::with_capacity(stmts.len());
        for (sql, _) in &stmts {
            prepared.push(tx.prepare_cached(sql).await.map_err(pg)?);
        }
        let counts = futures_util::future::try_join_all(
            prepared
                .iter()
                .zip(&stmts)
                .map(|(stmt, (_, params))| tx.execute(stmt, params)),
        )
        .await
        .map_err(pg)?;
        if counts[0] != parts.len() as u64 {
            return Err(StoreError::Fenced);
        }
        Ok(())
    }
}

/// These need the PostgreSQL of `WARREN_TEST_STORE` (default: the local
/// one, as CI starts it), the way the integration tests need RabbitMQ.
#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Store, StoreLocation};
    use warren_shared::wire::{ResultStatus, WorkflowStatus};

    fn url() -> String {
        std::env::var("WARREN_TEST_STORE")
            .ok()
            .filter(|u| u.starts_with("postgres"))
            .unwrap_or_else(|| "postgres://postgres:postgres@127.0.0.1:5432/postgres".into())
    }

    /// A fresh namespace, its schema dropped when the test ends.
    struct Ns(String);

    impl Ns {
        fn new() -> Ns {
            Ns(format!(
                "st-{}",
                &uuid::Uuid::new_v4().simple().to_string()[..12]
            ))
        }

        async fn open(&self) -> Store {
            Store::open(
                &StoreLocation::Postgres(url()),
                &self.0,
                &CancellationToken::new(),
            )
            .await
            .unwrap()
            .unwrap()
        }

        async fn sql(&self, sql: &str) {
            let (client, conn) = tokio_postgres::connect(&url(), NoTls).await.unwrap();
            tokio::spawn(conn);
            client
                .batch_execute(&format!("SET search_path = {}; {sql}", schema_of(&self.0)))
                .await
                .unwrap();
        }
    }

    impl Drop for Ns {
        fn drop(&mut self) {
            let schema = schema_of(&self.0);
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async {
                    if let Ok((c, conn)) = tokio_postgres::connect(&url(), NoTls).await {
                        tokio::spawn(conn);
                        let _ = c
                            .batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
                            .await;
                    }
                });
            })
            .join()
            .unwrap();
        }
    }

    fn row(wf: &Arc<str>, task: &str, state: TaskState, attempt: u32) -> Op {
        Op::Task(TaskRow {
            workflow_id: wf.clone(),
            task_id: task.into(),
            state,
            attempt,
            due_at_ms: Some(5),
            output: Some("{\"x\":1}".into()),
            error: None,
            worker: Some("w\0".into()),
            started_at: Some(Utc::now()),
            finished_at: None,
        })
    }

    #[tokio::test]
    async fn batches_commit_recover_and_refuse_a_second_result() {
        let ns = Ns::new();
        let store = ns.open().await;
        let wf: Arc<str> = Arc::from("wf-1");
        let msg = Arc::new(OutMsg {
            kind: OutKind::Task,
            exchange: "ns.tasks".into(),
            routing_key: "default".into(),
            message_id: Some("wf-1/a/1".into()),
            correlation_id: None,
            priority: Some(3),
            headers: vec![("k".into(), "v".into())],
            body: b"{}".to_vec(),
            part: partition_of("wf-1", PARTITIONS),
        });
        store
            .commit(vec![
                Op::InsertWorkflow {
                    id: wf.clone(),
                    seq: 7,
                    name: Some("n".into()),
                    priority: 3,
                    status: WorkflowStatus::Running,
                    definition: Some(Arc::from(&b"{\"tasks\":[]}"[..])),
                    report: None,
                    created_at: Utc::now(),
                },
                row(&wf, "a", TaskState::Running, 1),
                // A later snapshot of the same task in the same batch wins.
                row(&wf, "a", TaskState::Running, 2),
                Op::Outbox(1, msg.clone()),
                Op::Outbox(2, msg.clone()),
                Op::AddReply {
                    workflow_id: wf.clone(),
                    reply_to: "q".into(),
                    correlation_id: Some("c".into()),
                },
            ])
            .await
            .unwrap();
        store
            .commit(vec![
                Op::OutboxDone(1),
                row(&wf, "a", TaskState::Succeeded, 2),
                Op::Result {
                    workflow_id: wf.clone(),
                    task_id: "a".into(),
                    attempt: 2,
                    status: ResultStatus::Succeeded,
                },
            ])
            .await
            .unwrap();
        let dup = vec![
            row(&wf, "a", TaskState::Failed, 2),
            Op::Result {
                workflow_id: wf.clone(),
                task_id: "a".into(),
                attempt: 2,
                status: ResultStatus::Succeeded,
            },
        ];
        assert!(
            store.commit(dup).await.is_err(),
            "a second result is refused"
        );
        let rec = store.recover().await.unwrap();
        // Each recovery counts from a block of its own, past every seq
        // another scheduler (or an earlier recovery) may use.
        assert!(rec.next_workflow_seq > 1 << 40);
        assert_eq!(rec.next_workflow_seq, rec.next_outbox_seq);
        let again = store.recover().await.unwrap().next_outbox_seq;
        assert!(again >= rec.next_outbox_seq + (1 << 40), "{again}");
        assert_eq!(rec.outbox.len(), 1);
        assert_eq!(*rec.outbox[0].1, *msg);
        let w = &rec.running[0];
        assert_eq!(w.tasks.len(), 1);
        let t = &w.tasks[0];
        assert_eq!(
            (t.state, t.attempt),
            (TaskState::Succeeded, 2),
            "the refused batch left nothing"
        );
        assert_eq!(t.worker.as_deref(), Some("w\u{FFFD}"));
        assert_eq!(w.replies, vec![("q".to_string(), Some("c".to_string()))]);
        assert_eq!(
            store.results_of("wf-1".into()).await.unwrap(),
            vec![("a".to_string(), 2, "succeeded".to_string())]
        );
        let found = store
            .lookup(vec!["wf-1".into(), "nope".into()])
            .await
            .unwrap();
        assert_eq!(
            found[0].as_ref().map(|k| k.status.as_str()),
            Some("running")
        );
        assert_eq!(found[1], None);
        let listed = store
            .list_workflows(Some("running".into()), 10, 0)
            .await
            .unwrap();
        assert_eq!(listed[0].workflow_id, "wf-1");
        store
            .commit(vec![Op::FinishWorkflow {
                id: wf.clone(),
                status: WorkflowStatus::Succeeded,
                report: "{}".into(),
                finished_at: Utc::now(),
            }])
            .await
            .unwrap();
        assert!(store.recover().await.unwrap().running.is_empty());
        store.close().await;
    }

    #[tokio::test]
    async fn schedulers_share_the_partitions_and_a_deposed_one_commits_nothing() {
        let ns = Ns::new();
        let first = ns.open().await;
        let Store::Postgres(p1) = &first else {
            unreachable!()
        };
        assert_eq!(
            p1.owned().len(),
            usize::from(PARTITIONS),
            "alone, it owns all"
        );
        let second = tokio::spawn({
            let ns = ns.0.clone();
            async move {
                Store::open(
                    &StoreLocation::Postgres(url()),
                    &ns,
                    &CancellationToken::new(),
                )
                .await
                .unwrap()
                .unwrap()
            }
        });
        // The second joins; the first owns more than its share while the
        // second owns none, so it is asked to hand half over.
        let half = usize::from(PARTITIONS) / 2;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            match p1.balance().await.unwrap() {
                Balance::Release(n) => {
                    assert_eq!(n, half);
                    break;
                }
                other => assert_eq!(other, Balance::Unchanged),
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "never asked to release"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(
            !second.is_finished(),
            "the second owns a partition still locked"
        );
        first.commit(vec![Op::OutboxDone(1)]).await.unwrap();
        first.release(half).await.unwrap();
        let second = tokio::time::timeout(Duration::from_secs(30), second)
            .await
            .expect("the second takes the released partitions")
            .unwrap();
        let Store::Postgres(p2) = &second else {
            unreachable!()
        };
        let (a, b) = (p1.owned(), p2.owned());
        assert_eq!((a.len(), b.len()), (half, half), "{a:?} {b:?}");
        assert!(a.iter().all(|p| !b.contains(p)), "{a:?} {b:?}");
        assert_eq!(p1.balance().await.unwrap(), Balance::Unchanged);
        first.commit(vec![Op::OutboxDone(1)]).await.unwrap();
        second.commit(vec![Op::OutboxDone(1)]).await.unwrap();

        // Another scheduler taking one of its partitions over (the epoch
        // moves on) fences the second: it commits nothing more.
        ns.sql(&format!(
            "UPDATE partitions SET epoch = epoch + 1 WHERE id = {}",
            b[0]
        ))
        .await;
        let e = second.commit(vec![Op::OutboxDone(1)]).await.unwrap_err();
        assert!(matches!(e, StoreError::Fenced), "{e}");
        first.commit(vec![Op::OutboxDone(1)]).await.unwrap();

        // The second leaves: the first takes every partition back.
        second.close().await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while p1.owned().len() < usize::from(PARTITIONS) {
            p1.balance().await.unwrap();
            assert!(
                tokio::time::Instant::now() < deadline,
                "partitions left unowned"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        first.commit(vec![Op::OutboxDone(1)]).await.unwrap();
        first.close().await;
    }

    #[test]
    fn namespaces_never_share_a_schema() {
        assert_eq!(schema_of("warren"), "warren_warren");
        let names = [
            "a-b",
            "a_b",
            "A_B",
            "a.b",
            &"x".repeat(100),
            &"x".repeat(101),
        ];
        let schemas: std::collections::HashSet<String> =
            names.iter().map(|n| schema_of(n)).collect();
        assert_eq!(schemas.len(), names.len(), "{schemas:?}");
        assert!(schemas.iter().all(|s| {
            s.len() <= 63
                && s.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        }));
    }

    #[tokio::test]
    async fn a_schema_newer_than_this_scheduler_is_refused() {
        let ns = Ns::new();
        ns.open().await.close().await;
        ns.sql("INSERT INTO warren_migrations (version) VALUES (99)")
            .await;
        let e = Store::open(
            &StoreLocation::Postgres(url()),
            &ns.0,
            &CancellationToken::new(),
        )
        .await
        .unwrap_err();
        assert!(
            matches!(e, StoreError::SchemaVersion { found: 99, .. }),
            "{e}"
        );
    }
}
