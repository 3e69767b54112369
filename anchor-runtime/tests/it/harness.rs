//! The throwaway PostgreSQL the integration tests run against: one cluster per test
//! binary (from `anchor-testkit`, which runs the server as the `postgres` OS user via sudo
//! when the tests run as root and stops it when the binary exits), one database per test,
//! so the tests run in parallel without seeing each other's rows.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anchor_runtime::{Client, Registry, TaskId, TaskRecord, TaskStatus, Worker, WorkerConfig};
use anyhow::{Context, Result};

pub use anchor_testkit::Cluster;

/// The cluster shared by every test of this binary.
pub fn shared_cluster() -> &'static Cluster {
    anchor_testkit::shared()
}

/// Sets up logging once (RUST_LOG=anchor_runtime=debug to see the worker).
pub fn init_tracing() {
    static INIT: OnceLock<()> = OnceLock::new();
    INIT.get_or_init(|| {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
            )
            .with_test_writer()
            .try_init();
    });
}

/// A fresh database with the schema migrated, and a client for it.
pub struct TestDb {
    pub url: String,
    pub client: Client,
}

/// Creates a database for one test in `cluster` and migrates it.
pub async fn test_db_in(cluster: &Cluster) -> Result<TestDb> {
    init_tracing();
    let url = cluster.create_database("it").await?.url;
    let client = Client::connect(&url).await?;
    anchor_runtime::migrate(&client).await?;
    Ok(TestDb { url, client })
}

/// A fresh database in the shared cluster.
pub async fn test_db() -> Result<TestDb> {
    test_db_in(shared_cluster()).await
}

/// Waits until `check` returns `Some`, or fails after `timeout`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Option<T>>>,
{
    anchor_testkit::wait_for(what, timeout, check).await
}

/// Waits until task `id` reaches `status`, returning its record.
pub async fn wait_for_status(
    client: &Client,
    id: TaskId,
    status: TaskStatus,
    timeout: Duration,
) -> Result<TaskRecord> {
    wait_for(&format!("task {id} to be {status}"), timeout, || async {
        let task = client.get_task(id).await?.context("task vanished")?;
        Ok((task.status == status).then_some(task))
    })
    .await
}

/// The messages of a task's error history, oldest first.
pub fn error_messages(task: &TaskRecord) -> Vec<&str> {
    task.errors.iter().map(|e| e.message.as_str()).collect()
}

/// Counts rows in the test database's tasks table matching `where_clause`.
pub async fn count(client: &Client, where_clause: &str) -> Result<i64> {
    let conn = client.pool().get().await?;
    let row = conn
        .query_one(
            &format!("SELECT count(*) FROM anchor.tasks WHERE {where_clause}"),
            &[],
        )
        .await?;
    Ok(row.get(0))
}

/// A record of executions: how many times each task ran, and whether two runs of one task
/// ever overlapped.
#[derive(Clone, Default)]
pub struct Ledger {
    inner: Arc<Mutex<LedgerInner>>,
}

#[derive(Default)]
struct LedgerInner {
    runs: std::collections::HashMap<TaskId, u32>,
    running: std::collections::HashSet<TaskId>,
    overlaps: Vec<TaskId>,
    starts: Vec<(TaskId, u32, Instant)>,
}

impl Ledger {
    /// Records the start of a run; the run ends when the returned guard is dropped.
    pub fn start(&self, id: TaskId, attempt: u32) -> RunGuard {
        let mut l = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        *l.runs.entry(id).or_default() += 1;
        if !l.running.insert(id) {
            l.overlaps.push(id);
        }
        l.starts.push((id, attempt, Instant::now()));
        RunGuard {
            ledger: self.clone(),
            id,
        }
    }

    pub fn is_running(&self, id: TaskId) -> bool {
        let l = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        l.running.contains(&id)
    }

    pub fn runs(&self, id: TaskId) -> u32 {
        let l = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        l.runs.get(&id).copied().unwrap_or(0)
    }

    pub fn all_runs(&self) -> std::collections::HashMap<TaskId, u32> {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .runs
            .clone()
    }

    pub fn overlaps(&self) -> Vec<TaskId> {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .overlaps
            .clone()
    }

    pub fn starts(&self, id: TaskId) -> Vec<(u32, Instant)> {
        let l = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        l.starts
            .iter()
            .filter(|(i, _, _)| *i == id)
            .map(|(_, a, t)| (*a, *t))
            .collect()
    }
}

/// Ends a run in the [`Ledger`] when dropped.
pub struct RunGuard {
    ledger: Ledger,
    id: TaskId,
}

impl Drop for RunGuard {
    fn drop(&mut self) {
        let mut l = self.ledger.inner.lock().unwrap_or_else(|e| e.into_inner());
        l.running.remove(&self.id);
    }
}

/// A worker on a tokio runtime of its own with one worker thread, on a thread of its own,
/// as a separate process would be. [`KillableWorker::kill`] drops it mid-run: its tasks stop
/// without any shutdown, release or outcome write, and its connections close, exactly as
/// when the process dies. A handler that blocks its thread stalls the whole worker (its
/// renewals too), as a long pause of a process would.
pub struct KillableWorker {
    /// Sends whether to shut down gracefully (`true`) or die (`false`).
    kill: Option<tokio::sync::oneshot::Sender<bool>>,
    thread: Option<std::thread::JoinHandle<Result<()>>>,
}

impl KillableWorker {
    pub fn start(url: &str, registry: Registry, config: WorkerConfig) -> KillableWorker {
        let (kill_tx, kill_rx) = tokio::sync::oneshot::channel::<bool>();
        let url = url.to_string();
        let thread = std::thread::spawn(move || -> Result<()> {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()?;
            runtime.block_on(async move {
                let client = Client::connect(&url).await?;
                let worker = Worker::new(client, registry, config)?.start();
                if kill_rx.await == Ok(true) {
                    worker.shutdown().await;
                }
                anyhow::Ok(())
            })?;
            runtime.shutdown_background();
            Ok(())
        });
        KillableWorker {
            kill: Some(kill_tx),
            thread: Some(thread),
        }
    }

    /// Kills the worker as if its process had died.
    pub fn kill(self) -> Result<()> {
        self.stop(false)
    }

    /// Shuts the worker down as [`WorkerHandle::shutdown`](anchor_runtime::WorkerHandle)
    /// does: whatever it had to write has been tried when this returns.
    pub fn shutdown(self) -> Result<()> {
        self.stop(true)
    }

    fn stop(mut self, graceful: bool) -> Result<()> {
        if let Some(kill) = self.kill.take() {
            let _ = kill.send(graceful);
        }
        if let Some(thread) = self.thread.take() {
            thread
                .join()
                .map_err(|_| anyhow::anyhow!("the killed worker's thread panicked"))??;
        }
        Ok(())
    }
}
