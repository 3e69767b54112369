//! Runs one claimed task: decode the payload, call the handler under the task's timeout,
//! catch panics, and hand the outcome to the completer.
//!
//! Each execution is its own tokio task, so a slow or stuck handler never blocks the
//! worker, and the renewer can abort it when the lease turns out to be lost. No database
//! connection or transaction is held while the handler runs.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use chrono::Utc;
use tracing::Instrument;

use super::complete::{Finished, Message, Outcome};
use super::Shared;
use crate::claimed::ClaimedTask;
use crate::task::TaskContext;

/// One capacity slot of a lane, taken for an execution (or reserved for a local dispatch,
/// see `local.rs`); it is freed however the execution ends, also when aborted.
pub(crate) struct SlotGuard {
    shared: Arc<Shared>,
    lane: usize,
}

impl SlotGuard {
    fn take(shared: &Arc<Shared>, lane: usize) -> SlotGuard {
        shared
            .producer
            .lane(lane)
            .executing
            .fetch_add(1, Ordering::SeqCst);
        SlotGuard {
            shared: shared.clone(),
            lane,
        }
    }

    /// Takes a slot of `lane` if one is free.
    pub(crate) fn try_take(shared: &Arc<Shared>, lane: usize) -> Option<SlotGuard> {
        let slots = shared.producer.lane(lane);
        slots
            .executing
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < slots.concurrency).then_some(n + 1)
            })
            .ok()
            .map(|_| SlotGuard {
                shared: shared.clone(),
                lane,
            })
    }

    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }
}

impl Drop for SlotGuard {
    fn drop(&mut self) {
        let lane = self.shared.producer.lane(self.lane);
        lane.executing.fetch_sub(1, Ordering::SeqCst);
        lane.slot_freed.notify_one();
        self.shared.slot_freed.notify_one();
    }
}

/// Starts `task` on a new tokio task in a slot of `lane` taken now.
pub(crate) fn spawn_execution(shared: &Arc<Shared>, lane: usize, task: ClaimedTask) {
    spawn_in_slot(shared, task, Slot::Take(lane));
}

/// Where an execution runs: in a slot reserved for it, or in one of a lane taken now.
pub(crate) enum Slot {
    Reserved(SlotGuard),
    Take(usize),
}

/// Starts `task` on a new tokio task in `slot`, and records its abort handle with its
/// lease.
pub(crate) fn spawn_in_slot(shared: &Arc<Shared>, mut task: ClaimedTask, slot: Slot) {
    let Some(handler) = shared.registry.handler(&task.name) else {
        // The claim only selects registered names, so this cannot happen; the lease then
        // expires and the rescuer returns the task for a worker that knows it.
        tracing::error!(task.id = %task.id, task.name = %task.name, "claimed a task without a handler");
        return;
    };
    // The lease was recorded at claim time (`LeaseTable::track`). The execution starts
    // only while the lease is still held and before its deadline, and it is spawned and its
    // abort handle recorded under one lock, so the renewer and the fencer always see either
    // no run or a run they can stop.
    let mut leases = shared.leases.lock();
    let (cancel_tx, cancel) = crate::task::Cancellation::pair();
    let deadline = match leases.get_mut(&task.id) {
        Some(lease) if lease.token == task.token && !lease.deadline.passed() => {
            lease.started = Some(std::time::Instant::now());
            lease.cancel = Some(cancel_tx);
            lease.deadline.clone()
        }
        Some(lease) if lease.token == task.token => {
            // Its lease was not renewed while it waited: a rescuer may take it any moment.
            leases.remove(&task.id);
            tracing::warn!(
                task.id = %task.id,
                "lease not renewed in time; the claimed task is not started"
            );
            return;
        }
        _ => {
            tracing::warn!(
                task.id = %task.id,
                "lease lost before the task started; not starting it"
            );
            return;
        }
    };
    let guard = match slot {
        Slot::Reserved(guard) => guard,
        Slot::Take(lane) => SlotGuard::take(shared, lane),
    };
    // Bounded, so that no deadline arithmetic can overflow whatever the row holds.
    let timeout = task.settings.timeout.min(anchor_core::MAX_DURATION);
    let ctx = TaskContext {
        id: task.id,
        name: task.name.clone(),
        attempt: task.attempt,
        deadline: chrono::Duration::from_std(timeout)
            .ok()
            .and_then(|d| Utc::now().checked_add_signed(d))
            .unwrap_or(chrono::DateTime::<Utc>::MAX_UTC),
        timeout,
        parent_id: task.parent_id,
        cancel,
    };
    let span = tracing::info_span!(
        "anchor.task",
        task.id = %task.id,
        task.name = %task.name,
        task.attempt = task.attempt
    );
    let completer = shared.completer.clone();
    let id = task.id;
    let token = task.token;
    let execution = async move {
        let _guard = guard;
        // A task whose worker was lost before may be what kills its workers (poison): its
        // start is recorded before it runs, so that every such loss is counted. Other runs
        // have their start recorded shortly after it (`lease::StartRecorder`).
        if task.rescues > 0 && !super::lease::record_start(_guard.shared(), &task).await {
            return;
        }
        tracing::debug!("task started");
        let wait = task
            .due
            .and_then(|due| (Utc::now() - due).to_std().ok())
            .unwrap_or_default();
        let running = _guard
            .shared
            .metrics
            .get(&task.name, &task.settings.queue)
            .start(wait);
        // The payload is needed only to decode the parameters; the outcome does not carry it.
        let payload = std::mem::take(&mut task.payload);
        // The handler is never polled past its lease's local deadline. The fencer aborts
        // runs that pass it while waiting, but after this process was frozen (SIGSTOP, a VM
        // pause, a starved scheduler) the handler's own timers may fire in the same turn as
        // the fencer's: this check makes the stop come first, so no handler code runs once
        // a rescuer may have handed the task to another worker.
        let outcome = crate::run::run_handler(handler.as_ref(), ctx, &payload, timeout, || {
            !deadline.passed()
        })
        .await;
        running.finished();
        let Some(outcome) = outcome else {
            tracing::warn!(
                "lease not renewed in time (was this process paused?); the run is \
                     stopped and the task returns to pending when the lease expires"
            );
            _guard.shared.leases.forget(id, token);
            return;
        };
        match &outcome {
            Outcome::Completed => tracing::debug!("task succeeded"),
            Outcome::Failed { message, fatal } => {
                tracing::info!(error = %message, fatal, "task attempt failed")
            }
            Outcome::RetryWithoutEvent => tracing::debug!("task asked to be retried later"),
        }
        // The slot frees once the outcome is queued for the completer, so a completer that
        // falls behind (a slow database) holds back new claims instead of letting claimed
        // but unrecorded tasks pile up.
        if completer
            .send(Message::Finished(Box::new(Finished { task, outcome })))
            .await
            .is_err()
        {
            tracing::warn!("worker stopped before the outcome was written; the lease will expire");
        }
        drop(running);
        drop(_guard);
    }
    .instrument(span);
    let handle = tokio::spawn(execution);
    if let Some(lease) = leases.get_mut(&id) {
        lease.abort = Some(handle.abort_handle());
    }
}
