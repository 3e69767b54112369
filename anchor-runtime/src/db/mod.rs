//! The database boundary: every SQL statement the runtime runs, and the typed functions that
//! run them. Nothing outside this module holds SQL text or maps a database error.
//!
//! The schema is configurable, so statements cannot be `const`s: [`Sql::new`] renders them
//! once per schema name, when a [`Client`](crate::Client) is built, and the client keeps
//! them. One file per table or concern (`tasks.rs`, `notify.rs`, …) holds its statements
//! with the reasons they look as they do, and the functions that run them: each takes the
//! connection or transaction to run on, the rendered statements and typed arguments, and
//! owns how its statement is sent (prepared and cached per connection where that pays,
//! unprepared otherwise), how rows become the runtime's types and what an error says.
//! Callers keep the logic: transactions, loops and decisions. Keeping the statements in one
//! place makes the claim, completion and rescue paths easy to review against the indexes in
//! `migrations/`.
//!
//! Connections come in two kinds here. A pooled connection, or a transaction on one, caches
//! prepared statements (`deadpool_postgres::GenericClient`, named [`Caching`] here); any
//! other client, such as a caller's own transaction or the worker's control connection,
//! takes `&impl tokio_postgres::GenericClient` or `&tokio_postgres::Client`.

pub(crate) mod cron;
pub(crate) mod driver;
pub(crate) mod listing;
pub(crate) mod notify;
pub(crate) mod queues;
pub(crate) mod retention;
pub(crate) mod schema;
pub(crate) mod tasks;
pub(crate) mod workers;

use std::borrow::Cow;
use std::time::Duration;

use anchor_core::RetryPolicy;

use crate::error::{Error, ErrorKind, Result};
use crate::settings::TaskSettings;

/// A pooled connection or a transaction on one: statements prepared on it are cached for
/// the connection's life.
use deadpool_postgres::GenericClient as Caching;

/// Task status codes as stored in `tasks.status` (a `smallint`).
pub(crate) mod status {
    pub const PENDING: i16 = 0;
    pub const RUNNING: i16 = 1;
    pub const COMPLETED: i16 = 2;
    pub const FAILED: i16 = 3;
    pub const CANCELLED: i16 = 4;
}

/// Prefixed to every statement sent on a worker's control connection, so that
/// `pg_stat_activity` tells it from pooled connections (whose last statements may be the
/// same renewals while it is down).
pub(crate) const CONTROL_TAG: &str = "/* anchor worker control */ ";

/// The statements for one schema.
#[derive(Debug)]
pub(crate) struct Sql {
    /// The `tasks` table: inserts, the claim, outcomes, leases, rescue, inspection.
    pub tasks: tasks::TaskSql,
    /// `cron_schedules`: registration, firing, pausing, reading.
    pub cron: cron::CronSql,
    /// Retention's deletes of finished tasks.
    pub retention: retention::RetentionSql,
    /// `workers` and `task_definitions`: heartbeats, the unregistered-name note, stored
    /// definitions.
    pub workers: workers::WorkerSql,
    /// The notification channels and `LISTEN`.
    pub notify: notify::NotifySql,
    /// `queues`: pausing, resuming, the per-queue counts.
    pub queues: queues::QueueSql,
    /// Task counts (listings are built per filter).
    pub listing: listing::ListingSql,
    /// Migrations: the lock, `schema_migrations`.
    pub schema: schema::SchemaSql,
}

impl Sql {
    /// Renders every statement for `schema` (quoted wherever it appears).
    pub(crate) fn new(schema: &str) -> Sql {
        Sql {
            tasks: tasks::TaskSql::new(schema),
            cron: cron::CronSql::new(schema),
            retention: retention::RetentionSql::new(schema),
            workers: workers::WorkerSql::new(schema),
            notify: notify::NotifySql::new(schema),
            queues: queues::QueueSql::new(schema),
            listing: listing::ListingSql::new(schema),
            schema: schema::SchemaSql::new(schema),
        }
    }
}

/// A task's settings as its row's columns (`timeout_ms`, `retry_intervals_ms`,
/// `retry_always`, `max_retries`, `on_failed`, `max_rescues`, `queue`, `priority`, the same in
/// `task_definitions`): the one conversion, both ways, between them and [`TaskSettings`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SettingsColumns {
    pub timeout_ms: i64,
    /// `None`: no retry policy.
    pub intervals_ms: Option<Vec<i64>>,
    pub always: bool,
    pub max_retries: Option<i32>,
    pub on_failed: Option<String>,
    pub max_rescues: Option<i32>,
    pub queue: String,
    pub priority: i16,
}

impl SettingsColumns {
    /// The columns for `settings` (checked at enqueue to fit; out-of-range values saturate).
    pub(crate) fn of(settings: &TaskSettings) -> SettingsColumns {
        let ms = |d: &Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        let int = |n: u32| i32::try_from(n).unwrap_or(i32::MAX);
        let policy = settings.retry.as_ref();
        SettingsColumns {
            timeout_ms: ms(&settings.timeout).max(1),
            intervals_ms: policy.map(|p| p.intervals.iter().map(ms).collect()),
            always: policy.is_some_and(|p| p.always_retry_on_failure),
            max_retries: policy.and_then(|p| p.max_retries).map(int),
            on_failed: settings.on_failed.clone(),
            max_rescues: settings.max_rescues.map(int),
            queue: settings.queue.clone(),
            priority: settings.priority,
        }
    }

    /// The settings these columns hold. Values edited by hand out of range read as the
    /// nearest valid ones (a negative interval as zero, a timeout below 1 ms as 1 ms).
    pub(crate) fn settings(self) -> TaskSettings {
        let ms = |v: i64| Duration::from_millis(u64::try_from(v).unwrap_or(0));
        let count = |n: i32| u32::try_from(n).unwrap_or(0);
        TaskSettings {
            timeout: ms(self.timeout_ms.max(1)),
            retry: self.intervals_ms.map(|intervals| RetryPolicy {
                intervals: intervals.into_iter().map(ms).collect(),
                always_retry_on_failure: self.always,
                max_retries: self.max_retries.map(count),
            }),
            on_failed: self.on_failed,
            max_rescues: self.max_rescues.map(count),
            queue: self.queue,
            priority: self.priority.clamp(0, crate::LOWEST_PRIORITY),
        }
    }
}

/// A duration in milliseconds as the database computed it (`extract(epoch …) * 1000`);
/// negative or non-finite values (clock steps) read as zero.
fn millis_to_duration(ms: f64) -> Duration {
    Duration::try_from_secs_f64(ms / 1000.0).unwrap_or(Duration::ZERO)
}

/// Quotes an identifier for SQL (`"name"`, doubling embedded quotes).
pub(crate) fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `sql` as sent after `tag` (nothing, or [`CONTROL_TAG`] on the control connection).
fn tagged<'a>(tag: &str, sql: &'a str) -> Cow<'a, str> {
    if tag.is_empty() {
        Cow::Borrowed(sql)
    } else {
        Cow::Owned(format!("{tag}{sql}"))
    }
}

/// Maps a database error with context: what was being attempted.
fn db_error(context: &str, err: tokio_postgres::Error) -> Error {
    // An undefined table or schema means the migrations have not run.
    if err.code() == Some(&tokio_postgres::error::SqlState::UNDEFINED_TABLE)
        || err.code() == Some(&tokio_postgres::error::SqlState::INVALID_SCHEMA_NAME)
    {
        return Error::with_source(
            ErrorKind::Schema,
            format!("{context}: the task tables are missing; run `anchor migrate` (or anchor_runtime::migrate)"),
            err,
        );
    }
    Error::with_source(ErrorKind::Database, context.to_string(), err)
}

/// Begins a transaction on a pooled connection; `context` says what for, should it fail.
pub(crate) async fn begin<'a>(
    conn: &'a mut deadpool_postgres::Object,
    context: &str,
) -> Result<deadpool_postgres::Transaction<'a>> {
    conn.transaction().await.map_err(|e| db_error(context, e))
}

/// Commits `tx`; `context` says what, should it fail.
pub(crate) async fn commit(tx: deadpool_postgres::Transaction<'_>, context: &str) -> Result<()> {
    tx.commit().await.map_err(|e| db_error(context, e))
}

/// Runs the empty statement: the cheapest round trip that proves the connection answers.
pub(crate) async fn ping(conn: &tokio_postgres::Client) -> Result<()> {
    conn.simple_query("")
        .await
        .map(|_| ())
        .map_err(|e| db_error("the database did not answer", e))
}
