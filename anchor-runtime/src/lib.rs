//! Durable, typed background tasks on PostgreSQL.
//!
//! `anchor generate` turns `api/tasks.yaml` into a Rust module whose `TaskRunner` enqueues
//! tasks through a [`Client`] and whose `register` function routes task names to your
//! `Executor`. This crate is everything that module links against: the schema and its
//! migrations, enqueue (also inside your own transaction), the worker (claiming, retries,
//! timeouts, leases, failure events), the cron scheduler and task inspection.
#![warn(missing_docs)]

mod definition;
mod error;
mod overrides;
mod task;

pub use definition::{CronDefaults, RetryDefaults, TaskDefinition};
pub use error::{Error, ErrorKind, Result};
pub use overrides::TaskOverride;
pub use task::{BoxError, TaskContext, TaskError, TaskId};

/// Re-exported so generated code and users need no direct dependency on them.
pub use anchor_core::RetryPolicy;
pub use tokio_postgres;
