//! The schedulers' store read behind their backs (SQLite or PostgreSQL):
//! workflow statuses, committed results, the poison's error, the bombs'
//! reports, and which scheduler owns partitions.

use crate::POISON_ID;
use std::{collections::HashMap, path::PathBuf, time::Duration};
use warren_scheduler::store::{StoreLocation, postgres::schema_of};

/// Reads the schedulers' store behind their backs, for the invariants.
pub enum Reader {
    Sqlite(PathBuf),
    Postgres { url: String, schema: String },
}

impl Reader {
    pub fn new(location: &StoreLocation, namespace: &str) -> Reader {
        match location {
            StoreLocation::Sqlite(p) => Reader::Sqlite(p.clone()),
            StoreLocation::Postgres(url) => Reader::Postgres {
                url: url.clone(),
                schema: schema_of(namespace),
            },
        }
    }

    /// Rows of `sql` (selecting text columns only), from either store.
    async fn rows(&self, sql: &str, columns: usize) -> anyhow::Result<Vec<Vec<Option<String>>>> {
        match self {
            Reader::Sqlite(path) => {
                if !path.exists() {
                    return Ok(Vec::new());
                }
                let conn = rusqlite::Connection::open_with_flags(
                    path,
                    rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
                )?;
                conn.busy_timeout(Duration::from_secs(5))?;
                let mut stmt = conn.prepare(sql)?;
                let rows = stmt.query_map([], |r| {
                    (0..columns)
                        .map(|i| r.get::<_, Option<String>>(i))
                        .collect::<Result<Vec<_>, _>>()
                })?;
                Ok(rows.collect::<Result<_, _>>()?)
            }
            Reader::Postgres { url, schema } => {
                let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
                tokio::spawn(conn);
                let exists: bool = client
                    .query_one(
                        "SELECT EXISTS (SELECT 1 FROM information_schema.tables WHERE table_schema = $1 AND table_name = 'workflows')",
                        &[schema],
                    )
                    .await?
                    .get(0);
                if !exists {
                    return Ok(Vec::new());
                }
                client
                    .batch_execute(&format!("SET search_path = {schema}"))
                    .await?;
                Ok(client
                    .query(sql, &[])
                    .await?
                    .iter()
                    .map(|r| {
                        (0..columns)
                            .map(|i| r.get::<_, Option<String>>(i))
                            .collect()
                    })
                    .collect())
            }
        }
    }

    /// Workflows in the store, by status.
    pub async fn statuses(&self) -> anyhow::Result<HashMap<String, String>> {
        Ok(self
            .rows("SELECT id, status FROM workflows", 2)
            .await?
            .into_iter()
            .map(|mut r| {
                (
                    r[0].take().unwrap_or_default(),
                    r[1].take().unwrap_or_default(),
                )
            })
            .collect())
    }

    /// Committed results: (workflow, task) -> statuses of each committed attempt.
    pub async fn committed_results(
        &self,
    ) -> anyhow::Result<HashMap<(String, String), Vec<String>>> {
        let mut out: HashMap<(String, String), Vec<String>> = HashMap::new();
        for mut r in self
            .rows("SELECT workflow_id, task_id, status FROM results", 3)
            .await?
        {
            let key = (
                r[0].take().unwrap_or_default(),
                r[1].take().unwrap_or_default(),
            );
            out.entry(key)
                .or_default()
                .push(r[2].take().unwrap_or_default());
        }
        Ok(out)
    }

    /// The error of the poison workflow's task.
    pub async fn poison_error(&self) -> anyhow::Result<Option<String>> {
        let report = self
            .rows(
                &format!("SELECT report FROM workflows WHERE id = '{POISON_ID}'"),
                1,
            )
            .await?
            .into_iter()
            .next()
            .and_then(|mut r| r[0].take());
        Ok(report.and_then(|r| {
            let v: serde_json::Value = serde_json::from_str(&r).ok()?;
            v["tasks"]["boom"]["error"]["message"]
                .as_str()
                .map(str::to_owned)
        }))
    }

    /// The bombs' workflows: id -> (status, stored report as JSON, `null`
    /// when none or unreadable).
    pub async fn bomb_reports(
        &self,
    ) -> anyhow::Result<HashMap<String, (String, serde_json::Value)>> {
        Ok(self
            .rows(
                "SELECT id, status, report FROM workflows WHERE id LIKE 'bomb-%'",
                3,
            )
            .await?
            .into_iter()
            .map(|mut r| {
                let report = r[2]
                    .take()
                    .and_then(|j| serde_json::from_str(&j).ok())
                    .unwrap_or_default();
                (
                    r[0].take().unwrap_or_default(),
                    (r[1].take().unwrap_or_default(), report),
                )
            })
            .collect())
    }

    /// The pid of a scheduler owning partitions (the owner of a random
    /// one, PostgreSQL only), if any.
    pub async fn owner_pid(&self) -> anyhow::Result<Option<u32>> {
        if matches!(self, Reader::Sqlite(_)) {
            return Ok(None);
        }
        let holder = self
            .rows(
                "SELECT owner FROM partitions WHERE owner IS NOT NULL ORDER BY random() LIMIT 1",
                1,
            )
            .await
            .unwrap_or_default()
            .into_iter()
            .next()
            .and_then(|mut r| r[0].take());
        Ok(holder.and_then(|h| warren_harness::store::owner_pid(&h)))
    }
}
