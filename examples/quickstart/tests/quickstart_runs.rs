//! `cargo run -p quickstart` — the README's first command — runs every feature and exits 0.
//!
//! It runs the real binary with `DATABASE_URL` unset, so it also proves the embedded default:
//! a throwaway cluster started from the machine's server binaries (through `runuser` when the
//! tests run as root) and removed afterwards.

use std::process::Command;

#[test]
fn quickstart_shows_every_feature_and_exits_0() {
    let output = Command::new(env!("CARGO_BIN_EXE_quickstart"))
        .env_remove("DATABASE_URL")
        .output()
        .expect("run the quickstart binary");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "quickstart exited with {:?}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        output.status
    );
    for feature in [
        "✔ enqueue from a handler:",
        "✔ transactional enqueue:",
        "✔ unique tag:",
        "✔ retry without error event:",
        "✔ retries with backoff:",
        "✔ fatal error + onFailed handler:",
        "✔ onFailed handler with its own parameters:",
        "✔ timeout:",
        "✔ cron:",
        "All features behaved as described",
    ] {
        assert!(
            stdout.contains(feature),
            "missing {feature:?} in:\n{stdout}"
        );
    }
    assert!(!stdout.contains('✘'), "a feature failed:\n{stdout}");
    // The summary table lists the rolled-back task as absent.
    assert!(stdout.contains("its transaction rolled back"), "{stdout}");
    // The throwaway cluster's directory is gone: the line names its URL, and no directory
    // the quickstart creates is left behind for that port.
    let leftovers: Vec<_> = std::fs::read_dir(std::env::temp_dir())
        .expect("list the temp dir")
        .filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("anchor-quickstart.")
        })
        .filter(|e| {
            std::fs::read_to_string(e.path().join("data/postgresql.conf"))
                .map(|conf| {
                    let port = stdout
                        .split("127.0.0.1:")
                        .nth(1)
                        .and_then(|rest| rest.split('/').next())
                        .unwrap_or("");
                    conf.contains(&format!("port = {port}\n"))
                })
                .unwrap_or(false)
        })
        .collect();
    assert!(leftovers.is_empty(), "left behind: {leftovers:?}");
}
