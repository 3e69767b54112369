//! Inspection: read one task's row ([`Client::get_task`]) and cancel a pending task
//! ([`Client::cancel_task`]).

use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::Deserialize;

use crate::client::{db_error, Client};
use crate::error::{Error, ErrorKind, Result};
use crate::sql::status;
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

    pub(crate) fn from_code(code: i16) -> Option<TaskStatus> {
        Some(match code {
            status::PENDING => TaskStatus::Pending,
            status::RUNNING => TaskStatus::Running,
            status::COMPLETED => TaskStatus::Completed,
            status::FAILED => TaskStatus::Failed,
            status::CANCELLED => TaskStatus::Cancelled,
            _ => return None,
        })
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

/// A task's row, as [`Client::get_task`] returns it.
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
    /// The task's own bound on lost-worker rescues (`maxRescues`), if it has one; else the
    /// rescuing worker's `WorkerConfig::max_rescues` applies.
    pub max_rescues: Option<u32>,
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
    /// The execution timeout.
    pub timeout: Duration,
    /// The retry intervals (`None`: no retry policy).
    pub retry_intervals: Option<Vec<Duration>>,
    /// `always_retry_on_failure`.
    pub retry_always: bool,
    /// `max_retries`, when set.
    pub max_retries: Option<u32>,
    /// The handler enqueued when this task fails permanently.
    pub on_failed: Option<String>,
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

fn non_negative(v: i32) -> u32 {
    u32::try_from(v).unwrap_or(0)
}

fn ms(v: i64) -> Duration {
    Duration::from_millis(u64::try_from(v).unwrap_or(0))
}

impl Client {
    /// Reads a task; `None` when no task has that id.
    pub async fn get_task(&self, id: TaskId) -> Result<Option<TaskRecord>> {
        let conn = self.conn().await?;
        let stmt = conn
            .prepare_cached(&self.sql().get_task)
            .await
            .map_err(|e| db_error("cannot prepare the task lookup", e))?;
        let Some(row) = conn
            .query_opt(&stmt, &[&id])
            .await
            .map_err(|e| db_error(&format!("cannot read task {id}"), e))?
        else {
            return Ok(None);
        };
        // Every column is read fallibly: a row edited by hand into values the runtime never
        // writes is an error naming the column, not a panic of the caller.
        macro_rules! col {
            ($name:literal) => {
                row.try_get($name).map_err(|err| {
                    Error::with_source(
                        ErrorKind::Payload,
                        format!(
                            "column {} of task {id} cannot be read; was the row edited by hand?",
                            $name
                        ),
                        err,
                    )
                })?
            };
        }
        let code: i16 = col!("status");
        let status = TaskStatus::from_code(code).ok_or_else(|| {
            Error::new(
                ErrorKind::Schema,
                format!("task {id} has unknown status code {code}; is the runtime older than the schema?"),
            )
        })?;
        let errors_json: serde_json::Value = col!("errors");
        let errors: Vec<ErrorRecord> = serde_json::from_value(errors_json).map_err(|err| {
            Error::with_source(
                ErrorKind::Payload,
                format!("the error history of task {id} is malformed"),
                err,
            )
        })?;
        let intervals: Option<Vec<i64>> = col!("retry_intervals_ms");
        let max_retries: Option<i32> = col!("max_retries");
        let max_rescues: Option<i32> = col!("max_rescues");
        Ok(Some(TaskRecord {
            id: col!("id"),
            name: col!("name"),
            status,
            payload: col!("payload"),
            attempts: non_negative(col!("attempts")),
            failures: non_negative(col!("failures")),
            rescues: non_negative(col!("rescues")),
            max_rescues: max_rescues.map(non_negative),
            errors,
            created_at: col!("created_at"),
            run_after: col!("run_after"),
            started_at: col!("started_at"),
            finished_at: col!("finished_at"),
            updated_at: col!("updated_at"),
            parent_id: col!("parent_id"),
            unique_tag: col!("unique_tag"),
            timeout: ms(col!("timeout_ms")),
            retry_intervals: intervals.map(|v| v.into_iter().map(ms).collect()),
            retry_always: col!("retry_always"),
            max_retries: max_retries.map(non_negative),
            on_failed: col!("on_failed"),
            lease_owner: col!("lease_owner"),
            lease_expires_at: col!("lease_expires_at"),
        }))
    }

    /// Frees a unique tag so that the next enqueue with it creates a new task; returns the
    /// task that held it, if any. The holder keeps running or stays as it is, only without
    /// its tag. (Failed and cancelled tasks hold no tag; pending, running and completed
    /// ones do, a completed one until retention prunes it.)
    pub async fn free_unique_tag(&self, tag: &str) -> Result<Option<TaskId>> {
        let conn = self.conn().await?;
        let stmt = conn
            .prepare_cached(&self.sql().free_tag)
            .await
            .map_err(|e| db_error("cannot prepare freeing a unique tag", e))?;
        let row = conn
            .query_opt(&stmt, &[&tag])
            .await
            .map_err(|e| db_error(&format!("cannot free unique tag `{tag}`"), e))?;
        let holder = row.map(|r| r.get::<_, TaskId>(0));
        if let Some(id) = holder {
            tracing::info!(task.id = %id, tag, "unique tag freed");
        }
        Ok(holder)
    }

    /// Cancels a task that is still `pending`; returns whether it was. A cancelled task
    /// frees its unique tag. Running and finished tasks are not touched.
    pub async fn cancel_task(&self, id: TaskId) -> Result<bool> {
        let conn = self.conn().await?;
        let stmt = conn
            .prepare_cached(&self.sql().cancel)
            .await
            .map_err(|e| db_error("cannot prepare the task cancel", e))?;
        let row = conn
            .query_opt(&stmt, &[&id])
            .await
            .map_err(|e| db_error(&format!("cannot cancel task {id}"), e))?;
        if row.is_some() {
            tracing::info!(task.id = %id, "task cancelled");
        }
        Ok(row.is_some())
    }
}
