//! `/metrics`: the scheduler's metrics in Prometheus' text format.

use super::Sources;
use crate::{engine::TypeUsage, histogram::Histogram, metrics::Metrics};
use axum::{
    extract::State,
    http::header,
    response::{IntoResponse, Response},
};
use std::fmt::Write;

pub(super) async fn prometheus(State(s): State<Sources>) -> Response {
    let mut text = render(&s.metrics);
    // The store's: what retention deleted, and its size (a failed read
    // leaves the gauge out rather than failing the scrape).
    let _ = writeln!(
        text,
        "# HELP warren_store_pruned_total Ended workflows deleted by retention (WARREN_RETENTION) through this scheduler.\n# TYPE warren_store_pruned_total counter\nwarren_store_pruned_total {}",
        s.store.pruned()
    );
    if let Ok(bytes) = s.store.size_bytes().await {
        let _ = writeln!(
            text,
            "# HELP warren_store_bytes The store's size: the SQLite file with its write-ahead log, or the namespace's PostgreSQL tables with their indexes.\n# TYPE warren_store_bytes gauge\nwarren_store_bytes {bytes}"
        );
    }
    if let Some(rows) = store_rows(&s).await {
        let _ = writeln!(
            text,
            "# HELP warren_store_workflows Workflows in the store (namespace-wide), by status, counted at most once a minute; each holds its tasks' and results' rows too.\n# TYPE warren_store_workflows gauge"
        );
        for (status, n) in rows {
            let _ = writeln!(text, "warren_store_workflows{{status=\"{status}\"}} {n}");
        }
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

/// The store's workflows by status, and when they were counted.
pub type RowsCounted = (std::time::Instant, Vec<(String, u64)>);

/// How often the store's rows are counted (a count reads the whole index
/// of workflows by status: cheap, but not on every scrape).
pub const ROWS_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

/// The store's workflows by status, counted again when the last count is
/// older than [`ROWS_EVERY`]; `None` when the store cannot say (the gauge
/// is left out rather than failing the scrape). Only statuses Warren
/// writes are reported (the label is bounded).
async fn store_rows(s: &Sources) -> Option<Vec<(String, u64)>> {
    let mut cached = s.store_rows.lock().await;
    if let Some((at, rows)) = cached.as_ref()
        && at.elapsed() < ROWS_EVERY
    {
        return Some(rows.clone());
    }
    let rows: Vec<(String, u64)> = s
        .store
        .workflows_by_status()
        .await
        .ok()?
        .into_iter()
        .filter(|(status, _)| warren_shared::wire::WorkflowStatus::parse(status).is_some())
        .collect();
    *cached = Some((std::time::Instant::now(), rows.clone()));
    Some(rows)
}

/// The metrics in Prometheus' text format.
pub fn render(m: &Metrics) -> String {
    let mut out = String::new();
    let g = Metrics::get;
    let family = |out: &mut String, name: &str, kind: &str, help: &str| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    };
    family(
        &mut out,
        "warren_workflows_total",
        "counter",
        "Workflows by what happened to them.",
    );
    for (state, c) in [
        ("accepted", &m.engine.workflows_accepted),
        ("rejected", &m.engine.workflows_rejected),
        ("duplicate", &m.engine.workflows_duplicate),
        ("succeeded", &m.engine.workflows_succeeded),
        ("failed", &m.engine.workflows_failed),
        ("cancelled", &m.engine.workflows_cancelled),
        ("rerun", &m.engine.workflows_rerun),
    ] {
        let _ = writeln!(out, "warren_workflows_total{{state=\"{state}\"}} {}", g(c));
    }
    family(
        &mut out,
        "warren_workflows_running",
        "gauge",
        "Workflows running now.",
    );
    let _ = writeln!(out, "warren_workflows_running {}", g(&m.workflows_running));
    family(
        &mut out,
        "warren_workflows_scheduled",
        "gauge",
        "Workflows accepted with a start ahead, waiting for it.",
    );
    let _ = writeln!(
        out,
        "warren_workflows_scheduled {}",
        g(&m.workflows_scheduled)
    );
    family(
        &mut out,
        "warren_workflows_queued",
        "gauge",
        "Workflows accepted and waiting for room in the working set, started in priority order.",
    );
    let _ = writeln!(out, "warren_workflows_queued {}", g(&m.workflows_queued));
    family(
        &mut out,
        "warren_schedules",
        "gauge",
        "Schedules this scheduler holds and fires (those of its partitions).",
    );
    let _ = writeln!(out, "warren_schedules {}", g(&m.schedules));
    family(
        &mut out,
        "warren_tasks_total",
        "counter",
        "Task events: dispatched attempts, final successes and failures, retries, dead letters.",
    );
    for (event, c) in [
        ("dispatched", &m.engine.tasks_dispatched),
        ("succeeded", &m.engine.tasks_succeeded),
        ("failed", &m.engine.tasks_failed),
        ("retried", &m.engine.tasks_retried),
        ("lease_expired", &m.engine.leases_expired),
        ("dead_lettered", &m.engine.dead_lettered),
    ] {
        let _ = writeln!(out, "warren_tasks_total{{event=\"{event}\"}} {}", g(c));
    }
    family(
        &mut out,
        "warren_in_flight_tasks",
        "gauge",
        "Tasks dispatched and not yet answered, by task queue.",
    );
    for (queue, n) in m.in_flight.lock().expect("not poisoned").iter() {
        let _ = writeln!(
            out,
            "warren_in_flight_tasks{{queue=\"{}\"}} {n}",
            label(queue)
        );
    }
    family(
        &mut out,
        "warren_dispatch_window",
        "gauge",
        "Most tasks of the queue kept dispatched and not yet answered: WARREN_DISPATCH_WINDOW when set, else the concurrency of the queue's live workers (at most 10000; past 128, less for short tasks), or 200 when no heartbeat names the queue or some of its consumers send none.",
    );
    for (queue, n) in m.windows.lock().expect("not poisoned").iter() {
        let _ = writeln!(
            out,
            "warren_dispatch_window{{queue=\"{}\"}} {n}",
            label(queue)
        );
    }
    let types = m.types.lock().expect("not poisoned").clone();
    for (name, help, value) in [
        (
            "warren_type_running_tasks",
            "Tasks of a limited type (WARREN_TYPE_LIMITS) running now.",
            (|u: &TypeUsage| u.running) as fn(&TypeUsage) -> u64,
        ),
        (
            "warren_type_limit",
            "The most tasks of the type allowed to run at once.",
            |u| u.limit,
        ),
        (
            "warren_type_waiting_tasks",
            "Ready tasks of the type held back by its limit.",
            |u| u.waiting,
        ),
    ] {
        if types.is_empty() {
            break;
        }
        family(&mut out, name, "gauge", help);
        for u in &types {
            let _ = writeln!(out, "{name}{{type=\"{}\"}} {}", label(&u.kind), value(u));
        }
    }
    let paused = m.paused.lock().expect("not poisoned").clone();
    if !paused.is_empty() {
        family(
            &mut out,
            "warren_paused",
            "gauge",
            "1 for each task queue and task type whose dispatch is paused (pause control request).",
        );
        for p in &paused {
            let _ = writeln!(
                out,
                "warren_paused{{kind=\"{}\",name=\"{}\"}} 1",
                p.kind.as_str(),
                label(&p.name)
            );
        }
        family(
            &mut out,
            "warren_paused_ready_tasks",
            "gauge",
            "Ready tasks this scheduler holds back for a paused queue or type.",
        );
        for p in &paused {
            let _ = writeln!(
                out,
                "warren_paused_ready_tasks{{kind=\"{}\",name=\"{}\"}} {}",
                p.kind.as_str(),
                label(&p.name),
                p.held
            );
        }
    }
    for (name, c, help) in [
        (
            "warren_results_total",
            &m.engine.results_committed,
            "Results committed.",
        ),
        (
            "warren_results_ignored_total",
            &m.engine.results_ignored,
            "Results ignored: duplicates, late, or for ended workflows.",
        ),
        (
            "warren_results_forged_total",
            &m.engine.results_forged,
            "Results refused without their attempt's token (dead-lettered).",
        ),
        (
            "warren_schedule_firings_total",
            &m.engine.schedule_firings,
            "Schedule firings that submitted their workflow.",
        ),
        (
            "warren_schedule_firings_skipped_total",
            &m.engine.schedule_firings_skipped,
            "Schedule firings skipped: overlap skip, or missed and not caught up.",
        ),
        (
            "warren_deadlines_passed_total",
            &m.engine.deadlines_passed,
            "Workflows ended failed by their deadline_ms.",
        ),
        (
            "warren_batches_committed_total",
            &m.batches_committed,
            "Store transactions.",
        ),
        (
            "warren_reconnects_total",
            &m.reconnects,
            "Broker sessions lost and retried.",
        ),
        (
            "warren_messages_received_total",
            &m.messages_received,
            "Messages taken from the requests and results queues.",
        ),
        (
            "warren_messages_published_total",
            &m.messages_published,
            "Messages published.",
        ),
        (
            "warren_forwarded_total",
            &m.forwarded,
            "Requests and results passed on to the scheduler owning their partition.",
        ),
        (
            "warren_inputs_too_large_total",
            &m.engine.inputs_too_large,
            "Tasks failed because their resolved input passed WARREN_MAX_TASK_INPUT_BYTES.",
        ),
        (
            "warren_reports_elided_total",
            &m.engine.reports_elided,
            "Final reports with outputs or tasks left out to fit WARREN_MAX_REPORT_BYTES.",
        ),
        (
            "warren_results_too_large_total",
            &m.results_too_large,
            "Results over WARREN_MAX_RESULT_BYTES, dead-lettered unread.",
        ),
        (
            "warren_replies_refused_total",
            &m.replies_refused,
            "Requests refused (dead-lettered) for a reply_to the scheduler may not write to.",
        ),
        (
            "warren_messages_refused_total",
            &m.engine.messages_refused,
            "Messages the broker refused for good; what they belonged to ended.",
        ),
    ] {
        family(&mut out, name, "counter", help);
        let _ = writeln!(out, "{name} {}", g(c));
    }
    for (name, c, help) in [
        (
            "warren_active_tasks",
            &m.engine.active_tasks,
            "Tasks of running workflows held in memory (budget WARREN_MAX_ACTIVE_TASKS).",
        ),
        (
            "warren_active_bytes",
            &m.engine.active_bytes,
            "Bytes of running workflows held in memory (budget WARREN_MAX_ACTIVE_BYTES).",
        ),
        (
            "warren_requests_waiting",
            &m.requests_waiting,
            "Submissions held unacked in the broker until the memory budget has room.",
        ),
    ] {
        family(&mut out, name, "gauge", help);
        let _ = writeln!(out, "{name} {}", g(c));
    }
    family(
        &mut out,
        "warren_http_refused_total",
        "counter",
        "HTTP requests refused: no valid token (401), too small a scope (403), a Host not the endpoint's or none (421, 400), a body over the limit (413).",
    );
    for (reason, c) in [
        ("unauthorized", &m.http_unauthorized),
        ("forbidden", &m.http_forbidden),
        ("misdirected", &m.http_misdirected),
        ("too_large", &m.http_too_large),
    ] {
        let _ = writeln!(
            out,
            "warren_http_refused_total{{reason=\"{reason}\"}} {}",
            g(c)
        );
    }
    family(
        &mut out,
        "warren_broker_connected",
        "gauge",
        "1 while the scheduler has a broker session.",
    );
    let _ = writeln!(out, "warren_broker_connected {}", g(&m.broker_connected));
    family(
        &mut out,
        "warren_scheduler_active",
        "gauge",
        "1 for the active scheduler of the store, 0 for a standby.",
    );
    let _ = writeln!(out, "warren_scheduler_active {}", g(&m.active));
    histogram(
        &mut out,
        "warren_dispatch_latency_seconds",
        "From a task becoming ready to its dispatch.",
        &m.engine.dispatch_latency,
    );
    histogram(
        &mut out,
        "warren_task_duration_seconds",
        "An attempt's run time, as its worker reports it.",
        &m.engine.task_duration,
    );
    out
}

/// A label value as the exposition format writes it: `\`, `"` and line
/// feeds escaped.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn histogram(out: &mut String, name: &str, help: &str, h: &Histogram) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
    let (buckets, sum, count) = h.read();
    for (bound, n) in buckets {
        let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {n}");
    }
    let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
    let _ = writeln!(out, "{name}_sum {sum}");
    let _ = writeln!(out, "{name}_count {count}");
}
