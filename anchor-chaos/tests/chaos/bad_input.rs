//! Bad input: malformed and wrong-typed payloads, an unknown task name and a dropped
//! column. Each gives a recorded, explained outcome — never a crashed worker or a lost task.

use std::time::Duration;

use anchor_chaos::zgen::taskgen::{DoomedParameters, WorkParameters};
use anchor_runtime::{TaskId, TaskStatus};
use anyhow::{ensure, Context, Result};

use crate::support::{print_figures, scenario, shared_cluster, wait_for, ChaosDb, Expect};

/// Payloads that cannot be decoded into the task's parameters, written straight into the
/// table as a bug or a hand edit would.
const MALFORMED: &[(&str, &str)] = &[
    ("Strict", r#"{"n": "not a number", "label": "x"}"#),
    ("Strict", r#"{"label": "missing n"}"#),
    ("Strict", r#""a bare string""#),
    (
        "Strict",
        r#"{"n": 99999999999, "label": "out of i32 range"}"#,
    ),
    ("Strict", r#"[1, 2, 3]"#),
    ("HoldConnection", r#"{"n": 1, "holdMs": "long"}"#),
];

#[test]
fn bad_input_fails_with_explanations_and_never_crashes_a_worker() -> Result<()> {
    scenario(async {
        let db = ChaosDb::create(shared_cluster(), "badinput").await?;
        let mut worker = db.spawn_worker("w0", &["--concurrency", "10"]).await?;
        let admin = db.admin().await?;
        let mut bad_ids = Vec::new();
        for (name, payload) in MALFORMED {
            let row = admin
                .query_one(
                    "INSERT INTO anchor.tasks (name, payload, timeout_ms) \
                     VALUES ($1, $2::text::jsonb, 60000) RETURNING id",
                    &[name, payload],
                )
                .await?;
            bad_ids.push(row.get::<_, TaskId>(0));
        }
        let unknown: TaskId = admin
            .query_one(
                "INSERT INTO anchor.tasks (name, payload, timeout_ms) \
                 VALUES ('NoSuchTask', '{}', 60000) RETURNING id",
                &[],
            )
            .await?
            .get(0);
        // Good tasks around the bad ones still run.
        db.enqueue_work(0, 200, 0).await?;
        for id in &bad_ids {
            let record = wait_for(
                "the malformed task to fail",
                Duration::from_secs(60),
                || async {
                    let task = db.client.get_task(*id).await?.context("task vanished")?;
                    Ok((task.status == TaskStatus::Failed).then_some(task))
                },
            )
            .await?;
            let message = record
                .errors
                .first()
                .map(|e| e.message.clone())
                .unwrap_or_default();
            ensure!(
                message.contains("payload does not match the parameters"),
                "task {id} failed without an explanation: {message:?}"
            );
        }
        db.wait_until_settled(&["Work"], Duration::from_secs(60))
            .await?;
        worker.assert_alive()?;
        // A task no worker here knows is not claimed (another service's workers may run
        // it): it stays pending, untouched, and is not lost.
        let unknown_task = db
            .client
            .get_task(unknown)
            .await?
            .context("unknown task vanished")?;
        ensure!(
            unknown_task.status == TaskStatus::Pending && unknown_task.attempts == 0,
            "the unknown task was touched: {:?} after {} attempts",
            unknown_task.status,
            unknown_task.attempts
        );

        // A dropped column: failures cannot be recorded while `errors` is gone. The worker
        // keeps the outcomes, retries, and writes them once the column is back. (CASCADE:
        // the column takes `task_view` with it, as it would for a person doing this.)
        admin
            .batch_execute("ALTER TABLE anchor.tasks DROP COLUMN errors CASCADE")
            .await?;
        let doomed: Vec<DoomedParameters> = (0..10)
            .map(|n| DoomedParameters { n, sleep_ms: 0 })
            .collect();
        db.runner.run_doomed_many(&doomed, &[]).await?;
        let more: Vec<WorkParameters> = (1_000..1_100)
            .map(|n| WorkParameters { n, sleep_ms: 0 })
            .collect();
        db.runner.run_work_many(&more, &[]).await?;
        // Let the failures meet the missing column for a while.
        tokio::time::sleep(Duration::from_secs(3)).await;
        worker.assert_alive()?;
        let stuck = db
            .scalar("SELECT count(*) FROM anchor.tasks WHERE name = 'Doomed' AND status = 3")
            .await?;
        admin
            .batch_execute(
                "ALTER TABLE anchor.tasks ADD COLUMN errors jsonb NOT NULL DEFAULT '[]'::jsonb",
            )
            .await?;
        db.wait_until_settled(
            &["Work", "Doomed", "DoomedFailed"],
            Duration::from_secs(120),
        )
        .await?;
        worker.assert_alive()?;
        worker.stop(Duration::from_secs(30)).await?;
        let report = db
            .check(&Expect {
                completed: vec!["Work", "DoomedFailed"],
                failed_with_handler: vec!["Doomed"],
            })
            .await?;
        print_figures(
            "bad input: 6 malformed payloads, an unknown task, a dropped column",
            &report,
            &format!(
                " | malformed failed with explanation {}/{} | unknown task pending untouched \
                 | doomed failed while the column was missing {stuck}",
                bad_ids.len(),
                bad_ids.len()
            ),
        );
        report.assert_clean()?;
        ensure!(
            stuck == 0,
            "a failure was recorded without the errors column"
        );
        ensure!(
            report.handlers == 10,
            "one onFailed handler per doomed task"
        );
        Ok(())
    })
}
