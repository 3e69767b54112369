//! Worker heartbeats and the unregistered-name note.
//!
//! Workers claim only the task names they have handlers for, because several services with
//! different registries may share one database. A task whose name no worker knows (a typo
//! in a hand-written insert, a service that was retired, a deploy not yet rolled out) would
//! therefore stay `pending` with nothing to explain it. An unknown task
//! name must be recorded on the task, so:
//!
//! - every worker upserts its row in `workers` (id, registered names, `last_seen`) every
//!   heartbeat interval, and deletes it at graceful shutdown;
//! - the rescuer's pass (`lease.rs`) then calls [`note_unregistered`], which appends one
//!   error entry with attempt 0 to each task pending for longer than the grace whose name
//!   neither this worker nor any worker seen within three heartbeats has registered. The
//!   task stays `pending` and runs as soon as a worker that knows it starts.
//!
//! The claim never reads `workers`: the hot path pays nothing. The statements are in
//! `db/workers.rs`.

use std::sync::Arc;
use std::time::Duration;

use super::Shared;
use crate::db;
use crate::error::Result;

/// How many tasks one note statement handles.
const NOTE_BATCH: i64 = 100;

/// The heartbeat loop: writes this worker's row at once, then every heartbeat interval.
/// Its first successful round also stores the definitions of this worker's registry (see
/// `migrations/V6__definitions_and_tags.sql`).
pub(crate) async fn run_heartbeat(shared: Arc<Shared>) {
    let interval = shared.config.heartbeat_interval;
    let mut definitions_stored = false;
    loop {
        if let Err(err) = beat(&shared).await {
            tracing::warn!(worker = %shared.worker_id, error = %err, "worker heartbeat failed");
        }
        if !definitions_stored {
            match shared
                .client
                .bounded("storing task definitions", store_definitions(&shared))
                .await
            {
                Ok(()) => definitions_stored = true,
                Err(err) => {
                    tracing::warn!(worker = %shared.worker_id, error = %err, "storing task definitions failed; retrying")
                }
            }
        }
        // Housekeeping on the same cadence: give back pooled connections the load no
        // longer needs.
        let closed = super::control::prune_idle_connections(&shared.client);
        if closed > 0 {
            tracing::debug!(worker = %shared.worker_id, closed, "closed idle pooled connections");
        }
        tokio::time::sleep(interval).await;
    }
}

async fn beat(shared: &Shared) -> Result<()> {
    let conn = shared.control.conn().await?;
    let beat = db::workers::heartbeat(
        &conn,
        conn.tag(),
        shared.client.sql(),
        &shared.worker_id,
        &shared.names,
    );
    conn.bounded(&shared.control, "cannot write the worker heartbeat", beat)
        .await
}

/// Upserts the definitions of this worker's registry into `task_definitions`, so that a
/// worker of another service failing a task whose `onFailed` handler is one of ours
/// enqueues the handler with its own settings.
async fn store_definitions(shared: &Shared) -> Result<()> {
    let conn = shared.client.conn().await?;
    db::workers::store_definitions(
        &conn,
        shared.client.sql(),
        shared.registry.definitions(),
        &shared.worker_id,
    )
    .await
}

/// Deletes this worker's row (graceful shutdown); a failure only leaves a row that stops
/// counting as live after three heartbeats and is pruned after an hour.
pub(crate) async fn remove(shared: &Shared) {
    let result = async {
        let conn = shared.client.conn().await?;
        db::workers::remove(&conn, shared.client.sql(), &shared.worker_id).await
    };
    match tokio::time::timeout(Duration::from_secs(5), result).await {
        Ok(Ok(())) => {}
        Ok(Err(err)) => {
            tracing::warn!(worker = %shared.worker_id, error = %err, "cannot remove the worker row")
        }
        Err(_) => tracing::warn!(worker = %shared.worker_id, "removing the worker row timed out"),
    }
}

/// Notes on pending tasks that no live worker can run that this is so (once per task), and
/// prunes the rows of long-dead workers. Returns how many tasks were noted.
pub(crate) async fn note_unregistered(shared: &Shared) -> Result<usize> {
    let sql = shared.client.sql();
    let conn = shared.client.conn().await?;
    db::workers::prune_dead(&conn, sql).await?;
    let live_ms = millis(shared.config.heartbeat_interval * 3);
    let grace_ms = millis(shared.config.unregistered_grace);
    let mut noted = 0;
    loop {
        let tasks = db::workers::note_unregistered(
            &conn,
            sql,
            live_ms,
            grace_ms,
            NOTE_BATCH,
            &shared.names,
        )
        .await?;
        for (id, name) in &tasks {
            tracing::warn!(
                task.id = %id,
                task.name = %name,
                "no running worker has this task registered; it stays pending until one does"
            );
        }
        noted += tasks.len();
        if (tasks.len() as i64) < NOTE_BATCH {
            return Ok(noted);
        }
    }
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}
