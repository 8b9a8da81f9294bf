//! How the CLI prints what the scheduler answers: a workflow's final
//! outcome (JSON, and a verdict on stderr), a workflow's task table, the
//! table of workers, and what is paused.

use std::{borrow::Cow, process::ExitCode};
use warren_shared::wire::{
    Paused, TaskReport, TaskState, WorkersReport, WorkflowReport, WorkflowStatus,
};

/// Prints a final report: JSON on stdout, a one-line verdict on stderr.
pub fn outcome(report: &WorkflowReport) -> ExitCode {
    println!(
        "{}",
        serde_json::to_string_pretty(report).expect("serialisable")
    );
    eprintln!(
        "workflow {} {}",
        safe(&report.workflow_id),
        report.status.as_str()
    );
    for e in &report.errors {
        eprintln!("  {}: {}", safe(&e.code), safe(&e.message));
    }
    if let Some(e) = &report.error {
        eprintln!("  {}", safe(e));
    }
    if report.status == WorkflowStatus::Succeeded {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// A workflow's state, its errors, and a table of its tasks.
pub fn table(report: &WorkflowReport) {
    println!(
        "workflow {}: {}",
        safe(&report.workflow_id),
        report.status.as_str()
    );
    if let Some(at) = report.not_before {
        println!(
            "starts at {}",
            at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        );
    }
    if let Some(e) = &report.error {
        println!("error: {}", safe(e));
    }
    for e in &report.errors {
        println!("  {}: {}", safe(&e.code), safe(&e.message));
    }
    if report.tasks.is_empty() {
        return;
    }
    let width = report
        .tasks
        .keys()
        .map(|k| safe(k).len())
        .max()
        .unwrap_or(4)
        .max(4);
    println!(
        "{:<width$}  {:<10}  {:>8}  {:>10}  WORKER",
        "TASK", "STATE", "ATTEMPTS", "DURATION"
    );
    for (id, t) in &report.tasks {
        println!(
            "{:<width$}  {:<10}  {:>8}  {:>10}  {}",
            safe(id),
            t.state.as_str(),
            t.attempts,
            duration(t),
            safe(t.worker.as_deref().unwrap_or("-"))
        );
    }
}

/// How long the task's last attempt took, or has been running; `-` when
/// it has not started.
fn duration(t: &TaskReport) -> String {
    let Some(start) = t.started_at else {
        return "-".into();
    };
    let end = match (t.finished_at, t.state) {
        (Some(end), _) => end,
        (None, TaskState::Running) => chrono::Utc::now(),
        (None, _) => return "-".into(),
    };
    let ms = (end - start).num_milliseconds().max(0);
    if ms < 1_000 {
        format!("{ms}ms")
    } else if ms < 120_000 {
        format!("{:.1}s", ms as f64 / 1e3)
    } else {
        format!("{}m{:02}s", ms / 60_000, (ms / 1_000) % 60)
    }
}

/// The workers the scheduler hears from, one row each.
pub fn workers(report: &WorkersReport) {
    if report.workers.is_empty() {
        println!("no workers heard from");
        return;
    }
    let rows: Vec<[String; 8]> = report
        .workers
        .iter()
        .map(|w| {
            let h = &w.heartbeat;
            let ago = (chrono::Utc::now() - w.last_seen).num_milliseconds().max(0);
            [
                safe(&h.worker_id).into_owned(),
                h.state.as_str().to_owned(),
                safe(&h.host).into_owned(),
                safe(&h.queues.join(",")).into_owned(),
                h.concurrency.to_string(),
                h.in_flight.to_string(),
                safe(&h.version).into_owned(),
                format!("{:.1}s ago", ago as f64 / 1e3),
            ]
        })
        .collect();
    columns(
        &[
            "WORKER",
            "STATE",
            "HOST",
            "QUEUES",
            "CONCURRENCY",
            "IN FLIGHT",
            "VERSION",
            "LAST SEEN",
        ],
        &rows,
    );
}

/// A table: each column as wide as its widest cell, two spaces apart,
/// no trailing spaces. The cells are printed as given: make them
/// [`safe`] first.
pub fn columns<const N: usize>(header: &[&str; N], rows: &[[String; N]]) {
    let widths: Vec<usize> = (0..N)
        .map(|i| {
            rows.iter()
                .map(|r| r[i].chars().count())
                .chain([header[i].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("{}", padded.join("  ").trim_end());
    };
    line(header.to_vec());
    for r in rows {
        line(r.iter().map(String::as_str).collect());
    }
}

/// `s` fit for a terminal: control characters (which could move the
/// cursor, recolour or retitle the terminal: any string here came from
/// the wire) are shown escaped, `\u{1b}`, and the rest as it is.
pub fn safe(s: &str) -> Cow<'_, str> {
    if !s.chars().any(char::is_control) {
        return Cow::Borrowed(s);
    }
    Cow::Owned(
        s.chars()
            .map(|c| {
                if c.is_control() {
                    c.escape_unicode().to_string()
                } else {
                    c.to_string()
                }
            })
            .collect(),
    )
}

/// What is paused: as JSON (`{"queues": [...], "types": [...]}`), or one
/// line per paused queue and type.
pub fn pauses(paused: &Paused, json: bool) {
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(paused).expect("serialisable")
        );
        return;
    }
    if paused.is_empty() {
        println!("nothing is paused");
        return;
    }
    for (what, entries) in [("queue", &paused.queues), ("type", &paused.types)] {
        for e in entries {
            println!(
                "paused {what} {} since {}",
                safe(&e.name),
                e.since.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::safe;

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(safe("worker-1"), "worker-1");
        assert_eq!(safe("é ü 漢"), "é ü 漢");
        assert_eq!(safe("a\x1b]0;pwned\x07b"), "a\\u{1b}]0;pwned\\u{7}b");
        assert_eq!(safe("x\ny\u{9b}2J"), "x\\u{a}y\\u{9b}2J");
    }
}
