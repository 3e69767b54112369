//! The listener: a dedicated connection (never a pooled one, whose notifications would be
//! dropped) that `LISTEN`s on the schema's channel and wakes the producer on every
//! notification. It reconnects with backoff when the connection dies; the producer's poll
//! covers anything missed meanwhile, and every (re)connect wakes the producer once. The
//! same connection carries lease renewals and heartbeats (`control.rs`).

use std::future::poll_fn;
use std::sync::Arc;
use std::time::Duration;

use tokio_postgres::AsyncMessage;

use crate::connect::{connection_hint, ConnectOptions};

use super::{Backoff, Shared};
use crate::db;

/// How long the `LISTEN` statement may take on a fresh connection.
const LISTEN_TIMEOUT: Duration = Duration::from_secs(10);

/// The listener loop; without connection settings (a client built from a pool only) the
/// worker relies on polling.
pub(crate) async fn run_listener(shared: Arc<Shared>) {
    let Some(options) = shared.client.listen_options().cloned() else {
        tracing::info!(
            worker = %shared.worker_id,
            "no connection settings for LISTEN (client built from a pool); polling only"
        );
        return;
    };
    let mut backoff = Backoff::new();
    loop {
        let started = tokio::time::Instant::now();
        match listen_once(&shared, &options).await {
            Ok(()) => {
                tracing::warn!(worker = %shared.worker_id, "LISTEN connection closed; reconnecting")
            }
            Err(err) => tracing::warn!(
                worker = %shared.worker_id,
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

/// Connects, listens and forwards notifications until the connection ends.
async fn listen_once(
    shared: &Shared,
    options: &ConnectOptions,
) -> Result<(), tokio_postgres::Error> {
    let (client, mut connection) = options.postgres_config().connect(options.tls()).await?;
    let client = Arc::new(client);
    // The connection must be polled for the LISTEN to complete, so drive it and the
    // statement together.
    // One connection listens for new tasks and for cron schedule changes.
    let sql = shared.client.sql();
    let drive = async {
        loop {
            match poll_fn(|cx| connection.poll_message(cx)).await {
                Some(Ok(AsyncMessage::Notification(n))) => {
                    super::scheduler::route_notification(shared, &n)
                }
                Some(Ok(_)) => {}
                Some(Err(err)) => return Err(err),
                None => return Ok(()),
            }
        }
    };
    let listen = async {
        // Bounded like every statement of the runtime's own: a half-open connection would
        // leave the LISTEN waiting for ever.
        match tokio::time::timeout(LISTEN_TIMEOUT, db::notify::listen(&client, sql)).await {
            Ok(result) => result?,
            Err(_) => {
                tracing::warn!(worker = %shared.worker_id, "LISTEN got no answer in time; reconnecting");
                return Ok(());
            }
        }
        tracing::debug!(worker = %shared.worker_id, "listening for new tasks");
        // From now on lease renewals and heartbeats run on this connection too.
        shared.control.set(client.clone());
        // Tasks may have arrived while this connection was down.
        shared.wake_producer();
        std::future::pending::<Result<(), tokio_postgres::Error>>().await
    };
    let result = tokio::select! {
        result = drive => result,
        result = listen => result,
        // A renewal or heartbeat on it got no answer in time: give it up (the socket may
        // be half-open, with nothing ever to arrive) and connect afresh.
        _ = shared.control.hung() => Ok(()),
    };
    shared.control.clear(&client);
    result
}
