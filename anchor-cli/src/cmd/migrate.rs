//! `anchor migrate`: create or upgrade the runtime's tables in a database.

use std::process::ExitCode;

use anyhow::Context;

/// Flags of `anchor migrate`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The database to migrate, e.g. postgres://user:password@host:5432/dbname.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    database_url: String,
    /// The schema holding anchor's tables.
    #[arg(long, default_value = anchor_runtime::DEFAULT_SCHEMA)]
    schema: String,
}

/// Applies every pending migration and prints what was done.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let client = anchor_runtime::Client::connect_with_pool_size(&args.database_url, 1)
            .await
            .context("cannot use --database-url")?
            .try_with_schema(&args.schema)
            .context("invalid --schema")?;
        match anchor_runtime::migrate(&client).await {
            Ok(report) if report.applied.is_empty() => {
                println!(
                    "schema {} is up to date (version {})",
                    report.schema, report.version
                );
                Ok(ExitCode::SUCCESS)
            }
            Ok(report) => {
                println!(
                    "schema {}: applied {} (now at version {})",
                    report.schema,
                    report
                        .applied
                        .iter()
                        .map(|v| format!("V{v}"))
                        .collect::<Vec<_>>()
                        .join(", "),
                    report.version
                );
                Ok(ExitCode::SUCCESS)
            }
            Err(err) => {
                eprintln!("error: migration failed: {err}");
                Ok(ExitCode::FAILURE)
            }
        }
    })
}
