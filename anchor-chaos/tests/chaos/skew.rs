//! Scenario 7: clock skew between workers around cron ticks. Three workers run the same
//! `*/1` cron task and a backlog of short tasks with 2 s leases; one worker's clock runs
//! 45 s ahead of the database's, one 45 s behind, one is right. The skew is real for the
//! process: libfaketime (`LD_PRELOAD`) shifts every wall-clock read it makes, while its
//! monotonic clock (timeouts, lease deadlines) is left alone, as on a host whose NTP is
//! off. Midway the fast worker is killed, so the others rescue its tasks.
//!
//! The runtime takes every time decision that more than one process shares from the
//! database's clock (lease expiry, due tasks, cron ticks), so the skew must change
//! nothing: each tick fires exactly once with no tick missed, nothing is lost or runs
//! twice at once, and no stale worker completes a task. The ledger writes its times on
//! the database's clock (each worker measures its offset at start, which the test also
//! uses to prove the skew was in effect).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::support::{
    print_figures, scenario, shared_cluster, wait_for, ChaosDb, Expect, WorkerProcess,
};

const WORKER_FLAGS: &[&str] = &["--concurrency", "5", "--lease-ms", "2000"];

/// How far the skewed workers' clocks are off, in seconds.
const SKEW_S: i64 = 45;

/// libfaketime's preload library: `FAKETIME_LIB` if set, else where Debian-like systems
/// install it (`apt-get install libfaketime`, which `scripts/test.sh` does).
fn faketime_lib() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("FAKETIME_LIB") {
        return Ok(PathBuf::from(path));
    }
    let mut candidates = vec![
        PathBuf::from("/usr/lib/faketime/libfaketime.so.1"),
        PathBuf::from("/usr/local/lib/faketime/libfaketime.so.1"),
    ];
    if let Ok(entries) = std::fs::read_dir("/usr/lib") {
        for entry in entries.flatten() {
            candidates.push(entry.path().join("faketime/libfaketime.so.1"));
        }
    }
    candidates.into_iter().find(|p| p.is_file()).context(
        "libfaketime is not installed (the clock-skew scenario shifts worker clocks with it): \
         run `apt-get install libfaketime` (scripts/test.sh does), or set FAKETIME_LIB to \
         the path of libfaketime.so.1",
    )
}

/// The offset (database clock minus the worker's, in ms) a worker reports at start (the
/// worker's sessions may show before the line is written: wait for it).
async fn reported_offset_ms(worker: &WorkerProcess) -> Result<i64> {
    let marker = "database clock minus this process's: ";
    let rest = wait_for(
        "the worker's clock offset",
        Duration::from_secs(30),
        || async {
            let log = std::fs::read_to_string(worker.log_path())?;
            Ok(log.split(marker).nth(1).map(str::to_string))
        },
    )
    .await
    .with_context(|| worker.log_tail())?;
    let number: String = rest
        .chars()
        .take_while(|c| *c == '-' || c.is_ascii_digit())
        .collect();
    number.parse().context("unreadable clock offset")
}

#[test]
fn skewed_worker_clocks_change_nothing() -> Result<()> {
    scenario(async {
        let lib = faketime_lib()?;
        let lib = lib.to_string_lossy().to_string();
        let db = ChaosDb::create(shared_cluster(), "skew").await?;
        let ahead = format!("+{SKEW_S}");
        let behind = format!("-{SKEW_S}");
        let mut workers = Vec::new();
        for (id, shift) in [
            ("ahead", Some(&ahead)),
            ("behind", Some(&behind)),
            ("true", None),
        ] {
            let env: Vec<(&str, &str)> = match shift {
                Some(shift) => vec![
                    ("LD_PRELOAD", lib.as_str()),
                    ("FAKETIME", shift.as_str()),
                    ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
                    ("FAKETIME_NO_CACHE", "1"),
                ],
                None => Vec::new(),
            };
            workers.push(
                db.spawn_worker_with_env(&db.url, id, WORKER_FLAGS, &env)
                    .await?,
            );
        }
        // The skew is in effect: each worker saw the database's clock that far off.
        let mut offsets = Vec::new();
        for worker in &workers {
            offsets.push(reported_offset_ms(worker).await?);
        }
        let expected = [-SKEW_S * 1000, SKEW_S * 1000, 0];
        for ((worker, offset), want) in workers.iter().zip(&offsets).zip(expected) {
            anyhow::ensure!(
                (offset - want).abs() < 2_000,
                "worker {} reported a clock offset of {offset} ms, expected about {want} ms",
                worker.id
            );
        }

        db.enqueue_work(0, 3_000, 5).await?;
        wait_for(
            "progress before the kill",
            Duration::from_secs(60),
            || async { Ok((db.count_status("Work", 2).await? >= 600).then_some(())) },
        )
        .await?;
        // The fast worker dies holding leases and maybe an occurrence: the slow and the
        // right worker rescue them on the database's clock.
        let fast = workers.remove(0);
        fast.kill9(&db).await?;
        db.enqueue_work(3_000, 1_000, 5).await?;
        tokio::time::sleep(Duration::from_secs(6)).await;
        for schedule in db.client.schedules().await? {
            db.client.pause_schedule(schedule.id).await?;
        }
        db.wait_until_settled(&["Work", "Tick"], Duration::from_secs(120))
            .await?;
        let report = db
            .stop_and_check(
                workers,
                &Expect {
                    completed: vec!["Work", "Tick"],
                    ..Expect::default()
                },
            )
            .await?;
        let rescued = db.rescues().await?;
        // Two schedulers were always up, so no tick may be missing either.
        let missing_ticks = db
            .scalar(
                "SELECT coalesce(floor(extract(epoch FROM max(cron_tick_at) - min(cron_tick_at)))::bigint + 1 \
                        - count(DISTINCT cron_tick_at), 0) \
                 FROM anchor.tasks WHERE name = 'Tick'",
            )
            .await?;
        print_figures(
            &format!("clock skew: workers at +{SKEW_S} s, -{SKEW_S} s and 0, the fast one killed"),
            &report,
            &format!(
                " | offsets seen by the workers {offsets:?} ms | rescued {rescued} \
                 | missing ticks {missing_ticks}"
            ),
        );
        report.assert_clean()?;
        anyhow::ensure!(
            report.tasks == 4_000 + report.cron_occurrences && report.cron_occurrences >= 5,
            "expected 4,000 tasks and at least 5 ticks, got {} tasks and {} ticks",
            report.tasks,
            report.cron_occurrences
        );
        anyhow::ensure!(missing_ticks == 0, "{missing_ticks} ticks never fired");
        Ok(())
    })
}
