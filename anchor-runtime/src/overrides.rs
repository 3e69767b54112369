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
/// use anchor_runtime::TaskOverride;
/// let overrides = [
///     TaskOverride::retry_policy("1h", true),
///     TaskOverride::timeout(Duration::from_secs(30 * 60)),
///     TaskOverride::unique_tag("user-123-daily-task"),
/// ];
/// assert_eq!(overrides.len(), 3);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct TaskOverride(pub(crate) OverrideKind);

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum OverrideKind {
    RetryPolicy {
        interval: String,
        always_retry: bool,
    },
    MaxRetries(u32),
    Timeout(Duration),
    UniqueTag(String),
    RunAfter(Duration),
    RunAt(DateTime<Utc>),
}

impl TaskOverride {
    /// Replaces the retry policy: `interval` is one duration (`"30m"`) or a comma list
    /// (`"1m,2m,4m"`); `always_retry` is `always_retry_on_failure`. The YAML `max_retries`
    /// is kept unless [`TaskOverride::max_retries`] is given too.
    pub fn retry_policy(interval: impl Into<String>, always_retry: bool) -> Self {
        TaskOverride(OverrideKind::RetryPolicy {
            interval: interval.into(),
            always_retry,
        })
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

    /// Runs the task no earlier than `delay` from now.
    pub fn run_after(delay: Duration) -> Self {
        TaskOverride(OverrideKind::RunAfter(delay))
    }

    /// Runs the task no earlier than `at`.
    pub fn run_at(at: DateTime<Utc>) -> Self {
        TaskOverride(OverrideKind::RunAt(at))
    }
}
