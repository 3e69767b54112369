//! The operator's calls. Single tasks: read one task's row ([`Client::get_task`]), cancel a
//! pending or running task ([`Client::cancel_task`]), retry a task now
//! ([`Client::retry_task`]), delete a finished one ([`Client::delete_task`]) and free a
//! unique tag ([`Client::free_unique_tag`]). Queues: list, pause and resume them
//! ([`Client::queues`], [`Client::pause_queue`], [`Client::resume_queue`]). Many tasks:
//! [`Client::list_tasks`] and [`Client::stats`].

use std::time::Duration;

use crate::client::Client;
use crate::db;
use crate::definition::TaskParameters;
use crate::error::{Error, ErrorKind, Result};
use crate::listing::{
    QueueInfo, TaskCursor, TaskFilter, TaskPage, TaskStats, DEFAULT_STATS_WINDOW,
};
use crate::record::{TaskRecord, TaskStatus};
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

    /// Cancels a task that is `pending` or `running`; returns whether it was. Finished
    /// tasks are not touched. A cancelled task frees its unique tag, is never retried and
    /// enqueues no `onFailed` handler.
    ///
    /// A running task is `cancelled` in the database at once (its lease is taken away, so
    /// whatever its run returns is not written) and its worker is told over a notification:
    /// the run's [`TaskContext::cancelled`](crate::TaskContext::cancelled) completes, and
    /// [`CANCEL_GRACE`](crate::CANCEL_GRACE) later the worker drops the run's future. A
    /// worker that misses the notification (its LISTEN connection was down) stops the run
    /// at its next lease renewal (a third of the lease, 10 s by default).
    pub async fn cancel_task(&self, id: TaskId) -> Result<bool> {
        let conn = self.conn().await?;
        let before = db::tasks::cancel(&mut self.pooled(&conn), self.sql(), id).await?;
        if let Some(before) = before {
            tracing::info!(task.id = %id, was = %before, "task cancelled");
            // Counted with the task's name and queue, read back (cancelling is rare; the
            // statement shares the one-id shape of the others).
            if let Ok(Some(task)) = self.get_task(id).await {
                crate::observe::count(crate::observe::CANCELLED, &task.name, &task.settings.queue);
            }
        }
        Ok(before.is_some())
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

impl Client {
    /// Every queue anyone knows of: those of the task definitions workers stored, those
    /// with pending or running tasks, and paused ones; sorted by name.
    pub async fn queues(&self) -> Result<Vec<QueueInfo>> {
        let conn = self.conn().await?;
        db::queues::list(&self.pooled(&conn), self.sql()).await
    }

    /// Pauses `queue`: from their next claim (within a poll interval, at once for workers
    /// that get the notification), no worker starts its tasks; runs in progress finish,
    /// tasks a worker holds in its buffer are handed back, and enqueueing into it still
    /// works. Durable: a paused queue stays paused across restarts until
    /// [`Client::resume_queue`]. `by` says who paused it (shown by `anchor queues list`).
    /// Returns whether it was running (false: it was paused already).
    pub async fn pause_queue(&self, queue: &str, by: &str) -> Result<bool> {
        check_queue(queue)?;
        let conn = self.conn().await?;
        let changed = db::queues::pause(&mut self.pooled(&conn), self.sql(), queue, by).await?;
        if changed {
            tracing::info!(queue, by, "queue paused");
        }
        Ok(changed)
    }

    /// Resumes a paused `queue`; its workers are woken at once. Returns whether it was
    /// paused.
    pub async fn resume_queue(&self, queue: &str) -> Result<bool> {
        check_queue(queue)?;
        let conn = self.conn().await?;
        let changed = db::queues::resume(&mut self.pooled(&conn), self.sql(), queue).await?;
        if changed {
            tracing::info!(queue, "queue resumed");
        }
        Ok(changed)
    }

    /// One page of the tasks `filter` selects, newest first; pass [`TaskPage::next`] to
    /// [`TaskFilter::after`] for the next page. Payloads and error histories are included.
    pub async fn list_tasks(&self, filter: &TaskFilter) -> Result<TaskPage> {
        let conn = self.conn().await?;
        let mut tasks = db::listing::list(&self.pooled(&conn), self.sql(), filter).await?;
        let limit = usize::try_from(filter.limit).unwrap_or(usize::MAX);
        // One more row than the page was read to know whether another page follows.
        let next = if tasks.len() > limit {
            tasks.truncate(limit);
            tasks.last().map(|t| TaskCursor(t.id))
        } else {
            None
        };
        Ok(TaskPage { tasks, next })
    }

    /// The pending tasks of `P`'s task (enqueued, not started, due or not), oldest first,
    /// with their parameters decoded: what a test of code that enqueues asserts on. The
    /// generated `taskgen::testing::enqueued_…` functions call this per task.
    ///
    /// A payload that does not decode into `P` is an error of kind
    /// [`Payload`](ErrorKind::Payload) naming the task.
    pub async fn enqueued<P: TaskParameters>(&self) -> Result<Vec<(TaskId, P)>> {
        let mut filter = TaskFilter::default()
            .with_name(P::DEFINITION.name)
            .with_status(TaskStatus::Pending)
            .with_limit(crate::listing::MAX_PAGE);
        let mut found = Vec::new();
        loop {
            let page = self.list_tasks(&filter).await?;
            for task in &page.tasks {
                found.push((task.id, task.payload_as::<P>()?));
            }
            match page.next {
                Some(cursor) => filter = filter.after(cursor),
                None => break,
            }
        }
        found.reverse();
        Ok(found)
    }

    /// Counts per queue, name and status (finished tasks over the last hour,
    /// [`DEFAULT_STATS_WINDOW`]), the age of the oldest due task and what each worker runs.
    pub async fn stats(&self) -> Result<TaskStats> {
        self.stats_over(DEFAULT_STATS_WINDOW).await
    }

    /// [`Client::stats`] with finished tasks counted over `window`.
    pub async fn stats_over(&self, window: Duration) -> Result<TaskStats> {
        let conn = self.conn().await?;
        db::listing::stats(&self.pooled(&conn), self.sql(), window).await
    }
}

/// Refuses a queue name that cannot exist, with the rule.
fn check_queue(queue: &str) -> Result<()> {
    match anchor_core::queue_name_problem(queue) {
        None => Ok(()),
        Some(problem) => Err(Error::new(
            ErrorKind::InvalidOverride,
            format!(
                "`{}` is not a queue name: {problem}; {}",
                queue.escape_debug(),
                anchor_core::QUEUE_NAME_RULE
            ),
        )),
    }
}

/// Returns the parameters of the oldest pending task of `P`'s task for which `matches`
/// holds; panics (as an assertion does) when there is none, listing the pending tasks of
/// that kind there are ([`describe_enqueued`](crate::describe_enqueued)). For tests of code
/// that enqueues; the generated `taskgen::testing::assert_enqueued_…` functions call it.
pub async fn assert_enqueued<P>(client: &Client, matches: impl Fn(&P) -> bool) -> P
where
    P: TaskParameters + std::fmt::Debug + Clone,
{
    let name = P::DEFINITION.name;
    let enqueued: Vec<P> = match client.enqueued::<P>().await {
        Ok(enqueued) => enqueued.into_iter().map(|(_, params)| params).collect(),
        Err(err) => panic!("cannot read the enqueued {name} tasks: {err}"),
    };
    match enqueued.iter().find(|params| matches(params)) {
        Some(params) => params.clone(),
        None => panic!(
            "no pending {name} task matches; {}",
            crate::listing::describe_enqueued(&enqueued)
        ),
    }
}
