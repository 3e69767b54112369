//! The `workers` and `task_definitions` tables: each worker's heartbeat row, the note on
//! pending tasks whose name no live worker has registered, and the definitions workers
//! store so that another service's worker can enqueue their `onFailed` handlers with their
//! own settings (`migrations/V4__workers.sql`, `V6__definitions_and_tags.sql`). Nothing on
//! the claim/complete path uses them.

use tokio_postgres::Row;

use super::{db_error, quote_ident, status, tagged, Caching, SettingsColumns, Sql};
use crate::definition::TaskDefinition;
use crate::error::{Error, ErrorKind, Result};
use crate::settings::TaskSettings;
use crate::task::TaskId;

/// The statements on `workers` and `task_definitions` for one schema.
#[derive(Debug)]
pub(crate) struct WorkerSql {
    heartbeat: String,
    remove: String,
    prune: String,
    note_unregistered: String,
    upsert_definitions: String,
    definition: String,
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
            // $1 the definitions as a JSON array (see `store_definitions`), $2 worker id.
            // Only rows whose settings changed are written.
            upsert_definitions: format!(
                "INSERT INTO {s}.task_definitions AS d (name, timeout_ms, retry_intervals_ms, \
                   retry_always, max_retries, max_rescues, on_failed, default_params, queue, \
                   priority, updated_by) \
                 SELECT e->>'name', (e->>'timeout_ms')::bigint, \
                   (SELECT array_agg(x::bigint) FROM jsonb_array_elements_text( \
                     CASE jsonb_typeof(e->'retry_intervals_ms') WHEN 'array' \
                     THEN e->'retry_intervals_ms' END) x), \
                   coalesce((e->>'retry_always')::boolean, false), (e->>'max_retries')::int, \
                   (e->>'max_rescues')::int, e->>'on_failed', \
                   coalesce(e->'default_params', '{{}}'::jsonb), \
                   coalesce(e->>'queue', 'default'), coalesce((e->>'priority')::smallint, 0), $2 \
                 FROM jsonb_array_elements($1::jsonb) e \
                 ON CONFLICT (name) DO UPDATE SET timeout_ms = EXCLUDED.timeout_ms, \
                   retry_intervals_ms = EXCLUDED.retry_intervals_ms, \
                   retry_always = EXCLUDED.retry_always, max_retries = EXCLUDED.max_retries, \
                   max_rescues = EXCLUDED.max_rescues, on_failed = EXCLUDED.on_failed, \
                   default_params = EXCLUDED.default_params, queue = EXCLUDED.queue, \
                   priority = EXCLUDED.priority, updated_by = EXCLUDED.updated_by, \
                   updated_at = now() \
                 WHERE (d.timeout_ms, d.retry_intervals_ms, d.retry_always, d.max_retries, \
                   d.max_rescues, d.on_failed, d.default_params, d.queue, d.priority) \
                   IS DISTINCT FROM \
                   (EXCLUDED.timeout_ms, EXCLUDED.retry_intervals_ms, EXCLUDED.retry_always, \
                   EXCLUDED.max_retries, EXCLUDED.max_rescues, EXCLUDED.on_failed, \
                   EXCLUDED.default_params, EXCLUDED.queue, EXCLUDED.priority)"
            ),
            // Read by `stored_definition`, in this order.
            definition: format!(
                "SELECT timeout_ms, retry_intervals_ms, retry_always, max_retries, max_rescues, \
                   on_failed, default_params::text, queue, priority \
                 FROM {s}.task_definitions WHERE name = $1"
            ),
        }
    }
}

/// Writes the heartbeat of `worker_id`, which runs the tasks `names`. `tag` is prefixed to
/// the statement (see [`CONTROL_TAG`](super::CONTROL_TAG)).
pub(crate) async fn heartbeat(
    conn: &tokio_postgres::Client,
    tag: &str,
    sql: &Sql,
    worker_id: &str,
    names: &[String],
) -> Result<()> {
    conn.query(
        tagged(tag, &sql.workers.heartbeat).as_ref(),
        &[&worker_id, &names],
    )
    .await
    .map_err(|e| db_error("cannot write the worker heartbeat", e))?;
    Ok(())
}

/// Deletes the row of `worker_id` (graceful shutdown).
pub(crate) async fn remove(conn: &impl Caching, sql: &Sql, worker_id: &str) -> Result<()> {
    conn.execute(&sql.workers.remove, &[&worker_id])
        .await
        .map_err(|e| db_error("cannot remove the worker row", e))?;
    Ok(())
}

/// Deletes the rows of workers not seen for an hour (they died without a graceful
/// shutdown).
pub(crate) async fn prune_dead(conn: &impl Caching, sql: &Sql) -> Result<()> {
    conn.execute(&sql.workers.prune, &[])
        .await
        .map_err(|e| db_error("cannot prune dead workers' rows", e))?;
    Ok(())
}

/// Notes, once per task and at most `limit` of them, on tasks pending for longer than
/// `grace_ms` whose name neither `names` nor any worker seen within `live_ms` has
/// registered; returns each noted task's id and name.
pub(crate) async fn note_unregistered(
    conn: &impl Caching,
    sql: &Sql,
    live_ms: i64,
    grace_ms: i64,
    limit: i64,
    names: &[String],
) -> Result<Vec<(TaskId, String)>> {
    let rows = conn
        .query(
            &sql.workers.note_unregistered,
            &[&live_ms, &grace_ms, &limit, &names],
        )
        .await
        .map_err(|e| db_error("cannot note tasks no worker has registered", e))?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// Upserts `definitions` into `task_definitions` as stored by `worker_id`, in one
/// statement; rows whose settings are unchanged are left alone.
pub(crate) async fn store_definitions<'a>(
    conn: &impl Caching,
    sql: &Sql,
    definitions: impl IntoIterator<Item = &'a TaskDefinition>,
    worker_id: &str,
) -> Result<()> {
    // The JSON shape `upsert_definitions` reads.
    let definitions: Vec<serde_json::Value> = definitions
        .into_iter()
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
                "queue": def.queue,
                "priority": def.priority.clamp(0, crate::LOWEST_PRIORITY),
            })
        })
        .collect();
    if definitions.is_empty() {
        return Ok(());
    }
    conn.execute(
        &sql.workers.upsert_definitions,
        &[&serde_json::Value::Array(definitions), &worker_id],
    )
    .await
    .map_err(|e| db_error("cannot store the task definitions", e))?;
    Ok(())
}

/// A task's settings as some worker that knows the task stored them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StoredDefinition {
    pub settings: TaskSettings,
    /// The default parameters, a JSON object as text.
    pub default_params: String,
}

/// The settings stored for the task `name`, if a worker that knows it stored them. A row
/// that cannot be read (edited by hand) is an error of kind [`ErrorKind::Payload`].
pub(crate) async fn stored_definition(
    conn: &impl Caching,
    sql: &Sql,
    name: &str,
) -> Result<Option<StoredDefinition>> {
    let Some(row) = conn
        .query_opt(&sql.workers.definition, &[&name])
        .await
        .map_err(|e| db_error("cannot read the onFailed handler's stored definition", e))?
    else {
        return Ok(None);
    };
    let read = |row: &Row| -> std::result::Result<StoredDefinition, tokio_postgres::Error> {
        Ok(StoredDefinition {
            settings: SettingsColumns {
                timeout_ms: row.try_get(0)?,
                intervals_ms: row.try_get(1)?,
                always: row.try_get(2)?,
                max_retries: row.try_get(3)?,
                max_rescues: row.try_get(4)?,
                on_failed: row.try_get(5)?,
                queue: row.try_get(7)?,
                priority: row.try_get(8)?,
            }
            .settings(),
            default_params: row.try_get(6)?,
        })
    };
    read(&row).map(Some).map_err(|err| {
        Error::with_source(
            ErrorKind::Payload,
            format!("the stored definition of task {name} cannot be read"),
            err,
        )
    })
}
