//! `anchor cron`: print the next fire times of a cron expression, so users can check what an
//! expression means before putting it in tasks.yaml.

use std::io::Write;
use std::process::ExitCode;

use anchor_core::cron::{parse_timezone, CronExpr};
use anyhow::Context;
use chrono::{DateTime, SecondsFormat, Utc};

/// Flags of `anchor cron`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The expression: 5 fields (`minute hour day-of-month month day-of-week`) or 6 with
    /// seconds first. Quote it (`"0 9 * * MON-FRI"`); unquoted fields are joined with spaces.
    #[arg(value_name = "EXPR", required = true, num_args = 1..)]
    pub expression: Vec<String>,
    /// How many fire times to print.
    #[arg(long, short = 'n', default_value_t = 10)]
    pub count: usize,
    /// Print fire times strictly after this instant (RFC 3339, e.g. `2024-03-01T00:00:00Z`);
    /// default: now.
    #[arg(long, value_name = "RFC3339")]
    pub from: Option<String>,
    /// Evaluate the expression on this IANA time zone's wall clock (as `cronjob.timezone`
    /// does); the times are still printed in UTC.
    #[arg(long, value_name = "TZ")]
    pub timezone: Option<String>,
}

/// Prints the next `--count` fire times, one RFC 3339 UTC timestamp per line. Exit 1 when the
/// expression is invalid (the reason and its position on stderr); `Err` (exit 2) for a bad
/// `--from` or `--timezone`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let text = args.expression.join(" ");
    let tz = args
        .timezone
        .as_deref()
        .map(parse_timezone)
        .transpose()
        .context("invalid --timezone")?;
    let from: DateTime<Utc> = match &args.from {
        Some(from) => DateTime::parse_from_rfc3339(from)
            .with_context(|| {
                format!("invalid --from {from:?}: expected RFC 3339, e.g. 2024-03-01T00:00:00Z")
            })?
            .with_timezone(&Utc),
        None => Utc::now(),
    };
    let expr = match CronExpr::parse(&text) {
        Ok(expr) => expr,
        Err(err) => {
            let mut stderr = std::io::stderr().lock();
            writeln!(stderr, "error: invalid cron expression: {}", err.message)?;
            let before = text.get(..err.offset).map_or(0, |s| s.chars().count());
            let width = text
                .get(err.offset..(err.offset + err.len).min(text.len()))
                .map_or(1, |s| s.chars().count().max(1));
            writeln!(stderr, "  {text}")?;
            writeln!(stderr, "  {}{}", " ".repeat(before), "^".repeat(width))?;
            return Ok(ExitCode::from(1));
        }
    };
    let mut stdout = std::io::stdout().lock();
    for time in expr.upcoming(from, tz).take(args.count) {
        writeln!(
            stdout,
            "{}",
            time.to_rfc3339_opts(SecondsFormat::Secs, true)
        )?;
    }
    Ok(ExitCode::SUCCESS)
}
