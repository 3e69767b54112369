//! Inspection: read one task's row ([`Client::get_task`]), cancel a pending task
//! ([`Client::cancel_task`]) and free a unique tag ([`Client::free_unique_tag`]).

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
}
