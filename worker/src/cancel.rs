//! Cancelled workflows, as the scheduler announces them on `{ns}.control`.
//!
//! A worker stops the running tasks of a cancelled workflow's run (their
//! handler futures are dropped) and acks, without running, any of its
//! task messages still to come; a later run of it (a `rerun`, whose task
//! messages say `run`) runs. The scheduler has already ended the workflow
//! and ignores late results, so neither publishes a result.
//!
//! Both memories are bounded. Running tasks' entries live only while a task
//! of the workflow runs (at most `concurrency` plus the suspects). Cancelled
//! workflows are remembered for an hour and at most [`REMEMBER_AT_MOST`] of
//! them, the oldest forgotten first: a task of a forgotten workflow still
//! queued runs to its end, and the scheduler ignores its result.

use futures_lite::StreamExt;
use lapin::Connection;
use std::{
    collections::{HashMap, VecDeque},
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

/// How many cancelled workflows a worker remembers at most (the oldest are
/// forgotten first): with ids of up to a few hundred bytes, a few MiB.
pub(crate) const REMEMBER_AT_MOST: usize = 10_000;

/// Running tasks by workflow, and workflows cancelled recently.
#[derive(Debug, Default)]
pub(crate) struct Cancels {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// A token per run of a workflow with running tasks, and how many
    /// hold it.
    running: HashMap<(String, u32), (CancellationToken, usize)>,
    cancelled: Remembered,
}

/// Cancelled workflows, oldest first, for an hour and at most `cap`,
/// each with the run cancelled (a later run, a `rerun`, runs).
#[derive(Debug)]
struct Remembered {
    ids: HashMap<String, u32>,
    /// When each id was heard, in the order heard.
    order: VecDeque<(Instant, String)>,
    cap: usize,
}

impl Default for Remembered {
    fn default() -> Self {
        Remembered::with_cap(REMEMBER_AT_MOST)
    }
}

impl Remembered {
    fn with_cap(cap: usize) -> Remembered {
        Remembered {
            ids: HashMap::new(),
            order: VecDeque::new(),
            cap: cap.max(1),
        }
    }

    /// True when run `run` of `workflow_id` (or a later one) was
    /// cancelled.
    fn cancelled(&self, workflow_id: &str, run: u32) -> bool {
        self.ids.get(workflow_id).is_some_and(|&c| c >= run)
    }

    #[cfg(test)]
    fn contains(&self, workflow_id: &str) -> bool {
        self.ids.contains_key(workflow_id)
    }

    /// Remembers run `run` of `workflow_id` cancelled (heard `now`; a
    /// repeat keeps the first time, and the latest run), forgetting the
    /// expired and, past the cap, the oldest.
    fn insert(&mut self, workflow_id: &str, run: u32, now: Instant) {
        while let Some((at, _)) = self.order.front()
            && now.duration_since(*at) >= REMEMBER
        {
            self.forget_oldest();
        }
        if let Some(c) = self.ids.get_mut(workflow_id) {
            *c = (*c).max(run);
            return;
        }
        while self.order.len() >= self.cap {
            self.forget_oldest();
        }
        self.ids.insert(workflow_id.to_owned(), run);
        self.order.push_back((now, workflow_id.to_owned()));
    }

    fn forget_oldest(&mut self) {
        if let Some((_, id)) = self.order.pop_front() {
            self.ids.remove(&id);
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.order.len()
    }
}

/// A running task's hold on its workflow's token.
pub(crate) struct Entered<'a> {
    cancels: &'a Cancels,
    /// The workflow and its run.
    key: (String, u32),
    pub token: CancellationToken,
}

impl Cancels {
    /// Registers a task of run `run` of `workflow_id` about to run; `None`
    /// when that run was cancelled.
    pub fn enter(&self, workflow_id: &str, run: u32) -> Option<Entered<'_>> {
        let mut inner = self.inner.lock().expect("not poisoned");
        if inner.cancelled.cancelled(workflow_id, run) {
            return None;
        }
        let entry = inner
            .running
            .entry((workflow_id.to_owned(), run))
            .or_insert_with(|| (CancellationToken::new(), 0));
        entry.1 += 1;
        Some(Entered {
            cancels: self,
            key: (workflow_id.to_owned(), run),
            token: entry.0.clone(),
        })
    }

    /// Cancels the workflow's running tasks and refuses its later ones of
    /// run `run` (or earlier).
    pub fn cancel(&self, workflow_id: &str, run: u32) {
        let mut inner = self.inner.lock().expect("not poisoned");
        inner.cancelled.insert(workflow_id, run, Instant::now());
        for ((id, r), (token, n)) in &inner.running {
            if id == workflow_id && *r <= run {
                tracing::info!(workflow = %workflow_id, run = r, running = n, "Workflow cancelled; stopping its tasks");
                token.cancel();
            }
        }
    }
}

impl Drop for Entered<'_> {
    fn drop(&mut self) {
        let mut inner = self.cancels.inner.lock().expect("not poisoned");
        if let Some(entry) = inner.running.get_mut(&self.key) {
            entry.1 -= 1;
            if entry.1 == 0 {
                inner.running.remove(&self.key);
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
                    run,
                }) => cancels.cancel(&workflow_id, run),
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
        let a = c.enter("w", 1).unwrap();
        let b = c.enter("w", 1).unwrap();
        let other = c.enter("v", 1).unwrap();
        c.cancel("w", 1);
        assert!(a.token.is_cancelled() && b.token.is_cancelled());
        assert!(!other.token.is_cancelled());
        assert!(c.enter("w", 1).is_none());
        // A later run of it (a rerun) runs; an earlier one's does not.
        let rerun = c.enter("w", 2).expect("run 2 was not cancelled");
        assert!(!rerun.token.is_cancelled());
        drop(rerun);
        c.cancel("w", 2);
        assert!(c.enter("w", 2).is_none() && c.enter("w", 1).is_none());
        drop((a, b, other));
        assert!(c.inner.lock().unwrap().running.is_empty());
    }

    #[test]
    fn cancelled_workflows_are_forgotten_oldest_first_past_the_cap() {
        let mut r = Remembered::with_cap(3);
        let t0 = Instant::now();
        for (i, id) in ["a", "b", "c"].into_iter().enumerate() {
            r.insert(id, 1, t0 + Duration::from_secs(i as u64));
        }
        // A repeat neither grows the memory nor pushes anything out.
        r.insert("a", 1, t0 + Duration::from_secs(3));
        assert_eq!(r.len(), 3);
        r.insert("d", 1, t0 + Duration::from_secs(4));
        assert_eq!(r.len(), 3);
        assert!(!r.contains("a"), "the oldest went first");
        assert!(r.contains("b") && r.contains("c") && r.contains("d"));
    }

    #[test]
    fn cancelled_workflows_are_forgotten_after_an_hour() {
        let mut r = Remembered::with_cap(10);
        let t0 = Instant::now();
        r.insert("old", 1, t0);
        r.insert("recent", 1, t0 + REMEMBER / 2);
        r.insert("new", 1, t0 + REMEMBER);
        assert!(!r.contains("old") && r.contains("recent") && r.contains("new"));
        assert_eq!(r.len(), 2);
    }

    #[test]
    fn the_memory_of_a_worker_holds_at_most_the_documented_count() {
        let c = Cancels::default();
        for i in 0..REMEMBER_AT_MOST + 500 {
            c.cancel(&format!("wf-{i}"), 1);
        }
        let inner = c.inner.lock().unwrap();
        assert_eq!(inner.cancelled.len(), REMEMBER_AT_MOST);
        assert_eq!(inner.cancelled.ids.len(), REMEMBER_AT_MOST);
        assert!(!inner.cancelled.contains("wf-499"));
        assert!(inner.cancelled.contains("wf-500"));
        drop(inner);
        assert!(
            c.enter("wf-0", 1).is_some(),
            "a forgotten workflow's task runs"
        );
        assert!(
            c.enter(&format!("wf-{}", REMEMBER_AT_MOST + 499), 1)
                .is_none()
        );
    }
}
