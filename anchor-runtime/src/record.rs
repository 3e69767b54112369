//! What inspection reads back about a task: [`TaskRecord`], its [`TaskStatus`] and its
//! [`ErrorRecord`]s. A module of their own, below both the database boundary that reads the
//! rows into them and the client methods that return them.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::Deserialize;

use crate::error::{Error, ErrorKind, Result};
use crate::settings::TaskSettings;
use crate::task::TaskId;

/// Where a task is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TaskStatus {
    /// Waiting to be claimed (possibly until a later `run_after`, e.g. before a retry).
    Pending,
    /// Claimed by a worker that holds its lease.
    Running,
    /// Finished successfully.
    Completed,
    /// Failed permanently (its `onFailed` handler, if any, was enqueued).
    Failed,
    /// Cancelled before it ran.
    Cancelled,
}

impl TaskStatus {
    /// The lowercase name (`pending`, `running`, `completed`, `failed`, `cancelled`).
    pub fn as_str(self) -> &'static str {
        match self {
            TaskStatus::Pending => "pending",
            TaskStatus::Running => "running",
            TaskStatus::Completed => "completed",
            TaskStatus::Failed => "failed",
            TaskStatus::Cancelled => "cancelled",
        }
    }

    /// Whether the task will not change any more.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            TaskStatus::Completed | TaskStatus::Failed | TaskStatus::Cancelled
        )
    }
}

impl fmt::Display for TaskStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One entry of a task's error history.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ErrorRecord {
    /// The run that failed (1 for the first), or 0 for a note the runtime made without a
    /// run, such as "no running worker has task `X` registered".
    pub attempt: u32,
    /// When the failure was recorded.
    pub at: DateTime<Utc>,
    /// What went wrong, e.g. the executor's error, `panicked: …`, `timed out after 5s` or
    /// `worker lost: …` (a rescue).
    pub message: String,
}

/// A task's row, as [`Client::get_task`](crate::Client::get_task) returns it.
#[derive(Debug, Clone)]
pub struct TaskRecord {
    /// The task's id.
    pub id: TaskId,
    /// The task name.
    pub name: String,
    /// Where the task is in its life.
    pub status: TaskStatus,
    /// The parameters as JSON; see [`TaskRecord::payload_as`] for the typed form.
    pub payload: serde_json::Value,
    /// Runs started so far. A task that was claimed but never started (it waited in a
    /// worker's buffer, or its worker died first) counts none.
    pub attempts: u32,
    /// Failed runs that count against `max_retries`. A lost worker is not a failure.
    pub failures: u32,
    /// How often the task was taken back from a lost worker (one that died or lost the
    /// database while holding it), whether or not its run had started.
    pub rescues: u32,
    /// The error history, oldest first.
    pub errors: Vec<ErrorRecord>,
    /// When the task was enqueued.
    pub created_at: DateTime<Utc>,
    /// The earliest time the task may (next) run.
    pub run_after: DateTime<Utc>,
    /// When the latest run was claimed (a task from a worker's buffer starts at most a
    /// second later) or, for a task dispatched locally, inserted and started.
    pub started_at: Option<DateTime<Utc>>,
    /// When the task reached a final status.
    pub finished_at: Option<DateTime<Utc>>,
    /// When the row last changed.
    pub updated_at: DateTime<Utc>,
    /// For an `onFailed` handler, the task whose failure enqueued it.
    pub parent_id: Option<TaskId>,
    /// The unique tag, if one was given.
    pub unique_tag: Option<String>,
    /// Its settings: timeout, retry policy, `onFailed` handler, rescue bound.
    pub settings: TaskSettings,
    /// The worker holding the lease, while running.
    pub lease_owner: Option<String>,
    /// When the current lease expires, while running.
    pub lease_expires_at: Option<DateTime<Utc>>,
}

impl TaskRecord {
    /// Decodes the payload into the task's parameter type.
    pub fn payload_as<P: DeserializeOwned>(&self) -> Result<P> {
        P::deserialize(&self.payload).map_err(|err| {
            Error::with_source(
                ErrorKind::Payload,
                format!(
                    "the payload of task {} ({}) does not match the requested type",
                    self.id, self.name
                ),
                err,
            )
        })
    }
}
