//! Scenario 7: racing schedulers around cron ticks. Three workers all run the scheduler of
//! a `*/1 * * * * *` task; workers are killed (-9) just after tick boundaries, when a
//! scheduler may be inside its firing transaction, and replaced.
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
        print_figures(
            "racing schedulers, 4 kills just after ticks",
            &report,
            &format!(" | ticks spanned {span} s"),
        );
        report.assert_clean()?;
        anyhow::ensure!(report.cron_occurrences > 0, "no tick fired at all");
        Ok(())
    })
}
