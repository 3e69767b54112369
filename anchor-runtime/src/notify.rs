//! Debounced `NOTIFY` after enqueue, so idle workers start new tasks within milliseconds
//! without a notification per row.
//!
//! An enqueue outside a caller's transaction first asks [`Notifier::try_inline`]: when no
//! notification went out within [`DEBOUNCE`], the insert statement itself queues one
//! (leading edge, no extra round trip: the idle-latency path). Otherwise it pokes the
//! notifier, whose small background task sends one `pg_notify` once the quiet period is
//! over, covering everything poked meanwhile (trailing edge). Enqueues inside a caller's
//! transaction queue `pg_notify` with their insert, which Postgres delivers only on commit.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use deadpool_postgres::Pool;
use tokio::sync::mpsc;

/// The quiet period after a notification during which further pokes are merged.
pub(crate) const DEBOUNCE: Duration = Duration::from_millis(2);

pub(crate) struct Notifier {
    pool: Pool,
    channel: String,
    /// Whether statements may be prepared on the pool's connections.
    cache: bool,
    /// The poke side of the background task; replaced when that task has gone (its runtime
    /// was shut down), so a client outliving one runtime keeps notifying from the next.
    sender: Mutex<Option<mpsc::Sender<()>>>,
    /// When the last notification was sent or handed to an insert.
    last_sent: std::sync::Arc<Mutex<Option<Instant>>>,
}

impl Notifier {
    pub(crate) fn new(pool: Pool, channel: String, cache: bool) -> Notifier {
        Notifier {
            pool,
            channel,
            cache,
            sender: Mutex::new(None),
            last_sent: std::sync::Arc::new(Mutex::new(None)),
        }
    }

    /// Whether the caller's insert should queue the notification itself: true (and the
    /// quiet period starts now) when none went out within [`DEBOUNCE`].
    pub(crate) fn try_inline(&self) -> bool {
        let Ok(mut last) = self.last_sent.lock() else {
            return false;
        };
        let now = Instant::now();
        if last.is_some_and(|at| now.duration_since(at) < DEBOUNCE) {
            return false;
        }
        *last = Some(now);
        true
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
        runtime.spawn(run_notifier(
            self.pool.clone(),
            self.channel.clone(),
            self.cache,
            self.last_sent.clone(),
            rx,
        ));
        *sender = Some(tx);
    }
}

async fn run_notifier(
    pool: Pool,
    channel: String,
    cache: bool,
    last_sent: std::sync::Arc<Mutex<Option<Instant>>>,
    mut rx: mpsc::Receiver<()>,
) {
    while rx.recv().await.is_some() {
        if let Ok(mut last) = last_sent.lock() {
            *last = Some(Instant::now());
        }
        if let Err(err) = send_notify(&pool, &channel, cache).await {
            tracing::debug!(error = %err, "notify after enqueue failed; workers will poll");
        }
        tokio::time::sleep(DEBOUNCE).await;
    }
}

async fn send_notify(
    pool: &Pool,
    channel: &str,
    cache: bool,
) -> Result<(), Box<dyn std::error::Error>> {
    let conn = pool.get().await?;
    let mut conn = crate::db::driver::Pooled { conn: &conn, cache };
    crate::db::notify::wake_workers(&mut conn, channel).await?;
    Ok(())
}
