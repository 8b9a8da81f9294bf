//! The durable state store: a SQLite file ([`sqlite`], the default) or a
//! PostgreSQL database ([`postgres`]), behind one interface, [`Store`].
//!
//! The engine hands over one batch of [`Op`]s per transaction: every state
//! change of a batch, and the outbox messages they cause, commit together
//! or not at all.

pub mod filter;
pub mod postgres;
mod rows;
pub mod sqlite;

pub use postgres::{Balance, Partitions};
pub use sqlite::SqliteStore;

use crate::batch::{Known, Op, Recovered, TaskRow, Unreadable};
use crate::pauses::{Pause, PauseChange, PauseOutcome};
use std::{path::PathBuf, sync::Arc};
use tokio_util::sync::CancellationToken;
use warren_shared::wire::WorkflowSummary;

/// Failures of the state store. On SQLite each one stops the scheduler
/// (`Scheduler::run` returns it): its memory may be ahead of the file, and
/// a restart reloads the file. On PostgreSQL the two that
/// [`StoreError::can_lead_again`] names (`Postgres`, `Fenced`) send a
/// running scheduler back to standing by instead: it drops its memory,
/// steps down and leads again, reloading its partitions from the store;
/// the others stop it too. The HTTP API answers any of them with 500 (503
/// for `Closed`) and carries on.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// A SQLite call failed once the file was open: an I/O error, a full
    /// disk, the file locked past the busy timeout (5 s), a constraint (a
    /// result committed twice), a value of the wrong type. A failed batch
    /// is rolled back; the scheduler stops.
    #[error("state store: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The SQLite file at `path` could not be opened, switched to WAL with
    /// full sync, or given its tables. The scheduler does not start.
    #[error("state store {path}: {source}")]
    Open {
        path: String,
        #[source]
        source: rusqlite::Error,
    },
    /// The store was written by a newer scheduler: its schema version
    /// (`meta` in SQLite, `warren_migrations` in PostgreSQL) is past the
    /// last this one knows. The scheduler does not start (nothing is
    /// migrated down); run a newer one.
    #[error(
        "state store holds schema version {found}; this scheduler knows versions up to {known}: run a newer scheduler"
    )]
    SchemaVersion { found: i64, known: i64 },
    /// PostgreSQL or its connection pool failed: the database unreachable,
    /// a connection dropped, a statement refused (a result committed twice
    /// among them). While connecting and migrating at startup it stops the
    /// scheduler; once running, the scheduler steps down and leads again
    /// (the batch is rolled back), retrying with backoff while the
    /// database stays unreachable.
    #[error("state store (PostgreSQL): {0}")]
    Postgres(String),
    /// `WARREN_STORE` is a PostgreSQL address that does not parse, asks
    /// for TLS in a way Warren does not support, or names a CA file
    /// (`sslrootcert`) that cannot be read or holds no PEM certificate.
    /// The scheduler does not start.
    #[error("state store address: {0}")]
    Url(String),
    /// This scheduler may no longer commit for the partitions it owned:
    /// another scheduler took one over (its epoch moved on), the
    /// connection holding the partitions' locks ended, or it owns none.
    /// PostgreSQL only. The batch is rolled back, the broker session ends
    /// (its deliveries go back to the queues), and the scheduler drops its
    /// memory, steps down and leads again.
    #[error(
        "this scheduler lost its leader lock (its database session ended, or another scheduler took over)"
    )]
    Fenced,
    /// The SQLite file's lock file could not be created or opened, or the
    /// store's thread could not be started (`path` names the file). The
    /// scheduler does not start.
    #[error("state store {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// The SQLite store's thread has stopped: the store was closed (the
    /// scheduler is stopping) before or during the call. The loop stops;
    /// the HTTP endpoint answers 503.
    #[error("state store thread has stopped")]
    Closed,
    /// Another process holds the lock of the SQLite file at `path`: one
    /// scheduler per SQLite file. The scheduler does not start.
    #[error(
        "state store {path} is in use by another scheduler (lock file {path}.lock); run one scheduler per SQLite file, or use PostgreSQL (WARREN_STORE=postgres://...) for several"
    )]
    Locked { path: String },
    /// A stored value does not read back (an unknown task state or outbox
    /// kind, JSON or a timestamp that does not parse, a running workflow
    /// without a definition or whose definition no longer validates, a
    /// partition count other than this scheduler's), or a value could not
    /// be written as JSON. The scheduler stops (or does not start):
    /// someone must look at the data.
    #[error("state store holds an unreadable row: {0}")]
    Corrupt(String),
}

impl StoreError {
    /// True when a scheduler on a partitioned store may step down and lead
    /// again after `self` ([`Partitions::step_down`], [`Partitions::lead`]):
    /// a lost connection or a lost partition (another scheduler took it
    /// over, or the database restarted). Anything about the schema or the
    /// data is final, and so is every error of SQLite, whose one scheduler
    /// has nobody to hand over to.
    pub fn can_lead_again(&self) -> bool {
        matches!(self, StoreError::Postgres(_) | StoreError::Fenced)
    }
}

impl From<Unreadable> for StoreError {
    fn from(e: Unreadable) -> StoreError {
        StoreError::Corrupt(e.0)
    }
}

/// Where the state lives: `WARREN_STORE` is a SQLite file path, or a
/// PostgreSQL address: a `postgres://` / `postgresql://` URL or libpq's
/// `key=value` form (`host=db dbname=warren sslmode=verify-full`), with
/// libpq's `sslmode` and `sslrootcert` (`postgres::address`). Shown
/// (`Display`, `Debug`) without any password.
#[derive(Clone, PartialEq, Eq)]
pub enum StoreLocation {
    Sqlite(PathBuf),
    Postgres(String),
}

impl StoreLocation {
    /// A `postgres://` or `postgresql://` URL, or a string that starts
    /// with a libpq key and `=` (`host=`, `dbname=`, `user=`, ...), is
    /// PostgreSQL; anything else is a SQLite file path (write `./host=x`
    /// for a file of such a name).
    pub fn parse(s: &str) -> StoreLocation {
        if postgres::address::is_url(s) || postgres::address::is_key_value(s) {
            StoreLocation::Postgres(s.to_owned())
        } else {
            StoreLocation::Sqlite(PathBuf::from(s))
        }
    }
}

impl std::fmt::Display for StoreLocation {
    /// The path, or the address without its password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreLocation::Sqlite(p) => write!(f, "{}", p.display()),
            StoreLocation::Postgres(url) => f.write_str(&warren_shared::redact_addr(url)),
        }
    }
}

impl std::fmt::Debug for StoreLocation {
    /// As `Display`: a `SchedulerConfig` printed with `{:?}` shows no
    /// password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreLocation::Sqlite(p) => f.debug_tuple("Sqlite").field(p).finish(),
            StoreLocation::Postgres(url) => f
                .debug_tuple("Postgres")
                .field(&warren_shared::redact_addr(url))
                .finish(),
        }
    }
}

impl From<PathBuf> for StoreLocation {
    fn from(p: PathBuf) -> StoreLocation {
        StoreLocation::Sqlite(p)
    }
}

/// The open store, of either kind. On PostgreSQL every call (but
/// [`Store::close`]) gives up with [`StoreError::Fenced`] when the watchdog
/// abandons the partitions (`Partitions::guarded`): a call stuck on a
/// silent connection must not keep the loop, and the broker deliveries
/// its session holds, from ending.
#[derive(Clone)]
pub enum Store {
    Sqlite(SqliteStore),
    Postgres(Arc<postgres::PgStore>),
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Store::Sqlite(_) => f.write_str("Store(sqlite)"),
            Store::Postgres(p) => write!(f, "Store({})", p.describe),
        }
    }
}

impl Store {
    /// Opens the store ([`Store::connect`]) and, on a partitioned store,
    /// waits until this scheduler owns a partition ([`Partitions::lead`]);
    /// `None` when `shutdown` comes first.
    pub async fn open(
        location: &StoreLocation,
        namespace: &str,
        shutdown: &CancellationToken,
    ) -> Result<Option<Store>, StoreError> {
        let store = Store::connect(location, namespace).await?;
        let led = match store.partitioned() {
            Some(p) => p.lead(shutdown).await?,
            None => true,
        };
        Ok(led.then_some(store))
    }

    /// Opens the store for reading: SQLite locked for this process (a
    /// second scheduler on the file is refused: [`StoreError::Locked`]),
    /// PostgreSQL connected and migrated. On PostgreSQL, commits wait for
    /// [`Partitions::lead`].
    pub async fn connect(location: &StoreLocation, namespace: &str) -> Result<Store, StoreError> {
        Store::connect_with(location, namespace, &postgres::PgTimeouts::default()).await
    }

    /// [`Store::connect`] with PostgreSQL sessions of these `timeouts`.
    pub async fn connect_with(
        location: &StoreLocation,
        namespace: &str,
        timeouts: &postgres::PgTimeouts,
    ) -> Result<Store, StoreError> {
        Ok(match location {
            StoreLocation::Sqlite(path) => Store::Sqlite(SqliteStore::open(path)?),
            StoreLocation::Postgres(url) => Store::Postgres(Arc::new(
                postgres::PgStore::connect(url, namespace, timeouts).await?,
            )),
        })
    }

    /// The calls only a partitioned store has (PostgreSQL, where several
    /// schedulers share the work): leading, balancing, releasing and
    /// stepping down, type places, reports of workflows another scheduler
    /// owns. `None` on SQLite, whose one scheduler owns everything (one
    /// partition) from [`Store::connect`] to [`Store::close`].
    pub fn partitioned(&self) -> Option<&Partitions> {
        match self {
            Store::Sqlite(_) => None,
            Store::Postgres(p) => Some(p.partitions()),
        }
    }

    /// Closes the store: releases the SQLite file's lock, or the
    /// PostgreSQL partitions' locks (the other schedulers take them over
    /// at once).
    pub async fn close(&self) {
        match self {
            Store::Sqlite(s) => s.close().await,
            Store::Postgres(p) => p.close().await,
        }
    }

    /// Commits one batch in one transaction, durably.
    pub async fn commit(&self, ops: Vec<Op>) -> Result<(), StoreError> {
        match self {
            Store::Sqlite(s) => s.commit(ops).await,
            Store::Postgres(p) => p.partitions().guarded(p.commit(&ops, false)).await,
        }
    }

    /// Commits ops whose loss in a crash is harmless (deletions of
    /// published outbox rows) without waiting for the disk.
    pub async fn commit_relaxed(&self, ops: Vec<Op>) -> Result<(), StoreError> {
        match self {
            Store::Sqlite(s) => s.commit_relaxed(ops).await,
            Store::Postgres(p) => p.partitions().guarded(p.commit(&ops, true)).await,
        }
    }

    /// Loads what a restarted scheduler resumes from.
    pub async fn recover(&self) -> Result<Recovered, StoreError> {
        match self {
            Store::Sqlite(s) => s.recover().await,
            Store::Postgres(p) => p.partitions().guarded(p.recover()).await,
        }
    }

    /// The stored definitions of those of `ids` still waiting for their
    /// start (`scheduled`) or for room (`queued`), as (id, definition).
    pub async fn unstarted_definitions(
        &self,
        ids: Vec<String>,
    ) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        match self {
            Store::Sqlite(s) => s.unstarted_definitions(ids).await,
            Store::Postgres(p) => p.partitions().guarded(p.unstarted_definitions(&ids)).await,
        }
    }

    /// Looks up workflows by id.
    pub async fn lookup(&self, ids: Vec<String>) -> Result<Vec<Option<Known>>, StoreError> {
        match self {
            Store::Sqlite(s) => s.lookup(ids).await,
            Store::Postgres(p) => p.partitions().guarded(p.lookup(&ids)).await,
        }
    }

    /// Workflows, newest first, that `filter` keeps (an `Option<String>`
    /// is a status alone): each filter a bound parameter of the query,
    /// its values checked by the caller (the HTTP endpoint bounds them).
    pub async fn list_workflows(
        &self,
        filter: impl Into<crate::store::filter::WorkflowFilter>,
        limit: u32,
        offset: u32,
    ) -> Result<Vec<WorkflowSummary>, StoreError> {
        let filter = filter.into();
        match self {
            Store::Sqlite(s) => s.list_workflows(filter, limit, offset).await,
            Store::Postgres(p) => {
                p.partitions()
                    .guarded(p.list_workflows(&filter, limit, offset))
                    .await
            }
        }
    }

    /// A trivial read: the store answers.
    pub async fn ping(&self) -> Result<(), StoreError> {
        match self {
            Store::Sqlite(s) => s.ping().await,
            Store::Postgres(p) => p.partitions().guarded(p.ping()).await,
        }
    }

    /// Committed results per (task, attempt) of a workflow: the evidence
    /// that no result was committed twice.
    pub async fn results_of(
        &self,
        workflow_id: String,
    ) -> Result<Vec<(String, u32, String)>, StoreError> {
        match self {
            Store::Sqlite(s) => s.results_of(workflow_id).await,
            Store::Postgres(p) => p.partitions().guarded(p.results_of(&workflow_id)).await,
        }
    }

    /// One task's row, as stored (also of an ended workflow).
    pub async fn task_row(
        &self,
        workflow_id: &str,
        task_id: &str,
    ) -> Result<Option<TaskRow>, StoreError> {
        match self {
            Store::Sqlite(s) => s.task_row(workflow_id.to_owned(), task_id.to_owned()).await,
            Store::Postgres(p) => {
                p.partitions()
                    .guarded(p.task_row(workflow_id, task_id))
                    .await
            }
        }
    }

    /// The attempts of a task whose result was committed, in order: who
    /// answered each and when.
    pub async fn attempt_log(
        &self,
        workflow_id: &str,
        task_id: &str,
    ) -> Result<Vec<warren_shared::wire::AttemptLog>, StoreError> {
        match self {
            Store::Sqlite(s) => {
                s.attempt_log(workflow_id.to_owned(), task_id.to_owned())
                    .await
            }
            Store::Postgres(p) => {
                p.partitions()
                    .guarded(p.attempt_log(workflow_id, task_id))
                    .await
            }
        }
    }

    /// The stored definition of workflow `id` and when it was created
    /// (`None` when unknown, or rejected: it has none).
    pub async fn definition(
        &self,
        id: &str,
    ) -> Result<Option<(Vec<u8>, chrono::DateTime<chrono::Utc>)>, StoreError> {
        match self {
            Store::Sqlite(s) => s.definition(id.to_owned()).await,
            Store::Postgres(p) => p.partitions().guarded(p.definition(id)).await,
        }
    }

    /// Workflow `id` as stored, whole: what a `rerun` starts from (`None`
    /// when unknown).
    pub async fn stored_workflow(
        &self,
        id: &str,
    ) -> Result<Option<crate::batch::StoredWorkflow>, StoreError> {
        match self {
            Store::Sqlite(s) => s.stored_workflow(id.to_owned()).await,
            Store::Postgres(p) => p.partitions().guarded(p.stored_workflow(id)).await,
        }
    }

    /// Messages still in the outbox (published ones are deleted).
    pub async fn outbox_len(&self) -> Result<u64, StoreError> {
        match self {
            Store::Sqlite(s) => s.outbox_len().await,
            Store::Postgres(p) => p.partitions().guarded(p.outbox_len()).await,
        }
    }

    /// Workflows deleted by retention through this store since it was
    /// opened.
    pub fn pruned(&self) -> u64 {
        match self {
            Store::Sqlite(s) => s.pruned(),
            Store::Postgres(p) => p.pruned(),
        }
    }

    /// The store's size in bytes: the SQLite file with its write-ahead
    /// log, or the namespace's PostgreSQL tables with their indexes.
    pub async fn size_bytes(&self) -> Result<u64, StoreError> {
        match self {
            Store::Sqlite(s) => s.size_bytes().await,
            Store::Postgres(p) => p.partitions().guarded(p.size_bytes()).await,
        }
    }

    /// The workflows stored, by status word, namespace-wide (read from the
    /// index of workflows by status).
    pub async fn workflows_by_status(&self) -> Result<Vec<(String, u64)>, StoreError> {
        match self {
            Store::Sqlite(s) => s.workflows_by_status().await,
            Store::Postgres(p) => p.partitions().guarded(p.workflows_by_status()).await,
        }
    }

    /// Every paused task queue and type, namespace-wide.
    pub async fn pauses(&self) -> Result<Vec<Pause>, StoreError> {
        match self {
            Store::Sqlite(s) => s.pauses().await,
            Store::Postgres(p) => p.partitions().guarded(p.pauses()).await,
        }
    }

    /// Applies a `pause` or `resume` in a transaction of its own (not a
    /// batch's: a pause belongs to no partition, and any scheduler may
    /// apply one), and returns every pause stored now. A `pause` past
    /// `MAX_PAUSES` is refused in the outcome, not as an error.
    pub async fn change_pause(&self, change: PauseChange) -> Result<PauseOutcome, StoreError> {
        match self {
            Store::Sqlite(s) => s.change_pause(change).await,
            Store::Postgres(p) => p.partitions().guarded(p.change_pause(&change)).await,
        }
    }
}

/// A schedule as listed: its row, and the status of its last firing's
/// workflow (`None` when the store holds no such workflow).
pub type ListedSchedule = (crate::batch::ScheduleRow, Option<String>);

impl Store {
    /// Schedules in id order after `after`, at most `limit`.
    pub async fn schedules_page(
        &self,
        after: Option<String>,
        limit: u32,
    ) -> Result<Vec<ListedSchedule>, StoreError> {
        match self {
            Store::Sqlite(s) => s.schedules_page(after, limit).await,
            Store::Postgres(p) => {
                p.partitions()
                    .guarded(p.schedules_page(after.as_deref(), limit))
                    .await
            }
        }
    }

    /// One schedule, with the workflow request its firings submit.
    pub async fn schedule(
        &self,
        id: &str,
    ) -> Result<Option<(ListedSchedule, Vec<u8>)>, StoreError> {
        match self {
            Store::Sqlite(s) => s.schedule(id.to_owned()).await,
            Store::Postgres(p) => p.partitions().guarded(p.schedule(id)).await,
        }
    }

    /// The workflow requests of those of `ids` still stored, as (id,
    /// workflow): what their firings submit.
    pub async fn schedule_workflows(
        &self,
        ids: Vec<String>,
    ) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        match self {
            Store::Sqlite(s) => s.schedule_workflows(ids).await,
            Store::Postgres(p) => p.partitions().guarded(p.schedule_workflows(&ids)).await,
        }
    }

    /// How many schedules the namespace holds.
    pub async fn schedule_count(&self) -> Result<u64, StoreError> {
        match self {
            Store::Sqlite(s) => s.schedule_count().await,
            Store::Postgres(p) => p.partitions().guarded(p.schedule_count()).await,
        }
    }
}

#[cfg(test)]
mod location_tests {
    use super::StoreLocation;
    use std::path::PathBuf;

    #[test]
    fn which_store_an_address_names() {
        for (s, postgres) in [
            ("postgres://u:p@db/w", true),
            ("postgresql://db/w?sslmode=verify-full", true),
            ("host=db dbname=w password=p", true),
            ("warren.db", false),
            ("./host=x", false),
            ("/var/lib/warren/warren.db", false),
        ] {
            let expected = if postgres {
                StoreLocation::Postgres(s.to_owned())
            } else {
                StoreLocation::Sqlite(PathBuf::from(s))
            };
            assert_eq!(StoreLocation::parse(s), expected, "{s}");
        }
    }

    #[test]
    fn shown_without_the_password() {
        for s in [
            "postgres://u:pa/ss@db/w?sslmode=verify-full",
            "postgres://u@db/w?password=pa/ss",
            "host=db password='pa/ss' sslmode=require",
        ] {
            let location = StoreLocation::parse(s);
            for shown in [format!("{location}"), format!("{location:?}")] {
                assert!(!shown.contains("pa/ss"), "{shown}");
                assert!(shown.contains("***"), "{shown}");
            }
        }
        let config = crate::SchedulerConfig {
            store: StoreLocation::parse("postgres://u:pa/ss@db/w"),
            ..Default::default()
        };
        assert!(!format!("{config:?}").contains("pa/ss"));
    }
}
