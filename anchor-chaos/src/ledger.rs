//! The ledger: one row per execution (task id, attempt, worker, start, end, outcome), and an
//! audit of every state change of a running task (who applied it, whose lease it was).
//!
//! Executions write the ledger through a pool of their own, each row in its own
//! transaction, so the record survives whatever happens to the worker's task afterwards:
//! a run killed mid-way leaves a row with no end, which the checker closes at the time the
//! test killed the process.
//!
//! The audit is a trigger on `anchor.tasks`: whenever a `running` task leaves `running`, it
//! records the task, the attempt, the lease owner and whether the lease had expired, and the
//! *actor* — the `application_name` of the session that made the change. Every chaos
//! worker connects with its worker id as `application_name`, so the checker can prove
//! that a completion was applied by the lease holder (the fenced-completion invariant)
//! without trusting the runtime's own bookkeeping.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anchor_runtime::chrono::{DateTime, TimeDelta, Utc};
use anchor_runtime::deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use anchor_runtime::tokio_postgres::{self, NoTls};
use anchor_runtime::TaskContext;
use tokio::sync::Notify;

/// The schema holding the ledger, the audit and the list of killed processes.
pub const SCHEMA_SQL: &str = r#"
CREATE SCHEMA IF NOT EXISTS chaos;

-- One row per execution, written when it starts; ended_at and outcome when it ends.
CREATE TABLE IF NOT EXISTS chaos.ledger (
    id         bigserial   PRIMARY KEY,
    task_id    bigint      NOT NULL,
    task_name  text        NOT NULL,
    attempt    integer     NOT NULL,
    worker     text        NOT NULL,
    started_at timestamptz NOT NULL,
    ended_at   timestamptz,
    -- ok, error, aborted (dropped by the runtime: lease lost, shutdown grace over, timeout),
    -- never-ran (the start's insert committed but its reply was lost, so no work was done).
    outcome    text,
    -- Drawn by the writer before the insert, so that an insert whose reply was lost (the
    -- server went down between commit and reply) can still be found and closed.
    run_key    text
);
CREATE INDEX IF NOT EXISTS ledger_task_idx ON chaos.ledger (task_id);
CREATE INDEX IF NOT EXISTS ledger_run_key_idx ON chaos.ledger (run_key);

-- Worker processes the test killed with SIGKILL, and when (their open runs end then).
CREATE TABLE IF NOT EXISTS chaos.kills (
    worker    text        NOT NULL,
    killed_at timestamptz NOT NULL
);

-- Worker processes the test froze with SIGSTOP, and when they were resumed.
CREATE TABLE IF NOT EXISTS chaos.pauses (
    worker     text        NOT NULL,
    paused_at  timestamptz NOT NULL,
    resumed_at timestamptz
);

-- Every change of a running task's status: who made it and whose lease it was. `attempt`
-- is the number of the run the change ends: a completion may be the first write that
-- counts its run as started, so it is read after the update as well as before.
CREATE TABLE IF NOT EXISTS chaos.transitions (
    id            bigserial   PRIMARY KEY,
    task_id       bigint      NOT NULL,
    task_name     text        NOT NULL,
    new_status    smallint    NOT NULL,
    attempt       integer     NOT NULL,
    lease_owner   text,
    lease_expired boolean     NOT NULL,
    actor         text        NOT NULL,
    at            timestamptz NOT NULL DEFAULT clock_timestamp()
);

CREATE OR REPLACE FUNCTION chaos.audit_transition() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO chaos.transitions
        (task_id, task_name, new_status, attempt, lease_owner, lease_expired, actor)
    VALUES
        (OLD.id, OLD.name, NEW.status, greatest(OLD.attempts, NEW.attempts), OLD.lease_owner,
         coalesce(OLD.lease_expires_at < now(), false),
         current_setting('application_name'));
    RETURN NEW;
END $$;

DROP TRIGGER IF EXISTS audit_transition ON anchor.tasks;
CREATE TRIGGER audit_transition AFTER UPDATE ON anchor.tasks
    FOR EACH ROW WHEN (OLD.status = 1 AND NEW.status <> 1)
    EXECUTE FUNCTION chaos.audit_transition();
"#;

/// Creates the ledger, the kill list and the audit trigger (after anchor's migrations).
pub async fn install(client: &tokio_postgres::Client) -> Result<(), tokio_postgres::Error> {
    client.batch_execute(SCHEMA_SQL).await
}

/// Appends `application_name=<name>` to a `postgres://` URL so the server (and the audit)
/// sees which process a session belongs to.
pub fn url_with_application_name(url: &str, name: &str) -> String {
    let separator = if url.contains('?') { '&' } else { '?' };
    format!("{url}{separator}application_name={name}")
}

/// Writes executions to the ledger through a pool of its own.
#[derive(Clone)]
pub struct Ledger {
    pool: Pool,
    worker: String,
    /// Runs whose end is not written yet: open runs, and ends still retrying in the
    /// background (an end written during an outage).
    in_flight: Arc<(AtomicUsize, Notify)>,
    /// The database's clock minus this process's (see [`Ledger::sync_clock`]).
    clock_offset: TimeDelta,
}

/// Numbers the run keys this process draws.
static RUN_KEYS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// How long a background ledger write keeps retrying before it gives up.
const WRITE_PATIENCE: Duration = Duration::from_secs(120);

impl Ledger {
    /// A ledger writer for `worker`, connecting to `database_url` with up to `pool_size`
    /// connections.
    pub fn connect(
        database_url: &str,
        worker: &str,
        pool_size: usize,
    ) -> Result<Ledger, Box<dyn std::error::Error + Send + Sync>> {
        let mut config: tokio_postgres::Config = database_url.parse()?;
        config.application_name(worker);
        config.connect_timeout(Duration::from_secs(5));
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(pool_size.max(1))
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(Duration::from_secs(5)))
            .create_timeout(Some(Duration::from_secs(5)))
            .recycle_timeout(Some(Duration::from_secs(5)))
            .build()?;
        Ok(Ledger {
            pool,
            worker: worker.to_string(),
            in_flight: Arc::new((AtomicUsize::new(0), Notify::new())),
            clock_offset: TimeDelta::zero(),
        })
    }

    /// Measures how far the database's clock is from this process's and writes every later
    /// start and end on the database's clock, so that runs of workers whose clocks are
    /// skewed (the clock-skew scenario shifts them) still compare correctly. Returns the
    /// offset (database minus local).
    pub async fn sync_clock(&mut self) -> Result<TimeDelta, String> {
        let conn = self.pool.get().await.map_err(|e| chain(&e))?;
        let mut best: Option<(TimeDelta, TimeDelta)> = None;
        // The reading with the shortest round trip bounds the error best.
        for _ in 0..5 {
            let before = Utc::now();
            let row = conn
                .query_one("SELECT clock_timestamp()", &[])
                .await
                .map_err(|e| chain(&e))?;
            let after = Utc::now();
            let db: DateTime<Utc> = row.get(0);
            let round_trip = after - before;
            let offset = db - (before + round_trip / 2);
            if best.is_none_or(|(rt, _)| round_trip < rt) {
                best = Some((round_trip, offset));
            }
        }
        self.clock_offset = best.map_or(TimeDelta::zero(), |(_, offset)| offset);
        Ok(self.clock_offset)
    }

    /// Now, on the database's clock.
    fn now(&self) -> DateTime<Utc> {
        Utc::now() + self.clock_offset
    }

    /// The worker id rows are written under.
    pub fn worker(&self) -> &str {
        &self.worker
    }

    /// Records the start of an execution. When this fails (the database is unreachable) the
    /// execution must not do its work: it returns a retryable error instead.
    ///
    /// The write runs on a task of its own: when the runtime drops the execution while the
    /// insert is in flight (a timeout, a self-fenced lease), the row still gets its end,
    /// written as `aborted` by the `Run` nobody received.
    pub async fn start(&self, ctx: &TaskContext) -> Result<Run, String> {
        let started_at = self.now();
        let attempt = i32::try_from(ctx.attempt()).unwrap_or(i32::MAX);
        let ledger = self.clone();
        let (task_id, task_name) = (ctx.id(), ctx.name().to_string());
        let run_key = format!(
            "{}-{}-{}",
            self.worker,
            std::process::id(),
            RUN_KEYS.fetch_add(1, Ordering::Relaxed)
        );
        let (tx, rx) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let write = async {
                let conn = ledger.pool.get().await.map_err(|e| chain(&e))?;
                let row = conn
                    .query_one(
                        "INSERT INTO chaos.ledger \
                           (task_id, task_name, attempt, worker, started_at, run_key) \
                         VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
                        &[
                            &task_id,
                            &task_name,
                            &attempt,
                            &ledger.worker,
                            &started_at,
                            &run_key,
                        ],
                    )
                    .await
                    .map_err(|e| chain(&e))?;
                Ok::<i64, String>(row.get(0))
            };
            let result = match tokio::time::timeout(Duration::from_secs(10), write).await {
                Ok(Ok(id)) => Ok(Run::open(ledger.clone(), id)),
                Ok(Err(err)) => Err(format!("cannot record the execution start: {err}")),
                Err(_) => Err("recording the execution start timed out".to_string()),
            };
            if result.is_err() {
                // The insert may have committed with its reply lost; such a row would stay
                // open for ever though no work was done: close it, if it exists, as
                // `never-ran` at its own start (a run of no length overlaps nothing).
                ledger.opened();
                ledger.retry_in_background(move |ledger| {
                    let run_key = run_key.clone();
                    async move { ledger.close_unacknowledged(&run_key).await }
                });
            }
            // A receiver that is gone drops the run here, which records it as aborted.
            let _ = tx.send(result);
        });
        rx.await
            .unwrap_or_else(|_| Err("recording the execution start was interrupted".to_string()))
    }

    /// Counts a run as open until its end is written.
    fn opened(&self) {
        self.in_flight.0.fetch_add(1, Ordering::SeqCst);
    }

    /// A run's end was written (or given up on).
    fn closed(&self) {
        let (count, done) = &*self.in_flight;
        count.fetch_sub(1, Ordering::SeqCst);
        done.notify_waiters();
    }

    /// Writes an execution's end once; the caller retries.
    async fn try_write_end(
        &self,
        id: i64,
        ended_at: DateTime<Utc>,
        outcome: &'static str,
    ) -> Result<(), String> {
        let conn = self.pool.get().await.map_err(|e| chain(&e))?;
        conn.execute(
            "UPDATE chaos.ledger SET ended_at = $2, outcome = $3 WHERE id = $1",
            &[&id, &ended_at, &outcome],
        )
        .await
        .map_err(|e| chain(&e))?;
        Ok(())
    }

    /// Closes the row of a start whose insert reply was lost, if the insert committed.
    async fn close_unacknowledged(&self, run_key: &str) -> Result<(), String> {
        let conn = self.pool.get().await.map_err(|e| chain(&e))?;
        conn.execute(
            "UPDATE chaos.ledger SET ended_at = started_at, outcome = 'never-ran' \
             WHERE run_key = $1 AND ended_at IS NULL",
            &[&run_key],
        )
        .await
        .map_err(|e| chain(&e))?;
        Ok(())
    }

    /// Writes an execution's end, retrying in the background until it lands.
    fn write_end(&self, id: i64, ended_at: DateTime<Utc>, outcome: &'static str) {
        self.retry_in_background(move |ledger| async move {
            ledger.try_write_end(id, ended_at, outcome).await
        });
    }

    /// Runs `write` until it succeeds or [`WRITE_PATIENCE`] passes, on a task of its own,
    /// then marks one open run (counted by the caller) as closed.
    fn retry_in_background<W, Fut>(&self, write: W)
    where
        W: Fn(Ledger) -> Fut + Send + 'static,
        Fut: Future<Output = Result<(), String>> + Send,
    {
        let ledger = self.clone();
        let write = async move {
            let deadline = tokio::time::Instant::now() + WRITE_PATIENCE;
            loop {
                match write(ledger.clone()).await {
                    Ok(_) => break,
                    Err(err) if tokio::time::Instant::now() > deadline => {
                        tracing::error!(error = %err, "giving up a ledger write");
                        break;
                    }
                    Err(err) => {
                        tracing::debug!(error = %err, "ledger write not done yet; retrying");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
            }
            ledger.closed();
        };
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                handle.spawn(write);
            }
            Err(_) => {
                // No runtime (the process is tearing down): the row stays open, which the
                // checker reports as an unterminated run.
                self.closed();
            }
        }
    }

    /// Waits until every run's end is written (or given up on), at most `limit`. Runs the
    /// runtime aborted at shutdown write their end from `Drop`, which may happen a moment
    /// after the shutdown returned, so this waits for open runs too.
    pub async fn drain(&self, limit: Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        let (count, done) = &*self.in_flight;
        loop {
            let notified = done.notified();
            if count.load(Ordering::SeqCst) == 0 {
                return;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return;
            }
        }
    }
}

/// An execution in progress. [`Run::finish`] records its end; dropping it unfinished (the
/// runtime dropped the task's future) records it as `aborted` at the time of the drop.
pub struct Run {
    ledger: Ledger,
    id: i64,
    finished: bool,
}

impl Run {
    fn open(ledger: Ledger, id: i64) -> Run {
        ledger.opened();
        Run {
            ledger,
            id,
            finished: false,
        }
    }

    /// Records the end of the execution with `outcome` (`ok` or `error`). The first write
    /// is awaited, so the ledger row is committed before the runtime can commit the
    /// task's completion (the checker relies on that order); when it fails (an outage) the
    /// write is retried in the background.
    /// The write runs on a task of its own, so an execution dropped while it is in flight
    /// still leaves the row ended.
    pub async fn finish(mut self, outcome: &'static str) {
        self.finished = true;
        let ended_at = self.ledger.now();
        let (ledger, id) = (self.ledger.clone(), self.id);
        let write = tokio::spawn(async move {
            let first = ledger.try_write_end(id, ended_at, outcome);
            match tokio::time::timeout(Duration::from_secs(5), first).await {
                Ok(Ok(())) => ledger.closed(),
                _ => ledger.write_end(id, ended_at, outcome),
            }
        });
        let _ = write.await;
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        if !self.finished {
            self.ledger.write_end(self.id, self.ledger.now(), "aborted");
        }
    }
}

/// An error with its sources (`outer: inner`), so that a refused connection says why.
fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(inner) = source {
        let inner_text = inner.to_string();
        if !text.contains(&inner_text) {
            text.push_str(": ");
            text.push_str(&inner_text);
        }
        source = inner.source();
    }
    text
}
