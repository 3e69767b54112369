//! Outcomes and rows that cannot be written or read as they are: a message with a NUL
//! byte, a retry interval out of range, an error history that would grow without bound, a
//! row edited by hand, a duration too long for any deadline. Each is recorded on its own
//! task; the worker never stops writing the outcomes of the others.

use std::sync::Arc;
use std::time::Duration;

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
async fn edited_task(client: &Client, set: &str) -> Result<i64> {
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
        vec![TaskOverride::retry_policy("1m,300000y", true)],
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
