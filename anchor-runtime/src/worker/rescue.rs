//! The rescuer, which every worker runs (no leader): it locks running tasks whose lease has
//! expired with `SKIP LOCKED` and returns them to `pending` whatever their retry policy: a
//! lost worker is not a failure of the task, uses up no retry and keeps the task's place in
//! the queue. Only a task whose worker was lost `max_rescues` times while its run had
//! started fails, as poison, with its `onFailed` handler enqueued in the same transaction
//! (`on_failed.rs`).

use std::sync::Arc;
use std::time::Duration;

use super::service::{Next, Pace, Service};
use super::{on_failed, ProducerWake};
use crate::client::Client;
use crate::db;
use crate::error::Result;
use crate::registry::Registry;
use crate::task::TaskId;

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

/// The rescuer: every rescue interval (with jitter, so that the workers of one deployment
/// do not rescue in lockstep), rescues expired tasks in batches until a batch comes back
/// short.
pub(crate) struct Rescuer {
    client: Client,
    /// The `onFailed` handlers of tasks failed as poison are enqueued with its definitions.
    registry: Registry,
    /// The bound for tasks whose definition sets no `maxRescues`.
    max_rescues: u32,
    interval: Duration,
    /// Rescued tasks are due at once.
    producer: Arc<ProducerWake>,
}

impl Rescuer {
    pub(crate) fn new(
        client: Client,
        registry: Registry,
        max_rescues: u32,
        interval: Duration,
        producer: Arc<ProducerWake>,
    ) -> Rescuer {
        Rescuer {
            client,
            registry,
            max_rescues,
            interval,
            producer,
        }
    }
}

impl Service for Rescuer {
    const NAME: &'static str = "rescuer";

    fn pace(&self) -> Pace {
        Pace::every(self.interval).jittered().first_after_interval()
    }

    async fn round(&mut self) -> Result<Next> {
        loop {
            let batch = self
                .client
                .bounded("rescuing expired tasks", self.rescue_batch())
                .await?;
            if (batch as i64) < RESCUE_BATCH {
                return Ok(Next::Interval);
            }
        }
    }

    fn failure(&self) -> &'static str {
        "rescuing expired tasks failed"
    }
}

impl Rescuer {
    /// Rescues up to [`RESCUE_BATCH`] tasks whose lease expired; returns how many.
    async fn rescue_batch(&self) -> Result<usize> {
        let sql = self.client.sql();
        let mut conn = self.client.conn().await?;
        let tx = db::begin(&mut conn, "cannot begin the rescue transaction").await?;
        let expired = db::tasks::lock_expired(&tx, sql, RESCUE_BATCH).await?;
        if expired.is_empty() {
            return Ok(0);
        }
        let rescued = expired.len();
        let mut poisoned: Vec<(TaskId, String)> = Vec::new();
        // (name, queue, failed as poison) of each task taken back, counted once committed.
        let mut counted: Vec<(String, String, bool)> = Vec::new();
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
                .settings
                .max_rescues
                .filter(|n| *n > 0)
                .unwrap_or(self.max_rescues);
            let rescue = task.rescues.saturating_add(1);
            let owner = lost.owner.as_deref();
            if lost.started && rescue >= max {
                let message = poison_message(owner, rescue, max);
                let updated = db::tasks::rescue_fail(&tx, sql, task.id, &message).await?;
                tracing::warn!(task.id = %task.id, task.name = %task.name, rescues = rescue, "worker lost too often; task failed as poison");
                if updated == 1 {
                    counted.push((task.name.clone(), task.settings.queue.clone(), true));
                    if let Some(handler) = task.settings.on_failed {
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
            counted.push((task.name.clone(), task.settings.queue.clone(), false));
            tracing::warn!(task.id = %task.id, task.name = %task.name, started = lost.started, rescues = rescue, "lease expired; task returned to pending");
        }
        let failed: Vec<(TaskId, &str)> =
            poisoned.iter().map(|(id, h)| (*id, h.as_str())).collect();
        let handlers = on_failed::enqueue_handlers(&self.registry, sql, &tx, &failed).await?;
        db::commit(tx, "cannot commit the rescue").await?;
        for (name, queue, poison) in &counted {
            crate::observe::count(crate::observe::RESCUED, name, queue);
            if *poison {
                crate::observe::count(crate::observe::FAILED, name, queue);
            }
        }
        // Rescued tasks are due at once.
        self.producer.wake();
        if handlers > 0 {
            self.client.announce_new_tasks();
        }
        Ok(rescued)
    }
}
