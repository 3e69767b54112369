//! `anchor generate`: validate tasks.yaml, then write (or `--check`) the generated module.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anchor_codegen::{DifferenceKind, GeneratedFile};
use anyhow::Context;

/// Flags of `anchor generate`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The tasks.yaml to generate from; its path as written here is named in the headers.
    #[arg(long, default_value = "api/tasks.yaml")]
    pub spec: PathBuf,
    /// The module directory to write; its root file is `DIR/mod.rs`.
    #[arg(long, value_name = "DIR", default_value = "src/zgen/taskgen")]
    pub out: PathBuf,
    /// Write nothing; exit 1 (naming the files, with a short diff) when the files in `--out`
    /// differ from what would be generated.
    #[arg(long)]
    pub check: bool,
}

/// Exit 0 when generated (or up to date with `--check`), 1 on spec errors or stale output,
/// `Err` (exit 2) when a file cannot be read or written.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let outcome = anchor_spec::load(&args.spec)?;
    let mut stderr = std::io::stderr().lock();
    // The same rendering `anchor validate` uses, so a problem reads the same in both.
    for diagnostic in &outcome.diagnostics {
        write!(stderr, "{}", diagnostic.render())?;
    }
    let Some(spec) = outcome.spec else {
        writeln!(
            stderr,
            "error: {} has {} error(s); nothing generated",
            args.spec.display(),
            outcome.error_count(),
        )?;
        return Ok(ExitCode::from(1));
    };
    let files = match anchor_codegen::generate(&spec) {
        Ok(files) => files,
        Err(err) => {
            writeln!(stderr, "error: {err}")?;
            return Ok(ExitCode::from(1));
        }
    };
    if args.check {
        check(&args, &files, &mut stderr)
    } else {
        write(&args, &files)
    }
}

fn check(
    args: &Args,
    files: &[GeneratedFile],
    stderr: &mut impl Write,
) -> anyhow::Result<ExitCode> {
    let differences = anchor_codegen::output::compare(&args.out, files)
        .with_context(|| format!("cannot compare with {}", args.out.display()))?;
    if differences.is_empty() {
        println!(
            "{}: up to date with {} ({} files)",
            args.out.display(),
            args.spec.display(),
            files.len()
        );
        return Ok(ExitCode::SUCCESS);
    }
    let out = args.out.display();
    for difference in &differences {
        match &difference.kind {
            DifferenceKind::Stale { diff } => {
                writeln!(stderr, "stale: {out}/{}", difference.path)?;
                write!(stderr, "{diff}")?;
            }
            DifferenceKind::Missing => writeln!(stderr, "missing: {out}/{}", difference.path)?,
            DifferenceKind::Extra => writeln!(
                stderr,
                "extra: {out}/{} (not generated from {})",
                difference.path,
                args.spec.display()
            )?,
        }
    }
    writeln!(
        stderr,
        "error: {} generated file(s) in {out} are out of date with {}; run `anchor generate --spec {} --out {out}`",
        differences.len(),
        args.spec.display(),
        args.spec.display(),
    )?;
    Ok(ExitCode::from(1))
}

fn write(args: &Args, files: &[GeneratedFile]) -> anyhow::Result<ExitCode> {
    let report = anchor_codegen::output::write(&args.out, files)
        .with_context(|| format!("cannot write {}", args.out.display()))?;
    let out = args.out.display();
    for path in &report.written {
        println!("wrote {out}/{path}");
    }
    for path in &report.removed {
        println!("removed {out}/{path} (no longer generated)");
    }
    for path in &report.foreign {
        eprintln!(
            "warning: {out}/{path} is not generated; move it out of {out} or `anchor generate --check` keeps failing"
        );
    }
    println!(
        "{out}: {} written, {} unchanged, {} removed",
        report.written.len(),
        report.unchanged.len(),
        report.removed.len()
    );
    Ok(ExitCode::SUCCESS)
}
