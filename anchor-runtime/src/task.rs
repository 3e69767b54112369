//! What an executor sees and returns: [`TaskId`], [`TaskContext`] and [`TaskError`].

use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Utc};

pub use crate::ids::TaskId;

/// The task attributes an executor can read while it runs.
#[derive(Debug, Clone)]
pub struct TaskContext {
    pub(crate) id: TaskId,
    pub(crate) name: String,
    pub(crate) attempt: u32,
    pub(crate) deadline: DateTime<Utc>,
    pub(crate) timeout: Duration,
    pub(crate) parent_id: Option<TaskId>,
}

impl TaskContext {
    /// Builds a context by hand, e.g. to unit-test an executor without a worker.
    ///
    /// ```
    /// use std::time::Duration;
    /// use anchor_runtime::{TaskContext, TaskId};
    /// let ctx = TaskContext::new(TaskId::new(42), "SendEmail", 1, Duration::from_secs(60));
    /// assert_eq!(ctx.id(), TaskId::new(42));
    /// assert_eq!(ctx.attempt(), 1);
    /// ```
    pub fn new(id: TaskId, name: impl Into<String>, attempt: u32, timeout: Duration) -> Self {
        let deadline =
            Utc::now() + chrono::Duration::from_std(timeout).unwrap_or(chrono::Duration::MAX);
        TaskContext {
            id,
            name: name.into(),
            attempt,
            deadline,
            timeout,
            parent_id: None,
        }
    }

    /// The task's id.
    pub fn id(&self) -> TaskId {
        self.id
    }

    /// The task's name as declared in tasks.yaml.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Which run this is: 1 for the first, 2 for the first retry, and so on.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// When the worker drops this attempt's future for running too long.
    pub fn deadline(&self) -> DateTime<Utc> {
        self.deadline
    }

    /// The timeout this attempt runs under.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// For an `onFailed` handler, the id of the task whose failure enqueued it.
    pub fn parent_id(&self) -> Option<TaskId> {
        self.parent_id
    }
}

/// A boxed error, as executors return them.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// How an executor says an attempt did not succeed.
///
/// Any error type converts into `TaskError::Failed` with `?`, so ordinary errors are
/// recorded and retried according to the task's retry policy.
///
/// ```
/// use anchor_runtime::TaskError;
/// fn charge(amount: f64) -> Result<(), TaskError> {
///     if amount <= 0.0 {
///         return Err(TaskError::fatal("amount must be positive"));
///     }
///     let _parsed: u32 = "42".parse()?; // any std error converts
///     Ok(())
/// }
/// assert!(charge(-1.0).unwrap_err().is_fatal());
/// ```
#[derive(Debug)]
pub enum TaskError {
    /// An ordinary failure: recorded in the task's error history and retried per policy.
    Failed(BoxError),
    /// A permanent failure (`ErrFatalTask` elsewhere): no retry; the task fails now and its
    /// `onFailed` handler is enqueued.
    Fatal(BoxError),
    /// Try again later without recording an error (`ErrRetryTaskWithoutErrorEvent`
    /// elsewhere): rescheduled after the policy's next interval (30 s
    /// without a policy) and not counted against `max_retries`.
    RetryWithoutErrorEvent,
}

impl TaskError {
    /// An ordinary, retryable failure with a message.
    pub fn failed(message: impl Into<String>) -> Self {
        TaskError::Failed(message.into().into())
    }

    /// A permanent failure with a message.
    pub fn fatal(message: impl Into<String>) -> Self {
        TaskError::Fatal(message.into().into())
    }

    /// True for [`TaskError::Fatal`].
    pub fn is_fatal(&self) -> bool {
        matches!(self, TaskError::Fatal(_))
    }
}

impl fmt::Display for TaskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TaskError::Failed(err) => write!(f, "{err}"),
            TaskError::Fatal(err) => write!(f, "fatal: {err}"),
            TaskError::RetryWithoutErrorEvent => f.write_str("retry requested without error event"),
        }
    }
}

impl<E> From<E> for TaskError
where
    E: std::error::Error + Send + Sync + 'static,
{
    fn from(err: E) -> Self {
        TaskError::Failed(Box::new(err))
    }
}
