//! The runtime's modules depend on each other one way only: no module uses, directly or
//! through others, a module that uses it back. (The worker depends on the client; the
//! client reaches a worker only through the `dispatch` traits the worker implements.)
//!
//! Read from the source: every `crate::…` path outside comments, with names re-exported at
//! the crate root (`crate::Error`) mapped to the module that defines them.
//!
//! A second test keeps the database boundary: SQL text and the mapping of database errors
//! live in `src/db/` only.

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

/// The string literals of Rust source `text`, outside comments: their contents as written
/// (escapes not decoded). Char literals and lifetimes are skipped, so `'"'` opens nothing.
fn string_literals(text: &str) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    let mut literals = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut depth = 0;
            while i < chars.len() {
                if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
        } else if c == '\'' {
            // A char literal ('x', '\n', '\'') or a lifetime ('a).
            if next == Some('\\') {
                i += 2;
                while i < chars.len() && chars[i] != '\'' {
                    i += 1;
                }
                i += 1;
            } else if chars.get(i + 2) == Some(&'\'') {
                i += 3;
            } else {
                i += 1;
            }
        } else if c == 'r'
            && (next == Some('"') || next == Some('#'))
            && (i == 0 || !(chars[i - 1].is_alphanumeric() || chars[i - 1] == '_'))
        {
            // A raw string: r"…", r#"…"#, …
            let mut j = i + 1;
            let mut hashes = 0;
            while chars.get(j) == Some(&'#') {
                hashes += 1;
                j += 1;
            }
            if chars.get(j) != Some(&'"') {
                i += 1;
                continue;
            }
            let start = j + 1;
            let mut end = start;
            loop {
                if end >= chars.len() {
                    break;
                }
                if chars[end] == '"' && (1..=hashes).all(|k| chars.get(end + k) == Some(&'#')) {
                    break;
                }
                end += 1;
            }
            literals.push(chars[start..end.min(chars.len())].iter().collect());
            i = end + 1 + hashes;
        } else if c == '"' {
            let start = i + 1;
            let mut end = start;
            while end < chars.len() && chars[end] != '"' {
                if chars[end] == '\\' {
                    end += 1;
                }
                end += 1;
            }
            literals.push(chars[start..end.min(chars.len())].iter().collect());
            i = end + 1;
        } else {
            i += 1;
        }
    }
    literals
}

/// Whether `word` occurs in `text` as a whole identifier (`as_db_error` is not `db_error`).
fn has_word(text: &str, word: &str) -> bool {
    let is_ident = |c: char| c.is_alphanumeric() || c == '_';
    text.match_indices(word).any(|(at, _)| {
        text[..at].chars().next_back().is_none_or(|c| !is_ident(c))
            && text[at + word.len()..]
                .chars()
                .next()
                .is_none_or(|c| !is_ident(c))
    })
}

/// What marks a string literal as SQL. `LISTEN` counts with a channel after it (a quoted
/// identifier or a `format!` placeholder): log lines speak of "the LISTEN connection".
const SQL_MARKERS: &[&str] = &[
    "SELECT ",
    "UPDATE ",
    "INSERT INTO",
    "DELETE FROM",
    "pg_notify",
    "LISTEN {",
    "LISTEN \\\"",
    "CREATE ",
    "WHERE ",
    "RETURNING ",
    "ON CONFLICT",
    "::text",
    "::bigint",
    "::jsonb",
];

#[test]
fn sql_and_database_errors_live_in_the_db_module_only() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let db = src.join("db");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let mut found = Vec::new();
    if !db.join("mod.rs").is_file() {
        found.push("src/db/mod.rs is missing".to_string());
    }
    for file in files.iter().filter(|f| !f.starts_with(&db)) {
        let relative = file.strip_prefix(&src).expect("under src").display();
        if has_word(&code(file), "db_error") {
            found.push(format!("{relative}: uses db_error"));
        }
        let text = fs::read_to_string(file).expect("read source");
        for literal in string_literals(&text) {
            if let Some(marker) = SQL_MARKERS.iter().find(|m| literal.contains(*m)) {
                let start: String = literal.chars().take(60).collect();
                found.push(format!("{relative}: SQL ({marker:?}) in \"{start}…\""));
            }
        }
    }
    assert!(
        found.is_empty(),
        "SQL text and db_error belong in src/db/; found outside it:\n{}",
        found.join("\n")
    );
}

#[test]
fn string_literals_are_read_outside_comments() {
    let text = r##"
        // "SELECT in a comment"
        /* "UPDATE in a block" */
        let c = '"'; let l: &'a str = "one";
        let r = r#"two "quoted""#;
        let e = "three \" four";
    "##;
    assert_eq!(
        string_literals(text),
        vec!["one", r#"two "quoted""#, r#"three \" four"#]
    );
}
