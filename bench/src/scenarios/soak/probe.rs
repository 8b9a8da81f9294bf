//! What the soak reads while it runs, from outside the system under test:
//! the scheduler's and the workers' resident memory (`VmRSS` from
//! /proc), the store's size (SQLite: the file and its write-ahead log on
//! disk; PostgreSQL: the namespace's tables with their indexes and TOAST,
//! `pg_total_relation_size` summed), and from the scheduler's `/metrics`
//! how many workflows its retention has deleted.
//!
//! The store is measured here rather than read from the scheduler's
//! `warren_store_bytes`: the figure is then the disk's (for SQLite, the
//! files as the file system sizes them, not SQLite's page count), and it
//! does not depend on the scheduler under test answering.

use super::series::Sample;
use crate::{
    deployment::Deployment,
    scenarios::{
        backlog::{gauge, metrics},
        delayed::rss_mb,
    },
};
use std::{net::SocketAddr, path::PathBuf};

/// Where the store lives.
enum Store {
    /// The SQLite file.
    Sqlite(PathBuf),
    /// A connection to the PostgreSQL, and the namespace's schema.
    Postgres(tokio_postgres::Client, String),
}

/// Reads a deployment's figures.
pub struct Probe {
    scheduler: u32,
    workers: Vec<u32>,
    store: Store,
    http: SocketAddr,
}

impl Probe {
    /// For `d`, whose scheduler serves `/metrics` on `http`; `pg` is its
    /// PostgreSQL store's URL, when it has one.
    pub async fn new(d: &Deployment, pg: Option<&str>, http: SocketAddr) -> anyhow::Result<Probe> {
        let store = match pg {
            None => Store::Sqlite(d.dir().join("warren.db")),
            Some(url) => {
                let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
                tokio::spawn(conn);
                let schema = warren_scheduler::store::postgres::schema_of(&d.amqp.namespace);
                Store::Postgres(client, schema)
            }
        };
        Ok(Probe {
            scheduler: d.scheduler.pid(),
            workers: d.worker_pids(),
            store,
            http,
        })
    }

    /// The figures now.
    pub async fn sample(&self) -> Sample {
        let bytes = |mb: f64| (mb * 1024.0 * 1024.0) as u64;
        let workers: Option<f64> = self.workers.iter().map(|&p| rss_mb(p)).sum();
        Sample {
            scheduler_rss: rss_mb(self.scheduler).map(bytes),
            worker_rss: workers.map(bytes),
            store: self.store_bytes().await,
        }
    }

    async fn store_bytes(&self) -> Option<u64> {
        match &self.store {
            Store::Sqlite(file) => {
                let len = |p: PathBuf| std::fs::metadata(p).map(|m| m.len());
                let mut wal = file.clone().into_os_string();
                wal.push("-wal");
                // The log may not exist between checkpoints: 0 then.
                Some(len(file.clone()).ok()? + len(wal.into()).unwrap_or(0))
            }
            Store::Postgres(client, schema) => client
                .query_one(
                    "SELECT COALESCE(sum(pg_total_relation_size(c.oid)), 0)::int8
                     FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                     WHERE n.nspname = $1 AND c.relkind = 'r'",
                    &[schema],
                )
                .await
                .ok()
                .map(|row| row.get::<_, i64>(0).max(0) as u64),
        }
    }

    /// The PostgreSQL server's `autovacuum` setting (`on` or `off`);
    /// `None` for SQLite. Without autovacuum nothing reclaims the rows
    /// that retention deletes (nor the old versions of updated rows), so
    /// the store grows whatever retention does.
    pub async fn autovacuum(&self) -> Option<String> {
        let Store::Postgres(client, _) = &self.store else {
            return None;
        };
        client
            .query_one("SHOW autovacuum", &[])
            .await
            .ok()
            .map(|row| row.get(0))
    }

    /// The scheduler's `warren_store_pruned_total`.
    pub async fn pruned_total(&self) -> Option<u64> {
        gauge(&metrics(self.http).await.ok()?, "warren_store_pruned_total")
    }
}
