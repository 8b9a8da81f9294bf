//! Unit tests of request validation: each check, data-driven through
//! `check(body, expected problems)`.

use super::*;
use serde_json::json;

fn run(body: Value) -> Result<ValidWorkflow, Rejected> {
    let limits = Limits {
        max_body_bytes: 4096,
        max_tasks: 5,
        max_input_depth: 4,
        ..Limits::default()
    };
    validate(body.to_string().as_bytes(), None, &limits, || {
        "generated".into()
    })
}

/// Checks that `body` is rejected with exactly these codes (in order)
/// and that each message contains its fragment.
fn check(body: Value, expected: &[(&str, &str)]) {
    let rejected = run(body.clone()).expect_err(&format!("accepted {body}"));
    let got: Vec<(&str, &str)> = rejected
        .errors
        .iter()
        .map(|e| (e.code.as_str(), e.message.as_str()))
        .collect();
    assert_eq!(got.len(), expected.len(), "{got:?}");
    for ((code, msg), (want_code, fragment)) in got.iter().zip(expected) {
        assert_eq!(code, want_code, "{got:?}");
        assert!(msg.contains(fragment), "`{msg}` lacks `{fragment}`");
    }
}

#[test]
fn accepts_a_valid_dag() {
    let wf = run(json!({
        "id": "order-1", "priority": 5, "input": {"x": 1},
        "tasks": [
            {"id": "a", "type": "echo", "input": {"v": "${workflow.input.x}"}},
            {"id": "b", "type": "echo", "depends_on": ["a"], "input": "${a.output}"},
            {"id": "c", "type": "echo", "depends_on": ["b"], "input": {"deep": "${a.output.v}"}}
        ]
    }))
    .unwrap();
    assert_eq!(wf.id, "order-1");
    assert_eq!(wf.priority, 5);
    assert_eq!(wf.deps, vec![vec![], vec![0], vec![1]]);
    assert_eq!(wf.templated, vec![true, true, true]);
}

#[test]
fn reports_every_problem_at_once() {
    check(
        json!({"priority": 12, "max_concurrency": 0, "tasks": [
            {"id": "a", "type": "echo"},
            {"id": "a", "type": "echo"},
            {"id": "b", "type": "echo", "depends_on": ["ghost", "b"]},
            {"id": "c", "type": "", "queue": "bad queue", "retry": {"max_attempts": 0}, "timeout_ms": 0}
        ]}),
        &[
            ("priority_out_of_range", "12"),
            ("invalid_max_concurrency", "at least 1"),
            ("duplicate_task_id", "`a`"),
            ("unknown_dependency", "`ghost`"),
            ("self_dependency", "`b`"),
            ("missing_type", "`c`"),
            ("invalid_queue", "bad queue"),
            ("invalid_retry", "max_attempts"),
            ("invalid_timeout", "timeout_ms"),
        ],
    );
}

#[test]
fn bounds_the_type_and_the_name() {
    check(
        json!({"name": "n".repeat(300), "tasks": [
            {"id": "a", "type": "t".repeat(129)}
        ]}),
        &[
            ("invalid_name", "300 characters"),
            ("invalid_type", "129 characters"),
        ],
    );
}

#[test]
fn names_the_cycle() {
    check(
        json!({"tasks": [
            {"id": "a", "type": "echo", "depends_on": ["c"]},
            {"id": "b", "type": "echo", "depends_on": ["a"]},
            {"id": "c", "type": "echo", "depends_on": ["b"]},
            {"id": "d", "type": "echo"}
        ]}),
        &[("cycle", "a -> c -> b -> a")],
    );
}

#[test]
fn templates_must_name_ancestors() {
    check(
        json!({"tasks": [
            {"id": "a", "type": "echo"},
            {"id": "b", "type": "echo", "input": "${a.output}"},
            {"id": "c", "type": "echo", "input": "${nope.output.x}"},
            {"id": "d", "type": "echo", "input": "${a.output"},
            {"id": "e", "type": "echo", "depends_on": ["d"], "input": {"k": "${d.output}", "j": "${workflow.nothing}"}}
        ]}),
        &[
            ("template_unknown_task", "`nope`"),
            ("invalid_template", "unterminated"),
            ("invalid_template", "only `workflow.input`"),
            ("template_not_ancestor", "`b` references the output of `a`"),
        ],
    );
}

#[test]
fn ancestry_is_checked_in_bounded_time() {
    // A chain of 20,000 tasks, each naming the root's output: one walk.
    let n = 20_000;
    let mut tasks = vec![json!({"id": "t0", "type": "echo"})];
    for i in 1..n {
        tasks.push(json!({"id": format!("t{i}"), "type": "echo",
            "depends_on": [format!("t{}", i - 1)], "input": "${t0.output}"}));
    }
    let limits = Limits::default();
    let body = json!({"tasks": tasks}).to_string();
    assert!(validate(body.as_bytes(), None, &limits, || "g".into()).is_ok());
    // Each naming its own far ancestor (half way down): 10,000 distinct
    // walks of up to 20,000 steps, past the bound, so refused.
    let mut tasks = vec![json!({"id": "t0", "type": "echo"})];
    for i in 1..n {
        tasks.push(json!({"id": format!("t{i}"), "type": "echo",
            "depends_on": [format!("t{}", i - 1)], "input": format!("${{t{}.output}}", i / 2)}));
    }
    let body = json!({"tasks": tasks}).to_string();
    let r = validate(body.as_bytes(), None, &limits, || "g".into()).unwrap_err();
    assert_eq!(r.errors[0].code, "too_complex", "{:?}", r.errors);
}

#[test]
fn transitive_ancestors_are_allowed() {
    run(json!({"tasks": [
        {"id": "a", "type": "echo"},
        {"id": "b", "type": "echo", "depends_on": ["a"]},
        {"id": "c", "type": "echo", "depends_on": ["b"], "input": "${a.output}"}
    ]}))
    .unwrap();
}

#[test]
fn a_request_with_thousands_of_faults_gets_a_bounded_answer() {
    let long = "x".repeat(4096);
    let body = json!({"tasks": [
        {"id": long, "type": "echo", "depends_on": vec!["a"; 5000]},
        {"id": "a", "type": "echo"}
    ]});
    let limits = Limits::default();
    let r = validate(body.to_string().as_bytes(), None, &limits, || "g".into()).unwrap_err();
    assert_eq!(r.errors.len(), MAX_REPORTED_ERRORS + 1);
    let last = r.errors.last().unwrap();
    assert_eq!(last.code, "too_many_errors");
    // 1 invalid id, 1 first use of `a`, 4,999 duplicates: 5,000 problems.
    assert!(
        last.message
            .starts_with(&format!("{} more", 5_000 - MAX_REPORTED_ERRORS)),
        "{}",
        last.message
    );
    for e in &r.errors {
        assert!(
            e.message.chars().count() < MAX_ECHO_CHARS + 40,
            "{}",
            e.message
        );
        if let Some(t) = &e.task {
            assert!(t.chars().count() < MAX_ID_LEN + 40, "{t}");
        }
    }
    assert_eq!(r.errors[0].code, "invalid_task_id");
    assert!(
        r.errors[0].message.contains("… (4"),
        "{}",
        r.errors[0].message
    );
}

#[test]
fn limits_and_syntax() {
    check(json!({"tasks": []}), &[("no_tasks", "no tasks")]);
    check(
        json!({"tasks": (0..6).map(|i| json!({"id": format!("t{i}"), "type": "echo"})).collect::<Vec<_>>()}),
        &[("too_many_tasks", "6 tasks; the limit is 5")],
    );
    check(
        json!({"input": [[[[[1]]]]], "tasks": [{"id": "a", "type": "echo", "input": {"a": {"b": {"c": {"d": {}}}}}}]}),
        &[
            ("input_too_deep", "workflow input"),
            ("input_too_deep", "task `a`"),
        ],
    );
    check(
        json!({"id": "has space", "tasks": [{"id": "a.b", "type": "echo"}]}),
        &[("invalid_id", "has space"), ("invalid_task_id", "a.b")],
    );
    check(
        json!({"tasks": [{"id": "a", "type": 5}]}),
        &[("invalid_request", "invalid type")],
    );
    check(
        json!({"tasks": [{"id": "a", "type": "echo"}], "extra": 1}),
        &[("invalid_request", "unknown field `extra`")],
    );
    check(
        json!({"name": "x"}),
        &[("invalid_request", "missing field `tasks`")],
    );
    // Durations: 2^63 would wrap a due time negative; 30 days is the
    // most any of them may say.
    let day_30 = MAX_DURATION_MS;
    check(
        json!({"tasks": [
            {"id": "a", "type": "echo", "timeout_ms": 9_223_372_036_854_775_808u64},
            {"id": "b", "type": "echo", "retry": {"backoff_ms": day_30 + 1, "max_backoff_ms": u64::MAX}},
            {"id": "c", "type": "echo", "duration_hint_ms": day_30 + 1},
            {"id": "d", "type": "echo", "timeout_ms": day_30, "duration_hint_ms": day_30,
             "retry": {"backoff_ms": day_30, "max_backoff_ms": 0}}
        ]}),
        &[
            ("invalid_timeout", "not 9223372036854775808"),
            (
                "invalid_backoff",
                "retry.backoff_ms must be 0..=2592000000, not 2592000001",
            ),
            ("invalid_backoff", "retry.max_backoff_ms"),
            ("invalid_duration_hint", "not 2592000001"),
        ],
    );

    let limits = Limits {
        max_body_bytes: 10,
        ..Limits::default()
    };
    let r = validate(
        br#"{"tasks": [{"id": "a", "type": "echo"}]}"#,
        Some("mid-1"),
        &limits,
        || "gen".into(),
    )
    .unwrap_err();
    assert_eq!(r.id, "mid-1");
    assert_eq!(r.errors[0].code, "body_too_large");

    let r = validate(b"{not json", None, &Limits::default(), || "gen".into()).unwrap_err();
    assert_eq!(r.id, "gen");
    assert!(
        r.errors[0].message.contains("line 1 column 2"),
        "{}",
        r.errors[0].message
    );

    let r = validate(
        br#"{"id": "keep-me", "tasks": 3}"#,
        None,
        &Limits::default(),
        || "gen".into(),
    )
    .unwrap_err();
    assert_eq!(
        r.id, "keep-me",
        "a rejection keeps the producer's id when it can be read"
    );
}

#[test]
fn times_and_deadlines_are_checked() {
    let task = json!([{"id": "a", "type": "echo"}]);
    check(
        json!({"expires_at": "tomorrow", "tasks": task}),
        &[(
            "invalid_time",
            "expires_at: `tomorrow` is not an RFC 3339 time",
        )],
    );
    check(
        json!({"expires_at": "x".repeat(1_000), "tasks": task}),
        &[("invalid_time", "longer than any RFC 3339 time")],
    );
    check(
        json!({"deadline_ms": 0, "tasks": task}),
        &[("invalid_deadline", "out of range 1..=")],
    );
    check(
        json!({"deadline_ms": 367u64 * 24 * 3600 * 1000, "tasks": task}),
        &[("invalid_deadline", "366 days")],
    );
    let v =
        run(json!({"expires_at": "2026-12-03T10:00:00+01:00", "deadline_ms": 5000, "tasks": task}))
            .unwrap();
    assert_eq!(
        v.expires_at.unwrap().to_rfc3339(),
        "2026-12-03T09:00:00+00:00",
        "any offset, kept in UTC"
    );
    assert_eq!(v.deadline_ms, Some(5000));
}

#[test]
fn conditions_and_trigger_rules_are_checked() {
    let accepted = run(json!({"on_failure": "handled", "tasks": [
        {"id": "a", "type": "echo"},
        {"id": "b", "type": "echo", "depends_on": ["a"], "when": "${a.output.ok} == true"},
        {"id": "c", "type": "echo", "depends_on": ["a"], "run_if": "any_failed"},
        {"id": "d", "type": "echo", "depends_on": ["b", "c"], "run_if": "all_done"}
    ]}));
    assert!(accepted.is_ok(), "{accepted:?}");
    check(
        json!({"tasks": [
            {"id": "a", "type": "echo"},
            {"id": "b", "type": "echo", "depends_on": ["a"], "when": "${a.output.n} < \"x\" &&"}
        ]}),
        &[("invalid_condition", "task `b`: `when`")],
    );
    check(
        json!({"tasks": [
            {"id": "a", "type": "echo"},
            {"id": "b", "type": "echo", "when": "${a.output.ok}"},
            {"id": "c", "type": "echo", "when": "${zz.output.ok}"}
        ]}),
        &[
            ("template_unknown_task", "`zz`"),
            (
                "template_not_ancestor",
                "task `b` references the output of `a`",
            ),
        ],
    );
    check(
        json!({"tasks": [{"id": "a", "type": "echo", "run_if": "any_failed"}]}),
        &[("invalid_run_if", "never run")],
    );
    check(
        json!({"tasks": [{"id": "a", "type": "echo", "run_if": "sometimes"}]}),
        &[("invalid_request", "unknown variant")],
    );
}

#[test]
fn maps_are_checked() {
    let accepted = run(json!({"tasks": [
        {"id": "list", "type": "echo"},
        {"id": "each", "type": "echo", "depends_on": ["list"], "map": "${list.output.files}",
         "input": {"f": "${item.name}", "i": "${index}"}},
        {"id": "all", "type": "echo", "depends_on": ["each"], "input": "${each.output}"}
    ]}));
    assert!(accepted.is_ok(), "{accepted:?}");
    check(
        json!({"tasks": [
            {"id": "a", "type": "echo"},
            {"id": "b", "type": "echo", "depends_on": ["a"], "map": "files: ${a.output}"}
        ]}),
        &[("invalid_map", "exactly one template")],
    );
    check(
        json!({"tasks": [{"id": "a", "type": "echo", "input": "${item}"}]}),
        &[("invalid_map", "for the input of a mapped task")],
    );
    check(
        json!({"tasks": [{"id": "a", "type": "echo", "map": "${index}"}]}),
        &[("invalid_map", "not `${item}`")],
    );
    check(
        json!({"tasks": [
            {"id": "a", "type": "echo"},
            {"id": "b", "type": "echo", "map": "${a.output}"}
        ]}),
        &[(
            "template_not_ancestor",
            "task `b` references the output of `a`",
        )],
    );
    check(
        json!({"tasks": [
            {"id": "a", "type": "echo", "map": "${workflow.input}", "when": "${item} == 1"}
        ]}),
        &[("invalid_condition", "before any instance")],
    );
}

#[test]
fn item_and_index_are_reserved_task_ids() {
    check(
        json!({"tasks": [{"id": "item", "type": "echo"}, {"id": "index", "type": "echo"}]}),
        &[
            ("invalid_task_id", "reserved"),
            ("invalid_task_id", "reserved"),
        ],
    );
}
