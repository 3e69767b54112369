//! Pure building blocks shared by anchor's spec model (`anchor-spec`) and its runtime
//! (`anchor-runtime`): duration and retry-interval parsing, retry policies and cron expressions.
//!
//! Nothing in this crate performs I/O, so the validator and the runtime agree on every
//! meaning by construction: `anchor validate`, `anchor cron` and the worker all call the
//! same functions.
#![warn(missing_docs)]

pub mod cron;
pub mod duration;
pub mod queue;
pub mod retry;

pub use duration::{format_duration, parse_duration, DurationError, DEFAULT_TIMEOUT, MAX_DURATION};
pub use queue::{
    is_queue_char, queue_name_problem, LOWEST_PRIORITY, MAX_QUEUE_NAME_LEN, QUEUE_NAME_RULE,
};
pub use retry::{parse_intervals, IntervalError, RetryPolicy};
