//! Retention: finished tasks are deleted once they are older than a configurable age, so a
//! busy system's table does not grow without bound.
//!
//! Every worker runs the pruner (no leader). Each round deletes in bounded batches with one
//! statement per batch that locks its victims with `FOR UPDATE SKIP LOCKED`, so two workers
//! pruning at once take different rows instead of waiting for each other, and no transaction
//! ever holds more than [`RetentionConfig::batch_size()`] row locks. The victims are found
//! through `tasks_finished_idx` (`migrations/V3__retention.sql`), a partial index that
//! pending and running rows never enter, so the claim path does not pay for it. The
//! statements are in `db/retention.rs`.
//!
//! What is kept by default: completed tasks 7 days, failed tasks 30 days (they are the ones
//! people come back to investigate), cancelled tasks 7 days. The age is measured from
//! `finished_at`. Deleting a finished task that held a unique tag frees the tag.

use std::time::Duration;

use crate::client::Client;
use crate::db::{self, retention::Finished};
use crate::error::Result;

/// How long finished tasks are kept, and how the pruning runs. Build it from
/// [`RetentionConfig::default`] and the `with_*` setters.
///
/// ```
/// use std::time::Duration;
/// use anchor_runtime::RetentionConfig;
///
/// // Keep completed tasks one day, failed ones forever.
/// let retention = RetentionConfig::default()
///     .with_completed(Some(Duration::from_secs(24 * 3600)))
///     .with_failed(None);
/// assert_eq!(retention.failed(), None);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RetentionConfig {
    /// How long `completed` tasks are kept after they finish; `None` keeps them forever
    /// (default 7 days).
    pub(crate) completed: Option<Duration>,
    /// How long `failed` tasks are kept after they finish; `None` keeps them forever
    /// (default 30 days).
    pub(crate) failed: Option<Duration>,
    /// How long `cancelled` tasks are kept after they are cancelled; `None` keeps them
    /// forever (default 7 days).
    pub(crate) cancelled: Option<Duration>,
    /// How often a worker prunes (default 1 minute, plus up to half of it as jitter so the
    /// workers of one deployment do not prune in lockstep).
    pub(crate) interval: Duration,
    /// The most rows one statement deletes (default 1000): short transactions, few locks.
    pub(crate) batch_size: usize,
    /// Whether workers prune at all (default `true`). With `false`, call
    /// [`Client::prune_finished`] yourself, or keep everything.
    pub(crate) enabled: bool,
}

const DAY: Duration = Duration::from_secs(24 * 3600);

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig {
            completed: Some(7 * DAY),
            failed: Some(30 * DAY),
            cancelled: Some(7 * DAY),
            interval: Duration::from_secs(60),
            batch_size: 1000,
            enabled: true,
        }
    }
}

impl RetentionConfig {
    /// How long `completed` tasks are kept after they finish; `None` keeps them forever
    /// (default 7 days).
    pub fn completed(&self) -> Option<Duration> {
        self.completed
    }

    /// How long `failed` tasks are kept after they finish; `None` keeps them forever
    /// (default 30 days).
    pub fn failed(&self) -> Option<Duration> {
        self.failed
    }

    /// How long `cancelled` tasks are kept after they are cancelled; `None` keeps them
    /// forever (default 7 days).
    pub fn cancelled(&self) -> Option<Duration> {
        self.cancelled
    }

    /// How often a worker prunes (default 1 minute, plus up to half of it as jitter so the
    /// workers of one deployment do not prune in lockstep).
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// The most rows one statement deletes (default 1000): short transactions, few locks.
    pub fn batch_size(&self) -> usize {
        self.batch_size
    }

    /// Whether workers prune at all (default `true`). With `false`, call
    /// [`Client::prune_finished`] yourself, or keep everything.
    pub fn is_enabled(&self) -> bool {
        self.enabled
    }
}

impl RetentionConfig {
    /// Sets [`RetentionConfig::completed()`].
    pub fn with_completed(mut self, age: Option<Duration>) -> Self {
        self.completed = age;
        self
    }
    /// Sets [`RetentionConfig::failed()`].
    pub fn with_failed(mut self, age: Option<Duration>) -> Self {
        self.failed = age;
        self
    }
    /// Sets [`RetentionConfig::cancelled()`].
    pub fn with_cancelled(mut self, age: Option<Duration>) -> Self {
        self.cancelled = age;
        self
    }
    /// Sets [`RetentionConfig::interval()`].
    pub fn with_interval(mut self, interval: Duration) -> Self {
        self.interval = interval;
        self
    }
    /// Sets [`RetentionConfig::batch_size()`].
    pub fn with_batch_size(mut self, batch_size: usize) -> Self {
        self.batch_size = batch_size;
        self
    }
    /// Sets [`RetentionConfig::is_enabled()`].
    pub fn with_enabled(mut self, enabled: bool) -> Self {
        self.enabled = enabled;
        self
    }

    /// The (status, age) pairs to prune.
    pub(crate) fn rules(&self) -> impl Iterator<Item = (Finished, Duration)> + '_ {
        [
            (Finished::Completed, self.completed),
            (Finished::Failed, self.failed),
            (Finished::Cancelled, self.cancelled),
        ]
        .into_iter()
        .filter_map(|(s, age)| age.map(|a| (s, a)))
    }
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Deletes one batch of `finished` rows older than `age`; returns how many.
async fn prune_batch(
    client: &Client,
    finished: Finished,
    age: Duration,
    limit: i64,
) -> Result<u64> {
    let conn = client.conn().await?;
    db::retention::prune_batch(&conn, client.sql(), finished, millis(age), limit).await
}

impl Client {
    /// Deletes finished tasks older than `retention` allows, in batches of
    /// [`RetentionConfig::batch_size()`]; returns how many were deleted. Workers do this on
    /// their own every [`RetentionConfig::interval()`]; call it yourself when no worker runs
    /// or retention is disabled in the workers.
    pub async fn prune_finished(&self, retention: &RetentionConfig) -> Result<u64> {
        let limit = i64::try_from(retention.batch_size.max(1)).unwrap_or(i64::MAX);
        let mut total = 0;
        for (finished, age) in retention.rules() {
            loop {
                let n = self
                    .bounded(
                        "pruning finished tasks",
                        prune_batch(self, finished, age, limit),
                    )
                    .await?;
                total += n;
                if n < limit as u64 {
                    break;
                }
                // Leave room for the hot path between full batches.
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        Ok(total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_keep_failed_longest() {
        let r = RetentionConfig::default();
        let rules: Vec<_> = r.rules().collect();
        assert_eq!(
            rules,
            vec![
                (Finished::Completed, 7 * DAY),
                (Finished::Failed, 30 * DAY),
                (Finished::Cancelled, 7 * DAY)
            ]
        );
        let keep_failed = r.with_failed(None);
        assert_eq!(keep_failed.rules().count(), 2);
    }
}
