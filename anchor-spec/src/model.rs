//! The validated model of a tasks.yaml file.
//!
//! This is what the generator (and the runtime defaults it emits) is built from. A value of
//! these types only exists after validation succeeded, so every field here is known to be
//! well formed: names are unique identifiers, durations parsed, cron expressions valid,
//! `onFailed` targets exist and accept `{ taskID }`, and parameter schemas are mappable.

use std::time::Duration;

use anchor_core::RetryPolicy;

/// The default task timeout when `timeout` is not set.
pub const DEFAULT_TIMEOUT: Duration = anchor_core::DEFAULT_TIMEOUT;

/// The largest `maxRescues` a task may set. Its smallest is 1.
pub const MAX_RESCUES_LIMIT: u32 = 1000;

/// The queue of a task that sets no `queue`.
pub const DEFAULT_QUEUE: &str = "default";

/// The longest queue name, in characters: PostgreSQL's identifier length.
pub const MAX_QUEUE_NAME_LEN: usize = anchor_core::MAX_QUEUE_NAME_LEN;

/// The priority of a task that sets no `priority`: 0, the highest (runs first).
pub const DEFAULT_PRIORITY: i16 = 0;

/// The lowest `priority` a task may set (runs last).
pub const LOWEST_PRIORITY: i16 = anchor_core::LOWEST_PRIORITY;

/// A validated tasks.yaml file.
#[derive(Debug, Clone, PartialEq)]
pub struct Spec {
    /// The path the spec was read from, as the user named it (used in generated headers).
    pub source: String,
    /// The tasks, in the order the file declares them.
    pub tasks: Vec<Task>,
}

/// One validated task.
#[derive(Debug, Clone, PartialEq)]
pub struct Task {
    /// The name exactly as written in YAML (`deleteOpaqueKey`, `SendEmail`, ...). This is
    /// the name stored in the database and routed by workers.
    pub name: String,
    /// The `description`, if any.
    pub description: Option<String>,
    /// The task's parameters.
    pub parameters: Parameters,
    /// The retry policy; `None` means the task is never retried.
    pub retry_policy: Option<RetryPolicy>,
    /// The cron schedule, if the task is a cron job.
    pub cron: Option<CronJob>,
    /// The name of the task enqueued when this one fails permanently.
    pub on_failed: Option<String>,
    /// The execution timeout (default one hour).
    pub timeout: Duration,
    /// `maxRescues`: how many times the task's worker may be lost while its run had started
    /// before the task fails as poison (1 to [`MAX_RESCUES_LIMIT`]); `None` leaves it to the
    /// worker's default.
    pub max_rescues: Option<u32>,
    /// `queue`: the queue the task runs in ([`DEFAULT_QUEUE`] unless set); 1 to
    /// [`MAX_QUEUE_NAME_LEN`] lowercase ASCII letters, digits, `_` and `-`, starting with a
    /// letter.
    pub queue: String,
    /// `priority`: 0 ([`DEFAULT_PRIORITY`], runs first) to [`LOWEST_PRIORITY`]; FIFO among
    /// equal priorities.
    pub priority: i16,
    /// True when some task names this one in `events.onFailed`.
    pub is_failure_handler: bool,
}

/// Where a task's parameter schema came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParametersSource {
    /// Declared in YAML under `parameters`.
    Declared,
    /// Not declared, and the task is an `onFailed` target: the default `{ taskID: int64 }`.
    DefaultFailureHandler,
    /// Not declared and not a failure handler: an empty object.
    Empty,
}

/// A task's parameters: a JSON Schema of `type: object`.
#[derive(Debug, Clone, PartialEq)]
pub struct Parameters {
    /// Where the schema came from.
    pub source: ParametersSource,
    /// The JSON Schema (always `type: object`), ready for typify. For
    /// `DefaultFailureHandler` this is the synthesised `{ taskID: integer/int64 }` schema.
    pub schema: serde_json::Value,
    /// The `default` of each top-level property that declares one, in declaration order.
    pub defaults: serde_json::Map<String, serde_json::Value>,
    /// True when every required top-level property has a `default`, so a payload can be
    /// built without the caller (cron tasks scheduled at worker start need this).
    pub all_defaultable: bool,
}

/// A validated `cronjob` block.
#[derive(Debug, Clone, PartialEq)]
pub struct CronJob {
    /// The expression as written (5 fields, or 6 with seconds first).
    pub expression: String,
    /// The IANA time zone name, when `cronjob.timezone` is set; UTC otherwise.
    pub timezone: Option<String>,
}
