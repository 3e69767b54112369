//! The `queues` table (paused queues) and the per-queue view `anchor queues list` shows.
//! The claim reads the pause itself (`tasks.rs`); these statements write it and tell the
//! workers on the control channel.

use super::driver::{Param, Pooled, PooledClient, Run};
use super::{db_error, quote_ident, status, Sql};
use crate::error::Result;
use crate::listing::QueueInfo;

/// The statements on `queues` for one schema.
#[derive(Debug)]
pub(crate) struct QueueSql {
    pub pause: String,
    pub resume: String,
    pub list: String,
}

impl QueueSql {
    pub(crate) fn new(schema: &str) -> QueueSql {
        let s = quote_ident(schema);
        QueueSql {
            // $1 queue, $2 who, $3 control channel. Returns 1 when the queue was running
            // (every CTE reads the table as it was before the upsert), 0 when it was paused
            // already; the notification goes out either way.
            pause: format!(
                "WITH prev AS (SELECT paused_at FROM {s}.queues WHERE name = $1), \
                 up AS (INSERT INTO {s}.queues AS q (name, paused_at, paused_by) \
                   VALUES ($1, now(), $2) \
                   ON CONFLICT (name) DO UPDATE SET \
                     paused_by = CASE WHEN q.paused_at IS NULL THEN EXCLUDED.paused_by \
                       ELSE q.paused_by END, \
                     paused_at = coalesce(q.paused_at, EXCLUDED.paused_at), updated_at = now() \
                   RETURNING 1) \
                 SELECT CASE WHEN (SELECT paused_at FROM prev) IS NULL THEN 1 ELSE 0 END::bigint, \
                   pg_notify($3, 'pause ' || $1) \
                 FROM up"
            ),
            // $1 queue, $2 control channel; a row (and the notification) only when it was
            // paused.
            resume: format!(
                "UPDATE {s}.queues SET paused_at = NULL, paused_by = NULL, updated_at = now() \
                 WHERE name = $1 AND paused_at IS NOT NULL \
                 RETURNING 1::bigint, pg_notify($2, 'resume ' || name)"
            ),
            // Every queue named by a stored definition, a pending or running task, or the
            // pause table, with its counts. The pending side goes through `tasks_claim_idx`
            // (queue, run_after); running tasks are few.
            list: format!(
                "WITH pending AS ( \
                   SELECT queue, count(*) FILTER (WHERE run_after <= now()) AS due, \
                     count(*) FILTER (WHERE run_after > now()) AS scheduled, \
                     min(run_after) FILTER (WHERE run_after <= now()) AS oldest \
                   FROM {s}.tasks WHERE status = {pending} GROUP BY queue), \
                 running AS ( \
                   SELECT queue, count(*) AS running FROM {s}.tasks \
                   WHERE status = {running} GROUP BY queue), \
                 names AS ( \
                   SELECT name FROM {s}.queues UNION SELECT queue FROM {s}.task_definitions \
                   UNION SELECT queue FROM pending UNION SELECT queue FROM running) \
                 SELECT n.name, q.paused_at, q.paused_by, coalesce(p.due, 0), \
                   coalesce(p.scheduled, 0), coalesce(r.running, 0), \
                   (extract(epoch FROM now() - p.oldest) * 1000)::float8 \
                 FROM names n LEFT JOIN {s}.queues q ON q.name = n.name \
                 LEFT JOIN pending p ON p.queue = n.name LEFT JOIN running r ON r.queue = n.name \
                 ORDER BY n.name",
                pending = status::PENDING,
                running = status::RUNNING,
            ),
        }
    }
}

/// Pauses `queue`; returns whether it was running.
pub(crate) async fn pause<C: PooledClient>(
    conn: &mut Pooled<'_, C>,
    sql: &Sql,
    queue: &str,
    by: &str,
) -> Result<bool> {
    let context = format!("cannot pause queue {queue}");
    let rows = conn
        .query_ids(
            &sql.queues.pause,
            &[
                Param::Text(Some(queue)),
                Param::Text(Some(by)),
                Param::Text(Some(&sql.notify.control_channel)),
            ],
            &context,
        )
        .await?;
    Ok(rows.first() == Some(&1))
}

/// Resumes `queue`; returns whether it was paused.
pub(crate) async fn resume<C: PooledClient>(
    conn: &mut Pooled<'_, C>,
    sql: &Sql,
    queue: &str,
) -> Result<bool> {
    let context = format!("cannot resume queue {queue}");
    let rows = conn
        .query_ids(
            &sql.queues.resume,
            &[
                Param::Text(Some(queue)),
                Param::Text(Some(&sql.notify.control_channel)),
            ],
            &context,
        )
        .await?;
    Ok(!rows.is_empty())
}

/// Every known queue with its counts.
pub(crate) async fn list<C: PooledClient>(
    conn: &Pooled<'_, C>,
    sql: &Sql,
) -> Result<Vec<QueueInfo>> {
    let context = "cannot list the queues";
    let rows = conn.rows(&sql.queues.list, &[], context).await?;
    let count = |v: i64| u64::try_from(v).unwrap_or(0);
    rows.iter()
        .map(|row| {
            let age_ms: Option<f64> = row.try_get(6)?;
            Ok(QueueInfo {
                name: row.try_get(0)?,
                paused_at: row.try_get(1)?,
                paused_by: row.try_get(2)?,
                due: count(row.try_get(3)?),
                scheduled: count(row.try_get(4)?),
                running: count(row.try_get(5)?),
                oldest_due_age: age_ms.map(super::millis_to_duration),
            })
        })
        .collect::<std::result::Result<Vec<_>, tokio_postgres::Error>>()
        .map_err(|e| db_error(context, e))
}
