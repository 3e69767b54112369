//! Scenario 4: pool exhaustion — tasks that hold the worker's own pool connections, and a
//! role with fewer connection slots than the workers want.

use std::time::{Duration, Instant};

use anchor_chaos::zgen::taskgen::HoldConnectionParameters;
use anyhow::Result;

use crate::support::{print_figures, scenario, shared_cluster, ChaosDb, Expect};

/// How long the second phase runs with too few connection slots.
const SCARCITY: Duration = Duration::from_secs(40);

#[test]
fn exhausted_pools_and_scarce_connection_slots_lose_nothing() -> Result<()> {
    scenario(async {
        let db = ChaosDb::create(shared_cluster(), "pool").await?;

        // 1. Eight tasks at a time each hold one of the runtime pool's four connections for
        //    200 ms, so claims, completions and lease renewals queue behind them.
        let started = Instant::now();
        let holder = db
            .spawn_worker(
                "w0",
                &[
                    "--concurrency",
                    "8",
                    "--pool-size",
                    "4",
                    "--lease-ms",
                    "2000",
                ],
            )
            .await?;
        let holds: Vec<HoldConnectionParameters> = (0..80)
            .map(|n| HoldConnectionParameters { n, hold_ms: 200 })
            .collect();
        db.runner.run_hold_connection_many(&holds, &[]).await?;
        db.enqueue_work(0, 300, 0).await?;
        db.wait_until_settled(&["Work", "HoldConnection"], Duration::from_secs(180))
            .await?;
        let exhausted_in = started.elapsed();
        holder.stop(Duration::from_secs(30)).await?;

        // 2. Two workers as a role limited to 8 connections in all, while each wants a
        //    runtime pool of 6, a ledger pool of 4 and a LISTEN connection: connections are
        //    refused ("too many connections for role") all the time. Whichever pool holds a
        //    slot keeps it while it is busy, so the ledger's pools (the application's own
        //    pool, in a real service) may get none for as long as the scarcity lasts: no
        //    queue can drain then. What must hold is that nothing crashes, is lost or runs
        //    twice meanwhile, and that the backlog drains once slots are given back.
        let role = format!("{}_role", db.name);
        let url = db.create_role(&role, 8).await?;
        let flags = &[
            "--concurrency",
            "5",
            "--pool-size",
            "6",
            "--ledger-pool-size",
            "4",
            "--lease-ms",
            "2000",
        ];
        let started = Instant::now();
        let mut workers = vec![
            db.spawn_worker_at(&url, "w1", flags).await?,
            db.spawn_worker_at(&url, "w2", flags).await?,
        ];
        db.enqueue_work(10_000, 500, 5).await?;
        let holds: Vec<HoldConnectionParameters> = (100..140)
            .map(|n| HoldConnectionParameters { n, hold_ms: 100 })
            .collect();
        db.runner.run_hold_connection_many(&holds, &[]).await?;
        tokio::time::sleep(SCARCITY).await;
        for worker in &mut workers {
            worker.assert_alive()?;
        }
        let during_scarcity = db
            .scalar(
                "SELECT count(*) FROM anchor.tasks WHERE status = 2 \
                 AND ((name = 'Work' AND (payload->>'n')::bigint >= 10000) \
                   OR (name = 'HoldConnection' AND (payload->>'n')::bigint >= 100))",
            )
            .await?;
        // Enough slots for both workers' pools and LISTEN connections.
        db.admin()
            .await?
            .batch_execute(&format!("ALTER ROLE {role} CONNECTION LIMIT 24"))
            .await?;
        let relieved = Instant::now();
        db.wait_until_settled(&["Work", "HoldConnection"], Duration::from_secs(180))
            .await?;
        let recovered_in = relieved.elapsed();
        let report = db
            .stop_and_check(
                workers,
                &Expect {
                    completed: vec!["Work", "HoldConnection"],
                    ..Expect::default()
                },
            )
            .await?;
        let refused = db
            .scalar(
                "SELECT count(*) FROM anchor.tasks, jsonb_array_elements(errors) e \
                 WHERE e->>'message' LIKE '%connection%'",
            )
            .await?;
        print_figures(
            "pool exhaustion: tasks holding a 4-connection pool; 8 slots for two workers",
            &report,
            &format!(
                " | held-pool phase {exhausted_in:.1?} | finished during {SCARCITY:?} of \
                 scarce slots {during_scarcity}/540 | drained {recovered_in:.1?} after relief \
                 (phase {:.1?}) | attempts failed for want of a connection {refused}",
                started.elapsed()
            ),
        );
        report.assert_clean()?;
        assert_eq!(report.tasks, 920);
        Ok(())
    })
}
