//! The text of the hot-path statements, exactly as the runtime prepares them, so tests can
//! check their plans (`EXPLAIN`) against a large table. Not part of the supported API.

use crate::client::Client;

/// The hot-path statements for one client's schema.
#[doc(hidden)]
#[derive(Debug, Clone)]
pub struct Statements {
    /// The batched claim (`worker/claim.rs`).
    pub claim: String,
    /// The batched, lease-fenced outcome write: completions, retries, failures
    /// (`worker/complete.rs`).
    pub set_outcomes: String,
    /// The rescuer's search for expired leases (`worker/lease.rs`).
    pub rescue_select: String,
    /// The lease renewal (`worker/lease.rs`).
    pub renew: String,
    /// Which leases are still held, when a renewal skipped some (`worker/lease.rs`).
    pub lease_held: String,
    /// Hands unstarted or unfinished tasks back (`worker/lease.rs`).
    pub release: String,
    /// Retention's delete of old completed tasks (`retention.rs`).
    pub prune_completed: String,
}

impl Client {
    /// The hot-path statements as this client's workers run them.
    #[doc(hidden)]
    pub fn statements(&self) -> Statements {
        let sql = self.sql();
        Statements {
            claim: sql.tasks.claim.clone(),
            set_outcomes: sql.tasks.set_outcomes.clone(),
            rescue_select: sql.tasks.rescue_select.clone(),
            renew: sql.tasks.renew.clone(),
            lease_held: sql.tasks.lease_held.clone(),
            release: sql.tasks.release.clone(),
            prune_completed: sql
                .retention
                .statement(crate::db::retention::Finished::Completed)
                .to_string(),
        }
    }
}
