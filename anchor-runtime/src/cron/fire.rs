//! Firing ticks: one transaction locks the due schedules, inserts one occurrence each and
//! advances them; plus the two questions a scheduler asks between rounds (when is the next
//! tick, and which schedules has no live worker fired).

use std::time::Duration;

use chrono::{DateTime, Utc};

use anchor_core::cron::Schedule;

use super::register::parse_schedule;
use crate::client::Client;
use crate::db::{self, cron::Unusable};
use crate::enqueue::resolve;
use crate::error::Result;
use crate::registry::Registry;

/// The most schedules one round fires (the next round follows at once when it was full).
pub(crate) const BATCH: i64 = 100;

/// How long past its tick an enabled schedule may wait before a worker that does not run its
/// task disables it as orphaned. Workers that run the task fire it within milliseconds, so
/// only a schedule no live worker knows waits this long.
pub(crate) const ORPHAN_AFTER: Duration = Duration::from_secs(60);

/// The tick after `tick` that a schedule waits for next, given that the database clock reads
/// `now`: the first tick strictly after both. Ticks between `tick` and `now` (missed while no
/// worker ran, or while the database was unreachable) are skipped, which is what makes a
/// missed stretch fire once instead of once per missed tick.
pub(crate) fn next_tick(
    schedule: &Schedule,
    tick: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    schedule.next_after(tick.max(now))
}

/// What one round did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Round {
    /// Due schedules locked (a full batch means more may be due).
    pub locked: usize,
    /// Occurrences inserted.
    pub fired: usize,
}

/// Fires every due schedule of the tasks in `names` (at most [`BATCH`]) in one transaction.
pub(crate) async fn fire_due(
    client: &Client,
    registry: &Registry,
    names: &[String],
    worker_id: &str,
) -> Result<Round> {
    let sql = client.sql();
    let mut conn = client.conn().await?;
    let tx = db::begin(&mut conn, "cannot begin the cron round").await?;
    let due = db::cron::lock_due(&tx, sql, names, BATCH).await?;
    let mut round = Round {
        locked: due.len(),
        fired: 0,
    };
    if due.is_empty() {
        // Nothing locked; ending the transaction either way is the same.
        return Ok(round);
    }
    // (name, queue) of each occurrence inserted, counted once committed.
    let mut fired: Vec<(String, String)> = Vec::new();
    for row in &due {
        let (id, task_name, tick, now) = (row.id, &row.task_name, row.tick, row.now);
        let expression = &row.expression;
        let disable = |detail: String| {
            tracing::error!(
                worker = %worker_id,
                schedule.id = %id,
                task = %task_name,
                key = %row.key,
                error = %detail,
                "cron schedule disabled"
            );
            detail
        };
        let schedule = match parse_schedule(task_name, expression, row.timezone.as_deref()) {
            Ok(schedule) => schedule,
            Err(err) => {
                let detail = disable(format!("{err} (worker {worker_id})"));
                db::cron::disable_invalid(&tx, sql, id, Unusable::Expression, &detail).await?;
                continue;
            }
        };
        let Some(next) = next_tick(&schedule, tick, now) else {
            let detail = disable(format!(
                "cron expression `{expression}` has no fire time after {now}"
            ));
            db::cron::disable_invalid(&tx, sql, id, Unusable::Exhausted, &detail).await?;
            continue;
        };
        // The due query only returns tasks this worker has handlers for, so the definition
        // is known; the occurrence carries its current retry policy, timeout and onFailed.
        let Some(def) = registry.definition(task_name) else {
            continue;
        };
        let task = match resolve(def, &[]) {
            Ok(task) => task,
            Err(err) => {
                let detail = disable(format!("{err} (worker {worker_id})"));
                db::cron::disable_invalid(&tx, sql, id, Unusable::Definition, &detail).await?;
                continue;
            }
        };
        if !row.may_fire {
            db::cron::skip(&tx, sql, id, next).await?;
            tracing::info!(
                worker = %worker_id,
                schedule.id = %id,
                task = %task_name,
                tick = %tick,
                next_fire_at = %next,
                "cron tick skipped: overlap is off and the last occurrence has not finished"
            );
            continue;
        }
        let missed = schedule.next_after(tick).is_some_and(|t| t <= now);
        let occurrence =
            db::cron::insert_occurrence(&tx, sql, &task, &row.payload, id, tick).await?;
        db::cron::advance(&tx, sql, id, next, tick, occurrence).await?;
        match occurrence {
            Some(task_id) => {
                round.fired += 1;
                fired.push((task_name.clone(), task.settings.queue.clone()));
                if missed {
                    tracing::info!(
                        worker = %worker_id,
                        schedule.id = %id,
                        task = %task_name,
                        task.id = %task_id,
                        since = %tick,
                        next_fire_at = %next,
                        "ticks missed while no worker ran fire once"
                    );
                } else {
                    tracing::debug!(
                        worker = %worker_id,
                        schedule.id = %id,
                        task = %task_name,
                        task.id = %task_id,
                        tick = %tick,
                        "cron tick fired"
                    );
                }
            }
            None => tracing::warn!(
                worker = %worker_id,
                schedule.id = %id,
                task = %task_name,
                tick = %tick,
                "cron tick already had an occurrence; advanced without a second one"
            ),
        }
    }
    db::commit(tx, "cannot commit the cron round").await?;
    for (name, queue) in &fired {
        crate::observe::enqueued(name, queue, 1);
    }
    Ok(round)
}

/// How long until the earliest tick of the tasks in `names`, by the database's clock; `None`
/// when they have no enabled schedule.
pub(crate) async fn next_due(client: &Client, names: &[String]) -> Result<Option<Duration>> {
    let conn = client.conn().await?;
    db::cron::next_due(&conn, client.sql(), names).await
}

/// Disables enabled schedules overdue by more than [`ORPHAN_AFTER`] whose task this worker
/// does not run (see `docs/cron.md`, "Removed tasks"); returns how many.
pub(crate) async fn disable_orphans(
    client: &Client,
    names: &[String],
    worker_id: &str,
) -> Result<usize> {
    let conn = client.conn().await?;
    let after_ms = i64::try_from(ORPHAN_AFTER.as_millis()).unwrap_or(i64::MAX);
    let detail = format!(
        "no worker fired it for {}s; disabled by worker {worker_id}, which does not run its \
         task; a worker that runs the task enables it again when it starts",
        ORPHAN_AFTER.as_secs()
    );
    let disabled = db::cron::disable_orphans(&conn, client.sql(), names, after_ms, &detail).await?;
    for schedule in &disabled {
        tracing::warn!(
            worker = %worker_id,
            schedule.id = %schedule.id,
            task = %schedule.task,
            key = %schedule.key,
            "cron schedule disabled: no running worker has its task registered (removed from \
             tasks.yaml, or its cronjob removed?)"
        );
    }
    Ok(disabled.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, s).unwrap()
    }

    fn schedule(expr: &str, tz: Option<&str>) -> Schedule {
        parse_schedule("T", expr, tz).unwrap()
    }

    #[test]
    fn on_time_advances_by_one_tick() {
        let s = schedule("*/2 * * * * *", None);
        let tick = utc(2024, 1, 1, 0, 0, 10);
        // The scheduler ran 40 ms late: the next tick is still the one after `tick`.
        let now = tick + chrono::Duration::milliseconds(40);
        assert_eq!(next_tick(&s, tick, now), Some(utc(2024, 1, 1, 0, 0, 12)));
    }

    #[test]
    fn missed_ticks_are_skipped_to_the_first_after_now() {
        let s = schedule("*/1 * * * * *", None);
        let tick = utc(2024, 1, 1, 0, 0, 10);
        let now = utc(2024, 1, 1, 0, 0, 15) + chrono::Duration::milliseconds(300);
        assert_eq!(next_tick(&s, tick, now), Some(utc(2024, 1, 1, 0, 0, 16)));
        // A daily job down for three days fires once and then waits for tomorrow.
        let daily = schedule("0 3 * * *", None);
        let now = utc(2024, 1, 4, 12, 0, 0);
        assert_eq!(
            next_tick(&daily, utc(2024, 1, 1, 3, 0, 0), now),
            Some(utc(2024, 1, 5, 3, 0, 0))
        );
    }

    #[test]
    fn a_clock_behind_the_tick_never_fires_the_same_tick_again() {
        // The database clock is the only clock used, but even if `now` were before the tick,
        // the next tick is strictly after the one fired.
        let s = schedule("0 * * * * *", None);
        let tick = utc(2024, 1, 1, 0, 5, 0);
        let now = tick - chrono::Duration::seconds(3);
        assert_eq!(next_tick(&s, tick, now), Some(utc(2024, 1, 1, 0, 6, 0)));
    }

    #[test]
    fn day_of_month_or_day_of_week() {
        // Vixie/robfig: with both fields restricted, a day matching either fires. The 13th
        // or any Friday, at noon. 2024-09-06 is a Friday, 2024-09-13 a Friday and the 13th.
        let s = schedule("0 12 13 * 5", None);
        let from = utc(2024, 9, 1, 0, 0, 0);
        let ticks: Vec<_> = s.upcoming(from).take(4).collect();
        assert_eq!(
            ticks,
            vec![
                utc(2024, 9, 6, 12, 0, 0),
                utc(2024, 9, 13, 12, 0, 0),
                utc(2024, 9, 20, 12, 0, 0),
                utc(2024, 9, 27, 12, 0, 0),
            ]
        );
        // October: the 4th (Fri), 11th (Fri), 13th (Sun), 18th (Fri).
        let ticks: Vec<_> = s.upcoming(utc(2024, 10, 1, 0, 0, 0)).take(4).collect();
        assert_eq!(
            ticks,
            vec![
                utc(2024, 10, 4, 12, 0, 0),
                utc(2024, 10, 11, 12, 0, 0),
                utc(2024, 10, 13, 12, 0, 0),
                utc(2024, 10, 18, 12, 0, 0),
            ]
        );
        // Sunday is 0 and 7; names work.
        let sun0 = schedule("0 9 * * 0", None);
        let sun7 = schedule("0 9 * * 7", None);
        let sun = schedule("0 9 * * SUN", None);
        let first = sun0.next_after(from);
        assert_eq!(first, Some(utc(2024, 9, 1, 9, 0, 0)));
        assert_eq!(sun7.next_after(from), first);
        assert_eq!(sun.next_after(from), first);
        // Weekdays only: Friday 2024-09-06 09:00 is followed by Monday the 9th.
        let weekdays = schedule("0 9 * * MON-FRI", None);
        assert_eq!(
            next_tick(
                &weekdays,
                utc(2024, 9, 6, 9, 0, 0),
                utc(2024, 9, 6, 9, 0, 1)
            ),
            Some(utc(2024, 9, 9, 9, 0, 0))
        );
    }

    #[test]
    fn time_zones_and_dst() {
        // 09:00 in New York: 14:00 UTC in winter (EST), 13:00 UTC in summer (EDT).
        let s = schedule("0 9 * * *", Some("America/New_York"));
        assert_eq!(
            s.next_after(utc(2024, 1, 15, 0, 0, 0)),
            Some(utc(2024, 1, 15, 14, 0, 0))
        );
        assert_eq!(
            s.next_after(utc(2024, 7, 15, 0, 0, 0)),
            Some(utc(2024, 7, 15, 13, 0, 0))
        );
        // Across the spring change (2024-03-10), the tick before and after it.
        let before = utc(2024, 3, 9, 14, 0, 0);
        assert_eq!(
            next_tick(&s, before, before),
            Some(utc(2024, 3, 10, 13, 0, 0))
        );
        // 02:30 does not exist in Berlin on 2024-03-31 (clocks jump 02:00 → 03:00): that day
        // has no tick; 02:30 on 2024-10-27 exists twice and fires once, at the first.
        let berlin = schedule("30 2 * * *", Some("Europe/Berlin"));
        assert_eq!(
            next_tick(
                &berlin,
                utc(2024, 3, 30, 1, 30, 0),
                utc(2024, 3, 30, 1, 30, 0)
            ),
            Some(utc(2024, 4, 1, 0, 30, 0))
        );
        assert_eq!(
            berlin.next_after(utc(2024, 10, 26, 23, 0, 0)),
            Some(utc(2024, 10, 27, 0, 30, 0))
        );
        assert_eq!(
            berlin.next_after(utc(2024, 10, 27, 0, 30, 0)),
            Some(utc(2024, 10, 28, 1, 30, 0))
        );
        // Missed ticks in a zone: down from Monday to Thursday noon, Berlin 08:00 daily.
        let daily = schedule("0 8 * * *", Some("Europe/Berlin"));
        assert_eq!(
            next_tick(&daily, utc(2024, 1, 1, 7, 0, 0), utc(2024, 1, 4, 11, 0, 0)),
            Some(utc(2024, 1, 5, 7, 0, 0))
        );
    }

    #[test]
    fn invalid_definitions_are_cron_errors() {
        let err = parse_schedule("Report", "61 * * * *", None).unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::Cron);
        assert!(err.to_string().contains("Report"), "{err}");
        assert!(err.to_string().contains("anchor cron"), "{err}");
        let err = parse_schedule("Report", "0 * * * *", Some("Mars/Olympus")).unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::Cron);
    }
}
