//! The generated module against a real PostgreSQL (a throwaway cluster from `anchor-testkit`):
//! typed enqueue through `TaskRunner` (alone, in bulk, inside a committed and a rolled-back
//! transaction), routing through `register` to `async fn` executors, and an `onFailed`
//! handler receiving the failed task's id as its typed `task_id`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anchor_runtime::{Client, Worker, WorkerConfig};
use anchor_testgen::codegen::seed;
use anchor_testgen::seed_executors::SeedExecutor;
use anyhow::{bail, Context, Result};

/// Waits (generously: the machine is shared) until the executor has logged `line`.
async fn wait_for_line(executor: &SeedExecutor, line: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        {
            let log = executor.log.lock().unwrap_or_else(|p| p.into_inner());
            if log.iter().any(|l| l == line) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("timed out waiting for {line:?}; the executor logged {log:?}");
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_runner_and_executor_work_against_postgres() -> Result<()> {
    let url = anchor_testkit::shared()
        .create_database("testgen")
        .await?
        .url;
    let client = Client::connect(&url).await.context("connect")?;
    anchor_runtime::migrate(&client).await.context("migrate")?;

    let executor = Arc::new(SeedExecutor::default());
    let mut registry = anchor_runtime::Registry::new();
    seed::register(&mut registry, Arc::clone(&executor));
    let worker = Worker::new(client.clone(), registry, WorkerConfig::default())?.start();

    let runner = seed::TaskRunner::new(client.clone());
    let email = seed::SendEmailParameters {
        user_id: 7,
        template_id: "welcome".into(),
        variables: serde_json::Map::new(),
    };
    let id = runner.run_send_email(&email, &[]).await?;
    wait_for_line(
        &executor,
        &format!("task {id}: email welcome to user 7 (hello there)"),
    )
    .await?;

    let keys: Vec<seed::DeleteOpaqueKeyParameters> = (1..=3)
        .map(|key_id| seed::DeleteOpaqueKeyParameters { key_id })
        .collect();
    let ids = runner.run_delete_opaque_key_many(&keys, &[]).await?;
    assert_eq!(ids.len(), 3);
    for key in 1..=3 {
        wait_for_line(&executor, &format!("delete key {key}")).await?;
    }

    // A transaction's enqueue becomes visible on commit and vanishes on rollback.
    let mut conn = client.pool().get().await?;
    let tx = conn.transaction().await?;
    let rolled_back = runner
        .run_process_order_with_tx(&tx, &seed::ProcessOrderParameters { order_id: 99 }, &[])
        .await?;
    tx.rollback().await?;
    let tx = conn.transaction().await?;
    runner
        .run_process_order_with_tx(&tx, &seed::ProcessOrderParameters { order_id: 42 }, &[])
        .await?;
    tx.commit().await?;
    wait_for_line(&executor, "order 42").await?;
    assert!(client.get_task(rolled_back).await?.is_none());

    // Order 0 fails fatally, so HandleOrderFailure runs with the failed task's id.
    let failing = runner
        .run_process_order(&seed::ProcessOrderParameters { order_id: 0 }, &[])
        .await?;
    wait_for_line(&executor, &format!("order task {failing} failed")).await?;

    worker.shutdown().await;
    let log = executor
        .log
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    assert!(!log.iter().any(|l| l == "order 99"), "{log:?}");
    Ok(())
}
