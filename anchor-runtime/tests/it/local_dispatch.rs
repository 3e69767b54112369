//! Local dispatch: a due task enqueued through the client an idle worker of this process
//! runs on is inserted already leased to that worker and started there, with no claim.
//!
//! Such a row is written `running` by the insert itself, so its `started_at` equals its
//! `created_at` (one statement, one `now()`); a claimed task starts in a later transaction.
//! The tests tell the two paths apart by that, and check every case where the task must
//! take the ordinary path instead.

use std::sync::Arc;
use std::time::Duration;

use anchor_runtime::{
    Client, Registry, RetryDefaults, TaskContext, TaskDefinition, TaskError, TaskId, TaskOverride,
    TaskRecord, TaskStatus, Worker, WorkerConfig, WorkerHandle,
};
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;

use crate::harness::{error_messages, test_db, wait_for, wait_for_status};

#[derive(Serialize, Deserialize)]
struct Job {
    n: i64,
}

/// Retried (10 ms apart) so that a rescued run goes again.
static GATED: TaskDefinition = TaskDefinition {
    name: "Gated",
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
};

static OTHER: TaskDefinition = TaskDefinition {
    name: "NotRunHere",
    ..GATED
};

const LONG: Duration = Duration::from_secs(30);

/// A worker whose `Gated` runs each wait for one permit of the returned semaphore, and
/// which runs `Probe` (see [`wait_until_idle`]).
fn gated_worker(client: &Client, config: WorkerConfig) -> (WorkerHandle, Arc<Semaphore>) {
    let gate = Arc::new(Semaphore::new(0));
    let mut registry = Registry::new();
    with_probe(&mut registry);
    let handler_gate = gate.clone();
    registry.register(&GATED, move |_ctx: TaskContext, _job: Job| {
        let gate = handler_gate.clone();
        async move {
            gate.acquire()
                .await
                .map_err(|e| TaskError::failed(e.to_string()))?
                .forget();
            Ok::<(), TaskError>(())
        }
    });
    (
        Worker::new(client.clone(), registry, config)
            .expect("a workable worker configuration")
            .start(),
        gate,
    )
}

fn config() -> WorkerConfig {
    WorkerConfig::default()
        .with_concurrency(2)
        .with_poll_interval(Duration::from_millis(100))
}

fn started_locally(task: &TaskRecord) -> bool {
    task.started_at == Some(task.created_at)
}

async fn record(client: &Client, id: TaskId) -> Result<TaskRecord> {
    client.get_task(id).await?.context("task vanished")
}

/// Waits until the worker has claimed once and found the queue empty.
async fn wait_until_idle(client: &Client) -> Result<()> {
    // A probe enqueued while the worker is idle starts locally; before that it is claimed.
    // Either way it completes, and once one has started locally the worker is idle.
    wait_for("the worker to go idle", LONG, || async {
        let id = client.enqueue(&PROBE, &Job { n: 0 }, &[]).await?;
        let task = wait_for_status(client, id, TaskStatus::Completed, LONG).await?;
        Ok(started_locally(&task).then_some(()))
    })
    .await
}

static PROBE: TaskDefinition = TaskDefinition {
    name: "Probe",
    ..GATED
};

fn with_probe(registry: &mut Registry) {
    registry.register(&PROBE, |_ctx: TaskContext, _job: Job| async {
        Ok::<(), TaskError>(())
    });
}

#[tokio::test]
async fn an_idle_worker_starts_a_task_enqueued_through_its_client_without_a_claim() -> Result<()> {
    let db = test_db().await?;
    let (worker, gate) = gated_worker(&db.client, config());
    wait_until_idle(&db.client).await?;
    let id = db.client.enqueue(&GATED, &Job { n: 1 }, &[]).await?;
    // Running the moment enqueue returns, leased to this worker; like a claimed task, its
    // run counts as an attempt once its start is recorded or its outcome written.
    let task = record(&db.client, id).await?;
    assert_eq!(task.status, TaskStatus::Running);
    assert_eq!(task.lease_owner.as_deref(), Some(worker.worker_id()));
    assert!(task.attempts <= 1, "{task:?}");
    assert!(started_locally(&task), "{task:?}");
    assert!(task.lease_expires_at > Some(task.created_at));
    wait_for("the run to start", LONG, || async {
        Ok((worker.running() == 1).then_some(()))
    })
    .await?;
    gate.add_permits(1);
    let done = wait_for_status(&db.client, id, TaskStatus::Completed, LONG).await?;
    assert_eq!((done.attempts, done.failures), (1, 0));
    assert!(done.lease_owner.is_none());
    worker.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn a_busy_worker_a_transaction_a_delay_or_another_name_take_the_claim() -> Result<()> {
    let db = test_db().await?;
    let (worker, gate) = gated_worker(&db.client, config());
    wait_until_idle(&db.client).await?;

    // Inside a transaction: the row must stay invisible until commit, so no lease is taken.
    let mut conn = db.client.pool().get().await?;
    let tx = conn.transaction().await?;
    let in_tx = db
        .client
        .enqueue_with_tx(&tx, &GATED, &Job { n: 1 }, &[])
        .await?;
    tx.commit().await?;
    // Delayed: not due, so nothing to start.
    let delayed = db
        .client
        .enqueue(
            &GATED,
            &Job { n: 2 },
            &[TaskOverride::run_after(Duration::from_millis(300))],
        )
        .await?;
    // A name this worker does not run.
    let other = db.client.enqueue(&OTHER, &Job { n: 3 }, &[]).await?;
    assert_eq!(record(&db.client, other).await?.status, TaskStatus::Pending);

    // Both slots now hold the first two: a third waits for the claim.
    for id in [in_tx, delayed] {
        let task = wait_for_status(&db.client, id, TaskStatus::Running, LONG).await?;
        assert!(!started_locally(&task), "{task:?}");
    }
    let queued = db.client.enqueue(&GATED, &Job { n: 4 }, &[]).await?;
    let task = record(&db.client, queued).await?;
    assert_eq!(task.status, TaskStatus::Pending, "no free slot: {task:?}");
    gate.add_permits(3);
    for id in [in_tx, delayed, queued] {
        let task = wait_for_status(&db.client, id, TaskStatus::Completed, LONG).await?;
        assert!(!started_locally(&task), "{task:?}");
    }
    assert_eq!(record(&db.client, other).await?.status, TaskStatus::Pending);
    worker.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn local_dispatch_can_be_turned_off_and_never_outlives_shutdown() -> Result<()> {
    let db = test_db().await?;
    let (worker, gate) = gated_worker(&db.client, config().with_local_dispatch(false));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let id = db.client.enqueue(&GATED, &Job { n: 1 }, &[]).await?;
    gate.add_permits(1);
    let task = wait_for_status(&db.client, id, TaskStatus::Completed, LONG).await?;
    assert!(!started_locally(&task), "{task:?}");
    worker.shutdown().await;

    // Once a worker has stopped, tasks enqueued through its client wait for another one.
    let (worker, _gate) = gated_worker(&db.client, config());
    wait_until_idle(&db.client).await?;
    worker.shutdown().await;
    let id = db.client.enqueue(&GATED, &Job { n: 2 }, &[]).await?;
    let task = record(&db.client, id).await?;
    assert_eq!(task.status, TaskStatus::Pending);
    assert!(task.lease_owner.is_none());
    Ok(())
}

#[tokio::test]
async fn a_taken_unique_tag_frees_the_reserved_slot() -> Result<()> {
    let db = test_db().await?;
    let (worker, gate) = gated_worker(&db.client, config());
    wait_until_idle(&db.client).await?;
    let tag = [TaskOverride::unique_tag("only-one")];
    let first = db.client.enqueue(&GATED, &Job { n: 1 }, &tag).await?;
    assert!(started_locally(&record(&db.client, first).await?));
    for n in 2..6 {
        let again = db.client.enqueue(&GATED, &Job { n }, &tag).await?;
        assert_eq!(again, first, "the tag names the running task");
    }
    // The four refused enqueues reserved and freed a slot each: one run, one slot in use.
    assert_eq!(worker.running(), 1);
    // The second slot is still free for local dispatch.
    let second = db.client.enqueue(&GATED, &Job { n: 7 }, &[]).await?;
    assert!(started_locally(&record(&db.client, second).await?));
    gate.add_permits(2);
    for id in [first, second] {
        wait_for_status(&db.client, id, TaskStatus::Completed, LONG).await?;
    }
    worker.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn a_task_started_locally_by_a_worker_that_dies_is_rescued() -> Result<()> {
    let db = test_db().await?;
    let lease = Duration::from_millis(800);
    let (worker, _gate) = gated_worker(
        &db.client,
        config()
            .with_lease_duration(lease)
            .with_rescue_interval(Duration::from_secs(3600)),
    );
    wait_until_idle(&db.client).await?;
    let id = db.client.enqueue(&GATED, &Job { n: 1 }, &[]).await?;
    let task = record(&db.client, id).await?;
    assert!(started_locally(&task), "{task:?}");
    wait_for("the run's start to be recorded", LONG, || async {
        Ok((record(&db.client, id).await?.attempts == 1).then_some(()))
    })
    .await?;
    // The process "dies": nothing is written, the lease is left to expire.
    worker.abort();
    let other_client = Client::connect(&db.url).await?;
    let (rescuer, gate) = gated_worker(
        &other_client,
        WorkerConfig::default().with_rescue_interval(Duration::from_millis(100)),
    );
    gate.add_permits(1);
    let task = wait_for_status(&db.client, id, TaskStatus::Completed, LONG).await?;
    assert_eq!(task.attempts, 2);
    assert_eq!((task.failures, task.rescues), (0, 1));
    let messages = error_messages(&task);
    assert!(
        messages.len() == 1 && messages[0].starts_with("worker lost"),
        "{messages:?}"
    );
    rescuer.shutdown().await;
    Ok(())
}

/// A task that had to wait (no free slot) is not overtaken by one enqueued later, even on a
/// client with no LISTEN connection, where no notification would tell the worker about it.
#[tokio::test]
async fn a_task_waiting_for_a_slot_is_not_overtaken_by_a_local_dispatch() -> Result<()> {
    let db = test_db().await?;
    // Built from a pool alone: workers on it poll (here every 10 s) and hear no NOTIFY.
    let client = Client::from_pool(db.client.pool().clone());
    let (worker, gate) = gated_worker(
        &client,
        config()
            .with_concurrency(1)
            .with_poll_interval(Duration::from_secs(10)),
    );
    wait_until_idle(&client).await?;
    let first = client.enqueue(&GATED, &Job { n: 1 }, &[]).await?;
    assert!(started_locally(&record(&client, first).await?));
    let waiting = client.enqueue(&GATED, &Job { n: 2 }, &[]).await?;
    assert_eq!(record(&client, waiting).await?.status, TaskStatus::Pending);
    gate.add_permits(1);
    wait_for_status(&client, first, TaskStatus::Completed, LONG).await?;
    // The slot is free again. Without the in-process wake-up the worker would sit idle until
    // its next poll and this task would start locally ahead of the waiting one.
    let later = client.enqueue(&GATED, &Job { n: 3 }, &[]).await?;
    let waiting_task = wait_for_status(&client, waiting, TaskStatus::Running, LONG).await?;
    let later_task = record(&client, later).await?;
    assert!(!started_locally(&later_task), "{later_task:?}");
    gate.add_permits(2);
    let later_task = wait_for_status(&client, later, TaskStatus::Completed, LONG).await?;
    assert!(
        waiting_task.started_at < later_task.started_at,
        "the waiting task started first: {waiting_task:?} {later_task:?}"
    );
    worker.shutdown().await;
    Ok(())
}

/// An enqueue whose caller gives up mid-insert (a request timeout, a `select!`) must still
/// leave a task that runs: the row may be written `running`, leased to the local worker.
#[tokio::test]
async fn a_local_dispatch_whose_caller_gives_up_mid_insert_still_runs() -> Result<()> {
    let db = test_db().await?;
    // A long lease: the task must run because the worker took it, not because a rescuer
    // found its lease expired.
    let (worker, gate) = gated_worker(
        &db.client,
        config().with_lease_duration(Duration::from_secs(120)),
    );
    wait_until_idle(&db.client).await?;
    // Another session holds the tag in an open transaction, so the insert waits on it.
    let mut other = db.client.pool().get().await?;
    let tx = other.transaction().await?;
    tx.execute(
        "INSERT INTO anchor.tasks (name, payload, unique_tag, timeout_ms) VALUES ('Other', '{}', 't', 1000)",
        &[],
    )
    .await?;
    let tag = [TaskOverride::unique_tag("t")];
    let gave_up = tokio::time::timeout(
        Duration::from_millis(300),
        db.client.enqueue(&GATED, &Job { n: 1 }, &tag),
    )
    .await;
    assert!(gave_up.is_err(), "the insert waited on the other session");
    // The other session gives the tag up; the abandoned insert now goes through.
    tx.rollback().await?;
    gate.add_permits(1);
    let id = wait_for("the abandoned enqueue's row", LONG, || async {
        let conn = db.client.pool().get().await?;
        let row = conn
            .query_opt("SELECT id FROM anchor.tasks WHERE unique_tag = 't'", &[])
            .await?;
        Ok(row.map(|r| r.get::<_, TaskId>(0)))
    })
    .await?;
    let task = wait_for_status(
        &db.client,
        id,
        TaskStatus::Completed,
        Duration::from_secs(15),
    )
    .await?;
    assert_eq!(
        task.rescues, 0,
        "run by the worker it was leased to, not rescued"
    );
    worker.shutdown().await;
    Ok(())
}
