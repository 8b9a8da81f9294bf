//! The lock connection's own thread: the connection that holds the
//! partition locks is opened and driven on a small runtime of its own (one
//! thread per process, made on first use), which also pings it while the
//! scheduler owns partitions.
//!
//! Why: the lock session's `idle_session_timeout` (`timeouts.rs`) is the
//! database's watchdog, and it must bite for a scheduler the database can
//! no longer hear (a silent network, a frozen process), never for one that
//! is merely busy. The scheduler's loop runs on one thread; a long step
//! (validating a huge request on a slow machine) keeps that thread from
//! driving any socket it owns. Driven and pinged from here, the lock
//! session stays audible through such a step, and the in-process watchdog
//! (`crate::watchdog`) judges the loop itself.

use std::{
    sync::{Arc, OnceLock},
    time::Duration,
};
use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;

/// The lock connections' runtime.
pub(super) fn handle() -> &'static Handle {
    static HANDLE: OnceLock<Handle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("warren-pg-lock".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("the lock connections' runtime");
                let _ = tx.send(rt.handle().clone());
                rt.block_on(std::future::pending::<()>());
            })
            .expect("the lock connections' thread");
        rx.recv().expect("the lock connections' runtime")
    })
}

/// Sends a query on `client` every `every` until `stop` is cancelled or
/// the connection fails, so that the server never finds the session idle
/// while this process runs.
pub(super) fn ping(client: Arc<tokio_postgres::Client>, every: Duration, stop: CancellationToken) {
    handle().spawn(async move {
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(every) => {}
            }
            if client.simple_query("SELECT 1").await.is_err() {
                return;
            }
        }
    });
}
