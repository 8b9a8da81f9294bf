//! The SQLite store (`WARREN_STORE` a file path, the default): one file
//! in WAL mode with full sync, locked for one scheduler.
//!
//! SQLite calls block, so the connection lives on a thread of its own
//! ([`SqliteStore`] is the handle to it) and the async side sends it
//! closures. Each batch of [`Op`]s is one transaction. Paused task queues
//! and types are in `pauses` (the `pauses` child module), schedules in
//! `schedules` (the `schedules` one).

use super::StoreError;
use super::rows::{
    OutboxRecord, QueuedRecord, SummaryRecord, TaskRecord, WorkflowRecord, error_text,
    headers_text, scheduled_workflow, state_text, ts,
};
use crate::attempt_key::AttemptKey;
use crate::batch::{Known, Op, Recovered, TaskRow};
use chrono::Utc;
use rusqlite::{Connection, OptionalExtension, params};
use std::{path::Path, sync::Arc};
use tokio::sync::oneshot;
use warren_shared::wire::WorkflowSummary;

mod pauses;
mod prune;
mod runs;
mod schedules;

/// Version of the schema below, kept in `meta`.
const SCHEMA_VERSION: i64 = 2;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS workflows (
    id          TEXT PRIMARY KEY,
    seq         INTEGER NOT NULL,
    name        TEXT,
    priority    INTEGER NOT NULL,
    status      TEXT NOT NULL,
    definition  BLOB,
    report      TEXT,
    created_at  TEXT NOT NULL,
    finished_at TEXT
);
CREATE INDEX IF NOT EXISTS workflows_by_status ON workflows (status, seq);
CREATE INDEX IF NOT EXISTS workflows_by_seq ON workflows (seq);
CREATE INDEX IF NOT EXISTS workflows_by_finished ON workflows (finished_at);
CREATE TABLE IF NOT EXISTS tasks (
    workflow_id TEXT NOT NULL,
    task_id     TEXT NOT NULL,
    state       TEXT NOT NULL,
    attempt     INTEGER NOT NULL,
    due_at_ms   INTEGER,
    output      TEXT,
    error       TEXT,
    worker      TEXT,
    started_at  TEXT,
    finished_at TEXT,
    PRIMARY KEY (workflow_id, task_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS results (
    workflow_id  TEXT NOT NULL,
    task_id      TEXT NOT NULL,
    attempt      INTEGER NOT NULL,
    status       TEXT NOT NULL,
    committed_at TEXT NOT NULL,
    worker       TEXT,
    started_at   TEXT,
    finished_at  TEXT,
    PRIMARY KEY (workflow_id, task_id, attempt)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS outbox (
    seq            INTEGER PRIMARY KEY,
    kind           TEXT NOT NULL,
    exchange       TEXT NOT NULL,
    routing_key    TEXT NOT NULL,
    message_id     TEXT,
    correlation_id TEXT,
    priority       INTEGER,
    headers        TEXT,
    body           BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS replies (
    workflow_id    TEXT NOT NULL,
    reply_to       TEXT NOT NULL,
    correlation_id TEXT,
    run            INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS runs (
    workflow_id TEXT NOT NULL,
    run         INTEGER NOT NULL,
    rerun_id    TEXT,
    started_at  TEXT NOT NULL,
    record      TEXT NOT NULL,
    PRIMARY KEY (workflow_id, run)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS replies_by_workflow ON replies (workflow_id);
CREATE TABLE IF NOT EXISTS pauses (
    kind  TEXT NOT NULL,
    name  TEXT NOT NULL,
    since TEXT NOT NULL,
    PRIMARY KEY (kind, name)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS schedules (
    id               TEXT PRIMARY KEY,
    cron             TEXT,
    every_ms         INTEGER,
    timezone         TEXT NOT NULL,
    overlap          TEXT NOT NULL,
    catch_up         TEXT NOT NULL,
    workflow         BLOB NOT NULL,
    created_ms       INTEGER NOT NULL,
    paused           INTEGER NOT NULL DEFAULT 0,
    next_fire_ms     INTEGER,
    last_fire_ms     INTEGER,
    last_workflow_id TEXT,
    last_skipped     INTEGER NOT NULL DEFAULT 0,
    fired            INTEGER NOT NULL DEFAULT 0,
    skipped          INTEGER NOT NULL DEFAULT 0
);
";

/// The connection, owned by the store thread.
struct Db {
    conn: Connection,
    /// Workflows deleted by retention (read by [`SqliteStore::pruned`]).
    pruned: Arc<std::sync::atomic::AtomicU64>,
    /// Held (locked) for the life of the store: a second scheduler on the
    /// same file would dispatch everything twice.
    _lock: std::fs::File,
}

type Job = Box<dyn FnOnce(&mut Db) + Send>;

enum Msg {
    Job(Job),
    /// Close the database (releasing its lock), then acknowledge.
    Close(oneshot::Sender<()>),
}

/// Handle to the SQLite store thread.
#[derive(Clone)]
pub struct SqliteStore {
    tx: std::sync::mpsc::Sender<Msg>,
    pruned: Arc<std::sync::atomic::AtomicU64>,
}

impl SqliteStore {
    /// Opens (creating if needed) the store at `path` and starts its thread.
    pub fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        let db = Db::open(path)?;
        let pruned = db.pruned.clone();
        let (tx, rx) = std::sync::mpsc::channel::<Msg>();
        std::thread::Builder::new()
            .name("warren-store".into())
            .spawn(move || {
                let mut db = db;
                while let Ok(msg) = rx.recv() {
                    match msg {
                        Msg::Job(job) => job(&mut db),
                        Msg::Close(done) => {
                            drop(db);
                            let _ = done.send(());
                            return;
                        }
                    }
                }
            })
            .map_err(|source| StoreError::Io {
                path: path.display().to_string(),
                source,
            })?;
        Ok(SqliteStore { tx, pruned })
    }

    /// Closes the database and releases its lock once queued calls are
    /// done. Calls made afterwards fail with [`StoreError::Closed`].
    pub async fn close(&self) {
        let (done, closed) = oneshot::channel();
        if self.tx.send(Msg::Close(done)).is_ok() {
            let _ = closed.await;
        }
    }

    /// Runs `f` on the store thread and returns its result.
    async fn call<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Db) -> R + Send + 'static,
    ) -> Result<R, StoreError> {
        let (done, result) = oneshot::channel();
        self.tx
            .send(Msg::Job(Box::new(move |db| {
                let _ = done.send(f(db));
            })))
            .map_err(|_| StoreError::Closed)?;
        result.await.map_err(|_| StoreError::Closed)
    }

    /// Commits one batch in one transaction, durably.
    pub async fn commit(&self, ops: Vec<Op>) -> Result<(), StoreError> {
        self.call(move |db| db.commit(&ops)).await?
    }

    /// Commits ops whose loss in a power cut is harmless (deletions of
    /// published outbox rows) without waiting for the disk.
    pub async fn commit_relaxed(&self, ops: Vec<Op>) -> Result<(), StoreError> {
        self.call(move |db| db.commit_relaxed(&ops)).await?
    }

    /// Loads what a restarted scheduler resumes from.
    pub async fn recover(&self) -> Result<Recovered, StoreError> {
        self.call(|db| db.recover()).await?
    }

    /// The stored definitions of those of `ids` still waiting for their
    /// start or for room.
    pub async fn unstarted_definitions(
        &self,
        ids: Vec<String>,
    ) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        self.call(move |db| db.unstarted_definitions(&ids)).await?
    }

    /// Looks up workflows by id.
    pub async fn lookup(&self, ids: Vec<String>) -> Result<Vec<Option<Known>>, StoreError> {
        self.call(move |db| db.lookup(&ids)).await?
    }

    /// Workflows, newest first, that `filter` keeps.
    pub async fn list_workflows(
        &self,
        filter: crate::store::filter::WorkflowFilter,
        limit: u32,
        offset: u32,
    ) -> Result<Vec<WorkflowSummary>, StoreError> {
        self.call(move |db| db.list_workflows(&filter, limit, offset))
            .await?
    }

    /// A trivial read: the store answers.
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.call(|db| db.ping()).await?
    }

    /// Committed results per (task, attempt) of a workflow.
    pub async fn results_of(
        &self,
        workflow_id: String,
    ) -> Result<Vec<(String, u32, String)>, StoreError> {
        self.call(move |db| db.results_of(&workflow_id)).await?
    }

    /// Messages still in the outbox.
    pub async fn outbox_len(&self) -> Result<u64, StoreError> {
        self.call(|db| db.outbox_len()).await?
    }

    /// One task's row.
    pub async fn task_row(
        &self,
        workflow_id: String,
        task_id: String,
    ) -> Result<Option<TaskRow>, StoreError> {
        self.call(move |db| db.task_row(&workflow_id, &task_id))
            .await?
    }
}

impl Db {
    /// Locks `path` for this process (its `.lock` file), opens it (creating
    /// it and its tables if needed) in WAL mode with full sync, and checks
    /// the schema version.
    fn open(path: &Path) -> Result<Db, StoreError> {
        let open_err = |source| StoreError::Open {
            path: path.display().to_string(),
            source,
        };
        let lock_path = format!("{}.lock", path.display());
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|source| StoreError::Io {
                path: lock_path.clone(),
                source,
            })?;
        if lock.try_lock().is_err() {
            return Err(StoreError::Locked {
                path: path.display().to_string(),
            });
        }
        let conn = Connection::open(path).map_err(open_err)?;
        // Freed pages go back to the file system as retention deletes
        // (`prune.rs`): effective on a file created now (before anything
        // writes its first page).
        conn.execute_batch(
            "PRAGMA auto_vacuum = INCREMENTAL;
             PRAGMA journal_mode = WAL;
             PRAGMA synchronous = FULL;
             PRAGMA busy_timeout = 5000;",
        )
        .map_err(open_err)?;
        conn.execute_batch(SCHEMA).map_err(open_err)?;
        let found: Option<String> = conn
            .query_row(
                "SELECT value FROM meta WHERE key = 'schema_version'",
                [],
                |r| r.get(0),
            )
            .optional()?;
        match found.map(|v| v.parse::<i64>()) {
            None => {
                conn.execute(
                    "INSERT INTO meta (key, value) VALUES ('schema_version', ?1)",
                    [SCHEMA_VERSION.to_string()],
                )?;
            }
            Some(Ok(SCHEMA_VERSION)) => {}
            // Version 1 (before re-runs): `replies` gains its `run`.
            Some(Ok(1)) => {
                conn.execute_batch(&format!(
                    "BEGIN; {} UPDATE meta SET value = '{SCHEMA_VERSION}' WHERE key = 'schema_version'; COMMIT;",
                    runs::MIGRATE_TO_2
                ))
                .map_err(open_err)?;
            }
            Some(Ok(found)) => {
                return Err(StoreError::SchemaVersion {
                    found,
                    known: SCHEMA_VERSION,
                });
            }
            Some(Err(e)) => return Err(StoreError::Corrupt(format!("schema_version: {e}"))),
        }
        // The key of attempt tokens, made once with the store.
        let key = AttemptKey::generate_hex().ok_or_else(|| {
            StoreError::Corrupt("the system gave no random bytes for the attempt key".into())
        })?;
        conn.execute(
            "INSERT OR IGNORE INTO meta (key, value) VALUES ('attempt_key', ?1)",
            [key],
        )?;
        Ok(Db {
            conn,
            pruned: Arc::default(),
            _lock: lock,
        })
    }

    /// The store's key of attempt tokens (`attempt_key.rs`).
    fn attempt_key(&self) -> Result<AttemptKey, StoreError> {
        let stored: String = self.conn.query_row(
            "SELECT value FROM meta WHERE key = 'attempt_key'",
            [],
            |r| r.get(0),
        )?;
        AttemptKey::from_hex(&stored)
            .ok_or_else(|| StoreError::Corrupt("meta.attempt_key is not a 32-byte hex key".into()))
    }

    /// Applies one batch in one transaction.
    fn commit(&mut self, ops: &[Op]) -> Result<(), StoreError> {
        let mut pruned = 0;
        let tx = self.conn.transaction()?;
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
                    let finished = status.is_final().then(|| ts(created_at));
                    tx.prepare_cached(
                        "INSERT INTO workflows (id, seq, name, priority, status, definition, report, created_at, finished_at)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                    )?
                    .execute(params![
                        &**id,
                        *seq as i64,
                        name,
                        *priority,
                        status.as_str(),
                        definition.as_deref(),
                        report,
                        ts(created_at),
                        finished
                    ])?;
                }
                Op::QueueWorkflow { id, report } => {
                    tx.prepare_cached(
                        "UPDATE workflows SET status = 'queued', report = ?2 WHERE id = ?1",
                    )?
                    .execute(params![&**id, report])?;
                }
                Op::StartWorkflow { id, started_at } => {
                    tx.prepare_cached(
                        "UPDATE workflows SET status = 'running', report = NULL, created_at = ?2 WHERE id = ?1",
                    )?
                    .execute(params![&**id, ts(started_at)])?;
                }
                Op::FinishWorkflow {
                    id,
                    status,
                    report,
                    finished_at,
                } => {
                    tx.prepare_cached(
                        "UPDATE workflows SET status = ?2, report = ?3, finished_at = ?4 WHERE id = ?1",
                    )?
                    .execute(params![&**id, status.as_str(), report, ts(finished_at)])?;
                }
                Op::Task(row) => {
                    let error = error_text(row.error.as_ref())?;
                    tx.prepare_cached(
                        "INSERT INTO tasks (workflow_id, task_id, state, attempt, due_at_ms, output, error, worker, started_at, finished_at)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
                         ON CONFLICT (workflow_id, task_id) DO UPDATE SET
                           state = excluded.state, attempt = excluded.attempt, due_at_ms = excluded.due_at_ms,
                           output = excluded.output, error = excluded.error, worker = excluded.worker,
                           started_at = excluded.started_at, finished_at = excluded.finished_at",
                    )?
                    .execute(params![
                        &*row.workflow_id,
                        row.task_id,
                        state_text(row),
                        row.attempt,
                        row.due_at_ms,
                        row.output,
                        error,
                        row.worker,
                        row.started_at.as_ref().map(ts),
                        row.finished_at.as_ref().map(ts),
                    ])?;
                }
                Op::Result {
                    workflow_id,
                    task_id,
                    attempt,
                    status,
                    worker,
                    started_at,
                    finished_at,
                } => {
                    tx.prepare_cached(
                        "INSERT INTO results (workflow_id, task_id, attempt, status, committed_at, worker, started_at, finished_at)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                    )?
                    .execute(params![
                        &**workflow_id,
                        task_id,
                        attempt,
                        status.as_str(),
                        ts(&Utc::now()),
                        worker,
                        started_at.as_ref().map(ts),
                        finished_at.as_ref().map(ts)
                    ])?;
                }
                Op::Outbox(seq, m) => {
                    let headers = headers_text(&m.headers)?;
                    tx.prepare_cached(
                        "INSERT INTO outbox (seq, kind, exchange, routing_key, message_id, correlation_id, priority, headers, body)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                    )?
                    .execute(params![
                        *seq as i64,
                        m.kind.as_str(),
                        m.exchange,
                        m.routing_key,
                        m.message_id,
                        m.correlation_id,
                        m.priority,
                        headers,
                        m.body
                    ])?;
                }
                Op::OutboxDone(seq) => {
                    tx.prepare_cached("DELETE FROM outbox WHERE seq = ?1")?
                        .execute([*seq as i64])?;
                }
                Op::AddReply {
                    workflow_id,
                    reply_to,
                    correlation_id,
                    run,
                } => {
                    tx.prepare_cached(
                        "INSERT INTO replies (workflow_id, reply_to, correlation_id, run) VALUES (?1, ?2, ?3, ?4)",
                    )?
                    .execute(params![&**workflow_id, reply_to, correlation_id, run])?;
                }
                Op::DropReplies(id) => {
                    tx.prepare_cached("DELETE FROM replies WHERE workflow_id = ?1 AND run > 0")?
                        .execute([&**id])?;
                }
                Op::Rerun { .. } => runs::write(&tx, op)?,
                // One scheduler owns everything: its limits are counted in
                // memory alone.
                Op::TypePlaces(_) => {}
                Op::InsertSchedule { .. } | Op::ScheduleState { .. } | Op::DeleteSchedule(_) => {
                    schedules::write(&tx, op)?;
                }
                Op::Prune { .. } => pruned += prune::write(&tx, op)?,
            }
        }
        tx.commit()?;
        if pruned > 0 {
            self.pruned
                .fetch_add(pruned, std::sync::atomic::Ordering::Relaxed);
            prune::vacuum(&self.conn)?;
        }
        Ok(())
    }

    /// Commits ops whose loss in a power cut is harmless (deletions of
    /// published outbox rows: at worst a message is published twice) without
    /// waiting for the disk.
    fn commit_relaxed(&mut self, ops: &[Op]) -> Result<(), StoreError> {
        self.conn.execute_batch("PRAGMA synchronous = NORMAL")?;
        let result = self.commit(ops);
        self.conn.execute_batch("PRAGMA synchronous = FULL")?;
        result
    }

    /// Loads what a restarted scheduler resumes from.
    fn recover(&self) -> Result<Recovered, StoreError> {
        let mut out = Recovered::new(self.attempt_key()?);
        let mut stmt = self.conn.prepare(
            "SELECT seq, kind, exchange, routing_key, message_id, correlation_id, priority, headers, body
             FROM outbox ORDER BY seq",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(OutboxRecord {
                seq: r.get(0)?,
                kind: r.get(1)?,
                exchange: r.get(2)?,
                routing_key: r.get(3)?,
                message_id: r.get(4)?,
                correlation_id: r.get(5)?,
                priority: r.get(6)?,
                headers: r.get(7)?,
                body: r.get(8)?,
                part: 0,
            })
        })?;
        for row in rows {
            out.outbox.push(row?.decode()?);
        }
        drop(stmt);
        out.next_outbox_seq =
            self.conn
                .query_row("SELECT COALESCE(MAX(seq), 0) + 1 FROM outbox", [], |r| {
                    r.get::<_, i64>(0)
                })? as u64;
        out.next_workflow_seq =
            self.conn
                .query_row("SELECT COALESCE(MAX(seq), 0) + 1 FROM workflows", [], |r| {
                    r.get::<_, i64>(0)
                })? as u64;

        let mut wf_stmt = self.conn.prepare(
            "SELECT id, seq, definition, created_at FROM workflows WHERE status = 'running' ORDER BY seq",
        )?;
        let mut task_stmt = self.conn.prepare(
            "SELECT task_id, state, attempt, due_at_ms, output, error, worker, started_at, finished_at
             FROM tasks WHERE workflow_id = ?1",
        )?;
        let mut reply_stmt = self
            .conn
            .prepare("SELECT reply_to, correlation_id FROM replies WHERE workflow_id = ?1")?;
        let wfs: Vec<WorkflowRecord<String>> = wf_stmt
            .query_map([], |r| {
                Ok(WorkflowRecord {
                    id: r.get(0)?,
                    seq: r.get(1)?,
                    definition: r.get(2)?,
                    created_at: r.get(3)?,
                })
            })?
            .collect::<Result<_, _>>()?;
        for wf in wfs {
            let wf_id: Arc<str> = Arc::from(wf.id.as_str());
            let mut tasks = Vec::new();
            let rows = task_stmt.query_map([&wf.id], task_record)?;
            for row in rows {
                tasks.push(row?.decode(wf_id.clone())?);
            }
            let replies = reply_stmt
                .query_map([&wf.id], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<Result<_, _>>()?;
            let runs = runs::runs_of(&self.conn, &wf.id)?;
            out.running.push(wf.decode(tasks, replies, runs)?);
        }
        let mut scheduled_stmt = self
            .conn
            .prepare("SELECT id, name, report FROM workflows WHERE status = 'scheduled'")?;
        let scheduled: Vec<(String, Option<String>, Option<String>)> = scheduled_stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
            .collect::<Result<_, _>>()?;
        for (id, name, report) in scheduled {
            let replies = reply_stmt
                .query_map([&id], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<Result<_, _>>()?;
            out.scheduled
                .push(scheduled_workflow(id, name, report.as_deref(), replies)?);
        }
        let mut queued_stmt = self.conn.prepare(
            "SELECT id, name, priority, seq, report, length(definition), created_at
             FROM workflows WHERE status = 'queued' ORDER BY seq",
        )?;
        let queued: Vec<QueuedRecord<String>> = queued_stmt
            .query_map([], |r| {
                Ok(QueuedRecord {
                    id: r.get(0)?,
                    name: r.get(1)?,
                    priority: r.get(2)?,
                    seq: r.get(3)?,
                    report: r.get(4)?,
                    bytes: r.get(5)?,
                    created_at: r.get(6)?,
                })
            })?
            .collect::<Result<_, _>>()?;
        for q in queued {
            let replies = reply_stmt
                .query_map([&q.id], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<Result<_, _>>()?;
            out.queued.push(q.decode(replies)?);
        }
        out.schedules = schedules::all(&self.conn)?;
        Ok(out)
    }

    /// The stored definitions of those of `ids` still waiting for their
    /// start or for room.
    fn unstarted_definitions(&self, ids: &[String]) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT definition FROM workflows WHERE id = ?1 AND status IN ('scheduled', 'queued')",
        )?;
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(Some(d)) = stmt
                .query_row([id], |r| r.get::<_, Option<Vec<u8>>>(0))
                .optional()?
            {
                out.push((id.clone(), d));
            }
        }
        Ok(out)
    }

    /// Looks up workflows by id.
    fn lookup(&self, ids: &[String]) -> Result<Vec<Option<Known>>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT status, report FROM workflows WHERE id = ?1")?;
        ids.iter()
            .map(|id| {
                stmt.query_row([id], |r| {
                    Ok(Known {
                        status: r.get(0)?,
                        report: r.get(1)?,
                    })
                })
                .optional()
                .map_err(StoreError::from)
            })
            .collect()
    }

    /// Workflows, newest first, that `filter` keeps: every filter a bound
    /// parameter (`instr` and `substr`, so that `%` and `_` are plain
    /// characters); times compared as the stored text, which `ts` writes
    /// in one fixed-width form.
    fn list_workflows(
        &self,
        filter: &crate::store::filter::WorkflowFilter,
        limit: u32,
        offset: u32,
    ) -> Result<Vec<WorkflowSummary>, StoreError> {
        // Two statements, so that each uses its index.
        let mut stmt = self.conn.prepare_cached(if filter.status.is_some() {
            "SELECT id, name, status, priority, created_at, finished_at,
                    CASE WHEN status IN ('scheduled', 'queued') THEN report END FROM workflows
             WHERE status = ?1
               AND (?4 IS NULL OR instr(name, ?4) > 0)
               AND (?5 IS NULL OR created_at >= ?5)
               AND (?6 IS NULL OR created_at < ?6)
               AND (?7 IS NULL OR substr(id, 1, length(?7)) = ?7)
             ORDER BY seq DESC LIMIT ?2 OFFSET ?3"
        } else {
            "SELECT id, name, status, priority, created_at, finished_at,
                    CASE WHEN status IN ('scheduled', 'queued') THEN report END FROM workflows
             WHERE ?1 IS NULL
               AND (?4 IS NULL OR instr(name, ?4) > 0)
               AND (?5 IS NULL OR created_at >= ?5)
               AND (?6 IS NULL OR created_at < ?6)
               AND (?7 IS NULL OR substr(id, 1, length(?7)) = ?7)
             ORDER BY seq DESC LIMIT ?2 OFFSET ?3"
        })?;
        let rows = stmt.query_map(
            rusqlite::params![
                filter.status,
                limit,
                offset,
                filter.name,
                filter.from.as_ref().map(super::rows::ts),
                filter.to.as_ref().map(super::rows::ts),
                filter.id_prefix,
            ],
            |r| {
                Ok(SummaryRecord::<String> {
                    id: r.get(0)?,
                    name: r.get(1)?,
                    status: r.get(2)?,
                    priority: r.get(3)?,
                    created_at: r.get(4)?,
                    finished_at: r.get(5)?,
                    scheduled_report: r.get(6)?,
                })
            },
        )?;
        rows.map(|r| r.map(SummaryRecord::decode))
            .collect::<Result<_, _>>()
            .map_err(StoreError::from)
    }

    /// A trivial read: the store answers.
    fn ping(&self) -> Result<(), StoreError> {
        self.conn.query_row("SELECT 1", [], |_| Ok(()))?;
        Ok(())
    }

    /// Committed results per (task, attempt) of a workflow: the evidence
    /// that no result was committed twice.
    fn results_of(&self, workflow_id: &str) -> Result<Vec<(String, u32, String)>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT task_id, attempt, status FROM results WHERE workflow_id = ?1 ORDER BY task_id, attempt",
        )?;
        let rows = stmt.query_map([workflow_id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// One task's row.
    fn task_row(&self, workflow_id: &str, task_id: &str) -> Result<Option<TaskRow>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT task_id, state, attempt, due_at_ms, output, error, worker, started_at, finished_at
             FROM tasks WHERE workflow_id = ?1 AND task_id = ?2",
        )?;
        stmt.query_row([workflow_id, task_id], task_record)
            .optional()?
            .map(|t| t.decode(Arc::from(workflow_id)))
            .transpose()
    }

    /// Messages still in the outbox (published ones are deleted).
    fn outbox_len(&self) -> Result<u64, StoreError> {
        Ok(self
            .conn
            .query_row("SELECT COUNT(*) FROM outbox", [], |r| r.get::<_, i64>(0))?
            as u64)
    }
}

/// A `tasks` row selected as `task_id, state, attempt, due_at_ms, output,
/// error, worker, started_at, finished_at`.
fn task_record(r: &rusqlite::Row<'_>) -> rusqlite::Result<TaskRecord<String>> {
    Ok(TaskRecord {
        task_id: r.get(0)?,
        state: r.get(1)?,
        attempt: r.get(2)?,
        due_at_ms: r.get(3)?,
        output: r.get(4)?,
        error: r.get(5)?,
        worker: r.get(6)?,
        started_at: r.get(7)?,
        finished_at: r.get(8)?,
    })
}

#[cfg(test)]
mod tests;
