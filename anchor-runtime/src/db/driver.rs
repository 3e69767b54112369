//! The connections task inserts run on, and how each sends a statement:
//!
//! - anchor's own pool ([`Pooled`]): prepared and cached per connection, or sent unnamed
//!   when the pool goes through a transaction-mode pooler such as PgBouncer (which keeps no
//!   prepared statement from one transaction to the next);
//! - a caller's tokio-postgres or deadpool transaction: unnamed with its parameter types (it
//!   has no statement cache; one round trip instead of a prepare and an execute);
//! - with the `sqlx` feature, a caller's sqlx transaction or connection, through sqlx.
//!
//! [`EnqueueTx`] is the public face of the callers' kinds: what the generated
//! `run_*_with_tx` takes, one method per task whatever the driver.

use std::future::Future;
use std::pin::Pin;

use chrono::{DateTime, Utc};
use tokio_postgres::types::{ToSql, Type};

use crate::db::db_error;
use crate::error::Result;

/// A transaction (or connection) of the caller's that tasks can be enqueued in, so that
/// they become visible when it commits and vanish if it rolls back:
///
/// - `&tokio_postgres::Transaction<'_>` and `&deadpool_postgres::Transaction<'_>` (pass
///   `&tx`);
/// - with anchor-runtime's `sqlx` feature, `&mut sqlx::Transaction<'_, sqlx::Postgres>`
///   and `&mut sqlx::PgConnection` (pass `&mut tx`, or `&mut *conn` for a pooled sqlx
///   connection outside a transaction).
///
/// The trait is sealed: anchor implements it for these types only.
pub trait EnqueueTx: private::Run {}

/// A statement's future, boxed: the trait's methods must be callable on every kind alike.
pub(crate) type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

pub(crate) mod private {
    use super::{BoxFuture, Param};
    use crate::error::Result;

    /// Runs a statement whose rows carry a `bigint` id in their first column (the task
    /// inserts and the unique-tag lookup), on one kind of connection.
    pub trait Run: Send {
        /// Sends `sql` with `params`; `context` says what was attempted, for the error.
        fn query_ids<'a>(
            &'a mut self,
            sql: &'a str,
            params: &'a [Param<'a>],
            context: &'a str,
        ) -> BoxFuture<'a, Result<Vec<i64>>>;
    }
}

pub(crate) use private::Run;

/// A statement parameter, typed once for every driver.
#[derive(Debug, Clone, Copy)]
pub enum Param<'a> {
    /// `text`.
    Text(Option<&'a str>),
    /// `text[]`.
    TextArray(&'a [String]),
    /// `bigint`.
    Int8(Option<i64>),
    /// `integer`.
    Int4(Option<i32>),
    /// `smallint`.
    Int2(i16),
    /// `boolean`.
    Bool(bool),
    /// `bigint[]`.
    Int8Array(Option<&'a [i64]>),
    /// `timestamptz`.
    Timestamptz(Option<DateTime<Utc>>),
}

impl Param<'_> {
    /// The value for tokio-postgres, with its type (for unnamed statements).
    fn tokio(&self) -> (&(dyn ToSql + Sync), Type) {
        match self {
            Param::Text(v) => (v, Type::TEXT),
            Param::TextArray(v) => (v, Type::TEXT_ARRAY),
            Param::Int8(v) => (v, Type::INT8),
            Param::Int4(v) => (v, Type::INT4),
            Param::Int2(v) => (v, Type::INT2),
            Param::Bool(v) => (v, Type::BOOL),
            Param::Int8Array(v) => (v, Type::INT8_ARRAY),
            Param::Timestamptz(v) => (v, Type::TIMESTAMPTZ),
        }
    }
}

/// Reads the first column of each row as an id.
fn ids(rows: Vec<tokio_postgres::Row>, context: &str) -> Result<Vec<i64>> {
    rows.iter()
        .map(|r| r.try_get(0).map_err(|e| db_error(context, e)))
        .collect()
}

/// Sends `sql` unnamed, with its parameter types: one round trip, nothing left behind on
/// the connection (so it also works through a transaction-mode pooler).
async fn unnamed_rows(
    conn: &impl tokio_postgres::GenericClient,
    sql: &str,
    params: &[Param<'_>],
    context: &str,
) -> Result<Vec<tokio_postgres::Row>> {
    let typed: Vec<_> = params.iter().map(Param::tokio).collect();
    conn.query_typed(sql, &typed)
        .await
        .map_err(|e| db_error(context, e))
}

/// [`unnamed_rows`], read as ids.
async fn unnamed(
    conn: &impl tokio_postgres::GenericClient,
    sql: &str,
    params: &[Param<'_>],
    context: &str,
) -> Result<Vec<i64>> {
    ids(unnamed_rows(conn, sql, params, context).await?, context)
}

/// One of anchor's pooled connections (or a transaction on one), and whether statements
/// may be prepared and cached on it.
pub(crate) struct Pooled<'c, C> {
    pub conn: &'c C,
    /// False behind a transaction-mode pooler (`ConnectOptions::statement_cache`).
    pub cache: bool,
}

/// A pooled connection or a transaction on one, as the driver's own client (for unnamed
/// statements, which deadpool's statement-caching interface does not send).
pub(crate) trait PooledClient: deadpool_postgres::GenericClient + Sync {
    /// The driver's client underneath.
    type Plain: tokio_postgres::GenericClient + Sync;
    fn plain(&self) -> &Self::Plain;
}

impl PooledClient for deadpool_postgres::Object {
    type Plain = tokio_postgres::Client;
    fn plain(&self) -> &tokio_postgres::Client {
        self
    }
}

impl<'t> PooledClient for deadpool_postgres::Transaction<'t> {
    type Plain = tokio_postgres::Transaction<'t>;
    fn plain(&self) -> &tokio_postgres::Transaction<'t> {
        self
    }
}

impl<C: PooledClient> Pooled<'_, C> {
    /// Runs `sql` with `params`: prepared and cached on the connection, or unnamed when
    /// the cache is off.
    pub(crate) async fn rows(
        &self,
        sql: &str,
        params: &[Param<'_>],
        context: &str,
    ) -> Result<Vec<tokio_postgres::Row>> {
        if !self.cache {
            return unnamed_rows(self.conn.plain(), sql, params, context).await;
        }
        let stmt = self
            .conn
            .prepare_cached(sql)
            .await
            .map_err(|e| db_error(context, e))?;
        let values: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| p.tokio().0).collect();
        self.conn
            .query(&stmt, &values)
            .await
            .map_err(|e| db_error(context, e))
    }
}

impl<C: PooledClient> Run for Pooled<'_, C> {
    fn query_ids<'a>(
        &'a mut self,
        sql: &'a str,
        params: &'a [Param<'a>],
        context: &'a str,
    ) -> BoxFuture<'a, Result<Vec<i64>>> {
        Box::pin(async move { ids(self.rows(sql, params, context).await?, context) })
    }
}

impl Run for &tokio_postgres::Transaction<'_> {
    fn query_ids<'a>(
        &'a mut self,
        sql: &'a str,
        params: &'a [Param<'a>],
        context: &'a str,
    ) -> BoxFuture<'a, Result<Vec<i64>>> {
        Box::pin(unnamed(*self, sql, params, context))
    }
}

impl EnqueueTx for &tokio_postgres::Transaction<'_> {}

impl Run for &deadpool_postgres::Transaction<'_> {
    fn query_ids<'a>(
        &'a mut self,
        sql: &'a str,
        params: &'a [Param<'a>],
        context: &'a str,
    ) -> BoxFuture<'a, Result<Vec<i64>>> {
        let tx: &tokio_postgres::Transaction<'_> = self;
        Box::pin(unnamed(tx, sql, params, context))
    }
}

impl EnqueueTx for &deadpool_postgres::Transaction<'_> {}

#[cfg(feature = "sqlx")]
mod sqlx_impls {
    use sqlx::{PgConnection, Postgres, Row};

    use super::{BoxFuture, EnqueueTx, Param, Run};
    use crate::error::{Error, ErrorKind, Result};

    /// Runs `sql` through sqlx on the caller's connection (sqlx decides whether it is
    /// prepared: its statement cache, per connection, unless the caller turned it off).
    async fn run(
        conn: &mut PgConnection,
        sql: &str,
        params: &[Param<'_>],
        context: &str,
    ) -> Result<Vec<i64>> {
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql.to_string()));
        for param in params {
            query = match *param {
                Param::Text(v) => query.bind(v.map(str::to_string)),
                Param::TextArray(v) => query.bind(v.to_vec()),
                Param::Int8(v) => query.bind(v),
                Param::Int4(v) => query.bind(v),
                Param::Int2(v) => query.bind(v),
                Param::Bool(v) => query.bind(v),
                Param::Int8Array(v) => query.bind(v.map(<[i64]>::to_vec)),
                Param::Timestamptz(v) => query.bind(v),
            };
        }
        let rows = query
            .fetch_all(&mut *conn)
            .await
            .map_err(|e| error(context, e))?;
        rows.iter()
            .map(|row| row.try_get::<i64, _>(0).map_err(|e| error(context, e)))
            .collect()
    }

    /// An sqlx error with context; an undefined table means the migrations have not run.
    fn error(context: &str, err: sqlx::Error) -> Error {
        let missing = err
            .as_database_error()
            .and_then(|db| db.code())
            .is_some_and(|code| code == "42P01" || code == "3F000");
        if missing {
            return Error::with_source(
                ErrorKind::Schema,
                format!(
                    "{context}: the task tables are missing; run `anchor migrate` (or \
                     anchor_runtime::migrate)"
                ),
                err,
            );
        }
        Error::with_source(ErrorKind::Database, context.to_string(), err)
    }

    impl Run for &mut PgConnection {
        fn query_ids<'a>(
            &'a mut self,
            sql: &'a str,
            params: &'a [Param<'a>],
            context: &'a str,
        ) -> BoxFuture<'a, Result<Vec<i64>>> {
            Box::pin(run(self, sql, params, context))
        }
    }

    impl EnqueueTx for &mut PgConnection {}

    impl Run for &mut sqlx::Transaction<'_, Postgres> {
        fn query_ids<'a>(
            &'a mut self,
            sql: &'a str,
            params: &'a [Param<'a>],
            context: &'a str,
        ) -> BoxFuture<'a, Result<Vec<i64>>> {
            let conn: &mut PgConnection = self;
            Box::pin(run(conn, sql, params, context))
        }
    }

    impl EnqueueTx for &mut sqlx::Transaction<'_, Postgres> {}
}
