//! How the CLI prints what the scheduler answers: a workflow's final
//! outcome (JSON, and a verdict on stderr), a workflow's task table, the
//! table of workers, and what is paused.

use std::{borrow::Cow, collections::BTreeMap, process::ExitCode};
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

/// A workflow's state, its errors, and a table of its tasks. The
/// instances of a mapped task (`resize[0]`, `resize[1]`, ...) are folded
/// into its row, which counts them by state, unless `instances` asks for
/// them (each then under its mapped task, in order). A last column,
/// `DETAIL`, appears when a task has one: a mapped task's counts, a
/// skipped task's `skip_reason`.
pub fn table(report: &WorkflowReport, instances: bool) {
    let run = if report.run > 1 {
        format!(" (run {})", report.run)
    } else {
        String::new()
    };
    println!(
        "workflow {}: {}{run}",
        safe(&report.workflow_id),
        report.status.as_str()
    );
    runs(report);
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
    let maps = Maps::of(report);
    let row = |id: &str, t: &TaskReport| {
        [
            safe(id).into_owned(),
            t.state.as_str().to_owned(),
            t.attempts.to_string(),
            duration(t),
            safe(t.worker.as_deref().unwrap_or("-")).into_owned(),
            detail(&maps, id, t),
        ]
    };
    let mut rows = Vec::new();
    let mut folded = 0;
    for (id, t) in &report.tasks {
        if maps.is_instance(id) {
            continue;
        }
        rows.push(row(id, t));
        let mine = maps.instances(id);
        if instances {
            rows.extend(mine.iter().map(|(i, t)| row(i, t)));
        } else {
            folded += mine.len();
        }
    }
    let header = ["TASK", "STATE", "ATTEMPTS", "DURATION", "WORKER", "DETAIL"];
    if rows.iter().any(|r| !r[5].is_empty()) {
        columns(&header, &rows);
    } else {
        let rows: Vec<[String; 5]> = rows
            .into_iter()
            .map(|[a, b, c, d, e, _]| [a, b, c, d, e])
            .collect();
        columns(
            &[header[0], header[1], header[2], header[3], header[4]],
            &rows,
        );
    }
    if folded > 0 {
        println!("({folded} instances of mapped tasks not shown: --instances shows them)");
    }
}

/// A re-run workflow's earlier runs, a line each: number, outcome, end,
/// what the rerun named, and a failed run's error.
fn runs(report: &WorkflowReport) {
    let Some((_, earlier)) = report.runs.split_last() else {
        return;
    };
    for r in earlier {
        let mut line = format!("  run {}: {}", r.run, r.status.as_str());
        if let Some(at) = r.finished_at {
            line.push_str(&format!(
                " at {}",
                at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            ));
        }
        if let Some(e) = &r.error {
            line.push_str(&format!(" ({})", safe(e)));
        }
        println!("{line}");
    }
    if let Some(current) = report.runs.last() {
        let from = if current.from.is_empty() {
            "every task that had not succeeded".to_owned()
        } else {
            current
                .from
                .iter()
                .map(|t| safe(t).into_owned())
                .collect::<Vec<_>>()
                .join(", ")
        };
        println!("  run {}: re-ran {from} and what follows", current.run);
    }
}

/// A task's detail in the status table: a mapped task's instances by
/// state (`3/5 succeeded, 2 running`), a skipped task's reason, and how a
/// re-run task ended in the runs before (`before: 1 failed`).
fn detail(maps: &Maps, id: &str, t: &TaskReport) -> String {
    let mut parts = Vec::new();
    if let Some(counts) = maps.counts(id) {
        parts.push(counts);
    } else if let (TaskState::Skipped, Some(reason)) = (t.state, t.skip_reason) {
        parts.push(reason.as_str().to_owned());
    }
    if !t.history.is_empty() {
        parts.push(format!("before: {}", earlier_runs(t)));
    }
    parts.join("; ")
}

/// How a re-run task ended in the runs before: `1 failed, 2 succeeded`.
pub fn earlier_runs(t: &TaskReport) -> String {
    t.history
        .iter()
        .map(|h| format!("{} {}", h.run, h.state.as_str()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// If `id` names an instance of a mapped task (`resize[3]`): the mapped
/// task's id and the instance's position. (Task ids are letters, digits,
/// `_` and `-`, so only an instance has brackets.)
pub fn instance_of(id: &str) -> Option<(&str, usize)> {
    let (task, k) = id.strip_suffix(']')?.rsplit_once('[')?;
    if k.is_empty() || !k.bytes().all(|b| b.is_ascii_digit()) || (k.len() > 1 && k.starts_with('0'))
    {
        return None;
    }
    Some((task, k.parse().ok()?))
}

/// The mapped tasks of a report and their instances, in order.
pub struct Maps<'a> {
    by_task: BTreeMap<&'a str, Vec<(usize, &'a str, &'a TaskReport)>>,
}

impl<'a> Maps<'a> {
    /// Groups the report's instances under their mapped tasks (an id
    /// looking like an instance whose task is not in the report is taken
    /// as a task of its own).
    pub fn of(report: &'a WorkflowReport) -> Maps<'a> {
        let mut by_task: BTreeMap<&str, Vec<(usize, &str, &TaskReport)>> = BTreeMap::new();
        for (id, t) in &report.tasks {
            if let Some((task, k)) = instance_of(id)
                && report.tasks.contains_key(task)
            {
                by_task.entry(task).or_default().push((k, id, t));
            }
        }
        for v in by_task.values_mut() {
            v.sort_by_key(|(k, _, _)| *k);
        }
        Maps { by_task }
    }

    /// Whether `id` is an instance of a mapped task of the report.
    pub fn is_instance(&self, id: &str) -> bool {
        instance_of(id).is_some_and(|(task, _)| self.by_task.contains_key(task))
    }

    /// The instances of `task`, in order (none if it is not mapped).
    pub fn instances(&self, task: &str) -> Vec<(&'a str, &'a TaskReport)> {
        self.by_task
            .get(task)
            .map(|v| v.iter().map(|(_, id, t)| (*id, *t)).collect())
            .unwrap_or_default()
    }

    /// How many instances `task` has, if it is a mapped task with some in
    /// the report.
    pub fn width(&self, task: &str) -> Option<usize> {
        self.by_task.get(task).map(Vec::len)
    }

    /// `task`'s instances by state: `3/5 succeeded`, then the other
    /// states there are, most first (`3/5 succeeded, 1 running, 1
    /// failed`); `None` if it has no instance in the report.
    pub fn counts(&self, task: &str) -> Option<String> {
        let instances = self.by_task.get(task)?;
        let mut by_state: BTreeMap<TaskState, usize> = BTreeMap::new();
        for (_, _, t) in instances {
            *by_state.entry(t.state).or_default() += 1;
        }
        let done = by_state.remove(&TaskState::Succeeded).unwrap_or(0);
        let mut others: Vec<(TaskState, usize)> = by_state.into_iter().collect();
        others.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        let mut s = format!("{done}/{} succeeded", instances.len());
        for (state, n) in others {
            s.push_str(&format!(", {n} {}", state.as_str()));
        }
        Some(s)
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
    use super::{Maps, instance_of, safe};
    use warren_shared::wire::{TaskReport, TaskState, WorkflowReport};

    #[test]
    fn instances_are_told_from_tasks() {
        assert_eq!(instance_of("resize[0]"), Some(("resize", 0)));
        assert_eq!(instance_of("resize[12]"), Some(("resize", 12)));
        for not in [
            "resize",
            "resize[]",
            "resize[x]",
            "resize[01]",
            "resize[1",
            "r[1]x",
        ] {
            assert_eq!(instance_of(not), None, "{not}");
        }
    }

    #[test]
    fn a_mapped_tasks_instances_are_counted_by_state_in_order() {
        let task = |state| -> TaskReport {
            serde_json::from_value(serde_json::json!({"state": state, "attempts": 1})).unwrap()
        };
        let mut r = WorkflowReport::not_found("w");
        r.tasks.insert("x".into(), task("mapped"));
        for (k, state) in [
            "succeeded",
            "running",
            "failed",
            "running",
            "succeeded",
            "succeeded",
        ]
        .into_iter()
        .enumerate()
        {
            r.tasks.insert(format!("x[{k}]"), task(state));
        }
        // Not an instance: no task `y` in the report.
        r.tasks.insert("y[0]".into(), task("succeeded"));
        r.tasks.insert("x[10]".into(), task("pending"));
        let maps = Maps::of(&r);
        assert_eq!(
            maps.counts("x").as_deref(),
            Some("3/7 succeeded, 2 running, 1 pending, 1 failed")
        );
        assert_eq!(maps.counts("y[0]"), None);
        assert!(maps.is_instance("x[10]") && !maps.is_instance("y[0]"));
        let order: Vec<&str> = maps.instances("x").into_iter().map(|(id, _)| id).collect();
        assert_eq!(
            order,
            ["x[0]", "x[1]", "x[2]", "x[3]", "x[4]", "x[5]", "x[10]"]
        );
        assert_eq!(r.tasks["x[2]"].state, TaskState::Failed);
    }

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(safe("worker-1"), "worker-1");
        assert_eq!(safe("é ü 漢"), "é ü 漢");
        assert_eq!(safe("a\x1b]0;pwned\x07b"), "a\\u{1b}]0;pwned\\u{7}b");
        assert_eq!(safe("x\ny\u{9b}2J"), "x\\u{a}y\\u{9b}2J");
    }
}
