//! Migrations, enqueue (plain, transactional, bulk, unique tags), inspection and cancel.

use std::time::Duration;

use anchor_runtime::RetryPolicy;
use anchor_runtime::TaskId;
use anchor_runtime::{Client, ErrorKind, RetryDefaults, TaskDefinition, TaskOverride, TaskStatus};
use anyhow::Result;
use serde::{Deserialize, Serialize};

use crate::harness::{count, test_db};

static NOTE: TaskDefinition = TaskDefinition {
    name: "Note",
    retry: Some(RetryDefaults {
        intervals_ms: &[60_000],
        always_retry_on_failure: false,
        max_retries: Some(2),
    }),
    timeout_ms: 5_000,
    cron: None,
    on_failed: Some("NoteFailed"),
    default_params: "{}",
    max_rescues: None,
    queue: "default",
    priority: 0,
};

#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct NoteParams {
    text: String,
    n: i64,
}

fn note(n: i64) -> NoteParams {
    NoteParams {
        text: format!("note {n}"),
        n,
    }
}

#[tokio::test]
async fn migrate_is_idempotent_and_safe_concurrently() -> Result<()> {
    let db = test_db().await?;
    // Already migrated by the harness: nothing to do.
    let report = anchor_runtime::migrate(&db.client).await?;
    assert!(report.applied.is_empty());
    assert_eq!(report.version, anchor_runtime::SCHEMA_VERSION);
    // Ten processes starting at once against a new schema: one applies, all succeed.
    let mut joins = Vec::new();
    for _ in 0..10 {
        let client = Client::connect(&db.url)
            .await?
            .try_with_schema("other_schema")?;
        joins.push(tokio::spawn(async move {
            anchor_runtime::migrate(&client).await
        }));
    }
    let mut applied = 0;
    for join in joins {
        let report = join.await??;
        applied += report.applied.len();
    }
    assert_eq!(applied, anchor_runtime::MIGRATIONS.len());
    let other = db.client.clone().with_schema("other_schema");
    anchor_runtime::check_schema(&other).await?;
    let id = other.enqueue(&NOTE, &note(1), &[]).await?;
    assert!(other.get_task(id).await?.is_some());
    // The default schema does not see the other schema's task.
    assert_eq!(count(&db.client, "true").await?, 0);
    Ok(())
}

#[tokio::test]
async fn missing_schema_is_a_schema_error() -> Result<()> {
    let db = test_db().await?;
    let client = db.client.clone().with_schema("never_migrated");
    let err = client.enqueue(&NOTE, &note(1), &[]).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Schema, "{err}");
    let err = anchor_runtime::check_schema(&client).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Schema, "{err}");
    let bad = db.client.clone().with_schema("bad-name");
    assert_eq!(
        bad.get_task(TaskId::new(1)).await.unwrap_err().kind(),
        ErrorKind::Config
    );
    Ok(())
}

#[tokio::test]
async fn enqueue_stores_defaults_and_overrides() -> Result<()> {
    let db = test_db().await?;
    let id = db.client.enqueue(&NOTE, &note(7), &[]).await?;
    let task = db.client.get_task(id).await?.expect("task exists");
    assert_eq!(task.name, "Note");
    assert_eq!(task.status, TaskStatus::Pending);
    assert_eq!(task.payload_as::<NoteParams>()?, note(7));
    assert_eq!(task.payload, serde_json::json!({"text": "note 7", "n": 7}));
    assert_eq!(task.attempts, 0);
    assert!(task.errors.is_empty());
    assert_eq!(task.settings.timeout, Duration::from_secs(5));
    let policy = task.settings.retry.as_ref().expect("a retry policy");
    assert_eq!(policy.intervals, [Duration::from_secs(60)]);
    assert_eq!(policy.max_retries, Some(2));
    assert_eq!(task.settings.on_failed.as_deref(), Some("NoteFailed"));
    assert!(task.run_after <= chrono::Utc::now() + chrono::Duration::seconds(1));

    let later = db
        .client
        .enqueue(
            &NOTE,
            &note(8),
            &[
                TaskOverride::retry_policy(RetryPolicy::parse("1s,2s", true)?),
                TaskOverride::max_retries(9),
                TaskOverride::timeout(Duration::from_millis(1500)),
                TaskOverride::run_after(Duration::from_secs(3600)),
            ],
        )
        .await?;
    let task = db.client.get_task(later).await?.expect("task exists");
    assert_eq!(
        task.settings.retry,
        Some(RetryPolicy {
            intervals: vec![Duration::from_secs(1), Duration::from_secs(2)],
            always_retry_on_failure: true,
            max_retries: Some(9),
        })
    );
    assert_eq!(task.settings.timeout, Duration::from_millis(1500));
    assert!(task.run_after > chrono::Utc::now() + chrono::Duration::minutes(59));

    let at = chrono::Utc::now() + chrono::Duration::days(1);
    let id = db
        .client
        .enqueue(&NOTE, &note(9), &[TaskOverride::run_at(at)])
        .await?;
    let task = db.client.get_task(id).await?.expect("task exists");
    assert!((task.run_after - at).num_milliseconds().abs() < 5);
    assert!(db
        .client
        .get_task(TaskId::new(id.get() + 1000))
        .await?
        .is_none());
    Ok(())
}

#[tokio::test]
async fn invalid_overrides_write_nothing() -> Result<()> {
    let db = test_db().await?;
    for overrides in [
        vec![TaskOverride::timeout(Duration::ZERO)],
        vec![TaskOverride::retry_policy(RetryPolicy {
            intervals: Vec::new(),
            always_retry_on_failure: true,
            max_retries: None,
        })],
        vec![TaskOverride::unique_tag(" ")],
    ] {
        let err = db
            .client
            .enqueue(&NOTE, &note(1), &overrides)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidOverride, "{err}");
        let pool = db.client.pool().get().await?;
        let tx_err = {
            let mut conn = pool;
            let tx = conn.transaction().await?;
            let err = db
                .client
                .enqueue_with_tx(&tx, &NOTE, &note(1), &overrides)
                .await
                .unwrap_err();
            tx.commit().await?;
            err
        };
        assert_eq!(tx_err.kind(), ErrorKind::InvalidOverride);
    }
    let err = db
        .client
        .enqueue_many(&NOTE, &[note(1)], &[TaskOverride::unique_tag("x")])
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidOverride);
    assert_eq!(count(&db.client, "true").await?, 0);
    Ok(())
}

#[tokio::test]
async fn transactional_enqueue_is_visible_only_after_commit() -> Result<()> {
    let db = test_db().await?;
    let mut conn = db.client.pool().get().await?;

    let tx = conn.transaction().await?;
    let id = db.client.enqueue_with_tx(&tx, &NOTE, &note(1), &[]).await?;
    // Another connection (a worker) does not see it yet.
    assert!(db.client.get_task(id).await?.is_none());
    tx.commit().await?;
    assert_eq!(
        db.client.get_task(id).await?.map(|t| t.status),
        Some(TaskStatus::Pending)
    );

    let tx = conn.transaction().await?;
    let rolled_back = db.client.enqueue_with_tx(&tx, &NOTE, &note(2), &[]).await?;
    tx.rollback().await?;
    assert!(db.client.get_task(rolled_back).await?.is_none());
    assert_eq!(count(&db.client, "true").await?, 1);
    Ok(())
}

#[tokio::test]
async fn unique_tag_under_50_concurrent_enqueues() -> Result<()> {
    let db = test_db().await?;
    let mut joins = Vec::new();
    for i in 0..50 {
        let client = db.client.clone();
        joins.push(tokio::spawn(async move {
            client
                .enqueue(&NOTE, &note(i), &[TaskOverride::unique_tag("user-1-daily")])
                .await
        }));
    }
    let mut ids = Vec::new();
    for join in joins {
        ids.push(join.await??);
    }
    ids.dedup();
    assert_eq!(ids.len(), 1, "every caller gets the one task's id");
    assert_eq!(count(&db.client, "unique_tag = 'user-1-daily'").await?, 1);

    // The same inside transactions that race, committed in any order.
    let mut joins = Vec::new();
    for i in 0..20 {
        let client = db.client.clone();
        joins.push(tokio::spawn(async move {
            let mut conn = client.pool().get().await?;
            let tx = conn.transaction().await?;
            let id = client
                .enqueue_with_tx(&tx, &NOTE, &note(i), &[TaskOverride::unique_tag("tx-tag")])
                .await?;
            tx.commit().await?;
            anyhow::Ok(id)
        }));
    }
    let mut tx_ids = Vec::new();
    for join in joins {
        tx_ids.push(join.await??);
    }
    tx_ids.dedup();
    assert_eq!(tx_ids.len(), 1);
    assert_eq!(count(&db.client, "unique_tag = 'tx-tag'").await?, 1);

    // Cancelling frees the tag.
    assert!(db.client.cancel_task(ids[0]).await?);
    let again = db
        .client
        .enqueue(
            &NOTE,
            &note(99),
            &[TaskOverride::unique_tag("user-1-daily")],
        )
        .await?;
    assert_ne!(again, ids[0]);
    Ok(())
}

#[tokio::test]
async fn enqueue_many_returns_ids_in_order() -> Result<()> {
    let db = test_db().await?;
    let params: Vec<NoteParams> = (0..2000).map(note).collect();
    let ids = db.client.enqueue_many(&NOTE, &params, &[]).await?;
    assert_eq!(ids.len(), 2000);
    for (i, id) in ids.iter().enumerate().step_by(199) {
        let task = db.client.get_task(*id).await?.expect("task exists");
        assert_eq!(task.payload_as::<NoteParams>()?.n, i as i64);
        assert_eq!(task.settings.retry.expect("a policy").max_retries, Some(2));
    }
    assert!(db
        .client
        .enqueue_many::<NoteParams>(&NOTE, &[], &[])
        .await?
        .is_empty());
    Ok(())
}

#[tokio::test]
async fn cancel_only_pending_tasks() -> Result<()> {
    let db = test_db().await?;
    let id = db.client.enqueue(&NOTE, &note(1), &[]).await?;
    assert!(db.client.cancel_task(id).await?);
    let task = db.client.get_task(id).await?.expect("task exists");
    assert_eq!(task.status, TaskStatus::Cancelled);
    assert!(task.finished_at.is_some());
    // Already cancelled, and unknown ids: nothing to cancel.
    assert!(!db.client.cancel_task(id).await?);
    assert!(!db.client.cancel_task(TaskId::new(id.get() + 100)).await?);
    Ok(())
}

#[tokio::test]
async fn bad_database_urls_are_config_errors() -> Result<()> {
    let err = Client::connect("definitely not a url=").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config, "{err}");
    // A database that is down: connecting succeeds (lazily), the first use says why.
    let client = Client::connect("postgresql://nobody@127.0.0.1:1/none").await?;
    let err = client.get_task(TaskId::new(1)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Pool, "{err}");
    assert!(err.to_string().contains("connect"), "{err}");
    Ok(())
}

/// `task_view` spells the status, gives durations as intervals and the last error message,
/// for people who query the table directly.
#[tokio::test]
async fn the_task_view_reads_like_the_docs_say() -> Result<()> {
    let db = test_db().await?;
    let id = db.client.enqueue(&NOTE, &note(3), &[]).await?;
    let other = db
        .client
        .enqueue(
            &NOTE,
            &note(4),
            &[TaskOverride::retry_policy(RetryPolicy::parse(
                "1s,1m", false,
            )?)],
        )
        .await?;
    assert!(db.client.cancel_task(other).await?);
    let conn = db.client.pool().get().await?;
    let row = conn
        .query_one(
            "SELECT status, timeout::text, retry_intervals::text, last_error, payload->>'text' \
             FROM anchor.task_view WHERE id = $1",
            &[&id],
        )
        .await?;
    assert_eq!(row.get::<_, String>(0), "pending");
    assert_eq!(row.get::<_, String>(1), "00:00:05");
    assert_eq!(
        row.get::<_, Option<String>>(2).as_deref(),
        Some("{00:01:00}")
    );
    assert_eq!(row.get::<_, Option<String>>(3), None);
    assert_eq!(row.get::<_, String>(4), "note 3");
    let row = conn
        .query_one(
            "SELECT status, retry_intervals::text FROM anchor.task_view WHERE id = $1",
            &[&other],
        )
        .await?;
    assert_eq!(row.get::<_, String>(0), "cancelled");
    assert_eq!(row.get::<_, String>(1), "{00:00:01,00:01:00}");
    Ok(())
}
