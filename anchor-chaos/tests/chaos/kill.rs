//! Scenario 1: `kill -9` of worker processes mid-batch, repeatedly.
//!
//! The batch is a mix, interleaved in id order: `Work` (retried until it succeeds), `Plain`
//! (no retry policy, the defaults most tasks run with) and, every 25th task, a `Doomed`
//! (one retry) or a `PlainDoomed` (no retry policy) that fails into its `onFailed` handler
//! (neither handler has a retry policy). The first kills land while the victim holds tasks
//! on the failure path, the last one while it runs failure handlers, so the faults hit
//! every kind: a lost worker must not fail any task, use up a retry or enqueue a handler
//! twice.

use std::time::{Duration, Instant};

use anyhow::{ensure, Result};

use crate::support::{
    print_figures, scenario, shared_cluster, wait_for, ChaosDb, Expect, FAILING, HANDLERS, ORDINARY,
};

const WORKER_FLAGS: &[&str] = &["--concurrency", "10", "--lease-ms", "2000"];

#[test]
fn kill_9_during_a_batch_loses_nothing_and_runs_nothing_twice_at_once() -> Result<()> {
    scenario(async {
        let db = ChaosDb::create(shared_cluster(), "kill9").await?;
        let kills = 5;
        let mut workers = Vec::new();
        for i in 0..3 {
            workers.push(db.spawn_worker(&format!("w{i}"), WORKER_FLAGS).await?);
        }
        let started = Instant::now();
        let mix = db.enqueue_mix(0, 5_000, 20, Some(25)).await?;
        let mut progress = 0;
        for k in 0..kills {
            let victim = workers.remove(0);
            let last = k + 1 == kills;
            // Mid-batch, after some progress, while the victim holds a failing task (claimed
            // or running); the last kill while it holds failure handlers, which queue behind
            // the backlog and so run near the end.
            let targets = if last { HANDLERS } else { FAILING };
            if !last {
                progress += 400;
                wait_for(
                    "progress before the next kill",
                    Duration::from_secs(120),
                    || async {
                        Ok((db.count_of(ORDINARY, 2, None).await? >= progress).then_some(()))
                    },
                )
                .await?;
            }
            wait_for(
                &format!("the victim to hold {targets:?} tasks"),
                Duration::from_secs(120),
                || async {
                    Ok((db.count_of(targets, 1, Some(&victim.id)).await? > 0).then_some(()))
                },
            )
            .await?;
            victim.kill9(&db).await?;
            // A replacement comes up, as an orchestrator would restart the process.
            workers.push(db.spawn_worker(&format!("w{k}r"), WORKER_FLAGS).await?);
        }
        let mut names = ORDINARY.to_vec();
        names.extend(FAILING.iter().chain(HANDLERS));
        db.wait_until_settled(&names, Duration::from_secs(240))
            .await?;
        let elapsed = started.elapsed();
        let report = db.stop_and_check(workers, &Expect::mix()).await?;
        let rescued = db.rescues().await?;
        let rescued_plain = db.rescued_of(&["Plain"]).await?;
        let rescued_failing = db.rescued_of(FAILING).await?;
        let rescued_handlers = db.rescued_of(HANDLERS).await?;
        let recovery = db.kill_recovery_seconds().await?;
        print_figures(
            &format!(
                "kill -9 x5 during {} Work, {} Plain, {} Doomed and {} PlainDoomed",
                mix.work, mix.plain, mix.doomed, mix.plain_doomed
            ),
            &report,
            &format!(
                " | rescued {rescued} (Plain {rescued_plain}, failing {rescued_failing}, \
                 handlers {rescued_handlers}) | recovery time {recovery:.2}s | total {elapsed:.1?}"
            ),
        );
        report.assert_clean()?;
        assert_eq!(
            report.tasks,
            mix.total_with_handlers(),
            "the mix and one handler per failing task"
        );
        assert_eq!(
            report.handlers,
            mix.failing(),
            "exactly one onFailed handler per failing task"
        );
        ensure!(
            rescued_plain > 0,
            "no Plain task was taken from a killed worker: the default policy was not tested"
        );
        ensure!(
            rescued_failing > 0,
            "no failing task was taken from a killed worker: the failure path was not tested"
        );
        ensure!(
            rescued_handlers > 0,
            "no failure handler was taken from a killed worker: the handlers were not tested"
        );
        Ok(())
    })
}
