//! The soak's load: which workflows it submits, in which proportions, and
//! when. Five kinds (diamonds, chains of 10, fan-outs of 100, diamonds
//! whose middle task fails once and is retried, diamonds that fail for
//! good) repeat in a fixed pattern of 20, submitted at a steady pace that
//! never waits for an outcome (open loop: a slow system gets a backlog,
//! not a lighter load).

use crate::scenarios::{chain, fan_out, task};
use serde_json::{Value, json};
use std::time::Duration;
use warren_shared::wire::WorkflowStatus;

/// A kind of workflow in the mix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `a -> {b, c} -> d`, no-op tasks.
    Diamond,
    /// Ten no-op tasks in a row.
    Chain,
    /// `root -> 100 no-op tasks -> join`.
    FanOut,
    /// A diamond whose `b` fails its first attempt and succeeds on the
    /// second (retry policy: 3 attempts, 50 ms backoff).
    Retried,
    /// A diamond whose `b` fails both its attempts: the workflow fails,
    /// which is this kind's expected outcome.
    Failing,
}

use Kind::{Chain as C, Diamond as D, Failing as X, FanOut as F, Retried as R};

/// The mix, repeated: 9 diamonds, 5 chains, 2 fan-outs, 3 retried and 1
/// failing in every 20 workflows (306 tasks: 15.3 a workflow), spread so
/// that no interval of a few seconds holds more of one kind than the mix.
const PATTERN: [Kind; 20] = [D, C, R, D, F, D, C, D, R, X, D, C, D, R, F, D, C, D, C, D];

/// Fan-out width: the issue's "fan-outs of 100".
const FAN_OUT: usize = 100;
/// Links in a chain.
const CHAIN: usize = 10;
/// Backoff before a retried task's second attempt.
const BACKOFF_MS: u64 = 50;

impl Kind {
    /// Every kind, in declaration order ([`Kind::index`]).
    pub const ALL: [Kind; 5] = [D, C, F, R, X];

    /// Its place in [`Kind::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    /// The `i`-th workflow's kind (from 0).
    pub fn of(i: u64) -> Kind {
        PATTERN[(i % PATTERN.len() as u64) as usize]
    }

    pub fn name(self) -> &'static str {
        match self {
            Kind::Diamond => "diamond",
            Kind::Chain => "chain",
            Kind::FanOut => "fan-out",
            Kind::Retried => "retried",
            Kind::Failing => "failing",
        }
    }

    /// Tasks a workflow of the mix has on average (15.3).
    pub fn mean_tasks() -> f64 {
        PATTERN.iter().map(|k| k.tasks()).sum::<usize>() as f64 / PATTERN.len() as f64
    }

    /// Tasks in the workflow.
    pub fn tasks(self) -> usize {
        match self {
            Kind::Diamond | Kind::Retried | Kind::Failing => 4,
            Kind::Chain => CHAIN,
            Kind::FanOut => FAN_OUT + 2,
        }
    }

    /// How the workflow must end; any other outcome fails the soak.
    pub fn expected(self) -> WorkflowStatus {
        match self {
            Kind::Failing => WorkflowStatus::Failed,
            _ => WorkflowStatus::Succeeded,
        }
    }

    /// The workflow request, with id `id`.
    pub fn workflow(self, id: String) -> Value {
        let tasks = match self {
            Kind::Diamond => diamond(None),
            Kind::Chain => chain(CHAIN),
            Kind::FanOut => fan_out(FAN_OUT),
            Kind::Retried => diamond(Some((1, 3))),
            Kind::Failing => diamond(Some((100, 2))),
        };
        json!({"id": id, "tasks": tasks})
    }
}

/// `a -> {b, c} -> d`; with `flaky = (fail, attempts)`, `b` is a `flaky`
/// task whose first `fail` attempts fail, retried up to `attempts` in all.
fn diamond(flaky: Option<(u64, u32)>) -> Vec<Value> {
    let mut b = task("b".into(), vec!["a".into()]);
    if let Some((fail, attempts)) = flaky {
        b["type"] = json!("flaky");
        b["input"] = json!({ "fail_attempts": fail });
        b["retry"] = json!({ "max_attempts": attempts, "backoff_ms": BACKOFF_MS });
    }
    vec![
        task("a".into(), vec![]),
        b,
        task("c".into(), vec!["a".into()]),
        task("d".into(), vec!["b".into(), "c".into()]),
    ]
}

/// A steady pace of `rate` submissions a second from the start.
#[derive(Clone, Copy, Debug)]
pub struct Pace {
    rate: f64,
}

impl Pace {
    pub fn new(rate: f64) -> anyhow::Result<Pace> {
        if !(rate.is_finite() && rate > 0.0) {
            anyhow::bail!(
                "the soak's rate must be a positive number of workflows a second, not {rate}"
            );
        }
        Ok(Pace { rate })
    }

    pub fn rate(self) -> f64 {
        self.rate
    }

    /// When submission `i` (from 0) is due, after the start: `i / rate`,
    /// computed from the start each time, so that no error accumulates
    /// and a submission made late (a busy machine) never delays the next
    /// ones: they catch up at once.
    pub fn due(self, i: u64) -> Duration {
        Duration::from_secs_f64(i as f64 / self.rate)
    }

    /// How many submissions fall due within `run` from the start.
    pub fn total(self, run: Duration) -> u64 {
        (run.as_secs_f64() * self.rate).ceil() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mix_is_as_documented() {
        let count = |k: Kind| PATTERN.iter().filter(|&&p| p == k).count();
        assert_eq!(
            [D, C, F, R, X].map(count),
            [9, 5, 2, 3, 1],
            "9 diamonds, 5 chains, 2 fan-outs, 3 retried, 1 failing"
        );
        let tasks: usize = PATTERN.iter().map(|k| k.tasks()).sum();
        assert_eq!(tasks, 306);
        assert!((Kind::mean_tasks() - 15.3).abs() < 1e-9);
        // The pattern repeats.
        assert_eq!(Kind::of(0), Kind::of(20));
        assert_eq!(Kind::of(9), Kind::Failing);
        assert_eq!(Kind::of(29), Kind::Failing);
    }

    #[test]
    fn each_kind_builds_its_workflow() {
        for (i, k) in Kind::ALL.into_iter().enumerate() {
            assert_eq!(k.index(), i);
            let w = k.workflow(format!("w-{}", k.name()));
            assert_eq!(w["tasks"].as_array().map(Vec::len), Some(k.tasks()));
            assert_eq!(w["id"], json!(format!("w-{}", k.name())));
        }
        let retried = Kind::Retried.workflow("r".into());
        assert_eq!(retried["tasks"][1]["type"], "flaky");
        assert_eq!(retried["tasks"][1]["input"]["fail_attempts"], 1);
        assert_eq!(retried["tasks"][1]["retry"]["max_attempts"], 3);
        // A failing workflow's `b` fails more often than it is tried.
        let failing = Kind::Failing.workflow("f".into());
        let b = &failing["tasks"][1];
        assert!(b["input"]["fail_attempts"].as_u64() >= b["retry"]["max_attempts"].as_u64());
        assert_eq!(Kind::Failing.expected(), WorkflowStatus::Failed);
        assert_eq!(Kind::FanOut.expected(), WorkflowStatus::Succeeded);
    }

    #[test]
    fn the_pace_is_steady_and_exact() {
        let pace = Pace::new(40.0).unwrap();
        assert_eq!(pace.due(0), Duration::ZERO);
        assert_eq!(pace.due(40), Duration::from_secs(1));
        assert_eq!(pace.due(4_000), Duration::from_secs(100));
        // Evenly spaced: every gap 25 ms, to the nanosecond, far into a run.
        for i in [1, 1_000, 71_999] {
            let gap = pace.due(i + 1) - pace.due(i);
            assert!(gap.abs_diff(Duration::from_millis(25)) < Duration::from_micros(1));
        }
        // The submissions due within the run: every one before its end.
        assert_eq!(pace.total(Duration::from_secs(1800)), 72_000);
        assert!(pace.due(71_999) < Duration::from_secs(1800));
        let odd = Pace::new(7.5).unwrap();
        assert_eq!(odd.total(Duration::from_secs(1)), 8); // 0, 0.133, ... 0.933 s
        assert!(odd.due(7) < Duration::from_secs(1));
        assert!(odd.due(8) >= Duration::from_secs(1));
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            assert!(Pace::new(bad).is_err(), "{bad}");
        }
    }
}
