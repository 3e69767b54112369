//! `anchor tasks list` and `anchor tasks stats`: many tasks, a page at a time, and counts.
//! Exit codes as for the other `tasks` commands: 0 (an empty page too), 2 for usage or
//! connection problems.

use std::process::ExitCode;
use std::time::Duration;

use anchor_runtime::chrono::{DateTime, Utc};
use anchor_runtime::{Client, TaskCursor, TaskFilter, TaskId, TaskRecord, TaskStats, TaskStatus};
use comfy_table::{Cell, CellAlignment};
use serde_json::{json, Value};

use super::connect::queue_name;
use super::output::{age, millis, print_json, print_table, shorten, status_cell, table, time};
use super::tasks::task_json;

/// A task status, as `--status` takes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Status {
    Pending,
    Running,
    Completed,
    Failed,
    Cancelled,
}

impl From<Status> for TaskStatus {
    fn from(status: Status) -> TaskStatus {
        match status {
            Status::Pending => TaskStatus::Pending,
            Status::Running => TaskStatus::Running,
            Status::Completed => TaskStatus::Completed,
            Status::Failed => TaskStatus::Failed,
            Status::Cancelled => TaskStatus::Cancelled,
        }
    }
}

/// The statuses in the order of the `stats` columns.
const STATUSES: [TaskStatus; 5] = [
    TaskStatus::Pending,
    TaskStatus::Running,
    TaskStatus::Completed,
    TaskStatus::Failed,
    TaskStatus::Cancelled,
];

/// Flags of `anchor tasks list`.
#[derive(Debug, clap::Args)]
pub struct ListArgs {
    /// Only tasks in this status; repeat it (or separate with commas) for several.
    #[arg(long, value_enum, value_delimiter = ',')]
    status: Vec<Status>,
    /// Only tasks of this name.
    #[arg(long)]
    name: Option<String>,
    /// Only tasks in this queue.
    #[arg(long, value_parser = queue_name)]
    queue: Option<String>,
    /// Only the task holding (or, failed or cancelled, having held) this unique tag.
    #[arg(long)]
    tag: Option<String>,
    /// Only the onFailed handlers of this task.
    #[arg(long, value_name = "ID")]
    parent: Option<i64>,
    /// Only tasks created since then: a duration back from now (`30m`, `2h`, `1d`) or an
    /// RFC 3339 time (`2026-12-01T08:00:00Z`).
    #[arg(long, value_name = "DURATION|TIME", value_parser = since)]
    since: Option<DateTime<Utc>>,
    /// Tasks per page (1 to 1000).
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=i64::from(anchor_runtime::MAX_PAGE)))]
    limit: u32,
    /// The page after the one that printed this cursor.
    #[arg(long, value_name = "CURSOR", value_parser = cursor)]
    after: Option<TaskCursor>,
}

/// Flags of `anchor tasks stats`.
#[derive(Debug, clap::Args)]
pub struct StatsArgs {
    /// How far back finished (completed, failed, cancelled) tasks are counted.
    #[arg(long, default_value = "1h", value_name = "DURATION", value_parser = window)]
    window: Duration,
}

fn since(text: &str) -> Result<DateTime<Utc>, String> {
    if let Ok(at) = DateTime::parse_from_rfc3339(text) {
        return Ok(at.with_timezone(&Utc));
    }
    let back = anchor_core::parse_duration(text)
        .map_err(|err| format!("{err}; or give an RFC 3339 time such as 2026-12-01T08:00:00Z"))?;
    anchor_runtime::chrono::Duration::from_std(back)
        .ok()
        .and_then(|back| Utc::now().checked_sub_signed(back))
        .ok_or_else(|| format!("{text} reaches back too far"))
}

fn window(text: &str) -> Result<Duration, String> {
    anchor_core::parse_duration(text).map_err(|err| err.to_string())
}

fn cursor(text: &str) -> Result<TaskCursor, String> {
    text.parse()
        .map_err(|err: anchor_runtime::Error| err.to_string())
}

impl ListArgs {
    fn filter(&self) -> TaskFilter {
        let mut filter = TaskFilter::default().with_limit(self.limit);
        for status in &self.status {
            filter = filter.with_status((*status).into());
        }
        if let Some(name) = &self.name {
            filter = filter.with_name(name);
        }
        if let Some(queue) = &self.queue {
            filter = filter.with_queue(queue);
        }
        if let Some(tag) = &self.tag {
            filter = filter.with_unique_tag(tag);
        }
        if let Some(parent) = self.parent {
            filter = filter.with_parent(TaskId::new(parent));
        }
        if let Some(since) = self.since {
            filter = filter.with_created_after(since);
        }
        if let Some(after) = self.after {
            filter = filter.after(after);
        }
        filter
    }
}

/// `anchor tasks list`: one page, then the cursor of the next.
pub async fn list(client: &Client, args: ListArgs, json: bool) -> anyhow::Result<ExitCode> {
    let page = client.list_tasks(&args.filter()).await?;
    if json {
        print_json(&json!({
            "tasks": page.tasks.iter().map(task_json).collect::<Vec<_>>(),
            "next": page.next.map(|c| c.to_string()),
        }))?;
        return Ok(ExitCode::SUCCESS);
    }
    if page.tasks.is_empty() {
        println!("no tasks match");
        return Ok(ExitCode::SUCCESS);
    }
    let mut rows = table([
        "ID",
        "NAME",
        "QUEUE",
        "PRIORITY",
        "STATUS",
        "ATTEMPTS",
        "CREATED (UTC)",
        "LAST ERROR",
    ]);
    for task in &page.tasks {
        rows.add_row(task_row(task));
    }
    print_table(&rows);
    if let Some(next) = page.next {
        println!("more tasks: add --after {next} for the next page");
    }
    Ok(ExitCode::SUCCESS)
}

fn task_row(task: &TaskRecord) -> Vec<Cell> {
    let last_error = task
        .errors
        .last()
        .map_or_else(|| "-".to_string(), |e| shorten(&e.message, 60));
    vec![
        Cell::new(task.id),
        Cell::new(&task.name),
        Cell::new(&task.settings.queue),
        Cell::new(task.settings.priority),
        status_cell(task.status, task.status.as_str()),
        Cell::new(task.attempts),
        Cell::new(time(Some(task.created_at))),
        Cell::new(last_error),
    ]
}

/// `anchor tasks stats`: counts per queue and name, one column per status.
pub async fn stats(client: &Client, args: StatsArgs, json: bool) -> anyhow::Result<ExitCode> {
    let stats = client.stats_over(args.window).await?;
    if json {
        print_json(&stats_json(&stats))?;
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "tasks by queue and name (finished ones over the last {}):",
        anchor_core::format_duration(stats.window)
    );
    if stats.counts.is_empty() {
        println!("  none");
    } else {
        let header = ["QUEUE", "NAME"].into_iter().map(Cell::new).chain(
            STATUSES
                .iter()
                .map(|s| status_cell(s.as_str().to_uppercase(), s.as_str())),
        );
        let mut rows = table(header);
        for column in rows.column_iter_mut().skip(2) {
            column.set_cell_alignment(CellAlignment::Right);
        }
        // The counts come sorted by queue, name, status: one row per queue and name.
        let mut keys: Vec<(&str, &str)> = stats
            .counts
            .iter()
            .map(|c| (c.queue.as_str(), c.name.as_str()))
            .collect();
        keys.dedup();
        for (queue, name) in keys {
            let count = |status: TaskStatus| {
                stats
                    .counts
                    .iter()
                    .find(|c| c.queue == queue && c.name == name && c.status == status)
                    .map_or(0, |c| c.count)
            };
            let mut row = vec![Cell::new(queue), Cell::new(name)];
            row.extend(STATUSES.iter().map(|s| Cell::new(count(*s))));
            rows.add_row(row);
        }
        print_table(&rows);
    }
    match stats.oldest_due_age {
        Some(waited) => println!("oldest due task: waiting for {}", age(waited)),
        None => println!("oldest due task: none is due"),
    }
    if stats.running_by_worker.is_empty() {
        println!("running per worker: none");
    } else {
        println!("running per worker:");
        let mut rows = table(["WORKER", "RUNNING"]);
        for load in &stats.running_by_worker {
            rows.add_row(vec![Cell::new(&load.worker), Cell::new(load.running)]);
        }
        print_table(&rows);
    }
    Ok(ExitCode::SUCCESS)
}

/// The `--json` shape of `tasks stats` (docs/operations.md).
fn stats_json(stats: &TaskStats) -> Value {
    json!({
        "window_ms": millis(stats.window),
        "oldest_due_age_ms": stats.oldest_due_age.map(millis),
        "counts": stats.counts.iter().map(|c| json!({
            "queue": c.queue, "name": c.name, "status": c.status.as_str(), "count": c.count,
        })).collect::<Vec<_>>(),
        "running_by_worker": stats.running_by_worker.iter().map(|w| json!({
            "worker": w.worker, "running": w.running,
        })).collect::<Vec<_>>(),
    })
}
