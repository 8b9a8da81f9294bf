//! Unit tests of the SQLite store: batches committed and recovered.

use super::*;
use crate::batch::{OutKind, OutMsg, TaskRow};
use warren_shared::wire::{ResultStatus, TaskState, WorkflowStatus};

fn row(wf: &Arc<str>, task: &str, state: TaskState, attempt: u32) -> Op {
    Op::Task(TaskRow {
        workflow_id: wf.clone(),
        task_id: task.into(),
        state,
        skip_reason: None,
        attempt,
        due_at_ms: None,
        output: None,
        error: None,
        worker: None,
        started_at: None,
        finished_at: None,
    })
}

#[test]
fn batches_commit_and_recover() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.db");
    let wf: Arc<str> = Arc::from("wf-1");
    {
        let mut db = Db::open(&path).unwrap();
        let msg = Arc::new(OutMsg {
            kind: OutKind::Task,
            exchange: "ns.tasks".into(),
            routing_key: "default".into(),
            message_id: Some("wf-1/a/1".into()),
            correlation_id: None,
            priority: Some(3),
            headers: vec![("k".into(), "v".into())],
            body: b"{}".to_vec(),
            part: 0,
        });
        db.commit(&[
            Op::InsertWorkflow {
                id: wf.clone(),
                seq: 7,
                name: None,
                priority: 3,
                status: WorkflowStatus::Running,
                definition: Some(Arc::from(&b"{\"tasks\":[]}"[..])),
                report: None,
                created_at: Utc::now(),
            },
            row(&wf, "a", TaskState::Running, 1),
            Op::Outbox(1, msg.clone()),
            Op::Outbox(2, msg),
            Op::AddReply {
                workflow_id: wf.clone(),
                reply_to: "q".into(),
                correlation_id: Some("c".into()),
                run: 0,
            },
        ])
        .unwrap();
        db.commit(&[
            Op::OutboxDone(1),
            row(&wf, "a", TaskState::Succeeded, 1),
            Op::Result {
                workflow_id: wf.clone(),
                task_id: "a".into(),
                attempt: 1,
                status: ResultStatus::Succeeded,
                worker: None,
                started_at: None,
                finished_at: None,
            },
        ])
        .unwrap();
        // The same result twice is refused, and the whole batch with it.
        let dup = [
            row(&wf, "a", TaskState::Failed, 1),
            Op::Result {
                workflow_id: wf.clone(),
                task_id: "a".into(),
                attempt: 1,
                status: ResultStatus::Succeeded,
                worker: None,
                started_at: None,
                finished_at: None,
            },
        ];
        assert!(db.commit(&dup).is_err());
    }
    let db = Db::open(&path).unwrap();
    assert!(
        matches!(Db::open(&path), Err(StoreError::Locked { .. })),
        "a second opener is refused"
    );
    let rec = db.recover().unwrap();
    assert_eq!(rec.next_workflow_seq, 8);
    assert_eq!(rec.next_outbox_seq, 3);
    assert_eq!(rec.outbox.len(), 1);
    assert_eq!(rec.outbox[0].0, 2);
    assert_eq!(
        rec.outbox[0].1.headers,
        vec![("k".to_string(), "v".to_string())]
    );
    assert_eq!(rec.running.len(), 1);
    let w = &rec.running[0];
    assert_eq!(w.tasks.len(), 1);
    assert_eq!(
        w.tasks[0].state,
        TaskState::Succeeded,
        "the refused batch left nothing behind"
    );
    assert_eq!(w.replies, vec![("q".to_string(), Some("c".to_string()))]);
    assert_eq!(
        db.results_of("wf-1").unwrap(),
        vec![("a".to_string(), 1, "succeeded".to_string())]
    );
    assert_eq!(db.lookup(&["wf-1".into(), "nope".into()]).unwrap()[1], None);
}

#[test]
fn a_store_of_version_1_gains_the_runs_of_reruns_and_the_attempt_log() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v1.db");
    {
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(
            "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
             INSERT INTO meta VALUES ('schema_version', '1');
             CREATE TABLE replies (workflow_id TEXT NOT NULL, reply_to TEXT NOT NULL, correlation_id TEXT);
             INSERT INTO replies VALUES ('w', 'q', NULL);
             CREATE TABLE results (workflow_id TEXT NOT NULL, task_id TEXT NOT NULL, attempt INTEGER NOT NULL,
                                   status TEXT NOT NULL, committed_at TEXT NOT NULL,
                                   PRIMARY KEY (workflow_id, task_id, attempt)) WITHOUT ROWID;
             INSERT INTO results VALUES ('w', 'a', 1, 'succeeded', '2026-01-01T00:00:00Z');",
        )
        .unwrap();
    }
    let db = Db::open(&path).unwrap();
    let (version, run): (String, u32) = db
        .conn
        .query_row(
            "SELECT (SELECT value FROM meta WHERE key = 'schema_version'), run FROM replies",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!((version.as_str(), run), ("2", 0), "a submitter's row");
    let worker: Option<String> = db
        .conn
        .query_row("SELECT worker FROM results", [], |r| r.get(0))
        .unwrap();
    assert_eq!(worker, None, "a result committed before the log");
}

#[test]
fn a_rerun_deletes_what_runs_again_and_keeps_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let mut db = Db::open(&dir.path().join("r.db")).unwrap();
    let wf: Arc<str> = Arc::from("w");
    // Whole seconds: the store keeps microseconds.
    let now = chrono::DateTime::from_timestamp(Utc::now().timestamp(), 0).unwrap();
    let reply = |to: &str, run| Op::AddReply {
        workflow_id: wf.clone(),
        reply_to: to.into(),
        correlation_id: None,
        run,
    };
    db.commit(&[
        Op::InsertWorkflow {
            id: wf.clone(),
            seq: 1,
            name: None,
            priority: 0,
            status: WorkflowStatus::Running,
            definition: Some(Arc::from(&b"{}"[..])),
            report: None,
            created_at: now,
        },
        reply("submitter", 0),
        row(&wf, "a", TaskState::Succeeded, 1),
        row(&wf, "b", TaskState::Failed, 2),
        row(&wf, "b[0]", TaskState::Failed, 2),
        Op::Result {
            workflow_id: wf.clone(),
            task_id: "b".into(),
            attempt: 1,
            status: ResultStatus::Failed,
            worker: None,
            started_at: None,
            finished_at: None,
        },
        Op::FinishWorkflow {
            id: wf.clone(),
            status: WorkflowStatus::Failed,
            report: "{}".into(),
            finished_at: now,
        },
    ])
    .unwrap();
    let run = crate::batch::RunRow {
        workflow_id: wf.clone(),
        run: 2,
        rerun_id: Some("r1".into()),
        started_at: now,
        record: "{}".into(),
    };
    db.commit(&[
        Op::Rerun {
            row: run.clone(),
            reset: vec!["b".into(), "b[0]".into()],
        },
        reply("rerun", 2),
        // Its result commits again under attempt 1.
        Op::Result {
            workflow_id: wf.clone(),
            task_id: "b".into(),
            attempt: 1,
            status: ResultStatus::Succeeded,
            worker: None,
            started_at: None,
            finished_at: None,
        },
    ])
    .unwrap();
    let stored = db.stored_workflow("w").unwrap().unwrap();
    assert_eq!(stored.status, "running");
    assert_eq!(stored.report, None);
    let tasks: Vec<&str> = stored
        .workflow
        .tasks
        .iter()
        .map(|t| t.task_id.as_str())
        .collect();
    assert_eq!(tasks, ["a"]);
    assert_eq!(stored.workflow.runs, [run]);
    assert_eq!(
        stored.workflow.replies,
        [("submitter".into(), None), ("rerun".into(), None)]
    );
    let recovered = db.recover().unwrap();
    assert_eq!(recovered.running[0].replies.len(), 2);
    // The run ends: its rerun's reply row goes, the submitter's stays.
    db.commit(&[Op::DropReplies(wf.clone())]).unwrap();
    let left: u32 = db
        .conn
        .query_row("SELECT count(*) FROM replies", [], |r| r.get(0))
        .unwrap();
    assert_eq!(left, 1);
}

#[test]
fn a_prune_deletes_the_oldest_ended_workflows_past_retention_and_all_they_hold() {
    let dir = tempfile::tempdir().unwrap();
    let mut db = Db::open(&dir.path().join("p.db")).unwrap();
    let day = chrono::Duration::days(1);
    let now = Utc::now();
    let workflow = |id: &str, status: WorkflowStatus, at| Op::InsertWorkflow {
        id: Arc::from(id),
        seq: 1,
        name: None,
        priority: 0,
        status,
        definition: Some(Arc::from(&b"{}"[..])),
        report: None,
        created_at: at,
    };
    let mut ops = Vec::new();
    for (i, id) in ["old-1", "old-2", "old-3"].into_iter().enumerate() {
        let wf: Arc<str> = Arc::from(id);
        ops.push(workflow(id, WorkflowStatus::Running, now - day * 10));
        ops.push(row(&wf, "a", TaskState::Succeeded, 1));
        ops.push(Op::Result {
            workflow_id: wf.clone(),
            task_id: "a".into(),
            attempt: 1,
            status: ResultStatus::Succeeded,
            worker: None,
            started_at: None,
            finished_at: None,
        });
        ops.push(Op::AddReply {
            workflow_id: wf.clone(),
            reply_to: "q".into(),
            correlation_id: None,
            run: 0,
        });
        ops.push(Op::FinishWorkflow {
            id: wf,
            status: WorkflowStatus::Succeeded,
            report: "{}".into(),
            // old-1 ended first.
            finished_at: now - day * 9 + chrono::Duration::seconds(i as i64),
        });
    }
    // Rejected long ago, ended recently, and running since long ago.
    ops.push(workflow(
        "rejected",
        WorkflowStatus::Rejected,
        now - day * 8,
    ));
    ops.push(workflow("recent", WorkflowStatus::Running, now - day * 10));
    ops.push(Op::FinishWorkflow {
        id: Arc::from("recent"),
        status: WorkflowStatus::Failed,
        report: "{}".into(),
        finished_at: now - chrono::Duration::hours(1),
    });
    ops.push(workflow("running", WorkflowStatus::Running, now - day * 10));
    db.commit(&ops).unwrap();
    let count = |db: &Db, table: &str| -> i64 {
        db.conn
            .query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
            .unwrap()
    };
    // Seven days' retention, two at a time: the oldest first.
    let prune = Op::Prune {
        before: now - day * 7,
        limit: 2,
    };
    db.commit(std::slice::from_ref(&prune)).unwrap();
    let left = |db: &Db| -> Vec<String> {
        let mut stmt = db
            .conn
            .prepare("SELECT id FROM workflows ORDER BY id")
            .unwrap();
        stmt.query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    };
    assert_eq!(left(&db), ["old-3", "recent", "rejected", "running"]);
    assert_eq!(db.pruned.load(std::sync::atomic::Ordering::Relaxed), 2);
    db.commit(std::slice::from_ref(&prune)).unwrap();
    db.commit(std::slice::from_ref(&prune)).unwrap();
    assert_eq!(left(&db), ["recent", "running"]);
    for table in ["tasks", "results", "replies", "runs"] {
        assert_eq!(count(&db, table), 0, "{table}");
    }
    assert_eq!(db.pruned.load(std::sync::atomic::Ordering::Relaxed), 4);
    assert!(db.size_bytes().unwrap() > 0);
    let auto_vacuum: i64 = db
        .conn
        .query_row("PRAGMA auto_vacuum", [], |r| r.get(0))
        .unwrap();
    assert_eq!(auto_vacuum, 2, "incremental");
}
