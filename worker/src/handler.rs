//! Handlers: async functions from a task's context to its output.

use serde_json::Value;
use std::{collections::HashMap, future::Future, pin::Pin, sync::Arc};

/// What a handler gets for one attempt of a task.
#[derive(Debug, Clone)]
pub struct TaskContext {
    pub workflow_id: String,
    pub task_id: String,
    /// 1 for the first attempt.
    pub attempt: u32,
    /// Attempts the scheduler will make in all.
    pub max_attempts: u32,
    /// The task type this handler was registered for.
    pub kind: String,
    /// The input, templates already substituted.
    pub input: Value,
}

/// A failed attempt. `retryable` says whether another attempt may help;
/// the scheduler retries only when the task's policy has attempts left.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct HandlerError {
    pub message: String,
    pub retryable: bool,
}

impl HandlerError {
    /// A failure another attempt may cure (timeouts, unavailable services).
    pub fn retryable(message: impl Into<String>) -> HandlerError {
        HandlerError {
            message: message.into(),
            retryable: true,
        }
    }

    /// A failure no retry will cure (bad input): the task fails now.
    pub fn fatal(message: impl Into<String>) -> HandlerError {
        HandlerError {
            message: message.into(),
            retryable: false,
        }
    }
}

/// The boxed future a handler returns.
pub type HandlerFuture = Pin<Box<dyn Future<Output = Result<Value, HandlerError>> + Send>>;
type HandlerFn = Arc<dyn Fn(TaskContext) -> HandlerFuture + Send + Sync>;

/// Handlers by task type.
#[derive(Clone, Default)]
pub struct Registry {
    handlers: HashMap<String, HandlerFn>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.handlers.keys()).finish()
    }
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Registry {
        Registry::default()
    }

    /// Registers `handler` for tasks of type `kind`, replacing any other.
    pub fn register<F, Fut>(&mut self, kind: impl Into<String>, handler: F) -> &mut Registry
    where
        F: Fn(TaskContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Value, HandlerError>> + Send + 'static,
    {
        self.handlers
            .insert(kind.into(), Arc::new(move |ctx| Box::pin(handler(ctx))));
        self
    }

    /// The handler for `kind`, if one is registered.
    pub fn get(&self, kind: &str) -> Option<HandlerFn> {
        self.handlers.get(kind).cloned()
    }

    /// Registered task types, sorted.
    pub fn kinds(&self) -> Vec<&str> {
        let mut k: Vec<&str> = self.handlers.keys().map(String::as_str).collect();
        k.sort_unstable();
        k
    }
}
