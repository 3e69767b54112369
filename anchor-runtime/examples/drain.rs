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
    max_rescues: None,
    queue: "default",
    priority: 0,
};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let url = std::env::var("DATABASE_URL")?;
    let mut args = std::env::args().skip(1).peekable();
    if args.peek().map(String::as_str) == Some("latency") {
        args.next();
        let n: usize = args.next().map_or(Ok(200), |a| a.parse())?;
        return latency(&url, n).await;
    }
    let n: usize = args.next().map_or(Ok(20_000), |a| a.parse())?;
    let concurrency: usize = args.next().map_or(Ok(10), |a| a.parse())?;
    let prefetch: Option<usize> = args.next().map(|a| a.parse()).transpose()?;
    let client = Client::connect(&url).await?;
    anchor_runtime::migrate(&client).await?;
    client
        .pool()
        .get()
        .await?
        .batch_execute("TRUNCATE anchor.tasks; ANALYZE anchor.tasks")
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
    let mut config = WorkerConfig::default().with_concurrency(concurrency);
    if let Some(prefetch) = prefetch {
        config = config.with_prefetch(prefetch);
    }
    let started = Instant::now();
    let worker = Worker::new(client.clone(), registry, config)?.start();
    let conn = client.pool().get().await?;
    loop {
        // Cheap: both partial indexes are empty once everything is finished.
        let busy: bool = conn
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM anchor.tasks WHERE status = 0) \
                 OR EXISTS (SELECT 1 FROM anchor.tasks WHERE status = 1)",
                &[],
            )
            .await?
            .get(0);
        if !busy {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let work_s = started.elapsed().as_secs_f64();
    let completed: i64 = conn
        .query_one("SELECT count(*) FROM anchor.tasks WHERE status = 2", &[])
        .await?
        .get(0);
    anyhow::ensure!(
        completed as usize == n,
        "only {completed} of {n} tasks completed"
    );
    worker.shutdown().await;
    println!(
        "n={n} c={concurrency} enqueue_s={enqueue_s:.3} ({:.0}/s) work_s={work_s:.3} ({:.0}/s)",
        n as f64 / enqueue_s,
        n as f64 / work_s
    );
    Ok(())
}

static PROBE: TaskDefinition = TaskDefinition {
    name: "LatencyProbe",
    retry: None,
    timeout_ms: 60_000,
    cron: None,
    on_failed: None,
    default_params: "{}",
    max_rescues: None,
    queue: "default",
    priority: 0,
};

/// Enqueues one task at a time into an idle worker and reports enqueue-to-start times.
async fn latency(url: &str, n: usize) -> anyhow::Result<()> {
    let client = Client::connect(url).await?;
    anchor_runtime::migrate(&client).await?;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Instant>();
    let mut registry = Registry::new();
    registry.register(&PROBE, move |_ctx: TaskContext, _p: serde_json::Value| {
        let _ = tx.send(Instant::now());
        async { Ok::<(), TaskError>(()) }
    });
    let worker = Worker::new(client.clone(), registry, WorkerConfig::default())?.start();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let sent = Instant::now();
        client.enqueue(&PROBE, &serde_json::json!({}), &[]).await?;
        let Some(started) = rx.recv().await else {
            break;
        };
        samples.push(started - sent);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    worker.shutdown().await;
    samples.sort();
    let pct = |p: f64| samples[((samples.len() as f64 - 1.0) * p) as usize];
    println!(
        "latency n={} p50={:?} p99={:?} max={:?}",
        samples.len(),
        pct(0.5),
        pct(0.99),
        pct(1.0)
    );
    Ok(())
}
