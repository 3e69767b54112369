//! [`ClaimedTask`]: a task a worker holds the lease of, with what running it and writing its
//! outcome need; and what a claim or a rescue reads besides ([`LostRun`], [`UnreadableRow`]).
//! A module of its own, below both the database boundary that reads the rows into them and
//! the worker that runs them.

use std::time::Instant;

use crate::settings::TaskSettings;
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
    pub settings: TaskSettings,
    pub parent_id: Option<TaskId>,
    /// How often a worker holding this task was lost before.
    pub rescues: u32,
    pub token: i64,
    /// The local time just before the statement that leased the task was sent: the lease
    /// runs from a database time no earlier than this (see `LeaseTable::deadline`).
    pub leased_at: Instant,
    /// When the task was due (`run_after`, database time), when the claim read it: what
    /// the queue-wait metric measures from.
    pub due: Option<chrono::DateTime<chrono::Utc>>,
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

/// What the rescuer (`Rescuer::rescue_batch`) needs besides the claimed-task columns.
#[derive(Debug, Clone)]
pub(crate) struct LostRun {
    /// Whether the lost run's start had been recorded (`run_started`).
    pub started: bool,
    /// The worker that held the lease.
    pub owner: Option<String>,
}

impl ClaimedTask {
    /// The attempt number as the database stores it.
    pub(crate) fn attempt_i32(&self) -> i32 {
        i32::try_from(self.attempt).unwrap_or(i32::MAX)
    }
}

#[cfg(test)]
impl ClaimedTask {
    /// A claimed task for unit tests: task `id` under lease `token`, nothing else set.
    pub(crate) fn for_test(id: TaskId, token: i64) -> ClaimedTask {
        ClaimedTask {
            id,
            name: "T".to_string(),
            payload: "{}".to_string(),
            attempt: 1,
            failures: 0,
            settings: TaskSettings::unknown(),
            parent_id: None,
            rescues: 0,
            token,
            leased_at: Instant::now(),
            due: None,
        }
    }
}
