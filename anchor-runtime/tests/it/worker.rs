//! The worker against a real database: outcomes, retries, timeouts, panics, failure events,
//! leases, rescue, shutdown and bad input.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anchor_runtime::RetryPolicy;
use anchor_runtime::TaskId;
use anchor_runtime::{
    Client, Registry, RetryDefaults, TaskContext, TaskDefinition, TaskError, TaskOverride,
    TaskStatus, Worker, WorkerConfig, WorkerHandle,
};
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::harness::{
    count, error_messages, test_db, wait_for, wait_for_status, KillableWorker, Ledger,
};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Job {
    n: i64,
}

#[derive(Debug, Clone, Deserialize)]
struct FailureParams {
    #[serde(rename = "taskID")]
    task_id: TaskId,
    channel: String,
}

const LONG: Duration = Duration::from_secs(30);

const fn def(
    name: &'static str,
    retry: Option<RetryDefaults>,
    timeout_ms: u64,
    on_failed: Option<&'static str>,
) -> TaskDefinition {
    TaskDefinition {
        name,
        retry,
        timeout_ms,
        cron: None,
        on_failed,
        default_params: "{}",
        max_rescues: None,
        queue: "default",
        priority: 0,
    }
}

const fn retry(intervals_ms: &'static [u64], max_retries: Option<u32>) -> Option<RetryDefaults> {
    Some(RetryDefaults {
        intervals_ms,
        always_retry_on_failure: false,
        max_retries,
    })
}

fn config() -> WorkerConfig {
    WorkerConfig::default()
        .with_poll_interval(Duration::from_millis(200))
        .with_lease_duration(Duration::from_secs(5))
        .with_shutdown_grace(Duration::from_secs(5))
}

/// Registers a handler that records each run in `ledger` and then does `body`.
fn register_recorded<F, Fut>(
    registry: &mut Registry,
    def: &'static TaskDefinition,
    ledger: &Ledger,
    body: F,
) where
    F: Fn(TaskContext, Job) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<(), TaskError>> + Send + 'static,
{
    let ledger = ledger.clone();
    let body = Arc::new(body);
    registry.register(def, move |ctx: TaskContext, job: Job| {
        let ledger = ledger.clone();
        let body = body.clone();
        async move {
            // The run ends when this future is dropped, also when it is cut short.
            let _run = ledger.start(ctx.id(), ctx.attempt());
            body(ctx, job).await
        }
    });
}

fn start(client: &Client, registry: Registry, config: WorkerConfig) -> WorkerHandle {
    Worker::new(client.clone(), registry, config)
        .expect("a workable worker configuration")
        .start()
}

static ECHO: TaskDefinition = def("Echo", None, 10_000, None);

#[tokio::test]
async fn success_completes_and_context_is_filled() -> Result<()> {
    let db = test_db().await?;
    let ledger = Ledger::default();
    let seen = Arc::new(std::sync::Mutex::new(None));
    let mut registry = Registry::new();
    let seen2 = seen.clone();
    register_recorded(&mut registry, &ECHO, &ledger, move |ctx, job| {
        *seen2.lock().unwrap() = Some((
            ctx.id(),
            ctx.name().to_string(),
            ctx.attempt(),
            ctx.timeout(),
            job.n,
        ));
        async { Ok(()) }
    });
    let worker = start(&db.client, registry, config());
    let id = db.client.enqueue(&ECHO, &Job { n: 5 }, &[]).await?;
    let task = wait_for_status(&db.client, id, TaskStatus::Completed, LONG).await?;
    assert_eq!(task.attempts, 1);
    assert!(task.errors.is_empty());
    assert!(task.finished_at.is_some() && task.started_at.is_some());
    assert!(task.lease_owner.is_none());
    let seen = seen.lock().unwrap().clone();
    assert_eq!(
        seen,
        Some((id, "Echo".to_string(), 1, Duration::from_secs(10), 5))
    );
    worker.shutdown().await;
    Ok(())
}

static FLAKY: TaskDefinition = def("Flaky", None, 10_000, None);

#[tokio::test]
async fn retry_comma_list_waits_the_listed_delays() -> Result<()> {
    let db = test_db().await?;
    let ledger = Ledger::default();
    let mut registry = Registry::new();
    register_recorded(&mut registry, &FLAKY, &ledger, |_, _| async {
        Err(TaskError::failed("boom"))
    });
    let worker = start(&db.client, registry, config());
    // The policy comes from overrides, as a comma list: two retries, 200 ms then 400 ms.
    let overrides = [
        TaskOverride::retry_policy(RetryPolicy::parse("200ms,400ms", false)?),
        TaskOverride::max_retries(2),
    ];
    let id = db.client.enqueue(&FLAKY, &Job { n: 1 }, &overrides).await?;
    let task = wait_for_status(&db.client, id, TaskStatus::Failed, LONG).await?;
    let starts = ledger.starts(id);
    assert_eq!(
        starts.iter().map(|s| s.0).collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
    let first_gap = starts[1].1 - starts[0].1;
    let second_gap = starts[2].1 - starts[1].1;
    assert!(first_gap >= Duration::from_millis(200), "{first_gap:?}");
    assert!(second_gap >= Duration::from_millis(400), "{second_gap:?}");
    assert!(first_gap < Duration::from_secs(5), "{first_gap:?}");
    assert!(second_gap < Duration::from_secs(5), "{second_gap:?}");
    assert_eq!(task.attempts, 3);
    assert_eq!(task.failures, 3);
    assert_eq!(
        task.errors
            .iter()
            .map(|e| (e.attempt, e.message.as_str()))
            .collect::<Vec<_>>(),
        vec![(1, "boom"), (2, "boom"), (3, "boom")]
    );
    worker.shutdown().await;
    Ok(())
}

static DOOMED: TaskDefinition = def(
    "Doomed",
    retry(&[10], Some(1)),
    10_000,
    Some("DoomedFailed"),
);
static DOOMED_FAILED: TaskDefinition = TaskDefinition {
    name: "DoomedFailed",
    retry: None,
    timeout_ms: 7_000,
    cron: None,
    on_failed: None,
    default_params: r#"{"channel":"ops"}"#,
    max_rescues: None,
    queue: "default",
    priority: 0,
};

#[tokio::test]
async fn max_retries_then_on_failed_in_the_same_transaction() -> Result<()> {
    let db = test_db().await?;
    let ledger = Ledger::default();
    let received = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut registry = Registry::new();
    register_recorded(&mut registry, &DOOMED, &ledger, |_, _| async {
        Err(TaskError::failed("still broken"))
    });
    let got = received.clone();
    registry.register(&DOOMED_FAILED, move |ctx: TaskContext, p: FailureParams| {
        got.lock().unwrap().push((ctx.parent_id(), p));
        async { Ok(()) }
    });
    let worker = start(&db.client, registry, config());
    let id = db.client.enqueue(&DOOMED, &Job { n: 1 }, &[]).await?;
    let task = wait_for_status(&db.client, id, TaskStatus::Failed, LONG).await?;
    assert_eq!(task.attempts, 2, "max_retries 1 allows two runs");
    assert_eq!(task.errors.len(), 2);

    let handler_id = wait_for("the onFailed handler to run", LONG, || async {
        Ok(received
            .lock()
            .unwrap()
            .first()
            .map(|(parent, p)| (*parent, p.clone())))
    })
    .await?;
    assert_eq!(handler_id.0, Some(id));
    assert_eq!(handler_id.1.task_id, id);
    assert_eq!(handler_id.1.channel, "ops");

    // The failure and the handler's insert happened in one transaction: now() is the
    // transaction's start time, so the two timestamps are equal.
    let conn = db.client.pool().get().await?;
    let row = conn
        .query_one(
            "SELECT h.created_at = f.finished_at, h.timeout_ms, h.payload, h.name \
             FROM anchor.tasks h JOIN anchor.tasks f ON h.parent_id = f.id WHERE f.id = $1",
            &[&id],
        )
        .await?;
    assert!(
        row.get::<_, bool>(0),
        "failure and onFailed enqueue commit together"
    );
    assert_eq!(row.get::<_, i64>(1), 7_000, "the handler's own timeout");
    assert_eq!(
        row.get::<_, serde_json::Value>(2),
        serde_json::json!({"channel": "ops", "taskID": id})
    );
    assert_eq!(
        count(&db.client, "parent_id IS NOT NULL").await?,
        1,
        "never on a retry"
    );
    worker.shutdown().await;
    Ok(())
}

static FATAL: TaskDefinition = TaskDefinition {
    name: "Fatal",
    retry: Some(RetryDefaults {
        intervals_ms: &[10],
        always_retry_on_failure: true,
        max_retries: None,
    }),
    timeout_ms: 10_000,
    cron: None,
    on_failed: None,
    default_params: "{}",
    max_rescues: None,
    queue: "default",
    priority: 0,
};

#[tokio::test]
async fn fatal_skips_retries() -> Result<()> {
    let db = test_db().await?;
    let ledger = Ledger::default();
    let mut registry = Registry::new();
    register_recorded(&mut registry, &FATAL, &ledger, |_, _| async {
        Err(TaskError::fatal("card declined"))
    });
    let worker = start(&db.client, registry, config());
    let id = db.client.enqueue(&FATAL, &Job { n: 1 }, &[]).await?;
    let task = wait_for_status(&db.client, id, TaskStatus::Failed, LONG).await?;
    assert_eq!(task.attempts, 1);
    assert_eq!(task.errors.len(), 1);
    assert_eq!(task.errors[0].message, "fatal: card declined");
    assert_eq!(ledger.runs(id), 1);
    worker.shutdown().await;
    Ok(())
}

static POLITE: TaskDefinition = def("Polite", retry(&[150], Some(0)), 10_000, None);

#[tokio::test]
async fn retry_without_error_event_records_nothing_and_does_not_count() -> Result<()> {
    let db = test_db().await?;
    let ledger = Ledger::default();
    let mut registry = Registry::new();
    // max_retries 0: an ordinary error would fail at once, but asking to be retried later
    // does not count, so the task runs again (twice) and then succeeds.
    register_recorded(&mut registry, &POLITE, &ledger, |ctx, _| async move {
        if ctx.attempt() < 3 {
            Err(TaskError::RetryWithoutErrorEvent)
        } else {
            Ok(())
        }
    });
    let worker = start(&db.client, registry, config());
    let id = db.client.enqueue(&POLITE, &Job { n: 1 }, &[]).await?;
    let task = wait_for_status(&db.client, id, TaskStatus::Completed, LONG).await?;
    assert!(task.errors.is_empty());
    assert_eq!(task.failures, 0);
    assert_eq!(task.attempts, 3);
    let starts = ledger.starts(id);
    assert!(starts[1].1 - starts[0].1 >= Duration::from_millis(150));
    worker.shutdown().await;
    Ok(())
}

static PANICKY: TaskDefinition = def("Panicky", None, 10_000, None);

#[tokio::test]
async fn a_panic_is_a_failure_and_the_worker_lives_on() -> Result<()> {
    let db = test_db().await?;
    let ledger = Ledger::default();
    let mut registry = Registry::new();
    register_recorded(&mut registry, &PANICKY, &ledger, |_, job| async move {
        if job.n == 1 {
            panic!("kaboom");
        }
        Ok(())
    });
    let worker = start(&db.client, registry, config().with_concurrency(1));
    let bad = db.client.enqueue(&PANICKY, &Job { n: 1 }, &[]).await?;
    let task = wait_for_status(&db.client, bad, TaskStatus::Failed, LONG).await?;
    assert_eq!(task.errors.len(), 1);
    assert_eq!(task.errors[0].message, "panicked: kaboom");
    let good = db.client.enqueue(&PANICKY, &Job { n: 2 }, &[]).await?;
    wait_for_status(&db.client, good, TaskStatus::Completed, LONG).await?;
    assert_eq!(worker.running(), 0);
    worker.shutdown().await;
    Ok(())
}

static SLOW: TaskDefinition = def("Slow", retry(&[10], Some(1)), 200, None);

/// Sets its flag when dropped: proves a future was dropped, not left running.
struct DropFlag(Arc<AtomicBool>);
impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

#[tokio::test]
async fn timeout_drops_the_future_and_retries() -> Result<()> {
    let db = test_db().await?;
    let ledger = Ledger::default();
    let dropped = Arc::new(AtomicBool::new(false));
    let mut registry = Registry::new();
    let flag = dropped.clone();
    register_recorded(&mut registry, &SLOW, &ledger, move |ctx, _| {
        let flag = flag.clone();
        async move {
            if ctx.attempt() == 1 {
                let _guard = DropFlag(flag);
                tokio::time::sleep(Duration::from_secs(60)).await;
            }
            Ok(())
        }
    });
    let worker = start(&db.client, registry, config());
    let id = db.client.enqueue(&SLOW, &Job { n: 1 }, &[]).await?;
    let task = wait_for_status(&db.client, id, TaskStatus::Completed, LONG).await?;
    assert!(
        dropped.load(Ordering::SeqCst),
        "the timed-out future was dropped"
    );
    assert_eq!(task.attempts, 2);
    assert_eq!(task.errors.len(), 1);
    assert_eq!(task.errors[0].message, "timed out after 200ms");
    worker.shutdown().await;
    Ok(())
}

static GATE: TaskDefinition = def("Gate", None, 60_000, None);
static FILLER: TaskDefinition = def("Filler", None, 60_000, None);
static EXPIRING: TaskDefinition = def("Expiring", None, 1_000, None);

/// More outcomes than the completer's channel holds (1024), so that executions wait to hand
/// theirs over.
const FILLERS: usize = 1_040;

#[tokio::test]
async fn a_timed_out_run_is_dropped_at_its_deadline_while_outcomes_back_up() -> Result<()> {
    let db = test_db().await?;
    let ledger = Ledger::default();
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let dropped = Arc::new(AtomicBool::new(false));
    let mut registry = Registry::new();
    let opened = gate.clone();
    register_recorded(&mut registry, &GATE, &ledger, move |_, _| {
        let opened = opened.clone();
        async move {
            let _permit = opened.acquire().await;
            Ok(())
        }
    });
    register_recorded(&mut registry, &FILLER, &ledger, |_, _| async { Ok(()) });
    let flag = dropped.clone();
    register_recorded(&mut registry, &EXPIRING, &ledger, move |_, _| {
        let flag = flag.clone();
        async move {
            let _guard = DropFlag(flag);
            tokio::time::sleep(Duration::from_secs(600)).await;
            Ok(())
        }
    });
    let worker = start(&db.client, registry, config().with_concurrency(40));
    // The completer stalls on a row lock: the gate task's row, locked once it runs.
    let gated = db.client.enqueue(&GATE, &Job { n: 0 }, &[]).await?;
    wait_for("the gate task to start", LONG, || async {
        Ok((ledger.runs(gated) == 1).then_some(()))
    })
    .await?;
    let mut locker = db.client.pool().get().await?;
    let lock = locker.transaction().await?;
    lock.execute(
        "SELECT 1 FROM anchor.tasks WHERE id = $1 FOR UPDATE",
        &[&gated],
    )
    .await?;
    gate.add_permits(1);
    let observer = db.client.pool().get().await?;
    wait_for("the completer to wait for the lock", LONG, || async {
        let waiting: i64 = observer
            .query_one(
                "SELECT count(*) FROM pg_stat_activity \
                 WHERE wait_event_type = 'Lock' AND datname = current_database()",
                &[],
            )
            .await?
            .get(0);
        Ok((waiting > 0).then_some(()))
    })
    .await?;
    // Outcomes pile up behind it until executions wait to hand theirs over.
    let fillers: Vec<Job> = (0..FILLERS as i64).map(|n| Job { n }).collect();
    let filler_ids = db.client.enqueue_many(&FILLER, &fillers, &[]).await?;
    wait_for(
        "every filler to run, some waiting with their outcome",
        LONG,
        || async {
            let ran = filler_ids.iter().all(|id| ledger.runs(*id) == 1);
            Ok((ran && worker.running() > 0).then_some(()))
        },
    )
    .await?;
    let expiring = db.client.enqueue(&EXPIRING, &Job { n: 0 }, &[]).await?;
    wait_for("the expiring task to start", LONG, || async {
        Ok((ledger.runs(expiring) == 1).then_some(()))
    })
    .await?;
    // Its one-second timeout passes while its outcome cannot be handed over: the handler's
    // future (and whatever it holds, a pooled connection say) is dropped at the deadline
    // all the same.
    wait_for(
        "the timed-out handler to be dropped",
        Duration::from_secs(10),
        || async { Ok(dropped.load(Ordering::SeqCst).then_some(())) },
    )
    .await?;
    let row = observer
        .query_one(
            "SELECT status FROM anchor.tasks WHERE id = $1",
            &[&expiring],
        )
        .await?;
    assert_eq!(row.get::<_, i16>(0), 1, "its outcome is not written yet");
    lock.rollback().await?;
    let task = wait_for_status(&db.client, expiring, TaskStatus::Failed, LONG).await?;
    assert_eq!(error_messages(&task), ["timed out after 1s"]);
    wait_for_status(&db.client, gated, TaskStatus::Completed, LONG).await?;
    let completed = count(&db.client, "name = 'Filler' AND status = 2").await?;
    assert_eq!(completed, FILLERS as i64);
    worker.shutdown().await;
    Ok(())
}

static REPORT: TaskDefinition = def("Report", None, 10_000, Some("ReportFailed"));

#[tokio::test]
async fn bad_input_is_recorded_and_the_worker_lives_on() -> Result<()> {
    let db = test_db().await?;
    let ledger = Ledger::default();
    let mut registry = Registry::new();
    register_recorded(&mut registry, &REPORT, &ledger, |_, _| async { Ok(()) });
    let worker = start(&db.client, registry, config());
    let conn = db.client.pool().get().await?;
    // A payload of the wrong shape, written behind the runtime's back.
    let malformed: TaskId = conn
        .query_one(
            "INSERT INTO anchor.tasks (name, payload, timeout_ms, on_failed) \
             VALUES ('Report', '{\"n\": \"not a number\"}', 5000, 'ReportFailed') RETURNING id",
            &[],
        )
        .await?
        .get(0);
    // A task no worker here knows.
    let unknown: TaskId = conn
        .query_one(
            "INSERT INTO anchor.tasks (name, payload, timeout_ms) VALUES ('NotMine', '{}', 5000) RETURNING id",
            &[],
        )
        .await?
        .get(0);
    let task = wait_for_status(&db.client, malformed, TaskStatus::Failed, LONG).await?;
    assert_eq!(task.attempts, 1);
    assert!(
        task.errors[0].message.contains("payload does not match"),
        "{}",
        task.errors[0].message
    );
    assert_eq!(ledger.runs(malformed), 0);
    // The failure handler is enqueued even though no worker here runs it.
    let handler = wait_for("the handler row", LONG, || async {
        let row = conn
            .query_opt(
                "SELECT id, payload, status FROM anchor.tasks WHERE parent_id = $1",
                &[&malformed],
            )
            .await?;
        Ok(row.map(|r| (r.get::<_, serde_json::Value>(1), r.get::<_, i16>(2))))
    })
    .await?;
    assert_eq!(handler, (serde_json::json!({"taskID": malformed}), 0));

    let good = db.client.enqueue(&REPORT, &Job { n: 2 }, &[]).await?;
    wait_for_status(&db.client, good, TaskStatus::Completed, LONG).await?;
    let unknown = db.client.get_task(unknown).await?.context("row exists")?;
    assert_eq!(unknown.status, TaskStatus::Pending);
    assert_eq!(
        unknown.attempts, 0,
        "never claimed by a worker that cannot run it"
    );
    worker.shutdown().await;
    Ok(())
}

static WORK: TaskDefinition = def("Work", None, 10_000, None);

#[tokio::test]
async fn two_workers_run_1000_tasks_each_exactly_once() -> Result<()> {
    let db = test_db().await?;
    let ledger = Ledger::default();
    let mut workers = Vec::new();
    for _ in 0..2 {
        let mut registry = Registry::new();
        register_recorded(&mut registry, &WORK, &ledger, |_, _| async {
            tokio::task::yield_now().await;
            Ok(())
        });
        let client = Client::connect(&db.url).await?;
        workers.push(start(&client, registry, config()));
    }
    let params: Vec<Job> = (0..1000).map(|n| Job { n }).collect();
    let ids = db.client.enqueue_many(&WORK, &params, &[]).await?;
    wait_for("1000 completions", Duration::from_secs(120), || async {
        Ok((count(&db.client, "status = 2").await? == 1000).then_some(()))
    })
    .await?;
    let runs = ledger.all_runs();
    assert_eq!(runs.len(), 1000);
    for id in &ids {
        assert_eq!(runs.get(id), Some(&1), "task {id} ran once");
    }
    assert!(ledger.overlaps().is_empty());
    assert_eq!(count(&db.client, "attempts <> 1").await?, 0);
    for worker in workers {
        worker.shutdown().await;
    }
    Ok(())
}

static HOLD: TaskDefinition = def("Hold", None, 60_000, None);

#[tokio::test]
async fn shutdown_waits_for_running_tasks_within_the_grace() -> Result<()> {
    let db = test_db().await?;
    let ledger = Ledger::default();
    let mut registry = Registry::new();
    register_recorded(&mut registry, &HOLD, &ledger, |_, _| async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        Ok(())
    });
    let worker = start(
        &db.client,
        registry,
        config().with_shutdown_grace(Duration::from_secs(10)),
    );
    let id = db.client.enqueue(&HOLD, &Job { n: 1 }, &[]).await?;
    wait_for("the task to start", LONG, || async {
        Ok((ledger.runs(id) == 1).then_some(()))
    })
    .await?;
    worker.shutdown().await;
    let task = db.client.get_task(id).await?.context("row exists")?;
    assert_eq!(
        task.status,
        TaskStatus::Completed,
        "finished within the grace"
    );
    Ok(())
}

static STUCK: TaskDefinition = def("Stuck", None, 60_000, None);

#[tokio::test]
async fn shutdown_releases_what_outlives_the_grace() -> Result<()> {
    let db = test_db().await?;
    let ledger = Ledger::default();
    let dropped = Arc::new(AtomicBool::new(false));
    let quick = Arc::new(AtomicBool::new(false));
    let make_registry = || {
        let mut registry = Registry::new();
        let flag = dropped.clone();
        let quick = quick.clone();
        register_recorded(&mut registry, &STUCK, &ledger, move |_, _| {
            let flag = flag.clone();
            let quick = quick.load(Ordering::SeqCst);
            async move {
                if !quick {
                    let _guard = DropFlag(flag);
                    tokio::time::sleep(Duration::from_secs(600)).await;
                }
                Ok(())
            }
        });
        registry
    };
    let worker = start(
        &db.client,
        make_registry(),
        config().with_shutdown_grace(Duration::from_millis(300)),
    );
    let id = db.client.enqueue(&STUCK, &Job { n: 1 }, &[]).await?;
    wait_for("the task to start", LONG, || async {
        Ok((ledger.runs(id) == 1).then_some(()))
    })
    .await?;
    let begun = std::time::Instant::now();
    worker.shutdown().await;
    assert!(begun.elapsed() < Duration::from_secs(10));
    assert!(
        dropped.load(Ordering::SeqCst),
        "the unfinished run was stopped"
    );
    let task = db.client.get_task(id).await?.context("row exists")?;
    assert_eq!(task.status, TaskStatus::Pending, "released at once");
    assert_eq!(
        task.attempts, 1,
        "the interrupted run had started: it counts"
    );
    assert_eq!(
        (task.failures, task.rescues),
        (0, 0),
        "a release is neither"
    );
    assert!(task.errors.is_empty());
    assert!(task.lease_owner.is_none());
    // Another worker takes it straight away, without waiting for a lease to expire.
    quick.store(true, Ordering::SeqCst);
    let next = start(
        &db.client,
        make_registry(),
        config().with_lease_duration(Duration::from_secs(600)),
    );
    let task = wait_for_status(&db.client, id, TaskStatus::Completed, LONG).await?;
    assert_eq!(task.attempts, 2);
    next.shutdown().await;
    Ok(())
}

static FRAGILE: TaskDefinition = def("Fragile", retry(&[10], Some(3)), 60_000, None);

#[tokio::test]
async fn a_killed_worker_s_task_is_rescued_and_completed_once() -> Result<()> {
    let db = test_db().await?;
    let ledger = Ledger::default();
    let make_registry = || {
        let mut registry = Registry::new();
        register_recorded(&mut registry, &FRAGILE, &ledger, |ctx, _| async move {
            if ctx.attempt() == 1 {
                tokio::time::sleep(Duration::from_secs(600)).await;
            }
            Ok(())
        });
        registry
    };
    let short_lease = config()
        .with_lease_duration(Duration::from_millis(600))
        .with_rescue_interval(Duration::from_millis(200));

    // Worker A is killed mid-task, as a process would be.
    let worker_a = KillableWorker::start(&db.url, make_registry(), short_lease.clone());
    let id = db.client.enqueue(&FRAGILE, &Job { n: 1 }, &[]).await?;
    wait_for("worker A to start the task", LONG, || async {
        Ok((ledger.runs(id) == 1).then_some(()))
    })
    .await?;
    // Once the run's start is recorded, its loss is noted and counted.
    wait_for("the run's start to be recorded", LONG, || async {
        let task = db.client.get_task(id).await?.context("row exists")?;
        Ok((task.attempts == 1).then_some(()))
    })
    .await?;
    worker_a.kill()?;

    let worker_b = start(&db.client, make_registry(), short_lease);
    let task = wait_for_status(&db.client, id, TaskStatus::Completed, LONG).await?;
    assert_eq!(task.attempts, 2);
    assert_eq!(
        task.failures, 0,
        "a lost worker is not a failure of the task"
    );
    assert_eq!(task.rescues, 1);
    assert_eq!(task.errors.len(), 1);
    assert!(
        task.errors[0].message.starts_with("worker lost"),
        "{:?}",
        task.errors
    );
    assert_eq!(ledger.runs(id), 2, "the killed run and the rescued run");
    assert!(ledger.overlaps().is_empty());
    worker_b.shutdown().await;
    Ok(())
}

static CONTESTED: TaskDefinition = def("Contested", retry(&[10], Some(3)), 60_000, None);

#[tokio::test]
async fn a_stale_worker_s_completion_is_ignored() -> Result<()> {
    let db = test_db().await?;
    let ledger = Ledger::default();
    // Set once the task has failed on worker B: worker A's first run then returns.
    let release = Arc::new(AtomicBool::new(false));
    let make_registry = |release: Arc<AtomicBool>| {
        let mut registry = Registry::new();
        register_recorded(&mut registry, &CONTESTED, &ledger, move |ctx, _| {
            let release = release.clone();
            async move {
                if ctx.attempt() == 1 {
                    // Long enough for the start to be recorded, then the whole worker
                    // stalls (a blocked thread, as a long pause of the process): no
                    // renewal goes out, the lease expires and worker B takes the task.
                    // When the stall ends the run reports success under its old lease.
                    tokio::time::sleep(Duration::from_millis(400)).await;
                    let stalled = std::time::Instant::now();
                    while !release.load(Ordering::SeqCst) && stalled.elapsed() < LONG {
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    Ok(())
                } else {
                    Err(TaskError::fatal("second run fails"))
                }
            }
        });
        registry
    };
    let short_lease = config().with_lease_duration(Duration::from_secs(1));
    let worker_a = KillableWorker::start(&db.url, make_registry(release.clone()), short_lease);
    let id = db.client.enqueue(&CONTESTED, &Job { n: 1 }, &[]).await?;
    wait_for("worker A to start the task", LONG, || async {
        Ok((ledger.runs(id) == 1).then_some(()))
    })
    .await?;
    let worker_b = start(
        &db.client,
        make_registry(release.clone()),
        config().with_rescue_interval(Duration::from_millis(100)),
    );
    let task = wait_for_status(&db.client, id, TaskStatus::Failed, LONG).await?;
    assert_eq!(task.attempts, 2);
    // A's first run now finishes and reports success with its old lease token; A's
    // shutdown flushes its completer, so whatever A had to write has been tried.
    release.store(true, Ordering::SeqCst);
    wait_for("worker A's run to end", LONG, || async {
        Ok((!ledger.is_running(id)).then_some(()))
    })
    .await?;
    tokio::task::spawn_blocking(move || worker_a.shutdown()).await??;
    let task = db.client.get_task(id).await?.context("row exists")?;
    assert_eq!(
        task.status,
        TaskStatus::Failed,
        "the stale completion changed nothing"
    );
    assert_eq!(task.attempts, 2);
    let messages = error_messages(&task);
    assert_eq!(messages.len(), 2, "{messages:?}");
    assert!(messages[0].starts_with("worker lost"), "{messages:?}");
    assert_eq!(messages[1], "fatal: second run fails");
    worker_b.shutdown().await;
    Ok(())
}

static WATCHED: TaskDefinition = def("Watched", None, 60_000, None);

#[tokio::test]
async fn a_run_whose_lease_was_taken_is_stopped() -> Result<()> {
    let db = test_db().await?;
    let ledger = Ledger::default();
    let dropped = Arc::new(AtomicBool::new(false));
    let mut registry = Registry::new();
    let flag = dropped.clone();
    register_recorded(&mut registry, &WATCHED, &ledger, move |_, _| {
        let flag = flag.clone();
        async move {
            let _guard = DropFlag(flag);
            tokio::time::sleep(Duration::from_secs(600)).await;
            Ok(())
        }
    });
    let worker = start(
        &db.client,
        registry,
        config()
            .with_lease_duration(Duration::from_secs(2))
            .with_lease_renew_interval(Duration::from_millis(100))
            .with_rescue_interval(Duration::from_secs(3600)),
    );
    let id = db.client.enqueue(&WATCHED, &Job { n: 1 }, &[]).await?;
    wait_for("the task to start", LONG, || async {
        Ok((ledger.runs(id) == 1).then_some(()))
    })
    .await?;
    // Another worker's claim, as after a rescue: a new lease token.
    let conn = db.client.pool().get().await?;
    conn.execute(
        "UPDATE anchor.tasks SET lease_token = 42, lease_owner = 'other' WHERE id = $1",
        &[&id],
    )
    .await?;
    wait_for("the local run to be stopped", LONG, || async {
        Ok(dropped.load(Ordering::SeqCst).then_some(()))
    })
    .await?;
    assert_eq!(worker.running(), 0);
    let row = conn
        .query_one(
            "SELECT status, lease_token, lease_owner FROM anchor.tasks WHERE id = $1",
            &[&id],
        )
        .await?;
    assert_eq!(
        row.get::<_, i16>(0),
        1,
        "still running under the other lease"
    );
    assert_eq!(row.get::<_, Option<i64>>(1), Some(42));
    assert_eq!(row.get::<_, Option<String>>(2).as_deref(), Some("other"));
    worker.shutdown().await;
    // Shutdown released nothing: the lease was not this worker's.
    assert_eq!(count(&db.client, "status = 1").await?, 1);
    Ok(())
}

static QUEUED: TaskDefinition = def("Queued", None, 60_000, None);

#[tokio::test]
async fn prefetched_tasks_stuck_behind_busy_slots_go_to_other_workers() -> Result<()> {
    let db = test_db().await?;
    let busy = Ledger::default();
    let mut registry_a = Registry::new();
    register_recorded(&mut registry_a, &QUEUED, &busy, |_, _| async {
        tokio::time::sleep(Duration::from_secs(600)).await;
        Ok(())
    });
    // One slot and a prefetch buffer: A claims all three tasks, runs one and buffers two.
    let worker_a = start(
        &db.client,
        registry_a,
        config()
            .with_concurrency(1)
            .with_prefetch(5)
            .with_shutdown_grace(Duration::from_millis(200)),
    );
    let params: Vec<Job> = (0..3).map(|n| Job { n }).collect();
    let ids = db.client.enqueue_many(&QUEUED, &params, &[]).await?;
    wait_for("A to start one task", LONG, || async {
        Ok((busy.all_runs().len() == 1).then_some(()))
    })
    .await?;
    let free = Ledger::default();
    let mut registry_b = Registry::new();
    register_recorded(&mut registry_b, &QUEUED, &free, |_, _| async { Ok(()) });
    let worker_b = start(&db.client, registry_b, config());
    // A hands the two buffered tasks back after about a second; B runs them.
    wait_for("B to complete the two buffered tasks", LONG, || async {
        Ok((count(&db.client, "status = 2").await? == 2).then_some(()))
    })
    .await?;
    assert_eq!(
        busy.all_runs().len(),
        1,
        "A ran only what its slot could take"
    );
    assert_eq!(free.all_runs().len(), 2);
    for id in &ids {
        let task = db.client.get_task(*id).await?.context("row exists")?;
        assert_eq!(
            task.attempts, 1,
            "a buffered-then-released claim is not counted"
        );
    }
    worker_a.shutdown().await;
    worker_b.shutdown().await;
    Ok(())
}

static WITNESS: TaskDefinition = def("Witness", None, 10_000, None);

#[tokio::test]
async fn a_disabled_worker_claims_nothing() -> Result<()> {
    let db = test_db().await?;
    let ledger = Ledger::default();
    let mut registry = Registry::new();
    register_recorded(&mut registry, &ECHO, &ledger, |_, _| async { Ok(()) });
    let disabled = start(
        &db.client,
        registry,
        config().with_disable(true).with_worker_id("disabled"),
    );
    let id = db.client.enqueue(&ECHO, &Job { n: 1 }, &[]).await?;
    // An enabled worker of another task, started after it, notices a task enqueued after
    // the Echo task, runs it and records itself alive: a running worker would have claimed
    // the Echo task by then (it was due first and announced the same way).
    let mut witness_registry = Registry::new();
    register_recorded(&mut witness_registry, &WITNESS, &ledger, |_, _| async {
        Ok(())
    });
    let witness = start(
        &Client::connect(&db.url).await?,
        witness_registry,
        config().with_worker_id("witness"),
    );
    let seen = db.client.enqueue(&WITNESS, &Job { n: 2 }, &[]).await?;
    wait_for_status(&db.client, seen, TaskStatus::Completed, LONG).await?;
    let conn = db.client.pool().get().await?;
    wait_for("the witness's heartbeat", LONG, || async {
        let n: i64 = conn
            .query_one(
                "SELECT count(*) FROM anchor.workers WHERE id = 'witness'",
                &[],
            )
            .await?
            .get(0);
        Ok((n == 1).then_some(()))
    })
    .await?;
    let task = db.client.get_task(id).await?.context("row exists")?;
    assert_eq!(task.status, TaskStatus::Pending);
    assert_eq!(task.lease_owner, None);
    assert_eq!(ledger.runs(id), 0);
    let registered: i64 = conn
        .query_one(
            "SELECT count(*) FROM anchor.workers WHERE id = 'disabled'",
            &[],
        )
        .await?
        .get(0);
    assert_eq!(
        registered, 0,
        "a disabled worker does not record itself alive"
    );
    witness.shutdown().await;
    disabled.shutdown().await;
    Ok(())
}

/// Waits until a worker's LISTEN connection (`pid`, or any) has finished its `LISTEN`: the
/// control connection is published only once it listens, and every statement on it
/// carries the control tag.
async fn listening(client: &Client, pid: Option<i32>) -> Result<()> {
    let conn = client.pool().get().await?;
    wait_for("the worker to listen", LONG, || async {
        let row = conn
            .query_opt(
                "SELECT pid FROM pg_stat_activity \
                 WHERE datname = current_database() AND state = 'idle' \
                   AND query LIKE '/* anchor worker control */%' \
                   AND ($1::int IS NULL OR pid = $1) LIMIT 1",
                &[&pid],
            )
            .await?;
        Ok(row.map(|_| ()))
    })
    .await
}

#[tokio::test]
async fn notifications_wake_an_idle_worker_without_polling() -> Result<()> {
    let db = test_db().await?;
    let ledger = Ledger::default();
    let mut registry = Registry::new();
    register_recorded(&mut registry, &ECHO, &ledger, |_, _| async { Ok(()) });
    // Polling effectively off: only LISTEN/NOTIFY can start these tasks.
    let worker = start(
        &db.client,
        registry,
        config().with_poll_interval(Duration::from_secs(3600)),
    );
    listening(&db.client, None).await?;
    // Enqueued through another client, as a web process would: no local dispatch and no
    // in-process wake-up can start these tasks, only the notification.
    let enqueuer = Client::connect(&db.url).await?;
    let plain = enqueuer.enqueue(&ECHO, &Job { n: 1 }, &[]).await?;
    wait_for_status(&db.client, plain, TaskStatus::Completed, LONG).await?;

    // Back to back: the first insert queues its own notification, the ones within the
    // quiet period after it rely on the debounced notifier. None may wait for a poll.
    let mut burst = Vec::new();
    for n in 10..30 {
        burst.push(enqueuer.enqueue(&ECHO, &Job { n }, &[]).await?);
    }
    for id in burst {
        wait_for_status(&db.client, id, TaskStatus::Completed, LONG).await?;
    }

    // In a transaction: the notification is delivered on commit.
    let mut conn = enqueuer.pool().get().await?;
    let tx = conn.transaction().await?;
    let in_tx = enqueuer
        .enqueue_with_tx(&tx, &ECHO, &Job { n: 2 }, &[])
        .await?;
    tx.commit().await?;
    wait_for_status(&db.client, in_tx, TaskStatus::Completed, LONG).await?;

    // Bulk enqueue wakes it too.
    let many = enqueuer
        .enqueue_many(&ECHO, &[Job { n: 3 }, Job { n: 4 }], &[])
        .await?;
    for id in many {
        wait_for_status(&db.client, id, TaskStatus::Completed, LONG).await?;
    }
    worker.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn a_killed_listen_connection_is_replaced() -> Result<()> {
    let db = test_db().await?;
    let ledger = Ledger::default();
    let mut registry = Registry::new();
    register_recorded(&mut registry, &ECHO, &ledger, |_, _| async { Ok(()) });
    let worker = start(
        &db.client,
        registry,
        config().with_poll_interval(Duration::from_secs(3600)),
    );
    let conn = db.client.pool().get().await?;
    let listener_pid = || async {
        let row = conn
            .query_opt(
                // The LISTEN connection is the worker's control connection, whose
                // statements (LISTEN, renewals, heartbeats) all carry this tag.
                "SELECT pid FROM pg_stat_activity \
                 WHERE datname = current_database() \
                   AND query LIKE '/* anchor worker control */%'",
                &[],
            )
            .await?;
        Ok(row.map(|r| r.get::<_, i32>(0)))
    };
    let first = wait_for("the LISTEN connection", LONG, listener_pid).await?;
    conn.execute("SELECT pg_terminate_backend($1)", &[&first])
        .await?;
    let second = wait_for("a new LISTEN connection", LONG, || async {
        Ok(listener_pid().await?.filter(|pid| *pid != first))
    })
    .await?;
    assert_ne!(first, second);
    // Polling is off and the task comes from another client, so only the new
    // connection's notification can start it.
    listening(&db.client, Some(second)).await?;
    let enqueuer = Client::connect(&db.url).await?;
    let id = enqueuer.enqueue(&ECHO, &Job { n: 1 }, &[]).await?;
    wait_for_status(&db.client, id, TaskStatus::Completed, LONG).await?;
    worker.shutdown().await;
    Ok(())
}
