//! The pruner: the background service of every worker that deletes finished tasks past
//! their retention ([`Client::prune_finished`], `retention.rs`). It needs only the client,
//! the retention settings and the worker's id for its logs.

use std::time::Duration;

use crate::client::Client;
use crate::retention::RetentionConfig;

/// The pruner loop a worker runs; it ends when the worker aborts it at shutdown.
pub(crate) async fn run_pruner(client: Client, retention: RetentionConfig, worker_id: String) {
    if !retention.enabled || retention.rules().next().is_none() {
        return;
    }
    let interval = retention.interval.max(Duration::from_millis(10));
    loop {
        let jitter = interval.mul_f64(0.5 * rand::random::<f64>());
        tokio::time::sleep(interval + jitter).await;
        match client.prune_finished(&retention).await {
            Ok(0) => {}
            Ok(n) => tracing::debug!(worker = %worker_id, deleted = n, "finished tasks pruned"),
            // The next round tries again; nothing depends on a round succeeding.
            Err(err) => {
                tracing::warn!(worker = %worker_id, error = %err, "pruning finished tasks failed")
            }
        }
    }
}
