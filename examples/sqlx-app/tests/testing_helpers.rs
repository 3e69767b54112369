//! Testing this service the way docs/testing.md shows: a throwaway database per test
//! (`anchor_testing::TestDatabase`), what `sign_up` enqueued read back typed with the
//! generated `taskgen::testing` helpers (whose failure lists what was enqueued instead),
//! every task run until none is left (`anchor_testing::drain`), and the executor run once
//! through the worker's path with no database at all (`Registry::run`).
//!
//! Regions between `ANCHOR:` and `ANCHOR_END:` are quoted in docs/testing.md.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anchor_runtime::{Registry, RunOutcome, TaskContext, TaskError, TaskId, TaskStatus};
use anchor_testing::{drain, DrainOptions, TestDatabase};
use anyhow::{ensure, Context, Result};
use sqlx::PgPool;
use sqlx_app::taskgen::{self, Executor, SendWelcomeParameters, TaskRunner};

// ANCHOR: executor
/// Mails nobody: records the address, and refuses the ones that bounce.
#[derive(Default)]
struct Mailer {
    sent: Mutex<Vec<String>>,
}

impl Executor for Mailer {
    async fn execute_send_welcome(
        &self,
        _ctx: &TaskContext,
        params: SendWelcomeParameters,
    ) -> Result<(), TaskError> {
        if params.email.ends_with("@bounce.test") {
            return Err(TaskError::fatal(format!("{} bounced", params.email)));
        }
        self.sent.lock().expect("sent").push(params.email);
        Ok(())
    }
}
// ANCHOR_END: executor

/// The service's own tables beside anchor's, in the test's database.
async fn app(db: &TestDatabase) -> Result<(PgPool, TaskRunner)> {
    let pool = PgPool::connect(db.url()).await.context("sqlx pool")?;
    sqlx_app::create_tables(&pool).await?;
    Ok((pool, TaskRunner::new(db.client().clone())))
}

// ANCHOR: enqueued
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_up_enqueues_the_welcome_mail_only_when_it_commits() -> Result<()> {
    let db = TestDatabase::new().await?;
    let (pool, runner) = app(&db).await?;

    let (ada, _) = sqlx_app::sign_up(&pool, &runner, "ada@example.test", true).await?;
    sqlx_app::sign_up(&pool, &runner, "rolled-back@example.test", false).await?;

    let mail =
        taskgen::testing::assert_enqueued_send_welcome(db.client(), |p| p.user_id == ada).await;
    assert_eq!(mail.email, "ada@example.test");
    let all = taskgen::testing::enqueued_send_welcome(db.client()).await?;
    assert_eq!(
        all.len(),
        1,
        "the rolled-back sign-up enqueued nothing: {all:?}"
    );
    Ok(())
}
// ANCHOR_END: enqueued

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_assertion_lists_what_was_enqueued_instead() -> Result<()> {
    let db = TestDatabase::new().await?;
    let (pool, runner) = app(&db).await?;
    sqlx_app::sign_up(&pool, &runner, "ada@example.test", true).await?;
    sqlx_app::sign_up(&pool, &runner, "bob@example.test", true).await?;
    let client = db.client().clone();
    let missed = tokio::spawn(async move {
        taskgen::testing::assert_enqueued_send_welcome(&client, |p| p.email.contains("carol")).await
    })
    .await
    .expect_err("no carol was enqueued");
    let payload = missed.into_panic();
    let message = payload
        .downcast_ref::<String>()
        .context("a formatted panic message")?;
    ensure!(
        message.starts_with("no pending SendWelcome task matches; 2 were enqueued:"),
        "{message}"
    );
    ensure!(
        message.contains("email: \"ada@example.test\"") && message.contains("bob@example.test"),
        "{message}"
    );
    Ok(())
}

// ANCHOR: drain
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_welcome_mail_is_sent_and_a_bounce_fails_for_good() -> Result<()> {
    let db = TestDatabase::new().await?;
    let (pool, runner) = app(&db).await?;
    sqlx_app::sign_up(&pool, &runner, "ada@example.test", true).await?;
    sqlx_app::sign_up(&pool, &runner, "eve@bounce.test", true).await?;

    let mailer = Arc::new(Mailer::default());
    let mut registry = Registry::new();
    taskgen::register(&mut registry, mailer.clone());
    let report = drain(db.client(), registry, DrainOptions::default()).await?;

    assert_eq!(
        report.count("SendWelcome", TaskStatus::Completed),
        1,
        "{report}"
    );
    assert_eq!(
        report.count("SendWelcome", TaskStatus::Failed),
        1,
        "{report}"
    );
    assert_eq!(*mailer.sent.lock().unwrap(), ["ada@example.test"]);
    Ok(())
}
// ANCHOR_END: drain

// ANCHOR: run_once
#[tokio::test]
async fn the_executor_decodes_its_payload_as_a_worker_would() -> Result<()> {
    let mailer = Arc::new(Mailer::default());
    let mut registry = Registry::new();
    taskgen::register(&mut registry, mailer.clone());
    let ctx = || TaskContext::new(TaskId::new(1), "SendWelcome", 1, Duration::from_secs(30));

    let ran = registry
        .run(
            ctx(),
            &serde_json::json!({ "userId": 7, "email": "ada@example.test" }),
        )
        .await?;
    assert_eq!(ran, RunOutcome::Completed);

    let ran = registry
        .run(
            ctx(),
            &serde_json::json!({ "userId": 8, "email": "eve@bounce.test" }),
        )
        .await?;
    assert_eq!(
        ran,
        RunOutcome::Failed {
            message: "fatal: eve@bounce.test bounced".into(),
            fatal: true
        }
    );

    // A payload the parameters cannot hold fails for good, as on a worker.
    let ran = registry
        .run(ctx(), &serde_json::json!({ "userId": 9 }))
        .await?;
    assert!(
        matches!(ran, RunOutcome::Failed { fatal: true, .. }),
        "{ran:?}"
    );
    Ok(())
}
// ANCHOR_END: run_once
