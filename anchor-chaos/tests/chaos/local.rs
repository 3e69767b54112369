//! Scenario: processes that enqueue and work (local dispatch), killed with `kill -9` while
//! they hold tasks their own enqueues started.
//!
//! Each worker process also enqueues `Work` one task at a time through its own client, so
//! while it is idle its tasks skip the claim: the insert leases them to it. A kill then
//! leaves rows that no claim ever touched, held by a dead process; they must come back
//! through the rescuer like any claimed task, with no run lost, doubled or overlapping.
//!
//! What they enqueue is a mix (`--enqueue-mix`): `Work`, `Plain` (no retry policy) and every
//! 20th a `PlainDoomed` that fails into its handler (no retry policy either); each kill lands
//! while the victim runs a locally started `Plain`, which must come back whatever its policy.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::support::{
    print_figures, scenario, shared_cluster, sql_list, wait_for, ChaosDb, Expect,
};

/// What the workers enqueue (`--enqueue-mix`).
const NAMES: &[&str] = &["Work", "Plain", "PlainDoomed"];

/// A worker that enqueues `count` tasks of its own, `n` from `first`.
fn flags(first: i64, count: i64) -> Vec<String> {
    [
        "--concurrency",
        "10",
        "--lease-ms",
        "2000",
        "--enqueue",
        &count.to_string(),
        "--enqueue-first",
        &first.to_string(),
        "--enqueue-every-ms",
        "4",
        "--enqueue-sleep-ms",
        "20",
        "--enqueue-mix",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

#[test]
fn killing_processes_that_enqueue_and_work_loses_nothing() -> Result<()> {
    scenario(async {
        let db = ChaosDb::create(shared_cluster(), "local").await?;
        let kills = 3;
        let mut workers = Vec::new();
        for i in 0..3 {
            let f = flags(i * 100_000, 1_000);
            let f: Vec<&str> = f.iter().map(String::as_str).collect();
            workers.push(db.spawn_worker(&format!("w{i}"), &f).await?);
        }
        let started = Instant::now();
        for k in 0..kills {
            let victim = workers.remove(0);
            // Kill while the victim runs a `Plain` task that its own enqueue started (its row
            // was inserted running, so `started_at` is the insert's `created_at`).
            let holds = format!(
                "SELECT count(*) FROM anchor.tasks WHERE status = 1 AND lease_owner = '{}' \
                 AND started_at = created_at AND name = 'Plain'",
                victim.id
            );
            wait_for(
                "the victim to run a Plain task it dispatched locally",
                Duration::from_secs(60),
                || async { Ok((db.scalar(&holds).await? > 0).then_some(())) },
            )
            .await?;
            victim.kill9(&db).await?;
            let f = flags((10 + k) * 100_000, 500);
            let f: Vec<&str> = f.iter().map(String::as_str).collect();
            workers.push(db.spawn_worker(&format!("w{k}r"), &f).await?);
        }
        // Every survivor finishes its enqueues, then everything drains.
        for worker in &workers {
            wait_for(
                "a worker to finish enqueueing",
                Duration::from_secs(120),
                || async {
                    let log = std::fs::read_to_string(worker.log_path())
                        .with_context(|| format!("cannot read {}", worker.log_path().display()))?;
                    Ok(log.contains("enqueued everything").then_some(()))
                },
            )
            .await?;
        }
        db.wait_until_settled(
            &["Work", "Plain", "PlainDoomed", "PlainDoomedFailed"],
            Duration::from_secs(240),
        )
        .await?;
        let elapsed = started.elapsed();
        let report = db
            .stop_and_check(
                workers,
                &Expect {
                    completed: vec!["Work", "Plain", "PlainDoomedFailed"],
                    failed_with_handler: vec!["PlainDoomed"],
                },
            )
            .await?;
        let local = db
            .scalar(&format!(
                "SELECT count(*) FROM anchor.tasks WHERE name IN ({}) AND attempts = 1 \
                 AND started_at = created_at",
                sql_list(NAMES)
            ))
            .await?;
        let rescued = db.rescues().await?;
        let rescued_plain = db.rescued_of(&["Plain"]).await?;
        print_figures(
            "kill -9 x3 of processes that enqueue and work (local dispatch)",
            &report,
            &format!(
                " | started locally {local} | rescued {rescued} (Plain {rescued_plain}) \
                 | total {elapsed:.1?}"
            ),
        );
        report.assert_clean()?;
        // The replacements (n from 1,000,000) each enqueued all 500 of theirs.
        let survivors = db
            .scalar(&format!(
                "SELECT count(*) FROM anchor.tasks WHERE name IN ({}) \
                 AND (payload->>'n')::bigint >= 1000000",
                sql_list(NAMES)
            ))
            .await?;
        assert_eq!(
            survivors,
            3 * 500,
            "every enqueue of the surviving processes"
        );
        assert!(
            local > 0,
            "no task was dispatched locally: the scenario tested nothing"
        );
        assert!(
            rescued_plain > 0,
            "the kills interrupted no Plain task: the default policy was not tested"
        );
        Ok(())
    })
}
