//! Declares one module per golden output directory (`testdata/golden/<group>/<fixture>/`),
//! so every fixture the golden test writes is compiled without listing it by hand.

use std::fmt::Write as _;
use std::path::Path;

fn main() {
    let manifest = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let golden = Path::new(&manifest).join("../testdata/golden");
    println!("cargo:rerun-if-changed={}", golden.display());
    let mut code = String::new();
    let mut groups = read_dirs(&golden);
    groups.sort();
    for group in groups {
        println!("cargo:rerun-if-changed={}", golden.join(&group).display());
        writeln!(code, "/// Golden outputs for `testdata/{group}/`.").unwrap();
        writeln!(code, "pub mod {} {{", module_name(&group)).unwrap();
        let mut fixtures = read_dirs(&golden.join(&group));
        fixtures.sort();
        for fixture in fixtures {
            let root = golden.join(&group).join(&fixture).join("mod.rs");
            if !root.is_file() {
                continue;
            }
            let root = root.canonicalize().expect("the golden mod.rs exists");
            // No outer `///` doc here: the module's docs are the `//!` lines of its mod.rs, and
            // rustdoc resolves a module's intra-doc links in the parent's scope when its first
            // doc line is an outer one, which would break the links to `Executor` and friends.
            writeln!(code, "    #[path = {:?}]", root.display().to_string()).unwrap();
            writeln!(code, "    pub mod {};", module_name(&fixture)).unwrap();
        }
        writeln!(code, "}}").unwrap();
    }
    let out = std::env::var("OUT_DIR").expect("cargo sets OUT_DIR");
    std::fs::write(Path::new(&out).join("golden.rs"), code).expect("OUT_DIR is writable");
}

/// The names of the directories directly inside `dir` (none when it does not exist).
fn read_dirs(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter(|entry| entry.path().is_dir())
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .collect()
}

/// A fixture name as a module identifier: `all-features` → `all_features`.
fn module_name(name: &str) -> String {
    let mut ident: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    if ident.starts_with(|c: char| c.is_ascii_digit()) {
        ident.insert(0, '_');
    }
    ident
}
