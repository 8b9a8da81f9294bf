//! The namespace's schema in PostgreSQL: its name ([`schema_of`]) and
//! the versioned migrations that create it at startup.

use super::pg;
use crate::attempt_key::AttemptKey;
use crate::store::StoreError;
use warren_shared::topology::fnv1a;

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
    "
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
",
    "
CREATE TABLE pauses (
    kind  TEXT NOT NULL,
    name  TEXT NOT NULL,
    since TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (kind, name)
);
",
    "
CREATE TABLE schedules (
    id               TEXT PRIMARY KEY,
    cron             TEXT,
    every_ms         INT8,
    timezone         TEXT NOT NULL,
    overlap          TEXT NOT NULL,
    catch_up         TEXT NOT NULL,
    workflow         BYTEA NOT NULL,
    created_ms       INT8 NOT NULL,
    paused           BOOLEAN NOT NULL DEFAULT false,
    next_fire_ms     INT8,
    last_fire_ms     INT8,
    last_workflow_id TEXT,
    last_skipped     BOOLEAN NOT NULL DEFAULT false,
    fired            INT8 NOT NULL DEFAULT 0,
    skipped          INT8 NOT NULL DEFAULT 0
);
",
    super::runs::MIGRATION,
    super::prune::MIGRATION,
];

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

/// Creates the schema and applies the migrations it lacks, one scheduler
/// at a time (a transaction-scoped advisory lock).
pub(super) async fn migrate(
    client: &mut deadpool_postgres::Object,
    schema: &str,
) -> Result<(), StoreError> {
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
    // The key of attempt tokens, made once with the schema and shared by
    // every scheduler of the namespace (attempt_key.rs).
    let key = AttemptKey::generate_hex().ok_or_else(|| {
        StoreError::Corrupt("the system gave no random bytes for the attempt key".into())
    })?;
    tx.execute(
        &format!(
            "INSERT INTO {schema}.meta (key, value) VALUES ('attempt_key', $1) ON CONFLICT (key) DO NOTHING"
        ),
        &[&key],
    )
    .await
    .map_err(pg)?;
    tx.commit().await.map_err(pg)?;
    Ok(())
}

/// The namespace's key of attempt tokens (`attempt_key.rs`).
pub(super) async fn attempt_key(
    client: &deadpool_postgres::Object,
) -> Result<AttemptKey, StoreError> {
    let stored: String = client
        .query_one("SELECT value FROM meta WHERE key = 'attempt_key'", &[])
        .await
        .map_err(pg)?
        .get(0);
    AttemptKey::from_hex(&stored)
        .ok_or_else(|| StoreError::Corrupt("meta.attempt_key is not a 32-byte hex key".into()))
}
