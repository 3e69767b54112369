//! Setting up the benchmark's tables and asking the database how far a run has got.

use std::time::Duration;

use anchor_runtime::tokio_postgres::{self, NoTls};
use anchor_runtime::{Client, RetryDefaults, TaskDefinition};
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

/// Where the benchmark runs.
#[derive(Debug, Clone)]
pub struct Settings {
    pub url: String,
    pub schema: String,
}

/// A benchmark task: no cron, no handler, no default parameters, the default timeout.
pub const fn bench_task(name: &'static str, retry: Option<RetryDefaults>) -> TaskDefinition {
    TaskDefinition {
        name,
        retry,
        // The default timeout, one hour.
        timeout_ms: 3_600_000,
        cron: None,
        on_failed: None,
        default_params: "{}",
        max_rescues: None,
        queue: "default",
        priority: 0,
    }
}

/// The no-op task every mode enqueues: no retry policy, the default timeout.
pub static NOOP: TaskDefinition = bench_task("BenchNoop", None);

/// The task `--fail-rate` enqueues instead: the no-op task with one immediate retry. Its
/// handler fails the first run of the chosen share of tasks (see [`fails_first_run`]).
pub static FLAKY: TaskDefinition = bench_task(
    "BenchFlaky",
    Some(RetryDefaults {
        intervals_ms: &[0],
        always_retry_on_failure: false,
        max_retries: Some(1),
    }),
);

/// The same as [`FLAKY`] without a retry: `--fail-rate` with `--no-retry` fails the chosen
/// tasks for good.
pub static DOOMED: TaskDefinition = bench_task("BenchDoomed", None);

/// Whether task `i` fails its first run at `fail_rate` (0 to 1): a fixed spread over the
/// task numbers, so that failures are evenly mixed with successes and every run of the
/// benchmark fails the same tasks.
pub fn fails_first_run(i: u64, fail_rate: f64) -> bool {
    // Multiplicative hashing spreads consecutive numbers over [0, 1).
    let spread = (i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 11) as f64 / (1u64 << 53) as f64;
    spread < fail_rate
}

/// How many of tasks `0..jobs` fail their first run at `fail_rate`.
pub fn failing_tasks(jobs: u64, fail_rate: f64) -> u64 {
    (0..jobs).filter(|&i| fails_first_run(i, fail_rate)).count() as u64
}

/// The no-op task's parameters: a number, and padding for `--payload-bytes`.
#[derive(Debug, Serialize, Deserialize)]
pub struct NoopParams {
    pub i: u64,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub pad: String,
}

impl NoopParams {
    pub fn new(i: u64, payload_bytes: usize) -> NoopParams {
        NoopParams {
            i,
            pad: "x".repeat(payload_bytes),
        }
    }
}

/// A client on the benchmark's schema, migrated, with an empty task table.
pub async fn prepare(settings: &Settings) -> Result<Client> {
    let client = connect(settings).await?;
    anchor_runtime::migrate(&client)
        .await
        .context("cannot migrate the benchmark schema")?;
    let monitor = Monitor::connect(settings).await?;
    monitor
        .conn
        .batch_execute(&format!(
            "TRUNCATE {} RESTART IDENTITY",
            monitor.tasks_table
        ))
        .await
        .context("cannot empty the task table")?;
    Ok(client)
}

/// A client on the benchmark's schema (no migration).
pub async fn connect(settings: &Settings) -> Result<Client> {
    let client = Client::connect(&settings.url)
        .await
        .context("cannot connect")?
        .try_with_schema(settings.schema.clone())
        .context("invalid --schema")?;
    Ok(client)
}

/// A dedicated connection for set-up and progress checks, outside the runtime's pool so the
/// checks never take a connection the worker wants.
pub struct Monitor {
    conn: tokio_postgres::Client,
    tasks_table: String,
}

impl Monitor {
    pub async fn connect(settings: &Settings) -> Result<Monitor> {
        let (conn, connection) = tokio_postgres::connect(&settings.url, NoTls)
            .await
            .context("cannot open the monitoring connection")?;
        tokio::spawn(async move {
            if let Err(err) = connection.await {
                eprintln!("anchor-bench: monitoring connection failed: {err}");
            }
        });
        Ok(Monitor {
            conn,
            tasks_table: format!("\"{}\".tasks", settings.schema.replace('"', "\"\"")),
        })
    }

    /// Inserts `rows` completed tasks (finished an hour ago, well inside the default
    /// retention), then vacuums and analyses the table as autovacuum would have by then.
    pub async fn prefill_completed(&self, rows: u64) -> Result<()> {
        if rows == 0 {
            return Ok(());
        }
        let rows = i64::try_from(rows).context("--completed-rows is too large")?;
        let t = &self.tasks_table;
        self.conn
            .execute(
                &format!(
                    "INSERT INTO {t} (name, status, attempts, timeout_ms, payload, run_after, \
                       created_at, started_at, finished_at, updated_at) \
                     SELECT $1, 2, 1, 3600000, jsonb_build_object('i', g), \
                       now() - interval '1 hour', now() - interval '1 hour', \
                       now() - interval '1 hour', now() - interval '1 hour', \
                       now() - interval '1 hour' \
                     FROM generate_series(1, $2::bigint) g"
                ),
                &[&NOOP.name, &rows],
            )
            .await
            .context("cannot pre-fill completed rows")?;
        self.conn
            .batch_execute(&format!("VACUUM ANALYZE {t}"))
            .await
            .context("cannot vacuum the pre-filled table")?;
        // A checkpoint keeps the fill's writes out of the measurement; it needs a privileged
        // role, so a refusal is only noted.
        if let Err(err) = self.conn.batch_execute("CHECKPOINT").await {
            eprintln!("anchor-bench: no checkpoint after the pre-fill ({err})");
        }
        Ok(())
    }

    /// The table of `--mode inspect`: `finished` completed tasks finished over the last ten
    /// days with every 50th failed instead, and 50k pending tasks over three queues and five
    /// names (a tenth not due yet); vacuumed and analysed.
    pub async fn prefill_inspection(&self, finished: u64) -> Result<()> {
        let finished = i64::try_from(finished).context("--completed-rows is too large")?;
        let t = &self.tasks_table;
        self.conn
            .execute(
                &format!(
                    "INSERT INTO {t} (name, queue, status, attempts, timeout_ms, payload, \
                       run_after, created_at, started_at, finished_at, updated_at, errors) \
                     SELECT (ARRAY['Noop','Email','Report','Digest','Cleanup'])[1 + g % 5], \
                       (ARRAY['default','emails','reports'])[1 + g % 3], \
                       CASE WHEN g % 50 = 0 THEN 3 ELSE 2 END, 1, 3600000, \
                       jsonb_build_object('i', g), f, f, f, f, f, \
                       CASE WHEN g % 50 = 0 THEN jsonb_build_array(jsonb_build_object( \
                         'attempt', 1, 'at', f, 'message', 'boom')) ELSE '[]'::jsonb END \
                     FROM generate_series(1, $1::bigint) g, \
                       LATERAL (SELECT now() - ($1::bigint - g) * (interval '10 days' / $1::bigint) AS f) x"
                ),
                &[&finished],
            )
            .await
            .context("cannot pre-fill finished rows")?;
        self.conn
            .execute(
                &format!(
                    "INSERT INTO {t} (name, queue, timeout_ms, payload, run_after) \
                     SELECT (ARRAY['Noop','Email','Report','Digest','Cleanup'])[1 + g % 5], \
                       (ARRAY['default','emails','reports'])[1 + g % 3], 3600000, \
                       jsonb_build_object('i', g), \
                       CASE WHEN g % 10 = 0 THEN now() + interval '1 hour' ELSE now() END \
                     FROM generate_series(1, 50000) g"
                ),
                &[],
            )
            .await
            .context("cannot pre-fill pending rows")?;
        self.conn
            .batch_execute(&format!("VACUUM ANALYZE {t}"))
            .await
            .context("cannot vacuum the pre-filled table")?;
        Ok(())
    }

    /// Every row of the task table.
    pub async fn count_all(&self) -> Result<i64> {
        let row = self
            .conn
            .query_one(&format!("SELECT count(*) FROM {}", self.tasks_table), &[])
            .await
            .context("cannot count tasks")?;
        Ok(row.get(0))
    }

    /// What the harness's pgbench drain does between loading its queue and draining it:
    /// analyse the table and checkpoint, so the drain does not pay for the load's dirty
    /// pages (a checkpoint that starts during the drain) and both start from the same state.
    /// A role that may not checkpoint gets a note and the drain goes on.
    pub async fn settle(&self) -> Result<()> {
        self.conn
            .batch_execute(&format!("ANALYZE {}", self.tasks_table))
            .await
            .context("cannot analyse the task table")?;
        if let Err(err) = self.conn.batch_execute("CHECKPOINT").await {
            eprintln!("anchor-bench: no checkpoint before the drain ({err})");
        }
        Ok(())
    }

    /// Counts tasks with `status` (0 pending, 1 running, 2 completed, 3 failed).
    pub async fn count_status(&self, status: i16) -> Result<i64> {
        let row = self
            .conn
            .query_one(
                &format!(
                    "SELECT count(*) FROM {} WHERE status = $1",
                    self.tasks_table
                ),
                &[&status],
            )
            .await
            .context("cannot count tasks")?;
        Ok(row.get(0))
    }

    /// Whether any task is still pending or running. Both checks read the small partial
    /// indexes, so polling this does not compete with the worker the way a count would.
    pub async fn unfinished(&self) -> Result<bool> {
        let t = &self.tasks_table;
        let row = self
            .conn
            .query_one(
                &format!(
                    "SELECT EXISTS (SELECT 1 FROM {t} WHERE status = 0) \
                         OR EXISTS (SELECT 1 FROM {t} WHERE status = 1)"
                ),
                &[],
            )
            .await
            .context("cannot check progress")?;
        Ok(row.get(0))
    }

    /// Waits until no task is pending or running, checking every `every`.
    pub async fn wait_until_finished(&self, every: Duration) -> Result<()> {
        while self.unfinished().await? {
            tokio::time::sleep(every).await;
        }
        Ok(())
    }

    /// Checks that exactly `completed` tasks are completed and `failed` failed.
    pub async fn check_outcomes(&self, completed: i64, failed: i64) -> Result<()> {
        let found_completed = self.count_status(2).await?;
        let found_failed = self.count_status(3).await?;
        if found_completed != completed || found_failed != failed {
            bail!(
                "expected {completed} completed and {failed} failed tasks; found \
                 {found_completed} completed, {found_failed} failed"
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_failing_share_is_close_to_the_rate() {
        assert_eq!(failing_tasks(10_000, 0.0), 0);
        assert_eq!(failing_tasks(10_000, 1.0), 10_000);
        let n = failing_tasks(20_000, 0.3);
        assert!((5_800..=6_200).contains(&n), "{n}");
    }
}
