//! The quickstart against a PostgreSQL that accepts TLS connections only (a CA and server
//! certificate made by the test, `pg_hba.conf` rejecting plain connections): it runs end to
//! end with `DATABASE_URL=…?sslmode=require` and with
//! `…?sslmode=verify-full&sslrootcert=<CA file>`, as a team on a managed database would
//! run it.

use std::process::Command;

use anchor_testkit::{Cluster, TestCerts};

fn run_quickstart(url: &str) {
    let output = Command::new(env!("CARGO_BIN_EXE_quickstart"))
        .env("DATABASE_URL", url)
        .output()
        .expect("run the quickstart binary");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && stdout.contains("All features behaved as described"),
        "quickstart with {url} exited with {:?}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        output.status
    );
    assert!(!stdout.contains('✘'), "a feature failed:\n{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quickstart_runs_against_a_tls_only_server() {
    let certs = TestCerts::generate().expect("test certificates");
    let cluster = Cluster::builder().tls_only(&certs).start();
    let require = cluster
        .create_database("qs_require")
        .await
        .expect("database");
    let verify = cluster
        .create_database("qs_verify")
        .await
        .expect("database");
    // Without TLS the server refuses the quickstart, so the runs below prove TLS.
    let plain = Command::new(env!("CARGO_BIN_EXE_quickstart"))
        .env("DATABASE_URL", format!("{}?sslmode=disable", require.url))
        .output()
        .expect("run the quickstart binary");
    let stderr = String::from_utf8_lossy(&plain.stderr);
    assert!(
        !plain.status.success() && stderr.contains("set sslmode=require"),
        "a plain connection was not refused with advice: {stderr}"
    );
    let ca = certs.ca.display().to_string();
    tokio::task::spawn_blocking(move || {
        run_quickstart(&format!("{}?sslmode=require", require.url));
        run_quickstart(&format!(
            "{}?sslmode=verify-full&sslrootcert={ca}",
            verify.url
        ));
    })
    .await
    .expect("the quickstart runs");
}
