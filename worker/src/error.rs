//! [`WorkerError`]: why a worker stops other than by shutdown, and which of
//! its faults a new broker session cures.
//!
//! [`Worker::run`](crate::Worker::run) starts a new session itself after
//! every fault [`is_transient`](WorkerError::is_transient) calls curable
//! (after a backoff, until shutdown), so what it returns is always a fault
//! no reconnect would change. A task's own failures are never a
//! `WorkerError`: they become failed results.

/// Why a worker stopped other than by shutdown.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WorkerError {
    /// The broker failed during a session: it could not be reached or
    /// refused the login ([`Connect`](warren_shared::Error::Connect)), a
    /// channel or the connection closed while declaring the topology or
    /// starting the consumers ([`Amqp`](warren_shared::Error::Amqp)), or an
    /// exchange or queue exists with other settings than the worker
    /// declares ([`TopologyConflict`](warren_shared::Error::TopologyConflict)).
    /// A new session cures it exactly when the broker error
    /// [`is_transient`](warren_shared::Error::is_transient): a lost or
    /// refused connection does, a topology conflict needs an operator.
    #[error(transparent)]
    Broker(#[from] warren_shared::Error),
    /// A consumer's stream ended while the session ran: the broker
    /// cancelled the consumer (its queue was deleted, say) or closed the
    /// channel or connection. A new session cures it (it declares the
    /// queues again and consumes anew), so `run` never returns it; tasks
    /// running on the old session are abandoned to redelivery.
    #[error("the consumer of `{queue}` ended: {reason}")]
    ConsumerEnded { queue: String, reason: String },
    /// The session's publishing channel or connection closed while the
    /// session ran (the broker closes a channel that publishes to an
    /// exchange that does not exist, say), with the broker's reason. Nothing
    /// the session caused could be confirmed any more, so it ends at once;
    /// a new session cures it (`run` never returns it). What the worker
    /// held unanswered is given back (see `publish`).
    #[error("the publishing channel or connection closed: {reason}")]
    PublishLost { reason: String },
    /// The configuration cannot work: no queue to consume, or a
    /// concurrency of 0. Found before connecting; no session cures it.
    #[error("invalid worker configuration: {0}")]
    Config(String),
}

impl WorkerError {
    /// True for faults a new broker session may cure.
    pub fn is_transient(&self) -> bool {
        match self {
            WorkerError::Broker(e) => e.is_transient(),
            WorkerError::ConsumerEnded { .. } | WorkerError::PublishLost { .. } => true,
            WorkerError::Config(_) => false,
        }
    }
}
