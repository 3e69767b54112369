//! The checked-in generated module is exactly what `anchor generate` makes from
//! `api/tasks.yaml` today — the same comparison `anchor generate --check` runs in CI, done with
//! the generator's library so `cargo test` alone catches a stale module.

use std::fs;
use std::path::{Path, PathBuf};

use anchor_codegen::{DifferenceKind, GeneratedFile};

/// The spec path as the module's headers name it: relative to the repository root, where
/// the module is generated from (see the comment at the top of api/tasks.yaml).
const SPEC: &str = "examples/quickstart/api/tasks.yaml";
const OUT: &str = "examples/quickstart/src/zgen/taskgen";

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn generate() -> Vec<GeneratedFile> {
    let text = fs::read_to_string(repo_root().join(SPEC)).expect("read api/tasks.yaml");
    let outcome = anchor_spec::check(SPEC, &text);
    let rendered: Vec<String> = outcome.diagnostics.iter().map(|d| d.render()).collect();
    assert!(
        outcome.diagnostics.is_empty(),
        "api/tasks.yaml has problems:\n{}",
        rendered.join("")
    );
    let spec = outcome.spec.expect("a spec without errors");
    anchor_codegen::generate(&spec).expect("generate the module")
}

#[test]
fn checked_in_module_is_up_to_date() {
    let files = generate();
    let differences =
        anchor_codegen::output::compare(&repo_root().join(OUT), &files).expect("compare");
    let mut report = String::new();
    for difference in &differences {
        match &difference.kind {
            DifferenceKind::Stale { diff } => {
                report.push_str(&format!("stale: {}\n{diff}", difference.path))
            }
            DifferenceKind::Missing => report.push_str(&format!("missing: {}\n", difference.path)),
            DifferenceKind::Extra => report.push_str(&format!("extra: {}\n", difference.path)),
        }
    }
    assert!(
        differences.is_empty(),
        "{report}the quickstart's generated module is stale; from the repository root run\n  \
         cargo run -p anchor-cli -- generate --spec {SPEC} --out {OUT}"
    );
}

/// The check above can fail: a hand edit in a copy of the module is reported as stale.
#[test]
fn a_hand_edit_is_reported() {
    let files = generate();
    let copy = std::env::temp_dir().join(format!("quickstart-fresh-{}", std::process::id()));
    let _ = fs::remove_dir_all(&copy);
    fs::create_dir_all(&copy).expect("create temp dir");
    for file in &files {
        fs::write(copy.join(&file.path), &file.contents).expect("write copy");
    }
    let runner = copy.join("runner.rs");
    let edited = fs::read_to_string(&runner)
        .expect("read runner.rs")
        .replace(
            "pub async fn run_send_email(",
            "pub async fn run_send_mail(",
        );
    fs::write(&runner, edited).expect("edit runner.rs");
    let differences = anchor_codegen::output::compare(&copy, &files).expect("compare");
    let _ = fs::remove_dir_all(&copy);
    assert_eq!(differences.len(), 1, "{differences:?}");
    assert_eq!(differences[0].path, "runner.rs");
    assert!(matches!(differences[0].kind, DifferenceKind::Stale { .. }));
}
