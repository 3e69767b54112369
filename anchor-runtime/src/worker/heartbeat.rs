//! Worker heartbeats and the unregistered-name note.
//!
//! Workers claim only the task names they have handlers for, because several services with
//! different registries may share one database. A task whose name no worker knows (a typo
//! in a hand-written insert, a service that was retired, a deploy not yet rolled out) would
//! therefore stay `pending` with nothing to explain it. An unknown task
//! name must be recorded on the task, so:
//!
//! - every worker upserts its row in `workers` (id, registered names, `last_seen`) every
//!   heartbeat interval, and deletes it at graceful shutdown;
//! - on the rescuer's cadence, the [`UnregisteredNote`] service appends one error entry with
//!   attempt 0 to each task pending for longer than the grace whose name neither this
//!   worker nor any worker seen within three heartbeats has registered. The task stays
//!   `pending` and runs as soon as a worker that knows it starts.
//!
//! The claim never reads `workers`: the hot path pays nothing. The statements are in
//! `db/workers.rs`.

use std::sync::Arc;
use std::time::Duration;

use super::control::{prune_idle_connections, Control};
use super::service::{Next, Pace, Service};
use crate::client::Client;
use crate::db;
use crate::definition::TaskDefinition;
use crate::error::Result;

/// How many tasks one note statement handles.
const NOTE_BATCH: i64 = 100;

/// The heartbeat: writes this worker's row at once, then every heartbeat interval, on the
/// control connection. Its first successful round also stores the definitions of this
/// worker's registry (see `migrations/V6__definitions_and_tags.sql`), and every round gives
/// back the pooled connections the load no longer needs.
pub(crate) struct Heartbeat {
    client: Client,
    control: Arc<Control>,
    worker_id: String,
    names: Vec<String>,
    /// The registry's definitions until they are stored, then none.
    definitions: Vec<&'static TaskDefinition>,
    interval: Duration,
}

impl Heartbeat {
    pub(crate) fn new(
        client: Client,
        control: Arc<Control>,
        worker_id: &str,
        names: Vec<String>,
        definitions: Vec<&'static TaskDefinition>,
        interval: Duration,
    ) -> Heartbeat {
        Heartbeat {
            client,
            control,
            worker_id: worker_id.to_string(),
            names,
            definitions,
            interval,
        }
    }

    async fn beat(&self) -> Result<()> {
        let conn = self.control.conn().await?;
        let beat = db::workers::heartbeat(
            &conn,
            conn.tag(),
            self.client.sql(),
            &self.worker_id,
            &self.names,
        );
        conn.bounded(&self.control, "cannot write the worker heartbeat", beat)
            .await
    }

    /// Upserts the definitions of this worker's registry into `task_definitions`, so that a
    /// worker of another service failing a task whose `onFailed` handler is one of ours
    /// enqueues the handler with its own settings.
    async fn store_definitions(&self) -> Result<()> {
        let conn = self.client.conn().await?;
        db::workers::store_definitions(
            &conn,
            self.client.sql(),
            self.definitions.iter().copied(),
            &self.worker_id,
        )
        .await
    }
}

impl Service for Heartbeat {
    const NAME: &'static str = "heartbeat";

    fn pace(&self) -> Pace {
        Pace::every(self.interval)
    }

    async fn round(&mut self) -> Result<Next> {
        let beat = self.beat().await;
        if !self.definitions.is_empty() {
            let stored = self
                .client
                .bounded("storing task definitions", self.store_definitions())
                .await;
            match stored {
                Ok(()) => self.definitions = Vec::new(),
                Err(err) => {
                    tracing::warn!(worker = %self.worker_id, error = %err, "storing task definitions failed; retrying")
                }
            }
        }
        // Housekeeping on the same cadence: give back pooled connections the load no
        // longer needs.
        let closed = prune_idle_connections(&self.client);
        if closed > 0 {
            tracing::debug!(worker = %self.worker_id, closed, "closed idle pooled connections");
        }
        beat.map(|()| Next::Interval)
    }

    fn failure(&self) -> &'static str {
        "worker heartbeat failed"
    }
}

/// Deletes this worker's row (graceful shutdown); a failure only leaves a row that stops
/// counting as live after three heartbeats and is pruned after an hour.
pub(crate) async fn remove(client: &Client, worker_id: &str) {
    let result = async {
        let conn = client.conn().await?;
        db::workers::remove(&conn, client.sql(), worker_id).await
    };
    match tokio::time::timeout(Duration::from_secs(5), result).await {
        Ok(Ok(())) => {}
        Ok(Err(err)) => {
            tracing::warn!(worker = %worker_id, error = %err, "cannot remove the worker row")
        }
        Err(_) => tracing::warn!(worker = %worker_id, "removing the worker row timed out"),
    }
}

/// The unregistered-name note: on the rescuer's cadence, notes on pending tasks that no
/// live worker can run that this is so (once per task), and prunes the rows of long-dead
/// workers.
pub(crate) struct UnregisteredNote {
    client: Client,
    /// The names this worker runs (live even before its first heartbeat is written).
    names: Vec<String>,
    /// How recently a worker must have been seen to count as live: three heartbeats.
    live: Duration,
    /// How long a task may be due before it is noted.
    grace: Duration,
    interval: Duration,
}

impl UnregisteredNote {
    pub(crate) fn new(
        client: Client,
        names: Vec<String>,
        heartbeat_interval: Duration,
        grace: Duration,
        interval: Duration,
    ) -> UnregisteredNote {
        UnregisteredNote {
            client,
            names,
            live: heartbeat_interval * 3,
            grace,
            interval,
        }
    }

    /// One pass; returns how many tasks were noted.
    async fn note(&self) -> Result<usize> {
        let sql = self.client.sql();
        let conn = self.client.conn().await?;
        db::workers::prune_dead(&conn, sql).await?;
        let live_ms = millis(self.live);
        let grace_ms = millis(self.grace);
        let mut noted = 0;
        loop {
            let tasks = db::workers::note_unregistered(
                &conn,
                sql,
                live_ms,
                grace_ms,
                NOTE_BATCH,
                &self.names,
            )
            .await?;
            for (id, name) in &tasks {
                tracing::warn!(
                    task.id = %id,
                    task.name = %name,
                    "no running worker has this task registered; it stays pending until one does"
                );
            }
            noted += tasks.len();
            if (tasks.len() as i64) < NOTE_BATCH {
                return Ok(noted);
            }
        }
    }
}

impl Service for UnregisteredNote {
    const NAME: &'static str = "unregistered-name note";

    fn pace(&self) -> Pace {
        Pace::every(self.interval).jittered().first_after_interval()
    }

    async fn round(&mut self) -> Result<Next> {
        self.client
            .bounded("looking for tasks no worker has registered", self.note())
            .await?;
        Ok(Next::Interval)
    }

    fn failure(&self) -> &'static str {
        "looking for tasks no worker has registered failed"
    }
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}
