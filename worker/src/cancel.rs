//! Cancelled workflows, as the scheduler announces them on `{ns}.control`.
//!
//! A worker stops the running tasks of a cancelled workflow (their handler
//! futures are dropped) and acks, without running, any of its task
//! messages still to come. The scheduler has already ended the workflow
//! and ignores late results, so neither publishes a result.

use futures_lite::StreamExt;
use lapin::Connection;
use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};
use tokio_util::sync::CancellationToken;
use warren_shared::{
    Topology,
    wire::{ControlNotice, NoticeKind},
};

/// How long a worker remembers a cancelled workflow, to drop its task
/// messages that were already queued (they are dispatched before the cancel,
/// so they arrive soon after it).
const REMEMBER: Duration = Duration::from_secs(3600);

/// Running tasks by workflow, and workflows cancelled recently.
#[derive(Debug, Default)]
pub(crate) struct Cancels {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// A token per workflow with running tasks, and how many hold it.
    running: HashMap<String, (CancellationToken, usize)>,
    cancelled: HashMap<String, Instant>,
}

/// A running task's hold on its workflow's token.
pub(crate) struct Entered<'a> {
    cancels: &'a Cancels,
    workflow_id: String,
    pub token: CancellationToken,
}

impl Cancels {
    /// Registers a task of `workflow_id` about to run; `None` when the
    /// workflow was cancelled.
    pub fn enter(&self, workflow_id: &str) -> Option<Entered<'_>> {
        let mut inner = self.inner.lock().expect("not poisoned");
        if inner.cancelled.contains_key(workflow_id) {
            return None;
        }
        let entry = inner
            .running
            .entry(workflow_id.to_owned())
            .or_insert_with(|| (CancellationToken::new(), 0));
        entry.1 += 1;
        Some(Entered {
            cancels: self,
            workflow_id: workflow_id.to_owned(),
            token: entry.0.clone(),
        })
    }

    /// Cancels the workflow's running tasks and refuses its later ones.
    pub fn cancel(&self, workflow_id: &str) {
        let mut inner = self.inner.lock().expect("not poisoned");
        let now = Instant::now();
        inner
            .cancelled
            .retain(|_, at| now.duration_since(*at) < REMEMBER);
        inner.cancelled.insert(workflow_id.to_owned(), now);
        if let Some((token, n)) = inner.running.get(workflow_id) {
            tracing::info!(workflow = %workflow_id, running = n, "Workflow cancelled; stopping its tasks");
            token.cancel();
        }
    }
}

impl Drop for Entered<'_> {
    fn drop(&mut self) {
        let mut inner = self.cancels.inner.lock().expect("not poisoned");
        if let Some(entry) = inner.running.get_mut(&self.workflow_id) {
            entry.1 -= 1;
            if entry.1 == 0 {
                inner.running.remove(&self.workflow_id);
            }
        }
    }
}

/// Binds an exclusive queue of this session to `{ns}.control` and applies
/// the notices it receives until the channel closes. Notices are consumed
/// without acks: one lost with a connection only means a cancelled task
/// runs to its end, and its result is ignored.
pub(crate) async fn listen(
    conn: &Connection,
    topology: &Topology,
    cancels: Arc<Cancels>,
) -> Result<(), warren_shared::Error> {
    let control = topology.control();
    let (_, _, mut notices) = warren_shared::amqp::private_queue(conn, &[(&control, "")]).await?;
    tokio::spawn(async move {
        while let Some(Ok(d)) = notices.next().await {
            match serde_json::from_slice::<ControlNotice>(&d.data) {
                Ok(ControlNotice {
                    control: NoticeKind::Cancel,
                    workflow_id,
                }) => cancels.cancel(&workflow_id),
                Ok(other) => tracing::debug!(?other, "Control notice ignored"),
                Err(e) => tracing::warn!(error = %e, "Undecodable control notice ignored"),
            }
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cancelling_stops_running_tasks_and_refuses_later_ones() {
        let c = Cancels::default();
        let a = c.enter("w").unwrap();
        let b = c.enter("w").unwrap();
        let other = c.enter("v").unwrap();
        c.cancel("w");
        assert!(a.token.is_cancelled() && b.token.is_cancelled());
        assert!(!other.token.is_cancelled());
        assert!(c.enter("w").is_none());
        drop((a, b, other));
        assert!(c.inner.lock().unwrap().running.is_empty());
    }
}
