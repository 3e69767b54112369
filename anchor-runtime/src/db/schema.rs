//! The schema itself: the migration lock, the `schema_migrations` table and its version,
//! and running one migration file. The files' text stays with the list of migrations
//! (`migrate.rs`); the statements that run and record them are here.

use super::{db_error, quote_ident, Caching, Sql};
use crate::error::Result;

/// Takes the migration lock: a transaction-scoped advisory lock keyed by `$1`, the schema
/// name, so migrations of different schemas in one database do not wait for each other.
const LOCK: &str =
    "SELECT pg_advisory_xact_lock(hashtextextended('anchor.migrate.' || $1::text, 0))";

/// The statements for one schema.
#[derive(Debug)]
pub(crate) struct SchemaSql {
    /// The schema's name as given (unquoted), for the lock and for messages.
    name: String,
    /// Creates the schema and `schema_migrations` if need be, and points `search_path` at
    /// the schema for the transaction: the migration files use unqualified names, so one
    /// file serves any schema name.
    prepare: String,
    version: String,
    record: String,
}

impl SchemaSql {
    pub(crate) fn new(schema: &str) -> SchemaSql {
        let q = quote_ident(schema);
        SchemaSql {
            name: schema.to_string(),
            prepare: format!(
                "CREATE SCHEMA IF NOT EXISTS {q}; \
                 SET LOCAL search_path TO {q}; \
                 CREATE TABLE IF NOT EXISTS {q}.schema_migrations ( \
                     version integer PRIMARY KEY, \
                     name text NOT NULL, \
                     applied_at timestamptz NOT NULL DEFAULT now())"
            ),
            version: format!("SELECT coalesce(max(version), 0) FROM {q}.schema_migrations"),
            record: format!("INSERT INTO {q}.schema_migrations (version, name) VALUES ($1, $2)"),
        }
    }
}

/// Takes the migration lock of the schema in `tx`, waiting while another process migrates
/// it; the lock is released when `tx` ends.
pub(crate) async fn lock(tx: &impl Caching, sql: &Sql) -> Result<()> {
    tx.execute(LOCK, &[&sql.schema.name])
        .await
        .map_err(|e| db_error("cannot take the migration lock", e))?;
    Ok(())
}

/// Creates the schema and `schema_migrations` if need be and sets `search_path` for the
/// rest of `tx` (see [`SchemaSql`]).
pub(crate) async fn prepare(tx: &impl Caching, sql: &Sql) -> Result<()> {
    tx.batch_execute(&sql.schema.prepare)
        .await
        .map_err(|e| db_error(&format!("cannot prepare schema {}", sql.schema.name), e))
}

/// The highest migration applied to the schema (0: none).
pub(crate) async fn version(conn: &impl Caching, sql: &Sql) -> Result<i32> {
    let row = conn
        .query_one(&sql.schema.version, &[])
        .await
        .map_err(|e| db_error("cannot read the schema version", e))?;
    Ok(row.get(0))
}

/// Runs migration `version` (`name`, the file's text `text`) in `tx`, prepared by
/// [`prepare`], and records it as applied.
pub(crate) async fn apply(
    tx: &impl Caching,
    sql: &Sql,
    version: i32,
    name: &str,
    text: &str,
) -> Result<()> {
    tx.batch_execute(text).await.map_err(|e| {
        db_error(
            &format!(
                "migration V{version}__{name} failed in schema {}",
                sql.schema.name
            ),
            e,
        )
    })?;
    tx.execute(&sql.schema.record, &[&version, &name])
        .await
        .map_err(|e| db_error("cannot record the migration", e))?;
    Ok(())
}
