//! The time arithmetic of schedules: when a schedule fires, which firings a
//! pause or an outage missed, and the id of the workflow each firing
//! submits. Pure: no clock is read and nothing is stored; every function
//! is given the instants it needs.
//!
//! # Timing
//!
//! A schedule gives exactly one of `cron` and `every_ms`, and optionally a
//! `timezone` ([`Timing::parse`]).
//!
//! **`cron`**: five fields `minute hour day-of-month month day-of-week`, or
//! six with a leading `second`. Each field is `*` or a comma-separated list
//! of values (`5`), ranges (`1-5`) and steps (`*/15`, `0-30/5`); months
//! may be named `JAN`..`DEC` and weekdays `SUN`..`SAT` (any case).
//! Day-of-week is 0 to 7, both 0 and 7 being Sunday; a weekday range may
//! end on Sunday (`FRI-SUN`). The macros `@yearly` (`@annually`),
//! `@monthly`, `@weekly`, `@daily` (`@midnight`) and `@hourly` stand for
//! `0 0 1 1 *`, `0 0 1 * *`, `0 0 * * 0`, `0 0 * * *` and `0 * * * *`.
//! Not accepted: `@reboot`, `@every` (use `every_ms`), a year field,
//! Quartz's `L`, `W`, `#` and `?`, a step after a single value (`5/15`),
//! a backwards range (`5-1`). Day-of-month and day-of-week combine as in
//! Vixie cron: when either field starts with `*`, a day must match both
//! (`*` matching every day); when both are restricted, a day matching
//! either fires (`0 0 13 * FRI`: every 13th and every Friday). An
//! expression that can never fire (`0 0 30 2 *`) is refused. At most
//! [`MAX_CRON_LEN`] bytes.
//!
//! **`timezone`**: an IANA name (`Europe/Berlin`, exact case), default
//! `UTC`; the cron expression is read on that zone's wall clock. The tz
//! database is compiled into Warren (chrono-tz, tzdata release
//! `chrono_tz::IANA_TZDB_VERSION`), so every scheduler reads the same
//! rules. For `every_ms` the zone plays no part, but it must still be
//! known.
//!
//! **`every_ms`**: fires at `anchor + k * every_ms` for k = 0, 1, 2, ...,
//! where the anchor is given to [`Timing::parse`] (the schedule's creation
//! time, kept by the store, truncated to the millisecond): firings never
//! drift, whatever restarts or pauses happen. From [`MIN_EVERY_MS`] (1 s)
//! to [`MAX_EVERY_MS`] (366 days).
//!
//! Firings exist from 1970-01-01 on, and a cron schedule's until the end
//! of the year 5000 (croner's search horizon), an interval's until the end
//! of 9999.
//!
//! # Daylight saving time
//!
//! Where a zone's clock jumps forward (a gap) or goes back (a repeated
//! range), the hour field decides, as in Vixie cron (ISC cron, the cron of
//! Debian and most Linux systems), which looks at whether a job runs at
//! set clock times or all day long:
//!
//! - **Clock-time schedules**, whose hour field is numbers, lists or
//!   ranges (`30 2 * * *`, `0 9,17 * * 1-5`, `*/15 2 * * *`, `@daily`):
//!   each matching wall time fires once. A wall time that a gap skips
//!   fires at the first instant after the gap (02:30 in Berlin on
//!   2026-03-29 fires at 03:00 CEST); all the skipped times together, and
//!   a real wall time at that instant, are one firing. A wall time that
//!   occurs twice fires at its first occurrence only.
//! - **Periodic schedules**, whose hour field holds `*` or a step
//!   (`*/15 * * * *`, `0 */2 * * *`, `@hourly`): they follow elapsed time.
//!   Wall times in a gap do not exist and do not fire (`*/15 * * * *`
//!   still fires every 15 real minutes across it); in a repeated range
//!   each occurrence fires, in time order.
//!
//! So a change of clock neither skips nor doubles a firing by surprise: a
//! daily job runs once on both transition days, and an every-15-minutes
//! job runs every 15 minutes through both. (Vixie cron also treats a
//! minute field starting with `*` as all day long; Warren looks at the
//! hour field alone, so `*/15 2 * * *` fires four times in the 2 o'clock
//! hour on the fall-back day too, and once at 03:00 on the spring-forward
//! day. `0 0-23 * * *` is clock time: write `*` for elapsed time.)
//!
//! # Catch-up
//!
//! [`Timing::missed`] lists the firings in `(last_fired, now]`, at most
//! `at_most` of them (the most recent, oldest first), and counts the ones
//! it leaves out. It never walks the missed firings one by one: an
//! interval is pure arithmetic, a cron schedule walks back at most
//! `at_most` firings and counts the rest a day at a time (a one-second
//! cron missed for a year costs 365 day counts, not 31 million steps).
//!
//! # Firing ids
//!
//! A firing submits a workflow whose id is derived from the schedule id
//! and the firing time ([`firing_workflow_id`]): the store refuses a
//! second workflow with the same id, so a firing happens once whatever
//! crashes or takeovers come between. Schedule ids are
//! `[A-Za-z0-9._-]{1,100}` ([`valid_schedule_id`]) so the derived id
//! always fits the 128-character workflow id limit.

mod cron;
mod spec;
mod zoned;

#[cfg(test)]
mod dst_tests;
#[cfg(test)]
mod tests;

pub use self::cron::MAX_CRON_LEN;
pub use self::spec::{
    CheckedSchedule, MAX_CATCH_UP, MAX_LIST, MAX_SCHEDULE_BYTES, MAX_SCHEDULES, check, firing_body,
};

use self::cron::CronExpr;
use self::zoned::Zoned;
use crate::validate::{MAX_ECHO_CHARS, shortened};
use chrono::{DateTime, SecondsFormat, Utc};
use chrono_tz::Tz;

/// Shortest `every_ms` (1 s).
pub const MIN_EVERY_MS: u64 = 1_000;
/// Longest `every_ms` (366 days).
pub const MAX_EVERY_MS: u64 = 366 * 24 * 3600 * 1000;
/// The zone of a schedule that names none.
pub const DEFAULT_TIMEZONE: &str = "UTC";
/// Longest `timezone` accepted (bytes); the longest IANA name has 32.
pub const MAX_TIMEZONE_LEN: usize = 64;
/// Longest schedule id: with `:` and a firing time of at most 24
/// characters, a firing's workflow id stays within
/// [`crate::validate::MAX_ID_LEN`].
pub const MAX_SCHEDULE_ID_LEN: usize = 100;

/// 9999-12-31T23:59:59.999Z in milliseconds: no firing is later.
const LAST_MS: i64 = 253_402_300_799_999;
/// 5000-12-31T23:59:59Z in seconds: croner searches no further.
const CRON_LAST: i64 = 95_649_119_999;

/// What a schedule request says about time, as given on the wire.
#[derive(Debug, Clone, Copy, Default)]
pub struct TimingSpec<'a> {
    /// A cron expression (see the module docs).
    pub cron: Option<&'a str>,
    /// A fixed interval in milliseconds.
    pub every_ms: Option<u64>,
    /// An IANA zone name; `UTC` when absent.
    pub timezone: Option<&'a str>,
}

/// A problem with a [`TimingSpec`]; [`TimingError::code`] is its wire code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TimingError {
    /// `invalid_cron`: the cron expression is malformed or never fires.
    #[error("{0}")]
    InvalidCron(String),
    /// `unknown_timezone`: not an IANA zone name.
    #[error("{0}")]
    UnknownTimezone(String),
    /// `invalid_schedule`: both or neither of `cron` and `every_ms`, or
    /// `every_ms` out of range.
    #[error("{0}")]
    InvalidSchedule(String),
}

impl TimingError {
    /// The error's code on the wire.
    pub fn code(&self) -> &'static str {
        match self {
            TimingError::InvalidCron(_) => "invalid_cron",
            TimingError::UnknownTimezone(_) => "unknown_timezone",
            TimingError::InvalidSchedule(_) => "invalid_schedule",
        }
    }
}

/// When a schedule fires: a parsed and checked [`TimingSpec`].
#[derive(Debug, Clone)]
pub struct Timing {
    kind: Kind,
}

#[derive(Debug, Clone)]
enum Kind {
    Cron { expr: Box<CronExpr>, tz: Tz },
    Every { every_ms: i64, anchor_ms: i64 },
}

/// The firings a schedule missed (see [`Timing::missed`]).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Missed {
    /// The most recent missed firings, oldest first.
    pub firings: Vec<DateTime<Utc>>,
    /// How many earlier missed firings `firings` leaves out.
    pub dropped: u64,
}

impl Timing {
    /// Checks a spec, reporting every problem; `anchor` is the instant an
    /// `every_ms` schedule counts from (its creation time), ignored by a
    /// cron schedule.
    pub fn parse(spec: &TimingSpec<'_>, anchor: DateTime<Utc>) -> Result<Timing, Vec<TimingError>> {
        let tz = parse_timezone(spec.timezone.unwrap_or(DEFAULT_TIMEZONE));
        let kind = match (spec.cron, spec.every_ms) {
            (Some(_), Some(_)) => Err(TimingError::InvalidSchedule(
                "give either `cron` or `every_ms`, not both".into(),
            )),
            (None, None) => Err(TimingError::InvalidSchedule(
                "give `cron` or `every_ms`".into(),
            )),
            // (UTC stands in for an unknown zone: that error is returned.)
            (Some(cron), None) => CronExpr::parse(cron)
                .map(|expr| Kind::Cron {
                    expr: Box::new(expr),
                    tz: *tz.as_ref().unwrap_or(&Tz::UTC),
                })
                .map_err(|problem| {
                    TimingError::InvalidCron(shortened(
                        &format!("cron expression `{}` {problem}", shortened(cron, 80)),
                        MAX_ECHO_CHARS,
                    ))
                }),
            (None, Some(every)) if (MIN_EVERY_MS..=MAX_EVERY_MS).contains(&every) => {
                Ok(Kind::Every {
                    every_ms: every as i64,
                    anchor_ms: anchor.timestamp_millis().clamp(0, LAST_MS),
                })
            }
            (None, Some(every)) => Err(TimingError::InvalidSchedule(format!(
                "`every_ms` is {every}; it must be from {MIN_EVERY_MS} (1 s) \
                 to {MAX_EVERY_MS} (366 days)"
            ))),
        };
        match (kind, tz) {
            (Ok(kind), Ok(_)) => Ok(Timing { kind }),
            (Ok(_), Err(e)) => Err(vec![e]),
            (Err(e), Ok(_)) => Err(vec![e]),
            (Err(e), Err(tz_error)) => Err(vec![e, tz_error]),
        }
    }

    /// Whether this is a cron schedule (rather than `every_ms`).
    pub fn is_cron(&self) -> bool {
        matches!(self.kind, Kind::Cron { .. })
    }

    /// The first firing strictly after `after`, or `None` when there is
    /// none (past the horizon given in the module docs).
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match &self.kind {
            Kind::Cron { expr, tz } => {
                let t = after.timestamp().clamp(-1, CRON_LAST);
                let zoned = Zoned { expr, tz: *tz };
                DateTime::from_timestamp(zoned.next_after(t)?, 0)
            }
            Kind::Every {
                every_ms,
                anchor_ms,
            } => {
                let t = after.timestamp_millis().clamp(-1, LAST_MS);
                let k = if t < *anchor_ms {
                    0
                } else {
                    (t - anchor_ms) / every_ms + 1
                };
                let at = anchor_ms + k * every_ms;
                (at <= LAST_MS)
                    .then(|| DateTime::from_timestamp_millis(at))
                    .flatten()
            }
        }
    }

    /// The firings in `(last_fired, now]`: the most recent `at_most` of
    /// them, oldest first, and how many earlier ones were left out.
    pub fn missed(&self, last_fired: DateTime<Utc>, now: DateTime<Utc>, at_most: usize) -> Missed {
        match &self.kind {
            Kind::Cron { expr, tz } => {
                let zoned = Zoned { expr, tz: *tz };
                let last = last_fired.timestamp().clamp(-1, CRON_LAST);
                let now = now.timestamp().clamp(-1, CRON_LAST);
                missed_cron(&zoned, last, now, at_most)
            }
            Kind::Every {
                every_ms,
                anchor_ms,
            } => {
                let last = last_fired.timestamp_millis().clamp(-1, LAST_MS);
                let now = now.timestamp_millis().clamp(-1, LAST_MS);
                missed_every(*every_ms, *anchor_ms, last, now, at_most)
            }
        }
    }
}

fn parse_timezone(name: &str) -> Result<Tz, TimingError> {
    let unknown = || {
        TimingError::UnknownTimezone(format!(
            "unknown timezone `{}`: give an IANA name such as `Europe/Berlin` or `UTC` \
             (the case matters)",
            shortened(name, MAX_TIMEZONE_LEN)
        ))
    };
    if name.len() > MAX_TIMEZONE_LEN {
        return Err(unknown());
    }
    name.parse::<Tz>().map_err(|_| unknown())
}

fn missed_cron(zoned: &Zoned<'_>, last: i64, now: i64, at_most: usize) -> Missed {
    let mut firings = Vec::new();
    let mut to = now;
    while firings.len() < at_most && to > last {
        match zoned.prev_at_or_before(to) {
            Some(c) if c > last => {
                firings.push(c);
                to = c - 1;
            }
            _ => break,
        }
    }
    let dropped = if firings.len() == at_most && to > last {
        zoned.count(last, to)
    } else {
        0
    };
    Missed {
        firings: firings
            .into_iter()
            .rev()
            .filter_map(|s| DateTime::from_timestamp(s, 0))
            .collect(),
        dropped,
    }
}

fn missed_every(every: i64, anchor: i64, last: i64, now: i64, at_most: usize) -> Missed {
    // Firings anchor + k * every for k in [first, end).
    let first = if last < anchor {
        0
    } else {
        (last - anchor) / every + 1
    };
    let end = if now < anchor {
        0
    } else {
        (now.min(LAST_MS) - anchor) / every + 1
    };
    let total = (end - first).max(0) as u64;
    let kept = total.min(at_most as u64);
    Missed {
        firings: (end - kept as i64..end)
            .filter_map(|k| DateTime::from_timestamp_millis(anchor + k * every))
            .collect(),
        dropped: total - kept,
    }
}

/// True for `[A-Za-z0-9._-]{1,100}`: a schedule id from which every
/// firing's workflow id is a valid workflow id.
pub fn valid_schedule_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_SCHEDULE_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// The id of the workflow that the firing of `schedule_id` at `fire_time`
/// submits: `{schedule_id}:{fire_time}`, the time in RFC 3339 UTC to the
/// second (`nightly:2026-03-29T01:00:00Z`), with milliseconds only when it
/// has some (`poll:2026-03-29T01:00:00.250Z`). The same firing always gets
/// the same id and two firings of a schedule never share one; for a
/// [`valid_schedule_id`] it is a valid workflow id of at most 125
/// characters. (A time outside the years 0 to 9999, which no [`Timing`]
/// yields, is written as milliseconds since the epoch.)
pub fn firing_workflow_id(schedule_id: &str, fire_time: DateTime<Utc>) -> String {
    use chrono::{Datelike, Timelike};
    let time = if !(0..=9999).contains(&fire_time.year()) {
        fire_time.timestamp_millis().to_string()
    } else if fire_time.nanosecond() / 1_000_000 == 0 {
        fire_time.to_rfc3339_opts(SecondsFormat::Secs, true)
    } else {
        fire_time.to_rfc3339_opts(SecondsFormat::Millis, true)
    };
    format!("{schedule_id}:{time}")
}
