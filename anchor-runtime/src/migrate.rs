//! Schema migrations: the SQL files in the workspace's `migrations/` folder (read through
//! this crate's `migrations` symlink, so a packaged crate carries them too), embedded at
//! compile time and applied in version order.
//!
//! [`migrate`] runs in one transaction that first takes a transaction-scoped advisory lock
//! keyed by the schema name, so processes starting at once apply each migration exactly
//! once: the first applies, the others wait and then find nothing to do. The files use
//! unqualified names; the runner sets `search_path` to the target schema for the
//! transaction, so one file serves any schema name. The statements that do this are in
//! `db/schema.rs`.

use crate::client::Client;
use crate::db;
use crate::error::{Error, ErrorKind, Result};

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
    Migration {
        version: 7,
        name: "task_view",
        sql: include_str!("../migrations/V7__task_view.sql"),
    },
    Migration {
        version: 8,
        name: "queues",
        sql: include_str!("../migrations/V8__queues.sql"),
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
    let sql = client.sql();
    let mut conn = client.conn().await?;
    let tx = db::begin(&mut conn, "cannot begin the migration transaction").await?;
    db::schema::lock(&tx, sql).await?;
    db::schema::prepare(&tx, sql).await?;
    let current = db::schema::version(&tx, sql).await?;
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
        db::schema::apply(&tx, sql, m.version, m.name, m.sql).await?;
        applied.push(m.version);
    }
    db::commit(tx, "cannot commit the migrations").await?;
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
    let version = db::schema::version(&conn, client.sql()).await?;
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
