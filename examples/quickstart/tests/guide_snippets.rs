//! Every code block in docs/guide.md and docs/testing.md that is marked
//! `<!-- snippet: FILE#REGION -->` is exactly the region `ANCHOR: REGION` …
//! `ANCHOR_END: REGION` of FILE, which the quickstart or an example compiles (Rust) or
//! generates from (YAML). So the docs never show code that does not build.
//!
//! After changing a region, refresh the guide with
//! `UPDATE_GUIDE=1 cargo test -p quickstart --test guide_snippets` and review the diff.

use std::fs;
use std::path::{Path, PathBuf};

/// Each checked page, and the fewest snippets it must quote (a page that lost its markers
/// would otherwise pass).
const PAGES: &[(&str, usize)] = &[("docs/guide.md", 10), ("docs/testing.md", 4)];
const MARKER: &str = "<!-- snippet: ";

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The lines between `ANCHOR: name` and `ANCHOR_END: name` in `file`, with their common
/// indentation removed.
fn region(file: &str, name: &str) -> Result<String, String> {
    let text = fs::read_to_string(repo_root().join(file)).map_err(|e| format!("{file}: {e}"))?;
    let is_marker = |line: &str, kind: &str| {
        let t = line.trim_start();
        let body = t
            .strip_prefix("//")
            .or_else(|| t.strip_prefix('#'))
            .map(str::trim);
        body == Some(&format!("{kind}: {name}")[..])
    };
    let lines: Vec<&str> = text.lines().collect();
    let start = lines
        .iter()
        .position(|l| is_marker(l, "ANCHOR"))
        .ok_or_else(|| format!("{file}: no `ANCHOR: {name}`"))?;
    let len = lines[start + 1..]
        .iter()
        .position(|l| is_marker(l, "ANCHOR_END"))
        .ok_or_else(|| format!("{file}: no `ANCHOR_END: {name}`"))?;
    let body = &lines[start + 1..start + 1 + len];
    let indent = body
        .iter()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.len() - l.trim_start().len())
        .min()
        .unwrap_or(0);
    Ok(body
        .iter()
        .map(|l| {
            if l.len() >= indent {
                &l[indent..]
            } else {
                l.trim_start()
            }
        })
        .collect::<Vec<_>>()
        .join("\n"))
}

#[test]
fn guide_snippets_match_the_quickstart() {
    for &(page, at_least) in PAGES {
        check_page(page, at_least);
    }
}

/// Checks (or with `UPDATE_GUIDE` refreshes) the snippets of one page.
fn check_page(page: &str, at_least: usize) {
    let path = repo_root().join(page);
    let guide = fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {page}: {e}"));
    let lines: Vec<&str> = guide.lines().collect();
    let mut out: Vec<String> = Vec::new();
    let mut problems = Vec::new();
    let mut checked = 0;
    let mut i = 0;
    while i < lines.len() {
        out.push(lines[i].to_string());
        let Some(target) = lines[i]
            .trim()
            .strip_prefix(MARKER)
            .and_then(|rest| rest.strip_suffix("-->"))
        else {
            i += 1;
            continue;
        };
        let target = target.trim();
        let line_no = i + 1;
        let (file, name) = target
            .split_once('#')
            .unwrap_or_else(|| panic!("{page}:{line_no}: expected FILE#REGION, got {target}"));
        let fence = lines.get(i + 1).copied().unwrap_or("");
        assert!(
            fence.starts_with("```"),
            "{page}:{line_no}: the snippet marker must be followed by a ``` block"
        );
        let end = lines[i + 2..]
            .iter()
            .position(|l| l.trim_end() == "```")
            .map(|p| i + 2 + p)
            .unwrap_or_else(|| panic!("{page}:{line_no}: unclosed code block"));
        let shown = lines[i + 2..end].join("\n");
        match region(file, name) {
            Ok(expected) => {
                checked += 1;
                if shown != expected {
                    problems.push(format!(
                        "{page}:{line_no}: the block differs from {file}#{name}; expected:\n{expected}\n"
                    ));
                }
                out.push(fence.to_string());
                out.extend(expected.lines().map(str::to_string));
            }
            Err(err) => {
                problems.push(format!("{page}:{line_no}: {err}"));
                out.extend(lines[i + 1..end].iter().map(|l| l.to_string()));
            }
        }
        out.push("```".to_string());
        i = end + 1;
    }
    assert!(
        checked >= at_least,
        "expected {page} to quote at least {at_least} snippets, found {checked}"
    );
    if !problems.is_empty() && std::env::var_os("UPDATE_GUIDE").is_some() {
        let mut text = out.join("\n");
        text.push('\n');
        fs::write(&path, text).unwrap_or_else(|e| panic!("write {page}: {e}"));
        eprintln!("updated {page}; review the diff");
        return;
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
