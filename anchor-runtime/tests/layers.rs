//! The runtime's modules depend on each other one way only: no module uses, directly or
//! through others, a module that uses it back. (The worker depends on the client; the
//! client reaches a worker only through the `dispatch` traits the worker implements.)
//!
//! Read from the source: every `crate::…` path outside comments, with names re-exported at
//! the crate root (`crate::Error`) mapped to the module that defines them.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).expect("read src") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The code of a file without its comment lines (doc links are not dependencies).
fn code(path: &Path) -> String {
    fs::read_to_string(path)
        .expect("read source")
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The identifiers that follow `crate::` in `text`.
fn crate_paths(text: &str) -> Vec<String> {
    text.match_indices("crate::")
        .filter(|(at, _)| {
            // Not `$crate::` or a longer word ending in `crate`.
            text[..*at]
                .chars()
                .next_back()
                .is_none_or(|c| !(c.is_alphanumeric() || c == '_' || c == '$'))
        })
        .map(|(at, m)| {
            text[at + m.len()..]
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect()
        })
        .collect()
}

/// `pub use module::{A, B};` lines of lib.rs, as name → module.
fn reexports(lib: &str) -> BTreeMap<String, String> {
    let mut names = BTreeMap::new();
    for line in lib.lines() {
        let Some(rest) = line.trim().strip_prefix("pub use ") else {
            continue;
        };
        let Some((module, items)) = rest.split_once("::") else {
            continue;
        };
        let items = items
            .trim_end_matches(';')
            .trim_matches(|c| c == '{' || c == '}');
        for item in items.split(',') {
            let item = item.trim();
            if !item.is_empty() {
                names.insert(item.to_string(), module.to_string());
            }
        }
    }
    names
}

#[test]
fn no_module_depends_on_a_module_that_depends_on_it() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let names = reexports(&fs::read_to_string(src.join("lib.rs")).expect("lib.rs"));
    let mut files = Vec::new();
    sources(&src, &mut files);
    let mut deps: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in &files {
        let relative = file.strip_prefix(&src).expect("under src");
        let module = relative
            .components()
            .next()
            .and_then(|c| c.as_os_str().to_str())
            .map(|c| c.trim_end_matches(".rs").to_string())
            .expect("a module name");
        if module == "lib" {
            continue;
        }
        for path in crate_paths(&code(file)) {
            let target = names.get(&path).cloned().unwrap_or(path);
            if target != module && files.iter().any(|f| module_of(&src, f) == target) {
                deps.entry(module.clone()).or_default().insert(target);
            }
        }
    }
    for (module, direct) in &deps {
        let mut seen = BTreeSet::new();
        let mut stack: Vec<&String> = direct.iter().collect();
        while let Some(next) = stack.pop() {
            if next == module {
                panic!("module `{module}` depends on itself through others: {deps:#?}");
            }
            if seen.insert(next.clone()) {
                stack.extend(deps.get(next).into_iter().flatten());
            }
        }
    }
    // The shape this test protects: the client never depends on the worker.
    assert!(!deps.get("client").is_some_and(|d| d.contains("worker")));
    assert!(!deps.get("enqueue").is_some_and(|d| d.contains("worker")));
}

fn module_of(src: &Path, file: &Path) -> String {
    file.strip_prefix(src)
        .ok()
        .and_then(|r| r.components().next())
        .and_then(|c| c.as_os_str().to_str())
        .map(|c| c.trim_end_matches(".rs").to_string())
        .unwrap_or_default()
}
