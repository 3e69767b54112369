//! [`drain`]: runs the tasks of a database with a real worker until none is left to run,
//! then reports what ran and how each task ended.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::{Duration, Instant};

use anchor_runtime::{
    Client, Registry, TaskFilter, TaskId, TaskRecord, TaskStatus, Worker, WorkerConfig,
};

use crate::{Error, Result};

/// How [`drain`] runs.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct DrainOptions {
    /// Make every pending task due at once, including retries waiting for their delay and
    /// tasks enqueued with `run_after` (default true), so a test need not wait for them.
    pub due_now: bool,
    /// Stop after this many runs (over every task the drain saw, finished or not), for tasks
    /// that retry or enqueue more work for ever (default 1000).
    pub max_runs: u64,
    /// Give up after this long (default 60 s).
    pub timeout: Duration,
    /// The worker's settings (default: `WorkerConfig::default()` with a 50 ms poll).
    pub worker: WorkerConfig,
}

impl Default for DrainOptions {
    fn default() -> Self {
        DrainOptions {
            due_now: true,
            max_runs: 1000,
            timeout: Duration::from_secs(60),
            worker: WorkerConfig::default()
                .with_poll_interval(Duration::from_millis(50))
                .with_worker_id("anchor-testing-drain"),
        }
    }
}

impl DrainOptions {
    /// Sets [`DrainOptions::due_now`].
    pub fn with_due_now(mut self, due_now: bool) -> Self {
        self.due_now = due_now;
        self
    }

    /// Sets [`DrainOptions::max_runs`].
    pub fn with_max_runs(mut self, max_runs: u64) -> Self {
        self.max_runs = max_runs;
        self
    }

    /// Sets [`DrainOptions::timeout`].
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sets [`DrainOptions::worker`].
    pub fn with_worker(mut self, worker: WorkerConfig) -> Self {
        self.worker = worker;
        self
    }
}

/// What a [`drain`] did: every task that was unfinished when it began or was enqueued while
/// it ran (retries and `onFailed` handlers included), as it ended, in id order.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct DrainReport {
    /// The tasks, by id.
    pub tasks: Vec<TaskRecord>,
    /// How many runs the drain made (attempts counted during it).
    pub runs: u64,
    /// Whether it stopped at [`DrainOptions::max_runs`] with work left.
    pub stopped_at_max_runs: bool,
}

impl DrainReport {
    /// The tasks called `name`.
    pub fn of(&self, name: &str) -> Vec<&TaskRecord> {
        self.tasks.iter().filter(|t| t.name == name).collect()
    }

    /// How many tasks called `name` ended in `status`.
    pub fn count(&self, name: &str, status: TaskStatus) -> usize {
        self.of(name).iter().filter(|t| t.status == status).count()
    }

    /// Whether every task completed.
    pub fn all_completed(&self) -> bool {
        self.tasks.iter().all(|t| t.status == TaskStatus::Completed)
    }
}

impl fmt::Display for DrainReport {
    /// One line per task: id, name, status, attempts and the last error; readable in a
    /// failed assertion's message.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{} tasks, {} runs:", self.tasks.len(), self.runs)?;
        for t in &self.tasks {
            write!(
                f,
                "  task {} {} {} after {} attempt(s)",
                t.id, t.name, t.status, t.attempts
            )?;
            if let Some(e) = t.errors.last() {
                write!(f, ": {}", e.message)?;
            }
            writeln!(f)?;
        }
        Ok(())
    }
}

/// Every unfinished task, read page by page: id → attempts.
async fn unfinished(client: &Client) -> Result<BTreeMap<TaskId, u32>> {
    let mut found = BTreeMap::new();
    for status in [TaskStatus::Pending, TaskStatus::Running] {
        let mut filter = TaskFilter::default()
            .with_status(status)
            .with_limit(anchor_runtime::MAX_PAGE);
        loop {
            let page = client.list_tasks(&filter).await?;
            found.extend(page.tasks.iter().map(|t| (t.id, t.attempts)));
            match page.next {
                Some(cursor) => filter = filter.after(cursor),
                None => break,
            }
        }
    }
    Ok(found)
}

/// Runs the tasks of `client`'s database with `registry`'s handlers until none is left
/// to run (no task pending and due, none running), on a real worker (the same claim,
/// retries, timeouts and `onFailed` handlers as in production), and returns what it did.
/// With [`DrainOptions::due_now`] (the default) every pending task is made due at once, as
/// often as needed: a retry's delay or a `run_after` does not make the test wait.
///
/// Tasks the worker cannot run (names `registry` has no handler for, queues it does not
/// serve, paused queues) stay pending and do not hold the drain up; see them in
/// [`DrainReport::tasks`].
pub async fn drain(
    client: &Client,
    registry: Registry,
    options: DrainOptions,
) -> Result<DrainReport> {
    // Ids only grow: tasks above the newest one now are the ones enqueued during the drain.
    let newest = client
        .list_tasks(&TaskFilter::default().with_limit(1))
        .await?
        .tasks
        .first()
        .map_or(0, |t| t.id.get());
    let before = unfinished(client).await?;
    let names: Vec<&'static str> = registry.task_names();
    let served = served_queues(&registry, &options.worker);
    let worker = Worker::new(
        client.clone(),
        registry,
        options.worker.clone().with_local_dispatch(false),
    )?
    .start();
    let deadline = Instant::now() + options.timeout;
    let runs = Runs::new(&before, newest);
    let outcome = run_until_idle(client, &names, &served, runs, &options, deadline).await;
    worker.shutdown().await;
    let stopped_at_max_runs = outcome?;
    // Everything that was unfinished, and everything enqueued since.
    let mut ids: Vec<TaskId> = before.keys().copied().collect();
    let mut filter = TaskFilter::default().with_limit(anchor_runtime::MAX_PAGE);
    'pages: loop {
        let page = client.list_tasks(&filter).await?;
        for task in &page.tasks {
            if task.id.get() <= newest {
                break 'pages;
            }
            ids.push(task.id);
        }
        match page.next {
            Some(cursor) => filter = filter.after(cursor),
            None => break,
        }
    }
    ids.sort_unstable();
    ids.dedup();
    let mut tasks = Vec::with_capacity(ids.len());
    for id in ids {
        if let Some(task) = client.get_task(id).await? {
            tasks.push(task);
        }
    }
    let runs = runs_since(&tasks, &before);
    Ok(DrainReport {
        tasks,
        runs,
        stopped_at_max_runs,
    })
}

/// The runs the tasks had since `before` (their attempts then; 0 for new ones).
fn runs_since(tasks: &[TaskRecord], before: &BTreeMap<TaskId, u32>) -> u64 {
    tasks
        .iter()
        .map(|t| {
            u64::from(
                t.attempts
                    .saturating_sub(before.get(&t.id).copied().unwrap_or(0)),
            )
        })
        .sum()
}

/// Counts the runs a drain made: attempts now minus attempts when it began, over the tasks
/// unfinished then and every task enqueued since, finished or not.
struct Runs {
    before: BTreeMap<TaskId, u32>,
    /// The newest task id seen (listing above it finds the tasks enqueued since).
    newest: i64,
    /// Unfinished at the last look, with their attempts.
    unfinished: BTreeMap<TaskId, u32>,
    /// Finished, with their final attempts.
    finished: BTreeMap<TaskId, u32>,
}

impl Runs {
    fn new(before: &BTreeMap<TaskId, u32>, newest: i64) -> Runs {
        Runs {
            before: before.clone(),
            newest,
            unfinished: before.clone(),
            finished: BTreeMap::new(),
        }
    }

    /// Takes in one look at the table (`now`: the unfinished tasks) and returns the runs.
    async fn update(&mut self, client: &Client, now: BTreeMap<TaskId, u32>) -> Result<u64> {
        // Tasks enqueued since the last look, finished ones included.
        let mut filter = TaskFilter::default().with_limit(anchor_runtime::MAX_PAGE);
        let mut newest = self.newest;
        'pages: loop {
            let page = client.list_tasks(&filter).await?;
            for task in &page.tasks {
                if task.id.get() <= self.newest {
                    break 'pages;
                }
                newest = newest.max(task.id.get());
                if task.status.is_final() {
                    self.finished.insert(task.id, task.attempts);
                }
            }
            match page.next {
                Some(cursor) => filter = filter.after(cursor),
                None => break,
            }
        }
        self.newest = newest;
        // Tasks that were unfinished and are no more: read how they ended, once.
        let gone: Vec<TaskId> = self
            .unfinished
            .keys()
            .filter(|id| !now.contains_key(id) && !self.finished.contains_key(id))
            .copied()
            .collect();
        for id in gone {
            let attempts = client.get_task(id).await?.map_or(0, |t| t.attempts);
            self.finished.insert(id, attempts);
        }
        self.unfinished = now;
        let since = |id: &TaskId, attempts: u32| {
            u64::from(attempts.saturating_sub(self.before.get(id).copied().unwrap_or(0)))
        };
        Ok(self
            .unfinished
            .iter()
            .chain(self.finished.iter())
            .map(|(id, attempts)| since(id, *attempts))
            .sum())
    }
}

/// The queues the drain's worker serves (as `WorkerConfig` decides from the registry).
fn served_queues(registry: &Registry, config: &WorkerConfig) -> BTreeSet<String> {
    let mut queues: BTreeSet<String> = config.queues().keys().cloned().collect();
    if config.other_queues() {
        for def in registry.definitions() {
            if registry.task_names().contains(&def.name) {
                queues.insert(def.queue.to_string());
            }
        }
    }
    queues
}

/// Waits until nothing the worker can run is left; returns whether it stopped at the run
/// limit instead. Tasks it cannot run (names without a handler, queues it does not serve
/// or that are paused) do not count.
async fn run_until_idle(
    client: &Client,
    names: &[&'static str],
    served: &BTreeSet<String>,
    mut runs: Runs,
    options: &DrainOptions,
    deadline: Instant,
) -> Result<bool> {
    // Idle must hold in two looks in a row, a worker poll apart: a task that just finished
    // may be committing the insert of its handler or its retry.
    let poll = options
        .worker
        .poll_interval()
        .max(Duration::from_millis(25));
    let mut idle_once = false;
    loop {
        if Instant::now() > deadline {
            return Err(Error::new(format!(
                "drain: tasks were still running or due after {:?}; raise DrainOptions::timeout \
                 or look for a handler that never returns",
                options.timeout
            )));
        }
        let paused: BTreeSet<String> = client
            .queues()
            .await?
            .into_iter()
            .filter(|q| q.paused_at.is_some())
            .map(|q| q.name)
            .collect();
        // One statement reads both statuses, so a task moving between them (a retry going
        // back to pending) is seen in one of them.
        let mut filter = TaskFilter::default()
            .with_status(TaskStatus::Pending)
            .with_status(TaskStatus::Running)
            .with_limit(anchor_runtime::MAX_PAGE);
        let mut unfinished = BTreeMap::new();
        let mut left = 0usize;
        let now = anchor_runtime::chrono::Utc::now();
        loop {
            let page = client.list_tasks(&filter).await?;
            for task in &page.tasks {
                unfinished.insert(task.id, task.attempts);
                let runnable = names.contains(&task.name.as_str())
                    && served.contains(&task.settings.queue)
                    && !paused.contains(&task.settings.queue);
                if !runnable {
                    continue;
                }
                let due = task.run_after <= now;
                if task.status == TaskStatus::Running || due || options.due_now {
                    left += 1;
                }
                if task.status == TaskStatus::Pending && !due && options.due_now {
                    // Due now; `false` means it became due or started meanwhile.
                    client.retry_task(task.id).await?;
                }
            }
            match page.next {
                Some(cursor) => filter = filter.after(cursor),
                None => break,
            }
        }
        let made = runs.update(client, unfinished).await?;
        if made >= options.max_runs && left > 0 {
            return Ok(true);
        }
        if left == 0 {
            if idle_once {
                return Ok(false);
            }
            idle_once = true;
        } else {
            idle_once = false;
        }
        tokio::time::sleep(poll).await;
    }
}
