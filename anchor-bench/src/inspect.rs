//! `--mode inspect`: how long the operator's reads take on a large table (`list_tasks`
//! with and without filters, a page deep in the table, `stats`, `queues`), the calls behind
//! `anchor tasks list|stats` and `anchor queues list`. The table gets `--completed-rows`
//! completed tasks finished over the last ten days (default 1M), a failed task in every
//! 50th, and 50k pending ones over three queues and five names; then it is vacuumed and
//! analysed as autovacuum would have done by then.

use std::time::{Duration, Instant};

use anchor_runtime::{Client, TaskFilter, TaskStatus};
use anyhow::{Context, Result};

use crate::db::{self, Monitor, Settings};

/// Medians in milliseconds of each read.
pub struct Report {
    pub rows: i64,
    pub figures: Vec<(&'static str, f64)>,
}

/// Times `f` `n` times and returns the median in milliseconds.
async fn median_ms<F, Fut, T>(n: usize, mut f: F) -> Result<f64>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anchor_runtime::Result<T>>,
{
    let mut samples: Vec<Duration> = Vec::with_capacity(n);
    for _ in 0..n {
        let started = Instant::now();
        f().await?;
        samples.push(started.elapsed());
    }
    samples.sort();
    Ok(samples[n / 2].as_secs_f64() * 1000.0)
}

pub async fn run(settings: &Settings, finished_rows: u64) -> Result<Report> {
    let client: Client = db::prepare(settings).await?;
    let monitor = Monitor::connect(settings).await?;
    monitor.prefill_inspection(finished_rows).await?;
    let rows = monitor.count_all().await?;
    // A page deep in the table: below the middle of the ids.
    let middle = anchor_runtime::TaskFilter::default().with_limit(1);
    let newest = client.list_tasks(&middle).await?;
    let top = newest
        .tasks
        .first()
        .map(|t| t.id.get())
        .context("an empty table")?;
    let deep: anchor_runtime::TaskCursor = (top / 2).to_string().parse()?;

    let n = 21;
    let mut figures = Vec::new();
    let all = TaskFilter::default();
    figures.push(("list_ms", median_ms(n, || client.list_tasks(&all)).await?));
    let failed = TaskFilter::default().with_status(TaskStatus::Failed);
    figures.push((
        "list_failed_ms",
        median_ms(n, || client.list_tasks(&failed)).await?,
    ));
    let failed_in = TaskFilter::default()
        .with_status(TaskStatus::Failed)
        .with_queue("emails");
    figures.push((
        "list_failed_queue_ms",
        median_ms(n, || client.list_tasks(&failed_in)).await?,
    ));
    let pending_name = TaskFilter::default()
        .with_status(TaskStatus::Pending)
        .with_name("Report");
    figures.push((
        "list_pending_name_ms",
        median_ms(n, || client.list_tasks(&pending_name)).await?,
    ));
    let deep_page = TaskFilter::default().with_name("Noop").after(deep);
    figures.push((
        "list_deep_page_ms",
        median_ms(n, || client.list_tasks(&deep_page)).await?,
    ));
    figures.push(("stats_ms", median_ms(n, || client.stats()).await?));
    figures.push((
        "stats_24h_ms",
        median_ms(n, || client.stats_over(Duration::from_secs(86_400))).await?,
    ));
    figures.push(("queues_ms", median_ms(n, || client.queues()).await?));
    Ok(Report { rows, figures })
}
