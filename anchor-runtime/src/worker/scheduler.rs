//! The scheduler: every worker runs one. It registers the `default` schedules of the cron
//! tasks this worker runs, then fires due ticks (`crate::cron::fire_due`: lock, insert one
//! occurrence, advance, commit) and sleeps until the earliest next tick by the database's
//! clock — woken early by a schedule-change notification — so a seconds schedule fires
//! within milliseconds of its tick without polling. Workers need no leader: the row lock on
//! each due schedule decides which one fires a tick.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use super::service::{Next, Pace, Service};
use super::ProducerWake;
use crate::client::Client;
use crate::cron;
use crate::registry::Registry;

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

/// The cron scheduler of a worker: registers the `default` schedules of its cron tasks
/// (until that succeeds nothing of ours could fire correctly anyway), then fires due ticks
/// and sleeps until the next, woken early when schedules change.
pub(crate) struct Scheduler {
    client: Client,
    registry: Registry,
    /// The cron tasks this worker has handlers for: only their schedules fire here.
    names: Vec<String>,
    worker_id: String,
    /// Occurrences fired are due at once.
    producer: Arc<ProducerWake>,
    /// Notified (by the listener) when a schedule changed.
    schedules_changed: Arc<Notify>,
    /// Whether the `default` schedules are registered.
    registered: bool,
    /// When schedules that no live worker fires are looked for next.
    next_sweep: Instant,
    contended: LockedBackoff,
}

impl Scheduler {
    /// The scheduler of a worker running `names`.
    pub(crate) fn new(
        client: Client,
        registry: Registry,
        names: &[String],
        worker_id: &str,
        producer: Arc<ProducerWake>,
        schedules_changed: Arc<Notify>,
    ) -> Scheduler {
        // Only schedules of cron tasks this worker has handlers for fire here; a task that
        // lost its `cronjob` in tasks.yaml no longer fires, even with a schedule left in the
        // table.
        let names = names
            .iter()
            .filter(|name| {
                registry
                    .definition(name)
                    .is_some_and(|def| def.cron.is_some())
            })
            .cloned()
            .collect();
        Scheduler {
            client,
            registry,
            names,
            worker_id: worker_id.to_string(),
            producer,
            schedules_changed,
            registered: false,
            next_sweep: Instant::now(),
            contended: LockedBackoff::default(),
        }
    }

    /// Fires what is due and returns how long to sleep (`None`: go again at once).
    async fn fire(&mut self) -> crate::Result<Option<Duration>> {
        let (client, names) = (&self.client, &self.names);
        if !names.is_empty() {
            let fired = cron::fire_due(client, &self.registry, names, &self.worker_id).await?;
            if fired.fired > 0 {
                // The occurrences are due now: start ours at once, and tell the other
                // workers.
                self.producer.wake();
                client.announce_new_tasks();
            }
            if fired.locked as i64 == cron::BATCH {
                return Ok(None);
            }
        }
        if Instant::now() >= self.next_sweep {
            cron::disable_orphans(client, names, &self.worker_id).await?;
            self.next_sweep = Instant::now() + ORPHAN_SWEEP_INTERVAL;
        }
        if names.is_empty() {
            return Ok(Some(ORPHAN_SWEEP_INTERVAL));
        }
        let delay = cron::next_due(client, names)
            .await?
            .unwrap_or(MAX_SLEEP)
            .min(MAX_SLEEP);
        Ok(Some(delay))
    }
}

impl Service for Scheduler {
    const NAME: &'static str = "scheduler";

    fn pace(&self) -> Pace {
        // Every round says how long to sleep; the interval only bounds the backoff.
        Pace::every(MAX_SLEEP).woken_by(self.schedules_changed.clone())
    }

    async fn round(&mut self) -> crate::Result<Next> {
        let client = self.client.clone();
        if !self.registered {
            let registered =
                cron::register_at_start(&client, &self.registry, &self.names, &self.worker_id);
            client
                .bounded("registering cron schedules", registered)
                .await?;
            self.registered = true;
            return Ok(Next::Now);
        }
        // Bounded like every call of the runtime's own: a connection that went silent
        // without closing must not stop the schedules for good.
        let next = match client.bounded("firing cron schedules", self.fire()).await? {
            None => Next::Now,
            // A due schedule is locked by another session: usually a worker firing it
            // right now (its commit advances the schedule within milliseconds), but
            // possibly an application transaction left open on the row. Look again soon,
            // then less and less often, never in a tight loop.
            Some(delay) if delay.is_zero() => Next::After(self.contended.next_delay()),
            Some(delay) => {
                self.contended.reset();
                Next::After(delay)
            }
        };
        Ok(next)
    }

    fn failure(&self) -> &'static str {
        if self.registered {
            "cron scheduling failed; backing off"
        } else {
            "cannot register cron schedules; retrying"
        }
    }
}
