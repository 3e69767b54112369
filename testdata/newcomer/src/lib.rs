//! A service that bills orders: placing one enqueues its invoice.

pub mod taskgen;

use anchor_runtime::{Error, TaskId};
use taskgen::{SendInvoiceParameters, TaskRunner};

/// Places order `order_id` and enqueues its invoice.
pub async fn place_order(runner: &TaskRunner, order_id: i64) -> Result<TaskId, Error> {
    runner
        .run_send_invoice(&SendInvoiceParameters { order_id }, &[])
        .await
}
