//! Mixed: enqueue and work at the same time for a fixed duration.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::db::{self, Monitor, NoopParams, Settings, NOOP};
use crate::workers::Workers;
use crate::Args;

/// Tasks per enqueue call (pgbench's batched mixed script inserts 100 per round too).
const BATCH: usize = 100;

/// The most tasks enqueued but not yet handled; the enqueuer waits above it, so the run
/// measures a steady state rather than how fast a backlog can grow.
const MAX_BACKLOG: u64 = 2_000;

pub struct Report {
    pub duration_s: f64,
    pub completed: i64,
    pub enqueued: u64,
    pub rss_mb: f64,
}

pub async fn run(settings: &Settings, args: &Args) -> Result<Report> {
    let client = db::prepare(settings).await?;
    let monitor = Monitor::connect(settings).await?;
    monitor.prefill_completed(args.completed_rows).await?;
    let workers = Workers::start(
        settings,
        &client,
        args.concurrency,
        args.prefetch,
        args.workers,
        0.0,
    )
    .await?;
    let counter = workers.counter().cloned();
    let started = Instant::now();
    let duration = Duration::from_secs_f64(args.duration);
    let mut enqueued: u64 = 0;
    while started.elapsed() < duration {
        // With worker processes the handled count is not visible here; the backlog is then
        // checked in the database.
        let backlog = match &counter {
            Some(c) => enqueued.saturating_sub(c.handled()),
            None => u64::try_from(monitor.count_status(0).await?).unwrap_or(0),
        };
        if backlog > MAX_BACKLOG {
            tokio::time::sleep(Duration::from_millis(1)).await;
            continue;
        }
        let batch: Vec<NoopParams> = (enqueued..enqueued + BATCH as u64)
            .map(|i| NoopParams::new(i, args.payload_bytes))
            .collect();
        client
            .enqueue_many(&NOOP, &batch, &[])
            .await
            .context("enqueue failed")?;
        enqueued += BATCH as u64;
    }
    let duration_s = started.elapsed().as_secs_f64();
    let completed = monitor.count_status(2).await? - args.completed_rows as i64;
    let stopped = workers.stop().await?;
    Ok(Report {
        duration_s,
        completed,
        enqueued,
        rss_mb: stopped.rss_mb,
    })
}
