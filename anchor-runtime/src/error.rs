//! The runtime's error type: opaque, with a [`kind`](Error::kind) to branch on.

use std::fmt;

/// What went wrong, coarsely; see [`Error::kind`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// A [`TaskOverride`](crate::TaskOverride) had an invalid value; nothing was written.
    InvalidOverride,
    /// Parameters could not be serialised to JSON, or a stored payload could not be decoded.
    Payload,
    /// The database refused a statement or could not be reached.
    Database,
    /// No connection could be taken from the pool (exhausted, or the database is down).
    Pool,
    /// The schema is missing or older than this runtime; run the migrations.
    Schema,
    /// A task name is not known to this worker or client.
    UnknownTask,
    /// A cron expression or time zone in a task definition is invalid.
    Cron,
    /// The configuration (URL, pool, worker settings) is invalid.
    Config,
    /// A task with that id does not exist, or is not in a state that allows the operation.
    NotFound,
}

/// An error from the anchor runtime.
///
/// It names what failed and why; [`Error::kind`] tells the broad category and
/// [`std::error::Error::source`] gives the underlying cause (e.g. the Postgres error).
pub struct Error {
    kind: ErrorKind,
    message: String,
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

impl Error {
    pub(crate) fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
            source: None,
        }
    }

    pub(crate) fn with_source(
        kind: ErrorKind,
        message: impl Into<String>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
    ) -> Self {
        Error {
            kind,
            message: message.into(),
            source: Some(source.into()),
        }
    }

    /// The broad category of this error.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The SQLSTATE code, when the database reported the error.
    pub fn db_code(&self) -> Option<&str> {
        let mut cause: Option<&(dyn std::error::Error + 'static)> = self
            .source
            .as_deref()
            .map(|s| s as &(dyn std::error::Error + 'static));
        while let Some(err) = cause {
            if let Some(pg) = err.downcast_ref::<tokio_postgres::Error>() {
                return pg.code().map(|c| c.code());
            }
            cause = err.source();
        }
        None
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Error")
            .field("kind", &self.kind)
            .field("message", &self.message)
            .field("source", &self.source)
            .finish()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        if let Some(source) = &self.source {
            // Some sources (tokio-postgres) keep the useful part in their own source, e.g.
            // "db error" whose cause holds the server's message: print the whole chain.
            write!(f, ": {}", error_chain(source.as_ref()))?;
        }
        Ok(())
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|s| s as &(dyn std::error::Error + 'static))
    }
}

/// A `Result` with the runtime's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Formats an error and its sources as `outer: inner: innermost`.
pub(crate) fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut cause = err.source();
    while let Some(inner) = cause {
        let inner_text = inner.to_string();
        // Some errors repeat their source's text in their own; skip the repeat.
        if !text.ends_with(&inner_text) {
            text.push_str(": ");
            text.push_str(&inner_text);
        }
        cause = inner.source();
    }
    text
}
