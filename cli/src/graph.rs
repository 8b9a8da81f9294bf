//! `warren graph`: a workflow's DAG as Graphviz DOT or Mermaid, each task
//! labelled and coloured by its state; a request not yet submitted is drawn
//! as all pending.

use anyhow::Context;
use serde_json::Value;
use std::collections::BTreeMap;
use warren_shared::wire::{TaskReport, TaskState, WorkflowReport, WorkflowStatus};

/// The output format of `warren graph --format`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Dot,
    Mermaid,
}

/// A not yet submitted request as a report of pending tasks, to draw it.
pub fn report_of_request(request: &Value) -> anyhow::Result<WorkflowReport> {
    let parsed: warren_shared::wire::WorkflowRequest = serde_json::from_value(request.clone())
        .context("the file is not a valid workflow request")?;
    let mut report = WorkflowReport::not_found(parsed.id.as_deref().unwrap_or("workflow"));
    report.name = parsed.name;
    report.status = WorkflowStatus::Running;
    for t in parsed.tasks {
        report.tasks.insert(
            t.id,
            TaskReport {
                state: TaskState::Pending,
                attempts: 0,
                depends_on: t.depends_on,
                output: None,
                output_elided: None,
                error: None,
                skip_reason: None,
                worker: None,
                started_at: None,
                finished_at: None,
            },
        );
    }
    Ok(report)
}

/// The DAG of a report, each task labelled and coloured by its state.
pub fn render(report: &WorkflowReport, format: Format) -> String {
    let colour = |s: TaskState| match s {
        TaskState::Pending => "#e0e0e0",
        TaskState::Ready => "#fff3b0",
        TaskState::Running => "#9ecbff",
        TaskState::Retrying => "#ffd08a",
        TaskState::Delayed => "#e6d8ff",
        TaskState::Succeeded => "#a8e6a1",
        TaskState::Failed => "#ff9b9b",
        TaskState::Skipped | TaskState::Cancelled => "#c8c8c8",
        _ => "#ffffff",
    };
    let mut out = String::new();
    match format {
        Format::Dot => {
            out.push_str(&format!(
                "digraph {} {{\n  rankdir=LR;\n  node [shape=box, style=\"rounded,filled\"];\n",
                dot_id(&report.workflow_id)
            ));
            for (id, t) in &report.tasks {
                out.push_str(&format!(
                    "  {} [label=\"{id}\\n{}\", fillcolor=\"{}\"];\n",
                    dot_id(id),
                    t.state.as_str(),
                    colour(t.state)
                ));
            }
            for (id, t) in &report.tasks {
                for d in &t.depends_on {
                    out.push_str(&format!("  {} -> {};\n", dot_id(d), dot_id(id)));
                }
            }
            out.push_str("}\n");
        }
        Format::Mermaid => {
            // Mermaid node ids must be plain words: number the tasks.
            let ids: BTreeMap<&str, usize> = report
                .tasks
                .keys()
                .enumerate()
                .map(|(i, k)| (k.as_str(), i))
                .collect();
            out.push_str("flowchart LR\n");
            for (id, t) in &report.tasks {
                out.push_str(&format!(
                    "  t{}[\"{id}<br/>{}\"]:::{}\n",
                    ids[id.as_str()],
                    t.state.as_str(),
                    t.state.as_str()
                ));
            }
            for (id, t) in &report.tasks {
                for d in &t.depends_on {
                    if let Some(from) = ids.get(d.as_str()) {
                        out.push_str(&format!("  t{from} --> t{}\n", ids[id.as_str()]));
                    }
                }
            }
            let mut states: Vec<TaskState> = report.tasks.values().map(|t| t.state).collect();
            states.sort();
            states.dedup();
            for s in states {
                out.push_str(&format!("  classDef {} fill:{};\n", s.as_str(), colour(s)));
            }
        }
    }
    out
}

/// A DOT identifier: quoted, with quotes and backslashes escaped.
fn dot_id(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}
