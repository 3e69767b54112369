//! Inspection: read one task's row ([`Client::get_task`]) and cancel a pending task
//! ([`Client::cancel_task`]).

use std::time::Duration;

use crate::client::{db_error, Client};
use crate::error::{Error, ErrorKind, Result};
use crate::record::{ErrorRecord, TaskRecord, TaskStatus};
use crate::sql::status;
use crate::task::TaskId;

fn status_from_code(code: i16) -> Option<TaskStatus> {
    Some(match code {
        status::PENDING => TaskStatus::Pending,
        status::RUNNING => TaskStatus::Running,
        status::COMPLETED => TaskStatus::Completed,
        status::FAILED => TaskStatus::Failed,
        status::CANCELLED => TaskStatus::Cancelled,
        _ => return None,
    })
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
        let status = status_from_code(code).ok_or_else(|| {
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
