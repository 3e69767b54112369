//! Metrics of enqueues and runs, through the [`metrics`] facade: the application installs
//! the recorder (a Prometheus exporter, StatsD, OpenTelemetry) and anchor reports to it.
//! Without a recorder every call here does nothing.
//!
//! Names and labels are listed in `docs/observability.md`; every metric carries the labels
//! `task` (the task name) and `queue`. Workers look up the handles of a (task, queue) pair
//! once (`HandleCache`) so that a run costs a few atomic operations, not a label lookup
//! per metric; the handles are bound to the recorder installed when the worker first sees
//! the pair, so install the recorder before starting workers.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use metrics::{Counter, Gauge, Histogram, Label, Unit};

/// Tasks inserted (enqueues that found a unique tag taken insert nothing and count nothing).
pub const ENQUEUED: &str = "anchor_tasks_enqueued_total";
/// Runs started.
pub const STARTED: &str = "anchor_tasks_started_total";
/// Runs that succeeded (the task is `completed`).
pub const SUCCEEDED: &str = "anchor_tasks_succeeded_total";
/// Runs that failed with a retry left (the task is `pending` again, the failure counted).
pub const RETRIED: &str = "anchor_tasks_retried_total";
/// Runs that asked to be retried later without counting a failure (`RetryWithoutEvent`).
pub const SNOOZED: &str = "anchor_tasks_snoozed_total";
/// Tasks failed for good (no retry left, a fatal error, or lost with its worker too often).
pub const FAILED: &str = "anchor_tasks_failed_total";
/// Tasks whose worker was lost (lease expired) and that the rescuer took back.
pub const RESCUED: &str = "anchor_tasks_rescued_total";
/// Tasks cancelled (counted by the process that cancelled them).
pub const CANCELLED: &str = "anchor_tasks_cancelled_total";
/// How long runs took, from the start of the handler to its outcome, in seconds.
pub const RUN_DURATION: &str = "anchor_task_run_duration_seconds";
/// How long due tasks waited before their run started (start minus due time), in seconds.
pub const QUEUE_WAIT: &str = "anchor_task_queue_wait_seconds";
/// Runs in progress on this process.
pub const RUNNING: &str = "anchor_tasks_running";
/// Tasks claimed and waiting in a worker's buffer for a free slot (label `queue` only).
pub const CLAIM_BUFFER: &str = "anchor_claim_buffer";

/// Describes every metric (help text and unit) to the installed recorder. Workers call it
/// when they start; call it yourself to have the descriptions before any worker runs.
pub fn describe_metrics() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        ENQUEUED,
        Unit::Count,
        "Tasks inserted by enqueues, cron and onFailed handlers."
    );
    describe_counter!(STARTED, Unit::Count, "Task runs started.");
    describe_counter!(SUCCEEDED, Unit::Count, "Task runs that succeeded.");
    describe_counter!(
        RETRIED,
        Unit::Count,
        "Task runs that failed and were scheduled for a retry."
    );
    describe_counter!(
        SNOOZED,
        Unit::Count,
        "Task runs that asked to run again later without counting a failure."
    );
    describe_counter!(FAILED, Unit::Count, "Tasks that failed for good.");
    describe_counter!(
        RESCUED,
        Unit::Count,
        "Tasks taken back from a lost worker after their lease expired."
    );
    describe_counter!(CANCELLED, Unit::Count, "Tasks cancelled.");
    describe_histogram!(RUN_DURATION, Unit::Seconds, "Duration of task runs.");
    describe_histogram!(
        QUEUE_WAIT,
        Unit::Seconds,
        "Time from a task's due time to the start of its run."
    );
    describe_gauge!(RUNNING, Unit::Count, "Task runs in progress.");
    describe_gauge!(
        CLAIM_BUFFER,
        Unit::Count,
        "Claimed tasks waiting for a free slot."
    );
}

fn labels(task: &str, queue: &str) -> [Label; 2] {
    [
        Label::new("task", task.to_string()),
        Label::new("queue", queue.to_string()),
    ]
}

/// Counts `n` new tasks of `task` in `queue`.
pub(crate) fn enqueued(task: &str, queue: &str, n: usize) {
    if n > 0 {
        metrics::counter!(ENQUEUED, labels(task, queue).iter()).increment(n as u64);
    }
}

/// Counts one event `metric` (a counter) of `task` in `queue`, outside a worker's cache.
pub(crate) fn count(metric: &'static str, task: &str, queue: &str) {
    metrics::counter!(metric, labels(task, queue).iter()).increment(1);
}

/// The handles of one (task, queue) pair.
pub(crate) struct TaskMetrics {
    started: Counter,
    pub(crate) succeeded: Counter,
    pub(crate) retried: Counter,
    pub(crate) snoozed: Counter,
    pub(crate) failed: Counter,
    run_duration: Histogram,
    queue_wait: Histogram,
    running: Gauge,
}

impl TaskMetrics {
    fn new(task: &str, queue: &str) -> TaskMetrics {
        let l = labels(task, queue);
        TaskMetrics {
            started: metrics::counter!(STARTED, l.iter()),
            succeeded: metrics::counter!(SUCCEEDED, l.iter()),
            retried: metrics::counter!(RETRIED, l.iter()),
            snoozed: metrics::counter!(SNOOZED, l.iter()),
            failed: metrics::counter!(FAILED, l.iter()),
            run_duration: metrics::histogram!(RUN_DURATION, l.iter()),
            queue_wait: metrics::histogram!(QUEUE_WAIT, l.iter()),
            running: metrics::gauge!(RUNNING, l.iter()),
        }
    }

    /// Records a run's start after waiting `wait` since it was due; the returned guard
    /// counts the run as in progress until it drops (also when the run is aborted).
    pub(crate) fn start(self: &Arc<Self>, wait: Duration) -> RunningGuard {
        self.started.increment(1);
        self.queue_wait.record(wait.as_secs_f64());
        self.running.increment(1.0);
        RunningGuard {
            metrics: self.clone(),
            started: std::time::Instant::now(),
        }
    }
}

/// A run in progress (see [`TaskMetrics::start`]).
pub(crate) struct RunningGuard {
    metrics: Arc<TaskMetrics>,
    started: std::time::Instant,
}

impl RunningGuard {
    /// Records the run's duration once its handler returned.
    pub(crate) fn finished(&self) {
        self.metrics
            .run_duration
            .record(self.started.elapsed().as_secs_f64());
    }
}

impl Drop for RunningGuard {
    fn drop(&mut self) {
        self.metrics.running.decrement(1.0);
    }
}

/// A worker's handles, per task name and queue.
#[derive(Default)]
pub(crate) struct HandleCache {
    by_task: Mutex<HashMap<String, HashMap<String, Arc<TaskMetrics>>>>,
}

impl HandleCache {
    /// The handles of `task` in `queue`, registered with the recorder on first use.
    pub(crate) fn get(&self, task: &str, queue: &str) -> Arc<TaskMetrics> {
        let mut by_task = self.by_task.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(found) = by_task.get(task).and_then(|q| q.get(queue)) {
            return found.clone();
        }
        let made = Arc::new(TaskMetrics::new(task, queue));
        by_task
            .entry(task.to_string())
            .or_default()
            .insert(queue.to_string(), made.clone());
        made
    }
}

/// The claim-buffer gauge of one lane.
pub(crate) fn claim_buffer(queue: &str) -> Gauge {
    metrics::gauge!(CLAIM_BUFFER, "queue" => queue.to_string())
}
