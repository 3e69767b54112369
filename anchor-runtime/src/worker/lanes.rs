//! The queues a worker serves, each a *lane*: its task names, its own concurrency and
//! slots, and its own producer (`claim.rs`), so that a queue of slow tasks never takes the
//! slots of a queue of fast ones. And [`ProducerWake`], how whoever makes work due wakes
//! the lanes' producers.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use tokio::sync::Notify;

use super::WorkerConfig;
use crate::registry::Registry;

/// One queue this worker serves.
pub(crate) struct Lane {
    pub(crate) queue: String,
    /// The task names the worker has handlers for: every one, in every lane, so that a task
    /// an enqueue moved to this queue (`TaskOverride::queue`) runs here too.
    pub(crate) names: Vec<String>,
    /// How many of its tasks run at once.
    pub(crate) concurrency: usize,
    /// How many run now (slots taken, also by local dispatch reservations).
    pub(crate) executing: AtomicUsize,
    /// An execution of this lane ended, so one of its slots is free.
    pub(crate) slot_freed: Notify,
    /// The lane's producer's wake-up.
    wake: Notify,
    /// The lane's last claim found no more due tasks than it asked for, nothing waits in
    /// its buffer and no wake-up came since: a task enqueued now would be the next to run,
    /// so local dispatch may start it here (see `local.rs`).
    drained: AtomicBool,
    /// The queue was announced paused and no claim has found it running since. Only a
    /// hint: the claim itself reads the pause, so a missed notification delays nothing
    /// but the release of buffered tasks.
    pub(crate) paused: AtomicBool,
    /// Counts pause notices, so that a claim sent before one cannot clear it.
    pub(crate) pause_notices: AtomicU64,
}

impl Lane {
    fn new(queue: String, names: Vec<String>, concurrency: usize) -> Lane {
        Lane {
            queue,
            names,
            concurrency: concurrency.max(1),
            executing: AtomicUsize::new(0),
            slot_freed: Notify::new(),
            wake: Notify::new(),
            drained: AtomicBool::new(false),
            paused: AtomicBool::new(false),
            pause_notices: AtomicU64::new(0),
        }
    }

    /// Tells the lane's producer that new work may be due. Until it has looked, the queue
    /// does not count as drained, so local dispatch cannot put a task ahead of that work.
    pub(crate) fn wake(&self) {
        self.drained.store(false, Ordering::Release);
        self.wake.notify_one();
    }

    /// Returns at the next wake-up.
    pub(crate) async fn notified(&self) {
        self.wake.notified().await
    }

    /// Whether the queue counts as drained (see the field).
    pub(crate) fn drained(&self) -> bool {
        self.drained.load(Ordering::Acquire)
    }

    /// Set by the producer after each step of its loop.
    pub(crate) fn set_drained(&self, drained: bool) {
        self.drained.store(drained, Ordering::Release);
    }

    /// The base prefetch of this lane's claims (see [`WorkerConfig::prefetch`]).
    pub(crate) fn base_prefetch(&self, config: &WorkerConfig) -> usize {
        config
            .prefetch
            .unwrap_or_else(|| (self.concurrency * 4).min(500))
    }
}

/// The lanes of a worker, and the wake-up every service that makes work due holds: a
/// notification (for one queue, or for all), a rescue, a cron tick, a retry timer.
pub(crate) struct ProducerWake {
    lanes: Vec<Lane>,
    by_queue: HashMap<String, usize>,
}

impl ProducerWake {
    /// The lanes `config` gives for `registry`: every queue named by
    /// [`WorkerConfig::with_queue`], at its concurrency, and every other queue a task of the
    /// registry is defined in, at the default concurrency, unless
    /// [`WorkerConfig::with_other_queues`]`(false)` leaves those out. Each lane claims every
    /// task name of the registry (a worker runs only what it has handlers for).
    pub(crate) fn new(registry: &Registry, config: &WorkerConfig) -> ProducerWake {
        let names: Vec<String> = registry
            .task_names()
            .into_iter()
            .map(str::to_string)
            .collect();
        let mut queues: BTreeMap<String, usize> = config.queues.clone();
        if config.other_queues {
            for def in registry.definitions() {
                if registry.handler(def.name).is_some() {
                    queues
                        .entry(def.queue.to_string())
                        .or_insert(config.concurrency);
                }
            }
        }
        let lanes: Vec<Lane> = if names.is_empty() {
            Vec::new()
        } else {
            queues
                .into_iter()
                .map(|(queue, concurrency)| Lane::new(queue, names.clone(), concurrency))
                .collect()
        };
        let by_queue = lanes
            .iter()
            .enumerate()
            .map(|(i, lane)| (lane.queue.clone(), i))
            .collect();
        ProducerWake { lanes, by_queue }
    }

    pub(crate) fn lanes(&self) -> &[Lane] {
        &self.lanes
    }

    pub(crate) fn lane(&self, index: usize) -> &Lane {
        &self.lanes[index]
    }

    /// The lane serving `queue`, if this worker serves it.
    pub(crate) fn lane_of_queue(&self, queue: &str) -> Option<usize> {
        self.by_queue.get(queue).copied()
    }

    /// The lane that runs a task called `name` enqueued into `queue`: the lane of `queue`
    /// when this worker serves it and runs the name.
    pub(crate) fn lane_for(&self, queue: &str, name: &str) -> Option<usize> {
        self.lane_of_queue(queue)
            .filter(|&i| self.lanes[i].names.iter().any(|n| n == name))
    }

    /// Every task name the worker serves (each lane has them all; none without a lane).
    pub(crate) fn names(&self) -> Vec<String> {
        self.lanes
            .first()
            .map(|l| l.names.clone())
            .unwrap_or_default()
    }

    /// Wakes every lane.
    pub(crate) fn wake(&self) {
        for lane in &self.lanes {
            lane.wake();
        }
    }

    /// Wakes the lane of `queue`, or every lane when `queue` is empty (a notification
    /// from an older runtime or a hand-written `NOTIFY`).
    pub(crate) fn wake_queue(&self, queue: &str) {
        if queue.is_empty() {
            self.wake();
        } else if let Some(i) = self.lane_of_queue(queue) {
            self.lanes[i].wake();
        }
    }

    /// Marks `queue` paused or running (a notification from `Client::pause_queue` or
    /// `resume_queue`), and wakes its lane to act on it.
    pub(crate) fn set_paused(&self, queue: &str, paused: bool) {
        if let Some(i) = self.lane_of_queue(queue) {
            if paused {
                self.lanes[i].pause_notices.fetch_add(1, Ordering::AcqRel);
            }
            self.lanes[i].paused.store(paused, Ordering::Release);
            self.lanes[i].wake();
        }
    }

    /// How many tasks run now, in every lane.
    pub(crate) fn executing(&self) -> usize {
        self.lanes
            .iter()
            .map(|l| l.executing.load(Ordering::SeqCst))
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TaskDefinition;

    const fn def(name: &'static str, queue: &'static str) -> TaskDefinition {
        TaskDefinition {
            name,
            retry: None,
            timeout_ms: 1000,
            cron: None,
            on_failed: None,
            default_params: "{}",
            max_rescues: None,
            queue,
            priority: 0,
        }
    }

    static EMAIL: TaskDefinition = def("SendEmail", "emails");
    static DIGEST: TaskDefinition = def("Digest", "emails");
    static REPORT: TaskDefinition = def("Report", "reports");
    static CLEANUP: TaskDefinition = def("Cleanup", "default");

    fn registry() -> Registry {
        let mut registry = Registry::new();
        for d in [&EMAIL, &DIGEST, &REPORT, &CLEANUP] {
            registry.register(d, |_ctx: crate::TaskContext, _p: serde_json::Value| async {
                Ok::<(), crate::TaskError>(())
            });
        }
        registry
    }

    fn lanes(wake: &ProducerWake) -> Vec<(String, usize)> {
        wake.lanes()
            .iter()
            .map(|l| (l.queue.clone(), l.concurrency))
            .collect()
    }

    #[test]
    fn by_default_every_queue_of_the_registry_is_served_at_the_default_concurrency() {
        let wake = ProducerWake::new(&registry(), &WorkerConfig::default().with_concurrency(7));
        assert_eq!(
            lanes(&wake),
            vec![
                ("default".into(), 7),
                ("emails".into(), 7),
                ("reports".into(), 7)
            ]
        );
        // Every lane claims every name: a Digest moved to `reports` runs there.
        for lane in wake.lanes() {
            assert_eq!(lane.names, ["Cleanup", "Digest", "Report", "SendEmail"]);
        }
        assert_eq!(
            wake.lane_for("reports", "Digest"),
            wake.lane_of_queue("reports")
        );
        assert_eq!(wake.lane_for("reports", "Unknown"), None);
        assert_eq!(wake.lane_for("nowhere", "Digest"), None);
        // Definitions without handlers serve nothing.
        let mut defined = Registry::new();
        defined.define(&EMAIL);
        assert!(ProducerWake::new(&defined, &WorkerConfig::default())
            .lanes()
            .is_empty());
    }

    #[test]
    fn configured_queues_get_their_own_concurrency_and_can_be_the_only_ones() {
        let config = WorkerConfig::default()
            .with_queue("emails", 20)
            .with_queue("reports", 2)
            .with_queue("bulk", 3);
        let wake = ProducerWake::new(&registry(), &config);
        // `bulk` has no task defined in it: it serves the tasks enqueues move there.
        assert_eq!(
            lanes(&wake),
            vec![
                ("bulk".into(), 3),
                ("default".into(), 10),
                ("emails".into(), 20),
                ("reports".into(), 2)
            ]
        );
        let only = ProducerWake::new(&registry(), &config.with_other_queues(false));
        let served: Vec<String> = lanes(&only).into_iter().map(|(q, _)| q).collect();
        assert_eq!(served, ["bulk", "emails", "reports"]);
    }

    #[test]
    fn a_pause_notice_marks_only_its_queue() {
        let wake = ProducerWake::new(&registry(), &WorkerConfig::default());
        wake.set_paused("emails", true);
        let paused: Vec<&str> = wake
            .lanes()
            .iter()
            .filter(|l| l.paused.load(Ordering::Acquire))
            .map(|l| l.queue.as_str())
            .collect();
        assert_eq!(paused, vec!["emails"]);
        wake.set_paused("emails", false);
        assert!(wake
            .lanes()
            .iter()
            .all(|l| !l.paused.load(Ordering::Acquire)));
    }
}
