//! `warren graph`: a workflow's DAG as Graphviz DOT or Mermaid, each task
//! labelled and coloured by its state; a request not yet submitted is drawn
//! as all pending.
//!
//! A mapped task (`map`) is one node, drawn with a double border (DOT) or
//! as a subroutine (Mermaid), labelled with its instances' counts
//! (`3/5 succeeded`) or, before it runs, what it maps over; its instances
//! (`resize[0]`, ...) are not drawn. What the request says of a task and
//! the report does not (`when`, a `run_if` other than `all_succeeded`,
//! `map`) is drawn when the request is known: from a request file, or
//! with `--request` beside a workflow id. A task with a `run_if` other
//! than the default has its incoming edges dashed.

use crate::print::Maps;
use anyhow::Context;
use serde_json::Value;
use std::collections::BTreeMap;
use warren_shared::wire::{
    RunIf, TaskReport, TaskSpec, TaskState, WorkflowReport, WorkflowRequest, WorkflowStatus,
};

/// The output format of `warren graph --format`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Dot,
    Mermaid,
}

/// The request's tasks by id: what a report does not say of them.
pub type Specs = BTreeMap<String, TaskSpec>;

/// Longest condition or `map` template drawn, in characters; longer ones
/// are cut with `…`.
const MAX_SHOWN_CHARS: usize = 60;

/// Reads a request (a file's content) for drawing.
pub fn parse_request(request: &Value) -> anyhow::Result<WorkflowRequest> {
    serde_json::from_value(request.clone()).context("the file is not a valid workflow request")
}

/// A request's tasks by id.
pub fn specs_of(request: &WorkflowRequest) -> Specs {
    request
        .tasks
        .iter()
        .map(|t| (t.id.clone(), t.clone()))
        .collect()
}

/// A not yet submitted request as a report of pending tasks, to draw it.
pub fn report_of_request(request: &WorkflowRequest) -> WorkflowReport {
    let mut report = WorkflowReport::not_found(request.id.as_deref().unwrap_or("workflow"));
    report.name.clone_from(&request.name);
    report.status = WorkflowStatus::Running;
    for t in &request.tasks {
        report.tasks.insert(
            t.id.clone(),
            TaskReport {
                state: TaskState::Pending,
                attempts: 0,
                depends_on: t.depends_on.clone(),
                output: None,
                output_elided: None,
                error: None,
                skip_reason: None,
                worker: None,
                started_at: None,
                finished_at: None,
                history: Vec::new(),
                attempt_log: Vec::new(),
                input: None,
            },
        );
    }
    report
}

/// One node's label, as lines: its id, its state (a mapped task's counts,
/// a skipped task's reason), then what the request says (`map`, `when`,
/// `run_if`).
fn label(id: &str, t: &TaskReport, spec: Option<&TaskSpec>, maps: &Maps) -> Vec<String> {
    let mut lines = vec![id.to_owned()];
    let mut state = t.state.as_str().to_owned();
    if let Some(counts) = maps.counts(id) {
        state = format!("{state}: {counts}");
    } else if let (TaskState::Skipped, Some(reason)) = (t.state, t.skip_reason) {
        state = format!("{state}: {}", reason.as_str());
    }
    lines.push(state);
    // A task re-run: how it ended in the runs before.
    if !t.history.is_empty() {
        lines.push(format!("earlier runs: {}", crate::print::earlier_runs(t)));
    }
    if let Some(spec) = spec {
        if let Some(map) = &spec.map
            && maps.width(id).is_none()
        {
            lines.push(format!("map {}", shortened(map)));
        }
        if let Some(when) = &spec.when {
            lines.push(format!("when {}", shortened(when)));
        }
        if !spec.run_if.is_default() {
            lines.push(format!("run_if {}", spec.run_if.as_str()));
        }
    }
    lines
}

/// Whether a task is drawn as mapped: it has instances in the report, or
/// the request gives it a `map`.
fn is_mapped(id: &str, spec: Option<&TaskSpec>, maps: &Maps) -> bool {
    maps.width(id).is_some() || spec.is_some_and(|s| s.map.is_some())
}

/// `s` on one line, at most [`MAX_SHOWN_CHARS`] characters.
fn shortened(s: &str) -> String {
    let one_line: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if one_line.chars().count() <= MAX_SHOWN_CHARS {
        return one_line;
    }
    let mut cut: String = one_line.chars().take(MAX_SHOWN_CHARS - 1).collect();
    cut.push('…');
    cut
}

/// The DAG of a report, each task labelled and coloured by its state, with
/// what `specs` says of its tasks (empty when the request is not known).
pub fn render(report: &WorkflowReport, specs: &Specs, format: Format) -> String {
    let colour = |s: TaskState| match s {
        TaskState::Pending => "#e0e0e0",
        TaskState::Ready => "#fff3b0",
        TaskState::Running => "#9ecbff",
        TaskState::Mapped => "#b9dcff",
        TaskState::Retrying => "#ffd08a",
        TaskState::Delayed => "#e6d8ff",
        TaskState::Succeeded => "#a8e6a1",
        TaskState::Failed => "#ff9b9b",
        TaskState::Skipped | TaskState::Cancelled => "#c8c8c8",
        _ => "#ffffff",
    };
    let maps = Maps::of(report);
    // The tasks drawn: every one but the instances of mapped tasks.
    let tasks: Vec<(&str, &TaskReport)> = report
        .tasks
        .iter()
        .filter(|(id, _)| !maps.is_instance(id))
        .map(|(id, t)| (id.as_str(), t))
        .collect();
    let spec = |id: &str| specs.get(id);
    let dashed = |id: &str| spec(id).is_some_and(|s| s.run_if != RunIf::AllSucceeded);
    let mut out = String::new();
    match format {
        Format::Dot => {
            out.push_str(&format!(
                "digraph {} {{\n  rankdir=LR;\n  node [shape=box, style=\"rounded,filled\"];\n",
                dot_id(&report.workflow_id)
            ));
            if report.run > 1 {
                out.push_str(&format!(
                    "  label=\"run {} of {}\";\n  labelloc=t;\n",
                    report.run,
                    dot_escape(&report.workflow_id)
                ));
            }
            for &(id, t) in &tasks {
                let lines: Vec<String> = label(id, t, spec(id), &maps)
                    .iter()
                    .map(|l| dot_escape(l))
                    .collect();
                let double = if is_mapped(id, spec(id), &maps) {
                    ", peripheries=2"
                } else {
                    ""
                };
                out.push_str(&format!(
                    "  {} [label=\"{}\", fillcolor=\"{}\"{double}];\n",
                    dot_id(id),
                    lines.join("\\n"),
                    colour(t.state)
                ));
            }
            for &(id, t) in &tasks {
                let style = if dashed(id) { " [style=dashed]" } else { "" };
                for d in &t.depends_on {
                    out.push_str(&format!("  {} -> {}{style};\n", dot_id(d), dot_id(id)));
                }
            }
            out.push_str("}\n");
        }
        Format::Mermaid => {
            // Mermaid node ids must be plain words: number the tasks.
            let ids: BTreeMap<&str, usize> = tasks
                .iter()
                .enumerate()
                .map(|(i, (k, _))| (*k, i))
                .collect();
            if report.run > 1 {
                out.push_str(&format!(
                    "---\ntitle: \"run {} of {}\"\n---\n",
                    report.run,
                    mermaid_escape(&report.workflow_id)
                ));
            }
            out.push_str("flowchart LR\n");
            for &(id, t) in &tasks {
                let lines: Vec<String> = label(id, t, spec(id), &maps)
                    .iter()
                    .map(|l| mermaid_escape(l))
                    .collect();
                let (open, close) = if is_mapped(id, spec(id), &maps) {
                    ("[[", "]]")
                } else {
                    ("[", "]")
                };
                out.push_str(&format!(
                    "  t{}{open}\"{}\"{close}:::{}\n",
                    ids[id],
                    lines.join("<br/>"),
                    t.state.as_str()
                ));
            }
            for &(id, t) in &tasks {
                let arrow = if dashed(id) { "-.->" } else { "-->" };
                for d in &t.depends_on {
                    if let Some(from) = ids.get(d.as_str()) {
                        out.push_str(&format!("  t{from} {arrow} t{}\n", ids[id]));
                    }
                }
            }
            let mut states: Vec<TaskState> = tasks.iter().map(|(_, t)| t.state).collect();
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
    format!("\"{}\"", dot_escape(s))
}

/// Text inside a quoted DOT string.
fn dot_escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

/// Text inside a quoted Mermaid label: quotes and markup as entity codes.
fn mermaid_escape(s: &str) -> String {
    s.replace('&', "#amp;")
        .replace('"', "#quot;")
        .replace('<', "#lt;")
        .replace('>', "#gt;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use warren_shared::wire::SkipReason;

    fn example(name: &str) -> WorkflowRequest {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/").to_owned() + name;
        let request: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        parse_request(&request).unwrap()
    }

    fn task(state: TaskState, depends_on: &[&str]) -> TaskReport {
        let mut t = report_of_request(
            &parse_request(&json!({"tasks": [{"id": "t", "type": "echo"}]})).unwrap(),
        )
        .tasks
        .remove("t")
        .unwrap();
        t.state = state;
        t.depends_on = depends_on.iter().map(|d| (*d).to_owned()).collect();
        t
    }

    /// list → resize (mapped, five instances: three succeeded, two
    /// running) → reduce, as a report says it.
    fn mapping_report() -> WorkflowReport {
        let mut r = WorkflowReport::not_found("gallery");
        r.status = WorkflowStatus::Running;
        r.tasks
            .insert("list".into(), task(TaskState::Succeeded, &[]));
        r.tasks
            .insert("resize".into(), task(TaskState::Mapped, &["list"]));
        for k in 0..5 {
            let state = if k < 3 {
                TaskState::Succeeded
            } else {
                TaskState::Running
            };
            r.tasks.insert(format!("resize[{k}]"), task(state, &[]));
        }
        r.tasks
            .insert("reduce".into(), task(TaskState::Pending, &["resize"]));
        r
    }

    #[test]
    fn a_mapped_task_is_one_node_with_its_counts() {
        let report = mapping_report();
        let dot = render(&report, &Specs::new(), Format::Dot);
        assert_eq!(
            dot,
            "digraph \"gallery\" {\n  rankdir=LR;\n  node [shape=box, style=\"rounded,filled\"];\n\
             \x20 \"list\" [label=\"list\\nsucceeded\", fillcolor=\"#a8e6a1\"];\n\
             \x20 \"reduce\" [label=\"reduce\\npending\", fillcolor=\"#e0e0e0\"];\n\
             \x20 \"resize\" [label=\"resize\\nmapped: 3/5 succeeded, 2 running\", fillcolor=\"#b9dcff\", peripheries=2];\n\
             \x20 \"resize\" -> \"reduce\";\n\
             \x20 \"list\" -> \"resize\";\n\
             }\n"
        );
        let mermaid = render(&report, &Specs::new(), Format::Mermaid);
        assert!(!mermaid.contains("resize["), "{mermaid}");
        assert!(
            mermaid.contains("  t2[[\"resize<br/>mapped: 3/5 succeeded, 2 running\"]]:::mapped\n"),
            "{mermaid}"
        );
        assert_eq!(mermaid.matches(" --> ").count(), 2, "{mermaid}");
        assert!(
            mermaid.contains("  classDef mapped fill:#b9dcff;\n"),
            "{mermaid}"
        );
    }

    #[test]
    fn a_request_draws_its_map_conditions_and_trigger_rules() {
        let request = example("dynamic_mapping.json");
        let dot = render(
            &report_of_request(&request),
            &specs_of(&request),
            Format::Dot,
        );
        assert!(
            dot.contains(
                "  \"resize\" [label=\"resize\\npending\\nmap ${list.output.images}\", fillcolor=\"#e0e0e0\", peripheries=2];\n"
            ),
            "{dot}"
        );

        let request = example("approval.json");
        let (report, specs) = (report_of_request(&request), specs_of(&request));
        let dot = render(&report, &specs, Format::Dot);
        assert!(
            dot.contains(
                "  \"approve\" [label=\"approve\\npending\\nwhen ${check.output.amount} <= ${workflow.input.limit}\", fillcolor=\"#e0e0e0\"];\n"
            ),
            "{dot}"
        );
        assert!(dot.contains("\\nrun_if all_done\", fillcolor"), "{dot}");
        // Edges into a task with a trigger rule of its own are dashed.
        assert!(
            dot.contains("  \"approve\" -> \"notify\" [style=dashed];\n"),
            "{dot}"
        );
        assert!(dot.contains("  \"check\" -> \"approve\";\n"), "{dot}");

        let mermaid = render(&report, &specs, Format::Mermaid);
        assert!(
            mermaid.contains(
                "[\"approve<br/>pending<br/>when ${check.output.amount} #lt;= ${workflow.input.limit}\"]:::pending"
            ),
            "{mermaid}"
        );
        assert!(
            mermaid.contains("[\"reject<br/>pending<br/>when ${check.output.amount} #gt; ${workflow.input.limit}\"]"),
            "{mermaid}"
        );
        assert_eq!(mermaid.matches(" -.-> ").count(), 2, "{mermaid}");
        assert_eq!(mermaid.matches(" --> ").count(), 2, "{mermaid}");

        let request = example("order_with_refund.json");
        let dot = render(
            &report_of_request(&request),
            &specs_of(&request),
            Format::Dot,
        );
        assert!(
            dot.contains("refund_payment\\npending\\nrun_if any_failed\""),
            "{dot}"
        );
    }

    #[test]
    fn skip_reasons_are_drawn_and_labels_are_escaped() {
        let request = parse_request(&json!({"id": "w\"1", "tasks": [
            {"id": "a", "type": "echo"},
            {"id": "b", "type": "echo", "depends_on": ["a"],
             "when": "${a.output.s} == \"x\\\\y\" && ${a.output.n} > 1"},
            {"id": "c", "type": "echo", "depends_on": ["b"],
             "when": format!("${{a.output.s}} == \"{}\"", "z".repeat(100))}
        ]}))
        .unwrap();
        let mut report = report_of_request(&request);
        let b = report.tasks.get_mut("b").unwrap();
        b.state = TaskState::Skipped;
        b.skip_reason = Some(SkipReason::Condition);
        let dot = render(&report, &specs_of(&request), Format::Dot);
        assert!(dot.starts_with("digraph \"w\\\"1\" {"), "{dot}");
        assert!(
            dot.contains(
                "[label=\"b\\nskipped: condition\\nwhen ${a.output.s} == \\\"x\\\\\\\\y\\\" && ${a.output.n} > 1\", fillcolor=\"#c8c8c8\"]"
            ),
            "{dot}"
        );
        // A long condition is cut.
        let c = dot.lines().find(|l| l.starts_with("  \"c\" [")).unwrap();
        assert!(c.contains("zzz…\", fillcolor"), "{c}");
        let mermaid = render(&report, &specs_of(&request), Format::Mermaid);
        assert!(
            mermaid.contains("[\"b<br/>skipped: condition<br/>when ${a.output.s} == #quot;x\\\\y#quot; #amp;#amp; ${a.output.n} #gt; 1\"]:::skipped"),
            "{mermaid}"
        );
    }
}
