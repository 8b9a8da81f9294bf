//! The scheduler's typed settings. Binaries fill them from flags and env;
//! the library never reads the environment.

pub use crate::bounds::Bounds;
use crate::{
    store::{StoreLocation, postgres::PgTimeouts},
    validate::Limits,
};
use std::path::PathBuf;
use warren_shared::AmqpConfig;

/// Everything [`crate::Scheduler`] needs to run.
#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    /// Broker address and namespace.
    pub amqp: AmqpConfig,
    /// The state store: a SQLite file (default `warren.db`) or a
    /// PostgreSQL database.
    pub store: StoreLocation,
    /// Request size limits.
    pub limits: Limits,
    /// Most tasks of one queue dispatched and not yet answered, the same
    /// for every queue (`WARREN_DISPATCH_WINDOW`); `None`, the default:
    /// each queue's window follows the capacity of its live workers, from
    /// their heartbeats, and is 200 for a queue no heartbeat names
    /// (`engine/window.rs`). Ready tasks beyond it wait in the scheduler's
    /// memory, in the scheduling policy's order (rebuilt from the store on
    /// restart).
    pub dispatch_window: Option<usize>,
    /// Added to a task's `timeout_ms` to give the lease after which an
    /// attempt without a result is failed and retried (default 30 s).
    /// Tasks without `timeout_ms` have no lease.
    pub lease_grace: std::time::Duration,
    /// Unacked workflow requests the broker may hand over at once (default 64).
    pub requests_prefetch: u16,
    /// Unacked results the broker may hand over at once (default 2000).
    /// Larger means larger batches: one transaction and one ack for many.
    pub results_prefetch: u16,
    /// Most deliveries handled in one transaction (default 2000).
    pub max_batch: usize,
    /// Where to serve `/healthz`, `/metrics`, `/api/...` and the web page;
    /// `None` (the default) serves nothing. Port 0 picks a free port (see
    /// [`crate::Scheduler::http_addr`]).
    pub http_addr: Option<std::net::SocketAddr>,
    /// Who the HTTP endpoint lets in (default: no tokens, which allows
    /// a loopback `http_addr` only, read-only, and the loopback names and
    /// the address listened on as `Host`). See [`crate::http::auth`].
    pub http_access: crate::http::Access,
    /// Which of a workflow's ready tasks goes first (default: critical path).
    pub dispatch_order: crate::engine::DispatchOrder,
    /// Most tasks of a type (`kind`) running at once across all workers,
    /// as `(type, limit)` pairs; types not listed have no limit.
    pub type_limits: Vec<(String, u32)>,
    /// What the scheduler holds, builds and publishes at most.
    pub bounds: Bounds,
    /// How long an ended workflow is kept in the store before it is
    /// deleted (`WARREN_RETENTION`; `None`: for ever). Also how long a
    /// duplicate submission of it is answered with its outcome.
    pub retention: Option<std::time::Duration>,
    /// The PostgreSQL sessions' keepalives and timeouts
    /// (`WARREN_PG_KEEPALIVE_*`, `WARREN_PG_TCP_USER_TIMEOUT`,
    /// `WARREN_PG_IDLE_IN_TRANSACTION_TIMEOUT`, `WARREN_PG_LOCK_TIMEOUT`;
    /// defaults in [`PgTimeouts`]). Its `lock_idle` is replaced by
    /// `watchdog`.
    pub pg: PgTimeouts,
    /// On PostgreSQL, how long the loop may go without a turn while this
    /// scheduler owns partitions before it gives them up
    /// (`WARREN_WATCHDOG`, default 10 s; zero: never), and how long the
    /// database keeps the lock session of a scheduler that sends nothing
    /// (see [`crate::watchdog`]). Bounds the takeover after a split or a
    /// hang: about this plus a balance tick.
    pub watchdog: std::time::Duration,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            amqp: AmqpConfig::default(),
            store: StoreLocation::Sqlite(PathBuf::from("warren.db")),
            limits: Limits::default(),
            dispatch_window: None,
            lease_grace: std::time::Duration::from_secs(30),
            requests_prefetch: 64,
            results_prefetch: 2000,
            max_batch: 2000,
            http_addr: None,
            http_access: crate::http::Access::default(),
            dispatch_order: crate::engine::DispatchOrder::CriticalPath,
            type_limits: Vec::new(),
            bounds: Bounds::default(),
            retention: None,
            pg: PgTimeouts::default(),
            watchdog: std::time::Duration::from_secs(10),
        }
    }
}
