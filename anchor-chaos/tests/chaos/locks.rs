//! Scenario 5: a long `idle in transaction` session and a long-running reader holding locks
//! next to the queue: row locks on pending tasks, on a running task, on the cron schedule,
//! and a repeatable-read snapshot over the whole table.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::support::{print_figures, scenario, shared_cluster, wait_for, ChaosDb, Expect};

/// How long the lock holders keep their transactions open: longer than a lease.
const HOLD: Duration = Duration::from_secs(5);

#[test]
fn idle_transactions_and_long_readers_holding_locks_lose_nothing() -> Result<()> {
    scenario(async {
        let db = ChaosDb::create(shared_cluster(), "locks").await?;
        let flags = &["--concurrency", "10", "--lease-ms", "2000"];
        let workers = vec![
            db.spawn_worker("w0", flags).await?,
            db.spawn_worker("w1", flags).await?,
        ];
        db.enqueue_work(0, 2_000, 5).await?;
        wait_for("tasks to run", Duration::from_secs(60), || async {
            Ok((db.count_status("Work", 1).await? > 0).then_some(()))
        })
        .await?;

        // An idle-in-transaction session holding 50 pending tasks: claims skip them.
        let idle = db.admin().await?;
        idle.batch_execute("BEGIN").await?;
        let locked: Vec<i64> = idle
            .query(
                "SELECT id FROM anchor.tasks WHERE status = 0 AND name = 'Work' \
                 ORDER BY id DESC LIMIT 50 FOR UPDATE",
                &[],
            )
            .await?
            .iter()
            .map(|row| row.get(0))
            .collect();
        anyhow::ensure!(
            locked.len() == 50,
            "only {} pending tasks to lock",
            locked.len()
        );
        // A session holding a running task's row: that worker's fenced writes and lease
        // renewals wait for it.
        let running = db.admin().await?;
        running
            .batch_execute(
                "BEGIN; SELECT id FROM anchor.tasks WHERE status = 1 \
                 LIMIT 1 FOR UPDATE SKIP LOCKED",
            )
            .await?;
        // A session holding the cron schedule: no tick can fire meanwhile.
        let cron = db.admin().await?;
        cron.batch_execute("BEGIN; SELECT id FROM anchor.cron_schedules FOR UPDATE")
            .await?;
        // A long reader: a repeatable-read snapshot over the whole table, then a slow
        // statement on it.
        let reader = db.admin().await?;
        reader
            .batch_execute(
                "BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT count(*) FROM anchor.tasks",
            )
            .await?;
        let slow_read = tokio::spawn(async move {
            reader
                .batch_execute(&format!(
                    "SELECT count(*), pg_sleep({}) FROM anchor.tasks; COMMIT",
                    HOLD.as_secs()
                ))
                .await
        });
        let held_at = Instant::now();
        tokio::time::sleep(HOLD).await;
        for session in [&idle, &running, &cron] {
            session.batch_execute("COMMIT").await?;
        }
        slow_read.await.context("the slow reader panicked")??;
        let released_at = Instant::now();
        let locked_done = format!(
            "SELECT count(*) FROM anchor.tasks WHERE status = 2 AND id IN ({})",
            locked
                .iter()
                .map(i64::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        );
        wait_for(
            "the locked tasks to run",
            Duration::from_secs(120),
            || async { Ok((db.scalar(&locked_done).await? == 50).then_some(())) },
        )
        .await?;
        let locked_recovery = released_at.elapsed();
        db.wait_until_settled(&["Work"], Duration::from_secs(180))
            .await?;
        // The schedule fires again after its lock is gone (once for the missed stretch).
        let ticks_after = format!(
            "SELECT count(*) FROM anchor.tasks WHERE name = 'Tick' AND created_at > now() - interval '{} ms'",
            released_at.elapsed().as_millis()
        );
        wait_for(
            "a cron tick after the lock",
            Duration::from_secs(30),
            || async { Ok((db.scalar(&ticks_after).await? > 0).then_some(())) },
        )
        .await?;
        let report = db
            .stop_and_check(
                workers,
                &Expect {
                    completed: vec!["Work"],
                    ..Expect::default()
                },
            )
            .await?;
        let rescued = db.rescues().await?;
        print_figures(
            "idle-in-transaction and long readers holding locks for 5 s",
            &report,
            &format!(
                " | locks held {:.1?} | locked pending tasks done {locked_recovery:.2?} after release \
                 | leases rescued while a worker waited on a row lock {rescued}",
                released_at - held_at
            ),
        );
        report.assert_clean()?;
        assert_eq!(report.tasks, 2_000);
        Ok(())
    })
}
