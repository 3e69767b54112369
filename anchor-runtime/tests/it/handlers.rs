//! What a failure hands on: the `onFailed` handler gets its own settings whichever worker
//! fails the task, and a failed task frees its unique tag.

use std::time::Duration;

use anchor_runtime::TaskId;
use anchor_runtime::{
    Client, Registry, RetryDefaults, TaskContext, TaskDefinition, TaskError, TaskOverride,
    TaskStatus, Worker, WorkerConfig,
};
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::harness::{count, test_db, wait_for, wait_for_status};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Job {
    n: i64,
}

const LONG: Duration = Duration::from_secs(30);

/// A handler with settings of its own: a retry policy, a 5 s timeout, a default parameter.
static NOTIFY_OPS: TaskDefinition = TaskDefinition {
    name: "NotifyOps",
    retry: Some(RetryDefaults {
        intervals_ms: &[250, 500],
        always_retry_on_failure: false,
        max_retries: Some(2),
    }),
    timeout_ms: 5_000,
    cron: None,
    on_failed: None,
    default_params: r#"{"channel":"ops"}"#,
    max_rescues: Some(2),
    queue: "default",
    priority: 0,
};

static FAILS: TaskDefinition = TaskDefinition {
    name: "Fails",
    retry: None,
    timeout_ms: 60_000,
    cron: None,
    on_failed: Some("NotifyOps"),
    default_params: "{}",
    max_rescues: None,
    queue: "default",
    priority: 0,
};

fn config() -> WorkerConfig {
    WorkerConfig::default().with_poll_interval(Duration::from_millis(100))
}

#[tokio::test]
async fn a_handler_unknown_to_the_failing_worker_gets_its_own_settings() -> Result<()> {
    let db = test_db().await?;
    // The handler's service runs a worker (here with the handler's handler disabled, so
    // that the enqueued handler task stays pending for inspection).
    let mut handlers = Registry::new();
    handlers.define(&NOTIFY_OPS);
    let handler_service = Worker::new(db.client.clone(), handlers, config())?.start();
    wait_for("the handler's definition to be stored", LONG, || async {
        let conn = db.client.pool().get().await?;
        let row = conn
            .query_opt(
                "SELECT 1 FROM anchor.task_definitions WHERE name = 'NotifyOps'",
                &[],
            )
            .await;
        Ok(row.ok().flatten().map(|_| ()))
    })
    .await?;
    // Another service's worker knows `Fails` but not its handler.
    let mut registry = Registry::new();
    registry.register(&FAILS, |_ctx: TaskContext, _job: Job| async {
        Err::<(), TaskError>(TaskError::fatal("no"))
    });
    let worker = Worker::new(Client::connect(&db.url).await?, registry, config())?.start();
    let id = db.client.enqueue(&FAILS, &Job { n: 1 }, &[]).await?;
    wait_for_status(&db.client, id, TaskStatus::Failed, LONG).await?;
    let handler_id = wait_for("the handler task", LONG, || async {
        let conn = db.client.pool().get().await?;
        let row = conn
            .query_opt("SELECT id FROM anchor.tasks WHERE parent_id = $1", &[&id])
            .await?;
        Ok(row.map(|r| r.get::<_, TaskId>(0)))
    })
    .await?;
    let handler = db
        .client
        .get_task(handler_id)
        .await?
        .context("row exists")?;
    assert_eq!(handler.name, "NotifyOps");
    assert_eq!(handler.settings.timeout, Duration::from_secs(5));
    let policy = handler.settings.retry.as_ref().context("a retry policy")?;
    assert_eq!(
        policy.intervals,
        [Duration::from_millis(250), Duration::from_millis(500)]
    );
    assert_eq!(policy.max_retries, Some(2));
    assert_eq!(handler.settings.max_rescues, Some(2));
    assert_eq!(
        handler.payload,
        serde_json::json!({"channel": "ops", "taskID": id})
    );
    worker.shutdown().await;
    handler_service.shutdown().await;
    Ok(())
}

static TAGGED: TaskDefinition = TaskDefinition {
    name: "Tagged",
    on_failed: None,
    ..FAILS
};

#[tokio::test]
async fn a_failed_task_frees_its_unique_tag_and_a_tag_can_be_freed() -> Result<()> {
    let db = test_db().await?;
    let mut registry = Registry::new();
    registry.register(&TAGGED, |_ctx: TaskContext, job: Job| async move {
        if job.n == 1 {
            Err(TaskError::fatal("the first one fails"))
        } else {
            Ok(())
        }
    });
    let worker = Worker::new(db.client.clone(), registry, config())?.start();
    let tag = [TaskOverride::unique_tag("invoice-7")];
    let first = db.client.enqueue(&TAGGED, &Job { n: 1 }, &tag).await?;
    wait_for_status(&db.client, first, TaskStatus::Failed, LONG).await?;
    // The failed task no longer holds the tag: the same work can be enqueued again.
    let second = db.client.enqueue(&TAGGED, &Job { n: 2 }, &tag).await?;
    assert_ne!(second, first, "a failed task frees its tag");
    wait_for_status(&db.client, second, TaskStatus::Completed, LONG).await?;
    // A completed task keeps its tag (the work is done) until it is freed.
    assert_eq!(
        db.client.enqueue(&TAGGED, &Job { n: 3 }, &tag).await?,
        second
    );
    assert_eq!(db.client.free_unique_tag("invoice-7").await?, Some(second));
    assert_eq!(db.client.free_unique_tag("invoice-7").await?, None);
    let third = db.client.enqueue(&TAGGED, &Job { n: 3 }, &tag).await?;
    assert!(third != first && third != second);
    wait_for_status(&db.client, third, TaskStatus::Completed, LONG).await?;
    assert_eq!(count(&db.client, "unique_tag = 'invoice-7'").await?, 2);
    worker.shutdown().await;
    Ok(())
}
