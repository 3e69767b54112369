//! A worker frozen for longer than its lease (SIGSTOP: a VM pause, a stalled host, a
//! debugger), while it runs tasks; another worker takes them over and runs them; the frozen
//! one is then resumed.
//!
//! After the resume the frozen worker's timers all fire at once: its handlers' sleeps, its
//! renewer, its fencer. Whichever the scheduler polls first, no handler code may run on
//! (the runtime never polls a handler past its lease's local deadline), no outcome of the
//! frozen runs may be written (fenced by token), and the worker must carry on working. The
//! checker counts a frozen run that the worker stopped as ended when the freeze began; a
//! frozen run that went on to finish would count as running at the same time as the other
//! worker's run.
//!
//! The tasks are a mix (see `kill.rs`): `Work`, `Plain` (no retry policy) and two of each
//! failing task, whose handlers have no retry policy either; a task taken from the frozen
//! worker must come back whatever its policy, without using up a retry.

use std::time::{Duration, Instant};

use anyhow::Result;

use crate::support::{
    print_figures, scenario, shared_cluster, wait_for, ChaosDb, Expect, FAILING, HANDLERS, ORDINARY,
};

const WORKER_FLAGS: &[&str] = &["--concurrency", "5", "--lease-ms", "2000"];

/// How long the worker stays frozen: well past its 2 s lease and the rescue that follows.
const FROZEN: Duration = Duration::from_secs(5);

#[test]
fn a_worker_frozen_past_its_lease_stops_its_runs_on_resume() -> Result<()> {
    scenario(async {
        let db = ChaosDb::create(shared_cluster(), "pause").await?;
        let frozen = db.spawn_worker("w0", WORKER_FLAGS).await?;
        // Tasks of 1.5 s: the ones the frozen worker holds are rescued about 2-3 s into the
        // freeze and may still be running elsewhere when it resumes.
        let mix = db.enqueue_mix(0, 40, 1_500, Some(20)).await?;
        let mut names = ORDINARY.to_vec();
        names.extend(FAILING.iter().chain(HANDLERS));
        let open_runs = format!(
            "SELECT count(*) FROM chaos.ledger WHERE worker = '{}' AND ended_at IS NULL",
            frozen.id
        );
        wait_for(
            "the first worker to run tasks",
            Duration::from_secs(60),
            || async { Ok((db.scalar(&open_runs).await? >= 3).then_some(())) },
        )
        .await?;
        let mut other = db.spawn_worker("w1", WORKER_FLAGS).await?;
        frozen.sigstop(&db).await?;
        tokio::time::sleep(FROZEN).await;
        frozen.sigcont(&db).await?;
        let resumed = Instant::now();
        db.wait_until_settled(&names, Duration::from_secs(120))
            .await?;
        let settled_in = resumed.elapsed();
        let mut frozen = frozen;
        frozen.assert_alive()?;
        other.assert_alive()?;
        other.stop(Duration::from_secs(30)).await?;
        // The resumed worker works on, alone now.
        db.enqueue_work(1_000, 40, 10).await?;
        db.wait_until_settled(&["Work"], Duration::from_secs(60))
            .await?;
        // The frozen worker's runs, by when they started and ended around the freeze.
        let frozen_runs = |condition: &str| {
            format!(
                "SELECT count(*) FROM chaos.ledger l JOIN chaos.pauses p ON p.worker = l.worker \
                 WHERE l.worker = '{}' AND {condition}",
                frozen.id
            )
        };
        let after_resume = db
            .scalar(&frozen_runs("l.started_at > p.resumed_at"))
            .await?;
        let spanning = "l.started_at < p.paused_at AND l.ended_at > p.resumed_at";
        let stopped = db
            .scalar(&frozen_runs(&format!(
                "{spanning} AND l.outcome = 'aborted'"
            )))
            .await?;
        let finished_after_freeze = db
            .scalar(&frozen_runs(&format!(
                "{spanning} AND l.outcome <> 'aborted'"
            )))
            .await?;
        frozen.stop(Duration::from_secs(30)).await?;
        let report = db.check(&Expect::mix()).await?;
        let rescued = db.rescues().await?;
        let rescued_plain = db.rescued_of(&["Plain"]).await?;
        let rescued_failing = db.rescued_of(FAILING).await?;
        print_figures(
            &format!(
                "SIGSTOP of a worker for {FROZEN:?} (lease 2 s) with tasks of 1.5 s \
                 ({} Work, {} Plain, {} Doomed, {} PlainDoomed)",
                mix.work, mix.plain, mix.doomed, mix.plain_doomed
            ),
            &report,
            &format!(
                " | rescued {rescued} (Plain {rescued_plain}, failing {rescued_failing}) | frozen runs stopped on resume {stopped} \
                 | frozen runs that finished after the resume {finished_after_freeze} \
                 | runs started by the resumed worker {after_resume} | settled {settled_in:.1?} after the resume"
            ),
        );
        report.assert_clean()?;
        anyhow::ensure!(rescued > 0, "nothing was rescued from the frozen worker");
        anyhow::ensure!(
            rescued_plain > 0,
            "no Plain task was rescued from the frozen worker: the default policy was not tested"
        );
        anyhow::ensure!(
            report.tasks == mix.total_with_handlers() + 40 && report.handlers == mix.failing(),
            "expected {} tasks and {} handlers, got {} and {}",
            mix.total_with_handlers() + 40,
            mix.failing(),
            report.tasks,
            report.handlers
        );
        anyhow::ensure!(
            finished_after_freeze == 0,
            "{finished_after_freeze} frozen runs went on after the resume"
        );
        anyhow::ensure!(
            after_resume > 0,
            "the resumed worker ran nothing afterwards"
        );
        Ok(())
    })
}
