//! Submissions waiting for room in the line of queued workflows.
//!
//! When the working set is full, new submissions are accepted `queued`
//! (`engine/queued.rs`). When `max_queued_workflows` are queued too, a new
//! submission is not accepted: it is kept here, unacked, so that the broker counts it against the requests
//! consumer's prefetch and stops delivering more requests once the prefetch
//! is used up. The rest of the backlog waits in the broker's queue. Nothing
//! is rejected for it and nothing is lost: a session that
//! ends drops this list and the broker delivers the requests again.
//!
//! Order is kept: once one submission waits, every later one waits behind
//! it, and when the first fits again the whole list is applied again, in
//! order, ahead of the batch's own deliveries.

use crate::engine::Engine;
use std::collections::VecDeque;

use super::request::Request;

/// Submissions waiting, with their delivery tags on the requests channel.
#[derive(Default)]
pub(super) struct Waiting {
    queue: VecDeque<(u64, Request)>,
}

impl Waiting {
    pub(super) fn len(&self) -> usize {
        self.queue.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    pub(super) fn push(&mut self, tag: u64, request: Request) {
        self.queue.push_back((tag, request));
    }

    /// Takes the waiting submission of workflow `id` out of the list, if
    /// any: a status or cancel of it is answered as if it had been taken
    /// (at most `requests_prefetch` entries to look through).
    pub(super) fn take(&mut self, id: &str) -> Option<(u64, Request)> {
        let at = self
            .queue
            .iter()
            .position(|(_, r)| r.is_submission() && r.lookup_id() == Some(id))?;
        self.queue.remove(at)
    }

    /// True when the first waiting submission may be taken now: the line
    /// of queued workflows has room.
    pub(super) fn first_fits(&self, engine: &Engine) -> bool {
        self.queue
            .front()
            .is_some_and(|(_, r)| !r.is_submission() || !engine.queue_full())
    }

    /// Every waiting submission, in order, when the first fits now (each
    /// is decided again as it is applied); none otherwise.
    pub(super) fn release_if_room(&mut self, engine: &Engine) -> Vec<(u64, Request)> {
        if self.first_fits(engine) {
            self.queue.drain(..).collect()
        } else {
            Vec::new()
        }
    }
}

/// Whether a submission of a new workflow must wait: others wait (order
/// is kept) or the line of queued workflows is full.
pub(super) fn must_wait(engine: &Engine, others_wait: bool) -> bool {
    others_wait || engine.queue_full()
}
