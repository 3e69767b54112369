//! The notification channels: `<schema>_tasks`, on which workers wake when tasks may be due,
//! and `<schema>_cron`, on which schedulers re-plan when schedules change; the `LISTEN` a
//! worker's listener sends and the `pg_notify` the application side sends.

use tokio_postgres::GenericClient;

use super::{db_error, quote_ident, Caching, Sql, CONTROL_TAG};
use crate::error::Result;

/// Queues a notification on channel `$1`: delivered when the transaction commits, or at once
/// outside one. The same statement for every schema (the channel is a parameter).
const NOTIFY: &str = "SELECT pg_notify($1, '')";

/// The channels of one schema.
#[derive(Debug)]
pub(crate) struct NotifySql {
    /// The channel workers wake on for new tasks (unquoted).
    pub tasks_channel: String,
    /// The channel schedulers listen on for schedule changes (unquoted).
    pub cron_channel: String,
    /// `LISTEN` on both channels, tagged for the control connection: one connection listens
    /// for new tasks and for schedule changes.
    listen: String,
}

impl NotifySql {
    pub(crate) fn new(schema: &str) -> NotifySql {
        let tasks_channel = format!("{schema}_tasks");
        let cron_channel = format!("{schema}_cron");
        NotifySql {
            listen: format!(
                "{CONTROL_TAG}LISTEN {}; LISTEN {}",
                quote_ident(&tasks_channel),
                quote_ident(&cron_channel)
            ),
            tasks_channel,
            cron_channel,
        }
    }
}

/// Whether a notification on `channel` announces a schedule change (else new tasks).
pub(crate) fn is_schedule_change(sql: &Sql, channel: &str) -> bool {
    channel == sql.notify.cron_channel
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

/// Sends the workers' wake-up notification on `channel` (the debounced notifier's, outside
/// any transaction), prepared and cached on the pooled connection.
pub(crate) async fn wake_workers(conn: &impl Caching, channel: &str) -> Result<()> {
    let stmt = conn
        .prepare_cached(NOTIFY)
        .await
        .map_err(|e| db_error("cannot prepare the wake-up notification", e))?;
    conn.execute(&stmt, &[&channel])
        .await
        .map_err(|e| db_error("cannot send the wake-up notification", e))?;
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
