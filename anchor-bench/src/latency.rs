//! Latency: an idle worker, one task enqueued at a time; enqueue call to handler start.
//!
//! The enqueuer and the worker share one client, as in a service that enqueues and works in
//! one process, so probes take local dispatch (inserted leased to the idle worker, no
//! claim); `--no-local-dispatch` measures the path a task from another process takes.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anchor_runtime::{Registry, TaskContext, TaskError, Worker};
use anyhow::{bail, Context, Result};
use rand::Rng;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::db::{self, Settings};
use crate::Args;

static PROBE: anchor_runtime::TaskDefinition = db::bench_task("BenchLatencyProbe", None);

/// The probe carries the time of its enqueue call, in nanoseconds since [`epoch`].
#[derive(Serialize, Deserialize)]
struct ProbeParams {
    t0_ns: u64,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pad: String,
}

/// One clock for the enqueuer and the handler (they run in the same process).
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn now_ns() -> u64 {
    u64::try_from(epoch().elapsed().as_nanos()).unwrap_or(u64::MAX)
}

pub struct Report {
    pub samples: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub rss_mb: f64,
}

pub async fn run(settings: &Settings, args: &Args) -> Result<Report> {
    let client = db::prepare(settings).await?;
    let (tx, mut rx) = mpsc::unbounded_channel::<f64>();
    let mut registry = Registry::new();
    registry.register(&PROBE, move |_ctx: TaskContext, p: ProbeParams| {
        let ms = now_ns().saturating_sub(p.t0_ns) as f64 / 1e6;
        let _ = tx.send(ms);
        async { Ok::<(), TaskError>(()) }
    });
    let config = crate::workers::worker_config(args.concurrency, args.prefetch)
        .with_local_dispatch(!args.no_local_dispatch);
    let worker = Worker::new(client.clone(), registry, config)?.start();
    // Let the worker settle and go idle, as the peers' drivers do.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let pad = "x".repeat(args.payload_bytes);
    let mut samples = Vec::with_capacity(args.lat_n);
    for _ in 0..args.lat_n {
        let params = ProbeParams {
            t0_ns: now_ns(),
            pad: pad.clone(),
        };
        client
            .enqueue(&PROBE, &params, &[])
            .await
            .context("enqueue failed")?;
        match tokio::time::timeout(Duration::from_secs(10), rx.recv()).await {
            Ok(Some(ms)) => samples.push(ms),
            Ok(None) => bail!("the worker's handler went away"),
            Err(_) => bail!("a probe did not start within 10 s"),
        }
        let pause = rand::rng().random_range(5.0..25.0);
        tokio::time::sleep(Duration::from_secs_f64(pause / 1000.0)).await;
    }
    worker.shutdown().await;
    let (p50_ms, p99_ms, max_ms) = percentiles(&mut samples);
    Ok(Report {
        samples: samples.len(),
        p50_ms,
        p99_ms,
        max_ms,
        rss_mb: crate::rss::peak_rss_mb(),
    })
}

/// p50, p99 and max, picked the way the peers' drivers pick them
/// (`sorted[min(len - 1, floor(p/100 * len))]`).
fn percentiles(xs: &mut [f64]) -> (f64, f64, f64) {
    xs.sort_by(f64::total_cmp);
    let pick = |p: f64| xs[((p / 100.0 * xs.len() as f64) as usize).min(xs.len() - 1)];
    (pick(50.0), pick(99.0), xs[xs.len() - 1])
}

#[cfg(test)]
mod tests {
    use super::percentiles;

    #[test]
    fn picks_like_the_peers() {
        let mut xs: Vec<f64> = (1..=200).rev().map(f64::from).collect();
        assert_eq!(percentiles(&mut xs), (101.0, 199.0, 200.0));
        let mut one = vec![3.0];
        assert_eq!(percentiles(&mut one), (3.0, 3.0, 3.0));
    }
}
