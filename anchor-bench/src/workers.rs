//! The workers under test: one inside the benchmark process, or P worker processes (this
//! binary re-executed with `--mode worker-child`) for `--workers P`.

use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use anchor_runtime::{
    Client, Registry, TaskContext, TaskError, Worker, WorkerConfig, WorkerHandle,
};
use anyhow::{bail, Context, Result};
use tokio::io::AsyncReadExt;
use tokio::process::{Child, Command};
use tokio::sync::Notify;

use crate::db::{self, NoopParams, Settings, DOOMED, FLAKY, NOOP};

/// Counts handler runs and signals when a target is reached.
#[derive(Default)]
pub struct Counter {
    handled: AtomicU64,
    target: AtomicU64,
    reached: Notify,
}

impl Counter {
    pub fn handled(&self) -> u64 {
        self.handled.load(Ordering::SeqCst)
    }

    /// Waits until the handler has run `target` times.
    pub async fn wait_for(&self, target: u64) {
        loop {
            let reached = self.reached.notified();
            self.target.store(target, Ordering::SeqCst);
            if self.handled() >= target {
                return;
            }
            reached.await;
        }
    }

    fn record(&self) {
        let n = self.handled.fetch_add(1, Ordering::SeqCst) + 1;
        let target = self.target.load(Ordering::SeqCst);
        if target != 0 && n >= target {
            self.reached.notify_waiters();
        }
    }
}

/// A registry with the no-op task, counting its runs, and the failing variants of
/// `--fail-rate`, whose handlers fail the first run of a `fail_rate` share of tasks.
pub fn noop_registry(counter: Arc<Counter>, fail_rate: f64) -> Registry {
    let mut registry = Registry::new();
    let noop = counter.clone();
    registry.register(&NOOP, move |_ctx: TaskContext, _params: NoopParams| {
        noop.record();
        async { Ok::<(), TaskError>(()) }
    });
    for def in [&FLAKY, &DOOMED] {
        let counter = counter.clone();
        registry.register(def, move |ctx: TaskContext, params: NoopParams| {
            counter.record();
            let fail = ctx.attempt() == 1 && db::fails_first_run(params.i, fail_rate);
            async move {
                if fail {
                    Err(TaskError::failed("planned failure"))
                } else {
                    Ok(())
                }
            }
        });
    }
    registry
}

/// anchor's default worker settings with `concurrency`, and `prefetch` when an experiment
/// overrides it.
pub fn worker_config(concurrency: usize, prefetch: Option<usize>) -> WorkerConfig {
    let config = WorkerConfig::default().with_concurrency(concurrency);
    match prefetch {
        Some(p) => config.with_prefetch(p),
        None => config,
    }
}

/// Running workers.
pub enum Workers {
    InProcess {
        handle: WorkerHandle,
        counter: Arc<Counter>,
    },
    Processes(Vec<Child>),
}

/// What the workers did.
pub struct Stopped {
    pub handled: u64,
    /// The largest peak RSS of a worker process (the benchmark process when in-process).
    pub rss_mb: f64,
}

impl Workers {
    /// Starts a worker with anchor's defaults except `concurrency`, here or in `processes`
    /// child processes.
    pub async fn start(
        settings: &Settings,
        client: &Client,
        concurrency: usize,
        prefetch: Option<usize>,
        processes: usize,
        fail_rate: f64,
    ) -> Result<Workers> {
        if processes == 0 {
            let counter = Arc::new(Counter::default());
            let config = worker_config(concurrency, prefetch);
            let registry = noop_registry(counter.clone(), fail_rate);
            let handle = Worker::new(client.clone(), registry, config)?.start();
            return Ok(Workers::InProcess { handle, counter });
        }
        let exe = std::env::current_exe().context("cannot find the benchmark binary")?;
        let mut children = Vec::with_capacity(processes);
        for _ in 0..processes {
            let mut command = Command::new(&exe);
            if let Some(p) = prefetch {
                command.args(["--prefetch", &p.to_string()]);
            }
            let child = command
                .args(["--mode", "worker-child", "--url", &settings.url])
                .args(["--schema", &settings.schema])
                .args(["--concurrency", &concurrency.to_string()])
                .args(["--fail-rate", &fail_rate.to_string()])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .kill_on_drop(true)
                .spawn()
                .context("cannot start a worker process")?;
            children.push(child);
        }
        Ok(Workers::Processes(children))
    }

    /// The in-process counter, when the worker runs here.
    pub fn counter(&self) -> Option<&Arc<Counter>> {
        match self {
            Workers::InProcess { counter, .. } => Some(counter),
            Workers::Processes(_) => None,
        }
    }

    /// Shuts the workers down gracefully and collects their counts.
    pub async fn stop(self) -> Result<Stopped> {
        match self {
            Workers::InProcess { handle, counter } => {
                handle.shutdown().await;
                Ok(Stopped {
                    handled: counter.handled(),
                    rss_mb: crate::rss::peak_rss_mb(),
                })
            }
            Workers::Processes(children) => {
                let mut handled = 0;
                let mut rss_kb = 0;
                for mut child in children {
                    // Closing its stdin tells the child to shut down.
                    drop(child.stdin.take());
                    let output = child
                        .wait_with_output()
                        .await
                        .context("worker process failed")?;
                    let text = String::from_utf8_lossy(&output.stdout);
                    if !output.status.success() {
                        bail!("a worker process exited with {}: {text}", output.status);
                    }
                    let (h, r) = parse_child_report(&text)
                        .with_context(|| format!("unreadable worker process report: {text:?}"))?;
                    handled += h;
                    rss_kb = rss_kb.max(r);
                }
                Ok(Stopped {
                    handled,
                    rss_mb: rss_kb as f64 / 1024.0,
                })
            }
        }
    }
}

/// Reads a child's `handled=<n> rss_kb=<k>` line.
fn parse_child_report(text: &str) -> Option<(u64, u64)> {
    let line = text.lines().find(|l| l.starts_with("handled="))?;
    let mut handled = None;
    let mut rss = None;
    for token in line.split_whitespace() {
        if let Some(v) = token.strip_prefix("handled=") {
            handled = v.parse().ok();
        } else if let Some(v) = token.strip_prefix("rss_kb=") {
            rss = v.parse().ok();
        }
    }
    Some((handled?, rss?))
}

/// A worker process: runs until its stdin closes, then shuts down and reports.
pub async fn run_child(
    settings: &Settings,
    concurrency: usize,
    prefetch: Option<usize>,
    fail_rate: f64,
) -> Result<()> {
    let client = db::connect(settings).await?;
    let counter = Arc::new(Counter::default());
    let config = worker_config(concurrency, prefetch);
    let handle = Worker::new(client, noop_registry(counter.clone(), fail_rate), config)?.start();
    let mut stdin = tokio::io::stdin();
    let mut buf = [0u8; 64];
    // Any input or end of input means stop.
    let _ = stdin.read(&mut buf).await;
    handle.shutdown().await;
    println!(
        "handled={} rss_kb={}",
        counter.handled(),
        crate::rss::peak_rss_kb()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::parse_child_report;

    #[test]
    fn child_reports() {
        assert_eq!(
            parse_child_report("handled=12 rss_kb=3000\n"),
            Some((12, 3000))
        );
        assert_eq!(parse_child_report("garbage"), None);
        assert_eq!(parse_child_report("handled=x rss_kb=1"), None);
    }
}
