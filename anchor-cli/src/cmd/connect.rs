//! What the database commands share: the `--database-url`, `--schema` and `--json` flags,
//! and a client whose schema was checked before anything is read or changed.

use std::future::Future;
use std::process::ExitCode;

use anchor_runtime::Client;
use anyhow::Context;

/// The flags of every command that reads or changes the task tables (`anchor tasks`,
/// `queues`, `schedules`), given before or after the subcommand.
#[derive(Debug, clap::Args)]
pub struct Database {
    /// The database, e.g. postgres://user:password@host:5432/dbname.
    #[arg(
        long,
        env = "DATABASE_URL",
        hide_env_values = true,
        global = true,
        help_heading = "Database"
    )]
    database_url: Option<String>,
    /// The schema holding anchor's tables.
    #[arg(long, default_value = anchor_runtime::DEFAULT_SCHEMA, global = true, help_heading = "Database")]
    schema: String,
    /// Print JSON instead of text.
    #[arg(long, global = true)]
    pub json: bool,
}

impl Database {
    /// Connects (one connection is enough for a command), checks that the schema was
    /// migrated, and runs `work` with the client. An error here is a usage or connection
    /// problem (exit 2).
    pub fn run<F, Fut>(&self, work: F) -> anyhow::Result<ExitCode>
    where
        F: FnOnce(Client) -> Fut,
        Fut: Future<Output = anyhow::Result<ExitCode>>,
    {
        let Some(url) = self.database_url.as_deref() else {
            anyhow::bail!("no database given: pass --database-url or set DATABASE_URL");
        };
        block_on(async {
            let client = connect(url, &self.schema).await?;
            anchor_runtime::check_schema(&client)
                .await
                .context("cannot use the task tables")?;
            work(client).await
        })?
    }
}

/// Runs `work` on a single-threaded async runtime.
pub fn block_on<F: Future>(work: F) -> anyhow::Result<F::Output> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    Ok(runtime.block_on(work))
}

/// A client with one connection to `url`, on `schema` (not checked: `anchor migrate`
/// creates it).
pub async fn connect(url: &str, schema: &str) -> anyhow::Result<Client> {
    Client::connect_with_pool_size(url, 1)
        .await
        .context("cannot use --database-url")?
        .try_with_schema(schema)
        .context("invalid --schema")
}

/// A value parser for queue names: a name that cannot exist is a usage error, with the
/// rule, before anything connects.
pub fn queue_name(name: &str) -> Result<String, String> {
    match anchor_core::queue_name_problem(name) {
        None => Ok(name.to_string()),
        Some(problem) => Err(format!("{problem}; {}", anchor_core::QUEUE_NAME_RULE)),
    }
}
