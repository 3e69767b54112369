//! Scenario 8: graceful shutdown (SIGTERM) with tasks in flight, and a worker whose task
//! never returns.

use std::time::Duration;

use anchor_chaos::zgen::taskgen::HangParameters;
use anyhow::{ensure, Result};

use crate::support::{print_figures, scenario, shared_cluster, wait_for, ChaosDb, Expect};

#[test]
fn sigterm_finishes_in_flight_tasks_and_releases_a_stuck_one() -> Result<()> {
    scenario(async {
        let db = ChaosDb::create(shared_cluster(), "shutdown").await?;

        // 1. SIGTERM while tasks run: they finish within the grace period, their outcomes
        //    are written, and what was claimed but not started goes back at once.
        let first = db
            .spawn_worker("w0", &["--concurrency", "10", "--grace-ms", "10000"])
            .await?;
        db.enqueue_work(0, 300, 300).await?;
        let holds = format!(
            "SELECT count(*) FROM anchor.tasks WHERE status = 1 AND lease_owner = '{}'",
            first.id
        );
        wait_for(
            "the worker to run a full batch",
            Duration::from_secs(60),
            || async { Ok((db.scalar(&holds).await? >= 10).then_some(())) },
        )
        .await?;
        let first_id = first.id.clone();
        let took = first.stop(Duration::from_secs(40)).await?;
        let left_running = db.scalar(&holds).await?;
        let aborted = db
            .scalar(&format!(
                "SELECT count(*) FROM chaos.ledger WHERE worker = '{first_id}' \
                 AND outcome IS DISTINCT FROM 'ok'"
            ))
            .await?;
        ensure!(
            left_running == 0,
            "{left_running} tasks still leased to the stopped worker"
        );
        ensure!(
            aborted == 0,
            "{aborted} in-flight runs were cut short despite the grace period"
        );

        // A fresh worker finishes what the first one handed back.
        let third = db.spawn_worker("w2", &["--concurrency", "20"]).await?;
        db.wait_until_settled(&["Work"], Duration::from_secs(120))
            .await?;
        third.stop(Duration::from_secs(30)).await?;

        // 2. A task that never returns: shutdown waits out the grace period, stops it and
        //    hands it back (pending, no failure recorded; its run started, so it counts as an
        //    attempt) instead of hanging forever.
        let second = db
            .spawn_worker("w1", &["--concurrency", "10", "--grace-ms", "1000"])
            .await?;
        let hangs: Vec<HangParameters> = (0..3).map(|n| HangParameters { n }).collect();
        let hang_ids = db.runner.run_hang_many(&hangs, &[]).await?;
        let hanging = format!(
            "SELECT count(*) FROM chaos.ledger WHERE task_name = 'Hang' AND worker = '{}'",
            second.id
        );
        wait_for(
            "the stuck tasks to start",
            Duration::from_secs(60),
            || async { Ok((db.scalar(&hanging).await? == 3).then_some(())) },
        )
        .await?;
        let second_id = second.id.clone();
        let stuck_exit = second.stop(Duration::from_secs(30)).await?;
        let released = db
            .scalar(
                "SELECT count(*) FROM anchor.tasks WHERE name = 'Hang' AND status = 0 \
                 AND attempts = 1 AND failures = 0 AND lease_owner IS NULL",
            )
            .await?;
        ensure!(
            released == 3,
            "only {released} of 3 stuck tasks were released"
        );
        let aborted_hangs = db
            .scalar(&format!(
                "SELECT count(*) FROM chaos.ledger WHERE worker = '{second_id}' \
                 AND task_name = 'Hang' AND outcome = 'aborted'"
            ))
            .await?;
        ensure!(
            aborted_hangs == 3,
            "{aborted_hangs} of 3 stuck runs recorded as aborted"
        );
        // Nobody should run them again in this test.
        for id in hang_ids {
            ensure!(
                db.client.cancel_task(id).await?,
                "cannot cancel stuck task {id}"
            );
        }

        let report = db
            .check(&Expect {
                completed: vec!["Work"],
                ..Expect::default()
            })
            .await?;
        print_figures(
            "SIGTERM with tasks in flight; a task that never returns",
            &report,
            &format!(
                " | in-flight shutdown took {took:.2?} | stuck-task shutdown took {stuck_exit:.2?} \
                 (grace 1 s) | stuck tasks released 3/3"
            ),
        );
        report.assert_clean()?;
        Ok(())
    })
}
