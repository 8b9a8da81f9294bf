//! Concurrency limits per task type (`WARREN_TYPE_LIMITS`): the places of
//! each limited type, the tasks parked for want of one, and, on a
//! partitioned store, the negotiation of places with the other schedulers
//! of the namespace (held, wanted, given back; see ARCHITECTURE.md,
//! Scaling out).

use super::{Engine, queue::ReadyItem};
use crate::batch::{Op, TypePlaceRow};
use std::{
    cmp::Ordering,
    collections::{BinaryHeap, HashMap},
    sync::Arc,
};
use warren_shared::{topology::partition_of, wire::TaskState};

/// Concurrency limits per task type (`kind`), across all workers.
///
/// A ready task whose type is at its limit when its turn comes is parked
/// in its type's heap (best first), and does not hold up the tasks behind
/// it in its queue. Each time a task of the type ends, the best parked one
/// goes back into its queue and takes its turn again. No step scans the
/// parked tasks: parking and releasing are O(log n).
#[derive(Debug, Default)]
pub struct TypeLimits {
    by_kind: HashMap<String, u16>,
    slots: Vec<TypeSlot>,
}

#[derive(Debug)]
struct TypeSlot {
    kind: String,
    /// The configured limit, across every scheduler of the namespace.
    limit: u32,
    /// How many may run from this scheduler: the limit when it is alone
    /// (SQLite); on a partitioned store, the places it holds in the
    /// database (see [`Engine::grant_type_places`]).
    max: u32,
    /// At most this many places are kept while other schedulers wait for
    /// some (their fair share); `u32::MAX` when none waits.
    cap: u32,
    /// Tasks of the type dispatched and not yet answered.
    running: u32,
    /// `running` by partition (partitioned stores only).
    by_part: HashMap<u16, u32>,
    /// Parked tasks put back into their queue and not yet popped: a
    /// release reserves a place under `max` so that one free place does
    /// not release many tasks.
    released: u32,
    parked: BinaryHeap<Parked>,
}

/// A ready task waiting for a place of its type.
#[derive(Debug, PartialEq, Eq)]
struct Parked {
    priority: u8,
    workflow: Arc<str>,
    item: ReadyItem,
}

impl Ord for Parked {
    /// Highest priority first, then the queue's own order.
    fn cmp(&self, other: &Self) -> Ordering {
        self.priority
            .cmp(&other.priority)
            .then_with(|| self.item.cmp(&other.item))
    }
}

impl PartialOrd for Parked {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// A limit that cannot be parsed from `WARREN_TYPE_LIMITS`.
#[derive(Debug, thiserror::Error)]
#[error("task type limit `{entry}`: {why} (expected `type=N[,type=N...]` with N >= 1)")]
pub struct TypeLimitError {
    entry: String,
    why: &'static str,
}

/// The running count, limit and parked tasks of a limited task type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypeUsage {
    /// The task type.
    pub kind: String,
    /// Tasks of the type dispatched by this scheduler and not yet answered.
    pub running: u64,
    /// The configured limit.
    pub limit: u64,
    /// Ready tasks of the type parked for want of a place.
    pub waiting: u64,
}

impl TypeLimits {
    /// Limits from `(type, most running)` pairs (a type listed twice: the
    /// last).
    pub(super) fn new(limits: impl IntoIterator<Item = (String, u32)>) -> TypeLimits {
        let mut out = TypeLimits::default();
        for (kind, max) in limits {
            match out.by_kind.get(&kind) {
                Some(&s) => {
                    out.slots[s as usize].max = max;
                    out.slots[s as usize].limit = max;
                }
                None => {
                    out.by_kind.insert(kind.clone(), out.slots.len() as u16);
                    out.slots.push(TypeSlot {
                        kind,
                        limit: max,
                        max,
                        cap: u32::MAX,
                        running: 0,
                        by_part: HashMap::new(),
                        released: 0,
                        parked: BinaryHeap::new(),
                    });
                }
            }
        }
        out
    }

    /// Parses `payments.charge=5,email.send=20` (spaces allowed) into
    /// `(type, most running)` pairs.
    pub fn parse(spec: &str) -> Result<Vec<(String, u32)>, TypeLimitError> {
        let mut pairs = Vec::new();
        for entry in spec.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let err = |why| TypeLimitError {
                entry: entry.to_owned(),
                why,
            };
            let (kind, n) = entry.split_once('=').ok_or_else(|| err("no `=`"))?;
            let kind = kind.trim();
            if kind.is_empty() {
                return Err(err("empty task type"));
            }
            let n: u32 = n.trim().parse().map_err(|_| err("not a number"))?;
            if n == 0 {
                return Err(err("a limit of 0 would never run the type"));
            }
            pairs.push((kind.to_owned(), n));
        }
        if pairs.len() > u16::MAX as usize {
            return Err(TypeLimitError {
                entry: format!("{} entries", pairs.len()),
                why: "too many task types",
            });
        }
        Ok(pairs)
    }

    /// The limit slot of a task type, if it is limited (nothing is looked
    /// up when no type is).
    pub(super) fn slot_of(&self, kind: &str) -> Option<u16> {
        if self.slots.is_empty() {
            return None;
        }
        self.by_kind.get(kind).copied()
    }

    /// A task of the slot's type, of `workflow` (one of `partitions`),
    /// started.
    pub(super) fn started(&mut self, slot: Option<u16>, workflow: &str, partitions: u16) {
        if let Some(s) = slot {
            let s = &mut self.slots[s as usize];
            s.running += 1;
            *s.by_part
                .entry(partition_of(workflow, partitions))
                .or_default() += 1;
        }
    }

    /// A task of the slot's type ended (result, lease expiry, cancel).
    pub(super) fn ended(&mut self, slot: Option<u16>, workflow: &str, partitions: u16) {
        if let Some(s) = slot {
            let s = &mut self.slots[s as usize];
            s.running = s.running.saturating_sub(1);
            if let Some(n) = s.by_part.get_mut(&partition_of(workflow, partitions)) {
                *n = n.saturating_sub(1);
            }
        }
    }

    /// `item` came out of its queue (or is dropped from it): frees the
    /// place its release reserved, if it was released.
    pub(super) fn unreserve(&mut self, item: &mut ReadyItem) {
        if let Some(s) = item.limit
            && item.released
        {
            item.released = false;
            self.unreserve_slots(&[s]);
        }
    }

    /// Frees one reserved place of each of `slots` (their released tasks
    /// were unmarked).
    pub(super) fn unreserve_slots(&mut self, slots: &[u16]) {
        for &s in slots {
            let slot = &mut self.slots[s as usize];
            slot.released = slot.released.saturating_sub(1);
        }
    }

    /// True when `item`'s type is at its limit here: it must be
    /// [parked](TypeLimits::park).
    pub(super) fn at_limit(&self, item: &ReadyItem) -> bool {
        item.limit.is_some_and(|s| {
            let slot = &self.slots[s as usize];
            slot.running >= slot.max.min(slot.cap)
        })
    }

    /// Parks a ready task of a limited type until a place frees.
    pub(super) fn park(&mut self, priority: u8, workflow: Arc<str>, item: ReadyItem) {
        if let Some(s) = item.limit {
            self.slots[s as usize].parked.push(Parked {
                priority,
                workflow,
                item,
            });
        }
    }
}

impl TypeSlot {
    /// While `others` schedulers wait for places, keep no more than a fair
    /// share of them.
    fn set_cap(&mut self, others: u32) {
        self.cap = if others == 0 {
            u32::MAX
        } else {
            self.limit.div_ceil(others + 1).max(1)
        };
    }
}

impl Engine {
    /// Partitioned stores: the places of each limited type this scheduler
    /// holds in the store (summed over the partitions it owns), which
    /// replace the configured limits as what it may run. Call after
    /// restoring the workflows.
    pub fn set_type_places(&mut self, held: &HashMap<String, u32>) {
        for slot in &mut self.limits.slots {
            slot.max = held.get(&slot.kind).copied().unwrap_or(0);
            slot.cap = u32::MAX;
        }
        self.places_written.clear();
    }

    /// Partitioned stores: the limited types with tasks parked for want of
    /// a place here, as (type, places wanted, configured limit).
    pub fn type_wants(&self) -> Vec<(String, u32, u32)> {
        if !self.partitioned() {
            return Vec::new();
        }
        self.limits
            .slots
            .iter()
            .filter(|s| !s.parked.is_empty() && s.max < s.cap.min(s.limit))
            .map(|s| {
                let room = s.cap.min(s.limit) - s.max;
                let want = (s.parked.len() as u64).min(u64::from(room)) as u32;
                (s.kind.clone(), want, s.limit)
            })
            .collect()
    }

    /// True when tasks wait for a place of their limited type here.
    pub fn has_parked(&self) -> bool {
        self.limits.slots.iter().any(|s| !s.parked.is_empty())
    }

    /// Partitioned stores: `granted` more places of `kind`, taken in the
    /// store; `others_waiting` schedulers also want some, so this one
    /// keeps no more than its fair share as its tasks end.
    pub fn grant_type_places(&mut self, kind: &str, granted: u32, others_waiting: u32) {
        let Some(s) = self.limits.slot_of(kind) else {
            return;
        };
        let slot = &mut self.limits.slots[s as usize];
        slot.max += granted;
        slot.set_cap(others_waiting);
    }

    /// Partitioned stores: how many other schedulers want places of each
    /// limited type now (absent: none), read from the store at every
    /// balance tick.
    pub fn set_type_waiters(&mut self, waiting: &HashMap<String, u32>) {
        for slot in &mut self.limits.slots {
            slot.set_cap(waiting.get(&slot.kind).copied().unwrap_or(0));
        }
    }

    /// Partitioned stores: gives back the places not in use (no task of
    /// the type waits, or more are held than the fair share), and records
    /// what each owned partition holds in the batch: at least its running
    /// tasks of the type, so that whoever takes a partition over inherits
    /// the places its running tasks use.
    pub fn sync_type_places(&mut self) {
        if !self.partitioned() || self.limits.slots.is_empty() {
            return;
        }
        let mut rows = Vec::new();
        for slot in &mut self.limits.slots {
            let used = slot.running + slot.released;
            let spare = slot.max.saturating_sub(used);
            let keep = if slot.parked.is_empty() {
                0
            } else {
                spare.min(slot.cap.min(slot.limit).saturating_sub(used))
            };
            slot.max -= spare - keep;
            // What is still wanted, for the others' fair shares.
            let wanted = if slot.parked.is_empty() {
                0
            } else {
                (slot.parked.len() as u64).min(u64::from(slot.limit.saturating_sub(slot.max)))
                    as u32
            };
            let mut home_extra = slot.max;
            for &p in &self.owned {
                let running = slot.by_part.get(&p).copied().unwrap_or(0);
                home_extra = home_extra.saturating_sub(running);
                rows.push(TypePlaceRow {
                    kind: slot.kind.clone(),
                    part: p,
                    held: running,
                    wanted: 0,
                });
            }
            if let Some(row) = rows
                .iter_mut()
                .rev()
                .take(self.owned.len())
                .find(|r| r.part == self.home)
            {
                row.held += home_extra;
                row.wanted = wanted;
            }
        }
        if rows != self.places_written {
            self.ops.push(Op::TypePlaces(rows.clone()));
            self.places_written = rows;
        }
    }

    /// Running and parked tasks of each limited type.
    pub fn type_usage(&self) -> Vec<TypeUsage> {
        self.limits
            .slots
            .iter()
            .map(|s| TypeUsage {
                kind: s.kind.clone(),
                running: s.running as u64,
                limit: s.limit as u64,
                waiting: s.parked.len() as u64,
            })
            .collect()
    }

    /// Puts parked tasks back into their queues while their type has free
    /// places; parked tasks no longer ready (cancelled, ended) are dropped.
    /// One whose queue is paused goes back without reserving a place (it
    /// would hold it until the queue resumes, and the type's tasks of
    /// other queues would wait for it): it is parked again if its type is
    /// at its limit when the queue resumes. True when one was put back
    /// with a place.
    pub(super) fn release_parked(&mut self) -> bool {
        let mut any = false;
        for slot in &mut self.limits.slots {
            while slot.running + slot.released < slot.max.min(slot.cap) {
                let Some(mut p) = slot.parked.pop() else {
                    break;
                };
                let Some(wf) = self.workflows.get(&p.workflow) else {
                    continue;
                };
                if wf.tasks[p.item.task as usize].state != TaskState::Ready {
                    continue;
                }
                let queue = &wf.specs[p.item.task as usize].queue;
                if !self.pauses.queue_paused(queue) {
                    p.item.released = true;
                    slot.released += 1;
                    any = true;
                }
                self.queues
                    .entry(queue.clone())
                    .or_default()
                    .push(p.priority, &p.workflow, p.item);
            }
        }
        any
    }
}
