//! The `onFailed` handlers of failed tasks: what task each handler becomes, and
//! [`enqueue_handlers`], the one place that inserts them, inside the transaction that
//! records the failures (the completer's outcome statement, or the rescuer's poison
//! failure), so a failure is never recorded without its handler.

use deadpool_postgres::Transaction;

use crate::db::driver::Pooled;
use crate::db::tasks::Insert;
use crate::db::{self, Sql};
use crate::definition::TaskDefinition;
use crate::enqueue::{insert_one, resolve, Inserted};
use crate::error::{ErrorKind, Result};
use crate::registry::Registry;
use crate::settings::{Due, NewTask, TaskSettings};
use crate::task::TaskId;

/// Inserts the `onFailed` handler of each `(failed task, handler name)` through `tx`, the
/// transaction that records those failures; returns how many were inserted.
pub(crate) async fn enqueue_handlers(
    registry: &Registry,
    sql: &Sql,
    tx: &Transaction<'_>,
    failed: &[(TaskId, &str)],
) -> Result<usize> {
    for (failed_id, handler) in failed {
        let def = registry.definition(handler);
        let handler_id = enqueue_on_failed(def, sql, tx, *failed_id, handler).await?;
        tracing::info!(
            task.id = %failed_id,
            handler.id = %handler_id,
            "onFailed handler enqueued"
        );
    }
    Ok(failed.len())
}

/// Builds the `onFailed` handler task for the failure of `failed_id`: its own definition's
/// retry policy and timeout, and the payload `{ taskID }` over its default parameters. A
/// handler this worker does not know is still enqueued (so the failure event is never
/// lost): with the settings its own workers stored in `task_definitions`, or, when no
/// worker that knows it has run yet, with no retry policy and the default timeout.
pub(crate) fn on_failed_task(
    def: Option<&'static TaskDefinition>,
    handler: &str,
    failed_id: TaskId,
) -> (NewTask, String) {
    let mut task = NewTask {
        name: handler.to_string(),
        due: Due::Now,
        settings: TaskSettings::unknown(),
        unique_tag: None,
        parent_id: Some(failed_id),
    };
    let mut defaults = "{}";
    match def {
        Some(def) => {
            match resolve(def, &[]) {
                Ok(resolved) => {
                    task = NewTask {
                        parent_id: Some(failed_id),
                        ..resolved
                    }
                }
                Err(err) => {
                    tracing::warn!(handler, error = %err, "invalid onFailed handler definition; using defaults")
                }
            }
            defaults = def.default_params;
        }
        None => tracing::warn!(
            handler,
            "onFailed handler is known neither to this worker nor to the database; enqueuing \
             it with default settings"
        ),
    }
    (task, handler_payload(handler, defaults, failed_id))
}

/// `{ taskID }` over the handler's default parameters (a JSON object).
fn handler_payload(handler: &str, defaults: &str, failed_id: TaskId) -> String {
    let mut params = match serde_json::from_str::<serde_json::Value>(defaults) {
        Ok(serde_json::Value::Object(map)) => map,
        Ok(_) | Err(_) => {
            tracing::warn!(
                handler,
                "default_params of the onFailed handler is not a JSON object; ignoring it"
            );
            serde_json::Map::new()
        }
    };
    params.insert(
        "taskID".to_string(),
        serde_json::Value::from(failed_id.get()),
    );
    serde_json::Value::Object(params).to_string()
}

/// The handler task from the settings stored in `task_definitions` by a worker that knows
/// the handler, if any did.
async fn stored_handler_task(
    sql: &Sql,
    tx: &Transaction<'_>,
    handler: &str,
    failed_id: TaskId,
) -> Result<Option<(NewTask, String)>> {
    let stored = match db::workers::stored_definition(tx, sql, handler).await {
        Ok(stored) => stored,
        Err(err) if err.kind() == ErrorKind::Payload => {
            tracing::warn!(handler, error = %err, "the stored definition of the onFailed handler cannot be read; using defaults");
            return Ok(None);
        }
        Err(err) => return Err(err),
    };
    Ok(stored.map(|stored| {
        let task = NewTask {
            name: handler.to_string(),
            due: Due::Now,
            settings: stored.settings,
            unique_tag: None,
            parent_id: Some(failed_id),
        };
        let payload = handler_payload(handler, &stored.default_params, failed_id);
        (task, payload)
    }))
}

/// Inserts the `onFailed` handler of `failed_id` through `tx` (the failure's transaction).
async fn enqueue_on_failed(
    def: Option<&'static TaskDefinition>,
    sql: &Sql,
    tx: &Transaction<'_>,
    failed_id: TaskId,
    handler: &str,
) -> Result<TaskId> {
    let stored = match def {
        Some(_) => None,
        None => stored_handler_task(sql, tx, handler, failed_id).await?,
    };
    let (task, payload) = match stored {
        Some(stored) => stored,
        None => on_failed_task(def, handler, failed_id),
    };
    // Workers never run through a transaction-mode pooler (`Worker::new` refuses such a
    // client), so the insert is prepared and cached like every other worker statement.
    let mut conn = Pooled {
        conn: tx,
        cache: true,
    };
    insert_one(&mut conn, sql, Insert::Handler, &task, &payload)
        .await
        .map(Inserted::id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn on_failed_payload_merges_defaults() {
        static HANDLER: TaskDefinition = TaskDefinition {
            name: "Handler",
            retry: None,
            timeout_ms: 5000,
            cron: None,
            on_failed: None,
            default_params: r#"{"channel":"ops","taskID":0}"#,
            max_rescues: None,
            queue: "default",
            priority: 0,
        };
        let (task, payload) = on_failed_task(Some(&HANDLER), "Handler", TaskId::new(42));
        let v: serde_json::Value = serde_json::from_str(&payload).unwrap();
        assert_eq!(v, serde_json::json!({"channel": "ops", "taskID": 42}));
        assert_eq!(task.parent_id, Some(TaskId::new(42)));
        assert_eq!(task.settings.timeout, std::time::Duration::from_secs(5));
        let (task, payload) = on_failed_task(None, "Unknown", TaskId::new(7));
        assert_eq!(payload, r#"{"taskID":7}"#);
        assert_eq!(task.settings, TaskSettings::unknown());
    }
}
