//! Integration tests of the runtime against a real, throwaway PostgreSQL. One test binary;
//! each test gets its own database.

mod at_least_once;
mod basics;
mod control;
mod cron;
mod explain;
mod fencing;
mod handlers;
mod harness;
mod local_dispatch;
mod outage;
mod outcomes;
mod pgbouncer;
mod queues;
mod retention;
mod tls;
mod unregistered;
mod worker;
