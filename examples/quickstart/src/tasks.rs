//! The quickstart's executors: what each task in `api/tasks.yaml` does when a worker runs it.
//!
//! The regions between `ANCHOR:` and `ANCHOR_END:` comments are quoted verbatim in
//! `docs/guide.md`; the test `tests/guide_snippets.rs` fails when the two drift apart.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anchor_runtime::{Client, TaskContext, TaskError, TaskId};

use crate::zgen::taskgen::{
    self, CleanupSessionsParameters, EscalateFailedNotificationParameters,
    GenerateReportParameters, HandleOrderFailureParameters, ProcessOrderParameters,
    SendEmailParameters, SendNotificationParameters,
};

/// The schema holding both anchor's tables and the quickstart's `orders` table.
pub const SCHEMA: &str = "anchor_quickstart";

/// What the executors did, so the quickstart can check it and print it: one entry per run.
#[derive(Default)]
pub struct Journal {
    entries: Mutex<Vec<JournalEntry>>,
}

/// One executor run that finished its work.
#[derive(Debug, Clone)]
pub struct JournalEntry {
    /// The task that ran.
    pub task_id: TaskId,
    /// Its name.
    pub task: String,
    /// What it did, in words.
    pub note: String,
}

impl Journal {
    fn record(&self, ctx: &TaskContext, note: String) {
        let entry = JournalEntry {
            task_id: ctx.id(),
            task: ctx.name().to_string(),
            note,
        };
        self.lock().push(entry);
    }

    /// Every entry so far, oldest first.
    pub fn entries(&self) -> Vec<JournalEntry> {
        self.lock().clone()
    }

    /// The entries written by runs of `task`.
    pub fn entries_of(&self, task: &str) -> Vec<JournalEntry> {
        self.lock()
            .iter()
            .filter(|e| e.task == task)
            .cloned()
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<JournalEntry>> {
        // A panicking executor cannot leave the list half-written (push is atomic for us),
        // so a poisoned lock is still safe to use.
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A stand-in for a push-notification service that sometimes asks callers to slow down.
pub struct PushService {
    /// Users whose first delivery attempt is answered with "rate limited, try later".
    pub rate_limited_users: Vec<i32>,
}

impl PushService {
    fn rate_limited(&self, user_id: i32, attempt: u32) -> bool {
        attempt == 1 && self.rate_limited_users.contains(&user_id)
    }
}

// ANCHOR: executor_struct
/// The application's executor: the dependencies its tasks need.
pub struct Tasks {
    /// anchor's client, to load failed tasks in failure handlers, and the app's database.
    pub client: Client,
    /// The push-notification service.
    pub push: PushService,
    /// What ran, for the quickstart's checks.
    pub journal: Arc<Journal>,
}
// ANCHOR_END: executor_struct

impl taskgen::Executor for Tasks {
    // ANCHOR: execute_send_email
    async fn execute_send_email(
        &self,
        ctx: &TaskContext,
        params: SendEmailParameters,
    ) -> Result<(), TaskError> {
        // The task's attributes: id, name, attempt (1 on the first run), deadline and timeout.
        let note = format!(
            "mailed template {:?} to user {} (task {}, attempt {}, deadline {})",
            params.template_id,
            params.user_id,
            ctx.id(),
            ctx.attempt(),
            ctx.deadline().format("%H:%M:%S"),
        );
        self.journal.record(ctx, note);
        Ok(())
    }
    // ANCHOR_END: execute_send_email

    // ANCHOR: execute_process_order
    async fn execute_process_order(
        &self,
        ctx: &TaskContext,
        params: ProcessOrderParameters,
    ) -> Result<(), TaskError> {
        // Any std error converts into a retryable failure with `?`.
        let db = self.client.pool().get().await?;
        let order = db
            .query_opt(
                "SELECT declines_left FROM anchor_quickstart.orders WHERE id = $1",
                &[&params.order_id],
            )
            .await?;
        let Some(order) = order else {
            // Retrying cannot make a missing order appear: fail now, and let the
            // onFailed handler (HandleOrderFailure) take over.
            return Err(TaskError::fatal(format!(
                "order {} does not exist",
                params.order_id
            )));
        };
        // The simulated payment gateway declines the first `declines_left` attempts.
        let declines_left: i32 = order.get(0);
        if i64::from(ctx.attempt()) <= i64::from(declines_left) {
            return Err(TaskError::failed(format!(
                "payment gateway declined order {} (attempt {})",
                params.order_id,
                ctx.attempt()
            )));
        }
        db.execute(
            "UPDATE anchor_quickstart.orders SET status = 'paid' WHERE id = $1",
            &[&params.order_id],
        )
        .await?;
        self.journal
            .record(ctx, format!("charged order {}", params.order_id));
        Ok(())
    }
    // ANCHOR_END: execute_process_order

    // ANCHOR: execute_handle_order_failure
    async fn execute_handle_order_failure(
        &self,
        ctx: &TaskContext,
        params: HandleOrderFailureParameters,
    ) -> Result<(), TaskError> {
        // Load the task that failed and read its parameters back, typed.
        let failed = self
            .client
            .get_task(params.task_id)
            .await?
            .ok_or_else(|| TaskError::fatal(format!("task {} is gone", params.task_id)))?;
        let order: ProcessOrderParameters = failed.payload_as()?;
        let reason = failed
            .errors
            .last()
            .map_or("no error recorded", |e| e.message.as_str());
        // A real handler would open a ticket for customer service here.
        let note = format!(
            "order {} (task {}) needs attention: {reason}",
            order.order_id, failed.id
        );
        self.journal.record(ctx, note);
        Ok(())
    }
    // ANCHOR_END: execute_handle_order_failure

    // ANCHOR: execute_send_notification
    async fn execute_send_notification(
        &self,
        ctx: &TaskContext,
        params: SendNotificationParameters,
    ) -> Result<(), TaskError> {
        if params.user_id <= 0 {
            // Permanent: no retry; EscalateFailedNotification is enqueued at once.
            return Err(TaskError::fatal(format!(
                "user {} has no registered device",
                params.user_id
            )));
        }
        if self.push.rate_limited(params.user_id, ctx.attempt()) {
            // Temporary: run again after the retry interval, record no error and do not
            // count it against max_retries.
            return Err(TaskError::RetryWithoutErrorEvent);
        }
        let priority = params
            .priority
            .map_or("normal".to_string(), |p| p.to_string());
        let note = format!(
            "pushed {:?} to user {} ({priority} priority)",
            params.message, params.user_id
        );
        self.journal.record(ctx, note);
        Ok(())
    }
    // ANCHOR_END: execute_send_notification

    // ANCHOR: execute_escalate
    async fn execute_escalate_failed_notification(
        &self,
        ctx: &TaskContext,
        params: EscalateFailedNotificationParameters,
    ) -> Result<(), TaskError> {
        let failed = self
            .client
            .get_task(params.task_id)
            .await?
            .ok_or_else(|| TaskError::fatal(format!("task {} is gone", params.task_id)))?;
        let original: SendNotificationParameters = failed.payload_as()?;
        // `escalation_level` was not passed by anyone: it is the schema's default ("admin").
        let note = format!(
            "escalated to {}: {:?} for user {} could not be delivered",
            params.escalation_level, original.message, original.user_id
        );
        self.journal.record(ctx, note);
        Ok(())
    }
    // ANCHOR_END: execute_escalate

    // ANCHOR: execute_generate_report
    async fn execute_generate_report(
        &self,
        ctx: &TaskContext,
        params: GenerateReportParameters,
    ) -> Result<(), TaskError> {
        // Far longer than the task's `timeout: 2s`: at the deadline the worker drops this
        // future (so the sleep simply stops) and records a timeout error.
        tokio::time::sleep(Duration::from_secs(30)).await;
        self.journal
            .record(ctx, format!("rendered report {}", params.report_id));
        Ok(())
    }
    // ANCHOR_END: execute_generate_report

    // ANCHOR: execute_cleanup_sessions
    async fn execute_cleanup_sessions(
        &self,
        ctx: &TaskContext,
        params: CleanupSessionsParameters,
    ) -> Result<(), TaskError> {
        // The schedule registered at worker start uses the schema's defaults (30 minutes).
        let note = format!(
            "deleted sessions idle for more than {} minutes",
            params.older_than_minutes
        );
        self.journal.record(ctx, note);
        Ok(())
    }
    // ANCHOR_END: execute_cleanup_sessions
}
