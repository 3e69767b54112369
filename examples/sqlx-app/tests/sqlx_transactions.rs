//! Enqueue inside sqlx transactions, against a throwaway PostgreSQL: a rollback leaves no
//! task, a commit lets a worker run it; bulk and overrides work as on tokio-postgres; and
//! two transactions racing for one unique tag behave exactly as on tokio-postgres (the
//! second waits for the first, then gets its task, or writes its own if the first rolled
//! back).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anchor_runtime::{
    Client, Registry, TaskContext, TaskError, TaskId, TaskOverride, TaskStatus, Worker,
    WorkerConfig,
};
use anyhow::{ensure, Context, Result};
use sqlx::PgPool;
use sqlx_app::taskgen::{self, Executor, SendWelcomeParameters, TaskRunner};

struct Mailer {
    sent: Mutex<Vec<String>>,
}

impl Executor for Mailer {
    async fn execute_send_welcome(
        &self,
        _ctx: &TaskContext,
        params: SendWelcomeParameters,
    ) -> Result<(), TaskError> {
        self.sent.lock().expect("sent").push(params.email);
        Ok(())
    }
}

struct App {
    pool: PgPool,
    client: Client,
    runner: TaskRunner,
}

async fn app() -> Result<App> {
    let url = anchor_testkit::shared().create_database("sqlx").await?.url;
    let client = Client::connect(&url).await?;
    anchor_runtime::migrate(&client).await?;
    let pool = PgPool::connect(&url).await.context("sqlx pool")?;
    sqlx_app::create_tables(&pool).await?;
    Ok(App {
        pool,
        runner: TaskRunner::new(client.clone()),
        client,
    })
}

async fn task_count(client: &Client) -> Result<i64> {
    let conn = client.pool().get().await?;
    Ok(conn
        .query_one("SELECT count(*) FROM anchor.tasks", &[])
        .await?
        .get(0))
}

async fn wait_for_status(client: &Client, id: TaskId, status: TaskStatus) -> Result<()> {
    anchor_testkit::wait_for(
        &format!("task {id} to be {status}"),
        Duration::from_secs(20),
        || async {
            let task = client.get_task(id).await?.context("task vanished")?;
            Ok::<_, anyhow::Error>((task.status == status).then_some(()))
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolled_back_sign_up_leaves_no_task_and_a_committed_one_is_mailed() -> Result<()> {
    let app = app().await?;
    let (_, rolled_back) =
        sqlx_app::sign_up(&app.pool, &app.runner, "gone@example.com", false).await?;
    ensure!(
        app.client.get_task(rolled_back).await?.is_none(),
        "the rolled-back task exists"
    );
    ensure!(task_count(&app.client).await? == 0);

    let mailer = Arc::new(Mailer {
        sent: Mutex::new(Vec::new()),
    });
    let mut registry = Registry::new();
    taskgen::register(&mut registry, mailer.clone());
    let worker = Worker::new(app.client.clone(), registry, WorkerConfig::default())?.start();
    let (user_id, task_id) =
        sqlx_app::sign_up(&app.pool, &app.runner, "ada@example.com", true).await?;
    wait_for_status(&app.client, task_id, TaskStatus::Completed).await?;
    worker.shutdown().await;
    ensure!(*mailer.sent.lock().expect("sent") == ["ada@example.com"]);
    let task = app.client.get_task(task_id).await?.context("task")?;
    ensure!(task.unique_tag.as_deref() == Some(format!("welcome:{user_id}").as_str()));
    Ok(())
}

#[tokio::test]
async fn bulk_and_overrides_in_an_sqlx_transaction_and_on_a_bare_connection() -> Result<()> {
    let app = app().await?;
    let params: Vec<_> = (1..=3)
        .map(|i| SendWelcomeParameters {
            user_id: i,
            email: format!("u{i}@example.com"),
        })
        .collect();
    let later = [
        TaskOverride::run_after(Duration::from_secs(3600)),
        TaskOverride::timeout(Duration::from_secs(7)),
    ];

    let mut tx = app.pool.begin().await?;
    let ids = app
        .runner
        .run_send_welcome_many_with_tx(&mut tx, &params, &later)
        .await?;
    tx.rollback().await?;
    ensure!(
        ids.len() == 3 && task_count(&app.client).await? == 0,
        "rolled back: {ids:?}"
    );

    let mut tx = app.pool.begin().await?;
    // `&mut *tx` is the transaction's `PgConnection`: the same trait, the same result.
    let ids = app
        .runner
        .run_send_welcome_many_with_tx(&mut *tx, &params, &later)
        .await?;
    tx.commit().await?;
    ensure!(ids.windows(2).all(|w| w[0] < w[1]), "ids in order: {ids:?}");
    for (id, p) in ids.iter().zip(&params) {
        let task = app.client.get_task(*id).await?.context("task")?;
        ensure!(task.status == TaskStatus::Pending);
        ensure!(
            task.settings.timeout == Duration::from_secs(7),
            "{:?}",
            task.settings.timeout
        );
        ensure!(task.run_after > task.created_at + chrono_minutes(59));
        ensure!(task.payload["email"] == p.email.as_str());
    }

    // Outside a transaction: a pooled connection of the application's own.
    let mut conn = app.pool.acquire().await?;
    let id = app
        .runner
        .run_send_welcome_with_tx(&mut *conn, &params[0], &[])
        .await?;
    ensure!(app.client.get_task(id).await?.is_some(), "autocommitted");
    Ok(())
}

fn chrono_minutes(n: i64) -> anchor_runtime::chrono::Duration {
    anchor_runtime::chrono::Duration::minutes(n)
}

/// Which enqueue the race runs its two transactions through.
#[derive(Clone, Copy, Debug)]
enum Driver {
    Sqlx,
    TokioPostgres,
}

/// Two transactions enqueue the same unique tag: the first holds it uncommitted, the
/// second's insert waits on it. Returns (first id, second id, tasks with the tag after both
/// ended), with the first transaction committed or rolled back.
async fn tag_race(app: &App, driver: Driver, first_commits: bool) -> Result<(TaskId, TaskId, i64)> {
    let tag = format!("race-{driver:?}-{first_commits}");
    let params = SendWelcomeParameters {
        user_id: 1,
        email: "race@example.com".into(),
    };
    let overrides = [TaskOverride::unique_tag(tag.clone())];
    let (first, second) = match driver {
        Driver::Sqlx => {
            let mut tx1 = app.pool.begin().await?;
            let first = app
                .runner
                .run_send_welcome_with_tx(&mut tx1, &params, &overrides)
                .await?;
            let (pool, runner, p, o) = (
                app.pool.clone(),
                app.runner.clone(),
                params.clone(),
                overrides.clone(),
            );
            let second = tokio::spawn(async move {
                let mut tx2 = pool.begin().await?;
                let id = runner.run_send_welcome_with_tx(&mut tx2, &p, &o).await?;
                tx2.commit().await?;
                anyhow::Ok(id)
            });
            wait_until_blocked(app).await?;
            if first_commits {
                tx1.commit().await?;
            } else {
                tx1.rollback().await?;
            }
            (first, second.await??)
        }
        Driver::TokioPostgres => {
            let mut conn1 = app.client.pool().get().await?;
            let tx1 = conn1.transaction().await?;
            let first = app
                .runner
                .run_send_welcome_with_tx(&tx1, &params, &overrides)
                .await?;
            let (client, runner, p, o) = (
                app.client.clone(),
                app.runner.clone(),
                params.clone(),
                overrides.clone(),
            );
            let second = tokio::spawn(async move {
                let mut conn2 = client.pool().get().await?;
                let tx2 = conn2.transaction().await?;
                let id = runner.run_send_welcome_with_tx(&tx2, &p, &o).await?;
                tx2.commit().await?;
                anyhow::Ok(id)
            });
            wait_until_blocked(app).await?;
            if first_commits {
                tx1.commit().await?;
            } else {
                tx1.rollback().await?;
            }
            (first, second.await??)
        }
    };
    let conn = app.client.pool().get().await?;
    let holders: i64 = conn
        .query_one(
            "SELECT count(*) FROM anchor.tasks WHERE unique_tag = $1",
            &[&tag],
        )
        .await?
        .get(0);
    Ok((first, second, holders))
}

/// Waits until a session of this database waits on a lock (the second insert on the tag).
async fn wait_until_blocked(app: &App) -> Result<()> {
    anchor_testkit::wait_for(
        "the second enqueue to wait on the tag",
        Duration::from_secs(20),
        || async {
            let conn = app.client.pool().get().await?;
            let waiting: i64 = conn
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity \
                 WHERE datname = current_database() AND wait_event_type = 'Lock'",
                    &[],
                )
                .await?
                .get(0);
            Ok::<_, anyhow::Error>((waiting > 0).then_some(()))
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_unique_tag_race_in_sqlx_transactions_behaves_as_on_tokio_postgres() -> Result<()> {
    let app = app().await?;
    for first_commits in [true, false] {
        let sqlx = tag_race(&app, Driver::Sqlx, first_commits).await?;
        let tokio = tag_race(&app, Driver::TokioPostgres, first_commits).await?;
        // The same shape: committed → the second gets the first's task; rolled back → the
        // second writes its own. One holder of the tag either way.
        for (driver, (first, second, holders)) in [("sqlx", sqlx), ("tokio-postgres", tokio)] {
            ensure!(holders == 1, "{driver}: {holders} holders");
            ensure!(
                (first == second) == first_commits,
                "{driver}, first commits = {first_commits}: first {first}, second {second}"
            );
        }
    }
    Ok(())
}
