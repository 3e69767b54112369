//! Test support shared by every crate whose tests need a real PostgreSQL.
//!
//! A [`Cluster`] is a throwaway PostgreSQL server started by `pgtemp` from the server
//! binaries on `PATH`. When the tests run as root, pgtemp runs the server as the `postgres`
//! OS user through `sudo` (the server refuses to run as root). A watchdog process stops the
//! cluster and removes its directory when the test binary exits, because a `static` cluster
//! is never dropped. Each test takes its own database with [`Cluster::create_database`], so
//! tests run in parallel without seeing each other's rows.
//!
//! ```no_run
//! # async fn demo() -> Result<(), anchor_testkit::Error> {
//! let db = anchor_testkit::shared().create_database("my_test").await?;
//! println!("connect to {}", db.url);
//! # Ok(()) }
//! ```
#![warn(missing_docs)]

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use pgtemp::PgTempDB;

mod pgbouncer;
mod tls;
pub use pgbouncer::PgBouncer;
pub use tls::{TestCerts, CERT_USER};

/// A test-support failure, with a message saying what could not be done.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Error(String);

/// A `Result` with the test kit's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

fn fail<T>(message: impl Into<String>) -> Result<T> {
    Err(Error(message.into()))
}

/// How long to wait for a (re)started server to accept connections. Generous: the
/// machine running the tests may be busy compiling.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// A database created for one test.
#[derive(Debug, Clone)]
pub struct Database {
    /// The database's name.
    pub name: String,
    /// Its connection URL.
    pub url: String,
}

/// Settings for a new [`Cluster`].
#[derive(Debug, Clone)]
pub struct ClusterBuilder {
    params: Vec<(String, String)>,
}

impl ClusterBuilder {
    /// Sets a server configuration parameter (`postgres -c key=value`).
    pub fn param(mut self, key: &str, value: impl ToString) -> Self {
        self.params.push((key.to_string(), value.to_string()));
        self
    }

    /// Sets `max_connections` (default 400).
    pub fn max_connections(self, n: u32) -> Self {
        self.param("max_connections", n)
    }

    /// Makes commits survive a crash: pgtemp turns `synchronous_commit` off for speed, and
    /// then a commit acknowledged just before an immediate shutdown may vanish — exactly
    /// what a restart test must not allow.
    pub fn durable(self) -> Self {
        self.param("synchronous_commit", "on")
    }

    /// Turns autovacuum back on (pgtemp turns it off). A long-running queue test wants it:
    /// claimed and finished rows leave dead index entries the claim would wade through.
    pub fn autovacuum(self) -> Self {
        self.param("autovacuum", "on")
    }

    /// Starts the cluster and its watchdog. It may still be starting up when this returns;
    /// [`Cluster::create_database`] and [`Cluster::wait_ready`] wait for it.
    pub fn start(self) -> Cluster {
        let mut builder = PgTempDB::builder();
        // sudo runs commands with its own PATH (secure_path), which may lack the server
        // binaries that are on ours: give absolute paths.
        if let Some(dir) = server_bin_dir() {
            builder = builder.with_bin_path(dir);
        }
        // The server's output goes to a pipe nobody reads: keep it quiet so it never fills.
        builder = builder
            .with_config_param("log_min_messages", "panic")
            .with_config_param("max_connections", "400");
        for (key, value) in &self.params {
            builder = builder.with_config_param(key, value);
        }
        let cluster = Cluster {
            db: builder.start(),
        };
        cluster.spawn_watchdog();
        cluster
    }
}

/// A running throwaway cluster.
pub struct Cluster {
    db: PgTempDB,
}

impl Cluster {
    /// Settings for a new cluster.
    pub fn builder() -> ClusterBuilder {
        ClusterBuilder { params: Vec::new() }
    }

    /// Starts a cluster with the default settings.
    pub fn start() -> Cluster {
        Cluster::builder().start()
    }

    fn spawn_watchdog(&self) {
        let data_dir = self.db.data_dir();
        let Some(temp_dir) = data_dir.parent() else {
            return;
        };
        let stop = if is_root() { "sudo -u postgres " } else { "" };
        // Best effort: without a watchdog the cluster outlives the test binary, which
        // wastes resources but breaks nothing.
        on_exit(&format!(
            "{stop}'{pg_ctl}' -D '{data}' stop -m immediate >/dev/null 2>&1; rm -rf '{temp}'",
            pg_ctl = pg_ctl_path().display(),
            data = data_dir.display(),
            temp = temp_dir.display(),
        ));
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

    /// The superuser the test databases are reached as.
    pub fn db_user(&self) -> String {
        self.db.db_user().to_string()
    }

    /// That user's password.
    pub fn db_password(&self) -> String {
        self.db.db_pass().to_string()
    }

    /// The server's TCP port.
    pub fn port(&self) -> u16 {
        self.db.db_port()
    }

    /// Runs `pg_ctl` against this cluster as the server's OS user (e.g. `["-w", "-m",
    /// "fast", "restart"]`). Blocking: call it from `spawn_blocking`/`block_in_place` in
    /// async tests.
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
            .map_err(|err| Error(format!("cannot run pg_ctl: {err}")))?;
        if !output.status.success() {
            return fail(format!(
                "pg_ctl {args:?} failed: {}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ));
        }
        Ok(())
    }

    /// Waits until the server accepts connections (pgtemp returns as soon as the server
    /// process is spawned, and a restarted server needs a moment too).
    pub async fn wait_ready(&self) -> Result<()> {
        let url = self.url("postgres");
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            match tokio_postgres::connect(&url, tokio_postgres::NoTls).await {
                Ok((client, conn)) => {
                    let driver = tokio::spawn(conn);
                    let ok = client.simple_query("SELECT 1").await.is_ok();
                    drop(client);
                    let _ = driver.await;
                    if ok {
                        return Ok(());
                    }
                }
                Err(err) if Instant::now() > deadline => {
                    return fail(format!(
                        "the test cluster did not accept connections within {READY_TIMEOUT:?}: {err}"
                    ));
                }
                Err(_) => {}
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Creates a database with a unique name starting with `t_<prefix>`.
    pub async fn create_database(&self, prefix: &str) -> Result<Database> {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let clean: String = prefix
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '_'
                }
            })
            .take(40)
            .collect();
        let name = format!(
            "t_{clean}_{}_{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        );
        self.admin_execute(&format!("CREATE DATABASE {name}"))
            .await
            .map_err(|err| Error(format!("cannot create test database {name}: {err}")))?;
        let url = self.url(&name);
        Ok(Database { name, url })
    }

    /// Runs `sql` (one or more statements) in the cluster's `postgres` database as the
    /// superuser, once the server accepts connections.
    pub async fn admin_execute(&self, sql: &str) -> Result<()> {
        self.wait_ready().await?;
        let (admin, conn) = tokio_postgres::connect(&self.url("postgres"), tokio_postgres::NoTls)
            .await
            .map_err(|err| Error(format!("cannot connect to the test cluster: {err}")))?;
        let driver = tokio::spawn(conn);
        let done = admin
            .batch_execute(sql)
            .await
            .map_err(|err| Error(format!("{err}")));
        drop(admin);
        let _ = driver.await;
        done
    }

    /// Restarts the server with shutdown `mode` (`fast`, `immediate` or `smart`) and waits
    /// until it accepts connections again. Clients see their connections break meanwhile.
    pub async fn restart(&self, mode: &str) -> Result<()> {
        let args = ["-w", "-t", "60", "-m", mode, "restart"];
        // pg_ctl blocks until the server is back; run it off the async threads.
        tokio::task::block_in_place(|| self.pg_ctl(&args))?;
        self.wait_ready().await
    }
}

/// The cluster shared by every test of this test binary, started on first use.
pub fn shared() -> &'static Cluster {
    static CLUSTER: OnceLock<Cluster> = OnceLock::new();
    CLUSTER.get_or_init(Cluster::start)
}

/// Waits until `check` returns `Some`, or fails after `timeout` naming `what`.
pub async fn wait_for<T, E, F, Fut>(what: &str, timeout: Duration, mut check: F) -> Result<T, E>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Option<T>, E>>,
    E: From<Error>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await? {
            return Ok(value);
        }
        if Instant::now() > deadline {
            return Err(Error(format!("timed out after {timeout:?} waiting for {what}")).into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The directory on `PATH` that holds `initdb` and `pg_ctl`.
fn server_bin_dir() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .find(|dir| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file())
}

/// Runs the shell command `cleanup` once this test binary has exited (a process that
/// watches ours): `static` resources are never dropped. Best effort.
pub(crate) fn on_exit(cleanup: &str) {
    let script = format!(
        "while kill -0 {pid} 2>/dev/null; do sleep 1; done; {cleanup}",
        pid = std::process::id()
    );
    let _ = Command::new("sh")
        .arg("-c")
        .arg(script)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
}

fn pg_ctl_path() -> PathBuf {
    server_bin_dir().map_or_else(|| "pg_ctl".into(), |dir| dir.join("pg_ctl"))
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}
