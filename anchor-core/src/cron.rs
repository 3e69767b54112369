//! Cron expressions (written by the spec/validate work).
