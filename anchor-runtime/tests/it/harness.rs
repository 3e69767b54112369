//! The throwaway PostgreSQL the integration tests run against.
//!
//! One cluster per test binary (started by `pgtemp`, which runs the server as the
//! `postgres` OS user via sudo when the tests run as root), one database per test, so the
//! tests run in parallel without seeing each other's rows. A watchdog process stops the
//! cluster and removes its directory when the test binary exits, because statics are never
//! dropped.

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anchor_runtime::{Client, TaskId, TaskRecord, TaskStatus};
use anyhow::{bail, Context, Result};
use pgtemp::PgTempDB;

/// A running cluster.
pub struct Cluster {
    db: PgTempDB,
}

impl Cluster {
    /// Starts a new cluster with a watchdog that stops it when this process exits.
    pub fn start() -> Cluster {
        let mut builder = PgTempDB::builder();
        // sudo runs commands with its own PATH (secure_path), which may lack the server
        // binaries that are on ours: give absolute paths.
        if let Some(dir) = server_bin_dir() {
            builder = builder.with_bin_path(dir);
        }
        let db = builder
            // The server's output goes to a pipe nobody reads: keep it quiet so it never fills.
            .with_config_param("log_min_messages", "panic")
            .with_config_param("max_connections", "400")
            .start();
        let cluster = Cluster { db };
        cluster.spawn_watchdog();
        cluster
    }

    fn spawn_watchdog(&self) {
        let data_dir = self.db.data_dir();
        let Some(temp_dir) = data_dir.parent() else {
            return;
        };
        let script = format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 1; done; \
             sudo -u postgres '{pg_ctl}' -D '{data}' stop -m immediate >/dev/null 2>&1; \
             rm -rf '{temp}'",
            pid = std::process::id(),
            pg_ctl = pg_ctl_path().display(),
            data = data_dir.display(),
            temp = temp_dir.display(),
        );
        let _ = Command::new("sh")
            .arg("-c")
            .arg(script)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
    }

    /// The URL of database `name` in this cluster.
    pub fn url(&self, name: &str) -> String {
        format!(
            "postgresql://{}:{}@localhost:{}/{}",
            self.db.db_user(),
            self.db.db_pass(),
            self.db.db_port(),
            name
        )
    }

    /// Runs `pg_ctl` as the server's user against this cluster.
    pub fn pg_ctl(&self, args: &[&str]) -> Result<()> {
        let data_dir = self.db.data_dir();
        let log = data_dir.with_file_name("pg_ctl.log");
        let mut cmd = if is_root() {
            let mut c = Command::new("sudo");
            c.args(["-u", "postgres"]).arg(pg_ctl_path());
            c
        } else {
            Command::new(pg_ctl_path())
        };
        let output = cmd
            .arg("-D")
            .arg(&data_dir)
            .arg("-l")
            .arg(&log)
            .args(args)
            .output()
            .context("cannot run pg_ctl")?;
        if !output.status.success() {
            bail!(
                "pg_ctl {args:?} failed: {}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(())
    }
}

/// The directory on PATH that holds `initdb` and `pg_ctl`.
fn server_bin_dir() -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .find(|dir| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file())
}

fn pg_ctl_path() -> std::path::PathBuf {
    server_bin_dir().map_or_else(|| "pg_ctl".into(), |dir| dir.join("pg_ctl"))
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// The cluster shared by every test of this binary.
pub fn shared_cluster() -> &'static Cluster {
    static CLUSTER: OnceLock<Cluster> = OnceLock::new();
    CLUSTER.get_or_init(Cluster::start)
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
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let name = format!(
        "t_{}_{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::SeqCst)
    );
    // pgtemp returns as soon as the server process is spawned; it may not accept
    // connections yet.
    let admin_url = cluster.url("postgres");
    let (admin, conn) = wait_for(
        "the test cluster to accept connections",
        Duration::from_secs(30),
        || async {
            Ok(tokio_postgres::connect(&admin_url, tokio_postgres::NoTls)
                .await
                .ok())
        },
    )
    .await?;
    let driver = tokio::spawn(conn);
    admin
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .context("cannot create the test database")?;
    drop(admin);
    let _ = driver.await;
    let url = cluster.url(&name);
    let client = Client::connect(&url).await?;
    anchor_runtime::migrate(&client).await?;
    Ok(TestDb { url, client })
}

/// A fresh database in the shared cluster.
pub async fn test_db() -> Result<TestDb> {
    test_db_in(shared_cluster()).await
}

/// Waits until `check` returns `Some`, or fails after `timeout`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Option<T>>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await? {
            return Ok(value);
        }
        if Instant::now() > deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
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
