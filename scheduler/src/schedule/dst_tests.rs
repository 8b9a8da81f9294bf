//! Daylight saving: both transitions of Europe/Berlin, America/New_York,
//! Australia/Adelaide (a half-hour zone) and Australia/Lord_Howe (a
//! half-hour shift), for clock-time and periodic schedules, each case
//! data-driven through `check`, which also holds catch-up to the same
//! answer (walking back and counting must agree with walking forward).

use super::tests::at;
use super::*;

/// Checks that `expr` in `tz` fires at exactly `expected` (RFC 3339, any
/// offset) after `from`, and that catch-up over the same span finds the
/// same firings: all of them, the last two and a count of the rest, or
/// only a count.
fn check(tz: &str, expr: &str, from: &str, expected: &[&str]) {
    let spec = TimingSpec {
        cron: Some(expr),
        timezone: Some(tz),
        ..TimingSpec::default()
    };
    let t = Timing::parse(&spec, at(from)).unwrap_or_else(|e| panic!("`{expr}`: {e:?}"));
    let want: Vec<DateTime<Utc>> = expected.iter().map(|s| at(s)).collect();
    let mut got = Vec::new();
    let mut after = at(from);
    while got.len() < want.len() {
        let Some(next) = t.next_after(after) else {
            break;
        };
        got.push(next);
        after = next;
    }
    let show = |v: &[DateTime<Utc>]| v.iter().map(|d| d.to_rfc3339()).collect::<Vec<_>>();
    assert_eq!(show(&got), show(&want), "`{expr}` in {tz} after {from}");

    let last = *want.last().expect("cases list firings");
    let all = t.missed(at(from), last, usize::MAX);
    assert_eq!(
        show(&all.firings),
        show(&want),
        "catch-up of `{expr}` in {tz}"
    );
    assert_eq!(all.dropped, 0);
    let two = t.missed(at(from), last, 2);
    assert_eq!(two.firings, want[want.len().saturating_sub(2)..]);
    assert_eq!(
        two.dropped,
        want.len().saturating_sub(2) as u64,
        "count of `{expr}` in {tz}"
    );
    let none = t.missed(at(from), last, 0);
    assert_eq!(none.dropped, want.len() as u64, "count of `{expr}` in {tz}");
}

const BERLIN: &str = "Europe/Berlin";
const NEW_YORK: &str = "America/New_York";

// Europe/Berlin, 2026-03-29: at 01:00Z the clock jumps from 02:00 CET to
// 03:00 CEST; 02:00 to 02:59 do not exist.

#[test]
fn berlin_spring_clock_time_fires_once_after_the_gap() {
    check(
        BERLIN,
        "30 2 * * *",
        "2026-03-28T00:00:00+01:00",
        &[
            "2026-03-28T02:30:00+01:00",
            "2026-03-29T03:00:00+02:00",
            "2026-03-30T02:30:00+02:00",
        ],
    );
    // A skipped time and a real one at the same instant are one firing.
    check(
        BERLIN,
        "0 2,3 * * *",
        "2026-03-28T00:00:00+01:00",
        &[
            "2026-03-28T02:00:00+01:00",
            "2026-03-28T03:00:00+01:00",
            "2026-03-29T03:00:00+02:00",
            "2026-03-30T02:00:00+02:00",
            "2026-03-30T03:00:00+02:00",
        ],
    );
    // From the last second before the jump, and from the jump itself.
    check(
        BERLIN,
        "30 2 * * *",
        "2026-03-29T00:59:59Z",
        &["2026-03-29T03:00:00+02:00", "2026-03-30T02:30:00+02:00"],
    );
    check(
        BERLIN,
        "30 2 * * *",
        "2026-03-29T01:00:00Z",
        &["2026-03-30T02:30:00+02:00"],
    );
    // Every minute of the 2 o'clock hour: once, at 03:00.
    check(
        BERLIN,
        "*/15 2 * * *",
        "2026-03-28T23:00:00+01:00",
        &[
            "2026-03-29T03:00:00+02:00",
            "2026-03-30T02:00:00+02:00",
            "2026-03-30T02:15:00+02:00",
        ],
    );
    // Six fields, a second inside the gap.
    check(
        BERLIN,
        "59 59 2 * * *",
        "2026-03-28T12:00:00+01:00",
        &["2026-03-29T03:00:00+02:00", "2026-03-30T02:59:59+02:00"],
    );
    // Times on either side of the gap are untouched.
    check(
        BERLIN,
        "0 0,4 * * *",
        "2026-03-28T12:00:00+01:00",
        &[
            "2026-03-29T00:00:00+01:00",
            "2026-03-29T04:00:00+02:00",
            "2026-03-30T00:00:00+02:00",
        ],
    );
}

#[test]
fn berlin_spring_periodic_skips_the_gap_by_elapsed_time() {
    check(
        BERLIN,
        "*/30 * * * *",
        "2026-03-29T01:00:00+01:00",
        &[
            "2026-03-29T01:30:00+01:00",
            "2026-03-29T03:00:00+02:00",
            "2026-03-29T03:30:00+02:00",
        ],
    );
    check(
        BERLIN,
        "30 * * * *",
        "2026-03-29T00:45:00+01:00",
        &[
            "2026-03-29T01:30:00+01:00",
            "2026-03-29T03:30:00+02:00",
            "2026-03-29T04:30:00+02:00",
        ],
    );
    check(
        BERLIN,
        "0 */2 * * *",
        "2026-03-28T23:00:00+01:00",
        &[
            "2026-03-29T00:00:00+01:00",
            "2026-03-29T04:00:00+02:00",
            "2026-03-29T06:00:00+02:00",
        ],
    );
    // Every second: the last before the gap, the first after.
    check(
        BERLIN,
        "* * * * * *",
        "2026-03-29T01:59:58+01:00",
        &[
            "2026-03-29T01:59:59+01:00",
            "2026-03-29T03:00:00+02:00",
            "2026-03-29T03:00:01+02:00",
        ],
    );
}

// Europe/Berlin, 2026-10-25: at 01:00Z the clock goes back from 03:00
// CEST to 02:00 CET; 02:00 to 02:59 happen twice.

#[test]
fn berlin_fall_clock_time_fires_at_the_first_occurrence_only() {
    check(
        BERLIN,
        "30 2 * * *",
        "2026-10-24T00:00:00+02:00",
        &[
            "2026-10-24T02:30:00+02:00",
            "2026-10-25T02:30:00+02:00",
            "2026-10-26T02:30:00+01:00",
        ],
    );
    check(
        BERLIN,
        "*/20 2 * * *",
        "2026-10-25T00:00:00+02:00",
        &[
            "2026-10-25T02:00:00+02:00",
            "2026-10-25T02:20:00+02:00",
            "2026-10-25T02:40:00+02:00",
            "2026-10-26T02:00:00+01:00",
        ],
    );
    // From inside the repeat (second half): already fired at 02:45 CEST.
    check(
        BERLIN,
        "45 2 * * *",
        "2026-10-25T02:10:00+01:00",
        &["2026-10-26T02:45:00+01:00"],
    );
    // From the first half, past its time: not again in the second half.
    check(
        BERLIN,
        "10 2 * * *",
        "2026-10-25T02:30:00+02:00",
        &["2026-10-26T02:10:00+01:00"],
    );
    // From the first half, before its time: the first occurrence.
    check(
        BERLIN,
        "45 2 * * *",
        "2026-10-25T02:10:00+02:00",
        &["2026-10-25T02:45:00+02:00", "2026-10-26T02:45:00+01:00"],
    );
    check(
        BERLIN,
        "0 1-3 * * *",
        "2026-10-25T00:00:00+02:00",
        &[
            "2026-10-25T01:00:00+02:00",
            "2026-10-25T02:00:00+02:00",
            "2026-10-25T03:00:00+01:00",
        ],
    );
}

#[test]
fn berlin_fall_periodic_fires_through_the_repeated_hour() {
    check(
        BERLIN,
        "*/30 * * * *",
        "2026-10-25T01:00:00+02:00",
        &[
            "2026-10-25T01:30:00+02:00",
            "2026-10-25T02:00:00+02:00",
            "2026-10-25T02:30:00+02:00",
            "2026-10-25T02:00:00+01:00",
            "2026-10-25T02:30:00+01:00",
            "2026-10-25T03:00:00+01:00",
        ],
    );
    check(
        BERLIN,
        "@hourly",
        "2026-10-25T00:30:00+02:00",
        &[
            "2026-10-25T01:00:00+02:00",
            "2026-10-25T02:00:00+02:00",
            "2026-10-25T02:00:00+01:00",
            "2026-10-25T03:00:00+01:00",
        ],
    );
    // From the first half: what is left of it, then all of the second.
    check(
        BERLIN,
        "*/20 * * * *",
        "2026-10-25T02:30:00+02:00",
        &[
            "2026-10-25T02:40:00+02:00",
            "2026-10-25T02:00:00+01:00",
            "2026-10-25T02:20:00+01:00",
            "2026-10-25T02:40:00+01:00",
            "2026-10-25T03:00:00+01:00",
        ],
    );
    // From the first half past its last match: straight to the second.
    check(
        BERLIN,
        "10 * * * *",
        "2026-10-25T02:30:00+02:00",
        &["2026-10-25T02:10:00+01:00", "2026-10-25T03:10:00+01:00"],
    );
    // From the second half.
    check(
        BERLIN,
        "*/20 * * * *",
        "2026-10-25T02:30:00+01:00",
        &["2026-10-25T02:40:00+01:00", "2026-10-25T03:00:00+01:00"],
    );
    check(
        BERLIN,
        "0 */2 * * *",
        "2026-10-25T01:00:00+02:00",
        &[
            "2026-10-25T02:00:00+02:00",
            "2026-10-25T02:00:00+01:00",
            "2026-10-25T04:00:00+01:00",
        ],
    );
}

// America/New_York: 2026-03-08 02:00 EST -> 03:00 EDT (07:00Z), and
// 2026-11-01 02:00 EDT -> 01:00 EST (06:00Z), 01:00 to 01:59 twice.

#[test]
fn new_york_both_transitions() {
    check(
        NEW_YORK,
        "30 2 * * *",
        "2026-03-07T00:00:00-05:00",
        &[
            "2026-03-07T02:30:00-05:00",
            "2026-03-08T03:00:00-04:00",
            "2026-03-09T02:30:00-04:00",
        ],
    );
    check(
        NEW_YORK,
        "30 1 * * *",
        "2026-10-31T00:00:00-04:00",
        &[
            "2026-10-31T01:30:00-04:00",
            "2026-11-01T01:30:00-04:00",
            "2026-11-02T01:30:00-05:00",
        ],
    );
    check(
        NEW_YORK,
        "*/30 * * * *",
        "2026-11-01T00:45:00-04:00",
        &[
            "2026-11-01T01:00:00-04:00",
            "2026-11-01T01:30:00-04:00",
            "2026-11-01T01:00:00-05:00",
            "2026-11-01T01:30:00-05:00",
            "2026-11-01T02:00:00-05:00",
        ],
    );
    check(
        NEW_YORK,
        "0 9 * * MON-FRI",
        "2026-03-06T12:00:00-05:00",
        &["2026-03-09T09:00:00-04:00", "2026-03-10T09:00:00-04:00"],
    );
}

// Australia/Adelaide (+09:30 / +10:30): 2026-04-05 03:00 ACDT -> 02:00
// ACST, and 2026-10-04 02:00 ACST -> 03:00 ACDT.

#[test]
fn adelaide_half_hour_zone_with_daylight_saving() {
    check(
        "Australia/Adelaide",
        "30 2 * * *",
        "2026-04-04T00:00:00+10:30",
        &[
            "2026-04-04T02:30:00+10:30",
            "2026-04-05T02:30:00+10:30",
            "2026-04-06T02:30:00+09:30",
        ],
    );
    check(
        "Australia/Adelaide",
        "30 2 * * *",
        "2026-10-03T00:00:00+09:30",
        &[
            "2026-10-03T02:30:00+09:30",
            "2026-10-04T03:00:00+10:30",
            "2026-10-05T02:30:00+10:30",
        ],
    );
}

// Australia/Lord_Howe shifts by half an hour: 2026-04-05 02:00 (+11:00)
// -> 01:30 (+10:30), and 2026-10-04 02:00 (+10:30) -> 02:30 (+11:00).

#[test]
fn lord_howe_half_hour_shift() {
    check(
        "Australia/Lord_Howe",
        "45 1 * * *",
        "2026-04-04T12:00:00+11:00",
        &["2026-04-05T01:45:00+11:00", "2026-04-06T01:45:00+10:30"],
    );
    check(
        "Australia/Lord_Howe",
        "*/15 * * * *",
        "2026-04-05T01:20:00+11:00",
        &[
            "2026-04-05T01:30:00+11:00",
            "2026-04-05T01:45:00+11:00",
            "2026-04-05T01:30:00+10:30",
            "2026-04-05T01:45:00+10:30",
            "2026-04-05T02:00:00+10:30",
        ],
    );
    check(
        "Australia/Lord_Howe",
        "15 2 * * *",
        "2026-10-03T12:00:00+10:30",
        &["2026-10-04T02:30:00+11:00", "2026-10-05T02:15:00+11:00"],
    );
    check(
        "Australia/Lord_Howe",
        "*/15 * * * *",
        "2026-10-04T01:50:00+10:30",
        &["2026-10-04T02:30:00+11:00", "2026-10-04T02:45:00+11:00"],
    );
}

/// Random schedules around the transitions: walking forward, walking back
/// and counting agree.
#[test]
fn enumeration_and_catch_up_agree_around_transitions() {
    let mut rng = fastrand::Rng::with_seed(29);
    let minutes = ["0", "*/15", "30", "0,45", "*", "59", "*/7"];
    let hours = ["*", "2", "1-3", "*/2", "0,2,4", "3", "1"];
    // Each zone with the instant of a transition (UTC has none).
    let zones = [
        (BERLIN, "2026-03-29T01:00:00Z"),
        (BERLIN, "2026-10-25T01:00:00Z"),
        (NEW_YORK, "2026-11-01T06:00:00Z"),
        ("Australia/Lord_Howe", "2026-04-04T15:00:00Z"),
        ("Australia/Lord_Howe", "2026-10-03T15:30:00Z"),
        ("UTC", "2026-10-25T01:00:00Z"),
    ];
    for _ in 0..200 {
        let expr = format!(
            "{} {} * * *",
            minutes[rng.usize(..minutes.len())],
            hours[rng.usize(..hours.len())]
        );
        let (tz, transition) = zones[rng.usize(..zones.len())];
        // Anywhere in the hours around it, or a second from it.
        let from = at(transition)
            + if rng.bool() {
                chrono::TimeDelta::minutes(rng.i64(-180..180))
            } else {
                chrono::TimeDelta::seconds(rng.i64(-2..=2))
            };
        let spec = TimingSpec {
            cron: Some(&expr),
            timezone: Some(tz),
            ..TimingSpec::default()
        };
        let t = Timing::parse(&spec, from).unwrap();
        let mut forward = Vec::new();
        let mut after = from;
        for _ in 0..rng.usize(1..40) {
            after = t.next_after(after).unwrap();
            forward.push(after);
        }
        let last = *forward.last().unwrap();
        let back = t.missed(from, last, usize::MAX);
        assert_eq!(back.firings, forward, "`{expr}` in {tz} from {from}");
        let counted = t.missed(from, last, 1);
        assert_eq!(
            counted.dropped,
            forward.len() as u64 - 1,
            "`{expr}` in {tz} from {from}"
        );
        // No two firings at one instant, and all in order.
        assert!(forward.windows(2).all(|w| w[0] < w[1]));
    }
}
