//! Listing tasks with filters and a keyset cursor, and the counts of `Client::stats`.
//!
//! A listing's statement depends on which filters are given, so it is built per call (and
//! cached per connection by its text like any other): each filter adds one condition with
//! its own parameter, and statuses are written as literals so the planner can use the
//! partial indexes whose predicate they match (`tasks_dead_idx` for failed and cancelled,
//! `tasks_lease_idx` for running) also under a generic plan. Pages run by id, newest first,
//! and continue below the last id seen, so they never repeat or skip a row as tasks change.

use std::fmt::Write as _;
use std::time::Duration;

use super::driver::{Param, Pooled, PooledClient};
use super::{db_error, quote_ident, status, Sql};
use crate::error::Result;
use crate::listing::{TaskCount, TaskFilter, TaskStats, WorkerLoad};
use crate::record::{TaskRecord, TaskStatus};

/// The statements of `stats` for one schema.
#[derive(Debug)]
pub(crate) struct ListingSql {
    tasks: String,
    counts: String,
    oldest_due: String,
    by_worker: String,
}

impl ListingSql {
    pub(crate) fn new(schema: &str) -> ListingSql {
        let tasks = format!("{}.tasks", quote_ident(schema));
        ListingSql {
            // Pending and running tasks all, finished ones over the window $1 ms; one branch
            // per index: pending through `tasks_claim_idx`, running through
            // `tasks_lease_idx` (no index covers both, and `status IN (0, 1)` was a scan of
            // the whole table: 90 ms at 1M rows), finished through `tasks_finished_idx`, one
            // range per final status (`status >= 2` scanned every finished entry).
            counts: format!(
                "SELECT queue, name, status, count(*)::bigint FROM {tasks} \
                   WHERE status = {pending} GROUP BY 1, 2, 3 \
                 UNION ALL \
                 SELECT queue, name, status, count(*)::bigint FROM {tasks} \
                   WHERE status = {running} GROUP BY 1, 2, 3 \
                 UNION ALL \
                 SELECT queue, name, status, count(*)::bigint FROM {tasks} \
                   WHERE status IN ({completed}, {failed}, {cancelled}) \
                     AND finished_at >= now() - $1::bigint * interval '1 millisecond' \
                   GROUP BY 1, 2, 3 \
                 ORDER BY 1, 2, 3",
                pending = status::PENDING,
                running = status::RUNNING,
                completed = status::COMPLETED,
                failed = status::FAILED,
                cancelled = status::CANCELLED,
            ),
            // The oldest due task over all queues without reading every pending entry: the
            // queues with pending tasks found by skipping through `tasks_claim_idx` (one
            // probe per queue), then the first due entry of each (queue, priority) range.
            oldest_due: format!(
                "WITH RECURSIVE q(queue) AS ( \
                   (SELECT queue FROM {tasks} WHERE status = {pending} ORDER BY queue LIMIT 1) \
                   UNION ALL \
                   SELECT (SELECT t.queue FROM {tasks} t WHERE t.status = {pending} \
                     AND t.queue > q.queue ORDER BY t.queue LIMIT 1) \
                   FROM q WHERE q.queue IS NOT NULL) \
                 SELECT (extract(epoch FROM now() - min(f.run_after)) * 1000)::float8 \
                 FROM q CROSS JOIN generate_series(0, {lowest}) AS p(priority) \
                 CROSS JOIN LATERAL (SELECT t.run_after FROM {tasks} t \
                   WHERE t.status = {pending} AND t.queue = q.queue \
                     AND t.priority = p.priority::smallint AND t.run_after <= now() \
                   ORDER BY t.run_after LIMIT 1) f \
                 WHERE q.queue IS NOT NULL",
                pending = status::PENDING,
                lowest = crate::LOWEST_PRIORITY,
            ),
            by_worker: format!(
                "SELECT lease_owner, count(*)::bigint FROM {tasks} \
                 WHERE status = {running} AND lease_owner IS NOT NULL \
                 GROUP BY 1 ORDER BY 2 DESC, 1",
                running = status::RUNNING,
            ),
            tasks,
        }
    }
}

/// The status code of `status` as stored.
fn code(status: TaskStatus) -> i16 {
    match status {
        TaskStatus::Pending => status::PENDING,
        TaskStatus::Running => status::RUNNING,
        TaskStatus::Completed => status::COMPLETED,
        TaskStatus::Failed => status::FAILED,
        TaskStatus::Cancelled => status::CANCELLED,
    }
}

/// The statement and parameters of one page of `filter` (one row more than the page, to
/// tell whether another follows).
fn page_query<'f>(sql: &Sql, filter: &'f TaskFilter) -> (String, Vec<Param<'f>>) {
    let mut text = format!(
        "SELECT {} FROM {} WHERE true",
        super::tasks::RECORD_COLUMNS,
        sql.listing.tasks
    );
    let mut params: Vec<Param<'f>> = Vec::new();
    let mut add = |text: &mut String, condition: &str, param: Param<'f>| {
        params.push(param);
        let _ = write!(text, " AND {condition} ${}", params.len());
    };
    match filter.statuses.as_slice() {
        [] => {}
        [one] => {
            let _ = write!(text, " AND status = {}", code(*one));
        }
        many => {
            let codes: Vec<String> = many.iter().map(|s| code(*s).to_string()).collect();
            let _ = write!(text, " AND status IN ({})", codes.join(", "));
        }
    }
    if let Some(name) = &filter.name {
        add(&mut text, "name =", Param::Text(Some(name)));
    }
    if let Some(queue) = &filter.queue {
        add(&mut text, "queue =", Param::Text(Some(queue)));
    }
    if let Some(tag) = &filter.unique_tag {
        add(&mut text, "unique_tag =", Param::Text(Some(tag)));
    }
    if let Some(parent) = filter.parent_id {
        add(&mut text, "parent_id =", Param::Int8(Some(parent.get())));
    }
    if let Some(at) = filter.created_after {
        add(&mut text, "created_at >=", Param::Timestamptz(Some(at)));
    }
    if let Some(at) = filter.created_before {
        add(&mut text, "created_at <", Param::Timestamptz(Some(at)));
    }
    if let Some(cursor) = filter.after {
        add(&mut text, "id <", Param::Int8(Some(cursor.0.get())));
    }
    params.push(Param::Int8(Some(i64::from(filter.limit) + 1)));
    let _ = write!(text, " ORDER BY id DESC LIMIT ${}", params.len());
    (text, params)
}

/// The tasks of one page of `filter`, and one more if another page follows.
pub(crate) async fn list<C: PooledClient>(
    conn: &Pooled<'_, C>,
    sql: &Sql,
    filter: &TaskFilter,
) -> Result<Vec<TaskRecord>> {
    let (text, params) = page_query(sql, filter);
    let rows = conn.rows(&text, &params, "cannot list tasks").await?;
    rows.iter().map(super::tasks::record_from_row).collect()
}

/// The counts of [`TaskStats`], finished tasks over `window`.
pub(crate) async fn stats<C: PooledClient>(
    conn: &Pooled<'_, C>,
    sql: &Sql,
    window: Duration,
) -> Result<TaskStats> {
    let context = "cannot count tasks";
    let window_ms = i64::try_from(window.as_millis()).unwrap_or(i64::MAX);
    let counts = conn
        .rows(
            &sql.listing.counts,
            &[Param::Int8(Some(window_ms))],
            context,
        )
        .await?;
    let oldest = conn.rows(&sql.listing.oldest_due, &[], context).await?;
    let workers = conn.rows(&sql.listing.by_worker, &[], context).await?;
    let read = || -> std::result::Result<TaskStats, tokio_postgres::Error> {
        let count = |v: i64| u64::try_from(v).unwrap_or(0);
        let mut stats = TaskStats {
            counts: Vec::with_capacity(counts.len()),
            window,
            oldest_due_age: None,
            running_by_worker: Vec::with_capacity(workers.len()),
        };
        for row in &counts {
            // A status code this runtime does not know (a newer schema) is left out.
            let Some(status) = super::tasks::task_status(row.try_get(2)?) else {
                continue;
            };
            stats.counts.push(TaskCount {
                queue: row.try_get(0)?,
                name: row.try_get(1)?,
                status,
                count: count(row.try_get(3)?),
            });
        }
        if let Some(row) = oldest.first() {
            let ms: Option<f64> = row.try_get(0)?;
            stats.oldest_due_age = ms.map(super::millis_to_duration);
        }
        for row in &workers {
            stats.running_by_worker.push(WorkerLoad {
                worker: row.try_get(0)?,
                running: count(row.try_get(1)?),
            });
        }
        Ok(stats)
    };
    read().map_err(|e| db_error(context, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::task::TaskId;

    #[test]
    fn each_filter_adds_one_numbered_condition() {
        let sql = Sql::new("anchor");
        let filter = TaskFilter::default()
            .with_status(TaskStatus::Failed)
            .with_queue("emails")
            .with_name("SendEmail")
            .after("42".parse().expect("cursor"))
            .with_limit(10);
        let (text, params) = page_query(&sql, &filter);
        assert!(text.contains("status = 3"), "{text}");
        assert!(text.contains("name = $1"), "{text}");
        assert!(text.contains("queue = $2"), "{text}");
        assert!(text.contains("id < $3"), "{text}");
        assert!(text.ends_with("ORDER BY id DESC LIMIT $4"), "{text}");
        assert_eq!(params.len(), 4);

        let two = TaskFilter::default()
            .with_status(TaskStatus::Failed)
            .with_status(TaskStatus::Cancelled)
            .with_parent(TaskId::new(7));
        let (text, params) = page_query(&sql, &two);
        assert!(text.contains("status IN (3, 4)"), "{text}");
        assert!(text.contains("parent_id = $1"), "{text}");
        assert_eq!(params.len(), 2);
    }
}
