//! The `anchor` command. Flags are parsed here; every subcommand's work lives in a library
//! (`anchor-spec`, `anchor-codegen`, `anchor-runtime`) and its `cmd::*` module only maps
//! results to output and exit codes.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod cmd;

/// Durable, typed background tasks for Rust services on PostgreSQL.
#[derive(Debug, Parser)]
#[command(name = "anchor", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check tasks.yaml files and report every problem with file:line:column.
    Validate(cmd::validate::Args),
    /// Print the next fire times of a cron expression.
    Cron(cmd::cron::Args),
    /// Generate the typed Rust task module from tasks.yaml (or check it is fresh).
    Generate(cmd::generate::Args),
    /// Create or upgrade the runtime's schema in a database.
    Migrate(cmd::migrate::Args),
    /// List and count tasks; show, retry, cancel or delete one.
    Tasks(cmd::tasks::Args),
    /// List the queues; pause or resume one.
    Queues(cmd::queues::Args),
    /// List the cron schedules; pause or resume them.
    Schedules(cmd::schedules::Args),
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => {
            // clap prints help/version to stdout with exit 0 and usage errors to stderr;
            // usage errors map to exit code 2 as documented.
            let _ = err.print();
            return if err.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    let result = match cli.command {
        Command::Validate(args) => cmd::validate::run(args),
        Command::Cron(args) => cmd::cron::run(args),
        Command::Generate(args) => cmd::generate::run(args),
        Command::Migrate(args) => cmd::migrate::run(args),
        Command::Tasks(args) => cmd::tasks::run(args),
        Command::Queues(args) => cmd::queues::run(args),
        Command::Schedules(args) => cmd::schedules::run(args),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {}", chain_text(&err));
            ExitCode::from(2)
        }
    }
}

/// `err` and its causes as `outer: inner`, each said once: the runtime's errors already
/// print their own causes.
fn chain_text(err: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in err.chain() {
        let part = cause.to_string();
        if text.contains(&part) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&part);
    }
    text
}
