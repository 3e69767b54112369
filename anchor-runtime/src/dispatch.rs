//! The client's side of local dispatch (see `worker/local.rs`): the interface a worker
//! started on a [`Client`](crate::Client) offers to it. The client and enqueue know only
//! these traits, never the worker, so the dependencies run one way: the worker depends on
//! the client, not back.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::time::Instant;

use crate::settings::NewTask;
use crate::task::TaskId;

/// A worker that can take a due task enqueued through its client directly.
pub(crate) trait LocalWorker: Send + Sync {
    /// A due task was just inserted `pending`: claim it without waiting for the
    /// notification, and start no local task ahead of it until then.
    fn wake(&self);

    /// A free slot for a task called `name` in `queue`, if this worker runs such tasks in
    /// that queue, is idle there (its last claim drained the queue) and is not stopping.
    fn reserve(self: Arc<Self>, queue: &str, name: &str) -> Option<Box<dyn ReservedSlot>>;
}

/// A capacity slot reserved in a local worker for a task about to be inserted already
/// leased to it. Dropping it unused frees the slot.
pub(crate) trait ReservedSlot: Send {
    /// The worker's id, the lease owner to write.
    fn worker_id(&self) -> &str;

    /// The worker's lease length in milliseconds.
    fn lease_ms(&self) -> i64;

    /// Starts the task inserted as `id` under `token` by a statement sent at `sent` (or
    /// hands it back to `pending` if the worker began stopping meanwhile).
    fn start(
        self: Box<Self>,
        task: NewTask,
        id: TaskId,
        payload: String,
        token: i64,
        sent: Instant,
    ) -> Pin<Box<dyn Future<Output = ()> + Send>>;
}

/// The workers started on one client. Weak, so that a stopped worker's state is freed with
/// its handle.
#[derive(Default)]
pub(crate) struct LocalWorkers(Mutex<Vec<Weak<dyn LocalWorker>>>);

impl LocalWorkers {
    /// Makes a started worker available for local dispatch.
    pub(crate) fn register(&self, worker: Weak<dyn LocalWorker>) {
        let mut workers = self.0.lock().unwrap_or_else(|e| e.into_inner());
        workers.retain(|w| w.strong_count() > 0);
        workers.push(worker);
    }

    fn live(&self) -> Vec<Arc<dyn LocalWorker>> {
        let workers = self.0.lock().unwrap_or_else(|e| e.into_inner());
        workers.iter().filter_map(Weak::upgrade).collect()
    }

    /// Tells every live worker that a due task was inserted `pending` (see
    /// [`LocalWorker::wake`]). A client built from a pool alone gets no notifications, so
    /// without this a local dispatch could overtake that task by up to a poll interval.
    pub(crate) fn wake(&self) {
        for worker in self.live() {
            worker.wake();
        }
    }

    /// A slot for a task called `name` in `queue` in the first worker that can take one.
    pub(crate) fn reserve(&self, queue: &str, name: &str) -> Option<Box<dyn ReservedSlot>> {
        self.live()
            .into_iter()
            .find_map(|worker| worker.reserve(queue, name))
    }
}
