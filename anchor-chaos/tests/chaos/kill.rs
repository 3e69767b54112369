//! Scenario 1: `kill -9` of worker processes mid-batch, repeatedly.

use std::time::{Duration, Instant};

use anchor_chaos::zgen::taskgen::DoomedParameters;
use anyhow::Result;

use crate::support::{print_figures, scenario, shared_cluster, wait_for, ChaosDb, Expect};

const WORKER_FLAGS: &[&str] = &["--concurrency", "10", "--lease-ms", "2000"];

#[test]
fn kill_9_during_a_batch_loses_nothing_and_runs_nothing_twice_at_once() -> Result<()> {
    scenario(async {
        let db = ChaosDb::create(shared_cluster(), "kill9").await?;
        let tasks = 5_000;
        let kills = 5;
        let mut workers = Vec::new();
        for i in 0..3 {
            workers.push(db.spawn_worker(&format!("w{i}"), WORKER_FLAGS).await?);
        }
        let started = Instant::now();
        db.enqueue_work(0, tasks, 20).await?;
        // Failures go through the kills too: each must end failed with exactly one handler,
        // whether its worker or a rescuer failed it.
        let doomed: Vec<DoomedParameters> = (0..200).map(|n| DoomedParameters { n }).collect();
        db.runner.run_doomed_many(&doomed, &[]).await?;
        let mut progress = 0;
        for k in 0..kills {
            // Kill mid-batch: after some progress, while the victim holds leases.
            progress += 400;
            wait_for(
                "progress before the next kill",
                Duration::from_secs(120),
                || async { Ok((db.count_status("Work", 2).await? >= progress).then_some(())) },
            )
            .await?;
            let victim = workers.remove(0);
            let holds = format!(
                "SELECT count(*) FROM anchor.tasks WHERE status = 1 AND lease_owner = '{}'",
                victim.id
            );
            wait_for(
                "the victim to hold leases",
                Duration::from_secs(60),
                || async { Ok((db.scalar(&holds).await? > 0).then_some(())) },
            )
            .await?;
            victim.kill9(&db).await?;
            // A replacement comes up, as an orchestrator would restart the process.
            workers.push(db.spawn_worker(&format!("w{k}r"), WORKER_FLAGS).await?);
        }
        db.wait_until_settled(
            &["Work", "Doomed", "DoomedFailed"],
            Duration::from_secs(240),
        )
        .await?;
        let elapsed = started.elapsed();
        for mut worker in workers {
            worker.assert_alive()?;
            worker.stop(Duration::from_secs(30)).await?;
        }
        let report = db
            .check(&Expect {
                completed: vec!["Work", "DoomedFailed"],
                failed_with_handler: vec!["Doomed"],
            })
            .await?;
        let rescued = db.rescues().await?;
        let recovery = db.kill_recovery_seconds().await?;
        print_figures(
            "kill -9 x5 during 5000 tasks and 200 failing ones",
            &report,
            &format!(" | rescued {rescued} | recovery time {recovery:.2}s | total {elapsed:.1?}"),
        );
        report.assert_clean()?;
        assert_eq!(
            report.tasks,
            tasks + 400,
            "Work, 200 Doomed, 200 DoomedFailed"
        );
        assert_eq!(
            report.handlers, 200,
            "exactly one onFailed handler per doomed task"
        );
        assert!(
            rescued > 0,
            "the kills interrupted no task: the scenario tested nothing"
        );
        Ok(())
    })
}
