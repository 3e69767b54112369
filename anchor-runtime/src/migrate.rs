//! Schema migrations: the SQL files in the workspace's `migrations/` folder (read through
//! this crate's `migrations` symlink, so a packaged crate carries them too), embedded at
//! compile time and applied in version order.
//!
//! [`migrate`] runs in one transaction that first takes a transaction-scoped advisory lock
//! keyed by the schema name, so processes starting at once apply each migration exactly
//! once: the first applies, the others wait and then find nothing to do. The files use
//! unqualified names; the runner sets `search_path` to the target schema for the
//! transaction, so one file serves any schema name.

use crate::client::{db_error, Client};
use crate::error::{Error, ErrorKind, Result};
use crate::sql::quote_ident;

/// One embedded migration.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    /// The version number (`V<version>__<name>.sql`).
    pub version: i32,
    /// The descriptive part of the file name.
    pub name: &'static str,
    /// The SQL.
    pub sql: &'static str,
}

/// Every migration this runtime knows, oldest first.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "initial",
        sql: include_str!("../migrations/V1__initial.sql"),
    },
    Migration {
        version: 2,
        name: "cron_schedules",
        sql: include_str!("../migrations/V2__cron_schedules.sql"),
    },
    Migration {
        version: 3,
        name: "retention",
        sql: include_str!("../migrations/V3__retention.sql"),
    },
    Migration {
        version: 4,
        name: "workers",
        sql: include_str!("../migrations/V4__workers.sql"),
    },
    Migration {
        version: 5,
        name: "rescues",
        sql: include_str!("../migrations/V5__rescues.sql"),
    },
    Migration {
        version: 6,
        name: "definitions_and_tags",
        sql: include_str!("../migrations/V6__definitions_and_tags.sql"),
    },
];

/// The schema version this runtime needs.
pub const SCHEMA_VERSION: i32 = MIGRATIONS[MIGRATIONS.len() - 1].version;

/// What [`migrate`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationReport {
    /// The schema migrated.
    pub schema: String,
    /// The versions applied by this call, oldest first (empty when already up to date).
    pub applied: Vec<i32>,
    /// The schema version afterwards.
    pub version: i32,
}

/// Creates or upgrades the task tables in the client's schema. Idempotent and safe to run
/// from several processes at once.
pub async fn migrate(client: &Client) -> Result<MigrationReport> {
    let schema = client.schema().to_string();
    let mut conn = client.conn().await?;
    let tx = conn
        .transaction()
        .await
        .map_err(|e| db_error("cannot begin the migration transaction", e))?;
    let q = quote_ident(&schema);
    // The lock key is derived from the schema name, so migrations of different schemas in
    // one database do not wait for each other.
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended('anchor.migrate.' || $1::text, 0))",
        &[&schema],
    )
    .await
    .map_err(|e| db_error("cannot take the migration lock", e))?;
    tx.batch_execute(&format!(
        "CREATE SCHEMA IF NOT EXISTS {q}; \
         SET LOCAL search_path TO {q}; \
         CREATE TABLE IF NOT EXISTS {q}.schema_migrations ( \
             version integer PRIMARY KEY, \
             name text NOT NULL, \
             applied_at timestamptz NOT NULL DEFAULT now())"
    ))
    .await
    .map_err(|e| db_error(&format!("cannot prepare schema {schema}"), e))?;
    let current: i32 = tx
        .query_one(
            &format!("SELECT coalesce(max(version), 0) FROM {q}.schema_migrations"),
            &[],
        )
        .await
        .map_err(|e| db_error("cannot read the schema version", e))?
        .get(0);
    if current > SCHEMA_VERSION {
        return Err(Error::new(
            ErrorKind::Schema,
            format!(
                "schema {schema} is at version {current}, newer than this runtime's \
                 {SCHEMA_VERSION}; upgrade anchor-runtime"
            ),
        ));
    }
    let mut applied = Vec::new();
    for m in MIGRATIONS.iter().filter(|m| m.version > current) {
        tx.batch_execute(m.sql).await.map_err(|e| {
            db_error(
                &format!(
                    "migration V{}__{} failed in schema {schema}",
                    m.version, m.name
                ),
                e,
            )
        })?;
        tx.execute(
            &format!("INSERT INTO {q}.schema_migrations (version, name) VALUES ($1, $2)"),
            &[&m.version, &m.name],
        )
        .await
        .map_err(|e| db_error("cannot record the migration", e))?;
        applied.push(m.version);
    }
    tx.commit()
        .await
        .map_err(|e| db_error("cannot commit the migrations", e))?;
    if !applied.is_empty() {
        tracing::info!(schema = %schema, ?applied, "migrations applied");
    }
    Ok(MigrationReport {
        schema,
        applied,
        version: current.max(SCHEMA_VERSION),
    })
}

/// Checks that the client's schema is at the version this runtime needs.
pub async fn check_schema(client: &Client) -> Result<()> {
    let conn = client.conn().await?;
    let version: i32 = conn
        .query_one(&client.sql().schema_version, &[])
        .await
        .map_err(|e| db_error("cannot read the schema version", e))?
        .get(0);
    if version < SCHEMA_VERSION {
        return Err(Error::new(
            ErrorKind::Schema,
            format!(
                "schema {} is at version {version}, this runtime needs {SCHEMA_VERSION}; run `anchor migrate`",
                client.schema()
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::MIGRATIONS;

    /// `migrations/` inside this crate is a symlink to the repository's top-level
    /// `migrations/` (the packaged crate holds a copy); either way `MIGRATIONS` must list
    /// exactly its files, in version order, so a new file cannot be forgotten.
    #[test]
    fn the_embedded_migrations_are_the_files_of_migrations() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations");
        let mut on_disk: Vec<(i32, String)> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|entry| {
                let file = entry.unwrap().file_name().to_string_lossy().into_owned();
                let stem = file.strip_suffix(".sql").expect("only .sql files");
                let (version, name) = stem[1..].split_once("__").expect("V<version>__<name>");
                (version.parse().unwrap(), name.to_string())
            })
            .collect();
        on_disk.sort();
        let embedded: Vec<(i32, String)> = MIGRATIONS
            .iter()
            .map(|m| (m.version, m.name.to_string()))
            .collect();
        assert_eq!(on_disk, embedded);
        for m in MIGRATIONS {
            let path = dir.join(format!("V{}__{}.sql", m.version, m.name));
            assert_eq!(std::fs::read_to_string(path).unwrap(), m.sql);
        }
    }
}
