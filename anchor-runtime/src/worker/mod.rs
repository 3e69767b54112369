//! The worker: claims due tasks, runs them, records their outcomes, keeps their leases and
//! rescues the tasks of workers that died.
//!
//! A running worker is a handful of tokio tasks. The hot path shares one [`Shared`] state:
//! - the *producer* (`claim.rs`) claims batches up to free capacity and spawns executions;
//! - each *execution* (`execute.rs`) runs one task's handler under its timeout and hands
//!   the outcome to the completer;
//! - the *completer* (`complete.rs`) writes outcomes, many per statement.
//!
//! Around it run the background services, each a small type given its own settings and
//! only the handles it uses (the client, the lease table, the control connection, the
//! producer's wake-up), and all run by one loop with backoff (`service.rs`):
//! - the *renewer*, the *fencer* and the *start recorder* (`lease.rs`) extend this worker's
//!   leases, stop a run whose lease is about to expire unrenewed before a rescuer can hand
//!   the task to another worker, and record that runs started;
//! - the *rescuer* (`rescue.rs`) returns other workers' expired tasks to `pending`;
//! - the *heartbeat* and the *unregistered-name note* (`heartbeat.rs`), the cron
//!   *scheduler* (`scheduler.rs`) and the *pruner* (`prune.rs`, deleting finished tasks
//!   past their retention);
//! - the *listener* (`listen.rs`, its own reconnect loop) holds a dedicated LISTEN
//!   connection and wakes the producer; the same connection carries renewals, start
//!   records and heartbeats (`control.rs`).

mod claim;
mod complete;
mod control;
mod execute;
mod heartbeat;
mod lanes;
mod lease;
mod lease_table;
mod listen;
mod local;
mod on_failed;
mod prune;
mod rescue;
mod scheduler;
mod service;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch, Notify};
use tokio::task::JoinHandle;

use crate::client::Client;
use crate::registry::Registry;
use control::Control;
pub(crate) use lanes::ProducerWake;
use lease_table::LeaseTable;
use service::Stop;

/// How a worker runs. Build it from [`WorkerConfig::default`] and the `with_*` setters.
///
/// ```
/// use std::time::Duration;
/// let config = anchor_runtime::WorkerConfig::default()
///     .with_concurrency(20)
///     .with_poll_interval(Duration::from_millis(500));
/// assert_eq!(config.concurrency(), 20);
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct WorkerConfig {
    /// How many tasks of one queue run at once, for each queue without a concurrency of
    /// its own (default 10).
    pub(crate) concurrency: usize,
    /// The queues given their own concurrency ([`WorkerConfig::with_queue`]).
    pub(crate) queues: std::collections::BTreeMap<String, usize>,
    /// Whether the registry's queues not named by `with_queue` are served too (default
    /// true).
    pub(crate) other_queues: bool,
    /// How many claimed tasks may wait locally for a free slot, beyond `concurrency`
    /// (default: 4 × concurrency, growing up to 500 while a backlog of short tasks drains
    /// fast, and back as soon as tasks drain slowly; a value set here is kept fixed).
    /// Larger batches mean fewer round trips for short tasks; a task that waits over a
    /// second behind busy slots is handed back.
    pub(crate) prefetch: Option<usize>,
    /// How often to look for due tasks when no notification arrives (default 1 s).
    pub(crate) poll_interval: Duration,
    /// How long a claim holds a task without renewal (default 30 s). A worker that dies is
    /// noticed this long after its last renewal.
    pub(crate) lease_duration: Duration,
    /// How often leases are renewed (default: a third of the lease). It must be shorter than
    /// the lease minus the fence margin (a tenth of the lease, at least 200 ms), or a lease
    /// would lapse between two renewals and every run would be stopped:
    /// [`Worker::new`] refuses such a configuration.
    pub(crate) lease_renew_interval: Option<Duration>,
    /// How often expired leases are looked for (default: half the lease, with jitter).
    pub(crate) rescue_interval: Option<Duration>,
    /// How long shutdown waits for running tasks before releasing them (default 30 s).
    pub(crate) shutdown_grace: Duration,
    /// Do not run at all: [`Worker::start`] returns a handle that does nothing. For
    /// processes that only enqueue.
    pub(crate) disable: bool,
    /// This worker's name in `lease_owner` (default: host name, process id and a random
    /// suffix).
    pub(crate) worker_id: Option<String>,
    /// How long finished tasks are kept before this worker prunes them (default: completed
    /// and cancelled 7 days, failed 30 days; see [`RetentionConfig`](crate::RetentionConfig)).
    pub(crate) retention: crate::RetentionConfig,
    /// How often this worker records in the `workers` table that it is alive and which task
    /// names it runs (default 5 s). A worker not seen for three intervals counts as gone.
    pub(crate) heartbeat_interval: Duration,
    /// How long a task may be due with a name no live worker has registered before that is
    /// noted in its error history (default 60 s). The task stays `pending`.
    pub(crate) unregistered_grace: Duration,
    /// Whether a due task enqueued through this worker's [`Client`] (outside a transaction)
    /// while the worker is idle is inserted already leased to it and started at once, instead
    /// of being inserted `pending`, announced and claimed (default true). It saves the claim's
    /// round trip and disk flush. Off, every task goes through the claim.
    pub(crate) local_dispatch: bool,
    /// The bound on lost-worker rescues for tasks whose definition sets no `maxRescues`
    /// (default 5). Every rescue counts in `rescues`; a task fails as poison when its worker
    /// is lost while its run had started and that loss brings `rescues` to this bound. A
    /// loss before the run started never fails the task.
    pub(crate) max_rescues: u32,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            concurrency: 10,
            queues: std::collections::BTreeMap::new(),
            other_queues: true,
            prefetch: None,
            poll_interval: Duration::from_secs(1),
            lease_duration: Duration::from_secs(30),
            lease_renew_interval: None,
            rescue_interval: None,
            shutdown_grace: Duration::from_secs(30),
            disable: false,
            worker_id: None,
            retention: crate::RetentionConfig::default(),
            heartbeat_interval: Duration::from_secs(5),
            unregistered_grace: Duration::from_secs(60),
            local_dispatch: true,
            max_rescues: DEFAULT_MAX_RESCUES,
        }
    }
}

/// What each setting is; every one is set with its `with_*` method.
impl WorkerConfig {
    /// How many tasks of one queue run at once, for every queue without a concurrency of
    /// its own (default 10). Each queue has its own slots: a queue of slow tasks never
    /// takes the slots of another.
    pub fn concurrency(&self) -> usize {
        self.concurrency
    }

    /// The queues given their own concurrency with [`WorkerConfig::with_queue`].
    pub fn queues(&self) -> &std::collections::BTreeMap<String, usize> {
        &self.queues
    }

    /// Whether the worker also serves the queues of its registry that
    /// [`WorkerConfig::with_queue`] does not name, at [`WorkerConfig::concurrency()`] each
    /// (default true). A worker serves only queues its registry has tasks for.
    pub fn other_queues(&self) -> bool {
        self.other_queues
    }

    /// How many claimed tasks may wait locally for a free slot, beyond `concurrency`
    /// (default: 4 × concurrency, growing up to 500 while a backlog of short tasks drains
    /// fast, and back as soon as tasks drain slowly; a value set here is kept fixed).
    /// Larger batches mean fewer round trips for short tasks; a task that waits over a
    /// second behind busy slots is handed back.
    pub fn prefetch(&self) -> Option<usize> {
        self.prefetch
    }

    /// How often to look for due tasks when no notification arrives (default 1 s).
    pub fn poll_interval(&self) -> Duration {
        self.poll_interval
    }

    /// How long a claim holds a task without renewal (default 30 s). A worker that dies is
    /// noticed this long after its last renewal.
    pub fn lease_duration(&self) -> Duration {
        self.lease_duration
    }

    /// How often leases are renewed (default: a third of the lease). It must be shorter than
    /// the lease minus the fence margin (a tenth of the lease, at least 200 ms), or a lease
    /// would lapse between two renewals and every run would be stopped:
    /// [`Worker::new`] refuses such a configuration.
    pub fn lease_renew_interval(&self) -> Option<Duration> {
        self.lease_renew_interval
    }

    /// How often expired leases are looked for (default: half the lease, with jitter).
    pub fn rescue_interval(&self) -> Option<Duration> {
        self.rescue_interval
    }

    /// How long shutdown waits for running tasks before releasing them (default 30 s).
    pub fn shutdown_grace(&self) -> Duration {
        self.shutdown_grace
    }

    /// Do not run at all: [`Worker::start`] returns a handle that does nothing. For
    /// processes that only enqueue.
    pub fn is_disabled(&self) -> bool {
        self.disable
    }

    /// This worker's name in `lease_owner` (default: host name, process id and a random
    /// suffix).
    pub fn worker_id(&self) -> Option<&str> {
        self.worker_id.as_deref()
    }

    /// How long finished tasks are kept before this worker prunes them (default: completed
    /// and cancelled 7 days, failed 30 days; see [`RetentionConfig`](crate::RetentionConfig)).
    pub fn retention(&self) -> &crate::RetentionConfig {
        &self.retention
    }

    /// How often this worker records in the `workers` table that it is alive and which task
    /// names it runs (default 5 s). A worker not seen for three intervals counts as gone.
    pub fn heartbeat_interval(&self) -> Duration {
        self.heartbeat_interval
    }

    /// How long a task may be due with a name no live worker has registered before that is
    /// noted in its error history (default 60 s). The task stays `pending`.
    pub fn unregistered_grace(&self) -> Duration {
        self.unregistered_grace
    }

    /// Whether a due task enqueued through this worker's [`Client`] (outside a transaction)
    /// while the worker is idle is inserted already leased to it and started at once, instead
    /// of being inserted `pending`, announced and claimed (default true). It saves the claim's
    /// round trip and disk flush. Off, every task goes through the claim.
    pub fn local_dispatch(&self) -> bool {
        self.local_dispatch
    }

    /// The bound on lost-worker rescues for tasks whose definition sets no `maxRescues`
    /// (default 5). Every rescue counts in `rescues`; a task fails as poison when its worker
    /// is lost while its run had started and that loss brings `rescues` to this bound. A
    /// loss before the run started never fails the task.
    pub fn max_rescues(&self) -> u32 {
        self.max_rescues
    }
}

/// The default of [`WorkerConfig::max_rescues()`].
pub const DEFAULT_MAX_RESCUES: u32 = 5;

impl WorkerConfig {
    /// Sets [`WorkerConfig::concurrency()`].
    pub fn with_concurrency(mut self, concurrency: usize) -> Self {
        self.concurrency = concurrency;
        self
    }

    /// Serves `queue` with `concurrency` slots of its own (at least 1), e.g.
    /// `.with_queue("emails", 20).with_queue("reports", 2)`.
    ///
    /// ```
    /// let config = anchor_runtime::WorkerConfig::default()
    ///     .with_queue("emails", 20)
    ///     .with_queue("reports", 2)
    ///     .with_other_queues(false);
    /// assert_eq!(config.queues().get("reports"), Some(&2));
    /// ```
    pub fn with_queue(mut self, queue: impl Into<String>, concurrency: usize) -> Self {
        self.queues.insert(queue.into(), concurrency.max(1));
        self
    }

    /// Sets [`WorkerConfig::other_queues()`]: `false` serves only the queues named by
    /// [`WorkerConfig::with_queue`].
    pub fn with_other_queues(mut self, serve: bool) -> Self {
        self.other_queues = serve;
        self
    }
    /// Sets [`WorkerConfig::max_rescues()`] (at least 1).
    pub fn with_max_rescues(mut self, max_rescues: u32) -> Self {
        self.max_rescues = max_rescues;
        self
    }
    /// Sets [`WorkerConfig::prefetch()`](0 claims only what
    /// free slots can start at once).
    pub fn with_prefetch(mut self, prefetch: usize) -> Self {
        self.prefetch = Some(prefetch);
        self
    }
    /// Sets [`WorkerConfig::poll_interval()`].
    pub fn with_poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval;
        self
    }
    /// Sets [`WorkerConfig::lease_duration()`].
    pub fn with_lease_duration(mut self, lease: Duration) -> Self {
        self.lease_duration = lease;
        self
    }
    /// Sets [`WorkerConfig::lease_renew_interval()`].
    pub fn with_lease_renew_interval(mut self, interval: Duration) -> Self {
        self.lease_renew_interval = Some(interval);
        self
    }
    /// Sets [`WorkerConfig::rescue_interval()`].
    pub fn with_rescue_interval(mut self, interval: Duration) -> Self {
        self.rescue_interval = Some(interval);
        self
    }
    /// Sets [`WorkerConfig::shutdown_grace()`].
    pub fn with_shutdown_grace(mut self, grace: Duration) -> Self {
        self.shutdown_grace = grace;
        self
    }
    /// Sets [`WorkerConfig::is_disabled()`].
    pub fn with_disable(mut self, disable: bool) -> Self {
        self.disable = disable;
        self
    }
    /// Sets [`WorkerConfig::worker_id()`].
    pub fn with_worker_id(mut self, id: impl Into<String>) -> Self {
        self.worker_id = Some(id.into());
        self
    }

    /// Sets [`WorkerConfig::retention()`].
    pub fn with_retention(mut self, retention: crate::RetentionConfig) -> Self {
        self.retention = retention;
        self
    }

    /// Sets [`WorkerConfig::heartbeat_interval()`].
    pub fn with_heartbeat_interval(mut self, interval: Duration) -> Self {
        self.heartbeat_interval = interval;
        self
    }

    /// Sets [`WorkerConfig::unregistered_grace()`].
    pub fn with_unregistered_grace(mut self, grace: Duration) -> Self {
        self.unregistered_grace = grace;
        self
    }

    /// Sets [`WorkerConfig::local_dispatch()`].
    pub fn with_local_dispatch(mut self, local_dispatch: bool) -> Self {
        self.local_dispatch = local_dispatch;
        self
    }

    /// Replaces values no worker can run with (zero concurrency, zero intervals) by the
    /// nearest workable ones.
    fn normalised(mut self) -> Self {
        self.concurrency = self.concurrency.max(1);
        self.poll_interval = self.poll_interval.max(Duration::from_millis(10));
        self.lease_duration = self.lease_duration.max(Duration::from_millis(100));
        self.heartbeat_interval = self.heartbeat_interval.max(Duration::from_millis(10));
        self.max_rescues = self.max_rescues.max(1);
        self
    }

    /// Refuses settings that cannot work at all, naming the setting and the fix.
    fn check(&self) -> crate::Result<()> {
        for queue in self.queues.keys() {
            if let Some(problem) = anchor_core::queue_name_problem(queue) {
                return Err(crate::Error::new(
                    crate::ErrorKind::Config,
                    format!(
                        "worker configuration: with_queue(\"{}\", …) names no possible queue: \
                         {problem}; {}",
                        queue.escape_debug(),
                        anchor_core::QUEUE_NAME_RULE
                    ),
                ));
            }
        }
        if let Some(renew) = self.lease_renew_interval {
            let lease = self.lease_duration;
            let usable = lease.saturating_sub(self.fence_margin());
            if renew >= usable {
                return Err(crate::Error::new(
                    crate::ErrorKind::Config,
                    format!(
                        "worker configuration: lease_renew_interval ({renew:?}) must be shorter \
                         than lease_duration ({lease:?}) minus the fence margin ({margin:?}), \
                         or every lease lapses between two renewals and its run is stopped; \
                         shorten lease_renew_interval, lengthen lease_duration, or leave \
                         lease_renew_interval unset (a third of the lease)",
                        margin = self.fence_margin(),
                    ),
                ));
            }
        }
        Ok(())
    }

    fn effective_renew_interval(&self) -> Duration {
        self.lease_renew_interval
            .unwrap_or(self.lease_duration / 3)
            .max(Duration::from_millis(10))
    }

    fn effective_rescue_interval(&self) -> Duration {
        self.rescue_interval
            .unwrap_or(self.lease_duration / 2)
            .max(Duration::from_millis(10))
    }

    /// How long before its lease could expire a run is stopped when the lease has not been
    /// renewed: a tenth of the lease, at least 200 ms (clock skew between the database and
    /// this process, scheduling delays), at most half the lease.
    fn fence_margin(&self) -> Duration {
        (self.lease_duration / 10)
            .max(Duration::from_millis(200))
            .min(self.lease_duration / 2)
    }
}

/// State shared by the worker's hot path: the producer, the executions, the completer and
/// local dispatch. The background services get only the parts they use (see `service.rs`).
pub(crate) struct Shared {
    client: Client,
    registry: Registry,
    config: WorkerConfig,
    worker_id: String,
    /// Every task name the worker serves, in all its queues.
    names: Vec<String>,
    /// The queues served (each with its own slots and producer), and their wake-ups; shared
    /// with the services that make work due (the rescuer, the scheduler, the listener).
    producer: Arc<ProducerWake>,
    /// An execution ended, in any lane (shutdown waits on it).
    slot_freed: Notify,
    /// The leases this worker holds.
    leases: Arc<LeaseTable>,
    /// The listener's connection while it is up, else the pool (see `control.rs`): here
    /// for the start record an execution writes before it runs; the renewer, the start
    /// recorder, the heartbeat and the listener hold it too.
    control: Arc<Control>,
    stop: watch::Sender<bool>,
    completer: mpsc::Sender<complete::Message>,
    /// Metric handles per task name and queue.
    metrics: crate::observe::HandleCache,
}

impl Shared {
    fn new(
        client: Client,
        registry: Registry,
        config: WorkerConfig,
        worker_id: String,
        stop: watch::Sender<bool>,
        completer: mpsc::Sender<complete::Message>,
    ) -> Arc<Shared> {
        let leases = Arc::new(LeaseTable::new(
            config.lease_duration,
            config.fence_margin(),
        ));
        let control = Arc::new(Control::new(
            client.clone(),
            Control::timeout_for(config.lease_duration),
            &worker_id,
        ));
        let producer = Arc::new(ProducerWake::new(&registry, &config));
        Arc::new(Shared {
            client,
            registry,
            config,
            worker_id,
            names: producer.names(),
            producer,
            slot_freed: Notify::new(),
            leases,
            control,
            stop,
            completer,
            metrics: crate::observe::HandleCache::default(),
        })
    }

    fn lease_ms(&self) -> i64 {
        self.leases.lease_ms()
    }

    /// Tells the producer that new work may be due (see [`ProducerWake::wake`]).
    pub(crate) fn wake_producer(&self) {
        self.producer.wake();
    }

    fn stopping(&self) -> bool {
        *self.stop.borrow()
    }
}

/// A worker: runs the tasks of a [`Registry`] from the database behind a [`Client`].
///
/// ```no_run
/// # async fn demo(client: anchor_runtime::Client, registry: anchor_runtime::Registry)
/// # -> anchor_runtime::Result<()> {
/// use anchor_runtime::{Worker, WorkerConfig};
/// let handle = Worker::new(client, registry, WorkerConfig::default())?.start();
/// // ... serve requests ...
/// handle.shutdown().await;
/// # Ok(())
/// # }
/// ```
pub struct Worker {
    client: Client,
    registry: Registry,
    config: WorkerConfig,
}

impl Worker {
    /// Prepares a worker; nothing runs until [`Worker::start`].
    ///
    /// Zero concurrency or intervals are raised to the nearest workable values. A
    /// configuration no worker can run with (a [`lease_renew_interval`] too long for its
    /// lease) is an error of kind [`Config`](crate::ErrorKind::Config) that names the
    /// setting.
    ///
    /// [`lease_renew_interval`]: WorkerConfig::lease_renew_interval
    pub fn new(client: Client, registry: Registry, config: WorkerConfig) -> crate::Result<Worker> {
        let config = config.normalised();
        config.check()?;
        if !client.statement_cache() {
            return Err(crate::Error::new(
                crate::ErrorKind::Config,
                "this client's connections go through a transaction-mode pooler (statement \
                 cache off): a worker needs a direct or session-pooled connection for LISTEN \
                 and its prepared statements; build the worker's Client from the database's \
                 direct URL (enqueueing clients may keep the pooler's)",
            ));
        }
        Ok(Worker {
            client,
            registry,
            config,
        })
    }

    /// Starts the worker on the current tokio runtime and returns at once. Dropping the
    /// handle leaves the worker running; call [`WorkerHandle::shutdown`] to stop it.
    pub fn start(self) -> WorkerHandle {
        crate::observe::describe_metrics();
        let worker_id = self
            .config
            .worker_id
            .clone()
            .unwrap_or_else(default_worker_id);
        let (stop, _) = watch::channel(false);
        let (completer_tx, completer_rx) = mpsc::channel(complete::CHANNEL_CAPACITY);
        let shared = Shared::new(
            self.client,
            self.registry,
            self.config,
            worker_id,
            stop,
            completer_tx,
        );
        if shared.config.disable {
            tracing::info!(worker = %shared.worker_id, "worker disabled by configuration");
            return WorkerHandle {
                shared,
                producers: None,
                renewer: None,
                background: Vec::new(),
            };
        }
        let queues: Vec<String> = shared
            .producer
            .lanes()
            .iter()
            .map(|lane| format!("{}={}", lane.queue, lane.concurrency))
            .collect();
        tracing::info!(
            worker = %shared.worker_id,
            tasks = ?shared.names,
            queues = ?queues,
            "worker starting"
        );
        let (renewer, background) = spawn_services(&shared, completer_rx);
        let producers = (0..shared.producer.lanes().len())
            .map(|lane| tokio::spawn(claim::run_producer(shared.clone(), lane)))
            .collect();
        if shared.config.local_dispatch {
            let weak = Arc::downgrade(&shared);
            shared.client.register_local_worker(weak);
        }
        WorkerHandle {
            shared,
            producers: Some(producers),
            renewer: Some(renewer),
            background,
        }
    }

    /// Runs the worker until SIGINT or SIGTERM, then shuts it down gracefully.
    pub async fn run_until_signal(self) {
        let handle = self.start();
        wait_for_signal().await;
        tracing::info!(worker = %handle.worker_id(), "shutdown signal received");
        handle.shutdown().await;
    }
}

/// Builds the worker's background services, each with its own settings from the
/// configuration and only the handles it uses, and spawns them. Returns the renewer apart
/// (shutdown keeps it going while runs that ignored the abort go on) and the others.
///
/// Only the scheduler watches the stop signal, like the producer: no new occurrences once
/// shutdown begins. The others run until shutdown aborts them, at its end: the leases, the
/// start records and the heartbeat must go on while running tasks finish in the grace
/// period.
fn spawn_services(
    shared: &Arc<Shared>,
    completer: mpsc::Receiver<complete::Message>,
) -> (JoinHandle<()>, Vec<JoinHandle<()>>) {
    let config = &shared.config;
    let client = &shared.client;
    let id = shared.worker_id.as_str();
    let leases = &shared.leases;
    let control = &shared.control;
    let producer = &shared.producer;
    // Schedule changes arrive on the LISTEN connection: the listener tells the scheduler.
    let schedules_changed = Arc::new(Notify::new());

    let renewer = lease::Renewer::new(
        client.clone(),
        leases.clone(),
        control.clone(),
        config.effective_renew_interval(),
    );
    let fencer = lease::Fencer::new(leases.clone(), config.fence_margin(), id);
    let start_recorder = lease::StartRecorder::new(client.clone(), leases.clone(), control.clone());
    let rescuer = rescue::Rescuer::new(
        client.clone(),
        shared.registry.clone(),
        config.max_rescues,
        config.effective_rescue_interval(),
        producer.clone(),
    );
    let note = heartbeat::UnregisteredNote::new(
        client.clone(),
        shared.names.clone(),
        config.heartbeat_interval,
        config.unregistered_grace,
        config.effective_rescue_interval(),
    );
    let heartbeat = heartbeat::Heartbeat::new(
        client.clone(),
        control.clone(),
        id,
        shared.names.clone(),
        shared.registry.definitions().collect(),
        config.heartbeat_interval,
    );
    let listener = listen::Listener::new(
        client.clone(),
        control.clone(),
        producer.clone(),
        schedules_changed.clone(),
        leases.clone(),
        id,
    );
    let scheduler = scheduler::Scheduler::new(
        client.clone(),
        shared.registry.clone(),
        &shared.names,
        id,
        producer.clone(),
        schedules_changed,
    );
    let pruner = prune::Pruner::new(client.clone(), config.retention.clone(), id);

    let renewer = service::spawn(renewer, id, Stop::never());
    let mut background = vec![
        tokio::spawn(complete::run_completer(shared.clone(), completer)),
        service::spawn(start_recorder, id, Stop::never()),
        service::spawn(rescuer, id, Stop::never()),
        service::spawn(note, id, Stop::never()),
        service::spawn(fencer, id, Stop::never()),
        service::spawn(heartbeat, id, Stop::never()),
        tokio::spawn(listener.run()),
        service::spawn(scheduler, id, Stop::on(shared.stop.subscribe())),
    ];
    // None when retention prunes nothing.
    background.extend(pruner.map(|pruner| service::spawn(pruner, id, Stop::never())));
    (renewer, background)
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(err) => {
                tracing::warn!(error = %err, "cannot listen for SIGTERM; waiting for SIGINT only");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Controls a started worker.
pub struct WorkerHandle {
    shared: Arc<Shared>,
    /// One producer per queue served; `None` for a disabled worker.
    producers: Option<Vec<JoinHandle<()>>>,
    /// Kept apart from the other background tasks: after shutdown it goes on renewing the
    /// leases of runs that ignored the abort, until they end.
    renewer: Option<JoinHandle<()>>,
    background: Vec<JoinHandle<()>>,
}

impl WorkerHandle {
    /// This worker's id, as written to `lease_owner`.
    pub fn worker_id(&self) -> &str {
        &self.shared.worker_id
    }

    /// How many tasks are running now.
    pub fn running(&self) -> usize {
        self.shared.producer.executing()
    }

    /// Stops gracefully: no new claims, running tasks get up to the shutdown grace to
    /// finish, their outcomes are written, and whatever still runs is then stopped and
    /// released (back to `pending`, keeping its place in the queue) for another worker to
    /// take at once. A run that does not stop when told (a handler blocked in synchronous
    /// code never reaches an `.await`) is not released while it goes on: its lease is
    /// renewed until it ends, then the task is released, so no other worker starts a second
    /// copy of it meanwhile. If the process exits first, the lease expires and the task is
    /// rescued.
    pub async fn shutdown(mut self) {
        let shared = self.shared.clone();
        shared.stop.send_replace(true);
        if let Some(producers) = self.producers.take() {
            for producer in producers {
                let _ = producer.await;
            }
        } else {
            return;
        }
        let deadline = tokio::time::Instant::now() + shared.config.shutdown_grace;
        loop {
            let freed = shared.slot_freed.notified();
            if shared.producer.executing() == 0 {
                break;
            }
            if tokio::time::timeout_at(deadline, freed).await.is_err() {
                break;
            }
        }
        let left = shared.producer.executing();
        if left > 0 {
            tracing::warn!(
                worker = %shared.worker_id,
                tasks = left,
                "shutdown grace expired; stopping and releasing the tasks still running"
            );
            shared.leases.abort_runs();
            // An aborted run ends the next time the runtime gets to it; one blocked in
            // synchronous code does not, and is kept (see `lease::release_ended`).
            let stopped_by = tokio::time::Instant::now() + Duration::from_secs(1);
            while tokio::time::Instant::now() < stopped_by && shared.leases.runs_going() > 0 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        // Write every outcome that is queued, then hand back what never finished.
        let (ack_tx, ack_rx) = oneshot::channel();
        if shared
            .completer
            .send(complete::Message::Flush(ack_tx))
            .await
            .is_ok()
        {
            let flush_wait = shared.config.shutdown_grace.max(Duration::from_secs(5));
            if tokio::time::timeout(flush_wait, ack_rx).await.is_err() {
                tracing::warn!(worker = %shared.worker_id, "timed out writing the last outcomes");
            }
        }
        let still_running = lease::release_ended(&shared).await;
        for task in self.background.drain(..) {
            task.abort();
        }
        let renewer = self.renewer.take();
        if still_running.is_empty() {
            if let Some(renewer) = renewer {
                renewer.abort();
            }
        } else {
            tracing::warn!(
                worker = %shared.worker_id,
                tasks = still_running.len(),
                "runs did not stop when told (blocked in synchronous code?); their leases are \
                 kept until they end"
            );
            let shared = shared.clone();
            tokio::spawn(async move {
                while !lease::release_ended(&shared).await.is_empty() {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                if let Some(renewer) = renewer {
                    renewer.abort();
                }
            });
        }
        // After the heartbeat was aborted with the other services, so that it cannot write the
        // row again.
        heartbeat::remove(&shared.client, &shared.worker_id).await;
        tracing::info!(worker = %shared.worker_id, "worker stopped");
    }

    /// Stops at once without writing outcomes or releasing leases, as if the process had
    /// died: the tasks it held return to other workers when their leases expire. For tests
    /// and for emergencies.
    pub fn abort(mut self) {
        self.shared.stop.send_replace(true);
        for producer in self.producers.take().into_iter().flatten() {
            producer.abort();
        }
        for task in self.background.drain(..).chain(self.renewer.take()) {
            task.abort();
        }
        self.shared.leases.abort_runs();
    }
}

fn default_worker_id() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_string())
                .filter(|h| !h.is_empty())
        })
        .unwrap_or_else(|| "worker".to_string());
    format!(
        "{host}-{}-{:08x}",
        std::process::id(),
        rand::random::<u32>()
    )
}

/// Exponential backoff with jitter for database outages: 100 ms doubling to 5 s.
pub(crate) struct Backoff {
    next: Duration,
}

impl Backoff {
    const FIRST: Duration = Duration::from_millis(100);
    const MAX: Duration = Duration::from_secs(5);

    pub(crate) fn new() -> Backoff {
        Backoff { next: Self::FIRST }
    }

    pub(crate) fn reset(&mut self) {
        self.next = Self::FIRST;
    }

    /// The next wait, between half and all of the current step.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let step = self.next;
        self.next = (self.next * 2).min(Self::MAX);
        let half = step / 2;
        half + half.mul_f64(rand::random::<f64>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A worker's shared state on a client whose pool never connects (nothing here
    /// touches the database).
    async fn shared() -> Arc<Shared> {
        let client = Client::connect_with_pool_size("postgres://nobody@127.0.0.1:1/none", 1)
            .await
            .expect("a lazily connecting pool");
        let (stop, _) = watch::channel(false);
        let (completer, _) = mpsc::channel(1);
        Shared::new(
            client,
            Registry::new(),
            WorkerConfig::default(),
            "test".to_string(),
            stop,
            completer,
        )
    }

    #[tokio::test]
    async fn a_renew_interval_that_lets_the_lease_lapse_is_a_configuration_error() {
        let client = shared().await.client.clone();
        let lease = WorkerConfig::default().with_lease_duration(Duration::from_secs(30));
        // The fence margin of a 30 s lease is 3 s: renewals must come within 27 s.
        for renew in [30, 45, 27] {
            let config = lease
                .clone()
                .with_lease_renew_interval(Duration::from_secs(renew));
            let err = Worker::new(client.clone(), Registry::new(), config)
                .err()
                .unwrap_or_else(|| panic!("renewing every {renew} s of a 30 s lease"));
            assert_eq!(err.kind(), crate::ErrorKind::Config);
            let text = err.to_string();
            assert!(
                text.contains("lease_renew_interval") && text.contains("lease_duration"),
                "{text}"
            );
        }
        for config in [
            lease
                .clone()
                .with_lease_renew_interval(Duration::from_secs(26)),
            lease.clone(),
            // The default renewal (a third) fits any lease, however short.
            WorkerConfig::default().with_lease_duration(Duration::ZERO),
        ] {
            assert!(Worker::new(client.clone(), Registry::new(), config).is_ok());
        }
    }

    #[tokio::test]
    async fn a_queue_name_that_cannot_exist_is_a_configuration_error() {
        let client = shared().await.client.clone();
        let config = WorkerConfig::default().with_queue("Reports", 2);
        let err = Worker::new(client, Registry::new(), config)
            .err()
            .expect("an upper-case queue name");
        assert_eq!(err.kind(), crate::ErrorKind::Config);
        assert!(err.to_string().contains("with_queue(\"Reports\""), "{err}");
    }
}
