//! The verdict: the faults injected and the invariants checked, printed
//! as tables; true when every invariant holds.

use crate::{
    Fault, POISON_ID, RunArgs,
    bombs::{Verdict, is_bombs},
    broker::planted,
};
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// Checks the invariants on what the run left, prints the faults and the
/// invariants, and says whether all hold.
#[allow(clippy::too_many_arguments)]
pub fn report(
    args: &RunArgs,
    injected: &BTreeMap<Fault, usize>,
    self_deaths: usize,
    statuses: &HashMap<String, String>,
    results: &HashMap<(String, String), Vec<String>>,
    effects: &HashMap<(String, String), usize>,
    depths: &BTreeMap<String, u32>,
    dead: &[String],
    poison_error: Option<String>,
    active_kills: usize,
    bombs: &Verdict,
) -> bool {
    let n = args.workflows;
    let tasks: Vec<(String, String)> = (0..n)
        .flat_map(|i| ["a", "b", "c", "d"].map(|t| (format!("chaos-{i}"), t.to_owned())))
        .collect();

    let succeeded = (0..n)
        .filter(|i| statuses.get(&format!("chaos-{i}")).map(String::as_str) == Some("succeeded"))
        .count();
    let poison_ok = statuses.get(POISON_ID).map(String::as_str) == Some("failed")
        && poison_error
            .as_deref()
            .is_some_and(|e| e.contains("without finishing"));
    let once = tasks
        .iter()
        .filter(|k| {
            results
                .get(*k)
                .is_some_and(|v| v.iter().filter(|s| s.as_str() == "succeeded").count() == 1)
        })
        .count();
    // The diamonds' results (not the poison's, not the bombs').
    let committed: usize = results
        .iter()
        .filter(|(k, _)| k.0 != POISON_ID && !k.0.starts_with("bomb-"))
        .map(|(_, v)| v.len())
        .sum();
    let with_effect = tasks
        .iter()
        .filter(|k| effects.get(*k).copied().unwrap_or(0) >= 1)
        .count();
    let duplicates: usize = tasks
        .iter()
        .map(|k| effects.get(k).copied().unwrap_or(0).saturating_sub(1))
        .sum();
    let unknown_effects = effects
        .keys()
        .filter(|k| !k.0.starts_with("chaos-"))
        .count();
    // Dead-lettering is at least once too: a worker whose ack is lost
    // after it dead-lettered a message does it again on redelivery. So the
    // distinct bodies must be exactly the planted ones; copies are counted.
    let (bad_results, bad_tasks) = planted();
    let intended: BTreeSet<&str> = bad_results
        .iter()
        .chain(&bad_tasks)
        .map(String::as_str)
        .collect();
    // Dead letters the bombs caused (refused task messages, oversized
    // results) are judged with the bombs.
    let poison: Vec<&String> = dead.iter().filter(|b| !is_bombs(b)).collect();
    let distinct: BTreeSet<&str> = poison.iter().map(|b| b.as_str()).collect();
    let dead_ok = distinct == intended;
    let leftovers: u32 = depths
        .iter()
        .filter(|(q, _)| !q.ends_with(".dead"))
        .map(|(_, n)| *n)
        .sum();

    println!();
    println!("{:<34} {:>8}", "fault", "injected");
    for (fault, label) in [
        (Fault::SchedulerKill, "scheduler kill -9 + restart"),
        (Fault::WorkerKill, "worker kill -9 + replace"),
        (Fault::BrokerRestart, "broker restart"),
        (Fault::Disconnect, "close all connections"),
        (Fault::NodeKill, "cluster node kill -9 + restart"),
        (Fault::NodeStop, "cluster node stop_app + start_app"),
    ] {
        println!(
            "{label:<34} {:>8}",
            injected.get(&fault).copied().unwrap_or(0)
        );
        if fault == Fault::SchedulerKill && args.schedulers > 1 {
            println!(
                "{:<34} {:>8}",
                "  of which at a partition's owner", active_kills
            );
        }
    }
    println!(
        "{:<34} {:>8}",
        "worker deaths not caused by chaos", self_deaths
    );
    println!();
    let mut checks: Vec<(&str, bool, String)> = vec![
        (
            "every workflow finished and succeeded",
            succeeded == n,
            format!("{succeeded}/{n}"),
        ),
        (
            "poison task failed on its delivery limit",
            poison_ok,
            poison_error.unwrap_or_else(|| "no error recorded".into()),
        ),
        (
            "every result committed exactly once",
            once == tasks.len() && committed == tasks.len(),
            format!("{once}/{} tasks, {committed} results", tasks.len()),
        ),
        (
            "every effect recorded at least once",
            with_effect == tasks.len() && unknown_effects == 0,
            format!(
                "{with_effect}/{} tasks, {duplicates} duplicate runs",
                tasks.len()
            ),
        ),
        (
            "task, suspect, result, request queues empty",
            leftovers == 0,
            format!("{leftovers} messages left"),
        ),
        (
            "dead-letter queue = intended poison",
            dead_ok,
            format!(
                "{}/{} distinct, {} copies",
                distinct.len(),
                intended.len(),
                poison.len() - distinct.len()
            ),
        ),
    ];
    if args.bombs > 0 {
        let mut detail = format!(
            "{}/{} bombs, {} answers, {} dead letters",
            bombs.as_expected, bombs.thrown, bombs.answers, bombs.dead_letters
        );
        for u in &bombs.unexpected {
            detail.push_str("; ");
            detail.push_str(u);
        }
        checks.push((
            "every bomb ended as its limit says",
            bombs.as_expected == bombs.thrown && bombs.unexpected.is_empty(),
            detail,
        ));
    }
    println!("{:<46} {:<6} detail", "invariant", "result");
    let mut passed = true;
    for (name, ok, detail) in &checks {
        passed &= ok;
        println!(
            "{name:<46} {:<6} {detail}",
            if *ok { "PASS" } else { "FAIL" }
        );
    }
    println!();
    println!(
        "{}",
        if passed {
            "all invariants hold"
        } else {
            "INVARIANTS BROKEN"
        }
    );
    passed
}
