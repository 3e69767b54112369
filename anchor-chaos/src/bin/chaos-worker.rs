//! A worker process for the chaos suite: runs every task of `anchor-chaos/api/tasks.yaml`
//! with the executors that record each execution in the ledger, until SIGTERM/SIGINT.
//!
//! ```text
//! DATABASE_URL=postgres://... chaos-worker --worker-id w1 --concurrency 10 --lease-ms 2000
//! ```
//!
//! Every connection it opens carries the worker id as `application_name`, which the audit
//! trigger records and the tests use to find this process's backends.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anchor_chaos::ledger::url_with_application_name;
use anchor_chaos::zgen::taskgen;
use anchor_chaos::{ChaosExecutor, Ledger};
use anchor_runtime::{Client, Registry, Worker, WorkerConfig};
use anyhow::Context;
use clap::Parser;

#[derive(Parser, Debug)]
#[command(about = "A chaos-suite worker: runs the chaos tasks and records every execution")]
struct Args {
    /// The database (postgres:// URL).
    #[arg(long, env = "DATABASE_URL")]
    database_url: String,
    /// This worker's id: its lease owner name and its connections' application_name.
    #[arg(long, env = "CHAOS_WORKER_ID")]
    worker_id: String,
    /// Tasks run at once.
    #[arg(long, default_value_t = 10)]
    concurrency: usize,
    /// Lease length in milliseconds.
    #[arg(long, default_value_t = 2000)]
    lease_ms: u64,
    /// Poll interval in milliseconds.
    #[arg(long, default_value_t = 200)]
    poll_ms: u64,
    /// Shutdown grace in milliseconds.
    #[arg(long, default_value_t = 5000)]
    grace_ms: u64,
    /// The runtime's pool size.
    #[arg(long, default_value_t = anchor_runtime::DEFAULT_POOL_SIZE)]
    pool_size: usize,
    /// The ledger's pool size (default: concurrency + 2).
    #[arg(long)]
    ledger_pool_size: Option<usize>,
    /// Also enqueue this many `Work` tasks, one at a time, through the worker's own client
    /// (as a service that enqueues and works in one process; they take local dispatch while
    /// the worker is idle).
    #[arg(long, default_value_t = 0)]
    enqueue: i64,
    /// The `n` of the first task this process enqueues (`n` must be unique per task).
    #[arg(long, default_value_t = 0)]
    enqueue_first: i64,
    /// Milliseconds between this process's enqueues.
    #[arg(long, default_value_t = 5)]
    enqueue_every_ms: u64,
    /// How long each task this process enqueues sleeps, in milliseconds.
    #[arg(long, default_value_t = 20)]
    enqueue_sleep_ms: i64,
    /// Enqueue a mix instead of `Work` only: odd `n` as `Plain` (no retry policy), every
    /// `n` that is 10 modulo 20 as `PlainDoomed` (fails into its `onFailed` handler), the
    /// rest as `Work`. See [`mixed_task`].
    #[arg(long)]
    enqueue_mix: bool,
}

/// Which task the `--enqueue-mix` enqueuer sends for `n`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mixed {
    Work,
    Plain,
    PlainDoomed,
}

/// The task the `--enqueue-mix` enqueuer sends for `n` (the tests count on this rule).
fn mixed_task(n: i64) -> Mixed {
    if n % 20 == 10 {
        Mixed::PlainDoomed
    } else if n % 2 == 1 {
        Mixed::Plain
    } else {
        Mixed::Work
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(Args::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("chaos-worker: {err:#}");
            ExitCode::from(2)
        }
    }
}

/// Enqueues `Work { n, sleep_ms }` (or, with `mix`, the task [`mixed_task`] picks) for each
/// `n` of `range`, one at a time, `every` apart. A failed enqueue is retried (the database
/// may be restarting); the task count must match.
async fn enqueue_work(
    runner: taskgen::TaskRunner,
    range: std::ops::Range<i64>,
    every: Duration,
    sleep_ms: i64,
    mix: bool,
) {
    for n in range {
        let task = if mix { mixed_task(n) } else { Mixed::Work };
        loop {
            let result = match task {
                Mixed::Work => {
                    runner
                        .run_work(&taskgen::WorkParameters { n, sleep_ms }, &[])
                        .await
                }
                Mixed::Plain => {
                    runner
                        .run_plain(&taskgen::PlainParameters { n, sleep_ms }, &[])
                        .await
                }
                Mixed::PlainDoomed => {
                    runner
                        .run_plain_doomed(&taskgen::PlainDoomedParameters { n, sleep_ms }, &[])
                        .await
                }
            };
            match result {
                Ok(_) => break,
                Err(err) => {
                    eprintln!("chaos-worker: enqueue of {task:?} {n} failed, retrying: {err}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
        tokio::time::sleep(every).await;
    }
    eprintln!("chaos-worker: enqueued everything");
}

async fn run(args: Args) -> anyhow::Result<()> {
    let url = url_with_application_name(&args.database_url, &args.worker_id);
    let client = Client::connect_with_pool_size(&url, args.pool_size)
        .await
        .context("cannot set up the runtime's client")?;
    let mut ledger = Ledger::connect(
        &args.database_url,
        &args.worker_id,
        args.ledger_pool_size.unwrap_or(args.concurrency + 2),
    )
    .map_err(|e| anyhow::anyhow!("cannot set up the ledger: {e}"))?;
    let offset = ledger
        .sync_clock()
        .await
        .map_err(|e| anyhow::anyhow!("cannot read the database's clock: {e}"))?;
    let mut registry = Registry::new();
    taskgen::register(
        &mut registry,
        Arc::new(ChaosExecutor::new(ledger.clone(), client.clone())),
    );
    let config = WorkerConfig::default()
        .with_worker_id(&args.worker_id)
        .with_concurrency(args.concurrency)
        .with_lease_duration(Duration::from_millis(args.lease_ms))
        .with_poll_interval(Duration::from_millis(args.poll_ms))
        .with_shutdown_grace(Duration::from_millis(args.grace_ms));
    // The test waits for this line before injecting faults.
    eprintln!(
        "chaos-worker {} ready (database clock minus this process's: {} ms)",
        args.worker_id,
        offset.num_milliseconds()
    );
    let enqueuer = (args.enqueue > 0).then(|| {
        tokio::spawn(enqueue_work(
            taskgen::TaskRunner::new(client.clone()),
            args.enqueue_first..args.enqueue_first + args.enqueue,
            Duration::from_millis(args.enqueue_every_ms),
            args.enqueue_sleep_ms,
            args.enqueue_mix,
        ))
    });
    Worker::new(client, registry, config)?
        .run_until_signal()
        .await;
    if let Some(enqueuer) = enqueuer {
        enqueuer.abort();
    }
    // Runs aborted at shutdown write their end in the background: let them land.
    ledger.drain(Duration::from_secs(10)).await;
    eprintln!("chaos-worker {} stopped", args.worker_id);
    Ok(())
}
