//! Runs the built `anchor` binary: `anchor validate` and `anchor cron` exit codes and output.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn anchor(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_anchor"))
        .args(args)
        .current_dir(repo_root())
        .output()
        .expect("the anchor binary runs")
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn valid_fixtures() -> Vec<String> {
    let mut files: Vec<String> = std::fs::read_dir(repo_root().join("testdata/valid"))
        .expect("testdata/valid")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .map(|p| {
            format!(
                "testdata/valid/{}",
                p.file_name().and_then(|n| n.to_str()).unwrap_or_default()
            )
        })
        .collect();
    files.sort();
    files
}

#[test]
fn validate_accepts_every_seed_example() {
    let files = valid_fixtures();
    let args: Vec<&str> = std::iter::once("validate")
        .chain(files.iter().map(String::as_str))
        .collect();
    let out = anchor(&args);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(!stderr.contains(": error:"), "{stderr}");
    assert!(
        stderr.contains(&format!("checked {} files: 2 warnings", files.len())),
        "{stderr}"
    );
}

#[test]
fn validate_deny_warnings_fails_on_warnings() {
    let out = anchor(&[
        "validate",
        "--deny-warnings",
        "testdata/valid/daily-reports.yaml",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let out = anchor(&[
        "validate",
        "--deny-warnings",
        "testdata/valid/send-email.yaml",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
}

#[test]
fn validate_reports_all_files_with_positions() {
    let out = anchor(&[
        "validate",
        "testdata/invalid/unknown-task-key.yaml",
        "testdata/invalid/bad-timeout.yaml",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("testdata/invalid/unknown-task-key.yaml:4:5: error: unknown key `timout` in task `SendEmail`"),
        "{stderr}"
    );
    assert!(
        stderr.contains("4 |     timout: 5m\n  |     ^^^^^^\n  = hint: did you mean `timeout`?"),
        "{stderr}"
    );
    assert!(
        stderr.contains("testdata/invalid/bad-timeout.yaml:3:14: error:"),
        "{stderr}"
    );
    assert!(stderr.contains("checked 2 files: 9 errors"), "{stderr}");
}

#[test]
fn validate_every_invalid_fixture_fails() {
    let dir = repo_root().join("testdata/invalid");
    for entry in std::fs::read_dir(&dir).expect("testdata/invalid") {
        let path = entry.expect("entry").path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_string();
        let file = format!("testdata/invalid/{name}");
        let out = anchor(&["validate", "--deny-warnings", &file]);
        assert_eq!(out.status.code(), Some(1), "{file}: {}", text(&out.stderr));
        assert!(
            text(&out.stderr).starts_with(&format!("{file}:")),
            "{file}: {}",
            text(&out.stderr)
        );
    }
}

#[test]
fn validate_missing_file_exits_2_but_checks_the_rest() {
    let out = anchor(&[
        "validate",
        "does-not-exist.yaml",
        "testdata/invalid/bad-timezone.yaml",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("error: cannot read does-not-exist.yaml"),
        "{stderr}"
    );
    assert!(
        stderr.contains("bad-timezone.yaml:5:17: error: unknown time zone `Europe/Berln`"),
        "{stderr}"
    );
}

#[test]
fn validate_defaults_to_api_tasks_yaml() {
    let dir = std::env::temp_dir().join(format!("anchor-cli-test-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("api")).expect("temp dir");
    std::fs::write(dir.join("api/tasks.yaml"), "tasks:\n  - name: A\n").expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_anchor"))
        .arg("validate")
        .current_dir(&dir)
        .output()
        .expect("runs");
    std::fs::remove_dir_all(&dir).ok();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("checked 1 file: no problems"));
}

#[test]
fn validate_json_format() {
    let out = anchor(&[
        "validate",
        "--format",
        "json",
        "testdata/invalid/on-failed-missing-task.yaml",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let value: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    let list = value.as_array().expect("an array");
    assert_eq!(list.len(), 1);
    assert_eq!(
        list[0]["file"],
        "testdata/invalid/on-failed-missing-task.yaml"
    );
    assert_eq!(list[0]["line"], 4);
    assert_eq!(list[0]["column"], 17);
    assert_eq!(list[0]["severity"], "error");
    assert_eq!(list[0]["hint"], "did you mean `HandleOrderFailure`?");
    let clean = anchor(&[
        "validate",
        "--format",
        "json",
        "testdata/valid/send-email.yaml",
    ]);
    assert_eq!(clean.status.code(), Some(0));
    assert_eq!(text(&clean.stdout).trim(), "[]");
}

#[test]
fn validate_bad_flag_is_a_usage_error() {
    let out = anchor(&["validate", "--format", "xml"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn cron_prints_next_times_in_utc() {
    let out = anchor(&[
        "cron",
        "0 9 * * MON-FRI",
        "--from",
        "2024-03-01T12:00:00Z",
        "--count",
        "3",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "2024-03-04T09:00:00Z\n2024-03-05T09:00:00Z\n2024-03-06T09:00:00Z\n"
    );
}

#[test]
fn cron_go_semantics() {
    // Sunday is 0 or 7.
    for dow in ["0", "7", "SUN"] {
        let expr = format!("0 0 * * {dow}");
        let out = anchor(&["cron", &expr, "--from", "2024-03-01T00:00:00Z", "-n", "1"]);
        assert_eq!(text(&out.stdout), "2024-03-03T00:00:00Z\n", "{expr}");
    }
    // Day-of-month OR day-of-week when both are restricted.
    let out = anchor(&[
        "cron",
        "0 0 15 * MON",
        "--from",
        "2024-03-09T00:00:00Z",
        "-n",
        "3",
    ]);
    assert_eq!(
        text(&out.stdout),
        "2024-03-11T00:00:00Z\n2024-03-15T00:00:00Z\n2024-03-18T00:00:00Z\n"
    );
    // Six fields: seconds first.
    let out = anchor(&[
        "cron",
        "*/30 * * * * *",
        "--from",
        "2024-03-09T00:00:00Z",
        "-n",
        "2",
    ]);
    assert_eq!(
        text(&out.stdout),
        "2024-03-09T00:00:30Z\n2024-03-09T00:01:00Z\n"
    );
}

#[test]
fn cron_timezone() {
    let out = anchor(&[
        "cron",
        "0 9 * * *",
        "--timezone",
        "America/New_York",
        "--from",
        "2024-03-09T00:00:00Z",
        "-n",
        "2",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    // 09:00 EST, then 09:00 EDT after the 10 March switch.
    assert_eq!(
        text(&out.stdout),
        "2024-03-09T14:00:00Z\n2024-03-10T13:00:00Z\n"
    );
}

#[test]
fn cron_invalid_expression_exits_1_with_reason() {
    let out = anchor(&["cron", "0 25 * * *"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("25 is out of range for the hour field; allowed: 0-23"),
        "{stderr}"
    );
    assert!(stderr.contains("  0 25 * * *\n    ^^\n"), "{stderr}");
    assert!(out.stdout.is_empty());
}

#[test]
fn cron_bad_options_exit_2() {
    let out = anchor(&["cron", "* * * * *", "--timezone", "Europe/Berln"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("did you mean `Europe/Berlin`?"));
    let out = anchor(&["cron", "* * * * *", "--from", "yesterday"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("RFC 3339"));
    let out = anchor(&["cron"]);
    assert_eq!(out.status.code(), Some(2));
}
