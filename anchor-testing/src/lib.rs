//! Testing code that uses anchor: a throwaway, migrated PostgreSQL database per test
//! ([`TestDatabase`]), running every due task until none is left ([`drain`]), and the
//! cluster underneath ([`TestCluster`]).
//!
//! Add it as a dev-dependency; the generated module's `taskgen::testing` functions
//! (typed `enqueued_…` and `assert_enqueued_…` per task) and
//! `anchor_runtime::Registry::run` (one run of an executor, no database) complete it.
//!
//! ```no_run
//! # async fn demo() -> Result<(), anchor_testing::Error> {
//! use anchor_testing::{drain, DrainOptions, TestDatabase};
//!
//! let db = TestDatabase::new().await?;
//! // ... enqueue through db.client(), as the code under test does ...
//! let registry = anchor_runtime::Registry::new(); // the generated `register` fills it
//! let report = drain(db.client(), registry, DrainOptions::default()).await?;
//! assert!(report.all_completed(), "{report}");
//! # Ok(()) }
//! ```
//!
//! Where the database comes from: with `ANCHOR_TEST_DATABASE_URL` set (a `postgres://` URL
//! of a database on a server where its user may create databases, such as a CI service
//! container's `postgres`), each [`TestDatabase`] is a fresh database on that server;
//! otherwise the first one starts a [`TestCluster`] from the PostgreSQL server binaries on
//! the machine, shared by every test of the process, each test with a database of its own.
//! Either way the database is dropped when the [`TestDatabase`] is, also when the test
//! panics.
#![warn(missing_docs)]

mod cluster;
mod drain;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

use anchor_runtime::Client;

pub use cluster::TestCluster;
pub use drain::{drain, DrainOptions, DrainReport};

/// The environment variable naming a server to create test databases on.
pub const DATABASE_URL_VAR: &str = "ANCHOR_TEST_DATABASE_URL";

/// What could not be done, and how to fix it.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Error(String);

impl Error {
    fn new(message: impl Into<String>) -> Error {
        Error(message.into())
    }
}

impl From<anchor_runtime::Error> for Error {
    fn from(err: anchor_runtime::Error) -> Error {
        Error(err.to_string())
    }
}

/// A `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The cluster of this process's test databases, when no server is named: started by the
/// first [`TestDatabase`], removed when the process ends (by its watchdog).
static SHARED: OnceLock<std::result::Result<TestCluster, String>> = OnceLock::new();

/// Numbers the databases of this process.
static NEXT: AtomicUsize = AtomicUsize::new(0);

/// A throwaway database for one test, migrated, with a [`Client`] on it; dropped with the
/// value (also when the test panics). Tests in parallel each take their own.
pub struct TestDatabase {
    name: String,
    url: String,
    admin_url: String,
    client: Client,
}

impl TestDatabase {
    /// A fresh, migrated database (see the crate docs for where it comes from).
    pub async fn new() -> Result<TestDatabase> {
        TestDatabase::with_schema(anchor_runtime::DEFAULT_SCHEMA).await
    }

    /// The same, with anchor's tables in `schema`.
    pub async fn with_schema(schema: &str) -> Result<TestDatabase> {
        let admin_url = server_url().await?;
        // The pid and a counter keep this process's names apart; the random part keeps
        // them apart from those of an earlier run that was killed before it dropped its
        // databases on a long-lived server (containers reuse small pids).
        let name = format!(
            "anchor_test_{}_{}_{:08x}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed),
            random_suffix()
        );
        let admin = Client::connect_with_pool_size(&admin_url, 1).await?;
        let conn = admin
            .pool()
            .get()
            .await
            .map_err(|e| Error::new(format!("cannot reach the test database server: {e}")))?;
        conn.batch_execute(&format!("CREATE DATABASE \"{name}\""))
            .await
            .map_err(|e| {
                let hint = if e.code()
                    == Some(
                        &anchor_runtime::tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE,
                    ) {
                    format!("; the user of {DATABASE_URL_VAR} needs the CREATEDB privilege")
                } else {
                    String::new()
                };
                let detail = e
                    .as_db_error()
                    .map_or_else(|| e.to_string(), |db| db.message().to_string());
                Error::new(format!(
                    "cannot create the test database {name}: {detail}{hint}"
                ))
            })?;
        drop(conn);
        let url = with_database(&admin_url, &name)?;
        // From here on the database exists: the value's Drop removes it whatever fails next.
        let mut db = TestDatabase {
            name,
            url: url.clone(),
            admin_url,
            client: admin,
        };
        db.client = Client::connect(&url)
            .await?
            .try_with_schema(schema.to_string())?;
        anchor_runtime::migrate(&db.client).await?;
        Ok(db)
    }

    /// A client on the database (schema migrated); clone it for a worker and a runner.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The database's URL, for code under test that connects by itself.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The database's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        // Drop cannot await, and may run inside the test's runtime: a thread of its own with
        // a runtime of its own drops the database (`FORCE` ends the client's connections).
        let admin_url = self.admin_url.clone();
        let name = self.name.clone();
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            runtime.block_on(async {
                let admin = Client::connect_with_pool_size(&admin_url, 1).await.ok()?;
                let conn = admin.pool().get().await.ok()?;
                conn.batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                    .await
                    .ok()
            })
        })
        .join();
        if !matches!(dropped, Ok(Some(()))) {
            use std::io::Write;
            // Never panic in a destructor; the cluster (if ours) goes at exit anyway.
            let _ = writeln!(
                std::io::stderr(),
                "warning: the test database {} could not be dropped",
                self.name
            );
        }
    }
}

/// 32 bits that differ between runs (the clock's nanoseconds, mixed with the pid).
fn random_suffix() -> u32 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos() ^ (d.as_secs() as u32));
    nanos.rotate_left(13) ^ std::process::id().wrapping_mul(0x9E37_79B9)
}

/// The server test databases are created on, as a URL of a database there that its user
/// can connect to (`postgres`).
async fn server_url() -> Result<String> {
    if let Ok(url) = std::env::var(DATABASE_URL_VAR) {
        if !url.trim().is_empty() {
            return Ok(url);
        }
    }
    let cluster = tokio::task::spawn_blocking(|| {
        SHARED
            .get_or_init(|| TestCluster::start().map_err(|e| e.to_string()))
            .as_ref()
            .map(|cluster| cluster.url().to_string())
            .map_err(Clone::clone)
    })
    .await
    .map_err(|e| Error::new(format!("the cluster start did not finish: {e}")))?;
    cluster.map_err(|e| {
        Error::new(format!(
            "cannot start a throwaway PostgreSQL for the tests: {e}\n(or set {DATABASE_URL_VAR} \
             to a server's URL)"
        ))
    })
}

/// `url` with its database replaced by `name`: `postgres://u@h:5432/postgres?x=y` →
/// `postgres://u@h:5432/<name>?x=y`.
fn with_database(url: &str, name: &str) -> Result<String> {
    let Some(scheme_end) = url.find("://") else {
        return Err(Error::new(format!(
            "{DATABASE_URL_VAR} must be a postgres:// URL (key=value strings are not supported)"
        )));
    };
    let rest = &url[scheme_end + 3..];
    let (before_query, query) = match rest.find('?') {
        Some(q) => (&rest[..q], &rest[q..]),
        None => (rest, ""),
    };
    let authority = before_query.split('/').next().unwrap_or(before_query);
    Ok(format!(
        "{}{authority}/{name}{query}",
        &url[..scheme_end + 3]
    ))
}

#[cfg(test)]
mod tests {
    use super::with_database;

    #[test]
    fn the_database_of_a_url_is_replaced() {
        assert_eq!(
            with_database("postgres://u:p@h:5432/postgres?sslmode=require", "t1").unwrap(),
            "postgres://u:p@h:5432/t1?sslmode=require"
        );
        assert_eq!(
            with_database("postgresql://h", "t2").unwrap(),
            "postgresql://h/t2"
        );
        assert!(with_database("host=h dbname=x", "t3").is_err());
    }
}
