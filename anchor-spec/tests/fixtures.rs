//! Fixture-driven tests: every file in `testdata/valid/` must validate (only documented
//! warnings), every file in `testdata/invalid/` must be rejected, and the rendered diagnostics
//! of each are pinned by insta snapshots. New fixtures are picked up automatically.

use std::path::{Path, PathBuf};

use anchor_spec::{check, Severity};

fn fixtures(kind: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../testdata")
        .join(kind);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no fixtures in {}", dir.display());
    files
}

/// Checks a fixture, naming it `testdata/<kind>/<file>` in diagnostics so snapshots do not
/// depend on where the repository is checked out.
fn run(kind: &str, path: &Path) -> (anchor_spec::Outcome, String) {
    let file = path
        .file_name()
        .and_then(|n| n.to_str())
        .expect("utf-8 file name");
    let text = std::fs::read_to_string(path).expect("fixture is readable");
    let outcome = check(&format!("testdata/{kind}/{file}"), &text);
    let rendered: String = outcome.diagnostics.iter().map(|d| d.render()).collect();
    (outcome, rendered)
}

/// Valid fixtures that are expected to warn, and what the warning is about (documented in
/// docs/validate.md).
const EXPECTED_WARNINGS: &[(&str, &str)] = &[
    ("daily-reports.yaml", "without a `default` (`date`)"),
    (
        "task-definition.yaml",
        "without a `default` (`param1`, `param2`)",
    ),
];

#[test]
fn valid_fixtures_validate() {
    let mut settings = insta::Settings::clone_current();
    settings.set_prepend_module_to_snapshot(false);
    settings.set_snapshot_path("snapshots/valid");
    let _guard = settings.bind_to_scope();
    for path in fixtures("valid") {
        let (outcome, rendered) = run("valid", &path);
        let file = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        assert_eq!(outcome.error_count(), 0, "{file} has errors:\n{rendered}");
        assert!(outcome.spec.is_some(), "{file}: no model");
        let expected: Vec<&str> = EXPECTED_WARNINGS
            .iter()
            .filter(|(f, _)| *f == file)
            .map(|(_, w)| *w)
            .collect();
        for d in outcome
            .diagnostics
            .iter()
            .filter(|d| d.severity == Severity::Warning)
        {
            assert!(
                expected.iter().any(|w| d.message.contains(w)),
                "{file}: unexpected warning:\n{}",
                d.render()
            );
        }
        assert_eq!(
            outcome.warning_count(),
            expected.len(),
            "{file}:\n{rendered}"
        );
        let name = file.trim_end_matches(".yaml");
        insta::assert_snapshot!(
            name,
            if rendered.is_empty() {
                "(no diagnostics)\n".to_string()
            } else {
                rendered
            }
        );
    }
}

#[test]
fn invalid_fixtures_are_rejected() {
    let mut settings = insta::Settings::clone_current();
    settings.set_prepend_module_to_snapshot(false);
    settings.set_snapshot_path("snapshots/invalid");
    let _guard = settings.bind_to_scope();
    for path in fixtures("invalid") {
        let (outcome, rendered) = run("invalid", &path);
        let file = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        // A `warn-` fixture demonstrates a warning; every other one must fail.
        if file.starts_with("warn-") {
            assert!(outcome.warning_count() > 0, "{file} should warn");
        } else {
            assert!(outcome.error_count() > 0, "{file} should be rejected");
            assert!(outcome.spec.is_none(), "{file}: a model despite errors");
        }
        for d in &outcome.diagnostics {
            assert!(
                d.line >= 1 && d.column >= 1,
                "{file}: position {}:{}",
                d.line,
                d.column
            );
            assert!(!d.message.is_empty());
        }
        insta::assert_snapshot!(file.trim_end_matches(".yaml"), rendered);
    }
}
