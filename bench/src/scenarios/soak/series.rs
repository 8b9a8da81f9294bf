//! The soak's figures per interval: what was submitted in it, what ended
//! in it (workflows, their task attempts, how each ended, and how long
//! each took from submission to outcome), and the peaks of what the
//! probes read (scheduler and worker RSS, the store's size). Pure
//! bookkeeping fed with times since the start; outcomes after the last
//! interval (the drain) are kept apart.

use crate::figures::percentile;
use serde::Serialize;
use std::time::Duration;

/// What the probes read at one moment, in bytes (`None`: unreadable).
#[derive(Clone, Copy, Debug, Default)]
pub struct Sample {
    pub scheduler_rss: Option<u64>,
    pub worker_rss: Option<u64>,
    pub store: Option<u64>,
}

/// How a workflow ended, as the soak counts it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ended {
    /// As its kind expects: succeeded, or failed for a failing kind.
    Expected { failed: bool },
    /// Any other outcome (a failure, a rejection, a cancel).
    Unexpected,
    /// No outcome arrived within the soak's wait for it.
    Lost,
}

/// One interval's raw figures.
#[derive(Clone, Debug, Default)]
struct Bucket {
    submitted: u64,
    /// Outcomes received, expected or not (the lost are apart).
    ended: u64,
    failed_as_expected: u64,
    unexpected: u64,
    lost: u64,
    /// Task attempts of the workflows that ended (retries included).
    tasks: u64,
    latencies_ms: Vec<f64>,
    /// Peaks of the samples taken in the interval.
    scheduler_rss: Option<u64>,
    worker_rss: Option<u64>,
    store: Option<u64>,
    /// The scheduler's `warren_store_pruned_total` at the interval's end.
    pruned_total: Option<u64>,
    /// The machine's load average (1 minute) at the interval's end.
    load: Option<f64>,
}

/// One interval's figures, as printed and written.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    /// From 0.
    pub index: usize,
    /// Seconds from the start to the interval's end.
    pub end_s: f64,
    pub submitted: u64,
    pub ended: u64,
    /// Workflows that ended (as expected or not) per second.
    pub workflows_per_s: f64,
    /// Task attempts of those workflows per second.
    pub tasks_per_s: f64,
    /// Submission to outcome, of the workflows that ended in it.
    pub latency_p50_ms: f64,
    pub latency_p99_ms: f64,
    pub failed_as_expected: u64,
    pub unexpected: u64,
    pub lost: u64,
    /// Submitted and not ended, at the interval's end.
    pub in_flight: u64,
    /// Peaks in the interval, in bytes.
    pub scheduler_rss: Option<u64>,
    pub worker_rss: Option<u64>,
    pub store: Option<u64>,
    /// Workflows the scheduler's retention deleted in the interval.
    pub pruned: Option<u64>,
    /// The machine's load average (1 minute) at the interval's end.
    pub load: Option<f64>,
}

/// The whole run's counts (intervals and drain).
#[derive(Clone, Debug, Default, Serialize)]
pub struct Totals {
    pub submitted: u64,
    pub succeeded: u64,
    pub failed_as_expected: u64,
    pub unexpected: u64,
    pub lost: u64,
    /// Outcomes that arrived after the last interval.
    pub ended_in_drain: u64,
    pub latency_p50_ms: f64,
    pub latency_p99_ms: f64,
    pub latency_max_ms: f64,
}

/// The figures of a run of `intervals` intervals of `interval` each.
#[derive(Debug)]
pub struct Series {
    interval: Duration,
    buckets: Vec<Bucket>,
    drain: Bucket,
}

impl Series {
    pub fn new(intervals: usize, interval: Duration) -> Series {
        Series {
            interval,
            buckets: vec![Bucket::default(); intervals],
            drain: Bucket::default(),
        }
    }

    /// The interval `t` (since the start) falls in; past the last, the
    /// drain's.
    fn bucket(&mut self, t: Duration) -> &mut Bucket {
        let k = (t.as_nanos() / self.interval.as_nanos().max(1)) as usize;
        match self.buckets.get_mut(k) {
            Some(b) => b,
            None => &mut self.drain,
        }
    }

    pub fn submitted(&mut self, t: Duration) {
        self.bucket(t).submitted += 1;
    }

    /// A workflow ended (or was given up for lost) at `t`, `latency`
    /// after it was submitted, having run `tasks` task attempts.
    pub fn ended(&mut self, t: Duration, latency: Duration, tasks: u64, how: Ended) {
        let b = self.bucket(t);
        match how {
            Ended::Lost => {
                b.lost += 1;
                return;
            }
            Ended::Expected { failed } => b.failed_as_expected += u64::from(failed),
            Ended::Unexpected => b.unexpected += 1,
        }
        b.ended += 1;
        b.tasks += tasks;
        b.latencies_ms.push(latency.as_secs_f64() * 1e3);
    }

    /// A probe's reading at `t`: each figure's peak in its interval.
    pub fn sample(&mut self, t: Duration, s: Sample) {
        let b = self.bucket(t);
        for (peak, v) in [
            (&mut b.scheduler_rss, s.scheduler_rss),
            (&mut b.worker_rss, s.worker_rss),
            (&mut b.store, s.store),
        ] {
            if let Some(v) = v {
                *peak = Some(peak.map_or(v, |p| p.max(v)));
            }
        }
    }

    /// At the end of interval `k`: the scheduler's count of pruned
    /// workflows, and the machine's load average.
    pub fn close(&mut self, k: usize, pruned_total: Option<u64>, load: Option<f64>) {
        if let Some(b) = self.buckets.get_mut(k) {
            (b.pruned_total, b.load) = (pruned_total, load);
        }
    }

    /// Interval `k`'s figures.
    pub fn row(&self, k: usize) -> Row {
        let b = &self.buckets[k];
        let secs = self.interval.as_secs_f64();
        let before = &self.buckets[..=k];
        let submitted: u64 = before.iter().map(|b| b.submitted).sum();
        let done: u64 = before.iter().map(|b| b.ended + b.lost).sum();
        let mut lat = b.latencies_ms.clone();
        lat.sort_by(f64::total_cmp);
        let previous = match k {
            0 => Some(0),
            _ => self.buckets[k - 1].pruned_total,
        };
        Row {
            index: k,
            end_s: secs * (k + 1) as f64,
            submitted: b.submitted,
            ended: b.ended,
            workflows_per_s: b.ended as f64 / secs,
            tasks_per_s: b.tasks as f64 / secs,
            latency_p50_ms: percentile(&lat, 0.5),
            latency_p99_ms: percentile(&lat, 0.99),
            failed_as_expected: b.failed_as_expected,
            unexpected: b.unexpected,
            lost: b.lost,
            in_flight: submitted.saturating_sub(done),
            scheduler_rss: b.scheduler_rss,
            worker_rss: b.worker_rss,
            store: b.store,
            pruned: b
                .pruned_total
                .zip(previous)
                .map(|(now, then)| now.saturating_sub(then)),
            load: b.load,
        }
    }

    pub fn rows(&self) -> Vec<Row> {
        (0..self.buckets.len()).map(|k| self.row(k)).collect()
    }

    pub fn totals(&self) -> Totals {
        let all = || self.buckets.iter().chain([&self.drain]);
        let sum = |f: fn(&Bucket) -> u64| all().map(f).sum::<u64>();
        let mut lat: Vec<f64> = all().flat_map(|b| b.latencies_ms.iter().copied()).collect();
        lat.sort_by(f64::total_cmp);
        let ended = sum(|b| b.ended);
        let (failed, unexpected) = (sum(|b| b.failed_as_expected), sum(|b| b.unexpected));
        Totals {
            submitted: sum(|b| b.submitted),
            succeeded: ended - failed - unexpected,
            failed_as_expected: failed,
            unexpected,
            lost: sum(|b| b.lost),
            ended_in_drain: self.drain.ended + self.drain.lost,
            latency_p50_ms: percentile(&lat, 0.5),
            latency_p99_ms: percentile(&lat, 0.99),
            latency_max_ms: percentile(&lat, 1.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn outcomes_fall_in_the_interval_they_end_in() {
        let mut s = Series::new(3, 10 * S);
        for i in 0..30 {
            s.submitted(ms(i * 1000)); // 10 an interval
        }
        // Interval 0: 9 end (one failing as expected), 1 goes on.
        for i in 0..9 {
            let failed = i == 4;
            s.ended(ms(i * 1000 + 20), ms(20), 4, Ended::Expected { failed });
        }
        // Interval 1: the one left over (slow) and 9 of its own, one of them
        // unexpected; interval 2: 8 end, one is lost, one is left for the
        // drain.
        s.ended(
            ms(10_500),
            ms(1_500),
            102,
            Ended::Expected { failed: false },
        );
        for i in 10..19 {
            let how = if i == 12 {
                Ended::Unexpected
            } else {
                Ended::Expected { failed: false }
            };
            s.ended(ms(i * 1000 + 40), ms(40), 10, how);
        }
        for i in 20..28 {
            s.ended(
                ms(i * 1000 + 10),
                ms(10),
                4,
                Ended::Expected { failed: false },
            );
        }
        s.ended(ms(29_900), ms(120_000), 0, Ended::Lost);
        s.ended(ms(30_050), ms(100), 4, Ended::Expected { failed: false });

        let rows = s.rows();
        assert_eq!(rows.len(), 3);
        let r0 = &rows[0];
        assert_eq!((r0.submitted, r0.ended, r0.in_flight), (10, 9, 1));
        assert_eq!(r0.failed_as_expected, 1);
        assert!((r0.workflows_per_s - 0.9).abs() < 1e-9);
        assert!((r0.tasks_per_s - 3.6).abs() < 1e-9);
        assert_eq!(r0.latency_p50_ms, 20.0);
        assert_eq!(r0.end_s, 10.0);
        let r1 = &rows[1];
        assert_eq!((r1.ended, r1.unexpected, r1.in_flight), (10, 1, 1));
        assert_eq!(r1.tasks_per_s, (102.0 + 90.0) / 10.0);
        assert_eq!(r1.latency_p99_ms, 1_500.0);
        assert_eq!(r1.latency_p50_ms, 40.0);
        let r2 = &rows[2];
        assert_eq!((r2.ended, r2.lost, r2.in_flight), (8, 1, 2));

        let t = s.totals();
        assert_eq!(t.submitted, 30);
        assert_eq!((t.succeeded, t.failed_as_expected), (26, 1));
        assert_eq!((t.unexpected, t.lost, t.ended_in_drain), (1, 1, 1));
        assert_eq!(t.latency_max_ms, 1_500.0);
    }

    #[test]
    fn samples_keep_each_intervals_peak() {
        let mut s = Series::new(2, 10 * S);
        let at = |rss: u64| Sample {
            scheduler_rss: Some(rss),
            worker_rss: None,
            store: Some(rss * 2),
        };
        s.sample(ms(1_000), at(30));
        s.sample(ms(5_000), at(50));
        s.sample(ms(9_999), at(40));
        s.sample(ms(10_000), at(45));
        let rows = s.rows();
        assert_eq!(rows[0].scheduler_rss, Some(50));
        assert_eq!(rows[0].store, Some(100));
        assert_eq!(rows[0].worker_rss, None);
        assert_eq!(rows[1].scheduler_rss, Some(45));
        // A sample past the end is the drain's, not the last interval's.
        s.sample(ms(25_000), at(999));
        assert_eq!(s.row(1).scheduler_rss, Some(45));
    }

    #[test]
    fn pruned_is_the_counters_rise_in_each_interval() {
        let mut s = Series::new(3, S);
        s.close(0, Some(0), Some(1.5));
        s.close(1, Some(120), None);
        s.close(2, Some(300), None);
        let pruned: Vec<_> = s.rows().iter().map(|r| r.pruned).collect();
        assert_eq!(pruned, [Some(0), Some(120), Some(180)]);
        assert_eq!(s.row(0).load, Some(1.5));
        // An unreadable counter leaves the interval and the next unknown.
        s.close(1, None, None);
        let pruned: Vec<_> = s.rows().iter().map(|r| r.pruned).collect();
        assert_eq!(pruned, [Some(0), None, None]);
    }
}
