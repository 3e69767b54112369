//! This worker's leases: renewing them, fencing runs whose lease lapses, recording run
//! starts, releasing them at shutdown. (Other workers' expired leases are the rescuer's,
//! `rescue.rs`.) The renewer, the fencer and the start recorder are services
//! (`service.rs`) holding the lease table (`lease_table.rs`), the renewer and the start
//! recorder also the control connection (`control.rs`), not the worker's whole state.
//!
//! - The renewer extends every lease this worker holds with one statement per tick. A lease
//!   the statement no longer finds (a rescuer took the task after this worker stalled) is
//!   dropped and its execution aborted, so the task does not keep running here while
//!   another worker runs it too.
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

use super::control::Control;
use super::lease_table::LeaseTable;
use super::service::{Next, Pace, Service};
use super::Shared;
use crate::claimed::ClaimedTask;
use crate::client::Client;
use crate::db;
use crate::error::Result;
use crate::task::TaskId;

/// How long a run goes before its start is recorded: runs shorter than this have their
/// start recorded with their outcome, in the same statement, at no extra cost.
pub(crate) const START_RECORD_DELAY: Duration = Duration::from_millis(100);

/// The renewer: extends every lease this worker holds, one statement a round, on the
/// control connection. A failed renewal is retried with backoff, soon, not a whole interval
/// later: the fencer stops runs whose leases go unrenewed for most of a lease.
pub(crate) struct Renewer {
    client: Client,
    leases: Arc<LeaseTable>,
    control: Arc<Control>,
    interval: Duration,
}

impl Renewer {
    pub(crate) fn new(
        client: Client,
        leases: Arc<LeaseTable>,
        control: Arc<Control>,
        interval: Duration,
    ) -> Renewer {
        Renewer {
            client,
            leases,
            control,
            interval,
        }
    }

    /// Renews every lease held; a lease a rescuer took is dropped and its run stopped.
    async fn renew(&self) -> Result<()> {
        let (ids, tokens) = self.leases.snapshot();
        if ids.is_empty() {
            return Ok(());
        }
        // Not a pooled connection: tasks holding every pooled connection must not starve the
        // renewal of their own leases (see `control.rs`).
        let conn = self.control.conn().await?;
        let sql = self.client.sql();
        let sent = Instant::now();
        let mut renewed = conn
            .bounded(
                &self.control,
                "cannot renew leases",
                db::tasks::renew(
                    &conn,
                    conn.tag(),
                    sql,
                    &ids,
                    &tokens,
                    self.leases.lease_ms(),
                ),
            )
            .await?;
        {
            // Only a written expiry moves a lease's deadline; a skipped (locked) row keeps the
            // deadline of its last successful write.
            let deadline = self.leases.deadline(sent);
            let mut leases = self.leases.lock();
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
                &self.control,
                "cannot check leases the renewal skipped",
                db::tasks::lease_held(&conn, conn.tag(), sql, &missing_ids, &missing_tokens),
            )
            .await?;
        renewed.extend(held);
        let mut leases = self.leases.lock();
        for (id, token) in ids.iter().zip(&tokens) {
            if renewed.contains(id) {
                continue;
            }
            // A lease missing from the result was either just finalised by the completer (and
            // forgotten, or about to be) or taken by a rescuer. Only the latter is still here
            // with the same token and a running execution.
            // A run being cancelled has its grace: `LeaseTable::cancel_run` drops it.
            if leases
                .get(id)
                .is_some_and(|l| l.token == *token && !l.cancelling)
            {
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
}

impl Service for Renewer {
    const NAME: &'static str = "renewer";

    fn pace(&self) -> Pace {
        Pace::every(self.interval)
    }

    async fn round(&mut self) -> Result<Next> {
        self.renew().await?;
        Ok(Next::Interval)
    }

    fn failure(&self) -> &'static str {
        "renewing leases failed"
    }
}

/// The fencer: stops runs whose lease deadline passed without a renewal.
///
/// After each round it sleeps until the earliest deadline, at most half the fence margin
/// at a time so that leases claimed meanwhile (whose deadlines lie a lease ahead) are never
/// overslept.
pub(crate) struct Fencer {
    leases: Arc<LeaseTable>,
    tick: Duration,
    worker_id: String,
}

impl Fencer {
    pub(crate) fn new(leases: Arc<LeaseTable>, fence_margin: Duration, worker_id: &str) -> Fencer {
        Fencer {
            leases,
            tick: (fence_margin / 2).max(Duration::from_millis(10)),
            worker_id: worker_id.to_string(),
        }
    }
}

impl Service for Fencer {
    const NAME: &'static str = "fencer";

    fn pace(&self) -> Pace {
        Pace::every(self.tick)
    }

    async fn round(&mut self) -> Result<Next> {
        let now = Instant::now();
        let next = fence(&self.leases, &self.worker_id, now)
            .map_or(now + self.tick, |d| d.min(now + self.tick));
        Ok(Next::After(next.saturating_duration_since(now)))
    }

    fn failure(&self) -> &'static str {
        "fencing leases failed"
    }
}

/// Drops every lease whose deadline is past and aborts its run; returns the earliest
/// deadline still ahead.
fn fence(leases: &LeaseTable, worker_id: &str, now: Instant) -> Option<Instant> {
    let mut leases = leases.lock();
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
                        worker = %worker_id,
                        task.id = %id,
                        "lease not renewed in time; stopping the run before it can expire \
                         (the task returns to pending when the lease expires)"
                    );
                    abort.abort();
                }
                // A claimed task still waiting in the buffer: it will not be started.
                None => tracing::warn!(
                    worker = %worker_id,
                    task.id = %id,
                    "lease not renewed in time; the claimed task will not be started here"
                ),
            }
        }
    }
    next
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

/// The start recorder: every [`START_RECORD_DELAY`], records the starts of the runs that
/// have gone on that long, in one statement on the control connection.
pub(crate) struct StartRecorder {
    client: Client,
    leases: Arc<LeaseTable>,
    control: Arc<Control>,
}

impl StartRecorder {
    pub(crate) fn new(
        client: Client,
        leases: Arc<LeaseTable>,
        control: Arc<Control>,
    ) -> StartRecorder {
        StartRecorder {
            client,
            leases,
            control,
        }
    }

    async fn record(&self, starts: Vec<(TaskId, i64, i32)>) -> Result<()> {
        let mut ids = Vec::with_capacity(starts.len());
        let mut tokens = Vec::with_capacity(starts.len());
        let mut attempts = Vec::with_capacity(starts.len());
        for (id, token, attempt) in starts {
            ids.push(id);
            tokens.push(token);
            attempts.push(attempt);
        }
        let conn = self.control.conn().await?;
        let starts = db::tasks::mark_all_started(
            &conn,
            conn.tag(),
            self.client.sql(),
            &ids,
            &tokens,
            &attempts,
        );
        let recorded = conn
            .bounded(&self.control, "cannot record run starts", starts)
            .await?;
        self.leases.starts_recorded(
            ids.into_iter()
                .zip(tokens)
                .filter(|(id, _)| recorded.contains(id)),
        );
        Ok(())
    }
}

impl Service for StartRecorder {
    const NAME: &'static str = "start recorder";

    fn pace(&self) -> Pace {
        Pace::every(START_RECORD_DELAY).first_after_interval()
    }

    async fn round(&mut self) -> Result<Next> {
        let starts = self.leases.unrecorded_starts(START_RECORD_DELAY);
        if !starts.is_empty() {
            self.record(starts).await?;
        }
        Ok(Next::Interval)
    }

    fn failure(&self) -> &'static str {
        "recording run starts failed"
    }
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
            shared
                .leases
                .forget_all(release.ids.into_iter().zip(release.tokens));
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
