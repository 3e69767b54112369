//! Debounced `NOTIFY` after enqueue, so idle workers start new tasks within milliseconds
//! without a notification per row.
//!
//! Enqueues outside a caller's transaction poke the [`Notifier`]; a small background task
//! sends one `pg_notify` at once (leading edge) and then ignores further pokes for
//! [`DEBOUNCE`], after which one more notification covers everything poked meanwhile
//! (trailing edge). Enqueues inside a caller's transaction send `pg_notify` in that
//! transaction instead, which Postgres delivers only on commit.

use std::sync::Mutex;
use std::time::Duration;

use deadpool_postgres::Pool;
use tokio::sync::mpsc;

/// The quiet period after a notification during which further pokes are merged.
pub(crate) const DEBOUNCE: Duration = Duration::from_millis(2);

pub(crate) struct Notifier {
    pool: Pool,
    channel: String,
    /// The poke side of the background task; replaced when that task has gone (its runtime
    /// was shut down), so a client outliving one runtime keeps notifying from the next.
    sender: Mutex<Option<mpsc::Sender<()>>>,
}

impl Notifier {
    pub(crate) fn new(pool: Pool, channel: String) -> Notifier {
        Notifier {
            pool,
            channel,
            sender: Mutex::new(None),
        }
    }

    /// Asks for a notification soon. Never blocks and never fails: a lost notification only
    /// delays a task until the workers' next poll.
    pub(crate) fn poke(&self) {
        let Ok(mut sender) = self.sender.lock() else {
            return;
        };
        if let Some(tx) = sender.as_ref() {
            match tx.try_send(()) {
                // Full means a notification is already due; merged into it.
                Ok(()) | Err(mpsc::error::TrySendError::Full(())) => return,
                Err(mpsc::error::TrySendError::Closed(())) => {}
            }
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (tx, rx) = mpsc::channel(1);
        // The first poke of a fresh task is its first notification.
        let _ = tx.try_send(());
        runtime.spawn(run_notifier(self.pool.clone(), self.channel.clone(), rx));
        *sender = Some(tx);
    }
}

async fn run_notifier(pool: Pool, channel: String, mut rx: mpsc::Receiver<()>) {
    while rx.recv().await.is_some() {
        if let Err(err) = send_notify(&pool, &channel).await {
            tracing::debug!(error = %err, "notify after enqueue failed; workers will poll");
        }
        tokio::time::sleep(DEBOUNCE).await;
    }
}

async fn send_notify(pool: &Pool, channel: &str) -> Result<(), Box<dyn std::error::Error>> {
    let conn = pool.get().await?;
    let stmt = conn.prepare_cached("SELECT pg_notify($1, '')").await?;
    conn.execute(&stmt, &[&channel]).await?;
    Ok(())
}
