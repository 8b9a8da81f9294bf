//! The durable state store: a SQLite file ([`sqlite`], the default) or a
//! PostgreSQL database ([`postgres`]), behind one interface, [`Store`].
//!
//! The engine hands over one batch of [`Op`]s per transaction: every state
//! change of a batch, and the outbox messages they cause, commit together
//! or not at all.

pub mod postgres;
mod rows;
pub mod sqlite;

pub use postgres::{Balance, Partitions};
pub use sqlite::SqliteStore;

use crate::batch::{Known, Op, Recovered, Unreadable};
use std::{path::PathBuf, sync::Arc};
use tokio_util::sync::CancellationToken;
use warren_shared::wire::WorkflowSummary;

/// Failures of the state store. Any of them stops the scheduler: its
/// in-memory state may be ahead of the file, and a restart reloads the file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    #[error("state store: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("state store {path}: {source}")]
    Open {
        path: String,
        #[source]
        source: rusqlite::Error,
    },
    #[error(
        "state store holds schema version {found}; this scheduler knows versions up to {known}: run a newer scheduler"
    )]
    SchemaVersion { found: i64, known: i64 },
    #[error("state store (PostgreSQL): {0}")]
    Postgres(String),
    #[error("state store address: {0}")]
    Url(String),
    #[error(
        "this scheduler lost its leader lock (its database session ended, or another scheduler took over)"
    )]
    Fenced,
    #[error("state store {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("state store thread has stopped")]
    Closed,
    #[error(
        "state store {path} is in use by another scheduler (lock file {path}.lock); run one scheduler per SQLite file, or use PostgreSQL (WARREN_STORE=postgres://...) for several"
    )]
    Locked { path: String },
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
/// `postgres://` / `postgresql://` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreLocation {
    Sqlite(PathBuf),
    Postgres(String),
}

impl StoreLocation {
    pub fn parse(s: &str) -> StoreLocation {
        if s.starts_with("postgres://") || s.starts_with("postgresql://") {
            StoreLocation::Postgres(s.to_owned())
        } else {
            StoreLocation::Sqlite(PathBuf::from(s))
        }
    }
}

impl std::fmt::Display for StoreLocation {
    /// The path, or the URL without its password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreLocation::Sqlite(p) => write!(f, "{}", p.display()),
            StoreLocation::Postgres(url) => f.write_str(&warren_shared::redact_addr(url)),
        }
    }
}

impl From<PathBuf> for StoreLocation {
    fn from(p: PathBuf) -> StoreLocation {
        StoreLocation::Sqlite(p)
    }
}

/// The open store, of either kind.
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
        Ok(match location {
            StoreLocation::Sqlite(path) => Store::Sqlite(SqliteStore::open(path)?),
            StoreLocation::Postgres(url) => {
                Store::Postgres(Arc::new(postgres::PgStore::connect(url, namespace).await?))
            }
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
            Store::Postgres(p) => p.commit(&ops, false).await,
        }
    }

    /// Commits ops whose loss in a crash is harmless (deletions of
    /// published outbox rows) without waiting for the disk.
    pub async fn commit_relaxed(&self, ops: Vec<Op>) -> Result<(), StoreError> {
        match self {
            Store::Sqlite(s) => s.commit_relaxed(ops).await,
            Store::Postgres(p) => p.commit(&ops, true).await,
        }
    }

    /// Loads what a restarted scheduler resumes from.
    pub async fn recover(&self) -> Result<Recovered, StoreError> {
        match self {
            Store::Sqlite(s) => s.recover().await,
            Store::Postgres(p) => p.recover().await,
        }
    }

    /// Looks up workflows by id.
    pub async fn lookup(&self, ids: Vec<String>) -> Result<Vec<Option<Known>>, StoreError> {
        match self {
            Store::Sqlite(s) => s.lookup(ids).await,
            Store::Postgres(p) => p.lookup(&ids).await,
        }
    }

    /// Workflows, newest first, optionally of one status only.
    pub async fn list_workflows(
        &self,
        status: Option<String>,
        limit: u32,
        offset: u32,
    ) -> Result<Vec<WorkflowSummary>, StoreError> {
        match self {
            Store::Sqlite(s) => s.list_workflows(status, limit, offset).await,
            Store::Postgres(p) => p.list_workflows(status.as_deref(), limit, offset).await,
        }
    }

    /// A trivial read: the store answers.
    pub async fn ping(&self) -> Result<(), StoreError> {
        match self {
            Store::Sqlite(s) => s.ping().await,
            Store::Postgres(p) => p.ping().await,
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
            Store::Postgres(p) => p.results_of(&workflow_id).await,
        }
    }

    /// Messages still in the outbox (published ones are deleted).
    pub async fn outbox_len(&self) -> Result<u64, StoreError> {
        match self {
            Store::Sqlite(s) => s.outbox_len().await,
            Store::Postgres(p) => p.outbox_len().await,
        }
    }
}
