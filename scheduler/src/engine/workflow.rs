//! One running workflow in memory: its DAG as index lists, each task's
//! state ([`TaskRt`]), the counters derived from them, and its report.
//!
//! Built once per workflow ([`build`]) when it is accepted or restored,
//! with each task's remaining critical path computed then
//! ([`critical_path_ranks`]). The engine changes tasks in place and writes
//! each change to the store as the task's row ([`Workflow::row`]); a
//! restored workflow is rebuilt from those rows ([`restored`]). The two
//! conversions between a task in memory and its row are here, side by
//! side ([`TaskRt::to_row`], [`TaskRt::from_row`]).

use crate::template::Source;
use crate::{
    batch::{ReplyTo, TaskRow, Unreadable},
    validate::ValidWorkflow,
};
use chrono::{DateTime, Utc};
use serde_json::Value;
use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::Arc,
};
use warren_shared::wire::{
    EarlierOutcome, Rejection, RunSummary, SkipReason, TaskError, TaskReport, TaskSpec, TaskState,
    WorkflowReport, WorkflowStatus,
};

/// A task's state in memory (its durable form is a [`TaskRow`]).
#[derive(Debug, Clone)]
pub(super) struct TaskRt {
    pub(super) state: TaskState,
    /// Why it was skipped, when it was.
    pub(super) skip_reason: Option<SkipReason>,
    /// The current (or last) attempt, from 1; 0 before the first.
    pub(super) attempt: u32,
    /// When a retrying task is due (ms since the epoch).
    pub(super) due_at_ms: Option<i64>,
    pub(super) output: Option<Value>,
    /// The output's size in bytes of JSON (0 without one): what it costs
    /// a report and the memory budget.
    pub(super) output_bytes: usize,
    pub(super) error: Option<TaskError>,
    pub(super) worker: Option<String>,
    pub(super) started_at: Option<DateTime<Utc>>,
    pub(super) finished_at: Option<DateTime<Utc>>,
}

impl TaskRt {
    /// A task that has not started (and has no row in the store).
    pub(super) fn pending() -> TaskRt {
        TaskRt {
            state: TaskState::Pending,
            skip_reason: None,
            attempt: 0,
            due_at_ms: None,
            output: None,
            output_bytes: 0,
            error: None,
            worker: None,
            started_at: None,
            finished_at: None,
        }
    }

    /// Its row in the store, as task `task_id` of `workflow_id`.
    pub(super) fn to_row(&self, workflow_id: Arc<str>, task_id: String) -> TaskRow {
        TaskRow {
            workflow_id,
            task_id,
            state: self.state,
            skip_reason: self.skip_reason,
            attempt: self.attempt,
            due_at_ms: self.due_at_ms,
            output: self.output.as_ref().map(Value::to_string),
            error: self.error.clone(),
            worker: self.worker.clone(),
            started_at: self.started_at,
            finished_at: self.finished_at,
        }
    }

    /// The task as its row in the store says; fails when the stored
    /// output is not JSON.
    pub(super) fn from_row(row: TaskRow) -> Result<TaskRt, serde_json::Error> {
        Ok(TaskRt {
            state: row.state,
            skip_reason: row.skip_reason,
            attempt: row.attempt,
            due_at_ms: row.due_at_ms,
            output_bytes: row.output.as_ref().map_or(0, String::len),
            output: row.output.map(|o| serde_json::from_str(&o)).transpose()?,
            error: row.error,
            worker: row.worker,
            started_at: row.started_at,
            finished_at: row.finished_at,
        })
    }
}

/// How large a report may be: bytes of JSON, and tasks listed.
#[derive(Debug, Clone, Copy)]
pub struct ReportBounds {
    pub max_bytes: usize,
    pub max_tasks: usize,
}

/// The size of `v` as compact JSON.
pub(super) fn json_len<T: serde::Serialize>(v: &T) -> usize {
    crate::template::json_len_within(v, usize::MAX).expect("no limit")
}

/// A running workflow. See the module docs.
#[derive(Debug)]
pub(super) struct Workflow {
    pub(super) id: Arc<str>,
    pub(super) name: Option<String>,
    pub(super) priority: u8,
    pub(super) input: Value,
    pub(super) created_at: DateTime<Utc>,
    pub(super) specs: Vec<TaskSpec>,
    /// Task index by id.
    pub(super) index: HashMap<String, u32>,
    /// Whether each task's input holds `${...}` references.
    pub(super) templated: Vec<bool>,
    /// The tasks that depend on each task.
    pub(super) dependents: Vec<Vec<u32>>,
    /// Each task's remaining critical path: its weight (duration hint, or
    /// 1) plus the heaviest path through its dependents to the end.
    pub(super) rank: Vec<u64>,
    /// Dependencies of each task that have not ended yet.
    pub(super) waiting: Vec<u32>,
    pub(super) tasks: Vec<TaskRt>,
    /// Tasks dispatched whose result has not arrived.
    pub(super) running: u32,
    /// Most tasks running at once (`max_concurrency`; `u32::MAX` if none).
    pub(super) max_running: u32,
    /// Tasks not in a final state.
    pub(super) unfinished: u32,
    /// Set when a task failed for good: the workflow's one-line error.
    pub(super) failure: Option<String>,
    /// Set by a cancel request.
    pub(super) cancelled: bool,
    /// What a failure makes of it (`on_failure`).
    pub(super) on_failure: warren_shared::wire::OnFailure,
    /// Mapped tasks whose instances were added, by task (`map.rs`).
    pub(super) maps: HashMap<u32, super::map::MapRt>,
    /// The instances of mapped tasks, by task.
    pub(super) instances: HashMap<u32, super::map::Instance>,
    /// Longest it may run from its start (`deadline_ms`).
    pub(super) deadline_ms: Option<u64>,
    /// Set when it ended at its deadline: the report says so (`deadline`).
    pub(super) deadline_passed: bool,
    /// In `Engine::progress_dirty`: marks it once per interval, not once
    /// per task (no hashing of the id on every result).
    pub(super) progress_marked: bool,
    /// Where the outcome goes.
    pub(super) replies: Vec<ReplyTo>,
    /// Bytes it holds against the memory budget: its request body, the
    /// outputs received and its tasks' history.
    pub(super) held_bytes: usize,
    /// Which run this is (1 until a `rerun`), when it started (the
    /// deadline counts from then), and the `rerun_id` that started it.
    pub(super) run: u32,
    pub(super) run_started_at: DateTime<Utc>,
    pub(super) rerun_id: Option<String>,
    /// Every run once it was re-run, the last this one (`rerun.rs`).
    pub(super) runs: Vec<RunSummary>,
    /// How tasks ended in earlier runs, by task.
    pub(super) history: HashMap<u32, Vec<EarlierOutcome>>,
    /// Bytes of JSON of `runs` and `history`, for the report's bound.
    pub(super) history_bytes: usize,
}

impl Workflow {
    /// The workflow's report as of now, within `bounds`: every task with
    /// its output while that fits; else the largest outputs are left out
    /// (`output_elided`), and if even that is too large (very many
    /// tasks), tasks are left out too (`tasks_elided`), failed ones kept
    /// first.
    pub(super) fn report(
        &self,
        status: WorkflowStatus,
        finished_at: Option<DateTime<Utc>>,
        bounds: ReportBounds,
    ) -> WorkflowReport {
        let mut report = WorkflowReport {
            workflow_id: self.id.to_string(),
            name: self.name.clone(),
            status,
            tasks: BTreeMap::new(),
            tasks_elided: 0,
            task_counts: BTreeMap::new(),
            errors: if self.deadline_passed {
                vec![Rejection {
                    code: "deadline".into(),
                    message: self.failure.clone().unwrap_or_default(),
                    task: None,
                }]
            } else {
                Vec::new()
            },
            error: self.failure.clone(),
            not_before: None,
            created_at: Some(self.created_at),
            finished_at,
            run: self.run,
            runs: super::rerun::runs_now(self, status, finished_at),
        };
        let n = self.specs.len();
        if n <= bounds.max_tasks && self.report_bytes_at_most() <= bounds.max_bytes {
            for i in 0..n {
                report
                    .tasks
                    .insert(self.specs[i].id.clone(), self.task_report(i, true));
            }
            return report;
        }
        // Measured: each task's entry with its output elided (the marker
        // `"output_elided":N` counted), and what the output would cost
        // instead of the marker.
        // Every task counted by state, in case some are left out (measured
        // with the header; dropped again if none is).
        for t in &self.tasks {
            *report.task_counts.entry(t.state).or_default() += 1;
        }
        let header = json_len(&report) + r#","tasks_elided":4294967295"#.len();
        let has_output = |i: usize| self.tasks[i].output.is_some();
        let marker = |i: usize| {
            if has_output(i) {
                r#","output_elided":"#.len() + json_len(&self.tasks[i].output_bytes)
            } else {
                0
            }
        };
        let instead = |i: usize| -> isize {
            let output = self.tasks[i].output_bytes + r#","output":"#.len();
            output as isize - marker(i) as isize
        };
        // Failed tasks first, then the others in request order; only the
        // first `max_tasks` of them can be listed, so only their entries
        // are built and measured (a report of 1,000 tasks of a workflow of
        // 100,000 costs the 1,000).
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by_key(|&i| self.tasks[i].state != TaskState::Failed);
        order.truncate(bounds.max_tasks);
        let mut entries: HashMap<usize, TaskReport> = HashMap::with_capacity(order.len());
        let mut kept = Vec::new();
        let mut total = header as isize;
        for &i in &order {
            let entry = self.task_report(i, false);
            let base = json_len(&entry) + json_len(&self.specs[i].id) + 2 + marker(i);
            if total + base as isize > bounds.max_bytes as isize {
                break;
            }
            total += base as isize;
            entries.insert(i, entry);
            kept.push(i);
        }
        report.tasks_elided = (n - kept.len()) as u32;
        if report.tasks_elided == 0 {
            report.task_counts.clear();
        }
        // Outputs, smallest first, while they fit.
        let mut by_size: Vec<usize> = kept.iter().copied().filter(|&i| has_output(i)).collect();
        by_size.sort_by_key(|&i| instead(i));
        let mut with_output = HashSet::new();
        for i in by_size {
            if total + instead(i) > bounds.max_bytes as isize {
                break;
            }
            total += instead(i);
            with_output.insert(i);
        }
        for i in kept {
            let mut entry = entries.remove(&i).expect("built above");
            let with_output = with_output.contains(&i);
            if with_output {
                entry.output = self.tasks[i].output.clone();
            } else if self.tasks[i].output.is_some() {
                entry.output_elided = Some(self.tasks[i].output_bytes as u64);
            }
            report.tasks.insert(self.specs[i].id.clone(), entry);
        }
        report
    }

    /// Task `i` in a report, with its output or without.
    pub(super) fn task_report(&self, i: usize, with_output: bool) -> TaskReport {
        let (spec, t) = (&self.specs[i], &self.tasks[i]);
        TaskReport {
            state: t.state,
            attempts: t.attempt,
            depends_on: spec.depends_on.clone(),
            output: if with_output { t.output.clone() } else { None },
            output_elided: None,
            error: t.error.clone(),
            skip_reason: t.skip_reason,
            worker: t.worker.clone(),
            started_at: t.started_at,
            finished_at: t.finished_at,
            history: self.history.get(&(i as u32)).cloned().unwrap_or_default(),
            attempt_log: Vec::new(),
            input: None,
        }
    }

    /// A bound on the full report's size, cheap to compute: strings are
    /// counted as if every character were escaped (`\u00XX`).
    fn report_bytes_at_most(&self) -> usize {
        const TASK_FIXED: usize = 256;
        let text = |s: &str| 6 * s.len() + 2;
        let mut total = 1024
            + self.history_bytes
            + self.name.as_deref().map_or(0, text)
            + self.failure.as_deref().map_or(0, text)
            + text(&self.id);
        for (spec, t) in self.specs.iter().zip(&self.tasks) {
            total += TASK_FIXED
                + text(&spec.id)
                + spec.depends_on.iter().map(|d| text(d) + 1).sum::<usize>()
                + t.output_bytes
                + t.error.as_ref().map_or(0, |e| text(&e.message))
                + t.worker.as_deref().map_or(0, text);
        }
        total
    }

    /// Task `i`'s row, as the store keeps it.
    pub(super) fn row(&self, i: u32) -> TaskRow {
        self.tasks[i as usize].to_row(self.id.clone(), self.specs[i as usize].id.clone())
    }

    /// What a template in task `i`'s input or condition reads: the
    /// workflow input, a task's output, and for an instance of a mapped
    /// task its element (`${item}`) and position (`${index}`).
    pub(super) fn source(&self, i: usize, s: &Source) -> Option<&Value> {
        match s {
            Source::WorkflowInput => Some(&self.input),
            Source::TaskOutput(name) => self.tasks[*self.index.get(name.as_str())? as usize]
                .output
                .as_ref(),
            Source::Item => {
                let instance = self.instances.get(&(i as u32))?;
                let m = instance.of as usize;
                let k = instance.index.as_u64()? as usize;
                super::map::items(self, m).ok()?.get(k)
            }
            Source::Index => Some(&self.instances.get(&(i as u32))?.index),
        }
    }

    /// Task `i`'s input with its templates substituted, at most `max`
    /// bytes of JSON: what its task message carries (the sources it reads
    /// are committed outputs, which do not change).
    pub(super) fn resolved_input(
        &self,
        i: usize,
        max: usize,
    ) -> Result<Value, crate::template::ResolveError> {
        use crate::template::{self, ResolveError};
        let spec = &self.specs[i];
        let input = if self.templated[i] {
            template::resolve(&spec.input, &|s: &Source| self.source(i, s), max)
        } else {
            Ok(spec.input.clone())
        };
        // What was substituted fits; the whole (with its literal parts)
        // must too.
        input.and_then(|v| match template::json_len_within(&v, max) {
            Some(_) => Ok(v),
            None => Err(ResolveError::TooLarge {
                bytes: template::json_len_within(&v, usize::MAX).unwrap_or(usize::MAX),
            }),
        })
    }

    /// Task `i`'s report as a single-task answer gives it: its output in
    /// full and its input as resolved (none while a source it reads has
    /// no output yet, or past `max` bytes).
    pub(super) fn single_task_report(&self, i: usize, max: usize) -> TaskReport {
        TaskReport {
            input: self.resolved_input(i, max).ok(),
            ..self.task_report(i, true)
        }
    }

    /// The workflow's one-line error when task `i` failed for good.
    pub(super) fn failure_line(&self, i: usize) -> String {
        let t = &self.tasks[i];
        let why = t
            .error
            .as_ref()
            .map_or("no error given", |e| e.message.as_str());
        let line = format!(
            "task `{}` failed after {} attempt{}: {why}",
            self.specs[i].id,
            t.attempt,
            if t.attempt == 1 { "" } else { "s" }
        );
        crate::validate::shortened(&line, super::MAX_FAILURE_LINE_CHARS)
    }
}

/// Builds a workflow from its validated definition, each task's state
/// given by `task` (pending for a new workflow, its stored row for a
/// restored one). The counters are those of a workflow with every task
/// pending.
pub(super) fn build(
    id: Arc<str>,
    v: ValidWorkflow,
    created_at: DateTime<Utc>,
    replies: Vec<ReplyTo>,
    mut task: impl FnMut(&TaskSpec) -> TaskRt,
) -> Workflow {
    let n = v.tasks.len();
    let mut dependents = vec![Vec::new(); n];
    for (i, ds) in v.deps.iter().enumerate() {
        for &d in ds {
            dependents[d as usize].push(i as u32);
        }
    }
    let rank = critical_path_ranks(&v.tasks, &dependents, &v.deps);
    Workflow {
        id,
        rank,
        name: v.name,
        priority: v.priority,
        input: v.input,
        created_at,
        tasks: v.tasks.iter().map(&mut task).collect(),
        waiting: v.deps.iter().map(|d| d.len() as u32).collect(),
        index: v
            .tasks
            .iter()
            .enumerate()
            .map(|(i, t)| (t.id.clone(), i as u32))
            .collect(),
        specs: v.tasks,
        templated: v.templated,
        dependents,
        running: 0,
        max_running: v.max_concurrency,
        unfinished: n as u32,
        failure: None,
        cancelled: false,
        on_failure: v.on_failure,
        maps: HashMap::new(),
        instances: HashMap::new(),
        deadline_ms: v.deadline_ms,
        deadline_passed: false,
        progress_marked: false,
        replies,
        held_bytes: 0,
        run: 1,
        run_started_at: created_at,
        rerun_id: None,
        runs: Vec::new(),
        history: HashMap::new(),
        history_bytes: 0,
    }
}

/// Rebuilds a running workflow from its stored task rows (a task without
/// one is pending), its counters derived from the task states: what has
/// not succeeded holds its dependents back, and the first failed task
/// gives the workflow's error. Fails when a stored output is not JSON.
pub(super) fn restored(
    id: Arc<str>,
    v: ValidWorkflow,
    created_at: DateTime<Utc>,
    replies: Vec<ReplyTo>,
    rows: Vec<TaskRow>,
) -> Result<Workflow, Unreadable> {
    let mut rows: HashMap<String, TaskRow> =
        rows.into_iter().map(|t| (t.task_id.clone(), t)).collect();
    let mut corrupt = None;
    let mut wf = build(id, v, created_at, replies, |spec| {
        match rows.remove(&spec.id).map(TaskRt::from_row) {
            None => TaskRt::pending(),
            Some(Ok(t)) => t,
            Some(Err(e)) => {
                corrupt = Some(format!("output of {}: {e}", spec.id));
                TaskRt::pending()
            }
        }
    });
    if let Some(c) = corrupt {
        return Err(Unreadable(c));
    }
    // What is left are the rows of mapped tasks' instances.
    super::map::expand_restored(&mut wf, rows).map_err(Unreadable)?;
    for i in 0..wf.tasks.len() {
        let state = wf.tasks[i].state;
        if state.is_final() {
            for &d in &wf.dependents[i] {
                wf.waiting[d as usize] -= 1;
            }
        }
        if state.is_final() {
            wf.unfinished -= 1;
        }
        if state == TaskState::Failed && wf.failure.is_none() {
            wf.failure = Some(wf.failure_line(i));
        }
    }
    Ok(wf)
}

/// Remaining critical path of each task (see [`Workflow::rank`]), in
/// O(tasks + edges): tasks are settled once all their dependents are.
pub(super) fn critical_path_ranks(
    specs: &[TaskSpec],
    dependents: &[Vec<u32>],
    deps: &[Vec<u32>],
) -> Vec<u64> {
    let n = specs.len();
    let weight = |i: usize| specs[i].duration_hint_ms.unwrap_or(1).max(1);
    let mut rank = vec![0u64; n];
    let mut left: Vec<usize> = dependents.iter().map(Vec::len).collect();
    let mut settled: Vec<usize> = (0..n).filter(|&i| left[i] == 0).collect();
    while let Some(i) = settled.pop() {
        let heaviest = dependents[i]
            .iter()
            .map(|&d| rank[d as usize])
            .max()
            .unwrap_or(0);
        rank[i] = weight(i).saturating_add(heaviest);
        for &p in &deps[i] {
            left[p as usize] -= 1;
            if left[p as usize] == 0 {
                settled.push(p as usize);
            }
        }
    }
    rank
}
