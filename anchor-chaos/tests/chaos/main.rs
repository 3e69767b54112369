//! The reliability suite: real `chaos-worker` processes against a throwaway PostgreSQL,
//! faults injected, invariants read back from the database (see `docs/reliability.md`).
//!
//! Each scenario prints its figures; run with `--nocapture` to see them:
//! `cargo test -p anchor-chaos -- --nocapture`.

mod support;

mod bad_input;
mod burst;
mod cron;
mod kill;
mod local;
mod lock_overlap;
mod locks;
mod partition;
mod pause;
mod poison;
mod pool;
mod restart;
mod shutdown;
mod skew;
mod terminate;
