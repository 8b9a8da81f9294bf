//! How the CLI prints what the scheduler answers: a workflow's final
//! outcome (JSON, and a verdict on stderr), a workflow's task table, and
//! the table of workers.

use std::process::ExitCode;
use warren_shared::wire::{TaskReport, TaskState, WorkersReport, WorkflowReport, WorkflowStatus};

/// Prints a final report: JSON on stdout, a one-line verdict on stderr.
pub fn outcome(report: &WorkflowReport) -> ExitCode {
    println!(
        "{}",
        serde_json::to_string_pretty(report).expect("serialisable")
    );
    eprintln!("workflow {} {}", report.workflow_id, report.status.as_str());
    for e in &report.errors {
        eprintln!("  {}: {}", e.code, e.message);
    }
    if let Some(e) = &report.error {
        eprintln!("  {e}");
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
        report.workflow_id,
        report.status.as_str()
    );
    if let Some(e) = &report.error {
        println!("error: {e}");
    }
    for e in &report.errors {
        println!("  {}: {}", e.code, e.message);
    }
    if report.tasks.is_empty() {
        return;
    }
    let width = report
        .tasks
        .keys()
        .map(String::len)
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
            id,
            t.state.as_str(),
            t.attempts,
            duration(t),
            t.worker.as_deref().unwrap_or("-")
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
                h.worker_id.clone(),
                h.state.as_str().to_owned(),
                h.host.clone(),
                h.queues.join(","),
                h.concurrency.to_string(),
                h.in_flight.to_string(),
                h.version.clone(),
                format!("{:.1}s ago", ago as f64 / 1e3),
            ]
        })
        .collect();
    let header = [
        "WORKER",
        "STATE",
        "HOST",
        "QUEUES",
        "CONCURRENCY",
        "IN FLIGHT",
        "VERSION",
        "LAST SEEN",
    ];
    let widths: Vec<usize> = (0..header.len())
        .map(|i| {
            rows.iter()
                .map(|r| r[i].len())
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
    for r in &rows {
        line(r.iter().map(String::as_str).collect());
    }
}
