//! The test a new user writes: enqueue through the code under test, assert what was
//! enqueued, drain, assert how it ended.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use anchor_runtime::{Registry, TaskContext, TaskError, TaskStatus};
use anchor_testing::{drain, DrainOptions, TestDatabase};
use newcomer::taskgen::{self, Executor, SendInvoiceParameters, TaskRunner};

/// Fails the first attempt (its retry is an hour away: the drain does not wait).
struct Billing {
    attempts: AtomicU32,
}

impl Executor for Billing {
    async fn execute_send_invoice(
        &self,
        _ctx: &TaskContext,
        _params: SendInvoiceParameters,
    ) -> Result<(), TaskError> {
        if self.attempts.fetch_add(1, Ordering::SeqCst) == 0 {
            return Err(TaskError::failed("mail server busy"));
        }
        Ok(())
    }
}

#[tokio::test]
async fn placing_an_order_sends_its_invoice() {
    let db = TestDatabase::new().await.expect("a test database");
    let runner = TaskRunner::new(db.client().clone());
    newcomer::place_order(&runner, 42).await.expect("place the order");

    taskgen::testing::assert_enqueued_send_invoice(db.client(), |p| p.order_id == 42).await;

    let billing = Arc::new(Billing { attempts: AtomicU32::new(0) });
    let mut registry = Registry::new();
    taskgen::register(&mut registry, billing.clone());
    let report = drain(db.client(), registry, DrainOptions::default())
        .await
        .expect("drain");
    assert_eq!(report.count("SendInvoice", TaskStatus::Completed), 1, "{report}");
    assert_eq!(billing.attempts.load(Ordering::SeqCst), 2);
}
