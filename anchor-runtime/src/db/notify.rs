//! The notification channels: `<schema>_tasks`, on which workers wake when tasks may be due,
//! and `<schema>_cron`, on which schedulers re-plan when schedules change; the `LISTEN` a
//! worker's listener sends and the `pg_notify` the application side sends.

use tokio_postgres::GenericClient;

use super::driver::{Param, Run};
use super::{db_error, quote_ident, Sql, CONTROL_TAG};
use crate::error::Result;
use crate::task::TaskId;

/// Queues a notification on channel `$1`: delivered when the transaction commits, or at once
/// outside one. The same statement for every schema (the channel is a parameter).
const NOTIFY: &str = "SELECT pg_notify($1, '')";

/// The same, with a `bigint` column to read (`pg_notify` returns `void`), for the
/// connections [`Run`] covers.
const NOTIFY_WORKERS: &str = "SELECT 0::bigint FROM pg_notify($1, '')";

/// The channels of one schema.
#[derive(Debug)]
pub(crate) struct NotifySql {
    /// The channel workers wake on for new tasks (unquoted).
    pub tasks_channel: String,
    /// The channel schedulers listen on for schedule changes (unquoted).
    pub cron_channel: String,
    /// The channel workers take orders on (unquoted): `cancel <id>` (stop that run),
    /// `pause <queue>`, `resume <queue>`.
    pub control_channel: String,
    /// `LISTEN` on both channels, tagged for the control connection: one connection listens
    /// for new tasks and for schedule changes.
    listen: String,
}

impl NotifySql {
    pub(crate) fn new(schema: &str) -> NotifySql {
        let tasks_channel = format!("{schema}_tasks");
        let cron_channel = format!("{schema}_cron");
        let control_channel = format!("{schema}_control");
        NotifySql {
            listen: format!(
                "{CONTROL_TAG}LISTEN {}; LISTEN {}; LISTEN {}",
                quote_ident(&tasks_channel),
                quote_ident(&cron_channel),
                quote_ident(&control_channel)
            ),
            tasks_channel,
            cron_channel,
            control_channel,
        }
    }
}

/// What a notification on one of the schema's channels says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Notice<'a> {
    /// Tasks may be due in this queue (empty: in any).
    Tasks(&'a str),
    /// A cron schedule changed.
    Schedules,
    /// Task `id` was cancelled while running: stop its run.
    Cancel(TaskId),
    /// A queue was paused (true) or resumed.
    Paused(&'a str, bool),
}

/// Reads a notification; `None` for a channel or an order this runtime does not know (a
/// newer runtime's, or a hand-written `NOTIFY`), which is ignored.
pub(crate) fn notice<'a>(sql: &Sql, channel: &str, payload: &'a str) -> Option<Notice<'a>> {
    if channel == sql.notify.tasks_channel {
        return Some(Notice::Tasks(payload));
    }
    if channel == sql.notify.cron_channel {
        return Some(Notice::Schedules);
    }
    if channel != sql.notify.control_channel {
        return None;
    }
    let (verb, arg) = payload.split_once(' ')?;
    match verb {
        "cancel" => arg
            .parse::<i64>()
            .ok()
            .map(|id| Notice::Cancel(TaskId::new(id))),
        "pause" => Some(Notice::Paused(arg, true)),
        "resume" => Some(Notice::Paused(arg, false)),
        _ => None,
    }
}

/// Listens on both channels on `conn`, a dedicated connection (a pooled one would drop the
/// notifications). The driver's error is returned as it is: the listener treats a failed
/// `LISTEN` like any error of its connection, and connects afresh.
pub(crate) async fn listen(
    conn: &tokio_postgres::Client,
    sql: &Sql,
) -> std::result::Result<(), tokio_postgres::Error> {
    conn.batch_execute(&sql.notify.listen).await
}

/// Sends (outside a transaction: the debounced notifier) or queues (in a caller's
/// transaction: a bulk enqueue) the workers' wake-up notification on `channel`.
pub(crate) async fn wake_workers(conn: &mut impl Run, channel: &str) -> Result<()> {
    conn.query_ids(
        NOTIFY_WORKERS,
        &[Param::Text(Some(channel))],
        "cannot send the wake-up notification",
    )
    .await?;
    Ok(())
}

/// Queues the schedule-change notification in the transaction `conn` is in; Postgres
/// delivers it when the transaction commits, so sleeping schedulers re-plan then.
pub(crate) async fn schedules_changed(conn: &impl GenericClient, sql: &Sql) -> Result<()> {
    conn.execute(NOTIFY, &[&sql.notify.cron_channel])
        .await
        .map_err(|e| db_error("cannot queue the schedule-change notification", e))?;
    Ok(())
}
