//! [`TestCluster`]: a throwaway PostgreSQL cluster from the server binaries on the machine.
//!
//! It uses the server binaries already on the machine (`initdb`, `pg_ctl`, found on `PATH`
//! or under `/usr/lib/postgresql/*/bin`), creates a cluster with trust authentication in a
//! fresh temporary directory, starts it on a free port of 127.0.0.1 and removes everything
//! again when the [`TestCluster`] is dropped — on a normal exit, an error, a panic that
//! unwinds, or Ctrl-C (when the caller turns the signal into an ordinary return); a watchdog
//! process removes it when the process ends without dropping it (a `static`, SIGKILL).
//!
//! PostgreSQL refuses to run as root. Run as root, the cluster belongs to the `postgres` OS
//! user and the server commands run through `runuser -u postgres --` (util-linux, present on
//! every Linux machine, unlike `sudo`); run as anyone else, they run directly.

use std::fs;
use std::io::Write;
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use crate::Error;

type Result<T, E = Error> = std::result::Result<T, E>;

/// Fails with `message`.
macro_rules! bail {
    ($($arg:tt)*) => {
        return Err(Error::new(format!($($arg)*)))
    };
}

/// Adds what was being done to an I/O error.
trait Context<T> {
    fn context(self, what: &str) -> Result<T>;
    fn with_context(self, what: impl FnOnce() -> String) -> Result<T>;
}

impl<T, E: std::fmt::Display> Context<T> for std::result::Result<T, E> {
    fn context(self, what: &str) -> Result<T> {
        self.map_err(|err| Error::new(format!("{what}: {err}")))
    }
    fn with_context(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|err| Error::new(format!("{}: {err}", what())))
    }
}

/// A running throwaway cluster; dropping it stops the server and deletes its directory.
///
/// ```no_run
/// let cluster = anchor_testing::TestCluster::start()?;
/// println!("connect to {}", cluster.url());
/// # Ok::<(), anchor_testing::Error>(())
/// ```
pub struct TestCluster {
    bin_dir: PathBuf,
    root: PathBuf,
    data_dir: PathBuf,
    run_as_postgres: bool,
    url: String,
    stopped: bool,
}

impl TestCluster {
    /// Creates and starts a cluster; the error says what to install when no server is found.
    /// It blocks while `initdb` and the server start (a second or two): from async code, call
    /// it through `tokio::task::spawn_blocking` or `block_in_place`.
    pub fn start() -> Result<TestCluster> {
        let bin_dir = find_server_binaries().ok_or_else(|| {
            Error::new(
                "no PostgreSQL server binaries found (looked for `initdb` and `pg_ctl` on PATH \
                 and in /usr/lib/postgresql/*/bin).\n\
                 Either install the server, e.g. `apt-get install postgresql` (Debian/Ubuntu), \
                 `dnf install postgresql-server` (Fedora) or `brew install postgresql` (macOS),\n\
                 or use a database server you have (for anchor_testing::TestDatabase: \
                 ANCHOR_TEST_DATABASE_URL=postgres://user:password@localhost:5432/postgres).",
            )
        })?;
        let run_as_postgres = running_as_root();
        if run_as_postgres && !user_exists("postgres") {
            bail!(
                "running as root, but PostgreSQL refuses to run as root and there is no \
                 `postgres` OS user to run it as.\n\
                 Create one (`useradd --system postgres`; installing the server package usually \
                 does), run as an ordinary user, or use a database server you have."
            );
        }
        let root = make_temp_dir(run_as_postgres)?;
        // From here on the directory exists, so a failure must still remove it: build the
        // guard first and let its `Drop` clean up whatever step fails.
        let mut cluster = TestCluster {
            data_dir: root.join("data"),
            bin_dir,
            root,
            run_as_postgres,
            url: String::new(),
            stopped: true,
        };
        cluster.init_and_start()?;
        Ok(cluster)
    }

    /// The URL to connect with, e.g. `postgres://postgres@127.0.0.1:40123/postgres`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The URL of database `name` on this cluster.
    pub fn url_for(&self, name: &str) -> String {
        match self.url.rsplit_once('/') {
            Some((server, _)) => format!("{server}/{name}"),
            None => self.url.clone(),
        }
    }

    /// Where the server binaries were found, for the user's information.
    pub fn bin_dir(&self) -> &Path {
        &self.bin_dir
    }

    fn init_and_start(&mut self) -> Result<()> {
        let data = self.data_dir.to_string_lossy().into_owned();
        let out = self.server_command(
            "initdb",
            &[
                "-D",
                &data,
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--no-locale",
                "--no-sync",
            ],
        )?;
        if !out.status.success() {
            bail!("initdb failed:\n{}", output_text(&out));
        }

        let port = free_port()?;
        // Appending keeps the file's owner (the `postgres` user when run as root). Durability
        // settings are off because the cluster is deleted when its owner ends. Many tests
        // in parallel each hold a pool: allow plenty of connections.
        let settings = format!(
            "\n# Added by anchor-testing for a throwaway cluster.\n\
             port = {port}\n\
             listen_addresses = '127.0.0.1'\n\
             unix_socket_directories = '{}'\n\
             fsync = off\n\
             synchronous_commit = off\n\
             full_page_writes = off\n\
             max_connections = 400\n",
            self.root.display()
        );
        fs::OpenOptions::new()
            .append(true)
            .open(self.data_dir.join("postgresql.conf"))
            .and_then(|mut f| f.write_all(settings.as_bytes()))
            .context("cannot configure the throwaway cluster (postgresql.conf)")?;

        let log = self.root.join("server.log").to_string_lossy().into_owned();
        self.stopped = false;
        let out = self.server_command(
            "pg_ctl",
            &["-D", &data, "-l", &log, "-w", "-t", "60", "start"],
        )?;
        if !out.status.success() {
            let server_log = fs::read_to_string(&log).unwrap_or_default();
            bail!(
                "the throwaway PostgreSQL server did not start:\n{}\nserver log:\n{}",
                output_text(&out),
                server_log
            );
        }
        self.url = format!("postgres://postgres@127.0.0.1:{port}/postgres");
        self.spawn_watchdog();
        Ok(())
    }

    /// Starts a small shell process that stops the server and deletes the directory if this
    /// process dies without running `Drop` (SIGKILL, an abort). It runs in its own process
    /// group, so the Ctrl-C meant for its owner does not reach it, and exits on its own
    /// once the directory is gone. Best effort: without it, cleanup still happens on every
    /// ordinary exit path.
    fn spawn_watchdog(&self) {
        const SCRIPT: &str = r#"pid=$1; dir=$2; shift 2
while kill -0 "$pid" 2>/dev/null; do sleep 1; done
if [ -d "$dir" ]; then "$@" -D "$dir/data" -m immediate stop >/dev/null 2>&1; rm -rf "$dir"; fi"#;
        let mut command = Command::new("sh");
        command
            .args(["-c", SCRIPT, "sh"])
            .arg(std::process::id().to_string())
            .arg(&self.root);
        if self.run_as_postgres {
            command.args(["runuser", "-u", "postgres", "--"]);
        }
        command
            .arg(self.bin_dir.join("pg_ctl"))
            .current_dir("/")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0);
        // Failing to start the watchdog only loses the protection against SIGKILL.
        let _ = command.spawn();
    }

    /// Runs one of the server binaries as the cluster's owner, inside the cluster directory
    /// (the `postgres` user may not be allowed into the caller's working directory).
    fn server_command(&self, program: &str, args: &[&str]) -> Result<Output> {
        let path = self.bin_dir.join(program);
        let mut command = if self.run_as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&path);
            c
        } else {
            Command::new(&path)
        };
        command.args(args).current_dir(&self.root);
        command
            .output()
            .with_context(|| format!("cannot run {}", path.display()))
    }

    fn stop(&mut self) {
        if !self.stopped {
            self.stopped = true;
            let data = self.data_dir.to_string_lossy().into_owned();
            let fast = self.server_command("pg_ctl", &["-D", &data, "-m", "fast", "-w", "stop"]);
            if !matches!(&fast, Ok(out) if out.status.success()) {
                // The server may already be gone (Ctrl-C reaches it too); "immediate" makes
                // sure nothing keeps running on a directory about to be deleted.
                let _ = self.server_command("pg_ctl", &["-D", &data, "-m", "immediate", "stop"]);
            }
        }
        if let Err(err) = fs::remove_dir_all(&self.root) {
            if err.kind() != std::io::ErrorKind::NotFound {
                // Never panic in a destructor (a closed stderr would make eprintln! panic).
                let _ = writeln!(
                    std::io::stderr(),
                    "warning: cannot remove the throwaway cluster at {}: {err}",
                    self.root.display()
                );
            }
        }
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The directory holding `initdb` and `pg_ctl`: from `PATH` first, then the newest
/// `/usr/lib/postgresql/<version>/bin` (Debian and Ubuntu do not put the server on `PATH`).
fn find_server_binaries() -> Option<PathBuf> {
    find_server_binaries_in(std::env::var_os("PATH"), Path::new("/usr/lib/postgresql"))
}

fn find_server_binaries_in(
    path: Option<std::ffi::OsString>,
    debian_root: &Path,
) -> Option<PathBuf> {
    let has_both = |dir: &Path| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file();
    if let Some(path) = path {
        for dir in std::env::split_paths(&path) {
            if has_both(&dir) {
                // Resolve symlinks (e.g. /usr/local/bin/initdb → /usr/lib/postgresql/15/bin)
                // so initdb finds the `postgres` binary that belongs to it.
                let initdb = fs::canonicalize(dir.join("initdb")).ok()?;
                return initdb.parent().map(Path::to_path_buf);
            }
        }
    }
    let mut versions: Vec<(u32, PathBuf)> = fs::read_dir(debian_root)
        .ok()?
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = entry.path().join("bin");
            has_both(&bin).then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|out| String::from_utf8_lossy(&out.stdout).trim() == "0")
        .unwrap_or(false)
}

fn user_exists(name: &str) -> bool {
    Command::new("id")
        .arg("-u")
        .arg(name)
        .output()
        .map(|out| out.status.success())
        .unwrap_or(false)
}

/// A new private directory under the system temp dir, owned by whoever runs the server.
fn make_temp_dir(as_postgres: bool) -> Result<PathBuf> {
    let template = std::env::temp_dir().join("anchor-pg.XXXXXX");
    let mut command = if as_postgres {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--", "mktemp", "-d"]);
        c
    } else {
        let mut c = Command::new("mktemp");
        c.arg("-d");
        c
    };
    let out = command
        .arg(&template)
        .current_dir("/")
        .output()
        .context("cannot run mktemp to create the throwaway cluster's directory")?;
    if !out.status.success() {
        bail!(
            "cannot create a temporary directory for the throwaway cluster:\n{}",
            output_text(&out)
        );
    }
    Ok(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
}

/// A port that was free a moment ago; the server binds it right after.
fn free_port() -> Result<u16> {
    let listener =
        TcpListener::bind("127.0.0.1:0").context("cannot find a free port on 127.0.0.1")?;
    Ok(listener
        .local_addr()
        .context("cannot find a free port on 127.0.0.1")?
        .port())
}

fn output_text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[cfg(test)]
mod tests {
    use super::find_server_binaries_in;
    use std::fs;
    use std::path::{Path, PathBuf};

    fn scratch(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("anchor-testing-find-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("create scratch dir");
        dir
    }

    fn fake_server(bin: &Path) {
        fs::create_dir_all(bin).expect("create bin dir");
        fs::write(bin.join("initdb"), "").expect("write initdb");
        fs::write(bin.join("pg_ctl"), "").expect("write pg_ctl");
    }

    #[test]
    fn nothing_found_without_binaries() {
        let root = scratch("none");
        let found = find_server_binaries_in(Some(root.clone().into_os_string()), &root.join("lib"));
        assert_eq!(found, None);
        assert_eq!(find_server_binaries_in(None, &root.join("missing")), None);
        let _ = fs::remove_dir_all(&root);
    }

    #[test]
    fn debian_layout_picks_the_newest_version() {
        let root = scratch("debian");
        fake_server(&root.join("lib/9/bin"));
        fake_server(&root.join("lib/16/bin"));
        fake_server(&root.join("lib/13/bin"));
        // A version directory without the binaries (e.g. only the client) is skipped.
        fs::create_dir_all(root.join("lib/17/bin")).expect("create empty bin");
        let found = find_server_binaries_in(None, &root.join("lib"));
        assert_eq!(found, Some(root.join("lib/16/bin")));
        let _ = fs::remove_dir_all(&root);
    }

    #[test]
    fn path_wins_over_the_debian_layout() {
        let root = scratch("path");
        fake_server(&root.join("lib/16/bin"));
        fake_server(&root.join("opt/pg/bin"));
        let path =
            std::env::join_paths([root.join("empty"), root.join("opt/pg/bin")]).expect("join PATH");
        let found = find_server_binaries_in(Some(path), &root.join("lib"));
        let expected = fs::canonicalize(root.join("opt/pg/bin")).expect("canonicalize");
        assert_eq!(found, Some(expected));
        let _ = fs::remove_dir_all(&root);
    }
}
