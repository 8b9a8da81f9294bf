//! Warren's client library: submit workflows, wait for their outcome, ask
//! for their status. The `warren` CLI (crate `warren-cli`) is built on it;
//! this crate depends on neither the scheduler nor the worker.
//!
//! Layout:
//! - `client`: [`Client`], one connection with a publishing channel and a
//!   private reply queue that routes answers by correlation id.

pub mod client;

pub use client::{Client, ClientError, PauseTarget};
