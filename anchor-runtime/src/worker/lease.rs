//! Leases: renewing this worker's, rescuing expired ones, releasing them at shutdown.
//!
//! - The renewer extends every lease this worker holds with one statement per tick. A lease
//!   the statement no longer finds (a rescuer took the task after this worker stalled) is
//!   dropped and its execution aborted, so the task does not keep running here while
//!   another worker runs it too.
//! - The rescuer, which every worker runs (no leader), locks running tasks whose lease has
//!   expired with `SKIP LOCKED` and returns them to `pending` whatever their retry policy:
//!   a lost worker is not a failure of the task, uses up no retry and keeps the task's place
//!   in the queue. Only a task whose worker was lost `max_rescues` times while its run had
//!   started fails, as poison, with its `onFailed` handler enqueued in the same transaction.
//! - The start recorder writes that a run has started (`run_started`, `attempts`) shortly
//!   after it did, many runs per statement, so that a rescue knows whether the lost run had
//!   started: a claimed task that never started counts no attempt and no loss.
//! - The fencer stops a run whose lease was not renewed in time (a row lock held by
//!   another session, a slow or lost database) shortly before the lease can expire, and
//!   records nothing: the rescuer that takes the expired lease counts the attempt. A task
//!   therefore never runs here and on a rescuer's worker at once. Each lease carries the
//!   local deadline derived from the last statement that wrote its expiry (the claim or a
//!   renewal; see `LeaseTable::deadline`).
//! - At shutdown, leases of tasks that did not finish within the grace period are released:
//!   `pending` at once, the interrupted run not counted.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::on_failed;
use super::{Backoff, Shared};
use crate::claimed::ClaimedTask;
use crate::db;
use crate::error::Result;
use crate::task::TaskId;

/// How long a run goes before its start is recorded: runs shorter than this have their
/// start recorded with their outcome, in the same statement, at no extra cost.
pub(crate) const START_RECORD_DELAY: Duration = Duration::from_millis(100);

/// The error history entry of a run whose worker was lost, `rescue` of at most `max`.
fn worker_lost_message(owner: Option<&str>, rescue: u32, max: u32) -> String {
    format!(
        "worker lost: the lease of worker {} expired during the run; rescue {rescue} of {max}, \
         the task runs again",
        owner.unwrap_or("(unknown)")
    )
}

/// The error of a task failed as poison.
fn poison_message(owner: Option<&str>, rescues: u32, max: u32) -> String {
    format!(
        "worker lost {rescues} times (max_rescues {max}); last worker {}: the task is failed \
         because every worker running it was lost",
        owner.unwrap_or("(unknown)")
    )
}

/// How many expired tasks one rescue transaction handles.
const RESCUE_BATCH: i64 = 100;

/// The renewer loop.
pub(crate) async fn run_renewer(shared: Arc<Shared>) {
    let interval = shared.config.renew_interval();
    let mut backoff = Backoff::new();
    loop {
        match renew(&shared).await {
            Ok(()) => {
                backoff.reset();
                tokio::time::sleep(interval).await;
            }
            Err(err) => {
                // A failed renewal is retried soon, not a whole interval later: the fencer
                // stops runs whose leases go unrenewed for most of a lease.
                let delay = backoff.next_delay().min(interval);
                tracing::warn!(worker = %shared.worker_id, error = %err, "renewing leases failed");
                tokio::time::sleep(delay).await;
            }
        }
    }
}

async fn renew(shared: &Shared) -> Result<()> {
    let (ids, tokens) = shared.leases.snapshot();
    if ids.is_empty() {
        return Ok(());
    }
    // Not a pooled connection: tasks holding every pooled connection must not starve the
    // renewal of their own leases (see `control.rs`).
    let conn = shared.control.conn().await?;
    let sql = shared.client.sql();
    let sent = Instant::now();
    let mut renewed = conn
        .bounded(
            &shared.control,
            "cannot renew leases",
            db::tasks::renew(&conn, conn.tag(), sql, &ids, &tokens, shared.lease_ms()),
        )
        .await?;
    {
        // Only a written expiry moves a lease's deadline; a skipped (locked) row keeps the
        // deadline of its last successful write.
        let deadline = shared.leases.deadline(sent);
        let mut leases = shared.leases.lock();
        for (id, token) in ids.iter().zip(&tokens) {
            if let Some(lease) = leases.get_mut(id) {
                if lease.token == *token && renewed.contains(id) {
                    lease.deadline.extend(deadline);
                }
            }
        }
    }
    if renewed.len() == ids.len() {
        return Ok(());
    }
    // A lease the renewal skipped because another session holds the row's lock is still
    // this worker's: only a changed token means the task was taken.
    let (missing_ids, missing_tokens): (Vec<TaskId>, Vec<i64>) = ids
        .iter()
        .zip(&tokens)
        .filter(|(id, _)| !renewed.contains(id))
        .map(|(id, token)| (*id, *token))
        .unzip();
    let held = conn
        .bounded(
            &shared.control,
            "cannot check leases the renewal skipped",
            db::tasks::lease_held(&conn, conn.tag(), sql, &missing_ids, &missing_tokens),
        )
        .await?;
    renewed.extend(held);
    let mut leases = shared.leases.lock();
    for (id, token) in ids.iter().zip(&tokens) {
        if renewed.contains(id) {
            continue;
        }
        // A lease missing from the result was either just finalised by the completer (and
        // forgotten, or about to be) or taken by a rescuer. Only the latter is still here
        // with the same token and a running execution.
        if leases.get(id).is_some_and(|l| l.token == *token) {
            if let Some(lease) = leases.remove(id) {
                if let Some(abort) = lease.abort {
                    if !abort.is_finished() {
                        tracing::warn!(
                            task.id = %id,
                            "lease lost (the task was rescued by another worker); stopping it here"
                        );
                        abort.abort();
                    }
                }
            }
        }
    }
    Ok(())
}

/// The fencer loop: stops runs whose lease deadline passed without a renewal.
///
/// It sleeps until the earliest deadline, at most half the fence margin at a time so that
/// leases claimed meanwhile (whose deadlines lie a lease ahead) are never overslept.
pub(crate) async fn run_fencer(shared: Arc<Shared>) {
    let tick = (shared.config.fence_margin() / 2).max(Duration::from_millis(10));
    loop {
        let now = Instant::now();
        let next = fence(&shared, now).map_or(now + tick, |d| d.min(now + tick));
        tokio::time::sleep_until(tokio::time::Instant::from_std(next)).await;
    }
}

/// Drops every lease whose deadline is past and aborts its run; returns the earliest
/// deadline still ahead.
fn fence(shared: &Shared, now: Instant) -> Option<Instant> {
    let mut leases = shared.leases.lock();
    let mut next: Option<Instant> = None;
    let mut expired = Vec::new();
    for (id, lease) in leases.iter() {
        let deadline = lease.deadline.get();
        if deadline > now {
            next = Some(next.map_or(deadline, |n| n.min(deadline)));
            continue;
        }
        // A finished run's outcome is queued for the completer, whose write the token
        // fences; keeping the lease lets the renewer keep it alive meanwhile.
        if lease.abort.as_ref().is_some_and(|a| a.is_finished()) {
            continue;
        }
        expired.push(*id);
    }
    for id in expired {
        if let Some(lease) = leases.remove(&id) {
            match lease.abort {
                Some(abort) => {
                    tracing::warn!(
                        worker = %shared.worker_id,
                        task.id = %id,
                        "lease not renewed in time; stopping the run before it can expire \
                         (the task returns to pending when the lease expires)"
                    );
                    abort.abort();
                }
                // A claimed task still waiting in the buffer: it will not be started.
                None => tracing::warn!(
                    worker = %shared.worker_id,
                    task.id = %id,
                    "lease not renewed in time; the claimed task will not be started here"
                ),
            }
        }
    }
    next
}

/// The rescuer loop.
pub(crate) async fn run_rescuer(shared: Arc<Shared>) {
    let interval = shared.config.rescue_interval();
    loop {
        // Jitter keeps the workers of one deployment from rescuing in lockstep.
        let jitter = interval.mul_f64(0.5 * rand::random::<f64>());
        tokio::time::sleep(interval + jitter).await;
        loop {
            match shared
                .client
                .bounded("rescuing expired tasks", rescue_batch(&shared))
                .await
            {
                Ok(n) if n as i64 == RESCUE_BATCH => continue,
                Ok(_) => break,
                Err(err) => {
                    tracing::warn!(worker = %shared.worker_id, error = %err, "rescuing expired tasks failed");
                    break;
                }
            }
        }
        // Maintenance on the same cadence; it never touches the claim path.
        let noted = shared.client.bounded(
            "looking for tasks no worker has registered",
            super::heartbeat::note_unregistered(&shared),
        );
        if let Err(err) = noted.await {
            tracing::warn!(worker = %shared.worker_id, error = %err, "looking for tasks no worker has registered failed");
        }
    }
}

/// Rescues up to [`RESCUE_BATCH`] tasks whose lease expired; returns how many.
pub(crate) async fn rescue_batch(shared: &Shared) -> Result<usize> {
    let sql = shared.client.sql();
    let mut conn = shared.client.conn().await?;
    let tx = db::begin(&mut conn, "cannot begin the rescue transaction").await?;
    let expired = db::tasks::lock_expired(&tx, sql, RESCUE_BATCH).await?;
    if expired.is_empty() {
        return Ok(0);
    }
    let rescued = expired.len();
    let mut poisoned: Vec<(TaskId, String)> = Vec::new();
    for row in expired {
        let (task, lost) = match row {
            Ok(read) => read,
            Err(bad) => {
                // Returned to pending all the same; the claim that takes it next records
                // the unreadable row as the task's failure.
                tracing::warn!(task.id = %bad.id, error = %bad.message, "rescuing a task whose row cannot be read");
                db::tasks::rescue_to_pending(&tx, sql, bad.id, None).await?;
                continue;
            }
        };
        let max = task
            .max_rescues
            .and_then(|n| u32::try_from(n).ok())
            .filter(|n| *n > 0)
            .unwrap_or(shared.config.max_rescues);
        let rescue = task.rescues.saturating_add(1);
        let owner = lost.owner.as_deref();
        if lost.started && rescue >= max {
            let message = poison_message(owner, rescue, max);
            let updated = db::tasks::rescue_fail(&tx, sql, task.id, &message).await?;
            tracing::warn!(task.id = %task.id, task.name = %task.name, rescues = rescue, "worker lost too often; task failed as poison");
            if updated == 1 {
                if let Some(handler) = task.on_failed {
                    poisoned.push((task.id, handler));
                }
            }
            continue;
        }
        // A run that had not started (or whose start was not recorded yet) leaves no
        // entry: a task claimed but never run has nothing to report.
        let message = lost
            .started
            .then(|| worker_lost_message(owner, rescue, max));
        db::tasks::rescue_to_pending(&tx, sql, task.id, message.as_deref()).await?;
        tracing::warn!(task.id = %task.id, task.name = %task.name, started = lost.started, rescues = rescue, "lease expired; task returned to pending");
    }
    let failed: Vec<(TaskId, &str)> = poisoned.iter().map(|(id, h)| (*id, h.as_str())).collect();
    let handlers = on_failed::enqueue_handlers(&shared.registry, sql, &tx, &failed).await?;
    db::commit(tx, "cannot commit the rescue").await?;
    // Rescued tasks are due at once.
    shared.wake_producer();
    if handlers > 0 {
        shared.client.announce_new_tasks();
    }
    Ok(rescued)
}

/// Records the start of `task`'s run before it begins; returns whether the run may go on
/// (false: the lease is lost, or the database cannot be reached, and the task has been
/// handed back or will come back when its lease expires).
pub(crate) async fn record_start(shared: &Shared, task: &ClaimedTask) -> bool {
    let result = async {
        let conn = shared.control.conn().await?;
        let start = db::tasks::mark_started(
            &conn,
            conn.tag(),
            shared.client.sql(),
            task.id,
            task.token,
            task.attempt_i32(),
        );
        conn.bounded(&shared.control, "cannot record the start of a run", start)
            .await
    };
    match result.await {
        Ok(true) => {
            shared.leases.starts_recorded([(task.id, task.token)]);
            true
        }
        Ok(false) => {
            tracing::warn!(
                task.id = %task.id,
                "lease lost before the run started; not running it"
            );
            shared.leases.forget(task.id, task.token);
            false
        }
        Err(err) => {
            tracing::warn!(task.id = %task.id, error = %err, "cannot record the start of a run; not running it");
            release(shared, std::slice::from_ref(task)).await;
            false
        }
    }
}

/// The start recorder loop: every [`START_RECORD_DELAY`], records the starts of the runs
/// that have gone on that long, in one statement.
pub(crate) async fn run_start_recorder(shared: Arc<Shared>) {
    loop {
        tokio::time::sleep(START_RECORD_DELAY).await;
        let starts = shared.leases.unrecorded_starts(START_RECORD_DELAY);
        if starts.is_empty() {
            continue;
        }
        if let Err(err) = record_starts(&shared, starts).await {
            tracing::warn!(worker = %shared.worker_id, error = %err, "recording run starts failed");
        }
    }
}

async fn record_starts(shared: &Shared, starts: Vec<(TaskId, i64, i32)>) -> Result<()> {
    let mut ids = Vec::with_capacity(starts.len());
    let mut tokens = Vec::with_capacity(starts.len());
    let mut attempts = Vec::with_capacity(starts.len());
    for (id, token, attempt) in starts {
        ids.push(id);
        tokens.push(token);
        attempts.push(attempt);
    }
    let conn = shared.control.conn().await?;
    let starts = db::tasks::mark_all_started(
        &conn,
        conn.tag(),
        shared.client.sql(),
        &ids,
        &tokens,
        &attempts,
    );
    let recorded = conn
        .bounded(&shared.control, "cannot record run starts", starts)
        .await?;
    shared.leases.starts_recorded(
        ids.into_iter()
            .zip(tokens)
            .filter(|(id, _)| recorded.contains(id)),
    );
    Ok(())
}

/// Releases the leases this worker holds whose runs are not going on any more: never
/// started, or ended (stopped at shutdown). Returns the `(id, token)` of runs still going,
/// which keep their leases (a run that ignores the abort, blocked in synchronous code,
/// must not run here while another worker starts the task).
pub(crate) async fn release_ended(shared: &Shared) -> Vec<(TaskId, i64)> {
    let mut still_running = Vec::new();
    let mut release = Releases::default();
    {
        let leases = shared.leases.lock();
        for (id, lease) in leases.iter() {
            if lease.started.is_some() && !lease.run_ended() {
                still_running.push((*id, lease.token));
            } else {
                release.push(*id, lease.token, lease.attempt, lease.started.is_some());
            }
        }
    }
    release_leases(shared, release).await;
    still_running
}

/// Releases the leases of claimed tasks that never started.
pub(crate) async fn release(shared: &Shared, tasks: &[ClaimedTask]) {
    let mut release = Releases::default();
    for task in tasks {
        release.push(task.id, task.token, task.attempt_i32(), false);
    }
    release_leases(shared, release).await;
}

/// Leases to hand back, as the parallel arrays `db::tasks::release` takes.
#[derive(Default)]
struct Releases {
    ids: Vec<TaskId>,
    tokens: Vec<i64>,
    attempts: Vec<i32>,
    started: Vec<bool>,
}

impl Releases {
    fn push(&mut self, id: TaskId, token: i64, attempt: i32, started: bool) {
        self.ids.push(id);
        self.tokens.push(token);
        self.attempts.push(attempt);
        self.started.push(started);
    }
}

/// Hands tasks back (`pending` at once, keeping their place in the queue), fenced by their
/// tokens; a run that started counts as an attempt, one that never started does not.
async fn release_leases(shared: &Shared, release: Releases) {
    if release.ids.is_empty() {
        return;
    }
    let result = async {
        let conn = shared.client.conn().await?;
        db::tasks::release(
            &conn,
            shared.client.sql(),
            &release.ids,
            &release.tokens,
            &release.attempts,
            &release.started,
        )
        .await
    };
    match tokio::time::timeout(Duration::from_secs(10), result).await {
        Ok(Ok(n)) => {
            tracing::info!(worker = %shared.worker_id, released = n, "unstarted or unfinished tasks released");
            shared.leases.forget_all(release.ids.into_iter().zip(release.tokens));
            shared.client.announce_new_tasks();
        }
        Ok(Err(err)) => tracing::warn!(
            worker = %shared.worker_id,
            error = %err,
            "cannot release leases; they return to pending when they expire"
        ),
        Err(_) => tracing::warn!(
            worker = %shared.worker_id,
            "releasing leases timed out; they return to pending when they expire"
        ),
    }
}
