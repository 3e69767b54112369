//! `cargo run -p quickstart`: every anchor feature, end to end, against a real PostgreSQL.
//!
//! It uses `DATABASE_URL` when set and otherwise starts a throwaway cluster from the server
//! binaries on this machine (`anchor_testing::TestCluster`). It runs a worker, enqueues the tasks of
//! `api/tasks.yaml` in the ways an application does, checks from the database that each
//! feature behaved as described, prints a summary table and exits 0 — or non-zero naming
//! the feature that did not behave.
//!
//! Regions between `ANCHOR:` and `ANCHOR_END:` comments are quoted in `docs/guide.md`.

/// Prints a line on stdout. A closed pipe (`… | head`) is ignored instead of panicking as
/// `println!` does, so the run still stops its worker and removes its cluster.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout().lock(), $($arg)*);
    }};
}

/// Like [`say!`], on stderr.
macro_rules! say_err {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr().lock(), $($arg)*);
    }};
}

mod tasks;
// ANCHOR: declare_module
mod zgen {
    pub mod taskgen;
}
// ANCHOR_END: declare_module

use std::collections::BTreeSet;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anchor_runtime::RetryPolicy;
use anchor_runtime::{Client, Registry, TaskId, TaskOverride, TaskRecord, TaskStatus, Worker};
use anchor_runtime::{WorkerConfig, WorkerHandle, DEFAULT_SCHEDULE_KEY};
use anyhow::{anyhow, bail, ensure, Context};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use tokio::signal::unix::{signal, SignalKind};

use crate::tasks::{Journal, PushService, Tasks, SCHEMA};
use crate::zgen::taskgen::{
    self, task_names, GenerateReportParameters, ProcessOrderParameters, SendEmailParameters,
    SendNotificationParameters, SendNotificationParametersPriority, TaskRunner,
};
use anchor_testing::TestCluster;

/// How long one feature may take before the quickstart calls it broken. Far above what any
/// of them needs (the slowest, cron, needs about 6 s), so a slow machine does not fail.
const FEATURE_DEADLINE: Duration = Duration::from_secs(20);

/// The user whose first push is rate limited (shows `TaskError::RetryWithoutErrorEvent`).
const RATE_LIMITED_USER: i32 = 42;

fn main() -> ExitCode {
    // The runtime logs through `tracing`; RUST_LOG=anchor_runtime=debug shows it. By default
    // it stays quiet, because the expected failures below would look like problems.
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("off")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => {
            say_err!("error: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run()) {
        Ok(Outcome::AllBehaved) => ExitCode::SUCCESS,
        Ok(Outcome::SomeFailed) => ExitCode::FAILURE,
        Ok(Outcome::Interrupted) => {
            say_err!("interrupted; everything the quickstart started is stopped and removed");
            ExitCode::from(130)
        }
        Err(err) => {
            say_err!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

enum Outcome {
    AllBehaved,
    SomeFailed,
    Interrupted,
}

async fn run() -> anyhow::Result<Outcome> {
    // Take over SIGINT/SIGTERM first, so Ctrl-C at any point returns through the normal
    // path and the throwaway cluster's guard removes it.
    let mut interrupt = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    let mut terminate = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let started = Instant::now();

    say!("anchor quickstart: durable, typed background tasks on PostgreSQL\n");
    // Declared before everything that uses the database, so it is dropped (stopped and
    // removed) last.
    let mut _cluster: Option<TestCluster> = None;
    let database_url = match std::env::var("DATABASE_URL") {
        Ok(url) if !url.trim().is_empty() => {
            say!("• database: DATABASE_URL (schema {SCHEMA} is recreated for this run)");
            url
        }
        _ => {
            let spinner =
                spinner("starting a throwaway PostgreSQL cluster (DATABASE_URL is not set)");
            let cluster = tokio::task::block_in_place(TestCluster::start);
            spinner.finish_and_clear();
            let cluster = match cluster {
                Ok(cluster) => cluster,
                // Ctrl-C reaches initdb and pg_ctl too, and they fail: that is an interrupt,
                // not an error to explain.
                Err(_) if received(&mut interrupt).await || received(&mut terminate).await => {
                    return Ok(Outcome::Interrupted);
                }
                Err(err) => {
                    return Err(anyhow::anyhow!(err).context(
                        "cannot start a throwaway PostgreSQL for the quickstart; or point it at \
                         a database you have: DATABASE_URL=postgres://user:password@localhost:5432/dbname \
                         cargo run -p quickstart",
                    ))
                }
            };
            say!(
                "• database: throwaway cluster at {} (server from {}), removed on exit",
                cluster.url(),
                cluster.bin_dir().display()
            );
            let url = cluster.url().to_string();
            _cluster = Some(cluster);
            url
        }
    };

    let (client, worker, journal) = set_up(&database_url).await?;
    let runner = TaskRunner::new(client.clone());
    let mut demo = Demo {
        client: client.clone(),
        runner,
        journal,
        tracked: BTreeSet::new(),
        rolled_back: None,
        failures: Vec::new(),
        progress: Progress::new(FEATURES),
    };
    let finished = tokio::select! {
        result = demo.run_all() => Some(result),
        _ = interrupt.recv() => None,
        _ = terminate.recv() => None,
    };
    // Stop claiming and release what is still running before the database goes away.
    worker.shutdown().await;
    let outcome = match finished {
        None => Ok(Outcome::Interrupted),
        Some(Err(err)) => Err(err),
        Some(Ok(())) if demo.failures.is_empty() => Ok(Outcome::AllBehaved),
        Some(Ok(())) => Ok(Outcome::SomeFailed),
    };
    if let Ok(Outcome::AllBehaved | Outcome::SomeFailed) = &outcome {
        demo.print_summary().await?;
        let secs = started.elapsed().as_secs_f64();
        if demo.failures.is_empty() {
            say!("\nAll features behaved as described ({secs:.1} s).");
            say!("Next: docs/guide.md walks through each of them; README.md has the tour.");
        } else {
            say!(
                "\n{} feature(s) did not behave ({secs:.1} s):",
                demo.failures.len()
            );
            for failure in &demo.failures {
                say!("  ✘ {failure}");
            }
        }
    }
    outcome
}

/// Whether `signal` arrived already (without waiting for it).
async fn received(signal: &mut tokio::signal::unix::Signal) -> bool {
    tokio::time::timeout(Duration::from_millis(1), signal.recv())
        .await
        .is_ok()
}

/// Connects, migrates, creates the app's `orders` table and starts a worker.
async fn set_up(database_url: &str) -> anyhow::Result<(Client, WorkerHandle, Arc<Journal>)> {
    // ANCHOR: connect
    let client = Client::connect(database_url)
        .await?
        .try_with_schema(SCHEMA)?;
    // ANCHOR_END: connect
    client.ping().await.with_context(|| {
        format!(
            "cannot connect to {} (is the server running? Unset DATABASE_URL to use a \
                 throwaway cluster instead)",
            redact(database_url)
        )
    })?;
    let db = client.pool().get().await?;
    // A clean slate per run: this schema belongs to the quickstart alone.
    db.batch_execute(&format!("DROP SCHEMA IF EXISTS {SCHEMA} CASCADE"))
        .await
        .context("cannot reset the quickstart's schema")?;
    // ANCHOR: migrate
    let report = anchor_runtime::migrate(&client).await?;
    // ANCHOR_END: migrate
    say!(
        "• migrations: schema {} at version {} (applied {:?})",
        report.schema,
        report.version,
        report.applied
    );
    // The application's own table, which tasks are enqueued together with.
    db.batch_execute(
        "CREATE TABLE anchor_quickstart.orders (
             id            integer PRIMARY KEY,
             status        text    NOT NULL DEFAULT 'new',
             declines_left integer NOT NULL DEFAULT 0
         )",
    )
    .await
    .context("cannot create the orders table")?;

    let journal = Arc::new(Journal::default());
    // ANCHOR: worker
    let executor = Tasks {
        client: client.clone(),
        push: PushService {
            rate_limited_users: vec![RATE_LIMITED_USER],
        },
        journal: journal.clone(),
    };
    let mut registry = Registry::new();
    taskgen::register(&mut registry, Arc::new(executor));
    let config = WorkerConfig::default()
        .with_concurrency(10)
        .with_poll_interval(Duration::from_millis(500))
        .with_shutdown_grace(Duration::from_secs(2));
    let worker = Worker::new(client.clone(), registry, config)?.start();
    // ANCHOR_END: worker
    say!(
        "• worker {} started: {} task types, concurrency 10\n",
        worker.worker_id(),
        taskgen::TASKS.len()
    );
    Ok((client, worker, journal))
}

// ANCHOR: register_user
/// What a web handler does after it created a user: queue the welcome email and return at
/// once; a worker sends it.
pub async fn register_user(
    runner: &TaskRunner,
    user_id: i32,
    name: &str,
) -> Result<TaskId, anchor_runtime::Error> {
    let mut variables = serde_json::Map::new();
    variables.insert("name".into(), name.into());
    let params = SendEmailParameters {
        user_id,
        template_id: "welcome".into(),
        variables,
    };
    runner.run_send_email(&params, &[]).await
}
// ANCHOR_END: register_user

// ANCHOR: place_order
/// Inserts an order and enqueues its processing in one transaction: both exist after
/// `commit`, neither after a rollback.
pub async fn place_order(
    client: &Client,
    runner: &TaskRunner,
    order_id: i32,
    declines: i32,
    commit: bool,
) -> anyhow::Result<TaskId> {
    let mut conn = client.pool().get().await?;
    let tx = conn.transaction().await?;
    tx.execute(
        "INSERT INTO anchor_quickstart.orders (id, declines_left) VALUES ($1, $2)",
        &[&order_id, &declines],
    )
    .await?;
    let task_id = runner
        .run_process_order_with_tx(&tx, &ProcessOrderParameters { order_id }, &[])
        .await?;
    if commit {
        tx.commit().await?;
    } else {
        // E.g. a later step of the request failed: the order and its task vanish together.
        tx.rollback().await?;
    }
    Ok(task_id)
}
// ANCHOR_END: place_order

/// The demonstration: one method per feature, each checked against the database.
struct Demo {
    client: Client,
    runner: TaskRunner,
    journal: Arc<Journal>,
    /// Every task the demo enqueued or saw run, for the summary.
    tracked: BTreeSet<TaskId>,
    /// The id a rolled-back transaction returned (it never existed).
    rolled_back: Option<TaskId>,
    failures: Vec<String>,
    progress: Progress,
}

/// The features the demo shows, in order (for the overall progress bar).
const FEATURES: u64 = 9;

/// Live progress: one spinner for what is being waited for, above a bar of features done.
struct Progress {
    multi: MultiProgress,
    overall: ProgressBar,
}

impl Progress {
    fn new(features: u64) -> Progress {
        let multi = MultiProgress::new();
        let overall = multi.add(ProgressBar::new(features));
        if let Ok(style) = ProgressStyle::with_template("features {bar:27} {pos}/{len} ({elapsed})")
        {
            overall.set_style(style);
        }
        Progress { multi, overall }
    }

    fn spinner(&self, message: &str) -> ProgressBar {
        self.multi.insert_before(&self.overall, spinner(message))
    }

    /// Prints a line above the bars (also when they are hidden because stdout is no
    /// terminal).
    fn println(&self, line: &str) {
        self.multi.suspend(|| say!("{line}"));
    }

    fn feature_done(&self) {
        self.overall.inc(1);
    }

    fn finish(&self) {
        self.overall.finish_and_clear();
    }
}

impl Demo {
    async fn run_all(&mut self) -> anyhow::Result<()> {
        // The slow features are started first, so their waits overlap with the fast ones.
        let report = self
            .runner
            .run_generate_report(&GenerateReportParameters { report_id: 7 }, &[])
            .await?;
        let flaky = place_order(&self.client, &self.runner, 2001, 2, true).await?;
        self.tracked.extend([report, flaky]);

        let result = self.handler_enqueue().await;
        self.report("enqueue from a handler", result);
        let result = self.transactions().await;
        self.report("transactional enqueue", result);
        let result = self.unique_tag().await;
        self.report("unique tag", result);
        let result = self.retry_without_error_event().await;
        self.report("retry without error event", result);
        let result = self.retries_with_backoff(flaky).await;
        self.report("retries with backoff", result);
        let result = self.fatal_and_on_failed().await;
        self.report("fatal error + onFailed handler", result);
        let result = self.on_failed_defaults().await;
        self.report("onFailed handler with its own parameters", result);
        let result = self.timeout(report).await;
        self.report("timeout", result);
        let result = self.cron().await;
        self.report("cron", result);
        self.progress.finish();
        Ok(())
    }

    fn report(&mut self, feature: &str, result: anyhow::Result<String>) {
        match result {
            Ok(message) => self.progress.println(&format!("✔ {feature}: {message}")),
            Err(err) => {
                self.progress.println(&format!("✘ {feature}: {err:#}"));
                self.failures.push(format!("{feature}: {err:#}"));
            }
        }
        self.progress.feature_done();
    }

    async fn handler_enqueue(&mut self) -> anyhow::Result<String> {
        let id = register_user(&self.runner, 1, "Ada").await?;
        self.tracked.insert(id);
        let task = self
            .wait_final(id, "register_user() queued a welcome email")
            .await?;
        ensure!(
            task.status == TaskStatus::Completed,
            "SendEmail #{id} ended {}",
            task.status
        );
        let sent = self
            .note_of(id)
            .ok_or_else(|| anyhow!("no executor ran #{id}"))?;
        Ok(format!(
            "register_user() returned at once with SendEmail #{id}; a worker {sent}"
        ))
    }

    async fn transactions(&mut self) -> anyhow::Result<String> {
        let committed = place_order(&self.client, &self.runner, 1001, 0, true).await?;
        let rolled_back = place_order(&self.client, &self.runner, 1002, 0, false).await?;
        self.tracked.insert(committed);
        self.rolled_back = Some(rolled_back);
        let task = self
            .wait_final(committed, "order 1001 committed with its task")
            .await?;
        ensure!(
            task.status == TaskStatus::Completed,
            "committed ProcessOrder #{committed} ended {}",
            task.status
        );
        ensure!(
            self.order_status(1001).await?.as_deref() == Some("paid"),
            "order 1001 was not marked paid by its task"
        );
        ensure!(
            self.client.get_task(rolled_back).await?.is_none(),
            "rolled-back task #{rolled_back} exists"
        );
        ensure!(
            self.order_status(1002).await?.is_none(),
            "rolled-back order 1002 exists"
        );
        Ok(format!(
            "committed task #{committed} ran (order 1001 is paid); rolled-back task \
             #{rolled_back} never existed (get_task → None, no order 1002)"
        ))
    }

    async fn unique_tag(&mut self) -> anyhow::Result<String> {
        // ANCHOR: unique_tag
        let params = SendNotificationParameters {
            user_id: 7,
            message: "Your weekly digest is ready".into(),
            priority: Some(SendNotificationParametersPriority::Low),
        };
        let overrides = [TaskOverride::unique_tag("weekly-digest-user-7")];
        let first = self
            .runner
            .run_send_notification(&params, &overrides)
            .await?;
        let second = self
            .runner
            .run_send_notification(&params, &overrides)
            .await?;
        ensure!(first == second, "one tag, one task");
        // ANCHOR_END: unique_tag
        self.tracked.insert(first);
        let task = self.wait_final(first, "the tagged notification").await?;
        ensure!(
            task.status == TaskStatus::Completed,
            "SendNotification #{first} ended {}",
            task.status
        );
        let runs = self
            .journal
            .entries()
            .iter()
            .filter(|e| e.task_id == first)
            .count();
        ensure!(runs == 1, "the tagged task ran {runs} times");
        Ok(format!(
            "\"weekly-digest-user-7\" enqueued twice returned task #{first} both times; it ran once"
        ))
    }

    async fn retry_without_error_event(&mut self) -> anyhow::Result<String> {
        // ANCHOR: overrides
        let params = SendNotificationParameters {
            user_id: RATE_LIMITED_USER,
            message: "Your order shipped".into(),
            priority: Some(SendNotificationParametersPriority::High),
        };
        // This one call retries after 1 s instead of the YAML's 5m.
        let overrides = [
            TaskOverride::retry_policy(RetryPolicy::parse("1s", true)?),
            TaskOverride::timeout(Duration::from_secs(30)),
        ];
        let id = self
            .runner
            .run_send_notification(&params, &overrides)
            .await?;
        // ANCHOR_END: overrides
        self.tracked.insert(id);
        let task = self
            .wait_final(id, "the push service rate-limits the first try")
            .await?;
        ensure!(
            task.status == TaskStatus::Completed,
            "SendNotification #{id} ended {}",
            task.status
        );
        ensure!(task.attempts == 2, "expected 2 runs, saw {}", task.attempts);
        ensure!(
            task.errors.is_empty() && task.failures == 0,
            "expected no recorded error, saw {:?}",
            task.errors
        );
        Ok(format!(
            "SendNotification #{id} ran twice (rate limited, then sent after the 1 s override \
             interval) with no error recorded and no retry used up"
        ))
    }

    async fn retries_with_backoff(&mut self, id: TaskId) -> anyhow::Result<String> {
        let task = self
            .wait_final(id, "order 2001: the gateway declines twice")
            .await?;
        ensure!(
            task.status == TaskStatus::Completed,
            "ProcessOrder #{id} ended {} ({:?})",
            task.status,
            task.errors
        );
        ensure!(task.attempts == 3, "expected 3 runs, saw {}", task.attempts);
        ensure!(
            task.errors.len() == 2,
            "expected 2 recorded errors, saw {:?}",
            task.errors
        );
        let finished = task.finished_at.ok_or_else(|| anyhow!("no finish time"))?;
        let first_wait = (task.errors[1].at - task.errors[0].at).num_milliseconds();
        let second_wait = (finished - task.errors[1].at).num_milliseconds();
        // The intervals are "1s,2s": each retry waits at least its interval.
        ensure!(
            first_wait >= 950 && second_wait >= 1950,
            "retries came too soon: {first_wait} ms and {second_wait} ms apart"
        );
        ensure!(
            self.order_status(2001).await?.as_deref() == Some("paid"),
            "order 2001 was not marked paid"
        );
        Ok(format!(
            "ProcessOrder #{id} failed twice (\"{}\"), retried after {:.1} s and {:.1} s \
             (interval \"1s,2s\"), succeeded on attempt 3",
            task.errors[0].message,
            first_wait as f64 / 1000.0,
            second_wait as f64 / 1000.0
        ))
    }

    async fn fatal_and_on_failed(&mut self) -> anyhow::Result<String> {
        // Order 3001 was never inserted, so the executor returns TaskError::Fatal.
        let id = self
            .runner
            .run_process_order(&ProcessOrderParameters { order_id: 3001 }, &[])
            .await?;
        self.tracked.insert(id);
        let task = self.wait_final(id, "order 3001 does not exist").await?;
        ensure!(
            task.status == TaskStatus::Failed,
            "ProcessOrder #{id} ended {}",
            task.status
        );
        ensure!(
            task.attempts == 1,
            "a fatal error must not be retried, saw {} runs",
            task.attempts
        );
        let (handler_id, note) = self
            .wait_handler(task_names::HANDLE_ORDER_FAILURE, id)
            .await?;
        ensure!(
            note.contains("order 3001"),
            "the handler did not read the typed parameters: {note}"
        );
        Ok(format!(
            "ProcessOrder #{id} failed at once ({}); HandleOrderFailure #{handler_id} loaded it \
             with get_task and read order_id 3001 from payload_as::<ProcessOrderParameters>()",
            task.errors
                .last()
                .map_or("no error recorded", |e| e.message.as_str())
        ))
    }

    async fn on_failed_defaults(&mut self) -> anyhow::Result<String> {
        let params = SendNotificationParameters {
            user_id: 0,
            message: "Password changed".into(),
            priority: None,
        };
        let id = self.runner.run_send_notification(&params, &[]).await?;
        self.tracked.insert(id);
        let task = self.wait_final(id, "user 0 has no device").await?;
        ensure!(
            task.status == TaskStatus::Failed,
            "SendNotification #{id} ended {}",
            task.status
        );
        let (handler_id, note) = self
            .wait_handler(task_names::ESCALATE_FAILED_NOTIFICATION, id)
            .await?;
        ensure!(
            note.starts_with("escalated to admin"),
            "the handler did not get escalationLevel's default: {note}"
        );
        Ok(format!(
            "SendNotification #{id} failed; EscalateFailedNotification #{handler_id} got \
             {{ taskID: {id}, escalationLevel: \"admin\" (schema default) }} and {note}"
        ))
    }

    async fn timeout(&mut self, id: TaskId) -> anyhow::Result<String> {
        let task = self
            .wait_final(id, "GenerateReport sleeps past its 2 s timeout")
            .await?;
        ensure!(
            task.status == TaskStatus::Failed,
            "GenerateReport #{id} ended {}",
            task.status
        );
        let error = task
            .errors
            .last()
            .ok_or_else(|| anyhow!("no error recorded for #{id}"))?;
        ensure!(
            error.message.contains("timed out"),
            "expected a timeout error, saw {:?}",
            error.message
        );
        ensure!(
            self.note_of(id).is_none(),
            "the timed-out executor finished its work anyway"
        );
        Ok(format!(
            "GenerateReport #{id} (timeout: 2s) was stopped and recorded \"{}\"",
            error.message
        ))
    }

    async fn cron(&mut self) -> anyhow::Result<String> {
        let bar = self
            .progress
            .spinner("waiting for CleanupSessions (\"*/3 * * * * *\") to fire twice");
        let deadline = Instant::now() + FEATURE_DEADLINE;
        let mut runs = Vec::new();
        while Instant::now() < deadline {
            runs = self.journal.entries_of(task_names::CLEANUP_SESSIONS);
            bar.set_message(format!(
                "waiting for CleanupSessions (\"*/3 * * * * *\") to fire twice: {} so far",
                runs.len()
            ));
            if runs.len() >= 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        bar.finish_and_clear();
        ensure!(
            runs.len() >= 2,
            "CleanupSessions ran {} time(s) in {} s; is the cron scheduler running?",
            runs.len(),
            FEATURE_DEADLINE.as_secs()
        );
        let mut times = Vec::new();
        for run in &runs {
            self.tracked.insert(run.task_id);
            let task = self.wait_final(run.task_id, "cron occurrence").await?;
            ensure!(
                task.status == TaskStatus::Completed,
                "occurrence #{} ended {}",
                run.task_id,
                task.status
            );
            times.push(format!(
                "#{} at {}",
                task.id,
                task.run_after.format("%H:%M:%S")
            ));
        }
        // ANCHOR: schedules
        // The durable schedule the worker registered at start-up from the YAML defaults.
        let schedule = self
            .client
            .schedules()
            .await?
            .into_iter()
            .find(|s| s.task_name == task_names::CLEANUP_SESSIONS && s.key == DEFAULT_SCHEDULE_KEY)
            .ok_or_else(|| anyhow!("CleanupSessions has no default schedule"))?;
        // ANCHOR_END: schedules
        ensure!(
            schedule.enabled,
            "the schedule is disabled: {:?}",
            schedule.disabled_reason
        );
        ensure!(
            schedule.payload == serde_json::json!({ "olderThanMinutes": 30 }),
            "the schedule's parameters are not the schema defaults: {}",
            schedule.payload
        );
        Ok(format!(
            "CleanupSessions fired {} times on its own: {} (schedule {} \"{}\" with the default \
             olderThanMinutes = 30, registered at worker start; next tick {})",
            runs.len(),
            times.join(", "),
            schedule.id,
            schedule.expression,
            schedule.next_fire_at.format("%H:%M:%S")
        ))
    }

    /// Polls a task until it reaches a final status, showing its progress live.
    async fn wait_final(&self, id: TaskId, what: &str) -> anyhow::Result<TaskRecord> {
        let bar = self.progress.spinner(what);
        let deadline = Instant::now() + FEATURE_DEADLINE;
        loop {
            let task = self
                .client
                .get_task(id)
                .await?
                .ok_or_else(|| anyhow!("task #{id} does not exist"))?;
            if task.status.is_final() {
                bar.finish_and_clear();
                return Ok(task);
            }
            let last_error = task
                .errors
                .last()
                .map(|e| format!(", last error: {}", e.message))
                .unwrap_or_default();
            bar.set_message(format!(
                "{what}: {} #{id} is {} after {} run(s){last_error}",
                task.name, task.status, task.attempts
            ));
            if Instant::now() >= deadline {
                bar.finish_and_clear();
                bail!(
                    "task #{id} still {} after {} s",
                    task.status,
                    FEATURE_DEADLINE.as_secs()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until the failure handler `handler` enqueued for `parent` has run; returns its
    /// id and what it did.
    async fn wait_handler(
        &mut self,
        handler: &str,
        parent: TaskId,
    ) -> anyhow::Result<(TaskId, String)> {
        let bar = self
            .progress
            .spinner(&format!("waiting for {handler} to handle #{parent}"));
        let deadline = Instant::now() + FEATURE_DEADLINE;
        while Instant::now() < deadline {
            for entry in self.journal.entries_of(handler) {
                let task = self.client.get_task(entry.task_id).await?;
                if task.and_then(|t| t.parent_id) == Some(parent) {
                    bar.finish_and_clear();
                    self.tracked.insert(entry.task_id);
                    return Ok((entry.task_id, entry.note));
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        bar.finish_and_clear();
        bail!(
            "no {handler} ran for #{parent} within {} s",
            FEATURE_DEADLINE.as_secs()
        )
    }

    fn note_of(&self, id: TaskId) -> Option<String> {
        self.journal
            .entries()
            .into_iter()
            .find(|e| e.task_id == id)
            .map(|e| e.note)
    }

    async fn order_status(&self, order_id: i32) -> anyhow::Result<Option<String>> {
        let db = self.client.pool().get().await?;
        let row = db
            .query_opt(
                "SELECT status FROM anchor_quickstart.orders WHERE id = $1",
                &[&order_id],
            )
            .await?;
        Ok(row.map(|r| r.get(0)))
    }

    /// One row per task the demo touched, read back from the database.
    async fn print_summary(&mut self) -> anyhow::Result<()> {
        // Tasks the worker ran that the demo did not enqueue itself (handlers, cron).
        for entry in self.journal.entries() {
            self.tracked.insert(entry.task_id);
        }
        let mut rows = Vec::new();
        let mut records = Vec::new();
        for id in &self.tracked {
            if let Some(task) = self.client.get_task(*id).await? {
                records.push(task);
            }
        }
        for task in &records {
            let handler = match (&task.settings.on_failed, task.parent_id) {
                (_, Some(parent)) => format!("handles #{parent}"),
                (Some(name), None) => match records.iter().find(|t| t.parent_id == Some(task.id)) {
                    Some(child) => format!("{name} → #{}", child.id),
                    None => format!("{name} (not triggered)"),
                },
                (None, None) => "-".to_string(),
            };
            let note = match task.errors.last() {
                Some(last) => format!("{}: {}", task.errors.len(), last.message),
                None => "-".to_string(),
            };
            rows.push([
                format!("#{}", task.id),
                task.name.clone(),
                task.status.to_string(),
                task.attempts.to_string(),
                handler,
                truncate(&note, 52),
            ]);
        }
        if let Some(id) = self.rolled_back {
            rows.push([
                format!("#{id}"),
                "ProcessOrder".into(),
                "absent".into(),
                "0".into(),
                "-".into(),
                "its transaction rolled back".into(),
            ]);
            rows.sort_by_key(|r| r[0].trim_start_matches('#').parse::<i64>().unwrap_or(0));
        }
        let header = [
            "id",
            "task",
            "status",
            "attempts",
            "onFailed",
            "errors: last",
        ];
        let mut widths = header.map(|h| h.chars().count());
        for row in &rows {
            for (width, cell) in widths.iter_mut().zip(row) {
                *width = (*width).max(cell.chars().count());
            }
        }
        let line = |cells: &[String; 6]| {
            cells
                .iter()
                .zip(widths)
                .map(|(cell, width)| format!("{cell:<width$}"))
                .collect::<Vec<_>>()
                .join("  ")
                .trim_end()
                .to_string()
        };
        say!("\nEvery task of this run, as the database has it:\n");
        say!("{}", line(&header.map(str::to_string)));
        for row in &rows {
            say!("{}", line(row));
        }
        Ok(())
    }
}

fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_string()
    } else {
        let cut: String = text.chars().take(max - 1).collect();
        format!("{cut}…")
    }
}

fn spinner(message: &str) -> ProgressBar {
    let bar = ProgressBar::new_spinner();
    if let Ok(style) = ProgressStyle::with_template("{spinner} {msg} ({elapsed})") {
        bar.set_style(style);
    }
    bar.set_message(message.to_string());
    bar.enable_steady_tick(Duration::from_millis(100));
    bar
}

/// The URL without its password, for messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            match userinfo.find(':') {
                Some(colon) => format!(
                    "{}{}:***{}",
                    &url[..scheme + 3],
                    &userinfo[..colon],
                    &url[at..]
                ),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}
