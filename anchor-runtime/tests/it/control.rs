//! Control of single tasks by hand: retry now (failed, cancelled, or pending behind a
//! delay), and delete a finished task.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anchor_runtime::{
    ErrorKind, Registry, RetryDefaults, TaskContext, TaskDefinition, TaskError, TaskOverride,
    TaskStatus, Worker, WorkerConfig,
};
use anyhow::{ensure, Context, Result};

use crate::harness::{test_db, wait_for_status};

/// One retry allowed, so a task failing twice has used up its policy.
static FLAKY: TaskDefinition = TaskDefinition {
    name: "Flaky",
    retry: Some(RetryDefaults {
        intervals_ms: &[10],
        always_retry_on_failure: false,
        max_retries: Some(1),
    }),
    timeout_ms: 10_000,
    cron: None,
    on_failed: None,
    default_params: "{}",
    max_rescues: None,
    queue: anchor_runtime::DEFAULT_QUEUE,
    priority: 0,
};

static LATER: TaskDefinition = TaskDefinition {
    name: "Later",
    retry: None,
    timeout_ms: 10_000,
    cron: None,
    on_failed: None,
    default_params: "{}",
    max_rescues: None,
    queue: anchor_runtime::DEFAULT_QUEUE,
    priority: 0,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_task_retried_by_hand_runs_again_with_a_fresh_retry_budget() -> Result<()> {
    let db = test_db().await?;
    // Fails its first two runs (the run and its one retry), then succeeds.
    let runs = Arc::new(AtomicU32::new(0));
    let mut registry = Registry::new();
    let counter = runs.clone();
    registry.register(&FLAKY, move |_ctx: TaskContext, _p: serde_json::Value| {
        let run = counter.fetch_add(1, Ordering::SeqCst) + 1;
        async move {
            if run <= 2 {
                Err(TaskError::failed(format!("run {run} fails")))
            } else {
                Ok(())
            }
        }
    });
    let worker = Worker::new(db.client.clone(), registry, WorkerConfig::default())?.start();
    let id = db
        .client
        .enqueue(&FLAKY, &serde_json::json!({}), &[])
        .await?;
    let failed =
        wait_for_status(&db.client, id, TaskStatus::Failed, Duration::from_secs(20)).await?;
    ensure!(failed.attempts == 2 && failed.failures == 2, "{failed:?}");

    ensure!(db.client.retry_task(id).await?, "a failed task is retried");
    let done = wait_for_status(
        &db.client,
        id,
        TaskStatus::Completed,
        Duration::from_secs(20),
    )
    .await?;
    worker.shutdown().await;
    // The runs are numbered on, the history kept; the retry budget started afresh.
    ensure!(done.attempts == 3, "attempts {}", done.attempts);
    ensure!(done.failures == 0, "failures {}", done.failures);
    ensure!(done.errors.len() == 2, "{:?}", done.errors);
    // A completed task is not retried.
    ensure!(!db.client.retry_task(id).await?);
    Ok(())
}

#[tokio::test]
async fn retry_makes_a_delayed_or_cancelled_task_due_now() -> Result<()> {
    let db = test_db().await?;
    let later = [TaskOverride::run_after(Duration::from_secs(3600))];
    let delayed = db
        .client
        .enqueue(&LATER, &serde_json::json!({}), &later)
        .await?;
    ensure!(db.client.retry_task(delayed).await?);
    let task = db.client.get_task(delayed).await?.context("task")?;
    ensure!(task.status == TaskStatus::Pending);
    ensure!(
        task.run_after <= chrono::Utc::now(),
        "due now: {}",
        task.run_after
    );
    // Already due: nothing to do.
    ensure!(!db.client.retry_task(delayed).await?);

    let cancelled = db
        .client
        .enqueue(&LATER, &serde_json::json!({}), &later)
        .await?;
    ensure!(db.client.cancel_task(cancelled).await?);
    ensure!(db.client.retry_task(cancelled).await?);
    let task = db.client.get_task(cancelled).await?.context("task")?;
    ensure!(
        task.status == TaskStatus::Pending && task.finished_at.is_none(),
        "{task:?}"
    );
    ensure!(
        !db.client
            .retry_task(anchor_runtime::TaskId::new(i64::MAX))
            .await?
    );
    Ok(())
}

#[tokio::test]
async fn retrying_a_task_whose_unique_tag_was_taken_says_so_and_changes_nothing() -> Result<()> {
    let db = test_db().await?;
    let tag = [TaskOverride::unique_tag("report-7")];
    let first = db
        .client
        .enqueue(&LATER, &serde_json::json!({}), &tag)
        .await?;
    ensure!(db.client.cancel_task(first).await?);
    // The cancelled task freed the tag; a new one takes it.
    let second = db
        .client
        .enqueue(&LATER, &serde_json::json!({}), &tag)
        .await?;
    ensure!(second != first);
    let err = db
        .client
        .retry_task(first)
        .await
        .expect_err("the tag is taken");
    ensure!(err.kind() == ErrorKind::InvalidOverride, "{err}");
    ensure!(err.to_string().contains("unique tag"), "{err}");
    let task = db.client.get_task(first).await?.context("task")?;
    ensure!(task.status == TaskStatus::Cancelled, "{task:?}");
    Ok(())
}

#[tokio::test]
async fn only_finished_tasks_are_deleted() -> Result<()> {
    let db = test_db().await?;
    let id = db
        .client
        .enqueue(&LATER, &serde_json::json!({}), &[])
        .await?;
    ensure!(!db.client.delete_task(id).await?, "a pending task is kept");
    ensure!(db.client.get_task(id).await?.is_some());
    ensure!(db.client.cancel_task(id).await?);
    ensure!(
        db.client.delete_task(id).await?,
        "a cancelled task is deleted"
    );
    ensure!(db.client.get_task(id).await?.is_none());
    ensure!(!db.client.delete_task(id).await?, "already gone");
    Ok(())
}
