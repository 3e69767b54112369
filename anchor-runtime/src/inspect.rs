//! Inspection and control of single tasks: read one task's row ([`Client::get_task`]),
//! cancel a pending task ([`Client::cancel_task`]), retry a task now
//! ([`Client::retry_task`]), delete a finished one ([`Client::delete_task`]) and free a
//! unique tag ([`Client::free_unique_tag`]).

use crate::client::Client;
use crate::db;
use crate::error::Result;
use crate::record::TaskRecord;
use crate::task::TaskId;

impl Client {
    /// Reads a task; `None` when no task has that id.
    pub async fn get_task(&self, id: TaskId) -> Result<Option<TaskRecord>> {
        let conn = self.conn().await?;
        db::tasks::get(&self.pooled(&conn), self.sql(), id).await
    }

    /// Frees a unique tag so that the next enqueue with it creates a new task; returns the
    /// task that held it, if any. The holder keeps running or stays as it is, only without
    /// its tag. (Failed and cancelled tasks hold no tag; pending, running and completed
    /// ones do, a completed one until retention prunes it.)
    pub async fn free_unique_tag(&self, tag: &str) -> Result<Option<TaskId>> {
        let conn = self.conn().await?;
        let holder = db::tasks::free_tag(&mut self.pooled(&conn), self.sql(), tag).await?;
        if let Some(id) = holder {
            tracing::info!(task.id = %id, tag, "unique tag freed");
        }
        Ok(holder)
    }

    /// Cancels a task that is still `pending`; returns whether it was. A cancelled task
    /// frees its unique tag. Running and finished tasks are not touched.
    pub async fn cancel_task(&self, id: TaskId) -> Result<bool> {
        let conn = self.conn().await?;
        let cancelled = db::tasks::cancel(&mut self.pooled(&conn), self.sql(), id).await?;
        if cancelled {
            tracing::info!(task.id = %id, "task cancelled");
        }
        Ok(cancelled)
    }

    /// Makes a task due now, by hand: a `failed` or `cancelled` task goes back to
    /// `pending`, and a `pending` one waiting for its retry delay (or a `run_after`) is due
    /// at once; the workers are woken. Returns whether the task was in one of those states
    /// (a running or completed task is not touched).
    ///
    /// `attempts` and the error history stay as they were, so the next run is numbered
    /// after the earlier ones; `failures` starts from zero, so a task that had used up its
    /// retries gets its whole retry policy again. A failed or cancelled task takes its
    /// unique tag back: if another task holds that tag now, nothing changes and the error
    /// (kind [`InvalidOverride`](crate::ErrorKind::InvalidOverride)) says so.
    pub async fn retry_task(&self, id: TaskId) -> Result<bool> {
        let conn = self.conn().await?;
        let retried = db::tasks::retry_now(&mut self.pooled(&conn), self.sql(), id).await?;
        drop(conn);
        if retried {
            tracing::info!(task.id = %id, "task retried by hand");
            self.announce_new_tasks();
        }
        Ok(retried)
    }

    /// Deletes a finished task (`completed`, `failed` or `cancelled`); returns whether it
    /// had finished. A pending or running task is not touched: cancel it first. An
    /// `onFailed` handler enqueued for the task keeps its `parent_id`, which then names no
    /// row.
    pub async fn delete_task(&self, id: TaskId) -> Result<bool> {
        let conn = self.conn().await?;
        let deleted = db::tasks::delete_finished(&mut self.pooled(&conn), self.sql(), id).await?;
        if deleted {
            tracing::info!(task.id = %id, "task deleted");
        }
        Ok(deleted)
    }
}
