//! The generated test helpers on this example's own tasks: what `sign_up` enqueued, read
//! back typed (`taskgen::testing`), with an assertion whose failure lists what was
//! enqueued instead; and the executor run once through the worker's path
//! (`Registry::run`), with no worker.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anchor_runtime::{Client, Registry, RunOutcome, TaskContext, TaskError, TaskId};
use anyhow::{ensure, Context, Result};
use sqlx::PgPool;
use sqlx_app::taskgen::{self, Executor, SendWelcomeParameters, TaskRunner};

/// Mails nobody: records the address, and refuses the ones the test says bounce.
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_sign_up_enqueued_is_read_back_typed() -> Result<()> {
    let url = anchor_testkit::shared()
        .create_database("helpers")
        .await?
        .url;
    let client = Client::connect(&url).await?;
    anchor_runtime::migrate(&client).await?;
    let pool = PgPool::connect(&url).await.context("sqlx pool")?;
    sqlx_app::create_tables(&pool).await?;
    let runner = TaskRunner::new(client.clone());

    ensure!(taskgen::testing::enqueued_send_welcome(&client)
        .await?
        .is_empty());
    let (ada, _) = sqlx_app::sign_up(&pool, &runner, "ada@example.test", true).await?;
    sqlx_app::sign_up(&pool, &runner, "rolled-back@example.test", false).await?;
    sqlx_app::sign_up(&pool, &runner, "bob@example.test", true).await?;

    let enqueued = taskgen::testing::enqueued_send_welcome(&client).await?;
    let emails: Vec<&str> = enqueued.iter().map(|p| p.email.as_str()).collect();
    ensure!(
        emails == ["ada@example.test", "bob@example.test"],
        "{emails:?}"
    );
    let mail = taskgen::testing::assert_enqueued_send_welcome(&client, |p| p.user_id == ada).await;
    ensure!(mail.email == "ada@example.test");

    // A failed assertion names what it looked for and lists what there is.
    let check = client.clone();
    let missed = tokio::spawn(async move {
        taskgen::testing::assert_enqueued_send_welcome(&check, |p| p.email.contains("carol")).await
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

#[tokio::test]
async fn the_executor_runs_once_through_the_workers_path_without_a_worker() -> Result<()> {
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
    ensure!(ran == RunOutcome::Completed, "{ran:?}");
    ensure!(*mailer.sent.lock().expect("sent") == ["ada@example.test"]);

    let ran = registry
        .run(
            ctx(),
            &serde_json::json!({ "userId": 8, "email": "eve@bounce.test" }),
        )
        .await?;
    ensure!(
        ran == RunOutcome::Failed {
            message: "fatal: eve@bounce.test bounced".into(),
            fatal: true
        },
        "{ran:?}"
    );
    // The payload is decoded as a worker decodes it: a missing field fails for good.
    let ran = registry
        .run(ctx(), &serde_json::json!({ "userId": 9 }))
        .await?;
    ensure!(
        matches!(&ran, RunOutcome::Failed { message, fatal: true } if message.contains("email")),
        "{ran:?}"
    );
    Ok(())
}
