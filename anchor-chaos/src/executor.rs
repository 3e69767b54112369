//! The executors the chaos workers run. Each records its execution in the [`Ledger`]
//! before doing anything and records the end when it is done, so the checker sees every
//! run, including the ones a fault cut short.

use std::future::Future;
use std::time::Duration;

use anchor_runtime::{Client, TaskContext, TaskError};

use crate::ledger::Ledger;
use crate::zgen::taskgen::{
    DoomedFailedParameters, DoomedParameters, Executor, HangParameters, HoldConnectionParameters,
    PlainDoomedFailedParameters, PlainDoomedParameters, PlainParameters, PoisonFailedParameters,
    PoisonParameters, StrictParameters, TickParameters, WorkParameters,
};

/// Runs the chaos tasks, recording each execution in the ledger.
pub struct ChaosExecutor {
    ledger: Ledger,
    /// The runtime's client: `HoldConnection` takes its connection from this pool, the one
    /// the worker's own loops share, to exhaust it.
    client: Client,
}

impl ChaosExecutor {
    /// An executor writing to `ledger`; `client` is the worker's client.
    pub fn new(ledger: Ledger, client: Client) -> ChaosExecutor {
        ChaosExecutor { ledger, client }
    }

    /// Records the run around `work`. A run whose start cannot be recorded (the database is
    /// restarting, the ledger's pool has no connection) does no work and tries again until
    /// it can, or until the runtime stops the run (its lease lost, its timeout, shutdown):
    /// every run that did work is in the ledger, and the instrumentation never fails a
    /// task by itself (it used to return an error, which failed tasks without a retry
    /// policy for good when the database restarted).
    async fn recorded<F>(&self, ctx: &TaskContext, work: F) -> Result<(), TaskError>
    where
        F: Future<Output = Result<(), TaskError>>,
    {
        let mut logged = false;
        let run = loop {
            match self.ledger.start(ctx).await {
                Ok(run) => break run,
                Err(err) => {
                    if !logged {
                        tracing::warn!(task.id = %ctx.id(), error = %err, "cannot record a run's start yet; retrying");
                        logged = true;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        };
        let result = work.await;
        run.finish(if result.is_ok() { "ok" } else { "error" })
            .await;
        result
    }
}

fn millis(ms: i64) -> Duration {
    Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

/// Sleeps `ms` milliseconds (none for 0).
async fn nap(ms: i64) {
    if ms > 0 {
        tokio::time::sleep(millis(ms)).await;
    }
}

/// How long a `Poison` run lets the worker's other runs go on before it aborts the process,
/// so that the crash cuts ordinary runs short too.
const POISON_DELAY: Duration = Duration::from_millis(200);

impl Executor for ChaosExecutor {
    async fn execute_work(
        &self,
        ctx: &TaskContext,
        params: WorkParameters,
    ) -> Result<(), TaskError> {
        self.recorded(ctx, async {
            nap(params.sleep_ms).await;
            Ok(())
        })
        .await
    }

    async fn execute_plain(
        &self,
        ctx: &TaskContext,
        params: PlainParameters,
    ) -> Result<(), TaskError> {
        self.recorded(ctx, async {
            nap(params.sleep_ms).await;
            Ok(())
        })
        .await
    }

    async fn execute_doomed(
        &self,
        ctx: &TaskContext,
        params: DoomedParameters,
    ) -> Result<(), TaskError> {
        self.recorded(ctx, async {
            nap(params.sleep_ms).await;
            Err(TaskError::failed(format!(
                "doomed task {} fails on purpose",
                params.n
            )))
        })
        .await
    }

    async fn execute_doomed_failed(
        &self,
        ctx: &TaskContext,
        params: DoomedFailedParameters,
    ) -> Result<(), TaskError> {
        self.recorded(ctx, async {
            nap(params.sleep_ms).await;
            Ok(())
        })
        .await
    }

    async fn execute_plain_doomed(
        &self,
        ctx: &TaskContext,
        params: PlainDoomedParameters,
    ) -> Result<(), TaskError> {
        self.recorded(ctx, async {
            nap(params.sleep_ms).await;
            Err(TaskError::failed(format!(
                "plain doomed task {} fails on purpose",
                params.n
            )))
        })
        .await
    }

    async fn execute_plain_doomed_failed(
        &self,
        ctx: &TaskContext,
        params: PlainDoomedFailedParameters,
    ) -> Result<(), TaskError> {
        self.recorded(ctx, async {
            nap(params.sleep_ms).await;
            Ok(())
        })
        .await
    }

    /// Records the run, lets the worker's other runs go on for a moment, then aborts the
    /// whole process (as a segfault or an out-of-memory kill would): every run of this
    /// worker is cut short, and the task comes back through rescue only to crash the next
    /// worker, until the runtime's bound on lost-worker rescues fails it.
    async fn execute_poison(
        &self,
        ctx: &TaskContext,
        params: PoisonParameters,
    ) -> Result<(), TaskError> {
        self.recorded(ctx, async {
            tokio::time::sleep(POISON_DELAY).await;
            eprintln!(
                "chaos-worker {}: poison task {} (attempt {}) aborts the process",
                self.ledger.worker(),
                params.n,
                ctx.attempt()
            );
            std::process::abort()
        })
        .await
    }

    async fn execute_poison_failed(
        &self,
        ctx: &TaskContext,
        _params: PoisonFailedParameters,
    ) -> Result<(), TaskError> {
        self.recorded(ctx, async { Ok(()) }).await
    }

    async fn execute_hang(
        &self,
        ctx: &TaskContext,
        _params: HangParameters,
    ) -> Result<(), TaskError> {
        self.recorded(ctx, std::future::pending()).await
    }

    async fn execute_hold_connection(
        &self,
        ctx: &TaskContext,
        params: HoldConnectionParameters,
    ) -> Result<(), TaskError> {
        self.recorded(ctx, async {
            let conn = self
                .client
                .pool()
                .get()
                .await
                .map_err(|e| TaskError::failed(format!("no connection to hold: {e}")))?;
            let seconds = params.hold_ms as f64 / 1000.0;
            conn.execute("SELECT pg_sleep($1)", &[&seconds])
                .await
                .map_err(|e| TaskError::failed(format!("holding the connection failed: {e}")))?;
            Ok(())
        })
        .await
    }

    async fn execute_strict(
        &self,
        ctx: &TaskContext,
        _params: StrictParameters,
    ) -> Result<(), TaskError> {
        self.recorded(ctx, async { Ok(()) }).await
    }

    async fn execute_tick(
        &self,
        ctx: &TaskContext,
        _params: TickParameters,
    ) -> Result<(), TaskError> {
        self.recorded(ctx, async { Ok(()) }).await
    }
}
