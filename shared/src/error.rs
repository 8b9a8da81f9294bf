//! Broker-level errors shared by the scheduler, the worker and the producer.

/// What can go wrong between a Warren process and RabbitMQ.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The broker could not be reached or refused the login. The address is
    /// shown with its password elided.
    #[error("cannot connect to RabbitMQ at {addr}: {source}")]
    Connect {
        /// The broker's address, password elided.
        addr: String,
        /// The client's error.
        #[source]
        source: lapin::Error,
    },
    /// An exchange or queue exists with other settings than Warren declares.
    /// Warren never deletes anything to "fix" this: an operator must decide.
    #[error(
        "{kind} `{name}` already exists with different settings ({detail}); \
         every process of a namespace must use the same WARREN_QUEUE_TYPE; \
         otherwise delete it or choose another namespace (WARREN_NAMESPACE)"
    )]
    TopologyConflict {
        /// `exchange` or `queue`.
        kind: &'static str,
        /// The name that exists with other settings.
        name: String,
        /// The broker's explanation (PRECONDITION_FAILED).
        detail: String,
    },
    /// The broker refused a publish (negative confirm).
    #[error(
        "RabbitMQ refused (nacked) a message published to `{exchange}` with key `{routing_key}`"
    )]
    PublishNacked {
        /// Where the message was published.
        exchange: String,
        /// With which routing key.
        routing_key: String,
    },
    /// A mandatory publish had no queue to go to.
    #[error("no queue is bound for a message published to `{exchange}` with key `{routing_key}`")]
    Unroutable {
        /// Where the message was published.
        exchange: String,
        /// With which routing key.
        routing_key: String,
    },
    /// Any other AMQP failure (closed channel, lost connection).
    #[error("AMQP error during {during}: {source}")]
    Amqp {
        /// What Warren was doing (`basic.publish`, `channel.open`, ...).
        during: &'static str,
        /// The client's error.
        #[source]
        source: lapin::Error,
    },
}

impl Error {
    /// Wraps a lapin error with what Warren was doing.
    pub fn amqp(during: &'static str) -> impl FnOnce(lapin::Error) -> Error {
        move |source| Error::Amqp { during, source }
    }

    /// True for faults a new broker session may cure (a lost or refused
    /// connection, a closed channel, a nacked publish); false for what
    /// reconnecting cannot change (a topology conflict, an unroutable
    /// message).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Error::Connect { .. } | Error::Amqp { .. } | Error::PublishNacked { .. }
        )
    }
}
