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
//! The claim never reads `workers`: the hot path pays nothing. The statements live here
//! rather than in `sql.rs` because nothing on the claim/complete path uses them.

use std::sync::Arc;
use std::time::Duration;

use super::Shared;
use crate::client::db_error;
use crate::error::Result;
use crate::sql::{quote_ident, status};

/// How many tasks one note statement handles.
const NOTE_BATCH: i64 = 100;

/// The statements of this module for one schema.
pub(crate) struct WorkerSql {
    heartbeat: String,
    remove: String,
    prune: String,
    note_unregistered: String,
}

impl WorkerSql {
    pub(crate) fn new(schema: &str) -> WorkerSql {
        let s = quote_ident(schema);
        let tasks = format!("{s}.tasks");
        let workers = format!("{s}.workers");
        WorkerSql {
            // $1 worker id, $2 the task names it has registered.
            heartbeat: format!(
                "INSERT INTO {workers} (id, task_names) VALUES ($1, $2::text[]) \
                 ON CONFLICT (id) DO UPDATE SET task_names = EXCLUDED.task_names, \
                 last_seen = now()"
            ),
            remove: format!("DELETE FROM {workers} WHERE id = $1"),
            // Rows of workers that died without a graceful shutdown.
            prune: format!("DELETE FROM {workers} WHERE last_seen < now() - interval '1 hour'"),
            // $1 liveness window in ms, $2 grace in ms, $3 batch size, $4 this worker's names.
            // The note is an `errors` entry with attempt 0, which no run writes (a run's
            // entries carry `attempts`, at least 1 once claimed), so it also marks the task
            // as noted. The scan reads the pending index by age, only past the grace.
            note_unregistered: format!(
                "WITH known AS ( \
                   SELECT coalesce(array_agg(n ORDER BY n), '{{}}') AS names FROM ( \
                     SELECT unnest(w.task_names) AS n FROM {workers} w \
                     WHERE w.last_seen > now() - $1::bigint * interval '1 millisecond' \
                     UNION SELECT unnest($4::text[])) k), \
                 stuck AS ( \
                   SELECT t.id FROM {tasks} t \
                   WHERE t.status = {pending} \
                     AND t.run_after < now() - $2::bigint * interval '1 millisecond' \
                     AND NOT t.name = ANY((SELECT names FROM known)::text[]) \
                     AND NOT t.errors @> '[{{\"attempt\": 0}}]' \
                   ORDER BY t.run_after, t.id LIMIT $3 FOR UPDATE OF t SKIP LOCKED) \
                 UPDATE {tasks} t SET updated_at = now(), \
                   errors = t.errors || jsonb_build_array(jsonb_build_object( \
                     'attempt', 0, 'at', now(), 'message', format( \
                       'no running worker has task `%s` registered (known: %s); \
                        it stays pending until one does', t.name, \
                       coalesce(nullif(array_to_string(known.names, ', '), ''), 'none')))) \
                 FROM stuck, known WHERE t.id = stuck.id \
                 RETURNING t.id, t.name",
                pending = status::PENDING,
            ),
        }
    }
}

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
        let closed = super::control::prune_idle_connections(&shared);
        if closed > 0 {
            tracing::debug!(worker = %shared.worker_id, closed, "closed idle pooled connections");
        }
        tokio::time::sleep(interval).await;
    }
}

async fn beat(shared: &Shared) -> Result<()> {
    let conn = shared.control_conn().await?;
    conn.query_bounded(
        shared,
        &shared.worker_sql.heartbeat,
        &[&shared.worker_id, &shared.names],
        "cannot write the worker heartbeat",
    )
    .await?;
    Ok(())
}

/// Upserts the definitions of this worker's registry into `task_definitions`, so that a
/// worker of another service failing a task whose `onFailed` handler is one of ours
/// enqueues the handler with its own settings.
async fn store_definitions(shared: &Shared) -> Result<()> {
    let definitions: Vec<serde_json::Value> = shared
        .registry
        .definitions()
        .map(|def| {
            let default_params = serde_json::from_str::<serde_json::Value>(def.default_params)
                .ok()
                .filter(serde_json::Value::is_object)
                .unwrap_or_else(|| serde_json::json!({}));
            serde_json::json!({
                "name": def.name,
                "timeout_ms": def.timeout_ms,
                "retry_intervals_ms": def.retry.map(|r| r.intervals_ms.to_vec()),
                "retry_always": def.retry.is_some_and(|r| r.always_retry_on_failure),
                "max_retries": def.retry.and_then(|r| r.max_retries),
                "max_rescues": def.max_rescues,
                "on_failed": def.on_failed,
                "default_params": default_params,
            })
        })
        .collect();
    if definitions.is_empty() {
        return Ok(());
    }
    let conn = shared.client.conn().await?;
    conn.execute(
        &shared.client.sql().upsert_definitions,
        &[&serde_json::Value::Array(definitions), &shared.worker_id],
    )
    .await
    .map_err(|e| db_error("cannot store the task definitions", e))?;
    Ok(())
}

/// Deletes this worker's row (graceful shutdown); a failure only leaves a row that stops
/// counting as live after three heartbeats and is pruned after an hour.
pub(crate) async fn remove(shared: &Shared) {
    let result = async {
        let conn = shared.client.conn().await?;
        conn.execute(&shared.worker_sql.remove, &[&shared.worker_id])
            .await
            .map_err(|e| db_error("cannot remove the worker row", e))?;
        Ok::<(), crate::Error>(())
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
    let conn = shared.client.conn().await?;
    conn.execute(&shared.worker_sql.prune, &[])
        .await
        .map_err(|e| db_error("cannot prune dead workers' rows", e))?;
    let live_ms = millis(shared.config.heartbeat_interval * 3);
    let grace_ms = millis(shared.config.unregistered_grace);
    let mut noted = 0;
    loop {
        let rows = conn
            .query(
                &shared.worker_sql.note_unregistered,
                &[&live_ms, &grace_ms, &NOTE_BATCH, &shared.names],
            )
            .await
            .map_err(|e| db_error("cannot note tasks no worker has registered", e))?;
        for row in &rows {
            let id: i64 = row.get(0);
            let name: String = row.get(1);
            tracing::warn!(
                task.id = %id,
                task.name = %name,
                "no running worker has this task registered; it stays pending until one does"
            );
        }
        noted += rows.len();
        if (rows.len() as i64) < NOTE_BATCH {
            return Ok(noted);
        }
    }
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}
