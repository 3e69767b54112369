//! Database outages: the worker logs, backs off and carries on.

use std::time::{Duration, Instant};

use anchor_runtime::{Registry, TaskContext, TaskDefinition, TaskError, TaskStatus, Worker};
use anyhow::Result;
use serde::{Deserialize, Serialize};

use crate::harness::{test_db_in, wait_for, wait_for_status, Cluster};

#[derive(Serialize, Deserialize)]
struct Ping {
    n: i64,
}

static PING: TaskDefinition = TaskDefinition {
    name: "Ping",
    retry: None,
    timeout_ms: 10_000,
    cron: None,
    on_failed: None,
    default_params: "{}",
    max_rescues: None,
    queue: "default",
    priority: 0,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_survives_a_database_restart() -> Result<()> {
    // A cluster of its own: restarting the shared one would disturb the other tests.
    let cluster = tokio::task::block_in_place(Cluster::start);
    let db = test_db_in(&cluster).await?;
    let mut registry = Registry::new();
    registry.register(&PING, |_ctx: TaskContext, _p: Ping| async {
        Ok::<(), TaskError>(())
    });
    let config = anchor_runtime::WorkerConfig::default()
        .with_poll_interval(Duration::from_millis(200))
        .with_lease_duration(Duration::from_secs(5));
    let worker = Worker::new(db.client.clone(), registry, config)?.start();
    let before = db.client.enqueue(&PING, &Ping { n: 1 }, &[]).await?;
    wait_for_status(
        &db.client,
        before,
        TaskStatus::Completed,
        Duration::from_secs(30),
    )
    .await?;

    for mode in ["fast", "immediate"] {
        // pg_ctl blocks until the server is back; the worker runs on the other thread.
        tokio::task::block_in_place(|| cluster.pg_ctl(&["-w", "-m", mode, "restart"]))?;
        // Enqueue as soon as the database takes connections again.
        let id = wait_for(
            "the database to accept enqueues",
            Duration::from_secs(30),
            || async { Ok(db.client.enqueue(&PING, &Ping { n: 2 }, &[]).await.ok()) },
        )
        .await?;
        let started = Instant::now();
        wait_for_status(
            &db.client,
            id,
            TaskStatus::Completed,
            Duration::from_secs(30),
        )
        .await?;
        assert!(started.elapsed() < Duration::from_secs(30));
    }
    worker.shutdown().await;
    tokio::task::block_in_place(|| cluster.pg_ctl(&["-m", "immediate", "stop"]))?;
    Ok(())
}
