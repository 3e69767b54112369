//! [`NewTask`]: a task's settings once its definition's defaults and the enqueue's overrides
//! are merged and checked (`enqueue::resolve`), as the insert, local dispatch and the
//! `onFailed` handler insert take them.

use std::time::Duration;

use anchor_core::RetryPolicy;
use chrono::{DateTime, Utc};

use crate::definition::RetryDefaults;
use crate::task::TaskId;

/// A task's retry policy as its row stores it: `retry_intervals_ms` (`None`: no policy),
/// `retry_always`, `max_retries`. The one conversion between the definition's
/// [`RetryDefaults`], the columns and the [`RetryPolicy`] the worker decides with.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct RetryColumns {
    pub intervals_ms: Option<Vec<i64>>,
    pub always: bool,
    pub max_retries: Option<i32>,
}

impl RetryColumns {
    /// The columns for a definition's policy. `None` when `max_retries` does not fit the
    /// column (no definition `anchor validate` accepts comes near it).
    pub(crate) fn from_defaults(retry: Option<&RetryDefaults>) -> Option<RetryColumns> {
        let Some(retry) = retry else {
            return Some(RetryColumns::default());
        };
        let max_retries = match retry.max_retries {
            Some(n) => Some(i32::try_from(n).ok()?),
            None => None,
        };
        Some(RetryColumns {
            intervals_ms: Some(
                retry
                    .intervals_ms
                    .iter()
                    .map(|ms| i64::try_from(*ms).unwrap_or(i64::MAX))
                    .collect(),
            ),
            always: retry.always_retry_on_failure,
            max_retries,
        })
    }

    /// The policy to decide retries with (`None`: the task has none). Values edited by
    /// hand out of range read as the nearest valid ones (a negative interval as zero).
    pub(crate) fn policy(&self) -> Option<RetryPolicy> {
        self.intervals_ms.as_ref().map(|ms| RetryPolicy {
            intervals: ms
                .iter()
                .map(|v| Duration::from_millis(u64::try_from(*v).unwrap_or(0)))
                .collect(),
            always_retry_on_failure: self.always,
            max_retries: self.max_retries.map(|n| u32::try_from(n).unwrap_or(0)),
        })
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

/// A task's settings after defaults and overrides are merged and checked.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct NewTask {
    pub name: String,
    pub due: Due,
    pub timeout_ms: i64,
    pub retry: RetryColumns,
    pub on_failed: Option<String>,
    pub unique_tag: Option<String>,
    pub parent_id: Option<TaskId>,
    /// The definition's `maxRescues`; `None` leaves it to the rescuing worker's default.
    pub max_rescues: Option<i32>,
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
