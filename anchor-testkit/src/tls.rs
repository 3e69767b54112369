//! A TLS-only test cluster: certificates made by the test (a CA, a server certificate for
//! `localhost` it signed, a client certificate, and a second CA that signed nothing), and
//! the server settings that make the cluster accept TLS connections only.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};

use crate::{fail, ClusterBuilder, Result};

/// The user a [`TestCerts`] client certificate authenticates (its common name); a
/// TLS-only cluster lets this user in by certificate alone.
pub const CERT_USER: &str = "anchor_cert_user";

/// Certificates made for one test binary, as PEM files in a directory of their own
/// (removed when this value is dropped).
#[derive(Debug)]
pub struct TestCerts {
    dir: PathBuf,
    /// The test CA that signed the server and client certificates.
    pub ca: PathBuf,
    /// Another CA, which signed nothing: trusting it alone must fail.
    pub other_ca: PathBuf,
    /// The server's certificate: valid for the host name `localhost` only (not for
    /// `127.0.0.1`, so a host-name check can be seen failing).
    pub server_cert: PathBuf,
    /// The server's private key (readable by the server's OS user only).
    pub server_key: PathBuf,
    /// A client certificate for [`CERT_USER`], signed by the test CA.
    pub client_cert: PathBuf,
    /// The client certificate's private key.
    pub client_key: PathBuf,
    /// The `pg_hba.conf` of a TLS-only cluster.
    pub hba: PathBuf,
}

impl TestCerts {
    /// Makes the CA, server and client certificates and the `pg_hba.conf`.
    pub fn generate() -> Result<TestCerts> {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "anchor-tls-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)
            .map_err(|e| crate::Error(format!("cannot create {}: {e}", dir.display())))?;
        set_mode(&dir, 0o755)?;
        let gen =
            |what: &str, e: rcgen::Error| crate::Error(format!("cannot make the {what}: {e}"));

        let ca_key = KeyPair::generate().map_err(|e| gen("CA key", e))?;
        let ca = ca_params("anchor test CA")
            .self_signed(&ca_key)
            .map_err(|e| gen("CA certificate", e))?;
        let other_key = KeyPair::generate().map_err(|e| gen("second CA key", e))?;
        let other = ca_params("anchor untrusted test CA")
            .self_signed(&other_key)
            .map_err(|e| gen("second CA certificate", e))?;

        let mut server = CertificateParams::new(vec!["localhost".to_string()])
            .map_err(|e| gen("server certificate", e))?;
        server
            .distinguished_name
            .push(DnType::CommonName, "localhost");
        let server_key = KeyPair::generate().map_err(|e| gen("server key", e))?;
        let server = server
            .signed_by(&server_key, &ca, &ca_key)
            .map_err(|e| gen("server certificate", e))?;

        let mut client = CertificateParams::new(Vec::<String>::new())
            .map_err(|e| gen("client certificate", e))?;
        client
            .distinguished_name
            .push(DnType::CommonName, CERT_USER);
        let client_key = KeyPair::generate().map_err(|e| gen("client key", e))?;
        let client = client
            .signed_by(&client_key, &ca, &ca_key)
            .map_err(|e| gen("client certificate", e))?;

        let certs = TestCerts {
            ca: dir.join("ca.crt"),
            other_ca: dir.join("other-ca.crt"),
            server_cert: dir.join("server.crt"),
            server_key: dir.join("server.key"),
            client_cert: dir.join("client.crt"),
            client_key: dir.join("client.key"),
            hba: dir.join("pg_hba.conf"),
            dir,
        };
        write(&certs.ca, ca.pem().as_bytes(), 0o644, false)?;
        write(&certs.other_ca, other.pem().as_bytes(), 0o644, false)?;
        write(&certs.server_cert, server.pem().as_bytes(), 0o644, false)?;
        write(
            &certs.server_key,
            server_key.serialize_pem().as_bytes(),
            0o600,
            true,
        )?;
        write(&certs.client_cert, client.pem().as_bytes(), 0o644, false)?;
        write(
            &certs.client_key,
            client_key.serialize_pem().as_bytes(),
            0o600,
            false,
        )?;
        // Plain TCP only for the `postgres` database the test kit administers the cluster
        // through (readiness checks, CREATE DATABASE); every database a test uses takes
        // TLS connections only, with a password-less login (the tests are about TLS), and
        // CERT_USER by its client certificate alone.
        let hba = format!(
            "local all all trust\n\
             hostnossl postgres all 127.0.0.1/32 trust\n\
             hostnossl postgres all ::1/128 trust\n\
             hostssl all {CERT_USER} 127.0.0.1/32 cert\n\
             hostssl all {CERT_USER} ::1/128 cert\n\
             hostssl all all 127.0.0.1/32 trust\n\
             hostssl all all ::1/128 trust\n\
             host all all all reject\n"
        );
        write(&certs.hba, hba.as_bytes(), 0o644, true)?;
        Ok(certs)
    }
}

impl Drop for TestCerts {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl ClusterBuilder {
    /// Makes the cluster accept TLS connections only (but to its `postgres` database, which
    /// the test kit uses itself), with the server certificate of `certs` and client
    /// certificates checked against its CA. Create the [`CERT_USER`] role with
    /// [`Cluster::admin_execute`](crate::Cluster::admin_execute) to log in by certificate.
    pub fn tls_only(self, certs: &TestCerts) -> ClusterBuilder {
        let path = |p: &Path| p.display().to_string();
        self.param("ssl", "on")
            .param("ssl_cert_file", path(&certs.server_cert))
            .param("ssl_key_file", path(&certs.server_key))
            .param("ssl_ca_file", path(&certs.ca))
            .param("hba_file", path(&certs.hba))
    }
}

fn ca_params(name: &str) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params
}

/// Writes a file the server reads: owned by the server's OS user when the tests run as
/// root (the server refuses a key file others can read, or one it does not own).
fn write(path: &Path, contents: &[u8], mode: u32, server_owned: bool) -> Result<()> {
    std::fs::write(path, contents)
        .map_err(|e| crate::Error(format!("cannot write {}: {e}", path.display())))?;
    set_mode(path, mode)?;
    if server_owned && crate::is_root() {
        let (uid, gid) = postgres_ids()?;
        std::os::unix::fs::chown(path, Some(uid), Some(gid))
            .map_err(|e| crate::Error(format!("cannot chown {}: {e}", path.display())))?;
    }
    Ok(())
}

fn set_mode(path: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| crate::Error(format!("cannot chmod {}: {e}", path.display())))
}

/// The uid and gid of the `postgres` OS user.
fn postgres_ids() -> Result<(u32, u32)> {
    let id = |flag: &str| -> Result<u32> {
        let out = std::process::Command::new("id")
            .args([flag, "postgres"])
            .output()
            .map_err(|e| crate::Error(format!("cannot run id: {e}")))?;
        match String::from_utf8_lossy(&out.stdout).trim().parse() {
            Ok(n) => Ok(n),
            Err(_) => fail("the postgres OS user does not exist"),
        }
    };
    Ok((id("-u")?, id("-g")?))
}
