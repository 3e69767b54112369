//! A regression test for a finding of scenario 5 (see docs/reliability.md): a session
//! holding one running task's row lock for longer than a lease used to block its worker's
//! lease renewal (one statement over all of the worker's leases). The worker's other leases
//! expired, other workers rescued and started those tasks while the blocked worker was
//! still running them: 9 of 10 tasks ran on two workers at once for about 4 s. The renewal
//! now skips locked rows and checks them with a plain read instead of waiting.
//!
//! The locked task itself cannot have its lease renewed while the row is locked, so when
//! the lock goes away a rescuer may take it before the renewal does. That used to let both
//! workers run it until the next renewal aborted the first copy (about half a second).
//! Workers now fence themselves: a run whose lease was not renewed in time is stopped
//! shortly before the lease can expire, so the rescuer's run starts after it ended. The
//! test asserts that no task, the locked one included, runs twice at once.

use std::time::Duration;

use anyhow::Result;

use crate::support::{print_figures, scenario, shared_cluster, wait_for, ChaosDb, Expect};

#[test]
fn a_locked_running_row_does_not_let_any_task_run_twice_at_once() -> Result<()> {
    scenario(async {
        let db = ChaosDb::create(shared_cluster(), "lockoverlap").await?;
        let blocked = db
            .spawn_worker("w0", &["--concurrency", "10", "--lease-ms", "2000"])
            .await?;
        // Long tasks, all claimed by the first worker before the second one starts.
        db.enqueue_work(0, 10, 8_000).await?;
        let running = format!(
            "SELECT count(*) FROM chaos.ledger WHERE task_name = 'Work' AND worker = '{}'",
            blocked.id
        );
        wait_for(
            "the first worker to run all 10",
            Duration::from_secs(60),
            || async { Ok((db.scalar(&running).await? == 10).then_some(())) },
        )
        .await?;
        let helper = db
            .spawn_worker("w1", &["--concurrency", "20", "--lease-ms", "2000"])
            .await?;
        let session = db.admin().await?;
        session.batch_execute("BEGIN").await?;
        let locked: i64 = session
            .query_one(
                "SELECT id FROM anchor.tasks WHERE status = 1 AND name = 'Work' \
                 ORDER BY id LIMIT 1 FOR UPDATE",
                &[],
            )
            .await?
            .get(0);
        tokio::time::sleep(Duration::from_secs(6)).await;
        session.batch_execute("COMMIT").await?;
        db.wait_until_settled(&["Work"], Duration::from_secs(120))
            .await?;
        blocked.stop(Duration::from_secs(30)).await?;
        helper.stop(Duration::from_secs(30)).await?;
        let report = db
            .check(&Expect {
                completed: vec!["Work"],
                ..Expect::default()
            })
            .await?;
        let overlapping = |condition: &str| {
            format!(
                "SELECT count(*) FROM chaos.ledger a JOIN chaos.ledger b \
                   ON a.task_id = b.task_id AND a.id < b.id \
                  AND a.started_at < b.ended_at AND b.started_at < a.ended_at \
                 WHERE a.task_id {condition} {locked}"
            )
        };
        let others_concurrent = db.scalar(&overlapping("<>")).await?;
        let locked_concurrent = db.scalar(&overlapping("=")).await?;
        print_figures(
            "a running row locked for 6 s, tasks of 8 s",
            &report,
            &format!(
                " | other tasks run twice at once {others_concurrent} \
                 | the locked task run twice at once {locked_concurrent}"
            ),
        );
        anyhow::ensure!(
            others_concurrent == 0
                && locked_concurrent == 0
                && report.concurrent_runs == 0
                && report.lost == 0
                && report.stale_writes == 0
                && report.double_completions == 0
                && report.unterminated_runs == 0,
            "invariant violated: {report}\n{}",
            report.details.join("\n")
        );
        Ok(())
    })
}
