//! What the bench reports: a [`Figure`] (a value, its unit, its ratio to
//! the ceiling and its target), the statistics figures are made of
//! (percentiles, medians, the broker's CPU), and the summary table and
//! JSON file.

use serde_json::{Value, json};
use std::path::PathBuf;
use warren_harness::procfs;

/// One figure of the summary.
pub struct Figure {
    pub name: String,
    pub value: f64,
    pub unit: &'static str,
    /// Warren's figure over the ceiling's, oriented so that 1.0 is "as fast
    /// as the broker allows" (higher is better for rates, lower for times).
    pub ratio: Option<f64>,
    pub target: &'static str,
}

impl Figure {
    /// A figure shown for understanding, with no ratio and no target.
    pub fn info(name: impl Into<String>, value: f64, unit: &'static str) -> Figure {
        Figure {
            name: name.into(),
            value,
            unit,
            ratio: None,
            target: "",
        }
    }
}

/// CPU used by the broker between two readings, per 1,000 tasks.
pub struct BrokerCpu(Option<(u32, f64)>);

impl BrokerCpu {
    pub fn start() -> BrokerCpu {
        // The local RabbitMQ's Erlang VM, when the broker runs on this
        // machine: its CPU is where most of every run's time goes.
        BrokerCpu(procfs::pid_of("beam.smp").map(|p| (p, procfs::cpu_secs(p))))
    }

    /// Milliseconds of broker CPU per 1,000 tasks since `start`; NaN when
    /// the broker is not a local process.
    pub fn per_1000(&self, tasks: usize) -> f64 {
        self.0.map_or(f64::NAN, |(pid, t0)| {
            (procfs::cpu_secs(pid) - t0) * 1e6 / tasks as f64
        })
    }
}

/// The value at `p` (0 to 1) of sorted values; NaN when there are none.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

/// The median of values.
pub fn median(values: impl Iterator<Item = f64>) -> f64 {
    let mut v: Vec<f64> = values.collect();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Prints the summary table and writes the figures, with every round's
/// value, as JSON to `path`.
pub fn print_and_save(
    figures: &[Figure],
    rounds: &[Vec<f64>],
    path: &PathBuf,
) -> anyhow::Result<()> {
    println!();
    println!(
        "{:<44} {:>12} {:<8} {:>9}  target",
        "figure", "value", "unit", "vs ceil"
    );
    for f in figures {
        let ratio = f.ratio.map_or(String::new(), |r| format!("{r:.2}x"));
        println!(
            "{:<44} {:>12.1} {:<8} {:>9}  {}",
            f.name, f.value, f.unit, ratio, f.target
        );
    }
    let json: Vec<Value> = figures
        .iter()
        .zip(rounds)
        .map(|(f, r)| json!({"name": f.name, "value": f.value, "unit": f.unit, "ratio_to_ceiling": f.ratio, "target": f.target, "rounds": r}))
        .collect();
    let doc = json!({
        "when": chrono::Utc::now().to_rfc3339(),
        "commit": std::env::var("WARREN_COMMIT").ok(),
        "figures": json,
    });
    std::fs::write(path, serde_json::to_string_pretty(&doc)?)?;
    println!("\nwritten to {}", path.display());
    Ok(())
}
