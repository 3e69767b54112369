//! The producer: claims due tasks in batches up to free capacity and starts them.
//!
//! One statement (`Sql::claim`) selects up to `free` due tasks this worker has handlers for
//! with `FOR UPDATE SKIP LOCKED` and leases them under a fresh random token. The producer
//! claims again at once while the last claim filled all free capacity (a backlog), and
//! otherwise sleeps until a notification, a freed slot, a retry timer or the poll tick.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use anchor_core::RetryPolicy;
use tokio_postgres::Row;

use super::{execute, Backoff, Shared};
use crate::client::db_error;
use crate::error::Result;
use crate::task::TaskId;

/// A task this worker holds a lease on, with what running and finishing it needs.
#[derive(Debug, Clone)]
pub(crate) struct ClaimedTask {
    pub id: TaskId,
    pub name: String,
    pub payload: String,
    pub attempt: u32,
    pub failures: u32,
    pub timeout_ms: i64,
    pub retry_intervals_ms: Option<Vec<i64>>,
    pub retry_always: bool,
    pub max_retries: Option<i32>,
    pub on_failed: Option<String>,
    pub parent_id: Option<TaskId>,
    pub token: i64,
}

impl ClaimedTask {
    /// Reads the columns of `TASK_RUN_COLUMNS` (see `sql.rs`).
    pub(crate) fn from_row(row: &Row, token: i64) -> ClaimedTask {
        ClaimedTask {
            id: row.get(0),
            name: row.get(1),
            payload: row.get(2),
            attempt: u32::try_from(row.get::<_, i32>(3)).unwrap_or(0),
            failures: u32::try_from(row.get::<_, i32>(4)).unwrap_or(0),
            timeout_ms: row.get(5),
            retry_intervals_ms: row.get(6),
            retry_always: row.get(7),
            max_retries: row.get(8),
            on_failed: row.get(9),
            parent_id: row.get(10),
            token,
        }
    }

    /// The retry policy stored with the task, if any.
    pub(crate) fn policy(&self) -> Option<RetryPolicy> {
        policy_from_columns(
            self.retry_intervals_ms.as_deref(),
            self.retry_always,
            self.max_retries,
        )
    }
}

pub(crate) fn policy_from_columns(
    intervals_ms: Option<&[i64]>,
    always: bool,
    max_retries: Option<i32>,
) -> Option<RetryPolicy> {
    intervals_ms.map(|ms| RetryPolicy {
        intervals: ms
            .iter()
            .map(|v| std::time::Duration::from_millis(u64::try_from(*v).unwrap_or(0)))
            .collect(),
        always_retry_on_failure: always,
        max_retries: max_retries.map(|n| u32::try_from(n).unwrap_or(0)),
    })
}

/// Claims up to `limit` due tasks.
async fn claim_batch(shared: &Shared, limit: usize) -> Result<Vec<ClaimedTask>> {
    let conn = shared.client.conn().await?;
    let stmt = conn
        .prepare_cached(&shared.client.sql().claim)
        .await
        .map_err(|e| db_error("cannot prepare the claim", e))?;
    let token: i64 = rand::random();
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let rows = conn
        .query(
            &stmt,
            &[
                &shared.names,
                &limit,
                &shared.worker_id,
                &token,
                &shared.lease_ms(),
            ],
        )
        .await
        .map_err(|e| db_error("cannot claim tasks", e))?;
    Ok(rows
        .iter()
        .map(|r| ClaimedTask::from_row(r, token))
        .collect())
}

/// The producer loop; returns when the worker stops.
pub(crate) async fn run_producer(shared: Arc<Shared>) {
    let mut stop = shared.stop.subscribe();
    let mut backoff = Backoff::new();
    let mut backlog = false;
    let concurrency = shared.config.concurrency;
    if shared.names.is_empty() {
        tracing::warn!(worker = %shared.worker_id, "no task handlers registered; nothing to claim");
    }
    loop {
        if shared.stopping() {
            break;
        }
        let running = shared.executing.load(Ordering::SeqCst);
        let free = concurrency.saturating_sub(running);
        if free > 0 && !shared.names.is_empty() {
            match claim_batch(&shared, free).await {
                Ok(batch) => {
                    backoff.reset();
                    backlog = batch.len() == free;
                    if !batch.is_empty() {
                        tracing::trace!(count = batch.len(), "claimed tasks");
                    }
                    for task in batch {
                        execute::spawn_execution(&shared, task);
                    }
                    if backlog && shared.executing.load(Ordering::SeqCst) < concurrency {
                        // Capacity freed while we were claiming: claim again now.
                        continue;
                    }
                }
                Err(err) => {
                    let delay = backoff.next_delay();
                    tracing::warn!(
                        worker = %shared.worker_id,
                        error = %err,
                        retry_in = ?delay,
                        "claiming failed; backing off"
                    );
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = stop.changed() => {}
                    }
                    continue;
                }
            }
        }
        let wait_for_slot = backlog || free == 0;
        tokio::select! {
            _ = shared.wake.notified() => {}
            _ = shared.slot_freed.notified(), if wait_for_slot => {}
            _ = tokio::time::sleep(shared.config.poll_interval) => {}
            _ = stop.changed() => {}
        }
    }
    tracing::debug!(worker = %shared.worker_id, "producer stopped claiming");
}
