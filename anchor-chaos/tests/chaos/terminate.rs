//! Scenario 3: `pg_terminate_backend` on every connection of the workers, the LISTEN
//! connection included.

use std::time::{Duration, Instant};

use anyhow::Result;

use crate::support::{print_figures, scenario, shared_cluster, wait_for, ChaosDb, Expect};

/// Polling is slowed to 30 s so that tasks can only start this quickly if the LISTEN
/// connection came back after being terminated.
const WORKER_FLAGS: &[&str] = &[
    "--concurrency",
    "10",
    "--lease-ms",
    "2000",
    "--poll-ms",
    "30000",
];

#[test]
fn terminated_backends_including_listen_lose_nothing() -> Result<()> {
    scenario(async {
        let db = ChaosDb::create(shared_cluster(), "terminate").await?;
        let workers = vec![
            db.spawn_worker("w0", WORKER_FLAGS).await?,
            db.spawn_worker("w1", WORKER_FLAGS).await?,
        ];
        db.enqueue_work(0, 3_000, 10).await?;
        let terminate = format!(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE application_name LIKE '{}\\_w%'",
            db.name
        );
        // The LISTEN connection is the worker's control connection: every statement on it
        // (LISTEN, then lease renewals and heartbeats) carries the runtime's tag.
        let listening = format!(
            "SELECT count(DISTINCT application_name) FROM pg_stat_activity \
             WHERE application_name LIKE '{}\\_w%' \
               AND query LIKE '/* anchor worker control */%'",
            db.name
        );
        let mut terminated = 0;
        let mut progress = 0;
        for _round in 0..5 {
            progress += 400;
            wait_for(
                "progress before terminating",
                Duration::from_secs(120),
                || async { Ok((db.count_status("Work", 2).await? >= progress).then_some(())) },
            )
            .await?;
            terminated += db.scalar(&terminate).await?;
        }
        db.wait_until_settled(&["Work"], Duration::from_secs(240))
            .await?;
        // Both LISTEN connections are back ...
        wait_for(
            "both workers to LISTEN again",
            Duration::from_secs(60),
            || async { Ok((db.scalar(&listening).await? == 2).then_some(())) },
        )
        .await?;
        // ... once more after a last termination of everything ...
        terminated += db.scalar(&terminate).await?;
        let relisten = Instant::now();
        wait_for(
            "both workers to LISTEN again",
            Duration::from_secs(60),
            || async { Ok((db.scalar(&listening).await? == 2).then_some(())) },
        )
        .await?;
        let relisten = relisten.elapsed();
        // ... and a new task starts on the notification, far sooner than the 30 s poll.
        let woken = Instant::now();
        db.enqueue_work(1_000_000, 1, 0).await?;
        db.wait_until_settled(&["Work"], Duration::from_secs(20))
            .await?;
        let woken = woken.elapsed();
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
            "pg_terminate_backend x6 on all worker connections",
            &report,
            &format!(
                " | backends terminated {terminated} | recovery time (LISTEN back) {relisten:.2?} \
                 | new task done after {woken:.2?}"
            ),
        );
        report.assert_clean()?;
        assert_eq!(report.tasks, 3_001);
        Ok(())
    })
}
