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
        // renewals wait for it. It must get one (tasks run for 5 ms: look until it does).
        let running = db.admin().await?;
        let running_task: i64 = wait_for(
            "a running task's row to lock",
            Duration::from_secs(30),
            || async {
                running.batch_execute("BEGIN").await?;
                let row = running
                    .query_opt(
                        "SELECT id FROM anchor.tasks WHERE status = 1 AND name = 'Work' \
                         LIMIT 1 FOR UPDATE SKIP LOCKED",
                        &[],
                    )
                    .await?;
                if row.is_none() {
                    running.batch_execute("ROLLBACK").await?;
                }
                Ok(row.map(|r| r.get(0)))
            },
        )
        .await?;
        // A session holding the cron schedule: no tick can fire meanwhile.
        let cron = db.admin().await?;
        cron.batch_execute("BEGIN").await?;
        let schedules = cron
            .query("SELECT id FROM anchor.cron_schedules FOR UPDATE", &[])
            .await?
            .len();
        anyhow::ensure!(
            schedules == 1,
            "locked {schedules} cron schedules, expected 1"
        );
        let locked_at = db
            .scalar_f64("SELECT extract(epoch FROM clock_timestamp())::float8")
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
        // The locks held: nothing changed the locked running task, and no tick fired.
        let untouched = db
            .scalar(&format!(
                "SELECT count(*) FROM anchor.tasks WHERE id = {running_task} AND status = 1"
            ))
            .await?;
        let ticks_while_held = db
            .scalar(&format!(
                "SELECT count(*) FROM anchor.tasks WHERE name = 'Tick' \
                 AND created_at > to_timestamp({locked_at})"
            ))
            .await?;
        let unlocked_at = db
            .scalar_f64("SELECT extract(epoch FROM clock_timestamp())::float8")
            .await?;
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
        // The locked running task left `running` only after its row was released (the
        // audit's clock_timestamp() is when the change was applied; `finished_at` is the
        // start of a statement that may have waited on the lock).
        let running_task_end = db
            .scalar_f64(&format!(
                "SELECT coalesce(extract(epoch FROM min(at)), 0)::float8 FROM chaos.transitions \
                 WHERE task_id = {running_task}"
            ))
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
                 | leases rescued while a worker waited on a row lock {rescued} \
                 | locked running task {running_task} left running {:.2} s after its release",
                released_at - held_at,
                running_task_end - unlocked_at
            ),
        );
        report.assert_clean()?;
        anyhow::ensure!(
            untouched == 1,
            "the locked running task {running_task} changed while its row was locked"
        );
        anyhow::ensure!(
            running_task_end >= unlocked_at,
            "the locked running task {running_task} left running {:.2} s before its row was released",
            unlocked_at - running_task_end
        );
        anyhow::ensure!(
            ticks_while_held == 0,
            "{ticks_while_held} ticks fired while the schedule was locked"
        );
        assert_eq!(report.tasks, 2_000);
        Ok(())
    })
}
