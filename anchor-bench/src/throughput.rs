//! Throughput: drain a backlog of N no-op tasks enqueued in bulk beforehand.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::db::{self, Monitor, NoopParams, Settings, DOOMED, FLAKY, NOOP};
use crate::workers::Workers;
use crate::Args;

/// The peers' drivers enqueue in calls of 5000; so does this.
const ENQUEUE_CHUNK: usize = 5000;

/// How often the database is asked whether the drain is complete. The check reads only the
/// partial indexes of pending and running rows.
const POLL: Duration = Duration::from_millis(2);

pub struct Report {
    pub enqueue_s: f64,
    pub work_s: f64,
    pub handled: u64,
    pub rss_mb: f64,
    /// Tasks whose first run failed (`--fail-rate`).
    pub failing: u64,
}

pub async fn run(settings: &Settings, args: &Args) -> Result<Report> {
    let client = db::prepare(settings).await?;
    let monitor = Monitor::connect(settings).await?;
    monitor.prefill_completed(args.completed_rows).await?;

    // Like the peers, build the parameters first and time the enqueue calls.
    let params: Vec<NoopParams> = (0..args.jobs as u64)
        .map(|i| NoopParams::new(i, args.payload_bytes))
        .collect();
    // With --fail-rate the tasks are the same no-op, under a definition with one immediate
    // retry (or none, with --no-retry) whose handler fails the chosen first runs.
    let def = match (args.fail_rate > 0.0, args.no_retry) {
        (false, _) => &NOOP,
        (true, false) => &FLAKY,
        (true, true) => &DOOMED,
    };
    let failing = db::failing_tasks(args.jobs as u64, args.fail_rate);
    let started = Instant::now();
    for chunk in params.chunks(ENQUEUE_CHUNK) {
        client
            .enqueue_many(def, chunk, &[])
            .await
            .context("bulk enqueue failed")?;
    }
    let enqueue_s = started.elapsed().as_secs_f64();
    drop(params);
    let queued = monitor.count_status(0).await?;
    if queued != args.jobs as i64 {
        bail!("expected {} queued tasks, found {queued}", args.jobs);
    }
    // The harness's pgbench drain analyses and checkpoints between loading and draining;
    // so does this, unless told not to (the peers' drivers do neither).
    if !args.no_settle {
        monitor.settle().await?;
    }

    let started = Instant::now();
    let workers = Workers::start(
        settings,
        &client,
        args.concurrency,
        args.prefetch,
        args.workers,
        args.fail_rate,
    )
    .await?;
    // Every task runs once; a failed first run runs again unless --no-retry.
    let runs = args.jobs as u64 + if args.no_retry { 0 } else { failing };
    if let Some(counter) = workers.counter() {
        counter.wait_for(runs).await;
    }
    // A run counts only once the database shows every task completed.
    monitor.wait_until_finished(POLL).await?;
    let work_s = started.elapsed().as_secs_f64();
    let stopped = workers.stop().await?;
    let failed = if args.no_retry { failing as i64 } else { 0 };
    monitor
        .check_outcomes(
            args.jobs as i64 - failed + args.completed_rows as i64,
            failed,
        )
        .await?;
    Ok(Report {
        enqueue_s,
        work_s,
        handled: stopped.handled,
        rss_mb: stopped.rss_mb,
        failing,
    })
}
