//! The soak's verdicts, computed from its rows: throughput holds (the last
//! interval within 10 % of the first measured one, which itself carries
//! the offered load), memory and store reach a plateau (no growth over
//! the second half), and every workflow ends as its kind expects.
//!
//! **Warm-up.** Interval 0 holds the ramp (the first outcomes arrive a
//! latency after the first submissions), and until one retention has
//! passed nothing is deleted, so the store and the scheduler's caches
//! still fill. The first *measured* interval is the first that starts
//! once both are over: at or after max(one interval, the retention).
//!
//! **Plateau.** The run's intervals in quarters: the peak of a resource
//! over the last quarter may exceed its peak over the second quarter by
//! at most [`Allowance`] (relative plus absolute slack, for the
//! allocator's and the WAL's steps). The second quarter must start after
//! the warm-up, so a run lasts at least four warm-ups. A leak of `L`
//! bytes per workflow at `r` workflows a second grows a resource by
//! `L * r * T/2` between the ends of those quarters; each verdict says
//! which `L` it would have caught.

use super::series::{Row, Totals};
use serde::Serialize;
use std::{ops::Range, time::Duration};

/// A verdict: what was checked, whether it held, and the figures.
#[derive(Clone, Debug, Serialize)]
pub struct Verdict {
    pub name: String,
    pub passed: bool,
    pub detail: String,
}

/// How far the last interval's throughput may be from the first's (and
/// the first's from the offered load).
pub const THROUGHPUT_TOLERANCE: f64 = 0.10;

/// How much a resource's peak may grow from the second quarter to the
/// last: `relative` of the second quarter's peak, plus `slack_bytes`.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Allowance {
    pub relative: f64,
    pub slack_bytes: u64,
}

impl Allowance {
    fn of(self, reference: u64) -> u64 {
        (reference as f64 * self.relative) as u64 + self.slack_bytes
    }
}

/// For the scheduler's and the worker's RSS.
pub const RSS: Allowance = Allowance {
    relative: 0.05,
    slack_bytes: 2 << 20,
};
/// For the store's size on disk.
pub const STORE: Allowance = Allowance {
    relative: 0.10,
    slack_bytes: 1 << 20,
};

/// Which intervals the verdicts compare.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Window {
    pub intervals: usize,
    /// The first measured interval (see the module docs).
    pub first: usize,
}

impl Window {
    /// A run of `intervals` of `interval`, warming up for `warmup`.
    pub fn new(intervals: usize, interval: Duration, warmup: Duration) -> anyhow::Result<Window> {
        let first = warmup
            .as_nanos()
            .div_ceil(interval.as_nanos().max(1))
            .max(1) as usize;
        if intervals < 4 || first > intervals / 4 {
            anyhow::bail!(
                "a soak of {intervals} intervals of {interval:?} is too short: its second quarter must start after the warm-up ({warmup:?}, the retention or one interval), so it needs at least {} intervals",
                (4 * first).max(4)
            );
        }
        Ok(Window { intervals, first })
    }

    pub fn second_quarter(&self) -> Range<usize> {
        self.intervals / 4..self.intervals / 2
    }

    pub fn last_quarter(&self) -> Range<usize> {
        self.intervals - self.intervals / 4..self.intervals
    }
}

/// Throughput: the last interval within [`THROUGHPUT_TOLERANCE`] of the
/// first measured one, in workflows and in task attempts a second; and
/// that first one within it of the `offered` workflows a second (else the
/// system never carried the load, and a steady throughput would only be
/// a steady saturation).
pub fn throughput(rows: &[Row], w: &Window, offered: f64) -> Vec<Verdict> {
    let (first, last) = (&rows[w.first], &rows[w.intervals - 1]);
    let near = |name: String, value: f64, reference: f64| {
        let ratio = value / reference;
        Verdict {
            passed: (ratio - 1.0).abs() <= THROUGHPUT_TOLERANCE,
            detail: format!("{value:.1} vs {reference:.1}: {ratio:.3}x"),
            name,
        }
    };
    let pct = THROUGHPUT_TOLERANCE * 100.0;
    vec![
        near(
            format!(
                "the offered load is carried: workflows/s in interval {} within {pct} % of {offered}",
                w.first
            ),
            first.workflows_per_s,
            offered,
        ),
        near(
            format!(
                "workflows/s in the last interval within {pct} % of interval {}",
                w.first
            ),
            last.workflows_per_s,
            first.workflows_per_s,
        ),
        near(
            format!(
                "tasks/s in the last interval within {pct} % of interval {}",
                w.first
            ),
            last.tasks_per_s,
            first.tasks_per_s,
        ),
    ]
}

/// What a plateau verdict reads from each row.
pub type Resource = fn(&Row) -> Option<u64>;

/// A resource reaches a plateau: its peak over the last quarter is within
/// `a` of its peak over the second quarter. `rate` (workflows a second)
/// and `interval` give the smallest leak per workflow it would catch.
pub fn plateau(
    what: &str,
    (rows, read): (&[Row], Resource),
    w: &Window,
    a: Allowance,
    (rate, interval): (f64, Duration),
) -> Verdict {
    let name = format!("{what} reaches a plateau (last quarter's peak vs the second quarter's)");
    let peak = |r: Range<usize>| {
        rows[r]
            .iter()
            .map(read)
            .try_fold(0u64, |m, v| v.map(|v| m.max(v)))
    };
    let (Some(reference), Some(end)) = (peak(w.second_quarter()), peak(w.last_quarter())) else {
        return Verdict {
            name,
            passed: false,
            detail: "not sampled in every interval of both quarters".into(),
        };
    };
    let allowed = a.of(reference);
    // Seconds between the ends of the two quarters.
    let apart = (w.intervals - w.intervals / 2) as f64 * interval.as_secs_f64();
    let caught = allowed as f64 / (rate * apart);
    let mb = |b: f64| b / (1024.0 * 1024.0);
    Verdict {
        name,
        passed: end <= reference + allowed,
        detail: format!(
            "{:.1} MB in the second quarter, {:.1} MB in the last: {:+.1} MB (allowed +{:.1} MB; catches a leak of {caught:.0} bytes or more per workflow)",
            mb(reference as f64),
            mb(end as f64),
            mb(end as f64 - reference as f64),
            mb(allowed as f64),
        ),
    }
}

/// Every workflow ended as its kind expects, and none was lost.
pub fn outcomes(t: &Totals) -> Vec<Verdict> {
    let ended = t.succeeded + t.failed_as_expected + t.unexpected;
    vec![
        Verdict {
            name: "every workflow ended as its kind expects".into(),
            passed: t.unexpected == 0,
            detail: format!(
                "{} succeeded, {} failed as expected, {} otherwise",
                t.succeeded, t.failed_as_expected, t.unexpected
            ),
        },
        Verdict {
            name: "every submitted workflow's outcome arrived".into(),
            passed: t.lost == 0 && ended == t.submitted,
            detail: format!(
                "{ended} of {} ({} lost, {} after the last interval)",
                t.submitted, t.lost, t.ended_in_drain
            ),
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    const MB: f64 = 1024.0 * 1024.0;
    /// The issue's figure: what each finished workflow left in the store.
    const LEAK_PER_WORKFLOW: f64 = 2.2 * 1024.0;

    /// Rows of `n` intervals of `secs`, carrying `wps` workflows a second
    /// (15.3 task attempts each) and the resource `bytes(t)` at their end.
    fn rows(
        n: usize,
        secs: f64,
        wps: impl Fn(usize) -> f64,
        bytes: impl Fn(f64) -> f64,
    ) -> Vec<Row> {
        (0..n)
            .map(|k| {
                let end_s = secs * (k + 1) as f64;
                let b = Some(bytes(end_s) as u64);
                Row {
                    index: k,
                    end_s,
                    submitted: 0,
                    ended: 0,
                    workflows_per_s: wps(k),
                    tasks_per_s: wps(k) * 15.3,
                    latency_p50_ms: 20.0,
                    latency_p99_ms: 200.0,
                    failed_as_expected: 0,
                    unexpected: 0,
                    lost: 0,
                    in_flight: 0,
                    scheduler_rss: b,
                    worker_rss: b,
                    store: b,
                    pruned: None,
                    load: None,
                }
            })
            .collect()
    }

    /// A little noise that does not grow: ±1 % by interval.
    fn noise(t: f64) -> f64 {
        1.0 + 0.01 * (t * 0.7).sin()
    }

    fn check_plateau(rows: &[Row], w: &Window, a: Allowance, rate: f64, secs: f64) -> Verdict {
        let store: Resource = |r| r.store;
        plateau(
            "store",
            (rows, store),
            w,
            a,
            (rate, Duration::from_secs_f64(secs)),
        )
    }

    /// The CI run (2 minutes, 10 s intervals, 20 s retention, 20/s) and
    /// the documented one (30 minutes, 1 minute each, 40/s).
    const RUNS: [(usize, f64, f64, f64); 2] = [(12, 10.0, 20.0, 20.0), (30, 60.0, 60.0, 40.0)];

    #[test]
    fn a_flat_resource_passes() {
        for (n, secs, warmup, rate) in RUNS {
            let w = Window::new(
                n,
                Duration::from_secs_f64(secs),
                Duration::from_secs_f64(warmup),
            )
            .unwrap();
            for base in [8.0 * MB, 40.0 * MB, 300.0 * MB] {
                let r = rows(n, secs, |_| rate, |t| base * noise(t));
                for a in [RSS, STORE] {
                    let v = check_plateau(&r, &w, a, rate, secs);
                    assert!(v.passed, "{n} x {secs} s, {base}: {}", v.detail);
                }
            }
        }
    }

    #[test]
    fn a_leak_of_the_issues_size_fails() {
        // 2.2 KB per finished workflow kept for ever, on top of a store at
        // its working size, fails the store's verdict in the CI run and in
        // the long one; in the scheduler's memory too in the long run.
        for (n, secs, warmup, rate) in RUNS {
            let w = Window::new(
                n,
                Duration::from_secs_f64(secs),
                Duration::from_secs_f64(warmup),
            )
            .unwrap();
            let working = rate * warmup * 15.3 * 600.0; // the retained workflows' rows
            let leaking = rows(
                n,
                secs,
                |_| rate,
                |t| (working + 4.0 * MB) * noise(t) + LEAK_PER_WORKFLOW * rate * t,
            );
            let v = check_plateau(&leaking, &w, STORE, rate, secs);
            assert!(!v.passed, "{n} x {secs} s: {}", v.detail);
        }
        let (n, secs, _, rate) = RUNS[1];
        let w = Window::new(n, Duration::from_secs_f64(secs), Duration::from_secs(60)).unwrap();
        let leaking = rows(
            n,
            secs,
            |_| rate,
            |t| 40.0 * MB * noise(t) + LEAK_PER_WORKFLOW * rate * t,
        );
        assert!(!check_plateau(&leaking, &w, RSS, rate, secs).passed);
        // The verdict states the smallest leak it catches: the allowance
        // spread over the workflows between the quarters' ends, 15 minutes.
        let v = check_plateau(&rows(n, secs, |_| rate, |_| 40.0 * MB), &w, RSS, rate, secs);
        let caught = RSS.of((40.0 * MB) as u64) as f64 / (rate * 900.0);
        assert!(caught < LEAK_PER_WORKFLOW / 10.0);
        let said = format!("catches a leak of {caught:.0} bytes or more per workflow");
        assert!(v.detail.contains(&said), "{}", v.detail);
    }

    #[test]
    fn growth_late_in_the_run_fails() {
        let (n, secs) = (12, 10.0);
        let w = Window::new(n, Duration::from_secs(10), Duration::from_secs(20)).unwrap();
        // Flat, then a step of 30 % in the last quarter.
        let step = rows(
            n,
            secs,
            |_| 20.0,
            |t| if t > 95.0 { 13.0 * MB } else { 10.0 * MB },
        );
        assert!(!check_plateau(&step, &w, STORE, 20.0, secs).passed);
    }

    #[test]
    fn a_warm_up_ramp_does_not_fail() {
        // Steep growth until the retention has passed (the store filling),
        // flat after it.
        for (n, secs, warmup, rate) in RUNS {
            let w = Window::new(
                n,
                Duration::from_secs_f64(secs),
                Duration::from_secs_f64(warmup),
            )
            .unwrap();
            let ramp = rows(
                n,
                secs,
                |_| rate,
                |t| 20.0 * MB * (t / warmup).min(1.0) * noise(t) + 4.0 * MB,
            );
            for a in [RSS, STORE] {
                let v = check_plateau(&ramp, &w, a, rate, secs);
                assert!(v.passed, "{n} x {secs} s: {}", v.detail);
            }
        }
    }

    #[test]
    fn a_resource_not_sampled_fails() {
        let w = Window::new(12, Duration::from_secs(10), Duration::from_secs(20)).unwrap();
        let mut r = rows(12, 10.0, |_| 20.0, |_| MB);
        r[10].store = None;
        let v = check_plateau(&r, &w, STORE, 20.0, 10.0);
        assert!(!v.passed && v.detail.contains("not sampled"));
    }

    #[test]
    fn the_window_skips_the_warm_up_and_needs_four_of_them() {
        let s = Duration::from_secs;
        let w = Window::new(30, s(60), s(60)).unwrap();
        assert_eq!(
            (w.first, w.second_quarter(), w.last_quarter()),
            (1, 7..15, 23..30)
        );
        let w = Window::new(12, s(10), s(20)).unwrap();
        assert_eq!(
            (w.first, w.second_quarter(), w.last_quarter()),
            (2, 3..6, 9..12)
        );
        // Without a retention (nothing is deleted): one interval.
        assert_eq!(Window::new(12, s(10), Duration::ZERO).unwrap().first, 1);
        // A retention that is not a whole number of intervals: the next.
        assert_eq!(Window::new(12, s(10), s(25)).unwrap().first, 3);
        assert!(Window::new(11, s(10), s(30)).is_err());
        assert!(Window::new(3, s(10), Duration::ZERO).is_err());
    }

    fn check_throughput(wps: impl Fn(usize) -> f64, offered: f64) -> Vec<bool> {
        let w = Window::new(12, Duration::from_secs(10), Duration::from_secs(20)).unwrap();
        let r = rows(12, 10.0, wps, |_| MB);
        throughput(&r, &w, offered)
            .iter()
            .map(|v| v.passed)
            .collect()
    }

    #[test]
    fn throughput_holds_or_not() {
        // Steady at the offered load, with a ramp before the first
        // measured interval that is not counted.
        let steady = |k: usize| {
            if k == 0 {
                12.0
            } else {
                20.0 + (k % 3) as f64 * 0.3
            }
        };
        assert_eq!(check_throughput(steady, 20.0), [true, true, true]);
        // Decaying: the last interval 20 % below the first.
        let decaying = |k: usize| 20.0 - k as f64 * 0.4;
        assert_eq!(check_throughput(decaying, 20.0), [true, false, false]);
        // Never carrying the offered load, steadily.
        assert_eq!(check_throughput(|_| 14.0, 20.0), [false, true, true]);
        // Nothing at all.
        assert_eq!(check_throughput(|_| 0.0, 20.0), [false, false, false]);
    }

    #[test]
    fn lost_or_unexpected_workflows_fail() {
        let ok = Totals {
            submitted: 100,
            succeeded: 95,
            failed_as_expected: 5,
            ..Totals::default()
        };
        assert!(outcomes(&ok).iter().all(|v| v.passed));
        let unexpected = Totals {
            succeeded: 94,
            unexpected: 1,
            ..ok
        };
        assert_eq!(
            outcomes(&unexpected)
                .iter()
                .map(|v| v.passed)
                .collect::<Vec<_>>(),
            [false, true]
        );
        let lost = Totals {
            succeeded: 94,
            lost: 1,
            ..ok
        };
        assert_eq!(
            outcomes(&lost).iter().map(|v| v.passed).collect::<Vec<_>>(),
            [true, false]
        );
    }
}
