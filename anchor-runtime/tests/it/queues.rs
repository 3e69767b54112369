//! Queues, priority and the operator's controls against a real worker: a slow queue never
//! delays a fast one, priority order within a queue, pausing and resuming, cancelling a
//! running task, enqueue overrides of queue and priority, listing with a cursor and counts.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anchor_runtime::{
    ErrorKind, Registry, RetryDefaults, TaskContext, TaskDefinition, TaskError, TaskFilter, TaskId,
    TaskOverride, TaskStatus, Worker, WorkerConfig,
};
use anyhow::{ensure, Context, Result};
use serde_json::json;

use crate::harness::{count, test_db, wait_for, wait_for_status};

const fn def(name: &'static str, queue: &'static str, priority: i16) -> TaskDefinition {
    TaskDefinition {
        name,
        retry: None,
        timeout_ms: 60_000,
        cron: None,
        on_failed: None,
        default_params: "{}",
        max_rescues: None,
        queue,
        priority,
    }
}

static REPORT: TaskDefinition = def("Report", "reports", 0);
static EMAIL: TaskDefinition = def("Email", "emails", 0);
static JOB: TaskDefinition = def("Job", "default", 5);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_of_slow_tasks_never_delays_a_queue_of_fast_ones() -> Result<()> {
    let db = test_db().await?;
    let reports_started = Arc::new(AtomicU32::new(0));
    let reports_done = Arc::new(AtomicU32::new(0));
    let emails_done = Arc::new(AtomicU32::new(0));
    let mut registry = Registry::new();
    let (started, done) = (reports_started.clone(), reports_done.clone());
    registry.register(&REPORT, move |_ctx: TaskContext, _p: serde_json::Value| {
        started.fetch_add(1, Ordering::SeqCst);
        let done = done.clone();
        async move {
            tokio::time::sleep(Duration::from_secs(10)).await;
            done.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
    });
    let done = emails_done.clone();
    registry.register(&EMAIL, move |_ctx: TaskContext, _p: serde_json::Value| {
        let done = done.clone();
        async move {
            tokio::time::sleep(Duration::from_millis(1)).await;
            done.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
    });
    // Twice as many reports as the reports queue has slots, enqueued first: with one
    // shared limit they would take every slot and the emails would wait 10 s or more.
    let reports: Vec<serde_json::Value> = (0..4).map(|i| json!({ "i": i })).collect();
    db.client.enqueue_many(&REPORT, &reports, &[]).await?;
    let emails: Vec<serde_json::Value> = (0..500).map(|i| json!({ "i": i })).collect();
    db.client.enqueue_many(&EMAIL, &emails, &[]).await?;
    let config = WorkerConfig::default()
        .with_queue("reports", 2)
        .with_queue("emails", 10)
        .with_shutdown_grace(Duration::from_millis(100));
    let worker = Worker::new(db.client.clone(), registry, config)?.start();
    wait_for("every email to run", Duration::from_secs(30), || async {
        Ok((emails_done.load(Ordering::SeqCst) == 500).then_some(()))
    })
    .await?;
    // The reports queue is saturated meanwhile: both its slots busy, no report finished.
    let running_reports = reports_started.load(Ordering::SeqCst);
    let finished = reports_done.load(Ordering::SeqCst);
    worker.shutdown().await;
    ensure!(
        finished == 0,
        "{finished} reports finished before the emails drained"
    );
    ensure!(
        running_reports == 2,
        "{running_reports} reports running; its two slots should be busy"
    );
    Ok(())
}

#[tokio::test]
async fn within_a_queue_higher_priority_runs_first_and_fifo_among_equals() -> Result<()> {
    let db = test_db().await?;
    let order = Arc::new(Mutex::new(Vec::new()));
    let mut registry = Registry::new();
    let seen = order.clone();
    registry.register(&JOB, move |_ctx: TaskContext, p: serde_json::Value| {
        seen.lock()
            .unwrap()
            .push(p["tag"].as_str().unwrap_or("?").to_string());
        async { Ok(()) }
    });
    // Lower ids than everything below, at the lowest priority: a claim that returned its
    // rows by id would run them first.
    for i in 0..5 {
        let tag = format!("p9-early-{i}");
        db.client
            .enqueue(&JOB, &json!({ "tag": tag }), &[TaskOverride::priority(9)])
            .await?;
    }
    // Enqueued in this order, with these priorities (JOB's own is 5).
    let plan: [(&str, Option<i16>); 7] = [
        ("p5-a", None),
        ("p9-a", Some(9)),
        ("p0-a", Some(0)),
        ("p5-b", None),
        ("p0-b", Some(0)),
        ("p9-b", Some(9)),
        ("p2-a", Some(2)),
    ];
    for (tag, priority) in plan {
        let overrides: Vec<TaskOverride> =
            priority.map(TaskOverride::priority).into_iter().collect();
        db.client
            .enqueue(&JOB, &json!({ "tag": tag }), &overrides)
            .await?;
    }
    // A higher priority task that is not due must not hold the others back.
    db.client
        .enqueue(
            &JOB,
            &json!({ "tag": "later" }),
            &[
                TaskOverride::priority(0),
                TaskOverride::run_after(Duration::from_secs(3600)),
            ],
        )
        .await?;
    // One slot, so the run order is the order of the claimed batch (the default prefetch
    // claims several at once).
    let config = WorkerConfig::default()
        .with_concurrency(1)
        .with_local_dispatch(false);
    let worker = Worker::new(db.client.clone(), registry, config)?.start();
    wait_for("every due task to run", Duration::from_secs(20), || async {
        Ok((order.lock().unwrap().len() == 12).then_some(()))
    })
    .await?;
    worker.shutdown().await;
    let ran = order.lock().unwrap().clone();
    ensure!(
        ran == [
            "p0-a",
            "p0-b",
            "p2-a",
            "p5-a",
            "p5-b",
            "p9-early-0",
            "p9-early-1",
            "p9-early-2",
            "p9-early-3",
            "p9-early-4",
            "p9-a",
            "p9-b"
        ],
        "ran in the order {ran:?}"
    );
    Ok(())
}

#[tokio::test]
async fn queue_and_priority_overrides_are_stored_and_checked() -> Result<()> {
    let db = test_db().await?;
    let id = db
        .client
        .enqueue(
            &JOB,
            &json!({}),
            &[TaskOverride::queue("bulk"), TaskOverride::priority(9)],
        )
        .await?;
    let task = db.client.get_task(id).await?.context("task")?;
    ensure!(
        task.settings.queue == "bulk" && task.settings.priority == 9,
        "{:?}",
        task.settings
    );
    let plain = db.client.enqueue(&JOB, &json!({}), &[]).await?;
    let task = db.client.get_task(plain).await?.context("task")?;
    ensure!(task.settings.queue == "default" && task.settings.priority == 5);

    for (bad, says) in [
        (TaskOverride::queue("Bulk"), "not a queue name"),
        (TaskOverride::queue(""), "empty"),
        (TaskOverride::priority(10), "out of range"),
        (TaskOverride::priority(-1), "out of range"),
    ] {
        let err = db
            .client
            .enqueue(&JOB, &json!({}), &[bad])
            .await
            .err()
            .context("a bad override is refused")?;
        ensure!(err.kind() == ErrorKind::InvalidOverride, "{err}");
        ensure!(err.to_string().contains(says), "{err}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_moved_to_another_queue_runs_only_where_that_queue_is_served() -> Result<()> {
    let db = test_db().await?;
    let ran = Arc::new(AtomicU32::new(0));
    let registry = || {
        let mut registry = Registry::new();
        let ran = ran.clone();
        registry.register(&JOB, move |_ctx: TaskContext, _p: serde_json::Value| {
            ran.fetch_add(1, Ordering::SeqCst);
            async { Ok(()) }
        });
        registry
    };
    let id = db
        .client
        .enqueue(&JOB, &json!({}), &[TaskOverride::queue("bulk")])
        .await?;
    // This worker serves Job's own queue only.
    let worker = Worker::new(db.client.clone(), registry(), WorkerConfig::default())?.start();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    ensure!(ran.load(Ordering::SeqCst) == 0, "ran outside its queue");
    worker.shutdown().await;
    // The same registry (the one generated code builds), also serving `bulk`, runs it.
    let config = WorkerConfig::default().with_queue("bulk", 1);
    let worker = Worker::new(db.client.clone(), registry(), config)?.start();
    wait_for_status(
        &db.client,
        id,
        TaskStatus::Completed,
        Duration::from_secs(20),
    )
    .await?;
    worker.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_started_during_a_pause_keeps_to_it_also_for_its_own_enqueues() -> Result<()> {
    let db = test_db().await?;
    let ran = Arc::new(AtomicU32::new(0));
    let mut registry = Registry::new();
    let r = ran.clone();
    registry.register(&EMAIL, move |_ctx: TaskContext, _p: serde_json::Value| {
        r.fetch_add(1, Ordering::SeqCst);
        async { Ok(()) }
    });
    ensure!(db.client.pause_queue("emails", "tests").await?);
    // Started after the pause (it got no notice), on the client that enqueues: its
    // first claim finds nothing, so it counts as idle for local dispatch.
    let worker = Worker::new(db.client.clone(), registry, WorkerConfig::default())?.start();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let id = db.client.enqueue(&EMAIL, &json!({}), &[]).await?;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let task = db.client.get_task(id).await?.context("task")?;
    ensure!(
        task.status == TaskStatus::Pending && ran.load(Ordering::SeqCst) == 0,
        "ran in a paused queue: {:?}",
        task.status
    );
    ensure!(db.client.resume_queue("emails").await?);
    wait_for_status(
        &db.client,
        id,
        TaskStatus::Completed,
        Duration::from_secs(10),
    )
    .await?;
    worker.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_cancelled_while_it_waits_in_a_workers_buffer_never_starts() -> Result<()> {
    let db = test_db().await?;
    let release = Arc::new(tokio::sync::Notify::new());
    let started: Arc<Mutex<Vec<String>>> = Arc::default();
    let mut registry = Registry::new();
    let (r, s) = (release.clone(), started.clone());
    registry.register(&EMAIL, move |_ctx: TaskContext, p: serde_json::Value| {
        s.lock()
            .unwrap()
            .push(p["tag"].as_str().unwrap_or("?").to_string());
        let r = r.clone();
        async move {
            if p["tag"] == json!("first") {
                r.notified().await;
            }
            Ok(())
        }
    });
    // Both due before the worker starts, one slot: its first claim takes both (the free
    // slot and the prefetch), starts the first and holds the second in its buffer.
    let first = db
        .client
        .enqueue(&EMAIL, &json!({ "tag": "first" }), &[])
        .await?;
    let second = db
        .client
        .enqueue(&EMAIL, &json!({ "tag": "second" }), &[])
        .await?;
    let config = WorkerConfig::default()
        .with_concurrency(1)
        .with_local_dispatch(false);
    let worker = Worker::new(db.client.clone(), registry, config)?.start();
    wait_for("the first to start", Duration::from_secs(10), || async {
        Ok((started.lock().unwrap().len() == 1).then_some(()))
    })
    .await?;
    let task = db.client.get_task(second).await?.context("task")?;
    ensure!(
        task.status == TaskStatus::Running,
        "claimed into the buffer: {:?}",
        task.status
    );
    ensure!(db.client.cancel_task(second).await?);
    // Let the notice arrive, then free the slot the second would take.
    tokio::time::sleep(Duration::from_millis(200)).await;
    release.notify_one();
    wait_for_status(
        &db.client,
        first,
        TaskStatus::Completed,
        Duration::from_secs(10),
    )
    .await?;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    worker.shutdown().await;
    let ran = started.lock().unwrap().clone();
    ensure!(ran == ["first"], "started {ran:?}");
    let task = db.client.get_task(second).await?.context("task")?;
    ensure!(task.status == TaskStatus::Cancelled);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_queue_starts_nothing_until_resumed_and_enqueue_still_works() -> Result<()> {
    let db = test_db().await?;
    let started = Arc::new(AtomicU32::new(0));
    let release = Arc::new(tokio::sync::Notify::new());
    let mut registry = Registry::new();
    let (s, r) = (started.clone(), release.clone());
    registry.register(&EMAIL, move |_ctx: TaskContext, p: serde_json::Value| {
        s.fetch_add(1, Ordering::SeqCst);
        let r = r.clone();
        async move {
            if p["hold"] == json!(true) {
                r.notified().await;
            }
            Ok(())
        }
    });
    let worker = Worker::new(db.client.clone(), registry, WorkerConfig::default())?.start();
    // A run in progress when the pause comes finishes.
    let held = db
        .client
        .enqueue(&EMAIL, &json!({ "hold": true }), &[])
        .await?;
    wait_for_status(
        &db.client,
        held,
        TaskStatus::Running,
        Duration::from_secs(10),
    )
    .await?;
    ensure!(
        db.client.pause_queue("emails", "tests").await?,
        "the queue was running"
    );
    ensure!(
        !db.client.pause_queue("emails", "again").await?,
        "already paused"
    );
    let queued = db.client.enqueue(&EMAIL, &json!({}), &[]).await?;
    release.notify_one();
    wait_for_status(
        &db.client,
        held,
        TaskStatus::Completed,
        Duration::from_secs(10),
    )
    .await?;
    // Well past a poll interval: nothing new starts.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let task = db.client.get_task(queued).await?.context("task")?;
    ensure!(
        task.status == TaskStatus::Pending,
        "ran while paused: {:?}",
        task.status
    );
    ensure!(started.load(Ordering::SeqCst) == 1);
    let queues = db.client.queues().await?;
    let emails = queues
        .iter()
        .find(|q| q.name == "emails")
        .context("emails listed")?;
    ensure!(
        emails.paused_at.is_some() && emails.paused_by.as_deref() == Some("tests"),
        "{emails:?}"
    );
    ensure!(emails.due == 1, "{emails:?}");

    ensure!(db.client.resume_queue("emails").await?, "it was paused");
    ensure!(!db.client.resume_queue("emails").await?, "it runs already");
    wait_for_status(
        &db.client,
        queued,
        TaskStatus::Completed,
        Duration::from_secs(5),
    )
    .await?;
    worker.shutdown().await;
    let err = db
        .client
        .pause_queue("No Such", "x")
        .await
        .err()
        .context("bad name")?;
    ensure!(err.kind() == ErrorKind::InvalidOverride, "{err}");
    Ok(())
}

static CANCELLABLE: TaskDefinition = TaskDefinition {
    name: "Cancellable",
    retry: Some(RetryDefaults {
        intervals_ms: &[10],
        always_retry_on_failure: true,
        max_retries: None,
    }),
    timeout_ms: 60_000,
    cron: None,
    on_failed: Some("CancellableFailed"),
    default_params: "{}",
    max_rescues: None,
    queue: "default",
    priority: 0,
};

static CANCELLABLE_FAILED: TaskDefinition = def("CancellableFailed", "default", 0);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_running_task_tells_it_then_drops_it_with_no_retry_or_handler() -> Result<()> {
    let db = test_db().await?;
    let noticed = Arc::new(AtomicBool::new(false));
    let dropped = Arc::new(AtomicBool::new(false));
    let handlers = Arc::new(AtomicU32::new(0));
    let runs = Arc::new(AtomicU32::new(0));
    let mut registry = Registry::new();
    let (n, d, r) = (noticed.clone(), dropped.clone(), runs.clone());
    registry.register(
        &CANCELLABLE,
        move |ctx: TaskContext, p: serde_json::Value| {
            r.fetch_add(1, Ordering::SeqCst);
            let (n, d) = (n.clone(), d.clone());
            async move {
                // Set when the run's future is dropped.
                struct OnDrop(Arc<AtomicBool>);
                impl Drop for OnDrop {
                    fn drop(&mut self) {
                        self.0.store(true, Ordering::SeqCst);
                    }
                }
                let _guard = OnDrop(d);
                if p["cooperative"] == json!(true) {
                    ctx.cancelled().await;
                    n.store(ctx.is_cancelled(), Ordering::SeqCst);
                    // A run that returns after its cancellation: the outcome is not written.
                    return Err(TaskError::failed("stopped because cancelled"));
                }
                // Ignores the cancellation: dropped after the grace.
                tokio::time::sleep(Duration::from_secs(60)).await;
                Ok(())
            }
        },
    );
    let h = handlers.clone();
    registry.register(
        &CANCELLABLE_FAILED,
        move |_ctx: TaskContext, _p: serde_json::Value| {
            h.fetch_add(1, Ordering::SeqCst);
            async { Ok(()) }
        },
    );
    let worker = Worker::new(db.client.clone(), registry, WorkerConfig::default())?.start();

    for cooperative in [true, false] {
        noticed.store(false, Ordering::SeqCst);
        dropped.store(false, Ordering::SeqCst);
        let id = db
            .client
            .enqueue(&CANCELLABLE, &json!({ "cooperative": cooperative }), &[])
            .await?;
        wait_for_status(&db.client, id, TaskStatus::Running, Duration::from_secs(10)).await?;
        // Past the start, so the handler is inside its future.
        tokio::time::sleep(Duration::from_millis(200)).await;
        ensure!(
            db.client.cancel_task(id).await?,
            "a running task is cancelled"
        );
        wait_for("the run to be dropped", Duration::from_secs(3), || async {
            Ok(dropped.load(Ordering::SeqCst).then_some(()))
        })
        .await?;
        if cooperative {
            ensure!(
                noticed.load(Ordering::SeqCst),
                "ctx.cancelled() completed and said so"
            );
        }
        let task = db.client.get_task(id).await?.context("task")?;
        ensure!(task.status == TaskStatus::Cancelled, "{:?}", task.status);
        ensure!(task.lease_owner.is_none(), "the lease is gone");
        ensure!(
            task.errors
                .last()
                .is_some_and(|e| e.message == "cancelled while running"),
            "{:?}",
            task.errors
        );
        ensure!(
            !db.client.cancel_task(id).await?,
            "a cancelled task is not cancelled again"
        );
    }
    // Long enough for a retry (10 ms) or a handler to have run, were there any.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    worker.shutdown().await;
    ensure!(
        runs.load(Ordering::SeqCst) == 2,
        "each task ran once, not retried"
    );
    ensure!(handlers.load(Ordering::SeqCst) == 0, "no onFailed handler");
    ensure!(count(&db.client, "name = 'CancellableFailed'").await? == 0);
    Ok(())
}

#[tokio::test]
async fn listing_pages_by_a_stable_cursor_and_filters_and_counts() -> Result<()> {
    let db = test_db().await?;
    let mut ids: Vec<TaskId> = Vec::new();
    for i in 0..25 {
        let def = if i % 5 == 0 { &EMAIL } else { &JOB };
        ids.push(db.client.enqueue(def, &json!({ "i": i }), &[]).await?);
    }
    ensure!(db.client.cancel_task(ids[3]).await?);
    ensure!(db.client.cancel_task(ids[4]).await?);

    // Pages of 10, newest first; a task added between pages is not on a later page.
    let mut seen = Vec::new();
    let mut filter = TaskFilter::default().with_limit(10);
    let mut pages = 0;
    loop {
        let page = db.client.list_tasks(&filter).await?;
        pages += 1;
        seen.extend(page.tasks.iter().map(|t| t.id));
        if pages == 1 {
            db.client
                .enqueue(&JOB, &json!({ "late": true }), &[])
                .await?;
        }
        match page.next {
            Some(cursor) => {
                let text = cursor.to_string();
                filter = filter.clone().after(text.parse()?);
            }
            None => break,
        }
    }
    let mut expected = ids.clone();
    expected.reverse();
    ensure!(pages == 3 && seen == expected, "pages {pages}: {seen:?}");

    let emails = db
        .client
        .list_tasks(&TaskFilter::default().with_queue("emails"))
        .await?;
    ensure!(emails.tasks.len() == 5 && emails.tasks.iter().all(|t| t.name == "Email"));
    let cancelled = db
        .client
        .list_tasks(
            &TaskFilter::default()
                .with_status(TaskStatus::Cancelled)
                .with_name("Job"),
        )
        .await?;
    let got: Vec<TaskId> = cancelled.tasks.iter().map(|t| t.id).collect();
    ensure!(got == [ids[4], ids[3]], "{got:?}");
    ensure!(cancelled.next.is_none());
    ensure!("nope".parse::<anchor_runtime::TaskCursor>().is_err());

    let stats = db.client.stats().await?;
    ensure!(stats.total(TaskStatus::Pending) == 24, "{stats:?}");
    ensure!(stats.total(TaskStatus::Cancelled) == 2, "{stats:?}");
    let email_pending = stats
        .counts
        .iter()
        .find(|c| c.queue == "emails" && c.status == TaskStatus::Pending)
        .context("emails counted")?;
    ensure!(email_pending.name == "Email" && email_pending.count == 5);
    ensure!(stats.oldest_due_age.is_some());
    let queues = db.client.queues().await?;
    let names: Vec<&str> = queues.iter().map(|q| q.name.as_str()).collect();
    ensure!(names == ["default", "emails"], "{names:?}");
    ensure!(queues[0].due == 19 && queues[1].due == 5, "{queues:?}");
    Ok(())
}
