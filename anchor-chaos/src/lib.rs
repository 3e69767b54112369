//! The reliability ("chaos") suite's shared code: the ledger every execution is recorded
//! in, the audit of task state changes, and the executors the `chaos-worker` processes run.
//!
//! The suite (`tests/chaos/`) starts a throwaway PostgreSQL, installs the ledger next to
//! anchor's tables ([`install`]), spawns `chaos-worker` processes, injects faults (kill -9,
//! database restarts, terminated backends, exhausted pools, lock holders, bursts, SIGTERM)
//! and then checks from the database that nothing was lost, nothing ran twice at once, no
//! stale worker completed a task and no cron tick fired twice. See `docs/reliability.md`.
#![warn(missing_docs)]

pub mod executor;
pub mod ledger;
pub mod zgen;

pub use executor::ChaosExecutor;
pub use ledger::{install, Ledger};
