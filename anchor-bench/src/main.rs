//! `anchor-bench`: measures anchor's runtime the way `bench-peers` measures the other Postgres
//! queues, and prints the same one-line results so its rows land in the same table.
//!
//! - `--mode throughput`: bulk-enqueue N no-op tasks (`Client::enqueue_many`, calls of 5000,
//!   timed as `enqueue_s`), analyse the table and checkpoint as the harness's pgbench drain
//!   does (`--no-settle` skips it), start a worker with concurrency C and time until all N
//!   are completed *in the database* (`work_s`, worker start-up included).
//!   `--fail-rate F` fails the first run of that share of the tasks; each is retried at once
//!   (or, with `--no-retry`, fails for good), to measure the retry and failure paths.
//! - `--mode latency`: start a worker, let it idle 1 s, then enqueue one task at a time
//!   (`Client::enqueue`) carrying a timestamp; the handler records enqueue-call-to-start time.
//! - `--mode mixed`: enqueue (batches of 100) and work at the same time for `--duration`.
//!
//! The benchmark empties the task table of the schema it uses (default `anchor_bench`), so
//! point it at a throwaway database. See `docs/performance.md`.

mod db;
mod inspect;
mod latency;
mod mixed;
mod rss;
mod throughput;
mod workers;

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Result};
use clap::{Parser, ValueEnum};

/// The name the results carry in the `PEER=` column.
pub const PEER: &str = "anchor";

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    Throughput,
    Latency,
    Mixed,
    /// The operator's reads (list, stats, queues) on a table of `--completed-rows` finished
    /// tasks (default 1M) and 50k pending ones.
    Inspect,
    /// Internal: run one worker process for `--workers P` (started by the benchmark itself).
    #[value(hide = true)]
    WorkerChild,
}

/// Benchmarks anchor's runtime against a PostgreSQL database; prints one `PEER=anchor ...` line.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// What to measure.
    #[arg(long, env = "MODE", value_enum, default_value = "throughput")]
    mode: Mode,
    /// The database (it should be a throwaway one: the bench schema's task table is emptied).
    #[arg(long, env = "DATABASE_URL")]
    url: String,
    /// The schema the task tables are created in.
    #[arg(long, default_value = "anchor_bench")]
    schema: String,
    /// Throughput mode: how many no-op tasks to enqueue and drain.
    #[arg(long = "jobs", env = "N", default_value_t = 20_000)]
    jobs: usize,
    /// Worker concurrency (per worker process with `--workers`).
    #[arg(long, env = "C", default_value_t = 10)]
    concurrency: usize,
    /// Latency mode: how many tasks to time.
    #[arg(long = "lat-n", env = "LAT_N", default_value_t = 200)]
    lat_n: usize,
    /// Extra payload bytes per task (a string field padded to this length).
    #[arg(long, default_value_t = 0)]
    payload_bytes: usize,
    /// Worker processes: 0 runs the worker inside the benchmark process (as the peers'
    /// drivers do); P ≥ 1 starts P worker processes (this binary re-executed).
    #[arg(long, default_value_t = 0)]
    workers: usize,
    /// Completed tasks to put in the table before measuring, to show the cost of a large
    /// table (they are vacuumed and analysed, as autovacuum would have done by then).
    #[arg(long, default_value_t = 0)]
    completed_rows: u64,
    /// Mixed mode: how long to run, in seconds.
    #[arg(long, env = "DURATION", default_value_t = 10.0)]
    duration: f64,
    /// Override the worker's prefetch (tasks claimed beyond free slots). Only for
    /// experiments: the reported figures use anchor's defaults.
    #[arg(long)]
    prefetch: Option<usize>,
    /// Throughput mode: start draining right after the bulk enqueue. By default the table is
    /// analysed and a checkpoint taken first, as the harness's pgbench drain does, so that an
    /// autovacuum ANALYZE of the fresh rows (its snapshot keeps claimed rows' index entries
    /// alive) or a checkpoint does not land in the timed drain.
    #[arg(long)]
    no_settle: bool,
    /// Latency mode: turn off local dispatch, so every probe goes through NOTIFY and a
    /// claim, as a task enqueued by another process (web and worker processes apart) does.
    #[arg(long)]
    no_local_dispatch: bool,
    /// Throughput mode: the share of tasks (0 to 1) whose first run fails. Each is retried
    /// once, at once, so every task still ends completed; `jobs_per_s` counts tasks, not runs.
    #[arg(long, default_value_t = 0.0)]
    fail_rate: f64,
    /// Throughput mode with `--fail-rate`: the failing tasks have no retry policy and end
    /// failed (the final-failure path).
    #[arg(long)]
    no_retry: bool,
    /// Give up (exit 2) after this many seconds.
    #[arg(long, env = "TIMEOUT_S", default_value_t = 170)]
    timeout_s: u64,
}

fn main() -> ExitCode {
    let args = Args::parse();
    init_tracing();
    if args.mode != Mode::WorkerChild {
        spawn_watchdog(args.timeout_s);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("anchor-bench: cannot start the async runtime: {err}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("anchor-bench: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<()> {
    if args.concurrency == 0 {
        bail!("--concurrency must be at least 1");
    }
    let settings = db::Settings {
        url: args.url.clone(),
        schema: args.schema.clone(),
    };
    if !(0.0..=1.0).contains(&args.fail_rate) {
        bail!(
            "--fail-rate must be between 0 and 1, got {}",
            args.fail_rate
        );
    }
    match args.mode {
        Mode::WorkerChild => {
            workers::run_child(&settings, args.concurrency, args.prefetch, args.fail_rate).await
        }
        Mode::Throughput => {
            if args.jobs == 0 {
                bail!("--jobs must be at least 1");
            }
            let r = throughput::run(&settings, &args).await?;
            println!(
                "PEER={PEER} N={} C={} enqueue_s={:.3} work_s={:.3} jobs_per_s={} handled={} \
                 workers={} completed_rows={} payload_bytes={} fail_rate={} failing={} \
                 retried={} rss_mb={:.1}",
                args.jobs,
                args.concurrency,
                r.enqueue_s,
                r.work_s,
                (args.jobs as f64 / r.work_s).round() as u64,
                r.handled,
                args.workers.max(1),
                args.completed_rows,
                args.payload_bytes,
                args.fail_rate,
                r.failing,
                !args.no_retry && r.failing > 0,
                r.rss_mb,
            );
            Ok(())
        }
        Mode::Latency => {
            if args.lat_n == 0 {
                bail!("--lat-n must be at least 1");
            }
            let r = latency::run(&settings, &args).await?;
            println!(
                "PEER={PEER} MODE=latency LAT_N={} p50_ms={:.2} p99_ms={:.2} max_ms={:.2} rss_mb={:.1}",
                r.samples, r.p50_ms, r.p99_ms, r.max_ms, r.rss_mb
            );
            Ok(())
        }
        Mode::Inspect => {
            let rows = if args.completed_rows == 0 {
                1_000_000
            } else {
                args.completed_rows
            };
            let r = inspect::run(&settings, rows).await?;
            let figures: Vec<String> = r
                .figures
                .iter()
                .map(|(name, ms)| format!("{name}={ms:.2}"))
                .collect();
            println!(
                "PEER={PEER} MODE=inspect rows={} {}",
                r.rows,
                figures.join(" ")
            );
            Ok(())
        }
        Mode::Mixed => {
            if !args.duration.is_finite() || args.duration <= 0.0 {
                bail!("--duration must be a positive number of seconds");
            }
            let r = mixed::run(&settings, &args).await?;
            println!(
                "PEER={PEER} MODE=mixed DONE=update clients={} duration_s={:.1} jobs_per_s={} \
                 jobs_done={} enqueued={} rss_mb={:.1}",
                args.concurrency,
                r.duration_s,
                (r.completed as f64 / r.duration_s).round() as u64,
                r.completed,
                r.enqueued,
                r.rss_mb
            );
            Ok(())
        }
    }
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Ends the process if a run hangs, as the peers' drivers do, so a harness never waits forever.
fn spawn_watchdog(timeout_s: u64) {
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(timeout_s));
        eprintln!("PEER={PEER} TIMEOUT after {timeout_s} s");
        std::process::exit(2);
    });
}
