//! Mapped tasks (`map`): a task that runs one instance per element of an
//! array, decided like any task; when it would run, its `map` template is
//! resolved and the instances `task[0]`, `task[1]`, ... are added to the
//! workflow as tasks of their own (dispatched, retried, limited and
//! prioritised like any), the mapped task `mapped` until every instance
//! has ended. Then it succeeds with the array of their outputs, in order
//! (a task that depends on it waits for that), or fails if one failed. An
//! empty array succeeds at once with `[]`; an array wider than
//! `max_map_width` (`WARREN_MAX_MAP_WIDTH`), or a value that is not an
//! array, fails the task with the reason.
//!
//! An instance's input sees `${item}` (the element, with a path:
//! `${item.name}`) and `${index}`; it is resolved when the instance is
//! dispatched, from the array as the store holds it (the mapped source's
//! output or the workflow input), so an instance holds no copy of its
//! element. A restored workflow expands its `mapped` tasks again from the
//! same committed array and gives each instance its stored row
//! ([`expand_restored`]).

use super::{Counters, rules, workflow::Workflow};
use crate::{
    batch::{Op, TaskRow},
    template,
};
use serde_json::Value;
use std::collections::HashMap;
use warren_shared::wire::{TaskError, TaskSpec, TaskState};

/// A mapped task whose instances run.
#[derive(Debug)]
pub(super) struct MapRt {
    /// Its first instance's index among the workflow's tasks; the others
    /// follow.
    pub(super) first: u32,
    pub(super) width: u32,
    /// Instances not ended yet.
    pub(super) left: u32,
}

/// One instance of a mapped task.
#[derive(Debug)]
pub(super) struct Instance {
    /// The mapped task.
    pub(super) of: u32,
    /// Its position, as `${index}` gives it.
    pub(super) index: Value,
}

/// An instance's id: the mapped task's and its position.
pub fn instance_id(task: &str, k: usize) -> String {
    format!("{task}[{k}]")
}

/// The task an id stands for: an instance's (`task[k]`) mapped task, or
/// the id itself (task ids have no brackets).
pub(super) fn task_of(id: &str) -> &str {
    id.strip_suffix(']')
        .and_then(|t| t.rsplit_once('['))
        .map_or(id, |(task, _)| task)
}

/// The array mapped task `m` runs over, as it resolves now.
pub(super) fn items(wf: &Workflow, m: usize) -> Result<&[Value], String> {
    let map = wf.specs[m].map.as_deref().unwrap_or_default();
    let r = template::single_ref(map)?;
    let value = template::fetch(&r, &|s| wf.source(m, s))?;
    match value {
        Value::Array(items) => Ok(items),
        other => Err(format!(
            "`map` ({map}) resolved to {}, not an array (map_not_array)",
            match other {
                Value::Null => "null",
                Value::Bool(_) => "a boolean",
                Value::Number(_) => "a number",
                Value::String(_) => "a string",
                _ => "an object",
            }
        )),
    }
}

/// Adds the `width` instances of mapped task `m` to the workflow, each
/// with the row `rows` holds for it (restored) or pending; returns their
/// indexes.
fn add_instances(
    wf: &mut Workflow,
    m: usize,
    width: usize,
    rows: &mut HashMap<String, TaskRow>,
) -> Result<Vec<u32>, serde_json::Error> {
    let first = wf.tasks.len() as u32;
    let spec = &wf.specs[m];
    let base = TaskSpec {
        depends_on: Vec::new(),
        when: None,
        run_if: Default::default(),
        map: None,
        ..spec.clone()
    };
    let templated = wf.templated[m];
    let rank = wf.rank[m];
    let mut left = 0;
    for k in 0..width {
        let id = instance_id(&base.id, k);
        let t = match rows.remove(&id) {
            Some(row) => super::workflow::TaskRt::from_row(row)?,
            None => super::workflow::TaskRt::pending(),
        };
        if !t.state.is_final() {
            left += 1;
        }
        let i = wf.tasks.len() as u32;
        wf.index.insert(id.clone(), i);
        wf.instances.insert(
            i,
            Instance {
                of: m as u32,
                index: Value::from(k),
            },
        );
        wf.specs.push(TaskSpec { id, ..base.clone() });
        wf.tasks.push(t);
        wf.waiting.push(0);
        wf.dependents.push(Vec::new());
        wf.rank.push(rank);
        wf.templated.push(templated);
    }
    wf.unfinished += width as u32;
    wf.maps.insert(
        m as u32,
        MapRt {
            first,
            width: width as u32,
            left,
        },
    );
    Ok((first..first + width as u32).collect())
}

/// Expands the mapped tasks of a restored workflow again, giving each
/// instance its stored row (`rows`: those not of the workflow's own
/// tasks): a `mapped` one from its array as stored, one that has ended
/// with the instances it had (every one of which has a row).
pub(super) fn expand_restored(
    wf: &mut Workflow,
    mut rows: HashMap<String, TaskRow>,
) -> Result<(), String> {
    for m in 0..wf.specs.len() {
        let width = match wf.tasks[m].state {
            _ if wf.specs[m].map.is_none() => continue,
            TaskState::Mapped => items(wf, m)?.len(),
            s if s.is_final() => (0..)
                .take_while(|&k| rows.contains_key(&instance_id(&wf.specs[m].id, k)))
                .count(),
            _ => continue,
        };
        if width > 0 || wf.tasks[m].state == TaskState::Mapped {
            add_instances(wf, m, width, &mut rows).map_err(|e| e.to_string())?;
        }
    }
    Ok(())
}

/// What came of a mapped task that is to run.
pub(super) enum Expansion {
    /// Its instances were added: make them ready; `width` more tasks are
    /// held.
    Instances(Vec<u32>),
    /// It ended at once (an empty array: succeeded; a bad one: failed):
    /// the tasks that ended, and the bytes of its output.
    Ended(Vec<u32>, usize),
}

/// Mapped task `m` runs: its instances are added; an empty array ends it
/// at once, and one that is not an array or is wider than `max_width`
/// fails it.
pub(super) fn expand(
    wf: &mut Workflow,
    m: u32,
    bounds: &crate::bounds::Bounds,
    ops: &mut Vec<Op>,
    counters: &Counters,
) -> Expansion {
    let max_width = bounds.max_map_width;
    let width = match items(wf, m as usize) {
        Ok(items) if items.len() > max_width => Err(format!(
            "`map` resolved to {} items, over the limit of {max_width} (WARREN_MAX_MAP_WIDTH)",
            items.len()
        )),
        Ok(items) if wf.tasks.len() + items.len() > bounds.max_active_tasks => Err(format!(
            "`map` resolved to {} items: the workflow would hold {} tasks, over the limit of {} \
             (WARREN_MAX_ACTIVE_TASKS)",
            items.len(),
            wf.tasks.len() + items.len(),
            bounds.max_active_tasks
        )),
        Ok(items) => Ok(items.len()),
        Err(e) => Err(e),
    };
    let width = match width {
        Ok(w) => w,
        Err(message) => {
            let error = TaskError {
                message,
                retryable: false,
            };
            return Expansion::Ended(
                rules::fail_for_good(wf, m as usize, error, ops, counters),
                0,
            );
        }
    };
    wf.tasks[m as usize].state = TaskState::Mapped;
    wf.tasks[m as usize].started_at = Some(chrono::Utc::now());
    let added = add_instances(wf, m as usize, width, &mut HashMap::new()).expect("no rows to read");
    if width == 0 {
        let (ended, bytes) = end_mapped(wf, m, bounds.max_task_input_bytes, ops, counters);
        return Expansion::Ended(ended, bytes);
    }
    ops.push(Op::Task(wf.row(m)));
    Expansion::Instances(added)
}

/// Instance `i` ended: when it was the last of its mapped task, that task
/// ends too. Returns the tasks that ended and the bytes of the mapped
/// task's output; nothing when `i` is no instance.
pub(super) fn instance_ended(
    wf: &mut Workflow,
    i: u32,
    max_output: usize,
    ops: &mut Vec<Op>,
    counters: &Counters,
) -> (Vec<u32>, usize) {
    let Some(m) = wf.instances.get(&i).map(|x| x.of) else {
        return (Vec::new(), 0);
    };
    let Some(map) = wf.maps.get_mut(&m) else {
        return (Vec::new(), 0);
    };
    map.left = map.left.saturating_sub(1);
    if map.left > 0 || wf.tasks[m as usize].state != TaskState::Mapped {
        return (Vec::new(), 0);
    }
    end_mapped(wf, m, max_output, ops, counters)
}

/// Mapped task `m`, all of whose instances have ended, ends: succeeded
/// with their outputs in order when each succeeded, else failed. Returns
/// the tasks that ended and the bytes of its output.
/// The collected output may be at most `max_output` bytes of JSON (what a
/// dependent may read as input).
pub(super) fn end_mapped(
    wf: &mut Workflow,
    m: u32,
    max_output: usize,
    ops: &mut Vec<Op>,
    counters: &Counters,
) -> (Vec<u32>, usize) {
    let (first, width) = wf
        .maps
        .get(&m)
        .map_or((0, 0), |map| (map.first as usize, map.width as usize));
    wf.tasks[m as usize].finished_at = Some(chrono::Utc::now());
    let instances = &wf.tasks[first..first + width];
    if let Some(k) = instances
        .iter()
        .position(|t| t.state != TaskState::Succeeded)
    {
        let error = TaskError {
            message: format!(
                "instance `{}` {}",
                instance_id(&wf.specs[m as usize].id, k),
                instances[k].state.as_str()
            ),
            retryable: false,
        };
        return (
            rules::fail_for_good(wf, m as usize, error, ops, counters),
            0,
        );
    }
    // Measured before it is built: the outputs are held already.
    let bytes = instances
        .iter()
        .map(|t| t.output_bytes.max(4) + 1)
        .sum::<usize>()
        + 1;
    if bytes > max_output {
        let error = TaskError {
            message: format!(
                "the outputs of its {width} instances come to about {bytes} bytes of JSON, over the \
                 limit of {max_output} (WARREN_MAX_TASK_INPUT_BYTES) that a dependent may read"
            ),
            retryable: false,
        };
        return (
            rules::fail_for_good(wf, m as usize, error, ops, counters),
            0,
        );
    }
    let output = Value::Array(
        instances
            .iter()
            .map(|t| t.output.clone().unwrap_or(Value::Null))
            .collect(),
    );
    let bytes = template::json_len_within(&output, usize::MAX).expect("no limit");
    let t = &mut wf.tasks[m as usize];
    t.state = TaskState::Succeeded;
    t.output = Some(output);
    t.output_bytes = bytes;
    wf.unfinished -= 1;
    wf.held_bytes += bytes;
    ops.push(Op::Task(wf.row(m)));
    (vec![m], bytes)
}
