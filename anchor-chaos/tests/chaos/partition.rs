//! Dead-but-open connections: a half-open partition between the workers and PostgreSQL.
//!
//! Two worker processes reach the database only through a TCP proxy on loopback
//! (`proxy.rs`). Mid-backlog the proxy stops forwarding for longer than a lease (10 s,
//! leases of 3 s) without closing anything: no FIN, no RST, every socket stays open and
//! its kernel keeps acknowledging, only no answer ever comes; new connections are accepted
//! but not forwarded. Then it heals, in one of two ways:
//!
//! - **resume**: forwarding resumes on the existing connections (what was queued flows
//!   on, as after a short outage that TCP retransmission bridges) and new connections are
//!   served;
//! - **dead**: new connections are served, but every connection open at the heal stays
//!   silent for ever, still open (a firewall, NAT or load balancer that lost their state
//!   and drops their packets). Only a worker that gives up a connection that does not
//!   answer gets going again.
//!
//! Asserted, for each: the partition really stopped the work; afterwards nothing is lost
//! (every task completed within 30 s of the heal), no two runs of a task overlapped, no
//! stale completion; and the workers are back to full speed within 15 s of the heal: a
//! probe task enqueued at the heal (due before the whole backlog, so claimed next)
//! completes, completions per second reach 80 % of the rate before the partition, and
//! the cron task (`Tick`, every second) fires again.
//! The figures (completions per second around the partition, fenced runs, rescues,
//! recovery times, the workers' warnings) are printed.
//!
//! The workers' ledger uses the same URL; the proxy recognises its connections by their
//! statements and leaves them alone (see `proxy.rs`), so the record of every run stays
//! exact. The checker and the test's own client connect directly.
//!
//! What it showed (debug build, two cores): with connections that resume, workers without
//! time limits on their statements recovered as fast as with them (the queued statements
//! simply complete; full speed 1.0 s after the heal either way). With connections left
//! dead, workers without time limits made no progress at all in the 30 s after the heal
//! (2,125 of 3,001 tasks unfinished, the probe never ran) and did not exit within 10 s of
//! SIGTERM; with the limits (control statements a quarter of the lease, pooled calls
//! 20 s) the first completion came 10 s after the heal, i.e. 20 s after the statements
//! that hung were sent, and full speed 11 s after it. A shorter partition would
//! therefore recover *later* after its heal, up to the 20 s limit. The cron scheduler's
//! statements had no limit yet: a scheduler that sent one on a pooled connection during
//! the partition waited on that dead connection for good, and in 2 of 3 runs no tick
//! fired in the 23 s after the heal (no transaction was left open on the server), so the
//! dead variant failed on its cron check.
//!
//! What TCP settings can and cannot do here: the proxy's end of each socket is alive, so
//! keepalive probes are answered and sent data is acknowledged. Keepalives and
//! `tcp_user_timeout` detect a dead *host or link*; against a peer that is connected but
//! silent (this proxy, a stalled middlebox or server), only time limits on the statements
//! themselves help.

#[path = "proxy.rs"]
mod proxy;

use std::time::{Duration, Instant};

use anchor_chaos::zgen::taskgen::WorkParameters;
use anchor_runtime::chrono::{DateTime, TimeDelta, Utc};
use anchor_runtime::tokio_postgres;
use anchor_runtime::{TaskId, TaskOverride};
use anyhow::{bail, ensure, Context, Result};

use crate::support::WorkerProcess;
use crate::support::{print_figures, scenario, shared_cluster, wait_for, ChaosDb, Expect};
use proxy::{Proxy, ProxyStats};

const WORKER_FLAGS: &[&str] = &["--concurrency", "10", "--lease-ms", "3000"];
/// How long the proxy forwards nothing: over three leases.
const CUT: Duration = Duration::from_secs(10);
/// Back to full speed within this long after the heal.
const RECOVERY_BOUND: Duration = Duration::from_secs(15);
/// Every task completed within this long after the heal.
const DRAIN_BOUND: Duration = Duration::from_secs(30);
/// How long the workers get to exit after SIGTERM, together.
const STOP_BOUND: Duration = Duration::from_secs(10);
/// The backlog: `Work` of 20 ms; every 25th of 1.5 s (half a lease: such runs end during
/// the partition, their completion held up); every 200th of 4 s (longer than the lease:
/// such runs are under way when the partition starts and reach their lease deadline).
const TASKS: i64 = 3_000;
/// The probe's `n` (the backlog's are below [`TASKS`]).
const PROBE_N: i64 = 1_000_000;
/// The window the rates before the partition and after the heal are measured over.
const PRE_WINDOW: Duration = Duration::from_secs(3);
/// Full speed: this share of the rate before the partition, over one second.
const FULL_SPEED: f64 = 0.8;

/// How the proxy heals.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Heal {
    /// Forwarding resumes on every connection.
    Resume,
    /// Only new connections are served; the ones open at the heal stay silent for ever.
    NewConnectionsOnly,
}

#[test]
fn a_half_open_partition_longer_than_a_lease_loses_nothing_and_recovers() -> Result<()> {
    partition(Heal::Resume)
}

#[test]
fn partition_connections_left_dead_after_the_heal_are_given_up_and_work_recovers() -> Result<()> {
    partition(Heal::NewConnectionsOnly)
}

fn partition(heal: Heal) -> Result<()> {
    scenario(async {
        let started = Instant::now();
        let cluster = shared_cluster();
        let db = ChaosDb::create(
            cluster,
            match heal {
                Heal::Resume => "partition",
                Heal::NewConnectionsOnly => "partition_dead",
            },
        )
        .await?;
        let proxy = Proxy::start(cluster.port()).await?;
        let direct_host = format!("@localhost:{}/", cluster.port());
        ensure!(
            db.url.contains(&direct_host),
            "unexpected database URL shape (no {direct_host})"
        );
        let proxied_url = db
            .url
            .replace(&direct_host, &format!("@127.0.0.1:{}/", proxy.port()));
        let mut workers = vec![
            db.spawn_worker_at(&proxied_url, "w0", WORKER_FLAGS).await?,
            db.spawn_worker_at(&proxied_url, "w1", WORKER_FLAGS).await?,
        ];
        // The test's own connection, direct: samples and clock readings.
        let direct = db.admin().await?;

        let params: Vec<WorkParameters> = (0..TASKS)
            .map(|n| WorkParameters {
                n,
                sleep_ms: match n {
                    n if n % 200 == 0 => 4_000,
                    n if n % 25 == 0 => 1_500,
                    _ => 20,
                },
            })
            .collect();
        db.runner.run_work_many(&params, &[]).await?;
        wait_for(
            "the workers to get going",
            Duration::from_secs(60),
            || async { Ok((completed(&direct).await? >= 300).then_some(())) },
        )
        .await?;
        tokio::time::sleep(PRE_WINDOW).await;
        ensure!(
            pending_or_running(&direct).await? > TASKS / 3,
            "the backlog is nearly gone before the partition: the workers are faster than \
             this scenario assumes"
        );

        // The partition.
        let before_cut = proxy.stats();
        proxy.cut();
        let cut_at = db_now(&direct).await?;
        tokio::time::sleep(Duration::from_secs(1)).await;
        // A statement already answered may still be finishing: count from 1 s in.
        let at_cut_plus_1s = completed(&direct).await?;
        tokio::time::sleep(CUT - Duration::from_secs(1)).await;
        let at_heal = completed(&direct).await?;
        let during_cut = proxy.stats();
        match heal {
            Heal::Resume => proxy.heal(),
            Heal::NewConnectionsOnly => proxy.heal_new_only(),
        }
        let healed = Instant::now();
        let heal_at = db_now(&direct).await?;
        // Due an hour ago, so the next claim takes it ahead of the whole backlog.
        let probe = db
            .runner
            .run_work(
                &WorkParameters {
                    n: PROBE_N,
                    sleep_ms: 0,
                },
                &[TaskOverride::run_at(Utc::now() - TimeDelta::hours(1))],
            )
            .await?;

        // Until every task is done, or the bound.
        let mut settled = false;
        while healed.elapsed() < DRAIN_BOUND {
            if pending_or_running(&direct).await? == 0 {
                settled = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let settled_after = healed.elapsed();
        let at_end = proxy.stats();
        // Transactions the workers' sessions left open on the server (a dead connection
        // whose transaction the server still holds, with its row locks).
        let stuck = direct
            .query_one(
                "SELECT count(*), coalesce(extract(epoch FROM max(now() - xact_start)), 0)::float8 \
                 FROM pg_stat_activity WHERE application_name LIKE $1 \
                 AND state LIKE 'idle in transaction%'",
                &[&format!("{}\\_w%", db.name)],
            )
            .await?;
        let (stuck_sessions, stuck_for): (i64, f64) = (stuck.get(0), stuck.get(1));

        // Stop the workers (bounded: a worker that hangs in shutdown is killed, and said).
        let mut problems = Vec::new();
        for worker in &mut workers {
            if let Err(err) = worker.assert_alive() {
                problems.push(format!("{err:#}"));
            }
        }
        let log_files: Vec<(String, std::path::PathBuf)> = workers
            .iter()
            .map(|w| (w.id.clone(), w.log_path().to_path_buf()))
            .collect();
        let shutdowns = stop_all(&db, workers, STOP_BOUND, &mut problems).await?;
        let logs: Vec<String> = log_files
            .iter()
            .map(|(id, path)| log_summary(id, path))
            .collect();
        let report = db
            .check(&Expect {
                completed: vec!["Work"],
                ..Expect::default()
            })
            .await?;

        // The figures, from the database: completions by `finished_at`.
        let figures = Figures::read(&db, &direct, cut_at, heal_at, probe).await?;
        let rescues = db.rescues().await?;
        let runs_ended_while_cut = |outcome: &'static str| {
            let direct = &direct;
            async move {
                let row = direct
                    .query_one(
                        "SELECT count(*) FROM chaos.ledger WHERE outcome = $1 \
                         AND ended_at >= $2 AND ended_at < $3",
                        &[&outcome, &cut_at, &heal_at],
                    )
                    .await?;
                Ok::<i64, anyhow::Error>(row.get(0))
            }
        };
        let ticks = Ticks::read(&direct, cut_at, heal_at).await?;
        let fenced = runs_ended_while_cut("aborted").await?;
        let done_unwritten = runs_ended_while_cut("ok").await?;
        let rate_after = figures.recovered_rate(FULL_SPEED);
        let after_heal = |s: Option<f64>| s.map_or("never".to_string(), |s| format!("{s:.2}s"));
        print_figures(
            &format!(
                "half-open partition of {CUT:?} (lease 3 s), {} after the heal, under 2 workers, \
                 {TASKS} Work + 1 probe",
                match heal {
                    Heal::Resume => "connections resume",
                    Heal::NewConnectionsOnly => "old connections dead",
                }
            ),
            &report,
            &format!(
                " | before the cut {:.0} tasks/s | completions while cut {} (from 1 s in) \
                 | runs fenced while cut {fenced} | runs done while cut, completion held {done_unwritten} \
                 | rescues {rescues} | after the heal: first completion {}, first rescue {}, \
                 probe done {}, {:.0}% of the rate {} ({}), all done {} | settled {} \
                 | cron ticks before the cut {}, while cut {}, after the heal {} (first {}) \
                 | worker sessions idle in transaction at the end {stuck_sessions} \
                 (oldest {stuck_for:.1}s) | proxy: {} | shutdown: {} | total {:.1?}",
                figures.pre_rate,
                at_heal - at_cut_plus_1s,
                after_heal(figures.first_completion),
                after_heal(figures.first_rescue),
                after_heal(figures.probe_done),
                FULL_SPEED * 100.0,
                after_heal(rate_after.map(|(s, _)| s)),
                rate_after.map_or("-".to_string(), |(_, how)| how.to_string()),
                after_heal(figures.last_completion),
                if settled {
                    format!("in {settled_after:.1?}")
                } else {
                    format!("NOT within {DRAIN_BOUND:?}")
                },
                ticks.before_cut,
                ticks.while_cut,
                ticks.after_heal,
                after_heal(ticks.first_after_heal),
                proxy_figures(&before_cut, &during_cut, &at_end),
                shutdowns.join(", "),
                started.elapsed(),
            ),
        );
        println!(
            "[chaos]   completions per second from 3 s before the cut: {}",
            figures
                .per_second
                .iter()
                .map(|n| n.to_string())
                .collect::<Vec<_>>()
                .join(" ")
        );
        for line in &logs {
            println!("[chaos]   {line}");
        }

        // The partition was real: nothing completed while it lasted.
        if at_heal != at_cut_plus_1s {
            problems.push(format!(
                "{} tasks completed while the proxy forwarded nothing: the partition did not cut \
                 the workers off",
                at_heal - at_cut_plus_1s
            ));
        }
        if let Err(err) = report.assert_clean() {
            problems.push(format!("{err:#}"));
        }
        if !settled {
            problems.push(format!(
                "tasks still pending or running {DRAIN_BOUND:?} after the heal"
            ));
        }
        let bound = RECOVERY_BOUND.as_secs_f64();
        match figures.probe_done {
            Some(s) if s <= bound => {}
            other => problems.push(format!(
                "the probe enqueued at the heal completed {} after it (bound {RECOVERY_BOUND:?})",
                after_heal(other)
            )),
        }
        match rate_after {
            Some((s, _)) if s <= bound => {}
            other => problems.push(format!(
                "completions per second got back to {:.0}% of the rate before the partition \
                 {} after the heal (bound {RECOVERY_BOUND:?})",
                FULL_SPEED * 100.0,
                after_heal(other.map(|(s, _)| s))
            )),
        }
        // The cron scheduler is back too (`Tick` fires every second).
        match ticks.first_after_heal {
            Some(s) if s <= bound => {}
            other => problems.push(format!(
                "the first cron tick after the heal fired {} after it (bound {RECOVERY_BOUND:?})",
                after_heal(other)
            )),
        }
        if report.tasks != TASKS + 1 {
            problems.push(format!(
                "expected {} tasks, found {}",
                TASKS + 1,
                report.tasks
            ));
        }
        if !problems.is_empty() {
            bail!("{}", problems.join("\n"));
        }
        Ok(())
    })
}

/// Completed `Work` tasks.
async fn completed(conn: &tokio_postgres::Client) -> Result<i64> {
    Ok(conn
        .query_one(
            "SELECT count(*) FROM anchor.tasks WHERE name = 'Work' AND status = 2",
            &[],
        )
        .await?
        .get(0))
}

/// `Work` tasks not finished yet.
async fn pending_or_running(conn: &tokio_postgres::Client) -> Result<i64> {
    Ok(conn
        .query_one(
            "SELECT count(*) FROM anchor.tasks WHERE name = 'Work' AND status IN (0, 1)",
            &[],
        )
        .await?
        .get(0))
}

/// The database's clock (task and ledger times are on it).
async fn db_now(conn: &tokio_postgres::Client) -> Result<DateTime<Utc>> {
    Ok(conn
        .query_one("SELECT clock_timestamp()", &[])
        .await?
        .get(0))
}

/// SIGTERM to every worker, then up to `limit` (for all together) for clean exits; a
/// worker still there is killed (and the kill recorded, so its open runs end then), which
/// is a problem, as is an unclean exit.
async fn stop_all(
    db: &ChaosDb,
    workers: Vec<WorkerProcess>,
    limit: Duration,
    problems: &mut Vec<String>,
) -> Result<Vec<String>> {
    for worker in &workers {
        worker.sigterm()?;
    }
    let asked = Instant::now();
    let mut running = workers;
    let mut outcomes = Vec::new();
    while !running.is_empty() {
        let mut still = Vec::new();
        for mut worker in running {
            match worker.exited()? {
                Some(status) if status.success() => {
                    outcomes.push(format!("{} exited in {:.1?}", worker.id, asked.elapsed()));
                }
                Some(status) => {
                    outcomes.push(format!("{} exited with {status}", worker.id));
                    problems.push(format!(
                        "worker {} exited with {status}\n{}",
                        worker.id,
                        worker.log_tail()
                    ));
                }
                None if asked.elapsed() > limit => {
                    let (id, tail) = (worker.id.clone(), worker.log_tail());
                    worker.kill9(db).await?;
                    outcomes.push(format!("{id} killed after {limit:?}"));
                    problems.push(format!(
                        "worker {id} did not exit within {limit:?} of SIGTERM (killed)\n{tail}"
                    ));
                }
                None => still.push(worker),
            }
        }
        running = still;
        if !running.is_empty() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    Ok(outcomes)
}

/// The worker's warnings and errors: how many, and the first few distinct messages.
fn log_summary(id: &str, path: &std::path::Path) -> String {
    let text = strip_ansi(&std::fs::read_to_string(path).unwrap_or_default());
    let (mut warns, mut errors) = (0, 0);
    // (message without its numbers, message as logged)
    let mut distinct: Vec<(String, String)> = Vec::new();
    for line in text.lines() {
        let level = if line.contains(" WARN ") {
            warns += 1;
            "WARN"
        } else if line.contains(" ERROR ") {
            errors += 1;
            "ERROR"
        } else {
            continue;
        };
        // `<time> LEVEL target: message fields`: keep the message and fields.
        let message = line
            .split_once(": ")
            .map_or(line, |(_, m)| m)
            .replace(&format!(" worker={id}"), "");
        let key: String = message
            .chars()
            .filter(|c| !c.is_ascii_digit())
            .take(60)
            .collect();
        if distinct.len() < 8 && !distinct.iter().any(|(k, _)| *k == key) {
            let shown: String = message.chars().take(150).collect();
            distinct.push((key, format!("{level} {shown}")));
        }
    }
    let mut summary = format!(
        "{id}: {warns} warnings, {errors} errors in {}",
        path.display()
    );
    for (_, shown) in distinct {
        summary.push_str("\n[chaos]     ");
        summary.push_str(&shown);
    }
    summary
}

/// The log without its colour codes (`ESC [ … m`).
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // Skip to the end of the escape sequence.
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn proxy_figures(before: &ProxyStats, during: &ProxyStats, end: &ProxyStats) -> String {
    format!(
        "{} runtime connections open at the cut ({} of the ledger left alone), {} accepted \
         while cut (held), {} bytes leaked while cut, {} left dead at the heal, {} accepted \
         in all, {} open at the end",
        during.cut_open,
        before.ledger,
        during.accepted_while_cut,
        during.leaked_bytes,
        end.dead,
        end.accepted,
        end.open
    )
}

/// The cron occurrences (`Tick`, every second) around the partition.
struct Ticks {
    before_cut: i64,
    while_cut: i64,
    after_heal: i64,
    /// Seconds from the heal to the first occurrence after it.
    first_after_heal: Option<f64>,
}

impl Ticks {
    async fn read(
        direct: &tokio_postgres::Client,
        cut_at: DateTime<Utc>,
        heal_at: DateTime<Utc>,
    ) -> Result<Ticks> {
        let row = direct
            .query_one(
                "SELECT count(*) FILTER (WHERE created_at < $1), \
                        count(*) FILTER (WHERE created_at >= $1 AND created_at < $2), \
                        count(*) FILTER (WHERE created_at >= $2), \
                        extract(epoch FROM min(created_at) FILTER (WHERE created_at >= $2) - $2)::float8 \
                 FROM anchor.tasks WHERE name = 'Tick'",
                &[&cut_at, &heal_at],
            )
            .await?;
        Ok(Ticks {
            before_cut: row.get(0),
            while_cut: row.get(1),
            after_heal: row.get(2),
            first_after_heal: row.get(3),
        })
    }
}

/// Completion times around the partition, in seconds after the heal unless said.
struct Figures {
    /// Completions per second in the [`PRE_WINDOW`] before the cut.
    pre_rate: f64,
    /// Completions in each second from 3 s before the cut to the last one.
    per_second: Vec<i64>,
    /// Every completion at or after the heal, sorted.
    after_heal: Vec<f64>,
    first_completion: Option<f64>,
    last_completion: Option<f64>,
    probe_done: Option<f64>,
    /// The first rescue (a worker returning another's expired lease) after the heal.
    first_rescue: Option<f64>,
    /// The backlog was gone (nothing pending or running) at this time, if it was.
    drained: bool,
}

impl Figures {
    async fn read(
        db: &ChaosDb,
        direct: &tokio_postgres::Client,
        cut_at: DateTime<Utc>,
        heal_at: DateTime<Utc>,
        probe: TaskId,
    ) -> Result<Figures> {
        let pre_start = cut_at - TimeDelta::from_std(PRE_WINDOW)?;
        let pre: i64 = direct
            .query_one(
                "SELECT count(*) FROM anchor.tasks WHERE name = 'Work' AND status = 2 \
                 AND finished_at >= $1 AND finished_at < $2",
                &[&pre_start, &cut_at],
            )
            .await?
            .get(0);
        let rows = direct
            .query(
                "SELECT floor(extract(epoch FROM finished_at - $1))::bigint AS s, count(*) \
                 FROM anchor.tasks WHERE name = 'Work' AND status = 2 AND finished_at >= $1 \
                 GROUP BY s ORDER BY s",
                &[&pre_start],
            )
            .await?;
        let mut per_second = Vec::new();
        for row in &rows {
            let (s, n): (i64, i64) = (row.get(0), row.get(1));
            let s = usize::try_from(s).context("negative second")?;
            if per_second.len() <= s {
                per_second.resize(s + 1, 0);
            }
            per_second[s] = n;
        }
        let after_heal: Vec<f64> = direct
            .query(
                "SELECT extract(epoch FROM finished_at - $1)::float8 FROM anchor.tasks \
                 WHERE name = 'Work' AND status = 2 AND finished_at >= $1 ORDER BY 1",
                &[&heal_at],
            )
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let probe_done: Option<f64> = direct
            .query_one(
                "SELECT extract(epoch FROM finished_at - $1)::float8 FROM anchor.tasks \
                 WHERE id = $2 AND status = 2",
                &[&heal_at, &probe],
            )
            .await
            .ok()
            .map(|r| r.get(0));
        let first_rescue: Option<f64> = direct
            .query_one(
                "SELECT extract(epoch FROM min(at) - $1)::float8 FROM chaos.transitions \
                 WHERE actor IS DISTINCT FROM lease_owner AND at >= $1",
                &[&heal_at],
            )
            .await?
            .get(0);
        let drained = db
            .scalar("SELECT count(*) FROM anchor.tasks WHERE name = 'Work' AND status IN (0, 1)")
            .await?
            == 0;
        Ok(Figures {
            pre_rate: pre as f64 / PRE_WINDOW.as_secs_f64(),
            per_second,
            first_completion: after_heal.first().copied(),
            last_completion: after_heal.last().copied(),
            after_heal,
            probe_done,
            first_rescue,
            drained,
        })
    }

    /// When completions got back to `share` of the rate before the cut: the end of the
    /// first one-second window after the heal that held that many, or, when the backlog
    /// ran out before any did, the last completion (the workers kept up until the end).
    fn recovered_rate(&self, share: f64) -> Option<(f64, &'static str)> {
        let needed = (share * self.pre_rate).ceil().max(1.0) as usize;
        let times = &self.after_heal;
        // For each completion, the completions within one second from it.
        let mut end = 0;
        for (start, &t) in times.iter().enumerate() {
            while end < times.len() && times[end] < t + 1.0 {
                end += 1;
            }
            if end - start >= needed {
                return Some((t + 1.0, "first 1 s window at that rate"));
            }
        }
        if self.drained {
            self.last_completion
                .map(|t| (t, "backlog ran out before a full window"))
        } else {
            None
        }
    }
}
