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
