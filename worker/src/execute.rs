//! Running one delivery: decode the task, skip it if its workflow was
//! cancelled, look up its handler, run it with the task's timeout (a panic
//! becomes a failed result), and answer with the result.
//!
//! Each delivery runs in a tokio task of its own ([`execute`]). A
//! redelivered task goes to `poison` instead of running; a suspect (from
//! the suspect queue) waits until it can run alone. When the session's
//! grace period is over the task is abandoned: dropped without a result or
//! an ack, so the broker redelivers it.

use crate::{
    cancel::Cancels,
    handler::{HandlerError, Registry, TaskContext},
    poison,
    publish::{Publisher, Received, Source},
};
use chrono::Utc;
use futures_lite::FutureExt;
use serde_json::Value;
use std::{sync::Arc, time::Duration};
use tokio_util::sync::CancellationToken;
use warren_shared::wire::{ResultStatus, TaskError, TaskMessage, TaskResult};

/// What every in-flight task of one session shares.
pub(crate) struct Executor {
    pub publisher: Publisher,
    pub cancels: Arc<Cancels>,
    pub registry: Arc<Registry>,
    pub worker_id: String,
    pub max_deliveries: u32,
    /// Ordinary tasks hold it shared, suspect tasks exclusively: a suspect
    /// runs alone in this process, so a crash while it runs is its own.
    pub exclusive: tokio::sync::RwLock<()>,
    /// Cancelled when the shutdown grace period is over: tasks still
    /// running stop without publishing or acking, and are redelivered.
    pub abandon: CancellationToken,
}

/// A held turn to run (kept for its drop).
#[allow(dead_code)]
enum Turn<'a> {
    Shared(tokio::sync::RwLockReadGuard<'a, ()>),
    Alone(tokio::sync::RwLockWriteGuard<'a, ()>),
}

/// Handles one delivery to its end: run and answered, moved to the suspect
/// queue, or abandoned.
pub(crate) async fn execute(ex: Arc<Executor>, r: Received) {
    let abandon = ex.abandon.clone();
    let work = async {
        if r.delivery.redelivered
            && let Ok(msg) = serde_json::from_slice::<TaskMessage>(&r.delivery.data)
        {
            // A shared turn while it moves: its suspect copy, which runs
            // alone, cannot start in this process before this delivery's
            // ack is sent (a crash in between would bring back both).
            let _turn = ex.exclusive.read().await;
            return poison::suspect(&ex.publisher, &ex.worker_id, ex.max_deliveries, &r, msg).await;
        }
        // Ordinary tasks run side by side; a suspect waits until it can
        // run alone (and ordinary tasks wait while it runs).
        let _turn = match r.source {
            Source::Tasks => Turn::Shared(ex.exclusive.read().await),
            Source::Suspect => Turn::Alone(ex.exclusive.write().await),
        };
        run_task(&ex, &r).await;
    };
    tokio::select! {
        () = work => {}
        // Dropping the delivery unacked: it is requeued when the channel closes.
        () = abandon.cancelled() => {}
    }
}

/// The ids (and token) of a task body that did not decode as a whole:
/// enough to answer its attempt with a failed result.
fn readable_ids(body: &[u8]) -> Option<TaskMessage> {
    let v: Value = serde_json::from_slice(body).ok()?;
    Some(TaskMessage {
        workflow_id: v.get("workflow_id")?.as_str()?.to_owned(),
        task_id: v.get("task_id")?.as_str()?.to_owned(),
        attempt: u32::try_from(v.get("attempt")?.as_u64()?).ok()?,
        kind: String::new(),
        input: Value::Null,
        timeout_ms: None,
        max_attempts: 1,
        token: v
            .get("token")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned(),
        run: v
            .get("run")
            .and_then(Value::as_u64)
            .and_then(|r| u32::try_from(r).ok())
            .unwrap_or(1),
    })
}

async fn run_task(ex: &Executor, r: &Received) {
    let started_at = Utc::now();
    let mut msg: TaskMessage = match serde_json::from_slice(&r.delivery.data) {
        Ok(m) => m,
        Err(e) => {
            let reason = format!("undecodable task message: {e}");
            match readable_ids(&r.delivery.data) {
                Some(ids) => {
                    tracing::warn!(workflow = %ids.workflow_id, task = %ids.task_id, %reason, "Failing undecodable task");
                    let result = TaskResult {
                        error: Some(TaskError {
                            message: reason,
                            retryable: false,
                        }),
                        started_at: Some(started_at),
                        finished_at: Some(Utc::now()),
                        ..ids.result(ResultStatus::Failed, &ex.worker_id)
                    };
                    ex.publisher.result(r, &result).await;
                }
                None => ex.publisher.dead_letter(r, &reason).await,
            }
            return;
        }
    };
    let Some(entered) = ex.cancels.enter(&msg.workflow_id, msg.run) else {
        tracing::info!(workflow = %msg.workflow_id, task = %msg.task_id, "Task of a cancelled workflow dropped");
        ex.publisher.ack(r).await;
        return;
    };
    let outcome = match ex.registry.get(&msg.kind) {
        None => Err(HandlerError::fatal(format!(
            "no handler for task type `{}` on worker {} (it handles: {})",
            msg.kind,
            ex.worker_id,
            ex.registry.kinds().join(", ")
        ))),
        Some(handler) => {
            let ctx = TaskContext {
                workflow_id: msg.workflow_id.clone(),
                task_id: msg.task_id.clone(),
                attempt: msg.attempt,
                max_attempts: msg.max_attempts,
                kind: msg.kind.clone(),
                input: std::mem::take(&mut msg.input),
            };
            // A panic in the handler becomes a failed result, not a dead
            // worker (this already runs in a task of its own).
            let run = std::panic::AssertUnwindSafe(handler(ctx)).catch_unwind();
            let timed = async {
                match msg.timeout_ms {
                    Some(ms) => match tokio::time::timeout(Duration::from_millis(ms), run).await {
                        Ok(c) => c,
                        // Dropping the handler's future cancels it.
                        Err(_) => Ok(Err(HandlerError::retryable(format!(
                            "timed out after {ms} ms"
                        )))),
                    },
                    None => run.await,
                }
            };
            let caught = tokio::select! {
                c = timed => c,
                () = entered.token.cancelled() => {
                    // The workflow has ended: no result is wanted.
                    tracing::info!(workflow = %msg.workflow_id, task = %msg.task_id, "Task stopped: its workflow was cancelled");
                    ex.publisher.ack(r).await;
                    return;
                }
            };
            caught.unwrap_or_else(|panic| {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "non-string panic".into());
                Err(HandlerError::retryable(format!("handler panicked: {what}")))
            })
        }
    };
    let (status, output, error) = match outcome {
        Ok(v) => (ResultStatus::Succeeded, Some(v), None),
        Err(e) => {
            tracing::info!(workflow = %msg.workflow_id, task = %msg.task_id, attempt = msg.attempt, error = %e.message, "Task failed");
            (
                ResultStatus::Failed,
                None,
                Some(TaskError {
                    message: e.message,
                    retryable: e.retryable,
                }),
            )
        }
    };
    let result = TaskResult {
        output,
        error,
        started_at: Some(started_at),
        finished_at: Some(Utc::now()),
        ..msg.result(status, &ex.worker_id)
    };
    ex.publisher.result(r, &result).await;
}
