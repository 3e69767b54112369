//! The completer: writes the outcomes of finished executions.
//!
//! Outcomes queue on a channel; the completer takes everything queued (up to
//! [`MAX_BATCH`]) and writes the lot, completions, retries and failures alike, with one
//! statement (`db::tasks::set_outcomes`). Every write is fenced by the lease token the task was
//! claimed with, so a worker whose lease was taken changes nothing. A permanent failure and
//! the enqueue of its `onFailed` handler commit in one transaction (`on_failed.rs`).
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

use super::{on_failed, Backoff, Shared};
use crate::claimed::ClaimedTask;
use crate::db::tasks::{History, OutcomeRow};
use crate::db::{self, status};
use crate::error::Result;
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

/// How an attempt ended (the same type `Registry::run` returns).
pub(crate) use crate::run::RunOutcome as Outcome;

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
///
/// The whole batch goes in one statement. Should the database refuse it for what one
/// outcome carries (see [`refused_for_this_task`]), the outcomes are written one by one, so
/// that only the one refused is settled otherwise (`write_refused`).
async fn write_batch(shared: &Arc<Shared>, batch: &mut Vec<Finished>) -> Result<()> {
    let written = shared
        .client
        .bounded("recording task outcomes", set_outcomes(shared, batch))
        .await;
    match written {
        Ok(()) => {
            batch.clear();
            return Ok(());
        }
        Err(err) if !refused_for_this_task(&err) => return Err(err),
        Err(err) => {
            tracing::warn!(worker = %shared.worker_id, error = %err, outcomes = batch.len(), "the database refused a batch of outcomes; writing them one by one");
        }
    }
    while let Some(finished) = batch.pop() {
        let one = std::slice::from_ref(&finished);
        let written = shared
            .client
            .bounded("recording a task's outcome", set_outcomes(shared, one))
            .await;
        match written {
            Ok(()) => {}
            Err(err) if refused_for_this_task(&err) => {
                if let Err(outage) = write_refused(shared, &finished, &err).await {
                    batch.push(finished);
                    return Err(outage);
                }
                shared
                    .leases
                    .forget_all([(finished.task.id, finished.task.token)]);
            }
            Err(err) => {
                batch.push(finished);
                return Err(err);
            }
        }
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
    tracing::error!(task.id = %task.id, task.name = %task.name, error = %err, "the database refused a task's outcome; recording the task as failed");
    for history in [History::Append, History::Reset] {
        let conn = shared.client.conn().await?;
        let written = db::tasks::fail(
            &conn,
            shared.client.sql(),
            history,
            task.id,
            task.token,
            &message,
            task.attempt_i32(),
        )
        .await;
        match written {
            Ok(updated) => {
                if updated > 0 {
                    shared
                        .metrics
                        .get(&task.name, &task.settings.queue)
                        .failed
                        .increment(1);
                }
                return Ok(());
            }
            Err(e) => {
                if !refused_for_this_task(&e) {
                    return Err(e);
                }
                tracing::error!(task.id = %task.id, error = %e, "the failure could not be recorded either");
            }
        }
    }
    tracing::error!(
        task.id = %task.id,
        "dropping an outcome the database refuses; the task returns when its lease expires"
    );
    Ok(())
}

/// The row `db::tasks::set_outcomes` writes for `finished` after `decision`.
fn outcome_row(finished: &Finished, decision: &Decision) -> OutcomeRow {
    let (status, message, delay, counted) = match decision {
        Decision::Complete => (status::COMPLETED, None, Duration::ZERO, false),
        Decision::Retry { delay, message } => {
            (status::PENDING, Some(message.as_str()), *delay, true)
        }
        Decision::RetryWithoutEvent { delay } => (status::PENDING, None, *delay, false),
        Decision::Fail { message } => {
            (status::FAILED, Some(message.as_str()), Duration::ZERO, true)
        }
    };
    OutcomeRow {
        id: finished.task.id,
        token: finished.task.token,
        attempt: finished.task.attempt_i32(),
        status,
        message: message.map(storable_message),
        delay_ms: millis(delay),
        counted,
    }
}

/// Writes the outcomes of `batch` with one lease-fenced statement: completions, retries and
/// failures alike. When a failed task has an `onFailed` handler, the statement and the
/// handlers' inserts share one transaction ([`on_failed::enqueue_handlers`]), so a failure
/// is never recorded without its handler. Outcomes of tasks whose lease this worker no
/// longer holds change nothing.
async fn set_outcomes(shared: &Arc<Shared>, batch: &[Finished]) -> Result<()> {
    if batch.is_empty() {
        return Ok(());
    }
    let decisions: Vec<Decision> = batch
        .iter()
        .map(|f| decide(&f.outcome, f.task.settings.retry.as_ref(), f.task.failures))
        .collect();
    let rows: Vec<OutcomeRow> = batch
        .iter()
        .zip(&decisions)
        .map(|(f, d)| outcome_row(f, d))
        .collect();
    let needs_handlers = batch
        .iter()
        .zip(&decisions)
        .any(|(f, d)| with_handler(f, d));
    let sql = shared.client.sql();
    let mut conn = shared.client.conn().await?;
    // The statement is prepared (and cached) on the connection, in or out of the
    // transaction: one code path either way.
    let (applied, handlers) = if needs_handlers {
        let tx = db::begin(&mut conn, "cannot begin the outcome transaction").await?;
        let applied = db::tasks::set_outcomes(&tx, sql, &rows).await?;
        let failed = handlers_for(batch, &decisions, &applied);
        let handlers = on_failed::enqueue_handlers(&shared.registry, sql, &tx, &failed).await?;
        db::commit(tx, "cannot commit task outcomes").await?;
        (applied, handlers)
    } else {
        (db::tasks::set_outcomes(&conn, sql, &rows).await?, 0)
    };
    report(shared, batch, &decisions, &applied);
    shared
        .leases
        .forget_all(rows.iter().map(|r| (r.id, r.token)));
    if handlers > 0 {
        shared.client.announce_new_tasks();
    }
    Ok(())
}

/// Whether `finished`, so decided, fails for good and has a handler to enqueue.
fn with_handler(finished: &Finished, decision: &Decision) -> bool {
    matches!(decision, Decision::Fail { .. }) && finished.task.settings.on_failed.is_some()
}

/// The `onFailed` handlers a written batch enqueues: one per failure the statement applied.
fn handlers_for<'a>(
    batch: &'a [Finished],
    decisions: &[Decision],
    applied: &HashSet<(TaskId, i64)>,
) -> Vec<(TaskId, &'a str)> {
    batch
        .iter()
        .zip(decisions)
        .filter(|(f, d)| with_handler(f, d) && applied.contains(&(f.task.id, f.task.token)))
        .filter_map(|(f, _)| Some((f.task.id, f.task.settings.on_failed.as_deref()?)))
        .collect()
}

/// Logs what a written batch did and wakes the producer for the retries due soon.
fn report(
    shared: &Arc<Shared>,
    batch: &[Finished],
    decisions: &[Decision],
    applied: &HashSet<(TaskId, i64)>,
) {
    let mut retry_delays = std::collections::BTreeSet::new();
    let mut completed = 0;
    for (finished, decision) in batch.iter().zip(decisions) {
        let task = &finished.task;
        if !applied.contains(&(task.id, task.token)) {
            tracing::warn!(
                task.id = %task.id,
                task.name = %task.name,
                "outcome ignored: this worker no longer holds the task's lease"
            );
            continue;
        }
        let metrics = shared.metrics.get(&task.name, &task.settings.queue);
        match decision {
            Decision::Complete => {
                completed += 1;
                metrics.succeeded.increment(1);
            }
            Decision::Retry { delay, .. } | Decision::RetryWithoutEvent { delay } => {
                tracing::info!(task.id = %task.id, task.name = %task.name, retry_in = ?delay, "task rescheduled");
                retry_delays.insert(*delay);
                if matches!(decision, Decision::Retry { .. }) {
                    metrics.retried.increment(1);
                } else {
                    metrics.snoozed.increment(1);
                }
            }
            Decision::Fail { message } => {
                tracing::warn!(task.id = %task.id, task.name = %task.name, error = %message, "task failed permanently");
                metrics.failed.increment(1);
            }
        }
    }
    tracing::debug!(count = completed, "tasks completed");
    for delay in retry_delays {
        wake_after(shared, delay);
    }
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

    fn finished(id: i64, token: i64, on_failed: Option<&str>) -> Finished {
        let mut task = crate::claimed::ClaimedTask::for_test(TaskId::new(id), token);
        task.settings.on_failed = on_failed.map(str::to_string);
        Finished {
            task,
            outcome: failed(true),
        }
    }

    /// A batch can hold a stale outcome of a task (written late for a lease the task lost:
    /// it was rescued) next to the outcome of its new lease, when this worker claimed it
    /// again. Both may be failures; the fenced statement applies only the new one, and only
    /// that one may enqueue a handler: a failed task has exactly one. (Seen in the chaos
    /// suite's database restarts as two handlers for one failure.)
    #[test]
    fn a_stale_failure_beside_the_new_one_enqueues_no_second_handler() {
        let batch = [
            finished(1, 111, Some("Handler")),
            finished(2, 222, Some("Handler")),
            finished(1, 333, Some("Handler")),
        ];
        let decisions: Vec<Decision> = batch.iter().map(|f| decide(&f.outcome, None, 0)).collect();
        // The statement applied task 1 under its new token 333 and task 2.
        let applied = [(TaskId::new(1), 333), (TaskId::new(2), 222)]
            .into_iter()
            .collect();
        let handlers = handlers_for(&batch, &decisions, &applied);
        assert_eq!(
            handlers,
            [(TaskId::new(2), "Handler"), (TaskId::new(1), "Handler")]
        );
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
}
