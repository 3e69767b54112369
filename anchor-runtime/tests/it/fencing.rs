//! Self-fencing: a worker whose lease renewal cannot get through (here another session
//! holds the task's row lock, so the renewal skips it) stops the run itself before the lease
//! can expire, records no outcome, and the rescuer that takes the expired lease returns the
//! task to `pending` as a rescue (not a failure). The task never runs on two workers at once.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anchor_runtime::{
    Registry, RetryDefaults, TaskContext, TaskDefinition, TaskError, TaskStatus, Worker,
    WorkerConfig,
};
use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::harness::{error_messages, test_db, wait_for, wait_for_status};

#[derive(Serialize, Deserialize)]
struct Job {
    n: i64,
}

/// A task retried up to three times, 10 ms apart.
const fn retried(name: &'static str) -> TaskDefinition {
    TaskDefinition {
        name,
        retry: Some(RetryDefaults {
            intervals_ms: &[10],
            always_retry_on_failure: false,
            max_retries: Some(3),
        }),
        timeout_ms: 600_000,
        cron: None,
        on_failed: None,
        default_params: "{}",
        max_rescues: None,
        queue: "default",
        priority: 0,
    }
}

static FENCED: TaskDefinition = retried("Fenced");

const LONG: Duration = Duration::from_secs(30);

/// Records when the run's future was dropped.
struct DropTime(Arc<Mutex<Option<DateTime<Utc>>>>);

impl Drop for DropTime {
    fn drop(&mut self) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(Utc::now());
    }
}

#[tokio::test]
async fn a_run_whose_lease_cannot_be_renewed_stops_before_the_lease_expires() -> Result<()> {
    let db = test_db().await?;
    let dropped_at = Arc::new(Mutex::new(None));
    let mut registry = Registry::new();
    let slot = dropped_at.clone();
    registry.register(&FENCED, move |ctx: TaskContext, _job: Job| {
        let slot = slot.clone();
        async move {
            if ctx.attempt() == 1 {
                let _guard = DropTime(slot);
                tokio::time::sleep(Duration::from_secs(600)).await;
            }
            Ok::<(), TaskError>(())
        }
    });
    // Renewals every 100 ms would keep a 2 s lease alive indefinitely; no rescuer runs in
    // this worker, so only the fence can stop the run.
    let worker = Worker::new(
        db.client.clone(),
        registry,
        WorkerConfig::default()
            .with_poll_interval(Duration::from_millis(100))
            .with_lease_duration(Duration::from_secs(2))
            .with_lease_renew_interval(Duration::from_millis(100))
            .with_rescue_interval(Duration::from_secs(3600))
            .with_shutdown_grace(Duration::from_secs(5)),
    )?
    .start();
    let id = db.client.enqueue(&FENCED, &Job { n: 1 }, &[]).await?;
    wait_for_status(&db.client, id, TaskStatus::Running, LONG).await?;
    // Let a few renewals succeed first, then lock the row as a long transaction would.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut locker = db.client.pool().get().await?;
    let tx = locker.transaction().await?;
    tx.execute(
        "SELECT 1 FROM anchor.tasks WHERE id = $1 FOR UPDATE",
        &[&id],
    )
    .await?;
    let dropped = wait_for("the run to stop itself", LONG, || async {
        Ok(*dropped_at.lock().unwrap_or_else(|e| e.into_inner()))
    })
    .await?;
    // A plain read is not blocked by the lock.
    let reader = db.client.pool().get().await?;
    let row = reader
        .query_one(
            "SELECT status, lease_expires_at, jsonb_array_length(errors) FROM anchor.tasks \
             WHERE id = $1",
            &[&id],
        )
        .await?;
    let expires: DateTime<Utc> = row
        .get::<_, Option<DateTime<Utc>>>(1)
        .context("the lease is still recorded")?;
    assert_eq!(row.get::<_, i16>(0), 1, "still running in the table");
    assert_eq!(row.get::<_, i32>(2), 0, "the stopped run recorded nothing");
    assert!(
        dropped < expires,
        "the run stopped at {dropped}, before its lease expired at {expires}"
    );
    assert_eq!(worker.running(), 0);
    tx.commit().await?;
    // A rescuer now takes the expired lease and the task runs again (a lost run is not a
    // failure); its start had been recorded, so the rescue notes the lost run.
    let rescuer = Worker::new(
        db.client.clone(),
        Registry::new(),
        WorkerConfig::default().with_rescue_interval(Duration::from_millis(100)),
    )?
    .start();
    let task = wait_for_status(&db.client, id, TaskStatus::Completed, LONG).await?;
    assert_eq!(task.attempts, 2);
    assert_eq!((task.failures, task.rescues), (0, 1));
    let messages = error_messages(&task);
    assert_eq!(messages.len(), 1, "{messages:?}");
    assert!(messages[0].starts_with("worker lost"), "{messages:?}");
    rescuer.shutdown().await;
    worker.shutdown().await;
    Ok(())
}

static HOLDER: TaskDefinition = retried("Holder");

/// Executors that hold every connection of the pool the worker uses, for four leases, do
/// not cost their own leases: renewals run on the worker's control connection. (When they
/// drew on the pool, the fence stopped every such run and each task was retried.)
#[tokio::test]
async fn tasks_holding_every_pooled_connection_keep_their_leases() -> Result<()> {
    let db = test_db().await?;
    let pool_size = 3;
    let client = anchor_runtime::Client::connect_with_pool_size(&db.url, pool_size).await?;
    let mut registry = Registry::new();
    let pool_client = client.clone();
    registry.register(&HOLDER, move |_ctx: TaskContext, _job: Job| {
        let pool_client = pool_client.clone();
        async move {
            let conn = pool_client
                .pool()
                .get()
                .await
                .map_err(|e| TaskError::failed(e.to_string()))?;
            tokio::time::sleep(Duration::from_secs(2)).await;
            drop(conn);
            Ok::<(), TaskError>(())
        }
    });
    let worker = Worker::new(
        client.clone(),
        registry,
        WorkerConfig::default()
            .with_concurrency(pool_size)
            .with_poll_interval(Duration::from_millis(100))
            .with_lease_duration(Duration::from_millis(500))
            .with_rescue_interval(Duration::from_millis(100)),
    )?
    .start();
    let mut ids = Vec::new();
    for n in 0..3 {
        ids.push(db.client.enqueue(&HOLDER, &Job { n }, &[]).await?);
    }
    for id in ids {
        let task = wait_for_status(&db.client, id, TaskStatus::Completed, LONG).await?;
        let errors = error_messages(&task);
        assert_eq!(
            (task.attempts, errors),
            (1, Vec::<&str>::new()),
            "task {id} lost its lease while it held a pooled connection"
        );
    }
    worker.shutdown().await;
    Ok(())
}
