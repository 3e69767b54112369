//! Collects diagnostics for one file, attaching the source line each one points at.

use crate::diagnostic::{Diagnostic, Severity};
use crate::yaml::{Node, Pos, Span};

/// Collects the diagnostics of one file.
pub(crate) struct Reporter<'a> {
    file: &'a str,
    lines: Vec<&'a str>,
    pub(crate) diagnostics: Vec<Diagnostic>,
}

impl<'a> Reporter<'a> {
    pub(crate) fn new(file: &'a str, text: &'a str) -> Self {
        Reporter {
            file,
            lines: text.lines().collect(),
            diagnostics: Vec::new(),
        }
    }

    fn push(
        &mut self,
        severity: Severity,
        pos: Pos,
        width: usize,
        message: String,
        hint: Option<String>,
    ) {
        let line = pos.line.max(1);
        let source_line = self
            .lines
            .get(line - 1)
            .map(|l| l.trim_end_matches('\r').to_string())
            .unwrap_or_default();
        self.diagnostics.push(Diagnostic {
            severity,
            file: self.file.to_string(),
            line,
            column: pos.column.max(1),
            message,
            hint,
            source_line,
            width: width.max(1),
        });
    }

    /// An error covering `span` (its first line).
    pub(crate) fn error(&mut self, span: Span, message: impl Into<String>, hint: Option<String>) {
        self.push(
            Severity::Error,
            span.start,
            span.width(),
            message.into(),
            hint,
        );
    }

    /// An error at a node.
    pub(crate) fn error_at(
        &mut self,
        node: &Node,
        message: impl Into<String>,
        hint: Option<String>,
    ) {
        self.error(node.span, message, hint);
    }

    /// An error at an exact position with an underline width.
    pub(crate) fn error_pos(
        &mut self,
        pos: Pos,
        width: usize,
        message: impl Into<String>,
        hint: Option<String>,
    ) {
        self.push(Severity::Error, pos, width, message.into(), hint);
    }

    /// A warning at a node.
    pub(crate) fn warning_at(
        &mut self,
        node: &Node,
        message: impl Into<String>,
        hint: Option<String>,
    ) {
        self.push(
            Severity::Warning,
            node.span.start,
            node.span.width(),
            message.into(),
            hint,
        );
    }

    /// Whether any error has been reported so far.
    pub(crate) fn error_count(&self) -> usize {
        self.diagnostics
            .iter()
            .filter(|d| d.severity == Severity::Error)
            .count()
    }
}

/// The closest candidate to a misspelt `word`, if one is close enough to be a likely typo.
///
/// Spellings that differ only in case, `_` or `-` (`retry_policy` for `retryPolicy`) always
/// match; otherwise the Jaro-Winkler similarity must be high or the edit distance small.
pub(crate) fn did_you_mean<'c>(
    word: &str,
    candidates: impl IntoIterator<Item = &'c str>,
) -> Option<&'c str> {
    let normalize = |s: &str| -> String {
        s.chars()
            .filter(|c| *c != '_' && *c != '-')
            .flat_map(char::to_lowercase)
            .collect()
    };
    let wanted = normalize(word);
    let mut best: Option<(f64, &'c str)> = None;
    for candidate in candidates {
        if candidate == word {
            continue;
        }
        let normalized = normalize(candidate);
        if normalized == wanted {
            return Some(candidate);
        }
        let similarity = strsim::jaro_winkler(&wanted, &normalized);
        let distance = strsim::damerau_levenshtein(&wanted, &normalized);
        let close = similarity >= 0.85 || (distance <= 2 && wanted.len() > 3);
        if close && best.is_none_or(|(score, _)| similarity > score) {
            best = Some((similarity, candidate));
        }
    }
    best.map(|(_, candidate)| candidate)
}

/// A "did you mean" hint, when there is a close candidate.
pub(crate) fn hint_did_you_mean<'c>(
    word: &str,
    candidates: impl IntoIterator<Item = &'c str>,
) -> Option<String> {
    did_you_mean(word, candidates).map(|c| format!("did you mean `{c}`?"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions() {
        let keys = [
            "name",
            "description",
            "parameters",
            "retryPolicy",
            "cronjob",
            "events",
            "timeout",
            "maxRescues",
            "queue",
            "priority",
        ];
        assert_eq!(did_you_mean("retry_policy", keys), Some("retryPolicy"));
        assert_eq!(did_you_mean("timout", keys), Some("timeout"));
        assert_eq!(did_you_mean("descripton", keys), Some("description"));
        assert_eq!(did_you_mean("cronJob", keys), Some("cronjob"));
        assert_eq!(did_you_mean("queues", keys), Some("queue"));
        assert_eq!(did_you_mean("priorty", keys), Some("priority"));
        assert_eq!(did_you_mean("zzz", keys), None);
    }
}
