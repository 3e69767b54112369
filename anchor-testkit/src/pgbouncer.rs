//! A PgBouncer in front of a test [`Cluster`], in transaction pooling mode: each
//! transaction (or statement outside one) may run on a different server connection, so
//! session state — named prepared statements, `LISTEN` — does not carry over.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::{fail, Cluster, Result};

/// A running PgBouncer, stopped (and its directory removed) when dropped.
#[derive(Debug)]
pub struct PgBouncer {
    child: Child,
    dir: PathBuf,
    port: u16,
    user: String,
    password: String,
}

impl PgBouncer {
    /// Starts PgBouncer (`pgbouncer` on `PATH` or in `/usr/sbin`) in transaction pooling
    /// mode in front of `cluster`, with at most `server_connections` server connections
    /// per database, and waits until it accepts connections. As root it runs as the
    /// `postgres` OS user (PgBouncer refuses to run as root).
    pub fn start_transaction_mode(cluster: &Cluster, server_connections: u32) -> Result<PgBouncer> {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "anchor-pgbouncer-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)
            .map_err(|e| crate::Error(format!("cannot create {}: {e}", dir.display())))?;
        let port = free_port()?;
        let (user, password) = (cluster.db_user(), cluster.db_password());
        let ini = format!(
            "[databases]\n\
             * = host=127.0.0.1 port={server_port}\n\
             [pgbouncer]\n\
             listen_addr = 127.0.0.1\n\
             listen_port = {port}\n\
             unix_socket_dir =\n\
             auth_type = plain\n\
             auth_file = {dir}/userlist.txt\n\
             pool_mode = transaction\n\
             default_pool_size = {server_connections}\n\
             max_client_conn = 500\n\
             server_reset_query =\n\
             logfile = {dir}/pgbouncer.log\n\
             pidfile = {dir}/pgbouncer.pid\n",
            server_port = cluster.port(),
            dir = dir.display(),
        );
        std::fs::write(dir.join("pgbouncer.ini"), ini)
            .and_then(|()| {
                std::fs::write(
                    dir.join("userlist.txt"),
                    format!("\"{user}\" \"{password}\"\n"),
                )
            })
            .map_err(|e| crate::Error(format!("cannot write PgBouncer's files: {e}")))?;
        if crate::is_root() {
            // The server's OS user runs PgBouncer: it must own its directory.
            let status = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&dir)
                .status()
                .map_err(|e| crate::Error(format!("cannot run chown: {e}")))?;
            if !status.success() {
                return fail(format!("chown of {} failed", dir.display()));
            }
        }
        let binary = ["/usr/sbin/pgbouncer", "/usr/bin/pgbouncer"]
            .into_iter()
            .find(|p| std::path::Path::new(p).is_file())
            .unwrap_or("pgbouncer");
        let mut command = if crate::is_root() {
            let mut c = Command::new("sudo");
            c.args(["-u", "postgres", binary]);
            c
        } else {
            Command::new(binary)
        };
        let child = command
            .arg(dir.join("pgbouncer.ini"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| {
                crate::Error(format!(
                    "cannot start pgbouncer ({e}); install it (apt-get install pgbouncer)"
                ))
            })?;
        let bouncer = PgBouncer {
            child,
            dir,
            port,
            user,
            password,
        };
        bouncer.spawn_watchdog();
        bouncer.wait_listening()?;
        Ok(bouncer)
    }

    /// The URL of database `name` through PgBouncer.
    pub fn url(&self, name: &str) -> String {
        format!(
            "postgresql://{}:{}@127.0.0.1:{}/{}",
            self.user, self.password, self.port, name
        )
    }

    /// Stops PgBouncer when the test binary exits without dropping it (a `static`).
    fn spawn_watchdog(&self) {
        crate::on_exit(&format!(
            "kill {child} 2>/dev/null; sleep 1; rm -rf '{dir}'",
            child = self.child.id(),
            dir = self.dir.display(),
        ));
    }

    fn wait_listening(&self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let log = std::fs::read_to_string(self.dir.join("pgbouncer.log")).unwrap_or_default();
        fail(format!(
            "PgBouncer did not listen on port {} within 20 s: {log}",
            self.port
        ))
    }
}

impl Drop for PgBouncer {
    fn drop(&mut self) {
        // sudo passes SIGTERM on to PgBouncer, which then exits.
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A TCP port nothing listens on now (the OS picks it).
fn free_port() -> Result<u16> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| crate::Error(format!("cannot find a free port: {e}")))
}
