//! The producer: claims due tasks in batches up to free capacity and starts them.
//!
//! One statement (`db::tasks::claim`) selects up to `free + prefetch` due tasks this worker has
//! handlers for with `FOR UPDATE SKIP LOCKED` and leases them under a fresh random token.
//! The producer claims again as soon as the buffer is empty and a slot is free while the
//! last claim came back full (a backlog), and otherwise sleeps until a notification, a
//! retry timer or the poll tick.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::complete::{Finished, Message, Outcome};
use super::lanes::Lane;
use super::{execute, lease, Backoff, Shared};
use crate::claimed::{ClaimedTask, UnreadableRow};
use crate::db;
use crate::error::Result;
use crate::settings::TaskSettings;

/// What one claim returned: tasks to run, and rows that cannot be read (failed at once by
/// the producer, fenced by the claim's token).
pub(crate) struct Claimed {
    pub tasks: Vec<ClaimedTask>,
    pub unreadable: Vec<UnreadableRow>,
    pub token: i64,
}

/// Claims up to `limit` due tasks of `lane`.
async fn claim_batch(shared: &Shared, lane: &Lane, limit: usize) -> Result<Claimed> {
    let conn = shared.client.conn().await?;
    let token: i64 = rand::random();
    let request = db::tasks::ClaimRequest {
        queue: &lane.queue,
        names: &lane.names,
        limit: i64::try_from(limit).unwrap_or(i64::MAX),
        worker_id: &shared.worker_id,
        token,
        lease_ms: shared.lease_ms(),
    };
    let rows = db::tasks::claim(&conn, shared.client.sql(), &request).await?;
    let mut claimed = Claimed {
        tasks: Vec::with_capacity(rows.len()),
        unreadable: Vec::new(),
        token,
    };
    for row in rows {
        match row {
            Ok(task) => claimed.tasks.push(task),
            Err(bad) => claimed.unreadable.push(bad),
        }
    }
    Ok(claimed)
}

/// How long a claimed task may wait in the local buffer for a free slot before it is handed
/// back, so that tasks held behind long-running ones go to workers with free capacity.
const BUFFER_TTL: Duration = Duration::from_secs(1);

/// The largest buffer an adaptive worker grows to (what graphile-worker's documented
/// high-throughput setting uses).
const MAX_PREFETCH: usize = 500;

/// A backlog drained this soon after the last claim means short tasks: claim more per trip.
const FAST_DRAIN: Duration = Duration::from_millis(50);

/// A buffer that took this long to drain means long tasks: fall back to the base prefetch.
const SLOW_DRAIN: Duration = Duration::from_millis(500);

/// The next claim's prefetch. While a backlog lasts and each claimed batch drains within
/// [`FAST_DRAIN`], the buffer doubles up to `max`, so short tasks cost a fraction of a round
/// trip each; once batches drain slowly (long tasks) it returns to `base`, so a worker never
/// sits on many tasks that other workers could start. Tasks held too long are handed back
/// regardless (`BUFFER_TTL`), which also resets it.
fn adapt_prefetch(
    current: usize,
    base: usize,
    max: usize,
    backlog: bool,
    last_claim_at: Option<Instant>,
) -> usize {
    match last_claim_at.map(|at| at.elapsed()) {
        Some(since) if backlog && since < FAST_DRAIN => (current.max(1) * 2).min(max),
        Some(since) if since < SLOW_DRAIN => current,
        _ => base,
    }
}

/// The producer loop of lane `lane` (one queue); returns when the worker stops.
///
/// Claims fetch the free slots' worth of tasks plus up to `prefetch` more into a local
/// buffer, so a busy worker makes one round trip per many tasks; the buffer feeds slots as
/// they free up, with no database call. While a backlog lasts, the next claim is already in
/// flight when the buffer is nearly empty (half a round of slots left), so slots keep being
/// fed during the round trip while claims stay large.
/// With an empty buffer a claim is made only when a slot is free, so a worker never hoards
/// work while all its slots are busy.
/// While the queue is announced paused, buffered tasks are handed back instead of started
/// (the claim itself finds nothing in a paused queue).
pub(crate) async fn run_producer(shared: Arc<Shared>, lane_index: usize) {
    let lane = shared.producer.lane(lane_index);
    let mut stop = shared.stop.subscribe();
    let mut backoff = Backoff::new();
    let concurrency = lane.concurrency;
    let base_prefetch = lane.base_prefetch(&shared.config);
    // Without an explicit prefetch the buffer adapts to how fast tasks drain (see
    // `adapt_prefetch`); an explicit one is kept as given.
    let max_prefetch = if shared.config.prefetch.is_some() {
        base_prefetch
    } else {
        MAX_PREFETCH.max(base_prefetch)
    };
    let mut prefetch = base_prefetch;
    let mut last_claim_at: Option<Instant> = None;
    let mut buffer: VecDeque<(Instant, ClaimedTask)> = VecDeque::new();
    // Whether there may be due tasks: set by wake-ups and by full claims, cleared when a
    // claim starts.
    let mut should_claim = true;
    let mut backlog = false;
    let mut in_flight: Option<(usize, ClaimFuture<'_>)> = None;
    let mut retry_at: Option<tokio::time::Instant> = None;
    // The lane's pause notices when the claim in flight was sent.
    let mut claim_pause_notices = 0;
    let buffered = crate::observe::claim_buffer(&lane.queue);
    loop {
        if shared.stopping() {
            break;
        }
        let paused = lane.paused.load(Ordering::Acquire);
        // Feed free slots from the buffer.
        while !paused && lane.executing.load(Ordering::SeqCst) < concurrency {
            let Some((_, task)) = buffer.pop_front() else {
                break;
            };
            execute::spawn_execution(&shared, lane_index, task);
        }
        // Hand back what waited too long behind busy slots, or what a pause holds back.
        if buffer
            .front()
            .is_some_and(|(at, _)| paused || at.elapsed() > BUFFER_TTL)
        {
            let stale: Vec<ClaimedTask> = buffer.drain(..).map(|(_, t)| t).collect();
            lease::release(&shared, &stale).await;
            prefetch = base_prefetch;
        }
        let running = lane.executing.load(Ordering::SeqCst);
        let may_claim = if buffer.is_empty() {
            running < concurrency
        } else {
            backlog && buffer.len() <= concurrency / 2
        };
        let ready = in_flight.is_none() && retry_at.is_none() && should_claim && may_claim;
        if ready {
            prefetch = adapt_prefetch(
                prefetch,
                base_prefetch,
                max_prefetch,
                backlog,
                last_claim_at,
            );
        }
        let room = (concurrency + prefetch).saturating_sub(running + buffer.len());
        if ready && room > 0 {
            last_claim_at = Some(Instant::now());
            claim_pause_notices = lane.pause_notices.load(Ordering::Acquire);
            in_flight = Some((
                room,
                Box::pin(
                    shared
                        .client
                        .bounded("claiming tasks", claim_batch(&shared, lane, room)),
                ),
            ));
            // A wake-up that arrives while the claim is in flight may concern a task the
            // claim's snapshot misses: it sets the flag again and is honoured afterwards.
            should_claim = false;
        }
        buffered.set(buffer.len() as f64);
        lane.set_drained(
            !paused && buffer.is_empty() && !backlog && !should_claim && in_flight.is_none(),
        );
        tokio::select! {
            result = async {
                match in_flight.as_mut() {
                    Some((_, claim)) => claim.await,
                    None => std::future::pending().await,
                }
            } => {
                let want = in_flight.take().map_or(0, |(want, _)| want);
                match result {
                    Ok(Claimed { tasks: batch, unreadable, token }) => {
                        backoff.reset();
                        backlog = batch.len() + unreadable.len() == want;
                        // The claim found the queue running: a resume notice was missed. Not
                        // when a pause was announced after the claim was sent: its snapshot
                        // predates the pause.
                        if !batch.is_empty()
                            && lane.pause_notices.load(Ordering::Acquire) == claim_pause_notices
                        {
                            lane.paused.store(false, Ordering::Release);
                        }
                        if !unreadable.is_empty() {
                            fail_unreadable(&shared, unreadable, token).await;
                        }
                        should_claim |= backlog;
                        if !batch.is_empty() {
                            tracing::trace!(count = batch.len(), "claimed tasks");
                        }
                        // Buffered tasks hold leases too: the renewer must keep them alive.
                        shared.leases.track(&batch);
                        let now = Instant::now();
                        buffer.extend(batch.into_iter().map(|t| (now, t)));
                    }
                    Err(err) => {
                        should_claim = true;
                        let delay = backoff.next_delay();
                        tracing::warn!(
                            worker = %shared.worker_id,
                            error = %err,
                            retry_in = ?delay,
                            "claiming failed; backing off"
                        );
                        retry_at = Some(tokio::time::Instant::now() + delay);
                    }
                }
            }
            _ = async {
                match retry_at {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            } => {
                retry_at = None;
                should_claim = true;
            }
            _ = lane.notified() => should_claim = true,
            _ = lane.slot_freed.notified() => should_claim |= backlog,
            _ = tokio::time::sleep(shared.config.poll_interval) => should_claim = true,
            _ = stop.changed() => {}
        }
    }
    lane.set_drained(false);
    buffered.set(0.0);
    // A claim already sent may have leased tasks: wait for it so they can be handed back.
    let mut unstarted: Vec<ClaimedTask> = buffer.into_iter().map(|(_, t)| t).collect();
    if let Some((_, claim)) = in_flight.take() {
        if let Ok(Claimed {
            tasks,
            unreadable,
            token,
        }) = claim.await
        {
            shared.leases.track(&tasks);
            unstarted.extend(tasks);
            fail_unreadable(&shared, unreadable, token).await;
        }
    }
    // Tasks claimed but never started go back at once.
    lease::release(&shared, &unstarted).await;
    tracing::debug!(worker = %shared.worker_id, "producer stopped claiming");
}

/// A claim statement in flight.
type ClaimFuture<'a> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<Claimed>> + Send + 'a>>;

/// Hands claimed rows that cannot be read to the completer as permanent failures (fenced
/// by the claim's token), so that a row edited by hand is recorded as failed instead of
/// stopping the producer or coming back on every claim.
async fn fail_unreadable(shared: &Arc<Shared>, rows: Vec<UnreadableRow>, token: i64) {
    for row in rows {
        tracing::error!(task.id = %row.id, error = %row.message, "claimed a task whose row cannot be read; failing it");
        let task = ClaimedTask {
            id: row.id,
            name: row.name,
            payload: String::new(),
            attempt: 0,
            failures: 0,
            settings: TaskSettings {
                on_failed: row.on_failed,
                ..TaskSettings::unknown()
            },
            parent_id: None,
            rescues: 0,
            token,
            leased_at: Instant::now(),
            due: None,
        };
        shared.leases.track(std::slice::from_ref(&task));
        let finished = Finished {
            task,
            outcome: Outcome::Failed {
                message: row.message,
                fatal: true,
            },
        };
        if shared
            .completer
            .send(Message::Finished(Box::new(finished)))
            .await
            .is_err()
        {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefetch_grows_on_fast_backlogs_and_falls_back() {
        let just_now = Some(Instant::now());
        // A backlog drained fast: double, up to the maximum.
        assert_eq!(adapt_prefetch(40, 40, 500, true, just_now), 80);
        assert_eq!(adapt_prefetch(400, 40, 500, true, just_now), 500);
        // No backlog: keep what was reached.
        assert_eq!(adapt_prefetch(160, 40, 500, false, just_now), 160);
        // The first claim, or a slow drain (long tasks): back to the base.
        assert_eq!(adapt_prefetch(160, 40, 500, true, None), 40);
        let long_ago = Instant::now().checked_sub(Duration::from_secs(1));
        assert_eq!(adapt_prefetch(160, 40, 500, true, long_ago), 40);
        // A fixed prefetch (max = base) never grows.
        assert_eq!(adapt_prefetch(40, 40, 40, true, just_now), 40);
    }
}
