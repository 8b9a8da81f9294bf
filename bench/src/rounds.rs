//! A bench run: round after round, the ceiling and then each scenario;
//! each figure reported as its median over the rounds.

use crate::{
    Opts, ceiling,
    figures::{Figure, median, print_and_save},
    scenarios::Scenario,
};

/// Runs `o.rounds` rounds, each measuring the ceiling and then every
/// scenario, and reports each figure's median over the rounds (a ratio is
/// taken within its round, against that round's ceiling).
pub async fn run(addr: String, o: Opts, scenarios: &[Scenario]) -> anyhow::Result<()> {
    let mut rounds = Vec::new();
    for r in 1..=o.rounds.max(1) {
        if o.rounds > 1 {
            println!("round {r} of {}", o.rounds);
        }
        rounds.push(round(&addr, &o, scenarios).await?);
    }
    let values: Vec<Vec<f64>> = (0..rounds[0].len())
        .map(|i| rounds.iter().map(|r| r[i].value).collect())
        .collect();
    let mut figures = rounds.swap_remove(0);
    for (i, f) in figures.iter_mut().enumerate() {
        f.value = median(rounds.iter().map(|r| r[i].value).chain([f.value]));
        f.ratio = f
            .ratio
            .map(|first| median(rounds.iter().filter_map(|r| r[i].ratio).chain([first])));
    }
    print_and_save(&figures, &values, &o.json)
}

/// One round: the ceiling's figures, then each scenario's.
async fn round(addr: &str, o: &Opts, scenarios: &[Scenario]) -> anyhow::Result<Vec<Figure>> {
    println!(
        "measuring the broker ceiling ({} tasks) ...",
        o.ceiling_tasks
    );
    let c = ceiling::measure(addr, o.ceiling_tasks).await?;
    let mut figures = c.figures();
    for s in scenarios {
        println!("running {s} ...");
        figures.extend(s.run(addr, o, &c).await?);
    }
    Ok(figures)
}
