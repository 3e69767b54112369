//! The `cron_schedules` table: registering and updating schedules, firing due ticks (the
//! occurrence insert goes into `tasks`), pausing, and reading them back. Review it with
//! `migrations/V2__cron_schedules.sql` beside.

use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio_postgres::{GenericClient, Row};

use super::{db_error, quote_ident, status, Caching, SettingsColumns, Sql};
use crate::error::Result;
use crate::ids::{ScheduleId, TaskId};
use crate::schedule::CronSchedule;
use crate::settings::NewTask;

/// The database's clock: every cron decision is made on it, never on a worker's.
const NOW: &str = "SELECT now()";

/// $1 payload, $2 the definition's default parameters (or NULL). jsonb's text form is
/// canonical (keys sorted, whitespace normalised), so equal parameters hash alike whatever
/// order the serialiser wrote the keys in.
const KEY_FOR_PARAMS: &str = "SELECT md5(p::text), coalesce(p = $2::text::jsonb, false) \
                              FROM (SELECT $1::text::jsonb AS p) AS x";

/// The columns [`CronSchedule`] is read from, in order (see [`schedule_from_row`]).
const SCHEDULE_COLUMNS: &str =
    "id, task_name, schedule_key, expression, timezone, payload, next_fire_at, last_tick_at, \
     last_task_id, last_fired_at, enabled, disabled_reason, disabled_detail, created_at, \
     updated_at, allow_overlap";

/// Disabled-reason codes stored in `cron_schedules.disabled_reason`.
pub(crate) mod reason {
    /// No running worker has the schedule's task registered (a task removed from tasks.yaml,
    /// or its `cronjob` removed).
    pub const ORPHANED: &str = "orphaned";
    /// Paused from code; only code resumes it.
    pub const PAUSED: &str = "paused";
    /// The expression or time zone cannot be evaluated by the worker that tried.
    pub const INVALID: &str = "invalid";
}

/// The statements on `cron_schedules` for one schema.
#[derive(Debug)]
pub(crate) struct CronSql {
    lock_by_key: String,
    insert: String,
    update: String,
    retime_task: String,
    reenable_orphans: String,
    due: String,
    insert_occurrence: String,
    advance: String,
    skip: String,
    set_overlap: String,
    disable: String,
    next_due_ms: String,
    disable_orphans: String,
    list: String,
    get: String,
    lock_by_id: String,
    set_enabled: String,
}

impl CronSql {
    pub(crate) fn new(schema: &str) -> CronSql {
        let s = quote_ident(schema);
        let t = format!("{s}.cron_schedules");
        let tasks = format!("{s}.tasks");
        CronSql {
            // $1 task, $2 key, $3 payload (compared with the stored one).
            lock_by_key: format!(
                "SELECT id, expression, timezone, payload = $3::text::jsonb, enabled, \
                   disabled_reason \
                 FROM {t} WHERE task_name = $1 AND schedule_key = $2 FOR UPDATE"
            ),
            // $1 task, $2 key, $3 expression, $4 time zone, $5 payload, $6 first tick.
            insert: format!(
                "INSERT INTO {t} (task_name, schedule_key, expression, timezone, payload, \
                   next_fire_at) \
                 VALUES ($1, $2, $3, $4, $5::text::jsonb, $6) \
                 ON CONFLICT (task_name, schedule_key) DO NOTHING RETURNING id"
            ),
            // $1 id, $2 expression, $3 time zone, $4 payload, $5 next tick or NULL to keep it,
            // $6 enable.
            update: format!(
                "UPDATE {t} SET expression = $2, timezone = $3, payload = $4::text::jsonb, \
                   next_fire_at = coalesce($5, next_fire_at), \
                   enabled = enabled OR $6, \
                   disabled_reason = CASE WHEN $6 THEN NULL ELSE disabled_reason END, \
                   disabled_detail = CASE WHEN $6 THEN NULL ELSE disabled_detail END, \
                   updated_at = now() \
                 WHERE id = $1"
            ),
            // Startup: every schedule of a task follows the task's current expression.
            // $1 task, $2 expression, $3 time zone, $4 next tick.
            retime_task: format!(
                "UPDATE {t} SET expression = $2, timezone = $3, next_fire_at = $4, \
                   updated_at = now() \
                 WHERE task_name = $1 AND (expression, timezone) IS DISTINCT FROM ($2, $3) \
                 RETURNING id, schedule_key"
            ),
            // Startup: schedules of tasks this worker runs, disabled because no worker knew
            // them or because a worker could not evaluate them, fire again (this worker's
            // definition of the task was just checked and written to them). Their next tick
            // is kept, so a missed stretch fires once.
            reenable_orphans: format!(
                "UPDATE {t} SET enabled = true, disabled_reason = NULL, disabled_detail = NULL, \
                   updated_at = now() \
                 WHERE NOT enabled AND disabled_reason IN ('{orphaned}', '{invalid}') \
                   AND task_name = ANY($1::text[]) \
                 RETURNING id, task_name, schedule_key",
                orphaned = reason::ORPHANED,
                invalid = reason::INVALID,
            ),
            // The due schedules of tasks this worker runs, locked so that exactly one
            // scheduler handles each; the database's clock decides what is due. The last
            // column says whether the tick may fire: always, unless overlap is off and the
            // last occurrence is still pending or running. $1 task names, $2 limit.
            due: format!(
                "SELECT id, task_name, schedule_key, expression, timezone, payload::text, \
                   next_fire_at, now(), \
                   allow_overlap OR last_task_id IS NULL OR NOT EXISTS ( \
                     SELECT 1 FROM {tasks} o WHERE o.id = last_task_id \
                       AND o.status IN ({pending}, {running})) \
                 FROM {t} \
                 WHERE enabled AND next_fire_at <= now() AND task_name = ANY($1::text[]) \
                 ORDER BY next_fire_at LIMIT $2 FOR UPDATE OF {t_alias} SKIP LOCKED",
                t_alias = "cron_schedules",
                pending = status::PENDING,
                running = status::RUNNING,
            ),
            // One occurrence. The conflict target is the (schedule, tick) key, so a second
            // insert for one tick writes nothing and returns no row.
            // $1 name, $2 payload, $3 timeout, $4 intervals, $5 always, $6 max retries,
            // $7 onFailed, $8 schedule id, $9 tick, $10 max rescues, $11 queue, $12 priority.
            insert_occurrence: format!(
                "INSERT INTO {tasks} (name, payload, run_after, timeout_ms, retry_intervals_ms, \
                   retry_always, max_retries, on_failed, cron_schedule_id, cron_tick_at, \
                   max_rescues, queue, priority) \
                 VALUES ($1, $2::text::jsonb, now(), $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) \
                 ON CONFLICT (cron_schedule_id, cron_tick_at) WHERE cron_schedule_id IS NOT NULL \
                 DO NOTHING RETURNING id"
            ),
            // $1 id, $2 next tick, $3 tick fired, $4 occurrence id (NULL if the tick already
            // had one).
            advance: format!(
                "UPDATE {t} SET next_fire_at = $2, last_tick_at = $3, \
                   last_task_id = coalesce($4, last_task_id), last_fired_at = now(), \
                   updated_at = now() \
                 WHERE id = $1"
            ),
            // A tick skipped because the last occurrence has not finished. $1 id, $2 next tick.
            skip: format!("UPDATE {t} SET next_fire_at = $2, updated_at = now() WHERE id = $1"),
            // $1 id, $2 allow.
            set_overlap: format!(
                "UPDATE {t} SET allow_overlap = $2, updated_at = now() WHERE id = $1 RETURNING id"
            ),
            // $1 id, $2 reason, $3 detail.
            disable: format!(
                "UPDATE {t} SET enabled = false, disabled_reason = $2, disabled_detail = $3, \
                   updated_at = now() \
                 WHERE id = $1"
            ),
            // Milliseconds until the earliest tick of the tasks this worker runs (NULL when
            // none), measured on the database's clock.
            next_due_ms: format!(
                "SELECT greatest(0, extract(epoch FROM min(next_fire_at) - now()) * 1000)::float8 \
                 FROM {t} WHERE enabled AND task_name = ANY($1::text[])"
            ),
            // Enabled schedules overdue by more than $2 ms whose task this worker does not
            // run: no worker that runs them is alive, so they are disabled with a warning
            // rather than left to fire into an unknown task. $3 = detail.
            disable_orphans: format!(
                "UPDATE {t} SET enabled = false, disabled_reason = '{orphaned}', \
                   disabled_detail = $3, updated_at = now() \
                 WHERE enabled AND next_fire_at < now() - $2::bigint * interval '1 millisecond' \
                   AND NOT (task_name = ANY($1::text[])) \
                 RETURNING id, task_name, schedule_key",
                orphaned = reason::ORPHANED,
            ),
            list: format!("SELECT {SCHEDULE_COLUMNS} FROM {t} ORDER BY task_name, schedule_key"),
            get: format!("SELECT {SCHEDULE_COLUMNS} FROM {t} WHERE id = $1"),
            lock_by_id: format!(
                "SELECT expression, timezone, enabled, now() FROM {t} WHERE id = $1 FOR UPDATE"
            ),
            // $1 id, $2 enabled, $3 reason, $4 next tick or NULL to keep it.
            set_enabled: format!(
                "UPDATE {t} SET enabled = $2, disabled_reason = $3, disabled_detail = NULL, \
                   next_fire_at = coalesce($4, next_fire_at), updated_at = now() \
                 WHERE id = $1"
            ),
        }
    }
}

/// The database's clock now.
pub(crate) async fn now(conn: &impl GenericClient) -> Result<DateTime<Utc>> {
    let row = conn
        .query_one(NOW, &[])
        .await
        .map_err(|e| db_error("cannot read the database clock", e))?;
    Ok(row.get(0))
}

/// The md5 of `payload`'s canonical form, and whether it equals `defaults` (the
/// definition's default parameters), for a schedule of task `task`.
pub(crate) async fn key_for_params(
    conn: &impl GenericClient,
    task: &str,
    payload: &str,
    defaults: Option<&str>,
) -> Result<(String, bool)> {
    let row = conn
        .query_one(KEY_FOR_PARAMS, &[&payload, &defaults])
        .await
        .map_err(|e| db_error(&format!("cannot key the cron schedule of task {task}"), e))?;
    Ok((row.get(0), row.get(1)))
}

/// A schedule as a caller wants it registered.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Wanted<'a> {
    pub task_name: &'a str,
    pub key: &'a str,
    pub expression: &'a str,
    pub timezone: Option<&'a str>,
    /// The parameters as JSON text.
    pub payload: &'a str,
}

impl Wanted<'_> {
    /// The error of a statement registering this schedule.
    fn error(&self, e: tokio_postgres::Error) -> crate::Error {
        db_error(
            &format!(
                "cannot register the cron schedule {}/{}",
                self.task_name, self.key
            ),
            e,
        )
    }
}

/// A schedule row locked by [`lock_by_key`].
#[derive(Debug, Clone)]
pub(crate) struct Locked {
    pub id: ScheduleId,
    pub expression: String,
    pub timezone: Option<String>,
    /// Whether the stored payload equals the wanted one.
    pub same_payload: bool,
    pub enabled: bool,
    pub disabled_reason: Option<String>,
}

/// Locks the schedule of `wanted`'s task and key, if it exists, until the end of the
/// transaction `conn` is in.
pub(crate) async fn lock_by_key(
    conn: &impl GenericClient,
    sql: &Sql,
    wanted: &Wanted<'_>,
) -> Result<Option<Locked>> {
    let row = conn
        .query_opt(
            &sql.cron.lock_by_key,
            &[&wanted.task_name, &wanted.key, &wanted.payload],
        )
        .await
        .map_err(|e| wanted.error(e))?;
    Ok(row.map(|row| Locked {
        id: row.get(0),
        expression: row.get(1),
        timezone: row.get(2),
        same_payload: row.get(3),
        enabled: row.get(4),
        disabled_reason: row.get(5),
    }))
}

/// Inserts `wanted` with its first tick `next`; returns its id, or `None` when a
/// concurrent registration inserted it first.
pub(crate) async fn insert(
    conn: &impl GenericClient,
    sql: &Sql,
    wanted: &Wanted<'_>,
    next: DateTime<Utc>,
) -> Result<Option<ScheduleId>> {
    let row = conn
        .query_opt(
            &sql.cron.insert,
            &[
                &wanted.task_name,
                &wanted.key,
                &wanted.expression,
                &wanted.timezone,
                &wanted.payload,
                &next,
            ],
        )
        .await
        .map_err(|e| wanted.error(e))?;
    Ok(row.map(|r| r.get(0)))
}

/// Brings schedule `id` (locked) up to `wanted`: its next tick becomes `next` (`None`
/// keeps it) and, with `enable`, a disabled schedule fires again.
pub(crate) async fn update(
    conn: &impl GenericClient,
    sql: &Sql,
    id: ScheduleId,
    wanted: &Wanted<'_>,
    next: Option<DateTime<Utc>>,
    enable: bool,
) -> Result<()> {
    conn.execute(
        &sql.cron.update,
        &[
            &id,
            &wanted.expression,
            &wanted.timezone,
            &wanted.payload,
            &next,
            &enable,
        ],
    )
    .await
    .map_err(|e| wanted.error(e))?;
    Ok(())
}

/// Points every schedule of `task` whose expression or time zone differs at `expression`
/// and `timezone`, next tick `next`; returns the keys of the schedules changed.
pub(crate) async fn retime_task(
    conn: &impl GenericClient,
    sql: &Sql,
    task: &str,
    expression: &str,
    timezone: Option<&str>,
    next: DateTime<Utc>,
) -> Result<Vec<String>> {
    let rows = conn
        .query(
            &sql.cron.retime_task,
            &[&task, &expression, &timezone, &next],
        )
        .await
        .map_err(|e| db_error(&format!("cannot update the schedules of {task}"), e))?;
    Ok(rows.iter().map(|r| r.get(1)).collect())
}

/// A schedule named by its id, task and key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ScheduleRef {
    pub id: ScheduleId,
    pub task: String,
    pub key: String,
}

fn schedule_refs(rows: &[Row]) -> Vec<ScheduleRef> {
    rows.iter()
        .map(|r| ScheduleRef {
            id: r.get(0),
            task: r.get(1),
            key: r.get(2),
        })
        .collect()
}

/// Enables the schedules of the tasks `names` that were disabled as orphaned or invalid;
/// returns them.
pub(crate) async fn reenable_orphans(
    conn: &impl Caching,
    sql: &Sql,
    names: &[String],
) -> Result<Vec<ScheduleRef>> {
    let rows = conn
        .query(&sql.cron.reenable_orphans, &[&names])
        .await
        .map_err(|e| db_error("cannot enable orphaned schedules", e))?;
    Ok(schedule_refs(&rows))
}

/// A due schedule locked by [`lock_due`].
#[derive(Debug, Clone)]
pub(crate) struct Due {
    pub id: ScheduleId,
    pub task_name: String,
    pub key: String,
    pub expression: String,
    pub timezone: Option<String>,
    /// The parameters as JSON text.
    pub payload: String,
    /// The tick due.
    pub tick: DateTime<Utc>,
    /// The database's clock.
    pub now: DateTime<Utc>,
    /// Whether the tick may fire (no overlap with an unfinished last occurrence).
    pub may_fire: bool,
}

/// Locks up to `limit` due schedules of the tasks `names` for the transaction `tx`.
pub(crate) async fn lock_due(
    tx: &impl Caching,
    sql: &Sql,
    names: &[String],
    limit: i64,
) -> Result<Vec<Due>> {
    let rows = tx
        .query(&sql.cron.due, &[&names, &limit])
        .await
        .map_err(|e| db_error("cannot read the due cron schedules", e))?;
    Ok(rows
        .iter()
        .map(|row| Due {
            id: row.get(0),
            task_name: row.get(1),
            key: row.get(2),
            expression: row.get(3),
            timezone: row.get(4),
            payload: row.get(5),
            tick: row.get(6),
            now: row.get(7),
            may_fire: row.get(8),
        })
        .collect())
}

/// What made a due schedule unusable, for [`disable_invalid`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unusable {
    /// Its expression or time zone cannot be evaluated.
    Expression,
    /// Its expression has no tick after now.
    Exhausted,
    /// Its task's definition cannot be resolved.
    Definition,
}

/// Disables schedule `id` as invalid, for `why`, with `detail`.
pub(crate) async fn disable_invalid(
    tx: &impl Caching,
    sql: &Sql,
    id: ScheduleId,
    why: Unusable,
    detail: &str,
) -> Result<()> {
    let context = match why {
        Unusable::Expression => "cannot disable an invalid cron schedule",
        Unusable::Exhausted => "cannot disable an exhausted cron schedule",
        Unusable::Definition => "cannot disable a cron schedule",
    };
    tx.execute(&sql.cron.disable, &[&id, &reason::INVALID, &detail])
        .await
        .map_err(|e| db_error(context, e))?;
    Ok(())
}

/// Moves schedule `id`'s next tick to `next` without firing (overlap is off and the last
/// occurrence has not finished).
pub(crate) async fn skip(
    tx: &impl Caching,
    sql: &Sql,
    id: ScheduleId,
    next: DateTime<Utc>,
) -> Result<()> {
    tx.execute(&sql.cron.skip, &[&id, &next])
        .await
        .map_err(|e| db_error("cannot advance the cron schedule", e))?;
    Ok(())
}

/// Inserts the occurrence of schedule `id` for `tick`: a `pending` task with `task`'s
/// settings and `payload`. Returns its id, or `None` when the tick already had one.
pub(crate) async fn insert_occurrence(
    tx: &impl Caching,
    sql: &Sql,
    task: &NewTask,
    payload: &str,
    id: ScheduleId,
    tick: DateTime<Utc>,
) -> Result<Option<TaskId>> {
    let insert = tx
        .prepare_cached(&sql.cron.insert_occurrence)
        .await
        .map_err(|e| db_error("cannot prepare the occurrence insert", e))?;
    let columns = SettingsColumns::of(&task.settings);
    let row = tx
        .query_opt(
            &insert,
            &[
                &task.name,
                &payload,
                &columns.timeout_ms,
                &columns.intervals_ms,
                &columns.always,
                &columns.max_retries,
                &columns.on_failed,
                &id,
                &tick,
                &columns.max_rescues,
                &columns.queue,
                &columns.priority,
            ],
        )
        .await
        .map_err(|e| {
            db_error(
                &format!("cannot enqueue the occurrence of {}", task.name),
                e,
            )
        })?;
    Ok(row.map(|r| r.get(0)))
}

/// Records that schedule `id` fired `tick` (its occurrence, `None` if the tick already had
/// one) and waits for `next`.
pub(crate) async fn advance(
    tx: &impl Caching,
    sql: &Sql,
    id: ScheduleId,
    next: DateTime<Utc>,
    tick: DateTime<Utc>,
    occurrence: Option<TaskId>,
) -> Result<()> {
    tx.execute(&sql.cron.advance, &[&id, &next, &tick, &occurrence])
        .await
        .map_err(|e| db_error("cannot advance the cron schedule", e))?;
    Ok(())
}

/// How long until the earliest tick of the tasks `names`, by the database's clock; `None`
/// when they have no enabled schedule.
pub(crate) async fn next_due(
    conn: &impl Caching,
    sql: &Sql,
    names: &[String],
) -> Result<Option<Duration>> {
    let stmt = conn
        .prepare_cached(&sql.cron.next_due_ms)
        .await
        .map_err(|e| db_error("cannot prepare the next-tick query", e))?;
    let ms: Option<f64> = conn
        .query_one(&stmt, &[&names])
        .await
        .map_err(|e| db_error("cannot read the next cron tick", e))?
        .get(0);
    // Round up so the scheduler wakes at or just after the tick, never just before it.
    Ok(ms.map(|ms| Duration::from_micros((ms.max(0.0) * 1000.0).ceil() as u64)))
}

/// Disables, with `detail`, the enabled schedules overdue by more than `after_ms` whose
/// task is not among `names`; returns them.
pub(crate) async fn disable_orphans(
    conn: &impl Caching,
    sql: &Sql,
    names: &[String],
    after_ms: i64,
    detail: &str,
) -> Result<Vec<ScheduleRef>> {
    let rows = conn
        .query(&sql.cron.disable_orphans, &[&names, &after_ms, &detail])
        .await
        .map_err(|e| db_error("cannot disable orphaned cron schedules", e))?;
    Ok(schedule_refs(&rows))
}

/// Reads a row of [`SCHEDULE_COLUMNS`].
fn schedule_from_row(row: &Row) -> CronSchedule {
    CronSchedule {
        id: row.get(0),
        task_name: row.get(1),
        key: row.get(2),
        expression: row.get(3),
        timezone: row.get(4),
        payload: row.get(5),
        next_fire_at: row.get(6),
        last_tick_at: row.get(7),
        last_task_id: row.get(8),
        last_fired_at: row.get(9),
        enabled: row.get(10),
        disabled_reason: row.get(11),
        disabled_detail: row.get(12),
        created_at: row.get(13),
        updated_at: row.get(14),
        allow_overlap: row.get(15),
    }
}

/// Every schedule, sorted by task name and key.
pub(crate) async fn list(conn: &impl Caching, sql: &Sql) -> Result<Vec<CronSchedule>> {
    let rows = conn
        .query(&sql.cron.list, &[])
        .await
        .map_err(|e| db_error("cannot list the cron schedules", e))?;
    Ok(rows.iter().map(schedule_from_row).collect())
}

/// Schedule `id`, if it exists.
pub(crate) async fn get(
    conn: &impl Caching,
    sql: &Sql,
    id: ScheduleId,
) -> Result<Option<CronSchedule>> {
    let row = conn
        .query_opt(&sql.cron.get, &[&id])
        .await
        .map_err(|e| db_error(&format!("cannot read cron schedule {id}"), e))?;
    Ok(row.as_ref().map(schedule_from_row))
}

/// Allows or forbids overlapping occurrences of schedule `id`; returns whether it exists.
pub(crate) async fn set_overlap(
    conn: &impl Caching,
    sql: &Sql,
    id: ScheduleId,
    allow: bool,
) -> Result<bool> {
    let updated = conn
        .query_opt(&sql.cron.set_overlap, &[&id, &allow])
        .await
        .map_err(|e| db_error(&format!("cannot update cron schedule {id}"), e))?;
    Ok(updated.is_some())
}

/// Schedule `id` as [`lock_by_id`] reads it.
#[derive(Debug, Clone)]
pub(crate) struct State {
    pub expression: String,
    pub timezone: Option<String>,
    pub enabled: bool,
    /// The database's clock.
    pub now: DateTime<Utc>,
}

/// Locks schedule `id`, if it exists, until the end of the transaction `tx`.
pub(crate) async fn lock_by_id(
    tx: &impl Caching,
    sql: &Sql,
    id: ScheduleId,
) -> Result<Option<State>> {
    let row = tx
        .query_opt(&sql.cron.lock_by_id, &[&id])
        .await
        .map_err(|e| db_error(&format!("cannot lock cron schedule {id}"), e))?;
    Ok(row.map(|row| State {
        expression: row.get(0),
        timezone: row.get(1),
        enabled: row.get(2),
        now: row.get(3),
    }))
}

/// Enables or disables schedule `id` (locked), with `reason` (`None` when enabled) and
/// its next tick `next` (`None` keeps it).
pub(crate) async fn set_enabled(
    tx: &impl Caching,
    sql: &Sql,
    id: ScheduleId,
    enabled: bool,
    reason: Option<&str>,
    next: Option<DateTime<Utc>>,
) -> Result<()> {
    tx.execute(&sql.cron.set_enabled, &[&id, &enabled, &reason, &next])
        .await
        .map_err(|e| db_error(&format!("cannot update cron schedule {id}"), e))?;
    Ok(())
}
