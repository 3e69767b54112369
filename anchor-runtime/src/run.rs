//! One run of a handler, as a worker runs it and as [`Registry::run`] runs it in a test:
//! decode the payload, call the handler under the run's timeout, catch a panic, and say how
//! it ended ([`RunOutcome`]). The worker adds what only it does around this (the lease
//! fence, the start record, handing the outcome to the completer).

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::task::Poll;
use std::time::Duration;

use futures_util::FutureExt;

use crate::error::{Error, ErrorKind, Result};
use crate::registry::{Handler, Registry};
use crate::task::{TaskContext, TaskError};

/// How one run of a task's handler ended, as the worker records it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RunOutcome {
    /// The handler returned `Ok(())`.
    Completed,
    /// The run failed with this message, as the task's error history records it: the
    /// handler's error (`fatal: …` for [`TaskError::fatal`]), `panicked: …`,
    /// `timed out after …`, or `payload does not match the parameters of this task: …`.
    /// `fatal` runs are never retried (a fatal error, or a payload that cannot decode).
    Failed {
        /// The message.
        message: String,
        /// Whether the failure is permanent whatever the retry policy.
        fatal: bool,
    },
    /// The handler returned [`TaskError::RetryWithoutErrorEvent`]: retried later with no
    /// error recorded and no failure counted.
    RetryWithoutEvent,
}

/// Runs `handler` on `payload` under `timeout`, polling it only while `may_run` holds
/// (the worker's lease fence; `None` from this function when it stopped holding).
pub(crate) async fn run_handler(
    handler: &Handler,
    ctx: TaskContext,
    payload: &str,
    timeout: Duration,
    may_run: impl Fn() -> bool,
) -> Option<RunOutcome> {
    let work = async move {
        match handler(ctx, payload) {
            Ok(future) => match future.await {
                Ok(()) => RunOutcome::Completed,
                Err(TaskError::Failed(err)) => RunOutcome::Failed {
                    message: err.to_string(),
                    fatal: false,
                },
                Err(TaskError::Fatal(err)) => RunOutcome::Failed {
                    message: format!("fatal: {err}"),
                    fatal: true,
                },
                Err(TaskError::RetryWithoutErrorEvent) => RunOutcome::RetryWithoutEvent,
            },
            // A payload that does not decode now never will: fail without retrying.
            Err(err) => RunOutcome::Failed {
                message: format!("payload does not match the parameters of this task: {err}"),
                fatal: true,
            },
        }
    };
    // The handler's future lives in this block only: it is dropped the moment the run
    // ends (at the timeout, say), not after the outcome is handed over, so whatever it
    // holds (a pooled connection) is given back at once.
    let mut work = std::pin::pin!(AssertUnwindSafe(work).catch_unwind());
    let fenced = std::future::poll_fn(move |cx| {
        if !may_run() {
            return Poll::Ready(None);
        }
        work.as_mut().poll(cx).map(Some)
    });
    match tokio::time::timeout(timeout, fenced).await {
        Ok(None) => None,
        Ok(Some(Ok(outcome))) => Some(outcome),
        Ok(Some(Err(panic))) => Some(RunOutcome::Failed {
            message: format!("panicked: {}", panic_message(panic.as_ref())),
            fatal: false,
        }),
        Err(_) => Some(RunOutcome::Failed {
            message: format!("timed out after {}", anchor_core::format_duration(timeout)),
            fatal: false,
        }),
    }
}

/// The text of a panic payload.
fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "a non-string panic payload".to_string()
    }
}

impl Registry {
    /// Runs the handler of `ctx.name()` once on `payload` (the task's parameters as JSON),
    /// the way a worker runs it: the payload decoded into the handler's parameter type, the
    /// run cut off at `ctx.timeout()`, a panic caught; and returns how it ended, with the
    /// message the worker would record. No database and no worker are involved, so it tests
    /// an executor (or the generated `register` wiring) on its own; what happens next (a
    /// retry, the `onFailed` handler) is the worker's business and is not done here.
    ///
    /// A name with no handler is an error of kind [`Config`](ErrorKind::Config).
    ///
    /// ```
    /// use std::time::Duration;
    /// use anchor_runtime::{Registry, RunOutcome, TaskContext, TaskDefinition, TaskError, TaskId};
    ///
    /// static GREET: TaskDefinition = TaskDefinition {
    ///     name: "Greet", retry: None, timeout_ms: 1000, cron: None, on_failed: None,
    ///     default_params: "{}", max_rescues: None, queue: "default", priority: 0,
    /// };
    ///
    /// #[derive(serde::Deserialize)]
    /// struct Greet { name: String }
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> anchor_runtime::Result<()> {
    /// let mut registry = Registry::new();
    /// registry.register(&GREET, |_ctx: TaskContext, p: Greet| async move {
    ///     if p.name.is_empty() {
    ///         return Err(TaskError::fatal("no name"));
    ///     }
    ///     Ok(())
    /// });
    /// let ctx = TaskContext::new(TaskId::new(1), "Greet", 1, Duration::from_secs(1));
    /// let ran = registry.run(ctx.clone(), &serde_json::json!({ "name": "Ada" })).await?;
    /// assert_eq!(ran, RunOutcome::Completed);
    /// let ran = registry.run(ctx, &serde_json::json!({ "nom": "Ada" })).await?;
    /// assert!(matches!(ran, RunOutcome::Failed { fatal: true, .. }));
    /// # Ok(())
    /// # }
    /// ```
    pub async fn run(&self, ctx: TaskContext, payload: &serde_json::Value) -> Result<RunOutcome> {
        let Some(handler) = self.handler(ctx.name()) else {
            return Err(Error::new(
                ErrorKind::Config,
                format!(
                    "no handler registered for task {}; register it first (the generated \
                     `register` function, or Registry::register)",
                    ctx.name()
                ),
            ));
        };
        let timeout = ctx.timeout().min(anchor_core::MAX_DURATION);
        let payload = payload.to_string();
        // Nothing fences this run (`|| true`), so it always ends with an outcome.
        run_handler(handler.as_ref(), ctx, &payload, timeout, || true)
            .await
            .ok_or_else(|| Error::new(ErrorKind::Config, "the run was stopped before it ended"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{TaskDefinition, TaskId};

    static JOB: TaskDefinition = TaskDefinition {
        name: "Job",
        retry: None,
        timeout_ms: 1000,
        cron: None,
        on_failed: None,
        default_params: "{}",
        max_rescues: None,
        queue: "default",
        priority: 0,
    };

    #[derive(serde::Deserialize)]
    struct Params {
        how: String,
    }

    fn registry() -> Registry {
        let mut registry = Registry::new();
        registry.register(&JOB, |ctx: TaskContext, p: Params| async move {
            match p.how.as_str() {
                "ok" => Ok(()),
                "fail" => Err(TaskError::failed("smtp said no")),
                "fatal" => Err(TaskError::fatal("no such user")),
                "later" => Err(TaskError::RetryWithoutErrorEvent),
                "panic" => panic!("attempt {} blew up", ctx.attempt()),
                _ => {
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                    Ok(())
                }
            }
        });
        registry
    }

    async fn run(how: &str) -> RunOutcome {
        let ctx = TaskContext::new(TaskId::new(7), "Job", 2, Duration::from_millis(50));
        registry()
            .run(ctx, &serde_json::json!({ "how": how }))
            .await
            .expect("a registered task")
    }

    fn failed(message: &str, fatal: bool) -> RunOutcome {
        RunOutcome::Failed {
            message: message.to_string(),
            fatal,
        }
    }

    #[tokio::test]
    async fn a_run_ends_as_the_worker_would_record_it() {
        assert_eq!(run("ok").await, RunOutcome::Completed);
        assert_eq!(run("fail").await, failed("smtp said no", false));
        assert_eq!(run("fatal").await, failed("fatal: no such user", true));
        assert_eq!(run("later").await, RunOutcome::RetryWithoutEvent);
        assert_eq!(
            run("panic").await,
            failed("panicked: attempt 2 blew up", false)
        );
        assert_eq!(run("hang").await, failed("timed out after 50ms", false));
    }

    #[tokio::test]
    async fn a_payload_that_does_not_decode_or_an_unknown_name_says_so() {
        let ctx = TaskContext::new(TaskId::new(7), "Job", 1, Duration::from_secs(1));
        let outcome = registry()
            .run(ctx, &serde_json::json!({ "what": 1 }))
            .await
            .expect("registered");
        assert!(
            matches!(&outcome, RunOutcome::Failed { message, fatal: true }
                if message.starts_with("payload does not match the parameters of this task")),
            "{outcome:?}"
        );
        let ctx = TaskContext::new(TaskId::new(7), "Other", 1, Duration::from_secs(1));
        let err = registry()
            .run(ctx, &serde_json::json!({}))
            .await
            .expect_err("no handler");
        assert_eq!(err.kind(), ErrorKind::Config);
        assert!(err
            .to_string()
            .contains("no handler registered for task Other"));
    }
}
