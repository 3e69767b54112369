//! The tasks.yaml model: parse with source positions, validate, and report diagnostics.
//!
//! [`check`] reads a tasks.yaml text and returns every problem it has as a [`Diagnostic`]
//! (file, line, column, message, hint), plus the validated [`model::Spec`] when there are no
//! errors. [`load`] does the same for a file on disk. `anchor validate` prints the diagnostics
//! with [`Diagnostic::render`]; `anchor generate` builds code from the spec.
//!
//! ```
//! let yaml = "tasks:\n  - name: SendEmail\n    timeout: 5m\n";
//! let outcome = anchor_spec::check("api/tasks.yaml", yaml);
//! assert!(outcome.diagnostics.is_empty());
//! let spec = outcome.spec.expect("valid");
//! assert_eq!(spec.tasks[0].name, "SendEmail");
//! assert_eq!(spec.tasks[0].timeout, std::time::Duration::from_secs(300));
//!
//! let bad = anchor_spec::check("api/tasks.yaml", "tasks:\n  - name: SendEmail\n    timeout: 5\n");
//! assert!(bad.spec.is_none());
//! assert_eq!((bad.diagnostics[0].line, bad.diagnostics[0].column), (3, 14));
//! eprint!("{}", bad.diagnostics[0].render());
//! ```
#![warn(missing_docs)]

use std::path::Path;

mod diagnostic;
pub mod model;
mod report;
mod schema;
mod validate;
mod yaml;

pub use diagnostic::{Diagnostic, Severity};
pub use validate::default_failure_handler_schema;

/// The result of checking one tasks.yaml text.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// The validated model; `Some` exactly when there is no error (warnings allowed).
    pub spec: Option<model::Spec>,
    /// Every problem found, errors and warnings, ordered by position.
    pub diagnostics: Vec<Diagnostic>,
}

impl Outcome {
    /// How many diagnostics are errors.
    pub fn error_count(&self) -> usize {
        self.diagnostics
            .iter()
            .filter(|d| d.severity == Severity::Error)
            .count()
    }

    /// How many diagnostics are warnings.
    pub fn warning_count(&self) -> usize {
        self.diagnostics
            .iter()
            .filter(|d| d.severity == Severity::Warning)
            .count()
    }

    /// True when there is at least one error.
    pub fn has_errors(&self) -> bool {
        self.error_count() > 0
    }
}

/// A tasks.yaml file that could not be read.
#[derive(Debug, thiserror::Error)]
#[error("cannot read {path}: {source}")]
pub struct LoadError {
    /// The path as given.
    pub path: String,
    /// Why reading failed.
    #[source]
    pub source: std::io::Error,
}

/// Checks a tasks.yaml text. `source_name` is the file name used in diagnostics and stored
/// in [`model::Spec::source`]. Never panics, whatever the input.
pub fn check(source_name: &str, text: &str) -> Outcome {
    let mut reporter = report::Reporter::new(source_name, text);
    let spec = match yaml::parse(text) {
        Ok(root) => validate::check_document(&mut reporter, source_name, root.as_ref()),
        Err(err) => {
            reporter.error_pos(
                err.pos,
                1,
                format!("invalid YAML: {}", err.message),
                Some(err.note.unwrap_or_else(|| "fix the YAML syntax first; indentation must use spaces, and `key: value` needs a space after the colon".into())),
            );
            None
        }
    };
    let mut diagnostics = reporter.diagnostics;
    diagnostics.sort_by_key(|d| (d.line, d.column));
    let spec = if diagnostics.iter().any(|d| d.severity == Severity::Error) {
        None
    } else {
        spec
    };
    Outcome { spec, diagnostics }
}

/// Reads and checks a tasks.yaml file; the path is used as written in diagnostics.
///
/// A file that is not UTF-8 is reported as a diagnostic, not a load error.
pub fn load(path: impl AsRef<Path>) -> Result<Outcome, LoadError> {
    let path = path.as_ref();
    let name = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|source| LoadError {
        path: name.clone(),
        source,
    })?;
    match String::from_utf8(bytes) {
        Ok(text) => Ok(check(&name, &text)),
        Err(err) => {
            let valid = &err.as_bytes()[..err.utf8_error().valid_up_to()];
            let text = String::from_utf8_lossy(valid);
            let line = text.matches('\n').count() + 1;
            let column = text.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
            Ok(Outcome {
                spec: None,
                diagnostics: vec![Diagnostic {
                    severity: Severity::Error,
                    file: name,
                    line,
                    column,
                    message: "the file is not valid UTF-8".into(),
                    hint: Some("save it as UTF-8".into()),
                    source_line: String::new(),
                    width: 1,
                }],
            })
        }
    }
}
