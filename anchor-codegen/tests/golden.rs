//! Golden snapshots: the generated module for every spec in `testdata/valid/` and
//! `testdata/codegen/` is compared with `testdata/golden/<dir>/<stem>/`. The goldens are
//! compiled by the `anchor-testgen` crate, so a template that emits broken Rust fails there.
//!
//! After an intended change, regenerate with `UPDATE_GOLDEN=1 cargo test -p anchor-codegen
//! --test golden` and review the diff.

use std::path::{Path, PathBuf};

use anchor_codegen::output;

/// The workspace root (tests run in the crate directory).
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the crate lives inside the workspace")
        .to_path_buf()
}

/// Every `*.yaml` in `testdata/<dir>/`, sorted, as (path relative to the root, stem).
fn fixtures(dir: &str) -> Vec<(String, String)> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(root().join("testdata").join(dir)) else {
        return found;
    };
    for entry in entries {
        let path = entry.expect("readable testdata entry").path();
        if path
            .extension()
            .is_some_and(|ext| ext == "yaml" || ext == "yml")
        {
            let stem = path
                .file_stem()
                .expect("a fixture has a name")
                .to_string_lossy()
                .into_owned();
            let file = path.file_name().expect("a file name").to_string_lossy();
            found.push((format!("testdata/{dir}/{file}"), stem));
        }
    }
    found.sort();
    found
}

/// Generates a fixture, with its workspace-relative path as the header's source.
fn generate(relative: &str) -> Vec<anchor_codegen::GeneratedFile> {
    let text = std::fs::read_to_string(root().join(relative)).expect("readable fixture");
    let outcome = anchor_spec::check(relative, &text);
    let rendered: String = outcome.diagnostics.iter().map(|d| d.render()).collect();
    let spec = outcome
        .spec
        .unwrap_or_else(|| panic!("{relative} must be valid:\n{rendered}"));
    anchor_codegen::generate(&spec).unwrap_or_else(|err| panic!("{relative}: {err}"))
}

fn check_dir(dir: &str) -> Vec<String> {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let golden_root = root().join("testdata/golden").join(dir);
    let mut failures = Vec::new();
    let fixtures = fixtures(dir);
    for (relative, stem) in &fixtures {
        let files = generate(relative);
        let golden = golden_root.join(stem);
        if update {
            output::write(&golden, &files).expect("golden directory is writable");
            continue;
        }
        let differences = output::compare(&golden, &files).expect("golden directory is readable");
        for difference in differences {
            let detail = match difference.kind {
                output::DifferenceKind::Stale { diff } => format!("stale\n{diff}"),
                output::DifferenceKind::Missing => "missing".to_string(),
                output::DifferenceKind::Extra => "extra".to_string(),
            };
            failures.push(format!(
                "{relative}: {}/{}: {detail}",
                golden.display(),
                difference.path
            ));
        }
    }
    // A golden directory without a fixture is left over from a removed fixture.
    if let Ok(entries) = std::fs::read_dir(&golden_root) {
        for entry in entries {
            let name = entry.expect("readable golden entry").file_name();
            let name = name.to_string_lossy();
            if !fixtures.iter().any(|(_, stem)| *stem == name) {
                if update {
                    std::fs::remove_dir_all(golden_root.join(&*name)).expect("removable");
                } else {
                    failures.push(format!(
                        "{}/{name}: no fixture generates it",
                        golden_root.display()
                    ));
                }
            }
        }
    }
    failures
}

#[test]
fn generated_code_matches_the_goldens() {
    let mut failures = check_dir("valid");
    failures.extend(check_dir("codegen"));
    assert!(
        failures.is_empty(),
        "generated code differs from the goldens (run with UPDATE_GOLDEN=1 to accept):\n{}",
        failures.join("\n")
    );
}

#[test]
fn the_codegen_fixtures_exist() {
    // The type-mapping and seed fixtures are what the compile-test crate builds against.
    let stems: Vec<String> = fixtures("codegen")
        .into_iter()
        .map(|(_, stem)| stem)
        .collect();
    assert!(stems.contains(&"types".to_string()), "{stems:?}");
    assert!(stems.contains(&"seed".to_string()), "{stems:?}");
}

#[test]
fn generating_twice_is_byte_for_byte_identical() {
    for dir in ["valid", "codegen"] {
        for (relative, _) in fixtures(dir) {
            assert_eq!(generate(&relative), generate(&relative), "{relative}");
        }
    }
}

#[test]
fn cargo_fmt_leaves_the_generated_module_unchanged() {
    // mod.rs is formatted exactly as rustfmt would; every other file is declared
    // `#[rustfmt::skip]`, so running `cargo fmt` in a user's crate cannot make
    // `anchor generate --check` fail.
    for dir in ["valid", "codegen"] {
        for (relative, _) in fixtures(dir) {
            let files = generate(&relative);
            let root = files.iter().find(|f| f.path == "mod.rs").expect("mod.rs");
            for file in files.iter().filter(|f| f.path != "mod.rs") {
                let module = file.path.trim_end_matches(".rs");
                assert!(
                    root.contents
                        .contains(&format!("#[rustfmt::skip]\npub mod {module};")),
                    "{relative}: {module} is not skipped by rustfmt"
                );
            }
            let mut child = std::process::Command::new("rustfmt")
                .args(["--edition", "2021", "--emit", "stdout"])
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .spawn()
                .expect("rustfmt is installed (rustup component add rustfmt)");
            use std::io::Write as _;
            child
                .stdin
                .take()
                .expect("piped stdin")
                .write_all(root.contents.as_bytes())
                .expect("rustfmt reads its input");
            let output = child.wait_with_output().expect("rustfmt finishes");
            // `rustfmt --check` exits 0 on stdin input even when it differs, so compare the
            // formatted text instead.
            assert!(
                output.status.success(),
                "{relative}: rustfmt failed on mod.rs"
            );
            assert_eq!(
                String::from_utf8_lossy(&output.stdout),
                root.contents,
                "{relative}: rustfmt would change mod.rs"
            );
        }
    }
}
