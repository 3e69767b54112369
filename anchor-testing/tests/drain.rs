//! The test support on itself: databases per test (parallel, removed when dropped, also on
//! a panic) and draining with retries, `run_after`, `onFailed` handlers and a run limit.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anchor_runtime::{
    Registry, RetryDefaults, TaskContext, TaskDefinition, TaskError, TaskOverride, TaskStatus,
};
use anchor_testing::{drain, DrainOptions, TestDatabase};

const fn def(
    name: &'static str,
    retry: Option<RetryDefaults>,
    on_failed: Option<&'static str>,
) -> TaskDefinition {
    TaskDefinition {
        name,
        retry,
        timeout_ms: 10_000,
        cron: None,
        on_failed,
        default_params: "{}",
        max_rescues: None,
        queue: "default",
        priority: 0,
    }
}

/// Retries an hour apart: only `due_now` lets a test see them.
const HOURLY: Option<RetryDefaults> = Some(RetryDefaults {
    intervals_ms: &[3_600_000],
    always_retry_on_failure: false,
    max_retries: Some(2),
});

static FLAKY: TaskDefinition = def("Flaky", HOURLY, None);
static DOOMED: TaskDefinition = def("Doomed", HOURLY, Some("Mourn"));
static MOURN: TaskDefinition = def("Mourn", None, None);
static FOREVER: TaskDefinition = def(
    "Forever",
    Some(RetryDefaults {
        intervals_ms: &[10],
        always_retry_on_failure: true,
        max_retries: None,
    }),
    None,
);

async fn database_exists(name: &str) -> bool {
    // Any test database's server lists them all.
    let probe = TestDatabase::new().await.expect("a probe database");
    let conn = probe.client().pool().get().await.expect("a connection");
    let row = conn
        .query_one(
            "SELECT count(*) FROM pg_database WHERE datname = $1",
            &[&name],
        )
        .await
        .expect("pg_database");
    row.get::<_, i64>(0) == 1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_test_database_is_its_own_and_goes_away_with_its_value_even_on_a_panic() {
    let (a, b) = tokio::join!(TestDatabase::new(), TestDatabase::new());
    let (a, b) = (a.expect("database a"), b.expect("database b"));
    assert_ne!(a.name(), b.name());
    a.client()
        .enqueue(&MOURN, &serde_json::json!({}), &[])
        .await
        .expect("enqueue");
    assert_eq!(anchor_testing_count(&b).await, 0, "b sees nothing of a");
    let name = a.name().to_string();
    drop(a);
    assert!(!database_exists(&name).await, "dropped with its value");

    let panicked = tokio::spawn(async {
        let db = TestDatabase::new().await.expect("database");
        let name = db.name().to_string();
        std::fs::write(
            std::env::temp_dir().join("anchor-testing-panic-name"),
            &name,
        )
        .expect("note the name");
        panic!("the test failed while holding {name}");
    })
    .await;
    assert!(panicked.is_err());
    let name = std::fs::read_to_string(std::env::temp_dir().join("anchor-testing-panic-name"))
        .expect("the noted name");
    assert!(
        !database_exists(&name).await,
        "dropped while the panic unwound"
    );
}

async fn anchor_testing_count(db: &TestDatabase) -> usize {
    db.client()
        .list_tasks(&anchor_runtime::TaskFilter::default())
        .await
        .expect("list")
        .tasks
        .len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_runs_retries_delayed_tasks_and_failure_handlers_without_waiting() {
    let db = TestDatabase::new().await.expect("database");
    let flaky_runs = Arc::new(AtomicU32::new(0));
    let mut registry = Registry::new();
    let runs = flaky_runs.clone();
    registry.register(&FLAKY, move |_ctx: TaskContext, _p: serde_json::Value| {
        // Fails its first run, then succeeds: the retry is an hour away.
        let first = runs.fetch_add(1, Ordering::SeqCst) == 0;
        async move {
            if first {
                Err(TaskError::failed("the first run fails"))
            } else {
                Ok(())
            }
        }
    });
    registry.register(&DOOMED, |_ctx: TaskContext, _p: serde_json::Value| async {
        Err::<(), _>(TaskError::failed("never works"))
    });
    registry.register(&MOURN, |_ctx: TaskContext, _p: serde_json::Value| async {
        Ok(())
    });
    let client = db.client();
    client
        .enqueue(&FLAKY, &serde_json::json!({}), &[])
        .await
        .expect("flaky");
    client
        .enqueue(&DOOMED, &serde_json::json!({}), &[])
        .await
        .expect("doomed");
    client
        .enqueue(
            &MOURN,
            &serde_json::json!({ "later": true }),
            &[TaskOverride::run_after(Duration::from_secs(3600))],
        )
        .await
        .expect("delayed");

    let started = std::time::Instant::now();
    let report = drain(client, registry, DrainOptions::default())
        .await
        .expect("drain");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "it waited for the retries"
    );
    assert_eq!(report.count("Flaky", TaskStatus::Completed), 1, "{report}");
    assert_eq!(report.of("Flaky")[0].attempts, 2, "{report}");
    // Three runs (one and its two retries), then its handler, which completes.
    assert_eq!(report.count("Doomed", TaskStatus::Failed), 1, "{report}");
    assert_eq!(report.of("Doomed")[0].attempts, 3, "{report}");
    assert_eq!(report.count("Mourn", TaskStatus::Completed), 2, "{report}");
    assert_eq!(report.runs, 2 + 3 + 2, "{report}");
    assert!(!report.stopped_at_max_runs);
    assert!(!report.all_completed());
    let text = report.to_string();
    assert!(
        text.contains("Doomed failed after 3 attempt(s): never works"),
        "{text}"
    );
}

/// Each run enqueues the next: work that never ends, though no single task retries.
static CHAIN: TaskDefinition = def("Chain", None, None);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_counts_the_runs_of_finished_tasks_toward_its_limit() {
    let db = TestDatabase::new().await.expect("database");
    let mut registry = Registry::new();
    let client = db.client().clone();
    registry.register(&CHAIN, move |_ctx: TaskContext, _p: serde_json::Value| {
        let client = client.clone();
        async move {
            client.enqueue(&CHAIN, &serde_json::json!({}), &[]).await?;
            Ok(())
        }
    });
    db.client()
        .enqueue(&CHAIN, &serde_json::json!({}), &[])
        .await
        .expect("the first link");
    let options = DrainOptions::default()
        .with_max_runs(20)
        .with_timeout(Duration::from_secs(30));
    let report = drain(db.client(), registry, options).await.expect("drain");
    assert!(report.stopped_at_max_runs, "{report}");
    assert!(report.runs >= 20, "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_the_worker_cannot_run_do_not_hold_the_drain_up() {
    let db = TestDatabase::new().await.expect("database");
    let mut registry = Registry::new();
    registry.register(&MOURN, |_ctx: TaskContext, _p: serde_json::Value| async {
        Ok(())
    });
    let client = db.client();
    client.pause_queue("default", "tests").await.expect("pause");
    let paused = client
        .enqueue(&MOURN, &serde_json::json!({}), &[])
        .await
        .expect("paused");
    let elsewhere = client
        .enqueue(
            &MOURN,
            &serde_json::json!({}),
            &[TaskOverride::queue("elsewhere")],
        )
        .await
        .expect("another queue");
    let options = DrainOptions::default().with_timeout(Duration::from_secs(10));
    let report = drain(client, registry, options).await.expect("drain");
    for id in [paused, elsewhere] {
        let task = report.tasks.iter().find(|t| t.id == id).expect("listed");
        assert_eq!(task.status, TaskStatus::Pending, "{report}");
    }
    assert_eq!(report.runs, 0, "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_stops_at_its_run_limit_and_leaves_delays_alone_when_asked() {
    let db = TestDatabase::new().await.expect("database");
    let mut registry = Registry::new();
    registry.register(&FOREVER, |_ctx: TaskContext, _p: serde_json::Value| async {
        Err::<(), _>(TaskError::failed("again"))
    });
    registry.register(&MOURN, |_ctx: TaskContext, _p: serde_json::Value| async {
        Ok(())
    });
    let client = db.client();
    client
        .enqueue(&FOREVER, &serde_json::json!({}), &[])
        .await
        .expect("forever");
    let report = drain(
        client,
        registry.clone(),
        DrainOptions::default().with_max_runs(5),
    )
    .await
    .expect("drain");
    assert!(report.stopped_at_max_runs, "{report}");
    assert!(report.runs >= 5, "{report}");
    client
        .cancel_task(report.of("Forever")[0].id)
        .await
        .expect("cancel");

    let later = client
        .enqueue(
            &MOURN,
            &serde_json::json!({}),
            &[TaskOverride::run_after(Duration::from_secs(3600))],
        )
        .await
        .expect("delayed");
    let report = drain(
        client,
        registry,
        DrainOptions::default().with_due_now(false),
    )
    .await
    .expect("drain");
    let task = report.tasks.iter().find(|t| t.id == later).expect("listed");
    assert_eq!(task.status, TaskStatus::Pending, "{report}");
    assert_eq!(report.runs, 0, "{report}");
}
