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
//! It only happens when it cannot change which task runs first or where: the worker serves
//! the task's queue and name, the queue's lane has a free slot, its last claim found no more
//! due tasks than it asked for, with no wake-up since (`Lane::drained`), the queue is not
//! announced paused, and the worker is not stopping.
//! Otherwise, or with [`WorkerConfig::local_dispatch`](super::WorkerConfig) off, the task is
//! inserted `pending` and claimed as usual.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use super::execute::{self, Slot, SlotGuard};
use super::{lease, Shared};
use crate::claimed::ClaimedTask;
use crate::dispatch::{LocalWorker, ReservedSlot};
use crate::settings::NewTask;
use crate::task::TaskId;

impl LocalWorker for Shared {
    fn wake(&self) {
        self.wake_producer();
    }

    fn reserve(self: Arc<Self>, queue: &str, name: &str) -> Option<Box<dyn ReservedSlot>> {
        let lane = self.producer.lane_for(queue, name)?;
        let slots = self.producer.lane(lane);
        let idle = !self.stopping()
            && slots.drained()
            && !slots.paused.load(std::sync::atomic::Ordering::Acquire);
        if !idle {
            return None;
        }
        let slot = SlotGuard::try_take(&self, lane)?;
        Some(Box::new(LocalSlot { slot }))
    }
}

/// A capacity slot reserved in this worker for a task about to be inserted. Dropping it
/// unused frees the slot.
struct LocalSlot {
    slot: SlotGuard,
}

impl ReservedSlot for LocalSlot {
    fn worker_id(&self) -> &str {
        &self.slot.shared().worker_id
    }

    fn lease_ms(&self) -> i64 {
        self.slot.shared().lease_ms()
    }

    fn start(
        self: Box<Self>,
        task: NewTask,
        id: TaskId,
        payload: String,
        token: i64,
        sent: Instant,
    ) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        Box::pin(self.start_here(task, id, payload, token, sent))
    }
}

impl LocalSlot {
    async fn start_here(
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
            settings: task.settings,
            parent_id: task.parent_id,
            token,
            leased_at: sent,
            // Due when inserted, a moment ago: the wait is the time since the insert.
            due: Some(
                chrono::Utc::now() - chrono::Duration::from_std(sent.elapsed()).unwrap_or_default(),
            ),
        };
        shared.leases.track(std::slice::from_ref(&claimed));
        if shared.stopping() {
            // Shutdown has begun; the worker takes nothing new. The slot is freed first so
            // that shutdown need not wait for the release.
            drop(self.slot);
            lease::release(&shared, std::slice::from_ref(&claimed)).await;
            return;
        }
        execute::spawn_in_slot(&shared, claimed, Slot::Reserved(self.slot));
    }
}
