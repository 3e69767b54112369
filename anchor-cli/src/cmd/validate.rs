//! `anchor validate`: check tasks.yaml files and report every problem with file:line:column.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anchor_spec::Diagnostic;

/// Flags of `anchor validate`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The tasks.yaml files to check; all are checked in one run.
    #[arg(value_name = "FILE", default_value = "api/tasks.yaml")]
    pub files: Vec<PathBuf>,
    /// Treat warnings as errors (exit 1 when there are any).
    #[arg(long)]
    pub deny_warnings: bool,
    /// How to print the diagnostics: `text` (on stderr, for people) or `json` (an array on
    /// stdout, for tools).
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

/// Output formats of `anchor validate`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// `FILE:LINE:COLUMN: error: message`, the source line with a caret, and a hint.
    Text,
    /// A JSON array of `{file, line, column, severity, message, hint}` objects.
    Json,
}

/// Exit 0 when every file is clean, 1 when any has errors (or warnings with
/// `--deny-warnings`), 2 when a file cannot be read (the others are still checked).
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let mut diagnostics: Vec<Diagnostic> = Vec::new();
    let mut unreadable = 0usize;
    let mut stderr = std::io::stderr().lock();
    for file in &args.files {
        match anchor_spec::load(file) {
            Ok(outcome) => diagnostics.extend(outcome.diagnostics),
            Err(err) => {
                unreadable += 1;
                writeln!(stderr, "error: {err}")?;
                if args.files.len() == 1 && file.as_os_str() == "api/tasks.yaml" {
                    writeln!(
                        stderr,
                        "  = hint: name the file to check: `anchor validate path/to/tasks.yaml`"
                    )?;
                }
            }
        }
    }
    let errors = diagnostics
        .iter()
        .filter(|d| d.severity == anchor_spec::Severity::Error)
        .count();
    let warnings = diagnostics.len() - errors;
    match args.format {
        Format::Json => {
            let mut stdout = std::io::stdout().lock();
            serde_json::to_writer_pretty(&mut stdout, &diagnostics)?;
            writeln!(stdout)?;
        }
        Format::Text => {
            for diagnostic in &diagnostics {
                write!(stderr, "{}", diagnostic.render())?;
            }
            let checked = args.files.len() - unreadable;
            let unread = match unreadable {
                0 => String::new(),
                n => format!("; {n} file{} could not be read", plural(n)),
            };
            writeln!(
                stderr,
                "{}checked {} file{}: {}{unread}",
                if diagnostics.is_empty() { "" } else { "\n" },
                checked,
                plural(checked),
                summary(errors, warnings)
            )?;
        }
    }
    if unreadable > 0 {
        return Ok(ExitCode::from(2));
    }
    if errors > 0 || (args.deny_warnings && warnings > 0) {
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

fn summary(errors: usize, warnings: usize) -> String {
    match (errors, warnings) {
        (0, 0) => "no problems".to_string(),
        (e, 0) => format!("{e} error{}", plural(e)),
        (0, w) => format!("{w} warning{}", plural(w)),
        (e, w) => format!("{e} error{}, {w} warning{}", plural(e), plural(w)),
    }
}
