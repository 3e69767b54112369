//! [`ConnectOptions`]: a database URL with libpq's TLS settings resolved, and the
//! [`TlsConnector`] every connection of the runtime opens through (pool, LISTEN/control,
//! migrations).
//!
//! The settings follow libpq, so a URL that works with `psql` works here:
//! `sslmode` (`disable`, `prefer` — the default —, `require`, `verify-ca`, `verify-full`),
//! `sslrootcert` (a PEM file, or `system` for the operating system's trusted roots),
//! `sslcert` and `sslkey` (a client certificate). Each may come from the URL or, when the
//! URL does not set it, from `PGSSLMODE`, `PGSSLROOTCERT`, `PGSSLCERT`, `PGSSLKEY`; the
//! files default to `~/.postgresql/root.crt`, `postgresql.crt` and `postgresql.key`, as
//! libpq's do. TLS is rustls with the `ring` provider; nothing links OpenSSL.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_postgres::config::SslMode;
use tokio_postgres::tls::MakeTlsConnect;
use tokio_postgres::Socket;
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::error::{Error, ErrorKind, Result};

/// The pool size [`Client::connect`](crate::Client::connect) uses: enough for a worker's
/// claim, completion, lease and notify loops plus the application's own enqueues.
pub const DEFAULT_POOL_SIZE: usize = 16;

/// How to reach the database: the connection settings of a URL (or `key=value` string)
/// with its TLS settings resolved into a [`TlsConnector`], and the pool size.
///
/// [`Client::connect`](crate::Client::connect) builds one from a URL; build it yourself to
/// set the pool size, to give a [`Client`](crate::Client) made from your own pool the
/// settings of its LISTEN connection ([`Client::with_listen_options`](crate::Client::with_listen_options)),
/// or to open your own pool with the same TLS settings:
///
/// ```no_run
/// use anchor_runtime::deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
/// use anchor_runtime::{Client, ConnectOptions};
///
/// # fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// let options = ConnectOptions::from_url(
///     "postgres://app@db.internal/app?sslmode=verify-full&sslrootcert=/etc/ssl/db-ca.pem",
/// )?;
/// let manager = Manager::from_config(
///     options.postgres_config().clone(),
///     options.tls(),
///     ManagerConfig { recycling_method: RecyclingMethod::Fast },
/// );
/// let pool = Pool::builder(manager).max_size(8).build()?;
/// let client = Client::from_pool(pool).with_listen_options(options);
/// # let _ = client; Ok(()) }
/// ```
#[derive(Clone)]
pub struct ConnectOptions {
    config: tokio_postgres::Config,
    tls: TlsConnector,
    ssl: SslSummary,
    pool_size: usize,
    statement_cache: bool,
}

/// What the TLS settings resolved to, for `Debug` and for error messages.
#[derive(Debug, Clone)]
struct SslSummary {
    mode: Mode,
    /// Where the trusted roots come from, as the setting names them (`sslrootcert=…`).
    roots: Option<String>,
}

/// libpq's `sslmode`, as far as anchor supports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl Mode {
    fn parse(value: &str, from: &str) -> Result<Mode> {
        Ok(match value {
            "disable" => Mode::Disable,
            "prefer" => Mode::Prefer,
            "require" => Mode::Require,
            "verify-ca" => Mode::VerifyCa,
            "verify-full" => Mode::VerifyFull,
            "allow" => {
                return Err(config_error(format!(
                    "{from}: sslmode `allow` is not supported (it tries an unencrypted \
                     connection first); use `prefer`, which tries TLS first and falls back"
                )))
            }
            other => {
                return Err(config_error(format!(
                    "{from}: unknown sslmode `{other}`; use disable, prefer, require, \
                     verify-ca or verify-full"
                )))
            }
        })
    }

    fn name(self) -> &'static str {
        match self {
            Mode::Disable => "disable",
            Mode::Prefer => "prefer",
            Mode::Require => "require",
            Mode::VerifyCa => "verify-ca",
            Mode::VerifyFull => "verify-full",
        }
    }
}

impl std::fmt::Debug for ConnectOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // tokio_postgres::Config's Debug redacts the password.
        f.debug_struct("ConnectOptions")
            .field("config", &self.config)
            .field("sslmode", &self.ssl.mode.name())
            .field("sslrootcert", &self.ssl.roots)
            .field("pool_size", &self.pool_size)
            .field("statement_cache", &self.statement_cache)
            .finish()
    }
}

/// The TLS settings a connection string may carry, before they are resolved.
#[derive(Debug, Default)]
struct SslParams {
    mode: Option<(String, &'static str)>,
    root_cert: Option<(String, &'static str)>,
    cert: Option<(String, &'static str)>,
    key: Option<(String, &'static str)>,
}

impl ConnectOptions {
    /// Reads `url` (a `postgres://` URL or a libpq `key=value` string) and resolves its TLS
    /// settings, with `PGSSLMODE`, `PGSSLROOTCERT`, `PGSSLCERT` and `PGSSLKEY` filling in
    /// what the URL does not set. Certificate and key files are read now, so a missing or
    /// unreadable file is reported here, naming the setting.
    pub fn from_url(url: &str) -> Result<ConnectOptions> {
        ConnectOptions::parse(url, &|name| std::env::var(name).ok())
    }

    fn parse(url: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<ConnectOptions> {
        let (rest, mut ssl) = split_ssl_params(url)?;
        let from_env = |slot: &mut Option<(String, &'static str)>, var: &'static str| {
            if slot.is_none() {
                if let Some(value) = env(var).filter(|v| !v.is_empty()) {
                    *slot = Some((value, var));
                }
            }
        };
        from_env(&mut ssl.mode, "PGSSLMODE");
        from_env(&mut ssl.root_cert, "PGSSLROOTCERT");
        from_env(&mut ssl.cert, "PGSSLCERT");
        from_env(&mut ssl.key, "PGSSLKEY");
        let mut config: tokio_postgres::Config = rest.parse().map_err(|err| {
            Error::with_source(
                ErrorKind::Config,
                "invalid database URL; expected e.g. postgres://user:password@host:5432/dbname",
                err,
            )
        })?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(5));
        }
        apply_dead_connection_defaults(url, &mut config);
        let home = env("HOME").map(PathBuf::from);
        let (tls, summary) = resolve_tls(&ssl, home.as_deref())?;
        config.ssl_mode(match summary.mode {
            Mode::Disable => SslMode::Disable,
            Mode::Prefer => SslMode::Prefer,
            Mode::Require | Mode::VerifyCa | Mode::VerifyFull => SslMode::Require,
        });
        Ok(ConnectOptions {
            config,
            tls,
            ssl: summary,
            pool_size: DEFAULT_POOL_SIZE,
            statement_cache: true,
        })
    }

    /// Sets the size of the pool [`Client::connect_with`](crate::Client::connect_with)
    /// opens (default [`DEFAULT_POOL_SIZE`]; a worker needs at least 4: claims,
    /// completions, leases and notifications run side by side).
    pub fn pool_size(mut self, max_size: usize) -> ConnectOptions {
        self.pool_size = max_size;
        self
    }

    /// The pool size set by [`ConnectOptions::pool_size`].
    pub fn get_pool_size(&self) -> usize {
        self.pool_size
    }

    /// Whether statements may be prepared and cached on the pool's connections (default
    /// true). Set it to false when the URL leads to a pooler in transaction mode that keeps
    /// no prepared statement from one transaction to the next (PgBouncer before 1.21, or
    /// without `max_prepared_statements`): statements are then sent unnamed, with their
    /// parameter types, in one round trip each. Such a client enqueues (also in bulk and in
    /// your transactions), inspects and cancels; workers need a direct or session-pooled
    /// connection (LISTEN, session state) and refuse it.
    pub fn statement_cache(mut self, cache: bool) -> ConnectOptions {
        self.statement_cache = cache;
        self
    }

    /// The setting of [`ConnectOptions::statement_cache`].
    pub fn get_statement_cache(&self) -> bool {
        self.statement_cache
    }

    /// The driver's connection settings (host, user, `sslmode` as the driver sees it, …).
    pub fn postgres_config(&self) -> &tokio_postgres::Config {
        &self.config
    }

    /// The TLS connector for these settings, to open connections or a pool with.
    pub fn tls(&self) -> TlsConnector {
        self.tls.clone()
    }

    /// Opens one connection with these settings; the caller drives the returned
    /// connection (e.g. `tokio::spawn(connection)`).
    pub async fn connect(
        &self,
    ) -> Result<(
        tokio_postgres::Client,
        tokio_postgres::Connection<Socket, <TlsConnector as MakeTlsConnect<Socket>>::Stream>,
    )> {
        self.config
            .connect(self.tls.clone())
            .await
            .map_err(|err| self.connection_error("cannot connect to the database", err))
    }

    /// Maps a failure to open a connection to an [`Error`] whose message says which setting
    /// to change when the cause is one of TLS (see [`connection_hint`]).
    pub(crate) fn connection_error(
        &self,
        context: &str,
        err: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
    ) -> Error {
        let err = err.into();
        let message = hinted(context, err.as_ref(), Some(self));
        Error::with_source(ErrorKind::Database, message, err)
    }
}

/// `context`, followed by what to change when `err` is a failure of TLS
/// ([`connection_hint`]).
pub(crate) fn hinted(
    context: &str,
    err: &(dyn std::error::Error + 'static),
    options: Option<&ConnectOptions>,
) -> String {
    match connection_hint(err, options) {
        Some(hint) => format!("{context} ({hint})"),
        None => context.to_string(),
    }
}

/// Splits the TLS settings anchor resolves itself (the driver knows only three `sslmode`s
/// and no certificate files) out of a connection string; returns the rest for the driver.
fn split_ssl_params(url: &str) -> Result<(String, SslParams)> {
    let mut ssl = SslParams::default();
    let mut take = |key: &str, value: String, from: &'static str| -> bool {
        let slot = match key {
            "sslmode" => &mut ssl.mode,
            "sslrootcert" => &mut ssl.root_cert,
            "sslcert" => &mut ssl.cert,
            "sslkey" => &mut ssl.key,
            _ => return false,
        };
        *slot = Some((value, from));
        true
    };
    if let Some(authority) = url
        .strip_prefix("postgres://")
        .or_else(|| url.strip_prefix("postgresql://"))
    {
        // The query starts at the first `?` after the credentials, which the driver reads
        // up to the first `@`: an unencoded `?` in a password is not the query.
        let from = url.len() - authority.len() + authority.find('@').map_or(0, |at| at + 1);
        let Some(at) = url[from..].find('?').map(|q| from + q) else {
            return Ok((url.to_string(), ssl));
        };
        let (base, query) = (&url[..at], &url[at + 1..]);
        let mut kept = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let key = decode(key);
            if !take(&key, decode(value), "the database URL") {
                kept.push(pair);
            }
        }
        let rest = if kept.is_empty() {
            base.to_string()
        } else {
            format!("{base}?{}", kept.join("&"))
        };
        return Ok((rest, ssl));
    }
    // Some other URL (another scheme, a typo): refused without echoing it, since it may
    // hold a password.
    if url.contains("://") || url.trim_start().starts_with("postgres") && !url.contains('=') {
        return Err(config_error(
            "invalid database URL: it must start with postgres:// or postgresql:// (e.g. \
             postgres://user:password@host:5432/dbname), or be key=value settings"
                .to_string(),
        ));
    }
    // A libpq key=value string: re-emitted without the TLS settings, every value quoted.
    let mut kept = Vec::new();
    for (key, value) in parse_key_values(url)? {
        if !take(&key, value.clone(), "the connection string") {
            kept.push(format!(
                "{key}='{}'",
                value.replace('\\', "\\\\").replace('\'', "\\'")
            ));
        }
    }
    Ok((kept.join(" "), ssl))
}

fn decode(text: &str) -> String {
    percent_encoding::percent_decode_str(text)
        .decode_utf8_lossy()
        .into_owned()
}

/// Reads a libpq `key=value` connection string (`host=db port=5432 password='a b\'c'`).
fn parse_key_values(text: &str) -> Result<Vec<(String, String)>> {
    let invalid = |why: &str| {
        config_error(format!(
            "invalid connection string ({why}); expected e.g. \
             postgres://user:password@host:5432/dbname or host=… user=… dbname=…"
        ))
    };
    let mut pairs = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.peek().is_none() {
            return Ok(pairs);
        }
        let mut key = String::new();
        while let Some(c) = chars.next_if(|c| !c.is_whitespace() && *c != '=') {
            key.push(c);
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.next() != Some('=') {
            return Err(invalid(&format!("setting {} has no `=`", pairs.len() + 1)));
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        if chars.next_if_eq(&'\'').is_some() {
            loop {
                match chars.next() {
                    None => {
                        return Err(invalid(&format!(
                            "the value of `{key}` has no closing quote"
                        )))
                    }
                    Some('\'') => break,
                    Some('\\') => match chars.next() {
                        Some(c) => value.push(c),
                        None => {
                            return Err(invalid(&format!(
                                "the value of setting {} ends in `\\`",
                                pairs.len() + 1
                            )))
                        }
                    },
                    Some(c) => value.push(c),
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                if c == '\\' {
                    if let Some(escaped) = chars.next() {
                        value.push(escaped);
                    }
                } else {
                    value.push(c);
                }
            }
        }
        pairs.push((key, value));
    }
}

/// Where a resolved setting came from, for messages: `sslrootcert=/x (PGSSLROOTCERT)`.
fn setting(key: &str, value: &str, from: &str) -> String {
    if from.starts_with("PG") {
        format!("{from}={value}")
    } else {
        format!("{key}={value} (in {from})")
    }
}

/// Builds the connector: which certificates to trust and what to check, as libpq decides it.
fn resolve_tls(ssl: &SslParams, home: Option<&Path>) -> Result<(TlsConnector, SslSummary)> {
    let system_roots = ssl
        .root_cert
        .as_ref()
        .is_some_and(|(value, _)| value == "system");
    let mode = match &ssl.mode {
        Some((value, from)) => Mode::parse(value, &setting("sslmode", value, from))?,
        // libpq: with the operating system's roots, any public CA is trusted, so the host
        // name must be checked; that is the default then, and a weaker mode an error.
        None if system_roots => Mode::VerifyFull,
        None => Mode::Prefer,
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    if mode == Mode::Disable {
        // No TLS, so no certificate file is read (as libpq): a missing one is no error.
        let verifier = Arc::new(Verifier {
            check: Check::Nothing,
            webpki: None,
            provider: provider.clone(),
        });
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|err| Error::with_source(ErrorKind::Config, "cannot set up TLS", err))?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        return Ok((
            TlsConnector {
                inner: MakeRustlsConnect::new(config),
            },
            SslSummary { mode, roots: None },
        ));
    }
    let default_file = |name: &str| home.map(|h| h.join(".postgresql").join(name));
    // The trusted roots: the file named, else libpq's default file when it exists.
    let roots: Option<(RootCertStore, String)> = match &ssl.root_cert {
        Some((value, from)) if value == "system" => {
            if mode != Mode::VerifyFull {
                return Err(config_error(format!(
                    "{}: the operating system's roots trust any public CA, so they need \
                     sslmode=verify-full (got sslmode={}); set sslmode=verify-full",
                    setting("sslrootcert", value, from),
                    mode.name()
                )));
            }
            Some((
                system_root_store(&setting("sslrootcert", value, from))?,
                "sslrootcert=system".into(),
            ))
        }
        Some((value, from)) => {
            let what = setting("sslrootcert", value, from);
            Some((
                root_store_from_file(Path::new(value), &what)?,
                format!("sslrootcert={value}"),
            ))
        }
        None => match default_file("root.crt").filter(|p| p.is_file()) {
            Some(path) => {
                let what = format!("the default root certificate file {}", path.display());
                let store = root_store_from_file(&path, &what)?;
                Some((store, format!("sslrootcert={}", path.display())))
            }
            None => None,
        },
    };
    let check = match mode {
        Mode::Disable => Check::Nothing,
        // libpq: with a root certificate at hand, require and prefer verify the CA too.
        Mode::Prefer | Mode::Require if roots.is_some() => Check::Chain,
        Mode::Prefer | Mode::Require => Check::Nothing,
        Mode::VerifyCa | Mode::VerifyFull if roots.is_none() => {
            return Err(config_error(format!(
                "sslmode={} checks the server's certificate, but no CA certificate is \
                 given: set sslrootcert=<CA file> in the URL (or PGSSLROOTCERT), \
                 sslrootcert=system for the operating system's roots, or put the CA at \
                 ~/.postgresql/root.crt",
                mode.name()
            )))
        }
        Mode::VerifyCa => Check::Chain,
        Mode::VerifyFull => Check::ChainAndHost,
    };
    let (store, roots_name) = match roots {
        Some((store, name)) => (Some(store), Some(name)),
        None => (None, None),
    };
    let webpki = match store {
        Some(store) if check != Check::Nothing => Some(
            WebPkiServerVerifier::builder_with_provider(Arc::new(store), provider.clone())
                .build()
                .map_err(|err| {
                    Error::with_source(
                        ErrorKind::Config,
                        format!(
                            "{}: cannot use these roots",
                            roots_name.as_deref().unwrap_or("")
                        ),
                        err,
                    )
                })?,
        ),
        _ => None,
    };
    let verifier = Arc::new(Verifier {
        check,
        webpki,
        provider: provider.clone(),
    });
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|err| Error::with_source(ErrorKind::Config, "cannot set up TLS", err))?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let config = match client_identity(ssl, &default_file)? {
        Some((certs, key, what)) => builder.with_client_auth_cert(certs, key).map_err(|err| {
            Error::with_source(
                ErrorKind::Config,
                format!("{what}: the certificate and key do not go together"),
                err,
            )
        })?,
        None => builder.with_no_client_auth(),
    };
    Ok((
        TlsConnector {
            inner: MakeRustlsConnect::new(config),
        },
        SslSummary {
            mode,
            roots: roots_name,
        },
    ))
}

fn system_root_store(what: &str) -> Result<RootCertStore> {
    let found = rustls_native_certs::load_native_certs();
    let mut store = RootCertStore::empty();
    let (added, _) = store.add_parsable_certificates(found.certs);
    if added == 0 {
        let why = found
            .errors
            .first()
            .map(|e| format!(": {e}"))
            .unwrap_or_default();
        return Err(config_error(format!(
            "{what}: the operating system has no trusted root certificates{why}; install \
             them (e.g. the ca-certificates package) or set sslrootcert to a CA file"
        )));
    }
    Ok(store)
}

fn root_store_from_file(path: &Path, what: &str) -> Result<RootCertStore> {
    let certs = read_certificates(path, what)?;
    let mut store = RootCertStore::empty();
    let (added, _) = store.add_parsable_certificates(certs);
    if added == 0 {
        return Err(config_error(format!(
            "{what}: no usable CA certificate in {}",
            path.display()
        )));
    }
    Ok(store)
}

fn read_certificates(path: &Path, what: &str) -> Result<Vec<CertificateDer<'static>>> {
    let pem = std::fs::read(path).map_err(|err| {
        Error::with_source(
            ErrorKind::Config,
            format!("{what}: cannot read {}", path.display()),
            err,
        )
    })?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
        .collect::<std::result::Result<_, _>>()
        .map_err(|err| {
            Error::with_source(
                ErrorKind::Config,
                format!("{what}: {} is not a PEM certificate file", path.display()),
                err,
            )
        })?;
    if certs.is_empty() {
        return Err(config_error(format!(
            "{what}: {} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
            path.display()
        )));
    }
    Ok(certs)
}

/// The client certificate and key: the files named, else libpq's defaults when both exist.
type Identity = (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>, String);

fn client_identity(
    ssl: &SslParams,
    default_file: &dyn Fn(&str) -> Option<PathBuf>,
) -> Result<Option<Identity>> {
    let explicit = |slot: &Option<(String, &'static str)>, key: &str| {
        slot.as_ref()
            .map(|(value, from)| (PathBuf::from(value), setting(key, value, from)))
    };
    let defaulted = |name: &str, key: &str| {
        default_file(name).map(|p| {
            let what = format!("{key} (default {})", p.display());
            (p, what)
        })
    };
    let (cert, key) = match (explicit(&ssl.cert, "sslcert"), explicit(&ssl.key, "sslkey")) {
        (None, None) => match (
            defaulted("postgresql.crt", "sslcert"),
            defaulted("postgresql.key", "sslkey"),
        ) {
            (Some(c), Some(k)) if c.0.is_file() && k.0.is_file() => (c, k),
            _ => return Ok(None),
        },
        (Some(c), Some(k)) => (c, k),
        (Some(c), None) => match defaulted("postgresql.key", "sslkey") {
            Some(k) if k.0.is_file() => (c, k),
            _ => {
                return Err(config_error(format!(
                    "{} is set but no key is: set sslkey=<key file> (or PGSSLKEY)",
                    c.1
                )))
            }
        },
        (None, Some(k)) => {
            return Err(config_error(format!(
                "{} is set but no certificate is: set sslcert=<certificate file> (or PGSSLCERT)",
                k.1
            )))
        }
    };
    load_identity(&cert, &key).map(Some)
}

/// Reads a client certificate and its key, each given as (path, what names it).
fn load_identity(cert: &(PathBuf, String), key: &(PathBuf, String)) -> Result<Identity> {
    let certs = read_certificates(&cert.0, &cert.1)?;
    let pem = std::fs::read(&key.0).map_err(|err| {
        Error::with_source(
            ErrorKind::Config,
            format!("{}: cannot read {}", key.1, key.0.display()),
            err,
        )
    })?;
    let private = PrivateKeyDer::from_pem_slice(&pem).map_err(|err| {
        Error::with_source(
            ErrorKind::Config,
            format!(
                "{}: {} holds no unencrypted private key (PKCS#8, PKCS#1 or SEC1 PEM; \
                 password-protected keys are not supported)",
                key.1,
                key.0.display()
            ),
            err,
        )
    })?;
    let what = format!("{} with {}", cert.1, key.1);
    Ok((certs, private, what))
}

/// What the server's certificate is checked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Check {
    /// Nothing: the connection is encrypted but the server unauthenticated (`require`).
    Nothing,
    /// Signed by a trusted CA, whatever host it names (`verify-ca`).
    Chain,
    /// Signed by a trusted CA and naming the host connected to (`verify-full`).
    ChainAndHost,
}

#[derive(Debug)]
struct Verifier {
    check: Check,
    webpki: Option<Arc<WebPkiServerVerifier>>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        let Some(webpki) = self
            .webpki
            .as_ref()
            .filter(|_| self.check != Check::Nothing)
        else {
            return Ok(ServerCertVerified::assertion());
        };
        match webpki.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            // The chain is checked before the name: a name error means a trusted chain.
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) if self.check == Check::Chain => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// The TLS connector of a [`ConnectOptions`]: rustls, checking the server's certificate as
/// its `sslmode` asks. Usable wherever tokio-postgres takes a `MakeTlsConnect` (a
/// `deadpool_postgres::Manager`, `tokio_postgres::Config::connect`).
#[derive(Clone)]
pub struct TlsConnector {
    inner: MakeRustlsConnect,
}

impl std::fmt::Debug for TlsConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TlsConnector(rustls)")
    }
}

impl MakeTlsConnect<Socket> for TlsConnector {
    type Stream = <MakeRustlsConnect as MakeTlsConnect<Socket>>::Stream;
    type TlsConnect = <MakeRustlsConnect as MakeTlsConnect<Socket>>::TlsConnect;
    type Error = <MakeRustlsConnect as MakeTlsConnect<Socket>>::Error;

    fn make_tls_connect(
        &mut self,
        hostname: &str,
    ) -> std::result::Result<Self::TlsConnect, Self::Error> {
        // A Unix-socket connection has no host name (and the server offers no TLS on it);
        // the driver asks for a connector anyway, which an empty name would fail.
        let name = if hostname.is_empty() {
            "localhost"
        } else {
            hostname
        };
        MakeTlsConnect::<Socket>::make_tls_connect(&mut self.inner, name)
    }
}

/// What to change when opening a connection failed for a reason of TLS: the server
/// offers none, it wants it, its certificate is not trusted or names another host.
/// `options` (when the connection was opened from them) names the roots in use.
pub(crate) fn connection_hint(
    err: &(dyn std::error::Error + 'static),
    options: Option<&ConnectOptions>,
) -> Option<String> {
    let roots = options
        .and_then(|o| o.ssl.roots.clone())
        .unwrap_or_else(|| "sslrootcert".into());
    let mut cause = Some(err);
    while let Some(err) = cause {
        if let Some(pg) = err.downcast_ref::<tokio_postgres::Error>() {
            if let Some(db) = pg.as_db_error() {
                if db.code()
                    == &tokio_postgres::error::SqlState::INVALID_AUTHORIZATION_SPECIFICATION
                    && db.message().contains("no encryption")
                {
                    return Some(
                        "the server accepts only TLS connections from here: set \
                         sslmode=require, or verify-full with sslrootcert, in the URL or \
                         PGSSLMODE"
                            .into(),
                    );
                }
            }
            // The driver says so only in text, in the error's own source.
            if crate::error::error_chain(pg).contains("server does not support TLS") {
                return Some(
                    "the server does not offer TLS: use sslmode=prefer or disable, or turn \
                     on ssl in the server's configuration"
                        .into(),
                );
            }
        }
        let rustls_error = err.downcast_ref::<rustls::Error>().or_else(|| {
            err.downcast_ref::<std::io::Error>()
                .and_then(|io| io.get_ref())
                .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        });
        if let Some(rustls::Error::InvalidCertificate(cert)) = rustls_error {
            return Some(match cert {
                CertificateError::UnknownIssuer | CertificateError::BadSignature => format!(
                    "the server's certificate is not signed by a CA that {roots} trusts: set \
                     sslrootcert (or PGSSLROOTCERT) to the CA certificate that signed it"
                ),
                CertificateError::NotValidForName
                | CertificateError::NotValidForNameContext { .. } => {
                    "the server's certificate does not name the host connected to: connect by \
                     a host name the certificate lists, or use sslmode=verify-ca to check \
                     only that a trusted CA signed it"
                        .into()
                }
                CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                    "the server's certificate has expired: renew it on the server".into()
                }
                CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                    "the server's certificate is not valid yet: check the clocks of client \
                     and server"
                        .into()
                }
                _ => format!("the server's certificate was refused; check {roots} and sslmode"),
            });
        }
        cause = err.source();
    }
    None
}

fn config_error(message: String) -> Error {
    Error::new(ErrorKind::Config, message)
}

/// TCP settings that notice a dead peer in well under a lease: keepalive probes after 10 s
/// of silence, every 5 s, 3 of them; and data unacknowledged for 30 s closes the
/// connection (`tcp_user_timeout`). The operating system's defaults (2 h before the first
/// probe, about 15 minutes of retransmissions) would leave a worker behind a partition
/// that sends no reset waiting far longer than any lease. Each is kept as the URL gives it
/// (`keepalives`, `keepalives_idle`, `keepalives_interval`, `keepalives_retries`,
/// `tcp_user_timeout`; note that the driver reads `tcp_user_timeout` in seconds, where
/// libpq reads milliseconds).
const KEEPALIVES_IDLE: Duration = Duration::from_secs(10);
const KEEPALIVES_INTERVAL: Duration = Duration::from_secs(5);
const KEEPALIVES_RETRIES: u32 = 3;
const TCP_USER_TIMEOUT: Duration = Duration::from_secs(30);

fn apply_dead_connection_defaults(database_url: &str, config: &mut tokio_postgres::Config) {
    // A setting counts as given when a `key=value` parameter of the URL (after `?`, between
    // `&`) or of a key/value string (between spaces) names it; a password or database
    // name that merely contains the word does not.
    let given = |key: &str| {
        database_url
            .split(['?', '&', ' '])
            .any(|part| part.trim_start().starts_with(&format!("{key}=")))
    };
    if !given("keepalives_idle") {
        config.keepalives_idle(KEEPALIVES_IDLE);
    }
    if !given("keepalives_interval") {
        config.keepalives_interval(KEEPALIVES_INTERVAL);
    }
    if !given("keepalives_retries") {
        config.keepalives_retries(KEEPALIVES_RETRIES);
    }
    if !given("tcp_user_timeout") {
        config.tcp_user_timeout(TCP_USER_TIMEOUT);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn dead_connection_defaults_apply_unless_the_url_sets_them() {
        let url = "postgres://u:keepalives_idle@localhost/tcp_user_timeout";
        let options = ConnectOptions::parse(url, &no_env).unwrap();
        assert_eq!(options.config.get_keepalives_idle(), KEEPALIVES_IDLE);
        assert_eq!(
            options.config.get_tcp_user_timeout(),
            Some(&TCP_USER_TIMEOUT)
        );
        let url = "postgres://u@localhost/keepalives_idle?keepalives_idle=60&tcp_user_timeout=90";
        let options = ConnectOptions::parse(url, &no_env).unwrap();
        assert_eq!(
            options.config.get_keepalives_idle(),
            Duration::from_secs(60)
        );
        assert_eq!(
            options.config.get_tcp_user_timeout(),
            Some(&Duration::from_secs(90))
        );
    }

    #[test]
    fn tls_settings_are_taken_out_of_a_url_and_the_rest_kept() {
        let (rest, ssl) = split_ssl_params(
            "postgres://u:p%26w@h:5433/db?application_name=x&sslmode=verify-full&sslrootcert=%2Ftmp%2Fca%20x.pem&connect_timeout=3",
        )
        .unwrap();
        assert_eq!(
            rest,
            "postgres://u:p%26w@h:5433/db?application_name=x&connect_timeout=3"
        );
        assert_eq!(ssl.mode.unwrap().0, "verify-full");
        assert_eq!(ssl.root_cert.unwrap().0, "/tmp/ca x.pem");
        let (rest, _) = split_ssl_params("postgres://h/db?sslmode=require").unwrap();
        assert_eq!(rest, "postgres://h/db");
    }

    /// The driver reads a URL's credentials up to its first `@`, so a `?` in an unencoded
    /// password is not the start of the query: the TLS settings after the real `?` must
    /// still be found (they were missed, and `require` quietly became `prefer`).
    #[test]
    fn a_question_mark_in_the_password_does_not_hide_the_tls_settings() {
        let (rest, ssl) = split_ssl_params("postgres://app:pa?ss@db/app?sslmode=require").unwrap();
        assert_eq!(rest, "postgres://app:pa?ss@db/app");
        assert_eq!(ssl.mode.unwrap().0, "require");
        let options =
            ConnectOptions::parse("postgres://app:pa?ss@db/app?sslmode=require", &no_env).unwrap();
        assert_eq!(options.config.get_ssl_mode(), SslMode::Require);
    }

    /// A string that is neither a postgres URL nor key=value settings must not come back
    /// in the error whole: it may hold a password.
    #[test]
    fn a_malformed_url_is_not_echoed_into_the_error() {
        for url in [
            "postgresql+asyncpg://app:s3cret@db/app",
            "postgres//app:s3cret@db/app",
            " postgres://app:s3cret@db/app",
        ] {
            let err = ConnectOptions::parse(url, &no_env).unwrap_err();
            let text = crate::error::error_chain(&err);
            assert!(!text.contains("s3cret"), "{url}: {text}");
            assert_eq!(err.kind(), ErrorKind::Config);
        }
    }

    #[test]
    fn tls_files_are_not_read_when_tls_is_off() {
        let env = |name: &str| (name == "PGSSLROOTCERT").then(|| "/nonexistent/ca.pem".to_string());
        let options = ConnectOptions::parse("postgres://h/db?sslmode=disable", &env).unwrap();
        assert_eq!(options.config.get_ssl_mode(), SslMode::Disable);
    }

    #[test]
    fn tls_settings_are_taken_out_of_a_key_value_string() {
        let (rest, ssl) =
            split_ssl_params("host=h  user = u password='a b\\'c' sslmode=require sslkey='/k y'")
                .unwrap();
        assert_eq!(rest, "host='h' user='u' password='a b\\'c'");
        let config: tokio_postgres::Config = rest.parse().unwrap();
        assert_eq!(config.get_password(), Some(&b"a b'c"[..]));
        assert_eq!(ssl.mode.unwrap().0, "require");
        assert_eq!(ssl.key.unwrap().0, "/k y");
        let err = split_ssl_params("host='unclosed").unwrap_err();
        assert!(err.to_string().contains("no closing quote"), "{err}");
    }

    #[test]
    fn the_environment_fills_in_what_the_url_does_not_set() {
        let env = |name: &str| match name {
            "PGSSLMODE" => Some("require".to_string()),
            _ => None,
        };
        let options = ConnectOptions::parse("postgres://h/db", &env).unwrap();
        assert_eq!(options.ssl.mode, Mode::Require);
        assert_eq!(options.config.get_ssl_mode(), SslMode::Require);
        let options = ConnectOptions::parse("postgres://h/db?sslmode=disable", &env).unwrap();
        assert_eq!(options.ssl.mode, Mode::Disable);
        let options = ConnectOptions::parse("postgres://h/db", &no_env).unwrap();
        assert_eq!(options.ssl.mode, Mode::Prefer);
    }

    #[test]
    fn bad_tls_settings_name_the_setting_and_the_fix() {
        let err = ConnectOptions::parse("postgres://h/db?sslmode=verify", &no_env).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config);
        assert!(
            err.to_string().contains("unknown sslmode `verify`"),
            "{err}"
        );
        let err =
            ConnectOptions::parse("postgres://h/db?sslmode=verify-full", &no_env).unwrap_err();
        assert!(err.to_string().contains("set sslrootcert="), "{err}");
        let err = ConnectOptions::parse(
            "postgres://h/db?sslmode=verify-ca&sslrootcert=/nonexistent/ca.pem",
            &no_env,
        )
        .unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("sslrootcert=/nonexistent/ca.pem (in the database URL)"),
            "{text}"
        );
        assert!(text.contains("cannot read"), "{text}");
        let env =
            |name: &str| (name == "PGSSLROOTCERT").then(|| "/nonexistent/env.pem".to_string());
        let err = ConnectOptions::parse("postgres://h/db?sslmode=verify-ca", &env).unwrap_err();
        assert!(
            err.to_string()
                .contains("PGSSLROOTCERT=/nonexistent/env.pem"),
            "{err}"
        );
        let err = ConnectOptions::parse(
            "postgres://h/db?sslmode=require&sslrootcert=system",
            &no_env,
        )
        .unwrap_err();
        assert!(err.to_string().contains("set sslmode=verify-full"), "{err}");
        let err = ConnectOptions::parse("postgres://h/db?sslkey=/k.pem", &no_env).unwrap_err();
        assert!(err.to_string().contains("set sslcert="), "{err}");
        let err = ConnectOptions::parse("postgres://h/db?sslmode=allow", &no_env).unwrap_err();
        assert!(err.to_string().contains("use `prefer`"), "{err}");
    }
}
