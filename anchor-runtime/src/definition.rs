//! The static table of task defaults that generated code hands to the runtime.

/// A task's defaults from tasks.yaml, as `anchor generate` emits them (one `const` per task).
///
/// Every field is plain static data so the table is a `const` in generated code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TaskDefinition {
    /// The task name as written in YAML; stored in the database and used for routing.
    pub name: &'static str,
    /// The retry policy, or `None` for "never retried".
    pub retry: Option<RetryDefaults>,
    /// The execution timeout in milliseconds.
    pub timeout_ms: u64,
    /// The cron schedule, for cron tasks.
    pub cron: Option<CronDefaults>,
    /// The task enqueued with `{ taskID }` when this one fails permanently.
    pub on_failed: Option<&'static str>,
    /// The schema's top-level `default` values as a JSON object (`"{}"` when none). The
    /// runtime merges them under the `{ taskID }` of an `onFailed` handler's payload.
    pub default_params: &'static str,
    /// The bound on rescues from lost workers (workers that died or lost the database while
    /// holding the task): the task fails as poison when its worker is lost while its run had
    /// started and that brings its `rescues` to this number; `None` uses the worker's
    /// `WorkerConfig::max_rescues` (default 5). From tasks.yaml `maxRescues`.
    pub max_rescues: Option<u32>,
    /// The queue the task runs in ([`DEFAULT_QUEUE`] unless tasks.yaml sets `queue`).
    pub queue: &'static str,
    /// Its priority within the queue, 0 (the default, runs first) to 9 (last), as in Oban;
    /// FIFO among equal priorities. From tasks.yaml `priority`.
    pub priority: i16,
}

/// The queue of a task whose definition names none.
pub const DEFAULT_QUEUE: &str = "default";

/// The lowest priority (runs last); 0 is the highest and the default.
pub const LOWEST_PRIORITY: i16 = anchor_core::LOWEST_PRIORITY;

/// Ties a parameter type to its task: `anchor generate` implements it for every task's
/// parameter struct, with the task's generated definition. Calls that take the definition
/// from the type ([`Registry::handle`](crate::Registry::handle),
/// [`Client::enqueue_params`](crate::Client::enqueue_params) and the generated
/// `TaskRunner`) cannot pair parameters with another task's definition.
pub trait TaskParameters: serde::Serialize + serde::de::DeserializeOwned + Send + 'static {
    /// The definition of the task these are the parameters of.
    const DEFINITION: &'static TaskDefinition;
}

/// A retry policy as static data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryDefaults {
    /// The waits before the 1st, 2nd, ... retry in milliseconds; the last repeats. Not empty.
    pub intervals_ms: &'static [u64],
    /// `always_retry_on_failure`.
    pub always_retry_on_failure: bool,
    /// `max_retries`, when set.
    pub max_retries: Option<u32>,
}

/// A cron schedule as static data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CronDefaults {
    /// The cron expression (5 fields, or 6 with seconds first).
    pub expression: &'static str,
    /// The IANA time zone, or `None` for UTC.
    pub timezone: Option<&'static str>,
    /// The payload a schedule registered at worker start uses (a JSON object of the schema
    /// defaults), or `None` when some required parameter has no default — then the task is
    /// scheduled only once code calls `run_…` with parameters.
    pub default_params: Option<&'static str>,
}

impl RetryDefaults {
    /// Converts to the policy type the runtime computes with.
    pub fn to_policy(&self) -> anchor_core::RetryPolicy {
        anchor_core::RetryPolicy {
            intervals: self
                .intervals_ms
                .iter()
                .map(|ms| std::time::Duration::from_millis(*ms))
                .collect(),
            always_retry_on_failure: self.always_retry_on_failure,
            max_retries: self.max_retries,
        }
    }
}
