//! Retention against a real database: finished tasks past their age are deleted in batches,
//! everything else stays, and concurrent pruners share the work without doing it twice.

use std::time::Duration;

use anchor_runtime::{Client, Registry, RetentionConfig, TaskDefinition, Worker, WorkerConfig};
use anyhow::Result;

use crate::harness::{count, test_db, wait_for};

/// Inserts `n` rows with `status` whose `finished_at` is `age` ago (NULL for pending and
/// running rows), named `name` so each group can be counted.
async fn insert_rows(client: &Client, name: &str, status: i16, n: i64, age: &str) -> Result<()> {
    let conn = client.pool().get().await?;
    conn.execute(
        "INSERT INTO anchor.tasks (name, status, timeout_ms, payload, created_at, finished_at) \
         SELECT $1, $2::smallint, 60000, '{}'::jsonb, now() - $4::text::interval, \
           CASE WHEN $2::smallint >= 2 THEN now() - $4::text::interval END \
         FROM generate_series(1, $3::bigint)",
        &[&name, &status, &n, &age],
    )
    .await?;
    Ok(())
}

/// The same spread of rows for each test: what the defaults prune and what they keep.
async fn fill(client: &Client) -> Result<()> {
    // Pruned by the defaults (completed and cancelled 7 days, failed 30 days).
    insert_rows(client, "old_completed", 2, 25, "8 days").await?;
    insert_rows(client, "old_failed", 3, 5, "31 days").await?;
    insert_rows(client, "old_cancelled", 4, 3, "8 days").await?;
    // Kept.
    insert_rows(client, "recent_completed", 2, 5, "1 day").await?;
    insert_rows(client, "recent_failed", 3, 5, "8 days").await?;
    insert_rows(client, "old_pending", 0, 5, "60 days").await?;
    insert_rows(client, "old_running", 1, 2, "60 days").await?;
    Ok(())
}

async fn assert_pruned_and_kept(client: &Client) -> Result<()> {
    for gone in ["old_completed", "old_failed", "old_cancelled"] {
        assert_eq!(
            count(client, &format!("name = '{gone}'")).await?,
            0,
            "{gone}"
        );
    }
    for (kept, n) in [
        ("recent_completed", 5),
        ("recent_failed", 5),
        ("old_pending", 5),
        ("old_running", 2),
    ] {
        assert_eq!(
            count(client, &format!("name = '{kept}'")).await?,
            n,
            "{kept}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn prune_deletes_only_finished_rows_past_their_age() -> Result<()> {
    let db = test_db().await?;
    fill(&db.client).await?;
    // Small batches, so the 25 old completed rows take several statements.
    let retention = RetentionConfig::default().with_batch_size(10);
    let deleted = db.client.prune_finished(&retention).await?;
    assert_eq!(deleted, 25 + 5 + 3);
    assert_pruned_and_kept(&db.client).await?;
    // Nothing is left to prune.
    assert_eq!(db.client.prune_finished(&retention).await?, 0);
    Ok(())
}

#[tokio::test]
async fn none_keeps_a_status_forever() -> Result<()> {
    let db = test_db().await?;
    fill(&db.client).await?;
    let retention = RetentionConfig::default()
        .with_failed(None)
        .with_completed(Some(Duration::from_secs(3600)));
    let deleted = db.client.prune_finished(&retention).await?;
    // All completed rows are older than an hour; failed rows stay.
    assert_eq!(deleted, 25 + 5 + 3);
    assert_eq!(count(&db.client, "status = 3").await?, 10);
    assert_eq!(count(&db.client, "status = 2").await?, 0);
    Ok(())
}

#[tokio::test]
async fn concurrent_pruners_share_the_rows() -> Result<()> {
    let db = test_db().await?;
    insert_rows(&db.client, "old_completed", 2, 3000, "8 days").await?;
    let retention = RetentionConfig::default().with_batch_size(50);
    let (a, b, c) = tokio::join!(
        db.client.prune_finished(&retention),
        db.client.prune_finished(&retention),
        db.client.prune_finished(&retention),
    );
    // Each row is deleted by exactly one pruner, and none of them fails or waits forever.
    assert_eq!(a? + b? + c?, 3000);
    assert_eq!(count(&db.client, "true").await?, 0);
    Ok(())
}

static UNUSED: TaskDefinition = TaskDefinition {
    name: "RetentionUnused",
    retry: None,
    timeout_ms: 60_000,
    cron: None,
    on_failed: None,
    default_params: "{}",
    max_rescues: None,
    queue: "default",
    priority: 0,
};

#[tokio::test]
async fn a_running_worker_prunes_on_its_own() -> Result<()> {
    let db = test_db().await?;
    fill(&db.client).await?;
    let mut registry = Registry::new();
    registry.register(
        &UNUSED,
        |_ctx: anchor_runtime::TaskContext, _p: serde_json::Value| async { Ok(()) },
    );
    let config = WorkerConfig::default()
        .with_retention(RetentionConfig::default().with_interval(Duration::from_millis(50)));
    let worker = Worker::new(db.client.clone(), registry, config)?.start();
    let client = db.client.clone();
    wait_for("the worker to prune", Duration::from_secs(30), || async {
        let left = count(&client, "name LIKE 'old\\_%' AND status >= 2").await?;
        Ok((left == 0).then_some(()))
    })
    .await?;
    worker.shutdown().await;
    assert_pruned_and_kept(&db.client).await?;
    Ok(())
}

#[tokio::test]
async fn disabled_retention_keeps_everything() -> Result<()> {
    let db = test_db().await?;
    fill(&db.client).await?;
    let mut registry = Registry::new();
    registry.register(
        &UNUSED,
        |_ctx: anchor_runtime::TaskContext, _p: serde_json::Value| async { Ok(()) },
    );
    let config = WorkerConfig::default().with_retention(
        RetentionConfig::default()
            .with_interval(Duration::from_millis(10))
            .with_enabled(false),
    );
    let worker = Worker::new(db.client.clone(), registry, config)?.start();
    // A disabled pruner never runs; a claim round trip shows the worker is up meanwhile.
    let marker = db
        .client
        .enqueue(&UNUSED, &serde_json::json!({}), &[])
        .await?;
    crate::harness::wait_for_status(
        &db.client,
        marker,
        anchor_runtime::TaskStatus::Completed,
        Duration::from_secs(30),
    )
    .await?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    worker.shutdown().await;
    assert_eq!(
        count(&db.client, "name LIKE 'old\\_%'").await?,
        25 + 5 + 3 + 5 + 2
    );
    Ok(())
}
