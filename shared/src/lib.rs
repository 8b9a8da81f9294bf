//! Everything Warren's processes agree on: the wire format, the broker
//! topology, how to reach the broker, and how to shut down.
//!
//! Layout:
//! - `wire`: the JSON messages of protocol v2 (requests, tasks, results,
//!   reports) and the headers Warren sets. Only this crate defines them.
//! - `topology`: the exchange and queue names derived from a namespace, and
//!   their idempotent declaration.
//! - `addresses`: several broker addresses in one `AMQP_ADDR` (a
//!   cluster's nodes) and the order a connection tries them in.
//! - `amqp`: connecting (with the password kept out of every message),
//!   confirmed publishing, dead-lettering.
//! - `redact`: every password a broker or store address can carry,
//!   hidden for logs, errors and `Debug`.
//! - `limits`: size limits the processes share, chosen against the
//!   broker's message size limit.
//! - `backoff`: capped exponential backoff with jitter for reconnects.
//! - `session`: a broker session's two connections and the wait between
//!   sessions, shared by the scheduler and the worker.
//! - `roles`: the broker permissions of each role (scheduler, worker,
//!   producer, observer) in a namespace, as docs/security.md tables them.
//! - `cli` (feature `cli`): the broker flags every binary takes.
//! - `shutdown`: ctrl-c and SIGTERM as a `CancellationToken`.

#![warn(missing_docs)]

pub mod addresses;
pub mod amqp;
pub mod backoff;
#[cfg(feature = "cli")]
pub mod cli;
pub mod error;
pub mod limits;
pub mod redact;
pub mod roles;
pub mod session;
pub mod shutdown;
pub mod topology;
pub mod wire;

pub use amqp::{AmqpConfig, QueueType};
pub use error::Error;
pub use redact::redact_addr;
pub use topology::Topology;

/// This machine's name (from `/etc/hostname`), or `unknown`.
pub fn host_name() -> String {
    std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown".into())
}
