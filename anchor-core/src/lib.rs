//! Pure building blocks shared by anchor's spec model (`anchor-spec`) and its runtime
//! (`anchor-runtime`): duration and retry-interval parsing, retry policies and cron expressions.
//!
//! Nothing in this crate performs I/O, so the validator and the runtime agree on every
//! meaning by construction: `anchor validate`, `anchor cron` and the worker all call the
//! same functions.
#![warn(missing_docs)]

pub mod cron;
pub mod duration;
pub mod retry;

pub use duration::{format_duration, parse_duration, DurationError, DEFAULT_TIMEOUT, MAX_DURATION};
pub use retry::{parse_intervals, IntervalError, RetryPolicy};
