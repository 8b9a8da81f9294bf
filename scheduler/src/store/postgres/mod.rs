//! The PostgreSQL state store (`WARREN_STORE=postgres://...`, or libpq's
//! `key=value` form), over TLS when the address's `sslmode` asks
//! (`address.rs` reads the address, `tls.rs` makes the connections).
//!
//! Same tables and the same batches as SQLite: one transaction per batch,
//! each kind of op one statement over arrays, all of them pipelined
//! (`batch.rs`). The tables live in a schema of their own per Warren
//! namespace, created and migrated at startup (`schema.rs`).
//!
//! Several schedulers may share a namespace. Its workflows are split into
//! [`PARTITIONS`] partitions (by a hash of the workflow id); each scheduler
//! owns some, holding a session advisory lock per partition and the epoch
//! it took each with (the `partitions` table; [`Partitions`] in
//! `partitions.rs`). Every batch checks those epochs inside its
//! transaction, so a scheduler that lost a partition (its connection
//! dropped, another took it over) can commit nothing more: its batch fails
//! and it starts again with what it still owns. Limits per task type are
//! shared through the store (`places.rs`), and so are paused task queues
//! and types (`pauses.rs`).
//!
//! This file holds [`PgStore`]: the connection pool and the calls both
//! stores have.

pub(crate) mod address;
mod batch;
mod keeper;
mod partitions;
mod pauses;
mod places;
mod prune;
mod runs;
mod schedules;
mod schema;
#[cfg(test)]
mod tests;
mod timeouts;
mod tls;

pub use partitions::{BALANCE_EVERY, Balance, Partitions};
pub use schema::schema_of;
pub use timeouts::PgTimeouts;

use super::StoreError;
use super::rows::{
    OutboxRecord, QueuedRecord, SummaryRecord, TaskRecord, WorkflowRecord, scheduled_workflow,
};
use crate::batch::{
    Known, Op, QueuedWorkflow, Recovered, RunningWorkflow, ScheduledWorkflow, TaskRow,
};
use batch::Batch;
use chrono::{DateTime, Utc};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use std::{collections::HashMap, sync::Arc, time::Duration};
use warren_shared::{
    topology::{PARTITIONS, partition_of},
    wire::WorkflowSummary,
};

/// The open PostgreSQL store of one namespace.
pub struct PgStore {
    /// Connections for batches and reads (4 at most).
    pool: Pool,
    /// What this scheduler owns, and the calls about it.
    partitions: Partitions,
    /// `postgres://user@host:port/db (schema s, sslmode=...)`, for logs.
    pub(super) describe: String,
    /// Workflows deleted by retention through this store (`prune.rs`).
    pruned: std::sync::atomic::AtomicU64,
}

fn pg(e: tokio_postgres::Error) -> StoreError {
    StoreError::Postgres(with_causes(&e))
}

/// `e` and its causes, each once: tokio-postgres shows only its kind
/// ("db error", "error performing TLS handshake"), the why (the server's
/// message, the refused certificate) is its source.
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let more = c.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        cause = c.source();
    }
    text
}

impl PgStore {
    /// Connects and creates and migrates the namespace's schema. The store
    /// can be read at once; it commits only once [`Partitions::lead`] gave
    /// this scheduler partitions to own.
    pub async fn connect(
        url: &str,
        namespace: &str,
        timeouts: &PgTimeouts,
    ) -> Result<PgStore, StoreError> {
        let schema = schema_of(namespace);
        let address::Address { mut config, tls } = address::parse(url)?;
        let describe = describe(&config, &schema, &tls);
        // The roots are read now: a CA file that cannot be used stops the
        // start, before any connection.
        let tls = tls::MakeTls::new(&tls)?;
        // Names the namespace's sessions in pg_stat_activity (PostgreSQL
        // keeps the first 63 bytes).
        config.application_name(format!("warren {schema}"));
        // Every session: the keepalives on both ends, the server's limits
        // on a transaction left idle and on waiting for a lock
        // (`timeouts.rs`).
        config.options(format!(
            "-c search_path={schema} {}",
            timeouts.session_options()
        ));
        config.connect_timeout(Duration::from_secs(10));
        timeouts.apply(&mut config);
        let manager = Manager::from_config(
            config.clone(),
            tls.clone(),
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(4)
            .build()
            .map_err(|e| StoreError::Postgres(e.to_string()))?;
        let mut client = get(&pool).await?;
        schema::migrate(&mut client, &schema).await?;
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
            partitions: Partitions::new(
                partitions::Setup {
                    pool: pool.clone(),
                    config,
                    tls,
                    lock_idle: timeouts.lock_idle,
                },
                &schema,
                describe.clone(),
            ),
            pool,
            describe,
            pruned: Default::default(),
        })
    }

    /// What this scheduler owns, and the calls about it.
    pub fn partitions(&self) -> &Partitions {
        &self.partitions
    }

    /// Releases the partitions (the others take them at once) and the pool.
    pub async fn close(&self) {
        self.partitions.close().await;
        self.pool.close();
    }

    /// Commits one batch in one transaction, fenced by the owned
    /// partitions' epochs. `relaxed`: without waiting for the disk (the
    /// deletions of published outbox rows).
    pub async fn commit(&self, ops: &[Op], relaxed: bool) -> Result<(), StoreError> {
        let (parts, epochs) = self.partitions.fence()?;
        let mut client = get(&self.pool).await?;
        let tx = client.transaction().await.map_err(pg)?;
        if relaxed {
            // Deletions of published outbox rows: losing them in a crash
            // only publishes a message twice.
            tx.batch_execute("SET LOCAL synchronous_commit = off")
                .await
                .map_err(pg)?;
        }
        let pruned = Batch::of(ops)?.write(&tx, &parts, &epochs).await?;
        tx.commit().await.map_err(pg)?;
        self.pruned
            .fetch_add(pruned, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    /// Loads what the partitions this scheduler owns resume from.
    pub async fn recover(&self) -> Result<Recovered, StoreError> {
        let owned = self.partitions.owned();
        let parts: Vec<i32> = owned.iter().map(|&p| i32::from(p)).collect();
        let client = get(&self.pool).await?;
        let mut out = Recovered::new(schema::attempt_key(&client).await?);
        for r in client
            .query(
                "SELECT seq, kind, exchange, routing_key, message_id, correlation_id, priority, headers, body, part
                 FROM outbox WHERE part = ANY($1) ORDER BY seq",
                &[&parts],
            )
            .await
            .map_err(pg)?
        {
            let priority: Option<i16> = r.get(6);
            let row = OutboxRecord {
                seq: r.get(0),
                kind: r.get(1),
                exchange: r.get(2),
                routing_key: r.get(3),
                message_id: r.get(4),
                correlation_id: r.get(5),
                priority: priority.map(|p| p.clamp(0, 255) as u8),
                headers: r.get(7),
                body: r.get(8),
                part: r.get::<_, i32>(9).clamp(0, i32::from(u16::MAX)) as u16,
            };
            out.outbox.push(row.decode()?);
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
        out.type_places = places::take_over(&client, &parts).await?;

        let ids: Vec<String> = client
            .query("SELECT id FROM workflows WHERE status = 'running'", &[])
            .await
            .map_err(pg)?
            .into_iter()
            .map(|r| r.get::<_, String>(0))
            .filter(|id| owned.contains(&partition_of(id, PARTITIONS)))
            .collect();
        out.running = running_workflows(&client, &ids).await?;
        out.scheduled = scheduled_workflows(&client, &owned).await?;
        out.queued = queued_workflows(&client, &owned).await?;
        out.schedules = schedules::owned_schedules(&client, &owned).await?;
        Ok(out)
    }

    /// The stored definitions of those of `ids` still waiting for their
    /// start or for room.
    pub async fn unstarted_definitions(
        &self,
        ids: &[String],
    ) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let client = get(&self.pool).await?;
        Ok(client
            .query(
                "SELECT id, definition FROM workflows
                 WHERE id = ANY($1) AND status IN ('scheduled', 'queued')
                   AND definition IS NOT NULL",
                &[&ids],
            )
            .await
            .map_err(pg)?
            .into_iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect())
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

    /// Workflows, newest first, that `filter` keeps: every filter a bound
    /// parameter (`strpos` and `starts_with`, so that `%` and `_` are plain
    /// characters).
    pub async fn list_workflows(
        &self,
        filter: &crate::store::filter::WorkflowFilter,
        limit: u32,
        offset: u32,
    ) -> Result<Vec<WorkflowSummary>, StoreError> {
        let client = get(&self.pool).await?;
        let (limit, offset) = (i64::from(limit), i64::from(offset));
        // Two statements, so that each uses its index.
        let query = if filter.status.is_some() {
            "SELECT id, name, status, priority, created_at, finished_at,
                    CASE WHEN status IN ('scheduled', 'queued') THEN report END FROM workflows
             WHERE status = $1::text
               AND ($4::text IS NULL OR strpos(name, $4::text) > 0)
               AND ($5::timestamptz IS NULL OR created_at >= $5::timestamptz)
               AND ($6::timestamptz IS NULL OR created_at < $6::timestamptz)
               AND ($7::text IS NULL OR starts_with(id, $7::text))
             ORDER BY seq DESC LIMIT $2 OFFSET $3"
        } else {
            "SELECT id, name, status, priority, created_at, finished_at,
                    CASE WHEN status IN ('scheduled', 'queued') THEN report END FROM workflows
             WHERE $1::text IS NULL
               AND ($4::text IS NULL OR strpos(name, $4::text) > 0)
               AND ($5::timestamptz IS NULL OR created_at >= $5::timestamptz)
               AND ($6::timestamptz IS NULL OR created_at < $6::timestamptz)
               AND ($7::text IS NULL OR starts_with(id, $7::text))
             ORDER BY seq DESC LIMIT $2 OFFSET $3"
        };
        let rows = client
            .query(
                query,
                &[
                    &filter.status,
                    &limit,
                    &offset,
                    &filter.name,
                    &filter.from,
                    &filter.to,
                    &filter.id_prefix,
                ],
            )
            .await
            .map_err(pg)?;
        Ok(rows
            .into_iter()
            .map(|r| {
                SummaryRecord::<DateTime<Utc>> {
                    id: r.get(0),
                    name: r.get(1),
                    status: r.get(2),
                    priority: i64::from(r.get::<_, i16>(3)),
                    created_at: r.get(4),
                    finished_at: r.get(5),
                    scheduled_report: r.get(6),
                }
                .decode()
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

    /// One task's row.
    pub async fn task_row(
        &self,
        workflow_id: &str,
        task_id: &str,
    ) -> Result<Option<TaskRow>, StoreError> {
        let row = get(&self.pool)
            .await?
            .query_opt(
                "SELECT task_id, state, attempt, due_at_ms, output, error, worker, started_at, finished_at
                 FROM tasks WHERE workflow_id = $1 AND task_id = $2",
                &[&workflow_id, &task_id],
            )
            .await
            .map_err(pg)?;
        row.map(|r| {
            TaskRecord::<DateTime<Utc>> {
                task_id: r.get(0),
                state: r.get(1),
                attempt: r.get::<_, i32>(2).max(0) as u32,
                due_at_ms: r.get(3),
                output: r.get(4),
                error: r.get(5),
                worker: r.get(6),
                started_at: r.get(7),
                finished_at: r.get(8),
            }
            .decode(Arc::from(workflow_id))
        })
        .transpose()
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

/// The workflows of the `owned` partitions whose status is `status`, each
/// row with its id first, then `columns`, then its waiters.
async fn unstarted_rows(
    client: &deadpool_postgres::Object,
    owned: &[u16],
    status: &str,
    columns: &str,
) -> Result<Vec<(tokio_postgres::Row, Vec<(String, Option<String>)>)>, StoreError> {
    let rows = client
        .query(
            &format!(
                "SELECT w.id, {columns},
                    COALESCE(array_agg(r.reply_to) FILTER (WHERE r.reply_to IS NOT NULL), '{{}}'),
                    COALESCE(array_agg(r.correlation_id) FILTER (WHERE r.reply_to IS NOT NULL), '{{}}')
                 FROM workflows w LEFT JOIN replies r ON r.workflow_id = w.id
                 WHERE w.status = $1 GROUP BY w.id"
            ),
            &[&status],
        )
        .await
        .map_err(pg)?;
    Ok(rows
        .into_iter()
        .filter(|r| owned.contains(&partition_of(r.get::<_, &str>(0), PARTITIONS)))
        .map(|r| {
            let n = r.len();
            let to: Vec<String> = r.get(n - 2);
            let corr: Vec<Option<String>> = r.get(n - 1);
            (r, to.into_iter().zip(corr).collect())
        })
        .collect())
}

/// The workflows of the `owned` partitions waiting for their start, with
/// their waiters.
async fn scheduled_workflows(
    client: &deadpool_postgres::Object,
    owned: &[u16],
) -> Result<Vec<ScheduledWorkflow>, StoreError> {
    unstarted_rows(client, owned, "scheduled", "w.name, w.report")
        .await?
        .into_iter()
        .map(|(r, replies)| {
            let report: Option<String> = r.get(2);
            scheduled_workflow(r.get(0), r.get(1), report.as_deref(), replies)
        })
        .collect()
}

/// The workflows of the `owned` partitions waiting for room, with their
/// waiters.
async fn queued_workflows(
    client: &deadpool_postgres::Object,
    owned: &[u16],
) -> Result<Vec<QueuedWorkflow>, StoreError> {
    let columns = "w.name, w.priority, w.seq, w.report, octet_length(w.definition), w.created_at";
    unstarted_rows(client, owned, "queued", columns)
        .await?
        .into_iter()
        .map(|(r, replies)| {
            QueuedRecord {
                id: r.get(0),
                name: r.get(1),
                priority: r.get::<_, i16>(2) as i64,
                seq: r.get(3),
                report: r.get(4),
                bytes: r.get::<_, Option<i32>>(5).unwrap_or(0) as i64,
                created_at: r.get::<_, DateTime<Utc>>(6),
            }
            .decode(replies)
        })
        .collect()
}

/// The running workflows among `ids`, with their tasks and waiters, in
/// the order they were accepted.
async fn running_workflows(
    client: &deadpool_postgres::Object,
    ids: &[String],
) -> Result<Vec<RunningWorkflow>, StoreError> {
    whole_workflows(client, ids, true).await
}

/// The workflows among `ids` (the running ones only, if `running_only`),
/// with their tasks, waiters and runs, in the order they were accepted. A
/// rejected one's definition reads back empty.
async fn whole_workflows(
    client: &deadpool_postgres::Object,
    ids: &[String],
    running_only: bool,
) -> Result<Vec<RunningWorkflow>, StoreError> {
    let mut running = Vec::with_capacity(ids.len());
    let wfs = client
        .query(
            "SELECT id, seq, COALESCE(definition, ''::bytea), created_at FROM workflows
             WHERE id = ANY($1) AND (status = 'running' OR NOT $2) ORDER BY seq",
            &[&ids, &running_only],
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
        let row = TaskRecord::<DateTime<Utc>> {
            task_id: r.get(1),
            state: r.get(2),
            attempt: r.get::<_, i32>(3).max(0) as u32,
            due_at_ms: r.get(4),
            output: r.get(5),
            error: r.get(6),
            worker: r.get(7),
            started_at: r.get(8),
            finished_at: r.get(9),
        }
        .decode(Arc::from(wf.as_str()))?;
        tasks.entry(wf).or_default().push(row);
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
    let mut runs = runs::runs_of(client, ids).await?;
    for r in wfs {
        let wf = WorkflowRecord::<DateTime<Utc>> {
            id: r.get(0),
            seq: r.get(1),
            definition: r.get(2),
            created_at: r.get(3),
        };
        let (t, w) = (tasks.remove(&wf.id), replies.remove(&wf.id));
        let r = runs.remove(&wf.id).unwrap_or_default();
        running.push(wf.decode(t.unwrap_or_default(), w.unwrap_or_default(), r)?);
    }
    Ok(running)
}

/// `postgres://user@host:port/db (schema s, sslmode=...)`, without the
/// password.
fn describe(c: &tokio_postgres::Config, schema: &str, tls: &address::TlsSettings) -> String {
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
        "postgres://{}@{host}:{port}/{} (schema {schema}, {})",
        c.get_user().unwrap_or(""),
        c.get_dbname().unwrap_or(""),
        tls::checks(tls)
    )
}

async fn get(pool: &Pool) -> Result<deadpool_postgres::Object, StoreError> {
    pool.get()
        .await
        .map_err(|e| StoreError::Postgres(with_causes(&e)))
}
