//! One module per subcommand: its flags (`Args`) and `run`, which returns the exit code.
//! An `Err` from `run` is a usage or I/O problem and exits with 2. `connect` and `output`
//! are what the database commands share: their flags and client, tables and colour.

pub mod connect;
pub mod cron;
pub mod generate;
pub mod listing;
pub mod migrate;
pub mod output;
pub mod queues;
pub mod schedules;
pub mod tasks;
pub mod validate;
