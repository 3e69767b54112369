//! A poison task: `Poison` aborts the worker process that runs it (`std::process::abort()`
//! in the executor, as a segfault or an out-of-memory kill would), every time, while
//! ordinary tasks (`Work`, and `Plain` with no retry policy) trickle in next to it. A
//! supervisor loop replaces every worker that died, as an orchestrator would.
//!
//! A lost worker is not the task's fault, so every rescue returns its tasks to `pending`
//! whatever their retry policy. Only a task whose worker is lost while its run had started,
//! `maxRescues` times, fails as poison: with an error starting "worker lost", its
//! `onFailed` handler run once, and the crashes stop. Everything else the crashes cut short
//! must still complete.

use std::time::{Duration, Instant};

use anchor_chaos::zgen::taskgen::PoisonParameters;
use anchor_runtime::{TaskStatus, WorkerConfig};
use anyhow::{bail, ensure, Context, Result};

use crate::support::{print_figures, scenario, shared_cluster, ChaosDb, Expect, Mix, ORDINARY};

const WORKER_FLAGS: &[&str] = &["--concurrency", "10", "--lease-ms", "2000"];

#[test]
fn a_task_that_crashes_its_worker_every_time_fails_after_the_bound_and_nothing_else_is_lost(
) -> Result<()> {
    scenario(async {
        let db = ChaosDb::create(shared_cluster(), "poison").await?;
        let mut workers = Vec::new();
        for i in 0..3 {
            workers.push(db.spawn_worker(&format!("w{i}"), WORKER_FLAGS).await?);
        }
        let started = Instant::now();
        let poison = db
            .runner
            .run_poison(&PoisonParameters { n: 0 }, &[])
            .await?;
        let mut mix = Mix::default();
        let mut next = 0;
        let mut deaths = 0;
        let mut replacements = 0;
        loop {
            // The supervisor: a worker that died is recorded (its open runs end now) and
            // replaced.
            let mut alive = Vec::new();
            for mut worker in workers.drain(..) {
                if worker.exited()?.is_some() {
                    worker.record_death(&db).await?;
                    deaths += 1;
                    replacements += 1;
                    alive.push(
                        db.spawn_worker(&format!("r{replacements}"), WORKER_FLAGS)
                            .await?,
                    );
                } else {
                    alive.push(worker);
                }
            }
            workers = alive;
            let record = db
                .client
                .get_task(poison)
                .await?
                .context("the poison task is gone")?;
            if matches!(record.status, TaskStatus::Failed | TaskStatus::Completed) {
                break;
            }
            if started.elapsed() > Duration::from_secs(120) {
                bail!(
                    "the poison task is still {:?} after 120 s ({} worker deaths)",
                    record.status,
                    deaths
                );
            }
            // Ordinary work trickles in (runs of 300 ms, about two thirds of the slots busy):
            // each crash cuts some of it short, and the backlog stays short, so the rescued
            // poison task runs again soon.
            mix += db.enqueue_mix(next, 10, 300, None).await?;
            next += 10;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        db.wait_until_settled(
            &["Work", "Plain", "Poison", "PoisonFailed"],
            Duration::from_secs(120),
        )
        .await?;
        let elapsed = started.elapsed();
        let report = db
            .stop_and_check(
                workers,
                &Expect {
                    completed: vec!["Work", "Plain", "PoisonFailed"],
                    failed_with_handler: vec!["Poison"],
                },
            )
            .await?;
        let record = db
            .client
            .get_task(poison)
            .await?
            .context("the poison task is gone")?;
        let bound = record
            .settings
            .max_rescues
            .unwrap_or(WorkerConfig::default().max_rescues());
        let last_error = record
            .errors
            .last()
            .map_or(String::new(), |e| e.message.clone());
        let poison_runs = db
            .scalar(&format!(
                "SELECT count(*) FROM chaos.ledger WHERE task_id = {poison}"
            ))
            .await?;
        let handler_runs = db
            .scalar(&format!(
                "SELECT count(*) FROM chaos.ledger l JOIN anchor.tasks h ON h.id = l.task_id \
                 WHERE h.parent_id = {poison}"
            ))
            .await?;
        let handler_ok_runs = db
            .scalar(&format!(
                "SELECT count(*) FROM chaos.ledger l JOIN anchor.tasks h ON h.id = l.task_id \
                 WHERE h.parent_id = {poison} AND l.outcome = 'ok'"
            ))
            .await?;
        let rescued_ordinary = db.rescued_of(ORDINARY).await?;
        let to_failed = record
            .finished_at
            .map_or(0.0, |at| (at - record.created_at).as_seconds_f64());
        print_figures(
            &format!(
                "a task that aborts its worker every time (maxRescues {bound}) next to {} Work \
                 and {} Plain",
                mix.work, mix.plain
            ),
            &report,
            &format!(
                " | poison {:?} after {to_failed:.1} s: rescues {}, attempts {}, failures {}, \
                 runs {poison_runs}, last error {last_error:?} | worker deaths {deaths} \
                 | handler runs {handler_runs} (ok {handler_ok_runs}) \
                 | ordinary tasks rescued {rescued_ordinary} | total {elapsed:.1?}",
                record.status, record.rescues, record.attempts, record.failures
            ),
        );
        report.assert_clean()?;
        ensure!(
            record.status == TaskStatus::Failed,
            "the poison task ended {:?}",
            record.status
        );
        ensure!(
            last_error.starts_with("worker lost"),
            "the poison task failed with {last_error:?}, not a \"worker lost\" error"
        );
        ensure!(
            record.rescues == bound && record.attempts == bound && record.failures == 0,
            "the poison task failed after {} rescues, {} attempts and {} failures; expected \
             {bound} rescues, {bound} attempts, 0 failures",
            record.rescues,
            record.attempts,
            record.failures
        );
        ensure!(
            poison_runs == i64::from(bound) && deaths == poison_runs,
            "{poison_runs} poison runs and {deaths} worker deaths; expected {bound} of each"
        );
        ensure!(
            report.handlers == 1 && handler_runs == 1 && handler_ok_runs == 1,
            "the poison task's handler: {} tasks, {handler_runs} runs ({handler_ok_runs} ok); \
             expected exactly one run",
            report.handlers
        );
        ensure!(
            rescued_ordinary > 0,
            "the crashes cut no ordinary task short: the scenario tested nothing next to the poison"
        );
        Ok(())
    })
}
