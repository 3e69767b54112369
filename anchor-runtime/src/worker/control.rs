//! The worker's control connection: lease renewals and heartbeats run on the dedicated
//! connection the listener holds open for `LISTEN`, not on a pooled one.
//!
//! Tasks may use the same pool as the runtime (the generated `TaskRunner` enqueues through
//! it, executors open transactions on it). When they hold every pooled connection, a
//! renewal that waits for one lets leases expire under running tasks; with self-fencing
//! (`lease.rs`) the worker would then stop its own runs. The control connection keeps that
//! bookkeeping independent of what the tasks do, at no extra connection slot. While it is
//! down (the listener reconnects with backoff) or absent (a client built from a pool
//! alone), the pool is used.

use std::future::Future;
use std::ops::Deref;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;

use crate::client::Client;
use crate::db;
use crate::error::{Error, ErrorKind, Result};

/// The control connection, shared by the listener (which opens it) and the services that
/// run statements on it (renewer, start recorder, heartbeat).
pub(crate) struct Control {
    /// The pool to fall back on while the dedicated connection is down.
    client: Client,
    /// The listener's connection while it is up.
    dedicated: Mutex<Option<Arc<tokio_postgres::Client>>>,
    /// A statement on the dedicated connection got no answer in time: the listener drops
    /// that connection and opens a new one.
    hung: Notify,
    /// The time limit of a statement on it.
    timeout: Duration,
    /// This worker, for the logs.
    worker_id: String,
}

/// A connection for bookkeeping statements: the control connection or a pooled one.
pub(crate) enum ControlConn {
    /// The listener's dedicated connection.
    Dedicated(Arc<tokio_postgres::Client>),
    /// A pooled connection, while the dedicated one is down.
    Pooled(Box<deadpool_postgres::Object>),
}

impl Deref for ControlConn {
    type Target = tokio_postgres::Client;

    fn deref(&self) -> &tokio_postgres::Client {
        match self {
            ControlConn::Dedicated(client) => client,
            ControlConn::Pooled(object) => object,
        }
    }
}

impl ControlConn {
    /// What statements on this connection start with: [`db::CONTROL_TAG`] on the control
    /// connection, so that `pg_stat_activity` tells it from pooled ones; nothing on a pooled
    /// connection.
    pub(crate) fn tag(&self) -> &'static str {
        match self {
            ControlConn::Dedicated(_) => db::CONTROL_TAG,
            ControlConn::Pooled(_) => "",
        }
    }

    /// Runs `call`, a statement on this connection, with `control`'s time limit
    /// ([`Control::timeout`]); `context` names it should the limit pass. A
    /// connection that stops answering without closing (a network partition that sends no
    /// reset, a frozen proxy) would otherwise hold the renewals and heartbeats for as long
    /// as the operating system keeps retransmitting, minutes; on the time limit the
    /// dedicated connection is given up (the listener reconnects) and the next statements
    /// use the pool meanwhile.
    pub(crate) async fn bounded<T>(
        &self,
        control: &Control,
        context: &str,
        call: impl Future<Output = Result<T>>,
    ) -> Result<T> {
        let limit = control.timeout;
        match tokio::time::timeout(limit, call).await {
            Ok(result) => result,
            Err(_) => {
                if let ControlConn::Dedicated(client) = self {
                    tracing::warn!(worker = %control.worker_id, "the control connection stopped answering; reconnecting");
                    control.clear(client);
                    control.hung.notify_one();
                }
                Err(Error::new(
                    ErrorKind::Database,
                    format!(
                        "{context}: the database did not answer within {limit:?} (a dead or \
                         partitioned connection?)"
                    ),
                ))
            }
        }
    }
}

impl Control {
    /// No dedicated connection yet; statements use `client`'s pool until the listener
    /// publishes one. A statement on the dedicated connection may take `timeout`.
    pub(crate) fn new(client: Client, timeout: Duration, worker_id: &str) -> Control {
        Control {
            client,
            dedicated: Mutex::new(None),
            hung: Notify::new(),
            timeout,
            worker_id: worker_id.to_string(),
        }
    }

    /// The time limit of a statement on the control connection for a lease of
    /// `lease_duration`: a quarter of the lease, between 200 ms and 5 s, so that a hung
    /// connection is given up well before the fencer would stop runs whose leases it could
    /// not renew.
    pub(crate) fn timeout_for(lease_duration: Duration) -> Duration {
        (lease_duration / 4).clamp(Duration::from_millis(200), Duration::from_secs(5))
    }

    /// The control connection when it is up, else a pooled one.
    pub(crate) async fn conn(&self) -> Result<ControlConn> {
        let dedicated = self
            .dedicated
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .filter(|client| !client.is_closed());
        match dedicated {
            Some(client) => Ok(ControlConn::Dedicated(client)),
            None => Ok(ControlConn::Pooled(Box::new(self.client.conn().await?))),
        }
    }

    /// Publishes the listener's connection once it is listening.
    pub(crate) fn set(&self, client: Arc<tokio_postgres::Client>) {
        *self.dedicated.lock().unwrap_or_else(|e| e.into_inner()) = Some(client);
    }

    /// Withdraws `client` when its connection ended (unless a newer one replaced it).
    pub(crate) fn clear(&self, client: &Arc<tokio_postgres::Client>) {
        let mut dedicated = self.dedicated.lock().unwrap_or_else(|e| e.into_inner());
        if dedicated.as_ref().is_some_and(|c| Arc::ptr_eq(c, client)) {
            *dedicated = None;
        }
    }

    /// Returns once a statement on the dedicated connection got no answer in time.
    pub(crate) async fn hung(&self) {
        self.hung.notified().await
    }
}

/// How long a pooled connection may sit unused before the worker closes it.
///
/// A worker's pool grows to what its busiest moment needed and, left alone, keeps those
/// connections for ever: slots other services (or this application's own pool) cannot
/// use. The pool hands out the most recently used connection first, so connections beyond
/// what the load needs stay unused and are closed after this long.
pub(crate) const POOL_IDLE_MAX: Duration = Duration::from_secs(30);

/// Closes pooled connections of `client` unused for [`POOL_IDLE_MAX`]; returns how many.
pub(crate) fn prune_idle_connections(client: &Client) -> usize {
    client.close_idle_connections(POOL_IDLE_MAX)
}
