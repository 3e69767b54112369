//! Outcomes and rows that cannot be written or read as they are: a message with a NUL
//! byte, a retry interval out of range, an error history that would grow without bound, a
//! row edited by hand, a duration too long for any deadline. Each is recorded on its own
//! task; the worker never stops writing the outcomes of the others.

use std::sync::Arc;
use std::time::Duration;

use anchor_runtime::RetryPolicy;
use anchor_runtime::TaskId;
use anchor_runtime::{
    Client, ErrorKind, Registry, RetryDefaults, TaskContext, TaskDefinition, TaskError,
    TaskOverride, TaskStatus, Worker, WorkerConfig, WorkerHandle,
};
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::harness::{test_db, wait_for_status};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Job {
    n: i64,
}

const LONG: Duration = Duration::from_secs(30);

const fn def(name: &'static str, retry: Option<RetryDefaults>) -> TaskDefinition {
    TaskDefinition {
        name,
        retry,
        timeout_ms: 60_000,
        cron: None,
        on_failed: None,
        default_params: "{}",
        max_rescues: None,
        queue: "default",
        priority: 0,
    }
}

fn config() -> WorkerConfig {
    WorkerConfig::default()
        .with_poll_interval(Duration::from_millis(20))
        .with_lease_duration(Duration::from_secs(5))
}

/// Registers `def` with a handler computing its result from the run.
fn register<F>(registry: &mut Registry, def: &'static TaskDefinition, body: F)
where
    F: Fn(&TaskContext) -> Result<(), TaskError> + Send + Sync + 'static,
{
    let body = Arc::new(body);
    registry.register(def, move |ctx: TaskContext, _job: Job| {
        let result = body(&ctx);
        async move { result }
    });
}

static OK: TaskDefinition = def("Ok", None);

fn start(client: &Client, mut registry: Registry) -> WorkerHandle {
    register(&mut registry, &OK, |_| Ok(()));
    Worker::new(client.clone(), registry, config())
        .expect("a workable worker configuration")
        .start()
}

/// Enqueues an ordinary task after the bad one and waits for it: the worker still writes
/// outcomes.
async fn ordinary_task_completes(client: &Client) -> Result<()> {
    let id = client.enqueue(&OK, &Job { n: 0 }, &[]).await?;
    wait_for_status(client, id, TaskStatus::Completed, LONG).await?;
    Ok(())
}

static NUL: TaskDefinition = def("Nul", None);

#[tokio::test]
async fn a_message_with_a_nul_byte_is_recorded_and_the_worker_goes_on() -> Result<()> {
    let db = test_db().await?;
    let mut registry = Registry::new();
    register(&mut registry, &NUL, |_| {
        Err(TaskError::failed("before\0after"))
    });
    let worker = start(&db.client, registry);
    let id = db.client.enqueue(&NUL, &Job { n: 1 }, &[]).await?;
    let task = wait_for_status(&db.client, id, TaskStatus::Failed, LONG).await?;
    assert_eq!(task.errors.len(), 1);
    assert_eq!(task.errors[0].message, "before\\0after");
    ordinary_task_completes(&db.client).await?;
    worker.shutdown().await;
    Ok(())
}

static LONG_MESSAGE: TaskDefinition = def("LongMessage", None);

#[tokio::test]
async fn a_huge_message_is_cut() -> Result<()> {
    let db = test_db().await?;
    let mut registry = Registry::new();
    register(&mut registry, &LONG_MESSAGE, |_| {
        Err(TaskError::failed("é".repeat(1_000_000)))
    });
    let worker = start(&db.client, registry);
    let id = db.client.enqueue(&LONG_MESSAGE, &Job { n: 1 }, &[]).await?;
    let task = wait_for_status(&db.client, id, TaskStatus::Failed, LONG).await?;
    let message = &task.errors[0].message;
    assert!(message.len() < 5000, "{} bytes", message.len());
    assert!(message.ends_with("more bytes cut)"), "{message}");
    worker.shutdown().await;
    Ok(())
}

static FOREVER: TaskDefinition = def(
    "Forever",
    Some(RetryDefaults {
        intervals_ms: &[1],
        always_retry_on_failure: true,
        max_retries: None,
    }),
);

#[tokio::test]
async fn the_error_history_keeps_the_newest_fifty_entries() -> Result<()> {
    let db = test_db().await?;
    let mut registry = Registry::new();
    register(&mut registry, &FOREVER, |ctx| {
        if ctx.attempt() < 60 {
            Err(TaskError::failed(format!("run {}", ctx.attempt())))
        } else {
            Ok(())
        }
    });
    let worker = start(&db.client, registry);
    let id = db.client.enqueue(&FOREVER, &Job { n: 1 }, &[]).await?;
    let task = wait_for_status(&db.client, id, TaskStatus::Completed, LONG).await?;
    assert_eq!(task.attempts, 60);
    assert_eq!(task.failures, 59);
    assert_eq!(task.errors.len(), 50);
    assert_eq!(task.errors[0].message, "run 10");
    assert_eq!(task.errors[49].message, "run 59");
    assert_eq!(task.errors[49].attempt, 59);
    worker.shutdown().await;
    Ok(())
}

static EDITED: TaskDefinition = def(
    "Edited",
    Some(RetryDefaults {
        intervals_ms: &[1000],
        always_retry_on_failure: true,
        max_retries: None,
    }),
);

/// Enqueues a task of `EDITED` and applies `set` (SQL) to its row before any worker runs.
async fn edited_task(client: &Client, set: &str) -> Result<TaskId> {
    let id = client
        .enqueue(
            &EDITED,
            &Job { n: 1 },
            &[TaskOverride::run_after(Duration::from_secs(3600))],
        )
        .await?;
    let conn = client.pool().get().await?;
    conn.execute(
        &format!("UPDATE anchor.tasks SET {set}, run_after = now() WHERE id = $1"),
        &[&id],
    )
    .await?;
    Ok(id)
}

#[tokio::test]
async fn a_retry_interval_out_of_range_is_bounded_and_the_worker_goes_on() -> Result<()> {
    let db = test_db().await?;
    let id = edited_task(&db.client, "retry_intervals_ms = '{9223372036854775807}'").await?;
    let mut registry = Registry::new();
    register(&mut registry, &EDITED, |_| Err(TaskError::failed("boom")));
    let worker = start(&db.client, registry);
    let task = wait_for_status(&db.client, id, TaskStatus::Pending, LONG).await;
    let task = match task {
        Ok(task) if task.failures == 1 => task,
        _ => {
            crate::harness::wait_for("the retry to be written", LONG, || async {
                let task = db.client.get_task(id).await?.context("row exists")?;
                Ok((task.failures == 1).then_some(task))
            })
            .await?
        }
    };
    // Scheduled at the longest delay anchor allows (ten years), not an overflow.
    let years = (task.run_after - chrono::Utc::now()).num_days() / 365;
    assert!((9..=10).contains(&years), "retry in {years} years");
    ordinary_task_completes(&db.client).await?;
    worker.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn a_row_edited_into_unreadable_values_fails_that_task_only() -> Result<()> {
    let db = test_db().await?;
    let id = edited_task(&db.client, "retry_intervals_ms = '{NULL}'").await?;
    // Reading it is an error naming the column, not a panic.
    let err = db.client.get_task(id).await.unwrap_err();
    assert!(err.to_string().contains("retry_intervals_ms"), "{err}");
    let mut registry = Registry::new();
    register(&mut registry, &EDITED, |_| Ok(()));
    let worker = start(&db.client, registry);
    ordinary_task_completes(&db.client).await?;
    let conn = db.client.pool().get().await?;
    let row = crate::harness::wait_for("the edited task to be failed", LONG, || async {
        let row = conn
            .query_one(
                "SELECT status, errors::text FROM anchor.tasks WHERE id = $1",
                &[&id],
            )
            .await?;
        Ok((row.get::<_, i16>(0) == 3).then_some(row))
    })
    .await?;
    let errors: String = row.get(1);
    assert!(errors.contains("retry_intervals_ms"), "{errors}");
    worker.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn a_timeout_edited_past_any_deadline_runs_normally() -> Result<()> {
    let db = test_db().await?;
    let id = edited_task(&db.client, "timeout_ms = 9223372036854775807").await?;
    let mut registry = Registry::new();
    register(&mut registry, &EDITED, |_| Ok(()));
    let worker = start(&db.client, registry);
    wait_for_status(&db.client, id, TaskStatus::Completed, LONG).await?;
    ordinary_task_completes(&db.client).await?;
    worker.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn durations_past_the_limit_are_refused_at_enqueue() -> Result<()> {
    let db = test_db().await?;
    let years = |n: u64| Duration::from_secs(n * 365 * 24 * 3600);
    for overrides in [
        vec![TaskOverride::timeout(years(300_000))],
        vec![TaskOverride::run_after(years(11))],
        vec![TaskOverride::retry_policy(RetryPolicy {
            intervals: vec![Duration::from_secs(60), years(300_000)],
            always_retry_on_failure: true,
            max_retries: None,
        })],
    ] {
        let err = db
            .client
            .enqueue(&OK, &Job { n: 1 }, &overrides)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidOverride, "{err}");
        assert!(err.to_string().contains("3650-day limit"), "{err}");
    }
    Ok(())
}

/// Fails the first run of tasks whose number is 1 mod 3 (then retried once) and every run
/// of those that are 2 mod 3 (with an `onFailed` handler); the rest complete.
static MIXED: TaskDefinition = TaskDefinition {
    name: "Mixed",
    retry: Some(RetryDefaults {
        intervals_ms: &[0],
        always_retry_on_failure: false,
        max_retries: Some(1),
    }),
    timeout_ms: 60_000,
    cron: None,
    on_failed: Some("MixedFailed"),
    default_params: "{}",
    max_rescues: None,
    queue: "default",
    priority: 0,
};
static MIXED_FAILED: TaskDefinition = def("MixedFailed", None);

#[derive(Debug, Deserialize)]
struct FailedParams {
    #[serde(rename = "taskID")]
    task_id: TaskId,
}

#[tokio::test]
async fn completions_retries_and_failures_of_one_batch_each_end_as_decided() -> Result<()> {
    let db = test_db().await?;
    let handled = Arc::new(std::sync::Mutex::new(Vec::<TaskId>::new()));
    let mut registry = Registry::new();
    registry.register(&MIXED, |ctx: TaskContext, job: Job| async move {
        match job.n % 3 {
            1 if ctx.attempt() == 1 => Err(TaskError::failed(format!("first run of {}", job.n))),
            2 => Err(TaskError::failed(format!("every run of {}", job.n))),
            _ => Ok(()),
        }
    });
    let log = handled.clone();
    registry.register(&MIXED_FAILED, move |_ctx: TaskContext, p: FailedParams| {
        log.lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(p.task_id);
        async { Ok::<(), TaskError>(()) }
    });
    // Enqueued before the worker starts, so that outcomes of all kinds share batches.
    let jobs: Vec<Job> = (0..300).map(|n| Job { n }).collect();
    let ids = db.client.enqueue_many(&MIXED, &jobs, &[]).await?;
    let worker = start(&db.client, registry);
    for (n, id) in ids.iter().enumerate() {
        let expected = if n % 3 == 2 {
            TaskStatus::Failed
        } else {
            TaskStatus::Completed
        };
        let task = wait_for_status(&db.client, *id, expected, LONG).await?;
        let messages: Vec<&str> = task.errors.iter().map(|e| e.message.as_str()).collect();
        match n % 3 {
            0 => {
                assert_eq!((task.attempts, task.failures), (1, 0));
                assert!(messages.is_empty(), "{messages:?}");
            }
            1 => {
                assert_eq!((task.attempts, task.failures), (2, 1));
                assert_eq!(messages, [format!("first run of {n}")]);
                assert_eq!(task.errors[0].attempt, 1);
            }
            _ => {
                assert_eq!((task.attempts, task.failures), (2, 2));
                assert_eq!(
                    messages,
                    [format!("every run of {n}"), format!("every run of {n}")]
                );
                assert!(task.finished_at.is_some());
            }
        }
    }
    // One handler per failed task, each run once.
    let failed: Vec<TaskId> = ids.iter().copied().skip(2).step_by(3).collect();
    let conn = db.client.pool().get().await?;
    let rows = conn
        .query(
            "SELECT parent_id FROM anchor.tasks WHERE name = 'MixedFailed' ORDER BY parent_id",
            &[],
        )
        .await?;
    let parents: Vec<TaskId> = rows.iter().map(|r| r.get(0)).collect();
    assert_eq!(parents, failed);
    for parent in &failed {
        let row = conn
            .query_one(
                "SELECT id FROM anchor.tasks WHERE name = 'MixedFailed' AND parent_id = $1",
                &[parent],
            )
            .await?;
        wait_for_status(&db.client, row.get(0), TaskStatus::Completed, LONG).await?;
    }
    let mut seen = handled.lock().unwrap_or_else(|e| e.into_inner()).clone();
    seen.sort_unstable();
    assert_eq!(seen, failed);
    worker.shutdown().await;
    Ok(())
}
