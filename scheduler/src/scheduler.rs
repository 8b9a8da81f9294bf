//! The scheduler process around its broker sessions: opens the store,
//! starts the HTTP endpoint, leads (takes partitions in the store), runs
//! broker sessions one after another, reconnects after faults a new session
//! may cure, and on PostgreSQL stands by again after losing the store.
//!
//! The stages of one session are its children:
//! - `session`: one broker session: recover from the store, declare,
//!   consume, the loop, changes of owned partitions, the outbox flush.
//! - `consume`: the session's consumers, feeding the loop one channel of
//!   `Inbound` messages.
//! - `ownership`: which partitions the session owns: apply or forward.
//! - `step`: one batch: take → apply → commit → publish → ack.
//! - `request`: parsing and applying a workflow or control request.
//! - `publisher`: confirmed publishing of the outbox, and forwards.
//! - `windows`: the workers' capacities, handed to the engine for the
//!   dispatch windows; `census` counts each queue's consumers on the
//!   broker, for those some of whose workers send no heartbeats.

mod batched;
mod census;
mod consume;
mod ownership;
mod prune;
mod publisher;
mod request;
mod rerun;
mod schedules;
mod session;
mod step;
mod waiting;
mod windows;

pub use rerun::check_rerun_fields;

use crate::{
    config::SchedulerConfig, http, metrics::Metrics, store::Store, store::StoreError,
    watchdog::Watchdog, workers::SharedWorkers,
};
use session::{End, SessionContext};
use std::sync::{Arc, atomic::Ordering};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use warren_shared::{backoff::Backoff, session::Reconnect};

/// Why the scheduler stopped other than by shutdown.
///
/// [`Scheduler::run`] retries what [`SchedulerError::is_transient`] calls
/// transient in a new broker session, and returns the rest; a store error
/// that PostgreSQL can recover from sends the scheduler back to standing by
/// instead (see [`Scheduler::run`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SchedulerError {
    /// The broker: a lost or refused connection, a closed channel, a nacked
    /// publish (a new session cures these: transient), or what reconnecting
    /// cannot change (a topology conflict, a task message still unroutable
    /// after its queue was declared again: the scheduler stops).
    #[error(transparent)]
    Broker(#[from] warren_shared::Error),
    /// The store failed to open, recover, look up or commit. Never cured by
    /// a new broker session (the engine's memory may be ahead of the
    /// store). On SQLite the scheduler stops; on PostgreSQL a lost
    /// connection or lost partitions ([`StoreError::Fenced`]) drop the
    /// memory and stand by to lead again, anything else stops it.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A consumer's stream ended: the broker cancelled the consumer (its
    /// queue was deleted) or closed its channel. Transient: a new session
    /// declares and consumes again.
    #[error("the consumer of `{queue}` ended: {reason}")]
    ConsumerEnded { queue: String, reason: String },
    /// The HTTP endpoint could not listen on its address (in use, not
    /// allowed), at start only. Final: fix the address.
    #[error("cannot serve HTTP on {addr}: {source}")]
    Http {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    /// The HTTP endpoint was to listen past loopback without tokens,
    /// serving every workflow to whoever reaches it: refused at start,
    /// before anything else. Final: configure tokens, or listen on
    /// loopback.
    #[error("{0}")]
    HttpWithoutTokens(String),
}

impl SchedulerError {
    /// True for faults a new broker session may cure.
    pub fn is_transient(&self) -> bool {
        match self {
            SchedulerError::Broker(e) => e.is_transient(),
            SchedulerError::ConsumerEnded { .. } => true,
            SchedulerError::Store(_)
            | SchedulerError::Http { .. }
            | SchedulerError::HttpWithoutTokens(_) => false,
        }
    }
}

/// How long a probe of the broker may take before a partitioned scheduler
/// standing by tries again.
const BROKER_PROBE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// A scheduler, ready to [`run`](Scheduler::run).
#[derive(Debug)]
pub struct Scheduler {
    config: SchedulerConfig,
    metrics: Arc<Metrics>,
    workers: SharedWorkers,
    /// The HTTP endpoint's address once it listens.
    http_addr: Arc<std::sync::OnceLock<std::net::SocketAddr>>,
    /// Beaten by the loop; gives the partitions up when it stalls.
    watchdog: Watchdog,
}

impl Scheduler {
    pub fn new(config: SchedulerConfig) -> Scheduler {
        Scheduler {
            metrics: Arc::new(Metrics::default()),
            workers: SharedWorkers::default(),
            http_addr: Arc::default(),
            watchdog: Watchdog::new(config.watchdog),
            config,
        }
    }

    /// The scheduler's counters; live while it runs.
    pub fn metrics(&self) -> Arc<Metrics> {
        self.metrics.clone()
    }

    /// The workers heard from in heartbeats.
    pub fn workers(&self) -> SharedWorkers {
        self.workers.clone()
    }

    /// Where the HTTP endpoint listens, once it does (filled by
    /// [`Scheduler::run`] when `http_addr` is configured).
    pub fn http_addr(&self) -> Arc<std::sync::OnceLock<std::net::SocketAddr>> {
        self.http_addr.clone()
    }

    /// Runs until `shutdown` is cancelled (returns `Ok`) or a fault that
    /// reconnecting cannot cure stops it (a store failure, a topology
    /// conflict). A lost broker connection is retried with capped
    /// exponential backoff; each new session resumes from the store exactly
    /// as a restarted scheduler would, so nothing of the old session is
    /// trusted (unacked deliveries come back, unconfirmed outbox messages
    /// are published again).
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), SchedulerError> {
        if let Some(addr) = self.config.http_addr {
            http::auth::check_exposure(addr, &self.config.http_access.tokens)
                .map_err(SchedulerError::HttpWithoutTokens)?;
        }
        // Readable at once (the HTTP endpoint of a standby serves the
        // store's workflows); committing waits for `lead` below.
        let timeouts = crate::store::postgres::PgTimeouts {
            lock_idle: self.config.watchdog,
            ..self.config.pg
        };
        let store =
            Store::connect_with(&self.config.store, &self.config.amqp.namespace, &timeouts).await?;
        let (queries_tx, mut queries) = mpsc::channel(64);
        let http_stop = shutdown.child_token();
        let http = self.start_http(&store, queries_tx, &http_stop).await?;
        let watch = async {
            match store.partitioned() {
                Some(parts) => self.watchdog.watch(parts, &http_stop).await,
                None => http_stop.cancelled().await,
            }
        };
        let supervised = async {
            let outcome = self.supervise(&store, &shutdown, &mut queries).await;
            http_stop.cancel();
            outcome
        };
        let ((), outcome) = tokio::join!(watch, supervised);
        if let Some(join) = http {
            let _ = join.await;
        }
        // Release the store's lock before returning, so that a successor in
        // this process can open it at once.
        store.close().await;
        outcome
    }

    /// Starts the HTTP endpoint if one is configured, and records where it
    /// listens.
    async fn start_http(
        &self,
        store: &Store,
        queries_tx: mpsc::Sender<http::Query>,
        http_stop: &CancellationToken,
    ) -> Result<Option<tokio::task::JoinHandle<()>>, SchedulerError> {
        let Some(addr) = self.config.http_addr else {
            return Ok(None);
        };
        let sources = http::Sources {
            store_rows: Arc::default(),
            metrics: self.metrics.clone(),
            workers: self.workers.clone(),
            store: store.clone(),
            queries: queries_tx,
            max_task_input_bytes: self.config.bounds.max_task_input_bytes,
        };
        let access = self.config.http_access.clone();
        let (bound, join) = http::serve(addr, sources, access, http_stop.clone())
            .await
            .map_err(|e| SchedulerError::Http {
                addr: addr.to_string(),
                source: e,
            })?;
        let _ = self.http_addr.set(bound);
        Ok(Some(join))
    }

    /// Lead, run broker sessions; on PostgreSQL, a lost database connection
    /// or leadership sends the scheduler back to standing by (its memory is
    /// dropped; the next leader, maybe itself, reloads the store), rather
    /// than ending the process.
    async fn supervise(
        &self,
        store: &Store,
        shutdown: &CancellationToken,
        queries: &mut mpsc::Receiver<http::Query>,
    ) -> Result<(), SchedulerError> {
        let mut store_backoff = Backoff::reconnect();
        loop {
            let led = match store.partitioned() {
                // A scheduler that cannot reach the broker takes no
                // partitions: it could not work on them.
                Some(parts) => match self.await_broker(shutdown).await {
                    true => parts.lead(shutdown).await,
                    false => Ok(false),
                },
                None => Ok(true),
            };
            match led {
                Ok(true) => {}
                Ok(false) => return Ok(()), // stopped while standing by
                Err(e) if e.can_lead_again() => {
                    let delay = store_backoff.next_delay();
                    tracing::warn!(error = %e, retry_in = ?delay, "Cannot reach the store to lead; retrying");
                    tokio::select! {
                        () = shutdown.cancelled() => return Ok(()),
                        () = tokio::time::sleep(delay) => continue,
                    }
                }
                Err(e) => return Err(e.into()),
            }
            store_backoff.reset();
            self.watchdog.beat();
            self.metrics.active.store(1, Ordering::Relaxed);
            let ran = self.sessions(store, shutdown, queries).await;
            self.metrics.active.store(0, Ordering::Relaxed);
            match (ran, store.partitioned()) {
                (Err(SchedulerError::Store(e)), Some(parts))
                    if e.can_lead_again() && !shutdown.is_cancelled() =>
                {
                    tracing::warn!(error = %e, "Lost the store or its leadership; standing by again");
                    Metrics::add(&self.metrics.reconnects, 1);
                    parts.step_down().await;
                }
                (other, _) => return other,
            }
        }
    }

    /// Waits until a connection to the broker opens (and closes it again),
    /// retrying with backoff; false when `shutdown` comes first. Each try
    /// gives up after [`BROKER_PROBE_TIMEOUT`]: a broker behind a silent
    /// network never answers.
    async fn await_broker(&self, shutdown: &CancellationToken) -> bool {
        let mut backoff = Backoff::reconnect();
        let name = format!("warren-scheduler {} (probe)", self.config.amqp.namespace);
        loop {
            let probe = tokio::time::timeout(BROKER_PROBE_TIMEOUT, self.config.amqp.connect(&name));
            let failure = tokio::select! {
                () = shutdown.cancelled() => return false,
                r = probe => match r {
                    Ok(Ok(conn)) => {
                        warren_shared::amqp::close(&conn, "probe").await;
                        return true;
                    }
                    Ok(Err(e)) => e.to_string(),
                    Err(_) => format!("no answer within {BROKER_PROBE_TIMEOUT:?}"),
                },
            };
            let delay = backoff.next_delay();
            if backoff.failures() == 1 {
                tracing::warn!(error = %failure, retry_in = ?delay, "Cannot reach the broker; taking no partitions until it answers");
            }
            tokio::select! {
                () = shutdown.cancelled() => return false,
                () = tokio::time::sleep(delay) => {}
            }
        }
    }

    /// Broker sessions one after another while this scheduler leads: a new
    /// one after a transient fault (with backoff) or after the owned
    /// partitions changed (at once, having handed over those given up).
    async fn sessions(
        &self,
        store: &Store,
        shutdown: &CancellationToken,
        queries: &mut mpsc::Receiver<http::Query>,
    ) -> Result<(), SchedulerError> {
        let mut reconnect = Reconnect::new("scheduler");
        let mut cx = SessionContext {
            store,
            shutdown,
            queries,
        };
        loop {
            // The watchdog gave the partitions up while the broker could
            // not be reached (no session, no loop): stand by again.
            if let Some(parts) = store.partitioned()
                && !parts.is_leading()
            {
                return Err(StoreError::Fenced.into());
            }
            let mut connected = false;
            let error = match self
                .session(&mut cx, &mut connected, reconnect.failures())
                .await
            {
                Ok(End::Stopped) => return Ok(()),
                Ok(End::Rebalance(n)) => {
                    // Nothing more is committed for the partitions
                    // given up: the session that worked on them ended.
                    if let Some(parts) = store.partitioned()
                        && let Err(e) = parts.release(n).await
                    {
                        return Err(e.into());
                    }
                    reconnect.reset();
                    continue;
                }
                Err(e) if e.is_transient() => e,
                Err(e) => return Err(e),
            };
            Metrics::add(&self.metrics.reconnects, 1);
            if !reconnect.wait(&error, connected, shutdown).await {
                return Ok(());
            }
        }
    }
}
