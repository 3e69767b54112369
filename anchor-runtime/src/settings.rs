//! [`TaskSettings`]: a task's settings (timeout, retry policy, failure handler, rescue
//! bound, queue and priority), one value from the enqueue through the row to the worker and back to
//! inspection; and [`NewTask`], a task to insert, once its definition's defaults and the
//! enqueue's overrides are merged and checked (`enqueue::resolve`).

use std::time::Duration;

use anchor_core::RetryPolicy;
use chrono::{DateTime, Utc};

use crate::definition::TaskDefinition;
use crate::task::TaskId;

/// A task's settings: what its definition in tasks.yaml and the enqueue's overrides
/// decided, stored with its row. The same value is what an enqueue writes, what a worker
/// runs the task with and what [`Client::get_task`](crate::Client::get_task) reads back.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TaskSettings {
    /// How long one run may take before it is stopped and counted as failed.
    pub timeout: Duration,
    /// The retry policy (`None`: a failed run is final).
    pub retry: Option<RetryPolicy>,
    /// The task enqueued (with `{ taskID }`) when this one fails for good.
    pub on_failed: Option<String>,
    /// The task's own bound on lost-worker rescues (`maxRescues`); `None` leaves it to the
    /// rescuing worker's `WorkerConfig::max_rescues`.
    pub max_rescues: Option<u32>,
    /// The queue it runs in ([`DEFAULT_QUEUE`](crate::DEFAULT_QUEUE) unless tasks.yaml or
    /// [`TaskOverride::queue`](crate::TaskOverride::queue) names another).
    pub queue: String,
    /// Its priority in the queue: 0 (the default) runs first, 9 last; FIFO among equals.
    pub priority: i16,
}

impl TaskSettings {
    /// The settings of a task nothing is known about (an `onFailed` handler no worker has
    /// described yet): the default timeout, no retry policy, no handler of its own.
    pub(crate) fn unknown() -> TaskSettings {
        TaskSettings {
            timeout: anchor_core::DEFAULT_TIMEOUT,
            retry: None,
            on_failed: None,
            max_rescues: None,
            queue: crate::DEFAULT_QUEUE.to_string(),
            priority: 0,
        }
    }

    /// The settings a definition gives before any override.
    pub(crate) fn of_definition(def: &TaskDefinition) -> TaskSettings {
        TaskSettings {
            timeout: Duration::from_millis(def.timeout_ms),
            retry: def.retry.as_ref().map(|r| RetryPolicy {
                intervals: r
                    .intervals_ms
                    .iter()
                    .map(|ms| Duration::from_millis(*ms))
                    .collect(),
                always_retry_on_failure: r.always_retry_on_failure,
                max_retries: r.max_retries,
            }),
            on_failed: def.on_failed.map(str::to_string),
            max_rescues: def.max_rescues.map(|n| n.max(1)),
            queue: def.queue.to_string(),
            priority: def.priority.clamp(0, crate::LOWEST_PRIORITY),
        }
    }
}

/// When a new task becomes due: one setting, whichever of `run_after` and `run_at` set it
/// (the last one given wins, like any override given twice).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum Due {
    /// At once (the default).
    #[default]
    Now,
    /// This many milliseconds after the insert (by the database's clock).
    AfterMs(i64),
    /// At this time.
    At(DateTime<Utc>),
}

impl Due {
    /// As the insert takes it: a time, or a delay from the database's `now()`.
    pub(crate) fn columns(self) -> (Option<DateTime<Utc>>, i64) {
        match self {
            Due::Now => (None, 0),
            Due::AfterMs(ms) => (None, ms),
            Due::At(at) => (Some(at), 0),
        }
    }
}

/// A task to insert: its name, due time and settings after defaults and overrides are
/// merged and checked, and what ties it to others.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct NewTask {
    pub name: String,
    pub due: Due,
    pub settings: TaskSettings,
    pub unique_tag: Option<String>,
    pub parent_id: Option<TaskId>,
}

impl NewTask {
    /// Whether the task is due now, so waking the workers is worth it.
    pub(crate) fn due_now(&self) -> bool {
        match self.due {
            Due::Now => true,
            Due::AfterMs(ms) => ms == 0,
            Due::At(at) => at <= Utc::now(),
        }
    }
}
