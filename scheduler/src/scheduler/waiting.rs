//! Submissions waiting for room in the memory budget.
//!
//! When the running workflows hold `max_active_tasks` tasks or
//! `max_active_bytes` bytes, a new submission is not accepted: it is kept
//! here, unacked, so that the broker counts it against the requests
//! consumer's prefetch and stops delivering more requests once the prefetch
//! is used up. The rest of the backlog waits in the broker's queue. Nothing
//! is rejected for being over budget and nothing is lost: a session that
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
            .position(|(_, r)| r.budget_cost().is_some() && r.lookup_id() == Some(id))?;
        self.queue.remove(at)
    }

    /// True when the first waiting submission fits in the budget now.
    pub(super) fn first_fits(&self, engine: &Engine) -> bool {
        self.queue
            .front()
            .is_some_and(|(_, r)| r.budget_cost().is_none_or(|(t, b)| engine.has_room(t, b)))
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

/// Whether `request`, costing `cost`, must wait: a submission of a new
/// workflow while others wait (order is kept) or while the budget has no
/// room for it.
pub(super) fn must_wait(engine: &Engine, cost: (usize, usize), others_wait: bool) -> bool {
    others_wait || !engine.has_room(cost.0, cost.1)
}
