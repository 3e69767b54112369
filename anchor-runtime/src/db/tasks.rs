//! The `tasks` table: inserts (enqueue, local dispatch, `onFailed` handlers), unique tags,
//! the claim, run starts, outcomes, leases (renew, check, release), the rescue of expired
//! leases, and inspection (read, cancel). Review it with `migrations/V1__initial.sql` and
//! its indexes beside.

use std::collections::HashSet;
use std::time::Instant;

use chrono::{DateTime, Utc};
use tokio_postgres::Row;

use super::driver::{Param, Pooled, PooledClient, Run};
use super::{db_error, quote_ident, status, tagged, Caching, SettingsColumns, Sql};
use crate::claimed::{ClaimedTask, LostRun, UnreadableRow};
use crate::error::{Error, ErrorKind, Result};
use crate::record::{ErrorRecord, TaskRecord, TaskStatus};
use crate::settings::NewTask;
use crate::task::TaskId;

/// The statements on `tasks` for one schema.
#[derive(Debug)]
pub(crate) struct TaskSql {
    pub insert: String,
    pub insert_notify: String,
    pub insert_running: String,
    pub insert_many: String,
    pub select_by_tag: String,
    pub free_tag: String,
    pub claim: String,
    pub set_outcomes: String,
    pub mark_started: String,
    pub fail: String,
    pub fail_resetting_errors: String,
    pub renew: String,
    pub lease_held: String,
    pub release: String,
    pub rescue_select: String,
    pub rescue_pending: String,
    pub rescue_fail: String,
    pub get_task: String,
    pub cancel: String,
    pub retry_now: String,
    pub delete_finished: String,
}

/// The columns a worker needs about a task it claims or rescues (read by
/// [`claimed_from_row`], in this order).
const TASK_RUN_COLUMNS: &str =
    "t.id, t.name, t.payload::text, t.attempts, t.failures, t.timeout_ms, \
     t.retry_intervals_ms, t.retry_always, t.max_retries, t.on_failed, t.parent_id, \
     t.rescues, t.max_rescues, t.run_started, t.lease_owner, t.queue, t.priority";

/// The columns [`record_from_row`] reads, for inspection and listing.
pub(crate) const RECORD_COLUMNS: &str =
    "id, name, status, payload, attempts, failures, errors, created_at, run_after, \
     started_at, finished_at, updated_at, parent_id, unique_tag, timeout_ms, \
     retry_intervals_ms, retry_always, max_retries, on_failed, lease_owner, lease_expires_at, \
     rescues, max_rescues, queue, priority";

/// How many entries a task's error history keeps: the newest. A task retried forever
/// would otherwise grow its row without bound (and past jsonb's size limit).
pub(crate) const MAX_ERROR_ENTRIES: i32 = 50;

/// One entry of the error history, for attempt `attempt` (an SQL expression) with the
/// message parameter `msg_param`.
fn error_entry(attempt: &str, msg_param: &str) -> String {
    format!(
        "jsonb_build_array(jsonb_build_object('attempt', {attempt}, 'at', now(), \
         'message', {msg_param}::text))"
    )
}

/// The error history `errors` (an SQL expression) with one entry appended, the oldest
/// entry dropped once the history holds [`MAX_ERROR_ENTRIES`].
fn with_error(errors: &str, attempt: &str, msg_param: &str) -> String {
    format!(
        "(CASE WHEN jsonb_array_length({errors}) >= {MAX_ERROR_ENTRIES} \
         THEN {errors} - 0 ELSE {errors} END) || {}",
        error_entry(attempt, msg_param)
    )
}

/// Appends one entry to a task's error history (see [`with_error`]).
fn append_error(attempt: &str, msg_param: &str) -> String {
    format!("errors = {}", with_error("errors", attempt, msg_param))
}

const CLEAR_LEASE: &str = "lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL";

impl TaskSql {
    pub(crate) fn new(schema: &str) -> TaskSql {
        let tasks = format!("{}.tasks", quote_ident(schema));
        let queues = format!("{}.queues", quote_ident(schema));
        let run_after = "coalesce($3::timestamptz, now() + $4::bigint * interval '1 millisecond')";
        TaskSql {
            // One task. `ON CONFLICT DO NOTHING` only ever fires on the unique-tag index
            // (ids come from an identity column), and then no row is returned.
            insert: format!(
                "INSERT INTO {tasks} (name, payload, run_after, timeout_ms, retry_intervals_ms, \
                 retry_always, max_retries, on_failed, unique_tag, parent_id, max_rescues, queue, \
                 priority) \
                 VALUES ($1, $2::text::jsonb, {run_after}, $5, $6, $7, $8, $9, $10, $11, $12, \
                 $13, $14) \
                 ON CONFLICT DO NOTHING RETURNING id"
            ),
            // The same, also queueing the wake-up notification on channel $15 with the
            // task's queue as its payload (evaluated only for an inserted row; delivered when
            // the transaction commits).
            insert_notify: format!(
                "INSERT INTO {tasks} (name, payload, run_after, timeout_ms, retry_intervals_ms, \
                 retry_always, max_retries, on_failed, unique_tag, parent_id, max_rescues, queue, \
                 priority) \
                 VALUES ($1, $2::text::jsonb, {run_after}, $5, $6, $7, $8, $9, $10, $11, $12, \
                 $13, $14) \
                 ON CONFLICT DO NOTHING RETURNING id, pg_notify($15, $13)"
            ),
            // Local dispatch (`worker/local.rs`): the same, inserted already leased to an idle
            // worker of the enqueuing process, as its claim would have left it: running, no
            // run started yet (the worker records the start, as after a claim), lease owner
            // $15, token $16, lease length $17 ms. No notification: no other worker needs to
            // look. Nothing is inserted while the queue is paused (the worker's own view of
            // the pause may be stale): the caller then inserts the task pending instead.
            insert_running: format!(
                "INSERT INTO {tasks} (name, payload, run_after, timeout_ms, retry_intervals_ms, \
                 retry_always, max_retries, on_failed, unique_tag, parent_id, max_rescues, queue, \
                 priority, status, started_at, lease_owner, lease_token, lease_expires_at) \
                 SELECT $1, $2::text::jsonb, {run_after}, $5, $6, $7, $8, $9, $10, $11, $12, \
                 $13, $14, {running}, now(), $15, $16, \
                 now() + $17::bigint * interval '1 millisecond' \
                 WHERE NOT EXISTS (SELECT 1 FROM {queues} q \
                   WHERE q.name = $13 AND q.paused_at IS NOT NULL) \
                 ON CONFLICT DO NOTHING RETURNING id",
                running = status::RUNNING,
            ),
            // Many tasks sharing one definition and one set of overrides: one statement,
            // the payloads as one text array.
            insert_many: format!(
                "INSERT INTO {tasks} (name, payload, run_after, timeout_ms, retry_intervals_ms, \
                 retry_always, max_retries, on_failed, max_rescues, queue, priority) \
                 SELECT $1, p::jsonb, {run_after}, $5, $6, $7, $8, $9, $10, $11, $12 \
                 FROM unnest($2::text[]) AS p RETURNING id"
            ),
            // The holder of a tag: pending, running or completed (failed and cancelled
            // tasks free theirs; see `tasks_unique_tag_idx`).
            select_by_tag: format!(
                "SELECT id FROM {tasks} WHERE unique_tag = $1 AND status NOT IN ({}, {})",
                status::FAILED,
                status::CANCELLED
            ),
            // Frees a tag whatever its holder's status; returns the holder.
            free_tag: format!(
                "UPDATE {tasks} SET unique_tag = NULL, updated_at = now() \
                 WHERE unique_tag = $1 AND status NOT IN ({}, {}) RETURNING id",
                status::FAILED,
                status::CANCELLED
            ),
            // The claim: one statement picks up to $2 due tasks of queue $6 this worker can
            // run ($1 the names), skipping rows other workers hold, and leases them (owner
            // $3, token $4, for $5 ms). Nothing is picked while the queue is paused.
            // It reads only `tasks_claim_idx`, one priority at a time (0 first): each
            // (queue, priority) range of the index starts with its due rows, so the scan of
            // a priority ends at its first row not due yet. A single scan ordered by
            // (priority, run_after) would instead walk every row not due yet (a retry
            // waiting, a task scheduled for tomorrow) of each higher priority on every
            // claim. The outer LIMIT stops the scans once $2 rows are picked, so lower
            // priorities are not even looked at while a higher one has enough due rows.
            // The picked ids go to the update as one array (`id = ANY(ARRAY(...))`), which
            // is always a primary-key lookup; a join with the CTE let stale statistics pick a
            // hash join over the whole table (~100 ms per claim of 500 on 50k rows).
            // The claim commits durably like every other write. An asynchronous claim
            // (synchronous_commit off) would save one disk flush, but a claim lost in a
            // server crash puts a task that is still running back to `pending` with no
            // lease, so another worker could start it while the first is still running it:
            // a second concurrent run, which the lease design exists to prevent.
            // The claim does not count an attempt: `attempts` counts runs that started, and
            // the worker records a run's start (`mark_started`, or with its outcome).
            claim: format!(
                "WITH picked AS ( \
                   SELECT c.id FROM generate_series(0, {lowest}) AS p(priority) \
                   CROSS JOIN LATERAL ( \
                     SELECT id FROM {tasks} \
                     WHERE status = {pending} AND queue = $6 AND priority = p.priority::smallint \
                       AND run_after <= now() AND name = ANY($1::text[]) \
                     ORDER BY run_after, id LIMIT $2 FOR UPDATE SKIP LOCKED) c \
                   WHERE NOT EXISTS (SELECT 1 FROM {queues} q \
                     WHERE q.name = $6 AND q.paused_at IS NOT NULL) \
                   LIMIT $2) \
                 UPDATE {tasks} t SET status = {running}, run_started = false, \
                   started_at = now(), updated_at = now(), lease_owner = $3, lease_token = $4, \
                   lease_expires_at = now() + $5::bigint * interval '1 millisecond' \
                 WHERE t.id = ANY(ARRAY(SELECT id FROM picked)) \
                 RETURNING {TASK_RUN_COLUMNS}, t.run_after",
                pending = status::PENDING,
                running = status::RUNNING,
                lowest = crate::LOWEST_PRIORITY,
            ),
            // The outcomes of many runs at once, each fenced by its lease token: per task
            // $4 the new status (completed, failed, or pending for a retry after $6 ms), $5
            // the message added to the error history (NULL: none) and $7 whether the run
            // counts as a failure. A failure's `onFailed` handler is inserted in the same
            // transaction (`worker/on_failed.rs`).
            //
            // The batched statements (complete, renew, lease_held, release) fence by token
            // alone: every transition out of `running` clears the token, so a matching token
            // implies `running`. Leaving `status` out keeps the planner from driving the join
            // from the partial lease index, a plan that is quadratic when the table's
            // statistics are stale (seen after TRUNCATE + bulk enqueue: 15 s per 1 000
            // completions). `t.id = ANY($1)` pins the table side to primary-key lookups:
            // without it, a custom plan for a batch of 500 on a table of 50 000 rows was a
            // hash join over a sequential scan of the whole table (EXPLAIN ANALYZE: 25 ms
            // instead of 9 ms), and the scan grows with the table.
            // Every write of a run's outcome also records the run as an attempt ($attempt is
            // the run's number, one more than `attempts` at its claim), whether or not its
            // start was recorded before.
            // It returns the token with the id: a batch may hold a stale outcome of a task
            // (for a lease it lost) beside the outcome of its new lease, and only the one
            // applied may go on to enqueue the task's `onFailed` handler.
            set_outcomes: format!(
                "UPDATE {tasks} t SET status = c.status, \
                   failures = t.failures + CASE WHEN c.counted THEN 1 ELSE 0 END, \
                   errors = CASE WHEN c.message IS NULL THEN t.errors ELSE {err} END, \
                   attempts = greatest(t.attempts, c.attempt), \
                   run_after = CASE WHEN c.status = {pending} \
                     THEN now() + c.delay_ms * interval '1 millisecond' ELSE t.run_after END, \
                   finished_at = CASE WHEN c.status = {pending} THEN t.finished_at ELSE now() END, \
                   updated_at = now(), {CLEAR_LEASE} \
                 FROM unnest($1::bigint[], $2::bigint[], $3::int[], $4::smallint[], $5::text[], \
                   $6::bigint[], $7::bool[]) \
                   AS c(id, token, attempt, status, message, delay_ms, counted) \
                 WHERE t.id = ANY($1::bigint[]) AND t.id = c.id AND t.lease_token = c.token \
                 RETURNING t.id, c.token",
                err = with_error("t.errors", "c.attempt", "c.message"),
                pending = status::PENDING,
            ),
            // Runs under way: their start is recorded, so a rescue after this worker dies
            // knows the run had started (it counts as an attempt, and towards max_rescues).
            mark_started: format!(
                "UPDATE {tasks} t SET attempts = greatest(t.attempts, c.attempt), \
                   run_started = true, updated_at = now() \
                 FROM unnest($1::bigint[], $2::bigint[], $3::int[]) AS c(id, token, attempt) \
                 WHERE t.id = ANY($1::bigint[]) AND t.id = c.id AND t.lease_token = c.token \
                 RETURNING t.id"
            ),
            // $1 id, $2 token, $3 message, $4 attempt.
            fail: format!(
                "UPDATE {tasks} SET status = {failed}, failures = failures + 1, {err}, \
                   attempts = greatest(attempts, $4::int), \
                   finished_at = now(), updated_at = now(), {CLEAR_LEASE} \
                 WHERE id = $1 AND lease_token = $2 AND status = {running}",
                err = append_error("$4::int", "$3"),
                failed = status::FAILED,
                running = status::RUNNING,
            ),
            // The same when the history itself cannot take another entry (edited by hand
            // into something that is not an array): it is replaced by this one entry.
            fail_resetting_errors: format!(
                "UPDATE {tasks} SET status = {failed}, failures = failures + 1, \
                   errors = {entry}, attempts = greatest(attempts, $4::int), \
                   finished_at = now(), updated_at = now(), {CLEAR_LEASE} \
                 WHERE id = $1 AND lease_token = $2 AND status = {running}",
                entry = error_entry("$4::int", "$3"),
                failed = status::FAILED,
                running = status::RUNNING,
            ),
            // Extends the leases this worker holds; returns the ids it renewed. Rows another
            // session has locked are skipped rather than waited for: one locked row must not
            // hold up the renewal of every other lease (they would expire and their tasks
            // run elsewhere while they still run here). `lease_held` tells a skipped row
            // from a lost one.
            renew: format!(
                "WITH mine AS ( \
                   SELECT t.id FROM {tasks} t \
                   JOIN unnest($1::bigint[], $2::bigint[]) AS c(id, token) \
                     ON t.id = c.id AND t.lease_token = c.token \
                   WHERE t.id = ANY($1::bigint[]) \
                   FOR UPDATE OF t SKIP LOCKED) \
                 UPDATE {tasks} t SET lease_expires_at = now() + $3::bigint * interval '1 millisecond' \
                 WHERE t.id = ANY(ARRAY(SELECT id FROM mine)) \
                 RETURNING t.id",
            ),
            // Which of these leases this worker still holds, by a plain read that no row
            // lock blocks.
            lease_held: format!(
                "SELECT t.id FROM {tasks} t \
                 JOIN unnest($1::bigint[], $2::bigint[]) AS c(id, token) \
                   ON t.id = c.id AND t.lease_token = c.token \
                 WHERE t.id = ANY($1::bigint[])"
            ),
            // Hands tasks back at once (shutdown, or a buffered task that waited too long).
            // A run that had started ($4) counts as an attempt ($3); one that never started
            // counts nothing. The task keeps its place in the queue (`run_after`).
            release: format!(
                "UPDATE {tasks} t SET status = {pending}, \
                   attempts = CASE WHEN c.started THEN greatest(t.attempts, c.attempt) \
                     ELSE t.attempts END, \
                   updated_at = now(), {CLEAR_LEASE} \
                 FROM unnest($1::bigint[], $2::bigint[], $3::int[], $4::bool[]) \
                   AS c(id, token, attempt, started) \
                 WHERE t.id = ANY($1::bigint[]) AND t.id = c.id AND t.lease_token = c.token \
                 RETURNING t.id",
                pending = status::PENDING,
            ),
            // Running tasks whose lease expired; locked so that one rescuer handles each.
            rescue_select: format!(
                "SELECT {TASK_RUN_COLUMNS} FROM {tasks} t \
                 WHERE t.status = {running} AND t.lease_expires_at < now() \
                 ORDER BY t.lease_expires_at LIMIT $1 FOR UPDATE SKIP LOCKED",
                running = status::RUNNING,
            ),
            // $1 id, $2 message or NULL. The row is locked by `rescue_select` in the same
            // transaction. A rescue is not a failure: `failures` is unchanged, and the task
            // keeps its place in the queue (`run_after`). A run whose start was recorded gets
            // an entry in the history ($2); a task lost before it started gets none.
            rescue_pending: format!(
                "UPDATE {tasks} SET status = {pending}, rescues = rescues + 1, \
                   errors = CASE WHEN $2::text IS NULL THEN errors ELSE {err} END, \
                   updated_at = now(), {CLEAR_LEASE} \
                 WHERE id = $1 AND status = {running}",
                err = with_error("errors", "attempts", "$2"),
                pending = status::PENDING,
                running = status::RUNNING,
            ),
            // $1 id, $2 message: the worker was lost once too often (poison).
            rescue_fail: format!(
                "UPDATE {tasks} SET status = {failed}, rescues = rescues + 1, {err}, \
                   finished_at = now(), updated_at = now(), {CLEAR_LEASE} \
                 WHERE id = $1 AND status = {running}",
                err = append_error("attempts", "$2"),
                failed = status::FAILED,
                running = status::RUNNING,
            ),
            get_task: format!("SELECT {RECORD_COLUMNS} FROM {tasks} WHERE id = $1"),
            // Cancels a pending or running task; returns its status before. A running one
            // loses its lease (so its run's outcome, fenced by the token, is never written:
            // no retry, no `onFailed` handler), gets a line in its error history, and its
            // worker is told on the control channel $2 to stop the run.
            cancel: format!(
                "WITH old AS (SELECT id, status FROM {tasks} \
                   WHERE id = $1 AND status IN ({pending}, {running}) FOR UPDATE) \
                 UPDATE {tasks} t SET status = {cancelled}, finished_at = now(), \
                   updated_at = now(), {CLEAR_LEASE}, \
                   errors = CASE WHEN old.status = {running} THEN {err} ELSE t.errors END \
                 FROM old WHERE t.id = old.id \
                 RETURNING old.status::bigint, \
                   CASE WHEN old.status = {running} THEN pg_notify($2, 'cancel ' || t.id) END",
                cancelled = status::CANCELLED,
                pending = status::PENDING,
                running = status::RUNNING,
                err = with_error(
                    "t.errors",
                    "CASE WHEN t.run_started THEN t.attempts ELSE t.attempts + 1 END",
                    "'cancelled while running'"
                ),
            ),
            // Retry now, by hand: a failed or cancelled task, or a pending one waiting for
            // its retry delay (or its `run_after`), becomes due at once. `attempts` and the
            // error history stay (they are the task's past); `failures` starts afresh, so
            // a task that had used up its retries gets its whole retry policy again. A
            // failed or cancelled task takes its unique tag back: if another task holds the
            // tag meanwhile, the unique index refuses the update.
            retry_now: format!(
                "UPDATE {tasks} SET status = {pending}, run_after = now(), finished_at = NULL, \
                   failures = CASE WHEN status = {pending} THEN failures ELSE 0 END, \
                   updated_at = now() \
                 WHERE id = $1 AND (status IN ({failed}, {cancelled}) \
                   OR (status = {pending} AND run_after > now())) \
                 RETURNING id",
                pending = status::PENDING,
                failed = status::FAILED,
                cancelled = status::CANCELLED,
            ),
            // Deletes a finished task (completed, failed or cancelled); a pending or
            // running one is left alone (cancel it first).
            delete_finished: format!(
                "DELETE FROM {tasks} WHERE id = $1 AND status IN ({completed}, {failed}, \
                 {cancelled}) RETURNING id",
                completed = status::COMPLETED,
                failed = status::FAILED,
                cancelled = status::CANCELLED,
            ),
        }
    }
}

/// How [`insert`] writes one task: which statement, and what it takes after the common
/// parameters.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Insert<'a> {
    /// `pending` (`insert`).
    Pending,
    /// `pending`, also queueing the workers' wake-up notification, which Postgres delivers
    /// when the statement's transaction commits and only if a row was inserted
    /// (`insert_notify`).
    PendingNotify,
    /// An `onFailed` handler, `pending`, inside the transaction that records its task's
    /// failure (`insert`).
    Handler,
    /// Already leased to a worker of this process, as its claim would have left it (local
    /// dispatch, `insert_running`).
    Running {
        owner: &'a str,
        token: i64,
        lease_ms: i64,
    },
}

impl Insert<'_> {
    fn statement<'s>(&self, sql: &'s Sql) -> &'s str {
        match self {
            Insert::Pending | Insert::Handler => &sql.tasks.insert,
            Insert::PendingNotify => &sql.tasks.insert_notify,
            Insert::Running { .. } => &sql.tasks.insert_running,
        }
    }
}

/// The parameters of an insert: the fourteen common ones, then what `how` takes.
fn insert_params<'a>(
    sql: &'a Sql,
    how: &Insert<'a>,
    task: &'a NewTask,
    columns: &'a SettingsColumns,
    payload: &'a str,
) -> Vec<Param<'a>> {
    let (run_at, delay_ms) = task.due.columns();
    let mut params = vec![
        Param::Text(Some(&task.name)),
        Param::Text(Some(payload)),
        Param::Timestamptz(run_at),
        Param::Int8(Some(delay_ms)),
        Param::Int8(Some(columns.timeout_ms)),
        Param::Int8Array(columns.intervals_ms.as_deref()),
        Param::Bool(columns.always),
        Param::Int4(columns.max_retries),
        Param::Text(columns.on_failed.as_deref()),
        Param::Text(task.unique_tag.as_deref()),
        Param::Int8(task.parent_id.map(TaskId::get)),
        Param::Int4(columns.max_rescues),
        Param::Text(Some(&columns.queue)),
        Param::Int2(columns.priority),
    ];
    match *how {
        Insert::Pending | Insert::Handler => {}
        Insert::PendingNotify => params.push(Param::Text(Some(&sql.notify.tasks_channel))),
        Insert::Running {
            owner,
            token,
            lease_ms,
        } => params.extend([
            Param::Text(Some(owner)),
            Param::Int8(Some(token)),
            Param::Int8(Some(lease_ms)),
        ]),
    }
    params
}

/// Inserts one task on `conn`: one of anchor's pooled connections (a [`Pooled`]), or a
/// caller's transaction (an [`EnqueueTx`](super::driver::EnqueueTx)). Returns the new id,
/// or `None` when the unique tag is taken (then nothing was written; see [`tag_holder`]).
pub(crate) async fn insert(
    conn: &mut impl Run,
    sql: &Sql,
    how: Insert<'_>,
    task: &NewTask,
    payload: &str,
) -> Result<Option<TaskId>> {
    let context = format!("cannot enqueue task {}", task.name);
    let columns = SettingsColumns::of(&task.settings);
    let params = insert_params(sql, &how, task, &columns, payload);
    let ids = conn
        .query_ids(how.statement(sql), &params, &context)
        .await?;
    Ok(ids.into_iter().next().map(TaskId::from))
}

/// The task holding unique tag `tag` (pending, running or completed), if any.
pub(crate) async fn tag_holder(
    conn: &mut impl Run,
    sql: &Sql,
    tag: &str,
) -> Result<Option<TaskId>> {
    let context = format!("cannot look up unique tag `{tag}`");
    let ids = conn
        .query_ids(
            &sql.tasks.select_by_tag,
            &[Param::Text(Some(tag))],
            &context,
        )
        .await?;
    Ok(ids.into_iter().next().map(TaskId::from))
}

/// Inserts one task per payload with one statement, all with `task`'s settings (which
/// carry no unique tag); returns their ids in the order of `payloads`.
pub(crate) async fn insert_many(
    conn: &mut impl Run,
    sql: &Sql,
    task: &NewTask,
    payloads: &[String],
) -> Result<Vec<TaskId>> {
    let context = format!("cannot enqueue {} tasks of {}", payloads.len(), task.name);
    let (run_at, delay_ms) = task.due.columns();
    let columns = SettingsColumns::of(&task.settings);
    let params = [
        Param::Text(Some(&task.name)),
        Param::TextArray(payloads),
        Param::Timestamptz(run_at),
        Param::Int8(Some(delay_ms)),
        Param::Int8(Some(columns.timeout_ms)),
        Param::Int8Array(columns.intervals_ms.as_deref()),
        Param::Bool(columns.always),
        Param::Int4(columns.max_retries),
        Param::Text(columns.on_failed.as_deref()),
        Param::Int4(columns.max_rescues),
        Param::Text(Some(&columns.queue)),
        Param::Int2(columns.priority),
    ];
    let mut ids: Vec<TaskId> = conn
        .query_ids(&sql.tasks.insert_many, &params, &context)
        .await?
        .into_iter()
        .map(TaskId::from)
        .collect();
    // Identity values are drawn in the order the rows are inserted, which is the order of
    // the array; RETURNING does not promise an order, so sort.
    ids.sort_unstable();
    Ok(ids)
}

/// Reads the columns of [`TASK_RUN_COLUMNS`], never panicking on values a person may have
/// written into the row: the claimed task and what a rescue needs besides, or what could
/// be read of a row that cannot.
fn claimed_from_row(
    row: &Row,
    token: i64,
    leased_at: Instant,
) -> std::result::Result<(ClaimedTask, LostRun), UnreadableRow> {
    let id: TaskId = row.try_get(0).map_err(|e| UnreadableRow {
        id: TaskId::new(0),
        name: String::new(),
        on_failed: None,
        message: format!("the task id cannot be read: {e}"),
    })?;
    let unreadable = |column: &str, e: tokio_postgres::Error| UnreadableRow {
        id,
        name: row.try_get(1).unwrap_or_default(),
        on_failed: row.try_get(9).ok().flatten(),
        message: format!(
            "the task's row cannot be read (column {column}: {e}); it was probably edited \
             by hand: fix the column or cancel the task"
        ),
    };
    macro_rules! col {
        ($i:expr, $name:expr) => {
            row.try_get($i).map_err(|e| unreadable($name, e))?
        };
    }
    let attempts: i32 = col!(3, "attempts");
    let failures: i32 = col!(4, "failures");
    let rescues: i32 = col!(11, "rescues");
    let task = ClaimedTask {
        id,
        name: col!(1, "name"),
        payload: col!(2, "payload"),
        attempt: u32::try_from(attempts).unwrap_or(0).saturating_add(1),
        failures: u32::try_from(failures).unwrap_or(0),
        settings: SettingsColumns {
            timeout_ms: col!(5, "timeout_ms"),
            intervals_ms: col!(6, "retry_intervals_ms"),
            always: col!(7, "retry_always"),
            max_retries: col!(8, "max_retries"),
            on_failed: col!(9, "on_failed"),
            max_rescues: col!(12, "max_rescues"),
            queue: col!(15, "queue"),
            priority: col!(16, "priority"),
        }
        .settings(),
        parent_id: col!(10, "parent_id"),
        rescues: u32::try_from(rescues).unwrap_or(0),
        token,
        leased_at,
        due: None,
    };
    let lost = LostRun {
        started: col!(13, "run_started"),
        owner: col!(14, "lease_owner"),
    };
    Ok((task, lost))
}

/// What one claim asks for: up to `limit` due tasks of `queue` called one of `names`, for
/// `worker_id`, leased for `lease_ms` under `token`.
pub(crate) struct ClaimRequest<'a> {
    pub queue: &'a str,
    pub names: &'a [String],
    pub limit: i64,
    pub worker_id: &'a str,
    pub token: i64,
    pub lease_ms: i64,
}

/// Claims what `request` asks for. Rows that cannot be read come back as such, to be
/// failed.
pub(crate) async fn claim(
    conn: &impl Caching,
    sql: &Sql,
    request: &ClaimRequest<'_>,
) -> Result<Vec<std::result::Result<ClaimedTask, UnreadableRow>>> {
    let stmt = conn
        .prepare_cached(&sql.tasks.claim)
        .await
        .map_err(|e| db_error("cannot prepare the claim", e))?;
    // The lease runs from a database time no earlier than this.
    let sent = Instant::now();
    let rows = conn
        .query(
            &stmt,
            &[
                &request.names,
                &request.limit,
                &request.worker_id,
                &request.token,
                &request.lease_ms,
                &request.queue,
            ],
        )
        .await
        .map_err(|e| db_error(&format!("cannot claim tasks of queue {}", request.queue), e))?;
    let token = request.token;
    // RETURNING gives the rows in the order the update met them (by id); the buffer runs
    // them in the order given, which must be the claim's: priority, then due time, then id.
    let mut rows = rows;
    rows.sort_by_cached_key(|row| {
        (
            row.try_get::<_, i16>(16).unwrap_or(0),
            row.try_get::<_, DateTime<Utc>>(17).ok(),
            row.try_get::<_, i64>(0).unwrap_or(0),
        )
    });
    Ok(rows
        .iter()
        .map(|row| {
            claimed_from_row(row, token, sent).map(|(mut task, _)| {
                task.due = row.try_get(17).ok();
                task
            })
        })
        .collect())
}

/// One run's outcome as [`set_outcomes`] writes it.
#[derive(Debug, Clone)]
pub(crate) struct OutcomeRow {
    pub id: TaskId,
    /// The lease token the write is fenced by.
    pub token: i64,
    /// The run's number, recorded as an attempt.
    pub attempt: i32,
    /// The new status: completed, failed, or pending for a retry.
    pub status: i16,
    /// The entry added to the error history, if any.
    pub message: Option<String>,
    /// For a retry, how long until the task is due again.
    pub delay_ms: i64,
    /// Whether the run counts as a failure.
    pub counted: bool,
}

/// Writes the outcomes of many runs with one lease-fenced statement, prepared and cached on
/// the connection, so that a transaction on it (with the failures' `onFailed` handlers)
/// runs the same statement. Returns the (id, token) of each outcome whose lease still
/// held: the rows written.
pub(crate) async fn set_outcomes(
    conn: &impl Caching,
    sql: &Sql,
    outcomes: &[OutcomeRow],
) -> Result<HashSet<(TaskId, i64)>> {
    let ids: Vec<TaskId> = outcomes.iter().map(|o| o.id).collect();
    let tokens: Vec<i64> = outcomes.iter().map(|o| o.token).collect();
    let attempts: Vec<i32> = outcomes.iter().map(|o| o.attempt).collect();
    let statuses: Vec<i16> = outcomes.iter().map(|o| o.status).collect();
    let messages: Vec<Option<&str>> = outcomes.iter().map(|o| o.message.as_deref()).collect();
    let delays: Vec<i64> = outcomes.iter().map(|o| o.delay_ms).collect();
    let counted: Vec<bool> = outcomes.iter().map(|o| o.counted).collect();
    let stmt = conn
        .prepare_cached(&sql.tasks.set_outcomes)
        .await
        .map_err(|e| db_error("cannot prepare the outcome statement", e))?;
    let rows = conn
        .query(
            &stmt,
            &[
                &ids, &tokens, &attempts, &statuses, &messages, &delays, &counted,
            ],
        )
        .await
        .map_err(|e| db_error("cannot record task outcomes", e))?;
    rows.iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
        .collect::<std::result::Result<_, tokio_postgres::Error>>()
        .map_err(|e| db_error("cannot read the recorded outcomes", e))
}

/// What a failure written by [`fail`] does to the error history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum History {
    /// Appends the message (`fail`).
    Append,
    /// Replaces the history by the message alone, for a history that cannot take another
    /// entry (`fail_resetting_errors`).
    Reset,
}

/// Fails one running task with `message`, fenced by its lease `token`, recording run
/// `attempt`; returns how many rows changed (0: the lease is gone).
pub(crate) async fn fail(
    conn: &impl Caching,
    sql: &Sql,
    history: History,
    id: TaskId,
    token: i64,
    message: &str,
    attempt: i32,
) -> Result<u64> {
    let statement = match history {
        History::Append => &sql.tasks.fail,
        History::Reset => &sql.tasks.fail_resetting_errors,
    };
    conn.execute(statement, &[&id, &token, &message, &attempt])
        .await
        .map_err(|e| db_error(&format!("cannot record the failure of task {id}"), e))
}

/// Records that run `attempt` of task `id` has started under lease `token`; returns
/// whether the lease still held. `tag` is prefixed to the statement (see
/// [`CONTROL_TAG`](super::CONTROL_TAG)).
pub(crate) async fn mark_started(
    conn: &tokio_postgres::Client,
    tag: &str,
    sql: &Sql,
    id: TaskId,
    token: i64,
    attempt: i32,
) -> Result<bool> {
    let rows = mark_started_rows(conn, tag, sql, &[id], &[token], &[attempt])
        .await
        .map_err(|e| db_error("cannot record the start of a run", e))?;
    Ok(rows.len() == 1)
}

/// Records that the runs `(ids, tokens, attempts)` (parallel slices) have started; returns
/// the ids whose lease still held.
pub(crate) async fn mark_all_started(
    conn: &tokio_postgres::Client,
    tag: &str,
    sql: &Sql,
    ids: &[TaskId],
    tokens: &[i64],
    attempts: &[i32],
) -> Result<HashSet<TaskId>> {
    let rows = mark_started_rows(conn, tag, sql, ids, tokens, attempts)
        .await
        .map_err(|e| db_error("cannot record run starts", e))?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

async fn mark_started_rows(
    conn: &tokio_postgres::Client,
    tag: &str,
    sql: &Sql,
    ids: &[TaskId],
    tokens: &[i64],
    attempts: &[i32],
) -> std::result::Result<Vec<Row>, tokio_postgres::Error> {
    conn.query(
        tagged(tag, &sql.tasks.mark_started).as_ref(),
        &[&ids, &tokens, &attempts],
    )
    .await
}

/// Extends the leases `(ids, tokens)` by `lease_ms`; returns the ids renewed. A row another
/// session holds locked is skipped, not waited for (see [`lease_held`]).
pub(crate) async fn renew(
    conn: &tokio_postgres::Client,
    tag: &str,
    sql: &Sql,
    ids: &[TaskId],
    tokens: &[i64],
    lease_ms: i64,
) -> Result<HashSet<TaskId>> {
    let rows = conn
        .query(
            tagged(tag, &sql.tasks.renew).as_ref(),
            &[&ids, &tokens, &lease_ms],
        )
        .await
        .map_err(|e| db_error("cannot renew leases", e))?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// Which of the leases `(ids, tokens)` are still held, by a read no row lock blocks.
pub(crate) async fn lease_held(
    conn: &tokio_postgres::Client,
    tag: &str,
    sql: &Sql,
    ids: &[TaskId],
    tokens: &[i64],
) -> Result<Vec<TaskId>> {
    let rows = conn
        .query(
            tagged(tag, &sql.tasks.lease_held).as_ref(),
            &[&ids, &tokens],
        )
        .await
        .map_err(|e| db_error("cannot check leases the renewal skipped", e))?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// Hands the leases `(ids, tokens)` back: `pending` at once, keeping their place in the
/// queue; a run that `started` counts as attempt `attempts`. Returns how many were released.
pub(crate) async fn release(
    conn: &impl Caching,
    sql: &Sql,
    ids: &[TaskId],
    tokens: &[i64],
    attempts: &[i32],
    started: &[bool],
) -> Result<usize> {
    let rows = conn
        .query(&sql.tasks.release, &[&ids, &tokens, &attempts, &started])
        .await
        .map_err(|e| db_error("cannot release leases", e))?;
    Ok(rows.len())
}

/// An expired lease the rescuer has locked: the task as a claim reads it (with token 0,
/// since the lease is not this worker's) and what the lost run had done, or what could be
/// read of a row that cannot.
pub(crate) type Expired = std::result::Result<(ClaimedTask, LostRun), UnreadableRow>;

/// Locks up to `limit` running tasks whose lease expired, in the rescuer's transaction
/// `tx`, so that one rescuer handles each.
pub(crate) async fn lock_expired(tx: &impl Caching, sql: &Sql, limit: i64) -> Result<Vec<Expired>> {
    let select = tx
        .prepare_cached(&sql.tasks.rescue_select)
        .await
        .map_err(|e| db_error("cannot prepare the rescue", e))?;
    let rows = tx
        .query(&select, &[&limit])
        .await
        .map_err(|e| db_error("cannot look for expired leases", e))?;
    Ok(rows
        .iter()
        .map(|row| claimed_from_row(row, 0, Instant::now()))
        .collect())
}

/// Returns a task locked by [`lock_expired`] to `pending`, one rescue more, with `message`
/// in its history if its run had started.
pub(crate) async fn rescue_to_pending(
    tx: &impl Caching,
    sql: &Sql,
    id: TaskId,
    message: Option<&str>,
) -> Result<()> {
    let stmt = tx
        .prepare_cached(&sql.tasks.rescue_pending)
        .await
        .map_err(|e| db_error("cannot prepare the rescue", e))?;
    tx.execute(&stmt, &[&id, &message])
        .await
        .map_err(|e| db_error(&format!("cannot return task {id} to pending"), e))?;
    Ok(())
}

/// Fails a task locked by [`lock_expired`] as poison, with `message`; returns how many rows
/// changed.
pub(crate) async fn rescue_fail(
    tx: &impl Caching,
    sql: &Sql,
    id: TaskId,
    message: &str,
) -> Result<u64> {
    let stmt = tx
        .prepare_cached(&sql.tasks.rescue_fail)
        .await
        .map_err(|e| db_error("cannot prepare the rescue", e))?;
    tx.execute(&stmt, &[&id, &message])
        .await
        .map_err(|e| db_error(&format!("cannot fail task {id}"), e))
}

/// The status stored as `code`, if this runtime knows it.
pub(crate) fn task_status(code: i16) -> Option<TaskStatus> {
    Some(match code {
        status::PENDING => TaskStatus::Pending,
        status::RUNNING => TaskStatus::Running,
        status::COMPLETED => TaskStatus::Completed,
        status::FAILED => TaskStatus::Failed,
        status::CANCELLED => TaskStatus::Cancelled,
        _ => return None,
    })
}

fn non_negative(v: i32) -> u32 {
    u32::try_from(v).unwrap_or(0)
}

/// Reads task `id`; `None` when no task has that id.
pub(crate) async fn get<C: PooledClient>(
    conn: &Pooled<'_, C>,
    sql: &Sql,
    id: TaskId,
) -> Result<Option<TaskRecord>> {
    let context = format!("cannot read task {id}");
    let rows = conn
        .rows(
            &sql.tasks.get_task,
            &[Param::Int8(Some(id.get()))],
            &context,
        )
        .await?;
    let Some(row) = rows.into_iter().next() else {
        return Ok(None);
    };
    record_from_row(&row).map(Some)
}

/// Reads the columns of [`RECORD_COLUMNS`] into a record.
pub(crate) fn record_from_row(row: &Row) -> Result<TaskRecord> {
    let id: TaskId = row
        .try_get("id")
        .map_err(|err| Error::with_source(ErrorKind::Payload, "a task id cannot be read", err))?;
    // Every column is read fallibly: a row edited by hand into values the runtime never
    // writes is an error naming the column, not a panic of the caller.
    macro_rules! col {
        ($name:literal) => {
            row.try_get($name).map_err(|err| {
                Error::with_source(
                    ErrorKind::Payload,
                    format!(
                        "column {} of task {id} cannot be read; was the row edited by hand?",
                        $name
                    ),
                    err,
                )
            })?
        };
    }
    let code: i16 = col!("status");
    let status = task_status(code).ok_or_else(|| {
        Error::new(
            ErrorKind::Schema,
            format!(
                "task {id} has unknown status code {code}; is the runtime older than the schema?"
            ),
        )
    })?;
    let errors_json: serde_json::Value = col!("errors");
    let errors: Vec<ErrorRecord> = serde_json::from_value(errors_json).map_err(|err| {
        Error::with_source(
            ErrorKind::Payload,
            format!("the error history of task {id} is malformed"),
            err,
        )
    })?;
    let settings = SettingsColumns {
        timeout_ms: col!("timeout_ms"),
        intervals_ms: col!("retry_intervals_ms"),
        always: col!("retry_always"),
        max_retries: col!("max_retries"),
        on_failed: col!("on_failed"),
        max_rescues: col!("max_rescues"),
        queue: col!("queue"),
        priority: col!("priority"),
    }
    .settings();
    Ok(TaskRecord {
        id,
        name: col!("name"),
        status,
        payload: col!("payload"),
        attempts: non_negative(col!("attempts")),
        failures: non_negative(col!("failures")),
        rescues: non_negative(col!("rescues")),
        errors,
        created_at: col!("created_at"),
        run_after: col!("run_after"),
        started_at: col!("started_at"),
        finished_at: col!("finished_at"),
        updated_at: col!("updated_at"),
        parent_id: col!("parent_id"),
        unique_tag: col!("unique_tag"),
        settings,
        lease_owner: col!("lease_owner"),
        lease_expires_at: col!("lease_expires_at"),
    })
}

/// Frees unique tag `tag` whatever its holder's status; returns the holder, if any.
pub(crate) async fn free_tag(conn: &mut impl Run, sql: &Sql, tag: &str) -> Result<Option<TaskId>> {
    let context = format!("cannot free unique tag `{tag}`");
    let ids = conn
        .query_ids(&sql.tasks.free_tag, &[Param::Text(Some(tag))], &context)
        .await?;
    Ok(ids.into_iter().next().map(TaskId::from))
}

/// Makes task `id` due now if it is failed, cancelled, or pending with a later
/// `run_after`; returns whether it was. A unique tag another task took meanwhile is an
/// error of kind [`ErrorKind::InvalidOverride`] naming the tag.
pub(crate) async fn retry_now(conn: &mut impl Run, sql: &Sql, id: TaskId) -> Result<bool> {
    let context = format!("cannot retry task {id}");
    match conn
        .query_ids(
            &sql.tasks.retry_now,
            &[Param::Int8(Some(id.get()))],
            &context,
        )
        .await
    {
        Ok(ids) => Ok(!ids.is_empty()),
        Err(err) if err.db_code() == Some("23505") => Err(Error::with_source(
            ErrorKind::InvalidOverride,
            format!(
                "cannot retry task {id}: another task holds its unique tag now; free the tag \
                 (Client::free_unique_tag) or let that task finish first"
            ),
            err,
        )),
        Err(err) => Err(err),
    }
}

/// Deletes task `id` if it has finished; returns whether it had.
pub(crate) async fn delete_finished(conn: &mut impl Run, sql: &Sql, id: TaskId) -> Result<bool> {
    let context = format!("cannot delete task {id}");
    let ids = conn
        .query_ids(
            &sql.tasks.delete_finished,
            &[Param::Int8(Some(id.get()))],
            &context,
        )
        .await?;
    Ok(!ids.is_empty())
}

/// Cancels task `id` if it is pending or running; returns its status before, or `None`
/// when it was neither (finished, or no such task).
pub(crate) async fn cancel(
    conn: &mut impl Run,
    sql: &Sql,
    id: TaskId,
) -> Result<Option<TaskStatus>> {
    let context = format!("cannot cancel task {id}");
    let before = conn
        .query_ids(
            &sql.tasks.cancel,
            &[
                Param::Int8(Some(id.get())),
                Param::Text(Some(&sql.notify.control_channel)),
            ],
            &context,
        )
        .await?;
    Ok(before
        .first()
        .and_then(|&code| i16::try_from(code).ok())
        .and_then(task_status))
}
