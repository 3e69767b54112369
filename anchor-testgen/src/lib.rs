//! Compiles every golden output of `anchor generate` (`testdata/golden/`) with only the
//! dependencies a user's crate has (`anchor-runtime`, `serde`, `serde_json`), and implements
//! executors for the user guide's examples against it. If a template emits Rust that does
//! not compile, or a generated signature stops fitting the documented usage, this crate
//! fails to build.
#![warn(missing_docs)]

include!(concat!(env!("OUT_DIR"), "/golden.rs"));

pub mod seed_executors;
