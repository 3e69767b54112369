//! Scenario 6: a burst of 50,000 tasks enqueued at once while workers run.

use std::time::{Duration, Instant};

use anchor_chaos::zgen::taskgen::WorkParameters;
use anyhow::Result;

use crate::support::{print_figures, scenario, shared_cluster, wait_for, ChaosDb, Expect};

const WORKER_FLAGS: &[&str] = &["--concurrency", "25", "--lease-ms", "2000"];

#[test]
fn a_burst_of_50000_tasks_runs_each_once() -> Result<()> {
    scenario(async {
        let db = ChaosDb::create(shared_cluster(), "burst").await?;
        let mut workers = Vec::new();
        for i in 0..3 {
            workers.push(db.spawn_worker(&format!("w{i}"), WORKER_FLAGS).await?);
        }
        // The workers are busy with a trickle when the burst lands.
        db.enqueue_work(0, 500, 5).await?;
        wait_for("the trickle to start", Duration::from_secs(60), || async {
            Ok((db.count_status("Work", 2).await? > 0).then_some(()))
        })
        .await?;
        let burst = 50_000;
        let params: Vec<WorkParameters> = (1_000_000..1_000_000 + burst)
            .map(|n| WorkParameters { n, sleep_ms: 0 })
            .collect();
        let enqueue_started = Instant::now();
        // One statement, one transaction: the burst appears at once.
        db.runner.run_work_many(&params, &[]).await?;
        let enqueued_in = enqueue_started.elapsed();
        db.wait_until_settled(&["Work"], Duration::from_secs(300))
            .await?;
        let drained_in = enqueue_started.elapsed();
        let report = db
            .stop_and_check(
                workers,
                &Expect {
                    completed: vec!["Work"],
                    ..Expect::default()
                },
            )
            .await?;
        print_figures(
            "burst of 50000 tasks in one enqueue",
            &report,
            &format!(
                " | enqueued in {enqueued_in:.2?} | drained in {drained_in:.2?} ({:.0} tasks/s)",
                (burst + 500) as f64 / drained_in.as_secs_f64()
            ),
        );
        report.assert_clean()?;
        assert_eq!(report.tasks, burst + 500);
        Ok(())
    })
}
