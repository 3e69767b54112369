//! The pruner: the background service of every worker that deletes finished tasks past
//! their retention ([`Client::prune_finished`], `retention.rs`). It needs only the client,
//! the retention settings and the worker's id for its logs.

use std::time::Duration;

use super::service::{Next, Pace, Service};
use crate::client::Client;
use crate::error::Result;
use crate::retention::RetentionConfig;

/// Deletes finished tasks past their retention every `RetentionConfig::interval` (with
/// jitter), the first time one interval after the worker starts. Nothing depends on a
/// round succeeding: a failed one is tried again.
pub(crate) struct Pruner {
    client: Client,
    retention: RetentionConfig,
    worker_id: String,
}

impl Pruner {
    /// The pruner of a worker, or `None` when `retention` prunes nothing (disabled, or no
    /// status has an age).
    pub(crate) fn new(
        client: Client,
        retention: RetentionConfig,
        worker_id: &str,
    ) -> Option<Pruner> {
        if !retention.enabled || retention.rules().next().is_none() {
            return None;
        }
        Some(Pruner {
            client,
            retention,
            worker_id: worker_id.to_string(),
        })
    }
}

impl Service for Pruner {
    const NAME: &'static str = "pruner";

    fn pace(&self) -> Pace {
        Pace::every(self.retention.interval.max(Duration::from_millis(10)))
            .jittered()
            .first_after_interval()
    }

    async fn round(&mut self) -> Result<Next> {
        let deleted = self.client.prune_finished(&self.retention).await?;
        if deleted > 0 {
            tracing::debug!(worker = %self.worker_id, deleted, "finished tasks pruned");
        }
        Ok(Next::Interval)
    }

    fn failure(&self) -> &'static str {
        "pruning finished tasks failed"
    }
}
