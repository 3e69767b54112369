//! Every SQL statement the runtime runs, rendered once per schema name.
//!
//! The schema is configurable, so statements cannot be `const`s; they are rendered when a
//! [`Client`](crate::Client) is built and then prepared (and cached per connection) by the code
//! that runs them. Keeping them in one place makes the claim, completion and rescue paths easy
//! to review against the indexes in `migrations/`.

/// Task status codes as stored in `tasks.status` (a `smallint`).
pub(crate) mod status {
    pub const PENDING: i16 = 0;
    pub const RUNNING: i16 = 1;
    pub const COMPLETED: i16 = 2;
    pub const FAILED: i16 = 3;
    pub const CANCELLED: i16 = 4;
}

/// The statements for one schema.
#[derive(Debug)]
pub(crate) struct Sql {
    /// The `LISTEN`/`NOTIFY` channel name (unquoted) workers wake on.
    pub channel: String,
    pub listen: String,
    pub insert: String,
    pub insert_notify: String,
    pub insert_running: String,
    pub insert_many: String,
    pub select_by_tag: String,
    pub free_tag: String,
    pub upsert_definitions: String,
    pub definition: String,
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
    pub schema_version: String,
}

/// Quotes an identifier for SQL (`"name"`, doubling embedded quotes).
pub(crate) fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The columns a worker needs about a task it claims or rescues (read by
/// `ClaimedTask::from_row`, in this order).
const TASK_RUN_COLUMNS: &str =
    "t.id, t.name, t.payload::text, t.attempts, t.failures, t.timeout_ms, \
     t.retry_intervals_ms, t.retry_always, t.max_retries, t.on_failed, t.parent_id, \
     t.rescues, t.max_rescues, t.run_started, t.lease_owner";

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

impl Sql {
    pub(crate) fn new(schema: &str) -> Sql {
        let s = quote_ident(schema);
        let tasks = format!("{s}.tasks");
        let channel = format!("{schema}_tasks");
        let run_after = "coalesce($3::timestamptz, now() + $4::bigint * interval '1 millisecond')";
        Sql {
            listen: format!("LISTEN {}", quote_ident(&channel)),
            channel,
            // One task. `ON CONFLICT DO NOTHING` only ever fires on the unique-tag index
            // (ids come from an identity column), and then no row is returned.
            insert: format!(
                "INSERT INTO {tasks} (name, payload, run_after, timeout_ms, retry_intervals_ms, \
                 retry_always, max_retries, on_failed, unique_tag, parent_id, max_rescues) \
                 VALUES ($1, $2::text::jsonb, {run_after}, $5, $6, $7, $8, $9, $10, $11, $12) \
                 ON CONFLICT DO NOTHING RETURNING id"
            ),
            // The same, also queueing the wake-up notification on channel $13 (evaluated
            // only for an inserted row; delivered when the transaction commits).
            insert_notify: format!(
                "INSERT INTO {tasks} (name, payload, run_after, timeout_ms, retry_intervals_ms, \
                 retry_always, max_retries, on_failed, unique_tag, parent_id, max_rescues) \
                 VALUES ($1, $2::text::jsonb, {run_after}, $5, $6, $7, $8, $9, $10, $11, $12) \
                 ON CONFLICT DO NOTHING RETURNING id, pg_notify($13, '')"
            ),
            // Local dispatch (`worker/local.rs`): the same, inserted already leased to an idle
            // worker of the enqueuing process, as its claim would have left it: running, no
            // run started yet (the worker records the start, as after a claim), lease owner
            // $13, token $14, lease length $15 ms. No notification: no other worker needs to
            // look.
            insert_running: format!(
                "INSERT INTO {tasks} (name, payload, run_after, timeout_ms, retry_intervals_ms, \
                 retry_always, max_retries, on_failed, unique_tag, parent_id, max_rescues, \
                 status, started_at, lease_owner, lease_token, lease_expires_at) \
                 VALUES ($1, $2::text::jsonb, {run_after}, $5, $6, $7, $8, $9, $10, $11, $12, \
                 {running}, now(), $13, $14, now() + $15::bigint * interval '1 millisecond') \
                 ON CONFLICT DO NOTHING RETURNING id",
                running = status::RUNNING,
            ),
            // Many tasks sharing one definition and one set of overrides: one statement,
            // the payloads as one text array.
            insert_many: format!(
                "INSERT INTO {tasks} (name, payload, run_after, timeout_ms, retry_intervals_ms, \
                 retry_always, max_retries, on_failed, max_rescues) \
                 SELECT $1, p::jsonb, {run_after}, $5, $6, $7, $8, $9, $10 \
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
            // $1 the definitions as a JSON array (see `worker/heartbeat.rs`), $2 worker id.
            upsert_definitions: format!(
                "INSERT INTO {s}.task_definitions AS d (name, timeout_ms, retry_intervals_ms, \
                   retry_always, max_retries, max_rescues, on_failed, default_params, updated_by) \
                 SELECT e->>'name', (e->>'timeout_ms')::bigint, \
                   (SELECT array_agg(x::bigint) FROM jsonb_array_elements_text( \
                     CASE jsonb_typeof(e->'retry_intervals_ms') WHEN 'array' \
                     THEN e->'retry_intervals_ms' END) x), \
                   coalesce((e->>'retry_always')::boolean, false), (e->>'max_retries')::int, \
                   (e->>'max_rescues')::int, e->>'on_failed', \
                   coalesce(e->'default_params', '{{}}'::jsonb), $2 \
                 FROM jsonb_array_elements($1::jsonb) e \
                 ON CONFLICT (name) DO UPDATE SET timeout_ms = EXCLUDED.timeout_ms, \
                   retry_intervals_ms = EXCLUDED.retry_intervals_ms, \
                   retry_always = EXCLUDED.retry_always, max_retries = EXCLUDED.max_retries, \
                   max_rescues = EXCLUDED.max_rescues, on_failed = EXCLUDED.on_failed, \
                   default_params = EXCLUDED.default_params, updated_by = EXCLUDED.updated_by, \
                   updated_at = now() \
                 WHERE (d.timeout_ms, d.retry_intervals_ms, d.retry_always, d.max_retries, \
                   d.max_rescues, d.on_failed, d.default_params) IS DISTINCT FROM \
                   (EXCLUDED.timeout_ms, EXCLUDED.retry_intervals_ms, EXCLUDED.retry_always, \
                   EXCLUDED.max_retries, EXCLUDED.max_rescues, EXCLUDED.on_failed, \
                   EXCLUDED.default_params)"
            ),
            definition: format!(
                "SELECT timeout_ms, retry_intervals_ms, retry_always, max_retries, max_rescues, \
                   on_failed, default_params::text \
                 FROM {s}.task_definitions WHERE name = $1"
            ),
            // The claim: one statement picks up to $2 due tasks this worker can run, skipping
            // rows other workers hold, and leases them. It reads only `tasks_claim_idx`.
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
                   SELECT id FROM {tasks} \
                   WHERE status = {pending} AND run_after <= now() AND name = ANY($1::text[]) \
                   ORDER BY run_after, id LIMIT $2 FOR UPDATE SKIP LOCKED) \
                 UPDATE {tasks} t SET status = {running}, run_started = false, \
                   started_at = now(), updated_at = now(), lease_owner = $3, lease_token = $4, \
                   lease_expires_at = now() + $5::bigint * interval '1 millisecond' \
                 WHERE t.id = ANY(ARRAY(SELECT id FROM picked)) \
                 RETURNING {TASK_RUN_COLUMNS}",
                pending = status::PENDING,
                running = status::RUNNING,
            ),
            // The outcomes of many runs at once, each fenced by its lease token: per task
            // $4 the new status (completed, failed, or pending for a retry after $6 ms), $5
            // the message added to the error history (NULL: none) and $7 whether the run
            // counts as a failure. A failure's `onFailed` handler is inserted in the same
            // transaction (`worker/outcome.rs`).
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
                 RETURNING t.id",
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
            get_task: format!(
                "SELECT id, name, status, payload, attempts, failures, errors, created_at, \
                   run_after, started_at, finished_at, updated_at, parent_id, unique_tag, \
                   timeout_ms, retry_intervals_ms, retry_always, max_retries, on_failed, \
                   lease_owner, lease_expires_at, rescues, max_rescues \
                 FROM {tasks} WHERE id = $1"
            ),
            cancel: format!(
                "UPDATE {tasks} SET status = {cancelled}, finished_at = now(), updated_at = now() \
                 WHERE id = $1 AND status = {pending} RETURNING id",
                cancelled = status::CANCELLED,
                pending = status::PENDING,
            ),
            schema_version: format!("SELECT coalesce(max(version), 0) FROM {s}.schema_migrations"),
        }
    }
}
