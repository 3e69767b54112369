//! Per-enqueue overrides of a task's YAML defaults.

use std::time::Duration;

use chrono::{DateTime, Utc};

/// Changes one of a task's defaults for a single enqueue (`WithRetryPolicy`, `WithTimeout`, `WithUniqueTag`, … in other task queues).
///
/// Constructors never fail; the values are checked when the task is enqueued, and an
/// invalid one is an [`Error`](crate::Error) of kind
/// [`ErrorKind::InvalidOverride`](crate::ErrorKind::InvalidOverride) before anything is written.
///
/// ```
/// use std::time::Duration;
/// use anchor_runtime::{RetryPolicy, TaskOverride};
/// let hourly = RetryPolicy::parse("1h", true).expect("a valid interval list");
/// let overrides = [
///     TaskOverride::retry_policy(hourly),
///     TaskOverride::timeout(Duration::from_secs(30 * 60)),
///     TaskOverride::unique_tag("user-123-daily-task"),
/// ];
/// assert_eq!(overrides.len(), 3);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct TaskOverride(pub(crate) OverrideKind);

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum OverrideKind {
    RetryPolicy(anchor_core::RetryPolicy),
    MaxRetries(u32),
    Timeout(Duration),
    UniqueTag(String),
    Due(DueOverride),
    Queue(String),
    Priority(i16),
}

/// The one due-time setting, as [`TaskOverride::run_after`] or [`TaskOverride::run_at`]
/// gives it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum DueOverride {
    After(Duration),
    At(DateTime<Utc>),
}

impl TaskOverride {
    /// Replaces the retry policy's intervals and `always_retry_on_failure` with `policy`'s
    /// (build it once, e.g. with [`RetryPolicy::parse`](crate::RetryPolicy::parse)). Its
    /// `max_retries`, when set, replaces the YAML `max_retries`; when not set (as from
    /// `parse`), the YAML's is kept, unless [`TaskOverride::max_retries`] is given too.
    pub fn retry_policy(policy: anchor_core::RetryPolicy) -> Self {
        TaskOverride(OverrideKind::RetryPolicy(policy))
    }

    /// Allows at most `n` retries.
    pub fn max_retries(n: u32) -> Self {
        TaskOverride(OverrideKind::MaxRetries(n))
    }

    /// Replaces the execution timeout. Must be longer than zero.
    pub fn timeout(timeout: Duration) -> Self {
        TaskOverride(OverrideKind::Timeout(timeout))
    }

    /// At most one task with this tag exists among tasks that are not cancelled; enqueuing
    /// the tag again returns the existing task's id and writes nothing.
    pub fn unique_tag(tag: impl Into<String>) -> Self {
        TaskOverride(OverrideKind::UniqueTag(tag.into()))
    }

    /// Runs the task no earlier than `delay` from now. This and [`TaskOverride::run_at`]
    /// set one setting, the task's due time: given both, the last one wins.
    pub fn run_after(delay: Duration) -> Self {
        TaskOverride(OverrideKind::Due(DueOverride::After(delay)))
    }

    /// Runs the task no earlier than `at`. This and [`TaskOverride::run_after`] set one
    /// setting, the task's due time: given both, the last one wins.
    pub fn run_at(at: DateTime<Utc>) -> Self {
        TaskOverride(OverrideKind::Due(DueOverride::At(at)))
    }

    /// Runs the task in `queue` instead of its definition's (a queue name is 1 to 63
    /// lowercase ASCII letters, digits, `_` and `-`, starting with a letter). Only workers
    /// that serve that queue and have a handler for the task run it.
    pub fn queue(queue: impl Into<String>) -> Self {
        TaskOverride(OverrideKind::Queue(queue.into()))
    }

    /// Runs the task at `priority` instead of its definition's: 0 runs first,
    /// [`LOWEST_PRIORITY`](crate::LOWEST_PRIORITY) (9) last; FIFO among equals.
    pub fn priority(priority: i16) -> Self {
        TaskOverride(OverrideKind::Priority(priority))
    }
}
