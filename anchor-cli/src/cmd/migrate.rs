//! `anchor migrate`: create or upgrade the runtime's tables in a database.

use std::process::ExitCode;

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
    super::connect::block_on(async {
        let client = super::connect::connect(&args.database_url, &args.schema).await?;
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
    })?
}
