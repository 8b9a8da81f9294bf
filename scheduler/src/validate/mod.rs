//! Submission-time validation: every problem of a request, reported at once.
//!
//! The checks that need the whole body (size, JSON syntax, field types)
//! stop at their first problem, since nothing after them can be read
//! reliably; everything semantic (ids, dependencies, cycles, templates,
//! ranges, limits) is checked in full and reported together.

use crate::template::{self, Source};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use warren_shared::wire::{Rejection, RunIf, TaskSpec, WorkflowRequest};

/// Size limits applied to every request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest request body, checked before parsing (default 16 MiB).
    pub max_body_bytes: usize,
    /// Most tasks in one workflow (default 100,000).
    pub max_tasks: usize,
    /// Deepest nesting of arrays and objects in any input (default 32).
    pub max_input_depth: usize,
    /// Most problems one rejection lists (default 100); past it a last
    /// `too_many_errors` entry says how many more there were.
    pub max_reported_errors: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: 16 * 1024 * 1024,
            max_tasks: 100_000,
            max_input_depth: 32,
            max_reported_errors: MAX_REPORTED_ERRORS,
        }
    }
}

/// Longest workflow or task id.
pub const MAX_ID_LEN: usize = 128;
/// Most attempts a retry policy may ask for.
pub const MAX_ATTEMPTS: u32 = 100;
/// Longest `timeout_ms`, `retry.backoff_ms`, `retry.max_backoff_ms` and
/// `duration_hint_ms` (30 days): due times and critical-path weights stay
/// far from overflowing, and a value past it is a mistake, not a plan.
pub const MAX_DURATION_MS: u64 = 30 * 24 * 3600 * 1000;

/// A request that passed validation, with its DAG as indexes.
#[derive(Debug, Clone)]
pub struct ValidWorkflow {
    pub id: String,
    pub name: Option<String>,
    pub priority: u8,
    pub input: Value,
    /// Most tasks running at once (`u32::MAX` when unlimited).
    pub max_concurrency: u32,
    /// After this the request is no longer wanted (`expired` if taken later).
    pub expires_at: Option<DateTime<Utc>>,
    /// Longest the workflow may run from its start, in ms.
    pub deadline_ms: Option<u64>,
    /// What a failure makes of it.
    pub on_failure: warren_shared::wire::OnFailure,
    /// When it may start, if not at once.
    pub start: Option<Start>,
    pub tasks: Vec<TaskSpec>,
    /// For each task, the indexes of the tasks it depends on.
    pub deps: Vec<Vec<u32>>,
    /// For each task, whether its input holds templates.
    pub templated: Vec<bool>,
}

/// When a delayed workflow starts: at a time, or a delay after the
/// scheduler accepts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// `not_before`.
    At(DateTime<Utc>),
    /// `delay_ms`.
    After(u64),
}

impl Start {
    /// The start time of a workflow accepted at `now`.
    pub fn due(self, now: DateTime<Utc>) -> DateTime<Utc> {
        match self {
            Start::At(t) => t,
            Start::After(ms) => {
                now + chrono::Duration::milliseconds(i64::try_from(ms).unwrap_or(i64::MAX))
            }
        }
    }
}

/// A request that failed validation: the id it is recorded under and why.
#[derive(Debug, Clone)]
pub struct Rejected {
    pub id: String,
    pub name: Option<String>,
    pub errors: Vec<Rejection>,
}

/// Longest workflow `name` (characters): it is echoed in every report and
/// progress event.
pub const MAX_NAME_CHARS: usize = 256;
/// The default of [`Limits::max_reported_errors`].
pub const MAX_REPORTED_ERRORS: usize = 100;
/// Longest message of one problem, and longest task id echoed back: a
/// request's own (possibly huge) strings are shortened in what is answered.
pub const MAX_ECHO_CHARS: usize = 300;

/// `s` cut to `max` characters, with `…` and its full length when cut.
pub fn shortened(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        None => s.to_owned(),
        Some((end, _)) => format!("{}… ({} bytes)", &s[..end], s.len()),
    }
}

fn problem(code: &str, task: Option<&str>, message: impl Into<String>) -> Rejection {
    Rejection {
        code: code.to_owned(),
        message: shortened(&message.into(), MAX_ECHO_CHARS),
        task: task.map(|t| shortened(t, MAX_ID_LEN)),
    }
}

/// The problems found so far, at most `max` kept: a hostile request with
/// thousands of faults costs a bounded answer.
struct Problems {
    list: Vec<Rejection>,
    more: usize,
    max: usize,
}

impl Problems {
    fn new(max: usize) -> Problems {
        Problems {
            list: Vec::new(),
            more: 0,
            max: max.max(1),
        }
    }

    fn push(&mut self, p: Rejection) {
        if self.list.len() < self.max {
            self.list.push(p);
        } else {
            self.more += 1;
        }
    }

    fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    fn into_vec(mut self) -> Vec<Rejection> {
        if self.more > 0 {
            self.list.push(problem(
                "too_many_errors",
                None,
                format!(
                    "{} more problems not listed (at most {} are)",
                    self.more, self.max
                ),
            ));
        }
        self.list
    }
}

/// True for `[A-Za-z0-9._:-]{1,128}`: safe in routing keys and URLs.
pub fn valid_workflow_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

/// True for `[A-Za-z0-9_-]{1,128}`: a task id cannot hold the `.` that
/// separates template path segments.
fn valid_task_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'))
}

/// True for `[A-Za-z0-9._-]{1,100}`.
pub fn valid_queue(q: &str) -> bool {
    !q.is_empty()
        && q.len() <= 100
        && q.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Nesting depth of a JSON value (a scalar is 0).
fn depth(v: &Value) -> usize {
    match v {
        Value::Array(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
        Value::Object(map) => 1 + map.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

/// Only the `id` and `name` of a request, read leniently so that a
/// rejection can be recorded under the producer's own id when possible.
#[derive(Deserialize)]
struct Peek {
    #[serde(default)]
    id: Option<Value>,
    #[serde(default)]
    name: Option<Value>,
}

/// Validates a workflow request body. `message_id` is the AMQP property,
/// used as the id when the body has none; `fresh_id` makes one otherwise.
pub fn validate(
    body: &[u8],
    message_id: Option<&str>,
    limits: &Limits,
    fresh_id: impl FnOnce() -> String,
) -> Result<ValidWorkflow, Rejected> {
    let fallback_id = |candidate: Option<&str>| match candidate {
        Some(id) if valid_workflow_id(id) => id.to_owned(),
        _ => fresh_id(),
    };
    if body.len() > limits.max_body_bytes {
        return Err(Rejected {
            id: fallback_id(message_id),
            name: None,
            errors: vec![problem(
                "body_too_large",
                None,
                format!(
                    "request body is {} bytes; the limit is {} bytes",
                    body.len(),
                    limits.max_body_bytes
                ),
            )],
        });
    }
    // serde would also read a struct from a JSON array, field by field;
    // the protocol only has objects.
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(Rejected {
            id: fallback_id(message_id),
            name: None,
            errors: vec![problem(
                "invalid_request",
                None,
                "request is not a valid workflow: the body must be a JSON object",
            )],
        });
    }
    let request: WorkflowRequest = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(e) => {
            let peek = serde_json::from_slice::<Peek>(body).ok();
            let body_id = peek
                .as_ref()
                .and_then(|p| p.id.as_ref()?.as_str().map(str::to_owned));
            let name = peek.and_then(|p| p.name?.as_str().map(str::to_owned));
            return Err(Rejected {
                id: fallback_id(body_id.as_deref().or(message_id)),
                name,
                errors: vec![problem(
                    "invalid_request",
                    None,
                    format!("request is not a valid workflow: {e}"),
                )],
            });
        }
    };
    check(request, message_id, limits, fallback_id)
}

fn check(
    request: WorkflowRequest,
    message_id: Option<&str>,
    limits: &Limits,
    fallback_id: impl FnOnce(Option<&str>) -> String,
) -> Result<ValidWorkflow, Rejected> {
    let mut errors = Problems::new(limits.max_reported_errors);
    let requested_id = request.id.as_deref().or(message_id);
    if let Some(id) = requested_id
        && !valid_workflow_id(id)
    {
        errors.push(problem(
            "invalid_id",
            None,
            format!("workflow id `{id}` must be 1 to {MAX_ID_LEN} characters of letters, digits, `.`, `_`, `:` or `-`"),
        ));
    }
    let id = fallback_id(requested_id);
    if !(0..=9).contains(&request.priority) {
        errors.push(problem(
            "priority_out_of_range",
            None,
            format!("priority {} is out of range 0..=9", request.priority),
        ));
    }
    let expires_at = match request.expires_at.as_deref().map(parse_time) {
        None => None,
        Some(Ok(t)) => Some(t),
        Some(Err(message)) => {
            errors.push(problem(
                "invalid_time",
                None,
                format!("expires_at: {message}"),
            ));
            None
        }
    };
    let start = match (request.not_before.as_deref(), request.delay_ms) {
        (Some(_), Some(_)) => {
            errors.push(problem(
                "invalid_delay",
                None,
                "give not_before or delay_ms, not both",
            ));
            None
        }
        (Some(at), None) => match parse_time(at) {
            Ok(t) => Some(Start::At(t)),
            Err(message) => {
                errors.push(problem(
                    "invalid_time",
                    None,
                    format!("not_before: {message}"),
                ));
                None
            }
        },
        (None, Some(ms)) if ms > MAX_DEADLINE_MS => {
            errors.push(problem(
                "invalid_delay",
                None,
                format!("delay_ms {ms} is over {MAX_DEADLINE_MS} (366 days)"),
            ));
            None
        }
        (None, Some(ms)) => Some(Start::After(ms)),
        (None, None) => None,
    };
    if let Some(ms) = request.deadline_ms
        && !(1..=MAX_DEADLINE_MS).contains(&ms)
    {
        errors.push(problem(
            "invalid_deadline",
            None,
            format!("deadline_ms {ms} is out of range 1..={MAX_DEADLINE_MS} (366 days)"),
        ));
    }
    if request.max_concurrency == Some(0) {
        errors.push(problem(
            "invalid_max_concurrency",
            None,
            "max_concurrency must be at least 1",
        ));
    }
    if depth(&request.input) > limits.max_input_depth {
        errors.push(problem(
            "input_too_deep",
            None,
            format!(
                "workflow input nests deeper than {} levels",
                limits.max_input_depth
            ),
        ));
    }
    if let Some(name) = &request.name
        && name.chars().count() > MAX_NAME_CHARS
    {
        errors.push(problem(
            "invalid_name",
            None,
            format!(
                "name is {} characters; at most {MAX_NAME_CHARS}",
                name.chars().count()
            ),
        ));
    }
    let reject = |errors: Problems, request: WorkflowRequest| Rejected {
        id: id.clone(),
        name: request.name.map(|n| shortened(&n, MAX_NAME_CHARS)),
        errors: errors.into_vec(),
    };
    if request.tasks.is_empty() {
        errors.push(problem("no_tasks", None, "workflow has no tasks"));
        return Err(reject(errors, request));
    }
    if request.tasks.len() > limits.max_tasks {
        errors.push(problem(
            "too_many_tasks",
            None,
            format!(
                "workflow has {} tasks; the limit is {}",
                request.tasks.len(),
                limits.max_tasks
            ),
        ));
        return Err(reject(errors, request));
    }

    let tasks = &request.tasks;
    let mut index: HashMap<&str, u32> = HashMap::with_capacity(tasks.len());
    for (i, t) in tasks.iter().enumerate() {
        if !valid_task_id(&t.id) {
            errors.push(problem(
                "invalid_task_id",
                Some(&t.id),
                format!("task id `{}` must be 1 to {MAX_ID_LEN} characters of letters, digits, `_` or `-`", t.id),
            ));
        } else if matches!(t.id.as_str(), "item" | "index") {
            errors.push(problem(
                "invalid_task_id",
                Some(&t.id),
                format!(
                    "task id `{}` is reserved: `${{{}}}` is a mapped task's element or position",
                    t.id, t.id
                ),
            ));
        }
        if index.insert(&t.id, i as u32).is_some() {
            errors.push(problem(
                "duplicate_task_id",
                Some(&t.id),
                format!("task id `{}` is used more than once", t.id),
            ));
        }
    }
    let mut deps: Vec<Vec<u32>> = Vec::with_capacity(tasks.len());
    for t in tasks {
        let id = Some(t.id.as_str());
        if t.kind.is_empty() {
            errors.push(problem(
                "missing_type",
                id,
                format!("task `{}` has an empty type", t.id),
            ));
        } else if t.kind.chars().count() > MAX_ID_LEN {
            errors.push(problem(
                "invalid_type",
                id,
                format!(
                    "type of task `{}` is {} characters; at most {MAX_ID_LEN}",
                    t.id,
                    t.kind.chars().count()
                ),
            ));
        }
        if !valid_queue(&t.queue) {
            errors.push(problem(
                "invalid_queue",
                id,
                format!("queue `{}` of task `{}` must be 1 to 100 characters of letters, digits, `.`, `_` or `-`", t.queue, t.id),
            ));
        }
        if let Some(r) = t.retry
            && !(1..=MAX_ATTEMPTS).contains(&r.max_attempts)
        {
            errors.push(problem(
                "invalid_retry",
                id,
                format!(
                    "task `{}`: retry.max_attempts must be 1..={MAX_ATTEMPTS}, not {}",
                    t.id, r.max_attempts
                ),
            ));
        }
        if let Some(r) = t.retry {
            for (field, value) in [
                ("backoff_ms", r.backoff_ms),
                ("max_backoff_ms", r.max_backoff_ms),
            ] {
                if value > MAX_DURATION_MS {
                    errors.push(problem(
                        "invalid_backoff",
                        id,
                        format!(
                            "task `{}`: retry.{field} must be 0..={MAX_DURATION_MS}, not {value}",
                            t.id
                        ),
                    ));
                }
            }
        }
        if let Some(timeout) = t.timeout_ms
            && !(1..=MAX_DURATION_MS).contains(&timeout)
        {
            errors.push(problem(
                "invalid_timeout",
                id,
                format!(
                    "task `{}`: timeout_ms must be 1..={MAX_DURATION_MS}, not {timeout}",
                    t.id
                ),
            ));
        }
        if let Some(delay) = t.delay_ms
            && delay > MAX_DURATION_MS
        {
            errors.push(problem(
                "invalid_delay",
                id,
                format!(
                    "task `{}`: delay_ms must be 0..={MAX_DURATION_MS}, not {delay}",
                    t.id
                ),
            ));
        }
        if let Some(hint) = t.duration_hint_ms
            && hint > MAX_DURATION_MS
        {
            errors.push(problem(
                "invalid_duration_hint",
                id,
                format!(
                    "task `{}`: duration_hint_ms must be 0..={MAX_DURATION_MS}, not {hint}",
                    t.id
                ),
            ));
        }
        if depth(&t.input) > limits.max_input_depth {
            errors.push(problem(
                "input_too_deep",
                id,
                format!(
                    "input of task `{}` nests deeper than {} levels",
                    t.id, limits.max_input_depth
                ),
            ));
        }
        let mut mine = Vec::with_capacity(t.depends_on.len());
        let mut seen = HashSet::with_capacity(t.depends_on.len());
        for d in &t.depends_on {
            if !seen.insert(d.as_str()) {
                errors.push(problem(
                    "duplicate_dependency",
                    id,
                    format!("task `{}` lists `{d}` twice in depends_on", t.id),
                ));
            } else if d == &t.id {
                errors.push(problem(
                    "self_dependency",
                    id,
                    format!("task `{}` depends on itself", t.id),
                ));
            } else {
                match index.get(d.as_str()) {
                    Some(&j) => mine.push(j),
                    None => errors.push(problem(
                        "unknown_dependency",
                        id,
                        format!(
                            "task `{}` depends on `{d}`, which is not a task of this workflow",
                            t.id
                        ),
                    )),
                }
            }
        }
        deps.push(mine);
    }

    let acyclic = match find_cycle(&deps) {
        Some(cycle) => {
            let names: Vec<&str> = cycle
                .iter()
                .map(|&i| tasks[i as usize].id.as_str())
                .collect();
            errors.push(problem(
                "cycle",
                Some(names[0]),
                format!("dependency cycle: {}", names.join(" -> ")),
            ));
            false
        }
        None => true,
    };

    let mut templated = Vec::with_capacity(tasks.len());
    let mut refs = Vec::new();
    let mut ancestry = Ancestry::default();
    for (i, t) in tasks.iter().enumerate() {
        let id = Some(t.id.as_str());
        refs.clear();
        if let Err(e) = template::references(&t.input, &mut refs) {
            errors.push(problem(
                "invalid_template",
                id,
                format!("task `{}`: {e}", t.id),
            ));
        }
        templated.push(template::has_templates(&t.input));
        let per_instance = |r: &template::Ref| matches!(r.source, Source::Item | Source::Index);
        if t.map.is_none() && refs.iter().any(per_instance) {
            errors.push(problem(
                "invalid_map",
                id,
                format!(
                    "task `{}`: `${{item}}` and `${{index}}` are for the input of a mapped task (`map`)",
                    t.id
                ),
            ));
        }
        if let Some(map) = &t.map {
            match template::single_ref(map) {
                Ok(r) if per_instance(&r) => errors.push(problem(
                    "invalid_map",
                    id,
                    format!("task `{}`: `map` names a task's output or the workflow input, not `${{item}}` or `${{index}}`", t.id),
                )),
                Ok(r) => refs.push(r),
                Err(e) => errors.push(problem(
                    "invalid_map",
                    id,
                    format!("task `{}`: {e}", t.id),
                )),
            }
        }
        if let Some(when) = &t.when {
            match crate::condition::Condition::parse(when) {
                Ok(c) if c.references().into_iter().any(per_instance) => errors.push(problem(
                    "invalid_condition",
                    id,
                    format!(
                        "task `{}`: `when` is decided once for the task, before any instance: it cannot read `${{item}}` or `${{index}}`",
                        t.id
                    ),
                )),
                Ok(c) => refs.extend(c.references().into_iter().cloned()),
                Err(e) => errors.push(problem(
                    "invalid_condition",
                    id,
                    format!("task `{}`: `when` {e}", t.id),
                )),
            }
        }
        if t.run_if == RunIf::AnyFailed && t.depends_on.is_empty() {
            errors.push(problem(
                "invalid_run_if",
                id,
                format!(
                    "task `{}`: `run_if: any_failed` on a task without dependencies would never run",
                    t.id
                ),
            ));
        }
        for r in &refs {
            let Source::TaskOutput(name) = &r.source else {
                continue;
            };
            match index.get(name.as_str()) {
                None => errors.push(problem(
                    "template_unknown_task",
                    id,
                    format!(
                        "task `{}` references `{name}`, which is not a task of this workflow",
                        t.id
                    ),
                )),
                Some(&j) if acyclic => ancestry.ask(j, i as u32),
                Some(_) => {}
            }
        }
    }
    match ancestry.answer(&deps) {
        Ok(not_ancestors) => {
            for (j, i) in not_ancestors {
                let (t, name) = (&tasks[i as usize].id, &tasks[j as usize].id);
                errors.push(problem(
                    "template_not_ancestor",
                    Some(t),
                    format!(
                        "task `{t}` references the output of `{name}`, which it does not depend on (directly or transitively)"
                    ),
                ));
            }
        }
        Err(steps) => errors.push(problem(
            "too_complex",
            None,
            format!(
                "checking that each template names an ancestor takes more than {steps} steps; reference direct dependencies, or fewer distinct tasks"
            ),
        )),
    }

    if !errors.is_empty() {
        return Err(reject(errors, request));
    }
    Ok(ValidWorkflow {
        id,
        name: request.name,
        priority: request.priority as u8,
        input: request.input,
        max_concurrency: request.max_concurrency.unwrap_or(u32::MAX),
        expires_at,
        deadline_ms: request.deadline_ms,
        on_failure: request.on_failure,
        start,
        tasks: request.tasks,
        deps,
        templated,
    })
}

/// Validates a definition the store kept (accepted earlier, under the
/// limits of its day): without the size limits, which it passed once.
pub fn validate_stored(definition: &[u8], id: &str) -> Result<ValidWorkflow, Rejected> {
    let unlimited = Limits {
        max_body_bytes: usize::MAX,
        max_tasks: usize::MAX,
        max_input_depth: usize::MAX,
        max_reported_errors: MAX_REPORTED_ERRORS,
    };
    validate(definition, Some(id), &unlimited, || id.to_owned())
}

/// Longest `deadline_ms` and `delay_ms` accepted: 366 days. (A
/// `not_before` further ahead is refused when the scheduler accepts the
/// request: validation has no clock.)
pub const MAX_DEADLINE_MS: u64 = 366 * 24 * 3600 * 1000;

/// An RFC 3339 instant (`2026-12-03T10:00:00Z`, any offset), at most 64
/// characters; the message says what is wrong, echoing at most 64.
pub fn parse_time(s: &str) -> Result<DateTime<Utc>, String> {
    if s.len() > 64 {
        return Err(format!(
            "`{}…` is longer than any RFC 3339 time",
            shortened(s, 64)
        ));
    }
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| format!("`{s}` is not an RFC 3339 time ({e}), e.g. 2026-12-03T10:00:00Z"))
}

mod graph;
pub use graph::MAX_ANCESTRY_STEPS;
use graph::{Ancestry, find_cycle};

#[cfg(test)]
mod tests;
