//! TLS against a cluster that accepts TLS connections only (`anchor_testkit::TestCerts`:
//! a CA made by the test, a server certificate for `localhost`, a `pg_hba.conf` that
//! rejects every non-TLS connection to a test's database): enqueue, a worker woken by
//! LISTEN, and cron, with `sslmode=require` and `verify-full`; and the errors a wrong
//! setting gets.

use std::sync::OnceLock;
use std::time::Duration;

use anchor_runtime::{
    Client, ConnectOptions, CronDefaults, ErrorKind, Registry, TaskContext, TaskDefinition,
    TaskError, TaskStatus, Worker, WorkerConfig,
};
use anchor_testkit::{Cluster, TestCerts, CERT_USER};
use anyhow::{ensure, Context, Result};

use crate::harness::{count, init_tracing, wait_for, wait_for_status};

static PING: TaskDefinition = TaskDefinition {
    name: "Ping",
    retry: None,
    timeout_ms: 10_000,
    cron: None,
    on_failed: None,
    default_params: "{}",
    max_rescues: None,
    queue: "default",
    priority: 0,
};

static TICK: TaskDefinition = TaskDefinition {
    name: "TlsTick",
    retry: None,
    timeout_ms: 10_000,
    cron: Some(CronDefaults {
        expression: "*/1 * * * * *",
        timezone: None,
        default_params: Some("{}"),
    }),
    on_failed: None,
    default_params: "{}",
    max_rescues: None,
    queue: "default",
    priority: 0,
};

struct TlsCluster {
    certs: TestCerts,
    cluster: Cluster,
}

/// The TLS-only cluster of this test binary, started on first use.
fn tls_cluster() -> &'static TlsCluster {
    static CLUSTER: OnceLock<TlsCluster> = OnceLock::new();
    CLUSTER.get_or_init(|| {
        let certs = TestCerts::generate().expect("test certificates");
        let cluster = Cluster::builder().tls_only(&certs).start();
        TlsCluster { certs, cluster }
    })
}

/// A fresh database in the TLS cluster; its URL (host `localhost`) without TLS settings.
async fn tls_database() -> Result<String> {
    init_tracing();
    Ok(tls_cluster().cluster.create_database("tls").await?.url)
}

fn with_params(url: &str, params: &str) -> String {
    format!("{url}?{params}")
}

/// Two tasks enqueued one after the other run, though the worker polls once a minute:
/// the first may be found by the worker's first claim, the second only through its LISTEN
/// connection (a notification, or the wake-up every successful LISTEN connect gives).
async fn two_tasks_run(client: &Client) -> Result<()> {
    for _ in 0..2 {
        let id = client.enqueue(&PING, &serde_json::json!({}), &[]).await?;
        wait_for_status(client, id, TaskStatus::Completed, Duration::from_secs(20)).await?;
    }
    Ok(())
}

/// Enqueue from one client, a worker on another (so the task reaches it by NOTIFY on its
/// LISTEN connection, not by local dispatch; its poll is a minute), and a cron task the
/// worker schedules: everything over TLS.
async fn enqueue_work_and_cron(url: &str) -> Result<()> {
    let client = Client::connect(url).await?;
    anchor_runtime::migrate(&client).await?;
    let mut registry = Registry::new();
    for def in [&PING, &TICK] {
        registry.register(def, |_ctx: TaskContext, _p: serde_json::Value| async {
            Ok::<(), TaskError>(())
        });
    }
    let config = WorkerConfig::default()
        .with_poll_interval(Duration::from_secs(60))
        .with_shutdown_grace(Duration::from_secs(5));
    let worker = Worker::new(Client::connect(url).await?, registry, config)?.start();
    two_tasks_run(&client).await?;
    wait_for(
        "two cron occurrences to run",
        Duration::from_secs(30),
        || async {
            let done = count(&client, "name = 'TlsTick' AND status = 2").await?;
            Ok((done >= 2).then_some(()))
        },
    )
    .await?;
    // Every connection to this database is encrypted (the server allows nothing else;
    // this says the runtime did not merely fail over to something else).
    let conn = client.pool().get().await?;
    let row = conn
        .query_one(
            "SELECT count(*) FILTER (WHERE s.ssl), count(*) FILTER (WHERE NOT s.ssl) \
             FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) \
             WHERE a.datname = current_database()",
            &[],
        )
        .await?;
    let (encrypted, plain): (i64, i64) = (row.get(0), row.get(1));
    ensure!(
        encrypted >= 2 && plain == 0,
        "{encrypted} TLS and {plain} plain connections"
    );
    drop(conn);
    worker.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn require_runs_enqueue_worker_listen_and_cron_over_tls() -> Result<()> {
    let url = tls_database().await?;
    enqueue_work_and_cron(&with_params(&url, "sslmode=require")).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_full_runs_enqueue_worker_listen_and_cron_over_tls() -> Result<()> {
    let url = tls_database().await?;
    let ca = tls_cluster().certs.ca.display().to_string();
    let params = format!("sslmode=verify-full&sslrootcert={ca}");
    enqueue_work_and_cron(&with_params(&url, &params)).await
}

#[tokio::test]
async fn the_default_prefer_uses_tls_when_the_server_offers_it() -> Result<()> {
    let url = tls_database().await?;
    let client = Client::connect(&url).await?;
    let conn = client.pool().get().await?;
    let row = conn
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await?;
    ensure!(row.get::<_, bool>(0), "not encrypted");
    Ok(())
}

/// The error of the first operation on a client for `url`, as text.
async fn first_error(url: &str) -> Result<String> {
    let client = Client::connect(url).await?;
    match anchor_runtime::migrate(&client).await {
        Ok(_) => anyhow::bail!("connected with {url}"),
        Err(err) => Ok(err.to_string()),
    }
}

#[tokio::test]
async fn a_plain_connection_to_a_tls_only_server_says_to_turn_tls_on() -> Result<()> {
    let url = tls_database().await?;
    let text = first_error(&with_params(&url, "sslmode=disable")).await?;
    ensure!(text.contains("set sslmode=require"), "{text}");
    Ok(())
}

#[tokio::test]
async fn a_certificate_from_another_ca_is_not_trusted() -> Result<()> {
    let url = tls_database().await?;
    let other = tls_cluster().certs.other_ca.display().to_string();
    for mode in ["verify-full", "verify-ca", "require"] {
        let text = first_error(&with_params(
            &url,
            &format!("sslmode={mode}&sslrootcert={other}"),
        ))
        .await?;
        ensure!(
            text.contains(&format!(
                "not signed by a CA that sslrootcert={other} trusts"
            )),
            "{mode}: {text}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn verify_full_checks_the_host_name_and_verify_ca_does_not() -> Result<()> {
    let url = tls_database().await?;
    // The certificate names `localhost`; connect by address.
    let by_address = url.replace("@localhost:", "@127.0.0.1:");
    ensure!(by_address != url, "unexpected URL {url}");
    let ca = tls_cluster().certs.ca.display().to_string();
    let text = first_error(&with_params(
        &by_address,
        &format!("sslmode=verify-full&sslrootcert={ca}"),
    ))
    .await?;
    ensure!(
        text.contains("does not name the host connected to"),
        "{text}"
    );
    ensure!(
        text.contains("127.0.0.1"),
        "the error names the host: {text}"
    );
    let client = Client::connect(&with_params(
        &by_address,
        &format!("sslmode=verify-ca&sslrootcert={ca}"),
    ))
    .await?;
    anchor_runtime::migrate(&client)
        .await
        .context("verify-ca by address")?;
    Ok(())
}

#[tokio::test]
async fn require_against_a_server_without_tls_says_so() -> Result<()> {
    // The shared cluster of this binary has TLS off.
    let url = crate::harness::shared_cluster()
        .create_database("notls")
        .await?
        .url;
    let text = first_error(&with_params(&url, "sslmode=require")).await?;
    ensure!(text.contains("the server does not offer TLS"), "{text}");
    Ok(())
}

#[tokio::test]
async fn a_client_certificate_logs_in_and_its_absence_is_refused() -> Result<()> {
    let url = tls_database().await?;
    let cluster = tls_cluster();
    cluster
        .cluster
        .admin_execute(&format!(
            "DO $$ BEGIN CREATE ROLE {CERT_USER} LOGIN SUPERUSER; \
             EXCEPTION WHEN duplicate_object THEN NULL; END $$"
        ))
        .await?;
    // The same database as CERT_USER, who has no password: the certificate is the login.
    let (_, rest) = url.split_once('@').context("URL has no user")?;
    let as_cert_user = format!("postgresql://{CERT_USER}@{rest}");
    let certs = &cluster.certs;
    let params = format!(
        "sslmode=verify-full&sslrootcert={}&sslcert={}&sslkey={}",
        certs.ca.display(),
        certs.client_cert.display(),
        certs.client_key.display()
    );
    let client = Client::connect(&with_params(&as_cert_user, &params)).await?;
    anchor_runtime::migrate(&client)
        .await
        .context("login by certificate")?;
    let params = format!("sslmode=verify-full&sslrootcert={}", certs.ca.display());
    let text = first_error(&with_params(&as_cert_user, &params)).await?;
    ensure!(text.contains("certificate"), "{text}");
    Ok(())
}

#[tokio::test]
async fn bad_files_fail_at_connect_naming_the_setting() -> Result<()> {
    let err = ConnectOptions::from_url(
        "postgres://localhost/db?sslmode=verify-full&sslrootcert=/nonexistent/ca.crt",
    )
    .unwrap_err();
    ensure!(err.kind() == ErrorKind::Config);
    ensure!(
        err.to_string().contains("sslrootcert=/nonexistent/ca.crt"),
        "{err}"
    );
    // A key file that is not a key.
    let certs = &tls_cluster().certs;
    let url = format!(
        "postgres://localhost/db?sslcert={}&sslkey={}",
        certs.client_cert.display(),
        certs.ca.display()
    );
    let err = Client::connect(&url).await.unwrap_err();
    ensure!(
        err.to_string().contains("holds no unencrypted private key"),
        "{err}"
    );
    Ok(())
}

#[tokio::test]
async fn a_client_from_a_users_pool_listens_over_tls_too() -> Result<()> {
    use anchor_runtime::deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
    let url = tls_database().await?;
    let ca = tls_cluster().certs.ca.display().to_string();
    let options = ConnectOptions::from_url(&with_params(
        &url,
        &format!("sslmode=verify-full&sslrootcert={ca}"),
    ))?;
    let manager = Manager::from_config(
        options.postgres_config().clone(),
        options.tls(),
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    let pool = Pool::builder(manager).max_size(8).build()?;
    let client = Client::from_pool(pool).with_listen_options(options);
    anchor_runtime::migrate(&client).await?;
    let mut registry = Registry::new();
    registry.register(&PING, |_ctx: TaskContext, _p: serde_json::Value| async {
        Ok::<(), TaskError>(())
    });
    let config = WorkerConfig::default()
        .with_poll_interval(Duration::from_secs(60))
        .with_local_dispatch(false);
    let worker = Worker::new(client.clone(), registry, config)?.start();
    two_tasks_run(&client).await?;
    worker.shutdown().await;
    Ok(())
}
