//! Every validation error is answered with its reasons and recorded, and
//! rejected requests do not disturb other workflows.

use crate::support::{DEADLINE, Env, Events};
use serde_json::{Value, json};
use warren_scheduler::validate::Limits;
use warren_shared::wire::WorkflowStatus;

fn deep(levels: usize) -> Value {
    (0..levels).fold(json!(1), |v, _| json!([v]))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_validation_error_is_answered_and_recorded() {
    let mut env = Env::new().await;
    let mut config = env.scheduler_config();
    config.limits = Limits {
        max_body_bytes: 64 * 1024,
        max_tasks: 50,
        max_input_depth: 16,
        ..Limits::default()
    };
    let s = env.scheduler(config);
    env.builtin_worker("w");
    let mut rejections = Events::bind(&env.amqp, "workflow.*.rejected").await;
    let echo = |id: &str| json!({"id": id, "type": "echo"});
    let cases: Vec<(&str, Vec<u8>, &str, &str)> = vec![
        ("syntax", b"{\"tasks\": [".to_vec(), "invalid_request", "EOF while parsing"),
        ("types", json!({"tasks": [{"id": 1, "type": "echo"}]}).to_string().into_bytes(), "invalid_request", "invalid type: integer"),
        ("unknown-field", json!({"tasks": [echo("a")], "prio": 1}).to_string().into_bytes(), "invalid_request", "unknown field `prio`"),
        ("dup", json!({"id": "v-dup", "tasks": [echo("a"), echo("a")]}).to_string().into_bytes(), "duplicate_task_id", "`a`"),
        ("unknown-dep", json!({"id": "v-dep", "tasks": [{"id": "a", "type": "echo", "depends_on": ["zz"]}]}).to_string().into_bytes(), "unknown_dependency", "`zz`"),
        ("cycle", json!({"id": "v-cycle", "tasks": [
            {"id": "a", "type": "echo", "depends_on": ["b"]},
            {"id": "b", "type": "echo", "depends_on": ["a"]}]}).to_string().into_bytes(), "cycle", "a -> b -> a"),
        ("template", json!({"id": "v-tpl", "tasks": [echo("a"), {"id": "b", "type": "echo", "input": "${a.output.x}"}]}).to_string().into_bytes(), "template_not_ancestor", "does not depend on"),
        ("priority", json!({"id": "v-prio", "priority": 10, "tasks": [echo("a")]}).to_string().into_bytes(), "priority_out_of_range", "10"),
        ("too-many", json!({"id": "v-many", "tasks": (0..51).map(|i| echo(&format!("t{i}"))).collect::<Vec<_>>()}).to_string().into_bytes(), "too_many_tasks", "51 tasks; the limit is 50"),
        ("too-deep", json!({"id": "v-deep", "tasks": [{"id": "a", "type": "echo", "input": deep(20)}]}).to_string().into_bytes(), "input_too_deep", "deeper than 16"),
        ("timeout", json!({"id": "v-timeout", "tasks": [{"id": "a", "type": "echo", "timeout_ms": 1u64 << 63}]}).to_string().into_bytes(), "invalid_timeout", "not 9223372036854775808"),
        ("backoff", json!({"id": "v-backoff", "tasks": [{"id": "a", "type": "echo", "retry": {"max_attempts": 3, "max_backoff_ms": u64::MAX}}]}).to_string().into_bytes(), "invalid_backoff", "retry.max_backoff_ms"),
        ("hint", json!({"id": "v-hint", "tasks": [{"id": "a", "type": "echo", "duration_hint_ms": 2_592_000_001u64}]}).to_string().into_bytes(), "invalid_duration_hint", "not 2592000001"),
        ("too-big", json!({"id": "v-big", "tasks": [{"id": "a", "type": "echo", "input": "x".repeat(70 * 1024)}]}).to_string().into_bytes(), "body_too_large", "limit is 65536 bytes"),
    ];
    for (label, body, code, fragment) in &cases {
        let report = env
            .client
            .submit_bytes_and_wait(body, DEADLINE)
            .await
            .unwrap();
        assert_eq!(
            report.status,
            WorkflowStatus::Rejected,
            "{label}: {report:?}"
        );
        assert_eq!(report.errors.len(), 1, "{label}: {:?}", report.errors);
        assert_eq!(report.errors[0].code, *code, "{label}");
        assert!(
            report.errors[0].message.contains(fragment),
            "{label}: `{}` lacks `{fragment}`",
            report.errors[0].message
        );
        // Recorded: the scheduler answers for it later.
        let status = env
            .client
            .status(&report.workflow_id, DEADLINE)
            .await
            .unwrap();
        assert_eq!(status.status, WorkflowStatus::Rejected, "{label}");
        assert_eq!(status.errors, report.errors, "{label}");
        // And announced on the events exchange.
        let (key, event) = rejections.next().await;
        assert_eq!(
            key,
            format!("workflow.{}.rejected", report.workflow_id),
            "{label}"
        );
        assert_eq!(event["errors"][0]["code"], *code, "{label}");
    }
    rejections.close().await;
    // Several problems in one request are reported together.
    let report = env
        .client
        .submit_and_wait(
            json!({"id": "v-many-problems", "priority": -1, "tasks": [
                {"id": "a", "type": "echo", "depends_on": ["ghost"]},
                {"id": "a", "type": ""}]}),
            DEADLINE,
        )
        .await
        .unwrap();
    let codes: Vec<&str> = report.errors.iter().map(|e| e.code.as_str()).collect();
    assert_eq!(
        codes,
        vec![
            "priority_out_of_range",
            "duplicate_task_id",
            "unknown_dependency",
            "missing_type"
        ]
    );
    // The sizes were checked before parsing, and nothing else was disturbed.
    assert_eq!(
        warren_scheduler::Metrics::get(&s.metrics.engine.workflows_rejected),
        cases.len() as u64 + 1
    );
    let ok = env
        .client
        .submit_and_wait(
            json!({"tasks": [{"id": "a", "type": "echo", "input": 1}]}),
            DEADLINE,
        )
        .await
        .unwrap();
    assert_eq!(ok.status, WorkflowStatus::Succeeded);
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_of_an_unknown_workflow_is_not_found() {
    let env = Env::new().await;
    let _s = env.scheduler(env.scheduler_config());
    let report = env
        .client
        .status("never-submitted", DEADLINE)
        .await
        .unwrap();
    assert_eq!(report.status, WorkflowStatus::NotFound);
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_requests_are_refused_within_the_default_limits() {
    let mut env = Env::new().await;
    let _s = env.scheduler(env.scheduler_config());
    env.builtin_worker("w");
    let tasks = |n: usize| {
        let mut body = String::with_capacity(n * 32 + 16);
        body.push_str("{\"tasks\": [");
        for i in 0..n {
            if i > 0 {
                body.push(',');
            }
            body.push_str(&format!("{{\"id\": \"t{i}\", \"type\": \"echo\"}}"));
        }
        body.push_str("]}");
        body.into_bytes()
    };
    let deep = format!(
        "{{\"tasks\": [{{\"id\": \"a\", \"type\": \"echo\", \"input\": {}1{}}}]}}",
        "[".repeat(10_000),
        "]".repeat(10_000)
    );
    // Issue 15's first bomb: an invalid 4 KiB id listing `a` 200,000 times.
    let faults = json!({"tasks": [
        {"id": "x".repeat(4096), "type": "echo", "depends_on": vec!["a"; 200_000]},
        {"id": "a", "type": "echo"}
    ]})
    .to_string()
    .into_bytes();
    let cases: Vec<(&str, Vec<u8>, &str, &str)> = vec![
        (
            "200,000 faults echoing a 4 KiB id",
            faults,
            "invalid_task_id",
            "… (4165 bytes)",
        ),
        (
            "a million tasks",
            tasks(1_000_000),
            "body_too_large",
            "the limit is 16777216 bytes",
        ),
        (
            "over the task limit",
            tasks(100_001),
            "too_many_tasks",
            "100001 tasks; the limit is 100000",
        ),
        (
            "10,000 levels of nesting",
            deep.into_bytes(),
            "invalid_request",
            "recursion limit exceeded",
        ),
        (
            "not UTF-8",
            vec![b'{', 0xff, 0xfe],
            "invalid_request",
            "line 1 column 2",
        ),
        (
            "a JSON array",
            b"[1, 2]".to_vec(),
            "invalid_request",
            "must be a JSON object",
        ),
    ];
    for (label, body, code, fragment) in cases {
        let report = env
            .client
            .submit_bytes_and_wait(&body, DEADLINE)
            .await
            .unwrap();
        assert_eq!(report.status, WorkflowStatus::Rejected, "{label}");
        assert_eq!(report.errors[0].code, code, "{label}");
        assert!(
            report.errors.len() <= 101,
            "{label}: {}",
            report.errors.len()
        );
        assert!(
            report.errors[0].message.contains(fragment),
            "{label}: {}",
            report.errors[0].message
        );
    }
    // The scheduler is unharmed and other workflows run.
    let ok = env
        .client
        .submit_and_wait(
            json!({"tasks": [{"id": "a", "type": "echo", "input": 1}]}),
            DEADLINE,
        )
        .await
        .unwrap();
    assert_eq!(ok.status, WorkflowStatus::Succeeded);
    env.finish().await;
}
