//! Unit tests of the wire types: what parses, what is refused, what
//! round-trips.

use super::*;
use serde_json::json;

#[test]
fn request_defaults_and_strictness() {
    let req: WorkflowRequest = serde_json::from_value(json!({
        "tasks": [{"id": "a", "type": "echo"}]
    }))
    .unwrap();
    assert_eq!(req.priority, 0);
    assert_eq!(req.tasks[0].queue, "default");
    assert!(req.tasks[0].depends_on.is_empty());

    let err = serde_json::from_value::<WorkflowRequest>(json!({
        "tasks": [{"id": "a", "type": "echo", "dependson": ["b"]}]
    }))
    .unwrap_err();
    assert!(
        err.to_string().contains("unknown field `dependson`"),
        "{err}"
    );
}

#[test]
fn report_round_trip() {
    let mut r = WorkflowReport::not_found("x");
    r.status = WorkflowStatus::Running;
    r.tasks.insert(
        "a".into(),
        TaskReport {
            depends_on: vec!["z".into()],
            state: TaskState::Retrying,
            attempts: 2,
            output: None,
            output_elided: None,
            error: Some(TaskError {
                message: "boom".into(),
                retryable: true,
            }),
            skip_reason: None,
            worker: None,
            started_at: None,
            finished_at: None,
            history: Vec::new(),
            attempt_log: Vec::new(),
            input: None,
        },
    );
    let text = serde_json::to_string(&r).unwrap();
    assert!(text.contains(r#""state":"retrying""#), "{text}");
    assert_eq!(serde_json::from_str::<WorkflowReport>(&text).unwrap(), r);
}

#[test]
fn task_state_words_round_trip() {
    for s in [
        TaskState::Pending,
        TaskState::Ready,
        TaskState::Running,
        TaskState::Retrying,
        TaskState::Delayed,
        TaskState::Succeeded,
        TaskState::Failed,
        TaskState::Skipped,
    ] {
        assert_eq!(TaskState::parse(s.as_str()), Some(s));
        assert_eq!(
            serde_json::to_value(s).unwrap(),
            Value::String(s.as_str().into())
        );
    }
}
