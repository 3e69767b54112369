//! What the operator calls return and take (`Client::queues`, `list_tasks`, `stats`, in
//! `inspect.rs`): queues, task filters with a keyset cursor, pages and counts. Below both
//! the database boundary that reads the rows into them and the client methods.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::error::{Error, ErrorKind, Result};
use crate::record::{TaskRecord, TaskStatus};
use crate::task::TaskId;

/// One queue: whether it is paused and what waits and runs in it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct QueueInfo {
    /// The queue's name.
    pub name: String,
    /// When it was paused (`None`: it runs).
    pub paused_at: Option<DateTime<Utc>>,
    /// Who paused it, as the pausing call gave it (the CLI writes `user@host`).
    pub paused_by: Option<String>,
    /// Pending tasks due now.
    pub due: u64,
    /// Pending tasks not due yet (scheduled, or waiting for a retry delay).
    pub scheduled: u64,
    /// Running tasks.
    pub running: u64,
    /// How long the oldest due task has been due (`None` when nothing is due).
    pub oldest_due_age: Option<Duration>,
}

/// Which tasks [`Client::list_tasks`](crate::Client::list_tasks) returns. Every filter given must match; build it with
/// the `with_*` setters.
///
/// ```
/// use anchor_runtime::{TaskFilter, TaskStatus};
/// let filter = TaskFilter::default()
///     .with_status(TaskStatus::Failed)
///     .with_queue("emails")
///     .with_limit(20);
/// assert_eq!(filter.limit(), 20);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TaskFilter {
    pub(crate) statuses: Vec<TaskStatus>,
    pub(crate) name: Option<String>,
    pub(crate) queue: Option<String>,
    pub(crate) unique_tag: Option<String>,
    pub(crate) parent_id: Option<TaskId>,
    pub(crate) created_after: Option<DateTime<Utc>>,
    pub(crate) created_before: Option<DateTime<Utc>>,
    pub(crate) limit: u32,
    pub(crate) after: Option<TaskCursor>,
}

/// The most tasks one page holds.
pub const MAX_PAGE: u32 = 1000;

impl Default for TaskFilter {
    fn default() -> Self {
        TaskFilter {
            statuses: Vec::new(),
            name: None,
            queue: None,
            unique_tag: None,
            parent_id: None,
            created_after: None,
            created_before: None,
            limit: 50,
            after: None,
        }
    }
}

impl TaskFilter {
    /// Tasks in `status` (several calls: in any of them).
    pub fn with_status(mut self, status: TaskStatus) -> Self {
        if !self.statuses.contains(&status) {
            self.statuses.push(status);
        }
        self
    }

    /// Tasks called `name`.
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Tasks in `queue`.
    pub fn with_queue(mut self, queue: impl Into<String>) -> Self {
        self.queue = Some(queue.into());
        self
    }

    /// The task holding unique tag `tag` (or having held it, if it failed or was cancelled).
    pub fn with_unique_tag(mut self, tag: impl Into<String>) -> Self {
        self.unique_tag = Some(tag.into());
        self
    }

    /// The `onFailed` handlers of task `parent`.
    pub fn with_parent(mut self, parent: TaskId) -> Self {
        self.parent_id = Some(parent);
        self
    }

    /// Tasks created at or after `at`.
    pub fn with_created_after(mut self, at: DateTime<Utc>) -> Self {
        self.created_after = Some(at);
        self
    }

    /// Tasks created before `at`.
    pub fn with_created_before(mut self, at: DateTime<Utc>) -> Self {
        self.created_before = Some(at);
        self
    }

    /// At most `limit` tasks per page (default 50, 1 to [`MAX_PAGE`]).
    pub fn with_limit(mut self, limit: u32) -> Self {
        self.limit = limit.clamp(1, MAX_PAGE);
        self
    }

    /// The page after the one that returned `cursor` ([`TaskPage::next`]).
    pub fn after(mut self, cursor: TaskCursor) -> Self {
        self.after = Some(cursor);
        self
    }

    /// The page size.
    pub fn limit(&self) -> u32 {
        self.limit
    }
}

/// Where a page of [`Client::list_tasks`](crate::Client::list_tasks) ended. Pages run from the newest task to the
/// oldest by id; a page after a cursor holds only older tasks, so paging is stable while
/// tasks are added or change status (a task that changes status between two pages is
/// listed by at most one of them, as it was when its page was read).
///
/// Its text form (`Display`, `FromStr`) is what the CLI prints and takes (`--after`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TaskCursor(pub(crate) TaskId);

impl std::fmt::Display for TaskCursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0.get())
    }
}

impl std::str::FromStr for TaskCursor {
    type Err = Error;

    fn from_str(s: &str) -> Result<TaskCursor> {
        match s.trim().parse::<i64>() {
            Ok(id) if id > 0 => Ok(TaskCursor(TaskId::new(id))),
            _ => Err(Error::new(
                ErrorKind::InvalidOverride,
                format!(
                    "`{}` is not a page cursor; give the `next` value a listing printed",
                    s.escape_debug()
                ),
            )),
        }
    }
}

/// One page of tasks, newest first.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct TaskPage {
    /// The tasks, newest (highest id) first.
    pub tasks: Vec<TaskRecord>,
    /// The cursor for the next page (`None`: this was the last).
    pub next: Option<TaskCursor>,
}

/// How many tasks of one name in one queue are in one status.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TaskCount {
    /// The queue.
    pub queue: String,
    /// The task name.
    pub name: String,
    /// The status.
    pub status: TaskStatus,
    /// How many.
    pub count: u64,
}

/// How many tasks one worker is running.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct WorkerLoad {
    /// The worker's id (`lease_owner`).
    pub worker: String,
    /// Tasks it holds leases on (running, or claimed and about to start).
    pub running: u64,
}

/// What [`Client::stats`](crate::Client::stats) counts.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TaskStats {
    /// Counts per queue, name and status: every pending and running task, and the tasks
    /// that finished within [`TaskStats::window`]. Sorted by queue, name, status; zero
    /// counts are left out.
    pub counts: Vec<TaskCount>,
    /// How far back finished tasks are counted.
    pub window: Duration,
    /// How long the oldest due pending task has been due, over all queues.
    pub oldest_due_age: Option<Duration>,
    /// The tasks each worker runs now, busiest first.
    pub running_by_worker: Vec<WorkerLoad>,
}

impl TaskStats {
    /// The sum of the counts in `status`.
    pub fn total(&self, status: TaskStatus) -> u64 {
        self.counts
            .iter()
            .filter(|c| c.status == status)
            .map(|c| c.count)
            .sum()
    }
}

/// The finished-task window [`Client::stats`](crate::Client::stats) uses.
pub const DEFAULT_STATS_WINDOW: Duration = Duration::from_secs(3600);

/// What an `assert_enqueued_…` helper prints when nothing matched: the tasks that were
/// enqueued instead, one per line (their parameters in `Debug` form), or that none were.
///
/// ```
/// #[derive(Debug)]
/// struct SendEmail { user_id: i64 }
/// let text = anchor_runtime::describe_enqueued(&[SendEmail { user_id: 7 }]);
/// assert_eq!(text, "1 was enqueued:\n  SendEmail { user_id: 7 }");
/// assert_eq!(anchor_runtime::describe_enqueued::<SendEmail>(&[]), "none was enqueued");
/// ```
pub fn describe_enqueued<P: std::fmt::Debug>(enqueued: &[P]) -> String {
    if enqueued.is_empty() {
        return "none was enqueued".to_string();
    }
    let mut text = format!(
        "{} {} enqueued:",
        enqueued.len(),
        if enqueued.len() == 1 { "was" } else { "were" }
    );
    for params in enqueued {
        text.push_str(&format!("\n  {params:?}"));
    }
    text
}
