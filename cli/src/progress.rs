//! The progress of `warren submit --wait` on stderr: a bar redrawn in place
//! on a terminal, a line per progress event otherwise (logs, CI).

use std::{
    collections::BTreeMap,
    io::{IsTerminal, Write},
    time::Instant,
};
use warren_shared::wire::{TaskState, WorkflowProgress, WorkflowReport};

/// The bar: when it started, whether stderr is a terminal, whether
/// anything was drawn, and the last progress (redrawn as time passes).
pub struct ProgressBar {
    started: Instant,
    tty: bool,
    drawn: bool,
    last: Option<WorkflowProgress>,
}

impl ProgressBar {
    pub fn new() -> ProgressBar {
        ProgressBar {
            started: Instant::now(),
            tty: std::io::stderr().is_terminal(),
            drawn: false,
            last: None,
        }
    }

    /// Draws the last progress again with the time now (terminals only).
    pub fn redraw(&mut self) {
        if let (true, Some(p)) = (self.tty, self.last.take()) {
            self.show(&p);
        }
    }

    pub fn show(&mut self, p: &WorkflowProgress) {
        self.last = Some(p.clone());
        let n = |s: TaskState| p.tasks.get(&s).copied().unwrap_or(0);
        let done = n(TaskState::Succeeded);
        let (running, failed) = (n(TaskState::Running), n(TaskState::Failed));
        let width = 30usize;
        let filled = (done as usize * width)
            .checked_div(p.total as usize)
            .unwrap_or(0)
            .min(width);
        let line = format!(
            "[{}{}] {done}/{} done, {running} running, {failed} failed, {:.1}s",
            "#".repeat(filled),
            ".".repeat(width - filled),
            p.total,
            self.started.elapsed().as_secs_f64()
        );
        let mut err = std::io::stderr().lock();
        if self.tty {
            let _ = write!(err, "\r\x1b[2K{line}");
        } else {
            let _ = writeln!(err, "{line}");
        }
        let _ = err.flush();
        self.drawn = true;
    }

    /// Ends the bar's line; on a terminal, shows the final counts first.
    pub fn finish(&mut self, report: Option<&WorkflowReport>) {
        if let Some(r) = report.filter(|r| !r.tasks.is_empty() && self.drawn) {
            let mut tasks = BTreeMap::new();
            for t in r.tasks.values() {
                *tasks.entry(t.state).or_insert(0) += 1;
            }
            self.show(&WorkflowProgress {
                workflow_id: r.workflow_id.clone(),
                name: r.name.clone(),
                status: r.status,
                total: r.tasks.len() as u32,
                tasks,
                created_at: r.created_at,
            });
        }
        if self.drawn && self.tty {
            eprintln!();
        }
    }
}
