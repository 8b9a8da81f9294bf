//! Schedules (`schedule.*` control requests) as the scheduler owning them
//! fires them.
//!
//! A schedule belongs to the partition of its id, and only the engine
//! owning that partition holds it: its row (timing, policies, state) and
//! its parsed [`Timing`], with a heap of next firings. The workflow each
//! firing submits stays in the store, read back when firings fall due
//! (like a delayed workflow's definition).
//!
//! A firing publishes the schedule's workflow request, its id
//! `{schedule}:{fire time}`, to `{ns}.workflows` through the outbox, in the
//! same batch (one transaction) that moves the schedule's state on: either
//! both are committed or neither, and the store refuses a second workflow
//! with the same id, so each firing happens once across crashes and, on
//! PostgreSQL, takeovers (a scheduler that lost the partition can no
//! longer commit: its batches are fenced).
//!
//! Firings that fell due while no scheduler held the schedule (it was
//! stopped, had no broker or store, or the partition was moving) are
//! settled when it is taken up ([`Engine::restore_schedule`]) by the
//! `catch_up` policy; those that fall due while it is held fire however
//! late the loop is.

use super::{Counters, Engine, emit::to_json};
use crate::{
    batch::{Op, OutKind, OutMsg, ReplyTo, ScheduleRow, ScheduleState},
    schedule::{self, CheckedSchedule, MAX_CATCH_UP, Timing, TimingSpec},
};
use chrono::{DateTime, Utc};
use std::{
    cmp::Reverse,
    collections::{HashMap, VecDeque},
    sync::Arc,
};
use warren_shared::{
    topology::{CONTROL_ROUTING_KEY, partition_of},
    wire::{
        CatchUp, ControlKind, ControlRequest, Overlap, ScheduleInfo, ScheduleReport, SchedulesPage,
    },
};

/// Most firings of one schedule fired in one turn (the rest go on the
/// next turn, at once).
const MAX_FIRINGS_PER_TURN: usize = MAX_CATCH_UP;

/// A schedule this engine fires.
#[derive(Debug)]
pub(super) struct Armed {
    row: ScheduleRow,
    timing: Timing,
    /// Firings to make before the regular next one: caught up at restore,
    /// or asked for by `schedule.trigger` (with where to answer).
    pending: VecDeque<(DateTime<Utc>, Option<ReplyTo>)>,
}

/// The engine's schedules and the heap of their next firings.
#[derive(Debug, Default)]
pub(super) struct Schedules {
    armed: HashMap<Arc<str>, Armed>,
    /// (due ms, schedule): entries of schedules since changed are stale
    /// and skipped.
    heap: std::collections::BinaryHeap<Reverse<(i64, Arc<str>)>>,
}

impl Schedules {
    /// Holds a schedule and arms its next firing.
    fn hold(&mut self, armed: Armed) {
        let id = armed.row.id.clone();
        self.armed.insert(id.clone(), armed);
        self.arm(&id);
    }

    fn arm(&mut self, id: &Arc<str>) {
        if let Some(a) = self.armed.get(id)
            && let Some(due) = a.due_ms()
        {
            self.heap.push(Reverse((due, id.clone())));
        }
    }
}

impl Armed {
    /// When this schedule next has something to fire.
    fn due_ms(&self) -> Option<i64> {
        if let Some((at, _)) = self.pending.front() {
            return Some(at.timestamp_millis());
        }
        if self.row.state.paused {
            return None;
        }
        self.row.state.next_fire_at.map(|t| t.timestamp_millis())
    }
}

/// A schedule's timing from its row (checked when it was created).
fn timing_of(row: &ScheduleRow) -> Option<Timing> {
    Timing::parse(
        &TimingSpec {
            cron: row.cron.as_deref(),
            every_ms: row.every_ms,
            timezone: Some(&row.timezone),
        },
        row.created_at,
    )
    .ok()
}

/// The answer's view of a schedule; `last_status` is the status of the
/// last firing's workflow where it is known (`submitted` from a store that
/// does not hold it yet), `None` where it is not (the outcome is then left
/// out).
pub fn info(row: &ScheduleRow, last_status: Option<&str>) -> ScheduleInfo {
    let s = &row.state;
    let last_outcome = if s.last_skipped {
        Some("skipped".to_owned())
    } else {
        s.last_workflow_id
            .as_ref()
            .and(last_status)
            .map(str::to_owned)
    };
    ScheduleInfo {
        id: row.id.to_string(),
        cron: row.cron.clone(),
        every_ms: row.every_ms,
        timezone: row.timezone.clone(),
        overlap: row.overlap,
        catch_up: row.catch_up,
        paused: s.paused,
        created_at: row.created_at,
        next_fire_at: (!s.paused).then_some(s.next_fire_at).flatten(),
        last_fire_at: s.last_fire_at,
        last_workflow_id: s.last_workflow_id.clone(),
        last_outcome,
        fired: s.fired,
        skipped: s.skipped,
        workflow: None,
    }
}

impl Engine {
    /// The answer's view of a schedule this engine holds: the last
    /// firing's workflow is `running` (or `scheduled`, `queued`) while this engine
    /// holds it, else unknown here.
    fn info_here(&self, row: &ScheduleRow) -> ScheduleInfo {
        let status = row.state.last_workflow_id.as_deref().and_then(|w| {
            if self.is_active(w) {
                Some("running")
            } else if self.is_scheduled(w) {
                Some("scheduled")
            } else if self.is_queued(w) {
                Some("queued")
            } else {
                None
            }
        });
        info(row, status)
    }

    /// Holds a stored schedule of an owned partition, settling the firings
    /// it missed by its `catch_up` policy: `none` skips them, `latest`
    /// fires the most recent, `all` each of the most recent
    /// [`MAX_CATCH_UP`] (oldest first); the others count as skipped.
    pub fn restore_schedule(&mut self, mut row: ScheduleRow, now: DateTime<Utc>) {
        let Some(timing) = timing_of(&row) else {
            tracing::error!(schedule = %row.id, "A stored schedule's timing no longer parses; it does not fire");
            return;
        };
        let mut pending = VecDeque::new();
        let s = &mut row.state;
        if !s.paused
            && let Some(next) = s.next_fire_at.filter(|n| *n <= now)
        {
            let keep = match row.catch_up {
                CatchUp::None => 0,
                CatchUp::Latest => 1,
                CatchUp::All => MAX_CATCH_UP,
            };
            let since = next - chrono::Duration::milliseconds(1);
            let missed = timing.missed(since, now, keep);
            let dropped = missed.dropped;
            pending.extend(missed.firings.into_iter().map(|t| (t, None)));
            s.next_fire_at = timing.next_after(now);
            if dropped > 0 {
                s.skipped += dropped;
                Counters::add(&self.counters.schedule_firings_skipped, dropped);
                tracing::warn!(schedule = %row.id, missed = dropped, catch_up = row.catch_up.as_str(), "Firings missed while no scheduler held the schedule were skipped");
            }
            self.ops.push(Op::ScheduleState {
                id: row.id.clone(),
                state: s.clone(),
            });
        }
        self.schedules.hold(Armed {
            row,
            timing,
            pending,
        });
    }

    /// How many schedules this engine fires.
    pub fn schedules_len(&self) -> usize {
        self.schedules.armed.len()
    }

    /// A schedule this engine holds.
    pub fn schedule_row(&self, id: &str) -> Option<&ScheduleRow> {
        self.schedules.armed.get(id).map(|a| &a.row)
    }

    /// When the next firing is due (ms since the epoch).
    pub(super) fn next_fire_ms(&self) -> Option<i64> {
        self.schedules.heap.peek().map(|Reverse((at, _))| *at)
    }

    /// Takes at most `at_most` schedules with firings due by `now_ms`, for
    /// the loop to read their workflows and the state of their last
    /// firing's workflow, then fire them ([`Engine::fire_schedule`]).
    pub fn take_due_firings(&mut self, now_ms: i64, at_most: usize) -> Vec<Arc<str>> {
        let mut due = Vec::new();
        while due.len() < at_most {
            match self.schedules.heap.peek() {
                Some(Reverse((at, _))) if *at <= now_ms => {}
                _ => break,
            }
            let Reverse((at, id)) = self.schedules.heap.pop().expect("peeked");
            let current = self
                .schedules
                .armed
                .get(&id)
                .is_some_and(|a| a.due_ms() == Some(at));
            if current && !due.contains(&id) {
                due.push(id);
            }
        }
        due
    }

    /// The workflow the last firing of `id` submitted, if it may still be
    /// running (for the `overlap` policy: the loop asks the store about it
    /// when the engine does not hold it).
    pub fn previous_firing(&self, id: &str) -> Option<&str> {
        let a = self.schedules.armed.get(id)?;
        if a.row.overlap == Overlap::Allow {
            return None;
        }
        a.row.state.last_workflow_id.as_deref()
    }

    /// When the last firing of schedule `id` was.
    pub fn previous_firing_at(&self, id: &str) -> Option<DateTime<Utc>> {
        self.schedules.armed.get(id)?.row.state.last_fire_at
    }

    /// Fires what is due of schedule `id`: its pending firings, then its
    /// regular ones up to `now` (at most [`MAX_FIRINGS_PER_TURN`] in all;
    /// the rest stay due). `workflow` is the request its firings submit, as
    /// stored; `previous_running` whether its last firing's workflow may
    /// still run (for `overlap`).
    pub fn fire_schedule(
        &mut self,
        id: &str,
        workflow: Option<&[u8]>,
        mut previous_running: bool,
        now: DateTime<Utc>,
    ) {
        let Some((id, mut armed)) = self.schedules.armed.remove_entry(id) else {
            return;
        };
        let Some(workflow) = workflow.and_then(|w| serde_json::from_slice(w).ok()) else {
            tracing::error!(schedule = %id, "A schedule's stored workflow is missing or unreadable; it no longer fires");
            let why = warren_shared::wire::Rejection {
                code: "schedule_unreadable".into(),
                message:
                    "the schedule's stored workflow is missing or unreadable; it no longer fires"
                        .into(),
                task: None,
            };
            self.unanswered_triggers(&id, armed.pending, "rejected", vec![why]);
            return;
        };
        let mut firings: Vec<(DateTime<Utc>, Option<ReplyTo>)> = Vec::new();
        while firings.len() < MAX_FIRINGS_PER_TURN {
            if let Some(p) = armed.pending.pop_front() {
                firings.push(p);
                continue;
            }
            let s = &mut armed.row.state;
            match s.next_fire_at {
                Some(at) if !s.paused && at <= now => {
                    firings.push((at, None));
                    s.next_fire_at = armed.timing.next_after(at);
                }
                _ => break,
            }
        }
        let part = partition_of(&id, self.partitions);
        for (at, reply) in firings {
            let s = &mut armed.row.state;
            s.last_fire_at = Some(at);
            if previous_running && armed.row.overlap == Overlap::Skip {
                s.skipped += 1;
                s.last_skipped = true;
                Counters::add(&self.counters.schedule_firings_skipped, 1);
                tracing::info!(schedule = %id, fire_time = %at, "Firing skipped: the previous one still runs");
                if let Some(to) = reply {
                    let report = ScheduleReport {
                        schedule_id: id.to_string(),
                        outcome: "skipped".into(),
                        schedule: Some(self.info_here(&armed.row)),
                        workflow_id: None,
                        errors: Vec::new(),
                    };
                    self.reply_schedule(&to, &report);
                }
                continue;
            }
            if previous_running
                && armed.row.overlap == Overlap::CancelPrevious
                && let Some(previous) = s.last_workflow_id.clone()
            {
                self.cancel_previous(&previous, part, now);
            }
            let workflow_id = schedule::firing_workflow_id(&id, at);
            let s = &mut armed.row.state;
            s.fired += 1;
            s.last_skipped = false;
            s.last_workflow_id = Some(workflow_id.clone());
            previous_running = true;
            Counters::add(&self.counters.schedule_firings, 1);
            tracing::debug!(schedule = %id, workflow = %workflow_id, "Schedule fired");
            self.emit(OutMsg {
                kind: OutKind::Firing,
                exchange: self.topology.workflows(),
                routing_key: String::new(),
                message_id: Some(workflow_id.clone()),
                correlation_id: None,
                priority: None,
                headers: Vec::new(),
                body: schedule::firing_body(&workflow, &id, at),
                part,
            });
            if let Some(to) = reply {
                let report = ScheduleReport {
                    schedule_id: id.to_string(),
                    outcome: "triggered".into(),
                    schedule: Some(info(&armed.row, Some("submitted"))),
                    workflow_id: Some(workflow_id),
                    errors: Vec::new(),
                };
                self.reply_schedule(&to, &report);
            }
        }
        self.ops.push(Op::ScheduleState {
            id: id.clone(),
            state: armed.row.state.clone(),
        });
        self.schedules.hold(armed);
    }

    /// `overlap: cancel_previous`: the previous firing's workflow is
    /// cancelled here when this engine holds it, else by a `cancel` control
    /// request (without `reply_to`) to whichever scheduler does.
    fn cancel_previous(&mut self, previous: &str, part: u16, now: DateTime<Utc>) {
        let cancelled = self
            .cancel(previous, now)
            .or_else(|| self.cancel_unstarted(previous, now));
        if cancelled.is_some() {
            tracing::info!(workflow = %previous, "Previous firing cancelled (overlap: cancel_previous)");
            return;
        }
        let request = ControlRequest::new(ControlKind::Cancel, previous);
        self.emit(OutMsg {
            kind: OutKind::Firing,
            exchange: self.topology.workflows(),
            routing_key: CONTROL_ROUTING_KEY.into(),
            message_id: None,
            correlation_id: None,
            priority: None,
            headers: Vec::new(),
            body: to_json(&request),
            part,
        });
    }

    /// `schedule.create`, checked and within the bounds: stored with the
    /// batch, and fired from its first firing after `now`.
    pub fn create_schedule(
        &mut self,
        checked: CheckedSchedule,
        now: DateTime<Utc>,
    ) -> ScheduleInfo {
        let CheckedSchedule { spec, timing } = checked;
        let row = ScheduleRow {
            id: Arc::from(spec.id.as_str()),
            cron: spec.cron,
            every_ms: spec.every_ms,
            timezone: spec
                .timezone
                .unwrap_or_else(|| schedule::DEFAULT_TIMEZONE.to_owned()),
            overlap: spec.overlap,
            catch_up: spec.catch_up,
            created_at: now,
            state: ScheduleState {
                next_fire_at: timing.next_after(now),
                ..ScheduleState::default()
            },
        };
        let workflow = serde_json::to_vec(&spec.workflow).expect("JSON values serialise");
        let mut shown = info(&row, None);
        shown.workflow = Some(spec.workflow);
        self.ops.push(Op::InsertSchedule {
            row: row.clone(),
            workflow,
        });
        self.schedules.hold(Armed {
            row,
            timing,
            pending: VecDeque::new(),
        });
        shown
    }

    /// `schedule.pause` and `schedule.resume`: a paused schedule does not
    /// fire; resumed, it fires from its first firing after `now` (what it
    /// missed while paused is not caught up). `None` for an unknown id.
    pub fn pause_schedule(
        &mut self,
        id: &str,
        pause: bool,
        now: DateTime<Utc>,
    ) -> Option<ScheduleInfo> {
        let a = self.schedules.armed.get_mut(id)?;
        let s = &mut a.row.state;
        if s.paused != pause {
            s.paused = pause;
            if !pause {
                s.next_fire_at = a.timing.next_after(now);
            }
            let (id, state) = (a.row.id.clone(), s.clone());
            self.ops.push(Op::ScheduleState {
                id: id.clone(),
                state,
            });
            self.schedules.arm(&id);
        }
        let row = &self.schedules.armed.get(id)?.row;
        Some(self.info_here(row))
    }

    /// `schedule.trigger`: one firing now, besides the schedule's own,
    /// answered to `reply` once made (in this batch, when the loop fires
    /// what is due). `false` for an unknown id.
    pub fn trigger_schedule(&mut self, id: &str, reply: ReplyTo, now: DateTime<Utc>) -> bool {
        let Some(a) = self.schedules.armed.get_mut(id) else {
            return false;
        };
        a.pending.push_back((now, Some(reply)));
        let id = a.row.id.clone();
        self.schedules.arm(&id);
        true
    }

    /// `schedule.delete`: the schedule as it was, or `None` for an unknown
    /// id. The workflows it started run on.
    pub fn delete_schedule(&mut self, id: &str) -> Option<ScheduleInfo> {
        let (id, a) = self.schedules.armed.remove_entry(id)?;
        self.ops.push(Op::DeleteSchedule(id.clone()));
        // Triggers not fired yet are answered: the schedule is gone.
        self.unanswered_triggers(&id, a.pending, "not_found", Vec::new());
        Some(self.info_here(&a.row))
    }

    /// Answers the triggers among `pending` that will not fire.
    fn unanswered_triggers(
        &mut self,
        id: &str,
        pending: VecDeque<(DateTime<Utc>, Option<ReplyTo>)>,
        outcome: &str,
        errors: Vec<warren_shared::wire::Rejection>,
    ) {
        for to in pending.into_iter().filter_map(|(_, reply)| reply) {
            let report = ScheduleReport {
                schedule_id: id.to_owned(),
                outcome: outcome.to_owned(),
                schedule: None,
                workflow_id: None,
                errors: errors.clone(),
            };
            self.reply_schedule(&to, &report);
        }
    }

    /// Answers a `schedule.*` request about one schedule.
    pub fn reply_schedule(&mut self, to: &ReplyTo, report: &ScheduleReport) {
        self.emit_to(OutKind::ScheduleReply, to, to_json(report));
    }

    /// Answers `schedule.list`.
    pub fn reply_schedules(&mut self, to: &ReplyTo, page: &SchedulesPage) {
        self.emit_to(OutKind::SchedulesReply, to, to_json(page));
    }
}
