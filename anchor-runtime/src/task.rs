//! What an executor sees and returns: [`TaskId`], [`TaskContext`] and [`TaskError`].

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::Notify;

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
    pub(crate) cancel: Cancellation,
}

/// How long a run cancelled while it runs may go on after
/// [`TaskContext::cancelled`] completes, before its worker drops the run's future.
pub const CANCEL_GRACE: Duration = Duration::from_millis(500);

/// Whether someone cancelled the running task ([`Client::cancel_task`](crate::Client::cancel_task)
/// or `anchor tasks cancel`): set once by the worker, read by [`TaskContext::cancelled`].
#[derive(Debug, Clone)]
pub(crate) struct Cancellation(Option<Arc<CancelSignal>>);

/// The signal a run's lease and its context share: one small allocation per run, and
/// nothing to wake when the run ends uncancelled (the common case).
#[derive(Debug, Default)]
pub(crate) struct CancelSignal {
    cancelled: AtomicBool,
    notify: Notify,
}

impl CancelSignal {
    /// Marks the run cancelled and wakes whoever waits in [`TaskContext::cancelled`].
    pub(crate) fn cancel(&self) {
        self.cancelled.store(true, Ordering::Release);
        self.notify.notify_waiters();
    }
}

impl Cancellation {
    /// A context that is never cancelled (one built by hand).
    pub(crate) fn never() -> Cancellation {
        Cancellation(None)
    }

    /// The worker's side (kept with the run's lease) and the context's side.
    pub(crate) fn pair() -> (Arc<CancelSignal>, Cancellation) {
        let signal = Arc::new(CancelSignal::default());
        (signal.clone(), Cancellation(Some(signal)))
    }
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
            cancel: Cancellation::never(),
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

    /// Whether the task has been cancelled while it runs. The task is already `cancelled`
    /// in the database (no retry, no `onFailed` handler, whatever the run returns now); the
    /// worker drops the run's future [`CANCEL_GRACE`](crate::CANCEL_GRACE) after telling
    /// it, so a handler that checks this can stop cleanly first (roll back, release a
    /// lock, delete a temporary file).
    pub fn is_cancelled(&self) -> bool {
        self.cancel
            .0
            .as_ref()
            .is_some_and(|s| s.cancelled.load(Ordering::Acquire))
    }

    /// Completes when the task is cancelled while it runs (see
    /// [`TaskContext::is_cancelled`]); never, for a context built by hand. Use it in a
    /// `select!` beside the work:
    ///
    /// ```no_run
    /// # async fn work() {}
    /// # async fn run(ctx: anchor_runtime::TaskContext) -> Result<(), anchor_runtime::TaskError> {
    /// tokio::select! {
    ///     () = work() => Ok(()),
    ///     () = ctx.cancelled() => Err(anchor_runtime::TaskError::failed("cancelled")),
    /// }
    /// # }
    /// ```
    pub async fn cancelled(&self) {
        let Some(signal) = &self.cancel.0 else {
            return std::future::pending().await;
        };
        loop {
            // Registered before the flag is read, so a cancel in between is not missed.
            let notified = signal.notify.notified();
            let mut notified = std::pin::pin!(notified);
            notified.as_mut().enable();
            if signal.cancelled.load(Ordering::Acquire) {
                return;
            }
            notified.await;
        }
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
