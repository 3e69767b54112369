//! [`Client`]: the handle generated `TaskRunner`s and workers share — a connection pool, the
//! schema name and the statements rendered for it.

use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, QueueMode, RecyclingMethod, Runtime};

use crate::connect::{hinted, ConnectOptions};
use crate::db::Sql;
use crate::error::{Error, ErrorKind, Result};
use crate::notify::Notifier;

/// The schema the runtime uses unless told otherwise.
pub const DEFAULT_SCHEMA: &str = "anchor";

/// A cheap-to-clone handle to the task tables: enqueue, inspect, cancel, and what a
/// [`Worker`](crate::Worker) runs on.
///
/// ```no_run
/// # async fn demo() -> anchor_runtime::Result<()> {
/// let client = anchor_runtime::Client::connect("postgres://app@localhost/app").await?;
/// anchor_runtime::migrate(&client).await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Client {
    pub(crate) inner: Arc<ClientInner>,
}

pub(crate) struct ClientInner {
    pub(crate) pool: Pool,
    pub(crate) schema: String,
    pub(crate) sql: Sql,
    /// How to open the worker's dedicated LISTEN connection (and how the pool connects);
    /// `None` when the client was built from a pool alone (workers then rely on polling).
    pub(crate) connect_options: Option<ConnectOptions>,
    /// Set when [`Client::with_schema`] got an invalid name; every operation reports it.
    pub(crate) config_error: Option<String>,
    /// Whether statements may be prepared and cached on the pool's connections (not behind
    /// a transaction-mode pooler; see [`ConnectOptions::statement_cache`]).
    pub(crate) statement_cache: bool,
    pub(crate) notifier: Notifier,
    /// The workers started on this client, for local dispatch (`worker/local.rs`).
    pub(crate) local_workers: crate::dispatch::LocalWorkers,
}

/// What a [`Client`] is built from besides its pool.
struct Settings {
    schema: String,
    connect_options: Option<ConnectOptions>,
    config_error: Option<String>,
    statement_cache: bool,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("schema", &self.inner.schema)
            .field("pool", &self.inner.pool.status())
            .finish()
    }
}

impl Client {
    /// Connects to `database_url` (a `postgres://` URL or a `key=value` string, with
    /// libpq's TLS settings: see [`ConnectOptions`]) with a pool of [`DEFAULT_POOL_SIZE`](crate::DEFAULT_POOL_SIZE)
    /// connections. Connections are opened lazily, so this succeeds even when the
    /// database is down; the first operation reports the outage. Invalid settings (an
    /// unknown `sslmode`, a certificate file that cannot be read) fail here.
    pub async fn connect(database_url: &str) -> Result<Client> {
        Client::connect_with(ConnectOptions::from_url(database_url)?).await
    }

    /// Like [`Client::connect`] with a pool of `max_size` connections (at least 4 are
    /// needed by a worker: claims, completions, leases and notifications run side by side).
    pub async fn connect_with_pool_size(database_url: &str, max_size: usize) -> Result<Client> {
        Client::connect_with(ConnectOptions::from_url(database_url)?.pool_size(max_size)).await
    }

    /// Opens a pool with `options` (connection and TLS settings, pool size); workers open
    /// their LISTEN connection with the same settings.
    pub async fn connect_with(options: ConnectOptions) -> Result<Client> {
        let max_size = options.get_pool_size();
        if max_size == 0 {
            return Err(Error::new(
                ErrorKind::Config,
                "pool size must be at least 1 (a worker needs 4)",
            ));
        }
        let manager = Manager::from_config(
            options.postgres_config().clone(),
            options.tls(),
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(max_size)
            .runtime(Runtime::Tokio1)
            // The most recently used connection first: connections beyond what the load
            // needs stay unused, and a worker closes them after a while (`POOL_IDLE_MAX`).
            .queue_mode(QueueMode::Lifo)
            .wait_timeout(Some(Duration::from_secs(10)))
            .create_timeout(Some(Duration::from_secs(5)))
            .recycle_timeout(Some(Duration::from_secs(5)))
            .build()
            .map_err(|err| Error::with_source(ErrorKind::Config, "cannot build the pool", err))?;
        Ok(Client::build(
            pool,
            Settings {
                schema: DEFAULT_SCHEMA.to_string(),
                statement_cache: options.get_statement_cache(),
                connect_options: Some(options),
                config_error: None,
            },
        ))
    }

    /// Wraps an existing pool. Workers built on such a client cannot open their dedicated
    /// LISTEN connection (the pool does not reveal its settings) unless
    /// [`Client::with_listen_options`] is given too; without it they wake by polling only.
    pub fn from_pool(pool: Pool) -> Client {
        Client::build(
            pool,
            Settings {
                schema: DEFAULT_SCHEMA.to_string(),
                connect_options: None,
                config_error: None,
                statement_cache: true,
            },
        )
    }

    /// Sets the connection and TLS settings workers use for their dedicated LISTEN
    /// connection, for a client built with [`Client::from_pool`] (a client from
    /// [`Client::connect`] has them already).
    pub fn with_listen_options(self, options: ConnectOptions) -> Client {
        let mut settings = self.settings();
        settings.connect_options = Some(options);
        Client::build(self.inner.pool.clone(), settings)
    }

    /// Whether statements are prepared and cached on the pool's connections (the default),
    /// or sent unnamed because the pool goes through a transaction-mode pooler such as
    /// PgBouncer (see [`ConnectOptions::statement_cache`]). A client without the cache
    /// enqueues, inspects and cancels; a [`Worker`](crate::Worker) refuses it.
    pub fn with_statement_cache(self, cache: bool) -> Client {
        let mut settings = self.settings();
        settings.statement_cache = cache;
        Client::build(self.inner.pool.clone(), settings)
    }

    /// Uses the tables in `schema` instead of `anchor`. The name must be a plain identifier
    /// (letters, digits, `_`, not starting with a digit, at most 56 bytes); an invalid one
    /// makes every later operation fail with [`ErrorKind::Config`]. Use
    /// [`Client::try_with_schema`] to get the error at once.
    pub fn with_schema(self, schema: impl Into<String>) -> Client {
        let schema = schema.into();
        let mut settings = self.settings();
        settings.config_error = validate_schema_name(&schema).err();
        settings.schema = schema;
        Client::build(self.inner.pool.clone(), settings)
    }

    /// Like [`Client::with_schema`], but reports an invalid name at once.
    pub fn try_with_schema(self, schema: impl Into<String>) -> Result<Client> {
        let client = self.with_schema(schema);
        client.check_config()?;
        Ok(client)
    }

    /// Checks that the database can be reached: takes a connection (opening one when the
    /// pool has none) and runs a trivial query. The error says what to change when the
    /// cause is one of TLS (`sslmode`, `sslrootcert`, the host name). Cheap enough for a
    /// readiness probe.
    pub async fn ping(&self) -> Result<()> {
        let conn = self.conn().await?;
        crate::db::ping(&conn).await
    }

    /// The connection pool, e.g. to open the transaction for
    /// [`Client::enqueue_with_tx`].
    pub fn pool(&self) -> &Pool {
        &self.inner.pool
    }

    /// The schema holding the task tables.
    pub fn schema(&self) -> &str {
        &self.inner.schema
    }

    fn build(pool: Pool, settings: Settings) -> Client {
        let Settings {
            schema,
            connect_options,
            config_error,
            statement_cache,
        } = settings;
        let sql = Sql::new(&schema);
        let notifier = Notifier::new(
            pool.clone(),
            sql.notify.tasks_channel.clone(),
            statement_cache,
        );
        Client {
            inner: Arc::new(ClientInner {
                pool,
                schema,
                sql,
                connect_options,
                config_error,
                statement_cache,
                notifier,
                local_workers: crate::dispatch::LocalWorkers::default(),
            }),
        }
    }

    /// This client's settings, to build a changed copy from.
    fn settings(&self) -> Settings {
        Settings {
            schema: self.inner.schema.clone(),
            connect_options: self.inner.connect_options.clone(),
            config_error: self.inner.config_error.clone(),
            statement_cache: self.inner.statement_cache,
        }
    }

    /// See [`Client::with_statement_cache`].
    pub(crate) fn statement_cache(&self) -> bool {
        self.inner.statement_cache
    }

    /// A pooled connection as the application-side statements (enqueue, inspection) run on
    /// it: prepared and cached, unless the client's connections go through a
    /// transaction-mode pooler.
    pub(crate) fn pooled<'c>(
        &self,
        conn: &'c deadpool_postgres::Object,
    ) -> crate::db::driver::Pooled<'c, deadpool_postgres::Object> {
        crate::db::driver::Pooled {
            conn,
            cache: self.statement_cache(),
        }
    }

    pub(crate) fn check_config(&self) -> Result<()> {
        match &self.inner.config_error {
            Some(message) => Err(Error::new(ErrorKind::Config, message.clone())),
            None => Ok(()),
        }
    }

    /// Tells the workers (through the debounced notifier) that new tasks may be due: an
    /// `onFailed` handler, a retry, a cron occurrence written by the runtime itself.
    pub(crate) fn announce_new_tasks(&self) {
        self.inner.notifier.poke();
    }

    /// How a worker opens its own LISTEN/control connection (`None`: a client built from a
    /// pool alone, whose workers poll).
    pub(crate) fn listen_options(&self) -> Option<&ConnectOptions> {
        self.inner.connect_options.as_ref()
    }

    /// Makes a started worker available for local dispatch through this client.
    pub(crate) fn register_local_worker(
        &self,
        worker: std::sync::Weak<dyn crate::dispatch::LocalWorker>,
    ) {
        self.inner.local_workers.register(worker);
    }

    pub(crate) fn sql(&self) -> &Sql {
        &self.inner.sql
    }

    /// Closes the pooled connections unused for `max_idle`; returns how many.
    pub(crate) fn close_idle_connections(&self, max_idle: Duration) -> usize {
        self.inner
            .pool
            .retain(|_, metrics| metrics.last_used() < max_idle)
            .removed
            .len()
    }

    /// Takes a connection from the pool, with an error that says what was being attempted.
    pub(crate) async fn conn(&self) -> Result<deadpool_postgres::Object> {
        self.check_config()?;
        self.inner.pool.get().await.map_err(|err| {
            let message = hinted(
                "cannot get a database connection from the pool",
                &err,
                self.inner.connect_options.as_ref(),
            );
            Error::with_source(ErrorKind::Pool, message, err)
        })
    }
}

/// Checks a schema name: a plain identifier short enough that `<schema>_tasks` is a valid
/// channel name too.
pub(crate) fn validate_schema_name(schema: &str) -> std::result::Result<(), String> {
    let mut chars = schema.chars();
    let starts_well = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !starts_well || !rest_ok || schema.len() > 56 {
        return Err(format!(
            "invalid schema name `{schema}`: use letters, digits and `_`, not starting with a \
             digit, at most 56 bytes (e.g. `anchor`)"
        ));
    }
    Ok(())
}

/// The time limit on each of the runtime's own pooled database calls (claims, outcome
/// writes, rescues), taking the connection included. A connection that stops answering
/// without closing (a partition that sends no reset) would otherwise hold the loop for as
/// long as the operating system keeps the socket, minutes. Users' statements (enqueue in
/// their transactions) are never cut.
pub(crate) const RUNTIME_CALL_TIMEOUT: Duration = Duration::from_secs(20);

impl Client {
    /// Runs one of the runtime's own database calls under [`RUNTIME_CALL_TIMEOUT`]. On the
    /// time limit the idle pooled connections, among them the one just given up, are
    /// closed, so that the next call does not queue behind a dead one.
    pub(crate) async fn bounded<T>(
        &self,
        context: &str,
        call: impl std::future::Future<Output = Result<T>>,
    ) -> Result<T> {
        match tokio::time::timeout(RUNTIME_CALL_TIMEOUT, call).await {
            Ok(result) => result,
            Err(_) => {
                let closed = self.inner.pool.retain(|_, _| false).removed.len();
                tracing::warn!(
                    closed,
                    "{context}: no answer within {RUNTIME_CALL_TIMEOUT:?}; closed idle pooled connections"
                );
                Err(Error::new(
                    ErrorKind::Database,
                    format!(
                        "{context}: the database did not answer within {RUNTIME_CALL_TIMEOUT:?} \
                         (a dead or partitioned connection?)"
                    ),
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::validate_schema_name;

    #[test]
    fn schema_names() {
        assert!(validate_schema_name("anchor").is_ok());
        assert!(validate_schema_name("_t1").is_ok());
        assert!(validate_schema_name("").is_err());
        assert!(validate_schema_name("1abc").is_err());
        assert!(validate_schema_name("a-b").is_err());
        assert!(validate_schema_name("a\"b").is_err());
        assert!(validate_schema_name(&"a".repeat(57)).is_err());
    }
}
