//! The listener: a dedicated connection (never a pooled one, whose notifications would be
//! dropped) that `LISTEN`s on the schema's channel and wakes the producer on every
//! notification. It reconnects with backoff when the connection dies; the producer's poll
//! covers anything missed meanwhile, and every (re)connect wakes the producer once. The
//! same connection carries lease renewals and heartbeats (`control.rs`).

use std::future::poll_fn;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio_postgres::{AsyncMessage, Notification};

use super::control::Control;
use super::lease_table::LeaseTable;
use super::{Backoff, ProducerWake};
use crate::client::Client;
use crate::connect::{connection_hint, ConnectOptions};
use crate::db;
use crate::db::notify::Notice;

/// How long the `LISTEN` statement may take on a fresh connection.
const LISTEN_TIMEOUT: Duration = Duration::from_secs(10);

/// The listener of a worker. Not a periodic [`Service`](super::service::Service): it holds
/// one connection for as long as it lives and reconnects with backoff when it ends.
pub(crate) struct Listener {
    client: Client,
    /// Where the connection is published for renewals and heartbeats.
    control: Arc<Control>,
    /// Woken by every notification on the tasks channel, and after every (re)connect.
    producer: Arc<ProducerWake>,
    /// Notified on the cron channel.
    schedules_changed: Arc<Notify>,
    /// Where runs cancelled on the control channel are stopped.
    leases: Arc<LeaseTable>,
    worker_id: String,
}

impl Listener {
    pub(crate) fn new(
        client: Client,
        control: Arc<Control>,
        producer: Arc<ProducerWake>,
        schedules_changed: Arc<Notify>,
        leases: Arc<LeaseTable>,
        worker_id: &str,
    ) -> Listener {
        Listener {
            client,
            control,
            producer,
            schedules_changed,
            leases,
            worker_id: worker_id.to_string(),
        }
    }

    /// The listener loop; without connection settings (a client built from a pool only)
    /// the worker relies on polling.
    pub(crate) async fn run(self) {
        let Some(options) = self.client.listen_options().cloned() else {
            tracing::info!(
                worker = %self.worker_id,
                "no connection settings for LISTEN (client built from a pool); polling only"
            );
            return;
        };
        let mut backoff = Backoff::new();
        loop {
            let started = tokio::time::Instant::now();
            match self.listen_once(&options).await {
                Ok(()) => {
                    tracing::warn!(worker = %self.worker_id, "LISTEN connection closed; reconnecting")
                }
                Err(err) => tracing::warn!(
                    worker = %self.worker_id,
                    error = %crate::error::error_chain(&err),
                    hint = connection_hint(&err, Some(&options)).unwrap_or_default(),
                    "LISTEN connection failed; reconnecting"
                ),
            }
            // A connection that lived a while was healthy: start the backoff afresh.
            if started.elapsed() > Duration::from_secs(30) {
                backoff.reset();
            }
            tokio::time::sleep(backoff.next_delay()).await;
        }
    }

    /// Routes a notification: new tasks wake their queue's producer, schedule changes the
    /// scheduler; a cancellation stops the run if it is here, a pause or resume tells the
    /// queue's producer.
    fn route(&self, notification: &Notification) {
        let sql = self.client.sql();
        match db::notify::notice(sql, notification.channel(), notification.payload()) {
            Some(Notice::Tasks(queue)) => self.producer.wake_queue(queue),
            Some(Notice::Schedules) => self.schedules_changed.notify_one(),
            Some(Notice::Cancel(id)) => {
                self.leases.cancel_run(id);
            }
            Some(Notice::Paused(queue, paused)) => self.producer.set_paused(queue, paused),
            None => tracing::debug!(
                channel = notification.channel(),
                payload = notification.payload(),
                "ignoring a notification this runtime does not know"
            ),
        }
    }

    /// Connects, listens and forwards notifications until the connection ends.
    async fn listen_once(&self, options: &ConnectOptions) -> Result<(), tokio_postgres::Error> {
        let (client, mut connection) = options.postgres_config().connect(options.tls()).await?;
        let client = Arc::new(client);
        // The connection must be polled for the LISTEN to complete, so drive it and the
        // statement together.
        // One connection listens for new tasks and for cron schedule changes.
        let sql = self.client.sql();
        let drive = async {
            loop {
                match poll_fn(|cx| connection.poll_message(cx)).await {
                    Some(Ok(AsyncMessage::Notification(n))) => self.route(&n),
                    Some(Ok(_)) => {}
                    Some(Err(err)) => return Err(err),
                    None => return Ok(()),
                }
            }
        };
        let listen = async {
            // Bounded like every statement of the runtime's own: a half-open connection
            // would leave the LISTEN waiting for ever.
            match tokio::time::timeout(LISTEN_TIMEOUT, db::notify::listen(&client, sql)).await {
                Ok(result) => result?,
                Err(_) => {
                    tracing::warn!(worker = %self.worker_id, "LISTEN got no answer in time; reconnecting");
                    return Ok(());
                }
            }
            tracing::debug!(worker = %self.worker_id, "listening for new tasks");
            // From now on lease renewals and heartbeats run on this connection too.
            self.control.set(client.clone());
            // Tasks may have arrived while this connection was down.
            self.producer.wake();
            std::future::pending::<Result<(), tokio_postgres::Error>>().await
        };
        let result = tokio::select! {
            result = drive => result,
            result = listen => result,
            // A renewal or heartbeat on it got no answer in time: give it up (the socket
            // may be half-open, with nothing ever to arrive) and connect afresh.
            _ = self.control.hung() => Ok(()),
        };
        self.control.clear(&client);
        result
    }
}
