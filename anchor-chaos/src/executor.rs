//! The executors the chaos workers run. Each records its execution in the [`Ledger`]
//! before doing anything and records the end when it is done, so the checker sees every
//! run, including the ones a fault cut short.

use std::future::Future;
use std::time::Duration;

use anchor_runtime::{Client, TaskContext, TaskError};

use crate::ledger::Ledger;
use crate::zgen::taskgen::{
    DoomedFailedParameters, DoomedParameters, Executor, HangParameters, HoldConnectionParameters,
    StrictParameters, TickParameters, WorkParameters,
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

    /// Records the run around `work`. A run whose start cannot be recorded does no work and
    /// fails with a retryable error, so every run that did work is in the ledger.
    async fn recorded<F>(&self, ctx: &TaskContext, work: F) -> Result<(), TaskError>
    where
        F: Future<Output = Result<(), TaskError>>,
    {
        let run = self.ledger.start(ctx).await.map_err(TaskError::failed)?;
        let result = work.await;
        run.finish(if result.is_ok() { "ok" } else { "error" })
            .await;
        result
    }
}

fn millis(ms: i64) -> Duration {
    Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

impl Executor for ChaosExecutor {
    async fn execute_work(
        &self,
        ctx: &TaskContext,
        params: WorkParameters,
    ) -> Result<(), TaskError> {
        self.recorded(ctx, async {
            if params.sleep_ms > 0 {
                tokio::time::sleep(millis(params.sleep_ms)).await;
            }
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
        _params: DoomedFailedParameters,
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
