//! `TestDatabase` as an ordinary user, not only as root: run as root (as CI does), this test
//! runs its inner half again as the `postgres` OS user (through `runuser`), where the
//! cluster's server binaries run directly instead of through `runuser`.

use std::process::Command;

use anchor_testing::TestDatabase;

/// The inner half: a database, a task in it, dropped. Ignored by default; the outer test
/// runs it by name.
#[tokio::test]
#[ignore = "run by a_test_database_works_for_an_ordinary_user"]
async fn inner_a_test_database_for_this_user() {
    let db = TestDatabase::new()
        .await
        .expect("a test database as this user");
    let rows = db
        .client()
        .list_tasks(&anchor_runtime::TaskFilter::default())
        .await
        .expect("the migrated tables");
    assert!(rows.tasks.is_empty());
}

fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

#[test]
fn a_test_database_works_for_an_ordinary_user() {
    let mut exe = std::env::current_exe().expect("this test binary");
    // The checkout may sit where the other user cannot reach (root's home): run a copy of
    // this binary from a directory anyone may read.
    let copy_dir = std::env::temp_dir().join(format!("anchor-testing-user-{}", std::process::id()));
    if running_as_root() {
        use std::os::unix::fs::PermissionsExt;
        std::fs::create_dir_all(&copy_dir).expect("a directory for the copy");
        std::fs::set_permissions(&copy_dir, std::fs::Permissions::from_mode(0o755))
            .expect("chmod the copy's directory");
        let copy = copy_dir.join("ordinary_user");
        std::fs::copy(&exe, &copy).expect("copy this test binary");
        std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755))
            .expect("chmod the copy");
        exe = copy;
    }
    let mut command = if running_as_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(&exe);
        c
    } else {
        Command::new(&exe)
    };
    // The other user may not enter our working directory or write our temp directory.
    let out = command
        .args([
            "--ignored",
            "--exact",
            "inner_a_test_database_for_this_user",
        ])
        .current_dir("/")
        .env("TMPDIR", "/tmp")
        .env_remove(anchor_testing::DATABASE_URL_VAR)
        .output()
        .expect("run the inner test");
    let _ = std::fs::remove_dir_all(&copy_dir);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(text.contains("1 passed"), "{text}");
}
