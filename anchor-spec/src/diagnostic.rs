//! Problems found in a tasks.yaml file, with the place they are at and how to fix them.

use std::fmt;

use serde::Serialize;

/// How bad a problem is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The file cannot be used; `anchor validate` exits 1 and `anchor generate` refuses.
    Error,
    /// The file works, but probably not as meant; exit 0 unless `--deny-warnings`.
    Warning,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
        })
    }
}

/// One problem in a tasks.yaml file.
///
/// Serialises (for `anchor validate --format json`) to
/// `{"file", "line", "column", "severity", "message", "hint"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    /// Error or warning.
    pub severity: Severity,
    /// The file as the user named it.
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// 1-based column, in characters.
    pub column: usize,
    /// What is wrong.
    pub message: String,
    /// How to fix it, when there is something specific to say.
    pub hint: Option<String>,
    /// The text of the offending line (without its line break), for rendering.
    #[serde(skip)]
    pub source_line: String,
    /// How many characters from `column` to underline (at least 1).
    #[serde(skip)]
    pub width: usize,
}

impl Diagnostic {
    /// Renders the diagnostic the way `anchor validate` prints it:
    ///
    /// ```text
    /// api/tasks.yaml:4:5: error: unknown key `retryPolicyy` in task `SendEmail`
    ///   |
    /// 4 |     retryPolicyy:
    ///   |     ^^^^^^^^^^^^
    ///   = hint: did you mean `retryPolicy`?
    /// ```
    ///
    /// ```
    /// let outcome = anchor_spec::check("tasks.yaml", "tasks:\n  - name: A\n    timout: 5m\n");
    /// let text = outcome.diagnostics[0].render();
    /// assert!(text.starts_with("tasks.yaml:3:5: error: unknown key `timout`"));
    /// assert!(text.contains("did you mean `timeout`?"));
    /// ```
    pub fn render(&self) -> String {
        let mut out = format!(
            "{}:{}:{}: {}: {}\n",
            self.file, self.line, self.column, self.severity, self.message
        );
        if !self.source_line.is_empty() || self.line > 0 {
            let number = self.line.to_string();
            let gutter = " ".repeat(number.len());
            // Keep tabs so the caret lines up under the same characters in a terminal.
            let pad: String = self
                .source_line
                .chars()
                .take(self.column.saturating_sub(1))
                .map(|c| if c == '\t' { '\t' } else { ' ' })
                .collect();
            let pad_len = pad.chars().count();
            let pad = pad + &" ".repeat(self.column.saturating_sub(1).saturating_sub(pad_len));
            out.push_str(&format!("{gutter} |\n"));
            out.push_str(&format!("{number} | {}\n", self.source_line));
            out.push_str(&format!(
                "{gutter} | {pad}{}\n",
                "^".repeat(self.width.max(1))
            ));
            if let Some(hint) = &self.hint {
                out.push_str(&format!("{gutter} = hint: {hint}\n"));
            }
        } else if let Some(hint) = &self.hint {
            out.push_str(&format!("  = hint: {hint}\n"));
        }
        out
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.render())
    }
}
