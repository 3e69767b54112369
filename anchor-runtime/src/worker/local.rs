//! Local dispatch: a due task enqueued outside a transaction, through the [`Client`] an
//! idle worker of the same process runs on, is inserted already leased to that worker and
//! starts there at once.
//!
//! The usual path is three steps after the insert commits: the notification reaches the
//! worker's LISTEN connection, the worker claims the row (a second write, and a second disk
//! flush on commit), then starts it. Here the insert is the claim: the row is written as the
//! claim would have left it (`running`, first attempt, this worker's lease under a fresh
//! token), so renewals, fencing, completion and rescue treat it like any claimed task, and a
//! process that dies after the insert loses nothing (the lease expires and a rescuer returns
//! the task). No notification goes out, because no other worker needs to look.
//!
//! It only happens when it cannot change which task runs first or where: the worker has a
//! free slot and its last claim found no more due tasks than it asked for, with no wake-up
//! since (`Shared::queue_drained`), it runs tasks of that name, and it is not stopping.
//! Otherwise, or with [`WorkerConfig::local_dispatch`](super::WorkerConfig) off, the task is
//! inserted `pending` and claimed as usual.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, Weak};
use std::time::Instant;

use super::claim::ClaimedTask;
use super::execute::{self, SlotGuard};
use super::{lease, Shared};
use crate::client::Client;
use crate::enqueue::NewTask;
use crate::task::TaskId;

/// The workers started on one client, for local dispatch. Weak, so that a stopped worker's
/// state is freed with its handle.
#[derive(Default)]
pub(crate) struct LocalWorkers(Mutex<Vec<Weak<Shared>>>);

impl LocalWorkers {
    /// Makes a started worker available for local dispatch through its client.
    pub(crate) fn register(&self, shared: &Arc<Shared>) {
        if !shared.config.local_dispatch {
            return;
        }
        let mut workers = self.0.lock().unwrap_or_else(|e| e.into_inner());
        workers.retain(|w| w.strong_count() > 0);
        workers.push(Arc::downgrade(shared));
    }

    /// The workers still alive.
    fn live(&self) -> Vec<Arc<Shared>> {
        let workers = self.0.lock().unwrap_or_else(|e| e.into_inner());
        workers.iter().filter_map(Weak::upgrade).collect()
    }

    /// Tells these workers that a due task was just inserted `pending`: they claim it
    /// without waiting for the notification, and until they have, no task enqueued here may
    /// start locally ahead of it (a client built from a pool alone gets no notifications at
    /// all, so without this the next local dispatch could overtake it by up to a poll
    /// interval).
    pub(crate) fn wake(&self) {
        for shared in self.live() {
            shared.wake_producer();
        }
    }
}

/// A capacity slot reserved in a local worker for a task about to be inserted. Dropping it
/// unused frees the slot.
pub(crate) struct LocalSlot {
    slot: SlotGuard,
}

impl LocalSlot {
    /// Reserves a slot in an idle worker started on `client` that runs tasks called `name`.
    pub(crate) fn reserve(client: &Client, name: &str) -> Option<LocalSlot> {
        client
            .inner
            .local_workers
            .live()
            .into_iter()
            .filter(|shared| {
                !shared.stopping()
                    && shared.queue_drained.load(Ordering::Acquire)
                    && shared.registry.handler(name).is_some()
            })
            .find_map(|shared| SlotGuard::try_take(&shared))
            .map(|slot| LocalSlot { slot })
    }

    /// The worker's id, the lease owner to write.
    pub(crate) fn worker_id(&self) -> &str {
        &self.slot.shared().worker_id
    }

    /// The worker's lease length in milliseconds.
    pub(crate) fn lease_ms(&self) -> i64 {
        self.slot.shared().lease_ms()
    }

    /// Starts the task inserted as `id` under `token` by a statement sent at `sent`, or, if
    /// the worker began stopping meanwhile, hands it back to `pending` at once.
    pub(crate) async fn start(
        self,
        task: NewTask,
        id: TaskId,
        payload: String,
        token: i64,
        sent: Instant,
    ) {
        let shared = self.slot.shared().clone();
        let claimed = ClaimedTask {
            id,
            name: task.name,
            payload,
            attempt: 1,
            failures: 0,
            rescues: 0,
            max_rescues: task.max_rescues,
            timeout_ms: task.timeout_ms,
            retry_intervals_ms: task.retry_intervals_ms,
            retry_always: task.retry_always,
            max_retries: task.max_retries,
            on_failed: task.on_failed,
            parent_id: task.parent_id,
            token,
            leased_at: sent,
        };
        shared.track_leases(std::slice::from_ref(&claimed));
        if shared.stopping() {
            // Shutdown has begun; the worker takes nothing new. The slot is freed first so
            // that shutdown need not wait for the release.
            drop(self.slot);
            lease::release(&shared, std::slice::from_ref(&claimed)).await;
            return;
        }
        execute::spawn_in_slot(&shared, claimed, Some(self.slot));
    }
}
