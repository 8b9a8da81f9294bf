//! Tests of the PostgreSQL store. They need the PostgreSQL of
//! `WARREN_TEST_STORE` (default: the local one, as CI starts it), the way
//! the integration tests need RabbitMQ.

use super::{Balance, schema_of};
use crate::batch::{Op, OutKind, OutMsg, TaskRow};
use crate::store::{Store, StoreError, StoreLocation};
use chrono::Utc;
use std::{sync::Arc, time::Duration};
use tokio_postgres::NoTls;
use tokio_util::sync::CancellationToken;
use warren_shared::{
    topology::{PARTITIONS, partition_of},
    wire::{ResultStatus, TaskState, WorkflowStatus},
};

fn url() -> String {
    std::env::var("WARREN_TEST_STORE")
        .ok()
        .filter(|u| u.starts_with("postgres"))
        .unwrap_or_else(|| "postgres://postgres:postgres@127.0.0.1:5432/postgres".into())
}

/// A fresh namespace, its schema dropped when the test ends.
struct Ns(String);

impl Ns {
    fn new() -> Ns {
        Ns(format!(
            "st-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..12]
        ))
    }

    async fn open(&self) -> Store {
        Store::open(
            &StoreLocation::Postgres(url()),
            &self.0,
            &CancellationToken::new(),
        )
        .await
        .unwrap()
        .unwrap()
    }

    async fn sql(&self, sql: &str) {
        let (client, conn) = tokio_postgres::connect(&url(), NoTls).await.unwrap();
        tokio::spawn(conn);
        client
            .batch_execute(&format!("SET search_path = {}; {sql}", schema_of(&self.0)))
            .await
            .unwrap();
    }
}

impl Drop for Ns {
    fn drop(&mut self) {
        let schema = schema_of(&self.0);
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                if let Ok((c, conn)) = tokio_postgres::connect(&url(), NoTls).await {
                    tokio::spawn(conn);
                    let _ = c
                        .batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
                        .await;
                }
            });
        })
        .join()
        .unwrap();
    }
}

fn row(wf: &Arc<str>, task: &str, state: TaskState, attempt: u32) -> Op {
    Op::Task(TaskRow {
        workflow_id: wf.clone(),
        task_id: task.into(),
        state,
        skip_reason: None,
        attempt,
        due_at_ms: Some(5),
        output: Some("{\"x\":1}".into()),
        error: None,
        worker: Some("w\0".into()),
        started_at: Some(Utc::now()),
        finished_at: None,
    })
}

#[tokio::test]
async fn batches_commit_recover_and_refuse_a_second_result() {
    let ns = Ns::new();
    let store = ns.open().await;
    let wf: Arc<str> = Arc::from("wf-1");
    let msg = Arc::new(OutMsg {
        kind: OutKind::Task,
        exchange: "ns.tasks".into(),
        routing_key: "default".into(),
        message_id: Some("wf-1/a/1".into()),
        correlation_id: None,
        priority: Some(3),
        headers: vec![("k".into(), "v".into())],
        body: b"{}".to_vec(),
        part: partition_of("wf-1", PARTITIONS),
    });
    store
        .commit(vec![
            Op::InsertWorkflow {
                id: wf.clone(),
                seq: 7,
                name: Some("n".into()),
                priority: 3,
                status: WorkflowStatus::Running,
                definition: Some(Arc::from(&b"{\"tasks\":[]}"[..])),
                report: None,
                created_at: Utc::now(),
            },
            row(&wf, "a", TaskState::Running, 1),
            // A later snapshot of the same task in the same batch wins.
            row(&wf, "a", TaskState::Running, 2),
            Op::Outbox(1, msg.clone()),
            Op::Outbox(2, msg.clone()),
            Op::AddReply {
                workflow_id: wf.clone(),
                reply_to: "q".into(),
                correlation_id: Some("c".into()),
                run: 0,
            },
        ])
        .await
        .unwrap();
    store
        .commit(vec![
            Op::OutboxDone(1),
            row(&wf, "a", TaskState::Succeeded, 2),
            Op::Result {
                workflow_id: wf.clone(),
                task_id: "a".into(),
                attempt: 2,
                status: ResultStatus::Succeeded,
                worker: None,
                started_at: None,
                finished_at: None,
            },
        ])
        .await
        .unwrap();
    let dup = vec![
        row(&wf, "a", TaskState::Failed, 2),
        Op::Result {
            workflow_id: wf.clone(),
            task_id: "a".into(),
            attempt: 2,
            status: ResultStatus::Succeeded,
            worker: None,
            started_at: None,
            finished_at: None,
        },
    ];
    assert!(
        store.commit(dup).await.is_err(),
        "a second result is refused"
    );
    let rec = store.recover().await.unwrap();
    // Each recovery counts from a block of its own, past every seq
    // another scheduler (or an earlier recovery) may use.
    assert!(rec.next_workflow_seq > 1 << 40);
    assert_eq!(rec.next_workflow_seq, rec.next_outbox_seq);
    let again = store.recover().await.unwrap().next_outbox_seq;
    assert!(again >= rec.next_outbox_seq + (1 << 40), "{again}");
    assert_eq!(rec.outbox.len(), 1);
    assert_eq!(*rec.outbox[0].1, *msg);
    let w = &rec.running[0];
    assert_eq!(w.tasks.len(), 1);
    let t = &w.tasks[0];
    assert_eq!(
        (t.state, t.attempt),
        (TaskState::Succeeded, 2),
        "the refused batch left nothing"
    );
    assert_eq!(t.worker.as_deref(), Some("w\u{FFFD}"));
    assert_eq!(w.replies, vec![("q".to_string(), Some("c".to_string()))]);
    assert_eq!(
        store.results_of("wf-1".into()).await.unwrap(),
        vec![("a".to_string(), 2, "succeeded".to_string())]
    );
    let found = store
        .lookup(vec!["wf-1".into(), "nope".into()])
        .await
        .unwrap();
    assert_eq!(
        found[0].as_ref().map(|k| k.status.as_str()),
        Some("running")
    );
    assert_eq!(found[1], None);
    let listed = store
        .list_workflows(Some("running".into()), 10, 0)
        .await
        .unwrap();
    assert_eq!(listed[0].workflow_id, "wf-1");
    store
        .commit(vec![Op::FinishWorkflow {
            id: wf.clone(),
            status: WorkflowStatus::Succeeded,
            report: "{}".into(),
            finished_at: Utc::now(),
        }])
        .await
        .unwrap();
    assert!(store.recover().await.unwrap().running.is_empty());
    store.close().await;
}

#[tokio::test]
async fn schedulers_share_the_partitions_and_a_deposed_one_commits_nothing() {
    let ns = Ns::new();
    let first = ns.open().await;
    let p1 = first.partitioned().expect("PostgreSQL is partitioned");
    assert_eq!(
        p1.owned().len(),
        usize::from(PARTITIONS),
        "alone, it owns all"
    );
    let second = tokio::spawn({
        let ns = ns.0.clone();
        async move {
            Store::open(
                &StoreLocation::Postgres(url()),
                &ns,
                &CancellationToken::new(),
            )
            .await
            .unwrap()
            .unwrap()
        }
    });
    // The second joins; the first owns more than its share while the
    // second owns none, so it is asked to hand half over.
    let half = usize::from(PARTITIONS) / 2;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        match p1.balance().await.unwrap() {
            Balance::Release(n) => {
                assert_eq!(n, half);
                break;
            }
            other => assert_eq!(other, Balance::Unchanged),
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never asked to release"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        !second.is_finished(),
        "the second owns a partition still locked"
    );
    first.commit(vec![Op::OutboxDone(1)]).await.unwrap();
    p1.release(half).await.unwrap();
    let second = tokio::time::timeout(Duration::from_secs(30), second)
        .await
        .expect("the second takes the released partitions")
        .unwrap();
    let p2 = second.partitioned().expect("PostgreSQL is partitioned");
    let (a, b) = (p1.owned(), p2.owned());
    assert_eq!((a.len(), b.len()), (half, half), "{a:?} {b:?}");
    assert!(a.iter().all(|p| !b.contains(p)), "{a:?} {b:?}");
    assert_eq!(p1.balance().await.unwrap(), Balance::Unchanged);
    first.commit(vec![Op::OutboxDone(1)]).await.unwrap();
    second.commit(vec![Op::OutboxDone(1)]).await.unwrap();

    // Another scheduler taking one of its partitions over (the epoch
    // moves on) fences the second: it commits nothing more.
    ns.sql(&format!(
        "UPDATE partitions SET epoch = epoch + 1 WHERE id = {}",
        b[0]
    ))
    .await;
    let e = second.commit(vec![Op::OutboxDone(1)]).await.unwrap_err();
    assert!(matches!(e, StoreError::Fenced), "{e}");
    first.commit(vec![Op::OutboxDone(1)]).await.unwrap();

    // The second leaves: the first takes every partition back.
    second.close().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while p1.owned().len() < usize::from(PARTITIONS) {
        p1.balance().await.unwrap();
        assert!(
            tokio::time::Instant::now() < deadline,
            "partitions left unowned"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    first.commit(vec![Op::OutboxDone(1)]).await.unwrap();
    first.close().await;
}

#[test]
fn namespaces_never_share_a_schema() {
    assert_eq!(schema_of("warren"), "warren_warren");
    let names = [
        "a-b",
        "a_b",
        "A_B",
        "a.b",
        &"x".repeat(100),
        &"x".repeat(101),
    ];
    let schemas: std::collections::HashSet<String> = names.iter().map(|n| schema_of(n)).collect();
    assert_eq!(schemas.len(), names.len(), "{schemas:?}");
    assert!(schemas.iter().all(|s| {
        s.len() <= 63
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    }));
}

#[tokio::test]
async fn a_schema_newer_than_this_scheduler_is_refused() {
    let ns = Ns::new();
    ns.open().await.close().await;
    ns.sql("INSERT INTO warren_migrations (version) VALUES (99)")
        .await;
    let e = Store::open(
        &StoreLocation::Postgres(url()),
        &ns.0,
        &CancellationToken::new(),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(e, StoreError::SchemaVersion { found: 99, .. }),
        "{e}"
    );
}

#[tokio::test]
async fn pauses_are_shared_idempotent_and_bounded_across_schedulers() {
    use crate::pauses::{MAX_PAUSES, PauseChange, PauseKind};
    let ns = Ns::new();
    let a = ns.open().await;
    let b = Store::connect(&StoreLocation::Postgres(url()), &ns.0)
        .await
        .unwrap();
    let change = |pause, kind, name: &str| PauseChange {
        pause,
        kind,
        name: name.into(),
    };
    let first = a
        .change_pause(change(true, PauseKind::Queue, "q"))
        .await
        .unwrap();
    assert_eq!(first.refused, None);
    assert_eq!(b.pauses().await.unwrap(), first.pauses, "one table for all");
    let again = b
        .change_pause(change(true, PauseKind::Queue, "q"))
        .await
        .unwrap();
    assert_eq!(again.pauses, first.pauses, "a second pause keeps the first");
    // Fill up to one short of the bound, then race for the last place
    // from both schedulers: exactly one pause gets it.
    ns.sql(&format!(
        "INSERT INTO pauses (kind, name, since)
         SELECT 'type', 'filler-' || i, now() FROM generate_series(2, {MAX_PAUSES} - 1) i"
    ))
    .await;
    let racers = (0..10).map(|i| {
        let store = if i % 2 == 0 { a.clone() } else { b.clone() };
        async move {
            store
                .change_pause(change(true, PauseKind::Type, &format!("racer-{i}")))
                .await
                .unwrap()
        }
    });
    let outcomes = futures_util::future::join_all(racers).await;
    let accepted = outcomes.iter().filter(|o| o.refused.is_none()).count();
    assert_eq!(accepted, 1, "{outcomes:?}");
    let refused = outcomes.iter().find_map(|o| o.refused.clone()).unwrap();
    assert_eq!(refused.code, "too_many_pauses");
    assert_eq!(a.pauses().await.unwrap().len(), MAX_PAUSES);
    let resumed = a
        .change_pause(change(false, PauseKind::Queue, "q"))
        .await
        .unwrap();
    assert_eq!(resumed.pauses.len(), MAX_PAUSES - 1);
    assert!(!resumed.pauses.iter().any(|p| p.kind == PauseKind::Queue));
    b.close().await;
    a.close().await;
}
