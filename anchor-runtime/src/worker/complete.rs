//! The completer: writes the outcomes of finished executions.
//!
//! Outcomes queue on a channel; the completer takes everything queued (up to
//! [`MAX_BATCH`]) and writes successes with one statement (`Sql::complete_many`), retries
//! and failures one statement or transaction each. Every write is fenced by the lease token
//! the task was claimed with, so a worker whose lease was taken changes nothing. A permanent
//! failure and the enqueue of its `onFailed` handler commit in one transaction.
//!
//! One outcome that cannot be written never holds up the others: messages are made
//! storable first (no NUL bytes, bounded length), delays are bounded, and an outcome whose
//! write the database refuses (a data error, not an outage) is recorded as the task's
//! failure with that error instead, or, if even that is refused, left for the rescuer.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use anchor_core::RetryPolicy;
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::GenericClient;

use super::claim::ClaimedTask;
use super::{Backoff, Shared};
use crate::client::db_error;
use crate::definition::TaskDefinition;
use crate::enqueue::{insert_one, resolve, NewTask};
use crate::error::Result;
use crate::sql::Sql;
use crate::task::TaskId;

/// How many outcomes may wait for the completer before executions wait for it.
pub(crate) const CHANNEL_CAPACITY: usize = 1024;

/// The most outcomes written in one round.
const MAX_BATCH: usize = 1000;

/// The longest message kept in a task's error history, in bytes; longer ones are cut.
pub(crate) const MAX_MESSAGE_BYTES: usize = 4096;

/// Makes an error message storable in the error history: NUL bytes (which PostgreSQL text
/// cannot hold) are written as `\0`, and a message longer than [`MAX_MESSAGE_BYTES`] is cut
/// on a character boundary with a note of how much was cut.
pub(crate) fn storable_message(message: &str) -> String {
    let escaped: std::borrow::Cow<'_, str> = if message.contains('\0') {
        message.replace('\0', "\\0").into()
    } else {
        message.into()
    };
    if escaped.len() <= MAX_MESSAGE_BYTES {
        return escaped.into_owned();
    }
    let mut end = MAX_MESSAGE_BYTES;
    while !escaped.is_char_boundary(end) {
        end -= 1;
    }
    format!(
        "{}… ({} more bytes cut)",
        &escaped[..end],
        escaped.len() - end
    )
}

/// Retry timers longer than this are left to the poll loop.
const MAX_WAKE_TIMER: Duration = Duration::from_secs(60);

/// The timeout of an `onFailed` handler whose definition this worker does not know
/// (the default timeout of every task).
const DEFAULT_TIMEOUT_MS: i64 = 3_600_000;

pub(crate) enum Message {
    Finished(Box<Finished>),
    /// Acknowledged once everything queued before it is written.
    Flush(oneshot::Sender<()>),
}

/// An execution's result, waiting to be written.
pub(crate) struct Finished {
    pub task: ClaimedTask,
    pub outcome: Outcome,
}

/// How an attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    Completed,
    Failed { message: String, fatal: bool },
    RetryWithoutEvent,
}

/// What happens to the task after an attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Decision {
    Complete,
    /// Back to `pending` after `delay`, the error recorded and counted.
    Retry {
        delay: Duration,
        message: String,
    },
    /// Back to `pending` after `delay`, nothing recorded or counted.
    RetryWithoutEvent {
        delay: Duration,
    },
    /// `failed`, the error recorded, the `onFailed` handler enqueued.
    Fail {
        message: String,
    },
}

/// Applies the retry rules (see `anchor_core::RetryPolicy`). `failures` is the number of counted failures before this
/// attempt, i.e. the retries already used.
pub(crate) fn decide(outcome: &Outcome, policy: Option<&RetryPolicy>, failures: u32) -> Decision {
    match outcome {
        Outcome::Completed => Decision::Complete,
        Outcome::RetryWithoutEvent => Decision::RetryWithoutEvent {
            delay: anchor_core::retry::delay_without_event(policy, failures.saturating_add(1)),
        },
        Outcome::Failed { message, fatal } => match policy {
            Some(p) if !fatal && p.allows_retry(failures) => Decision::Retry {
                delay: p.delay_for(failures.saturating_add(1)),
                message: message.clone(),
            },
            _ => Decision::Fail {
                message: message.clone(),
            },
        },
    }
}

/// A delay in milliseconds for the database, bounded so that `now() + delay` stays in
/// range whatever the stored policy says.
fn millis(d: Duration) -> i64 {
    i64::try_from(d.min(anchor_core::MAX_DURATION).as_millis()).unwrap_or(i64::MAX)
}

/// The completer loop; runs until the worker aborts it after its final flush.
pub(crate) async fn run_completer(shared: Arc<Shared>, mut rx: mpsc::Receiver<Message>) {
    while let Some(first) = rx.recv().await {
        let mut batch = Vec::new();
        let mut flushes = Vec::new();
        let mut next = Some(first);
        while let Some(message) = next {
            match message {
                Message::Finished(finished) => batch.push(*finished),
                Message::Flush(ack) => flushes.push(ack),
            }
            next = if batch.len() < MAX_BATCH {
                rx.try_recv().ok()
            } else {
                None
            };
        }
        let mut backoff = Backoff::new();
        while !batch.is_empty() {
            if let Err(err) = write_batch(&shared, &mut batch).await {
                // Only outages get here: a write the database refuses for one task's sake
                // is settled by `write_batch` without holding up the rest.
                let delay = backoff.next_delay();
                tracing::warn!(
                    worker = %shared.worker_id,
                    error = %err,
                    outcomes = batch.len(),
                    retry_in = ?delay,
                    "writing task outcomes failed; retrying"
                );
                tokio::time::sleep(delay).await;
            }
        }
        for ack in flushes {
            let _ = ack.send(());
        }
    }
}

/// Writes a batch; what has been written is removed from `batch`, so a retry after an error
/// resumes where it stopped.
async fn write_batch(shared: &Arc<Shared>, batch: &mut Vec<Finished>) -> Result<()> {
    let (successes, others): (Vec<Finished>, Vec<Finished>) = std::mem::take(batch)
        .into_iter()
        .partition(|f| f.outcome == Outcome::Completed);
    *batch = others;
    if !successes.is_empty() {
        let written = shared
            .client
            .bounded(
                "recording completed tasks",
                complete_many(shared, &successes),
            )
            .await;
        if let Err(err) = written {
            batch.extend(successes);
            return Err(err);
        }
    }
    while let Some(finished) = batch.pop() {
        let written = shared
            .client
            .bounded("recording a task's outcome", write_one(shared, &finished))
            .await;
        match written {
            Ok(()) => {}
            Err(err) if refused_for_this_task(&err) => {
                write_refused(shared, &finished, &err).await?;
            }
            Err(err) => {
                batch.push(finished);
                return Err(err);
            }
        }
        shared.forget_leases([(finished.task.id, finished.task.token)]);
    }
    Ok(())
}

/// Whether the database refused a write because of what it carried (a data exception, a
/// program limit such as jsonb's size, an integrity violation) rather than because it
/// could not be reached: writing the same values again would fail again.
fn refused_for_this_task(err: &crate::Error) -> bool {
    use std::error::Error as _;
    let Some(db) = err
        .source()
        .and_then(|e| e.downcast_ref::<tokio_postgres::Error>())
        .and_then(tokio_postgres::Error::as_db_error)
    else {
        return false;
    };
    let class = &db.code().code()[..2];
    matches!(class, "22" | "23" | "54")
}

/// Records `finished`'s task as failed with the error that refused its outcome. Should
/// that be refused too (the history itself unusable), the history is replaced by this one
/// entry; should even that fail, the outcome is dropped with a log line and the task comes
/// back through the rescuer when its lease expires. Only an outage is returned as an error.
async fn write_refused(
    shared: &Arc<Shared>,
    finished: &Finished,
    err: &crate::Error,
) -> Result<()> {
    let task = &finished.task;
    let message = storable_message(&format!(
        "the outcome of this run could not be recorded ({:?}); the database refused it: {err}",
        finished.outcome
    ));
    tracing::error!(task.id = task.id, task.name = %task.name, error = %err, "the database refused a task's outcome; recording the task as failed");
    let sql = shared.client.sql();
    for statement in [&sql.fail, &sql.fail_resetting_errors] {
        let conn = shared.client.conn().await?;
        match conn
            .execute(
                statement,
                &[&task.id, &task.token, &message, &task.attempt_i32()],
            )
            .await
        {
            Ok(_) => return Ok(()),
            Err(e) => {
                let e = db_error(&format!("cannot record the failure of task {}", task.id), e);
                if !refused_for_this_task(&e) {
                    return Err(e);
                }
                tracing::error!(task.id = task.id, error = %e, "the failure could not be recorded either");
            }
        }
    }
    tracing::error!(
        task.id = task.id,
        "dropping an outcome the database refuses; the task returns when its lease expires"
    );
    Ok(())
}

async fn complete_many(shared: &Shared, successes: &[Finished]) -> Result<()> {
    let ids: Vec<TaskId> = successes.iter().map(|f| f.task.id).collect();
    let tokens: Vec<i64> = successes.iter().map(|f| f.task.token).collect();
    let attempts: Vec<i32> = successes.iter().map(|f| f.task.attempt_i32()).collect();
    let conn = shared.client.conn().await?;
    let stmt = conn
        .prepare_cached(&shared.client.sql().complete_many)
        .await
        .map_err(|e| db_error("cannot prepare the completion", e))?;
    let rows = conn
        .query(&stmt, &[&ids, &tokens, &attempts])
        .await
        .map_err(|e| db_error("cannot record completed tasks", e))?;
    if rows.len() != ids.len() {
        let applied: HashSet<TaskId> = rows.iter().map(|r| r.get(0)).collect();
        for f in successes.iter().filter(|f| !applied.contains(&f.task.id)) {
            tracing::warn!(
                task.id = f.task.id,
                task.name = %f.task.name,
                "completion ignored: this worker no longer holds the task's lease"
            );
        }
    }
    tracing::debug!(count = rows.len(), "tasks completed");
    shared.forget_leases(ids.into_iter().zip(tokens));
    Ok(())
}

/// Writes a retry, a retry without event or a failure.
async fn write_one(shared: &Arc<Shared>, finished: &Finished) -> Result<()> {
    let task = &finished.task;
    let policy = task.policy();
    let decision = decide(&finished.outcome, policy.as_ref(), task.failures);
    let sql = shared.client.sql();
    let attempt = task.attempt_i32();
    let applied = match &decision {
        Decision::Complete => {
            // `write_batch` sends successes to `complete_many` directly; this keeps a stray
            // one correct all the same.
            return complete_many(shared, std::slice::from_ref(finished)).await;
        }
        Decision::Retry { delay, message } => {
            let conn = shared.client.conn().await?;
            let stmt = conn
                .prepare_cached(&sql.retry)
                .await
                .map_err(|e| db_error("cannot prepare the retry", e))?;
            let message = storable_message(message);
            conn.execute(
                &stmt,
                &[&task.id, &task.token, &message, &millis(*delay), &attempt],
            )
            .await
            .map_err(|e| db_error(&format!("cannot schedule the retry of task {}", task.id), e))?
                == 1
        }
        Decision::RetryWithoutEvent { delay } => {
            let conn = shared.client.conn().await?;
            let stmt = conn
                .prepare_cached(&sql.retry_without_event)
                .await
                .map_err(|e| db_error("cannot prepare the reschedule", e))?;
            conn.execute(&stmt, &[&task.id, &task.token, &millis(*delay), &attempt])
                .await
                .map_err(|e| db_error(&format!("cannot reschedule task {}", task.id), e))?
                == 1
        }
        Decision::Fail { message } => fail_task(shared, task, message).await?,
    };
    if !applied {
        tracing::warn!(
            task.id = task.id,
            task.name = %task.name,
            "outcome ignored: this worker no longer holds the task's lease"
        );
        return Ok(());
    }
    match decision {
        Decision::Retry { delay, .. } | Decision::RetryWithoutEvent { delay } => {
            tracing::info!(task.id = task.id, task.name = %task.name, retry_in = ?delay, "task rescheduled");
            wake_after(shared, delay);
        }
        Decision::Fail { message } => {
            tracing::warn!(task.id = task.id, task.name = %task.name, error = %message, "task failed permanently");
        }
        Decision::Complete => {}
    }
    Ok(())
}

/// Wakes the producer when a rescheduled task becomes due, so short retry intervals are
/// kept without waiting for the next poll.
fn wake_after(shared: &Arc<Shared>, delay: Duration) {
    if delay > MAX_WAKE_TIMER || delay < shared.config.poll_interval / 10 {
        if delay.is_zero() {
            shared.wake_producer();
        }
        return;
    }
    let shared = Arc::downgrade(shared);
    tokio::spawn(async move {
        tokio::time::sleep(delay).await;
        if let Some(shared) = shared.upgrade() {
            shared.wake_producer();
        }
    });
}

/// Marks a task failed and enqueues its `onFailed` handler in the same transaction.
/// Returns whether this worker still held the lease (and so changed anything).
async fn fail_task(shared: &Shared, task: &ClaimedTask, message: &str) -> Result<bool> {
    let sql = shared.client.sql();
    let mut conn = shared.client.conn().await?;
    let tx = conn
        .transaction()
        .await
        .map_err(|e| db_error("cannot begin the failure transaction", e))?;
    let stmt = tx
        .prepare_cached(&sql.fail)
        .await
        .map_err(|e| db_error("cannot prepare the failure", e))?;
    let updated = tx
        .execute(
            &stmt,
            &[
                &task.id,
                &task.token,
                &storable_message(message),
                &task.attempt_i32(),
            ],
        )
        .await
        .map_err(|e| db_error(&format!("cannot mark task {} failed", task.id), e))?;
    let mut handler_id = None;
    if updated == 1 {
        if let Some(handler) = &task.on_failed {
            let def = shared.registry.definition(handler);
            handler_id = Some(enqueue_on_failed(def, sql, &*tx, task.id, handler).await?);
        }
    }
    tx.commit()
        .await
        .map_err(|e| db_error(&format!("cannot commit the failure of task {}", task.id), e))?;
    if let Some(handler_id) = handler_id {
        tracing::info!(
            task.id = task.id,
            handler.id = handler_id,
            "onFailed handler enqueued"
        );
        shared.client.inner.notifier.poke();
    }
    Ok(updated == 1)
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
        run_at: None,
        delay_ms: 0,
        timeout_ms: DEFAULT_TIMEOUT_MS,
        retry_intervals_ms: None,
        retry_always: false,
        max_retries: None,
        on_failed: None,
        unique_tag: None,
        parent_id: Some(failed_id),
        max_rescues: None,
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
    params.insert("taskID".to_string(), serde_json::Value::from(failed_id));
    serde_json::Value::Object(params).to_string()
}

/// The handler task from the settings stored in `task_definitions` by a worker that knows
/// the handler, if any did.
async fn stored_handler_task<C: GenericClient>(
    sql: &Sql,
    conn: &C,
    handler: &str,
    failed_id: TaskId,
) -> Result<Option<(NewTask, String)>> {
    let Some(row) = conn
        .query_opt(&sql.definition, &[&handler])
        .await
        .map_err(|e| db_error("cannot read the onFailed handler's stored definition", e))?
    else {
        return Ok(None);
    };
    let read = || -> std::result::Result<(NewTask, String), tokio_postgres::Error> {
        let defaults: String = row.try_get(6)?;
        let task = NewTask {
            name: handler.to_string(),
            run_at: None,
            delay_ms: 0,
            timeout_ms: row.try_get::<_, i64>(0)?.max(1),
            retry_intervals_ms: row.try_get(1)?,
            retry_always: row.try_get(2)?,
            max_retries: row.try_get(3)?,
            on_failed: row.try_get(5)?,
            unique_tag: None,
            parent_id: Some(failed_id),
            max_rescues: row.try_get(4)?,
        };
        Ok((task, handler_payload(handler, &defaults, failed_id)))
    };
    match read() {
        Ok(task) => Ok(Some(task)),
        Err(err) => {
            tracing::warn!(handler, error = %err, "the stored definition of the onFailed handler cannot be read; using defaults");
            Ok(None)
        }
    }
}

/// Inserts the `onFailed` handler of `failed_id` through `conn` (the failure's transaction).
pub(crate) async fn enqueue_on_failed<C: GenericClient>(
    def: Option<&'static TaskDefinition>,
    sql: &Sql,
    conn: &C,
    failed_id: TaskId,
    handler: &str,
) -> Result<TaskId> {
    let stored = match def {
        Some(_) => None,
        None => stored_handler_task(sql, conn, handler, failed_id).await?,
    };
    let (task, payload) = match stored {
        Some(stored) => stored,
        None => on_failed_task(def, handler, failed_id),
    };
    let insert = conn
        .prepare(&sql.insert)
        .await
        .map_err(|e| db_error("cannot prepare the onFailed insert", e))?;
    insert_one(conn, &insert, &sql.select_by_tag, &task, &payload, &[])
        .await
        .map(crate::enqueue::Inserted::id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(intervals: &str, always: bool, max: Option<u32>) -> RetryPolicy {
        RetryPolicy {
            intervals: anchor_core::parse_intervals(intervals).unwrap(),
            always_retry_on_failure: always,
            max_retries: max,
        }
    }

    fn failed(fatal: bool) -> Outcome {
        Outcome::Failed {
            message: "boom".into(),
            fatal,
        }
    }

    #[test]
    fn no_policy_never_retries() {
        assert!(matches!(
            decide(&failed(false), None, 0),
            Decision::Fail { .. }
        ));
    }

    #[test]
    fn comma_list_and_max_retries() {
        let p = policy("200ms,400ms", false, Some(2));
        assert_eq!(
            decide(&failed(false), Some(&p), 0),
            Decision::Retry {
                delay: Duration::from_millis(200),
                message: "boom".into()
            }
        );
        assert_eq!(
            decide(&failed(false), Some(&p), 1),
            Decision::Retry {
                delay: Duration::from_millis(400),
                message: "boom".into()
            }
        );
        assert!(matches!(
            decide(&failed(false), Some(&p), 2),
            Decision::Fail { .. }
        ));
    }

    #[test]
    fn fatal_skips_retries() {
        let p = policy("1s", true, None);
        assert!(matches!(
            decide(&failed(true), Some(&p), 0),
            Decision::Fail { .. }
        ));
    }

    #[test]
    fn retry_without_event_uses_next_interval_or_30s() {
        let p = policy("5s,7s", false, Some(0));
        assert_eq!(
            decide(&Outcome::RetryWithoutEvent, Some(&p), 1),
            Decision::RetryWithoutEvent {
                delay: Duration::from_secs(7)
            }
        );
        assert_eq!(
            decide(&Outcome::RetryWithoutEvent, None, 0),
            Decision::RetryWithoutEvent {
                delay: Duration::from_secs(30)
            }
        );
    }

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
        };
        let (task, payload) = on_failed_task(Some(&HANDLER), "Handler", 42);
        let v: serde_json::Value = serde_json::from_str(&payload).unwrap();
        assert_eq!(v, serde_json::json!({"channel": "ops", "taskID": 42}));
        assert_eq!(task.parent_id, Some(42));
        assert_eq!(task.timeout_ms, 5000);
        let (task, payload) = on_failed_task(None, "Unknown", 7);
        assert_eq!(payload, r#"{"taskID":7}"#);
        assert_eq!(task.timeout_ms, DEFAULT_TIMEOUT_MS);
    }
}
