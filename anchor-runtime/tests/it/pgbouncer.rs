//! Enqueue through PgBouncer in transaction pooling mode (Debian's 1.18, which keeps no
//! named prepared statement from one transaction to the next), with the client's statement
//! cache off: plain, unique-tagged, bulk and in the caller's transaction, plus inspection
//! and cancel. The worker runs on a direct connection, and refuses the pooler's client.

use std::sync::OnceLock;
use std::time::Duration;

use anchor_runtime::{
    Client, ConnectOptions, ErrorKind, Registry, TaskContext, TaskDefinition, TaskError,
    TaskOverride, TaskStatus, Worker, WorkerConfig,
};
use anchor_testkit::PgBouncer;
use anyhow::{ensure, Context, Result};

use crate::harness::{shared_cluster, wait_for_status};

static BOUNCED: TaskDefinition = TaskDefinition {
    name: "Bounced",
    retry: None,
    timeout_ms: 10_000,
    cron: None,
    on_failed: None,
    default_params: "{}",
    max_rescues: None,
    queue: "default",
    priority: 0,
};

/// One PgBouncer for this binary, with two server connections: consecutive statements of
/// one client land on different server connections.
fn bouncer() -> &'static PgBouncer {
    static BOUNCER: OnceLock<PgBouncer> = OnceLock::new();
    BOUNCER.get_or_init(|| {
        PgBouncer::start_transaction_mode(shared_cluster(), 2).expect("start pgbouncer")
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enqueue_through_pgbouncer_in_transaction_mode_and_a_direct_worker_runs_it() -> Result<()> {
    crate::harness::init_tracing();
    let db = shared_cluster().create_database("bounced").await?;
    let options = ConnectOptions::from_url(&bouncer().url(&db.name))?.statement_cache(false);
    let bounced = Client::connect_with(options).await?;
    // Migrations run through the pooler too (in transactions).
    anchor_runtime::migrate(&bounced).await?;
    let direct = Client::connect(&db.url).await?;
    let json = |i: i32| serde_json::json!({ "i": i });

    let mut ids = Vec::new();
    for i in 0..20 {
        ids.push(bounced.enqueue(&BOUNCED, &json(i), &[]).await?);
    }
    let tag = [TaskOverride::unique_tag("once")];
    let tagged = bounced.enqueue(&BOUNCED, &json(100), &tag).await?;
    ensure!(bounced.enqueue(&BOUNCED, &json(101), &tag).await? == tagged);
    ids.push(tagged);
    ids.extend(
        bounced
            .enqueue_many(&BOUNCED, &[json(200), json(201)], &[])
            .await?,
    );
    // In the caller's transaction, through the pooler too.
    let mut conn = bounced.pool().get().await?;
    let tx = conn.transaction().await?;
    ids.push(
        bounced
            .enqueue_with_tx(&tx, &BOUNCED, &json(300), &[])
            .await?,
    );
    ids.extend(
        bounced
            .enqueue_many_with_tx(&tx, &BOUNCED, &[json(301)], &[])
            .await?,
    );
    tx.commit().await?;
    drop(conn);
    // Inspection and cancel.
    let later = bounced
        .enqueue(
            &BOUNCED,
            &json(400),
            &[TaskOverride::run_after(Duration::from_secs(3600))],
        )
        .await?;
    ensure!(bounced.get_task(later).await?.context("task")?.status == TaskStatus::Pending);
    ensure!(bounced.cancel_task(later).await?, "cancelled");
    ensure!(bounced.get_task(later).await?.context("task")?.status == TaskStatus::Cancelled);

    let mut registry = Registry::new();
    registry.register(&BOUNCED, |_ctx: TaskContext, _p: serde_json::Value| async {
        Ok::<(), TaskError>(())
    });
    // A worker needs session state (LISTEN, prepared statements): the pooler's client is
    // refused, saying what to give it instead.
    let Err(err) = Worker::new(bounced.clone(), Registry::new(), WorkerConfig::default()) else {
        anyhow::bail!("a worker accepted the pooler's client");
    };
    ensure!(err.kind() == ErrorKind::Config, "{err}");
    ensure!(err.to_string().contains("direct URL"), "{err}");
    let worker = Worker::new(direct.clone(), registry, WorkerConfig::default())?.start();
    for id in ids {
        wait_for_status(&direct, id, TaskStatus::Completed, Duration::from_secs(20)).await?;
    }
    worker.shutdown().await;
    Ok(())
}
