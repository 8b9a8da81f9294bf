//! Built-in handlers for demos and tests. None of them runs a command or
//! touches the network.
//!
//! - `echo`: output = input.
//! - `sleep`: input `{"ms": N}`; waits N ms, output `{"slept_ms": N}`.
//! - `fail`: input `{"message": "...", "times": N, "retryable": true}`;
//!   fails while the attempt is at most `times` (always when `times` is
//!   absent), then succeeds with `{"attempt": n}`.

use crate::handler::{HandlerError, Registry, TaskContext};
use serde_json::{Value, json};
use std::time::Duration;

/// Registers `echo`, `sleep` and `fail`.
pub fn register(r: &mut Registry) {
    r.register("echo", |ctx: TaskContext| async move { Ok(ctx.input) });
    r.register("sleep", sleep);
    r.register("fail", fail);
}

impl Registry {
    /// A registry holding the built-ins `echo`, `sleep` and `fail`.
    ///
    /// Defined here rather than in `handler`, so that the built-ins depend
    /// on the registry and not the other way round.
    pub fn with_builtins() -> Registry {
        let mut r = Registry::new();
        register(&mut r);
        r
    }
}

async fn sleep(ctx: TaskContext) -> Result<Value, HandlerError> {
    let ms = ctx
        .input
        .get("ms")
        .and_then(Value::as_u64)
        .ok_or_else(|| HandlerError::fatal(r#"sleep needs an input of the form {"ms": N}"#))?;
    tokio::time::sleep(Duration::from_millis(ms)).await;
    Ok(json!({ "slept_ms": ms }))
}

async fn fail(ctx: TaskContext) -> Result<Value, HandlerError> {
    let input = &ctx.input;
    let times = input.get("times").and_then(Value::as_u64);
    if times.is_some_and(|t| u64::from(ctx.attempt) > t) {
        return Ok(json!({ "attempt": ctx.attempt }));
    }
    let message = input
        .get("message")
        .and_then(Value::as_str)
        .unwrap_or("failed on purpose")
        .to_owned();
    let retryable = input
        .get("retryable")
        .and_then(Value::as_bool)
        .unwrap_or(true);
    Err(HandlerError { message, retryable })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(kind: &str, attempt: u32, input: Value) -> TaskContext {
        TaskContext {
            workflow_id: "w".into(),
            task_id: "t".into(),
            attempt,
            max_attempts: 3,
            kind: kind.into(),
            input,
        }
    }

    async fn call(kind: &str, attempt: u32, input: Value) -> Result<Value, HandlerError> {
        let r = Registry::with_builtins();
        (r.get(kind).unwrap())(ctx(kind, attempt, input)).await
    }

    #[tokio::test]
    async fn builtins_behave_as_documented() {
        assert_eq!(
            call("echo", 1, json!({"a": [1]})).await,
            Ok(json!({"a": [1]}))
        );
        assert_eq!(
            call("sleep", 1, json!({"ms": 1})).await,
            Ok(json!({"slept_ms": 1}))
        );
        assert!(!call("sleep", 1, json!({})).await.unwrap_err().retryable);
        let e = call("fail", 2, json!({"times": 2, "message": "nope"}))
            .await
            .unwrap_err();
        assert_eq!(e, HandlerError::retryable("nope"));
        assert_eq!(
            call("fail", 3, json!({"times": 2})).await,
            Ok(json!({"attempt": 3}))
        );
        assert!(
            !call("fail", 9, json!({"retryable": false}))
                .await
                .unwrap_err()
                .retryable
        );
        assert_eq!(
            Registry::with_builtins().kinds(),
            vec!["echo", "fail", "sleep"]
        );
    }
}
