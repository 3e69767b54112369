//! Scenario 7: racing schedulers around cron ticks. Three workers all run the scheduler of
//! a `*/1 * * * * *` task; workers are killed (-9) just after tick boundaries, when a
//! scheduler may be inside its firing transaction, and replaced.
//!
//! Two schedulers are always up (a replacement starts after each kill), so there is no
//! downtime and no catch-up: every whole second from the first tick to the last one has
//! exactly one occurrence, none missing and none doubled, and the ticks cover the whole
//! run (from before the first kill to the pause).
//!
//! Clock skew between the workers is the subject of the next scenario (`skew.rs`).

use std::time::Duration;

use anchor_runtime::chrono::{Timelike, Utc};
use anyhow::Result;

use crate::support::{print_figures, scenario, shared_cluster, ChaosDb, Expect};

const WORKER_FLAGS: &[&str] = &["--concurrency", "5", "--lease-ms", "2000"];

/// Sleeps until `offset` past the next whole second (the tick of a `*/1` schedule).
async fn sleep_until_after_tick(offset: Duration) {
    let now = Utc::now();
    let into_second = Duration::from_nanos(u64::from(now.nanosecond() % 1_000_000_000));
    let wait = Duration::from_secs(1).saturating_sub(into_second) + offset;
    tokio::time::sleep(wait).await;
}

#[test]
fn racing_schedulers_fire_each_tick_once() -> Result<()> {
    scenario(async {
        let db = ChaosDb::create(shared_cluster(), "cron").await?;
        let mut workers = Vec::new();
        for i in 0..3 {
            workers.push(db.spawn_worker(&format!("w{i}"), WORKER_FLAGS).await?);
        }
        tokio::time::sleep(Duration::from_secs(3)).await;
        let db_now = "SELECT extract(epoch FROM now())::float8";
        let first_kill_at = db.scalar_f64(db_now).await?;
        // Kill a scheduler at different points just after a tick, when one of them is
        // locking the schedule, inserting the occurrence and advancing it.
        for (k, offset_ms) in [0u64, 2, 5, 10].into_iter().enumerate() {
            sleep_until_after_tick(Duration::from_millis(offset_ms)).await;
            let victim = workers.remove(0);
            victim.kill9(&db).await?;
            workers.push(db.spawn_worker(&format!("w{k}r"), WORKER_FLAGS).await?);
        }
        tokio::time::sleep(Duration::from_secs(3)).await;
        // Stop the ticks, so that every occurrence can be expected to finish.
        let paused_at = db.scalar_f64(db_now).await?;
        for schedule in db.client.schedules().await? {
            db.client.pause_schedule(schedule.id).await?;
        }
        // Occurrences the killed workers held come back through rescue and finish.
        db.wait_until_settled(&["Tick"], Duration::from_secs(60))
            .await?;
        let report = db
            .stop_and_check(
                workers,
                &Expect {
                    completed: vec!["Tick"],
                    ..Expect::default()
                },
            )
            .await?;
        let span = db
            .scalar(
                "SELECT coalesce(extract(epoch FROM max(cron_tick_at) - min(cron_tick_at)), 0)::bigint \
                 FROM anchor.tasks WHERE name = 'Tick'",
            )
            .await?;
        anyhow::ensure!(report.cron_occurrences > 0, "no tick fired at all");
        let first_tick = db
            .scalar_f64(
                "SELECT extract(epoch FROM min(cron_tick_at))::float8 FROM anchor.tasks \
                 WHERE name = 'Tick'",
            )
            .await?;
        let last_tick = db
            .scalar_f64(
                "SELECT extract(epoch FROM max(cron_tick_at))::float8 FROM anchor.tasks \
                 WHERE name = 'Tick'",
            )
            .await?;
        // Every whole second of the window: how many occurrences carry it as their tick.
        // A second with none is a skipped tick, one with two a double fire; an occurrence
        // whose tick is not a whole second of the window would show as a mismatch too.
        let (skipped, doubled, off_grid) = {
            let admin = db.admin().await?;
            let row = admin
                .query_one(
                    "WITH ticks AS (SELECT cron_tick_at AS at FROM anchor.tasks WHERE name = 'Tick'), \
                     grid AS (SELECT generate_series(min(at), max(at), interval '1 second') AS at \
                              FROM ticks), \
                     per_second AS (SELECT g.at, (SELECT count(*) FROM ticks t WHERE t.at = g.at) AS n \
                                    FROM grid g) \
                     SELECT (SELECT count(*) FROM per_second WHERE n = 0), \
                            (SELECT count(*) FROM per_second WHERE n > 1), \
                            (SELECT count(*) FROM ticks t WHERE NOT EXISTS \
                               (SELECT 1 FROM grid g WHERE g.at = t.at))",
                    &[],
                )
                .await?;
            (
                row.get::<_, i64>(0),
                row.get::<_, i64>(1),
                row.get::<_, i64>(2),
            )
        };
        print_figures(
            "racing schedulers, 4 kills just after ticks",
            &report,
            &format!(
                " | ticks spanned {span} s | skipped ticks {skipped} | doubled ticks {doubled} \
                 | ticks off the second {off_grid} | first tick {:.1} s before the first kill, \
                 last {:.1} s before the pause",
                first_kill_at - first_tick,
                paused_at - last_tick
            ),
        );
        report.assert_clean()?;
        anyhow::ensure!(
            skipped == 0 && doubled == 0 && off_grid == 0,
            "every second from the first tick to the last must have exactly one occurrence: \
             {skipped} skipped, {doubled} doubled, {off_grid} off the second"
        );
        // The window is the whole run: ticks fired before the first kill and went on until
        // the pause (a scheduler that stopped for good would leave a short, clean window).
        anyhow::ensure!(
            first_tick <= first_kill_at - 1.0,
            "the first tick came {:.1} s after the first kill",
            first_tick - first_kill_at
        );
        anyhow::ensure!(
            last_tick >= paused_at - 2.0,
            "the last tick came {:.1} s before the pause: ticks stopped early",
            paused_at - last_tick
        );
        Ok(())
    })
}
