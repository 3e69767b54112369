//! Durable, typed background tasks on PostgreSQL.
//!
//! `anchor generate` turns `api/tasks.yaml` into a Rust module whose `TaskRunner` enqueues
//! tasks through a [`Client`] and whose `register` function routes task names to your
//! `Executor` in a [`Registry`]. This crate is everything that module links against: the
//! schema and its migrations ([`migrate`]), enqueue (also inside your own transaction), the
//! [`Worker`] (claiming, retries, timeouts, leases and failure events) and task inspection
//! ([`Client::get_task`]).
//!
//! ```no_run
//! use anchor_runtime::{Client, Registry, TaskContext, TaskDefinition, TaskError, Worker, WorkerConfig};
//!
//! static SEND_EMAIL: TaskDefinition = TaskDefinition {
//!     name: "SendEmail",
//!     retry: None,
//!     timeout_ms: 60_000,
//!     cron: None,
//!     on_failed: None,
//!     default_params: "{}",
//!     max_rescues: None,
//!     queue: "default",
//!     priority: 0,
//! };
//!
//! #[derive(serde::Serialize, serde::Deserialize)]
//! struct SendEmailParameters { to: String }
//!
//! # async fn demo() -> anchor_runtime::Result<()> {
//! let client = Client::connect("postgres://app@localhost/app").await?;
//! anchor_runtime::migrate(&client).await?;
//! let mut registry = Registry::new();
//! registry.register(&SEND_EMAIL, |ctx: TaskContext, p: SendEmailParameters| async move {
//!     println!("task {} mails {}", ctx.id(), p.to);
//!     Ok::<(), TaskError>(())
//! });
//! let handle = Worker::new(client.clone(), registry, WorkerConfig::default())?.start();
//! let id = client
//!     .enqueue(&SEND_EMAIL, &SendEmailParameters { to: "a@example.com".into() }, &[])
//!     .await?;
//! println!("enqueued {id}");
//! handle.shutdown().await;
//! # Ok(()) }
//! ```
#![warn(missing_docs)]

mod claimed;
mod client;
mod connect;
mod cron;
mod db;
mod definition;
mod dispatch;
mod enqueue;
mod error;
mod ids;
mod inspect;
mod listing;
mod migrate;
mod notify;
pub mod observe;
mod overrides;
mod record;
mod registry;
mod retention;
mod run;
mod schedule;
mod settings;
mod statements;
mod task;
mod worker;

pub use client::{Client, DEFAULT_SCHEMA};
pub use connect::{ConnectOptions, TlsConnector, DEFAULT_POOL_SIZE};
pub use cron::{ScheduleId, DEFAULT_SCHEDULE_KEY};
pub use db::driver::EnqueueTx;
pub use definition::{
    CronDefaults, RetryDefaults, TaskDefinition, TaskParameters, DEFAULT_QUEUE, LOWEST_PRIORITY,
};
pub use error::{Error, ErrorKind, Result};
pub use inspect::assert_enqueued;
pub use listing::{
    describe_enqueued, QueueInfo, TaskCount, TaskCursor, TaskFilter, TaskPage, TaskStats,
    WorkerLoad, DEFAULT_STATS_WINDOW, MAX_PAGE,
};
pub use migrate::{check_schema, migrate, Migration, MigrationReport, MIGRATIONS, SCHEMA_VERSION};
pub use observe::describe_metrics;
pub use overrides::TaskOverride;
pub use record::{ErrorRecord, TaskRecord, TaskStatus};
pub use registry::Registry;
pub use retention::RetentionConfig;
pub use run::RunOutcome;
pub use schedule::CronSchedule;
pub use settings::TaskSettings;
#[doc(hidden)]
pub use statements::Statements;
pub use task::{BoxError, TaskContext, TaskError, TaskId, CANCEL_GRACE};
pub use worker::{Worker, WorkerConfig, WorkerHandle};

/// Re-exported so generated code and users need no direct dependency on them.
pub use anchor_core::RetryPolicy;
pub use chrono;
pub use deadpool_postgres;
pub use serde_json;
pub use tokio_postgres;
