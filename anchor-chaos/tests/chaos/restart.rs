//! Scenario 2: PostgreSQL restarted (fast and immediate shutdown) while workers run.
//!
//! The workers run a mix (see `kill.rs`): `Work`, `Plain` (no retry policy) and tasks that
//! fail into their `onFailed` handlers. The first three restarts land while a failing task
//! is claimed or running, the last one while failure handlers are. The two immediate
//! shutdowns keep the server down for 3 s, longer than the 2 s lease, so the workers' leases
//! expire meanwhile (a quick restart is over before any lease can): an outage must not fail
//! a task, use up a retry or enqueue a handler twice, however long it lasts.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::support::{
    print_figures, scenario, sql_list, start_cluster, wait_for, ChaosDb, Cluster, Expect, FAILING,
    HANDLERS, ORDINARY,
};

const WORKER_FLAGS: &[&str] = &["--concurrency", "10", "--lease-ms", "2000"];

/// How long the immediate shutdowns keep the server down: longer than the lease.
const DOWN: Duration = Duration::from_secs(3);

/// Stops the server (`mode`), keeps it down for `down`, and starts it again with the options
/// it ran with (what `pg_ctl restart` does, with a pause in between).
async fn restart_after(cluster: &Cluster, db: &ChaosDb, mode: &str, down: Duration) -> Result<()> {
    if down.is_zero() {
        return Ok(cluster.restart(mode).await?);
    }
    let data_dir: String = db
        .admin()
        .await?
        .query_one("SHOW data_directory", &[])
        .await?
        .get(0);
    let opts_path = std::path::Path::new(&data_dir).join("postmaster.opts");
    let opts = std::fs::read_to_string(&opts_path)
        .with_context(|| format!("cannot read {}", opts_path.display()))?;
    // `<postgres binary> "-D" "<dir>" ...`: the options start at the first quoted word, as
    // `pg_ctl restart` reads them.
    let options = opts
        .trim()
        .split_once(" \"")
        .map(|(_, rest)| format!("\"{rest}"))
        .context("postmaster.opts without options")?;
    tokio::task::block_in_place(|| cluster.pg_ctl(&["-w", "-m", mode, "stop"]))?;
    tokio::time::sleep(down).await;
    tokio::task::block_in_place(|| cluster.pg_ctl(&["-w", "-t", "60", "-o", &options, "start"]))?;
    Ok(cluster.wait_ready().await?)
}

#[test]
fn database_restarts_fast_and_immediate_lose_nothing() -> Result<()> {
    scenario(async {
        // A cluster of its own: the other scenarios' databases must not go down with it.
        let cluster = start_cluster(100, true);
        let db = ChaosDb::create(&cluster, "restart").await?;
        let workers = vec![
            db.spawn_worker("w0", WORKER_FLAGS).await?,
            db.spawn_worker("w1", WORKER_FLAGS).await?,
        ];
        let mut mix = db.enqueue_mix(0, 5_000, 10, Some(100)).await?;
        let mut recoveries = Vec::new();
        let mut hit = Vec::new();
        for (k, (mode, down)) in [
            ("fast", Duration::ZERO),
            ("immediate", DOWN),
            ("fast", Duration::ZERO),
            ("immediate", DOWN),
        ]
        .into_iter()
        .enumerate()
        {
            // Restart at fixed points of progress, well before the 5 000 tasks are done, while
            // a failing task is claimed or running; the last restart while failure handlers
            // run (they queue behind the backlog, so that is near the end).
            let last = k == 3;
            if !last {
                let progress = 500 * (k as i64 + 1);
                wait_for(
                    "progress before the restart",
                    Duration::from_secs(120),
                    || async {
                        Ok((db.count_of(ORDINARY, 2, None).await? >= progress).then_some(()))
                    },
                )
                .await?;
            }
            let targets = if last { HANDLERS } else { FAILING };
            let held = wait_for(
                &format!("{targets:?} tasks in flight"),
                Duration::from_secs(120),
                || async {
                    let n = db.count_of(targets, 1, None).await?;
                    Ok((n > 0).then_some(n))
                },
            )
            .await?;
            hit.push(held);
            restart_after(&cluster, &db, mode, down).await?;
            let back = Instant::now();
            // Recovery: the first completion after the server is back.
            let before = wait_for(
                "the database after the restart",
                Duration::from_secs(60),
                || async { Ok(db.count_of(ORDINARY, 2, None).await.ok()) },
            )
            .await?;
            if last {
                // Enqueueing works again after the restarts, and the new tasks run (near the
                // end they are also the work that shows the queue resumed).
                mix += db.enqueue_mix(1_000_000, 200, 0, None).await?;
            }
            wait_for(
                "work to resume after the restart",
                Duration::from_secs(60),
                || async {
                    Ok(
                        matches!(db.count_of(ORDINARY, 2, None).await, Ok(n) if n > before)
                            .then_some(()),
                    )
                },
            )
            .await?;
            recoveries.push(if down.is_zero() {
                format!("{mode} {:.2?}", back.elapsed())
            } else {
                format!("{mode} (down {down:?}) {:.2?}", back.elapsed())
            });
        }
        let mut names = ORDINARY.to_vec();
        names.extend(FAILING.iter().chain(HANDLERS));
        db.wait_until_settled(&names, Duration::from_secs(240))
            .await?;
        let report = db.stop_and_check(workers, &Expect::mix()).await?;
        // Tasks whose lease expired during the long outages (rescued by another worker or
        // by their own worker's rescuer once the server was back).
        let expired = |names: &str| {
            format!(
                "SELECT count(DISTINCT task_id) FROM chaos.transitions \
                 WHERE lease_expired AND new_status <> 2 AND task_name IN ({names})"
            )
        };
        let expired_all = db.scalar(&expired(&sql_list(&names))).await?;
        let expired_plain = db.scalar(&expired("'Plain'")).await?;
        print_figures(
            &format!(
                "PostgreSQL restarted fast, immediate (down 3 s), fast, immediate (down 3 s) under {} Work, {} Plain, \
                 {} Doomed and {} PlainDoomed",
                mix.work, mix.plain, mix.doomed, mix.plain_doomed
            ),
            &report,
            &format!(
                " | tasks taken back after their lease expired {expired_all} (Plain {expired_plain}) \
                 | failing tasks / handlers in flight at each restart {hit:?} \
                 | recovery time (server back -> work resumed) {}",
                recoveries.join(", ")
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
            "one onFailed handler per failing task"
        );
        anyhow::ensure!(
            expired_plain > 0,
            "no Plain task's lease expired during the outages: the long outages tested nothing"
        );
        Ok(())
    })
}
