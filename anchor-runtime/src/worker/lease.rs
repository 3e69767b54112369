//! Leases: renewing this worker's, rescuing expired ones, releasing them at shutdown.
//!
//! - The renewer extends every lease this worker holds with one statement per tick. A lease
//!   the statement no longer finds (a rescuer took the task after this worker stalled) is
//!   dropped and its execution aborted, so the task does not keep running here while
//!   another worker runs it too.
//! - The rescuer, which every worker runs (no leader), locks running tasks whose lease has
//!   expired with `SKIP LOCKED` and returns them to `pending` counting a failed attempt
//!   ("lease expired (worker lost)"), or fails them (enqueuing `onFailed` in the same
//!   transaction) when their retries are exhausted.
//! - At shutdown, leases of tasks that did not finish within the grace period are released:
//!   `pending` at once, the interrupted run not counted.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use super::claim::ClaimedTask;
use super::complete::{decide, enqueue_on_failed, Decision, Outcome};
use super::{Backoff, Shared};
use crate::client::db_error;
use crate::error::Result;
use crate::task::TaskId;

/// The message recorded for a run whose worker stopped renewing its lease.
pub(crate) const LEASE_EXPIRED: &str = "lease expired (worker lost)";

/// How many expired tasks one rescue transaction handles.
const RESCUE_BATCH: i64 = 100;

/// The renewer loop.
pub(crate) async fn run_renewer(shared: Arc<Shared>) {
    let interval = shared.config.renew_interval();
    let mut backoff = Backoff::new();
    loop {
        tokio::time::sleep(interval).await;
        match renew(&shared).await {
            Ok(()) => backoff.reset(),
            Err(err) => {
                let delay = backoff.next_delay().min(interval);
                tracing::warn!(worker = %shared.worker_id, error = %err, "renewing leases failed");
                tokio::time::sleep(delay).await;
            }
        }
    }
}

async fn renew(shared: &Shared) -> Result<()> {
    let (ids, tokens) = shared.lease_snapshot();
    if ids.is_empty() {
        return Ok(());
    }
    let conn = shared.client.conn().await?;
    let stmt = conn
        .prepare_cached(&shared.client.sql().renew)
        .await
        .map_err(|e| db_error("cannot prepare the lease renewal", e))?;
    let rows = conn
        .query(&stmt, &[&ids, &tokens, &shared.lease_ms()])
        .await
        .map_err(|e| db_error("cannot renew leases", e))?;
    if rows.len() == ids.len() {
        return Ok(());
    }
    let mut renewed: HashSet<TaskId> = rows.iter().map(|r| r.get(0)).collect();
    // A lease the renewal skipped because another session holds the row's lock is still
    // this worker's: only a changed token means the task was taken.
    let (missing_ids, missing_tokens): (Vec<TaskId>, Vec<i64>) = ids
        .iter()
        .zip(&tokens)
        .filter(|(id, _)| !renewed.contains(id))
        .map(|(id, token)| (*id, *token))
        .unzip();
    let held = conn
        .query(
            &shared.client.sql().lease_held,
            &[&missing_ids, &missing_tokens],
        )
        .await
        .map_err(|e| db_error("cannot check leases the renewal skipped", e))?;
    renewed.extend(held.iter().map(|r| r.get::<_, TaskId>(0)));
    let mut leases = shared.leases.lock().unwrap_or_else(|e| e.into_inner());
    for (id, token) in ids.iter().zip(&tokens) {
        if renewed.contains(id) {
            continue;
        }
        // A lease missing from the result was either just finalised by the completer (and
        // forgotten, or about to be) or taken by a rescuer. Only the latter is still here
        // with the same token and a running execution.
        if leases.get(id).is_some_and(|l| l.token == *token) {
            if let Some(lease) = leases.remove(id) {
                if let Some(abort) = lease.abort {
                    if !abort.is_finished() {
                        tracing::warn!(
                            task.id = id,
                            "lease lost (the task was rescued by another worker); stopping it here"
                        );
                        abort.abort();
                    }
                }
            }
        }
    }
    Ok(())
}

/// The rescuer loop.
pub(crate) async fn run_rescuer(shared: Arc<Shared>) {
    let interval = shared.config.rescue_interval();
    loop {
        // Jitter keeps the workers of one deployment from rescuing in lockstep.
        let jitter = interval.mul_f64(0.5 * rand::random::<f64>());
        tokio::time::sleep(interval + jitter).await;
        loop {
            match rescue_batch(&shared).await {
                Ok(n) if n as i64 == RESCUE_BATCH => continue,
                Ok(_) => break,
                Err(err) => {
                    tracing::warn!(worker = %shared.worker_id, error = %err, "rescuing expired tasks failed");
                    break;
                }
            }
        }
        // Maintenance on the same cadence; it never touches the claim path.
        if let Err(err) = super::heartbeat::note_unregistered(&shared).await {
            tracing::warn!(worker = %shared.worker_id, error = %err, "looking for tasks no worker has registered failed");
        }
    }
}

/// Rescues up to [`RESCUE_BATCH`] tasks whose lease expired; returns how many.
pub(crate) async fn rescue_batch(shared: &Shared) -> Result<usize> {
    let sql = shared.client.sql();
    let mut conn = shared.client.conn().await?;
    let tx = conn
        .transaction()
        .await
        .map_err(|e| db_error("cannot begin the rescue transaction", e))?;
    let select = tx
        .prepare_cached(&sql.rescue_select)
        .await
        .map_err(|e| db_error("cannot prepare the rescue", e))?;
    let rows = tx
        .query(&select, &[&RESCUE_BATCH])
        .await
        .map_err(|e| db_error("cannot look for expired leases", e))?;
    if rows.is_empty() {
        return Ok(0);
    }
    let mut handlers = 0;
    for row in &rows {
        let task = ClaimedTask::from_row(row, 0);
        let outcome = Outcome::Failed {
            message: LEASE_EXPIRED.to_string(),
            fatal: false,
        };
        match decide(&outcome, task.policy().as_ref(), task.failures) {
            Decision::Retry { .. } => {
                let stmt = tx
                    .prepare_cached(&sql.rescue_retry)
                    .await
                    .map_err(|e| db_error("cannot prepare the rescue", e))?;
                tx.execute(&stmt, &[&task.id, &LEASE_EXPIRED])
                    .await
                    .map_err(|e| {
                        db_error(&format!("cannot return task {} to pending", task.id), e)
                    })?;
                tracing::warn!(task.id = task.id, task.name = %task.name, "lease expired; task returned to pending");
            }
            _ => {
                let stmt = tx
                    .prepare_cached(&sql.rescue_fail)
                    .await
                    .map_err(|e| db_error("cannot prepare the rescue", e))?;
                let updated = tx
                    .execute(&stmt, &[&task.id, &LEASE_EXPIRED])
                    .await
                    .map_err(|e| db_error(&format!("cannot fail task {}", task.id), e))?;
                tracing::warn!(task.id = task.id, task.name = %task.name, "lease expired and no retry left; task failed");
                if updated == 1 {
                    if let Some(handler) = &task.on_failed {
                        let def = shared.registry.definition(handler);
                        enqueue_on_failed(def, sql, &*tx, task.id, handler).await?;
                        handlers += 1;
                    }
                }
            }
        }
    }
    tx.commit()
        .await
        .map_err(|e| db_error("cannot commit the rescue", e))?;
    // Rescued tasks are due at once.
    shared.wake.notify_one();
    if handlers > 0 {
        shared.client.inner.notifier.poke();
    }
    Ok(rows.len())
}

/// Releases every lease this worker still holds (shutdown, after the grace period).
pub(crate) async fn release_all(shared: &Shared) {
    let (ids, tokens) = shared.lease_snapshot();
    release_leases(shared, ids, tokens).await;
}

/// Releases the leases of claimed tasks that never started.
pub(crate) async fn release(shared: &Shared, tasks: &[ClaimedTask]) {
    let ids = tasks.iter().map(|t| t.id).collect();
    let tokens = tasks.iter().map(|t| t.token).collect();
    release_leases(shared, ids, tokens).await;
}

/// Hands tasks back (`pending` at once, the run not counted), fenced by their tokens.
async fn release_leases(shared: &Shared, ids: Vec<TaskId>, tokens: Vec<i64>) {
    if ids.is_empty() {
        return;
    }
    let result = async {
        let conn = shared.client.conn().await?;
        let rows = conn
            .query(&shared.client.sql().release, &[&ids, &tokens])
            .await
            .map_err(|e| db_error("cannot release leases", e))?;
        Ok::<usize, crate::Error>(rows.len())
    };
    match tokio::time::timeout(Duration::from_secs(10), result).await {
        Ok(Ok(n)) => {
            tracing::info!(worker = %shared.worker_id, released = n, "unstarted or unfinished tasks released");
            shared.forget_leases(ids);
            shared.client.inner.notifier.poke();
        }
        Ok(Err(err)) => tracing::warn!(
            worker = %shared.worker_id,
            error = %err,
            "cannot release leases; they return to pending when they expire"
        ),
        Err(_) => tracing::warn!(
            worker = %shared.worker_id,
            "releasing leases timed out; they return to pending when they expire"
        ),
    }
}
