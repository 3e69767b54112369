//! Scenario 2: PostgreSQL restarted (fast and immediate shutdown) while workers run.

use std::time::{Duration, Instant};

use anchor_chaos::zgen::taskgen::DoomedParameters;
use anyhow::Result;

use crate::support::{print_figures, scenario, start_cluster, wait_for, ChaosDb, Expect};

const WORKER_FLAGS: &[&str] = &["--concurrency", "10", "--lease-ms", "2000"];

#[test]
fn database_restarts_fast_and_immediate_lose_nothing() -> Result<()> {
    scenario(async {
        // A cluster of its own: the other scenarios' databases must not go down with it.
        let cluster = start_cluster(100, true);
        let db = ChaosDb::create(&cluster, "restart").await?;
        let workers = vec![
            db.spawn_worker("w0", WORKER_FLAGS).await?,
            db.spawn_worker("w1", WORKER_FLAGS).await?,
        ];
        db.enqueue_work(0, 5_000, 10).await?;
        // Failures and their onFailed handlers go through the restarts too.
        let doomed: Vec<DoomedParameters> = (0..20).map(|n| DoomedParameters { n }).collect();
        db.runner.run_doomed_many(&doomed, &[]).await?;
        let mut recoveries = Vec::new();
        for (k, mode) in ["fast", "immediate", "fast", "immediate"]
            .into_iter()
            .enumerate()
        {
            // Restart at fixed points of progress, well before the 5 000 tasks are done.
            let progress = 500 * (k as i64 + 1);
            wait_for(
                "progress before the restart",
                Duration::from_secs(120),
                || async { Ok((db.count_status("Work", 2).await? >= progress).then_some(())) },
            )
            .await?;
            cluster.restart(mode).await?;
            let back = Instant::now();
            // Recovery: the first completion after the server is back.
            let before = wait_for(
                "the database after the restart",
                Duration::from_secs(60),
                || async { Ok(db.count_status("Work", 2).await.ok()) },
            )
            .await?;
            wait_for(
                "work to resume after the restart",
                Duration::from_secs(60),
                || async {
                    Ok(
                        matches!(db.count_status("Work", 2).await, Ok(n) if n > before)
                            .then_some(()),
                    )
                },
            )
            .await?;
            recoveries.push(format!("{mode} {:.2?}", back.elapsed()));
        }
        // Enqueueing works again after the restarts, and the new tasks run.
        db.enqueue_work(1_000_000, 200, 0).await?;
        db.wait_until_settled(
            &["Work", "Doomed", "DoomedFailed"],
            Duration::from_secs(240),
        )
        .await?;
        let report = db
            .stop_and_check(
                workers,
                &Expect {
                    completed: vec!["Work", "DoomedFailed"],
                    failed_with_handler: vec!["Doomed"],
                },
            )
            .await?;
        print_figures(
            "PostgreSQL restarted fast, immediate, fast, immediate",
            &report,
            &format!(
                " | recovery time (server back -> work resumed) {}",
                recoveries.join(", ")
            ),
        );
        report.assert_clean()?;
        assert_eq!(
            report.tasks, 5_240,
            "5 200 Work, 20 Doomed, 20 DoomedFailed"
        );
        assert_eq!(report.handlers, 20, "one onFailed handler per doomed task");
        Ok(())
    })
}
