//! The leases this worker holds, with their local deadlines and start records: the one
//! piece of state the producer, the executions, the completer, the renewer, the fencer and
//! the start recorder share (each service gets an `Arc` of this table, not the worker's
//! whole state).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::task::AbortHandle;

use crate::claimed::ClaimedTask;
use crate::task::TaskId;

/// A lease this worker holds: the token that fences its writes, the running execution, and
/// the local time by which the execution must stop unless the lease is renewed.
pub(crate) struct Lease {
    pub(crate) token: i64,
    /// The number of the run this lease is for.
    pub(crate) attempt: i32,
    pub(crate) abort: Option<AbortHandle>,
    /// Tells the run's [`TaskContext`](crate::TaskContext) it was cancelled.
    pub(crate) cancel: Option<Arc<crate::task::CancelSignal>>,
    /// The task was cancelled while this run goes on: the run has its grace
    /// ([`CANCEL_GRACE`](crate::CANCEL_GRACE)) before it is dropped, and the renewer,
    /// which finds the lease gone, leaves it alone meanwhile.
    pub(crate) cancelling: bool,
    /// When the run started here (`None` while the task waits in the buffer).
    pub(crate) started: Option<Instant>,
    /// Whether the run's start is recorded in the row (`run_started`), so that a rescue
    /// after this worker dies counts the run.
    pub(crate) start_recorded: bool,
    pub(crate) deadline: Arc<LeaseDeadline>,
}

impl Lease {
    /// Whether a run was started and has ended (or was stopped).
    pub(crate) fn run_ended(&self) -> bool {
        self.abort.as_ref().is_some_and(AbortHandle::is_finished)
    }
}

/// A lease's local deadline, shared by the renewer (which moves it), the fencer (which
/// aborts runs past it) and the run itself (which is not polled past it, see `execute.rs`).
pub(crate) struct LeaseDeadline(AtomicU64);

impl LeaseDeadline {
    /// One origin for every deadline of this process, so that they fit in a `u64`.
    fn origin() -> Instant {
        static ORIGIN: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
        *ORIGIN.get_or_init(Instant::now)
    }

    fn nanos(at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(Self::origin()).as_nanos()).unwrap_or(u64::MAX)
    }

    fn new(at: Instant) -> LeaseDeadline {
        LeaseDeadline(AtomicU64::new(Self::nanos(at)))
    }

    /// The deadline now.
    pub(crate) fn get(&self) -> Instant {
        Self::origin() + Duration::from_nanos(self.0.load(Ordering::Acquire))
    }

    /// Moves the deadline to `at` unless it is already later.
    pub(crate) fn extend(&self, at: Instant) {
        self.0.fetch_max(Self::nanos(at), Ordering::AcqRel);
    }

    /// Whether the deadline has passed.
    pub(crate) fn passed(&self) -> bool {
        Self::nanos(Instant::now()) >= self.0.load(Ordering::Acquire)
    }
}

/// The leases this worker holds, by task.
pub(crate) struct LeaseTable {
    leases: Mutex<HashMap<TaskId, Lease>>,
    /// How long a claim or a renewal holds a task.
    lease_duration: Duration,
    /// How long before its lease could expire an unrenewed run is stopped.
    fence_margin: Duration,
}

impl LeaseTable {
    pub(crate) fn new(lease_duration: Duration, fence_margin: Duration) -> LeaseTable {
        LeaseTable {
            leases: Mutex::new(HashMap::new()),
            lease_duration,
            fence_margin,
        }
    }

    /// The table itself, for the few places that read or change several leases at once.
    pub(crate) fn lock(&self) -> MutexGuard<'_, HashMap<TaskId, Lease>> {
        self.leases.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The lease duration in milliseconds, as the claim and the renewal write it.
    pub(crate) fn lease_ms(&self) -> i64 {
        i64::try_from(self.lease_duration.as_millis()).unwrap_or(i64::MAX)
    }

    /// The leases held now, as parallel id and token arrays.
    pub(crate) fn snapshot(&self) -> (Vec<TaskId>, Vec<i64>) {
        self.lock().iter().map(|(id, l)| (*id, l.token)).unzip()
    }

    /// How many runs started here have not ended yet.
    pub(crate) fn runs_going(&self) -> usize {
        self.lock()
            .values()
            .filter(|l| l.started.is_some() && !l.run_ended())
            .count()
    }

    /// Aborts every run started here (shutdown past its grace, or an abort).
    pub(crate) fn abort_runs(&self) {
        for lease in self.lock().values() {
            if let Some(abort) = &lease.abort {
                abort.abort();
            }
        }
    }

    /// The runs started at least `after` ago whose start is not recorded yet, as
    /// `(id, token, attempt)`.
    pub(crate) fn unrecorded_starts(&self, after: Duration) -> Vec<(TaskId, i64, i32)> {
        self.lock()
            .iter()
            .filter(|(_, l)| {
                !l.start_recorded
                    && !l.run_ended()
                    && l.started.is_some_and(|at| at.elapsed() >= after)
            })
            .map(|(id, l)| (*id, l.token, l.attempt))
            .collect()
    }

    /// Notes that the starts of these `(id, token)` runs are recorded.
    pub(crate) fn starts_recorded(&self, recorded: impl IntoIterator<Item = (TaskId, i64)>) {
        let mut leases = self.lock();
        for (id, token) in recorded {
            if let Some(lease) = leases.get_mut(&id).filter(|l| l.token == token) {
                lease.start_recorded = true;
            }
        }
    }

    /// The local time by which a run must stop unless its lease is renewed, for a lease
    /// written by a statement sent at `sent`.
    ///
    /// The claim and the renewal both write `lease_expires_at = now() + lease`, so the
    /// expiry is exactly one lease after the database's `now()` for that statement, and that
    /// `now()` is read after the statement was sent. A rescuer acts only once the
    /// database's clock is past the expiry, so stopping by `sent + lease - margin` on this
    /// process's monotonic clock stops before any rescue; the margin absorbs clock rate
    /// differences, wall-clock steps on the database host and scheduling delays here.
    pub(crate) fn deadline(&self, sent: Instant) -> Instant {
        sent + self.lease_duration.saturating_sub(self.fence_margin)
    }

    /// Records the leases of freshly claimed (or locally dispatched) tasks.
    pub(crate) fn track(&self, tasks: &[ClaimedTask]) {
        let mut leases = self.lock();
        for task in tasks {
            leases.insert(
                task.id,
                Lease {
                    token: task.token,
                    attempt: task.attempt_i32(),
                    abort: None,
                    cancel: None,
                    cancelling: false,
                    started: None,
                    start_recorded: false,
                    deadline: Arc::new(LeaseDeadline::new(self.deadline(task.leased_at))),
                },
            );
        }
    }

    /// The task `id` was cancelled while it runs (its row is `cancelled` already, the lease
    /// gone): tells its run at once, and drops the run's future [`CANCEL_GRACE`] later if it
    /// has not ended by then. Returns whether a run of it was going here.
    ///
    /// [`CANCEL_GRACE`]: crate::CANCEL_GRACE
    ///
    /// A task claimed but not started (waiting in the buffer) loses its lease here at once,
    /// so it is never started.
    pub(crate) fn cancel_run(self: &Arc<Self>, id: TaskId) -> bool {
        let token = {
            let mut leases = self.lock();
            let Some(lease) = leases.get_mut(&id) else {
                return false;
            };
            if lease.started.is_none() {
                leases.remove(&id);
                tracing::info!(task.id = %id, "task cancelled before it started here; not starting it");
                return true;
            }
            if let Some(cancel) = &lease.cancel {
                cancel.cancel();
            }
            lease.cancelling = true;
            lease.token
        };
        tracing::info!(task.id = %id, "task cancelled while running; stopping it");
        let table = Arc::downgrade(self);
        tokio::spawn(async move {
            tokio::time::sleep(crate::CANCEL_GRACE).await;
            let Some(table) = table.upgrade() else {
                return;
            };
            let mut leases = table.lock();
            if leases.get(&id).is_some_and(|l| l.token == token) {
                if let Some(abort) = leases.remove(&id).and_then(|l| l.abort) {
                    if !abort.is_finished() {
                        tracing::info!(task.id = %id, "cancelled run did not stop in its grace; dropping it");
                        abort.abort();
                    }
                }
            }
        });
        true
    }

    /// Forgets the lease of `id` if it is still the one under `token` (the task may have
    /// been claimed again since, under a new token).
    pub(crate) fn forget(&self, id: TaskId, token: i64) {
        self.forget_all([(id, token)]);
    }

    /// Forgets each `(id, token)` lease that is still the one under that token: a stale
    /// write for an older lease of a task claimed again since must not drop the new lease
    /// (it would then never be renewed or fenced).
    pub(crate) fn forget_all(&self, leases_to_forget: impl IntoIterator<Item = (TaskId, i64)>) {
        let mut leases = self.lock();
        for (id, token) in leases_to_forget {
            if leases.get(&id).is_some_and(|l| l.token == token) {
                leases.remove(&id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claimed(id: TaskId, token: i64) -> ClaimedTask {
        ClaimedTask::for_test(id, token)
    }

    /// An outcome written late for an old lease of a task that was rescued and claimed
    /// again by this worker (under a new token) must not drop the new lease: it would
    /// then never be renewed or fenced, and another worker could run the task at once.
    /// (The completer used to forget leases by id alone.)
    #[test]
    fn a_stale_outcome_does_not_forget_the_task_s_newer_lease() {
        let leases = LeaseTable::new(Duration::from_secs(30), Duration::from_secs(3));
        let (one, two) = (TaskId::new(1), TaskId::new(2));
        leases.track(&[claimed(one, 111), claimed(two, 222)]);
        // Task 1 is rescued and claimed again here, under a new token.
        leases.track(&[claimed(one, 333)]);
        // The stale outcome of the first lease is written, and forgotten by (id, token).
        leases.forget_all([(one, 111), (two, 222)]);
        let (ids, tokens) = leases.snapshot();
        assert_eq!(ids, vec![one]);
        assert_eq!(
            tokens,
            vec![333],
            "the newer lease is still held and renewed"
        );
    }
}
