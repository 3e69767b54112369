//! The tasks.yaml model: parse with source positions, validate, and report diagnostics.
#![warn(missing_docs)]

pub mod model;
