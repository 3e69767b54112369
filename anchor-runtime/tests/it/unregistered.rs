//! Tasks whose name no live worker has registered: noted once on the task ("an
//! unknown task name … is recorded on the task"), left pending, and run as soon as a worker
//! that knows the name starts. Workers' heartbeat rows go away at graceful shutdown.

use std::time::Duration;

use anchor_runtime::{
    Client, Registry, TaskContext, TaskDefinition, TaskError, TaskId, TaskStatus, Worker,
    WorkerConfig,
};
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::harness::{test_db, wait_for, wait_for_status};

#[derive(Serialize, Deserialize)]
struct Job {
    n: i64,
}

const fn def(name: &'static str) -> TaskDefinition {
    TaskDefinition {
        name,
        retry: None,
        timeout_ms: 600_000,
        cron: None,
        on_failed: None,
        default_params: "{}",
        max_rescues: None,
        queue: "default",
        priority: 0,
    }
}

static KNOWN: TaskDefinition = def("Known");
static OTHER: TaskDefinition = def("Other");
static GHOST: TaskDefinition = def("Ghost");

const LONG: Duration = Duration::from_secs(30);

fn config() -> WorkerConfig {
    WorkerConfig::default()
        .with_poll_interval(Duration::from_millis(100))
        .with_heartbeat_interval(Duration::from_millis(100))
        .with_unregistered_grace(Duration::from_millis(500))
        .with_rescue_interval(Duration::from_millis(100))
        .with_shutdown_grace(Duration::from_secs(1))
}

fn registry(defs: &[&'static TaskDefinition]) -> Registry {
    let mut registry = Registry::new();
    for def in defs {
        registry.register(def, |_ctx: TaskContext, job: Job| async move {
            if job.n < 0 {
                // Holds its worker's only slot.
                tokio::time::sleep(Duration::from_secs(600)).await;
            }
            Ok::<(), TaskError>(())
        });
    }
    registry
}

/// The messages in a task's error history.
async fn messages(client: &Client, id: TaskId) -> Result<Vec<(u32, String)>> {
    let task = client.get_task(id).await?.context("the task exists")?;
    Ok(task
        .errors
        .into_iter()
        .map(|e| (e.attempt, e.message))
        .collect())
}

#[tokio::test]
async fn a_task_no_live_worker_knows_is_noted_once_and_runs_when_one_starts() -> Result<()> {
    let db = test_db().await?;
    // Worker "other" knows only Other and is kept busy, so a second Other task stays
    // pending past the grace while a live worker has its name registered.
    let other = Worker::new(
        db.client.clone(),
        registry(&[&OTHER]),
        config()
            .with_worker_id("other")
            .with_concurrency(1)
            .with_prefetch(0)
            .with_rescue_interval(Duration::from_secs(3600)),
    )?
    .start();
    let busy = db.client.enqueue(&OTHER, &Job { n: -1 }, &[]).await?;
    wait_for_status(&db.client, busy, TaskStatus::Running, LONG).await?;
    let waiting = db.client.enqueue(&OTHER, &Job { n: 1 }, &[]).await?;
    let checker = Worker::new(
        db.client.clone(),
        registry(&[&KNOWN]),
        config().with_worker_id("checker"),
    )?
    .start();
    let ghost = db.client.enqueue(&GHOST, &Job { n: 1 }, &[]).await?;

    let noted = wait_for("the ghost task to be noted", LONG, || async {
        let m = messages(&db.client, ghost).await?;
        Ok((!m.is_empty()).then_some(m))
    })
    .await?;
    assert_eq!(
        noted,
        vec![(
            0,
            "no running worker has task `Ghost` registered (known: Known, Other); \
             it stays pending until one does"
                .to_string()
        )]
    );
    let task = db
        .client
        .get_task(ghost)
        .await?
        .context("the task exists")?;
    assert_eq!(task.status, TaskStatus::Pending);
    assert_eq!(task.attempts, 0);
    // Several more passes: the note is written once, and a task a live worker knows is
    // never noted.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(messages(&db.client, ghost).await?.len(), 1);
    assert!(messages(&db.client, waiting).await?.is_empty());
    assert_eq!(
        db.client.get_task(waiting).await?.context("exists")?.status,
        TaskStatus::Pending
    );

    // A graceful shutdown deletes the worker's row, so Other is no longer known by anyone
    // live and its waiting task gets its note too.
    other.shutdown().await;
    let rows = db.client.pool().get().await?;
    let other_rows: i64 = rows
        .query_one(
            "SELECT count(*) FROM anchor.workers WHERE id = 'other'",
            &[],
        )
        .await?
        .get(0);
    assert_eq!(other_rows, 0, "the stopped worker's row is gone");
    let noted = wait_for("the waiting Other task to be noted", LONG, || async {
        let m = messages(&db.client, waiting).await?;
        Ok((!m.is_empty()).then_some(m))
    })
    .await?;
    assert_eq!(
        noted,
        vec![(
            0,
            "no running worker has task `Other` registered (known: Known); \
             it stays pending until one does"
                .to_string()
        )]
    );

    // A worker that knows Ghost runs it; the note stays in its history.
    let ghostly = Worker::new(
        db.client.clone(),
        registry(&[&GHOST]),
        config().with_worker_id("ghostly"),
    )?
    .start();
    let task = wait_for_status(&db.client, ghost, TaskStatus::Completed, LONG).await?;
    assert_eq!(task.attempts, 1);
    assert_eq!(task.errors.len(), 1);
    ghostly.shutdown().await;
    checker.shutdown().await;
    let left: i64 = rows
        .query_one("SELECT count(*) FROM anchor.workers", &[])
        .await?
        .get(0);
    assert_eq!(left, 0, "every stopped worker removed its row");
    Ok(())
}
