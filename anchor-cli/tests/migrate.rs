//! `anchor migrate` against a PostgreSQL that accepts TLS connections only: it applies the
//! migrations with `sslmode=verify-full` (and `PGSSLMODE` in the environment), reports the
//! schema up to date the second time, and a wrong setting fails with exit code 1 and the
//! setting to change.

use std::process::{Command, Output};

use anchor_testkit::{Cluster, TestCerts};

fn migrate(url: &str, envs: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_anchor"))
        .args(["migrate", "--database-url", url])
        .env_remove("DATABASE_URL")
        .env_remove("PGSSLMODE")
        .env_remove("PGSSLROOTCERT")
        .envs(envs.iter().copied())
        .output()
        .expect("run anchor migrate")
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_connects_over_tls_and_says_which_setting_is_wrong() {
    let certs = TestCerts::generate().expect("test certificates");
    let cluster = Cluster::builder().tls_only(&certs).start();
    let db = cluster.create_database("cli_tls").await.expect("database");
    let ca = certs.ca.display().to_string();
    let verified = format!("{}?sslmode=verify-full&sslrootcert={ca}", db.url);

    let first = migrate(&verified, &[]);
    assert!(first.status.success(), "{}", text(&first));
    assert!(text(&first).contains("applied V1"), "{}", text(&first));
    // The same settings from the environment.
    let again = migrate(
        &db.url,
        &[("PGSSLMODE", "verify-full"), ("PGSSLROOTCERT", &ca)],
    );
    assert!(again.status.success(), "{}", text(&again));
    assert!(text(&again).contains("is up to date"), "{}", text(&again));

    let other = certs.other_ca.display().to_string();
    let wrong_ca = migrate(
        &format!("{}?sslmode=verify-full&sslrootcert={other}", db.url),
        &[],
    );
    assert_eq!(wrong_ca.status.code(), Some(1), "{}", text(&wrong_ca));
    assert!(
        text(&wrong_ca).contains("not signed by a CA"),
        "{}",
        text(&wrong_ca)
    );
    let plain = migrate(&format!("{}?sslmode=disable", db.url), &[]);
    assert_eq!(plain.status.code(), Some(1), "{}", text(&plain));
    assert!(
        text(&plain).contains("set sslmode=require"),
        "{}",
        text(&plain)
    );
    let missing = migrate(
        &format!("{}?sslmode=verify-full", db.url),
        &[("HOME", "/nonexistent")],
    );
    assert!(!missing.status.success());
    assert!(
        text(&missing).contains("set sslrootcert="),
        "{}",
        text(&missing)
    );
}
