//! Executors for the user guide's examples (`testdata/codegen/seed.yaml`), written the way
//! docs/generate.md tells users to write them: `async fn` methods on a type implementing
//! the generated `Executor`, and enqueueing through `TaskRunner`.

use std::sync::Mutex;

use anchor_runtime::tokio_postgres::Transaction;
use anchor_runtime::{Error, TaskContext, TaskError, TaskId, TaskOverride};

use crate::codegen::seed as taskgen;

/// Records what each task was asked to do, so tests can see the calls arrive typed.
#[derive(Debug, Default)]
pub struct SeedExecutor {
    /// One line per executed task, in execution order.
    pub log: Mutex<Vec<String>>,
}

impl SeedExecutor {
    fn record(&self, line: String) {
        // A poisoned lock only means another test thread panicked; keep recording.
        let mut log = self
            .log
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        log.push(line);
    }
}

impl taskgen::Executor for SeedExecutor {
    async fn execute_send_email(
        &self,
        ctx: &TaskContext,
        params: taskgen::SendEmailParameters,
    ) -> Result<(), TaskError> {
        let name = params
            .variables
            .get("name")
            .and_then(|v| v.as_str())
            .unwrap_or("there");
        self.record(format!(
            "task {}: email {} to user {} (hello {name})",
            ctx.id(),
            params.template_id,
            params.user_id
        ));
        Ok(())
    }

    async fn execute_process_daily_reports(
        &self,
        _ctx: &TaskContext,
        params: taskgen::ProcessDailyReportsParameters,
    ) -> Result<(), TaskError> {
        let date: anchor_runtime::chrono::NaiveDate = params.date;
        self.record(format!("reports for {date}"));
        Ok(())
    }

    async fn execute_process_order(
        &self,
        _ctx: &TaskContext,
        params: taskgen::ProcessOrderParameters,
    ) -> Result<(), TaskError> {
        if params.order_id <= 0 {
            // A bad order id never gets better: fail now and let HandleOrderFailure run.
            return Err(TaskError::fatal(format!(
                "order {} does not exist",
                params.order_id
            )));
        }
        self.record(format!("order {}", params.order_id));
        Ok(())
    }

    async fn execute_handle_order_failure(
        &self,
        _ctx: &TaskContext,
        params: taskgen::HandleOrderFailureParameters,
    ) -> Result<(), TaskError> {
        let failed: TaskId = params.task_id;
        self.record(format!("order task {failed} failed"));
        Ok(())
    }

    async fn execute_send_notification(
        &self,
        _ctx: &TaskContext,
        params: taskgen::SendNotificationParameters,
    ) -> Result<(), TaskError> {
        let priority = params
            .priority
            .map_or_else(|| "default".to_string(), |p| p.to_string());
        if priority == "low" {
            // Low priority waits for a quieter moment without counting as a failure.
            return Err(TaskError::RetryWithoutErrorEvent);
        }
        self.record(format!(
            "notify {}: {} ({priority})",
            params.user_id, params.message
        ));
        Ok(())
    }

    async fn execute_escalate_failed_notification(
        &self,
        _ctx: &TaskContext,
        params: taskgen::EscalateFailedNotificationParameters,
    ) -> Result<(), TaskError> {
        self.record(format!(
            "escalate task {} to {}",
            params.task_id, params.escalation_level
        ));
        Ok(())
    }

    async fn execute_delete_opaque_key(
        &self,
        _ctx: &TaskContext,
        params: taskgen::DeleteOpaqueKeyParameters,
    ) -> Result<(), TaskError> {
        let key: i64 = params.key_id;
        self.record(format!("delete key {key}"));
        Ok(())
    }

    async fn execute_on_delete_opaque_key_failed(
        &self,
        ctx: &TaskContext,
        params: taskgen::OnDeleteOpaqueKeyFailedParameters,
    ) -> Result<(), TaskError> {
        self.record(format!(
            "key deletion task {} failed (parent {:?})",
            params.task_id,
            ctx.parent_id()
        ));
        Ok(())
    }

    async fn execute_import_catalog_failed(
        &self,
        _ctx: &TaskContext,
        params: taskgen::ImportCatalogFailedParameters,
    ) -> Result<(), TaskError> {
        let batch: i32 = params.batch_size;
        self.record(format!("import batch of {batch}"));
        Ok(())
    }

    async fn execute_cleanup(
        &self,
        _ctx: &TaskContext,
        _params: taskgen::CleanupParameters,
    ) -> Result<(), TaskError> {
        self.record("cleanup".to_string());
        Ok(())
    }
}

/// Enqueues a few seed tasks the documented ways: alone, inside the caller's transaction,
/// in bulk, and with overrides. Returns the ids in that order.
pub async fn enqueue_examples(
    runner: &taskgen::TaskRunner,
    tx: &Transaction<'_>,
) -> Result<Vec<TaskId>, Error> {
    let mut ids = Vec::new();
    let mut variables = serde_json::Map::new();
    variables.insert("name".into(), serde_json::Value::from("Ada"));
    let email = taskgen::SendEmailParameters {
        user_id: 7,
        template_id: "welcome".into(),
        variables,
    };
    ids.push(
        runner
            .run_send_email(&email, &[TaskOverride::unique_tag("welcome-7")])
            .await?,
    );
    ids.push(
        runner
            .run_process_order_with_tx(tx, &taskgen::ProcessOrderParameters { order_id: 42 }, &[])
            .await?,
    );
    let keys: Vec<taskgen::DeleteOpaqueKeyParameters> = (1..=3)
        .map(|key_id| taskgen::DeleteOpaqueKeyParameters { key_id })
        .collect();
    ids.extend(runner.run_delete_opaque_key_many(&keys, &[]).await?);
    Ok(ids)
}
