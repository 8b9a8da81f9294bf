//! Unit tests of re-runs: what runs again and what keeps its output, the
//! history a report keeps, who is answered, the refusals, idempotence by
//! `rerun_id`, a late result of an earlier run, and a restore mid-run;
//! against a store simulated from the batches' ops.

use super::tests::{config, result};
use super::*;
use crate::batch::{OutKind, ReplyTo, RunRow, RunningWorkflow, StoredWorkflow, TaskRow};
use crate::validate::{self, Limits};
use serde_json::{Value, json};
use warren_shared::wire::{TaskMessage, WorkflowReport};

/// What a store would hold of one workflow after the batches so far.
struct Sim {
    body: Value,
    status: String,
    report: Option<String>,
    finished_at: Option<DateTime<Utc>>,
    rows: BTreeMap<String, TaskRow>,
    runs: Vec<RunRow>,
    /// (queue, run) of each `replies` row.
    replies: Vec<(String, u32)>,
    /// Every message published, in order.
    published: Vec<Arc<OutMsg>>,
}

impl Sim {
    fn new(body: Value) -> Sim {
        Sim {
            body,
            status: String::new(),
            report: None,
            finished_at: None,
            rows: BTreeMap::new(),
            runs: Vec::new(),
            replies: Vec::new(),
            published: Vec::new(),
        }
    }

    /// Commits the engine's batch; returns the task messages published.
    fn step(&mut self, e: &mut Engine) -> Vec<TaskMessage> {
        e.dispatch(Utc::now());
        let (ops, out) = e.take_batch();
        for op in ops {
            match op {
                Op::InsertWorkflow { status, .. } => self.status = status.as_str().into(),
                Op::Task(row) => {
                    self.rows.insert(row.task_id.clone(), row);
                }
                Op::FinishWorkflow {
                    status,
                    report,
                    finished_at,
                    ..
                } => {
                    self.status = status.as_str().into();
                    self.report = Some(report);
                    self.finished_at = Some(finished_at);
                }
                Op::Rerun { row, reset } => {
                    for t in reset {
                        self.rows.remove(&t);
                    }
                    self.runs.push(row);
                    self.status = "running".into();
                    self.report = None;
                }
                Op::AddReply { reply_to, run, .. } => self.replies.push((reply_to, run)),
                Op::DropReplies(_) => self.replies.retain(|(_, run)| *run == 0),
                _ => {}
            }
        }
        let tasks = out
            .iter()
            .filter(|(_, m)| m.kind == OutKind::Task)
            .map(|(_, m)| serde_json::from_slice(&m.body).unwrap())
            .collect();
        self.published.extend(out.into_iter().map(|(_, m)| m));
        tasks
    }

    fn running(&self) -> RunningWorkflow {
        RunningWorkflow {
            id: "w".into(),
            seq: 1,
            definition: self.body.to_string().into_bytes(),
            created_at: Utc::now(),
            tasks: self.rows.values().cloned().collect(),
            replies: self
                .replies
                .iter()
                .map(|(q, _)| (q.clone(), None))
                .collect(),
            runs: self.runs.clone(),
        }
    }

    fn stored(&self) -> StoredWorkflow {
        let mut workflow = self.running();
        workflow.replies.clear();
        workflow.replies.extend(
            self.replies
                .iter()
                .filter(|(_, run)| *run == 0)
                .map(|(q, _)| (q.clone(), None)),
        );
        StoredWorkflow {
            status: self.status.clone(),
            report: self.report.clone(),
            finished_at: self.finished_at,
            workflow,
        }
    }

    fn final_report(&self) -> WorkflowReport {
        serde_json::from_str(self.report.as_deref().expect("ended")).unwrap()
    }

    /// The reports sent to `queue`, in order.
    fn replies_to(&self, queue: &str) -> Vec<WorkflowReport> {
        self.published
            .iter()
            .filter(|m| m.kind == OutKind::Reply && m.routing_key == queue)
            .map(|m| serde_json::from_slice(&m.body).unwrap())
            .collect()
    }
}

/// An engine under the store's key (the same for every scheduler).
fn engine(window: usize) -> Engine {
    let config = EngineConfig {
        attempt_key: AttemptKey::fixed(1),
        ..config(window)
    };
    Engine::new(config, Arc::default())
}

fn to(queue: &str) -> ReplyTo {
    ReplyTo {
        queue: queue.into(),
        correlation_id: None,
    }
}

fn submit(e: &mut Engine, sim: &mut Sim, reply: Option<ReplyTo>) -> Vec<TaskMessage> {
    let bytes = sim.body.to_string().into_bytes();
    let v = validate::validate(&bytes, None, &Limits::default(), || "gen".into()).unwrap();
    e.accept(v, Arc::from(bytes), reply, Utc::now());
    sim.step(e)
}

/// Answers `ms`: the tasks in `fail` fail (not retryable), the others
/// succeed with their input; then commits.
fn answer(e: &mut Engine, sim: &mut Sim, ms: &[TaskMessage], fail: &[&str]) -> Vec<TaskMessage> {
    for m in ms {
        let ok = !fail.contains(&m.task_id.as_str());
        e.on_result(result(m, ok, false, m.input.clone()), Utc::now())
            .unwrap();
    }
    sim.step(e)
}

fn ids(ms: &[TaskMessage]) -> Vec<&str> {
    ms.iter().map(|m| m.task_id.as_str()).collect()
}

fn rerun(e: &mut Engine, sim: &Sim, from: &[&str], rerun_id: Option<&str>) -> RerunOutcome {
    rerun_to(e, sim, from, rerun_id, None)
}

fn rerun_to(
    e: &mut Engine,
    sim: &Sim,
    from: &[&str],
    rerun_id: Option<&str>,
    waiter: Option<ReplyTo>,
) -> RerunOutcome {
    let ask = RerunAsk {
        from: from.iter().map(|s| s.to_string()).collect(),
        rerun_id: rerun_id.map(Into::into),
    };
    if e.is_active("w") {
        e.rerun_active("w", &ask, waiter)
    } else {
        e.rerun(sim.stored(), &ask, waiter, Utc::now())
    }
}

fn code(outcome: RerunOutcome) -> String {
    match outcome {
        RerunOutcome::Refused(r) => r.code,
        other => panic!("not refused: {other:?}"),
    }
}

fn chain() -> Value {
    json!({"id": "w", "input": {"n": 1}, "tasks": [
        {"id": "a", "type": "echo", "input": {"n": "${workflow.input.n}"}},
        {"id": "b", "type": "echo", "depends_on": ["a"], "input": {"from_a": "${a.output.n}"}},
        {"id": "c", "type": "echo", "depends_on": ["b"], "input": "${b.output}"},
        {"id": "d", "type": "echo", "depends_on": ["c"]},
        {"id": "side", "type": "echo"}
    ]})
}

/// Runs the chain with `c` failing: the workflow fails, d is skipped.
fn failed_chain(e: &mut Engine, sim: &mut Sim, reply: Option<ReplyTo>) {
    let ms = submit(e, sim, reply);
    assert_eq!(ids(&ms), ["a", "side"]);
    let ms = answer(e, sim, &ms, &[]);
    let ms = answer(e, sim, &ms, &[]);
    assert_eq!(ids(&ms), ["c"]);
    assert!(answer(e, sim, &ms, &["c"]).is_empty());
    assert_eq!(sim.status, "failed");
}

#[test]
fn a_rerun_runs_the_failed_task_and_what_follows_it_keeping_what_succeeded() {
    let mut e = engine(10);
    let mut sim = Sim::new(chain());
    failed_chain(&mut e, &mut sim, None);
    let outcome = rerun(&mut e, &sim, &[], None);
    assert!(matches!(outcome, RerunOutcome::Started), "{outcome:?}");
    let started: WorkflowReport = serde_json::from_str(&outcome.report_json(&e, "w")).unwrap();
    assert_eq!((started.status, started.run), (WorkflowStatus::Running, 2));
    let ms = sim.step(&mut e);
    // Only c runs again, from attempt 1, its input from b's kept output.
    assert_eq!(ids(&ms), ["c"]);
    assert_eq!(ms[0].attempt, 1);
    assert_eq!(ms[0].input, json!({"from_a": 1}));
    let ms = answer(&mut e, &mut sim, &ms, &[]);
    assert_eq!(ids(&ms), ["d"]);
    answer(&mut e, &mut sim, &ms, &[]);
    let r = sim.final_report();
    assert_eq!((r.status, r.run), (WorkflowStatus::Succeeded, 2), "{r:?}");
    assert_eq!(r.runs.len(), 2);
    assert_eq!(
        (r.runs[0].run, r.runs[0].status),
        (1, WorkflowStatus::Failed)
    );
    assert!(r.runs[0].error.as_deref().unwrap().contains("task `c`"));
    assert_eq!(
        (r.runs[1].run, r.runs[1].status),
        (2, WorkflowStatus::Succeeded)
    );
    assert!(r.runs[1].finished_at.is_some());
    let c = &r.tasks["c"];
    assert_eq!((c.state, c.attempts), (TaskState::Succeeded, 1));
    assert_eq!(c.history.len(), 1);
    assert_eq!(
        (c.history[0].run, c.history[0].state),
        (1, TaskState::Failed)
    );
    assert_eq!(c.history[0].error.as_ref().unwrap().message, "boom");
    let d = &r.tasks["d"];
    assert_eq!(d.history[0].state, TaskState::Skipped);
    for kept in ["a", "b", "side"] {
        assert!(r.tasks[kept].history.is_empty(), "{kept}");
        assert_eq!(r.tasks[kept].state, TaskState::Succeeded);
    }
}

#[test]
fn a_rerun_from_a_task_runs_it_and_everything_downstream_of_it() {
    let mut e = engine(10);
    let mut sim = Sim::new(chain());
    let ms = submit(&mut e, &mut sim, None);
    let ms = answer(&mut e, &mut sim, &ms, &[]);
    let ms = answer(&mut e, &mut sim, &ms, &[]);
    let ms = answer(&mut e, &mut sim, &ms, &[]);
    answer(&mut e, &mut sim, &ms, &[]);
    assert_eq!(sim.status, "succeeded");
    // Nothing failed: a rerun must name its tasks.
    assert_eq!(code(rerun(&mut e, &sim, &[], None)), "nothing_to_rerun");
    assert_eq!(code(rerun(&mut e, &sim, &["nope"], None)), "unknown_task");
    assert!(matches!(
        rerun(&mut e, &sim, &["b"], None),
        RerunOutcome::Started
    ));
    let mut ran = Vec::new();
    let mut ms = sim.step(&mut e);
    while !ms.is_empty() {
        ran.extend(ids(&ms).into_iter().map(String::from));
        ms = answer(&mut e, &mut sim, &ms, &[]);
    }
    assert_eq!(ran, ["b", "c", "d"]);
    let r = sim.final_report();
    assert_eq!(r.runs[1].from, ["b"]);
    assert_eq!(r.tasks["b"].history[0].state, TaskState::Succeeded);
    assert!(r.tasks["a"].history.is_empty());
}

#[test]
fn the_outcome_goes_to_the_submitter_and_to_each_rerun_once() {
    let mut e = engine(10);
    let mut sim = Sim::new(chain());
    failed_chain(&mut e, &mut sim, Some(to("submitter")));
    // The rerun fails again at c.
    rerun_to(&mut e, &sim, &[], None, Some(to("second")));
    let ms = sim.step(&mut e);
    answer(&mut e, &mut sim, &ms, &["c"]);
    assert_eq!(sim.status, "failed");
    // The third run succeeds.
    rerun_to(&mut e, &sim, &["c"], None, Some(to("third")));
    let ms = sim.step(&mut e);
    let ms = answer(&mut e, &mut sim, &ms, &[]);
    answer(&mut e, &mut sim, &ms, &[]);
    let runs = |q| -> Vec<(u32, WorkflowStatus)> {
        sim.replies_to(q)
            .iter()
            .map(|r| (r.run, r.status))
            .collect()
    };
    use WorkflowStatus::{Failed, Succeeded};
    assert_eq!(
        runs("submitter"),
        [(1, Failed), (2, Failed), (3, Succeeded)]
    );
    assert_eq!(runs("second"), [(2, Failed)]);
    assert_eq!(runs("third"), [(3, Succeeded)]);
    let r = sim.final_report();
    assert_eq!(r.tasks["c"].history.len(), 2);
    assert_eq!(r.runs.len(), 3);
}

#[test]
fn a_rerun_is_refused_while_the_workflow_runs_and_joined_by_its_rerun_id() {
    let mut e = engine(10);
    let mut sim = Sim::new(chain());
    let ms = submit(&mut e, &mut sim, None);
    assert_eq!(
        code(rerun(&mut e, &sim, &[], Some("r1"))),
        "workflow_running"
    );
    let ms = answer(&mut e, &mut sim, &ms, &[]);
    let ms = answer(&mut e, &mut sim, &ms, &[]);
    answer(&mut e, &mut sim, &ms, &["c"]);
    assert!(matches!(
        rerun(&mut e, &sim, &[], Some("r1")),
        RerunOutcome::Started
    ));
    let ms = sim.step(&mut e);
    // The same rerun again, while its run runs: joined, no new run.
    assert!(matches!(
        rerun_to(&mut e, &sim, &[], Some("r1"), Some(to("again"))),
        RerunOutcome::Joined
    ));
    assert_eq!(
        code(rerun(&mut e, &sim, &[], Some("r2"))),
        "workflow_running"
    );
    let ms = answer(&mut e, &mut sim, &ms, &[]);
    answer(&mut e, &mut sim, &ms, &[]);
    assert_eq!(sim.runs.len(), 1);
    assert_eq!(sim.replies_to("again")[0].status, WorkflowStatus::Succeeded);
    // And once it ended: answered with the stored report.
    match rerun(&mut e, &sim, &[], Some("r1")) {
        RerunOutcome::Done(report) => assert_eq!(Some(report), sim.report),
        other => panic!("{other:?}"),
    }
    assert_eq!(sim.runs.len(), 1);
}

#[test]
fn a_late_result_of_an_earlier_run_is_not_the_new_runs() {
    let mut e = engine(10);
    let mut sim = Sim::new(chain());
    let ms = submit(&mut e, &mut sim, None);
    let ms = answer(&mut e, &mut sim, &ms, &[]);
    let ms = answer(&mut e, &mut sim, &ms, &[]);
    let first_c = ms[0].clone();
    answer(&mut e, &mut sim, &ms, &["c"]);
    rerun(&mut e, &sim, &[], None);
    let ms = sim.step(&mut e);
    assert_eq!((ms[0].task_id.as_str(), ms[0].attempt), ("c", 1));
    assert_ne!(ms[0].token, first_c.token);
    // Run 1's attempt 1 of c answers again (a redelivered result): not
    // this run's, and not a forgery either.
    let late = result(&first_c, true, false, json!("late"));
    assert!(e.on_result(late, Utc::now()).is_ok());
    // A token of no run is one.
    let mut forged = result(&first_c, true, false, json!("forged"));
    forged.token = "00".repeat(32);
    assert!(e.on_result(forged, Utc::now()).is_err());
    let r = e.report("w").unwrap();
    assert_eq!(r.tasks["c"].state, TaskState::Running);
    // Once the workflow ended, the same late result is ignored, not
    // taken for a forgery.
    let ms = answer(&mut e, &mut sim, &ms, &[]);
    answer(&mut e, &mut sim, &ms, &[]);
    let late = result(&first_c, true, false, json!("late"));
    assert!(e.on_result(late, Utc::now()).is_ok());
}

#[test]
fn a_rerun_restored_mid_run_goes_on_with_its_history() {
    let mut e = engine(10);
    let mut sim = Sim::new(chain());
    failed_chain(&mut e, &mut sim, Some(to("submitter")));
    rerun_to(&mut e, &sim, &[], Some("r1"), Some(to("rerun")));
    let ms = sim.step(&mut e);
    // The scheduler stops with c running; another restores the workflow.
    let mut e2 = engine(10);
    e2.restore(sim.running()).unwrap();
    let r = e2.report("w").unwrap();
    assert_eq!(r.run, 2);
    assert_eq!(r.tasks["c"].history[0].state, TaskState::Failed);
    assert_eq!(r.runs[1].rerun_id.as_deref(), Some("r1"));
    // The restored engine takes the running attempt's result.
    e2.on_result(result(&ms[0], true, false, json!(1)), Utc::now())
        .unwrap();
    let ms = sim.step(&mut e2);
    answer(&mut e2, &mut sim, &ms, &[]);
    assert_eq!(sim.status, "succeeded");
    assert_eq!(sim.replies_to("rerun").len(), 1);
    assert_eq!(sim.replies_to("submitter").len(), 2);
    // Joined by its rerun_id after the restore too: it has ended.
    assert!(matches!(
        rerun(&mut e2, &sim, &[], Some("r1")),
        RerunOutcome::Done(_)
    ));
}

#[test]
fn a_rerun_past_the_most_runs_and_of_a_rejected_workflow_is_refused() {
    let mut e = engine(10);
    let mut sim = Sim::new(chain());
    failed_chain(&mut e, &mut sim, None);
    for _ in 1..MAX_RUNS {
        assert!(matches!(
            rerun(&mut e, &sim, &[], None),
            RerunOutcome::Started
        ));
        let ms = sim.step(&mut e);
        answer(&mut e, &mut sim, &ms, &["c"]);
    }
    assert_eq!(sim.runs.len() as u32, MAX_RUNS - 1);
    assert_eq!(code(rerun(&mut e, &sim, &[], None)), "too_many_runs");
    // Each run's failure of c is in its history, error and all.
    let r = sim.final_report();
    assert_eq!(r.tasks["c"].history.len() as u32, MAX_RUNS - 1);
    let mut rejected = Sim::new(json!({"id": "w", "tasks": []}));
    rejected.status = "rejected".into();
    assert_eq!(code(rerun(&mut e, &rejected, &[], None)), "not_rerunnable");
}

#[test]
fn a_mapped_task_run_again_expands_again() {
    let body = json!({"id": "w", "tasks": [
        {"id": "list", "type": "echo", "input": [1, 2, 3]},
        {"id": "each", "type": "echo", "depends_on": ["list"], "map": "${list.output}",
         "input": "${item}"},
        {"id": "sum", "type": "echo", "depends_on": ["each"], "input": "${each.output}"}
    ]});
    let mut e = engine(10);
    let mut sim = Sim::new(body);
    let ms = submit(&mut e, &mut sim, None);
    let ms = answer(&mut e, &mut sim, &ms, &[]);
    assert_eq!(ids(&ms), ["each[0]", "each[1]", "each[2]"]);
    answer(&mut e, &mut sim, &ms, &["each[1]"]);
    assert_eq!(sim.status, "failed");
    rerun(&mut e, &sim, &[], None);
    let ms = sim.step(&mut e);
    assert_eq!(ids(&ms), ["each[0]", "each[1]", "each[2]"]);
    assert!(ms.iter().all(|m| m.attempt == 1));
    let ms = answer(&mut e, &mut sim, &ms, &[]);
    assert_eq!(ms[0].input, json!([1, 2, 3]));
    answer(&mut e, &mut sim, &ms, &[]);
    let r = sim.final_report();
    assert_eq!(r.status, WorkflowStatus::Succeeded);
    assert_eq!(r.tasks["each"].history[0].state, TaskState::Failed);
}

#[test]
fn a_rerun_past_the_memory_budget_is_refused_until_room_is_made() {
    let config = EngineConfig {
        attempt_key: AttemptKey::fixed(1),
        bounds: crate::bounds::Bounds {
            max_active_tasks: 6,
            ..Default::default()
        },
        ..config(10)
    };
    let mut e = Engine::new(config, Arc::default());
    let mut sim = Sim::new(chain());
    failed_chain(&mut e, &mut sim, None);
    // Another workflow of two tasks holds the budget: 2 + 5 > 6.
    let mut other = Sim::new(json!({"id": "o", "tasks": [
        {"id": "x", "type": "echo"}, {"id": "y", "type": "echo", "depends_on": ["x"]}
    ]}));
    let ms = submit(&mut e, &mut other, None);
    assert_eq!(code(rerun(&mut e, &sim, &[], None)), "over_capacity");
    let ms = answer(&mut e, &mut other, &ms, &[]);
    answer(&mut e, &mut other, &ms, &[]);
    assert!(matches!(
        rerun(&mut e, &sim, &[], None),
        RerunOutcome::Started
    ));
}

#[test]
fn a_cancelled_workflows_cancelled_tasks_run_again_whatever_is_named() {
    let mut e = engine(10);
    let mut sim = Sim::new(chain());
    let ms = submit(&mut e, &mut sim, None);
    // a and side succeed; b runs when the workflow is cancelled.
    let ms = answer(&mut e, &mut sim, &ms, &[]);
    assert_eq!(ids(&ms), ["b"]);
    e.cancel("w", Utc::now()).unwrap();
    sim.step(&mut e);
    assert_eq!(sim.status, "cancelled");
    // Named: d alone; b and c (cancelled) run again too.
    rerun(&mut e, &sim, &["d"], None);
    let mut ran = Vec::new();
    let mut ms = sim.step(&mut e);
    while !ms.is_empty() {
        ran.extend(ids(&ms).into_iter().map(String::from));
        ms = answer(&mut e, &mut sim, &ms, &[]);
    }
    assert_eq!(ran, ["b", "c", "d"]);
    let r = sim.final_report();
    assert_eq!(r.status, WorkflowStatus::Succeeded);
    assert_eq!(r.tasks["b"].history[0].state, TaskState::Cancelled);
    assert!(r.tasks["a"].history.is_empty());
}

#[test]
fn a_single_tasks_answer_has_its_input_as_resolved_running_or_stored() {
    let mut e = engine(10);
    let mut sim = Sim::new(chain());
    let ms = submit(&mut e, &mut sim, None);
    let ms = answer(&mut e, &mut sim, &ms, &[]);
    // b runs: its input as its task message carries it; c reads b's
    // output, which is not there yet.
    let b = e.task_report("w", "b").unwrap().unwrap();
    assert_eq!(b.input, Some(ms[0].input.clone()));
    assert_eq!(b.input, Some(json!({"from_a": 1})));
    assert_eq!(e.task_report("w", "c").unwrap().unwrap().input, None);
    // In a whole report, no input.
    assert_eq!(e.report("w").unwrap().tasks["b"].input, None);
    let ms = answer(&mut e, &mut sim, &ms, &[]);
    answer(&mut e, &mut sim, &ms, &["c"]);
    // Ended: resolved again from the stored rows.
    let max = crate::bounds::Bounds::default().max_task_input_bytes;
    assert_eq!(
        super::stored_task_input(sim.running(), "c", max),
        Some(json!({"from_a": 1}))
    );
    assert_eq!(super::stored_task_input(sim.running(), "nope", max), None);
    // From the rows its sources name alone, as the HTTP endpoint reads.
    let definition = chain().to_string().into_bytes();
    let sources = super::input_sources(&definition, "w", "c").unwrap();
    assert_eq!(sources, ["b", "c"]);
    let mut partial = sim.running();
    partial.tasks.retain(|t| sources.contains(&t.task_id));
    assert_eq!(
        super::stored_task_input(partial, "c", max),
        Some(json!({"from_a": 1}))
    );
}

#[test]
fn an_instances_input_is_resolved_from_its_mapped_tasks_sources() {
    let body = json!({"id": "w", "tasks": [
        {"id": "list", "type": "echo", "input": [10, 20]},
        {"id": "each", "type": "echo", "depends_on": ["list"], "map": "${list.output}",
         "input": {"n": "${item}", "k": "${index}"}}
    ]});
    let mut e = engine(10);
    let mut sim = Sim::new(body.clone());
    let ms = submit(&mut e, &mut sim, None);
    let ms = answer(&mut e, &mut sim, &ms, &[]);
    answer(&mut e, &mut sim, &ms, &[]);
    let sources = super::input_sources(body.to_string().as_bytes(), "w", "each[1]").unwrap();
    assert_eq!(sources, ["each", "each[1]", "list"]);
    let mut partial = sim.running();
    partial.tasks.retain(|t| sources.contains(&t.task_id));
    let max = crate::bounds::Bounds::default().max_task_input_bytes;
    assert_eq!(
        super::stored_task_input(partial, "each[1]", max),
        Some(json!({"n": 20, "k": 1}))
    );
}

#[test]
fn the_timers_of_the_run_before_do_not_fire_on_the_rerun() {
    let body = json!({"id": "w", "deadline_ms": 60_000, "tasks": [
        {"id": "a", "type": "echo", "timeout_ms": 10_000}
    ]});
    let mut e = engine(10);
    let mut sim = Sim::new(body);
    let ms = submit(&mut e, &mut sim, None);
    let t0 = Utc::now();
    answer(&mut e, &mut sim, &ms, &["a"]);
    assert_eq!(sim.status, "failed");
    // Re-run 30 s later, dispatched 5 s after that.
    let later = |ms: i64| t0 + chrono::Duration::milliseconds(ms);
    let ask = RerunAsk::default();
    assert!(matches!(
        e.rerun(sim.stored(), &ask, None, later(30_000)),
        RerunOutcome::Started
    ));
    e.dispatch(later(35_000));
    let (ops, _) = e.take_batch();
    assert!(
        ops.iter()
            .any(|op| matches!(op, Op::Task(t) if t.state == TaskState::Running))
    );
    // Run 1's lease (t0 + 11 s) and deadline (t0 + 60 s) have passed; run
    // 2's lease ends at t0 + 46 s, its deadline at t0 + 90 s.
    e.fire_due(later(45_000).timestamp_millis());
    assert_eq!(e.report("w").unwrap().tasks["a"].state, TaskState::Running);
    e.fire_due(later(47_000).timestamp_millis());
    let r = e.report("w");
    assert!(
        r.is_none_or(|r| r.tasks["a"].state != TaskState::Running),
        "run 2's own lease expired"
    );
}

#[test]
fn the_deadline_of_the_run_before_does_not_fail_the_rerun() {
    let body = json!({"id": "w", "deadline_ms": 60_000, "tasks": [
        {"id": "a", "type": "echo"}
    ]});
    let mut e = engine(10);
    let mut sim = Sim::new(body);
    let ms = submit(&mut e, &mut sim, None);
    let t0 = Utc::now();
    answer(&mut e, &mut sim, &ms, &["a"]);
    let later = |ms: i64| t0 + chrono::Duration::milliseconds(ms);
    e.rerun(sim.stored(), &RerunAsk::default(), None, later(30_000));
    e.fire_due(later(61_000).timestamp_millis());
    assert!(e.is_active("w"), "run 1's deadline passed, not run 2's");
    e.fire_due(later(91_000).timestamp_millis());
    assert!(!e.is_active("w"), "run 2's deadline");
}

#[test]
fn tasks_a_failure_skipped_run_again_and_a_kept_failure_is_refused() {
    let body = json!({"id": "w", "tasks": [
        {"id": "x", "type": "echo"},
        {"id": "z", "type": "echo"},
        {"id": "y", "type": "echo", "depends_on": ["z", "x"], "run_if": "all_done"},
        {"id": "after_z", "type": "echo", "depends_on": ["z"]}
    ]});
    let mut e = engine(10);
    let mut sim = Sim::new(body);
    let ms = submit(&mut e, &mut sim, None);
    assert_eq!(ids(&ms), ["x", "z"]);
    // x fails while z succeeds: after_z is skipped by the failure.
    let ms = answer(&mut e, &mut sim, &ms, &["x"]);
    answer(&mut e, &mut sim, &ms, &[]);
    assert_eq!(sim.status, "failed");
    assert_eq!(
        sim.final_report().tasks["after_z"].skip_reason,
        Some(warren_shared::wire::SkipReason::WorkflowFailed)
    );
    // Naming z alone would keep x failed: the run would fail at once.
    match rerun(&mut e, &sim, &["y"], None) {
        RerunOutcome::Refused(r) => {
            assert_eq!(r.code, "failed_task_kept");
            assert_eq!(r.task.as_deref(), Some("x"));
        }
        other => panic!("{other:?}"),
    }
    // From x: after_z runs again too, though neither named nor downstream.
    rerun(&mut e, &sim, &["x"], None);
    let mut ran = Vec::new();
    let mut ms = sim.step(&mut e);
    while !ms.is_empty() {
        ran.extend(ids(&ms).into_iter().map(String::from));
        ms = answer(&mut e, &mut sim, &ms, &[]);
    }
    ran.sort();
    assert_eq!(ran, ["after_z", "x", "y"]);
    assert_eq!(sim.final_report().status, WorkflowStatus::Succeeded);
}

#[test]
fn an_earlier_runs_rerun_id_and_a_waiter_past_the_bound_are_answered_at_once() {
    let mut e = engine(10);
    let mut sim = Sim::new(chain());
    failed_chain(&mut e, &mut sim, None);
    rerun(&mut e, &sim, &[], Some("r1"));
    let ms = sim.step(&mut e);
    answer(&mut e, &mut sim, &ms, &["c"]);
    rerun(&mut e, &sim, &[], Some("r2"));
    sim.step(&mut e);
    // r1's run ended; run 3 (r2's) runs: r1 again is answered now.
    match rerun_to(&mut e, &sim, &[], Some("r1"), Some(to("late"))) {
        RerunOutcome::Done(report) => {
            let r: WorkflowReport = serde_json::from_str(&report).unwrap();
            assert_eq!((r.status, r.run), (WorkflowStatus::Running, 3));
        }
        other => panic!("{other:?}"),
    }
    // r2's waiters join, up to the bound; the next is answered now.
    for k in 0..MAX_WAITERS {
        let outcome = rerun_to(&mut e, &sim, &[], Some("r2"), Some(to(&format!("q{k}"))));
        assert!(matches!(outcome, RerunOutcome::Joined), "{k}: {outcome:?}");
    }
    assert!(matches!(
        rerun_to(&mut e, &sim, &[], Some("r2"), Some(to("one-too-many"))),
        RerunOutcome::Done(_)
    ));
}

#[test]
fn a_workflow_past_retention_is_not_rerun() {
    let config = EngineConfig {
        attempt_key: AttemptKey::fixed(1),
        retention: Some(std::time::Duration::from_secs(3600)),
        ..config(10)
    };
    let mut e = Engine::new(config, Arc::default());
    let mut sim = Sim::new(chain());
    failed_chain(&mut e, &mut sim, None);
    let later = Utc::now() + chrono::Duration::hours(2);
    match e.rerun(sim.stored(), &RerunAsk::default(), None, later) {
        RerunOutcome::Refused(r) => assert_eq!(r.code, "past_retention"),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        e.rerun(sim.stored(), &RerunAsk::default(), None, Utc::now()),
        RerunOutcome::Started
    ));
}
