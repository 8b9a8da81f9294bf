//! What every long-running process (scheduler, worker) does around a broker
//! session: open its two connections (one to consume, one to publish, so that
//! flow control on the publishing side cannot stall acks), close them, and
//! wait with backoff before the next session after a fault.

use crate::{AmqpConfig, Error, amqp, backoff::Backoff};
use lapin::Connection;
use std::fmt::Display;
use tokio_util::sync::CancellationToken;

/// A session's two connections to the broker.
#[derive(Debug)]
pub struct Connections {
    /// Consumers and their acks.
    pub consume: Connection,
    /// Confirmed publishing.
    pub publish: Connection,
}

impl Connections {
    /// Opens both connections, named `{name} (consume)` and `{name}
    /// (publish)` in the broker's management view. If the second cannot be
    /// opened, the first is closed again.
    pub async fn open(config: &AmqpConfig, name: &str) -> Result<Connections, Error> {
        let consume = config.connect(&format!("{name} (consume)")).await?;
        match config.connect(&format!("{name} (publish)")).await {
            Ok(publish) => Ok(Connections { consume, publish }),
            Err(e) => {
                amqp::close(&consume, "reconnecting").await;
                Err(e)
            }
        }
    }

    /// Closes both (consuming first: its unacked deliveries return to their
    /// queues), each unless it is closed already.
    pub async fn close(&self, reason: &str) {
        for conn in [&self.consume, &self.publish] {
            if conn.status().connected() {
                amqp::close(conn, reason).await;
            }
        }
    }
}

/// The pause between broker sessions: capped exponential backoff with
/// jitter, reset once a session got connected, with the first failure of
/// an outage logged as a warning and later retries at debug.
#[derive(Debug)]
pub struct Reconnect {
    backoff: Backoff,
    /// Names the process in the log lines (`scheduler`, a worker's id).
    who: String,
}

impl Reconnect {
    /// A fresh policy ([`Backoff::reconnect`]) for the process `who`.
    pub fn new(who: impl Into<String>) -> Reconnect {
        Reconnect {
            backoff: Backoff::reconnect(),
            who: who.into(),
        }
    }

    /// Sessions failed in a row since the last one that connected.
    pub fn failures(&self) -> u32 {
        self.backoff.failures()
    }

    /// Forgets past failures (a session connected, or ended cleanly).
    pub fn reset(&mut self) {
        self.backoff.reset();
    }

    /// After a session ended with the transient `error`: logs it and waits
    /// the next delay (from the first if the session had `connected`).
    /// Returns false if `shutdown` came first.
    pub async fn wait(
        &mut self,
        error: &(impl Display + ?Sized),
        connected: bool,
        shutdown: &CancellationToken,
    ) -> bool {
        if connected {
            self.backoff.reset();
        }
        let delay = self.backoff.next_delay();
        if self.backoff.failures() == 1 {
            tracing::warn!(%error, who = %self.who, "Broker connection lost; reconnecting");
        } else {
            tracing::debug!(%error, who = %self.who, retry_in = ?delay, "Still no broker");
        }
        tokio::select! {
            () = shutdown.cancelled() => false,
            () = tokio::time::sleep(delay) => true,
        }
    }
}
