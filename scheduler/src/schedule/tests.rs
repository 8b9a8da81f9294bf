//! Unit tests of schedule timing: the accepted syntax and its errors,
//! intervals, catch-up, firing ids, and garbage that must never panic.
//! Daylight saving cases are in `dst_tests.rs`.

use super::*;

/// An instant from RFC 3339 (any offset).
pub(super) fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s)
        .unwrap_or_else(|e| panic!("bad test time {s}: {e}"))
        .with_timezone(&Utc)
}

fn cron(expr: &str, tz: &str) -> Timing {
    let spec = TimingSpec {
        cron: Some(expr),
        timezone: Some(tz),
        ..TimingSpec::default()
    };
    Timing::parse(&spec, at("2026-01-01T00:00:00Z"))
        .unwrap_or_else(|e| panic!("`{expr}` refused: {e:?}"))
}

fn every(ms: u64, anchor: &str) -> Timing {
    let spec = TimingSpec {
        every_ms: Some(ms),
        ..TimingSpec::default()
    };
    Timing::parse(&spec, at(anchor)).unwrap()
}

/// The next `n` firings after `from`.
fn firings(t: &Timing, from: &str, n: usize) -> Vec<DateTime<Utc>> {
    let mut out = Vec::new();
    let mut after = at(from);
    for _ in 0..n {
        let Some(next) = t.next_after(after) else {
            break;
        };
        assert!(next > after, "{next} is not after {after}");
        out.push(next);
        after = next;
    }
    out
}

/// Checks that `expr` (UTC) fires first at each of `expected` after `from`.
fn check_utc(expr: &str, from: &str, expected: &[&str]) {
    let got = firings(&cron(expr, "UTC"), from, expected.len());
    let want: Vec<_> = expected.iter().map(|s| at(s)).collect();
    assert_eq!(got, want, "`{expr}` after {from}");
}

/// Checks that the spec is refused with exactly these codes, and that
/// each message contains its fragment.
fn refused(spec: TimingSpec<'_>, expected: &[(&str, &str)]) {
    let errors = Timing::parse(&spec, at("2026-01-01T00:00:00Z"))
        .err()
        .unwrap_or_else(|| panic!("{spec:?} accepted"));
    let got: Vec<(&str, String)> = errors.iter().map(|e| (e.code(), e.to_string())).collect();
    assert_eq!(got.len(), expected.len(), "{got:?}");
    for ((code, msg), (want_code, fragment)) in got.iter().zip(expected) {
        assert_eq!(code, want_code, "{got:?}");
        assert!(msg.contains(fragment), "`{msg}` lacks `{fragment}`");
    }
}

fn bad_cron(expr: &str, fragment: &str) {
    let spec = TimingSpec {
        cron: Some(expr),
        ..TimingSpec::default()
    };
    refused(spec, &[("invalid_cron", fragment)]);
}

#[test]
fn refuses_both_or_neither_and_intervals_out_of_range() {
    let both = TimingSpec {
        cron: Some("* * * * *"),
        every_ms: Some(5_000),
        timezone: None,
    };
    refused(both, &[("invalid_schedule", "not both")]);
    refused(
        TimingSpec::default(),
        &[("invalid_schedule", "give `cron` or")],
    );
    for ms in [0, 999, MAX_EVERY_MS + 1, u64::MAX] {
        let spec = TimingSpec {
            every_ms: Some(ms),
            ..TimingSpec::default()
        };
        refused(spec, &[("invalid_schedule", &ms.to_string())]);
    }
    every(MIN_EVERY_MS, "2026-01-01T00:00:00Z");
    every(MAX_EVERY_MS, "2026-01-01T00:00:00Z");
}

#[test]
fn reports_every_problem_at_once() {
    let spec = TimingSpec {
        cron: Some("61 * * * MUN"),
        every_ms: None,
        timezone: Some("Mars/Olympus_Mons"),
    };
    refused(
        spec,
        &[
            (
                "invalid_cron",
                "minute field `61`: 61 is out of range (0 to 59); day-of-week field `MUN`",
            ),
            ("unknown_timezone", "Mars/Olympus_Mons"),
        ],
    );
}

#[test]
fn refuses_unknown_timezones() {
    for tz in [
        "",
        "europe/berlin",
        "Berlin",
        "UTC+1",
        "Europe/Berlin ",
        &"A".repeat(5000),
    ] {
        let spec = TimingSpec {
            every_ms: Some(60_000),
            timezone: Some(tz),
            ..TimingSpec::default()
        };
        refused(spec, &[("unknown_timezone", "IANA name")]);
    }
    for tz in [
        "UTC",
        "Etc/UTC",
        "Europe/Berlin",
        "America/Argentina/ComodRivadavia",
        "US/Eastern",
    ] {
        cron("0 0 * * *", tz);
    }
}

#[test]
fn refuses_malformed_cron_with_the_field_named() {
    for (expr, fragment) in [
        ("", "has 0 fields"),
        ("   ", "has 0 fields"),
        ("* * * *", "has 4 fields"),
        ("* * * * * * *", "has 7 fields; give 5"),
        (
            "60 * * * *",
            "minute field `60`: 60 is out of range (0 to 59)",
        ),
        ("* 24 * * *", "hour field `24`"),
        ("* * 0 * *", "day-of-month field `0`"),
        ("* * 32 * *", "day-of-month field `32`"),
        ("* * * 13 *", "month field `13`"),
        ("* * * 0 *", "month field `0`"),
        ("* * * * 8", "day-of-week field `8`"),
        ("60 * * * * *", "second field `60`"),
        ("5-1 * * * *", "the range 5-1 runs backwards"),
        ("*/0 * * * *", "the step `0` must be a number from 1 to 60"),
        ("*/61 * * * *", "the step `61`"),
        ("5/15 * * * *", "a step follows `*` or a range"),
        ("MON * * * *", "minute field `MON`: `MON` is not a number"),
        (
            "* * * MON *",
            "`MON` is neither a number from 1 to 12 nor a name (JAN, FEB, MAR, ...)",
        ),
        ("* * * * JAN", "day-of-week field `JAN`"),
        ("* * * JANUARY *", "`JANUARY`"),
        ("1,,2 * * * *", "minute field `1,,2`"),
        ("1, * * * *", "minute field `1,`"),
        ("-1 * * * *", "minute field `-1`"),
        ("1-2-3 * * * *", "minute field `1-2-3`"),
        ("*/5/2 * * * *", "minute field `*/5/2`"),
        ("00005 * * * *", "minute field `00005`"),
        ("* * L * *", "day-of-month field `L`"),
        ("* * 15W * *", "day-of-month field `15W`"),
        ("* * * * 5#3", "day-of-week field `5#3`"),
        ("* * ? * *", "day-of-month field `?`"),
        ("* * * * +MON", "day-of-week field `+MON`"),
        ("@reboot", "unknown macro"),
        ("@every 5m", "use `every_ms`"),
        ("@daily 5", "unknown macro"),
        ("０ * * * *", "not ASCII"),
        ("0 0 30 2 *", "never fires"),
        ("0 0 31 4,6,9,11 *", "never fires"),
        ("0 0 30-31 FEB *", "never fires"),
        ("0 0 30 2 */2", "never fires"),
    ] {
        bad_cron(expr, fragment);
    }
    let long = format!("0 0 * * *{}", " ".repeat(MAX_CRON_LEN));
    bad_cron(&long, "at most 256 are accepted");
    // Echoed input is shortened.
    let spec = TimingSpec {
        cron: Some(&"9".repeat(250)),
        ..TimingSpec::default()
    };
    let errors = Timing::parse(&spec, at("2026-01-01T00:00:00Z")).unwrap_err();
    assert!(
        errors[0].to_string().chars().count() <= 300 + 20,
        "{errors:?}"
    );
}

#[test]
fn accepts_the_usual_syntax() {
    for expr in [
        "* * * * *",
        "*/15 * * * *",
        "0 9 * * MON-FRI",
        "0 9 * jan,Jul mon-fri",
        "0 0 1 JAN-MAR/2 *",
        "0-30/10 8-18 * * 1,3,5",
        "*/20 * * * * *",
        "0 0 0 * * 0",
        "  0   0  *  *  *  ",
        "0\t0\t*\t*\t*",
        "@yearly",
        "@ANNUALLY",
        "@monthly",
        "@weekly",
        "@daily",
        "@midnight",
        "@hourly",
        "0 0 30 2 MON",
        "0 0 31 * *",
        "0 0 29 2 *",
    ] {
        cron(expr, "UTC");
    }
}

#[test]
fn fires_on_fields_names_steps_and_macros() {
    check_utc(
        "*/20 * * * * *",
        "2026-04-01T10:00:00Z",
        &[
            "2026-04-01T10:00:20Z",
            "2026-04-01T10:00:40Z",
            "2026-04-01T10:01:00Z",
        ],
    );
    check_utc(
        "0 9 * * MON-FRI",
        "2026-04-03T09:00:00Z", // a Friday, at its firing: strictly after
        &["2026-04-06T09:00:00Z", "2026-04-07T09:00:00Z"],
    );
    check_utc(
        "0 12 * * FRI-SUN",
        "2026-04-01T00:00:00Z",
        &[
            "2026-04-03T12:00:00Z",
            "2026-04-04T12:00:00Z",
            "2026-04-05T12:00:00Z",
            "2026-04-10T12:00:00Z",
        ],
    );
    check_utc(
        "0 0 * * 7",
        "2026-04-01T00:00:00Z",
        &["2026-04-05T00:00:00Z"],
    );
    check_utc(
        "0 0 * * 0",
        "2026-04-01T00:00:00Z",
        &["2026-04-05T00:00:00Z"],
    );
    check_utc("@weekly", "2026-04-01T00:00:00Z", &["2026-04-05T00:00:00Z"]);
    check_utc(
        "@hourly",
        "2026-04-01T00:00:00.5Z",
        &["2026-04-01T01:00:00Z"],
    );
    check_utc(
        "0 0 1 JAN-MAR/2 *",
        "2026-01-01T00:00:00Z",
        &["2026-03-01T00:00:00Z", "2027-01-01T00:00:00Z"],
    );
    // Sub-second `after`: the firing at that second is already past.
    check_utc(
        "* * * * * *",
        "2026-04-01T10:00:00.999Z",
        &["2026-04-01T10:00:01Z"],
    );
}

#[test]
fn day_of_month_and_day_of_week_combine_as_in_vixie_cron() {
    // Both restricted: either matches (the 13th, and every Friday).
    check_utc(
        "0 0 13 * FRI",
        "2026-04-01T00:00:00Z",
        &[
            "2026-04-03T00:00:00Z",
            "2026-04-10T00:00:00Z",
            "2026-04-13T00:00:00Z",
            "2026-04-17T00:00:00Z",
        ],
    );
    // A field starting with `*`: both must match (odd days that are Mondays).
    check_utc(
        "0 0 */2 * MON",
        "2026-04-01T00:00:00Z",
        &[
            "2026-04-13T00:00:00Z",
            "2026-04-27T00:00:00Z",
            "2026-05-11T00:00:00Z",
            "2026-05-25T00:00:00Z",
        ],
    );
    // February 30th never comes, but February's Mondays do.
    check_utc(
        "0 0 30 2 MON",
        "2026-04-01T00:00:00Z",
        &["2027-02-01T00:00:00Z", "2027-02-08T00:00:00Z"],
    );
}

#[test]
fn leap_days_and_short_months() {
    check_utc(
        "0 0 29 2 *",
        "2026-01-01T00:00:00Z",
        &["2028-02-29T00:00:00Z", "2032-02-29T00:00:00Z"],
    );
    // 2100 is not a leap year.
    check_utc(
        "0 0 29 2 *",
        "2097-01-01T00:00:00Z",
        &["2104-02-29T00:00:00Z"],
    );
    check_utc(
        "0 0 31 * *",
        "2026-04-01T00:00:00Z",
        &[
            "2026-05-31T00:00:00Z",
            "2026-07-31T00:00:00Z",
            "2026-08-31T00:00:00Z",
        ],
    );
}

#[test]
fn zones_without_daylight_saving_and_half_hour_offsets() {
    let tokyo = cron("30 2 * * *", "Asia/Tokyo");
    assert_eq!(
        firings(&tokyo, "2026-03-28T12:00:00+09:00", 2),
        [
            at("2026-03-29T02:30:00+09:00"),
            at("2026-03-30T02:30:00+09:00")
        ]
    );
    let kolkata = cron("0 9 * * *", "Asia/Kolkata");
    assert_eq!(
        firings(&kolkata, "2026-10-25T00:00:00Z", 2),
        [
            at("2026-10-25T09:00:00+05:30"),
            at("2026-10-26T09:00:00+05:30")
        ]
    );
    let kathmandu = cron("*/30 * * * *", "Asia/Kathmandu");
    assert_eq!(
        firings(&kathmandu, "2026-10-25T00:00:00Z", 2),
        [
            at("2026-10-25T06:00:00+05:45"),
            at("2026-10-25T06:30:00+05:45")
        ]
    );
}

#[test]
fn intervals_are_anchored_and_never_drift() {
    let t = every(90_000, "2026-01-01T00:00:00.250Z");
    let next = |s: &str| t.next_after(at(s)).map(|d| d.to_rfc3339());
    assert_eq!(
        next("2025-12-31T00:00:00Z").as_deref(),
        Some("2026-01-01T00:00:00.250+00:00")
    );
    assert_eq!(
        next("2026-01-01T00:00:00.249Z").as_deref(),
        Some("2026-01-01T00:00:00.250+00:00")
    );
    assert_eq!(
        next("2026-01-01T00:00:00.250Z").as_deref(),
        Some("2026-01-01T00:01:30.250+00:00")
    );
    assert_eq!(
        next("2026-01-01T00:01:30.249Z").as_deref(),
        Some("2026-01-01T00:01:30.250+00:00")
    );
    // A year later, still on the grid: 250 ms past a multiple of 90 s.
    let far = t.next_after(at("2027-01-01T12:34:56.789Z")).unwrap();
    let since = far - at("2026-01-01T00:00:00.250Z");
    assert_eq!(since.num_milliseconds() % 90_000, 0);
    assert!(far - at("2027-01-01T12:34:56.789Z") <= chrono::TimeDelta::seconds(90));
    // The zone plays no part.
    let spec = TimingSpec {
        every_ms: Some(3_600_000),
        timezone: Some("Europe/Berlin"),
        ..TimingSpec::default()
    };
    let berlin = Timing::parse(&spec, at("2026-10-25T00:00:00Z")).unwrap();
    assert!(!berlin.is_cron());
    let got = firings(&berlin, "2026-10-25T00:00:00Z", 3);
    assert_eq!(
        got,
        [
            at("2026-10-25T01:00:00Z"),
            at("2026-10-25T02:00:00Z"),
            at("2026-10-25T03:00:00Z")
        ]
    );
}

#[test]
fn catch_up_keeps_the_most_recent_and_counts_the_rest() {
    // One second, missed for a year: arithmetic for an interval...
    let t = every(1_000, "2025-01-01T00:00:00Z");
    let m = t.missed(at("2025-01-01T00:00:00Z"), at("2026-01-01T00:00:00Z"), 3);
    assert_eq!(
        m.firings,
        [
            at("2025-12-31T23:59:58Z"),
            at("2025-12-31T23:59:59Z"),
            at("2026-01-01T00:00:00Z")
        ]
    );
    assert_eq!(m.dropped, 365 * 86_400 - 3);
    // ... and a day count for cron.
    let c = cron("* * * * * *", "Europe/Berlin");
    let m = c.missed(at("2025-01-01T00:00:00Z"), at("2026-01-01T00:00:00Z"), 3);
    assert_eq!(m.firings.len(), 3);
    assert_eq!(m.firings[2], at("2026-01-01T00:00:00Z"));
    assert_eq!(m.dropped, 365 * 86_400 - 3);
    // Nothing dropped when all fit; none at all when nothing is missed.
    let daily = cron("0 3 * * *", "Europe/Berlin");
    let all = daily.missed(
        at("2026-03-01T03:00:00+01:00"),
        at("2026-03-04T12:00:00+01:00"),
        10,
    );
    assert_eq!(all.dropped, 0);
    assert_eq!(
        all.firings,
        [
            at("2026-03-02T03:00:00+01:00"),
            at("2026-03-03T03:00:00+01:00"),
            at("2026-03-04T03:00:00+01:00")
        ]
    );
    assert_eq!(
        daily.missed(
            at("2026-03-04T03:00:00+01:00"),
            at("2026-03-04T12:00:00+01:00"),
            10
        ),
        Missed::default()
    );
    assert_eq!(
        daily.missed(at("2026-03-05T00:00:00Z"), at("2026-03-04T00:00:00Z"), 10),
        Missed::default()
    );
    // A month across the spring change, two kept.
    let m = daily.missed(
        at("2026-03-01T03:00:00+01:00"),
        at("2026-04-01T12:00:00+02:00"),
        2,
    );
    assert_eq!(
        m.firings,
        [
            at("2026-03-31T03:00:00+02:00"),
            at("2026-04-01T03:00:00+02:00")
        ]
    );
    assert_eq!(m.dropped, 29);
    // at_most 0: only the count.
    let m = daily.missed(
        at("2026-03-01T03:00:00+01:00"),
        at("2026-04-01T12:00:00+02:00"),
        0,
    );
    assert_eq!((m.firings.len(), m.dropped), (0, 31));
    // (last_fired, now]: a firing at `now` counts, one at `last_fired` not.
    let m = t.missed(at("2025-01-01T00:00:01Z"), at("2025-01-01T00:00:03Z"), 10);
    assert_eq!(
        m.firings,
        [at("2025-01-01T00:00:02Z"), at("2025-01-01T00:00:03Z")]
    );
    // Before the anchor nothing was missed.
    let m = t.missed(at("2024-01-01T00:00:00Z"), at("2025-01-01T00:00:00Z"), 10);
    assert_eq!(m.firings, [at("2025-01-01T00:00:00Z")]);
}

#[test]
fn firing_ids_are_deterministic_valid_and_bounded() {
    let id = firing_workflow_id("nightly", at("2026-03-29T01:00:00Z"));
    assert_eq!(id, "nightly:2026-03-29T01:00:00Z");
    let id = firing_workflow_id("poll", at("2026-03-29T01:00:00.250Z"));
    assert_eq!(id, "poll:2026-03-29T01:00:00.250Z");
    // Sub-millisecond parts do not make two ids for one firing.
    assert_eq!(
        firing_workflow_id("poll", at("2026-03-29T01:00:00.250999Z")),
        "poll:2026-03-29T01:00:00.250Z"
    );
    let longest = "s".repeat(MAX_SCHEDULE_ID_LEN);
    assert!(valid_schedule_id(&longest));
    for time in [at("9999-12-31T23:59:59.999Z"), at("1970-01-01T00:00:00Z")] {
        let id = firing_workflow_id(&longest, time);
        assert!(id.len() <= 125, "{}", id.len());
        assert!(crate::validate::valid_workflow_id(&id), "{id}");
    }
    for bad in [
        "",
        "a:b",
        "a b",
        "a/b",
        "ünï",
        &"s".repeat(MAX_SCHEDULE_ID_LEN + 1),
    ] {
        assert!(!valid_schedule_id(bad), "{bad}");
    }
    assert!(valid_schedule_id("report.daily_eu-1"));
    // Out of any Timing's range: still an id, no panic.
    assert_eq!(
        firing_workflow_id("x", DateTime::<Utc>::MAX_UTC),
        format!("x:{}", DateTime::<Utc>::MAX_UTC.timestamp_millis())
    );
}

#[test]
fn extreme_instants_neither_panic_nor_leave_the_range() {
    let instants = [
        DateTime::<Utc>::MIN_UTC,
        at("1969-12-31T23:59:59Z"),
        at("4999-12-31T23:59:59Z"),
        DateTime::<Utc>::MAX_UTC,
    ];
    let timings = [
        cron("0 0 1 1 *", "Europe/Berlin"),
        cron("* * * * * *", "UTC"),
        every(MAX_EVERY_MS, "2026-01-01T00:00:00Z"),
        every(1_000, "9999-12-31T23:59:59Z"),
    ];
    for t in &timings {
        for a in instants {
            if let Some(next) = t.next_after(a) {
                assert!(next > a && next.timestamp() >= 0, "{next}");
                assert!(next <= at("9999-12-31T23:59:59.999Z"));
            }
            for b in instants {
                // (A cron count over three thousand years is left to the
                // one case below: it is bounded, but slow unoptimized.)
                if t.is_cron() && a < at("1970-01-01T00:00:00Z") && b > at("2026-01-01T00:00:00Z") {
                    continue;
                }
                let m = t.missed(a, b, 2);
                assert!(m.firings.len() <= 2);
            }
        }
    }
    // The first firing of a cron schedule is in 1970 or later.
    let yearly = cron("0 0 1 1 *", "UTC");
    assert_eq!(
        yearly.next_after(DateTime::<Utc>::MIN_UTC),
        Some(at("1970-01-01T00:00:00Z"))
    );
    // Counting thousands of years of a yearly schedule is still bounded.
    let m = yearly.missed(DateTime::<Utc>::MIN_UTC, DateTime::<Utc>::MAX_UTC, 1);
    assert_eq!(m.firings, [at("5000-01-01T00:00:00Z")]);
    assert_eq!(m.dropped, 5000 - 1970);
    assert_eq!(yearly.next_after(at("5000-01-01T00:00:00Z")), None);
}

/// Garbage never panics, and what is accepted behaves.
#[test]
fn garbage_never_panics() {
    let mut rng = fastrand::Rng::with_seed(17);
    let alphabet: Vec<char> = "0123456789*/,-@ ?LW#+MONFRIJANDECSUNmonjan\t\u{e9}\u{0}"
        .chars()
        .collect();
    let tokens = [
        "*",
        "*/7",
        "1-5",
        "0",
        "59",
        "60",
        "7",
        "MON",
        "sun",
        "JAN",
        "5/2",
        "3-1",
        "",
        "1,2,,3",
        "*/0",
        "L",
        "?",
        "2-30/3",
        "FRI-SUN",
        "99999999999999999999",
    ];
    let zones = [
        "UTC",
        "Europe/Berlin",
        "America/New_York",
        "Australia/Lord_Howe",
        "Asia/Kathmandu",
        "nowhere",
        "",
    ];
    let after = at("2026-03-29T00:30:00Z");
    for i in 0..3_000 {
        let expr: String = if i % 2 == 0 {
            (0..rng.usize(0..40))
                .map(|_| alphabet[rng.usize(..alphabet.len())])
                .collect()
        } else {
            (0..rng.usize(4..8))
                .map(|_| tokens[rng.usize(..tokens.len())])
                .collect::<Vec<_>>()
                .join(" ")
        };
        let spec = TimingSpec {
            cron: Some(&expr),
            every_ms: (i % 7 == 0).then(|| rng.u64(..)),
            timezone: Some(zones[rng.usize(..zones.len())]),
        };
        match Timing::parse(&spec, after) {
            Err(errors) => assert!(!errors.is_empty()),
            Ok(t) => {
                if let Some(next) = t.next_after(after) {
                    assert!(next > after, "`{expr}`");
                }
                let m = t.missed(after, after + chrono::TimeDelta::days(2), 3);
                assert!(m.firings.len() <= 3);
            }
        }
    }
}
