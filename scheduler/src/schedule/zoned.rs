//! A cron expression read on a time zone's wall clock: where the clock
//! jumps forward or repeats, the daylight saving rule of the module docs.
//!
//! Times are whole seconds: instants since the Unix epoch, and wall times
//! as the same count on the zone's wall clock (`wall = instant + offset`).
//! The time line is cut into *stretches* of one UTC offset; within one,
//! the firings are the matching wall times shifted by that offset, and the
//! rule only acts where two stretches meet:
//! - a clock-time schedule does not fire again on the wall times that a
//!   stretch repeats after the clock went back (it fired on the first
//!   ones), and fires once at the transition for the wall times a forward
//!   jump skipped, when it names any of them;
//! - a periodic schedule fires on every wall time as it occurs: twice in a
//!   repeated range, never in a skipped one.
//!
//! `next_after`, `prev_at_or_before` and `count` all walk the same
//! stretches, so enumerating and counting agree by construction (and the
//! tests check it).
//!
//! Transitions are found by probing the offset a day apart and bisecting.
//! That finds every transition provided two are never less than a day
//! apart: in the bundled tz database they are at least 6.9 days apart
//! since 1970 (America/Boa_Vista, 2000), while a shift itself can be as
//! large as 24 hours (Pacific/Kwajalein 1993, Pacific/Apia 2011).

use super::cron::CronExpr;
use chrono::{DateTime, LocalResult, NaiveDate, Offset, TimeZone};
use chrono_tz::Tz;

const DAY: i64 = 86_400;
/// Stretches one search may cross before giving up (a transition a day
/// apart for ten years, far beyond any zone's).
const MAX_STRETCHES: usize = 4_000;

/// A change of UTC offset: from `at` on, `after` instead of `before`.
#[derive(Debug, Clone, Copy)]
struct Transition {
    at: i64,
    before: i64,
    after: i64,
}

impl Transition {
    fn is_forward(&self) -> bool {
        self.after > self.before
    }
}

/// A cron expression on a zone's wall clock.
pub(super) struct Zoned<'a> {
    pub(super) expr: &'a CronExpr,
    pub(super) tz: Tz,
}

impl Zoned<'_> {
    /// The first firing strictly after `t`.
    pub(super) fn next_after(&self, t: i64) -> Option<i64> {
        // Each turn looks at the stretch holding `from + 1`, from there on.
        let mut from = t;
        for _ in 0..MAX_STRETCHES {
            let o = offset_at(self.tz, from + 1)?;
            if self.fires_for_skipped(from + 1, o)? {
                return Some(from + 1);
            }
            let m = self.next_wall(from + 1 + o)?;
            let c = m - o;
            if let Some(tr) = next_transition(self.tz, from + 1, c) {
                // `c` is past this stretch: go on with the next one.
                from = tr.at - 1;
                continue;
            }
            if !self.expr.periodic
                && let Some(repeat) = self.repeat(m, o)
            {
                // A wall time it already fired on: go on after the
                // repeated range.
                from = repeat.end_wall - o - 1;
                continue;
            }
            return Some(c);
        }
        None
    }

    /// The last firing at or before `t`.
    pub(super) fn prev_at_or_before(&self, t: i64) -> Option<i64> {
        let mut to = t;
        for _ in 0..MAX_STRETCHES {
            let o = offset_at(self.tz, to)?;
            let m = self.prev_wall(to + o)?;
            let c = m - o;
            match prev_transition(self.tz, to, c) {
                None => {
                    if !self.expr.periodic
                        && let Some(repeat) = self.repeat(m, o)
                    {
                        // Every match of this stretch up to `to` repeats a
                        // wall time: the last firing is before the stretch.
                        to = repeat.at - 1;
                        continue;
                    }
                    return Some(c);
                }
                Some(tr) => {
                    // `m` is the last match before the stretch's first
                    // wall time: in the gap when it is past its start.
                    if !self.expr.periodic && tr.is_forward() && m >= tr.at + tr.before {
                        return Some(tr.at);
                    }
                    to = tr.at - 1;
                }
            }
        }
        None
    }

    /// How many firings lie in `(x, y]`.
    pub(super) fn count(&self, x: i64, y: i64) -> u64 {
        let mut total = 0;
        // Each turn counts the stretch holding `from + 1`, up to `y`.
        let mut from = x;
        while from < y {
            let Some(o) = offset_at(self.tz, from + 1) else {
                break;
            };
            let mut first_wall = from + 1 + o;
            if self.fires_for_skipped(from + 1, o) == Some(true) && !self.wall_matches(first_wall) {
                // Unless a real wall time fires there anyway.
                total += 1;
            }
            if !self.expr.periodic
                && let Some(repeat) = self.repeat(first_wall, o)
            {
                first_wall = repeat.end_wall;
            }
            let tr = next_transition(self.tz, from + 1, y);
            let last = tr.map_or(y, |tr| tr.at - 1);
            total += self.count_walls(first_wall, last + o);
            let Some(tr) = tr else { break };
            from = tr.at - 1;
        }
        total
    }

    /// Whether a clock-time schedule fires at instant `s` (offset `o`) for
    /// wall times that a jump forward at `s` skipped.
    fn fires_for_skipped(&self, s: i64, o: i64) -> Option<bool> {
        if self.expr.periodic {
            return Some(false);
        }
        let before = offset_at(self.tz, s - 1)?;
        if before >= o {
            return Some(false);
        }
        Some(self.next_wall(s + before).is_some_and(|g| g < s + o))
    }

    /// The first matching wall time at or after `w`.
    fn next_wall(&self, w: i64) -> Option<i64> {
        let start = DateTime::from_timestamp(w, 0)?;
        let found = self.expr.cron.find_next_occurrence(&start, true).ok()?;
        Some(found.timestamp())
    }

    /// The last matching wall time at or before `w`.
    fn prev_wall(&self, w: i64) -> Option<i64> {
        let start = DateTime::from_timestamp(w, 0)?;
        let found = self.expr.cron.find_previous_occurrence(&start, true).ok()?;
        Some(found.timestamp())
    }

    fn wall_matches(&self, w: i64) -> bool {
        let (day, tod) = (w.div_euclid(DAY), w.rem_euclid(DAY) as u32);
        self.expr.time_matches(tod) && date_of(day).is_some_and(|d| self.expr.date_matches(d))
    }

    /// Matching wall times in `[lo, hi]`, a day at a time.
    fn count_walls(&self, lo: i64, hi: i64) -> u64 {
        if lo > hi {
            return 0;
        }
        let (first, last) = (lo.div_euclid(DAY), hi.div_euclid(DAY));
        let mut n = 0;
        for day in first..=last {
            if !date_of(day).is_some_and(|d| self.expr.date_matches(d)) {
                continue;
            }
            let from = if day == first { lo.rem_euclid(DAY) } else { 0 } as u32;
            let to = if day == last {
                hi.rem_euclid(DAY) + 1
            } else {
                DAY
            } as u32;
            n += self.expr.times_before(to) - self.expr.times_before(from);
        }
        n
    }

    /// When wall time `w`, read at offset `o`, is the second occurrence of
    /// a wall time (the clock went back): where that repeat begins and ends.
    fn repeat(&self, w: i64, o: i64) -> Option<Repeat> {
        let naive = DateTime::from_timestamp(w, 0)?.naive_utc();
        let LocalResult::Ambiguous(x, y) = self.tz.offset_from_local_datetime(&naive) else {
            return None;
        };
        let (x, y) = (seconds(x.fix()), seconds(y.fix()));
        let (earlier, later) = (x.max(y), x.min(y));
        if later != o || earlier <= o {
            return None;
        }
        // The clock went back at some instant in (w - earlier, w - later].
        let at = first_change(self.tz, w - earlier, w - later)?;
        Some(Repeat {
            at,
            end_wall: at + earlier,
        })
    }
}

/// The wall times that the clock going back at `at` repeats: from
/// `at + later offset` to `end_wall` (excluded).
struct Repeat {
    at: i64,
    end_wall: i64,
}

/// The UTC offset (seconds east) in force at instant `s`.
fn offset_at(tz: Tz, s: i64) -> Option<i64> {
    let utc = DateTime::from_timestamp(s, 0)?.naive_utc();
    Some(seconds(tz.offset_from_utc_datetime(&utc).fix()))
}

fn seconds(offset: chrono::FixedOffset) -> i64 {
    i64::from(offset.local_minus_utc())
}

fn date_of(day: i64) -> Option<NaiveDate> {
    Some(DateTime::from_timestamp(day.checked_mul(DAY)?, 0)?.date_naive())
}

/// The first instant in `(lo, hi]` whose offset differs from `lo`'s, given
/// that `hi`'s does and that one transition lies between.
fn first_change(tz: Tz, mut lo: i64, mut hi: i64) -> Option<i64> {
    let o = offset_at(tz, lo)?;
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if offset_at(tz, mid)? == o {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    Some(hi)
}

/// The first transition in `(from, until]`.
fn next_transition(tz: Tz, from: i64, until: i64) -> Option<Transition> {
    let before = offset_at(tz, from)?;
    let mut lo = from;
    while lo < until {
        let hi = lo.saturating_add(DAY).min(until);
        if offset_at(tz, hi)? != before {
            let at = first_change(tz, lo, hi)?;
            let after = offset_at(tz, at)?;
            return Some(Transition { at, before, after });
        }
        lo = hi;
    }
    None
}

/// The transition that starts the stretch holding `to`, if it lies in
/// `(floor, to]`.
fn prev_transition(tz: Tz, to: i64, floor: i64) -> Option<Transition> {
    let after = offset_at(tz, to)?;
    let mut hi = to;
    while hi > floor {
        let lo = hi.saturating_sub(DAY).max(floor);
        let before = offset_at(tz, lo)?;
        if before != after {
            let at = first_change(tz, lo, hi)?;
            let before = offset_at(tz, at - 1)?;
            return Some(Transition { at, before, after });
        }
        hi = lo;
    }
    None
}
