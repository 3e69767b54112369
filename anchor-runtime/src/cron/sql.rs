//! The cron statements, rendered for one schema (like `crate::sql` does for the task table).
//! Review them with `migrations/V2__cron_schedules.sql` beside.

use crate::db::{quote_ident, status};

/// The columns [`CronSchedule`](super::CronSchedule) is read from, in order.
pub(crate) const SCHEDULE_COLUMNS: &str =
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

/// The statements for one schema.
#[derive(Debug)]
pub(crate) struct CronSql {
    /// The channel schedulers listen on for schedule changes (unquoted).
    pub channel: String,
    pub notify: String,
    pub now: String,
    pub key_for_params: String,
    pub lock_by_key: String,
    pub insert: String,
    pub update: String,
    pub retime_task: String,
    pub reenable_orphans: String,
    pub due: String,
    pub insert_occurrence: String,
    pub advance: String,
    pub skip: String,
    pub set_overlap: String,
    pub disable: String,
    pub next_due_ms: String,
    pub disable_orphans: String,
    pub list: String,
    pub get: String,
    pub lock_by_id: String,
    pub set_enabled: String,
}

impl CronSql {
    pub(crate) fn new(schema: &str) -> CronSql {
        let s = quote_ident(schema);
        let t = format!("{s}.cron_schedules");
        let tasks = format!("{s}.tasks");
        CronSql {
            channel: cron_channel(schema),
            notify: "SELECT pg_notify($1, '')".to_string(),
            now: "SELECT now()".to_string(),
            // $1 payload, $2 the definition's default parameters (or NULL). jsonb's text form
            // is canonical (keys sorted, whitespace normalised), so equal parameters hash alike
            // whatever order the serialiser wrote the keys in.
            key_for_params: "SELECT md5(p::text), coalesce(p = $2::text::jsonb, false) \
                             FROM (SELECT $1::text::jsonb AS p) AS x"
                .to_string(),
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
            // $7 onFailed, $8 schedule id, $9 tick, $10 max rescues.
            insert_occurrence: format!(
                "INSERT INTO {tasks} (name, payload, run_after, timeout_ms, retry_intervals_ms, \
                   retry_always, max_retries, on_failed, cron_schedule_id, cron_tick_at, \
                   max_rescues) \
                 VALUES ($1, $2::text::jsonb, now(), $3, $4, $5, $6, $7, $8, $9, $10) \
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

/// The `LISTEN`/`NOTIFY` channel for schedule changes in `schema`.
pub(crate) fn cron_channel(schema: &str) -> String {
    format!("{schema}_cron")
}
