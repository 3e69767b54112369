//! What every scenario needs: a throwaway PostgreSQL (pgtemp, as in the runtime's test
//! harness), a fresh database with anchor's tables and the ledger, `chaos-worker`
//! processes to start, kill and stop, and the checker that reads the invariants back from
//! the database.

use std::fmt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use anchor_chaos::ledger::url_with_application_name;
use anchor_chaos::zgen::taskgen::TaskRunner;
use anchor_runtime::chrono::Utc;
use anchor_runtime::tokio_postgres::{self, NoTls};
use anchor_runtime::Client;
use anyhow::{bail, Context, Result};

/// The scenarios run one at a time: each starts several processes and injects faults, and
/// on two shared cores running them side by side would only add noise (and time).
pub fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runs `body` on a fresh multi-threaded runtime, one scenario at a time.
pub fn scenario<F>(body: F) -> Result<()>
where
    F: std::future::Future<Output = Result<()>>,
{
    let _one_at_a_time = serial();
    init_tracing();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot build the tokio runtime")?
        .block_on(body)
}

fn init_tracing() {
    static INIT: OnceLock<()> = OnceLock::new();
    INIT.get_or_init(|| {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error")),
            )
            .with_test_writer()
            .try_init();
    });
}

pub use anchor_testkit::Cluster;

/// Starts a cluster allowing `max_connections` sessions, with autovacuum on (a queue lives
/// on it). `durable` keeps `synchronous_commit` on, so an immediate shutdown cannot drop a
/// commit that was already acknowledged.
pub fn start_cluster(max_connections: u32, durable: bool) -> Cluster {
    let builder = Cluster::builder()
        .max_connections(max_connections)
        .autovacuum();
    if durable {
        builder.durable().start()
    } else {
        builder.start()
    }
}

/// The cluster the scenarios that do not restart the server share.
pub fn shared_cluster() -> &'static Cluster {
    static CLUSTER: OnceLock<Cluster> = OnceLock::new();
    CLUSTER.get_or_init(|| start_cluster(300, false))
}

/// Waits until `check` returns `Some`, or fails after `timeout`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Option<T>>>,
{
    anchor_testkit::wait_for(what, timeout, check).await
}

/// One scenario's database: anchor's tables, the ledger and the audit trigger.
pub struct ChaosDb {
    /// The database's URL (without an application name).
    pub url: String,
    /// The name workers' ids start with, so the scenario finds its own backends.
    pub name: String,
    /// The test's client (application_name `chaos-test`).
    pub client: Client,
    /// The generated runner over [`ChaosDb::client`].
    pub runner: TaskRunner,
}

impl ChaosDb {
    /// Creates a database in `cluster` and installs the schema.
    pub async fn create(cluster: &Cluster, scenario: &str) -> Result<ChaosDb> {
        let anchor_testkit::Database { name, url } = cluster.create_database(scenario).await?;
        let client =
            Client::connect_with_pool_size(&url_with_application_name(&url, "chaos-test"), 8)
                .await?;
        anchor_runtime::migrate(&client).await?;
        let conn = client.pool().get().await?;
        anchor_chaos::install(&conn).await?;
        drop(conn);
        let runner = TaskRunner::new(client.clone());
        Ok(ChaosDb {
            url,
            name,
            client,
            runner,
        })
    }

    /// A one-off statement on a fresh connection (the pool may hold connections a restart
    /// broke).
    pub async fn admin(&self) -> Result<tokio_postgres::Client> {
        let (client, conn) =
            tokio_postgres::connect(&url_with_application_name(&self.url, "chaos-admin"), NoTls)
                .await
                .context("cannot connect to the scenario's database")?;
        tokio::spawn(conn);
        Ok(client)
    }

    /// One number from `sql`.
    pub async fn scalar(&self, sql: &str) -> Result<i64> {
        self.value(sql).await
    }

    /// The single value `sql` returns.
    async fn value<T: for<'a> tokio_postgres::types::FromSql<'a>>(&self, sql: &str) -> Result<T> {
        let admin = self.admin().await?;
        let row = admin
            .query_one(sql, &[])
            .await
            .with_context(|| format!("query failed: {sql}"))?;
        Ok(row.get(0))
    }

    /// Waits until no task of `names` is pending or running (every one finished).
    pub async fn wait_until_settled(&self, names: &[&str], timeout: Duration) -> Result<()> {
        let list = sql_list(names);
        let sql = format!(
            "SELECT count(*) FROM anchor.tasks WHERE name IN ({list}) AND status IN (0, 1)"
        );
        wait_for(
            &format!("every {names:?} task to finish"),
            timeout,
            || async {
                // An outage may be in progress: an error means "not yet".
                Ok(match self.scalar(&sql).await {
                    Ok(0) => Some(()),
                    _ => None,
                })
            },
        )
        .await
    }

    /// Starts a worker process `<db name>_<id>` with extra flags.
    pub async fn spawn_worker(&self, id: &str, flags: &[&str]) -> Result<WorkerProcess> {
        let url = self.url.clone();
        self.spawn_worker_at(&url, id, flags).await
    }

    /// Starts a worker process connecting to `url` (e.g. as another role).
    pub async fn spawn_worker_at(
        &self,
        url: &str,
        id: &str,
        flags: &[&str],
    ) -> Result<WorkerProcess> {
        self.spawn_worker_with_env(url, id, flags, &[]).await
    }

    /// Starts a worker process connecting to `url` with extra environment variables (e.g.
    /// `LD_PRELOAD` of libfaketime to shift its clock).
    pub async fn spawn_worker_with_env(
        &self,
        url: &str,
        id: &str,
        flags: &[&str],
        env: &[(&str, &str)],
    ) -> Result<WorkerProcess> {
        let worker_id = format!("{}_{id}", self.name);
        let log_path = std::env::temp_dir().join(format!("{worker_id}.log"));
        let log = std::fs::File::create(&log_path)
            .with_context(|| format!("cannot create {}", log_path.display()))?;
        let child = Command::new(env!("CARGO_BIN_EXE_chaos-worker"))
            .env("DATABASE_URL", url)
            .env("CHAOS_WORKER_ID", &worker_id)
            .env(
                "RUST_LOG",
                std::env::var("CHAOS_WORKER_LOG").unwrap_or_else(|_| "warn".to_string()),
            )
            .envs(env.iter().copied())
            .args(flags)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("cannot start chaos-worker")?;
        let mut worker = WorkerProcess {
            id: worker_id,
            child: Some(child),
            log_path,
        };
        // The worker's LISTEN connection opens at start: its session is the sign of life.
        let probe = format!(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = '{}'",
            worker.id
        );
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = worker.try_exit()? {
                bail!(
                    "worker exited during start-up with {status}\n{}",
                    worker.log_tail()
                );
            }
            if matches!(self.scalar(&probe).await, Ok(n) if n > 0) {
                break;
            }
            if Instant::now() > deadline {
                bail!(
                    "worker {} did not connect within 60 s\n{}",
                    worker.id,
                    worker.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(worker)
    }

    /// Records that `worker` was killed now: its open runs end at this time.
    pub async fn record_kill(&self, worker: &str) -> Result<()> {
        let admin = self.admin().await?;
        admin
            .execute(
                "INSERT INTO chaos.kills (worker, killed_at) VALUES ($1, $2)",
                &[&worker, &Utc::now()],
            )
            .await?;
        Ok(())
    }

    /// Reads the invariants and figures back from the database.
    pub async fn check(&self, expect: &Expect) -> Result<Report> {
        check(self, expect).await
    }

    /// The end of most scenarios: every worker must still be alive (no fault may crash
    /// one), then each is stopped gracefully, then the invariants are read back.
    pub async fn stop_and_check(
        &self,
        workers: Vec<WorkerProcess>,
        expect: &Expect,
    ) -> Result<Report> {
        let mut workers = workers;
        for worker in &mut workers {
            worker.assert_alive()?;
        }
        for worker in workers {
            worker.stop(Duration::from_secs(30)).await?;
        }
        self.check(expect).await
    }
}

/// `'a', 'b'` for an SQL `IN` list of known task names.
pub fn sql_list(names: &[&str]) -> String {
    names
        .iter()
        .map(|n| format!("'{n}'"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A `chaos-worker` process. Dropping it kills the process.
pub struct WorkerProcess {
    /// The worker id (lease owner and application_name).
    pub id: String,
    child: Option<Child>,
    log_path: PathBuf,
}

impl WorkerProcess {
    /// Where the worker's stderr goes.
    pub fn log_path(&self) -> &std::path::Path {
        &self.log_path
    }

    fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    fn try_exit(&mut self) -> Result<Option<std::process::ExitStatus>> {
        match self.child.as_mut() {
            Some(child) => Ok(child.try_wait()?),
            None => bail!("worker {} was already reaped", self.id),
        }
    }

    /// SIGKILL, recorded in `chaos.kills`.
    pub async fn kill9(mut self, db: &ChaosDb) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill().context("cannot kill the worker")?;
            child.wait()?;
        }
        db.record_kill(&self.id).await
    }

    /// Sends SIGTERM (graceful shutdown).
    pub fn sigterm(&self) -> Result<()> {
        self.signal("TERM")
    }

    /// Sends SIGSTOP (the process freezes, as in a VM pause) and records it in
    /// `chaos.pauses`.
    pub async fn sigstop(&self, db: &ChaosDb) -> Result<()> {
        self.signal("STOP")?;
        db.admin()
            .await?
            .execute(
                "INSERT INTO chaos.pauses (worker, paused_at) VALUES ($1, $2)",
                &[&self.id, &Utc::now()],
            )
            .await?;
        Ok(())
    }

    /// Sends SIGCONT and records the end of the pause.
    pub async fn sigcont(&self, db: &ChaosDb) -> Result<()> {
        db.admin()
            .await?
            .execute(
                "UPDATE chaos.pauses SET resumed_at = $2 WHERE worker = $1 AND resumed_at IS NULL",
                &[&self.id, &Utc::now()],
            )
            .await?;
        self.signal("CONT")
    }

    fn signal(&self, name: &str) -> Result<()> {
        let pid = self.pid().context("worker already reaped")?;
        let status = Command::new("kill")
            .args([&format!("-{name}"), &pid.to_string()])
            .status()
            .context("cannot run kill")?;
        if !status.success() {
            bail!("kill -{name} {pid} failed");
        }
        Ok(())
    }

    /// Waits for the process to exit; fails (with its log) if it did not within `timeout`
    /// or exited unsuccessfully.
    pub async fn wait_exit(mut self, timeout: Duration) -> Result<Duration> {
        let started = Instant::now();
        loop {
            if let Some(status) = self.try_exit()? {
                if !status.success() {
                    bail!(
                        "worker {} exited with {status}\n{}",
                        self.id,
                        self.log_tail()
                    );
                }
                self.child = None;
                return Ok(started.elapsed());
            }
            if started.elapsed() > timeout {
                bail!(
                    "worker {} did not exit within {timeout:?}\n{}",
                    self.id,
                    self.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGTERM and wait for a clean exit.
    pub async fn stop(self, timeout: Duration) -> Result<Duration> {
        self.sigterm()?;
        self.wait_exit(timeout).await
    }

    /// Whether the process has exited by itself (it crashed or aborted), reaping it if so.
    pub fn exited(&mut self) -> Result<Option<std::process::ExitStatus>> {
        self.try_exit()
    }

    /// Records a process that [`WorkerProcess::exited`] by itself as killed now, in
    /// `chaos.kills`, so that its open runs end at this time (a moment after the real
    /// death, which only makes its runs look longer).
    pub async fn record_death(mut self, db: &ChaosDb) -> Result<()> {
        self.child = None;
        db.record_kill(&self.id).await
    }

    /// Fails if the process is no longer running (it crashed).
    pub fn assert_alive(&mut self) -> Result<()> {
        if let Some(status) = self.try_exit()? {
            bail!("worker {} died with {status}\n{}", self.id, self.log_tail());
        }
        Ok(())
    }

    /// The last lines of the worker's log, for failure messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log_path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(30)..].join("\n");
        format!("--- last lines of {} ---\n{tail}", self.log_path.display())
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// What a scenario expects at the end.
#[derive(Default)]
pub struct Expect {
    /// Tasks that must all be `completed`.
    pub completed: Vec<&'static str>,
    /// Tasks that must all be `failed`, each with exactly one `onFailed` handler, completed.
    pub failed_with_handler: Vec<&'static str>,
}

/// The tasks that succeed, with a retry policy (`Work`) and without one (`Plain`).
pub const ORDINARY: &[&str] = &["Work", "Plain"];
/// The tasks on the failure path by design: `Doomed` (one retry) and `PlainDoomed` (no
/// retry policy), each failing into its `onFailed` handler.
pub const FAILING: &[&str] = &["Doomed", "PlainDoomed"];
/// The failure handlers of [`FAILING`] (neither has a retry policy).
pub const HANDLERS: &[&str] = &["DoomedFailed", "PlainDoomedFailed"];

impl Expect {
    /// What a scenario running [`ChaosDb::enqueue_mix`] expects: the ordinary tasks and the
    /// handlers completed, the failing tasks failed with exactly one handler each.
    pub fn mix() -> Expect {
        Expect {
            completed: ORDINARY.iter().chain(HANDLERS).copied().collect(),
            failed_with_handler: FAILING.to_vec(),
        }
    }
}

/// How many tasks of each kind [`ChaosDb::enqueue_mix`] enqueued.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Mix {
    /// `Work` (retried until it succeeds).
    pub work: i64,
    /// `Plain` (no retry policy).
    pub plain: i64,
    /// `Doomed` (fails, one retry, then its handler).
    pub doomed: i64,
    /// `PlainDoomed` (fails at once, no retry policy, then its handler).
    pub plain_doomed: i64,
}

impl Mix {
    /// Tasks on the failure path (each enqueues one handler).
    pub fn failing(&self) -> i64 {
        self.doomed + self.plain_doomed
    }

    /// Every task the scenario ends with: the enqueued ones and one handler per failing
    /// task.
    pub fn total_with_handlers(&self) -> i64 {
        self.work + self.plain + 2 * self.failing()
    }
}

impl std::ops::AddAssign for Mix {
    fn add_assign(&mut self, other: Mix) {
        self.work += other.work;
        self.plain += other.plain;
        self.doomed += other.doomed;
        self.plain_doomed += other.plain_doomed;
    }
}

/// A scenario's figures and invariant violations.
#[derive(Debug, Default)]
pub struct Report {
    /// Tasks the scenario enqueued (of the expected names).
    pub tasks: i64,
    /// Tasks that had a run which did not end well (killed, aborted, errored by the fault)
    /// and still reached their expected end.
    pub recovered: i64,
    /// (a) Tasks not in their expected end state.
    pub lost: i64,
    /// Tasks whose work completed more than once (at-least-once delivery; allowed).
    pub duplicates: i64,
    /// Executions recorded.
    pub runs: i64,
    /// (b) Pairs of runs of one task whose time intervals overlap.
    pub concurrent_runs: i64,
    /// Runs with no end that no kill explains.
    pub unterminated_runs: i64,
    /// (c) Completions applied by a session that did not hold the lease, or with no
    /// successful run of that attempt by that worker behind them; and changes of a running
    /// task by another worker while its lease was still valid.
    pub stale_writes: i64,
    /// (c) Tasks completed more than once.
    pub double_completions: i64,
    /// Cron occurrences, distinct ticks, and ticks that fired more than once.
    pub cron_occurrences: i64,
    /// (d) Cron occurrences beyond one per tick.
    pub cron_double_fires: i64,
    /// Failure handlers present for the tasks expected to fail.
    pub handlers: i64,
    /// (a) Tasks expected to complete that `failed` (also counted in `lost`).
    pub unexpected_failures: i64,
    /// (a) Tasks expected to fail whose number of `onFailed` handlers is not exactly one.
    pub handler_mismatches: i64,
    /// Handlers whose work completed more than once (a fault between the work and the
    /// completion; allowed by at-least-once, as for any task).
    pub handler_repeats: i64,
    /// The unexpected failures by task name and last error, with counts.
    pub failure_summary: Vec<String>,
    /// The rows behind each violation, for the failure message.
    pub details: Vec<String>,
}

impl Report {
    /// Fails with the figures if any invariant is violated.
    pub fn assert_clean(&self) -> Result<()> {
        if self.lost == 0
            && self.concurrent_runs == 0
            && self.unterminated_runs == 0
            && self.stale_writes == 0
            && self.double_completions == 0
            && self.cron_double_fires == 0
            && self.unexpected_failures == 0
            && self.handler_mismatches == 0
        {
            Ok(())
        } else {
            bail!("invariant violated: {self}\n{}", self.details.join("\n"))
        }
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "tasks {} | recovered {} | lost {} | duplicates {} | runs {} | concurrent runs {} | \
             unterminated runs {} | stale writes {} | double completions {} | \
             cron occurrences {} | cron double fires {} | failure handlers {} | \
             unexpected failures {} | handler mismatches {} | handler repeats {}",
            self.tasks,
            self.recovered,
            self.lost,
            self.duplicates,
            self.runs,
            self.concurrent_runs,
            self.unterminated_runs,
            self.stale_writes,
            self.double_completions,
            self.cron_occurrences,
            self.cron_double_fires,
            self.handlers,
            self.unexpected_failures,
            self.handler_mismatches,
            self.handler_repeats,
        )?;
        if !self.failure_summary.is_empty() {
            write!(f, " | failed: {}", self.failure_summary.join("; "))?;
        }
        Ok(())
    }
}

async fn check(db: &ChaosDb, expect: &Expect) -> Result<Report> {
    let mut all: Vec<&str> = expect.completed.clone();
    all.extend(expect.failed_with_handler.iter().copied());
    let all = sql_list(&all);
    let completed = sql_list(&expect.completed);
    let failed = sql_list(&expect.failed_with_handler);
    let mut report = Report {
        tasks: db
            .scalar(&format!(
                "SELECT count(*) FROM anchor.tasks WHERE name IN ({all})"
            ))
            .await?,
        ..Report::default()
    };
    // (a) Nothing lost: every task in its expected end state.
    let mut lost = 0;
    if !expect.completed.is_empty() {
        lost += db
            .scalar(&format!(
                "SELECT count(*) FROM anchor.tasks WHERE name IN ({completed}) AND status <> 2"
            ))
            .await?;
        report.unexpected_failures = db
            .scalar(&format!(
                "SELECT count(*) FROM anchor.tasks WHERE name IN ({completed}) AND status = 3"
            ))
            .await?;
        if report.unexpected_failures > 0 {
            let admin = db.admin().await?;
            let rows = admin
                .query(
                    &format!(
                        "SELECT name || ': ' || count(*) || ' x \"' \
                                || left(coalesce(errors -> -1 ->> 'message', '-'), 80) || '\"' \
                         FROM anchor.tasks WHERE name IN ({completed}) AND status = 3 \
                         GROUP BY name, left(coalesce(errors -> -1 ->> 'message', '-'), 80) \
                         ORDER BY count(*) DESC LIMIT 8"
                    ),
                    &[],
                )
                .await?;
            report.failure_summary = rows.iter().map(|r| r.get::<_, String>(0)).collect();
        }
    }
    if !expect.failed_with_handler.is_empty() {
        lost += db
            .scalar(&format!(
                "SELECT count(*) FROM anchor.tasks t WHERE t.name IN ({failed}) AND (t.status <> 3 \
                 OR NOT EXISTS (SELECT 1 FROM anchor.tasks h WHERE h.parent_id = t.id \
                                AND h.name = t.on_failed AND h.status = 2))"
            ))
            .await?;
        report.handlers = db
            .scalar(&format!(
                "SELECT count(*) FROM anchor.tasks h JOIN anchor.tasks t ON h.parent_id = t.id \
                 WHERE t.name IN ({failed})"
            ))
            .await?;
        report.handler_mismatches = db
            .scalar(&format!(
                "SELECT count(*) FROM anchor.tasks t WHERE t.name IN ({failed}) AND ( \
                   SELECT count(*) FROM anchor.tasks h WHERE h.parent_id = t.id \
                   AND h.name = t.on_failed) <> 1"
            ))
            .await?;
        report.handler_repeats = db
            .scalar(&format!(
                "SELECT count(*) FROM anchor.tasks h JOIN anchor.tasks t ON h.parent_id = t.id \
                 WHERE t.name IN ({failed}) AND (SELECT count(*) FROM chaos.ledger l \
                   WHERE l.task_id = h.id AND l.outcome = 'ok') > 1"
            ))
            .await?;
    }
    report.lost = lost;
    report.recovered = db
        .scalar(&format!(
            "SELECT count(DISTINCT l.task_id) FROM chaos.ledger l JOIN anchor.tasks t ON t.id = l.task_id \
             WHERE t.name IN ({all}) AND t.status IN (2, 3) AND coalesce(l.outcome, 'killed') <> 'ok' \
             AND NOT (t.name IN ({failed}) AND l.outcome = 'error')",
            failed = if failed.is_empty() { "''".to_string() } else { failed.clone() }
        ))
        .await?;
    report.duplicates = db
        .scalar(
            "SELECT count(*) FROM (SELECT task_id FROM chaos.ledger WHERE outcome = 'ok' \
             GROUP BY task_id HAVING count(*) > 1) d",
        )
        .await?;
    // A start whose insert committed but whose reply was lost did no work (`never-ran`).
    report.runs = db
        .scalar("SELECT count(*) FROM chaos.ledger WHERE outcome IS DISTINCT FROM 'never-ran'")
        .await?;
    // (b) No task ran on two workers (or twice on one) at the same time. A killed
    // process's open runs end when it was killed.
    // A run its worker stopped (`aborted`) after being frozen by SIGSTOP did no work after
    // the freeze (the runtime never polls a handler past its lease deadline): it ends
    // when the freeze began. A run that finished `ok` or `error` after the freeze keeps
    // its whole span, so handler code running on after a resume counts as an overlap.
    report.concurrent_runs = db
        .scalar(
            "WITH runs AS ( \
               SELECT l.id, l.task_id, l.started_at, \
                      coalesce((SELECT min(p.paused_at) FROM chaos.pauses p \
                                WHERE p.worker = l.worker AND l.outcome = 'aborted' \
                                  AND l.started_at < p.paused_at AND l.ended_at > p.resumed_at), \
                               l.ended_at, k.killed_at, 'infinity') AS ended_at \
               FROM chaos.ledger l LEFT JOIN chaos.kills k ON k.worker = l.worker) \
             SELECT count(*) FROM runs a JOIN runs b \
               ON a.task_id = b.task_id AND a.id < b.id \
              AND a.started_at < b.ended_at AND b.started_at < a.ended_at",
        )
        .await?;
    report.unterminated_runs = db
        .scalar(
            "SELECT count(*) FROM chaos.ledger l WHERE l.ended_at IS NULL \
             AND NOT EXISTS (SELECT 1 FROM chaos.kills k WHERE k.worker = l.worker)",
        )
        .await?;
    // (c) Fenced completion: a completion is applied by the session of the lease holder,
    // after a successful run of that very attempt on that worker; any other worker changes
    // a running task only once its lease expired (a rescue).
    report.stale_writes = db
        .scalar(
            "SELECT count(*) FROM chaos.transitions t WHERE \
               (t.new_status = 2 AND (t.actor IS DISTINCT FROM t.lease_owner OR NOT EXISTS ( \
                  SELECT 1 FROM chaos.ledger l WHERE l.task_id = t.task_id AND l.attempt = t.attempt \
                  AND l.worker = t.actor AND l.outcome = 'ok'))) \
               OR (t.actor IS DISTINCT FROM t.lease_owner AND NOT t.lease_expired)",
        )
        .await?;
    report.double_completions = db
        .scalar(
            "SELECT count(*) FROM (SELECT task_id FROM chaos.transitions WHERE new_status = 2 \
             GROUP BY task_id HAVING count(*) > 1) d",
        )
        .await?;
    // (d) Each cron tick fired once: distinct ticks, and no more occurrences than whole
    // seconds between the first and the last tick (a `*/1` schedule), so two workers
    // computing different tick times would show too.
    report.cron_occurrences = db
        .scalar("SELECT count(*) FROM anchor.tasks WHERE name = 'Tick'")
        .await?;
    report.cron_double_fires = db
        .scalar(
            "SELECT greatest(count(*) - count(DISTINCT (cron_schedule_id, cron_tick_at)), \
                    count(*) - 1 - coalesce(floor(extract(epoch FROM max(cron_tick_at) - min(cron_tick_at))), 0)::bigint, 0) \
             FROM anchor.tasks WHERE name = 'Tick'",
        )
        .await?;
    if report.stale_writes > 0
        || report.concurrent_runs > 0
        || report.lost > 0
        || report.handler_mismatches > 0
    {
        let completed = if completed.is_empty() {
            "''".to_string()
        } else {
            completed
        };
        report.details = details(db, &all, &completed).await?;
    }
    Ok(report)
}

/// The task rows, transitions and runs of the tasks involved in violations (a few of them).
async fn details(db: &ChaosDb, all: &str, completed: &str) -> Result<Vec<String>> {
    let admin = db.admin().await?;
    let rows = admin
        .query(
            &format!(
                "WITH bad AS ( \
                   SELECT t.task_id FROM chaos.transitions t WHERE \
                     (t.new_status = 2 AND (t.actor IS DISTINCT FROM t.lease_owner OR NOT EXISTS ( \
                        SELECT 1 FROM chaos.ledger l WHERE l.task_id = t.task_id AND l.attempt = t.attempt \
                        AND l.worker = t.actor AND l.outcome = 'ok'))) \
                     OR (t.actor IS DISTINCT FROM t.lease_owner AND NOT t.lease_expired) \
                   UNION ALL SELECT id FROM anchor.tasks WHERE name IN ({all}) AND status NOT IN (2, 3) \
                   UNION ALL SELECT id FROM anchor.tasks WHERE name IN ({completed}) AND status = 3 \
                   UNION ALL SELECT a.task_id FROM chaos.ledger a JOIN chaos.ledger b ON a.task_id = b.task_id \
                     AND a.id < b.id AND a.started_at < coalesce(b.ended_at, 'infinity') \
                     AND b.started_at < coalesce(a.ended_at, 'infinity') \
                   LIMIT 5) \
                 SELECT 'task ' || t.id || ' ' || t.name || ' status ' || t.status || ' attempts ' || t.attempts \
                        || ' errors ' || t.errors::text, 0, now() FROM anchor.tasks t WHERE t.id IN (SELECT task_id FROM bad) \
                 UNION ALL SELECT '  transition ' || tr.task_id || ' -> ' || tr.new_status || ' attempt ' || tr.attempt \
                        || ' owner ' || coalesce(tr.lease_owner, '-') || ' actor ' || tr.actor || ' expired ' || tr.lease_expired, \
                        1, tr.at FROM chaos.transitions tr WHERE tr.task_id IN (SELECT task_id FROM bad) \
                 UNION ALL SELECT '  run ' || l.task_id || ' attempt ' || l.attempt || ' worker ' || l.worker \
                        || ' ' || l.started_at || ' .. ' || coalesce(l.ended_at::text, 'open') || ' ' || coalesce(l.outcome, '-'), \
                        1, l.started_at FROM chaos.ledger l WHERE l.task_id IN (SELECT task_id FROM bad) \
                 ORDER BY 2, 3"
            ),
            &[],
        )
        .await?;
    Ok(rows.iter().map(|r| r.get::<_, String>(0)).collect())
}

/// Prints a scenario's figures (shown with `--nocapture`, and on failure).
pub fn print_figures(scenario: &str, report: &Report, extra: &str) {
    println!("[chaos] {scenario}: {report}{extra}");
}

impl ChaosDb {
    /// Creates a login role (not a superuser, so connection limits apply to it) that may
    /// use anchor's and the ledger's tables, and returns this database's URL for it.
    pub async fn create_role(&self, role: &str, connection_limit: i32) -> Result<String> {
        let admin = self.admin().await?;
        admin
            .batch_execute(&format!(
                "CREATE ROLE {role} LOGIN PASSWORD 'chaos' CONNECTION LIMIT {connection_limit}; \
                 GRANT USAGE ON SCHEMA anchor, chaos TO {role}; \
                 GRANT ALL ON ALL TABLES IN SCHEMA anchor, chaos TO {role}; \
                 GRANT ALL ON ALL SEQUENCES IN SCHEMA anchor, chaos TO {role}; \
                 GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA anchor, chaos TO {role};"
            ))
            .await
            .context("cannot create the role")?;
        let rest = self
            .url
            .split_once('@')
            .map(|(_, rest)| rest)
            .context("URL without @")?;
        Ok(format!("postgresql://{role}:chaos@{rest}"))
    }

    /// One floating-point number from `sql`.
    pub async fn scalar_f64(&self, sql: &str) -> Result<f64> {
        self.value(sql).await
    }

    /// How many tasks were taken from a worker by a rescue (its lease expired).
    pub async fn rescues(&self) -> Result<i64> {
        self.scalar(
            "SELECT count(*) FROM chaos.transitions WHERE actor IS DISTINCT FROM lease_owner",
        )
        .await
    }

    /// The longest time, in seconds, from a kill to the rescue of a task the killed
    /// process held (back to `pending`, claimable by any worker): how long the queue took
    /// to recover it. (Its next run may wait longer, behind the backlog.)
    pub async fn kill_recovery_seconds(&self) -> Result<f64> {
        self.scalar_f64(
            "SELECT coalesce(max(extract(epoch FROM tr.at - k.killed_at)), 0)::float8 \
             FROM chaos.transitions tr JOIN chaos.kills k ON k.worker = tr.lease_owner \
             WHERE tr.actor IS DISTINCT FROM tr.lease_owner",
        )
        .await
    }

    /// Enqueues `count` `Work` tasks sleeping `sleep_ms` each, in chunks, numbered from
    /// `first`.
    pub async fn enqueue_work(&self, first: i64, count: i64, sleep_ms: i64) -> Result<()> {
        use anchor_chaos::zgen::taskgen::WorkParameters;
        let mut n = first;
        while n < first + count {
            let end = (n + 5_000).min(first + count);
            let params: Vec<WorkParameters> =
                (n..end).map(|n| WorkParameters { n, sleep_ms }).collect();
            self.runner.run_work_many(&params, &[]).await?;
            n = end;
        }
        Ok(())
    }

    /// Enqueues `count` tasks numbered from `first`, each sleeping `sleep_ms`, interleaved in
    /// chunks (of 4 to 50 numbers, a hundredth of the count) so that every stretch of the
    /// queue holds each kind and faults hit all of them: with `failing_every = Some(k)`, `n % k == k / 2` is a `Doomed` and
    /// `n % k == k - 1` a `PlainDoomed` (both fail into their handler); of the rest, odd `n`
    /// are `Plain` (no retry policy) and even `n` are `Work`.
    pub async fn enqueue_mix(
        &self,
        first: i64,
        count: i64,
        sleep_ms: i64,
        failing_every: Option<i64>,
    ) -> Result<Mix> {
        use anchor_chaos::zgen::taskgen::{
            DoomedParameters, PlainDoomedParameters, PlainParameters, WorkParameters,
        };
        let mut mix = Mix::default();
        let chunk = (count / 100).clamp(4, 50);
        let mut n = first;
        while n < first + count {
            let end = (n + chunk).min(first + count);
            let (mut work, mut plain, mut doomed, mut plain_doomed) =
                (Vec::new(), Vec::new(), Vec::new(), Vec::new());
            for n in n..end {
                match failing_every {
                    Some(k) if n % k == k / 2 => doomed.push(DoomedParameters { n, sleep_ms }),
                    Some(k) if n % k == k - 1 => {
                        plain_doomed.push(PlainDoomedParameters { n, sleep_ms })
                    }
                    _ if n % 2 == 1 => plain.push(PlainParameters { n, sleep_ms }),
                    _ => work.push(WorkParameters { n, sleep_ms }),
                }
            }
            mix += Mix {
                work: work.len() as i64,
                plain: plain.len() as i64,
                doomed: doomed.len() as i64,
                plain_doomed: plain_doomed.len() as i64,
            };
            if !work.is_empty() {
                self.runner.run_work_many(&work, &[]).await?;
            }
            if !plain.is_empty() {
                self.runner.run_plain_many(&plain, &[]).await?;
            }
            if !doomed.is_empty() {
                self.runner.run_doomed_many(&doomed, &[]).await?;
            }
            if !plain_doomed.is_empty() {
                self.runner
                    .run_plain_doomed_many(&plain_doomed, &[])
                    .await?;
            }
            n = end;
        }
        Ok(mix)
    }

    /// Tasks of `names` that a rescue took from a worker (its lease expired), at least once.
    pub async fn rescued_of(&self, names: &[&str]) -> Result<i64> {
        self.scalar(&format!(
            "SELECT count(DISTINCT task_id) FROM chaos.transitions \
             WHERE actor IS DISTINCT FROM lease_owner AND task_name IN ({})",
            sql_list(names)
        ))
        .await
    }

    /// Tasks of `names` in `status` (0 pending, 1 running, 2 completed, 3 failed), leased to
    /// `owner` when given.
    pub async fn count_of(&self, names: &[&str], status: i16, owner: Option<&str>) -> Result<i64> {
        let owner = owner.map_or(String::new(), |o| format!(" AND lease_owner = '{o}'"));
        self.scalar(&format!(
            "SELECT count(*) FROM anchor.tasks WHERE name IN ({}) AND status = {status}{owner}",
            sql_list(names)
        ))
        .await
    }

    /// Tasks of `name` in `status` (0 pending, 1 running, 2 completed, 3 failed).
    pub async fn count_status(&self, name: &str, status: i16) -> Result<i64> {
        self.scalar(&format!(
            "SELECT count(*) FROM anchor.tasks WHERE name = '{name}' AND status = {status}"
        ))
        .await
    }
}
