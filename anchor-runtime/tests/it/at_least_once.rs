//! At-least-once delivery with the default settings: a worker that dies is not a failure of
//! the tasks it held, a task that never started counts no attempt, and a task that kills
//! every worker that runs it fails after a bounded number of rescues.
//!
//! A "killed" worker runs on a tokio runtime of its own on a thread of its own, which the
//! test drops mid-run: its tasks stop without any shutdown, release or outcome write, and
//! its connections close, exactly as when the process dies.

use std::time::Duration;

use anchor_runtime::TaskId;
use anchor_runtime::{
    Client, Registry, TaskContext, TaskDefinition, TaskError, TaskStatus, Worker, WorkerConfig,
    WorkerHandle,
};
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::harness::{count, test_db, wait_for, wait_for_status, KillableWorker, Ledger};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Job {
    n: i64,
}

#[derive(Debug, Clone, Deserialize)]
struct Handler {
    #[serde(rename = "taskID")]
    task_id: TaskId,
}

const LONG: Duration = Duration::from_secs(30);

/// Comfortably longer than the runtime's delay before it records a run's start (100 ms).
const RECORDED: Duration = Duration::from_millis(400);

/// A task with the defaults: no retry policy.
const fn plain(name: &'static str, on_failed: Option<&'static str>) -> TaskDefinition {
    TaskDefinition {
        name,
        retry: None,
        timeout_ms: 60_000,
        cron: None,
        on_failed,
        default_params: "{}",
        max_rescues: None,
        queue: "default",
        priority: 0,
    }
}

/// Short leases so that a lost worker's tasks come back within a second.
fn config() -> WorkerConfig {
    WorkerConfig::default()
        .with_poll_interval(Duration::from_millis(200))
        .with_lease_duration(Duration::from_millis(600))
        .with_rescue_interval(Duration::from_millis(200))
        .with_shutdown_grace(Duration::from_secs(2))
}

fn start(client: &Client, registry: Registry, config: WorkerConfig) -> WorkerHandle {
    Worker::new(client.clone(), registry, config)
        .expect("a workable worker configuration")
        .start()
}

static HELD: TaskDefinition = plain("Held", None);

/// Registers `def` with a handler that records its run and then, with `hang`, never ends
/// (the doomed worker's), else succeeds (the healthy worker's).
fn recorded(def: &'static TaskDefinition, ledger: &Ledger, hang: bool) -> Registry {
    let mut registry = Registry::new();
    let ledger = ledger.clone();
    registry.register(def, move |ctx: TaskContext, _job: Job| {
        let run = ledger.start(ctx.id(), ctx.attempt());
        async move {
            let _run = run;
            if hang {
                tokio::time::sleep(Duration::from_secs(600)).await;
            }
            Ok::<(), TaskError>(())
        }
    });
    registry
}

#[tokio::test]
async fn a_lost_worker_does_not_fail_a_task_without_a_retry_policy() -> Result<()> {
    let db = test_db().await?;
    let ledger = Ledger::default();
    let doomed = KillableWorker::start(&db.url, recorded(&HELD, &ledger, true), config());
    let id = db.client.enqueue(&HELD, &Job { n: 1 }, &[]).await?;
    wait_for("the doomed worker to start the task", LONG, || async {
        Ok((ledger.runs(id) == 1).then_some(()))
    })
    .await?;
    // Past the moment its start is recorded (runs shorter than that are counted with
    // their outcome; one lost sooner is not counted, see docs/reliability.md).
    tokio::time::sleep(RECORDED).await;
    doomed.kill()?;

    let worker = start(&db.client, recorded(&HELD, &ledger, false), config());
    let task = wait_for("the task to finish", LONG, || async {
        let task = db.client.get_task(id).await?.context("row exists")?;
        Ok(matches!(task.status, TaskStatus::Completed | TaskStatus::Failed).then_some(task))
    })
    .await?;
    assert_eq!(
        task.status,
        TaskStatus::Completed,
        "a lost worker is not a failure of the task: {:?}",
        task.errors
    );
    assert_eq!(task.attempts, 2, "two runs started");
    assert_eq!(task.failures, 0, "a rescue uses up no retry");
    assert_eq!(ledger.runs(id), 2);
    assert!(ledger.overlaps().is_empty());
    worker.shutdown().await;
    Ok(())
}

static BUFFERED: TaskDefinition = plain("Buffered", None);

#[tokio::test]
async fn tasks_claimed_but_never_started_count_no_attempt() -> Result<()> {
    let db = test_db().await?;
    let ledger = Ledger::default();
    // One slot and a buffer: the first task hangs in the slot, the other five wait in the
    // buffer, leased, when the worker dies (within the second a buffered task may wait).
    let params: Vec<Job> = (0..6).map(|n| Job { n }).collect();
    let ids = db.client.enqueue_many(&BUFFERED, &params, &[]).await?;
    let doomed = KillableWorker::start(
        &db.url,
        recorded(&BUFFERED, &ledger, true),
        config().with_concurrency(1).with_prefetch(5),
    );
    wait_for(
        "the doomed worker to run one and buffer five",
        LONG,
        || async {
            let leased = count(&db.client, "status = 1").await?;
            Ok((leased == 6 && ledger.all_runs().len() == 1).then_some(()))
        },
    )
    .await?;
    // Within the second a buffered task may wait, and past the recording of the first
    // run's start.
    tokio::time::sleep(RECORDED).await;
    doomed.kill()?;

    let (first, rest): (Vec<&TaskId>, Vec<&TaskId>) =
        ids.iter().partition(|id| ledger.runs(**id) == 1);
    let first = *first[0];
    let worker = start(&db.client, recorded(&BUFFERED, &ledger, false), config());
    wait_for("all six tasks to finish", LONG, || async {
        Ok((count(&db.client, "status IN (2, 3)").await? == 6).then_some(()))
    })
    .await?;
    for id in rest {
        let task = db.client.get_task(*id).await?.context("row exists")?;
        assert_eq!(
            task.status,
            TaskStatus::Completed,
            "task {id}: {:?}",
            task.errors
        );
        assert_eq!(task.attempts, 1, "task {id} started once: {:?}", task);
        assert_eq!(ledger.starts(*id).len(), 1);
        assert_eq!(
            ledger.starts(*id)[0].0,
            1,
            "its only run is its first attempt"
        );
    }
    let task = db.client.get_task(first).await?.context("row exists")?;
    assert_eq!(task.status, TaskStatus::Completed, "{:?}", task.errors);
    assert_eq!(task.attempts, 2);
    worker.shutdown().await;
    Ok(())
}

static POISON: TaskDefinition = plain("Poison", Some("PoisonFailed"));
static POISON_FAILED: TaskDefinition = plain("PoisonFailed", None);

#[tokio::test]
async fn a_task_that_kills_every_worker_fails_after_its_rescues_with_its_handler_once() -> Result<()>
{
    let db = test_db().await?;
    let ledger = Ledger::default();
    let handled = Ledger::default();
    let (started_tx, mut started_rx) = tokio::sync::mpsc::unbounded_channel::<u32>();
    let make_registry = || {
        let mut registry = Registry::new();
        let ledger = ledger.clone();
        let started = started_tx.clone();
        // Every run "kills its worker": once its start is recorded, it tells the test,
        // which drops the worker's runtime.
        registry.register(&POISON, move |ctx: TaskContext, _job: Job| {
            let run = ledger.start(ctx.id(), ctx.attempt());
            let started = started.clone();
            async move {
                let _run = run;
                tokio::time::sleep(RECORDED).await;
                let _ = started.send(ctx.attempt());
                tokio::time::sleep(Duration::from_secs(600)).await;
                Ok::<(), TaskError>(())
            }
        });
        let handled = handled.clone();
        registry.register(&POISON_FAILED, move |ctx: TaskContext, h: Handler| {
            let run = handled.start(h.task_id, ctx.attempt());
            async move {
                drop(run);
                Ok::<(), TaskError>(())
            }
        });
        registry
    };
    let id = db.client.enqueue(&POISON, &Job { n: 1 }, &[]).await?;
    let mut kills = 0;
    loop {
        let task = db.client.get_task(id).await?.context("row exists")?;
        if task.status == TaskStatus::Failed || kills >= 20 {
            break;
        }
        let doomed = KillableWorker::start(&db.url, make_registry(), config().with_max_rescues(3));
        let started = tokio::time::timeout(Duration::from_secs(10), started_rx.recv()).await;
        doomed.kill()?;
        if started.is_ok() {
            kills += 1;
        }
    }
    // A healthy worker rescues the last lost run, fails the task and runs its handler.
    let worker = start(&db.client, make_registry(), config().with_max_rescues(3));
    let task = wait_for_status(&db.client, id, TaskStatus::Failed, LONG).await?;
    assert_eq!(kills, 3, "three runs killed their worker, then it failed");
    assert_eq!(task.rescues, 3);
    assert_eq!(task.attempts, 3);
    assert_eq!(task.failures, 0);
    let last = task.errors.last().context("an error is recorded")?;
    assert!(
        last.message.starts_with("worker lost 3 times"),
        "{}",
        last.message
    );
    wait_for("the handler to run", LONG, || async {
        Ok((handled.runs(id) == 1).then_some(()))
    })
    .await?;
    assert_eq!(
        count(&db.client, &format!("parent_id = {id}")).await?,
        1,
        "one handler task was enqueued"
    );
    worker.shutdown().await;
    assert_eq!(handled.runs(id), 1, "the handler ran once");
    Ok(())
}

static BLOCKING: TaskDefinition = plain("Blocking", None);

/// A handler blocked in synchronous code ignores the abort at the end of the shutdown
/// grace; its task must not be handed to another worker while it still runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shutdown_never_releases_a_run_that_is_still_going() -> Result<()> {
    let db = test_db().await?;
    let ledger = Ledger::default();
    let mut registry_a = Registry::new();
    let ledger_a = ledger.clone();
    registry_a.register(&BLOCKING, move |ctx: TaskContext, _job: Job| {
        let run = ledger_a.start(ctx.id(), ctx.attempt());
        async move {
            let _run = run;
            std::thread::sleep(Duration::from_secs(4));
            Ok::<(), TaskError>(())
        }
    });
    let worker_a = start(
        &db.client,
        registry_a,
        config()
            .with_lease_duration(Duration::from_secs(2))
            .with_shutdown_grace(Duration::from_millis(500)),
    );
    let id = db.client.enqueue(&BLOCKING, &Job { n: 1 }, &[]).await?;
    wait_for("worker A to start the task", LONG, || async {
        Ok((ledger.runs(id) == 1).then_some(()))
    })
    .await?;
    let worker_b = start(&db.client, recorded(&BLOCKING, &ledger, false), config());
    worker_a.shutdown().await;
    wait_for_status(&db.client, id, TaskStatus::Completed, LONG).await?;
    assert!(
        ledger.overlaps().is_empty(),
        "worker B started the task while A's run still went on"
    );
    worker_b.shutdown().await;
    Ok(())
}

static STEADY: TaskDefinition = plain("Steady", None);

/// A statement on the control connection that gets no answer (here a heartbeat waiting on
/// a row lock; in production a half-open connection) must not hold up the renewals queued
/// behind it: the worker gives the connection up after a quarter of a lease, renews on the
/// pool and opens a new control connection, and its run goes on undisturbed.
#[tokio::test]
async fn a_hung_control_connection_does_not_cost_the_worker_its_leases() -> Result<()> {
    let db = test_db().await?;
    let ledger = Ledger::default();
    let mut registry = Registry::new();
    let runs = ledger.clone();
    registry.register(&STEADY, move |ctx: TaskContext, _job: Job| {
        let run = runs.start(ctx.id(), ctx.attempt());
        async move {
            let _run = run;
            tokio::time::sleep(Duration::from_secs(5)).await;
            Ok::<(), TaskError>(())
        }
    });
    let worker = start(
        &db.client,
        registry,
        config()
            .with_worker_id("hung-control")
            .with_lease_duration(Duration::from_secs(2))
            .with_heartbeat_interval(Duration::from_millis(100)),
    );
    let id = db.client.enqueue(&STEADY, &Job { n: 1 }, &[]).await?;
    wait_for("the run to start", LONG, || async {
        Ok((ledger.runs(id) == 1).then_some(()))
    })
    .await?;
    // Hold the worker's heartbeat row for longer than a lease.
    let mut other = db.client.pool().get().await?;
    let tx = other.transaction().await?;
    tx.execute(
        "SELECT 1 FROM anchor.workers WHERE id = 'hung-control' FOR UPDATE",
        &[],
    )
    .await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    tx.rollback().await?;
    let task = wait_for_status(&db.client, id, TaskStatus::Completed, LONG).await?;
    assert_eq!(
        (task.attempts, task.rescues),
        (1, 0),
        "the run kept its lease: {:?}",
        task.errors
    );
    assert_eq!(ledger.runs(id), 1);
    worker.shutdown().await;
    Ok(())
}
