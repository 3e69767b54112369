//! Comparing generated files with an output directory (`--check`) and writing them.
//!
//! The output directory belongs to the generator: any file in it that the generator would
//! not write is *extra*. `--check` reports extra files as stale; writing removes the extra
//! files that carry the generated header and leaves (and reports) any other file, because
//! deleting a hand-written file would lose work.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use crate::{Error, GeneratedFile, Result, HEADER_PREFIX};

/// How many diff lines a stale file's summary shows before it is cut short.
const MAX_DIFF_LINES: usize = 40;

/// A file whose state on disk differs from what would be generated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Difference {
    /// The path relative to the output directory, with `/` separators.
    pub path: String,
    /// How it differs.
    pub kind: DifferenceKind,
}

/// How a file on disk differs from the generated one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DifferenceKind {
    /// The file exists with other contents; `diff` is a short unified diff from the file on
    /// disk to the generated contents.
    Stale {
        /// The unified diff, at most about 40 lines.
        diff: String,
    },
    /// The generator would write this file but it does not exist.
    Missing,
    /// The file exists but the generator would not write it.
    Extra,
}

/// What [`write()`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriteReport {
    /// Files created or rewritten because their contents changed.
    pub written: Vec<String>,
    /// Files already up to date (not touched, so their modification time is kept).
    pub unchanged: Vec<String>,
    /// Previously generated files the generator no longer writes, now removed.
    pub removed: Vec<String>,
    /// Extra files without the generated header, left in place.
    pub foreign: Vec<String>,
}

/// Compares `files` with the contents of `out_dir`. An empty result means the directory is
/// up to date. Results are sorted by path.
pub fn compare(out_dir: &Path, files: &[GeneratedFile]) -> Result<Vec<Difference>> {
    let mut differences = Vec::new();
    for file in files {
        let path = out_dir.join(&file.path);
        match fs::read(&path) {
            Ok(bytes) if bytes == file.contents.as_bytes() => {}
            Ok(bytes) => differences.push(Difference {
                path: file.path.clone(),
                kind: DifferenceKind::Stale {
                    diff: short_diff(&file.path, &String::from_utf8_lossy(&bytes), &file.contents),
                },
            }),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                differences.push(Difference {
                    path: file.path.clone(),
                    kind: DifferenceKind::Missing,
                })
            }
            Err(source) => return Err(io_error(&path, source)),
        }
    }
    for extra in extra_files(out_dir, files)? {
        differences.push(Difference {
            path: extra,
            kind: DifferenceKind::Extra,
        });
    }
    differences.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(differences)
}

/// Writes `files` into `out_dir` (created if needed), rewriting only files whose contents
/// changed, and removes extra files that carry the generated header.
pub fn write(out_dir: &Path, files: &[GeneratedFile]) -> Result<WriteReport> {
    fs::create_dir_all(out_dir).map_err(|source| io_error(out_dir, source))?;
    let mut report = WriteReport::default();
    for file in files {
        let path = out_dir.join(&file.path);
        match fs::read(&path) {
            Ok(bytes) if bytes == file.contents.as_bytes() => {
                report.unchanged.push(file.path.clone());
                continue;
            }
            Ok(_) => {}
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => return Err(io_error(&path, source)),
        }
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(|source| io_error(parent, source))?;
        }
        fs::write(&path, &file.contents).map_err(|source| io_error(&path, source))?;
        report.written.push(file.path.clone());
    }
    for extra in extra_files(out_dir, files)? {
        let path = out_dir.join(&extra);
        let generated = fs::read(&path)
            .map(|bytes| bytes.starts_with(HEADER_PREFIX.as_bytes()))
            .map_err(|source| io_error(&path, source))?;
        if generated {
            fs::remove_file(&path).map_err(|source| io_error(&path, source))?;
            report.removed.push(extra);
        } else {
            report.foreign.push(extra);
        }
    }
    Ok(report)
}

/// Files under `out_dir` (recursively) that are not among `files`, sorted. A missing
/// directory has none.
fn extra_files(out_dir: &Path, files: &[GeneratedFile]) -> Result<Vec<String>> {
    let expected: BTreeSet<&str> = files.iter().map(|f| f.path.as_str()).collect();
    let mut found = Vec::new();
    if out_dir.is_dir() {
        list_files(out_dir, &mut Vec::new(), &mut found)?;
    }
    let mut extra: Vec<String> = found
        .into_iter()
        .filter(|path| !expected.contains(path.as_str()))
        .collect();
    extra.sort();
    Ok(extra)
}

/// Appends every file below `dir` to `found` as a `/`-separated path relative to the
/// directory the walk started in (`prefix` holds the components walked so far).
fn list_files(dir: &Path, prefix: &mut Vec<String>, found: &mut Vec<String>) -> Result<()> {
    let entries = fs::read_dir(dir).map_err(|source| io_error(dir, source))?;
    for entry in entries {
        let entry = entry.map_err(|source| io_error(dir, source))?;
        let path: PathBuf = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        let file_type = entry
            .file_type()
            .map_err(|source| io_error(&path, source))?;
        prefix.push(name);
        if file_type.is_dir() {
            list_files(&path, prefix, found)?;
        } else {
            found.push(prefix.join("/"));
        }
        prefix.pop();
    }
    Ok(())
}

/// A unified diff from `old` (on disk) to `new` (generated), cut to [`MAX_DIFF_LINES`].
fn short_diff(path: &str, old: &str, new: &str) -> String {
    let diff = similar::TextDiff::from_lines(old, new);
    let full = diff
        .unified_diff()
        .context_radius(2)
        .header(&format!("{path} (on disk)"), &format!("{path} (generated)"))
        .to_string();
    let lines: Vec<&str> = full.lines().collect();
    if lines.len() <= MAX_DIFF_LINES {
        return full;
    }
    let mut short = lines[..MAX_DIFF_LINES].join("\n");
    short.push_str(&format!(
        "\n... ({} more diff lines)\n",
        lines.len() - MAX_DIFF_LINES
    ));
    short
}

fn io_error(path: &Path, source: std::io::Error) -> Error {
    Error::Io {
        path: path.display().to_string(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str, contents: &str) -> GeneratedFile {
        GeneratedFile {
            path: path.into(),
            contents: contents.into(),
        }
    }

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "anchor-codegen-output-{name}-{}",
            std::process::id()
        ));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn a_missing_directory_reports_every_file_missing() {
        let dir = temp_dir("missing");
        let diffs = compare(&dir, &[file("mod.rs", "x\n")]).unwrap();
        assert_eq!(
            diffs,
            vec![Difference {
                path: "mod.rs".into(),
                kind: DifferenceKind::Missing
            }]
        );
    }

    #[test]
    fn write_then_compare_is_clean_and_rewrites_only_changes() {
        let dir = temp_dir("write");
        let files = vec![file("mod.rs", "a\n"), file("params.rs", "b\n")];
        let report = write(&dir, &files).unwrap();
        assert_eq!(report.written, vec!["mod.rs", "params.rs"]);
        assert!(compare(&dir, &files).unwrap().is_empty());

        let changed = vec![file("mod.rs", "a\n"), file("params.rs", "c\n")];
        let report = write(&dir, &changed).unwrap();
        assert_eq!(report.written, vec!["params.rs"]);
        assert_eq!(report.unchanged, vec!["mod.rs"]);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn stale_and_extra_files_are_named_with_a_diff() {
        let dir = temp_dir("stale");
        let files = vec![file("mod.rs", "one\ntwo\n")];
        write(&dir, &files).unwrap();
        fs::write(dir.join("mod.rs"), "one\nTWO\n").unwrap();
        fs::write(
            dir.join("old.rs"),
            format!("{HEADER_PREFIX}x. Do not edit.\n"),
        )
        .unwrap();
        fs::write(dir.join("notes.txt"), "mine\n").unwrap();
        let diffs = compare(&dir, &files).unwrap();
        assert_eq!(diffs.len(), 3, "{diffs:?}");
        assert_eq!(diffs[0].path, "mod.rs");
        match &diffs[0].kind {
            DifferenceKind::Stale { diff } => {
                assert!(diff.contains("-TWO"), "{diff}");
                assert!(diff.contains("+two"), "{diff}");
            }
            other => panic!("expected stale, got {other:?}"),
        }
        assert_eq!(diffs[1].path, "notes.txt");
        assert_eq!(diffs[1].kind, DifferenceKind::Extra);
        assert_eq!(diffs[2].path, "old.rs");

        // Writing removes the old generated file but keeps the hand-written one.
        let report = write(&dir, &files).unwrap();
        assert_eq!(report.removed, vec!["old.rs"]);
        assert_eq!(report.foreign, vec!["notes.txt"]);
        assert!(!dir.join("old.rs").exists());
        assert!(dir.join("notes.txt").exists());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn long_diffs_are_cut_short() {
        let old: String = (0..200).map(|i| format!("line {i}\n")).collect();
        let new: String = (0..200).map(|i| format!("LINE {i}\n")).collect();
        let diff = short_diff("params.rs", &old, &new);
        assert!(diff.lines().count() <= MAX_DIFF_LINES + 1);
        assert!(diff.contains("more diff lines"));
    }
}
