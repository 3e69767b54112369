//! [`Registry`]: which task names this worker runs, with which handler and definition.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use serde::de::DeserializeOwned;

use crate::definition::TaskDefinition;
use crate::task::{TaskContext, TaskError};

/// A handler's future, boxed so handlers of different parameter types share one table.
pub(crate) type TaskFuture = Pin<Box<dyn Future<Output = Result<(), TaskError>> + Send>>;

/// Decodes a payload (JSON text) into the handler's parameters and starts the handler.
pub(crate) type Handler =
    dyn Fn(TaskContext, &str) -> Result<TaskFuture, serde_json::Error> + Send + Sync;

/// Routes task names to handlers and keeps every known [`TaskDefinition`].
///
/// Generated code fills it with its `register` function; a worker claims only the names
/// registered here, so tasks it cannot run stay for workers that can.
///
/// ```
/// use anchor_runtime::{Registry, TaskContext, TaskDefinition, TaskError};
///
/// static PING: TaskDefinition = TaskDefinition {
///     name: "Ping",
///     retry: None,
///     timeout_ms: 60_000,
///     cron: None,
///     on_failed: None,
///     default_params: "{}",
///     max_rescues: None,
///     queue: "default",
///     priority: 0,
/// };
///
/// let mut registry = Registry::new();
/// registry.register(&PING, |_ctx: TaskContext, _params: serde_json::Value| async {
///     Ok::<(), TaskError>(())
/// });
/// assert_eq!(registry.task_names(), vec!["Ping"]);
/// ```
#[derive(Default, Clone)]
pub struct Registry {
    handlers: BTreeMap<&'static str, Arc<Handler>>,
    definitions: BTreeMap<&'static str, &'static TaskDefinition>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("handlers", &self.handlers.keys().collect::<Vec<_>>())
            .field("definitions", &self.definitions.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Registry {
        Registry::default()
    }

    /// Routes `def.name` to `handler`, which receives the payload decoded into `P`.
    /// Registering a name again replaces its handler.
    pub fn register<P, F, Fut>(&mut self, def: &'static TaskDefinition, handler: F)
    where
        P: DeserializeOwned + Send + 'static,
        F: Fn(TaskContext, P) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), TaskError>> + Send + 'static,
    {
        let erased =
            move |ctx: TaskContext, payload: &str| -> Result<TaskFuture, serde_json::Error> {
                let params: P = serde_json::from_str(payload)?;
                Ok(Box::pin(handler(ctx, params)))
            };
        self.handlers.insert(def.name, Arc::new(erased));
        self.definitions.insert(def.name, def);
    }

    /// Registers `handler` for the task whose parameters are `P`, with `P`'s definition
    /// (see [`TaskParameters`](crate::TaskParameters)): the pairing of handler, parameter
    /// type and definition is fixed by the type, usually inferred from the closure.
    pub fn handle<P, F, Fut>(&mut self, handler: F)
    where
        P: crate::TaskParameters,
        F: Fn(TaskContext, P) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), TaskError>> + Send + 'static,
    {
        self.register(P::DEFINITION, handler);
    }

    /// Makes a definition known without a handler, e.g. an `onFailed` handler that other
    /// workers run: when a task fails here, its handler is enqueued with this definition's
    /// retry policy, timeout and default parameters.
    pub fn define(&mut self, def: &'static TaskDefinition) {
        self.definitions.entry(def.name).or_insert(def);
    }

    /// The task names this registry has handlers for, sorted.
    pub fn task_names(&self) -> Vec<&'static str> {
        self.handlers.keys().copied().collect()
    }

    /// The definition of a known task.
    pub fn definition(&self, name: &str) -> Option<&'static TaskDefinition> {
        self.definitions.get(name).copied()
    }

    /// Every known definition (with or without a handler), sorted by name.
    pub fn definitions(&self) -> impl Iterator<Item = &'static TaskDefinition> + '_ {
        self.definitions.values().copied()
    }

    pub(crate) fn handler(&self, name: &str) -> Option<Arc<Handler>> {
        self.handlers.get(name).cloned()
    }
}
