//! [`ClaimedTask`]: a task a worker holds the lease of, with what running it and writing its
//! outcome need; and what a claim or a rescue reads besides ([`LostRun`], [`UnreadableRow`]).
//! A module of its own, below both the database boundary that reads the rows into them and
//! the worker that runs them.

use std::time::Instant;

use anchor_core::RetryPolicy;
use tokio_postgres::Row;

use crate::settings::RetryColumns;
use crate::task::TaskId;

/// A task this worker holds a lease on, with what running and finishing it needs.
#[derive(Debug, Clone)]
pub(crate) struct ClaimedTask {
    pub id: TaskId,
    pub name: String,
    pub payload: String,
    /// The number of this run: one more than the runs started before it.
    pub attempt: u32,
    pub failures: u32,
    pub timeout_ms: i64,
    pub retry: RetryColumns,
    pub on_failed: Option<String>,
    pub parent_id: Option<TaskId>,
    /// How often a worker holding this task was lost before.
    pub rescues: u32,
    /// The task's own bound on rescues, if it has one.
    pub max_rescues: Option<i32>,
    pub token: i64,
    /// The local time just before the statement that leased the task was sent: the lease
    /// runs from a database time no earlier than this (see `Shared::lease_deadline`).
    pub leased_at: Instant,
}

/// A claimed or expired row whose columns cannot be read (edited by hand into values the
/// runtime never writes, such as `'{NULL}'` in `retry_intervals_ms`).
#[derive(Debug, Clone)]
pub(crate) struct UnreadableRow {
    pub id: TaskId,
    /// The name and onFailed handler, when those columns at least can be read.
    pub name: String,
    pub on_failed: Option<String>,
    pub message: String,
}

/// What `rescue_batch` needs besides the claimed-task columns.
#[derive(Debug, Clone)]
pub(crate) struct LostRun {
    /// Whether the lost run's start had been recorded (`run_started`).
    pub started: bool,
    /// The worker that held the lease.
    pub owner: Option<String>,
}

impl ClaimedTask {
    /// Reads the columns of `TASK_RUN_COLUMNS` (see `sql.rs`), never panicking on values a
    /// person may have written into the row.
    pub(crate) fn from_row(
        row: &Row,
        token: i64,
        leased_at: Instant,
    ) -> std::result::Result<(ClaimedTask, LostRun), UnreadableRow> {
        let id: TaskId = row.try_get(0).map_err(|e| UnreadableRow {
            id: TaskId::new(0),
            name: String::new(),
            on_failed: None,
            message: format!("the task id cannot be read: {e}"),
        })?;
        let unreadable = |column: &str, e: tokio_postgres::Error| UnreadableRow {
            id,
            name: row.try_get(1).unwrap_or_default(),
            on_failed: row.try_get(9).ok().flatten(),
            message: format!(
                "the task's row cannot be read (column {column}: {e}); it was probably edited \
                 by hand: fix the column or cancel the task"
            ),
        };
        macro_rules! col {
            ($i:expr, $name:expr) => {
                row.try_get($i).map_err(|e| unreadable($name, e))?
            };
        }
        let attempts: i32 = col!(3, "attempts");
        let failures: i32 = col!(4, "failures");
        let rescues: i32 = col!(11, "rescues");
        let task = ClaimedTask {
            id,
            name: col!(1, "name"),
            payload: col!(2, "payload"),
            attempt: u32::try_from(attempts).unwrap_or(0).saturating_add(1),
            failures: u32::try_from(failures).unwrap_or(0),
            timeout_ms: col!(5, "timeout_ms"),
            retry: RetryColumns {
                intervals_ms: col!(6, "retry_intervals_ms"),
                always: col!(7, "retry_always"),
                max_retries: col!(8, "max_retries"),
            },
            on_failed: col!(9, "on_failed"),
            parent_id: col!(10, "parent_id"),
            rescues: u32::try_from(rescues).unwrap_or(0),
            max_rescues: col!(12, "max_rescues"),
            token,
            leased_at,
        };
        let lost = LostRun {
            started: col!(13, "run_started"),
            owner: col!(14, "lease_owner"),
        };
        Ok((task, lost))
    }

    /// The retry policy stored with the task, if any.
    pub(crate) fn policy(&self) -> Option<RetryPolicy> {
        self.retry.policy()
    }

    /// The attempt number as the database stores it.
    pub(crate) fn attempt_i32(&self) -> i32 {
        i32::try_from(self.attempt).unwrap_or(i32::MAX)
    }
}
