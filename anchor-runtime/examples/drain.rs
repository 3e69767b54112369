//! A quick throughput probe: bulk-enqueues N no-op tasks and times a worker draining them.
//!
//! ```text
//! DATABASE_URL=postgres://... cargo run --release -p anchor-runtime --example drain -- 20000 10
//! ```
//! The benchmark proper (with peers side by side) is `anchor-bench`; this is for a quick look.

use std::time::{Duration, Instant};

use anchor_runtime::{
    Client, Registry, TaskContext, TaskDefinition, TaskError, Worker, WorkerConfig,
};

static NOOP: TaskDefinition = TaskDefinition {
    name: "DrainNoop",
    retry: None,
    timeout_ms: 60_000,
    cron: None,
    on_failed: None,
    default_params: "{}",
};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let url = std::env::var("DATABASE_URL")?;
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().map_or(Ok(20_000), |a| a.parse())?;
    let concurrency: usize = args.next().map_or(Ok(10), |a| a.parse())?;
    let client = Client::connect(&url).await?;
    anchor_runtime::migrate(&client).await?;
    client
        .pool()
        .get()
        .await?
        .batch_execute("TRUNCATE anchor.tasks")
        .await?;

    let params: Vec<serde_json::Value> = (0..n).map(|i| serde_json::json!({ "i": i })).collect();
    let started = Instant::now();
    for chunk in params.chunks(10_000) {
        client.enqueue_many(&NOOP, chunk, &[]).await?;
    }
    let enqueue_s = started.elapsed().as_secs_f64();

    let mut registry = Registry::new();
    registry.register(&NOOP, |_ctx: TaskContext, _p: serde_json::Value| async {
        Ok::<(), TaskError>(())
    });
    let config = WorkerConfig::default().with_concurrency(concurrency);
    let started = Instant::now();
    let worker = Worker::new(client.clone(), registry, config).start();
    let conn = client.pool().get().await?;
    loop {
        let done: i64 = conn
            .query_one("SELECT count(*) FROM anchor.tasks WHERE status = 2", &[])
            .await?
            .get(0);
        if done as usize >= n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let work_s = started.elapsed().as_secs_f64();
    worker.shutdown().await;
    println!(
        "n={n} c={concurrency} enqueue_s={enqueue_s:.3} ({:.0}/s) work_s={work_s:.3} ({:.0}/s)",
        n as f64 / enqueue_s,
        n as f64 / work_s
    );
    Ok(())
}
