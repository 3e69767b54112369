//! The scheduler: every worker runs one. It registers the `default` schedules of the cron
//! tasks this worker runs, then fires due ticks (`crate::cron::fire_due`: lock, insert one
//! occurrence, advance, commit) and sleeps until the earliest next tick by the database's
//! clock — woken early by a schedule-change notification — so a seconds schedule fires
//! within milliseconds of its tick without polling. Workers need no leader: the row lock on
//! each due schedule decides which one fires a tick.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tokio_postgres::Notification;

use super::{Backoff, Shared};
use crate::cron;
use crate::db;

/// The longest the scheduler sleeps without looking at the table: a safety net for a lost
/// notification (e.g. while the LISTEN connection reconnects) or a worker without LISTEN.
const MAX_SLEEP: Duration = Duration::from_secs(5);

/// How often schedules that no live worker fires are looked for.
const ORPHAN_SWEEP_INTERVAL: Duration = Duration::from_secs(30);

/// The wait before looking again at a due schedule another session holds locked: 5 ms,
/// doubling to 1 s while it stays locked.
#[derive(Default)]
struct LockedBackoff {
    rounds: u32,
}

impl LockedBackoff {
    const FIRST: Duration = Duration::from_millis(5);
    const MAX: Duration = Duration::from_secs(1);

    fn next_delay(&mut self) -> Duration {
        let delay = Self::FIRST
            .saturating_mul(1 << self.rounds.min(10))
            .min(Self::MAX);
        self.rounds = self.rounds.saturating_add(1);
        delay
    }

    fn reset(&mut self) {
        self.rounds = 0;
    }
}

/// Routes a notification from the worker's LISTEN connection: schedule changes wake the
/// scheduler, everything else the producer.
pub(crate) fn route_notification(shared: &Shared, notification: &Notification) {
    if db::notify::is_schedule_change(shared.client.sql(), notification.channel()) {
        shared.schedules_changed.notify_one();
    } else {
        shared.wake_producer();
    }
}

/// The scheduler loop; returns when the worker stops.
pub(crate) async fn run_scheduler(shared: Arc<Shared>) {
    // Only schedules of cron tasks this worker has handlers for fire here; a task that lost
    // its `cronjob` in tasks.yaml no longer fires, even with a schedule left in the table.
    let names: Vec<String> = shared
        .names
        .iter()
        .filter(|name| {
            shared
                .registry
                .definition(name)
                .is_some_and(|def| def.cron.is_some())
        })
        .cloned()
        .collect();
    let mut stop = shared.stop.subscribe();
    let mut backoff = Backoff::new();
    // Registration first: until it succeeds nothing of ours could fire correctly anyway.
    loop {
        if shared.stopping() {
            return;
        }
        let registered = shared.client.bounded(
            "registering cron schedules",
            cron::register_at_start(&shared.client, &shared.registry, &names, &shared.worker_id),
        );
        match registered.await {
            Ok(()) => break,
            Err(err) => {
                let delay = backoff.next_delay();
                tracing::warn!(
                    worker = %shared.worker_id,
                    error = %err,
                    retry_in = ?delay,
                    "cannot register cron schedules; retrying"
                );
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = stop.changed() => {}
                }
            }
        }
    }
    backoff.reset();
    let mut next_sweep = Instant::now();
    let mut contended = LockedBackoff::default();
    loop {
        if shared.stopping() {
            break;
        }
        // Bounded like every call of the runtime's own: a connection that went silent
        // without closing must not stop the schedules for good.
        let round = shared.client.bounded(
            "firing cron schedules",
            round(&shared, &names, &mut next_sweep),
        );
        match round.await {
            Ok(Some(delay)) => {
                backoff.reset();
                // Zero means a due schedule is locked by another session: usually a worker
                // firing it right now (its commit advances the schedule within
                // milliseconds), but possibly an application transaction left open on the
                // row. Look again soon, then less and less often, never in a tight loop.
                let delay = if delay.is_zero() {
                    contended.next_delay()
                } else {
                    contended.reset();
                    delay
                };
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = shared.schedules_changed.notified() => {}
                    _ = stop.changed() => {}
                }
            }
            Ok(None) => {
                backoff.reset();
            }
            Err(err) => {
                let delay = backoff.next_delay();
                tracing::warn!(
                    worker = %shared.worker_id,
                    error = %err,
                    retry_in = ?delay,
                    "cron scheduling failed; backing off"
                );
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = stop.changed() => {}
                }
            }
        }
    }
    tracing::debug!(worker = %shared.worker_id, "scheduler stopped");
}

/// Fires what is due and returns how long to sleep (`None`: go again at once).
async fn round(
    shared: &Shared,
    names: &[String],
    next_sweep: &mut Instant,
) -> crate::Result<Option<Duration>> {
    if !names.is_empty() {
        let fired =
            cron::fire_due(&shared.client, &shared.registry, names, &shared.worker_id).await?;
        if fired.fired > 0 {
            // The occurrences are due now: start ours at once, and tell the other workers.
            shared.wake_producer();
            shared.client.announce_new_tasks();
        }
        if fired.locked as i64 == cron::BATCH {
            return Ok(None);
        }
    }
    if Instant::now() >= *next_sweep {
        cron::disable_orphans(&shared.client, names, &shared.worker_id).await?;
        *next_sweep = Instant::now() + ORPHAN_SWEEP_INTERVAL;
    }
    if names.is_empty() {
        return Ok(Some(ORPHAN_SWEEP_INTERVAL));
    }
    let delay = cron::next_due(&shared.client, names)
        .await?
        .unwrap_or(MAX_SLEEP)
        .min(MAX_SLEEP);
    Ok(Some(delay))
}
