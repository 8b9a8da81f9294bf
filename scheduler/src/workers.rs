//! The workers heard from: what each worker last announced in its
//! heartbeat, and whether it is still heard from. It answers the `workers`
//! control request and `GET /api/workers` (the protocol's "worker
//! registry"; not to be confused with the worker crate's `Registry` of
//! task handlers).
//!
//! Workers publish heartbeats on `{ns}.events` (`worker.{id}.heartbeat`);
//! each scheduler session binds a private queue to them. The directory is
//! kept in memory only: after a restart it fills again within one
//! heartbeat interval. A worker is `lost` after three of its own intervals
//! without a heartbeat, and forgotten an hour after that (or an hour after
//! it announced it was stopping).
//!
//! Bounded, since it is keyed by a field of the wire (`worker_id`) that
//! anyone allowed to publish heartbeats chooses:
//! - a heartbeat larger than [`MAX_HEARTBEAT_BYTES`], or whose `worker_id`
//!   is longer than [`MAX_WORKER_ID_BYTES`], is ignored (counted, and
//!   logged at most once a minute, not once per message);
//! - at most [`MAX_WORKERS_LISTED`] workers, holding at most
//!   [`MAX_LISTED_BYTES`] of heartbeats, are listed (so a `workers` reply
//!   stays well under RabbitMQ 4.x's 16 MiB message limit). A new worker
//!   arriving when the directory is full first makes it forget the workers
//!   gone for long (at most once per [`PRUNE_EVERY`] arrivals, so a flood
//!   of new ids costs amortised O(log n) per heartbeat, not O(n)); if it
//!   is still full, the least recently heard from is dropped (an index by
//!   arrival order makes that O(log n)). A real worker dropped this way is
//!   listed again at its next heartbeat.
//!
//! It also gives each task queue's capacity ([`WorkerDirectory::capacity`]):
//! the sum of the `concurrency` of the live workers (running, heard from
//! within three of their intervals) that consume it, which the dispatch
//! windows follow (`engine/window.rs`). A heartbeat that changes it (a new
//! worker, one back from lost, one stopping, another concurrency or set of
//! queues) wakes whoever waits on [`WorkerDirectory::changes`].

use chrono::{DateTime, Utc};
use futures_lite::StreamExt;
use lapin::Connection;
use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
};
use tokio::sync::Notify;
use warren_shared::{
    Topology,
    wire::{WorkerEntry, WorkerHeartbeat, WorkerState, WorkersReport},
};

/// Heartbeats missed before a worker counts as lost.
const MISSED: i64 = 3;
/// How long a lost or stopped worker stays listed (ms).
const FORGET_AFTER_MS: i64 = 3_600_000;
/// Most workers listed at once.
pub const MAX_WORKERS_LISTED: usize = 10_000;
/// Most bytes of heartbeats (their JSON bodies) listed at once: with the
/// few dozen bytes each entry adds, a `workers` reply stays under 9 MiB.
pub const MAX_LISTED_BYTES: usize = 8 * 1024 * 1024;
/// Longest `worker_id` recorded; a heartbeat with a longer one is ignored.
pub const MAX_WORKER_ID_BYTES: usize = 256;
/// Largest heartbeat recorded (its JSON body); a larger one is ignored
/// unread. A worker's heartbeat is a few hundred bytes, more only with
/// hundreds of queues.
pub const MAX_HEARTBEAT_BYTES: usize = 64 * 1024;
/// New workers arriving in a full directory between two looks for the
/// forgotten ones.
pub const PRUNE_EVERY: usize = 1_024;
/// Ignored heartbeats are logged at most this often (ms).
const WARN_EVERY_MS: i64 = 60_000;

/// A listed worker: its entry, the size it is counted for, and its place
/// in the arrival order.
#[derive(Debug)]
struct Listed {
    entry: WorkerEntry,
    bytes: usize,
    seq: u64,
}

/// Workers by id, bounded (see the module's doc).
#[derive(Debug, Default)]
pub struct WorkerDirectory {
    workers: BTreeMap<String, Listed>,
    /// Worker ids by the sequence number of their last heartbeat: the
    /// first is the least recently heard from.
    by_arrival: BTreeMap<u64, String>,
    next_seq: u64,
    /// Sum of the listed workers' `bytes`.
    bytes: usize,
    /// New workers that found the directory full.
    full_arrivals: usize,
    /// Heartbeats ignored since the last warning, and when that was.
    unwarned: u64,
    warned_at: Option<DateTime<Utc>>,
    /// Heartbeats ignored, and workers dropped to make room, in all.
    ignored_total: u64,
    evicted_total: u64,
    /// Times the whole directory was looked through for the forgotten.
    prunes: u64,
    /// A heartbeat changed the capacities since they were last read, and
    /// who is woken when one does.
    capacity_changed: bool,
    changes: Arc<Notify>,
}

/// What the dispatch windows follow: each task queue's capacity, and when
/// it changes next unless a heartbeat comes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Capacity {
    /// By task queue, the sum of the `concurrency` of the live workers
    /// consuming it (a worker naming a queue twice counts once); queues no
    /// live worker consumes are absent.
    pub by_queue: HashMap<String, u64>,
    /// By task queue, how many live workers consume it (those of
    /// `by_queue`, and those announcing a concurrency of 0).
    pub workers: HashMap<String, u32>,
    /// When the first of those workers counts as lost if it sends nothing
    /// more.
    pub next_lost: Option<DateTime<Utc>>,
}

/// Why a heartbeat was not recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ignored {
    TooLarge(usize),
    LongId(usize),
    Undecodable,
}

impl WorkerDirectory {
    /// Records a heartbeat as received on the wire: ignored when too
    /// large, undecodable or with too long an id.
    pub fn receive(&mut self, body: &[u8], now: DateTime<Utc>) {
        if body.len() > MAX_HEARTBEAT_BYTES {
            return self.ignore(Ignored::TooLarge(body.len()), now);
        }
        match serde_json::from_slice::<WorkerHeartbeat>(body) {
            Ok(h) => self.record_sized(h, body.len(), now),
            Err(_) => self.ignore(Ignored::Undecodable, now),
        }
    }

    /// Records a decoded heartbeat (counted at its JSON size).
    pub fn record(&mut self, heartbeat: WorkerHeartbeat, now: DateTime<Utc>) {
        let bytes = serde_json::to_vec(&heartbeat).map_or(0, |v| v.len());
        self.record_sized(heartbeat, bytes, now);
    }

    fn record_sized(&mut self, heartbeat: WorkerHeartbeat, bytes: usize, now: DateTime<Utc>) {
        if bytes > MAX_HEARTBEAT_BYTES {
            return self.ignore(Ignored::TooLarge(bytes), now);
        }
        if heartbeat.worker_id.len() > MAX_WORKER_ID_BYTES {
            return self.ignore(Ignored::LongId(heartbeat.worker_id.len()), now);
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        let entry = WorkerEntry {
            heartbeat,
            last_seen: now,
        };
        let before = self
            .workers
            .get(&entry.heartbeat.worker_id)
            .map(|l| &l.entry)
            .filter(|w| live(w, now));
        if changes_capacity(before, &entry, now) {
            self.capacity_changed = true;
            self.changes.notify_one();
        }
        if let Some(listed) = self.workers.get_mut(&entry.heartbeat.worker_id) {
            // Heard from again: a new place in the arrival order.
            self.by_arrival.remove(&listed.seq);
            self.by_arrival
                .insert(seq, entry.heartbeat.worker_id.clone());
            self.bytes = self.bytes - listed.bytes + bytes;
            *listed = Listed { entry, bytes, seq };
            self.shrink_to(MAX_WORKERS_LISTED, MAX_LISTED_BYTES);
            return;
        }
        let full =
            self.workers.len() >= MAX_WORKERS_LISTED || self.bytes + bytes > MAX_LISTED_BYTES;
        if full {
            // The first arrival in a full directory, then one in every
            // PRUNE_EVERY, looks for the forgotten first.
            if self.full_arrivals.is_multiple_of(PRUNE_EVERY) {
                self.forget_gone(now);
            }
            self.full_arrivals += 1;
            self.shrink_to(MAX_WORKERS_LISTED - 1, MAX_LISTED_BYTES - bytes);
        }
        let id = entry.heartbeat.worker_id.clone();
        self.by_arrival.insert(seq, id.clone());
        self.bytes += bytes;
        self.workers.insert(id, Listed { entry, bytes, seq });
    }

    /// Drops the least recently heard from until at most `count` workers
    /// of at most `bytes` are listed.
    fn shrink_to(&mut self, count: usize, bytes: usize) {
        while self.workers.len() > count || self.bytes > bytes {
            let Some((_, id)) = self.by_arrival.pop_first() else {
                break;
            };
            if let Some(gone) = self.workers.remove(&id) {
                self.bytes -= gone.bytes;
                self.evicted_total += 1;
                // It may have been live: the capacities are read again.
                self.capacity_changed = true;
                self.changes.notify_one();
                // Logged at the 1st, 2nd, 4th, 8th, ... eviction.
                if self.evicted_total.is_power_of_two() {
                    tracing::warn!(
                        worker = %id,
                        evicted = self.evicted_total,
                        "Worker directory full ({MAX_WORKERS_LISTED} workers, {MAX_LISTED_BYTES} bytes): \
                         the least recently heard from are no longer listed"
                    );
                }
            }
        }
    }

    /// Forgets the workers gone for long: O(n), so called when reading the
    /// whole directory anyway, or at most once per [`PRUNE_EVERY`] new
    /// workers arriving in a full directory.
    fn forget_gone(&mut self, now: DateTime<Utc>) {
        self.prunes += 1;
        let (by_arrival, bytes) = (&mut self.by_arrival, &mut self.bytes);
        self.workers.retain(|_, l| {
            let keep = !forgotten(&l.entry, now);
            if !keep {
                by_arrival.remove(&l.seq);
                *bytes -= l.bytes;
            }
            keep
        });
    }

    fn ignore(&mut self, why: Ignored, now: DateTime<Utc>) {
        self.unwarned += 1;
        self.ignored_total += 1;
        let due = self
            .warned_at
            .is_none_or(|t| (now - t).num_milliseconds() >= WARN_EVERY_MS);
        if due {
            let reason = match why {
                Ignored::TooLarge(n) => {
                    format!("a heartbeat of {n} bytes (the limit is {MAX_HEARTBEAT_BYTES})")
                }
                Ignored::LongId(n) => {
                    format!("a worker_id of {n} bytes (the limit is {MAX_WORKER_ID_BYTES})")
                }
                Ignored::Undecodable => "an undecodable heartbeat".to_owned(),
            };
            tracing::warn!(
                ignored = self.unwarned,
                "Heartbeats ignored since the last warning; the last had {reason}"
            );
            self.unwarned = 0;
            self.warned_at = Some(now);
        }
    }

    /// How many workers are listed.
    pub fn len(&self) -> usize {
        self.workers.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.workers.is_empty()
    }

    /// Heartbeats ignored so far (too large, undecodable, too long an id).
    pub fn ignored(&self) -> u64 {
        self.ignored_total
    }

    /// Workers dropped so far to make room for others.
    pub fn evicted(&self) -> u64 {
        self.evicted_total
    }

    /// Each task queue's capacity as of `now` (see [`Capacity`]). O(the
    /// listed workers' queues), bounded by the directory's bounds; the
    /// caller reads it when [`WorkerDirectory::capacity_changed`] says so or
    /// when `next_lost` has passed, not per heartbeat.
    pub fn capacity(&mut self, now: DateTime<Utc>) -> Capacity {
        self.capacity_changed = false;
        let mut c = Capacity::default();
        let mut queues: Vec<&str> = Vec::new();
        for l in self.workers.values() {
            let w = &l.entry;
            if !live(w, now) {
                continue;
            }
            let lost_at = chrono::TimeDelta::try_milliseconds(overdue(w))
                .and_then(|d| w.last_seen.checked_add_signed(d));
            if let Some(at) = lost_at {
                c.next_lost = Some(c.next_lost.map_or(at, |n| n.min(at)));
            }
            queues.clear();
            queues.extend(w.heartbeat.queues.iter().map(String::as_str));
            queues.sort_unstable();
            queues.dedup();
            let slots = u64::from(w.heartbeat.concurrency);
            for q in &queues {
                match c.by_queue.get_mut(*q) {
                    Some(sum) => *sum = sum.saturating_add(slots),
                    None => {
                        c.by_queue.insert((*q).to_owned(), slots);
                    }
                }
                match c.workers.get_mut(*q) {
                    Some(n) => *n = n.saturating_add(1),
                    None => {
                        c.workers.insert((*q).to_owned(), 1);
                    }
                }
            }
        }
        c.by_queue.retain(|_, sum| *sum > 0);
        c
    }

    /// True when a heartbeat changed the capacities (or a worker was
    /// dropped) since [`WorkerDirectory::capacity`] last read them.
    pub fn capacity_changed(&self) -> bool {
        self.capacity_changed
    }

    /// Notified (`notify_one`) whenever [`WorkerDirectory::capacity_changed`]
    /// becomes true.
    pub fn changes(&self) -> Arc<Notify> {
        self.changes.clone()
    }

    /// Every worker, by id, with its state as of `now`; forgets those gone
    /// for long.
    pub fn report(&mut self, now: DateTime<Utc>) -> WorkersReport {
        self.forget_gone(now);
        let workers = self
            .workers
            .values()
            .map(|l| {
                let mut w = l.entry.clone();
                if w.heartbeat.state == WorkerState::Running && silent(&w, now) >= overdue(&w) {
                    w.heartbeat.state = WorkerState::Lost;
                }
                w
            })
            .collect();
        WorkersReport { workers }
    }
}

/// Milliseconds since `w` was heard from.
fn silent(w: &WorkerEntry, now: DateTime<Utc>) -> i64 {
    (now - w.last_seen).num_milliseconds()
}

/// Milliseconds of silence after which `w` is lost.
fn overdue(w: &WorkerEntry) -> i64 {
    MISSED.saturating_mul(i64::try_from(w.heartbeat.interval_ms).unwrap_or(i64::MAX))
}

/// Whether `w` counts for capacity at `now`: running, and heard from
/// within three of its intervals.
fn live(w: &WorkerEntry, now: DateTime<Utc>) -> bool {
    w.heartbeat.state == WorkerState::Running && silent(w, now) < overdue(w)
}

/// Whether heartbeat `new` changes the capacities, the worker having been
/// `before` (when it was live until now).
fn changes_capacity(before: Option<&WorkerEntry>, new: &WorkerEntry, now: DateTime<Utc>) -> bool {
    let after = live(new, now);
    match before {
        None => after,
        Some(b) => {
            !after
                || b.heartbeat.concurrency != new.heartbeat.concurrency
                || b.heartbeat.queues != new.heartbeat.queues
        }
    }
}

/// Whether `w` has been gone long enough to be forgotten.
fn forgotten(w: &WorkerEntry, now: DateTime<Utc>) -> bool {
    let s = silent(w, now);
    s >= overdue(w).saturating_add(FORGET_AFTER_MS)
        || w.heartbeat.state == WorkerState::Stopping && s >= FORGET_AFTER_MS
}

/// The directory, shared between the heartbeat listener, the scheduler's
/// control requests and whoever else reads it.
pub type SharedWorkers = Arc<Mutex<WorkerDirectory>>;

/// Binds a private queue of this session to the workers' heartbeats and
/// records them until the connection goes.
pub async fn listen(
    conn: &Connection,
    topology: &Topology,
    workers: SharedWorkers,
) -> Result<(), warren_shared::Error> {
    let events = topology.events();
    let (_, _, mut heartbeats) =
        warren_shared::amqp::private_queue(conn, &[(&events, "worker.*.heartbeat")]).await?;
    tokio::spawn(async move {
        while let Some(Ok(d)) = heartbeats.next().await {
            workers
                .lock()
                .expect("not poisoned")
                .receive(&d.data, Utc::now());
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;

    fn beat(id: &str, state: WorkerState) -> WorkerHeartbeat {
        WorkerHeartbeat {
            worker_id: id.into(),
            host: "h".into(),
            pid: 1,
            queues: vec!["default".into()],
            concurrency: 4,
            in_flight: 1,
            version: "warren-worker test".into(),
            interval_ms: 1_000,
            state,
            started_at: None,
            sent_at: Utc::now(),
        }
    }

    #[test]
    fn silent_workers_become_lost_then_are_forgotten() {
        let mut r = WorkerDirectory::default();
        let t0 = Utc::now();
        r.record(beat("a", WorkerState::Running), t0);
        r.record(beat("b", WorkerState::Stopping), t0);
        let states = |r: &mut WorkerDirectory, at| -> Vec<(String, WorkerState)> {
            r.report(at)
                .workers
                .into_iter()
                .map(|w| (w.heartbeat.worker_id, w.heartbeat.state))
                .collect()
        };
        assert_eq!(
            states(&mut r, t0 + Duration::milliseconds(2_900)),
            vec![
                ("a".into(), WorkerState::Running),
                ("b".into(), WorkerState::Stopping)
            ]
        );
        assert_eq!(
            states(&mut r, t0 + Duration::milliseconds(3_000)),
            vec![
                ("a".into(), WorkerState::Lost),
                ("b".into(), WorkerState::Stopping)
            ]
        );
        assert!(states(&mut r, t0 + Duration::hours(2)).is_empty());
    }

    fn at(t0: DateTime<Utc>, ms: i64) -> DateTime<Utc> {
        t0 + Duration::milliseconds(ms)
    }

    fn listed(r: &WorkerDirectory, id: &str) -> bool {
        r.workers.contains_key(id)
    }

    /// The index and the byte count agree with the listed workers.
    fn consistent(r: &WorkerDirectory) {
        assert_eq!(r.workers.len(), r.by_arrival.len());
        for (seq, id) in &r.by_arrival {
            assert_eq!(r.workers[id].seq, *seq);
        }
        assert_eq!(r.bytes, r.workers.values().map(|l| l.bytes).sum::<usize>());
        assert!(r.workers.len() <= MAX_WORKERS_LISTED);
        assert!(r.bytes <= MAX_LISTED_BYTES);
    }

    /// A heartbeat of worker `id` on `queues` with `concurrency` slots.
    fn on(id: &str, queues: &[&str], concurrency: u32) -> WorkerHeartbeat {
        WorkerHeartbeat {
            queues: queues.iter().map(|q| (*q).to_owned()).collect(),
            concurrency,
            ..beat(id, WorkerState::Running)
        }
    }

    fn sums(c: &Capacity) -> BTreeMap<&str, u64> {
        c.by_queue.iter().map(|(q, n)| (q.as_str(), *n)).collect()
    }

    #[test]
    fn capacity_sums_the_live_workers_of_each_queue() {
        let mut r = WorkerDirectory::default();
        let t0 = Utc::now();
        // A queue named twice by one worker counts once.
        r.record(on("a", &["default", "gpu", "default"], 4), t0);
        r.record(on("b", &["default"], 8), t0);
        let mut c = on("c", &["gpu"], 2);
        c.interval_ms = 10_000;
        r.record(c, t0);
        r.record(on("idle", &["empty"], 0), t0);
        let cap = r.capacity(at(t0, 100));
        assert_eq!(sums(&cap), BTreeMap::from([("default", 12), ("gpu", 6)]));
        let workers: BTreeMap<&str, u32> =
            cap.workers.iter().map(|(q, n)| (q.as_str(), *n)).collect();
        assert_eq!(
            workers,
            BTreeMap::from([("default", 2), ("empty", 1), ("gpu", 2)])
        );
        assert_eq!(cap.next_lost, Some(at(t0, 3_000)), "a and b, 3 x 1 s");
        // Three intervals later a and b are lost: their slots are gone.
        let cap = r.capacity(at(t0, 3_000));
        assert_eq!(sums(&cap), BTreeMap::from([("gpu", 2)]));
        assert_eq!(cap.next_lost, Some(at(t0, 30_000)));
        // a is heard from again; b says it is stopping: b still counts
        // for nothing.
        r.record(on("a", &["default", "gpu"], 4), at(t0, 3_500));
        let mut b = on("b", &["default"], 8);
        b.state = WorkerState::Stopping;
        r.record(b, at(t0, 3_500));
        assert_eq!(
            sums(&r.capacity(at(t0, 3_600))),
            BTreeMap::from([("default", 4), ("gpu", 6)])
        );
        // A lost worker's claimed state does not make it live either.
        let mut d = on("d", &["default"], 100);
        d.state = WorkerState::Lost;
        r.record(d, at(t0, 3_700));
        assert_eq!(sums(&r.capacity(at(t0, 3_800)))["default"], 4);
        // Nobody left: nothing, and nothing to wait for.
        let cap = r.capacity(at(t0, 100_000));
        assert!(cap.by_queue.is_empty() && cap.next_lost.is_none());
    }

    #[test]
    fn only_heartbeats_that_change_a_capacity_flag_it() {
        let mut r = WorkerDirectory::default();
        let t0 = Utc::now();
        let changes = r.changes();
        let flagged = |r: &mut WorkerDirectory, at| {
            let f = r.capacity_changed();
            r.capacity(at);
            f
        };
        r.record(on("a", &["default"], 4), t0);
        assert!(flagged(&mut r, t0), "a new worker");
        assert!(!flagged(&mut r, t0), "read since");
        let mut busier = on("a", &["default"], 4);
        busier.in_flight = 3;
        r.record(busier, at(t0, 500));
        assert!(!flagged(&mut r, at(t0, 500)), "only in_flight changed");
        r.record(on("a", &["default"], 6), at(t0, 1_000));
        assert!(flagged(&mut r, at(t0, 1_000)), "its concurrency");
        r.record(on("a", &["default", "gpu"], 6), at(t0, 1_500));
        assert!(flagged(&mut r, at(t0, 1_500)), "its queues");
        // Silent past three intervals (lost), then heard from again.
        r.record(on("a", &["default", "gpu"], 6), at(t0, 5_000));
        assert!(flagged(&mut r, at(t0, 5_000)), "back from lost");
        let mut stopping = on("a", &["default", "gpu"], 6);
        stopping.state = WorkerState::Stopping;
        r.record(stopping.clone(), at(t0, 5_500));
        assert!(flagged(&mut r, at(t0, 5_500)), "stopping");
        r.record(stopping, at(t0, 6_000));
        assert!(!flagged(&mut r, at(t0, 6_000)), "still stopping");
        // Whoever waits on the changes was woken (one stored permit).
        let woken = changes.notified();
        futures_lite::pin!(woken);
        assert!(futures_lite::future::block_on(futures_lite::future::poll_once(woken)).is_some());
    }

    #[test]
    fn long_ids_large_and_undecodable_heartbeats_are_ignored() {
        let mut r = WorkerDirectory::default();
        let t0 = Utc::now();
        r.record(
            beat(&"x".repeat(MAX_WORKER_ID_BYTES + 1), WorkerState::Running),
            t0,
        );
        r.record(
            beat(&"y".repeat(MAX_WORKER_ID_BYTES), WorkerState::Running),
            t0,
        );
        let mut huge = beat("huge", WorkerState::Running);
        huge.host = "h".repeat(MAX_HEARTBEAT_BYTES);
        r.receive(&serde_json::to_vec(&huge).unwrap(), t0);
        r.receive(b"{\"worker_id\": 1}", t0);
        let ok = serde_json::to_vec(&beat("ok", WorkerState::Running)).unwrap();
        r.receive(&ok, t0);
        assert_eq!(r.ignored(), 3);
        assert_eq!(r.len(), 2);
        assert!(listed(&r, &"y".repeat(MAX_WORKER_ID_BYTES)) && listed(&r, "ok"));
        assert_eq!(r.workers["ok"].bytes, ok.len());
        // One warning for the three (within a minute), then the count restarts.
        assert_eq!(r.unwarned, 2);
        r.receive(b"[]", at(t0, WARN_EVERY_MS));
        assert_eq!(r.unwarned, 0);
        consistent(&r);
    }

    #[test]
    fn a_full_directory_forgets_the_gone_first() {
        let mut r = WorkerDirectory::default();
        let t0 = Utc::now();
        for i in 0..MAX_WORKERS_LISTED {
            r.record(beat(&format!("w{i}"), WorkerState::Running), t0);
        }
        assert_eq!(r.len(), MAX_WORKERS_LISTED);
        // Two hours later every one of them is forgotten: the newcomer
        // makes room by forgetting them, not by evicting one.
        r.record(beat("new", WorkerState::Running), t0 + Duration::hours(2));
        assert_eq!(r.len(), 1);
        assert_eq!(r.evicted(), 0);
        consistent(&r);
    }

    #[test]
    fn a_full_directory_drops_the_least_recently_heard_from() {
        let mut r = WorkerDirectory::default();
        let t0 = Utc::now();
        for i in 0..MAX_WORKERS_LISTED {
            r.record(
                beat(&format!("w{i}"), WorkerState::Running),
                at(t0, i as i64),
            );
        }
        // w0 is heard from again: w1 is now the least recently heard from.
        r.record(beat("w0", WorkerState::Running), at(t0, 20_000));
        assert_eq!(r.len(), MAX_WORKERS_LISTED);
        r.record(beat("x", WorkerState::Running), at(t0, 20_001));
        assert_eq!(r.len(), MAX_WORKERS_LISTED);
        assert!(listed(&r, "w0") && listed(&r, "x") && listed(&r, "w2"));
        assert!(!listed(&r, "w1"));
        assert_eq!(r.evicted(), 1);
        consistent(&r);
        // The report lists them all, the silent ones lost.
        let report = r.report(at(t0, 20_002));
        assert_eq!(report.workers.len(), MAX_WORKERS_LISTED);
        assert_eq!(
            report
                .workers
                .iter()
                .filter(|w| w.heartbeat.state == WorkerState::Lost)
                .count(),
            MAX_WORKERS_LISTED - 2
        );
    }

    #[test]
    fn a_flood_of_new_ids_is_bounded_and_looked_through_rarely() {
        let mut r = WorkerDirectory::default();
        let t0 = Utc::now();
        let flood = 5 * MAX_WORKERS_LISTED;
        for i in 0..flood {
            r.record(
                beat(&format!("f{i}"), WorkerState::Running),
                at(t0, i as i64),
            );
        }
        consistent(&r);
        assert_eq!(r.len(), MAX_WORKERS_LISTED);
        // The newest are the ones listed.
        assert!(listed(&r, &format!("f{}", flood - 1)));
        assert!(!listed(&r, &format!("f{}", flood - MAX_WORKERS_LISTED - 1)));
        assert_eq!(r.evicted(), (flood - MAX_WORKERS_LISTED) as u64);
        // Amortised: one look through the whole directory per PRUNE_EVERY
        // arrivals in a full directory, not one per heartbeat.
        let arrivals = flood - MAX_WORKERS_LISTED;
        assert!(
            r.prunes <= (arrivals / PRUNE_EVERY + 1) as u64,
            "{} prunes for {arrivals} arrivals",
            r.prunes
        );
        // A known worker's heartbeat never looks through the directory.
        let before = r.prunes;
        for _ in 0..1_000 {
            r.record(
                beat(&format!("f{}", flood - 1), WorkerState::Running),
                at(t0, flood as i64),
            );
        }
        assert_eq!(r.prunes, before);
        assert_eq!(r.len(), MAX_WORKERS_LISTED);
    }

    #[test]
    fn the_listed_heartbeats_are_bounded_in_bytes() {
        let mut r = WorkerDirectory::default();
        let t0 = Utc::now();
        let queues: Vec<String> = (0..1_000).map(|i| format!("queue-{i:050}")).collect();
        let mut sent = 0;
        for i in 0..300 {
            let mut b = beat(&format!("big{i}"), WorkerState::Running);
            b.queues = queues.clone();
            let body = serde_json::to_vec(&b).unwrap();
            assert!(body.len() <= MAX_HEARTBEAT_BYTES, "{}", body.len());
            sent += body.len();
            r.receive(&body, at(t0, i));
        }
        assert!(sent > MAX_LISTED_BYTES);
        consistent(&r);
        assert!(r.bytes > MAX_LISTED_BYTES - MAX_HEARTBEAT_BYTES);
        assert!(listed(&r, "big299") && !listed(&r, "big0"));
        // A worker growing its heartbeat also keeps the bound.
        let mut b = beat("big299", WorkerState::Running);
        b.queues = queues.iter().chain(&queues).cloned().collect();
        b.queues.truncate(1_150);
        r.record(b, at(t0, 1_000));
        consistent(&r);
        assert!(listed(&r, "big299"));
        // And the whole report fits in a message well under 16 MiB.
        let report = serde_json::to_vec(&r.report(at(t0, 1_001))).unwrap();
        assert!(report.len() < 9 * 1024 * 1024, "{}", report.len());
    }
}
