//! [`NewTask`]: a task's settings once its definition's defaults and the enqueue's overrides
//! are merged and checked (`enqueue::resolve`), as the insert, local dispatch and the
//! `onFailed` handler insert take them.

use chrono::{DateTime, Utc};

use crate::task::TaskId;

/// A task's settings after defaults and overrides are merged and checked.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct NewTask {
    pub name: String,
    pub run_at: Option<DateTime<Utc>>,
    pub delay_ms: i64,
    pub timeout_ms: i64,
    pub retry_intervals_ms: Option<Vec<i64>>,
    pub retry_always: bool,
    pub max_retries: Option<i32>,
    pub on_failed: Option<String>,
    pub unique_tag: Option<String>,
    pub parent_id: Option<TaskId>,
    /// The definition's `maxRescues`; `None` leaves it to the rescuing worker's default.
    pub max_rescues: Option<i32>,
}

impl NewTask {
    /// Whether the task is due now, so waking the workers is worth it.
    pub(crate) fn due_now(&self) -> bool {
        self.delay_ms == 0 && self.run_at.is_none_or(|at| at <= Utc::now())
    }
}
